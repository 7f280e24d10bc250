//! # confidant-core
//!
//! The vocabulary every other Confidant crate speaks: connection ids, roles
//! and directions, the wire types (protobuf, generated from the checked-in
//! `.proto` files), the plugin traits for key agreement, AEADs, IV strategies
//! and suites, the suite registry, and typed errors.
//!
//! This crate contains no cryptography. Ciphers live in plugin crates
//! (`confidant-aes-gcm`, `confidant-chacha20poly1305`, or a user's own), key
//! agreement in `confidant-x3dh`, and the session state machine that ties
//! them together in `confidant-session`.
//!
//! ## Writing a suite
//! Implement [`Aead`] for your cipher and [`IvStrategy`] for your IV
//! derivation (or reuse one), compose them with [`SuiteOf`], and register the
//! result in a [`SuiteRegistry`] under an id from the private-use range. Run
//! it through `confidant-conformance`. See `docs/plugins.md`.

mod aead;
mod ids;
mod iv;
mod key_agreement;
mod registry;
mod suite;
pub mod wire;

pub use aead::{Aead, KeyLengthError, OpenError, SealError, TAG_LEN, Tag};
pub use ids::{
    ConnectionId, ContentType, Direction, InvalidConnectionId, MAX_CONNECTION_ID_LEN,
    PROTOCOL_VERSION, Role, SuiteId,
};
pub use iv::{IvError, IvStrategy};
pub use key_agreement::{AgreedSecret, KeyAgreement, SHARED_SECRET_LEN};
pub use registry::{RegistryError, SuiteRegistry, SuiteResolver, UnknownSuite};
pub use suite::{DirectionCipher, MAX_NONCE_LEN, Suite, SuiteError, SuiteOf, SuiteSealError};
