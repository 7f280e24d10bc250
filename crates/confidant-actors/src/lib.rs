//! # confidant-actors
//!
//! Confidant's runtime: what a larger Rust service embeds to hold many
//! end-to-end encrypted connections at once.
//!
//! - One [`ConnectionActor`] (actix) per connection owns the connection's
//!   session and sequences everything done to it: sealing, opening, the
//!   X3DH handshake, key updates and resets. The protocol itself lives in
//!   `confidant-session` and `confidant-store`.
//! - A hub routes by connection id, starts an actor from the store when a
//!   message for its connection arrives, and stops actors that stay idle,
//!   so memory grows with active connections, not with all of them.
//! - A [`Transport`] (async) carries envelopes to and from the relay;
//!   [`MemoryRelay`] is the in-memory one for tests. A delivery is
//!   acknowledged to the transport only once its effect is durable.
//! - [`Node::builder`] takes the store, the suites, the key agreement and
//!   the transport and returns a [`Node`] handle plus its [`Events`].
//!
//! ## Embedding in a tokio service
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use confidant_actors::{Event, MemoryRelay, Node};
//! use confidant_core::SuiteRegistry;
//! use confidant_store::MemoryStore;
//! use std::sync::Arc;
//!
//! fn suites() -> SuiteRegistry {
//!     let mut suites = SuiteRegistry::new();
//!     confidant_aes_gcm::register(&mut suites).expect("fresh registry");
//!     suites
//! }
//! let relay = MemoryRelay::new();
//! let start = |party: &str| {
//!     Node::builder()
//!         .store(Arc::new(MemoryStore::new())) // a RedbStore in production
//!         .suites(suites())
//!         .key_agreement(confidant_x3dh::X3dh::default())
//!         .transport(relay.transport(party))
//!         .start()
//! };
//! let (issuer, mut issuer_events) = start("issuer").await?;
//! let (holder, mut holder_events) = start("holder").await?;
//!
//! // The issuer shows an invitation (as a QR code); the holder accepts it.
//! let invitation = issuer.create_invitation().await?;
//! let connection = holder.accept_invitation(&invitation, "hello").await?;
//!
//! // The holder is connected once the issuer's bundle checked out.
//! while !matches!(holder_events.next().await, Some(Event::Connected { .. })) {}
//! holder.send(&connection, "a second message").await?;
//!
//! // The issuer gets both, in order, each durably stored first.
//! let mut texts = Vec::new();
//! while texts.len() < 2 {
//!     if let Some(Event::Message(message)) = issuer_events.next().await {
//!         texts.push(String::from_utf8(message.plaintext.to_vec())?);
//!         issuer.acknowledge(&[message.sequence]).await?;
//!     }
//! }
//! assert_eq!(texts, ["hello", "a second message"]);
//! issuer.shutdown().await?;
//! holder.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! `docs/architecture.md` describes the actors, who owns which state and
//! how a message travels.

mod committer;
mod config;
mod connection;
mod error;
mod event;
mod hub;
mod invitation;
mod memory_transport;
mod node;
mod shared;
mod syncing;
mod transport;

pub use connection::ConnectionActor;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a stored connection record (see
    /// [`confidant_engine::fuzzing::connection_record`]).
    pub fn connection_record(bytes: &[u8]) -> Option<bool> {
        confidant_engine::fuzzing::connection_record(bytes)
    }
}

pub use confidant_engine::Side;
pub use config::NodeConfig;
pub use error::{HandshakeFailure, NodeError};
pub use event::{ConnectionInfo, ConnectionState, Event, Events, IncomingMessage};
pub use invitation::{INVITATION_VERSION, Invitation, InvitationError};
pub use memory_transport::{MemoryRelay, MemoryTransport};
pub use node::{Node, NodeBuilder};
pub use transport::{
    Delivery, DeliveryId, Outgoing, Payload, RelayInvitation, Transport, TransportError,
};
