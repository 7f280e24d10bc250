//! Why a hybrid (X3DH + ML-KEM-768) operation failed.

use confidant_core::wire::DecodeError;
use confidant_x3dh::X3dhError;
use thiserror::Error;

/// Why a hybrid key agreement failed.
///
/// As with [`X3dhError`], the variants fall in three groups:
///
/// * **the peer's fault** (or the relay's): [`Decode`](Self::Decode),
///   [`HybridStripped`](Self::HybridStripped),
///   [`BadKemSignature`](Self::BadKemSignature),
///   [`BadHybridOfferSignature`](Self::BadHybridOfferSignature),
///   [`InvalidKemPublicKey`](Self::InvalidKemPublicKey),
///   [`ClassicalRefused`](Self::ClassicalRefused),
///   [`UnknownKemPreKey`](Self::UnknownKemPreKey), and the classical checks
///   in [`X3dh`](Self::X3dh);
/// * **misuse by the caller**: [`ForeignKemPreKey`](Self::ForeignKemPreKey),
///   [`InvalidKemDecapsulationKey`](Self::InvalidKemDecapsulationKey),
///   [`DuplicateKemPreKeyId`](Self::DuplicateKemPreKeyId),
///   [`WrongKemPreKeyKind`](Self::WrongKemPreKeyKind),
///   [`CurrentKemPreKey`](Self::CurrentKemPreKey);
/// * **the environment or a bug**: [`Randomness`](Self::Randomness),
///   [`Internal`](Self::Internal).
///
/// A tampered KEM ciphertext is **not** an error here: ML-KEM's implicit
/// rejection makes decapsulation return an unrelated secret, so the
/// responder derives a different `SK` and the session layer refuses the
/// first message, which does not open under it.
///
/// None of them carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HybridError {
    /// Bytes from the wire are not a well-formed hybrid bundle or initial
    /// message (too long, not protobuf, a field missing or of the wrong
    /// length, an unknown KEM pre-key kind).
    #[error("cannot decode hybrid message: {0}")]
    Decode(#[from] DecodeError),

    /// A check of the classical X3DH part failed (identity mismatch, a bad
    /// signed pre-key or offer signature, a low-order key, an unknown
    /// pre-key, ...).
    #[error(transparent)]
    X3dh(X3dhError),

    /// The initiator requires the hybrid (it learned from the invitation,
    /// which the relay cannot change, that the responder has it), and the
    /// bundle's KEM pre-key or its hybrid offer signature is missing: a
    /// relay stripped the post-quantum part to force a classical session.
    #[error("the bundle's post-quantum part is missing and the hybrid is required")]
    HybridStripped,

    /// The KEM pre-key's signature does not verify (strictly) over
    /// `EncodeKEM(PQPK_B)` = KEM type byte ‖ encoding under the bundle's
    /// identity key. A signature over the bare encoding stops here too.
    #[error("the KEM pre-key signature does not verify under the identity key")]
    BadKemSignature,

    /// The hybrid offer signature does not verify over the hybrid offer
    /// transcript: the classical offer, the binding, or the KEM pre-key's
    /// id, kind or encoding differ from what the responder signed.
    #[error("the hybrid offer signature does not verify (offer, binding or KEM pre-key altered)")]
    BadHybridOfferSignature,

    /// A KEM public key fails FIPS 203's encapsulation key check (a
    /// coefficient not reduced modulo q).
    #[error("the KEM pre-key is not a valid ML-KEM-768 encapsulation key")]
    InvalidKemPublicKey,

    /// An expanded ML-KEM-768 decapsulation key fails FIPS 203's check
    /// (the `H(ek)` it embeds does not match its `ek`, or `ek` is invalid).
    #[error("not a valid ML-KEM-768 decapsulation key")]
    InvalidKemDecapsulationKey,

    /// The responder does not allow classical sessions
    /// ([`X3dhMlKem768::allow_classical`](crate::X3dhMlKem768::allow_classical)
    /// is off), and the initial message carries no KEM ciphertext.
    #[error("a classical initial message was refused: this responder requires the hybrid")]
    ClassicalRefused,

    /// The initial message names a KEM pre-key the responder does not hold
    /// (never had it, or a one-time KEM pre-key already used).
    #[error("unknown KEM pre-key {id} (never issued, or a one-time key already used)")]
    UnknownKemPreKey {
        /// The id that was asked for.
        id: u32,
    },

    /// A KEM pre-key given to the responder's keys carries a signature that
    /// does not verify under the responder's identity key.
    #[error("KEM pre-key {id} is not signed by this identity key")]
    ForeignKemPreKey {
        /// The KEM pre-key's id.
        id: u32,
    },

    /// A KEM pre-key with this id is already held (ids are unique across
    /// last-resort and one-time KEM pre-keys, since the initial message
    /// names only the id).
    #[error("a KEM pre-key with id {id} is already held")]
    DuplicateKemPreKeyId {
        /// The duplicated id.
        id: u32,
    },

    /// A last-resort KEM pre-key was given where a one-time one is expected,
    /// or the other way round.
    #[error("KEM pre-key {id} is not of the kind expected here")]
    WrongKemPreKeyKind {
        /// The KEM pre-key's id.
        id: u32,
    },

    /// The last-resort KEM pre-key currently advertised cannot be removed;
    /// add a newer one first.
    #[error("KEM pre-key {id} is the current last-resort key and cannot be removed")]
    CurrentKemPreKey {
        /// Its id.
        id: u32,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(String),

    /// An internal invariant was broken; this is a bug in this crate.
    #[error("internal error in the hybrid key agreement: {0}")]
    Internal(&'static str),
}

impl From<X3dhError> for HybridError {
    /// Decoding failures are reported as [`HybridError::Decode`] whichever
    /// layer found them; every other X3DH failure as [`HybridError::X3dh`].
    fn from(error: X3dhError) -> Self {
        match error {
            X3dhError::Decode(decode) => Self::Decode(decode),
            other => Self::X3dh(other),
        }
    }
}
