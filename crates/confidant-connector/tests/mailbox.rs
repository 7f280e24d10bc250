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
use confidant_connector::mailbox::Content;
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
