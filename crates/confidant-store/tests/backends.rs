//! One test suite, written once against `RawStore` and the typed traits, run
//! for every backend: the in-memory reference store, a plain redb store and
//! a redb store with encryption at rest. The backends must agree on every
//! observable result, inbox sequence numbers included.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_core::{AgreedSecret, ConnectionId, Role};
use confidant_session::{Session, SessionConfig, SessionSnapshot};
use confidant_store::{
    CounterReservation, CounterStore, IdentityStore, InboxEntry, InboxStore, KEY_CHECK_KEY,
    KeyEncryptionKey, MemoryStore, PreKeyStore, RUN_LIMIT, RawStore, RedbStore, SCHEMA_VERSION,
    SCHEMA_VERSION_KEY, SessionStore, StoreError, StoreOptions, Table, WriteBatch, WriteOp,
    inbox_key, run_key,
};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, SignedPreKey};
use std::sync::Arc;
use tempfile::TempDir;
use zeroize::Zeroizing;

fn connection(name: &str) -> ConnectionId {
    ConnectionId::new(name).unwrap()
}

fn snapshot(name: &str, suite: Arc<dyn confidant_core::Suite>, seed: u8) -> SessionSnapshot {
    let agreed = AgreedSecret::new([seed; 32], vec![seed; 64], None);
    Session::new(
        Role::Initiator,
        connection(name),
        suite,
        &agreed,
        SessionConfig::default(),
    )
    .unwrap()
    .snapshot()
}

fn entry(name: &str, counter: u64, plaintext: &[u8]) -> InboxEntry {
    InboxEntry {
        sequence: 0,
        connection_id: connection(name),
        epoch: 0,
        counter,
        plaintext: Zeroizing::new(plaintext.to_vec()),
    }
}

fn sequences<S: RawStore + ?Sized>(store: &S) -> Vec<u64> {
    store.inbox().unwrap().iter().map(|e| e.sequence).collect()
}

fn new_store_is_empty<S: RawStore>(store: &S) {
    assert!(store.identity().unwrap().is_none());
    assert!(store.responder_keys().unwrap().is_none());
    assert!(store.signed_pre_key_ids().unwrap().is_empty());
    assert!(store.one_time_pre_key_ids().unwrap().is_empty());
    assert!(store.connection_ids().unwrap().is_empty());
    assert!(store.inbox().unwrap().is_empty());
    assert!(store.reservation(&connection("c")).unwrap().is_none());
    // Every backend carries the schema version in Meta.
    let version = store.get(Table::Meta, SCHEMA_VERSION_KEY).unwrap().unwrap();
    assert_eq!(version.as_slice(), SCHEMA_VERSION.to_be_bytes());
}

fn identity_and_pre_keys<S: RawStore>(store: &S) {
    let identity = IdentityKeyPair::from_seed([0x11; 32]);
    let mut batch = WriteBatch::new();
    batch.put_identity(&identity);
    // Out of order on purpose: ids come back ascending.
    for id in [3, 1, 2] {
        batch.put_signed_pre_key(&SignedPreKey::new(&identity, id, [0x20 + id as u8; 32]));
    }
    for id in [12, 10, 11] {
        batch.put_one_time_pre_key(&OneTimePreKey::new(id, [0x40 + id as u8; 32]));
    }
    store.commit(batch).unwrap();

    let stored = store.identity().unwrap().unwrap();
    assert_eq!(stored.public_key(), identity.public_key());
    assert_eq!(*stored.to_seed(), [0x11; 32]);
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![1, 2, 3]);
    assert_eq!(store.one_time_pre_key_ids().unwrap(), vec![10, 11, 12]);
    let spk = store.signed_pre_key(2).unwrap().unwrap();
    let expected = SignedPreKey::new(&identity, 2, [0x22; 32]);
    assert_eq!(spk.id(), 2);
    assert_eq!(spk.public_key(), expected.public_key());
    assert_eq!(spk.signature(), expected.signature());
    let opk = store.one_time_pre_key(11).unwrap().unwrap();
    assert_eq!(
        opk.public_key(),
        OneTimePreKey::new(11, [0x4b; 32]).public_key()
    );
    assert!(store.signed_pre_key(9).unwrap().is_none());
    assert!(store.one_time_pre_key(9).unwrap().is_none());

    let keys = store.responder_keys().unwrap().unwrap();
    assert_eq!(keys.identity_public_key(), &identity.public_key());
    assert_eq!(
        keys.current_signed_pre_key().id(),
        3,
        "highest id is current"
    );
    assert_eq!(keys.signed_pre_key_ids(), vec![1, 2, 3]);
    let mut one_time: Vec<u32> = keys.one_time_pre_key_ids().collect();
    one_time.sort_unstable();
    assert_eq!(one_time, vec![10, 11, 12]);

    // Deletes.
    let mut batch = WriteBatch::new();
    batch.delete_signed_pre_key(1);
    batch.delete_one_time_pre_key(10);
    batch.delete_one_time_pre_key(99); // absent: not an error
    store.commit(batch).unwrap();
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![2, 3]);
    assert_eq!(store.one_time_pre_key_ids().unwrap(), vec![11, 12]);
    assert!(store.one_time_pre_key(10).unwrap().is_none());
}

fn sessions_and_reservations<S: RawStore>(store: &S) {
    let a = snapshot("conn-a", confidant_aes_gcm::aes_256_gcm_sha256_counter(), 1);
    let b = snapshot(
        "conn-b",
        confidant_chacha20poly1305::chacha20_poly1305_counter(),
        2,
    );
    let mut batch = WriteBatch::new();
    batch.put_session(&b).unwrap();
    batch.put_session(&a).unwrap();
    let reservation = CounterReservation {
        epoch: 3,
        reserved_until: 1 << 40,
    };
    batch.put_reservation(&connection("conn-a"), reservation);
    store.commit(batch).unwrap();

    assert_eq!(store.session(&connection("conn-a")).unwrap().unwrap(), a);
    assert_eq!(store.session(&connection("conn-b")).unwrap().unwrap(), b);
    assert!(store.session(&connection("conn-c")).unwrap().is_none());
    assert_eq!(
        store.connection_ids().unwrap(),
        vec![connection("conn-a"), connection("conn-b")]
    );
    assert_eq!(
        store.reservation(&connection("conn-a")).unwrap(),
        Some(reservation)
    );

    // Replacing a record.
    let a2 = snapshot("conn-a", confidant_aes_gcm::aes_256_gcm_lfsr(), 9);
    let mut batch = WriteBatch::new();
    batch.put_session(&a2).unwrap();
    store.commit(batch).unwrap();
    assert_eq!(store.session(&connection("conn-a")).unwrap().unwrap(), a2);

    // Deleting a session deletes its reservation too.
    let mut batch = WriteBatch::new();
    batch.delete_session(&connection("conn-a"));
    store.commit(batch).unwrap();
    assert!(store.session(&connection("conn-a")).unwrap().is_none());
    assert!(store.reservation(&connection("conn-a")).unwrap().is_none());
    assert_eq!(store.connection_ids().unwrap(), vec![connection("conn-b")]);
}

fn batch_is_atomic_and_complete<S: RawStore>(store: &S) {
    let identity = IdentityKeyPair::from_seed([0x33; 32]);
    let mut batch = WriteBatch::new();
    batch.put_identity(&identity);
    batch.put_signed_pre_key(&SignedPreKey::new(&identity, 1, [0x44; 32]));
    batch.put_one_time_pre_key(&OneTimePreKey::new(5, [0x55; 32]));
    store.commit(batch).unwrap();

    // The responder's handshake: the one-time pre-key goes in the batch that
    // stores the session. After the commit both changes are visible.
    let session = snapshot("conn-x3dh", confidant_aes_gcm::aes_256_gcm_lfsr(), 5);
    let mut batch = WriteBatch::new();
    batch.delete_one_time_pre_key(5);
    batch.put_session(&session).unwrap();
    store.commit(batch).unwrap();
    assert!(store.one_time_pre_key(5).unwrap().is_none());
    assert_eq!(
        store.session(&connection("conn-x3dh")).unwrap().unwrap(),
        session
    );

    // Later changes in a batch win over earlier ones on the same record.
    let mut batch = WriteBatch::new();
    batch.put_one_time_pre_key(&OneTimePreKey::new(6, [0x66; 32]));
    batch.delete_one_time_pre_key(6);
    batch.put_one_time_pre_key(&OneTimePreKey::new(7, [0x77; 32]));
    store.commit(batch).unwrap();
    // (11 and 12 are left from `identity_and_pre_keys`.)
    assert_eq!(store.one_time_pre_key_ids().unwrap(), vec![7, 11, 12]);
    let mut batch = WriteBatch::new();
    batch.delete_one_time_pre_key(7);
    store.commit(batch).unwrap();
}

fn inbox_numbering<S: RawStore>(store: &S) {
    // Numbering starts at 1 and follows the order within a batch.
    let mut batch = WriteBatch::new();
    for (i, text) in [&b"first"[..], b"second", b"third"].iter().enumerate() {
        batch.push_inbox(&entry("conn-in", i as u64, text));
    }
    assert_eq!(store.commit(batch).unwrap().inbox, 1..4);
    let inbox = store.inbox().unwrap();
    assert_eq!(sequences(store), vec![1, 2, 3]);
    assert_eq!(inbox[1].plaintext.as_slice(), b"second");
    assert_eq!(inbox[1].connection_id, connection("conn-in"));
    assert_eq!((inbox[1].epoch, inbox[1].counter), (0, 1));

    // Numbers are never reused after deletions, even of the newest entry,
    // nor after a batch without inbox entries.
    let mut batch = WriteBatch::new();
    batch.delete_inbox(3);
    batch.delete_inbox(1);
    store.commit(batch).unwrap();
    assert_eq!(sequences(store), vec![2]);
    assert!(store.commit(WriteBatch::new()).unwrap().inbox.is_empty());
    let mut batch = WriteBatch::new();
    batch.push_inbox(&entry("conn-in", 3, b"fourth"));
    batch.push_inbox(&entry("conn-in", 4, b"fifth"));
    assert_eq!(store.commit(batch).unwrap().inbox, 4..6);
    assert_eq!(sequences(store), vec![2, 4, 5]);
    assert_eq!(store.inbox().unwrap()[2].plaintext.as_slice(), b"fifth");

    // Everything deleted: still no reuse.
    let mut batch = WriteBatch::new();
    for sequence in [2, 4, 5] {
        batch.delete_inbox(sequence);
    }
    store.commit(batch).unwrap();
    assert!(store.inbox().unwrap().is_empty());
    let mut batch = WriteBatch::new();
    batch.push_inbox(&entry("conn-in", 5, b"sixth"));
    store.commit(batch).unwrap();
    assert_eq!(sequences(store), vec![6]);
    // Stored as a run of one, under its numbers.
    assert!(
        store
            .get(Table::InboxRuns, &run_key(6, 7))
            .unwrap()
            .is_some()
    );
    assert!(store.get(Table::Inbox, &inbox_key(6)).unwrap().is_none());
}

/// A commit's entries are stored in runs (consecutive entries of one
/// connection, at most `RUN_LIMIT`), each message keeping its own number;
/// acknowledging part of a run rewrites it, the rest of it removes it.
fn inbox_runs<S: RawStore>(store: &S) {
    let runs_before = store.entries(Table::InboxRuns).unwrap();
    let inbox_before = sequences(store);
    let mut batch = WriteBatch::new();
    let long = RUN_LIMIT as u64 + 6;
    for i in 0..long {
        batch.push_inbox(&entry("conn-a", i, format!("a{i}").as_bytes()));
    }
    batch.push_inbox(&entry("conn-b", 0, b"b0"));
    batch.push_inbox(&entry("conn-b", 1, b"b1"));
    batch.push_inbox(&entry("conn-a", long, b"a-last"));
    let numbers = store.commit(batch).unwrap().inbox;
    let first = numbers.start;
    assert_eq!(numbers.end, first + long + 3);
    let runs = |store: &S| -> Vec<Vec<u8>> {
        store
            .entries(Table::InboxRuns)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !runs_before.iter().any(|(old, _)| old == key))
            .collect()
    };
    let limit = RUN_LIMIT as u64;
    assert_eq!(
        runs(store),
        vec![
            run_key(first, first + limit),
            run_key(first + limit, first + long),
            run_key(first + long, first + long + 2),
            run_key(first + long + 2, first + long + 3),
        ]
    );
    // Every message has its own number, in the order it was pushed.
    let inbox = store.inbox().unwrap();
    let ours: Vec<&InboxEntry> = inbox
        .iter()
        .filter(|e| numbers.contains(&e.sequence))
        .collect();
    assert_eq!(ours.len(), (long + 3) as usize);
    for (i, entry) in ours.iter().enumerate() {
        assert_eq!(entry.sequence, first + i as u64);
    }
    assert_eq!(ours[3].plaintext.as_slice(), b"a3");
    assert_eq!(ours[long as usize + 1].plaintext.as_slice(), b"b1");
    assert_eq!(ours[long as usize + 1].connection_id, connection("conn-b"));
    assert_eq!(ours[long as usize + 2].plaintext.as_slice(), b"a-last");

    // Part of two runs acknowledged: both rewritten, nothing else touched.
    let untouched = store
        .get(Table::InboxRuns, &run_key(first + limit, first + long))
        .unwrap();
    let mut batch = WriteBatch::new();
    for sequence in [first + 3, first + 10, first + long] {
        batch.delete_inbox(sequence);
    }
    store.commit(batch).unwrap();
    assert_eq!(runs(store).len(), 4);
    assert_eq!(
        store
            .get(Table::InboxRuns, &run_key(first + limit, first + long))
            .unwrap(),
        untouched
    );
    let left: Vec<u64> = sequences(store)
        .into_iter()
        .filter(|sequence| numbers.contains(sequence))
        .collect();
    assert_eq!(left.len(), (long + 3 - 3) as usize);
    assert!(!left.contains(&(first + 3)) && !left.contains(&(first + long)));
    assert!(left.contains(&(first + 4)) && left.contains(&(first + long + 1)));
    let entry_4 = store.inbox().unwrap();
    let entry_4 = entry_4.iter().find(|e| e.sequence == first + 4).unwrap();
    assert_eq!(entry_4.plaintext.as_slice(), b"a4");

    // The rest of the first run: its record goes. Numbers that are gone
    // or were never given change nothing.
    let mut batch = WriteBatch::new();
    for sequence in first..first + limit {
        batch.delete_inbox(sequence);
    }
    store.commit(batch).unwrap();
    assert_eq!(runs(store).len(), 3);
    assert!(
        store
            .get(Table::InboxRuns, &run_key(first, first + limit))
            .unwrap()
            .is_none()
    );
    let before = dump(store);
    let mut batch = WriteBatch::new();
    batch.delete_inbox(first + 3);
    batch.delete_inbox(numbers.end + 100);
    batch.delete_inbox(0);
    store.commit(batch).unwrap();
    assert_eq!(dump(store), before);

    // Everything acknowledged: the store is as before, numbers not reused.
    let mut batch = WriteBatch::new();
    for sequence in numbers.clone() {
        batch.delete_inbox(sequence);
    }
    store.commit(batch).unwrap();
    assert_eq!(store.entries(Table::InboxRuns).unwrap(), runs_before);
    assert_eq!(sequences(store), inbox_before);
}

/// An insert whose key is taken fails the whole batch, and nothing of it is
/// applied: the runtime relies on this so that a connection id the relay
/// assigns can never replace an existing connection's record.
fn an_insert_never_replaces_a_record<S: RawStore>(store: &S) {
    let put = |key: &[u8], value: &[u8]| WriteOp::Insert {
        table: Table::Connections,
        key: key.to_vec(),
        value: Zeroizing::new(value.to_vec()),
    };
    let mut batch = WriteBatch::new();
    batch.push(put(b"insert-1", b"first"));
    store.commit(batch).unwrap();
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Put {
        table: Table::Counters,
        key: b"insert-side-effect".to_vec(),
        value: Zeroizing::new(b"x".to_vec()),
    });
    batch.push(put(b"insert-1", b"second"));
    let error = store.commit(batch).unwrap_err();
    assert!(
        matches!(error, confidant_store::StoreError::AlreadyExists { .. }),
        "{error}"
    );
    assert_eq!(
        store
            .get(Table::Connections, b"insert-1")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"first"
    );
    assert!(
        store
            .get(Table::Counters, b"insert-side-effect")
            .unwrap()
            .is_none()
    );
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Delete {
        table: Table::Connections,
        key: b"insert-1".to_vec(),
    });
    store.commit(batch).unwrap();
}

fn raw_entries_are_in_key_order<S: RawStore>(store: &S) {
    let keys: [&[u8]; 6] = [b"m", b"a", b"zz", b"", b"\xff", b"ab"];
    let mut batch = WriteBatch::new();
    for key in keys {
        batch.push(WriteOp::Put {
            table: Table::Counters,
            key: key.to_vec(),
            value: Zeroizing::new([b"v-", key].concat()),
        });
    }
    // Secret tables too (these go through encryption at rest).
    for id in [300u32, 2, 70_000, 1] {
        batch.put_one_time_pre_key(&OneTimePreKey::new(id, [id as u8; 32]));
    }
    store.commit(batch).unwrap();
    let entries = store.entries(Table::Counters).unwrap();
    let found: Vec<&[u8]> = entries.iter().map(|(key, _)| key.as_slice()).collect();
    assert_eq!(found, vec![&b""[..], b"a", b"ab", b"m", b"zz", b"\xff"]);
    for (key, value) in &entries {
        assert_eq!(value.as_slice(), [b"v-", key.as_slice()].concat());
    }
    assert_eq!(
        store.one_time_pre_key_ids().unwrap(),
        vec![1, 2, 11, 12, 300, 70_000]
    );
    assert_eq!(
        store
            .get(Table::Counters, b"m")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"v-m"
    );
    assert!(store.get(Table::Counters, b"n").unwrap().is_none());

    let mut batch = WriteBatch::new();
    for key in keys {
        batch.push(WriteOp::Delete {
            table: Table::Counters,
            key: key.to_vec(),
        });
    }
    for id in [300u32, 2, 70_000, 1] {
        batch.delete_one_time_pre_key(id);
    }
    store.commit(batch).unwrap();
    assert!(store.entries(Table::Counters).unwrap().is_empty());
}

/// Last in the suite: it leaves the store unable to commit.
fn a_failed_batch_applies_nothing<S: RawStore>(store: &S) {
    // A malformed inbox counter in Meta fails every batch before anything
    // is written, in every backend (and, as the reference store numbers
    // entries before applying anything, even a batch that would repair it).
    let mut poison = WriteBatch::new();
    poison.push(WriteOp::Put {
        table: Table::Meta,
        key: b"inbox_next".to_vec(),
        value: Zeroizing::new(vec![1, 2, 3]),
    });
    store.commit(poison).unwrap();
    let before = dump(store);
    let mut batch = WriteBatch::new();
    batch.delete_one_time_pre_key(11);
    batch.put_one_time_pre_key(&OneTimePreKey::new(8, [0x88; 32]));
    batch.push_inbox(&entry("conn-x3dh", 0, b"never stored"));
    let error = store.commit(batch).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    assert_eq!(dump(store), before);
    assert!(store.one_time_pre_key(11).unwrap().is_some());
    assert!(store.one_time_pre_key(8).unwrap().is_none());
}

fn a_lowered_inbox_number_never_overwrites_a_message<S: RawStore>(store: &S) {
    let existing = sequences(store);
    let Some(&first) = existing.first() else {
        panic!("the earlier parts leave inbox entries");
    };
    let saved = store.get(Table::Meta, b"inbox_next").unwrap().unwrap();
    let set_next = |value: Zeroizing<Vec<u8>>| {
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Put {
            table: Table::Meta,
            key: b"inbox_next".to_vec(),
            value,
        });
        store.commit(batch).unwrap();
    };
    // A damaged or tampered file points the next number at an unread entry.
    set_next(Zeroizing::new(first.to_be_bytes().to_vec()));
    let before = dump(store);
    let mut batch = WriteBatch::new();
    batch.push_inbox(&entry("conn-x3dh", 0, b"would overwrite"));
    assert!(matches!(
        store.commit(batch),
        Err(StoreError::Inconsistent(_))
    ));
    assert_eq!(dump(store), before);
    set_next(saved);
}

/// The whole suite, in an order where each part starts from what the
/// previous left (so the backends are compared on the same history).
fn suite<S: RawStore>(store: &S) {
    new_store_is_empty(store);
    identity_and_pre_keys(store);
    sessions_and_reservations(store);
    batch_is_atomic_and_complete(store);
    inbox_numbering(store);
    inbox_runs(store);
    raw_entries_are_in_key_order(store);
    an_insert_never_replaces_a_record(store);
    a_lowered_inbox_number_never_overwrites_a_message(store);
    a_failed_batch_applies_nothing(store);
}

/// Every record of every table, for comparing backends.
fn dump<S: RawStore + ?Sized>(store: &S) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    Table::ALL
        .iter()
        .flat_map(|&table| {
            store
                .entries(table)
                .unwrap()
                .into_iter()
                .map(move |(key, value)| (table, key, value.to_vec()))
        })
        .collect()
}

fn redb(dir: &TempDir, options: StoreOptions) -> RedbStore {
    RedbStore::create(dir.path().join("store.redb"), options).unwrap()
}

fn kek() -> KeyEncryptionKey {
    KeyEncryptionKey::from_bytes([0x5a; 32])
}

#[test]
fn memory_store_passes_the_suite() {
    suite(&MemoryStore::new());
}

#[test]
fn redb_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&redb(&dir, StoreOptions::new()));
}

#[test]
fn encrypted_redb_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&redb(&dir, StoreOptions::new().key_encryption_key(kek())));
}

#[test]
fn the_backends_end_in_the_same_state() {
    let memory = MemoryStore::new();
    suite(&memory);
    let expected = dump(&memory);
    assert!(expected.len() > 10, "the suite leaves records behind");
    for options in [
        StoreOptions::new(),
        StoreOptions::new().key_encryption_key(kek()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = redb(&dir, options.clone());
        suite(&store);
        // The same records through RawStore (plaintext values, whatever is
        // on disk), also after reopening the file; an encrypted store has
        // its key check in Meta besides.
        let encrypted = options.is_encrypted();
        let without_key_check = |store: &RedbStore| {
            let mut records = dump(store);
            let before = records.len();
            records.retain(|(table, key, _)| !(*table == Table::Meta && key == KEY_CHECK_KEY));
            assert_eq!(before - records.len(), usize::from(encrypted));
            records
        };
        assert_eq!(without_key_check(&store), expected);
        let path = store.path().to_path_buf();
        drop(store);
        let store = RedbStore::open(&path, options).unwrap();
        assert_eq!(without_key_check(&store), expected);
    }
}

#[test]
fn stores_are_usable_through_trait_objects_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn RawStore> = Arc::new(redb(&dir, StoreOptions::new()));
    let handles: Vec<_> = (0..4u64)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..10u64 {
                    let mut batch = WriteBatch::new();
                    batch.push_inbox(&entry("conn-t", thread * 100 + i, b"m"));
                    store.commit(batch).unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    // 40 appends from 4 threads: 40 distinct, dense sequence numbers.
    assert_eq!(sequences(&*store), (1..=40).collect::<Vec<u64>>());
}
