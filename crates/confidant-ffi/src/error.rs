//! The errors the bindings raise: one enum of typed variants, each with a
//! message for a person beside the kind a program matches on.

use confidant_actors::{HandshakeFailure, InvitationError, NodeError, TransportError};
use confidant_store::StoreError;

/// Why a call failed. Match on the variant (and its `kind`, where it has
/// one); `message` is for people and logs, not for parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ConfidantError {
    /// An argument is unusable (an at-rest key that is not 32 bytes, an
    /// empty connector list, a malformed connection id, a data directory
    /// that cannot be created, …). The call did nothing.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The invitation's text cannot be used (mistyped, cut short, another
    /// version). Checked before any network call: the token is not spent.
    #[error("invalid invitation: {message}")]
    InvalidInvitation {
        /// How it is unusable.
        kind: InvitationErrorKind,
        /// The detail.
        message: String,
    },
    /// The invitation names another connector than the one this node was
    /// opened with: open a node for the invitation's connector
    /// (`parse_invitation` tells which).
    #[error(
        "the invitation is for the connector at {invitation_connector}, this node uses {node_connector}"
    )]
    OtherConnector {
        /// The connector the invitation names.
        invitation_connector: String,
        /// The connector (first URL) this node was opened with.
        node_connector: String,
    },
    /// A handshake step was refused; `kind` says how (a swapped bundle is
    /// [`HandshakeFailureKind::IdentityMismatch`]).
    #[error("handshake failed: {message}")]
    Handshake {
        /// How it failed.
        kind: HandshakeFailureKind,
        /// The detail.
        message: String,
    },
    /// The connector could not be reached, or the connection to it broke.
    /// Worth retrying later.
    #[error("connector unreachable: {message}")]
    ConnectorUnreachable {
        /// The detail.
        message: String,
    },
    /// The recipient's mailbox at the connector is full: the other party
    /// must fetch its messages first. Worth retrying later.
    #[error("the recipient's mailbox is full: {message}")]
    MailboxFull {
        /// The detail.
        message: String,
    },
    /// The connector refused the request (an unknown or used invitation
    /// token, a message too large, not a party of the connection, …).
    /// Retrying the same request will not help.
    #[error("the connector refused: {message}")]
    ConnectorRefused {
        /// The detail.
        message: String,
    },
    /// No connection with this id is known to this node.
    #[error("unknown connection {connection_id}")]
    UnknownConnection {
        /// The id.
        connection_id: String,
    },
    /// The connection's handshake has not finished: wait for
    /// `NodeEvent::Connected`.
    #[error("connection {connection_id} has no session yet")]
    NotEstablished {
        /// The id.
        connection_id: String,
    },
    /// The connector answered a join with the id of a connection this node
    /// already has; refused, nothing stored.
    #[error("the connector assigned connection id {connection_id}, which is already in use")]
    ConnectionIdTaken {
        /// The id.
        connection_id: String,
    },
    /// The session refused (a message too long, a key limit reached, …).
    #[error("session refused: {message}")]
    Session {
        /// The detail.
        message: String,
    },
    /// The store failed or refused to open; `kind` says how (a wrong
    /// at-rest key is [`StorageErrorKind::WrongKey`]).
    #[error("storage: {message}")]
    Storage {
        /// How it failed.
        kind: StorageErrorKind,
        /// The detail.
        message: String,
    },
    /// The connection's actor crashed while handling the request; it
    /// restarts from its stored state. A send may or may not have left.
    #[error("connection crashed: {message}")]
    Crashed {
        /// The detail.
        message: String,
    },
    /// The node is shut down.
    #[error("the node is shut down")]
    Closed,
    /// A fault inside the library (a bug): report it.
    #[error("internal error: {message}")]
    Internal {
        /// The detail.
        message: String,
    },
}

/// How an invitation's text is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum InvitationErrorKind {
    /// Not a Confidant invitation at all.
    NotAnInvitation,
    /// An invitation of another version of the format.
    UnsupportedVersion,
    /// Cut short, mistyped or otherwise changed (its checksum or structure
    /// does not hold).
    Damaged,
    /// A field is empty or too long.
    FieldLength,
    /// A kind this version of the bindings does not know.
    Other,
}

/// Why a handshake step was refused (the runtime's `HandshakeFailure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HandshakeFailureKind {
    /// The bundle's identity key is not the invitation's: someone (the
    /// relay) swapped the bundle. The connection keeps waiting for the
    /// right one.
    IdentityMismatch,
    /// A signature of the bundle does not verify (altered, or replayed).
    BadSignature,
    /// None of the suites the other side offered is available here.
    NoCommonSuite,
    /// The initial message names a suite not available or not offered.
    UnknownSuite,
    /// The initial message is malformed.
    MalformedInitialMessage,
    /// The first message did not open.
    FirstMessage,
    /// A one-time pre-key was required and none was used.
    OneTimePreKeyRequired,
    /// The one-time pre-key named was already used, or never existed.
    OneTimePreKeyUsed,
    /// A reset would replace the session with one between other parties.
    OtherParties,
    /// An identity key is not a usable Ed25519 key.
    InvalidIdentityKey,
    /// The post-quantum hybrid is required and the bundle came without it:
    /// someone between the parties stripped it (a downgrade).
    HybridStripped,
    /// The post-quantum hybrid is required and the other side's initial
    /// message is classical.
    ClassicalRefused,
    /// Anything else the key agreement refused.
    KeyAgreement,
    /// This side could not set up the session.
    Session,
    /// A kind this version of the bindings does not know.
    Other,
}

/// How the store failed (the store's `StoreError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum StorageErrorKind {
    /// The operating system refused a read or write (a full disk,
    /// permissions, a vanished file).
    Io,
    /// The file or a record in it is damaged, or not a redb file.
    Corrupt,
    /// The file was written by another schema version.
    SchemaMismatch,
    /// The file is a database but not a Confidant store.
    NotAStore,
    /// The store is encrypted at rest and no at-rest key was given.
    KeyRequired,
    /// The at-rest key is not the one the store was created with.
    WrongKey,
    /// An at-rest key was given for a store created without one.
    NotEncrypted,
    /// Another process or handle has the file open.
    AlreadyOpen,
    /// Anything else (inconsistent records, a snapshot that does not
    /// restore, …).
    Other,
}

impl ConfidantError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
        }
    }
}

impl From<InvitationError> for ConfidantError {
    fn from(error: InvitationError) -> Self {
        let kind = match &error {
            InvitationError::NotAnInvitation => InvitationErrorKind::NotAnInvitation,
            InvitationError::UnsupportedVersion(_) => InvitationErrorKind::UnsupportedVersion,
            InvitationError::Damaged(_) => InvitationErrorKind::Damaged,
            InvitationError::FieldLength(_) => InvitationErrorKind::FieldLength,
            _ => InvitationErrorKind::Other,
        };
        Self::InvalidInvitation {
            kind,
            message: error.to_string(),
        }
    }
}

/// The kind of a handshake failure.
pub(crate) fn handshake_kind(failure: &HandshakeFailure) -> HandshakeFailureKind {
    use HandshakeFailureKind as Kind;
    match failure {
        HandshakeFailure::IdentityMismatch => Kind::IdentityMismatch,
        HandshakeFailure::BadSignature(_) => Kind::BadSignature,
        HandshakeFailure::NoCommonSuite { .. } => Kind::NoCommonSuite,
        HandshakeFailure::UnknownSuite(_) => Kind::UnknownSuite,
        HandshakeFailure::MalformedInitialMessage(_) => Kind::MalformedInitialMessage,
        HandshakeFailure::FirstMessage(_) => Kind::FirstMessage,
        HandshakeFailure::OneTimePreKeyRequired => Kind::OneTimePreKeyRequired,
        HandshakeFailure::OneTimePreKeyUsed(_) => Kind::OneTimePreKeyUsed,
        HandshakeFailure::OtherParties => Kind::OtherParties,
        HandshakeFailure::InvalidIdentityKey(_) => Kind::InvalidIdentityKey,
        HandshakeFailure::HybridStripped => Kind::HybridStripped,
        HandshakeFailure::ClassicalRefused => Kind::ClassicalRefused,
        HandshakeFailure::KeyAgreement(_) => Kind::KeyAgreement,
        HandshakeFailure::Session(_) => Kind::Session,
        _ => Kind::Other,
    }
}

impl From<StoreError> for ConfidantError {
    fn from(error: StoreError) -> Self {
        use StorageErrorKind as Kind;
        let kind = match &error {
            StoreError::Io(_) => Kind::Io,
            StoreError::Corrupt(_) => Kind::Corrupt,
            StoreError::SchemaMismatch { .. } => Kind::SchemaMismatch,
            StoreError::NotAStore => Kind::NotAStore,
            StoreError::KeyRequired => Kind::KeyRequired,
            StoreError::WrongKey => Kind::WrongKey,
            StoreError::NotEncrypted => Kind::NotEncrypted,
            StoreError::AlreadyOpen => Kind::AlreadyOpen,
            _ => Kind::Other,
        };
        Self::Storage {
            kind,
            message: error.to_string(),
        }
    }
}

impl From<TransportError> for ConfidantError {
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::Unavailable(message) => Self::ConnectorUnreachable { message },
            TransportError::MailboxFull(message) => Self::MailboxFull { message },
            TransportError::Refused(message) => Self::ConnectorRefused { message },
            TransportError::Closed => Self::Closed,
            other => Self::ConnectorRefused {
                message: other.to_string(),
            },
        }
    }
}

impl From<NodeError> for ConfidantError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Store(error) => error.into(),
            NodeError::Transport(error) => error.into(),
            NodeError::ConnectionIdTaken(id) => Self::ConnectionIdTaken {
                connection_id: id.as_str().to_owned(),
            },
            NodeError::UnknownConnection(id) => Self::UnknownConnection {
                connection_id: id.as_str().to_owned(),
            },
            NodeError::NotEstablished(id) => Self::NotEstablished {
                connection_id: id.as_str().to_owned(),
            },
            NodeError::Session(message) => Self::Session { message },
            NodeError::Handshake(failure) => Self::Handshake {
                kind: handshake_kind(&failure),
                message: failure.to_string(),
            },
            NodeError::Invitation(error) => error.into(),
            NodeError::Crashed(message) => Self::Crashed { message },
            NodeError::Stopped => Self::Closed,
            other => Self::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn transport_errors_keep_their_kind() {
        assert!(matches!(
            ConfidantError::from(TransportError::Unavailable("down".into())),
            ConfidantError::ConnectorUnreachable { .. }
        ));
        assert!(matches!(
            ConfidantError::from(TransportError::MailboxFull(
                "the recipient's mailbox is full (2 messages waiting)".into()
            )),
            ConfidantError::MailboxFull { .. }
        ));
        // Only the typed kind counts, never a refusal's text.
        assert!(matches!(
            ConfidantError::from(TransportError::Refused(
                "Some resource has been exhausted: the recipient's mailbox is full".into()
            )),
            ConfidantError::ConnectorRefused { .. }
        ));
        assert!(matches!(
            ConfidantError::from(TransportError::Refused("Not found: unknown token".into())),
            ConfidantError::ConnectorRefused { .. }
        ));
        assert_eq!(
            ConfidantError::from(TransportError::Closed),
            ConfidantError::Closed
        );
    }

    #[test]
    fn handshake_and_store_errors_keep_their_kind() {
        match ConfidantError::from(NodeError::Handshake(HandshakeFailure::IdentityMismatch)) {
            ConfidantError::Handshake { kind, message } => {
                assert_eq!(kind, HandshakeFailureKind::IdentityMismatch);
                assert!(message.contains("swapped bundle"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            handshake_kind(&HandshakeFailure::OneTimePreKeyUsed(3)),
            HandshakeFailureKind::OneTimePreKeyUsed
        );
        match ConfidantError::from(StoreError::WrongKey) {
            ConfidantError::Storage { kind, .. } => assert_eq!(kind, StorageErrorKind::WrongKey),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ConfidantError::from(NodeError::Stopped),
            ConfidantError::Closed
        );
    }
}
