//! Why a handshake step was refused, as kinds an application can tell apart.

use confidant_core::UnknownSuite;
use confidant_session::handshake::HandshakeError;
use confidant_x3dh::X3dhError;
use confidant_x3dh_mlkem768::HybridError;

/// Why a handshake step was refused, in kinds an application can tell
/// apart (reported in [`Event::HandshakeFailed`](crate::Event::HandshakeFailed),
/// and by the runtime as `NodeError::Handshake`). The display text is the detail for a
/// person; match on the kind in code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The bundle's identity key is not the invitation's: the relay (or
    /// someone) swapped the bundle. The connection keeps waiting for the
    /// right one.
    #[error(
        "the bundle's identity key is not the expected one (the invitation's): a swapped bundle"
    )]
    IdentityMismatch,
    /// A signature of the bundle does not verify, or its offer is unsigned:
    /// the signed pre-key, the offered suites, the one-time pre-key or the
    /// binding (connection, invitation token, reset request) were altered,
    /// or the bundle answers another handshake (a replay).
    #[error("a bundle signature does not verify: {0}")]
    BadSignature(String),
    /// None of the suites the other side offered is registered here.
    #[error("no suite offered by the other side ({offered:?}) is registered here")]
    NoCommonSuite {
        /// The suites offered, most preferred first.
        offered: Vec<u32>,
    },
    /// The initial message names a suite that is not registered here or
    /// that this side did not offer.
    #[error("the initial message's suite {0} is unknown or was not offered")]
    UnknownSuite(u32),
    /// The initial message is malformed.
    #[error("the initial message is malformed: {0}")]
    MalformedInitialMessage(String),
    /// The initial message's first message did not open: the two sides did
    /// not agree on the secret, or the message was altered.
    #[error("the first message did not open: {0}")]
    FirstMessage(String),
    /// No one-time pre-key was used (or offered) and one is required.
    #[error("no one-time pre-key was used; one is required")]
    OneTimePreKeyRequired,
    /// The one-time pre-key the initial message names was already used (a
    /// replayed initial message) or never existed.
    #[error("the one-time pre-key {0} is already used or unknown")]
    OneTimePreKeyUsed(u32),
    /// A reset would replace the session with one between other parties.
    #[error("the new session is not between the same parties as the one it would replace")]
    OtherParties,
    /// An identity key is not a usable Ed25519 key (malformed, or of small
    /// order).
    #[error("unusable identity key: {0}")]
    InvalidIdentityKey(String),
    /// The invitation promised the post-quantum hybrid (X3DH + ML-KEM-768)
    /// and the bundle came without its KEM part: someone between the
    /// parties stripped it to force a classical session (a downgrade).
    #[error("the bundle's post-quantum part is missing and the hybrid is required (a downgrade)")]
    HybridStripped,
    /// This side requires the post-quantum hybrid and the other side's
    /// initial message is classical X3DH.
    #[error("a classical initial message was refused: the hybrid is required")]
    ClassicalRefused,
    /// Anything else the key agreement refused (undecodable bytes, a
    /// non-contributory Diffie-Hellman, a retired signed pre-key, …).
    #[error("key agreement failed: {0}")]
    KeyAgreement(String),
    /// This side could not set up the session or seal its first message.
    #[error("the session could not be set up: {0}")]
    Session(String),
}

impl HandshakeFailure {
    /// The kind of a key agreement's own error: X3DH's errors keep their
    /// meaning; another key agreement's are [`HandshakeFailure::KeyAgreement`].
    pub fn from_key_agreement(error: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(hybrid) = error.downcast_ref::<HybridError>() {
            return match hybrid {
                HybridError::X3dh(error) => Self::from_key_agreement(error),
                HybridError::HybridStripped => Self::HybridStripped,
                HybridError::ClassicalRefused => Self::ClassicalRefused,
                error @ (HybridError::BadKemSignature | HybridError::BadHybridOfferSignature) => {
                    Self::BadSignature(error.to_string())
                }
                other => Self::KeyAgreement(other.to_string()),
            };
        }
        match error.downcast_ref::<X3dhError>() {
            Some(X3dhError::IdentityMismatch) => Self::IdentityMismatch,
            Some(
                error @ (X3dhError::BadSignature
                | X3dhError::UnsignedOffer
                | X3dhError::BadOfferSignature),
            ) => Self::BadSignature(error.to_string()),
            Some(error @ (X3dhError::InvalidIdentityKey | X3dhError::WeakIdentityKey)) => {
                Self::InvalidIdentityKey(error.to_string())
            }
            _ => Self::KeyAgreement(error.to_string()),
        }
    }
}

impl<E: std::error::Error + 'static> From<HandshakeError<E>> for HandshakeFailure {
    fn from(error: HandshakeError<E>) -> Self {
        match error {
            HandshakeError::KeyAgreement(error) => Self::from_key_agreement(&error),
            HandshakeError::NoCommonSuite { offered } => Self::NoCommonSuite { offered },
            HandshakeError::UnknownSuite(UnknownSuite(suite)) => Self::UnknownSuite(suite.0),
            HandshakeError::MalformedInitialMessage(reason) => {
                Self::MalformedInitialMessage(reason.to_owned())
            }
            HandshakeError::FirstMessage(error) => Self::FirstMessage(error.to_string()),
            HandshakeError::OneTimePreKeyRequired => Self::OneTimePreKeyRequired,
            HandshakeError::OtherParties => Self::OtherParties,
            HandshakeError::Session(error) => Self::Session(error.to_string()),
            HandshakeError::Seal(error) => Self::Session(error.to_string()),
            // `HandshakeError` may grow kinds; they keep their text.
            other => Self::KeyAgreement(other.to_string()),
        }
    }
}
