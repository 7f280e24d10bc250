//! The connection engine alone: every handshake and reset path, crashes
//! between any two effects, refused bundles, replays, failed commits and a
//! damaged session, for both roles. Deterministic and fast: no threads, no
//! files, no clock; every effect is carried out by the test's driver.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Crash, KeyUpdateFault, Sim, reused, small_context};
use confidant_engine::{
    CommitKind, Connection, EngineError, Event, HandshakeFailure, Item, Outbound, Phase, Side,
};
use confidant_store::{RawStore, Table, WriteBatch, WriteOp};
use std::collections::HashSet;
use std::sync::Arc;

const INVITER: usize = 0;
const INVITEE: usize = 1;

/// Sends `count` messages each way, tagged with `tag`; returns what each
/// side sent.
fn exchange(sim: &mut Sim, tag: &str, count: usize) {
    for n in 0..count {
        for party in [INVITEE, INVITER] {
            let text = format!("{tag} {n} from {party}");
            let outcome = sim.send(party, text.as_bytes());
            assert!(matches!(outcome, Some(Ok(()))), "send {text}: {outcome:?}");
        }
        if n % 4 == 3 {
            sim.settle();
        }
    }
    sim.settle();
}

/// Every message a side's send accepted is in the other side's inbox
/// exactly once, and nothing else is (except messages a crash may have
/// cut); the application was told each stored message under its number.
fn assert_exactly_once(sim: &Sim) {
    for receiver in [INVITER, INVITEE] {
        let sender = 1 - receiver;
        let stored = sim.stored(receiver);
        let mut seen = HashSet::new();
        for text in &stored {
            assert!(
                seen.insert(text.clone()),
                "{} stored {:?} twice",
                sim.parties[receiver].name,
                String::from_utf8_lossy(text)
            );
        }
        for text in &sim.sent[sender] {
            assert!(
                seen.contains(text) || sim.maybe_lost.contains(text),
                "{} never stored {:?}",
                sim.parties[receiver].name,
                String::from_utf8_lossy(text)
            );
        }
        for text in &stored {
            assert!(
                sim.sent[sender].contains(text)
                    || sim.maybe_lost.contains(text)
                    || text.as_slice() == b"greeting",
                "{} stored {:?}, which was never sent",
                sim.parties[receiver].name,
                String::from_utf8_lossy(text)
            );
        }
        let entries = sim.parties[receiver].store.inbox_entries();
        for (sequence, text) in sim.told(receiver) {
            assert!(
                entries.contains(&(sequence, text.clone())),
                "{} was told {sequence} = {:?}, which the inbox does not hold",
                sim.parties[receiver].name,
                String::from_utf8_lossy(&text)
            );
        }
        assert_eq!(
            sim.parties[receiver].store.engine_commits(),
            0,
            "the engine wrote the store itself"
        );
    }
    assert_eq!(reused(), 0, "a (key, nonce) was sealed twice");
}

fn connected_events(sim: &Sim, party: usize) -> Vec<bool> {
    sim.parties[party]
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Connected { reset, .. } => Some(*reset),
            _ => None,
        })
        .collect()
}

#[test]
fn first_contact_then_messages_both_ways_with_reservations_and_key_updates() {
    let mut sim = Sim::new(small_context);
    sim.connect();
    // The inviter saw the join, the handshake and the greeting, once each.
    let inviter = &sim.parties[INVITER].events;
    assert!(matches!(inviter[0], Event::Joined { .. }), "{inviter:?}");
    assert!(
        matches!(
            inviter[1],
            Event::Connected {
                side: Side::Inviter,
                reset: false,
                ..
            }
        ),
        "{inviter:?}"
    );
    let told: Vec<_> = sim
        .told(INVITER)
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(told, vec![b"greeting".to_vec()]);
    assert_eq!(connected_events(&sim, INVITEE), vec![false]);
    // The bundle and the initial message each crossed once.
    let kinds: Vec<_> = sim.carried.iter().map(|(_, kind)| *kind).collect();
    assert_eq!(kinds, vec!["bundle", "initial"]);

    // 20 messages each way: reservations every 3 counters, a key update
    // every 12 messages.
    exchange(&mut sim, "m", 20);
    assert_exactly_once(&sim);
    assert_eq!(sim.stored(INVITER).len(), 21);
    assert_eq!(sim.stored(INVITEE).len(), 20);
    // In order.
    let expected: Vec<Vec<u8>> = (0..20)
        .map(|n| format!("m {n} from {INVITER}").into_bytes())
        .collect();
    assert_eq!(sim.stored(INVITEE), expected);
    let updates = sim
        .carried
        .iter()
        .filter(|(_, kind)| *kind == "key update")
        .count();
    assert!(updates >= 2, "no key updates: {:?}", sim.carried);
    // Everything was acknowledged.
    assert!(sim.inbox[INVITER].is_empty() && sim.inbox[INVITEE].is_empty());
    // Idle, with nothing waiting.
    assert!(sim.parties[INVITER].engine.as_ref().unwrap().is_idle());
    assert!(sim.parties[INVITEE].engine.as_ref().unwrap().is_idle());
}

/// The commits a fault-free run makes on each side, for the crash tests.
fn commits_in_a_clean_run() -> [usize; 2] {
    let mut sim = Sim::new(small_context);
    sim.connect();
    exchange(&mut sim, "m", 8);
    [
        sim.parties[INVITER].commits_seen,
        sim.parties[INVITER + 1].commits_seen,
    ]
}

#[test]
fn a_crash_between_any_two_effects_loses_and_repeats_nothing() {
    let commits = commits_in_a_clean_run();
    for party in [INVITER, INVITEE] {
        for index in 0..commits[party] + 2 {
            for crash in [Crash::Before(index), Crash::After(index)] {
                let mut sim = Sim::new(small_context);
                sim.parties[party].crash = Some(crash);
                // The handshake and messages, with the crash somewhere in
                // them; the party comes back when next used.
                sim.settle();
                for n in 0..8 {
                    for sender in [INVITEE, INVITER] {
                        let text = format!("m {n} from {sender}");
                        // A send cut by a crash is tried again, as an
                        // application whose call failed would.
                        if sim.send(sender, text.as_bytes()).is_none() {
                            let again = sim.send(sender, text.as_bytes());
                            assert!(matches!(again, Some(Ok(()))), "{again:?}");
                        }
                    }
                    sim.settle();
                }
                sim.settle();
                assert!(
                    sim.established(INVITER) && sim.established(INVITEE),
                    "{} crashing at {crash:?}: not connected",
                    sim.parties[party].name
                );
                assert_exactly_once(&sim);
                // No reset was needed. (A crash may cost the application
                // the `Connected` event: events other than messages are not
                // stored.)
                for side in [INVITER, INVITEE] {
                    let connected = connected_events(&sim, side);
                    assert!(
                        connected == vec![false] || (side == party && connected.is_empty()),
                        "{crash:?}: {connected:?}"
                    );
                }
                // The greeting once, whatever happened.
                let greetings = sim
                    .stored(INVITER)
                    .iter()
                    .filter(|text| text.as_slice() == b"greeting")
                    .count();
                assert_eq!(greetings, 1, "{crash:?}");
            }
        }
    }
}

#[test]
fn a_bundle_from_another_identity_is_refused_and_the_right_one_still_taken() {
    // Another inviter with the same connection id and token: its bundle is
    // bound to the same handshake but signed by another identity.
    let mut other = Sim::new(small_context);
    other.deliver_all(INVITER);
    let foreign = other.inbox[INVITEE][0].1.clone();

    let mut sim = Sim::new(small_context);
    sim.push(INVITEE, foreign);
    sim.deliver_all(INVITEE);
    let failures: Vec<_> = sim.parties[INVITEE]
        .events
        .iter()
        .filter_map(|event| match event {
            Event::HandshakeFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failures, vec![HandshakeFailure::IdentityMismatch]);
    assert!(!sim.established(INVITEE));
    let record = sim.parties[INVITEE]
        .engine
        .as_ref()
        .unwrap()
        .record()
        .unwrap();
    assert!(matches!(record.phase, Phase::AwaitingBundle { .. }));
    // Refused, acknowledged, and the connection still waits.
    assert!(sim.inbox[INVITEE].is_empty());
    sim.connect();
    exchange(&mut sim, "m", 3);
    assert_exactly_once(&sim);
}

#[test]
fn replayed_messages_are_acknowledged_and_never_stored_twice() {
    let mut sim = Sim::new(small_context);
    sim.connect();
    assert!(matches!(sim.send(INVITEE, b"once"), Some(Ok(()))));
    // The relay delivers it twice in one round, then again in another.
    sim.duplicate(INVITER, 0);
    sim.deliver(INVITER, &[0, 1]);
    assert!(sim.inbox[INVITER].is_empty(), "{:?}", sim.inbox[INVITER]);
    let copy = sim
        .carried
        .iter()
        .rposition(|(_, kind)| *kind == "message")
        .unwrap();
    assert!(copy > 0);
    sim.sent[INVITEE].clear();
    sim.sent[INVITEE].push(b"once".to_vec());
    // A replay after the commit.
    let envelope = sim
        .plaintexts
        .iter()
        .find(|(_, text)| text.as_slice() == b"once")
        .map(|(envelope, _)| envelope.clone())
        .unwrap();
    sim.push(INVITER, Item::Envelope(envelope));
    sim.deliver_all(INVITER);
    assert!(sim.inbox[INVITER].is_empty());
    let told: Vec<_> = sim
        .told(INVITER)
        .into_iter()
        .filter(|(_, text)| text.as_slice() == b"once")
        .collect();
    assert_eq!(told.len(), 1);
    assert_exactly_once(&sim);
}

#[test]
fn a_failed_round_commit_reports_nothing_and_the_delivery_comes_again() {
    let mut sim = Sim::new(small_context);
    sim.connect();
    let before = sim.parties[INVITER].events.len();
    assert!(matches!(
        sim.send(INVITEE, b"after the failure"),
        Some(Ok(()))
    ));
    sim.parties[INVITER].failing_commits = 1;
    sim.deliver_all(INVITER);
    // Not stored, not told, not acknowledged; the engine dropped.
    assert_eq!(sim.parties[INVITER].events.len(), before);
    assert_eq!(sim.inbox[INVITER].len(), 1);
    assert!(
        sim.parties[INVITER].engine.is_none(),
        "a stale engine was kept"
    );
    // The relay delivers it again: taken once.
    sim.settle();
    assert!(sim.stored(INVITER).contains(&b"after the failure".to_vec()));
    assert_exactly_once(&sim);
}

#[test]
fn a_failed_reservation_fails_the_send_and_seals_nothing() {
    let mut sim = Sim::new(small_context);
    sim.connect();
    // The first send after the handshake reserves counters (a step).
    let engine = sim.parties[INVITEE].engine.as_mut().unwrap();
    let effects = engine.send(vec![b"first".to_vec()]);
    assert_eq!(effects.commits.len(), 1);
    assert_eq!(effects.commits[0].kind, CommitKind::Step);
    assert!(effects.send.is_empty(), "sealed before the reservation");
    assert!(effects.outcome.is_none());
    // While the step waits, the connection takes nothing else.
    let busy = engine.send(vec![b"second".to_vec()]);
    assert!(matches!(busy.outcome, Some(Err(EngineError::Busy(_)))));
    let position = engine.send_position();
    // The commit fails: the send fails, nothing sealed left.
    sim.parties[INVITEE].failing_commits = 1;
    let outcome = sim.run(INVITEE, effects);
    assert!(
        matches!(outcome, Some(Err(EngineError::Store(_)))),
        "{outcome:?}"
    );
    assert!(sim.inbox[INVITER].is_empty());
    // The same counter is used for the next message, which was never
    // sealed with it before.
    let engine = sim.parties[INVITEE].engine.as_ref().unwrap();
    assert_eq!(engine.send_position(), position);
    assert!(matches!(sim.send(INVITEE, b"second"), Some(Ok(()))));
    sim.settle();
    assert_eq!(
        sim.stored(INVITER),
        vec![b"greeting".to_vec(), b"second".to_vec()]
    );
    assert_exactly_once(&sim);
}

#[test]
fn a_failed_handshake_commit_is_reported_and_recovered() {
    // The invitee's commit of its new session fails: it reports the
    // failure, keeps waiting, and takes the bundle the inviter sends again
    // when the relay hands the join back.
    let mut sim = Sim::new(small_context);
    sim.deliver_all(INVITER);
    sim.parties[INVITEE].failing_commits = 1;
    sim.deliver_all(INVITEE);
    assert!(sim.parties[INVITEE].events.iter().any(|event| matches!(
        event,
        Event::HandshakeFailed {
            error: HandshakeFailure::Session(_),
            ..
        }
    )));
    assert!(!sim.established(INVITEE));
    assert!(sim.inbox[INVITER].is_empty(), "an initial message left");
    // The inviter sends its bundle again when it restarts.
    sim.kill(INVITER);
    sim.connect();
    exchange(&mut sim, "m", 2);
    assert_exactly_once(&sim);
}

/// Replaces the party's stored session with bytes that do not decode.
fn damage_session(sim: &mut Sim, party: usize) {
    sim.kill(party);
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Put {
        table: Table::Sessions,
        key: sim.id.as_bytes().to_vec(),
        value: zeroize::Zeroizing::new(b"not a session".to_vec()),
    });
    sim.parties[party].store.apply(batch).unwrap();
}

#[test]
fn a_damaged_session_is_replaced_by_a_reset_on_either_side() {
    for damaged in [INVITER, INVITEE] {
        let mut sim = Sim::new(small_context);
        sim.connect();
        exchange(&mut sim, "before", 2);
        damage_session(&mut sim, damaged);
        // Loading asks for a reset; meanwhile sending is refused with a
        // clear error.
        let refused = sim.send(damaged, b"while damaged");
        assert!(
            matches!(&refused, Some(Err(EngineError::Session(reason))) if reason.contains("cannot be read")),
            "{refused:?}"
        );
        sim.settle();
        assert!(sim.established(INVITER) && sim.established(INVITEE));
        assert_eq!(connected_events(&sim, INVITEE), vec![false, true]);
        exchange(&mut sim, "after", 3);
        assert_exactly_once(&sim);
    }
}

#[test]
fn either_side_can_reset_and_messages_flow_under_the_new_session() {
    for asking in [INVITER, INVITEE] {
        let mut sim = Sim::new(small_context);
        sim.connect();
        exchange(&mut sim, "before", 2);
        let outcome = sim.reset(asking);
        assert!(matches!(outcome, Some(Ok(()))), "{outcome:?}");
        sim.settle();
        assert_eq!(connected_events(&sim, INVITEE), vec![false, true]);
        assert_eq!(connected_events(&sim, INVITER), vec![false, true]);
        let record = sim.parties[INVITEE]
            .engine
            .as_ref()
            .unwrap()
            .record()
            .unwrap();
        assert!(!record.reset_requested || record.reset_bundle_key.is_some());
        exchange(&mut sim, "after", 3);
        let record = sim.parties[INVITEE]
            .engine
            .as_ref()
            .unwrap()
            .record()
            .unwrap();
        assert!(
            !record.reset_requested && record.pending_initial.is_none(),
            "the reset is not complete: {record:?}"
        );
        assert_exactly_once(&sim);
    }
}

#[test]
fn a_reset_before_the_handshake_is_refused_clearly() {
    let mut sim = Sim::new(small_context);
    sim.deliver_all(INVITER);
    let p = &mut sim.parties[INVITER];
    let (mut engine, _) =
        Connection::load(Arc::clone(&p.context), &p.store, sim.id.clone()).unwrap();
    let effects = engine.reset();
    assert!(matches!(
        effects.outcome,
        Some(Err(EngineError::NotEstablished(_)))
    ));
    assert!(effects.commits.is_empty() && effects.send.is_empty());
    let effects = engine.send(vec![b"too early".to_vec()]);
    assert!(matches!(
        effects.outcome,
        Some(Err(EngineError::NotEstablished(_)))
    ));
}

#[test]
fn a_lost_initial_message_is_recovered_by_a_reset() {
    let mut sim = Sim::new(small_context);
    sim.deliver_all(INVITER);
    sim.deliver_all(INVITEE);
    assert!(sim.established(INVITEE));
    // The relay loses the initial message.
    sim.drop_delivery(INVITER, 0);
    // The invitee's messages cannot open at the inviter, which after a few
    // asks the invitee for a reset.
    for n in 0..5 {
        let text = format!("lost {n}");
        assert!(matches!(sim.send(INVITEE, text.as_bytes()), Some(Ok(()))));
        sim.maybe_lost.insert(text.into_bytes());
    }
    sim.settle();
    assert!(sim.established(INVITER) && sim.established(INVITEE));
    assert!(
        sim.carried
            .iter()
            .any(|(from, kind)| *from == INVITER && *kind == "reset"),
        "{:?}",
        sim.carried
    );
    exchange(&mut sim, "after", 3);
    assert_exactly_once(&sim);
}

#[test]
fn a_replayed_first_bundle_cannot_wedge_a_reset() {
    let mut sim = Sim::new(small_context);
    sim.deliver_all(INVITER);
    let first_bundle = sim.inbox[INVITEE][0].1.clone();
    sim.connect();
    exchange(&mut sim, "before", 2);
    // The invitee asks for a reset; the relay replays the first contact's
    // bundle before the answer.
    assert!(matches!(sim.reset(INVITEE), Some(Ok(()))));
    sim.push(INVITEE, first_bundle);
    sim.deliver_all(INVITEE);
    assert!(sim.parties[INVITEE].events.iter().any(|event| matches!(
        event,
        Event::HandshakeFailed {
            error: HandshakeFailure::BadSignature(_),
            ..
        }
    )));
    sim.settle();
    assert_eq!(connected_events(&sim, INVITEE), vec![false, true]);
    exchange(&mut sim, "after", 2);
    assert_exactly_once(&sim);
}

#[test]
fn deliveries_wait_inside_the_engine_while_a_step_commits() {
    // A join notice and, behind it in the same round, a message: the
    // message waits for the join's commit, then is taken.
    let mut sim = Sim::new(small_context);
    sim.connect();
    assert!(matches!(sim.send(INVITEE, b"behind"), Some(Ok(()))));
    let redelivered_join = Item::Joined(common::TOKEN.to_owned());
    sim.inbox[INVITER].insert(0, (confidant_engine::DeliveryId(10_000), redelivered_join));
    let p = &mut sim.parties[INVITER];
    let engine = p.engine.as_mut().unwrap();
    let items = sim.inbox[INVITER].clone();
    let effects = engine.deliver(&p.store, items);
    // A redelivered join on an established connection is acknowledged;
    // the message is staged in the round's commit.
    assert!(effects.ack.contains(&confidant_engine::DeliveryId(10_000)));
    let round: Vec<_> = effects
        .commits
        .iter()
        .filter(|commit| commit.kind == CommitKind::Round)
        .collect();
    assert_eq!(round.len(), 1);
    assert_eq!(round[0].acknowledge.len(), 1);
    assert!(
        effects
            .send
            .iter()
            .all(|outbound| matches!(outbound, Outbound::Control(_)))
    );
    sim.run(INVITER, effects);
    assert!(sim.inbox[INVITER].is_empty());
    assert!(sim.stored(INVITER).contains(&b"behind".to_vec()));
    assert_exactly_once(&sim);
}

#[test]
fn a_join_with_an_unknown_token_creates_nothing() {
    let mut sim = Sim::new(small_context);
    sim.inbox[INVITER].clear();
    sim.push(INVITER, Item::Joined("not ours".into()));
    sim.deliver_all(INVITER);
    assert!(sim.inbox[INVITER].is_empty());
    assert!(sim.inbox[INVITEE].is_empty(), "a bundle left");
    assert!(
        sim.parties[INVITER]
            .engine
            .as_ref()
            .unwrap()
            .record()
            .is_none()
    );
    assert!(sim.parties[INVITER].events.is_empty());
    assert!(
        sim.parties[INVITER]
            .store
            .entries(Table::Connections)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_resume_point_saves_the_reservation_and_is_never_trusted_after_a_crash() {
    let mut sim = Sim::new(small_context);
    sim.connect();
    assert!(matches!(sim.send(INVITEE, b"reserves"), Some(Ok(()))));
    let engine = sim.parties[INVITEE].engine.take().unwrap();
    let point = engine.resume_point().expect("idle and established");
    let (epoch, next) = engine.send_position().unwrap();
    assert_eq!((point.epoch, point.next_counter), (epoch, next));
    drop(engine);

    // Woken in the same process: it goes on where it stopped, with no
    // commit before the message.
    let p = &mut sim.parties[INVITEE];
    let (mut engine, effects) = Connection::load_resuming(
        Arc::clone(&p.context),
        &p.store,
        sim.id.clone(),
        Some(point),
    )
    .unwrap();
    assert!(effects.commits.is_empty());
    assert_eq!(engine.send_position(), Some((epoch, next)));
    let effects = engine.send(vec![b"woken".to_vec()]);
    assert!(effects.commits.is_empty(), "a reservation was committed");
    assert!(matches!(effects.outcome, Some(Ok(()))));
    p.engine = Some(engine);
    assert!(matches!(sim.run(INVITEE, effects), Some(Ok(()))));
    sim.sent[INVITEE].push(b"woken".to_vec());

    // After a crash the point is gone: sealing resumes above the durable
    // reservation, past every counter the point allowed.
    let p = &mut sim.parties[INVITEE];
    let (engine, _) = Connection::load(Arc::clone(&p.context), &p.store, sim.id.clone()).unwrap();
    let (_, after_crash) = engine.send_position().unwrap();
    assert_eq!(after_crash, point.reserved_until);
    // A point that no longer matches the store (the reservation moved on)
    // is ignored.
    let stale = confidant_store::SendResume {
        reserved_until: point.reserved_until + 1,
        ..point
    };
    let (engine, _) = Connection::load_resuming(
        Arc::clone(&p.context),
        &p.store,
        sim.id.clone(),
        Some(stale),
    )
    .unwrap();
    assert_eq!(engine.send_position().unwrap().1, point.reserved_until);
    sim.settle();
    assert_exactly_once(&sim);
}

/// A key update whose commit fails, or whose party dies before carrying it
/// out, leaves the store in the old epoch; the next update derives the same
/// new key. Its announcement (counter 0 of the new epoch) must not have
/// been sealed before the commit, or that (key, nonce) is sealed twice.
#[test]
fn a_key_update_announcement_is_sealed_only_once_its_epoch_is_durable() {
    for fault in [KeyUpdateFault::Fail, KeyUpdateFault::CrashBefore] {
        let mut sim = Sim::new(small_context);
        sim.connect();
        sim.parties[INVITEE].key_update_fault = Some(fault);
        // 12 messages per epoch: the fault meets the first update, the
        // sends after it make the next one.
        for n in 0..30 {
            let text = format!("{fault:?} {n}");
            let _ = sim.send(INVITEE, text.as_bytes());
            if n % 5 == 4 {
                sim.settle();
            }
        }
        assert!(
            sim.parties[INVITEE].key_update_fault.is_none(),
            "{fault:?}: no key update was committed"
        );
        sim.settle();
        assert_eq!(reused(), 0, "{fault:?}: a (key, nonce) was sealed twice");
        let updates = sim
            .carried
            .iter()
            .filter(|(from, kind)| *from == INVITEE && *kind == "key update")
            .count();
        assert!(
            updates >= 1,
            "{fault:?}: no key update left: {:?}",
            sim.carried
        );
        // The sending epoch moved on after the fault.
        let (epoch, _) = sim.parties[INVITEE]
            .engine
            .as_ref()
            .unwrap()
            .send_position()
            .unwrap();
        assert!(epoch >= 1, "{fault:?}: still in epoch {epoch}");
        assert_exactly_once(&sim);
    }
}

#[test]
fn a_damaged_connection_record_is_a_clear_error_never_a_panic() {
    let mut sim = Sim::new(small_context);
    sim.connect();
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Put {
        table: Table::Connections,
        key: sim.id.as_bytes().to_vec(),
        value: zeroize::Zeroizing::new(vec![0xFF; 9]),
    });
    let p = &mut sim.parties[INVITER];
    p.store.apply(batch).unwrap();
    let loaded = Connection::load(Arc::clone(&p.context), &p.store, sim.id.clone());
    let Err(error) = loaded else {
        panic!("a damaged record must not load");
    };
    assert!(
        matches!(error, confidant_store::StoreError::Corrupt(_)),
        "{error:?}"
    );
    assert_eq!(p.store.engine_commits(), 0);
}
