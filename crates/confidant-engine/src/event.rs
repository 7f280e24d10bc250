//! What a connection reports to its application: [`Event`]s (messages
//! among them), and how a connection is listed ([`ConnectionInfo`]).

use crate::failure::HandshakeFailure;
use crate::records::{ConnectionRecord, Phase, Side};
use confidant_core::ConnectionId;
use zeroize::Zeroizing;

/// A message from the other party, durably in the inbox.
#[derive(Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The connection it arrived on.
    pub connection_id: ConnectionId,
    /// Its inbox number: acknowledge it once handled (`Node::acknowledge`
    /// in the runtime).
    /// Until then it is reported again after every restart.
    pub sequence: u64,
    /// The message.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("connection_id", &self.connection_id)
            .field("sequence", &self.sequence)
            .field("len", &self.plaintext.len())
            .finish()
    }
}

/// What happens on a node's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Inviter: someone joined with one of this node's invitations; the
    /// bundle is on its way.
    Joined {
        /// The new connection.
        connection_id: ConnectionId,
    },
    /// A session is established (or replaced, after a reset).
    Connected {
        /// The connection.
        connection_id: ConnectionId,
        /// This node's side of it.
        side: Side,
        /// The other party's identity key.
        peer_identity: [u8; 32],
        /// Whether this replaced an earlier session.
        reset: bool,
        /// Whether the session's secret came from the post-quantum hybrid
        /// (X3DH + ML-KEM-768), so that traffic recorded now stays secret
        /// against a future quantum computer; `false` for classical X3DH.
        post_quantum: bool,
    },
    /// A handshake step was refused (for an invitee: a bundle whose
    /// identity key is not the invitation's, or a bad signature). The
    /// connection keeps waiting for a valid one.
    HandshakeFailed {
        /// The connection.
        connection_id: ConnectionId,
        /// Why, as a kind to match on (a swapped bundle, a bad signature,
        /// no common suite, …); its display text is the detail.
        error: HandshakeFailure,
    },
    /// A message arrived.
    Message(IncomingMessage),
    /// A delivery was given up: handling it crashed the connection's actor
    /// again and again (a cipher plugin that panics on it, for example).
    /// The connection goes on with the deliveries after it.
    DeliveryDropped {
        /// The connection.
        connection_id: ConnectionId,
        /// Why.
        reason: String,
    },
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Invitee: waiting for the inviter's bundle.
    AwaitingBundle,
    /// Inviter: bundle sent, waiting for the initial message.
    AwaitingInitialMessage,
    /// A session exists.
    Established,
    /// Invitee: a reset was asked for; the old session still works until
    /// the new one replaces it.
    ResetRequested,
}

impl ConnectionState {
    /// Where the connection with `record` stands.
    pub fn of(record: &ConnectionRecord) -> Self {
        match record.phase {
            Phase::AwaitingBundle { .. } => Self::AwaitingBundle,
            Phase::BundleSent { .. } => Self::AwaitingInitialMessage,
            Phase::Established if record.reset_requested => Self::ResetRequested,
            Phase::Established => Self::Established,
        }
    }
}

/// One connection, as a node lists it (`Node::connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Its id.
    pub connection_id: ConnectionId,
    /// This node's side.
    pub side: Side,
    /// Where it stands.
    pub state: ConnectionState,
    /// The other party's identity key, once known.
    pub peer_identity: Option<[u8; 32]>,
}
