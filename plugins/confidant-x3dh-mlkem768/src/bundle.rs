//! The hybrid pre-key bundle: the classical X3DH bundle plus a signed
//! ML-KEM-768 pre-key and the hybrid offer signature.

use crate::error::HybridError;
use crate::kem::{KEM_PUBLIC_KEY_LEN, KEM_TYPE_ML_KEM_768, KemPreKeyKind, KemPublicKey};
use confidant_core::wire::{self, fixed_len};
use confidant_x3dh::{IdentityPublicKey, PreKeyBundle, SIGNATURE_LEN, VerifiedPreKeyBundle};
use prost::Message;
use std::fmt;

/// Label at the start of the hybrid offer transcript.
pub const HYBRID_OFFER_LABEL: &[u8] = b"confidant-v1-hybrid-offer";

/// The longest encoded hybrid bundle [`HybridPreKeyBundle::from_bytes`]
/// accepts (the same bound as the classical decoder's,
/// [`confidant_x3dh::MAX_BUNDLE_LEN`]). A hybrid bundle with every field
/// set is about 1,600 bytes.
pub const MAX_HYBRID_BUNDLE_LEN: usize = confidant_x3dh::MAX_BUNDLE_LEN;

/// A KEM pre-key as offered in a bundle: id, kind, validated public key
/// and `Sig(IK_B, EncodeKEM(PQPK_B))`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKemPreKey {
    /// The id the responder chose for it.
    pub id: u32,
    /// Last-resort or one-time.
    pub kind: KemPreKeyKind,
    /// The ML-KEM-768 encapsulation key `PQPK_B`.
    pub public_key: KemPublicKey,
    /// `Sig(IK_B, EncodeKEM(PQPK_B))`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for PublicKemPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKemPreKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The bytes the responder's identity key signs to authenticate a hybrid
/// offer:
///
/// ```text
/// "confidant-v1-hybrid-offer"                      (25 bytes)
/// ‖ len(T) as u32 BE ‖ T                           T = the classical offer transcript
///                                                    over the same binding
/// ‖ KEM type (1 byte: 0x01 = ML-KEM-768)
/// ‖ kem_pre_key.id as u32 BE
/// ‖ kind (1 byte: 0x01 last-resort, 0x02 one-time)
/// ‖ Encode(PQPK_B) (1184 bytes)
/// ```
///
/// It covers everything the classical `offer_signature` covers (suites in
/// order, pre-keys, binding) and the KEM pre-key with its id and kind, so a
/// relay can neither swap, strip nor relabel any of it.
pub fn hybrid_offer_transcript(
    classical_transcript: &[u8],
    kem_pre_key_id: u32,
    kind: KemPreKeyKind,
    public_key: &KemPublicKey,
) -> Vec<u8> {
    let mut transcript = Vec::with_capacity(
        HYBRID_OFFER_LABEL.len() + 4 + classical_transcript.len() + 1 + 4 + 1 + KEM_PUBLIC_KEY_LEN,
    );
    transcript.extend_from_slice(HYBRID_OFFER_LABEL);
    transcript.extend_from_slice(
        &u32::try_from(classical_transcript.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    transcript.extend_from_slice(classical_transcript);
    transcript.push(KEM_TYPE_ML_KEM_768);
    transcript.extend_from_slice(&kem_pre_key_id.to_be_bytes());
    transcript.push(kind.transcript_byte());
    transcript.extend_from_slice(public_key.as_bytes());
    transcript
}

/// A hybrid pre-key bundle: the classical X3DH [`PreKeyBundle`] (fields 1
/// to 7 of the wire message, which a classical party reads alone) and the
/// hybrid's fields 8 (`kem_pre_key`) and 9 (`hybrid_offer_signature`).
///
/// Well formed but **not yet trusted**: only the
/// [`VerifiedHybridBundle`] that [`verify`](Self::verify) returns is used
/// to agree on a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct HybridPreKeyBundle {
    classical: PreKeyBundle,
    kem_pre_key: Option<PublicKemPreKey>,
    hybrid_offer_signature: Option<[u8; SIGNATURE_LEN]>,
}

impl HybridPreKeyBundle {
    /// Assembles a bundle from its parts (the responder builds it with
    /// [`HybridResponderKeys::bound_bundle`](crate::HybridResponderKeys::bound_bundle)).
    pub fn new(
        classical: PreKeyBundle,
        kem_pre_key: Option<PublicKemPreKey>,
        hybrid_offer_signature: Option<[u8; SIGNATURE_LEN]>,
    ) -> Self {
        Self {
            classical,
            kem_pre_key,
            hybrid_offer_signature,
        }
    }

    /// Validates a bundle from the wire: the classical fields as
    /// [`PreKeyBundle::from_wire`] does; the KEM pre-key, when present, must
    /// have a 1184-byte key that passes FIPS 203's check, a 64-byte
    /// signature and a known kind; the hybrid offer signature, when
    /// present, must be 64 bytes. Signatures are checked by
    /// [`verify`](Self::verify).
    pub fn from_wire(bundle: &wire::PreKeyBundle) -> Result<Self, HybridError> {
        let classical = PreKeyBundle::from_wire(bundle)?;
        let kem_pre_key = match &bundle.kem_pre_key {
            None => None,
            Some(kem) => Some(PublicKemPreKey {
                id: kem.id,
                kind: KemPreKeyKind::from_wire(kem.kind)?,
                public_key: KemPublicKey::from_field(
                    "bundle.kem_pre_key.public_key",
                    &kem.public_key,
                )?,
                signature: fixed_len::<SIGNATURE_LEN>(
                    "bundle.kem_pre_key.signature",
                    &kem.signature,
                )?,
            }),
        };
        let hybrid_offer_signature = if bundle.hybrid_offer_signature.is_empty() {
            None
        } else {
            Some(fixed_len::<SIGNATURE_LEN>(
                "bundle.hybrid_offer_signature",
                &bundle.hybrid_offer_signature,
            )?)
        };
        Ok(Self {
            classical,
            kem_pre_key,
            hybrid_offer_signature,
        })
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::PreKeyBundle {
        let mut bundle = self.classical.to_wire();
        bundle.kem_pre_key = self.kem_pre_key.as_ref().map(|kem| wire::KemPreKey {
            id: kem.id,
            public_key: kem.public_key.as_bytes().to_vec(),
            signature: kem.signature.to_vec(),
            kind: kem.kind.to_wire().into(),
        });
        bundle.hybrid_offer_signature = self
            .hybrid_offer_signature
            .map(|signature| signature.to_vec())
            .unwrap_or_default();
        bundle
    }

    /// Decodes and validates a bare protobuf `PreKeyBundle` of at most
    /// [`MAX_HYBRID_BUNDLE_LEN`] bytes. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HybridError> {
        let bundle: wire::PreKeyBundle = wire::decode_message(bytes, MAX_HYBRID_BUNDLE_LEN)?;
        Self::from_wire(&bundle)
    }

    /// Encodes this bundle as a bare protobuf `PreKeyBundle`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// The classical part, as a classical party sees it.
    pub fn classical(&self) -> &PreKeyBundle {
        &self.classical
    }

    /// The KEM pre-key, if the bundle carries one.
    pub fn kem_pre_key(&self) -> Option<&PublicKemPreKey> {
        self.kem_pre_key.as_ref()
    }

    /// The hybrid offer signature, if the bundle carries one.
    pub fn hybrid_offer_signature(&self) -> Option<&[u8; SIGNATURE_LEN]> {
        self.hybrid_offer_signature.as_ref()
    }

    /// Whether the bundle carries the hybrid: a KEM pre-key **and** a
    /// hybrid offer signature.
    pub fn is_hybrid(&self) -> bool {
        self.kem_pre_key.is_some() && self.hybrid_offer_signature.is_some()
    }

    /// Checks the bundle before it is used, in this order:
    ///
    /// 1. its identity key must equal `expected_identity` (the invitation's)
    ///    ([`X3dhError::IdentityMismatch`](confidant_x3dh::X3dhError::IdentityMismatch)),
    ///    before anything else;
    /// 2. if the bundle carries the hybrid ([`is_hybrid`](Self::is_hybrid)):
    ///    the signed pre-key signature (`BadSignature`), the KEM pre-key
    ///    signature over `EncodeKEM(PQPK_B)`
    ///    ([`HybridError::BadKemSignature`]), then the hybrid offer
    ///    signature over [`hybrid_offer_transcript`] with `binding`
    ///    ([`HybridError::BadHybridOfferSignature`]); the classical
    ///    `offer_signature` is not needed, since the hybrid transcript
    ///    contains the classical one;
    /// 3. if it does not (the KEM pre-key or the hybrid offer signature is
    ///    missing): with `require_hybrid`, [`HybridError::HybridStripped`];
    ///    without, the bundle is checked as a classical one
    ///    ([`PreKeyBundle::verify_bound`]) and the agreement will be
    ///    classical X3DH.
    pub fn verify(
        self,
        expected_identity: &IdentityPublicKey,
        binding: &[u8],
        require_hybrid: bool,
    ) -> Result<VerifiedHybridBundle, HybridError> {
        let Self {
            classical,
            kem_pre_key,
            hybrid_offer_signature,
        } = self;
        match (kem_pre_key, hybrid_offer_signature) {
            (Some(kem), Some(signature)) => {
                let classical = classical.verify_with_offer_check(expected_identity, |bundle| {
                    let identity = bundle.identity_key();
                    identity
                        .verify_strict(&kem.public_key.encode_kem(), &kem.signature)
                        .map_err(|_| HybridError::BadKemSignature)?;
                    let transcript = hybrid_offer_transcript(
                        &bundle.offer_transcript(binding),
                        kem.id,
                        kem.kind,
                        &kem.public_key,
                    );
                    identity
                        .verify_strict(&transcript, &signature)
                        .map_err(|_| HybridError::BadHybridOfferSignature)
                })?;
                Ok(VerifiedHybridBundle {
                    classical,
                    kem_pre_key: Some(kem),
                })
            }
            _ if require_hybrid => {
                if classical.identity_key() != expected_identity {
                    return Err(confidant_x3dh::X3dhError::IdentityMismatch.into());
                }
                Err(HybridError::HybridStripped)
            }
            _ => Ok(VerifiedHybridBundle {
                classical: classical.verify_bound(expected_identity, binding)?,
                kem_pre_key: None,
            }),
        }
    }
}

impl fmt::Debug for HybridPreKeyBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridPreKeyBundle")
            .field("classical", &self.classical)
            .field("kem_pre_key", &self.kem_pre_key)
            .field(
                "hybrid_offer_signature",
                &self.hybrid_offer_signature.is_some(),
            )
            .finish()
    }
}

/// A bundle that passed [`HybridPreKeyBundle::verify`]: its classical part
/// is verified, and its KEM pre-key, if any, is authenticated by the
/// identity key. Without a KEM pre-key the agreement is classical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHybridBundle {
    pub(crate) classical: VerifiedPreKeyBundle,
    pub(crate) kem_pre_key: Option<PublicKemPreKey>,
}

impl VerifiedHybridBundle {
    /// The verified classical part.
    pub fn classical(&self) -> &VerifiedPreKeyBundle {
        &self.classical
    }

    /// The authenticated KEM pre-key; `None` when the agreement will be
    /// classical.
    pub fn kem_pre_key(&self) -> Option<&PublicKemPreKey> {
        self.kem_pre_key.as_ref()
    }
}
