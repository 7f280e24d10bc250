//! # confidant-ffi
//!
//! Confidant for wallets and issuer services written in Kotlin, Swift or
//! Python: one Rust core (the runtime's [`Node`](confidant_actors::Node)
//! over the gRPC connector, on a redb store) behind bindings that UniFFI
//! generates (`scripts/bindings.sh`; `docs/bindings.md` has the API per
//! language).
//!
//! - [`open_node`] opens (or creates) a node in a data directory, with the
//!   connector's URL(s) and an optional 32-byte at-rest key from the
//!   platform's key store.
//! - [`ConfidantNode`] creates and accepts invitations (the QR text),
//!   lists connections, sends, hands out [`NodeEvent`]s one by one
//!   (`next_event`, async), acknowledges, resets and shuts down.
//! - Errors are one enum, [`ConfidantError`], of typed variants (with kinds
//!   for handshake, invitation and storage failures).
//! - Only public keys cross the boundary: the identity key, peers' keys,
//!   and [`fingerprint`]s of them.
//!
//! Async calls run on a tokio runtime the library owns, so they can be
//! awaited from Kotlin coroutines, Swift async/await or Python asyncio.

// UniFFI's generated scaffolding declares `extern "C"` functions with
// `#[unsafe(no_mangle)]`; the code written here has no `unsafe` (see the
// crate's `[lints]`).
uniffi::setup_scaffolding!();

mod error;
mod files;
mod fingerprint;
mod node;
mod runtime;
mod types;

pub use error::{ConfidantError, HandshakeFailureKind, InvitationErrorKind, StorageErrorKind};
pub use node::{ConfidantNode, NodeOptions, fingerprint, open_node, parse_invitation};
pub use runtime::stop_callbacks;
pub use types::{ConnectionInfo, ConnectionState, InvitationInfo, NodeEvent, Side};
