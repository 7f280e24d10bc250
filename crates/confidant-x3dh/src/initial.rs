//! The initiator's initial message, as a validated domain type.

use crate::error::X3dhError;
use crate::keys::{Hex, IdentityPublicKey, PUBLIC_KEY_LEN, X25519PublicKey};
use confidant_core::SuiteId;
use confidant_core::wire::{self, fixed_len};
use prost::Message;
use std::fmt;

/// The longest encoded initial message [`InitialMessageHeader::from_bytes`]
/// accepts: the first sealed message may be as large as any message, so the
/// bound is the envelope's.
pub const MAX_INITIAL_MESSAGE_LEN: usize = wire::DEFAULT_MAX_ENVELOPE_LEN;

/// The X3DH part of the initiator's initial message: who the initiator is,
/// its ephemeral key, and which of the responder's pre-keys it used.
///
/// The first sealed message that travels with it
/// ([`wire::InitialMessage::first_message`]) belongs to the session layer:
/// [`to_wire`](Self::to_wire) takes it as an argument, and
/// [`from_wire`](Self::from_wire) leaves it in the wire message.
#[derive(Clone, PartialEq, Eq)]
pub struct InitialMessageHeader {
    identity_key: IdentityPublicKey,
    ephemeral_key: X25519PublicKey,
    signed_pre_key_id: u32,
    one_time_pre_key_id: Option<u32>,
    suite: SuiteId,
}

impl InitialMessageHeader {
    /// Assembles a header (the initiator normally gets it from
    /// [`VerifiedPreKeyBundle::agree`](crate::VerifiedPreKeyBundle::agree)).
    pub fn new(
        identity_key: IdentityPublicKey,
        ephemeral_key: X25519PublicKey,
        signed_pre_key_id: u32,
        one_time_pre_key_id: Option<u32>,
        suite: SuiteId,
    ) -> Self {
        Self {
            identity_key,
            ephemeral_key,
            signed_pre_key_id,
            one_time_pre_key_id,
            suite,
        }
    }

    /// Validates the X3DH fields of an initial message from the wire: key
    /// fields of exactly 32 bytes, and an identity key that is a valid,
    /// non-weak Ed25519 key. `first_message` is not looked at.
    pub fn from_wire(initial: &wire::InitialMessage) -> Result<Self, X3dhError> {
        let identity_key =
            IdentityPublicKey::from_field("initial.identity_key", &initial.identity_key)?;
        let ephemeral_key = X25519PublicKey::from_bytes(fixed_len::<PUBLIC_KEY_LEN>(
            "initial.ephemeral_key",
            &initial.ephemeral_key,
        )?);
        Ok(Self {
            identity_key,
            ephemeral_key,
            signed_pre_key_id: initial.signed_pre_key_id,
            one_time_pre_key_id: initial.one_time_pre_key_id,
            suite: SuiteId(initial.suite),
        })
    }

    /// The wire form, carrying `first_message` (sealed by the session layer
    /// under the keys derived from this agreement).
    pub fn to_wire(&self, first_message: Option<wire::EncryptedMessage>) -> wire::InitialMessage {
        wire::InitialMessage {
            identity_key: self.identity_key.to_bytes().to_vec(),
            ephemeral_key: self.ephemeral_key.to_bytes().to_vec(),
            signed_pre_key_id: self.signed_pre_key_id,
            one_time_pre_key_id: self.one_time_pre_key_id,
            suite: self.suite.0,
            first_message,
            // The hybrid's fields (7 and 8) belong to the hybrid plugin.
            ..Default::default()
        }
    }

    /// Decodes a bare protobuf `InitialMessage` (not wrapped in an envelope)
    /// of at most [`MAX_INITIAL_MESSAGE_LEN`] bytes and validates its X3DH
    /// fields. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, X3dhError> {
        let initial: wire::InitialMessage = wire::decode_message(bytes, MAX_INITIAL_MESSAGE_LEN)?;
        Self::from_wire(&initial)
    }

    /// Encodes this header and `first_message` as a bare protobuf
    /// `InitialMessage`.
    pub fn to_bytes(&self, first_message: Option<wire::EncryptedMessage>) -> Vec<u8> {
        self.to_wire(first_message).encode_to_vec()
    }

    /// The initiator's identity key `IK_A`.
    pub fn identity_key(&self) -> &IdentityPublicKey {
        &self.identity_key
    }

    /// The initiator's ephemeral key `EK_A`.
    pub fn ephemeral_key(&self) -> &X25519PublicKey {
        &self.ephemeral_key
    }

    /// The id of the responder's signed pre-key that was used.
    pub fn signed_pre_key_id(&self) -> u32 {
        self.signed_pre_key_id
    }

    /// The id of the responder's one-time pre-key that was used, if any.
    pub fn one_time_pre_key_id(&self) -> Option<u32> {
        self.one_time_pre_key_id
    }

    /// The suite the initiator chose from the bundle.
    pub fn suite(&self) -> SuiteId {
        self.suite
    }
}

impl fmt::Debug for InitialMessageHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitialMessageHeader")
            .field("identity_key", &Hex(self.identity_key.as_bytes()))
            .field("ephemeral_key", &Hex(self.ephemeral_key.as_bytes()))
            .field("signed_pre_key_id", &self.signed_pre_key_id)
            .field("one_time_pre_key_id", &self.one_time_pre_key_id)
            .field("suite", &self.suite)
            .finish()
    }
}

impl TryFrom<&wire::InitialMessage> for InitialMessageHeader {
    type Error = X3dhError;
    fn try_from(initial: &wire::InitialMessage) -> Result<Self, Self::Error> {
        Self::from_wire(initial)
    }
}
