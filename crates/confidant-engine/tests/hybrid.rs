//! The engine with the X3DH + ML-KEM-768 hybrid: first contact and resets
//! are post-quantum, the one-time KEM pre-key goes in the commit that
//! stores the session, a replayed initial message finds it gone, a crash
//! anywhere loses nothing, a relay that strips the hybrid is refused, a
//! classical invitee connects only where the inviter allows it, and signed
//! pre-keys rotate with their last-resort KEM pre-keys and a grace period.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    Crash, START_SECONDS, Sim, TestStore, hybrid_context_in, hybrid_context_over, reused,
    small_context, system_random,
};
use confidant_core::wire::{self, envelope::Body};
use confidant_engine::hybrid::{Hybrid, last_resort_id};
use confidant_engine::setup::{self, Rotation};
use confidant_engine::{Event, HandshakeFailure, Item};
use confidant_store::{PreKeyStore, RawStore, Table, WriteBatch, WriteOp};
use confidant_x3dh_mlkem768::{KemPreKey, KemPreKeyKind, X3dhMlKem768};

const INVITER: usize = 0;
const INVITEE: usize = 1;

fn hybrid(store: &TestStore) -> std::sync::Arc<confidant_engine::Context> {
    hybrid_context_in(store, X3dhMlKem768::default())
}

fn hybrid_sim() -> Sim {
    Sim::new_with(hybrid, hybrid)
}

/// The `post_quantum` flag of each `Connected` event a party saw.
fn post_quantum(sim: &Sim, party: usize) -> Vec<bool> {
    sim.parties[party]
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Connected { post_quantum, .. } => Some(*post_quantum),
            _ => None,
        })
        .collect()
}

fn failures(sim: &Sim, party: usize) -> Vec<HandshakeFailure> {
    sim.parties[party]
        .events
        .iter()
        .filter_map(|event| match event {
            Event::HandshakeFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

/// The keys of the agreement-key records starting with `tag`.
fn agreement_keys(store: &TestStore, tag: u8) -> Vec<Vec<u8>> {
    store
        .entries(Table::AgreementKeys)
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.first() == Some(&tag))
        .collect()
}

/// The first of `applied` that puts a record into `table`.
fn first_putting(applied: &[WriteBatch], table: Table) -> &WriteBatch {
    applied
        .iter()
        .find(|batch| {
            batch
                .ops()
                .iter()
                .any(|op| matches!(op, WriteOp::Put { table: t, .. } if *t == table))
        })
        .unwrap_or_else(|| panic!("no commit puts into {table:?}"))
}

fn one_time_key(id: u32) -> Vec<u8> {
    let mut key = vec![b'o'];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The bundles waiting for the invitee, decoded.
fn bundles_for_invitee(sim: &Sim) -> Vec<(usize, wire::PreKeyBundle)> {
    sim.inbox[INVITEE]
        .iter()
        .enumerate()
        .filter_map(|(at, (_, item))| match item {
            Item::Envelope(bytes) => match wire::decode_envelope(bytes, 1 << 16) {
                Ok(Body::Bundle(bundle)) => Some((at, bundle)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn first_contact_is_post_quantum_and_the_one_time_kem_key_goes_with_the_session() {
    let mut sim = hybrid_sim();
    // The inviter takes the join: its bundle carries a one-time KEM
    // pre-key, stored beside the one-time pre-key in the same commit.
    sim.deliver_all(INVITER);
    let bundles = bundles_for_invitee(&sim);
    assert_eq!(bundles.len(), 1, "{:?}", sim.carried);
    let bundle = &bundles[0].1;
    let kem = bundle.kem_pre_key.as_ref().expect("the bundle is hybrid");
    let one_time = bundle
        .one_time_pre_key
        .as_ref()
        .expect("a one-time pre-key");
    assert_eq!(kem.kind, wire::KemPreKeyKind::OneTime as i32);
    assert_eq!(kem.id, one_time.id, "the KEM key is kept under its id");
    let inviter = &sim.parties[INVITER];
    assert_eq!(
        agreement_keys(&inviter.store, b'o'),
        vec![one_time_key(one_time.id)]
    );
    let join_commit = first_putting(&inviter.applied, Table::OneTimePreKeys);
    assert!(join_commit.ops().iter().any(|op| matches!(
        op,
        WriteOp::Put { table: Table::AgreementKeys, key, .. } if *key == one_time_key(one_time.id)
    )));

    sim.connect();
    assert_eq!(post_quantum(&sim, INVITER), vec![true]);
    assert_eq!(post_quantum(&sim, INVITEE), vec![true]);
    // The commit that stored the inviter's session deleted both one-time
    // keys; none is left.
    let inviter = &sim.parties[INVITER];
    let session_commit = first_putting(&inviter.applied, Table::Sessions);
    for (table, key) in [
        (Table::OneTimePreKeys, one_time.id.to_be_bytes().to_vec()),
        (Table::AgreementKeys, one_time_key(one_time.id)),
    ] {
        assert!(
            session_commit.ops().iter().any(|op| matches!(
                op,
                WriteOp::Delete { table: t, key: k } if *t == table && *k == key
            )),
            "{table:?} {key:?} not deleted with the session"
        );
    }
    assert!(agreement_keys(&inviter.store, b'o').is_empty());
    assert!(inviter.store.one_time_pre_key_ids().unwrap().is_empty());

    // Messages both ways under the hybrid session.
    for n in 0..6 {
        for party in [INVITEE, INVITER] {
            let text = format!("m {n} from {party}");
            assert!(matches!(sim.send(party, text.as_bytes()), Some(Ok(()))));
        }
        sim.settle();
    }
    assert_eq!(sim.stored(INVITEE).len(), 6);
    assert_eq!(sim.stored(INVITER).len(), 7);
    assert_eq!(reused(), 0);
}

#[test]
fn a_replayed_hybrid_initial_message_finds_its_one_time_keys_gone() {
    let mut sim = hybrid_sim();
    sim.deliver_all(INVITER);
    sim.deliver_all(INVITEE);
    // The initial message, as the relay saw it.
    let initial = sim.inbox[INVITER]
        .iter()
        .find_map(|(_, item)| match item {
            Item::Envelope(bytes) => Some(bytes.clone()),
            _ => None,
        })
        .expect("the initial message");
    sim.connect();
    // The relay replays it, also after the inviter restarted: its one-time
    // keys are gone, so it is ignored (a second session would be a second
    // `Connected` and a second greeting in the inbox).
    sim.push(INVITER, Item::Envelope(initial.clone()));
    sim.settle();
    sim.kill(INVITER);
    sim.push(INVITER, Item::Envelope(initial));
    sim.settle();
    assert_eq!(post_quantum(&sim, INVITER), vec![true], "a second session");
    let inviter = &sim.parties[INVITER].store;
    assert!(agreement_keys(inviter, b'o').is_empty());
    assert!(inviter.one_time_pre_key_ids().unwrap().is_empty());
    assert_eq!(sim.stored(INVITER), vec![b"greeting".to_vec()]);
}

#[test]
fn a_crash_between_any_two_hybrid_effects_loses_and_repeats_nothing() {
    for party in [INVITER, INVITEE] {
        for index in 0..6 {
            for crash in [Crash::Before(index), Crash::After(index)] {
                let mut sim = hybrid_sim();
                sim.parties[party].crash = Some(crash);
                sim.settle();
                for n in 0..4 {
                    for sender in [INVITEE, INVITER] {
                        let text = format!("m {n} from {sender}");
                        if sim.send(sender, text.as_bytes()).is_none() {
                            let again = sim.send(sender, text.as_bytes());
                            assert!(matches!(again, Some(Ok(()))), "{again:?}");
                        }
                    }
                    sim.settle();
                }
                assert!(
                    sim.established(INVITER) && sim.established(INVITEE),
                    "{} crashing at {crash:?}: not connected",
                    sim.parties[party].name
                );
                // Whatever was cut, the one-time keys of the finished
                // handshake are gone, and nothing was stored twice.
                let inviter = &sim.parties[INVITER].store;
                assert!(
                    agreement_keys(inviter, b'o').is_empty(),
                    "{crash:?}: a one-time KEM pre-key outlived its handshake"
                );
                assert!(inviter.one_time_pre_key_ids().unwrap().is_empty());
                let mut stored = sim.stored(INVITEE);
                let count = stored.len();
                stored.dedup();
                assert_eq!(stored.len(), count, "{crash:?}: a message stored twice");
                assert_eq!(reused(), 0, "{crash:?}: a (key, nonce) sealed twice");
                assert!(post_quantum(&sim, INVITEE).iter().all(|pq| *pq));
                assert!(post_quantum(&sim, INVITER).iter().all(|pq| *pq));
            }
        }
    }
}

#[test]
fn a_reset_under_the_hybrid_is_post_quantum_and_deletes_its_keys() {
    let mut sim = hybrid_sim();
    sim.connect();
    assert!(matches!(sim.reset(INVITEE), Some(Ok(()))));
    sim.settle();
    assert_eq!(post_quantum(&sim, INVITEE), vec![true, true]);
    assert_eq!(post_quantum(&sim, INVITER), vec![true, true]);
    let inviter = &sim.parties[INVITER].store;
    assert!(agreement_keys(inviter, b'o').is_empty());
    assert!(inviter.one_time_pre_key_ids().unwrap().is_empty());
    assert!(matches!(
        sim.send(INVITEE, b"after the reset"),
        Some(Ok(()))
    ));
    sim.settle();
    assert!(sim.stored(INVITER).contains(&b"after the reset".to_vec()));
}

/// The relay takes the KEM part (and the hybrid offer signature) out of
/// every bundle it carries to the invitee.
fn strip_bundles(sim: &mut Sim) {
    for (at, mut bundle) in bundles_for_invitee(sim) {
        bundle.kem_pre_key = None;
        bundle.hybrid_offer_signature = Vec::new();
        sim.inbox[INVITEE][at].1 = Item::Envelope(wire::encode_envelope(Body::Bundle(bundle)));
    }
}

#[test]
fn a_relay_that_strips_the_hybrid_is_refused_by_a_hybrid_invitee() {
    let mut sim = hybrid_sim();
    sim.deliver_all(INVITER);
    strip_bundles(&mut sim);
    sim.deliver_all(INVITEE);
    assert_eq!(
        failures(&sim, INVITEE),
        vec![HandshakeFailure::HybridStripped]
    );
    assert!(!sim.established(INVITEE));
    // Still waiting: the real bundle, when the inviter sends it again
    // (after a restart), connects it, post-quantum.
    sim.kill(INVITER);
    sim.settle();
    assert!(sim.established(INVITER) && sim.established(INVITEE));
    assert_eq!(post_quantum(&sim, INVITEE), vec![true]);
}

#[test]
fn a_classical_invitee_connects_only_where_the_inviter_allows_it() {
    // Refused by default: the inviter requires the hybrid.
    let mut sim = Sim::new_with(hybrid, |_| small_context());
    sim.settle();
    assert!(
        sim.established(INVITEE),
        "the classical invitee sent its initial message"
    );
    assert!(!sim.established(INVITER));
    assert_eq!(
        failures(&sim, INVITER),
        vec![HandshakeFailure::ClassicalRefused]
    );

    // Allowed: a classical session, and both sides say so.
    let mut sim = Sim::new_with(
        |store| hybrid_context_in(store, X3dhMlKem768::default().with_allow_classical(true)),
        |_| small_context(),
    );
    sim.connect();
    assert_eq!(post_quantum(&sim, INVITER), vec![false]);
    assert_eq!(post_quantum(&sim, INVITEE), vec![false]);
    assert!(matches!(sim.send(INVITEE, b"classical"), Some(Ok(()))));
    sim.settle();
    assert!(sim.stored(INVITER).contains(&b"classical".to_vec()));
}

#[test]
fn a_hybrid_invitee_that_does_not_require_it_takes_a_classical_inviter() {
    let mut sim = Sim::new_with(
        |_| small_context(),
        |store| hybrid_context_in(store, X3dhMlKem768::default().with_require_hybrid(false)),
    );
    sim.connect();
    assert_eq!(post_quantum(&sim, INVITEE), vec![false]);
    // By default it does not: a classical bundle looks exactly like a
    // stripped one.
    let mut sim = Sim::new_with(|_| small_context(), hybrid);
    sim.settle();
    assert_eq!(
        failures(&sim, INVITEE),
        vec![HandshakeFailure::HybridStripped]
    );
}

const DAY: u64 = 24 * 3600;

fn rotate(store: &TestStore, at: u64) -> WriteBatch {
    let identity = store.identity().unwrap().unwrap();
    setup::rotate_signed_pre_keys(
        &Hybrid::new(X3dhMlKem768::default()),
        &identity,
        &system_random(),
        store,
        at,
        Rotation::default(),
    )
    .unwrap()
}

use confidant_store::IdentityStore;

#[test]
fn signed_pre_keys_rotate_with_their_kem_keys_and_are_kept_for_the_grace_period() {
    let store = TestStore::default();
    let context = hybrid_context_in(&store, X3dhMlKem768::default());
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![1]);
    let last_resort = |store: &TestStore| -> Vec<u32> {
        confidant_engine::extras::signed(store)
            .unwrap()
            .into_iter()
            .map(|(id, bytes)| {
                let key = KemPreKey::from_storage_bytes(&bytes).unwrap();
                assert_eq!(key.kind(), KemPreKeyKind::LastResort);
                assert_eq!(key.id(), last_resort_id(id));
                id
            })
            .collect()
    };
    assert_eq!(last_resort(&store), vec![1]);
    drop(context);
    // Not due a second before the week is over.
    assert!(rotate(&store, START_SECONDS + 7 * DAY - 1).is_empty());
    // Due: a second key with its KEM key; the first stays.
    store
        .apply(rotate(&store, START_SECONDS + 7 * DAY))
        .unwrap();
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![1, 2]);
    assert_eq!(last_resort(&store), vec![1, 2]);
    let keys = setup::responder_keys(&store).unwrap().unwrap();
    assert_eq!(keys.current_signed_pre_key().id(), 2);
    assert!(keys.signed_pre_key(1).is_some());
    // Nothing more until the next week; the first key goes 30 days after
    // the second was made, and the current one never.
    assert!(rotate(&store, START_SECONDS + 14 * DAY - 1).is_empty());
    store
        .apply(rotate(&store, START_SECONDS + 14 * DAY))
        .unwrap();
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![1, 2, 3]);
    store
        .apply(rotate(&store, START_SECONDS + 37 * DAY))
        .unwrap();
    // 37 days: key 1 (succeeded at day 7) is past its grace; key 2
    // (succeeded at day 14) is not; key 4 was made.
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![2, 3, 4]);
    assert_eq!(last_resort(&store), vec![2, 3, 4]);
    // A clock set far back deletes nothing and makes nothing.
    assert!(rotate(&store, 0).is_empty());
    // A year later (a node that was down): one new key; the older ones
    // are past their grace, but the one advertised until now (4) is kept
    // for its own grace, which starts now.
    store
        .apply(rotate(&store, START_SECONDS + 400 * DAY))
        .unwrap();
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![4, 5]);
    store
        .apply(rotate(&store, START_SECONDS + 430 * DAY))
        .unwrap();
    assert_eq!(store.signed_pre_key_ids().unwrap(), vec![5, 6]);
    assert_eq!(last_resort(&store), vec![5, 6]);
}

#[test]
fn an_initial_message_for_a_rotated_key_is_answered_within_the_grace_period_only() {
    for (after, answered) in [(10 * DAY, true), (40 * DAY, false)] {
        let mut sim = hybrid_sim();
        // The bundle leaves with signed pre-key 1; the invitee answers it.
        sim.deliver_all(INVITER);
        sim.deliver_all(INVITEE);
        // The inviter rotates (a week later) and, `after` days from the
        // start, rotates again, then restarts with the new keys.
        let store = &sim.parties[INVITER].store;
        store.apply(rotate(store, START_SECONDS + 7 * DAY)).unwrap();
        store.apply(rotate(store, START_SECONDS + after)).unwrap();
        let kept = store.signed_pre_key_ids().unwrap().contains(&1);
        assert_eq!(kept, answered);
        sim.parties[INVITER].context = hybrid_context_over(store, X3dhMlKem768::default());
        sim.kill(INVITER);
        sim.deliver_all(INVITER);
        if answered {
            assert!(sim.established(INVITER), "refused within the grace period");
            assert_eq!(post_quantum(&sim, INVITER), vec![true]);
        } else {
            assert!(!sim.established(INVITER), "answered after the grace period");
            assert!(
                matches!(
                    failures(&sim, INVITER).as_slice(),
                    [HandshakeFailure::KeyAgreement(_)]
                ),
                "{:?}",
                failures(&sim, INVITER)
            );
        }
    }
}

#[test]
fn a_node_that_turns_the_hybrid_on_mints_kem_keys_for_its_signed_pre_keys() {
    // A classical node's store: identity and signed pre-key 1, no KEM key.
    let store = TestStore::default();
    let identity = confidant_x3dh::IdentityKeyPair::generate();
    let mut batch = WriteBatch::new();
    batch.put_identity(&identity);
    batch.put_signed_pre_key(&confidant_x3dh::SignedPreKey::generate(&identity, 1));
    store.apply(batch).unwrap();
    let keys = setup::responder_keys(&store).unwrap().unwrap();
    assert!(Hybrid::load(X3dhMlKem768::default(), &store, &keys).is_err());
    // The rotation at the next start gives it one (and its time).
    let batch = rotate(&store, START_SECONDS);
    assert!(!batch.is_empty());
    store.apply(batch).unwrap();
    assert!(Hybrid::load(X3dhMlKem768::default(), &store, &keys).is_ok());
    assert!(rotate(&store, START_SECONDS + 1).is_empty());
}

#[test]
fn a_damaged_stored_kem_key_is_an_error_not_a_panic() {
    let store = TestStore::default();
    let _ = hybrid_context_in(&store, X3dhMlKem768::default());
    let keys = setup::responder_keys(&store).unwrap().unwrap();
    let (id, good) = confidant_engine::extras::signed(&store).unwrap().remove(0);
    for damaged in [
        Vec::new(),
        good[..good.len() - 1].to_vec(),
        {
            let mut bad = good.to_vec();
            bad[0] = 9; // version
            bad
        },
        {
            let mut bad = good.to_vec();
            bad[1] = 7; // kind
            bad
        },
        {
            let mut bad = good.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 1; // signature
            bad
        },
    ] {
        let mut batch = WriteBatch::new();
        confidant_engine::extras::put_signed(&mut batch, id, &damaged);
        store.apply(batch).unwrap();
        assert!(
            Hybrid::load(X3dhMlKem768::default(), &store, &keys).is_err(),
            "{damaged:?} loaded"
        );
    }
}

#[test]
fn the_invitations_promise_refuses_a_stripped_bundle_where_classical_is_allowed() {
    // The invitee would take a classical inviter, but this invitation said
    // the inviter has the hybrid: a stripped bundle is refused, at first
    // contact and at a reset.
    let lenient = |store: &TestStore| {
        hybrid_context_in(store, X3dhMlKem768::default().with_require_hybrid(false))
    };
    let mut sim = Sim::new_with(hybrid, lenient);
    sim.deliver_all(INVITER);
    strip_bundles(&mut sim);
    sim.deliver_all(INVITEE);
    assert_eq!(
        failures(&sim, INVITEE),
        vec![HandshakeFailure::HybridStripped]
    );
    assert!(!sim.established(INVITEE));

    let mut sim = Sim::new_with(hybrid, lenient);
    sim.connect();
    assert!(matches!(sim.reset(INVITEE), Some(Ok(()))));
    sim.deliver_all(INVITER);
    strip_bundles(&mut sim);
    sim.deliver_all(INVITEE);
    assert_eq!(
        failures(&sim, INVITEE),
        vec![HandshakeFailure::HybridStripped]
    );
    // The old session goes on; the real reset bundle, sent again, replaces
    // it with a post-quantum one.
    sim.kill(INVITER);
    sim.settle();
    assert_eq!(post_quantum(&sim, INVITEE), vec![true, true]);
}

#[test]
fn a_bundle_sent_before_the_hybrid_was_turned_on_is_sent_again_with_the_last_resort_kem_key() {
    // A classical inviter: its keys in its store, X3DH as its agreement.
    let classical_over = |store: &TestStore| {
        let identity = confidant_x3dh::IdentityKeyPair::generate();
        let mut batch = WriteBatch::new();
        batch.put_identity(&identity);
        batch.append(
            setup::rotate_signed_pre_keys(
                &confidant_x3dh::X3dh::default(),
                &identity,
                &system_random(),
                store,
                START_SECONDS,
                Rotation::default(),
            )
            .unwrap(),
        );
        store.apply(batch).unwrap();
        let keys = setup::responder_keys(store).unwrap().unwrap();
        let base = small_context();
        std::sync::Arc::new(confidant_engine::Context {
            registry: std::sync::Arc::clone(&base.registry),
            agreement: std::sync::Arc::new(confidant_x3dh::X3dh::default()),
            keys,
            config: base.config.clone(),
            random: std::sync::Arc::clone(&base.random),
        })
    };
    let mut sim = Sim::new_with(classical_over, hybrid);
    // It takes the join and sends a classical bundle, which is lost; its
    // one-time pre-key has no KEM key beside it.
    sim.deliver_all(INVITER);
    let bundles = bundles_for_invitee(&sim);
    assert_eq!(bundles.len(), 1);
    assert!(bundles[0].1.kem_pre_key.is_none());
    sim.drop_delivery(INVITEE, bundles[0].0);
    let store = &sim.parties[INVITER].store;
    assert!(agreement_keys(store, b'o').is_empty());
    // It restarts with the hybrid: the rotation at start gives signed
    // pre-key 1 its last-resort KEM key, and the bundle sent again for the
    // stored one-time pre-key offers that key.
    store.apply(rotate(store, START_SECONDS + 60)).unwrap();
    sim.parties[INVITER].context = hybrid_context_over(store, X3dhMlKem768::default());
    let again = setup::resume(&sim.parties[INVITER].context, store)
        .unwrap()
        .again;
    let [(_, envelope)] = again.as_slice() else {
        panic!("not one step to send again: {again:?}");
    };
    let Ok(Body::Bundle(bundle)) = wire::decode_envelope(envelope, 1 << 16) else {
        panic!("not a bundle");
    };
    let kem = bundle.kem_pre_key.expect("the bundle sent again is hybrid");
    assert_eq!(kem.kind, wire::KemPreKeyKind::LastResort as i32);
    assert_eq!(kem.id, last_resort_id(1));
    sim.kill(INVITER);
    sim.settle();
    let offered: Vec<_> = sim
        .carried
        .iter()
        .filter(|(from, kind)| *from == INVITER && *kind == "bundle")
        .collect();
    assert_eq!(offered.len(), 2, "{:?}", sim.carried);
    assert!(sim.established(INVITER) && sim.established(INVITEE));
    assert_eq!(post_quantum(&sim, INVITEE), vec![true]);
    assert_eq!(post_quantum(&sim, INVITER), vec![true]);
    // The last-resort key serves many handshakes: it stays.
    let store = &sim.parties[INVITER].store;
    assert_eq!(agreement_keys(store, b's').len(), 1);
    assert!(store.one_time_pre_key_ids().unwrap().is_empty());
}
