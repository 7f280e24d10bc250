//! A panic or a storage failure in one connection leaves every other
//! connection working, and the connection resumes from its stored state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use async_trait::async_trait;
use common::{connect, start_on, start_with, wait_until};
use confidant_actors::{
    Delivery, DeliveryId, MemoryRelay, MemoryTransport, NodeConfig, NodeError, Outgoing, Payload,
    RelayInvitation, Transport, TransportError,
};
use confidant_core::wire::{self, envelope::Body};
use confidant_core::{
    Aead, ConnectionId, KeyLengthError, OpenError, SealError, SuiteId, SuiteOf, Tag,
};
use confidant_store::{
    Committed, MemoryStore, RawStore, Record, StoreError, Table, WriteBatch, WriteOp,
};
use std::sync::mpsc;
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

/// A node that offers only the panicky suite.
async fn start_panicky<S: RawStore + 'static>(
    transport: impl Transport,
    store: Arc<S>,
) -> (confidant_actors::Node, common::Collector) {
    let config = NodeConfig::default().with_offered_suites(vec![PANICKY]);
    start_on(transport, store, config, panicky_suites()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_crashes_only_its_connection() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) =
        start_panicky(relay.transport("issuer"), Arc::new(MemoryStore::new())).await;
    let (holder, holder_seen) =
        start_panicky(relay.transport("holder"), Arc::new(MemoryStore::new())).await;
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

/// A store whose next commit that stores a received message waits at a
/// gate until the test opens it: the window in which a round's group
/// commit is on its way to the disk.
struct Gated {
    inner: MemoryStore,
    /// Armed: (tell the test the commit is at the gate, wait for the gate).
    gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl RawStore for Gated {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.inner.get(table, key)
    }
    fn entries(&self, table: Table) -> Result<Vec<Record>, StoreError> {
        self.inner.entries(table)
    }
    fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        let stores_a_message = batch
            .ops()
            .iter()
            .any(|op| matches!(op, WriteOp::AppendInbox { .. }));
        if stores_a_message {
            let gate = self.gate.lock().unwrap().take();
            if let Some((at_gate, open)) = gate {
                at_gate.send(()).unwrap();
                // Bounded: a test that never opens the gate fails, not hangs.
                open.recv_timeout(WAIT).unwrap();
            }
        }
        self.inner.commit(batch)
    }
}

/// A relay that keeps a copy of every message it delivers to one party and
/// can deliver such a copy again.
#[derive(Clone)]
struct Replaying {
    inner: Arc<MemoryTransport>,
    copies: Arc<Mutex<Vec<Copied>>>,
    replays: Arc<Mutex<Vec<Delivery>>>,
}

/// A message envelope the relay delivered, and its connection.
type Copied = (ConnectionId, Vec<u8>);

/// Ids of replayed deliveries (the relay below never issued them).
const REPLAYED: u64 = 1 << 62;

impl Replaying {
    fn replay_last(&self) {
        let (connection_id, envelope) = self.copies.lock().unwrap().last().cloned().unwrap();
        let mut replays = self.replays.lock().unwrap();
        let id = DeliveryId(REPLAYED + replays.len() as u64);
        replays.push(Delivery {
            id,
            connection_id,
            payload: Payload::Envelope(envelope),
        });
    }
}

#[async_trait]
impl Transport for Replaying {
    async fn create_invitation(&self) -> Result<RelayInvitation, TransportError> {
        self.inner.create_invitation().await
    }
    async fn join(&self, token: &str) -> Result<ConnectionId, TransportError> {
        self.inner.join(token).await
    }
    async fn send(&self, envelopes: Vec<Outgoing>) -> Result<(), TransportError> {
        self.inner.send(envelopes).await
    }
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError> {
        {
            let mut replays = self.replays.lock().unwrap();
            if !replays.is_empty() {
                return Ok(replays.drain(..).collect());
            }
        }
        let deliveries = self.inner.receive(max).await?;
        let mut copies = self.copies.lock().unwrap();
        for delivery in &deliveries {
            if let Payload::Envelope(envelope) = &delivery.payload
                && matches!(
                    wire::decode_envelope(envelope, wire::DEFAULT_MAX_ENVELOPE_LEN),
                    Ok(Body::Message(_))
                )
            {
                copies.push((delivery.connection_id.clone(), envelope.clone()));
            }
        }
        Ok(deliveries)
    }
    async fn acknowledge(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        let real = ids.into_iter().filter(|id| id.0 < REPLAYED).collect();
        self.inner.acknowledge(real).await
    }
    async fn release(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        let real = ids.into_iter().filter(|id| id.0 < REPLAYED).collect();
        self.inner.release(real).await
    }
}

/// The actor of a connection panics (a plugin's seal) while the round that
/// stored a message for it is still being committed. The connection's next
/// actor must start from what that commit stored: an actor started from
/// the older state would open a relay's replay of the message again (the
/// application would get it twice), and its own commits would race the
/// round's snapshot (which could take a sending counter back).
///
/// The seal panics on a blocking thread, where the first seal reserves a
/// block of counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_its_round_commits_cannot_deliver_a_message_twice() {
    panic_while_a_round_commits(false).await;
}

/// The same, with the seal panicking in the actor itself (counters already
/// reserved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_panics_while_its_round_commits_reloads_after_the_commit() {
    panic_while_a_round_commits(true).await;
}

async fn panic_while_a_round_commits(reserved: bool) {
    let relay = MemoryRelay::new();
    let store = Arc::new(Gated {
        inner: MemoryStore::new(),
        gate: Mutex::new(None),
    });
    let transport = Replaying {
        inner: Arc::new(relay.transport("issuer")),
        copies: Arc::default(),
        replays: Arc::default(),
    };
    let (issuer, issuer_seen) = start_panicky(transport.clone(), Arc::clone(&store)).await;
    let (holder, holder_seen) =
        start_panicky(relay.transport("holder"), Arc::new(MemoryStore::new())).await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    wait_until("the greeting", WAIT, || issuer_seen.texts(&id).len() == 1).await;
    let mut from_issuer = Vec::new();
    if reserved {
        issuer.send(&id, "reserve").await.unwrap();
        from_issuer.push("reserve");
    }

    // The round that stores "once" stops at the gate, mid-commit.
    let (at_gate, at_gate_seen) = mpsc::channel();
    let (open, gate) = mpsc::channel();
    *store.gate.lock().unwrap() = Some((at_gate, gate));
    holder.send(&id, "once").await.unwrap();
    tokio::task::spawn_blocking(move || at_gate_seen.recv_timeout(WAIT))
        .await
        .unwrap()
        .unwrap();

    // Meanwhile the issuer's actor for the connection panics.
    let crashed = issuer.send(&id, "PANIC now").await;
    assert!(matches!(crashed, Err(NodeError::Crashed(_))), "{crashed:?}");
    // The next request starts a new actor for the connection. Give an
    // actor that does not wait for the commit time to load the old state.
    let sender = issuer.clone();
    let next_id = id.clone();
    let next = tokio::spawn(async move { sender.send(&next_id, "after the panic").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    open.send(()).unwrap();
    next.await.unwrap().unwrap();

    // The relay replays the stored message; then a new one follows.
    wait_until("\"once\" delivered", WAIT, || {
        issuer_seen.texts(&id).iter().any(|text| text == "once")
    })
    .await;
    transport.replay_last();
    holder.send(&id, "later").await.unwrap();
    wait_until("\"later\" delivered", WAIT, || {
        issuer_seen.texts(&id).iter().any(|text| text == "later")
    })
    .await;
    // The replay went out in a round before any that follows "later".
    holder.send(&id, "last").await.unwrap();
    wait_until("\"last\" delivered", WAIT, || {
        issuer_seen.texts(&id).iter().any(|text| text == "last")
    })
    .await;
    assert!(transport.replays.lock().unwrap().is_empty());
    let texts = issuer_seen.texts(&id);
    assert_eq!(texts[1..], ["once", "later", "last"], "{texts:?}");
    from_issuer.push("after the panic");
    wait_until("the issuer's message after the panic", WAIT, || {
        holder_seen.texts(&id) == from_issuer
    })
    .await;

    // After a restart the issuer still sends with fresh counters: the
    // holder opens what it sends (a counter taken back by an older
    // snapshot would be refused as a replay).
    issuer.shutdown().await.unwrap();
    let (issuer, _issuer_seen) = start_panicky(relay.transport("issuer"), Arc::clone(&store)).await;
    issuer.send(&id, "after the restart").await.unwrap();
    from_issuer.push("after the restart");
    wait_until("the issuer's message after the restart", WAIT, || {
        holder_seen.texts(&id) == from_issuer
    })
    .await;
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}
