//! # confidant-store
//!
//! Durable state for Confidant: identity and pre-keys, sessions, counter
//! reservations and an inbox of opened messages, behind small typed traits
//! ([`IdentityStore`], [`PreKeyStore`], [`SessionStore`], [`CounterStore`],
//! [`InboxStore`]) that every backend gets from one raw trait
//! ([`RawStore`]: byte records in tables, and atomic [`WriteBatch`]es).
//!
//! Two backends pass the same test suite: [`MemoryStore`], the reference,
//! and [`RedbStore`] (the default feature `redb`), a redb file with a
//! schema version checked on open and
//! optional encryption of secret values at rest.
//! [`RedbStore::open`] takes [`StoreOptions`]: a [`Durability`] (every
//! commit synced by default) and an optional [`KeyEncryptionKey`] under
//! which secret values are sealed ([`at_rest`] has the format; the
//! [`redb_store`] module says what is on disk, with and without it).
//!
//! The inbox keeps a commit's opened messages in few records ([`inbox`]
//! says how), while each message keeps its own sequence number.
//!
//! [`DurableSession`] binds a session to a store: it never lets a sealed
//! message out unless its counter is below a durable reservation (reserved
//! in blocks: one commit per block), and it makes the replay window durable,
//! together with the opened messages, before reporting them. See
//! `docs/storage.md`.

// Without redb too: the browser build (confidant-web) seals its IndexedDB
// records with the same format (only the redb store uses the per-table
// helpers).
#[cfg_attr(not(feature = "redb"), allow(dead_code))]
pub mod at_rest;
mod batch;
mod durable;
mod error;
pub mod inbox;
mod memory;
mod records;
#[cfg(feature = "redb")]
pub mod redb_store;
mod store;

pub use at_rest::KeyEncryptionKey;
pub use batch::{WriteBatch, WriteOp};
pub use durable::{DEFAULT_RESERVATION_BLOCK, DurableSession, ReceiveError, Received};
pub use error::StoreError;
pub use inbox::{RUN_LIMIT, run_key};
pub use memory::MemoryStore;
pub use records::{
    CounterReservation, InboxEntry, KEY_CHECK_KEY, SCHEMA_VERSION_KEY, SendResume, Table,
    decode_resume_point, inbox_key,
};
#[cfg(feature = "redb")]
pub use redb_store::{Durability, RedbStore, StoreOptions};
pub use store::{
    Committed, CounterStore, IdentityStore, InboxStore, PreKeyStore, RawStore, Record,
    SCHEMA_VERSION, SessionStore, Store,
};
