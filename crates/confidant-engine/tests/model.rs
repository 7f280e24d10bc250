//! Two engines through a lossy, duplicating, reordering relay, with random
//! crashes (before or after any commit) and failing commits, checked
//! against a model:
//!
//! - safety, always: no message is stored twice, nothing is stored that
//!   was not sent, the application is told only what the inbox holds, the
//!   engine never writes the store itself, and no (key, nonce) is ever
//!   sealed twice (checked at the cipher);
//! - liveness, once the faults stop and both sides restart: the
//!   connection works again, and every message sent from then on arrives
//!   exactly once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Crash, Sim, reused, small_context};
use proptest::prelude::*;
use std::collections::HashSet;

#[derive(Debug, Clone)]
enum Op {
    /// The relay delivers these of the party's waiting deliveries, in this
    /// order (repeats are copies in one round).
    Deliver { party: usize, picks: Vec<usize> },
    /// Everything waiting, in order.
    DeliverAll { party: usize },
    /// The party's application sends a message.
    Send { party: usize },
    /// The relay loses a delivery.
    Drop { party: usize, pick: usize },
    /// The relay copies a delivery.
    Duplicate { party: usize, pick: usize },
    /// The party dies before (or after) one of its next commits.
    Crash {
        party: usize,
        after: bool,
        ahead: usize,
    },
    /// The party's next commit fails.
    FailCommit { party: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let party = 0usize..2;
    prop_oneof![
        4 => (party.clone(), prop::collection::vec(0usize..6, 1..6))
            .prop_map(|(party, picks)| Op::Deliver { party, picks }),
        3 => party.clone().prop_map(|party| Op::DeliverAll { party }),
        4 => party.clone().prop_map(|party| Op::Send { party }),
        1 => (party.clone(), 0usize..6).prop_map(|(party, pick)| Op::Drop { party, pick }),
        1 => (party.clone(), 0usize..6).prop_map(|(party, pick)| Op::Duplicate { party, pick }),
        1 => (party.clone(), any::<bool>(), 0usize..3)
            .prop_map(|(party, after, ahead)| Op::Crash { party, after, ahead }),
        1 => party.prop_map(|party| Op::FailCommit { party }),
    ]
}

/// Safety: what must hold whatever the relay and the crashes did.
fn assert_safe(sim: &Sim, sent: &[HashSet<Vec<u8>>; 2]) {
    for receiver in 0..2 {
        let stored = sim.stored(receiver);
        let mut seen = HashSet::new();
        for text in &stored {
            assert!(
                seen.insert(text.clone()),
                "{} stored {:?} twice",
                sim.parties[receiver].name,
                String::from_utf8_lossy(text)
            );
            assert!(
                sent[1 - receiver].contains(text) || text.as_slice() == b"greeting",
                "{} stored {:?}, never sent",
                sim.parties[receiver].name,
                String::from_utf8_lossy(text)
            );
        }
        let entries = sim.parties[receiver].store.inbox_entries();
        for told in sim.told(receiver) {
            assert!(entries.contains(&told), "told {told:?}, not in the inbox");
        }
        assert_eq!(sim.parties[receiver].store.engine_commits(), 0);
    }
    assert_eq!(reused(), 0, "a (key, nonce) was sealed twice");
}

/// Cases per run: 48, or `MODEL_CASES` (a long hunt: `MODEL_CASES=40000`).
fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn exactly_once_and_no_nonce_reuse_through_a_hostile_relay_with_crashes(
        ops in prop::collection::vec(op(), 1..48)
    ) {
        let mut sim = Sim::new(small_context);
        // Every text any application tried to send (stored texts must be
        // among them).
        let mut attempted: [HashSet<Vec<u8>>; 2] = [HashSet::new(), HashSet::new()];
        let mut next = 0u32;
        for op in ops {
            match op {
                Op::Deliver { party, picks } => sim.deliver(party, &picks),
                Op::DeliverAll { party } => sim.deliver_all(party),
                Op::Send { party } => {
                    let text = format!("faulty {next} from {party}").into_bytes();
                    next += 1;
                    attempted[party].insert(text.clone());
                    let _ = sim.send(party, &text);
                }
                Op::Drop { party, pick } => sim.drop_delivery(party, pick),
                Op::Duplicate { party, pick } => sim.duplicate(party, pick),
                Op::Crash { party, after, ahead } => {
                    let at = sim.parties[party].commits_seen + ahead;
                    sim.parties[party].crash =
                        Some(if after { Crash::After(at) } else { Crash::Before(at) });
                }
                Op::FailCommit { party } => sim.parties[party].failing_commits = 1,
            }
            assert_safe(&sim, &attempted);
        }

        // The faults stop; both sides restart (a node resends at start what
        // may not have left) and the relay delivers everything.
        for party in 0..2 {
            sim.parties[party].crash = None;
            sim.parties[party].failing_commits = 0;
            sim.kill(party);
        }
        sim.settle();
        // Messages that cannot open make the sides reset: send until the
        // connection works both ways again (bounded).
        let mut working = false;
        for round in 0..10 {
            let mut probes = Vec::new();
            for party in [1, 0] {
                let text = format!("probe {round} from {party}").into_bytes();
                attempted[party].insert(text.clone());
                if matches!(sim.send(party, &text), Some(Ok(()))) {
                    probes.push((1 - party, text));
                }
                sim.settle();
            }
            sim.settle();
            if probes.len() == 2
                && probes.iter().all(|(to, text)| sim.stored(*to).contains(text))
            {
                working = true;
                break;
            }
        }
        assert_safe(&sim, &attempted);
        prop_assert!(working, "the connection did not recover: {:?}", sim.carried);
        prop_assert!(sim.established(0) && sim.established(1));

        // From now on, every message arrives exactly once.
        let mut expected: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for n in 0..6 {
            for party in [0, 1] {
                let text = format!("after {n} from {party}").into_bytes();
                attempted[party].insert(text.clone());
                prop_assert!(matches!(sim.send(party, &text), Some(Ok(()))));
                expected[1 - party].push(text);
            }
        }
        sim.settle();
        for (receiver, expected) in expected.iter().enumerate() {
            let stored = sim.stored(receiver);
            for text in expected {
                prop_assert_eq!(
                    stored.iter().filter(|stored| *stored == text).count(),
                    1,
                    "{:?}",
                    String::from_utf8_lossy(text)
                );
            }
        }
        assert_safe(&sim, &attempted);
    }
}
