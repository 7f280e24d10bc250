//! The redb store against real files: persistence across reopening, the
//! schema version, damaged and foreign files, encryption at rest as seen in
//! the raw bytes, a full disk, and a file that is already open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_core::{AgreedSecret, ConnectionId, Role};
use confidant_session::{Session, SessionConfig, SessionSnapshot};
use confidant_store::{
    CounterReservation, CounterStore, Durability, IdentityStore, InboxEntry, InboxStore,
    KeyEncryptionKey, PreKeyStore, RawStore, RedbStore, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
    SessionStore, StoreError, StoreOptions, Table, WriteBatch,
};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, SignedPreKey};
use redb::backends::FileBackend;
use redb::{ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// A recognisable identity seed, to look for in the raw file.
const IDENTITY_SEED: [u8; 32] = *b"IDENTITY-SEED-0123456789abcdefgh";
const SIGNED_PRE_KEY_SECRET: [u8; 32] = *b"SIGNED-PRE-KEY-SECRET-0123456789";
const ONE_TIME_PRE_KEY_SECRET: [u8; 32] = *b"ONE-TIME-PRE-KEY-SECRET-01234567";
const INBOX_MARKER: &[u8] = b"PLAINTEXT-INBOX-MARKER: meet at the usual place";

fn connection(name: &str) -> ConnectionId {
    ConnectionId::new(name).unwrap()
}

fn snapshot(name: &str) -> SessionSnapshot {
    let agreed = AgreedSecret::new([0x77; 32], vec![3; 64], None);
    Session::new(
        Role::Responder,
        connection(name),
        confidant_aes_gcm::aes_256_gcm_sha256_counter(),
        &agreed,
        SessionConfig::default(),
    )
    .unwrap()
    .snapshot()
}

fn inbox_entry(plaintext: &[u8]) -> InboxEntry {
    InboxEntry {
        sequence: 0,
        connection_id: connection("conn-a"),
        epoch: 0,
        counter: 7,
        plaintext: Zeroizing::new(plaintext.to_vec()),
    }
}

fn kek(byte: u8) -> KeyEncryptionKey {
    KeyEncryptionKey::from_bytes([byte; 32])
}

fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("node.redb")
}

/// Identity, pre-keys, a session with its reservation, and inbox entries.
fn fill(store: &RedbStore) {
    let identity = IdentityKeyPair::from_seed(IDENTITY_SEED);
    let mut batch = WriteBatch::new();
    batch.put_identity(&identity);
    batch.put_signed_pre_key(&SignedPreKey::new(&identity, 1, SIGNED_PRE_KEY_SECRET));
    batch.put_one_time_pre_key(&OneTimePreKey::new(1, ONE_TIME_PRE_KEY_SECRET));
    batch.put_one_time_pre_key(&OneTimePreKey::new(2, [0x22; 32]));
    batch.put_session(&snapshot("conn-a")).unwrap();
    batch.put_reservation(
        &connection("conn-a"),
        CounterReservation {
            epoch: 0,
            reserved_until: 16_384,
        },
    );
    batch.push_inbox(&inbox_entry(INBOX_MARKER));
    batch.push_inbox(&inbox_entry(b"second message"));
    store.commit(batch).unwrap();
}

/// Checks everything `fill` wrote (the inbox may have more after it).
fn check_filled(store: &RedbStore) {
    let identity = store.identity().unwrap().unwrap();
    assert_eq!(*identity.to_seed(), IDENTITY_SEED);
    let keys = store.responder_keys().unwrap().unwrap();
    assert_eq!(keys.current_signed_pre_key().id(), 1);
    assert_eq!(store.one_time_pre_key_ids().unwrap(), vec![1, 2]);
    assert_eq!(
        store.one_time_pre_key(1).unwrap().unwrap().public_key(),
        OneTimePreKey::new(1, ONE_TIME_PRE_KEY_SECRET).public_key()
    );
    assert_eq!(
        store.session(&connection("conn-a")).unwrap().unwrap(),
        snapshot("conn-a")
    );
    assert_eq!(
        store.reservation(&connection("conn-a")).unwrap().unwrap(),
        CounterReservation {
            epoch: 0,
            reserved_until: 16_384
        }
    );
    let inbox = store.inbox().unwrap();
    assert!(inbox.len() >= 2);
    assert_eq!((inbox[0].sequence, inbox[1].sequence), (1, 2));
    assert_eq!(inbox[0].plaintext.as_slice(), INBOX_MARKER);
    assert_eq!(inbox[1].plaintext.as_slice(), b"second message");
}

fn is_clear_file_error(error: &StoreError) -> bool {
    matches!(error, StoreError::Corrupt(_) | StoreError::Io(_))
}

// ---------------------------------------------------------------- persistence

#[test]
fn everything_survives_closing_and_reopening() {
    for options in [
        StoreOptions::new(),
        StoreOptions::new().key_encryption_key(kek(1)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let store = RedbStore::create(&path, options.clone()).unwrap();
        assert_eq!(store.path(), path);
        fill(&store);
        check_filled(&store);
        store.close().unwrap();

        let store = RedbStore::open(&path, options.clone()).unwrap();
        check_filled(&store);
        // Inbox numbering continues after reopening, even once the inbox
        // was emptied: numbers are never reused.
        let mut batch = WriteBatch::new();
        batch.delete_inbox(1);
        batch.delete_inbox(2);
        store.commit(batch).unwrap();
        drop(store);
        let store = RedbStore::open_or_create(&path, options).unwrap();
        let mut batch = WriteBatch::new();
        batch.push_inbox(&inbox_entry(b"third"));
        store.commit(batch).unwrap();
        let inbox = store.inbox().unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].sequence, 3);
    }
}

#[test]
fn create_open_and_open_or_create_respect_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    // open: the file must exist.
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::Io(_)), "{error:?}");
    assert!(!path.exists(), "open created nothing");
    // open_or_create creates (through a temporary file that is gone
    // afterwards)...
    let store = RedbStore::open_or_create(&path, StoreOptions::new()).unwrap();
    fill(&store);
    drop(store);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["node.redb"]);
    // ...and then opens.
    let store = RedbStore::open_or_create(&path, StoreOptions::new()).unwrap();
    check_filled(&store);
    drop(store);
    // create: the file must not exist, and is left alone.
    let error = RedbStore::create(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::Io(_)), "{error:?}");
    check_filled(&RedbStore::open(&path, StoreOptions::new()).unwrap());
    // open_or_create never replaces an empty or foreign file.
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    let error = RedbStore::open_or_create(&empty, StoreOptions::new()).unwrap_err();
    assert!(is_clear_file_error(&error), "{error:?}");
    assert_eq!(std::fs::read(&empty).unwrap(), b"");
}

#[test]
fn a_file_open_elsewhere_is_already_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let store = RedbStore::create(&path, StoreOptions::new()).unwrap();
    fill(&store);
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::AlreadyOpen), "{error:?}");
    let error = RedbStore::open_or_create(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::AlreadyOpen), "{error:?}");
    // The first handle is unaffected; once it is closed the file opens.
    check_filled(&store);
    drop(store);
    check_filled(&RedbStore::open(&path, StoreOptions::new()).unwrap());
}

#[test]
fn deferred_durability_is_visible_at_once_and_durable_after_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let options = StoreOptions::new().durability(Durability::Deferred);
    let store = RedbStore::create(&path, options.clone()).unwrap();
    assert_eq!(store.durability(), Durability::Deferred);
    fill(&store);
    check_filled(&store);
    let mut batch = WriteBatch::new();
    batch.delete_one_time_pre_key(2);
    store.commit(batch).unwrap();
    store.sync().unwrap();
    let mut batch = WriteBatch::new();
    batch.push_inbox(&inbox_entry(b"after sync"));
    store.commit(batch).unwrap();
    assert_eq!(store.inbox().unwrap().len(), 3);
    store.close().unwrap();

    let store = RedbStore::open(&path, StoreOptions::new()).unwrap();
    assert_eq!(store.one_time_pre_key_ids().unwrap(), vec![1]);
    let inbox = store.inbox().unwrap();
    assert_eq!(inbox.len(), 3);
    assert_eq!(inbox[2].plaintext.as_slice(), b"after sync");
}

#[test]
fn compaction_keeps_the_data_and_releases_space() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut store = RedbStore::create(&path, StoreOptions::new()).unwrap();
    fill(&store);
    let mut batch = WriteBatch::new();
    for id in 10..5_000u32 {
        batch.put_one_time_pre_key(&OneTimePreKey::new(id, [9; 32]));
    }
    store.commit(batch).unwrap();
    let mut batch = WriteBatch::new();
    for id in 10..5_000u32 {
        batch.delete_one_time_pre_key(id);
    }
    store.commit(batch).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    store.compact().unwrap();
    check_filled(&store);
    drop(store);
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < before, "{after} < {before}");
    check_filled(&RedbStore::open(&path, StoreOptions::new()).unwrap());
}

// ------------------------------------------------------------ schema version

const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("confidant_meta");

fn rewrite_meta(path: &Path, key: &[u8], value: &[u8]) {
    let database = redb::Database::open(path).unwrap();
    let txn = database.begin_write().unwrap();
    txn.open_table(META).unwrap().insert(key, value).unwrap();
    txn.commit().unwrap();
}

#[test]
fn the_schema_version_is_written_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let store = RedbStore::create(&path, StoreOptions::new()).unwrap();
    fill(&store);
    drop(store);

    // Written, as a big-endian u32, by raw redb's reading.
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let version = meta.get(SCHEMA_VERSION_KEY).unwrap().unwrap();
        assert_eq!(version.value(), SCHEMA_VERSION.to_be_bytes());
    }

    // A newer schema is refused, never misread.
    let newer = SCHEMA_VERSION + 1;
    rewrite_meta(&path, SCHEMA_VERSION_KEY, &newer.to_be_bytes());
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SchemaMismatch {
                found,
                supported: SCHEMA_VERSION
            } if found == newer
        ),
        "{error:?}"
    );
    let error = RedbStore::open_or_create(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::SchemaMismatch { found, .. } if found == newer));

    // A malformed version is corruption.
    rewrite_meta(&path, SCHEMA_VERSION_KEY, &[0, 1]);
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");

    // Back to this build's version: the data was never touched.
    rewrite_meta(&path, SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes());
    check_filled(&RedbStore::open(&path, StoreOptions::new()).unwrap());
}

#[test]
fn a_redb_file_without_confidant_meta_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    // A redb database of some other application.
    let path = dir.path().join("other.redb");
    {
        let database = redb::Database::create(&path).unwrap();
        let txn = database.begin_write().unwrap();
        let other: TableDefinition<&str, u64> = TableDefinition::new("other_app");
        txn.open_table(other).unwrap().insert("x", &1).unwrap();
        txn.commit().unwrap();
    }
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore), "{error:?}");
    // Meta table present but no version in it.
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(&b"x"[..], &b"y"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore), "{error:?}");
    // A "confidant_meta" table of other types.
    let path = dir.path().join("typed.redb");
    {
        let database = redb::Database::create(&path).unwrap();
        let txn = database.begin_write().unwrap();
        let meta: TableDefinition<u64, u64> = TableDefinition::new("confidant_meta");
        txn.open_table(meta).unwrap().insert(&1, &1).unwrap();
        txn.commit().unwrap();
    }
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore), "{error:?}");
    // An empty redb database.
    let path = dir.path().join("empty.redb");
    drop(redb::Database::create(&path).unwrap());
    let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore), "{error:?}");
}

// ----------------------------------------------------- damaged and foreign files

/// Opens `path` and reads everything; returns the error, if any. A store
/// that opens must read back exactly what `fill` wrote, or fail clearly:
/// never wrong data, never a panic escaping (the guard turns a redb panic
/// into `Corrupt`, with "panicked" in the message).
fn open_damaged(path: &Path, options: StoreOptions) -> Option<StoreError> {
    let store = match RedbStore::open(path, options) {
        Ok(store) => store,
        Err(error) => return Some(error),
    };
    let read = (|| -> Result<(), StoreError> {
        let identity = store.identity()?;
        assert_eq!(*identity.unwrap().to_seed(), IDENTITY_SEED);
        assert_eq!(store.one_time_pre_key_ids()?, vec![1, 2]);
        assert_eq!(
            store.session(&connection("conn-a"))?.unwrap(),
            snapshot("conn-a")
        );
        let inbox = store.inbox()?;
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox[0].plaintext.as_slice(), INBOX_MARKER);
        for table in Table::ALL {
            store.entries(table)?;
        }
        Ok(())
    })();
    read.err()
}

/// A filled store's file: its bytes after a clean close, and its bytes as
/// a crash right after the last commit would leave them. The last commit
/// deletes 50 one-time pre-keys that the one before it holds, so a store
/// rolled back by one commit shows them.
struct Images {
    path: PathBuf,
    closed: Vec<u8>,
    crashed: Vec<u8>,
}

fn filled_file(dir: &tempfile::TempDir, options: StoreOptions) -> Images {
    let path = store_path(dir);
    let store = RedbStore::create(&path, options).unwrap();
    fill(&store);
    // Enough records for several pages, so damage can land in the middle.
    for round in 0..4u32 {
        let mut batch = WriteBatch::new();
        for id in 0..50u32 {
            batch.put_one_time_pre_key(&OneTimePreKey::new(1000 + round * 50 + id, [7; 32]));
        }
        store.commit(batch).unwrap();
        let mut batch = WriteBatch::new();
        for id in 0..50u32 {
            batch.delete_one_time_pre_key(1000 + round * 50 + id);
        }
        store.commit(batch).unwrap();
    }
    // Durable commits are in the file: this is what a crash leaves.
    let crashed = std::fs::read(&path).unwrap();
    store.close().unwrap();
    let closed = std::fs::read(&path).unwrap();
    Images {
        path,
        closed,
        crashed,
    }
}

#[test]
fn a_truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let Images {
        path,
        closed: original,
        ..
    } = filled_file(&dir, StoreOptions::new());
    let mut panics = 0;
    let lengths = [
        0,
        1,
        5,
        64,
        511,
        512,
        4096,
        original.len() / 4,
        original.len() / 2,
        original.len() - 4096,
        original.len() - 1,
    ];
    for length in lengths {
        std::fs::write(&path, &original[..length]).unwrap();
        let error = open_damaged(&path, StoreOptions::new());
        let error = error.unwrap_or_else(|| panic!("truncated to {length} bytes, yet it opened"));
        assert!(is_clear_file_error(&error), "{length}: {error:?}");
        if error.to_string().contains("panicked") {
            panics += 1;
        }
        println!("truncated to {length} of {}: {error}", original.len());
    }
    println!("redb panics caught: {panics}");
}

#[test]
fn a_corrupted_file_is_a_clear_error_or_reads_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let images = filled_file(&dir, StoreOptions::new());
    let mut garbage = [0u8; 64];
    // Both after a clean close and after a crash (when opening runs redb's
    // recovery, and the commit before the last differs from it: a recovery
    // that fell back to it would bring deleted pre-keys back, which
    // `open_damaged` would catch). With redb's one-phase commits it does:
    // damage to a page of the last commit silently rolls the store back
    // one commit. The store's two-phase commits make that an error.
    for (image, original) in [("closed", &images.closed), ("crashed", &images.crashed)] {
        let (mut detected, mut harmless, mut panics) = (0, 0, 0);
        // Overwrite 64 bytes with garbage at offsets across the whole file:
        // the header, the commit slots, table pages and free pages.
        let offsets = (0..original.len())
            .step_by(127)
            .chain([0, 8, 64, 256, 512, 1024]);
        for (n, offset) in offsets.enumerate() {
            getrandom::fill(&mut garbage).unwrap();
            garbage[0] = garbage[0].wrapping_add(n as u8) | 1;
            let mut damaged = original.clone();
            let end = (offset + garbage.len()).min(damaged.len());
            damaged[offset..end].copy_from_slice(&garbage[..end - offset]);
            std::fs::write(&images.path, &damaged).unwrap();
            match open_damaged(&images.path, StoreOptions::new()) {
                Some(error) => {
                    assert!(is_clear_file_error(&error), "{image} {offset}: {error:?}");
                    detected += 1;
                    if error.to_string().contains("panicked") {
                        panics += 1;
                        println!("{image}, at {offset}: {error}");
                    }
                }
                None => harmless += 1,
            }
        }
        println!(
            "{image}: corruption detected {detected}, harmless (unused bytes) {harmless}, redb panics caught {panics}"
        );
        assert!(detected > 0);
    }
}

#[test]
fn a_corrupted_file_without_the_open_check_never_panics_out() {
    // Without the integrity check on open, damage shows at open or at the
    // first read; either way as an error.
    let dir = tempfile::tempdir().unwrap();
    let Images {
        path,
        closed: original,
        ..
    } = filled_file(&dir, StoreOptions::new());
    let mut detected = 0;
    for offset in (0..original.len()).step_by(1499) {
        let mut damaged = original.clone();
        let end = (offset + 48).min(damaged.len());
        damaged[offset..end].fill(0xA5);
        std::fs::write(&path, &damaged).unwrap();
        if let Some(error) = open_damaged(&path, StoreOptions::new().verify_on_open(false)) {
            assert!(is_clear_file_error(&error), "{offset}: {error:?}");
            detected += 1;
        }
    }
    assert!(detected > 0);
}

#[test]
fn a_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign");
    let contents: [&[u8]; 4] = [
        b"not a database at all\n",
        &[0u8; 8192],
        &[0xFFu8; 10_000],
        &b"redb".repeat(4096),
    ];
    for content in contents {
        std::fs::write(&path, content).unwrap();
        let error = RedbStore::open(&path, StoreOptions::new()).unwrap_err();
        assert!(is_clear_file_error(&error), "{error:?}");
        // Nothing was written to it.
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
}

// ------------------------------------------------------- encryption at rest

#[test]
fn the_key_encryption_key_is_checked_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let encrypted = dir.path().join("encrypted.redb");
    let store =
        RedbStore::create(&encrypted, StoreOptions::new().key_encryption_key(kek(1))).unwrap();
    assert!(store.is_encrypted());
    fill(&store);
    drop(store);
    let plain = dir.path().join("plain.redb");
    fill(&RedbStore::create(&plain, StoreOptions::new()).unwrap());

    let open = |path: &Path, options: StoreOptions| RedbStore::open(path, options).unwrap_err();
    assert!(matches!(
        open(&encrypted, StoreOptions::new().key_encryption_key(kek(2))),
        StoreError::WrongKey
    ));
    assert!(matches!(
        open(&encrypted, StoreOptions::new()),
        StoreError::KeyRequired
    ));
    assert!(matches!(
        open(&plain, StoreOptions::new().key_encryption_key(kek(1))),
        StoreError::NotEncrypted
    ));
    check_filled(
        &RedbStore::open(&encrypted, StoreOptions::new().key_encryption_key(kek(1))).unwrap(),
    );
    check_filled(&RedbStore::open(&plain, StoreOptions::new()).unwrap());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The 16-byte windows of a session snapshot's encoding that look like key
/// material (at least 14 distinct byte values): chain keys and traffic keys.
fn key_material(snapshot: &SessionSnapshot) -> Vec<Vec<u8>> {
    let bytes = snapshot.to_bytes().unwrap();
    let windows: Vec<Vec<u8>> = bytes
        .windows(16)
        .filter(|window| {
            let mut seen = [false; 256];
            window.iter().for_each(|&b| seen[b as usize] = true);
            seen.iter().filter(|&&s| s).count() >= 14
        })
        .map(<[u8]>::to_vec)
        .collect();
    assert!(windows.len() > 32, "a snapshot holds keys");
    windows
}

fn secrets_in_file(path: &Path) -> Vec<&'static str> {
    let raw = std::fs::read(path).unwrap();
    let mut found = Vec::new();
    if contains(&raw, &IDENTITY_SEED) {
        found.push("identity seed");
    }
    if contains(&raw, &SIGNED_PRE_KEY_SECRET) {
        found.push("signed pre-key secret");
    }
    if contains(&raw, &ONE_TIME_PRE_KEY_SECRET) {
        found.push("one-time pre-key secret");
    }
    if contains(&raw, INBOX_MARKER) {
        found.push("inbox plaintext");
    }
    if key_material(&snapshot("conn-a"))
        .iter()
        .any(|window| contains(&raw, window))
    {
        found.push("session key material");
    }
    found
}

#[test]
fn secrets_are_not_on_disk_with_a_key_encryption_key_and_are_without() {
    let dir = tempfile::tempdir().unwrap();
    let encrypted = dir.path().join("encrypted.redb");
    let plain = dir.path().join("plain.redb");
    for (path, options) in [
        (&encrypted, StoreOptions::new().key_encryption_key(kek(1))),
        (&plain, StoreOptions::new()),
    ] {
        let store = RedbStore::create(path, options).unwrap();
        fill(&store);
        // Rewrite the session a few times, as a running node does.
        for _ in 0..3 {
            let mut batch = WriteBatch::new();
            batch.put_session(&snapshot("conn-a")).unwrap();
            store.commit(batch).unwrap();
        }
        check_filled(&store);
        store.close().unwrap();
    }
    assert_eq!(secrets_in_file(&encrypted), Vec::<&str>::new());
    // Without a KEK every one of them is in the file: the search above can
    // find them, so its silence on the encrypted file means something.
    assert_eq!(
        secrets_in_file(&plain),
        vec![
            "identity seed",
            "signed pre-key secret",
            "one-time pre-key secret",
            "inbox plaintext",
            "session key material"
        ]
    );
}

#[test]
fn a_value_copied_to_another_record_or_table_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let options = StoreOptions::new().key_encryption_key(kek(1));
    let store = RedbStore::create(&path, options.clone()).unwrap();
    fill(&store);
    let mut batch = WriteBatch::new();
    batch.put_session(&snapshot("conn-b")).unwrap();
    store.commit(batch).unwrap();
    drop(store);

    let one_time: TableDefinition<&[u8], &[u8]> = TableDefinition::new("one_time_pre_keys");
    let sessions: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
    let signed: TableDefinition<&[u8], &[u8]> = TableDefinition::new("signed_pre_keys");
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut table = txn.open_table(one_time).unwrap();
            let key_1 = table
                .get(&1u32.to_be_bytes()[..])
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            // One-time pre-key 1's sealed value, pasted over key 2.
            table
                .insert(&2u32.to_be_bytes()[..], key_1.as_slice())
                .unwrap();
            drop(table);
            // ...and into the signed pre-keys, under the same id.
            let mut table = txn.open_table(signed).unwrap();
            table
                .insert(&1u32.to_be_bytes()[..], key_1.as_slice())
                .unwrap();
            drop(table);
            // An older session of conn-a pasted over conn-b.
            let mut table = txn.open_table(sessions).unwrap();
            let a = table.get(&b"conn-a"[..]).unwrap().unwrap().value().to_vec();
            table.insert(&b"conn-b"[..], a.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    let store = RedbStore::open(&path, options).unwrap();
    let authentication_failed = |error: StoreError| matches!(&error, StoreError::Corrupt(message) if message.contains("failed authentication"));
    assert!(authentication_failed(
        store.one_time_pre_key(2).unwrap_err()
    ));
    assert!(authentication_failed(store.signed_pre_key(1).unwrap_err()));
    assert!(authentication_failed(
        store.session(&connection("conn-b")).unwrap_err()
    ));
    // The records left in place still open.
    assert!(store.one_time_pre_key(1).unwrap().is_some());
    assert_eq!(
        store.session(&connection("conn-a")).unwrap().unwrap(),
        snapshot("conn-a")
    );
    // And the store keeps working.
    let mut batch = WriteBatch::new();
    batch.delete_one_time_pre_key(2);
    store.commit(batch).unwrap();
    assert_eq!(store.one_time_pre_key_ids().unwrap(), vec![1]);
}

#[test]
fn debug_output_shows_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new().key_encryption_key(KeyEncryptionKey::from_bytes([0xC3; 32]));
    let shown_options = format!("{options:?}");
    let store = RedbStore::create(store_path(&dir), options).unwrap();
    let shown_store = format!("{store:?}");
    for shown in [&shown_options, &shown_store] {
        assert!(
            !shown.contains("195") && !shown.to_lowercase().contains("c3"),
            "{shown}"
        );
    }
    assert!(shown_store.contains("encrypted: true"), "{shown_store}");
}

// ---------------------------------------------------------------- full disk

/// A file backend that fails writes with ENOSPC once a byte quota is used
/// up, after writing the part of the write that still fitted (a torn write,
/// as a real full disk can leave).
#[derive(Debug)]
struct FullDisk {
    inner: FileBackend,
    quota: Arc<AtomicU64>,
}

impl FullDisk {
    fn open(path: &Path, quota: Arc<AtomicU64>) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self {
            inner: FileBackend::new(file).map_err(io::Error::other)?,
            quota,
        })
    }

    /// Takes up to `wanted` bytes of quota; returns how many were granted.
    fn take(&self, wanted: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .quota
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                granted = left.min(wanted);
                Some(left - granted)
            });
        granted
    }
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC
}

impl StorageBackend for FullDisk {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let current = self.inner.len()?;
        if len > current && self.take(len - current) < len - current {
            return Err(no_space());
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let granted = self.take(data.len() as u64) as usize;
        if granted < data.len() {
            self.inner.write(offset, &data[..granted])?;
            return Err(no_space());
        }
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

fn full_disk_store(path: &Path, quota: &Arc<AtomicU64>, options: StoreOptions) -> RedbStore {
    let (backend_path, quota) = (path.to_path_buf(), Arc::clone(quota));
    RedbStore::with_backend(
        path,
        move || FullDisk::open(&backend_path, Arc::clone(&quota)),
        options,
    )
    .unwrap()
}

/// A batch big enough to need new pages: many pre-keys and large messages.
fn big_batch() -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.delete_one_time_pre_key(1);
    for id in 100..400u32 {
        batch.put_one_time_pre_key(&OneTimePreKey::new(id, [id as u8; 32]));
    }
    for _ in 0..8 {
        batch.push_inbox(&inbox_entry(&[0xEE; 20_000]));
    }
    batch.put_session(&snapshot("conn-new")).unwrap();
    batch
}

/// Whether the store shows exactly `fill`'s data and nothing of `big_batch`.
fn shows_earlier_data_only(store: &RedbStore) {
    check_filled(store);
    assert_eq!(store.inbox().unwrap().len(), 2);
    assert_eq!(store.one_time_pre_key_ids().unwrap(), vec![1, 2]);
    assert!(store.session(&connection("conn-new")).unwrap().is_none());
}

#[test]
fn a_full_disk_fails_the_commit_cleanly_and_makes_nothing_worse() {
    for options in [
        StoreOptions::new(),
        StoreOptions::new().key_encryption_key(kek(4)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let quota = Arc::new(AtomicU64::new(u64::MAX));
        let store = full_disk_store(&path, &quota, options.clone());
        fill(&store);

        // The disk fills up: the commit fails with an I/O error naming it.
        quota.store(10_000, Ordering::SeqCst);
        let error = store.commit(big_batch()).unwrap_err();
        match &error {
            StoreError::Io(message) => {
                assert!(message.contains("No space left on device"), "{message}")
            }
            other => panic!("expected Io, got {other:?}"),
        }
        // Still full: reading means reopening the file, which fails clearly
        // (redb's recovery on open wants to write).
        quota.store(0, Ordering::SeqCst);
        let error = store.identity().unwrap_err();
        assert!(matches!(error, StoreError::Io(_)), "{error:?}");
        // Space freed: the same handle recovers and shows the earlier data,
        // none of the failed batch, and takes new commits.
        quota.store(u64::MAX, Ordering::SeqCst);
        shows_earlier_data_only(&store);
        let mut batch = WriteBatch::new();
        batch.push_inbox(&inbox_entry(b"after the disk was freed"));
        store.commit(batch).unwrap();
        assert_eq!(store.inbox().unwrap()[2].sequence, 3);
        drop(store);

        // Reopened with the normal file backend, the file is clean.
        let store = RedbStore::open(&path, options).unwrap();
        check_filled(&store);
        assert_eq!(store.inbox().unwrap().len(), 3);
    }
}

#[test]
fn a_full_disk_at_any_point_of_a_commit_leaves_the_earlier_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let options = StoreOptions::new().key_encryption_key(kek(5));
    let quota = Arc::new(AtomicU64::new(u64::MAX));
    fill(&full_disk_store(&path, &quota, options.clone()));

    // How many bytes does the batch write when there is room?
    let probe_dir = tempfile::tempdir().unwrap();
    let probe_path = store_path(&probe_dir);
    std::fs::copy(&path, &probe_path).unwrap();
    let probe = full_disk_store(&probe_path, &quota, options.clone());
    quota.store(u64::MAX / 2, Ordering::SeqCst);
    probe.commit(big_batch()).unwrap();
    let needed = u64::MAX / 2 - quota.load(Ordering::SeqCst);
    drop(probe);
    assert!(needed > 100_000, "{needed}");

    // Run out of space at many points of that commit: every time the commit
    // fails, and the file opens afterwards with the earlier data intact.
    let mut failures = 0;
    for step in 0..24u64 {
        let allowed = needed * step / 24 + step * 37;
        let store = full_disk_store(&path, &quota, options.clone());
        quota.store(allowed, Ordering::SeqCst);
        let result = store.commit(big_batch());
        quota.store(u64::MAX, Ordering::SeqCst);
        drop(store);
        let error = result.expect_err("the quota is below what the batch needs");
        assert!(matches!(error, StoreError::Io(_)), "{allowed}: {error:?}");
        failures += 1;
        let store = RedbStore::open(&path, options.clone())
            .unwrap_or_else(|error| panic!("after failing at {allowed} bytes: {error:?}"));
        shows_earlier_data_only(&store);
    }
    assert_eq!(failures, 24);
}

// ----------------------------------------------------------- commit cost

/// Mean cost of one single-record durable commit on this machine, beside
/// raw redb's one- and two-phase commits. Ignored: run with `cargo test
/// --release -p confidant-store --test redb_files -- --ignored --nocapture
/// durable_commit_cost`.
#[test]
#[ignore = "a measurement, not a check"]
fn durable_commit_cost() {
    const COMMITS: u32 = 200;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let reservation = |n: u64| CounterReservation {
        epoch: 0,
        reserved_until: n,
    };
    let stores = [
        ("RedbStore, durable", StoreOptions::new()),
        (
            "RedbStore, durable, encrypted (a session record)",
            StoreOptions::new().key_encryption_key(kek(1)),
        ),
        (
            "RedbStore, deferred",
            StoreOptions::new().durability(Durability::Deferred),
        ),
    ];
    for round in 0..3 {
        for (n, (label, options)) in stores.iter().enumerate() {
            let path = dir.path().join(format!("store-{round}-{n}"));
            let store = RedbStore::create(&path, options.clone()).unwrap();
            let session = snapshot("conn-a");
            let start = std::time::Instant::now();
            for i in 0..u64::from(COMMITS) {
                let mut batch = WriteBatch::new();
                if options.is_encrypted() {
                    batch.put_session(&session).unwrap();
                } else {
                    batch.put_reservation(&connection("conn-a"), reservation(i));
                }
                store.commit(batch).unwrap();
            }
            println!("{label}: mean {:?} per commit", start.elapsed() / COMMITS);
        }
        for two_phase in [false, true] {
            let path = dir.path().join(format!("raw-{round}-{two_phase}"));
            let database = redb::Database::create(&path).unwrap();
            let start = std::time::Instant::now();
            for i in 0..u64::from(COMMITS) {
                let mut txn = database.begin_write().unwrap();
                txn.set_two_phase_commit(two_phase);
                txn.open_table(META)
                    .unwrap()
                    .insert(&b"k"[..], &i.to_be_bytes()[..])
                    .unwrap();
                txn.commit().unwrap();
            }
            println!(
                "raw redb, {} commit: mean {:?} per commit",
                if two_phase { "two-phase" } else { "one-phase" },
                start.elapsed() / COMMITS
            );
        }
    }
}

#[test]
fn with_a_key_a_lowered_counter_reservation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let id = connection("counted");
    {
        let store =
            RedbStore::create(&path, StoreOptions::default().key_encryption_key(kek(3))).unwrap();
        let mut batch = WriteBatch::new();
        batch.put_reservation(
            &id,
            CounterReservation {
                epoch: 0,
                reserved_until: 4096,
            },
        );
        store.commit(batch).unwrap();
    }
    // Someone who can write the file, but has no key, lowers the
    // reservation to 0 (the plaintext encoding of epoch 0, counter 0).
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let counters: TableDefinition<&[u8], &[u8]> = TableDefinition::new("counters");
            let mut table = txn.open_table(counters).unwrap();
            table.insert(id.as_bytes(), [0u8; 12].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path, StoreOptions::default().key_encryption_key(kek(3))).unwrap();
    assert!(matches!(
        store.reservation(&id),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn a_small_page_cache_still_reads_back_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small-cache.redb");
    let options = || StoreOptions::new().cache_size(64 * 1024);
    {
        let store = RedbStore::create(&path, options()).unwrap();
        for chunk in 0..10u32 {
            let mut batch = WriteBatch::new();
            for id in 0..200u32 {
                batch.put_one_time_pre_key(&confidant_x3dh::OneTimePreKey::new(
                    chunk * 200 + id,
                    [u8::try_from(id % 251).unwrap(); 32],
                ));
            }
            store.commit(batch).unwrap();
        }
    }
    let store = RedbStore::open(&path, options()).unwrap();
    let ids = store.one_time_pre_key_ids().unwrap();
    assert_eq!(ids, (0..2000).collect::<Vec<u32>>());
    let key = store.one_time_pre_key(1999).unwrap().unwrap();
    assert_eq!(
        key.public_key(),
        confidant_x3dh::OneTimePreKey::new(1999, [199; 32]).public_key()
    );
}

/// A file of schema version 1 (one inbox record per message, no table of
/// runs) opens: it is upgraded in place, its messages keep their numbers,
/// are read beside the new runs and are deleted when acknowledged.
#[test]
fn a_schema_1_file_is_upgraded_and_keeps_its_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let store = RedbStore::create(&path, StoreOptions::new()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put_identity(&IdentityKeyPair::from_seed(IDENTITY_SEED));
    store.commit(batch).unwrap();
    drop(store);
    // What a schema-1 build left: two messages, numbered 1 and 2.
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        let inbox: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inbox");
        {
            let mut table = txn.open_table(inbox).unwrap();
            for (sequence, text) in [(1u64, &b"old one"[..]), (2, b"old two")] {
                let mut value = vec![6];
                value.extend_from_slice(b"conn-a");
                value.extend_from_slice(&0u32.to_be_bytes());
                value.extend_from_slice(&(sequence - 1).to_be_bytes());
                value.extend_from_slice(text);
                table
                    .insert(sequence.to_be_bytes().as_slice(), value.as_slice())
                    .unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(b"inbox_next".as_slice(), 3u64.to_be_bytes().as_slice())
                .unwrap();
            meta.insert(SCHEMA_VERSION_KEY, 1u32.to_be_bytes().as_slice())
                .unwrap();
        }
        let runs: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inbox_runs");
        assert!(txn.delete_table(runs).unwrap());
        txn.commit().unwrap();
    }

    let store = RedbStore::open(&path, StoreOptions::new()).unwrap();
    let inbox = store.inbox().unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!((inbox[0].sequence, inbox[1].sequence), (1, 2));
    assert_eq!(inbox[1].plaintext.as_slice(), b"old two");
    assert_eq!(inbox[1].counter, 1);
    // New messages go into runs and are numbered on.
    let mut batch = WriteBatch::new();
    batch.push_inbox(&inbox_entry(b"new"));
    assert_eq!(store.commit(batch).unwrap().inbox, 3..4);
    let mut batch = WriteBatch::new();
    batch.delete_inbox(1);
    store.commit(batch).unwrap();
    let inbox = store.inbox().unwrap();
    assert_eq!(
        inbox.iter().map(|entry| entry.sequence).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(inbox[1].plaintext.as_slice(), b"new");
    drop(store);

    // The file now says version 2, and the old record 1 is gone from it.
    let database = redb::Database::open(&path).unwrap();
    let txn = database.begin_read().unwrap();
    let version = txn.open_table(META).unwrap();
    let version = version.get(SCHEMA_VERSION_KEY).unwrap().unwrap();
    assert_eq!(version.value(), SCHEMA_VERSION.to_be_bytes());
    let inbox: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inbox");
    let inbox = txn.open_table(inbox).unwrap();
    assert!(inbox.get(1u64.to_be_bytes().as_slice()).unwrap().is_none());
    assert!(inbox.get(2u64.to_be_bytes().as_slice()).unwrap().is_some());
}
