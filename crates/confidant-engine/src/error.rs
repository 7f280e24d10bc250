//! Why an application's request to a connection failed.

use crate::failure::HandshakeFailure;
use confidant_core::ConnectionId;
use confidant_store::StoreError;

/// Why a request to the engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A read or a commit of the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No connection with this id is known here.
    #[error("unknown connection {0}")]
    UnknownConnection(ConnectionId),
    /// The connection's handshake has not finished.
    #[error("connection {0} has no session yet (handshake not finished)")]
    NotEstablished(ConnectionId),
    /// The session refused (message too long, key limit, …), or the stored
    /// session cannot be read.
    #[error("session refused: {0}")]
    Session(String),
    /// A handshake step was refused.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeFailure),
    /// The driver's randomness failed.
    #[error("no randomness: {0}")]
    Random(String),
    /// The engine is waiting for the outcome of a commit it asked for: the
    /// driver reports it first.
    #[error("connection {0} is waiting for a commit's outcome")]
    Busy(ConnectionId),
}

/// A store error as the engine reports it: the session's own refusals keep
/// their text.
pub(crate) fn store_error(error: StoreError) -> EngineError {
    match error {
        StoreError::Session(reason) => EngineError::Session(reason),
        other => EngineError::Store(other),
    }
}
