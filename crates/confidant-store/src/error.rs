//! Storage errors. Each says what went wrong and whose fault it is: the
//! caller's (a wrong key, a file of another version), the disk's (I/O, a
//! full disk, corruption), or a broken invariant.

use confidant_session::SnapshotError;
use thiserror::Error;

/// A storage operation failed. A write is all or nothing: a failed commit
/// shows none of its changes afterwards (if the failure hit the final sync,
/// the store reopens the file and shows whether the commit made it).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused a read or write (a full disk, missing
    /// permissions, a vanished file).
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// The file or a record in it cannot be read back: it was damaged or
    /// truncated, or is not a redb file.
    #[error("store is corrupted: {0}")]
    Corrupt(String),
    /// The file was written by another schema version of Confidant.
    #[error("store has schema version {found}; this build reads version {supported}")]
    SchemaMismatch {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is a database but not a Confidant store.
    #[error("file is not a Confidant store (no schema version)")]
    NotAStore,
    /// The store's secrets are encrypted and no key-encryption key was
    /// given.
    #[error("store is encrypted at rest: a key-encryption key is required")]
    KeyRequired,
    /// The key-encryption key given is not the one the store was created
    /// with.
    #[error("wrong key-encryption key for this store")]
    WrongKey,
    /// A key-encryption key was given for a store created without one.
    #[error("store is not encrypted at rest, but a key-encryption key was given")]
    NotEncrypted,
    /// Another process or handle has the file open.
    #[error("store is already open elsewhere")]
    AlreadyOpen,
    /// A stored session snapshot could not be restored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A [`WriteOp::Insert`](crate::WriteOp::Insert) found its key taken;
    /// nothing of the batch was applied.
    #[error("a record already exists in {table} under that key")]
    AlreadyExists {
        /// The table's name.
        table: String,
    },
    /// Stored records contradict each other (a bug, or tampering).
    #[error("store is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// The session refused an operation (a limit, an exhausted key).
    #[error("session: {0}")]
    Session(String),
}
