//! # confidant-connector
//!
//! The relay two parties meet at: a gRPC service (tonic) whose contract is
//! `proto/confidant/connector/v1/connector.proto`, with mailboxes in redb
//! behind [`MailboxStore`], and the client side: [`ConnectorTransport`], the
//! runtime's [`Transport`](confidant_actors::Transport) over gRPC.
//!
//! The connector stores opaque envelopes and sees only ciphertext. Every
//! call but `GetConnectionTokenInfo` and `GetConnectorInfo` is signed by the caller's Ed25519 key
//! ([`auth`]); only the two parties of a connection may send on it or read
//! from it; a message is deleted once its recipient acknowledges it.
//! `docs/connector.md` describes the API, the message lifecycle,
//! authentication, limits and TLS ([`tls`]).

pub mod auth;
pub mod cli;
pub mod client;
pub mod mailbox;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod web;

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
pub use mailbox::{
    Limits, MailboxError, MailboxStore, PostgresMailbox, REASON_HEADER, RedbMailbox,
};
pub use server::{
    ConnectorService, ServeOptions, ServiceLimits, serve, serve_with, serve_with_limits,
    serve_with_options, serve_with_tls,
};
pub use tls::{ClientTls, ServerTls, TlsError};
pub use web::{AllowedOrigins, GrpcWeb};

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a stored mailbox message. `None`: it does not decode (an
    /// error, never a panic); `Some(same)`: whether re-encoding it and
    /// decoding again gives the same message.
    pub fn mailbox_message(bytes: &[u8]) -> Option<bool> {
        crate::mailbox::fuzz_round_trip(bytes)
    }

    /// Decodes authentication metadata as the connector does: the first
    /// two bytes of `bytes` give the lengths of the public-key and nonce
    /// values, the rest is split into the three raw header values (public
    /// key, nonce, signature). `None`: refused (an error, never a panic);
    /// `Some(same)`: whether encoding the decoded fields as the client does
    /// and decoding them again gives the same fields.
    pub fn auth_metadata(bytes: &[u8]) -> Option<bool> {
        use base64::Engine as _;
        let ([key_len, nonce_len], rest) = bytes.split_first_chunk::<2>()?;
        let (public_key, rest) = rest.split_at_checked(usize::from(*key_len))?;
        let (nonce, signature) = rest.split_at_checked(usize::from(*nonce_len))?;
        let parsed =
            crate::auth::parse_metadata(Some(public_key), Some(nonce), Some(signature)).ok()?;
        let _ = crate::auth::nonce_clock(&parsed.nonce);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let again = crate::auth::parse_metadata(
            Some(b64(&parsed.party).as_bytes()),
            Some(b64(&parsed.nonce).as_bytes()),
            Some(b64(&parsed.signature).as_bytes()),
        );
        Some(again == Ok(parsed))
    }
}
