//! The redb store: Confidant's records in one redb file.
//!
//! ## What is on disk
//!
//! One redb table per [`Table`], named [`Table::name`], mapping byte keys to
//! byte values (`TableDefinition<&[u8], &[u8]>`). Keys and values are the
//! record encodings every backend shares (integers big-endian):
//!
//! | table | key | value |
//! |---|---|---|
//! | `confidant_meta` | `"schema_version"` | [`SCHEMA_VERSION`], `u32` |
//! | | `"key_check"` | only in an encrypted store: the at-rest seal of a fixed label |
//! | | `"inbox_next"` | the next inbox sequence number, `u64` |
//! | `identity` | `"identity"` | the 32-byte identity seed |
//! | `signed_pre_keys` | id, `u32` | id ‖ secret (32) ‖ signature (64) |
//! | `one_time_pre_keys` | id, `u32` | id ‖ secret (32) |
//! | `sessions` | connection id (UTF-8) | a session snapshot ([`confidant_session::SessionSnapshot::to_bytes`]) |
//! | `counters` | connection id (UTF-8) | epoch `u32` ‖ first unreserved counter `u64` |
//! | `inbox` | sequence number, `u64` | schema 1 only (read and deleted, no longer written): connection id length (1) ‖ connection id ‖ epoch `u32` ‖ counter `u64` ‖ plaintext |
//! | `inbox_runs` | first sequence number `u64` ‖ end `u64` | a run of opened messages: for each, sequence `u64` ‖ length `u32` ‖ the `inbox` value above ([`crate::inbox`]) |
//! | `connections` | connection id (UTF-8) | the runtime's connection record (encoded by `confidant-actors`) |
//! | `invitations` | invitation token (UTF-8) | the runtime's invitation record (encoded by `confidant-actors`) |
//! | `agreement_keys` | a kind tag and an id, chosen by the engine | key material of the key agreement beyond X3DH's (the hybrid's ML-KEM pre-keys, encoded by the plugin), and when each signed pre-key was made |
//!
//! **Without a key-encryption key, every value above is on disk in
//! plaintext**: the identity key, the pre-keys, the session keys and the
//! opened messages waiting in the inbox. Whoever can read the file (or a
//! backup of it) can impersonate the node and read those messages. With a
//! [`KeyEncryptionKey`] in [`StoreOptions`], the values of the secret tables
//! (identity, pre-keys, sessions, inbox and inbox runs, connections, invitations, agreement keys) and of `counters` and `resume_points` (for integrity)
//! are sealed with AES-256-GCM (format in [`crate::at_rest`]); keys and
//! `confidant_meta` stay in plaintext. redb's page cache holds the file's bytes in memory, and it is
//! not wiped: ciphertext with a KEK, plaintext without.
//!
//! ## Opening
//!
//! Opening checks, in this order: that redb can open the file (by default
//! with a full integrity check, see [`StoreOptions::verify_on_open`]); that
//! `confidant_meta` holds a schema version ([`StoreError::NotAStore`]
//! otherwise) equal to [`SCHEMA_VERSION`], or 1, which is upgraded in place
//! in one durable commit ([`StoreError::SchemaMismatch`] otherwise, so a
//! file of a newer build is refused); and that the key-encryption key matches the key check
//! ([`StoreError::KeyRequired`], [`StoreError::WrongKey`],
//! [`StoreError::NotEncrypted`]). A file that another handle has open is
//! [`StoreError::AlreadyOpen`].
//!
//! ## Commits
//!
//! [`RawStore::commit`] applies a whole batch in one redb write transaction;
//! any error aborts it. With [`Durability::Durable`] (the default) each
//! commit is a two-phase redb commit: two `fdatasync`s, after which the
//! batch survives a crash or power loss. Two phases rather than one so that
//! a file damaged after the fact is reported as corrupt instead of being
//! silently rolled back to the commit before (a one-phase commit is
//! recognised as torn by a checksum, and recovery then falls back to the
//! previous commit, which could hand back a counter reservation that was
//! already used).
//!
//! ## After an I/O error
//!
//! When redb reports a storage failure (a full disk, say), the commit that
//! hit it fails with [`StoreError::Io`] and changed nothing that the store
//! will show: it was applied entirely or not at all, and if the failure hit
//! the final sync, it may have become durable. redb then refuses further
//! writes on that handle, so the next call reopens the file (redb recovers
//! it to its last commit), and from then on the store shows what is really
//! on disk. A failed reopen fails that call, and the one after tries again.
//!
//! ## Panics
//!
//! redb may panic on some files damaged outside it (its documentation says
//! so for a plain open; debug builds of redb also assert on such files). Every
//! call into redb runs under [`std::panic::catch_unwind`]: a panic becomes
//! [`StoreError::Corrupt`] and the handle is reopened on the next call. This
//! needs the default `panic = "unwind"`.

use crate::at_rest::{self, KeyEncryptionKey};
use crate::batch::{WriteBatch, WriteOp};
use crate::error::StoreError;
use crate::inbox::{INBOX_NEXT_KEY, InboxChanges, InboxTables, StoredRun, run_key};
use crate::records::{KEY_CHECK_KEY, SCHEMA_VERSION_KEY, Table, inbox_key};
use crate::store::{Committed, RawStore, Record, SCHEMA_VERSION};
use redb::backends::FileBackend;
use redb::{
    Builder, Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
    TableError, WriteTransaction,
};
use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use zeroize::Zeroizing;

/// When a commit's changes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit is synced to disk before it returns: once
    /// [`RawStore::commit`] returns `Ok`, the changes survive a crash or a
    /// power loss. The default: it never loses a message the caller was told
    /// is stored, nor hands back a counter reservation.
    #[default]
    Durable,
    /// Commits return without syncing (redb `Durability::None`). They are
    /// visible at once, and become durable with the next durable commit:
    /// [`RedbStore::sync`], a clean [`RedbStore::close`] or drop. A crash or
    /// power loss before then loses them, and with them counter
    /// reservations (so a reloaded session could reuse counters) and
    /// messages the caller was told are stored. Only for data that can be
    /// rebuilt, or with an explicit `sync` before anything leaves the node.
    Deferred,
}

/// How to open or create a [`RedbStore`].
///
/// ```
/// use confidant_store::{Durability, KeyEncryptionKey, StoreOptions};
/// let options = StoreOptions::new()
///     .durability(Durability::Durable)
///     .key_encryption_key(KeyEncryptionKey::from_bytes([7; 32]));
/// assert!(options.is_encrypted());
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    durability: Durability,
    key_encryption_key: Option<KeyEncryptionKey>,
    verify_on_open: bool,
    cache_size: Option<usize>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            key_encryption_key: None,
            verify_on_open: true,
            cache_size: None,
        }
    }
}

impl StoreOptions {
    /// Durable commits, no encryption at rest, integrity check on open.
    pub fn new() -> Self {
        Self::default()
    }

    /// When commits reach the disk (default [`Durability::Durable`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Encrypts secret values at rest under `key` (see [`crate::at_rest`]).
    /// A store created with a key must be opened with the same key.
    pub fn key_encryption_key(mut self, key: KeyEncryptionKey) -> Self {
        self.key_encryption_key = Some(key);
        self
    }

    /// Whether opening verifies the checksum of every page in the file
    /// (default `true`). The check reads the whole file, so it costs time
    /// proportional to its size; it turns a file damaged outside redb into
    /// [`StoreError::Corrupt`] at open, instead of an error (or a caught
    /// redb panic) at some later read.
    pub fn verify_on_open(mut self, verify: bool) -> Self {
        self.verify_on_open = verify;
        self
    }

    /// The most memory redb's page cache may use, in bytes (redb's default
    /// when unset: 1 GiB). A node holding many connections keeps the pages
    /// it touched in this cache.
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    /// Whether a key-encryption key is set.
    pub fn is_encrypted(&self) -> bool {
        self.key_encryption_key.is_some()
    }

    fn builder(&self) -> Builder {
        let mut builder = Builder::new();
        builder.set_check_integrity_on_open(self.verify_on_open);
        if let Some(bytes) = self.cache_size {
            builder.set_cache_size(bytes);
        }
        builder
    }
}

type Reopen = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// A store in a redb file. See the [module documentation](self) for what it
/// writes and how it fails.
///
/// ```
/// use confidant_store::{IdentityStore, RawStore, RedbStore, StoreOptions, WriteBatch};
/// use confidant_x3dh::IdentityKeyPair;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("node.redb");
/// let store = RedbStore::create(&path, StoreOptions::new()).unwrap();
/// let mut batch = WriteBatch::new();
/// batch.put_identity(&IdentityKeyPair::from_seed([1; 32]));
/// store.commit(batch).unwrap();
/// drop(store);
/// let store = RedbStore::open(&path, StoreOptions::new()).unwrap();
/// assert!(store.identity().unwrap().is_some());
/// ```
pub struct RedbStore {
    path: PathBuf,
    durability: Durability,
    key_encryption_key: Option<KeyEncryptionKey>,
    database: RwLock<Option<Database>>,
    needs_reopen: AtomicBool,
    reopen: Reopen,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("encrypted", &self.key_encryption_key.is_some())
            .finish_non_exhaustive()
    }
}

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

const TABLES: usize = Table::ALL.len();

fn table_index(table: Table) -> usize {
    match table {
        Table::Meta => 0,
        Table::Identity => 1,
        Table::SignedPreKeys => 2,
        Table::OneTimePreKeys => 3,
        Table::Sessions => 4,
        Table::Counters => 5,
        Table::Inbox => 6,
        Table::Connections => 7,
        Table::Invitations => 8,
        Table::InboxRuns => 9,
        Table::ResumePoints => 10,
        Table::AgreementKeys => 11,
    }
}

/// Maps a redb error to ours: a storage failure of the operating system is
/// `Io`, a file redb cannot make sense of is `Corrupt`.
fn from_redb(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::AlreadyOpen
        }
        redb::Error::Io(error) => match error.kind() {
            // redb reports a file that is not a database as InvalidData, and
            // a read past the end of a truncated one as UnexpectedEof.
            ErrorKind::InvalidData | ErrorKind::UnexpectedEof => {
                StoreError::Corrupt(format!("not a readable redb file: {error}"))
            }
            _ => StoreError::Io(error.to_string()),
        },
        redb::Error::Corrupted(message) => StoreError::Corrupt(message),
        redb::Error::UpgradeRequired(version) => StoreError::Corrupt(format!(
            "redb file format {version} is not supported by this build"
        )),
        redb::Error::PreviousIo => StoreError::Io(
            "an earlier I/O error stopped this handle; the store reopens on the next call".into(),
        ),
        redb::Error::ValueTooLarge(_) => {
            StoreError::Inconsistent("a value exceeds redb's 3 GiB limit")
        }
        error @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => {
            StoreError::Corrupt(format!("unexpected table in the file: {error}"))
        }
        redb::Error::Backend(error) => StoreError::Io(error.to_string()),
        error => StoreError::Io(format!("redb: {error}")),
    }
}

/// Runs `f`, turning a panic (redb may panic on a damaged file) into
/// `Corrupt`.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(panic_error(what, payload.as_ref())))
}

fn panic_error(what: &str, payload: &(dyn Any + Send)) -> StoreError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    StoreError::Corrupt(format!(
        "redb panicked while {what} (a damaged file?): {message}"
    ))
}

fn open_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {error}", path.display()))
}

/// Checks the schema version and the key check of an opened file.
/// Returns the version found: [`SCHEMA_VERSION`], or 1 (which
/// [`upgrade`] brings to it).
fn check_meta(database: &Database, kek: Option<&KeyEncryptionKey>) -> Result<u32, StoreError> {
    let txn = database.begin_read().map_err(from_redb)?;
    let meta = match txn.open_table(definition(Table::Meta)) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => return Err(StoreError::NotAStore),
        Err(
            TableError::TableTypeMismatch { .. }
            | TableError::TableIsMultimap(_)
            | TableError::TypeDefinitionChanged { .. },
        ) => return Err(StoreError::NotAStore),
        Err(error) => return Err(from_redb(error)),
    };
    let version = meta
        .get(SCHEMA_VERSION_KEY)
        .map_err(from_redb)?
        .ok_or(StoreError::NotAStore)?;
    let found = <[u8; 4]>::try_from(version.value())
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("malformed schema version".into()))?;
    if found != SCHEMA_VERSION && found != 1 {
        return Err(StoreError::SchemaMismatch {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let check = meta.get(KEY_CHECK_KEY).map_err(from_redb)?;
    match (check, kek) {
        (Some(record), Some(kek)) => at_rest::verify_key_check(kek, record.value())?,
        (Some(_), None) => return Err(StoreError::KeyRequired),
        (None, Some(_)) => return Err(StoreError::NotEncrypted),
        (None, None) => {}
    }
    Ok(found)
}

/// Brings a schema-1 file to [`SCHEMA_VERSION`] in one durable commit:
/// version 2 adds the table of inbox runs; version 1's inbox records stay
/// and are still read (see [`crate::inbox`]).
fn upgrade(database: &Database) -> Result<(), StoreError> {
    // What creating a store writes, less the key check (an encrypted file
    // has one already).
    initialize(database, None)
}

/// Opens `open()`'s database and checks it, all under the panic guard.
fn open_checked(
    open: impl FnOnce() -> Result<Database, StoreError>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<Database, StoreError> {
    guarded("opening the store", || {
        let database = open()?;
        if check_meta(&database, kek)? != SCHEMA_VERSION {
            upgrade(&database)?;
        }
        Ok(database)
    })
}

/// A fresh name beside `path` for building a store before it is published.
fn temporary_path(path: &Path) -> Result<PathBuf, StoreError> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|error| StoreError::Io(format!("OS random number generator failed: {error}")))?;
    let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let name = path
        .file_name()
        .ok_or_else(|| StoreError::Io(format!("{}: not a file name", path.display())))?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".creating-{suffix}"));
    Ok(path.with_file_name(temporary))
}

/// Creates a complete, durable, closed store at `temporary`.
fn build_store(temporary: &Path, options: &StoreOptions) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(temporary)
        .map_err(|error| open_error(temporary, error))?;
    guarded("creating the store", || {
        let backend = FileBackend::new(file).map_err(from_redb)?;
        let database = options
            .builder()
            .create_with_backend(backend)
            .map_err(from_redb)?;
        initialize(&database, options.key_encryption_key.as_ref())?;
        database.close().map_err(from_redb)
    })
}

/// Gives the store at `temporary` the name `path`, unless `path` exists.
fn publish(temporary: &Path, path: &Path) -> Result<(), StoreError> {
    match std::fs::hard_link(temporary, path) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            return Err(open_error(path, error));
        }
        // A file system without hard links: rename, which replaces an
        // existing file, so check first (a race with another creator is
        // possible there).
        Err(_) => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(open_error(
                    path,
                    std::io::Error::from(ErrorKind::AlreadyExists),
                ));
            }
            std::fs::rename(temporary, path).map_err(|error| open_error(path, error))?;
        }
    }
    // Make the new name durable too.
    #[cfg(unix)]
    if let Some(directory) = path.parent() {
        let directory = if directory.as_os_str().is_empty() {
            Path::new(".")
        } else {
            directory
        };
        std::fs::File::open(directory)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| open_error(directory, error))?;
    }
    Ok(())
}

/// Writes the meta records and creates every table, in one durable commit
/// (the key check only with `kek`; tables that exist are kept).
fn initialize(database: &Database, kek: Option<&KeyEncryptionKey>) -> Result<(), StoreError> {
    let mut txn = database.begin_write().map_err(from_redb)?;
    txn.set_two_phase_commit(true);
    let written = (|| {
        for table in Table::ALL {
            txn.open_table(definition(table)).map_err(from_redb)?;
        }
        let mut meta = txn.open_table(definition(Table::Meta)).map_err(from_redb)?;
        meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_be_bytes().as_slice())
            .map_err(from_redb)?;
        if let Some(kek) = kek {
            meta.insert(KEY_CHECK_KEY, at_rest::key_check(kek)?.as_slice())
                .map_err(from_redb)?;
        }
        Ok(())
    })();
    match written {
        Ok(()) => txn.commit().map_err(from_redb),
        Err(error) => {
            // The write error is the one to report.
            let _ = txn.abort();
            Err(error)
        }
    }
}

impl RedbStore {
    /// Creates a store in a new file at `path`; fails if the file exists.
    ///
    /// Creation is atomic: the store is built and made durable under a
    /// temporary name in the same directory (`.NAME.creating-RANDOM`), then
    /// linked to `path`. A crash part way leaves either no file at `path` or
    /// a complete store, never a half-made file that [`Self::open`] would
    /// refuse (at worst an orphaned temporary file).
    pub fn create(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(open_error(
                path,
                std::io::Error::from(ErrorKind::AlreadyExists),
            ));
        }
        let temporary = temporary_path(path)?;
        let built = build_store(&temporary, &options).and_then(|()| publish(&temporary, path));
        let _ = std::fs::remove_file(&temporary);
        built?;
        Self::open(path, options)
    }

    /// Opens the store in the existing file at `path`.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let database = open_checked(
            || {
                options.builder().open(&path).map_err(|error| match error {
                    redb::DatabaseError::Storage(redb::StorageError::Io(error))
                        if error.kind() == ErrorKind::NotFound =>
                    {
                        open_error(&path, error)
                    }
                    error => from_redb(error),
                })
            },
            options.key_encryption_key.as_ref(),
        )?;
        Ok(Self::assemble(path, database, options))
    }

    /// Opens the store at `path`, or creates it if there is no file there.
    /// An existing file that is not a store (an empty one included) is an
    /// error, never replaced.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref();
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::open(path, options),
            Err(error) if error.kind() == ErrorKind::NotFound => {
                match Self::create(path, options.clone()) {
                    // Another process created it in between.
                    Err(StoreError::Io(_)) if path.exists() => Self::open(path, options),
                    result => result,
                }
            }
            Err(error) => Err(open_error(path, error)),
        }
    }

    /// Opens or creates a store on a custom redb storage backend (tests use
    /// it to simulate a full disk). `backend` is called again to reopen the
    /// store after a storage failure; `path` is only reported by
    /// [`Self::path`]. An empty backend is initialized as a new store.
    #[doc(hidden)]
    pub fn with_backend<B, F>(
        path: impl Into<PathBuf>,
        backend: F,
        options: StoreOptions,
    ) -> Result<Self, StoreError>
    where
        B: StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + Sync + 'static,
    {
        let path = path.into();
        let kek = options.key_encryption_key.clone();
        let verify = options.verify_on_open;
        let open = move || -> Result<Database, StoreError> {
            let backend = backend().map_err(|error| StoreError::Io(error.to_string()))?;
            let empty = backend
                .len()
                .map_err(|error| StoreError::Io(error.to_string()))?
                == 0;
            let database = StoreOptions::new()
                .verify_on_open(verify)
                .builder()
                .create_with_backend(backend)
                .map_err(from_redb)?;
            if empty {
                initialize(&database, kek.as_ref())?;
            }
            Ok(database)
        };
        let database = open_checked(&open, options.key_encryption_key.as_ref())?;
        let kek = options.key_encryption_key.clone();
        Ok(Self {
            path,
            durability: options.durability,
            key_encryption_key: kek,
            database: RwLock::new(Some(database)),
            needs_reopen: AtomicBool::new(false),
            reopen: Box::new(open),
        })
    }

    fn assemble(path: PathBuf, database: Database, options: StoreOptions) -> Self {
        let reopen_path = path.clone();
        let builder_options = options.clone();
        let reopen: Reopen = Box::new(move || {
            builder_options
                .builder()
                .open(&reopen_path)
                .map_err(from_redb)
        });
        Self {
            path,
            durability: options.durability,
            key_encryption_key: options.key_encryption_key,
            database: RwLock::new(Some(database)),
            needs_reopen: AtomicBool::new(false),
            reopen,
        }
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's commit durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether secret values are encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.key_encryption_key.is_some()
    }

    /// Makes every earlier commit durable (one durable commit). Only useful
    /// with [`Durability::Deferred`]; with the default every commit already
    /// is.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.with_database("syncing", |database| {
            let mut txn = database.begin_write().map_err(RedbOr::redb)?;
            txn.set_two_phase_commit(true);
            txn.commit().map_err(RedbOr::redb)
        })
    }

    /// Rewrites the file to release the space of deleted records.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.recover_if_needed()?;
        let database = self
            .database
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .ok_or_else(closed)?;
        let result = guarded("compacting", || {
            database.compact().map(|_| ()).map_err(from_redb)
        });
        if result.is_err() {
            self.needs_reopen.store(true, Ordering::Release);
        }
        result
    }

    /// Closes the store, making [`Durability::Deferred`] commits durable,
    /// and reports any error (dropping the store does the same silently).
    pub fn close(self) -> Result<(), StoreError> {
        let database = self
            .database
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        match database {
            Some(database) => guarded("closing", || database.close().map_err(from_redb)),
            None => Ok(()),
        }
    }

    /// Reopens the file if an earlier redb failure stopped the handle.
    fn recover_if_needed(&self) -> Result<(), StoreError> {
        if !self.needs_reopen.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut slot = self
            .database
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.needs_reopen.load(Ordering::Acquire) {
            return Ok(()); // another thread reopened it
        }
        // Close the failed handle first: it holds the file lock. After a
        // latched I/O error, redb writes nothing on close.
        if let Some(failed) = slot.take() {
            let _ = guarded("closing after a failure", || {
                drop(failed);
                Ok(())
            });
        }
        let database = open_checked(&self.reopen, self.key_encryption_key.as_ref())?;
        *slot = Some(database);
        self.needs_reopen.store(false, Ordering::Release);
        Ok(())
    }

    /// Runs `f` on the database under the panic guard; a redb failure marks
    /// the handle for reopening.
    fn with_database<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Database) -> Result<T, RedbOr>,
    ) -> Result<T, StoreError> {
        self.recover_if_needed()?;
        let slot = self.database.read().unwrap_or_else(PoisonError::into_inner);
        let database = slot.as_ref().ok_or_else(closed)?;
        let result = catch_unwind(AssertUnwindSafe(|| f(database)));
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(RedbOr::Store(error))) => Err(error),
            Ok(Err(RedbOr::Redb(error))) => {
                self.needs_reopen.store(true, Ordering::Release);
                Err(error)
            }
            Err(payload) => {
                self.needs_reopen.store(true, Ordering::Release);
                Err(panic_error(what, payload.as_ref()))
            }
        }
    }

    /// The bytes to store for `value`: sealed in a sealed table of an
    /// encrypted store, as they are otherwise.
    fn seal<'v>(
        &self,
        table: Table,
        key: &[u8],
        value: &'v [u8],
    ) -> Result<Cow<'v, [u8]>, StoreError> {
        match &self.key_encryption_key {
            Some(kek) if table.is_sealed_at_rest() => {
                Ok(Cow::Owned(at_rest::seal(kek, table, key, value)?))
            }
            _ => Ok(Cow::Borrowed(value)),
        }
    }

    fn unseal(
        &self,
        table: Table,
        key: &[u8],
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        match &self.key_encryption_key {
            Some(kek) if table.is_sealed_at_rest() => at_rest::open(kek, table, key, stored),
            _ => Ok(Zeroizing::new(stored.to_vec())),
        }
    }

    /// Applies every change of `ops` in `txn`, numbering inbox entries as
    /// [`crate::MemoryStore`] does.
    fn write_ops(&self, txn: &WriteTransaction, ops: Vec<WriteOp>) -> Result<Committed, RedbOr> {
        let mut tables: OpenTables<'_> = Default::default();

        // Number the inbox entries first, as the reference store does: a
        // malformed counter fails the batch before anything is written.
        let current = open_table(txn, &mut tables, Table::Meta)?
            .get(INBOX_NEXT_KEY)
            .map_err(RedbOr::redb)?
            .map(|value| value.value().to_vec());
        let (mut inbox, next) = InboxChanges::begin(
            &mut RedbInbox {
                store: self,
                txn,
                tables: &mut tables,
            },
            current.as_deref(),
            &ops,
        )?;
        if let Some(next) = next {
            open_table(txn, &mut tables, Table::Meta)?
                .insert(INBOX_NEXT_KEY, next.as_slice())
                .map_err(RedbOr::redb)?;
        }

        for op in ops {
            match op {
                WriteOp::Put { table, key, value } => {
                    let stored = self.seal(table, &key, &value)?;
                    open_table(txn, &mut tables, table)?
                        .insert(key.as_slice(), stored.as_ref())
                        .map_err(RedbOr::redb)?;
                }
                WriteOp::Insert { table, key, value } => {
                    let stored = self.seal(table, &key, &value)?;
                    let replaced = open_table(txn, &mut tables, table)?
                        .insert(key.as_slice(), stored.as_ref())
                        .map_err(RedbOr::redb)?
                        .is_some();
                    if replaced {
                        // The transaction is dropped unapplied.
                        return Err(StoreError::AlreadyExists {
                            table: format!("{table:?}"),
                        }
                        .into());
                    }
                }
                WriteOp::Delete { table, key } => {
                    open_table(txn, &mut tables, table)?
                        .remove(key.as_slice())
                        .map_err(RedbOr::redb)?;
                }
                WriteOp::AppendInbox { value } => {
                    inbox.append(value);
                }
                WriteOp::DeleteInbox { sequence } => {
                    let mut access = RedbInbox {
                        store: self,
                        txn,
                        tables: &mut tables,
                    };
                    inbox.delete(&mut access, sequence)?;
                }
            }
        }
        let numbers = inbox.finish(&mut RedbInbox {
            store: self,
            txn,
            tables: &mut tables,
        })?;
        Ok(Committed { inbox: numbers })
    }
}

/// The tables of a write transaction, each opened once, when first used.
type OpenTables<'txn> = [Option<redb::Table<'txn, &'static [u8], &'static [u8]>>; TABLES];

/// The inbox tables of a redb write transaction, for [`InboxChanges`];
/// values are sealed and opened as the store's key says.
struct RedbInbox<'s, 't, 'txn> {
    store: &'s RedbStore,
    txn: &'txn WriteTransaction,
    tables: &'t mut OpenTables<'txn>,
}

impl<'txn> RedbInbox<'_, '_, 'txn> {
    fn table(
        &mut self,
        table: Table,
    ) -> Result<&mut redb::Table<'txn, &'static [u8], &'static [u8]>, RedbOr> {
        open_table(self.txn, self.tables, table)
    }
}

impl InboxTables for RedbInbox<'_, '_, '_> {
    type Error = RedbOr;

    fn remove_single(&mut self, sequence: u64) -> Result<bool, RedbOr> {
        Ok(self
            .table(Table::Inbox)?
            .remove(inbox_key(sequence).as_slice())
            .map_err(RedbOr::redb)?
            .is_some())
    }

    fn last_single(&mut self) -> Result<Option<u64>, RedbOr> {
        let Some((key, _)) = self.table(Table::Inbox)?.last().map_err(RedbOr::redb)? else {
            return Ok(None);
        };
        let sequence = <[u8; 8]>::try_from(key.value())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("malformed inbox key".into()))?;
        Ok(Some(sequence))
    }

    fn last_run(&mut self) -> Result<Option<Vec<u8>>, RedbOr> {
        Ok(self
            .table(Table::InboxRuns)?
            .last()
            .map_err(RedbOr::redb)?
            .map(|(key, _)| key.value().to_vec()))
    }

    fn run_at_or_before(&mut self, sequence: u64) -> Result<Option<StoredRun>, RedbOr> {
        let bound = run_key(sequence, u64::MAX);
        let found = self
            .table(Table::InboxRuns)?
            .range::<&[u8]>(..=bound.as_slice())
            .map_err(RedbOr::redb)?
            .next_back()
            .transpose()
            .map_err(RedbOr::redb)?
            .map(|(key, stored)| (key.value().to_vec(), stored.value().to_vec()));
        let Some((key, stored)) = found else {
            return Ok(None);
        };
        let value = self.store.unseal(Table::InboxRuns, &key, &stored)?;
        Ok(Some((key, value)))
    }

    fn put_run(&mut self, key: &[u8], value: &[u8], new: bool) -> Result<(), RedbOr> {
        let stored = self.store.seal(Table::InboxRuns, key, value)?;
        let replaced = self
            .table(Table::InboxRuns)?
            .insert(key, stored.as_ref())
            .map_err(RedbOr::redb)?
            .is_some();
        if new && replaced {
            return Err(StoreError::Inconsistent(
                "the next inbox number points at an existing entry",
            )
            .into());
        }
        Ok(())
    }

    fn remove_run(&mut self, key: &[u8]) -> Result<(), RedbOr> {
        self.table(Table::InboxRuns)?
            .remove(key)
            .map_err(RedbOr::redb)?;
        Ok(())
    }
}

/// The table `table` of `txn`, opened once per transaction.
fn open_table<'t, 'txn>(
    txn: &'txn WriteTransaction,
    tables: &'t mut OpenTables<'txn>,
    table: Table,
) -> Result<&'t mut redb::Table<'txn, &'static [u8], &'static [u8]>, RedbOr> {
    let Some(slot) = tables.get_mut(table_index(table)) else {
        return Err(RedbOr::Store(StoreError::Corrupt(format!(
            "no table slot for {table:?}"
        ))));
    };
    if slot.is_none() {
        *slot = Some(txn.open_table(definition(table)).map_err(RedbOr::redb)?);
    }
    slot.as_mut()
        .ok_or(RedbOr::Store(StoreError::Inconsistent("table not open")))
}

fn closed() -> StoreError {
    StoreError::Io("the store could not be reopened after an earlier failure".into())
}

/// An error from redb (which stops the handle until it is reopened) or
/// one of ours (which leaves it usable).
enum RedbOr {
    Redb(StoreError),
    Store(StoreError),
}

impl RedbOr {
    fn redb(error: impl Into<redb::Error>) -> Self {
        Self::Redb(from_redb(error))
    }
}

impl From<StoreError> for RedbOr {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl RawStore for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.with_database("reading", |database| {
            let txn = database.begin_read().map_err(RedbOr::redb)?;
            let records = match txn.open_table(definition(table)) {
                Ok(records) => records,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(error) => return Err(RedbOr::redb(error)),
            };
            let Some(stored) = records.get(key).map_err(RedbOr::redb)? else {
                return Ok(None);
            };
            Ok(Some(self.unseal(table, key, stored.value())?))
        })
    }

    fn entries(&self, table: Table) -> Result<Vec<Record>, StoreError> {
        self.with_database("reading", |database| {
            let txn = database.begin_read().map_err(RedbOr::redb)?;
            let records = match txn.open_table(definition(table)) {
                Ok(records) => records,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(error) => return Err(RedbOr::redb(error)),
            };
            let mut entries = Vec::new();
            for entry in records.iter().map_err(RedbOr::redb)? {
                let (key, stored) = entry.map_err(RedbOr::redb)?;
                let key = key.value().to_vec();
                let value = self.unseal(table, &key, stored.value())?;
                entries.push((key, value));
            }
            Ok(entries)
        })
    }

    fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        self.with_database("committing", |database| {
            let mut txn = database.begin_write().map_err(RedbOr::redb)?;
            match self.durability {
                Durability::Durable => txn.set_two_phase_commit(true),
                Durability::Deferred => txn
                    .set_durability(redb::Durability::None)
                    .map_err(RedbOr::redb)?,
            }
            match self.write_ops(&txn, batch.into_ops()) {
                Ok(committed) => txn.commit().map(|()| committed).map_err(RedbOr::redb),
                Err(error) => {
                    // Nothing of the batch is applied; the write error is
                    // the one to report.
                    let _ = txn.abort();
                    Err(error)
                }
            }
        })
    }
}
