//! The hybrid initial message: the classical X3DH header plus the KEM
//! pre-key id and the ML-KEM-768 ciphertext.

use crate::error::HybridError;
use crate::kem::KemCiphertext;
use confidant_core::wire::{self, DecodeError};
use confidant_x3dh::{InitialMessageHeader, MAX_INITIAL_MESSAGE_LEN};
use prost::Message;

/// The KEM part of a hybrid initial message: which KEM pre-key the
/// initiator encapsulated to, and the ciphertext `CT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KemEncapsulation {
    /// The responder's KEM pre-key id (field 7).
    pub kem_pre_key_id: u32,
    /// The ML-KEM-768 ciphertext, 1088 bytes (field 8).
    pub ciphertext: KemCiphertext,
}

/// The key-agreement part of an initial message: the classical
/// [`InitialMessageHeader`] (fields 1 to 5) and, for the hybrid, the KEM
/// part (fields 7 and 8). The first sealed message (field 6) belongs to the
/// session layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridInitialMessage {
    header: InitialMessageHeader,
    kem: Option<KemEncapsulation>,
}

impl HybridInitialMessage {
    /// Assembles a message from its parts.
    pub fn new(header: InitialMessageHeader, kem: Option<KemEncapsulation>) -> Self {
        Self { header, kem }
    }

    /// Validates an initial message from the wire: the classical fields as
    /// [`InitialMessageHeader::from_wire`] does; `kem_pre_key_id` and
    /// `kem_ciphertext` both absent (classical) or both present, the
    /// ciphertext exactly 1088 bytes.
    pub fn from_wire(initial: &wire::InitialMessage) -> Result<Self, HybridError> {
        let header = InitialMessageHeader::from_wire(initial)?;
        let kem = match (initial.kem_pre_key_id, initial.kem_ciphertext.is_empty()) {
            (None, true) => None,
            (Some(kem_pre_key_id), false) => Some(KemEncapsulation {
                kem_pre_key_id,
                ciphertext: KemCiphertext::from_field(
                    "initial.kem_ciphertext",
                    &initial.kem_ciphertext,
                )?,
            }),
            (Some(_), true) => {
                return Err(DecodeError::MissingField("initial.kem_ciphertext").into());
            }
            (None, false) => return Err(DecodeError::MissingField("initial.kem_pre_key_id").into()),
        };
        Ok(Self { header, kem })
    }

    /// The wire form, carrying `first_message`.
    pub fn to_wire(&self, first_message: Option<wire::EncryptedMessage>) -> wire::InitialMessage {
        let mut initial = self.header.to_wire(first_message);
        if let Some(kem) = &self.kem {
            initial.kem_pre_key_id = Some(kem.kem_pre_key_id);
            initial.kem_ciphertext = kem.ciphertext.as_bytes().to_vec();
        }
        initial
    }

    /// Decodes a bare protobuf `InitialMessage` of at most
    /// [`MAX_INITIAL_MESSAGE_LEN`] bytes and validates its key-agreement
    /// fields. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HybridError> {
        let initial: wire::InitialMessage = wire::decode_message(bytes, MAX_INITIAL_MESSAGE_LEN)?;
        Self::from_wire(&initial)
    }

    /// Encodes this message and `first_message` as a bare protobuf
    /// `InitialMessage`.
    pub fn to_bytes(&self, first_message: Option<wire::EncryptedMessage>) -> Vec<u8> {
        self.to_wire(first_message).encode_to_vec()
    }

    /// The classical header.
    pub fn header(&self) -> &InitialMessageHeader {
        &self.header
    }

    /// The KEM part; `None` for a classical initial message.
    pub fn kem(&self) -> Option<&KemEncapsulation> {
        self.kem.as_ref()
    }

    /// Whether this is a hybrid initial message.
    pub fn is_hybrid(&self) -> bool {
        self.kem.is_some()
    }
}
