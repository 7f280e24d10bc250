//! Property tests: thousands of messages in both directions through a
//! network that drops, duplicates and reorders them, with key updates on the
//! way. Checked against an exact model of what the receiver must accept:
//! every message is delivered at most once, every first copy inside the
//! replay window (and in an acceptable epoch) is delivered, no replay is
//! accepted, and no (direction, epoch, counter), hence no (key, IV), is used
//! twice by a sender.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::pair;
use confidant_core::Suite;
use confidant_core::wire::EncryptedMessage;
use confidant_session::{Session, SessionConfig};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A small deterministic generator for the network's choices (splitmix64).
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone)]
enum Packet {
    Message { id: u64, message: EncryptedMessage },
    Update { message: EncryptedMessage },
}

impl Packet {
    fn header(&self) -> &EncryptedMessage {
        match self {
            Packet::Message { message, .. } | Packet::Update { message } => message,
        }
    }
}

/// What the receiver must do, tracked independently of the implementation.
struct Model {
    window: u64,
    max_skip: u32,
    current: u32,
    previous: Option<u32>,
    highest: HashMap<u32, u64>,
    delivered: HashSet<(u32, u64)>,
}

impl Model {
    fn expect_accept(&self, epoch: u32, counter: u64) -> bool {
        if self.delivered.contains(&(epoch, counter)) {
            return false;
        }
        if epoch == self.current || Some(epoch) == self.previous {
            return match self.highest.get(&epoch) {
                Some(&highest) => counter > highest || highest - counter < self.window,
                None => true,
            };
        }
        epoch > self.current && epoch - self.current <= self.max_skip
    }

    fn accept(&mut self, epoch: u32, counter: u64) {
        if epoch > self.current {
            self.previous = Some(self.current);
            self.current = epoch;
        }
        let highest = self.highest.entry(epoch).or_insert(counter);
        *highest = (*highest).max(counter);
        self.delivered.insert((epoch, counter));
    }
}

struct Scenario {
    seed: u64,
    messages: u64,
    drop_percent: u64,
    duplicate_percent: u64,
    max_delay: u64,
    update_every: u64,
}

/// One direction: `sender` seals, the network mangles, `receiver` opens.
fn run_direction(sender: &mut Session, receiver: &mut Session, scenario: &Scenario) {
    let mut choices = Choices(scenario.seed);
    let mut sent = Vec::new();
    let mut used = HashSet::new();
    for id in 0..scenario.messages {
        if scenario.update_every > 0 && id > 0 && id % scenario.update_every == 0 {
            let update = sender.update_sending_key(false).unwrap();
            sent.push(Packet::Update {
                message: update.sealed.unwrap(),
            });
        }
        let message = sender.seal(&id.to_be_bytes()).unwrap();
        sent.push(Packet::Message { id, message });
    }
    for packet in &sent {
        let header = packet.header();
        assert!(
            used.insert((header.epoch, header.counter)),
            "sender reused epoch {} counter {}",
            header.epoch,
            header.counter
        );
    }

    // The network: drop some, duplicate some, and deliver each copy at its
    // send position plus a random delay.
    let mut in_flight: Vec<(u64, u64, Packet)> = Vec::new();
    for (position, packet) in sent.into_iter().enumerate() {
        if choices.percent(scenario.drop_percent) {
            continue;
        }
        let copies = 1
            + u64::from(choices.percent(scenario.duplicate_percent))
            + u64::from(choices.percent(scenario.duplicate_percent / 2));
        for _ in 0..copies {
            let at = position as u64 + choices.below(scenario.max_delay + 1);
            in_flight.push((at, choices.next(), packet.clone()));
        }
    }
    in_flight.sort_by_key(|(at, tie, _)| (*at, *tie));

    let mut model = Model {
        window: u64::from(receiver.config().replay_window),
        max_skip: receiver.config().max_epoch_skip,
        current: 0,
        previous: None,
        highest: HashMap::new(),
        delivered: HashSet::new(),
    };
    let mut delivered_ids = HashSet::new();
    for (_, _, packet) in in_flight {
        let header = packet.header().clone();
        let expected = model.expect_accept(header.epoch, header.counter);
        let accepted = match packet {
            Packet::Message { id, message } => match receiver.open(message) {
                Ok(plaintext) => {
                    assert_eq!(plaintext, id.to_be_bytes());
                    assert!(delivered_ids.insert(id), "message {id} delivered twice");
                    true
                }
                Err(_) => false,
            },
            Packet::Update { message } => receiver
                .open_key_update(confidant_core::wire::KeyUpdate {
                    sealed: Some(message),
                })
                .is_ok(),
        };
        assert_eq!(
            accepted, expected,
            "epoch {} counter {}: accepted {accepted}, model says {expected}",
            header.epoch, header.counter
        );
        if accepted {
            model.accept(header.epoch, header.counter);
        }
    }
}

fn suite(index: usize) -> Arc<dyn Suite> {
    common::suites().swap_remove(index)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn lossy_duplicating_reordering_network(
        suite_index in 0usize..3,
        seed in any::<u64>(),
        messages in 1000u64..3000,
        drop_percent in 0u64..30,
        duplicate_percent in 0u64..40,
        max_delay in prop_oneof![Just(0u64), 1u64..64, 64u64..2500],
        update_every in prop_oneof![Just(0u64), 200u64..1500],
        replay_window in prop_oneof![Just(64u32), Just(1024u32)],
    ) {
        // Keep every previous epoch's key as long as the receiver stays on
        // its successor, so the model's rules are the only ones.
        let config = SessionConfig::default()
            .with_replay_window(replay_window)
            .with_previous_epoch_grace(u64::MAX);
        let (mut holder, mut issuer) = pair(suite(suite_index), config);
        let there = Scenario { seed, messages, drop_percent, duplicate_percent, max_delay, update_every };
        let back = Scenario { seed: seed ^ 0x5555, ..there };
        run_direction(&mut holder, &mut issuer, &there);
        run_direction(&mut issuer, &mut holder, &back);
    }
}
