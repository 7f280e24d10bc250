//! The mailbox contract: every test runs on redb (`on_redb::…`) and on
//! PostgreSQL (`on_postgres::…`) through the same code, against
//! `dyn MailboxStore`. Tests of one backend's own machinery (redb's
//! damaged records, PostgreSQL's schema version) are at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_connector::MailboxStore as _;
use confidant_connector::auth::{NONCE_LEN, Verified, now_ms};
use confidant_connector::mailbox::{BatchEntry, Content, MailboxDepth};
use confidant_connector::{Limits, MailboxError, PostgresMailbox, RedbMailbox};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

#[macro_use]
mod common;

use common::{Place, signer};

/// A fresh nonce each call (per test process).
fn verified(party: u8) -> Verified {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).unwrap();
    nonce[0] = NEXT.fetch_add(1, Ordering::Relaxed);
    Verified {
        party: signer(party).public_key(),
        nonce,
        expires_ms: now_ms() + 60_000,
    }
}

fn with_nonce(party: u8, nonce: u8, expires_ms: u64) -> Verified {
    Verified {
        party: signer(party).public_key(),
        nonce: [nonce; NONCE_LEN],
        expires_ms,
    }
}

fn key(party: u8) -> [u8; 32] {
    signer(party).public_key()
}

fn entry(connection: &str, envelope: &[u8], client_id: Option<&[u8]>) -> BatchEntry {
    BatchEntry {
        connection_id: connection.to_owned(),
        envelope: envelope.to_vec(),
        client_id: client_id.map(<[u8]>::to_vec),
    }
}

/// A connection between `creator` and `joiner`.
async fn connect_parties(
    store: &dyn confidant_connector::MailboxStore,
    token: &str,
    creator: u8,
    joiner: u8,
) -> String {
    let now = now_ms();
    store
        .create_tokens(verified(creator), vec![token.into()], now)
        .await
        .unwrap();
    store
        .use_token(verified(joiner), token.into(), format!("c-{token}"), now)
        .await
        .unwrap()
        .connection_id
}

/// A connection between 1 (the token's creator) and 2.
async fn connect(store: &dyn confidant_connector::MailboxStore, token: &str) -> String {
    let now = now_ms();
    store
        .create_tokens(verified(1), vec![token.into()], now)
        .await
        .unwrap();
    store
        .use_token(verified(2), token.into(), format!("c-{token}"), now)
        .await
        .unwrap()
        .connection_id
}

on_both_backends! {
    async fn the_depth_counts_all_mailboxes_and_the_deepest_one(place: Place) {
        let store = place.open(Limits::default()).await;
        assert_eq!(store.depth().await.unwrap(), MailboxDepth { waiting: 0, deepest: 0 });
        // Each join leaves its creator (1 and 3) one notice.
        let to_2 = connect_parties(&*store, "depth-a", 1, 2).await;
        let to_4 = connect_parties(&*store, "depth-b", 3, 4).await;
        let now = now_ms();
        for body in 0..3u8 {
            store.send(verified(1), to_2.clone(), vec![body], None, now).await.unwrap();
        }
        let mut sent_to_4 = Vec::new();
        for body in 0..5u8 {
            let sent = store.send(verified(3), to_4.clone(), vec![body], None, now).await.unwrap();
            sent_to_4.push(sent.id);
        }
        assert_eq!((store.pending(&key(2)).await.unwrap(), store.pending(&key(4)).await.unwrap()), (3, 5));
        assert_eq!(store.depth().await.unwrap(), MailboxDepth { waiting: 10, deepest: 5 });
        // Four of the five acknowledged: the deepest is now 2's.
        assert_eq!(store.acknowledge(verified(4), sent_to_4[..4].to_vec(), now).await.unwrap(), 4);
        assert_eq!(store.depth().await.unwrap(), MailboxDepth { waiting: 6, deepest: 3 });
        // A revocation deletes 2's messages (both ways) and leaves 2 a notice.
        // 1's join notice, of the same connection, goes too.
        store.revoke(verified(1), to_2, now).await.unwrap();
        assert_eq!((store.pending(&key(1)).await.unwrap(), store.pending(&key(2)).await.unwrap()), (0, 1));
        assert_eq!(store.depth().await.unwrap(), MailboxDepth { waiting: 3, deepest: 1 });
    }

    async fn a_token_is_used_once_and_leaves_its_creator_a_notice(place: Place) {
        let store = place.open(Limits::default()).await;
        let now = now_ms();
        store.create_tokens(verified(1), vec!["t1".into()], now).await.unwrap();
        let info = store.token_info("t1").await.unwrap().unwrap();
        assert_eq!((info.creator, info.used), (key(1), false));
        assert_eq!(store.token_info("nope").await.unwrap(), None);
        let own = store.use_token(verified(1), "t1".into(), "c-own".into(), now).await;
        assert!(matches!(own, Err(MailboxError::Invalid(_))), "{own:?}");
        let joined = store.use_token(verified(2), "t1".into(), "c-1".into(), now).await.unwrap();
        assert_eq!(joined.creator, key(1));
        assert_eq!(joined.connection_id, "c-1");
        assert!(store.token_info("t1").await.unwrap().unwrap().used);
        let again = store.use_token(verified(3), "t1".into(), "c-2".into(), now).await;
        assert_eq!(again, Err(MailboxError::TokenUsed));
        let unknown = store.use_token(verified(3), "t9".into(), "c-3".into(), now).await;
        assert_eq!(unknown, Err(MailboxError::UnknownToken));
        let notices = store.messages_after(&key(1), 0, 10, usize::MAX).await.unwrap();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].connection_id, "c-1");
        assert_eq!(
            notices[0].content,
            Content::ConnectionAdded { token: "t1".into(), peer: key(2) }
        );
        assert_eq!(store.pending(&key(1)).await.unwrap(), 1);
    }

    async fn the_same_token_raced_is_used_exactly_once(place: Place) {
        let store = place.open(Limits::default()).await;
        store.create_tokens(verified(1), vec!["race".into()], now_ms()).await.unwrap();
        let attempts = (0..8u8).map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .use_token(verified(10 + index), "race".into(), format!("c-race-{index}"), now_ms())
                    .await
            })
        });
        let results = futures_util::future::join_all(attempts).await;
        let won = results.iter().filter(|result| matches!(result, Ok(Ok(_)))).count();
        let used = results
            .iter()
            .filter(|result| matches!(result, Ok(Err(MailboxError::TokenUsed))))
            .count();
        assert_eq!((won, used), (1, 7), "{results:?}");
        assert_eq!(store.pending(&key(1)).await.unwrap(), 1, "one notice");
    }

    async fn a_join_repeated_by_its_joiner_answers_the_same_connection(place: Place) {
        let store = place.open(Limits::default()).await;
        let now = now_ms();
        store.create_tokens(verified(1), vec!["again".into()], now).await.unwrap();
        let first = store
            .use_token(verified(2), "again".into(), "c-first".into(), now)
            .await
            .unwrap();
        assert_eq!((first.connection_id.as_str(), first.repeated), ("c-first", false));
        // The answer was lost: the joiner asks again (a new request, so a
        // new nonce and a new proposed connection id), on another instance
        // or after a restart.
        let again = store
            .use_token(verified(2), "again".into(), "c-second".into(), now)
            .await
            .unwrap();
        assert_eq!(again.connection_id, "c-first", "the connection of the first join");
        assert_eq!((again.creator, again.repeated), (key(1), true));
        drop(store);
        let reopened = place.open(Limits::default()).await;
        let again = reopened
            .use_token(verified(2), "again".into(), "c-third".into(), now)
            .await
            .unwrap();
        assert_eq!(again.connection_id, "c-first", "kept across a reopen");
        assert_eq!((again.creator, again.repeated), (key(1), true));
        // Nothing new was made: one notice, and no connection "c-second".
        assert_eq!(reopened.pending(&key(1)).await.unwrap(), 1, "one notice");
        let none = reopened
            .send(verified(2), "c-second".into(), b"x".to_vec(), None, now)
            .await;
        assert_eq!(none, Err(MailboxError::UnknownConnection));
        reopened
            .send(verified(2), "c-first".into(), b"hello".to_vec(), None, now)
            .await
            .expect("the first join's connection works");
        // Anyone else is still refused, and so is the creator.
        let other = reopened.use_token(verified(3), "again".into(), "c-3".into(), now).await;
        assert_eq!(other, Err(MailboxError::TokenUsed));
        let creator = reopened.use_token(verified(1), "again".into(), "c-4".into(), now).await;
        assert_eq!(creator, Err(MailboxError::TokenUsed));
        // A replayed nonce is still a replay, whoever sends it.
        let replayed = with_nonce(2, 0xA5, now + 60_000);
        reopened.use_nonce(replayed, now).await.unwrap();
        let replay = reopened.use_token(replayed, "again".into(), "c-5".into(), now).await;
        assert_eq!(replay, Err(MailboxError::NonceReplayed));
    }

    async fn the_same_join_raced_by_its_joiner_makes_one_connection(place: Place) {
        let store = place.open(Limits::default()).await;
        store.create_tokens(verified(1), vec!["twice".into()], now_ms()).await.unwrap();
        let attempts = (0..6u8).map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .use_token(verified(2), "twice".into(), format!("c-twice-{index}"), now_ms())
                    .await
            })
        });
        let results: Vec<_> = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .map(|result| result.unwrap().unwrap())
            .collect();
        let first: Vec<_> = results.iter().filter(|joined| !joined.repeated).collect();
        assert_eq!(first.len(), 1, "{results:?}");
        assert!(
            results.iter().all(|joined| joined.connection_id == first[0].connection_id),
            "{results:?}"
        );
        assert_eq!(store.pending(&key(1)).await.unwrap(), 1, "one notice");
    }

    async fn a_nonce_is_accepted_once_and_a_refusal_still_consumes_it(place: Place) {
        let store = place.open(Limits::default()).await;
        let now = now_ms();
        let nonce = with_nonce(1, 7, now + 60_000);
        store.use_nonce(nonce, now).await.unwrap();
        assert_eq!(store.use_nonce(nonce, now).await, Err(MailboxError::NonceReplayed));
        // Another operation with the same nonce: refused too.
        let tokens = store.create_tokens(nonce, vec!["x".into()], now).await;
        assert_eq!(tokens, Err(MailboxError::NonceReplayed));
        assert_eq!(store.token_info("x").await.unwrap(), None);
        // A send refused for an unknown connection consumes its nonce.
        let refused = with_nonce(1, 8, now + 60_000);
        let unknown = store.send(refused, "c-none".into(), b"m".to_vec(), None, now).await;
        assert_eq!(unknown, Err(MailboxError::UnknownConnection));
        assert_eq!(store.use_nonce(refused, now).await, Err(MailboxError::NonceReplayed));
        // So does an empty envelope.
        let empty = with_nonce(1, 9, now + 60_000);
        let refused = store.send(empty, "c-none".into(), Vec::new(), None, now).await;
        assert!(matches!(refused, Err(MailboxError::Invalid(_))), "{refused:?}");
        assert_eq!(store.use_nonce(empty, now).await, Err(MailboxError::NonceReplayed));
        // The same nonce bytes of another party are another nonce.
        store.use_nonce(with_nonce(2, 7, now + 60_000), now).await.unwrap();
    }

    async fn a_nonce_past_its_window_is_refused(place: Place) {
        let store = place.open(Limits::default()).await;
        let now = now_ms();
        let expires = now + 1_000;
        store.use_nonce(with_nonce(1, 1, expires), now).await.unwrap();
        // The same nonce recorded after its expiry (its signature checked
        // while it was fresh): refused, whether pruned or not.
        let again = store.use_nonce(with_nonce(1, 1, expires), expires + 1).await;
        assert!(
            matches!(again, Err(MailboxError::NonceReplayed | MailboxError::NonceExpired)),
            "{again:?}"
        );
        // A nonce never seen, but past its window at the store's clock.
        let late = store.use_nonce(with_nonce(1, 2, expires), expires + 1).await;
        assert_eq!(late, Err(MailboxError::NonceExpired));
        // A later request prunes; the replay at an earlier clock is still
        // refused.
        store.use_nonce(with_nonce(1, 3, now + 600_000), expires + 10).await.unwrap();
        let replay = store.use_nonce(with_nonce(1, 1, expires), now + 500).await;
        assert!(
            matches!(replay, Err(MailboxError::NonceReplayed | MailboxError::NonceExpired)),
            "{replay:?}"
        );
    }

    async fn a_retried_send_is_stored_once_and_another_body_is_refused(place: Place) {
        let store = place.open(Limits::default()).await;
        let connection = connect(&*store, "retry").await;
        let now = now_ms();
        let first = store
            .send(verified(2), connection.clone(), b"one".to_vec(), Some(b"id-1".to_vec()), now)
            .await
            .unwrap();
        assert!(!first.duplicate);
        assert_eq!(first.recipient, key(1));
        let again = store
            .send(verified(2), connection.clone(), b"one".to_vec(), Some(b"id-1".to_vec()), now)
            .await
            .unwrap();
        assert_eq!((again.id, again.duplicate), (first.id, true));
        let other = store
            .send(verified(2), connection.clone(), b"two".to_vec(), Some(b"id-1".to_vec()), now)
            .await;
        assert_eq!(other, Err(MailboxError::ClientIdReused));
        // The same client id from the other party is its own.
        let back = store
            .send(verified(1), connection.clone(), b"two".to_vec(), Some(b"id-1".to_vec()), now)
            .await
            .unwrap();
        assert!(!back.duplicate);
        assert_eq!(store.pending(&key(1)).await.unwrap(), 2, "notice and one message");
    }

    async fn the_same_client_id_raced_is_stored_exactly_once(place: Place) {
        let store = place.open(Limits::default()).await;
        let connection = connect(&*store, "client-race").await;
        let sends = (0..8).map(|_| {
            let store = Arc::clone(&store);
            let connection = connection.clone();
            tokio::spawn(async move {
                store
                    .send(verified(2), connection, b"same".to_vec(), Some(b"race".to_vec()), now_ms())
                    .await
            })
        });
        let results: Vec<_> = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .map(|joined| joined.unwrap().unwrap())
            .collect();
        assert_eq!(results.iter().filter(|sent| !sent.duplicate).count(), 1, "{results:?}");
        assert!(results.iter().all(|sent| sent.id == results[0].id), "{results:?}");
        assert_eq!(store.pending(&key(1)).await.unwrap(), 2, "notice and one message");
    }

    async fn limits_are_clear_and_only_the_recipient_deletes(place: Place) {
        let store = place
            .open(Limits { max_message_len: 100, max_pending_per_recipient: 3, ..Limits::default() })
            .await;
        let connection = connect(&*store, "limits").await;
        let now = now_ms();
        let large = store.send(verified(2), connection.clone(), vec![0; 101], None, now).await;
        assert_eq!(large, Err(MailboxError::TooLarge { len: 101, limit: 100 }));
        for body in [b"a", b"b"] {
            store.send(verified(2), connection.clone(), body.to_vec(), None, now).await.unwrap();
        }
        let full = store
            .send(verified(2), connection.clone(), b"c".to_vec(), Some(b"full".to_vec()), now)
            .await;
        assert_eq!(full, Err(MailboxError::MailboxFull { limit: 3 }));
        let waiting = store.messages_after(&key(1), 0, 100, usize::MAX).await.unwrap();
        let ids: Vec<u64> = waiting.iter().map(|message| message.id).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
        // The sender cannot delete them; the recipient can, once.
        assert_eq!(store.acknowledge(verified(2), ids.clone(), now).await.unwrap(), 0);
        assert_eq!(store.acknowledge(verified(1), ids.clone(), now).await.unwrap(), 3);
        assert_eq!(store.acknowledge(verified(1), ids, now).await.unwrap(), 0);
        assert_eq!(store.pending(&key(1)).await.unwrap(), 0);
        // The client id refused for a full mailbox was not kept: it works now.
        let sent = store
            .send(verified(2), connection, b"c".to_vec(), Some(b"full".to_vec()), now)
            .await
            .unwrap();
        assert!(!sent.duplicate);
    }

    async fn only_parties_send_and_a_revoked_connection_takes_nothing(place: Place) {
        let store = place.open(Limits::default()).await;
        let connection = connect(&*store, "revoke").await;
        let now = now_ms();
        let stranger = store.send(verified(3), connection.clone(), b"x".to_vec(), None, now).await;
        assert_eq!(stranger, Err(MailboxError::NotAParty));
        let revoke_stranger = store.revoke(verified(3), connection.clone(), now).await;
        assert_eq!(revoke_stranger, Err(MailboxError::NotAParty));
        assert_eq!(
            store.revoke(verified(3), "c-none".into(), now).await,
            Err(MailboxError::UnknownConnection)
        );
        store.send(verified(2), connection.clone(), b"to 1".to_vec(), None, now).await.unwrap();
        store.send(verified(1), connection.clone(), b"to 2".to_vec(), None, now).await.unwrap();
        assert_eq!(store.revoke(verified(2), connection.clone(), now).await.unwrap(), key(1));
        // Revoking again is no error, and leaves no second notice.
        assert_eq!(store.revoke(verified(1), connection.clone(), now).await.unwrap(), key(2));
        let refused = store.send(verified(2), connection.clone(), b"late".to_vec(), None, now).await;
        assert_eq!(refused, Err(MailboxError::Revoked));
        let left = store.messages_after(&key(1), 0, 100, usize::MAX).await.unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].content, Content::ConnectionRevoked);
        assert!(store.messages_after(&key(2), 0, 100, usize::MAX).await.unwrap().is_empty());
        assert_eq!(store.pending(&key(1)).await.unwrap(), 1);
        assert_eq!(store.pending(&key(2)).await.unwrap(), 0);
    }

    async fn pages_follow_the_cursor_the_count_and_the_byte_cap(place: Place) {
        let store = place.open(Limits::default()).await;
        let connection = connect(&*store, "pages").await;
        let now = now_ms();
        for index in 0..5u8 {
            store
                .send(verified(2), connection.clone(), vec![index; 1000], None, now)
                .await
                .unwrap();
        }
        let all = store.messages_after(&key(1), 0, 100, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 6);
        let after = store.messages_after(&key(1), all[2].id, 100, usize::MAX).await.unwrap();
        assert_eq!(after, all[3..]);
        assert_eq!(store.messages_after(&key(1), 0, 2, usize::MAX).await.unwrap(), all[..2]);
        // Two envelopes' worth of bytes: the notice and the first two fit,
        // the third does not.
        let cap = all[..3].iter().map(|message| message.wire_len()).sum::<usize>();
        assert_eq!(store.messages_after(&key(1), 0, 100, cap).await.unwrap(), all[..3]);
        assert_eq!(store.messages_after(&key(1), 0, 100, cap - 1).await.unwrap(), all[..2]);
        // A page always holds one message, however large.
        assert_eq!(store.messages_after(&key(1), all[0].id, 100, 1).await.unwrap(), all[1..2]);
        assert_eq!(
            all[1].content,
            Content::Envelope(vec![0; 1000])
        );
    }

    async fn stored_messages_and_used_nonces_survive_a_reopen(place: Place) {
        let now = now_ms();
        let nonce = with_nonce(2, 42, now + 60_000);
        let (connection, audience, last) = {
            let store = place.open(Limits::default()).await;
            let connection = connect(&*store, "reopen").await;
            let sent = store.send(nonce, connection.clone(), b"kept".to_vec(), None, now).await.unwrap();
            (connection, store.audience(), sent.id)
        };
        let store = place.open(Limits::default()).await;
        assert_eq!(store.audience(), audience, "the stored audience is kept");
        let waiting = store.messages_after(&key(1), 0, 10, usize::MAX).await.unwrap();
        assert_eq!(waiting.len(), 2, "the join notice and the message");
        assert_eq!(waiting[1].content, Content::Envelope(b"kept".to_vec()));
        let replay = store.send(nonce, connection.clone(), b"again".to_vec(), None, now).await;
        assert_eq!(replay, Err(MailboxError::NonceReplayed));
        let later = store.send(verified(2), connection, b"later".to_vec(), None, now).await.unwrap();
        assert!(later.id > last, "ids keep growing");
    }

    async fn a_batch_is_judged_entry_by_entry_under_one_nonce(place: Place) {
        let store = place
            .open(Limits { max_message_len: 100, max_pending_per_recipient: 5, ..Limits::default() })
            .await;
        let connection = connect(&*store, "batch").await;
        let others = connect_parties(&*store, "batch-others", 1, 3).await;
        let revoked = connect_parties(&*store, "batch-revoked", 1, 2).await;
        store.revoke(verified(1), revoked.clone(), now_ms()).await.unwrap();
        // Party 1 has the notices of "batch" and "batch-others" (the
        // revocation took that of "batch-revoked"): 3 more fit.
        assert_eq!(store.pending(&key(1)).await.unwrap(), 2);
        let nonce = verified(2);
        let outcome = store
            .send_batch(
                nonce,
                vec![
                    entry(&connection, b"first", None),
                    entry("c-none", b"x", None),
                    entry(&others, b"not mine", None),
                    entry(&connection, &[0; 101], None),
                    entry(&connection, b"", None),
                    entry(&revoked, b"late", None),
                    entry(&connection, b"second", Some(b"id-2")),
                    entry(&connection, b"third", None),
                    entry(&connection, b"one too many", Some(b"id-full")),
                ],
                now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(outcome.len(), 9, "{outcome:?}");
        assert_eq!(outcome[1], Err(MailboxError::UnknownConnection));
        assert_eq!(outcome[2], Err(MailboxError::NotAParty));
        assert_eq!(outcome[3], Err(MailboxError::TooLarge { len: 101, limit: 100 }));
        assert!(matches!(outcome[4], Err(MailboxError::Invalid(_))), "{outcome:?}");
        assert_eq!(outcome[5], Err(MailboxError::Revoked));
        assert_eq!(outcome[8], Err(MailboxError::MailboxFull { limit: 5 }));
        let stored: Vec<u64> = [0, 6, 7]
            .iter()
            .map(|&place| {
                let sent = outcome[place].as_ref().unwrap();
                assert_eq!((sent.recipient, sent.duplicate), (key(1), false));
                sent.id
            })
            .collect();
        assert!(stored.windows(2).all(|pair| pair[0] < pair[1]), "ids in order: {stored:?}");
        let waiting = store.messages_after(&key(1), 0, 100, usize::MAX).await.unwrap();
        let bodies: Vec<_> = waiting.iter().map(|message| message.content.clone()).collect();
        assert_eq!(
            bodies[bodies.len() - 3..],
            [b"first".as_slice(), b"second", b"third"].map(|body| Content::Envelope(body.to_vec()))
        );
        assert_eq!(
            waiting[waiting.len() - 3..].iter().map(|message| message.id).collect::<Vec<_>>(),
            stored
        );
        assert_eq!(store.pending(&key(1)).await.unwrap(), 5);
        // The one nonce is used, and a replay of it stores nothing.
        assert_eq!(store.use_nonce(nonce, now_ms()).await, Err(MailboxError::NonceReplayed));
        let replay = store
            .send_batch(nonce, vec![entry(&connection, b"again", None)], now_ms())
            .await;
        assert_eq!(replay, Err(MailboxError::NonceReplayed));
        // The client id refused for a full mailbox was not kept.
        store.acknowledge(verified(1), stored, now_ms()).await.unwrap();
        let later = store
            .send_batch(
                verified(2),
                vec![entry(&connection, b"another body", Some(b"id-full"))],
                now_ms(),
            )
            .await
            .unwrap();
        assert!(matches!(&later[0], Ok(sent) if !sent.duplicate), "{later:?}");
        // A batch whose every entry the store refuses still uses its nonce.
        let refused = verified(2);
        let outcome = store
            .send_batch(refused, vec![entry(&connection, &[1; 101], None)], now_ms())
            .await
            .unwrap();
        assert_eq!(outcome, vec![Err(MailboxError::TooLarge { len: 101, limit: 100 })]);
        assert_eq!(store.use_nonce(refused, now_ms()).await, Err(MailboxError::NonceReplayed));
    }

    async fn a_retried_batch_stores_nothing_new_and_a_reused_client_id_is_refused(place: Place) {
        let store = place.open(Limits::default()).await;
        let connection = connect(&*store, "batch-retry").await;
        let batch = vec![
            entry(&connection, b"one", Some(b"a")),
            entry(&connection, b"two", Some(b"b")),
            // The same id and body again in the batch: a retry of the first.
            entry(&connection, b"one", Some(b"a")),
            entry(&connection, b"three", Some(b"c")),
        ];
        let first = store.send_batch(verified(2), batch.clone(), now_ms()).await.unwrap();
        let first: Vec<_> = first.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            first.iter().map(|sent| sent.duplicate).collect::<Vec<_>>(),
            [false, false, true, false]
        );
        assert_eq!(first[2].id, first[0].id);
        assert!(first[0].id < first[1].id && first[1].id < first[3].id, "{first:?}");
        let pending = store.pending(&key(1)).await.unwrap();
        assert_eq!(pending, 4, "notice and three messages");
        // The whole batch again (a retry with a fresh nonce): the same ids.
        let again = store.send_batch(verified(2), batch, now_ms()).await.unwrap();
        let again: Vec<_> = again.into_iter().map(Result::unwrap).collect();
        assert!(again.iter().all(|sent| sent.duplicate), "{again:?}");
        assert_eq!(
            again.iter().map(|sent| sent.id).collect::<Vec<_>>(),
            first.iter().map(|sent| sent.id).collect::<Vec<_>>()
        );
        assert_eq!(store.pending(&key(1)).await.unwrap(), pending, "nothing new");
        // A client id reused for another body: that entry alone refused,
        // within a batch and across a batch and a single send.
        let mixed = store
            .send_batch(
                verified(2),
                vec![
                    entry(&connection, b"not two", Some(b"b")),
                    entry(&connection, b"four", Some(b"d")),
                    entry(&connection, b"not four", Some(b"d")),
                ],
                now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(mixed[0], Err(MailboxError::ClientIdReused));
        assert!(matches!(&mixed[1], Ok(sent) if !sent.duplicate), "{mixed:?}");
        assert_eq!(mixed[2], Err(MailboxError::ClientIdReused));
        let single = store
            .send(verified(2), connection.clone(), b"four".to_vec(), Some(b"d".to_vec()), now_ms())
            .await
            .unwrap();
        assert_eq!((single.id, single.duplicate), (mixed[1].as_ref().unwrap().id, true));
        let single = store
            .send(verified(2), connection, b"not three".to_vec(), Some(b"c".to_vec()), now_ms())
            .await;
        assert_eq!(single, Err(MailboxError::ClientIdReused));
        assert_eq!(store.pending(&key(1)).await.unwrap(), pending + 1);
    }

    async fn batches_and_single_sends_raced_store_each_client_id_once(place: Place) {
        let store = place.open(Limits::default()).await;
        // Party 1 writes to 2 and 3 on two connections: batches that touch
        // both mailboxes, in both orders, beside single sends of the same
        // client ids. None may wait for another in a circle (PostgreSQL
        // would abort one as a deadlock: a storage error here).
        let to_two = connect_parties(&*store, "race-two", 2, 1).await;
        let to_three = connect_parties(&*store, "race-three", 3, 1).await;
        let ids: Vec<Vec<u8>> = (0..20u8).map(|index| vec![index]).collect();
        let body = |id: &[u8]| [b"body-".as_slice(), id].concat();
        let mut tasks = Vec::new();
        for round in 0..6usize {
            let store = Arc::clone(&store);
            let (to_two, to_three, ids) = (to_two.clone(), to_three.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let mut entries = Vec::new();
                for (index, id) in ids.iter().enumerate() {
                    let connection = if index % 2 == 0 { &to_two } else { &to_three };
                    entries.push(entry(connection, &body(id), Some(id)));
                }
                if round % 2 == 1 {
                    entries.reverse();
                }
                if round < 3 {
                    let outcome = store.send_batch(verified(1), entries, now_ms()).await.unwrap();
                    outcome.into_iter().map(|sent| sent.unwrap().id).collect::<Vec<_>>()
                } else {
                    let mut sent = Vec::new();
                    for entry in entries {
                        let one = store
                            .send(verified(1), entry.connection_id, entry.envelope, entry.client_id, now_ms())
                            .await
                            .unwrap();
                        sent.push(one.id);
                    }
                    sent
                }
            }));
        }
        for task in futures_util::future::join_all(tasks).await {
            assert_eq!(task.unwrap().len(), 20);
        }
        // Each client id stored once: ten messages each, besides a notice.
        assert_eq!(store.pending(&key(2)).await.unwrap(), 11);
        assert_eq!(store.pending(&key(3)).await.unwrap(), 11);
    }

    async fn a_revocation_raced_with_batches_leaves_nothing_on_its_connection(place: Place) {
        let store = place.open(Limits::default()).await;
        let doomed = connect_parties(&*store, "doomed", 2, 1).await;
        let kept = connect_parties(&*store, "kept", 3, 1).await;
        let mut tasks = Vec::new();
        for round in 0..4u8 {
            let store = Arc::clone(&store);
            let (doomed, kept) = (doomed.clone(), kept.clone());
            tasks.push(tokio::spawn(async move {
                let entries = (0..10u8)
                    .map(|index| {
                        let connection = if index % 2 == 0 { &doomed } else { &kept };
                        entry(connection, &[round, index], Some(&[round, index]))
                    })
                    .collect();
                store.send_batch(verified(1), entries, now_ms()).await.unwrap()
            }));
        }
        let revoke = {
            let store = Arc::clone(&store);
            let doomed = doomed.clone();
            tokio::spawn(async move { store.revoke(verified(2), doomed, now_ms()).await })
        };
        for task in futures_util::future::join_all(tasks).await {
            for (index, result) in task.unwrap().into_iter().enumerate() {
                match result {
                    Ok(_) => {}
                    Err(MailboxError::Revoked) if index % 2 == 0 => {}
                    other => panic!("entry {index}: {other:?}"),
                }
            }
        }
        assert_eq!(revoke.await.unwrap().unwrap(), key(1));
        // Nothing of the revoked connection waits for its recipient (2),
        // its sender (1) has the notice, the kept one has everything, and
        // the counts match what waits.
        let for_two = store.messages_after(&key(2), 0, 1000, usize::MAX).await.unwrap();
        assert!(for_two.iter().all(|message| message.connection_id != doomed), "{for_two:?}");
        assert_eq!(store.pending(&key(2)).await.unwrap(), u64::try_from(for_two.len()).unwrap());
        let for_one = store.messages_after(&key(1), 0, 1000, usize::MAX).await.unwrap();
        assert_eq!(for_one.len(), 1, "{for_one:?}");
        assert_eq!(for_one[0].content, Content::ConnectionRevoked);
        assert_eq!(store.pending(&key(1)).await.unwrap(), 1);
        let for_three = store.messages_after(&key(3), 0, 1000, usize::MAX).await.unwrap();
        assert_eq!(for_three.len(), 21, "the notice and twenty messages");
        assert_eq!(store.pending(&key(3)).await.unwrap(), 21);
    }

    async fn an_audience_is_generated_once_and_can_be_pinned(place: Place) {
        let generated = place.open(Limits::default()).await.audience();
        assert!(generated.starts_with("confidant-connector:"), "{generated}");
        let pinned = place
            .open_with_audience(Limits::default(), Some("connector.example".into()))
            .await;
        assert_eq!(pinned.audience(), "connector.example");
        assert!(pinned.healthy().await);
        drop(pinned);
        assert_eq!(place.open(Limits::default()).await.audience(), generated);
    }
}

/// redb: a damaged token record is a storage error, and the writer keeps
/// working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_a_damaged_token_record_is_a_storage_error_and_the_writer_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connector.redb");
    RedbMailbox::open(&path, Limits::default()).unwrap().close();
    {
        let database = redb::Database::create(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("tokens");
            let mut tokens = txn.open_table(table).unwrap();
            tokens
                .insert(b"damaged".as_slice(), key(1).as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let mailbox = RedbMailbox::open(&path, Limits::default()).unwrap();
    let now = now_ms();
    let used = mailbox
        .use_token(verified(2), "damaged".into(), "c-x".into(), now)
        .await;
    assert!(matches!(used, Err(MailboxError::Storage(_))), "{used:?}");
    mailbox
        .create_tokens(verified(1), vec!["fresh".into()], now)
        .await
        .expect("the writer is alive");
}

/// redb: expired nonces are pruned by later transactions, live ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_expired_nonces_are_pruned_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mailbox = RedbMailbox::open(dir.path().join("connector.redb"), Limits::default()).unwrap();
    let now = now_ms();
    mailbox
        .use_nonce(with_nonce(1, 1, now + 10), now)
        .await
        .unwrap();
    mailbox
        .use_nonce(with_nonce(1, 2, now + 60_000), now)
        .await
        .unwrap();
    mailbox
        .use_nonce(with_nonce(1, 3, now + 60_000), now + 20)
        .await
        .unwrap();
    // Only a record with a later expiry (which no real request has for the
    // same nonce) shows the first was pruned.
    assert_eq!(
        mailbox
            .use_nonce(with_nonce(1, 1, now + 60_000), now + 20)
            .await,
        Ok(())
    );
    assert_eq!(
        mailbox
            .use_nonce(with_nonce(1, 1, now + 10), now + 20)
            .await,
        Err(MailboxError::NonceExpired)
    );
    assert_eq!(
        mailbox
            .use_nonce(with_nonce(1, 2, now + 60_000), now + 20)
            .await,
        Err(MailboxError::NonceReplayed)
    );
}

/// PostgreSQL: pruning deletes expired nonces and moves the pruning time,
/// so a pruned nonce is refused as expired, and live ones stay refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pruning_removes_expired_nonces_and_never_readmits_them() {
    let Some(Place::Postgres(schema)) =
        Place::postgres("postgres_pruning_removes_expired_nonces_and_never_readmits_them").await
    else {
        return;
    };
    let store = PostgresMailbox::connect(&schema.url(), Limits::default(), None, 4)
        .await
        .unwrap();
    let now = now_ms();
    store
        .use_nonce(with_nonce(1, 1, now + 10), now)
        .await
        .unwrap();
    store
        .use_nonce(with_nonce(1, 2, now + 60_000), now)
        .await
        .unwrap();
    assert!(store.prune(now + 20).await.unwrap() >= 1);
    assert_eq!(
        store.use_nonce(with_nonce(1, 1, now + 10), now).await,
        Err(MailboxError::NonceExpired),
        "pruned, and refused though the request's clock is early"
    );
    assert_eq!(
        store
            .use_nonce(with_nonce(1, 2, now + 60_000), now + 20)
            .await,
        Err(MailboxError::NonceReplayed)
    );
}

/// PostgreSQL: a database whose schema is newer than this build's is
/// refused with a clear error; an older one is migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_database_from_a_newer_build_is_refused() {
    let Some(Place::Postgres(schema)) =
        Place::postgres("postgres_a_database_from_a_newer_build_is_refused").await
    else {
        return;
    };
    drop(
        PostgresMailbox::connect(&schema.url(), Limits::default(), None, 2)
            .await
            .unwrap(),
    );
    let newer = confidant_connector::mailbox::postgres::SCHEMA_VERSION + 1;
    schema
        .execute(&format!(
            "INSERT INTO confidant_schema_version (version) VALUES ({newer})"
        ))
        .await;
    let refused = PostgresMailbox::connect(&schema.url(), Limits::default(), None, 2)
        .await
        .unwrap_err();
    assert!(matches!(refused, MailboxError::Schema(_)), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains(&format!("version {newer}")) && text.contains("newer"),
        "{text}"
    );
}

/// What a version 2 database (before retryable joins) lacks.
const UNDO_VERSION_3: &str = "DROP FUNCTION confidant_join; \
     ALTER TABLE tokens DROP COLUMN joiner, DROP COLUMN joined_connection; \
     DELETE FROM confidant_schema_version WHERE version = 3";

/// PostgreSQL: a database at schema version 1 (before batches) is migrated
/// to the newest version at start, and batches work on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_version_1_database_is_migrated_to_batches() {
    let Some(Place::Postgres(schema)) =
        Place::postgres("postgres_a_version_1_database_is_migrated_to_batches").await
    else {
        return;
    };
    let store = PostgresMailbox::connect(&schema.url(), Limits::default(), None, 2)
        .await
        .unwrap();
    let connection = connect(&store, "v1").await;
    drop(store);
    // What a version 1 database lacks.
    schema.execute(UNDO_VERSION_3).await;
    schema
        .execute(
            "DROP FUNCTION confidant_send_batch; \
             DELETE FROM confidant_schema_version WHERE version = 2",
        )
        .await;
    let store = PostgresMailbox::connect(&schema.url(), Limits::default(), None, 2)
        .await
        .unwrap();
    let outcome = store
        .send_batch(
            verified(2),
            vec![entry(&connection, b"after the upgrade", None)],
            now_ms(),
        )
        .await
        .unwrap();
    assert!(outcome[0].is_ok(), "{outcome:?}");
}

/// PostgreSQL: a database at schema version 2 is migrated to version 3 at
/// start. A token used before the upgrade has no record of its joiner, so
/// a repeated join with it is refused as before; a token used after it can
/// be joined again by its joiner. The version 2 function older instances
/// call still refuses a repeated join (their answer would name the
/// connection id they proposed, not the stored one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_version_2_database_is_migrated_to_repeatable_joins() {
    let Some(Place::Postgres(schema)) =
        Place::postgres("postgres_a_version_2_database_is_migrated_to_repeatable_joins").await
    else {
        return;
    };
    assert_eq!(confidant_connector::mailbox::postgres::SCHEMA_VERSION, 3);
    let store = PostgresMailbox::connect(&schema.url(), Limits::default(), None, 2)
        .await
        .unwrap();
    let now = now_ms();
    connect(&store, "before").await;
    store
        .create_tokens(verified(1), vec!["after".into()], now)
        .await
        .unwrap();
    drop(store);
    schema.execute(UNDO_VERSION_3).await;
    let store = PostgresMailbox::connect(&schema.url(), Limits::default(), None, 2)
        .await
        .unwrap();
    let before = store
        .use_token(verified(2), "before".into(), "c-retry".into(), now)
        .await;
    assert_eq!(before, Err(MailboxError::TokenUsed));
    let joined = store
        .use_token(verified(2), "after".into(), "c-after".into(), now)
        .await
        .unwrap();
    let again = store
        .use_token(verified(2), "after".into(), "c-other".into(), now)
        .await
        .unwrap();
    assert_eq!(
        (again.connection_id.as_str(), again.repeated),
        (joined.connection_id.as_str(), true)
    );
    // The version 2 function, as an older instance calls it.
    schema
        .execute(&format!(
            "DO $$ DECLARE answer text; BEGIN \
                 SELECT code INTO answer FROM confidant_use_token( \
                     '\\x{party}'::bytea, '\\x{nonce}'::bytea, {expires}, {now}, \
                     'after', 'c-old'); \
                 IF answer <> 'token_used' THEN \
                     RAISE EXCEPTION 'the old function answered %', answer; \
                 END IF; \
             END $$",
            party = hex::encode(key(2)),
            nonce = hex::encode([0x5Au8; NONCE_LEN]),
            expires = now + 60_000,
        ))
        .await;
}
