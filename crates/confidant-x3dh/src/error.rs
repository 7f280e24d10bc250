//! Why an X3DH operation failed.

use confidant_core::SuiteId;
use confidant_core::wire::DecodeError;
use std::fmt;
use thiserror::Error;

/// One of the four Diffie-Hellman computations of X3DH.
///
/// Named in [`X3dhError::NonContributoryDh`] so a refused handshake says
/// which of the peer's keys was at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhStep {
    /// `DH1 = DH(IK_A, SPK_B)`: the initiator's identity key with the
    /// responder's signed pre-key.
    Dh1,
    /// `DH2 = DH(EK_A, IK_B)`: the initiator's ephemeral key with the
    /// responder's identity key.
    Dh2,
    /// `DH3 = DH(EK_A, SPK_B)`: the initiator's ephemeral key with the
    /// responder's signed pre-key.
    Dh3,
    /// `DH4 = DH(EK_A, OPK_B)`: the initiator's ephemeral key with the
    /// responder's one-time pre-key.
    Dh4,
}

impl fmt::Display for DhStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DhStep::Dh1 => "DH1 = DH(IK_A, SPK_B)",
            DhStep::Dh2 => "DH2 = DH(EK_A, IK_B)",
            DhStep::Dh3 => "DH3 = DH(EK_A, SPK_B)",
            DhStep::Dh4 => "DH4 = DH(EK_A, OPK_B)",
        })
    }
}

/// Why an X3DH operation failed.
///
/// The variants fall in three groups:
///
/// * **the peer's fault** (or the relay's): a bundle or initial message that
///   is malformed, forged, swapped or built from degenerate keys —
///   [`Decode`](Self::Decode), [`IdentityMismatch`](Self::IdentityMismatch),
///   [`BadSignature`](Self::BadSignature),
///   [`InvalidIdentityKey`](Self::InvalidIdentityKey),
///   [`WeakIdentityKey`](Self::WeakIdentityKey),
///   [`NonContributoryDh`](Self::NonContributoryDh),
///   [`UnknownSignedPreKey`](Self::UnknownSignedPreKey),
///   [`UnknownOneTimePreKey`](Self::UnknownOneTimePreKey),
///   [`SuiteNotOffered`](Self::SuiteNotOffered);
/// * **misuse by the caller**: [`ForeignSignedPreKey`](Self::ForeignSignedPreKey),
///   [`DuplicatePreKeyId`](Self::DuplicatePreKeyId),
///   [`CurrentSignedPreKey`](Self::CurrentSignedPreKey);
/// * **the environment or a bug**: [`Randomness`](Self::Randomness),
///   [`Internal`](Self::Internal).
///
/// None of them carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum X3dhError {
    /// Bytes from the wire are not a well-formed bundle or initial message
    /// (too long, not protobuf, a field missing or of the wrong length).
    #[error("cannot decode X3DH message: {0}")]
    Decode(#[from] DecodeError),

    /// The bundle's identity key is not the one the initiator expected (the
    /// one from the invitation): the bundle may have been swapped by the
    /// relay. Checked before anything else in the bundle.
    #[error("the bundle's identity key is not the expected responder identity")]
    IdentityMismatch,

    /// The signed pre-key's signature does not verify (strictly) under the
    /// bundle's identity key.
    #[error("the signed pre-key signature does not verify under the identity key")]
    BadSignature,

    /// The bundle carries no offer signature: its suites and one-time
    /// pre-key are not authenticated, so it is refused.
    #[error("the bundle's offer is not signed")]
    UnsignedOffer,
    /// The offer signature does not verify: the suites, the pre-keys or the
    /// binding (connection, invitation or reset request) differ from what
    /// the responder signed. A relay that strips or reorders suites, strips
    /// the one-time pre-key, or replays a bundle from another handshake
    /// stops here.
    #[error("the bundle's offer signature does not verify (suites, pre-keys or binding altered)")]
    BadOfferSignature,

    /// An identity key is not the canonical encoding of a point on Ed25519.
    #[error("identity key is not a valid Ed25519 public key")]
    InvalidIdentityKey,

    /// An identity key is a point of small order, for which signatures prove
    /// nothing and Diffie-Hellman gives a predictable result.
    #[error("identity key is a weak (small-order) Ed25519 public key")]
    WeakIdentityKey,

    /// A Diffie-Hellman output was all zeros: the peer's key is of low order
    /// (for example the all-zero X25519 key), so the result would be known to
    /// anyone.
    #[error("non-contributory Diffie-Hellman in {step}: the peer's public key has low order")]
    NonContributoryDh {
        /// Which computation produced the zero output.
        step: DhStep,
    },

    /// The initial message names a signed pre-key the responder does not
    /// hold (never had it, or already retired it).
    #[error("unknown signed pre-key {id}")]
    UnknownSignedPreKey {
        /// The id that was asked for.
        id: u32,
    },

    /// The initial message (or the caller) names a one-time pre-key the
    /// responder does not hold. A one-time pre-key can be used only once:
    /// after it has been consumed, every initial message naming it fails
    /// with this error.
    #[error("unknown one-time pre-key {id} (never issued, or already used)")]
    UnknownOneTimePreKey {
        /// The id that was asked for.
        id: u32,
    },

    /// The initiator chose a suite the bundle does not offer.
    #[error("suite {suite} is not offered by the bundle")]
    SuiteNotOffered {
        /// The suite that was chosen.
        suite: SuiteId,
    },

    /// A signed pre-key given to [`ResponderKeys`](crate::ResponderKeys)
    /// carries a signature that does not verify under the responder's
    /// identity key.
    #[error("signed pre-key {id} is not signed by this identity key")]
    ForeignSignedPreKey {
        /// The signed pre-key's id.
        id: u32,
    },

    /// A pre-key with this id is already held.
    #[error("a {kind} pre-key with id {id} is already held")]
    DuplicatePreKeyId {
        /// `"signed"` or `"one-time"`.
        kind: &'static str,
        /// The duplicated id.
        id: u32,
    },

    /// The signed pre-key currently advertised in bundles cannot be removed;
    /// add a newer one first.
    #[error("signed pre-key {id} is the current one and cannot be removed")]
    CurrentSignedPreKey {
        /// The id of the current signed pre-key.
        id: u32,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(String),

    /// An internal invariant was broken; this is a bug in this crate.
    #[error("internal error in X3DH: {0}")]
    Internal(&'static str),
}
