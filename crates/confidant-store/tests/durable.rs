//! DurableSession against the reference store: counter reservation in
//! blocks, resumption after a simulated crash, durable key updates, durable
//! receive with an inbox, and poisoning after a failed commit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_core::wire::EncryptedMessage;
use confidant_core::{AgreedSecret, ConnectionId, Role, SuiteRegistry};
use confidant_session::{OpenError, ReplayError, Session, SessionConfig};
use confidant_store::{
    CounterStore, DurableSession, InboxStore, MemoryStore, PreKeyStore, RawStore, ReceiveError,
    Received, Record, SessionStore, StoreError, Table, WriteBatch,
};
use confidant_x3dh::OneTimePreKey;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use zeroize::Zeroizing;

fn registry() -> SuiteRegistry {
    let mut registry = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut registry).unwrap();
    confidant_chacha20poly1305::register(&mut registry).unwrap();
    registry
}

fn connection() -> ConnectionId {
    ConnectionId::new("conn-durable").unwrap()
}

fn sessions(config: SessionConfig) -> (Session, Session) {
    let agreed = AgreedSecret::new([9; 32], vec![1; 64], None);
    let suite = confidant_aes_gcm::aes_256_gcm_lfsr();
    (
        Session::new(
            Role::Initiator,
            connection(),
            suite.clone(),
            &agreed,
            config.clone(),
        )
        .unwrap(),
        Session::new(Role::Responder, connection(), suite, &agreed, config).unwrap(),
    )
}

/// A store whose commits can be made to fail, standing for a full disk.
struct Flaky {
    inner: MemoryStore,
    fail: AtomicBool,
}

impl Flaky {
    fn new() -> Self {
        Self {
            inner: MemoryStore::new(),
            fail: AtomicBool::new(false),
        }
    }
    fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

impl RawStore for Flaky {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.inner.get(table, key)
    }
    fn entries(&self, table: Table) -> Result<Vec<Record>, StoreError> {
        self.inner.entries(table)
    }
    fn commit(&self, batch: WriteBatch) -> Result<confidant_store::Committed, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Io("No space left on device (simulated)".into()));
        }
        self.inner.commit(batch)
    }
}

#[test]
fn counters_are_reserved_once_per_block() {
    let store = MemoryStore::new();
    let (holder, _) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, holder, WriteBatch::new(), 100).unwrap();
    let after_create = store.commit_count();
    for i in 0..250u64 {
        let message = durable.seal(&store, b"m").unwrap();
        assert_eq!(message.counter, i);
        // The stored reservation is always above the counter just used.
        let reservation = store.reservation(&connection()).unwrap().unwrap();
        assert!(message.counter < reservation.reserved_until);
    }
    // 0..100, 100..200, 200..300: three commits for 250 messages.
    assert_eq!(store.commit_count() - after_create, 3);
    assert_eq!(durable.reservation().reserved_until, 300);
}

#[test]
fn after_a_crash_sealing_resumes_above_every_used_counter() {
    let store = MemoryStore::new();
    let registry = registry();
    let (holder, mut issuer) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, holder, WriteBatch::new(), 64).unwrap();
    let mut wire: Vec<EncryptedMessage> = Vec::new();
    for round in 0..5 {
        for _ in 0..(37 + round * 11) {
            wire.push(durable.seal(&store, b"before crash").unwrap());
        }
        // Crash: the in-memory session is lost; only the store remains.
        drop(durable);
        durable = DurableSession::load(&store, &registry, &connection(), 64)
            .unwrap()
            .unwrap();
    }
    wire.push(durable.seal(&store, b"after").unwrap());
    let mut seen = HashSet::new();
    for message in &wire {
        assert!(
            seen.insert((message.epoch, message.counter)),
            "counter {} reused",
            message.counter
        );
    }
    // Every message opens exactly once on the other side.
    for message in wire {
        assert!(issuer.open(message).is_ok());
    }
}

#[test]
fn a_key_update_is_durable_before_it_is_sent() {
    let store = MemoryStore::new();
    let registry = registry();
    let (holder, mut issuer) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, holder, WriteBatch::new(), 16).unwrap();
    let before = durable.seal(&store, b"epoch 0").unwrap();
    let update = durable.update_sending_key(&store, false).unwrap();
    let stored = store.session(&connection()).unwrap().unwrap();
    assert_eq!(stored.send_epoch(), 1);
    let reservation = store.reservation(&connection()).unwrap().unwrap();
    assert_eq!(reservation.epoch, 1);
    assert!(
        reservation.reserved_until > 0,
        "the announcement's counter is reserved"
    );

    // Crash right after the update: the reloaded session is in epoch 1 and
    // does not reuse the announcement's counter.
    drop(durable);
    let mut durable = DurableSession::load(&store, &registry, &connection(), 16)
        .unwrap()
        .unwrap();
    assert_eq!(durable.session().send_epoch(), 1);
    let after = durable.seal(&store, b"epoch 1").unwrap();
    assert_eq!(after.epoch, 1);
    assert!(after.counter >= 1);

    assert_eq!(issuer.open(before).unwrap(), b"epoch 0");
    issuer.open_key_update(update).unwrap();
    assert_eq!(issuer.open(after).unwrap(), b"epoch 1");
}

#[test]
fn received_messages_are_durable_before_they_are_reported() {
    let store = MemoryStore::new();
    let registry = registry();
    let (mut holder, issuer) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, issuer, WriteBatch::new(), 16).unwrap();
    let wire: Vec<EncryptedMessage> = (0..10u8).map(|i| holder.seal(&[i]).unwrap()).collect();

    // Crash after opening in memory, before committing: nothing stored.
    let mut batch = WriteBatch::new();
    for message in wire[..5].iter().cloned() {
        durable.open_into(message, &mut batch).unwrap();
    }
    drop(batch);
    drop(durable);
    assert!(store.inbox().unwrap().is_empty());

    // Restart: the connector redelivers everything; each is accepted once.
    let mut durable = DurableSession::load(&store, &registry, &connection(), 16)
        .unwrap()
        .unwrap();
    let mut redelivered = wire.clone();
    redelivered.extend(wire[..5].iter().cloned()); // duplicates on the way
    let results = durable.receive(&store, redelivered).unwrap();
    let stored = results
        .iter()
        .filter(|result| matches!(result, Received::Stored(_)))
        .count();
    assert_eq!(stored, 10);
    // Each stored result carries the number the store gave its entry.
    let numbers: Vec<u64> = results
        .iter()
        .filter_map(|result| match result {
            Received::Stored(entry) => Some(entry.sequence),
            Received::Refused(_) => None,
        })
        .collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<u64>>());
    for result in &results[10..] {
        assert!(matches!(
            result,
            Received::Refused(ReceiveError::Refused(OpenError::Replay(
                ReplayError::Duplicate { .. }
            )))
        ));
    }
    let inbox = store.inbox().unwrap();
    assert_eq!(
        inbox
            .iter()
            .map(|entry| entry.plaintext[0])
            .collect::<Vec<_>>(),
        (0..10).collect::<Vec<u8>>()
    );

    // Restart after the commit: a redelivery is refused as a duplicate.
    drop(durable);
    let mut durable = DurableSession::load(&store, &registry, &connection(), 16)
        .unwrap()
        .unwrap();
    let results = durable.receive(&store, wire).unwrap();
    assert!(
        results
            .iter()
            .all(|result| matches!(result, Received::Refused(_)))
    );
    assert_eq!(store.inbox().unwrap().len(), 10);

    // The application takes an entry and deletes it.
    let mut batch = WriteBatch::new();
    batch.delete_inbox(inbox[0].sequence);
    store.commit(batch).unwrap();
    assert_eq!(store.inbox().unwrap().len(), 9);
}

#[test]
fn a_failed_commit_poisons_the_session_until_it_is_loaded_again() {
    let store = Flaky::new();
    let registry = registry();
    let (holder, mut issuer) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, holder, WriteBatch::new(), 4).unwrap();
    let first = durable.seal(&store, b"one").unwrap();

    store.set_failing(true);
    // The key update cannot be made durable: it is not returned.
    assert!(matches!(
        durable.update_sending_key(&store, false),
        Err(StoreError::Io(_))
    ));
    store.set_failing(false);
    assert!(matches!(
        durable.seal(&store, b"x"),
        Err(StoreError::Inconsistent(_))
    ));

    let mut durable = DurableSession::load(&store, &registry, &connection(), 4)
        .unwrap()
        .unwrap();
    assert_eq!(durable.session().send_epoch(), 0);
    let second = durable.seal(&store, b"two").unwrap();
    assert!(second.counter > first.counter);
    assert_eq!(issuer.open(first).unwrap(), b"one");
    assert_eq!(issuer.open(second).unwrap(), b"two");

    // A reservation that cannot be committed means no message at all.
    store.set_failing(true);
    for _ in 0..10 {
        if let Err(error) = durable.seal(&store, b"x") {
            assert!(matches!(error, StoreError::Io(_)));
            let next = durable.session().next_send_counter();
            assert!(next <= durable.reservation().reserved_until);
            return;
        }
    }
    panic!("sealing went past the reservation without committing");
}

#[test]
fn the_one_time_pre_key_goes_in_the_same_transaction_as_the_session() {
    let store = Flaky::new();
    let mut batch = WriteBatch::new();
    batch.put_one_time_pre_key(&OneTimePreKey::new(5, [7; 32]));
    store.commit(batch).unwrap();

    let (_, issuer) = sessions(SessionConfig::default());
    let mut batch = WriteBatch::new();
    batch.delete_one_time_pre_key(5);
    store.set_failing(true);
    assert!(DurableSession::create(&store, issuer, batch.clone(), 16).is_err());
    // Neither happened.
    assert!(store.one_time_pre_key(5).unwrap().is_some());
    assert!(store.session(&connection()).unwrap().is_none());

    store.set_failing(false);
    let (_, issuer) = sessions(SessionConfig::default());
    DurableSession::create(&store, issuer, batch, 16).unwrap();
    // Both happened.
    assert!(store.one_time_pre_key(5).unwrap().is_none());
    assert!(store.session(&connection()).unwrap().is_some());
}

#[test]
fn inconsistent_stores_are_refused_on_load() {
    let store = MemoryStore::new();
    let registry = registry();
    let (holder, _) = sessions(SessionConfig::default());
    let durable = DurableSession::create(&store, holder, WriteBatch::new(), 16).unwrap();
    drop(durable);

    // A reservation of another epoch.
    let mut batch = WriteBatch::new();
    batch.put_reservation(
        &connection(),
        confidant_store::CounterReservation {
            epoch: 3,
            reserved_until: 10,
        },
    );
    store.commit(batch).unwrap();
    assert!(matches!(
        DurableSession::load(&store, &registry, &connection(), 16),
        Err(StoreError::Inconsistent(_))
    ));

    // No reservation at all.
    let mut batch = WriteBatch::new();
    batch.push(confidant_store::WriteOp::Delete {
        table: Table::Counters,
        key: connection().as_bytes().to_vec(),
    });
    store.commit(batch).unwrap();
    assert!(matches!(
        DurableSession::load(&store, &registry, &connection(), 16),
        Err(StoreError::Inconsistent(_))
    ));

    // No session: nothing to load.
    let other = ConnectionId::new("nobody").unwrap();
    assert!(
        DurableSession::load(&store, &registry, &other, 16)
            .unwrap()
            .is_none()
    );
    // A block of zero is refused.
    assert!(DurableSession::load(&store, &registry, &connection(), 0).is_err());
}

#[test]
fn a_staged_batch_blocks_further_changes_until_its_fate_is_known() {
    let store = MemoryStore::new();
    let registry = registry();
    let (mut holder, issuer) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, issuer, WriteBatch::new(), 16).unwrap();
    let first = holder.seal(b"one").unwrap();
    let second = holder.seal(b"two").unwrap();

    let mut pending = WriteBatch::new();
    durable.open_into(first, &mut pending).unwrap();
    // A key update now would store the window with "one" marked as seen
    // before its inbox entry exists.
    assert!(matches!(
        durable.update_sending_key(&store, false),
        Err(StoreError::Inconsistent(_))
    ));
    durable.stage(&mut pending).unwrap();
    // While the staged batch waits, nothing else may change the session:
    // a later commit of the older snapshot would undo it.
    let mut other = WriteBatch::new();
    assert!(matches!(
        durable.open_into(second.clone(), &mut other),
        Err(ReceiveError::Pending)
    ));
    assert!(durable.receive(&store, vec![second.clone()]).is_err());
    assert!(durable.stage(&mut other).is_err());

    store.commit(pending).unwrap();
    durable.committed();
    let results = durable.receive(&store, vec![second]).unwrap();
    assert!(matches!(results[0], Received::Stored(_)));
    durable.update_sending_key(&store, false).unwrap();

    // Reloaded, the session agrees with the inbox.
    let mut durable = DurableSession::load(&store, &registry, &connection(), 16)
        .unwrap()
        .unwrap();
    assert_eq!(store.inbox().unwrap().len(), 2);
    let third = holder.seal(b"three").unwrap();
    assert!(matches!(
        durable.receive(&store, vec![third]).unwrap()[0],
        Received::Stored(_)
    ));
}

#[test]
fn a_failed_group_commit_poisons_the_session() {
    let store = Flaky::new();
    let (mut holder, issuer) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, issuer, WriteBatch::new(), 16).unwrap();
    let mut batch = WriteBatch::new();
    durable
        .open_into(holder.seal(b"one").unwrap(), &mut batch)
        .unwrap();
    durable.stage(&mut batch).unwrap();
    store.set_failing(true);
    assert!(store.commit(batch).is_err());
    durable.commit_failed();
    let mut next = WriteBatch::new();
    assert!(matches!(
        durable.open_into(holder.seal(b"two").unwrap(), &mut next),
        Err(ReceiveError::Poisoned)
    ));
}

#[test]
fn a_reservation_of_another_epoch_is_never_trusted() {
    // Defence in depth: even if the session's epoch and the reservation's
    // differed in memory, sealing reserves in the session's epoch first.
    let store = MemoryStore::new();
    let registry = registry();
    let (holder, mut issuer) = sessions(SessionConfig::default());
    let mut durable = DurableSession::create(&store, holder, WriteBatch::new(), 1000).unwrap();
    let first = durable.seal(&store, b"a").unwrap();
    let update = durable.update_sending_key(&store, false).unwrap();
    let second = durable.seal(&store, b"b").unwrap();
    let reservation = store.reservation(&connection()).unwrap().unwrap();
    assert_eq!(reservation.epoch, 1);
    assert!(second.counter < reservation.reserved_until);
    drop(durable);
    let mut durable = DurableSession::load(&store, &registry, &connection(), 1000)
        .unwrap()
        .unwrap();
    let third = durable.seal(&store, b"c").unwrap();
    assert!(third.counter > second.counter);
    issuer.open(first).unwrap();
    issuer.open_key_update(update).unwrap();
    issuer.open(second).unwrap();
    issuer.open(third).unwrap();
}
