//! The runtime's errors.

use crate::invitation::InvitationError;
use crate::transport::TransportError;
use confidant_core::ConnectionId;
pub use confidant_engine::HandshakeFailure;
use confidant_store::StoreError;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The relay answered a join with the id of a connection this node
    /// already has. Refused, and nothing was stored: an id the relay
    /// assigns never replaces an existing connection (that would hand the
    /// connection to whoever issued the new invitation).
    #[error("the relay assigned connection id {0}, which this node already uses; refused")]
    ConnectionIdTaken(ConnectionId),
    /// No connection with this id is known here.
    #[error("unknown connection {0}")]
    UnknownConnection(ConnectionId),
    /// The connection's handshake has not finished: wait for
    /// [`Event::Connected`](crate::Event::Connected).
    #[error("connection {0} has no session yet (handshake not finished)")]
    NotEstablished(ConnectionId),
    /// The session refused (message too long, key limit, …).
    #[error("session refused: {0}")]
    Session(String),
    /// The handshake failed; [`HandshakeFailure`] says how.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeFailure),
    /// The invitation is malformed or unusable.
    #[error(transparent)]
    Invitation(#[from] InvitationError),
    /// The connection's actor crashed while handling the request; the
    /// connection restarts from its stored state on the next request. What
    /// the request did is unknown: a send may or may not have left.
    #[error("connection crashed: {0}")]
    Crashed(String),
    /// The builder is missing something or holds an invalid value.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The node is shut down.
    #[error("the node is shut down")]
    Stopped,
}

impl From<confidant_engine::EngineError> for NodeError {
    fn from(error: confidant_engine::EngineError) -> Self {
        use confidant_engine::EngineError;
        match error {
            EngineError::Store(error) => Self::Store(error),
            EngineError::UnknownConnection(id) => Self::UnknownConnection(id),
            EngineError::NotEstablished(id) => Self::NotEstablished(id),
            EngineError::Session(reason) => Self::Session(reason),
            EngineError::Handshake(failure) => Self::Handshake(failure),
            EngineError::Random(reason) => Self::Crashed(reason),
            EngineError::Busy(id) => Self::Crashed(format!(
                "connection {id} was left waiting for a commit; it restarts from its stored state"
            )),
            // The engine's errors may grow kinds; they keep their text.
            other => Self::Session(other.to_string()),
        }
    }
}
