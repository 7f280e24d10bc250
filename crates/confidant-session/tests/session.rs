//! Behaviour of an established session: round trips, direction separation,
//! replay refusal, bad input, limits, key update, snapshots.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{connection, pair, registry, suites};
use confidant_core::wire::{EncryptedMessage, KeyUpdate};
use confidant_core::{AgreedSecret, ConnectionId, Role, SuiteId};
use confidant_session::{
    KeyStatus, OpenError, ReplayError, SealError, Session, SessionConfig, SessionSnapshot,
    SnapshotError,
};

fn config() -> SessionConfig {
    SessionConfig::default()
}

#[test]
fn messages_flow_both_ways_in_every_suite() {
    for suite in suites() {
        let (mut holder, mut issuer) = pair(suite.clone(), config());
        for round in 0..50u32 {
            let text = format!("holder {round}").into_bytes();
            let sealed = holder.seal(&text).unwrap();
            assert_eq!(sealed.counter, u64::from(round));
            assert_eq!(sealed.suite, suite.id().0);
            assert_eq!(sealed.connection_id, "conn-test");
            assert_eq!(issuer.open(sealed).unwrap(), text);
            let reply = format!("issuer {round}").into_bytes();
            assert_eq!(
                holder
                    .open(issuer.seal_vec(reply.clone()).unwrap())
                    .unwrap(),
                reply
            );
        }
        // Empty messages are messages too.
        assert_eq!(issuer.open(holder.seal(b"").unwrap()).unwrap(), b"");
    }
}

#[test]
fn the_two_directions_use_different_keys() {
    for suite in suites() {
        let (mut holder, mut issuer) = pair(suite, config());
        let from_holder = holder.seal(b"same plaintext").unwrap();
        let from_issuer = issuer.seal(b"same plaintext").unwrap();
        assert_eq!(from_holder.counter, from_issuer.counter);
        // Same counter, same plaintext, different direction: different bytes.
        assert_ne!(from_holder.content, from_issuer.content);
        // A message reflected back to its sender does not open.
        assert_eq!(
            holder.open(from_holder.clone()),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            issuer.open(from_issuer.clone()),
            Err(OpenError::Authentication)
        );
        assert!(issuer.open(from_holder).is_ok());
        assert!(holder.open(from_issuer).is_ok());
    }
}

#[test]
fn different_secrets_or_connections_do_not_interoperate() {
    let suite = confidant_aes_gcm::aes_256_gcm_sha256_counter();
    let agreed = AgreedSecret::new([1; 32], vec![], None);
    let other = AgreedSecret::new([2; 32], vec![], None);
    let mut holder = Session::new(
        Role::Initiator,
        connection(),
        suite.clone(),
        &agreed,
        config(),
    )
    .unwrap();
    let mut stranger = Session::new(
        Role::Responder,
        connection(),
        suite.clone(),
        &other,
        config(),
    )
    .unwrap();
    assert_eq!(
        stranger.open(holder.seal(b"x").unwrap()),
        Err(OpenError::Authentication)
    );
    // Same secret, other associated data: the binding differs.
    let other_ad = AgreedSecret::new([1; 32], vec![9], None);
    let mut wrong_ad =
        Session::new(Role::Responder, connection(), suite, &other_ad, config()).unwrap();
    assert_eq!(
        wrong_ad.open(holder.seal(b"x").unwrap()),
        Err(OpenError::Authentication)
    );
}

#[test]
fn replays_are_refused_and_reordering_inside_the_window_is_accepted_once() {
    let config = SessionConfig::default().with_replay_window(64);
    let (mut holder, mut issuer) = pair(confidant_aes_gcm::aes_256_gcm_lfsr(), config);
    let sealed: Vec<EncryptedMessage> = (0..200u32)
        .map(|i| holder.seal(&i.to_be_bytes()).unwrap())
        .collect();
    // Deliver 100 first, then 99 down to 37 (inside the 64-wide window).
    assert_eq!(
        issuer.open(sealed[100].clone()).unwrap(),
        100u32.to_be_bytes()
    );
    for i in (37..100).rev() {
        assert_eq!(
            issuer.open(sealed[i].clone()).unwrap(),
            (i as u32).to_be_bytes()
        );
    }
    // 36 is below the window now.
    assert_eq!(
        issuer.open(sealed[36].clone()),
        Err(OpenError::Replay(ReplayError::TooOld {
            counter: 36,
            oldest: 37
        }))
    );
    // Every delivered one is a replay.
    for (counter, message) in sealed.iter().enumerate().take(101).skip(37) {
        assert_eq!(
            issuer.open(message.clone()),
            Err(OpenError::Replay(ReplayError::Duplicate {
                counter: counter as u64
            }))
        );
    }
    // Later ones still arrive.
    for message in &sealed[101..] {
        assert!(issuer.open(message.clone()).is_ok());
    }
}

/// Every refusal leaves the session exactly as it was.
fn assert_refused_without_change(
    session: &mut Session,
    message: EncryptedMessage,
    expected: impl Fn(&OpenError) -> bool,
) {
    let before = session.snapshot();
    let error = session.open(message).unwrap_err();
    assert!(expected(&error), "unexpected error {error:?}");
    assert_eq!(session.snapshot(), before, "state changed after {error:?}");
}

#[test]
fn bad_input_gets_its_own_error_and_changes_nothing() {
    let config = SessionConfig::default().with_max_plaintext_len(1000);
    let suite = confidant_aes_gcm::aes_256_gcm_sha256_counter();
    let (mut holder, mut issuer) = pair(suite.clone(), config);
    let good = holder.seal(b"hello").unwrap();

    let mut wrong_connection = good.clone();
    wrong_connection.connection_id = "conn-other".into();
    assert_refused_without_change(
        &mut issuer,
        wrong_connection,
        |e| matches!(e, OpenError::WrongConnection { got, .. } if got == "conn-other"),
    );

    let mut wrong_suite = good.clone();
    wrong_suite.suite = SuiteId::CHACHA20_POLY1305_COUNTER.0;
    assert_refused_without_change(&mut issuer, wrong_suite, |e| {
        matches!(e, OpenError::WrongSuite { .. })
    });

    for len in [0, 1, 15] {
        let mut truncated = good.clone();
        truncated.content.truncate(len);
        assert_refused_without_change(&mut issuer, truncated, |e| {
            *e == OpenError::Truncated { len }
        });
    }
    let mut oversized = good.clone();
    oversized.content = vec![0; 1000 + 16 + 1];
    assert_refused_without_change(&mut issuer, oversized, |e| {
        *e == OpenError::TooLarge {
            len: 1001,
            max: 1000,
        }
    });

    let mut beyond_limit = good.clone();
    beyond_limit.counter = suite.max_messages_per_key();
    assert_refused_without_change(&mut issuer, beyond_limit, |e| {
        matches!(e, OpenError::CounterOutOfRange { .. })
    });

    let mut far_epoch = good.clone();
    far_epoch.epoch = 1000;
    assert_refused_without_change(&mut issuer, far_epoch, |e| {
        *e == OpenError::UnacceptableEpoch {
            current: 0,
            got: 1000,
        }
    });

    // A plausible next epoch whose tag does not verify changes nothing
    // either: the candidate keys are thrown away.
    let mut next_epoch = good.clone();
    next_epoch.epoch = 1;
    assert_refused_without_change(&mut issuer, next_epoch, |e| *e == OpenError::Authentication);

    let mut other_counter = good.clone();
    other_counter.counter = 1;
    assert_refused_without_change(&mut issuer, other_counter, |e| {
        *e == OpenError::Authentication
    });

    // Sealing too much is refused before anything is consumed.
    assert_eq!(
        holder.seal(&[0; 1001]),
        Err(SealError::TooLong {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(holder.next_send_counter(), 1);

    // After all that, the genuine message still opens.
    assert_eq!(issuer.open(good).unwrap(), b"hello");
}

#[test]
fn a_flipped_bit_anywhere_is_refused() {
    for suite in suites() {
        let (mut holder, mut issuer) = pair(suite, config());
        let good = holder.seal(b"a message of some length").unwrap();
        for bit in 0..good.content.len() * 8 {
            let mut tampered = good.clone();
            tampered.content[bit / 8] ^= 1 << (bit % 8);
            assert_refused_without_change(&mut issuer, tampered, |e| {
                *e == OpenError::Authentication
            });
        }
        for bit in 0..64 {
            let mut tampered = good.clone();
            tampered.counter ^= 1 << bit;
            assert_refused_without_change(&mut issuer, tampered, |_| true);
        }
        for bit in 0..32 {
            let mut tampered = good.clone();
            tampered.epoch ^= 1 << bit;
            assert_refused_without_change(&mut issuer, tampered, |_| true);
            let mut tampered = good.clone();
            tampered.suite ^= 1 << bit;
            assert_refused_without_change(&mut issuer, tampered, |_| true);
        }
        assert!(issuer.open(good).is_ok());
    }
}

#[test]
fn soft_and_hard_limits_drive_key_updates() {
    let config = SessionConfig::default()
        .with_max_messages_per_epoch(8)
        .with_soft_limit_percent(75);
    let (mut holder, mut issuer) = pair(confidant_aes_gcm::aes_256_gcm_sha256_counter(), config);
    assert_eq!(holder.hard_limit(), 8);
    assert_eq!(holder.soft_limit(), 6);
    for i in 0..8u64 {
        let expected = if i < 6 {
            KeyStatus::Fresh
        } else {
            KeyStatus::UpdateRecommended
        };
        assert_eq!(holder.key_status(), expected, "before message {i}");
        issuer.open(holder.seal(b"m").unwrap()).unwrap();
    }
    assert_eq!(holder.key_status(), KeyStatus::UpdateRequired);
    assert_eq!(
        holder.seal(b"one too many"),
        Err(SealError::KeyExhausted { epoch: 0, limit: 8 })
    );
    assert_eq!(holder.next_send_counter(), 8);

    let update = holder.update_sending_key(true).unwrap();
    assert_eq!(holder.send_epoch(), 1);
    // The announcement took counter 0 of the new epoch.
    assert_eq!(holder.next_send_counter(), 1);
    assert_eq!(holder.key_status(), KeyStatus::Fresh);
    let received = issuer.open_key_update(update.clone()).unwrap();
    assert_eq!(received.epoch, 1);
    assert!(received.update_requested);
    assert_eq!(issuer.receive_epoch(), 1);
    // The peer asked us to update too.
    assert_eq!(issuer.key_status(), KeyStatus::UpdateRecommended);
    // A replayed announcement is refused.
    assert!(issuer.open_key_update(update).is_err());
    issuer.open(holder.seal(b"after update").unwrap()).unwrap();

    let answer = issuer.update_sending_key(false).unwrap();
    assert_eq!(issuer.key_status(), KeyStatus::Fresh);
    assert!(!holder.open_key_update(answer).unwrap().update_requested);
    assert_eq!(holder.receive_epoch(), 1);
}

#[test]
fn a_begun_key_update_keeps_counter_0_for_its_announcement_once() {
    let registry = registry();
    let (mut holder, mut issuer) = pair(confidant_aes_gcm::aes_256_gcm_sha256_counter(), config());
    holder.seal(b"epoch 0").unwrap();
    // Nothing begun: nothing to seal.
    assert_eq!(holder.seal_key_update(), Err(SealError::NoKeyUpdateBegun));
    holder.begin_key_update(true).unwrap();
    assert_eq!(holder.send_epoch(), 1);
    // The snapshot a store writes now already counts counter 0 as used.
    let stored = holder.snapshot();
    assert_eq!(holder.next_send_counter(), 1);
    let first = holder.seal(b"epoch 1").unwrap();
    assert_eq!(first.counter, 1);
    let update = holder.seal_key_update().unwrap();
    let sealed = update.sealed.clone().unwrap();
    assert_eq!((sealed.epoch, sealed.counter), (1, 0));
    // Once only.
    assert_eq!(holder.seal_key_update(), Err(SealError::NoKeyUpdateBegun));
    assert!(issuer.open_key_update(update).unwrap().update_requested);
    assert_eq!(issuer.open(first).unwrap(), b"epoch 1");
    // A session restored from the stored snapshot never seals the
    // announcement (its counter 0 may have been used) and goes on above it.
    let mut restored = Session::restore(&stored, &registry).unwrap();
    assert_eq!(restored.seal_key_update(), Err(SealError::NoKeyUpdateBegun));
    assert_eq!(
        (restored.send_epoch(), restored.next_send_counter()),
        (1, 1)
    );
}

#[test]
fn a_key_update_is_not_an_application_message() {
    let (mut holder, mut issuer) = pair(confidant_aes_gcm::aes_256_gcm_sha256_counter(), config());
    let update = holder.update_sending_key(false).unwrap();
    let sealed = update.sealed.clone().unwrap();
    // Presented as an application message, the announcement does not open:
    // the content type is bound into the associated data.
    assert_eq!(issuer.open(sealed), Err(OpenError::Authentication));
    // And an application message cannot pose as an announcement.
    let app = holder.seal(b"hi").unwrap();
    assert_eq!(
        issuer.open_key_update(KeyUpdate { sealed: Some(app) }),
        Err(OpenError::Authentication)
    );
    assert!(issuer.open_key_update(KeyUpdate { sealed: None }).is_err());
    assert!(issuer.open_key_update(update).is_ok());
}

#[test]
fn late_messages_of_the_previous_epoch_open_during_the_grace_period_only() {
    let config = SessionConfig::default().with_previous_epoch_grace(3);
    let (mut holder, mut issuer) = pair(confidant_aes_gcm::aes_256_gcm_lfsr(), config);
    let old: Vec<_> = (0..5).map(|_| holder.seal(b"old").unwrap()).collect();
    let update = holder.update_sending_key(false).unwrap();
    let new: Vec<_> = (0..5).map(|_| holder.seal(b"new").unwrap()).collect();
    // The announcement is lost; a message of the new epoch moves the
    // receiver on by itself.
    drop(update);
    assert_eq!(issuer.open(new[0].clone()).unwrap(), b"new");
    assert_eq!(issuer.receive_epoch(), 1);
    assert_eq!(issuer.open(old[3].clone()).unwrap(), b"old");
    assert_eq!(issuer.open(new[1].clone()).unwrap(), b"new");
    assert_eq!(issuer.open(old[1].clone()).unwrap(), b"old");
    assert_eq!(issuer.open(new[2].clone()).unwrap(), b"new");
    assert_eq!(issuer.open(new[3].clone()).unwrap(), b"new");
    // Four messages of epoch 1 received > grace of 3: epoch 0 is forgotten.
    assert_eq!(
        issuer.open(old[0].clone()),
        Err(OpenError::UnacceptableEpoch { current: 1, got: 0 })
    );
}

#[test]
fn a_receiver_catches_up_over_skipped_epochs() {
    let (mut holder, mut issuer) = pair(
        confidant_chacha20poly1305::chacha20_poly1305_counter(),
        config(),
    );
    for _ in 0..5 {
        holder.update_sending_key(false).unwrap();
    }
    let message = holder.seal(b"epoch five").unwrap();
    assert_eq!(message.epoch, 5);
    assert_eq!(issuer.open(message).unwrap(), b"epoch five");
    assert_eq!(issuer.receive_epoch(), 5);

    // More than max_epoch_skip ahead is refused.
    let limited = SessionConfig::default().with_max_epoch_skip(2);
    let (mut holder, mut issuer) = pair(
        confidant_chacha20poly1305::chacha20_poly1305_counter(),
        limited,
    );
    for _ in 0..3 {
        holder.update_sending_key(false).unwrap();
    }
    assert_eq!(
        issuer.open(holder.seal(b"x").unwrap()),
        Err(OpenError::UnacceptableEpoch { current: 0, got: 3 })
    );
}

#[test]
fn snapshots_round_trip_and_keep_the_replay_window() {
    let registry = registry();
    for suite in suites() {
        let (mut holder, mut issuer) = pair(suite, config());
        let first = holder.seal(b"one").unwrap();
        issuer.open(first.clone()).unwrap();
        holder.update_sending_key(false).unwrap();
        let second = holder.seal(b"two").unwrap();
        issuer.open(second.clone()).unwrap();

        let bytes = issuer.snapshot().to_bytes().unwrap();
        let mut restored =
            Session::restore(&SessionSnapshot::from_bytes(&bytes).unwrap(), &registry).unwrap();
        assert_eq!(restored.snapshot(), issuer.snapshot());
        assert!(restored.open(second).is_err(), "replay after restore");
        assert!(restored.open(first).is_err(), "replay after restore");
        assert_eq!(
            restored.open(holder.seal(b"three").unwrap()).unwrap(),
            b"three"
        );

        let holder_bytes = holder.snapshot().to_bytes().unwrap();
        let mut holder_restored = Session::restore(
            &SessionSnapshot::from_bytes(&holder_bytes).unwrap(),
            &registry,
        )
        .unwrap();
        assert_eq!(
            holder_restored.next_send_counter(),
            holder.next_send_counter()
        );
        assert_eq!(
            restored
                .open(holder_restored.seal(b"four").unwrap())
                .unwrap(),
            b"four"
        );
    }
}

#[test]
fn bad_snapshots_are_refused() {
    let registry = registry();
    let (holder, _) = pair(confidant_aes_gcm::aes_256_gcm_sha256_counter(), config());
    let bytes = holder.snapshot().to_bytes().unwrap();

    assert!(matches!(
        SessionSnapshot::from_bytes(&[]),
        Err(SnapshotError::Malformed(_))
    ));
    let mut other_format = bytes.clone();
    other_format[0] = 9;
    assert_eq!(
        SessionSnapshot::from_bytes(&other_format),
        Err(SnapshotError::UnsupportedFormat {
            found: 9,
            supported: 1
        })
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        SessionSnapshot::from_bytes(&trailing),
        Err(SnapshotError::Malformed(_))
    ));
    for cut in 0..bytes.len() {
        assert!(
            SessionSnapshot::from_bytes(&bytes[..cut]).is_err(),
            "cut {cut}"
        );
    }
    // A suite that is not registered.
    let empty = confidant_core::SuiteRegistry::new();
    assert!(matches!(
        Session::restore(&SessionSnapshot::from_bytes(&bytes).unwrap(), &empty),
        Err(SnapshotError::Session(_))
    ));
    assert!(Session::restore(&SessionSnapshot::from_bytes(&bytes).unwrap(), &registry).is_ok());
}

#[test]
fn advancing_the_send_counter_only_moves_forward() {
    let (mut holder, mut issuer) = pair(confidant_aes_gcm::aes_256_gcm_sha256_counter(), config());
    holder.advance_send_counter(100);
    holder.advance_send_counter(50);
    let message = holder.seal(b"x").unwrap();
    assert_eq!(message.counter, 100);
    assert!(issuer.open(message).is_ok());
}

#[test]
fn debug_output_shows_no_key_material() {
    let (holder, _) = pair(confidant_aes_gcm::aes_256_gcm_sha256_counter(), config());
    let snapshot = holder.snapshot();
    let bytes = snapshot.to_bytes().unwrap();
    let shown = format!("{holder:?} {snapshot:?}");
    assert!(shown.contains("redacted"));
    // No 8-byte run of the snapshot's bytes (which include the keys) shows
    // up in hex in the Debug output.
    for window in bytes.windows(8).skip(40) {
        let hex_run = hex::encode(window);
        assert!(!shown.contains(&hex_run));
    }
    assert!(!shown.contains(&format!("{:?}", &bytes[bytes.len() - 40..bytes.len() - 32])));
}

#[test]
fn invalid_configs_are_refused() {
    let suite = confidant_aes_gcm::aes_256_gcm_sha256_counter();
    let agreed = AgreedSecret::new([0; 32], vec![], None);
    for config in [
        SessionConfig::default().with_replay_window(100),
        SessionConfig::default().with_replay_window(192),
        SessionConfig::default().with_replay_window(1 << 17),
        SessionConfig::default().with_replay_window(0),
        SessionConfig::default().with_max_messages_per_epoch(1),
        SessionConfig::default().with_soft_limit_percent(0),
        SessionConfig::default().with_max_epoch_skip(0),
    ] {
        assert!(
            Session::new(
                Role::Initiator,
                ConnectionId::new("c").unwrap(),
                suite.clone(),
                &agreed,
                config.clone()
            )
            .is_err(),
            "{config:?}"
        );
    }
}

/// RFC 9001 §6.6: failed opens are counted per receiving key; at the
/// suite's integrity limit (lowered to 3 here) the key opens nothing more,
/// not even a genuine message, until the peer moves to a new epoch.
#[test]
fn the_integrity_limit_retires_a_receiving_key() {
    for suite in suites() {
        let limit = 3;
        let (mut holder, mut issuer) =
            pair(suite.clone(), config().with_max_failed_opens_per_key(limit));
        assert_eq!(issuer.failed_open_limit(), limit);
        let genuine = holder.seal(b"genuine").unwrap();
        for n in 0..limit {
            let mut forged = holder.seal(b"to be forged").unwrap();
            if let Some(byte) = forged.content.first_mut() {
                *byte ^= 1;
            }
            assert_eq!(issuer.open(forged), Err(OpenError::Authentication), "{n}");
            // A refused forgery leaves nothing else changed: below the
            // limit, a genuine message still opens.
            assert_eq!(issuer.integrity_limit_reached(), n + 1 == limit);
        }
        assert_eq!(
            issuer.open(genuine),
            Err(OpenError::IntegrityLimit { epoch: 0 }),
            "{}",
            suite.name()
        );
        // The peer's key update (sealed under the next epoch's key, which
        // the limit does not touch) opens, and the new key opens messages.
        let update = holder.update_sending_key(false).unwrap();
        issuer.open_key_update(update).unwrap();
        assert!(!issuer.integrity_limit_reached());
        assert_eq!(
            issuer.open(holder.seal(b"new key").unwrap()).unwrap(),
            b"new key"
        );
    }
    // Without the override, the suite's declared limit applies.
    let (_, issuer) = pair(suites()[0].clone(), config());
    assert_eq!(
        issuer.failed_open_limit(),
        suites()[0].max_failed_opens_per_key()
    );
    assert!(issuer.failed_open_limit() >= 1 << 36);
}
