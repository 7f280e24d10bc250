//! The records and enums that cross the boundary: events, connections,
//! invitations. Keys are public keys only; no secret crosses.

use crate::error::{HandshakeFailureKind, handshake_kind};
use crate::fingerprint::fingerprint;
use confidant_actors::{ConnectionState as RuntimeState, Event, Side as RuntimeSide};

/// This node's side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Side {
    /// Created the invitation (an issuer).
    Inviter,
    /// Accepted the invitation (a holder, a wallet).
    Invitee,
}

impl From<RuntimeSide> for Side {
    fn from(side: RuntimeSide) -> Self {
        match side {
            RuntimeSide::Inviter => Self::Inviter,
            RuntimeSide::Invitee => Self::Invitee,
        }
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Invitee: waiting for the inviter's bundle.
    AwaitingBundle,
    /// Inviter: bundle sent, waiting for the initial message.
    AwaitingInitialMessage,
    /// A session exists: messages can be sent.
    Established,
    /// Invitee: a reset was asked for; the old session works until the new
    /// one replaces it.
    ResetRequested,
    /// A state this version of the bindings does not know.
    Other,
}

impl From<RuntimeState> for ConnectionState {
    fn from(state: RuntimeState) -> Self {
        match state {
            RuntimeState::AwaitingBundle => Self::AwaitingBundle,
            RuntimeState::AwaitingInitialMessage => Self::AwaitingInitialMessage,
            RuntimeState::Established => Self::Established,
            RuntimeState::ResetRequested => Self::ResetRequested,
            _ => Self::Other,
        }
    }
}

/// One connection of the node.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConnectionInfo {
    /// Its id (what `send`, `reset` and the events name).
    pub connection_id: String,
    /// This node's side.
    pub side: Side,
    /// Where it stands.
    pub state: ConnectionState,
    /// The other party's Ed25519 identity key (32 bytes), once known.
    pub peer_identity_key: Option<Vec<u8>>,
    /// Its fingerprint (see `fingerprint`), once known.
    pub peer_fingerprint: Option<String>,
}

impl From<confidant_actors::ConnectionInfo> for ConnectionInfo {
    fn from(info: confidant_actors::ConnectionInfo) -> Self {
        Self {
            connection_id: info.connection_id.as_str().to_owned(),
            side: info.side.into(),
            state: info.state.into(),
            peer_identity_key: info.peer_identity.map(|key| key.to_vec()),
            peer_fingerprint: info.peer_identity.as_ref().map(fingerprint),
        }
    }
}

/// What an invitation's text holds (nothing secret but the token, which
/// is not shown).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InvitationInfo {
    /// The connector's URL: open the node with it.
    pub connector_url: String,
    /// The inviter's Ed25519 identity key (32 bytes).
    pub inviter_identity_key: Vec<u8>,
    /// Its fingerprint, to compare with what the inviter shows.
    pub inviter_fingerprint: String,
    /// The inviter has the post-quantum hybrid (X3DH + ML-KEM-768) and
    /// requires it; its bundles are refused without it.
    pub post_quantum: bool,
}

/// What happens on the node's connections, in order.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum NodeEvent {
    /// Inviter: someone joined with one of this node's invitations; the
    /// bundle is on its way.
    Joined {
        /// The new connection.
        connection_id: String,
    },
    /// The handshake is done (X3DH): messages can be sent. After a reset,
    /// `reset` is true and the session was replaced.
    Connected {
        /// The connection.
        connection_id: String,
        /// This node's side.
        side: Side,
        /// The other party's Ed25519 identity key (32 bytes).
        peer_identity_key: Vec<u8>,
        /// Its fingerprint.
        peer_fingerprint: String,
        /// Whether this replaced an earlier session.
        reset: bool,
        /// Whether the session's secret came from the post-quantum hybrid
        /// (X3DH + ML-KEM-768), the default; `false` for classical X3DH.
        post_quantum: bool,
    },
    /// A handshake step was refused (for a holder: a bundle whose identity
    /// key is not the invitation's, `IdentityMismatch`, a swapped bundle).
    /// The connection keeps waiting for a valid one.
    HandshakeFailed {
        /// The connection.
        connection_id: String,
        /// How it failed.
        kind: HandshakeFailureKind,
        /// The detail.
        message: String,
    },
    /// A message arrived, durably stored in the node's inbox. Acknowledge
    /// `sequence` once the application has handled it (stored it itself):
    /// until then it is reported again after every restart, under the same
    /// number.
    MessageReceived {
        /// The connection.
        connection_id: String,
        /// Its inbox number.
        sequence: u64,
        /// The message.
        message: Vec<u8>,
    },
    /// A delivery was given up after it crashed the connection again and
    /// again; the connection goes on with the ones after it.
    DeliveryDropped {
        /// The connection.
        connection_id: String,
        /// Why.
        reason: String,
    },
    /// An event this version of the bindings does not know.
    Other {
        /// Its description.
        description: String,
    },
}

impl From<Event> for NodeEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Joined { connection_id } => Self::Joined {
                connection_id: connection_id.as_str().to_owned(),
            },
            Event::Connected {
                connection_id,
                side,
                peer_identity,
                reset,
                post_quantum,
            } => Self::Connected {
                connection_id: connection_id.as_str().to_owned(),
                side: side.into(),
                peer_identity_key: peer_identity.to_vec(),
                peer_fingerprint: fingerprint(&peer_identity),
                reset,
                post_quantum,
            },
            Event::HandshakeFailed {
                connection_id,
                error,
            } => Self::HandshakeFailed {
                connection_id: connection_id.as_str().to_owned(),
                kind: handshake_kind(&error),
                message: error.to_string(),
            },
            Event::Message(message) => Self::MessageReceived {
                connection_id: message.connection_id.as_str().to_owned(),
                sequence: message.sequence,
                message: message.plaintext.to_vec(),
            },
            Event::DeliveryDropped {
                connection_id,
                reason,
            } => Self::DeliveryDropped {
                connection_id: connection_id.as_str().to_owned(),
                reason,
            },
            // `Event` may grow kinds; its `Debug` form never shows a
            // message's plaintext.
            other => Self::Other {
                description: format!("{other:?}"),
            },
        }
    }
}
