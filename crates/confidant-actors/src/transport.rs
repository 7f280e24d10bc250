//! How a node reaches the relay: the [`Transport`] trait.
//!
//! A transport moves opaque envelopes between the two parties of a
//! connection and keeps each party's undelivered envelopes until the party
//! acknowledges them. The runtime acknowledges a delivery only after its
//! effect is durable (the replay window and the inbox entry are committed),
//! so a crash between receiving and acknowledging causes a redelivery, which
//! the replay window refuses, never a loss.
//!
//! [`MemoryRelay`](crate::MemoryRelay) implements it in memory for tests
//! and examples; the connector's gRPC client implements it over the network.

use async_trait::async_trait;
use confidant_core::ConnectionId;

/// The relay's number for a delivery (the engine's type).
pub use confidant_engine::DeliveryId;

/// What the relay delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// An encoded [`Envelope`](confidant_core::wire::Envelope) from the other
    /// party of the connection.
    Envelope(Vec<u8>),
    /// The relay's notice, to the party that created an invitation, that
    /// someone joined the connection with the invitation's token.
    Joined {
        /// The invitation's token.
        token: String,
    },
}

/// One delivery from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The relay's number, for [`Transport::acknowledge`] and
    /// [`Transport::release`].
    pub id: DeliveryId,
    /// The connection it arrived on.
    pub connection_id: ConnectionId,
    /// What arrived.
    pub payload: Payload,
}

/// One envelope to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The connection to send it on.
    pub connection_id: ConnectionId,
    /// The encoded envelope.
    pub envelope: Vec<u8>,
}

/// A fresh invitation at the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInvitation {
    /// Where the relay is (for the invitation the other party scans).
    pub relay: String,
    /// The single-use token the other party joins with.
    pub token: String,
}

/// A transport failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The relay could not be reached, or the connection to it broke. Worth
    /// retrying.
    #[error("relay unavailable: {0}")]
    Unavailable(String),
    /// The relay refused the request (unknown or used token, unknown
    /// connection, not a party of the connection, too large, …). Retrying
    /// the same request will not help.
    #[error("relay refused the request: {0}")]
    Refused(String),
    /// The recipient already has as many messages waiting at the relay as
    /// it may: nothing from the refused envelope on was stored. Retrying
    /// later helps once the recipient has taken some.
    #[error("the recipient's mailbox at the relay is full: {0}")]
    MailboxFull(String),
    /// The transport was shut down.
    #[error("transport closed")]
    Closed,
    /// This transport cannot do what was asked (for example
    /// [`Transport::fetch_waiting`] on a transport that only streams).
    #[error("not supported by this transport: {0}")]
    Unsupported(String),
}

/// How a node talks to the relay. Implementations must be cheap to call
/// concurrently from several tasks.
///
/// Contract:
/// - [`Transport::send`] returns `Ok` only once the relay has stored every
///   envelope of the batch, in order.
/// - [`Transport::receive`] waits until at least one delivery is available
///   and returns at most `max`, oldest first. A delivery that is neither
///   acknowledged nor released is not handed out again by this transport
///   instance; a new instance (after a restart) receives it again.
/// - [`Transport::acknowledge`] tells the relay it may delete the
///   deliveries; [`Transport::release`] hands them back, to be received
///   again before anything newer.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Asks the relay for a new single-use invitation token.
    async fn create_invitation(&self) -> Result<RelayInvitation, TransportError>;

    /// Joins the connection of an invitation's token; returns its id.
    async fn join(&self, token: &str) -> Result<ConnectionId, TransportError>;

    /// Sends envelopes, in order.
    async fn send(&self, envelopes: Vec<Outgoing>) -> Result<(), TransportError>;

    /// Waits for deliveries and returns at most `max` of them.
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError>;

    /// The deliveries' effects are durable: the relay may delete them.
    async fn acknowledge(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError>;

    /// The deliveries were not processed: deliver them again.
    async fn release(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError>;

    /// For a node that holds no live stream to the relay (a phone app woken
    /// by a push notification, see [`Node::sync`](crate::Node::sync)):
    /// fetches what waits at the relay now and hands it to
    /// [`Transport::receive`], then returns the ids it handed over. Nothing
    /// this instance has handed out before is handed out again. The
    /// default refuses with [`TransportError::Unsupported`].
    async fn fetch_waiting(&self) -> Result<Vec<DeliveryId>, TransportError> {
        Err(TransportError::Unsupported(
            "fetching what waits (this transport delivers by itself)".into(),
        ))
    }
}
