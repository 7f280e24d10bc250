//! Helpers shared by the runtime's integration tests: nodes on real redb
//! files, and a collector that records (and acknowledges) what a node
//! reports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_actors::{Event, Events, MemoryRelay, Node, NodeConfig};
use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_store::{Durability, RawStore, RedbStore, StoreOptions};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn suites() -> SuiteRegistry {
    let mut suites = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut suites).unwrap();
    confidant_chacha20poly1305::register(&mut suites).unwrap();
    suites
}

pub fn redb(path: &Path, durability: Durability) -> Arc<RedbStore> {
    let options = StoreOptions::new().durability(durability);
    Arc::new(RedbStore::open_or_create(path, options).unwrap())
}

pub async fn start<S: RawStore + 'static>(
    relay: &MemoryRelay,
    party: &str,
    store: Arc<S>,
    config: NodeConfig,
) -> (Node, Collector) {
    start_with(relay, party, store, config, suites()).await
}

pub async fn start_with<S: RawStore + 'static>(
    relay: &MemoryRelay,
    party: &str,
    store: Arc<S>,
    config: NodeConfig,
    suites: SuiteRegistry,
) -> (Node, Collector) {
    start_on(relay.transport(party), store, config, suites).await
}

/// A node over any transport (a hostile one, in the relay tests).
pub async fn start_on<S: RawStore + 'static>(
    transport: impl confidant_actors::Transport,
    store: Arc<S>,
    config: NodeConfig,
    suites: SuiteRegistry,
) -> (Node, Collector) {
    let (node, events) = Node::builder()
        .store(store)
        .suites(suites)
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(transport)
        .config(config)
        .start()
        .await
        .unwrap();
    let collector = Collector::default();
    collector.attach(node.clone(), events);
    (node, collector)
}

/// A node with the post-quantum hybrid as its key agreement.
pub async fn start_hybrid<S: RawStore + 'static>(
    relay: &MemoryRelay,
    party: &str,
    store: Arc<S>,
    config: NodeConfig,
    agreement: confidant_x3dh_mlkem768::X3dhMlKem768,
) -> (Node, Collector) {
    let (node, events) = Node::builder()
        .store(store)
        .suites(suites())
        .hybrid_key_agreement(agreement)
        .transport(relay.transport(party))
        .config(config)
        .start()
        .await
        .unwrap();
    let collector = Collector::default();
    collector.attach(node.clone(), events);
    (node, collector)
}

/// What a node reported, recorded by a background task that acknowledges
/// every message after recording it.
#[derive(Clone, Default)]
pub struct Collector {
    inner: Arc<Mutex<Seen>>,
}

#[derive(Default)]
pub struct Seen {
    /// Messages per connection, in the order reported (replays of an
    /// already seen inbox number are not added again).
    pub messages: HashMap<ConnectionId, Vec<Vec<u8>>>,
    /// Inbox numbers seen (a number reported twice is a replay of the same
    /// stored entry, not a second delivery).
    pub sequences: HashSet<u64>,
    pub replays: usize,
    pub connected: Vec<(ConnectionId, bool)>,
    /// Whether each `Connected` was post-quantum, in the same order.
    pub post_quantum: Vec<bool>,
    pub joined: Vec<ConnectionId>,
    pub failed: Vec<(ConnectionId, confidant_actors::HandshakeFailure)>,
    pub dropped: Vec<ConnectionId>,
}

impl Collector {
    /// Records `events` of `node` (call again after a restart).
    pub fn attach(&self, node: Node, mut events: Events) {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let mut batch = vec![event];
                while batch.len() < 1024 {
                    match events.try_next() {
                        Some(event) => batch.push(event),
                        None => break,
                    }
                }
                let mut numbers = Vec::new();
                {
                    let mut seen = inner.lock().unwrap();
                    for event in batch {
                        match event {
                            Event::Message(message) => {
                                numbers.push(message.sequence);
                                if seen.sequences.insert(message.sequence) {
                                    seen.messages
                                        .entry(message.connection_id.clone())
                                        .or_default()
                                        .push(message.plaintext.to_vec());
                                } else {
                                    seen.replays += 1;
                                }
                            }
                            Event::Connected {
                                connection_id,
                                reset,
                                post_quantum,
                                ..
                            } => {
                                seen.connected.push((connection_id, reset));
                                seen.post_quantum.push(post_quantum);
                            }
                            Event::Joined { connection_id } => seen.joined.push(connection_id),
                            Event::HandshakeFailed {
                                connection_id,
                                error,
                            } => seen.failed.push((connection_id, error)),
                            Event::DeliveryDropped { connection_id, .. } => {
                                seen.dropped.push(connection_id);
                            }
                            _ => {}
                        }
                    }
                }
                // A node being shut down refuses; its successor replays
                // what was not acknowledged.
                let _ = node.acknowledge(&numbers).await;
            }
        });
    }

    pub fn with<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.inner.lock().unwrap())
    }

    pub fn messages(&self, connection: &ConnectionId) -> Vec<Vec<u8>> {
        self.with(|seen| seen.messages.get(connection).cloned().unwrap_or_default())
    }

    pub fn texts(&self, connection: &ConnectionId) -> Vec<String> {
        self.messages(connection)
            .into_iter()
            .map(|bytes| String::from_utf8(bytes).unwrap())
            .collect()
    }

    pub fn connected_count(&self) -> usize {
        self.with(|seen| seen.connected.len())
    }
}

/// Waits (bounded) until `condition` holds.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates `count` connections between `inviter` and `invitee` and waits
/// until both sides report them connected. Returns them in creation order.
pub async fn connect(
    inviter: &Node,
    inviter_seen: &Collector,
    invitee: &Node,
    invitee_seen: &Collector,
    count: usize,
) -> Vec<ConnectionId> {
    let before = (
        inviter_seen.connected_count(),
        invitee_seen.connected_count(),
    );
    let mut connections = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(256) {
        let size = 256.min(count - chunk * 256);
        let invitations =
            futures_util::future::try_join_all((0..size).map(|_| inviter.create_invitation()))
                .await
                .unwrap();
        for invitation in invitations {
            let greeting = format!("greeting {}", connections.len());
            connections.push(
                invitee
                    .accept_invitation(&invitation, greeting)
                    .await
                    .unwrap(),
            );
        }
    }
    let limit = Duration::from_secs(60 + count as u64 / 50);
    wait_until("both sides connected", limit, || {
        inviter_seen.connected_count() >= before.0 + count
            && invitee_seen.connected_count() >= before.1 + count
    })
    .await;
    connections
}
