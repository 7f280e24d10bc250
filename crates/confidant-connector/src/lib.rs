//! # confidant-connector
//!
//! The relay two parties meet at: a gRPC service (tonic) whose contract is
//! `proto/confidant/connector/v1/connector.proto`, with mailboxes in redb
//! behind [`MailboxStore`], and the client side: [`ConnectorTransport`], the
//! runtime's [`Transport`](confidant_actors::Transport) over gRPC.
//!
//! The connector stores opaque envelopes and sees only ciphertext. Every
//! call but `GetConnectionTokenInfo` is signed by the caller's Ed25519 key
//! ([`auth`]); only the two parties of a connection may send on it or read
//! from it; a message is deleted once its recipient acknowledges it.
//! `docs/connector.md` describes the API, the message lifecycle,
//! authentication, limits and TLS ([`tls`]).

pub mod auth;
pub mod cli;
pub mod client;
pub mod mailbox;
pub mod server;
pub mod tls;

/// The generated protobuf and gRPC types.
#[allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod proto {
    tonic::include_proto!("confidant.connector.v1");
}

pub use auth::RequestSigner;
pub use client::{ConnectorTransport, SignedClient};
pub use mailbox::{Limits, MailboxError, MailboxStore, RedbMailbox};
pub use server::{ConnectorService, serve, serve_with_tls};
pub use tls::{ClientTls, ServerTls, TlsError};

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a stored mailbox message. `None`: it does not decode (an
    /// error, never a panic); `Some(same)`: whether re-encoding it and
    /// decoding again gives the same message.
    pub fn mailbox_message(bytes: &[u8]) -> Option<bool> {
        crate::mailbox::fuzz_round_trip(bytes)
    }
}
