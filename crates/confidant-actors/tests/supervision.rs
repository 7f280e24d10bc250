//! A panic or a storage failure in one connection leaves every other
//! connection working, and the connection resumes from its stored state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{connect, start_with, wait_until};
use confidant_actors::{MemoryRelay, NodeConfig, NodeError};
use confidant_core::{Aead, KeyLengthError, OpenError, SealError, SuiteId, SuiteOf, Tag};
use confidant_store::{
    Committed, MemoryStore, RawStore, Record, StoreError, Table, WriteBatch, WriteOp,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

const WAIT: Duration = Duration::from_secs(30);

/// AES-256-GCM that panics when asked to seal a plaintext starting with
/// `PANIC`, or to open one whose length is 777: a buggy user plugin.
struct Panicky(confidant_aes_gcm::Aes256Gcm12);

impl Aead for Panicky {
    const NAME: &'static str = "panicky AES-256-GCM";
    const KEY_LEN: usize = confidant_aes_gcm::Aes256Gcm12::KEY_LEN;
    const NONCE_LEN: usize = confidant_aes_gcm::Aes256Gcm12::NONCE_LEN;
    const CONFIDENTIALITY_LIMIT: u64 = confidant_aes_gcm::Aes256Gcm12::CONFIDENTIALITY_LIMIT;
    const INTEGRITY_LIMIT: u64 = confidant_aes_gcm::Aes256Gcm12::INTEGRITY_LIMIT;
    const MAX_PLAINTEXT_LEN: u64 = confidant_aes_gcm::Aes256Gcm12::MAX_PLAINTEXT_LEN;

    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        confidant_aes_gcm::Aes256Gcm12::new(key).map(Self)
    }

    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        assert!(!buffer.starts_with(b"PANIC"), "the plugin's seal panicked");
        self.0
            .seal_in_place_detached(nonce, associated_data, buffer)
    }

    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        assert_ne!(buffer.len(), 777, "the plugin's open panicked");
        self.0
            .open_in_place_detached(nonce, associated_data, buffer, tag)
    }
}

const PANICKY: SuiteId = SuiteId(SuiteId::PRIVATE_USE_START + 77);

fn panicky_suites() -> confidant_core::SuiteRegistry {
    let mut suites = common::suites();
    suites
        .register(Arc::new(SuiteOf::<
            Panicky,
            confidant_chacha20poly1305::BigEndianCounterIv,
        >::new(PANICKY, "panicky")))
        .unwrap();
    suites
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_crashes_only_its_connection() {
    let relay = MemoryRelay::new();
    let config = NodeConfig::default().with_offered_suites(vec![PANICKY]);
    let (issuer, issuer_seen) = start_with(
        &relay,
        "issuer",
        Arc::new(MemoryStore::new()),
        config.clone(),
        panicky_suites(),
    )
    .await;
    let (holder, holder_seen) = start_with(
        &relay,
        "holder",
        Arc::new(MemoryStore::new()),
        config,
        panicky_suites(),
    )
    .await;
    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 3).await;

    // Sealing panics in the holder's actor for connection 1 only.
    let crashed = holder.send(&connections[1], "PANIC please").await;
    assert!(matches!(crashed, Err(NodeError::Crashed(_))), "{crashed:?}");
    for id in [&connections[0], &connections[2]] {
        holder.send(id, "still fine").await.unwrap();
    }
    // The crashed connection restarts from its stored state, with counters
    // above its reservation (a reused counter would be refused as a replay).
    holder.send(&connections[1], "recovered").await.unwrap();
    wait_until("messages after the seal panic", WAIT, || {
        issuer_seen
            .texts(&connections[0])
            .last()
            .map(String::as_str)
            == Some("still fine")
            && issuer_seen
                .texts(&connections[2])
                .last()
                .map(String::as_str)
                == Some("still fine")
            && issuer_seen
                .texts(&connections[1])
                .last()
                .map(String::as_str)
                == Some("recovered")
    })
    .await;

    // Opening panics in the issuer's actor for a 777-byte message: the
    // delivery is retried a few times, then dropped and reported; the
    // connection goes on, and the others never notice.
    // Sent together, so that they usually arrive in one round: the crash
    // must be blamed on the poisonous one only.
    holder
        .send_many(
            &connections[2],
            vec![
                b"before the poison".to_vec(),
                vec![b'x'; 777],
                b"after the poison".to_vec(),
            ],
        )
        .await
        .unwrap();
    holder.send(&connections[0], "unaffected").await.unwrap();
    wait_until("poison message dropped", WAIT, || {
        issuer_seen
            .texts(&connections[2])
            .last()
            .map(String::as_str)
            == Some("after the poison")
            && issuer_seen
                .texts(&connections[0])
                .last()
                .map(String::as_str)
                == Some("unaffected")
    })
    .await;
    let texts = issuer_seen.texts(&connections[2]);
    assert!(texts.iter().all(|text| text.len() != 777));
    let tail: Vec<&str> = texts[texts.len() - 2..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["before the poison", "after the poison"]);
    let dropped = issuer_seen.with(|seen| seen.dropped.clone());
    assert_eq!(dropped, vec![connections[2].clone()]);
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

/// A store whose commits fail while they touch one connection's session.
struct Faulty {
    inner: MemoryStore,
    failing: Mutex<Option<Vec<u8>>>,
}

impl RawStore for Faulty {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.inner.get(table, key)
    }
    fn entries(&self, table: Table) -> Result<Vec<Record>, StoreError> {
        self.inner.entries(table)
    }
    fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        if let Some(failing) = self.failing.lock().unwrap().as_ref() {
            let touches = batch.ops().iter().any(|op| {
                matches!(op, WriteOp::Put { table: Table::Sessions, key, .. } if key == failing)
            });
            if touches {
                return Err(StoreError::Io("disk full (simulated)".into()));
            }
        }
        self.inner.commit(batch)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_commits_fail_does_not_hold_back_the_others() {
    let relay = MemoryRelay::new();
    let store = Arc::new(Faulty {
        inner: MemoryStore::new(),
        failing: Mutex::new(None),
    });
    let (issuer, issuer_seen) = start_with(
        &relay,
        "issuer",
        Arc::clone(&store),
        NodeConfig::default(),
        common::suites(),
    )
    .await;
    let (holder, holder_seen) = start_with(
        &relay,
        "holder",
        Arc::new(MemoryStore::new()),
        NodeConfig::default(),
        common::suites(),
    )
    .await;
    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 5).await;
    wait_until("greetings", WAIT, || {
        connections
            .iter()
            .all(|id| issuer_seen.texts(id).len() == 1)
    })
    .await;
    let sick = connections[3].clone();
    *store.failing.lock().unwrap() = Some(sick.as_bytes().to_vec());

    for round in 0..10 {
        for id in &connections {
            holder.send(id, format!("m{round}")).await.unwrap();
        }
    }
    let expected: Vec<String> = std::iter::once("greeting".to_owned())
        .chain((0..10).map(|round| format!("m{round}")))
        .collect();
    let strip = |texts: Vec<String>| -> Vec<String> {
        texts
            .into_iter()
            .map(|text| {
                if text.starts_with("greeting") {
                    "greeting".to_owned()
                } else {
                    text
                }
            })
            .collect()
    };
    wait_until("the healthy connections deliver", WAIT, || {
        connections
            .iter()
            .filter(|id| **id != sick)
            .all(|id| strip(issuer_seen.texts(id)) == expected)
    })
    .await;
    // The sick one delivers nothing while its commits fail, and its
    // messages wait at the relay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(issuer_seen.texts(&sick).len(), 1);
    assert!(relay.pending("issuer") >= 10);
    // The issuer can still send on every connection meanwhile.
    for id in &connections {
        issuer.send(id, "from the issuer").await.unwrap();
    }

    // The disk recovers: the sick connection reloads its stored state and
    // takes every message exactly once, in order.
    *store.failing.lock().unwrap() = None;
    wait_until("the sick connection delivers", WAIT, || {
        strip(issuer_seen.texts(&sick)) == expected
    })
    .await;
    wait_until("issuer messages delivered", WAIT, || {
        connections
            .iter()
            .all(|id| holder_seen.texts(id) == ["from the issuer"])
    })
    .await;
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}
