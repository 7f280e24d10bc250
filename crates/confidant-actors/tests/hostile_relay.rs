//! A relay that attacks the protocol: it re-binds a join to an existing
//! connection id, replays an old bundle into a reset, drops handshake
//! steps, and forges messages. Each test fails on a runtime that trusts the
//! relay for what these attacks touch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use async_trait::async_trait;
use common::{Collector, connect, start_on, suites, wait_until};
use confidant_actors::{
    Delivery, DeliveryId, HandshakeFailure, MemoryRelay, Node, NodeConfig, NodeError, Outgoing,
    Payload, RelayInvitation, Transport, TransportError,
};
use confidant_core::ConnectionId;
use confidant_core::wire::{self, envelope::Body};
use confidant_session::SessionConfig;
use confidant_store::MemoryStore;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
/// Ids of deliveries the hostile relay made up (never passed on).
const FAKE: u64 = 1 << 62;
/// How many unopenable messages in a row make a connection ask for a reset
/// (the runtime's `REFUSALS_BEFORE_RESET`).
const REFUSALS: u32 = 4;

fn kind(envelope: &[u8]) -> Option<Body> {
    wire::decode_envelope(envelope, wire::DEFAULT_MAX_ENVELOPE_LEN).ok()
}

/// What the hostile relay does to one party's traffic.
#[derive(Default)]
struct Plan {
    /// Answer the next join with this connection id.
    join_answer: Option<ConnectionId>,
    /// The first bundle seen per connection; replayed ahead of any later,
    /// different bundle.
    replay_first_bundle: bool,
    first_bundles: HashMap<ConnectionId, Vec<u8>>,
    /// Outgoing initial messages to drop (counted down).
    drop_initials: usize,
    /// Deliveries to put ahead of the next ones.
    injected: VecDeque<Delivery>,
    next_fake: u64,
    /// The highest epoch of the messages passed on.
    highest_epoch: u32,
    /// Key updates this party sent.
    key_updates_sent: usize,
    /// Key updates this party received.
    key_updates_received: usize,
}

/// A party's transport through a hostile relay: the honest in-memory relay
/// underneath, with the plan's attacks on top.
#[derive(Clone)]
struct Hostile {
    inner: Arc<confidant_actors::MemoryTransport>,
    plan: Arc<Mutex<Plan>>,
}

impl Hostile {
    fn new(relay: &MemoryRelay, party: &str) -> Self {
        Self {
            inner: Arc::new(relay.transport(party)),
            plan: Arc::default(),
        }
    }

    fn inject(&self, connection_id: &ConnectionId, envelope: Vec<u8>) {
        let mut plan = self.plan.lock().unwrap();
        plan.next_fake += 1;
        let id = DeliveryId(FAKE + plan.next_fake);
        plan.injected.push_back(Delivery {
            id,
            connection_id: connection_id.clone(),
            payload: Payload::Envelope(envelope),
        });
    }
}

#[async_trait]
impl Transport for Hostile {
    async fn create_invitation(&self) -> Result<RelayInvitation, TransportError> {
        self.inner.create_invitation().await
    }

    async fn join(&self, token: &str) -> Result<ConnectionId, TransportError> {
        let joined = self.inner.join(token).await?;
        Ok(self
            .plan
            .lock()
            .unwrap()
            .join_answer
            .take()
            .unwrap_or(joined))
    }

    async fn send(&self, envelopes: Vec<Outgoing>) -> Result<(), TransportError> {
        let envelopes = {
            let mut plan = self.plan.lock().unwrap();
            envelopes
                .into_iter()
                .filter(|outgoing| {
                    let body = kind(&outgoing.envelope);
                    if matches!(body, Some(Body::KeyUpdate(_))) {
                        plan.key_updates_sent += 1;
                    }
                    let initial = matches!(body, Some(Body::Initial(_)));
                    if initial && plan.drop_initials > 0 {
                        plan.drop_initials -= 1;
                        return false;
                    }
                    true
                })
                .collect()
        };
        self.inner.send(envelopes).await
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError> {
        {
            let mut plan = self.plan.lock().unwrap();
            if !plan.injected.is_empty() {
                let take = plan.injected.len().min(max);
                return Ok(plan.injected.drain(..take).collect());
            }
        }
        let deliveries = self.inner.receive(max).await?;
        let mut plan = self.plan.lock().unwrap();
        let mut out = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            if let Payload::Envelope(envelope) = &delivery.payload {
                match kind(envelope) {
                    Some(Body::Message(message)) => {
                        plan.highest_epoch = plan.highest_epoch.max(message.epoch);
                    }
                    Some(Body::KeyUpdate(_)) => plan.key_updates_received += 1,
                    _ => {}
                }
            }
            if plan.replay_first_bundle
                && let Payload::Envelope(envelope) = &delivery.payload
                && matches!(kind(envelope), Some(Body::Bundle(_)))
            {
                match plan.first_bundles.get(&delivery.connection_id).cloned() {
                    None => {
                        plan.first_bundles
                            .insert(delivery.connection_id.clone(), envelope.clone());
                    }
                    Some(first) if first != *envelope => {
                        // The replay goes just ahead of the fresh bundle.
                        plan.next_fake += 1;
                        out.push(Delivery {
                            id: DeliveryId(FAKE + plan.next_fake),
                            connection_id: delivery.connection_id.clone(),
                            payload: Payload::Envelope(first),
                        });
                    }
                    Some(_) => {}
                }
            }
            out.push(delivery);
        }
        Ok(out)
    }

    async fn acknowledge(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        let real = ids.into_iter().filter(|id| id.0 < FAKE).collect();
        self.inner.acknowledge(real).await
    }

    async fn release(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        let real = ids.into_iter().filter(|id| id.0 < FAKE).collect();
        self.inner.release(real).await
    }
}

async fn start(transport: impl Transport, config: NodeConfig) -> (Node, Collector) {
    start_on(transport, Arc::new(MemoryStore::new()), config, suites()).await
}

/// Sends `text` from `from` and waits until `to_seen` has it.
async fn delivered(from: &Node, to_seen: &Collector, id: &ConnectionId, text: &str) {
    from.send(id, text.to_owned()).await.unwrap();
    wait_until(&format!("{text:?} delivered"), WAIT, || {
        to_seen.texts(id).iter().any(|seen| seen == text)
    })
    .await;
}

/// The connection carries a message each way after the attack; then both
/// nodes stop.
async fn works_both_ways_then_stop(
    issuer: Node,
    issuer_seen: &Collector,
    holder: Node,
    holder_seen: &Collector,
    id: &ConnectionId,
) {
    delivered(&issuer, holder_seen, id, "after, to the holder").await;
    delivered(&holder, issuer_seen, id, "after, to the issuer").await;
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

/// Finding 1: the relay answers a holder's join with the id of the
/// holder's existing connection to another issuer. The holder refuses, and
/// the existing connection stays the real issuer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_assigned_id_never_replaces_an_existing_connection() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = start(relay.transport("issuer"), NodeConfig::default()).await;
    let (attacker, _attacker_seen) =
        start(relay.transport("attacker"), NodeConfig::default()).await;
    let holder_transport = Hostile::new(&relay, "holder");
    let plan = Arc::clone(&holder_transport.plan);
    let (holder, holder_seen) = start(holder_transport, NodeConfig::default()).await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    let issuer_key = issuer.identity_key();

    // The holder scans the attacker's invitation; the relay re-binds it.
    let invitation = attacker.create_invitation().await.unwrap();
    plan.lock().unwrap().join_answer = Some(id.clone());
    let error = holder
        .accept_invitation(&invitation, "to the attacker")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, NodeError::ConnectionIdTaken(taken) if *taken == id),
        "{error}"
    );

    // The connection is still the issuer's, both ways, after a reload too.
    let listed = holder.connections().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].peer_identity, Some(issuer_key));
    delivered(&holder, &issuer_seen, &id, "still to the issuer").await;
    delivered(&issuer, &holder_seen, &id, "still from the issuer").await;
    for node in [issuer, holder, attacker] {
        node.shutdown().await.unwrap();
    }
}

/// Finding 2(a): during a reset the relay replays the first-contact bundle
/// just ahead of the fresh one. The holder refuses it (it is bound to the
/// invitation, not to the reset request), takes the fresh one, and the
/// connection works both ways afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_first_bundle_cannot_wedge_a_reset() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = start(relay.transport("issuer"), NodeConfig::default()).await;
    let holder_transport = Hostile::new(&relay, "holder");
    holder_transport.plan.lock().unwrap().replay_first_bundle = true;
    let (holder, holder_seen) = start(holder_transport, NodeConfig::default()).await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    delivered(&issuer, &holder_seen, &id, "before").await;

    holder.reset(&id).await.unwrap();
    wait_until("both sides reset", WAIT, || {
        holder_seen.with(|seen| seen.connected.iter().any(|(_, reset)| *reset))
            && issuer_seen.with(|seen| seen.connected.iter().any(|(_, reset)| *reset))
    })
    .await;
    wait_until("the replay refused", WAIT, || {
        holder_seen.with(|seen| !seen.failed.is_empty())
    })
    .await;
    let failure = holder_seen.with(|seen| seen.failed[0].1.clone());
    assert!(
        matches!(&failure, HandshakeFailure::BadSignature(detail) if detail.contains("offer signature")),
        "{failure}"
    );
    works_both_ways_then_stop(issuer, &issuer_seen, holder, &holder_seen, &id).await;
}

/// The relay drops the holder's first initial message: the holder believes
/// it is connected, the issuer still waits with its bundle sent. The
/// issuer, seeing messages it cannot open, asks for a reset; an inviter
/// still waiting for its bundle's answer accepts it; the two meet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_initial_message_is_recovered_by_a_reset() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = start(relay.transport("issuer"), NodeConfig::default()).await;
    let holder_transport = Hostile::new(&relay, "holder");
    holder_transport.plan.lock().unwrap().drop_initials = 1;
    let (holder, holder_seen) = start(holder_transport, NodeConfig::default()).await;
    let invitation = issuer.create_invitation().await.unwrap();
    let id = holder.accept_invitation(&invitation, "lost").await.unwrap();
    wait_until("holder connected", WAIT, || {
        holder_seen.connected_count() == 1
    })
    .await;
    // These cannot be opened by the issuer (it has no session yet); enough
    // of them make it ask for a reset.
    for n in 0..REFUSALS {
        holder.send(&id, format!("unreadable {n}")).await.unwrap();
    }
    wait_until("issuer connected through the reset", WAIT, || {
        issuer_seen.connected_count() == 1
    })
    .await;
    works_both_ways_then_stop(issuer, &issuer_seen, holder, &holder_seen, &id).await;
}

/// The relay drops the initial message of a reset: the holder has the new
/// session, the issuer the old one, and each refuses the other's messages.
/// The refusals trigger a new reset (the first stays pending on the holder,
/// so it takes the answer to the new request), and the two meet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_done_reset_is_recovered() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = start(relay.transport("issuer"), NodeConfig::default()).await;
    let holder_transport = Hostile::new(&relay, "holder");
    let plan = Arc::clone(&holder_transport.plan);
    let (holder, holder_seen) = start(holder_transport, NodeConfig::default()).await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    plan.lock().unwrap().drop_initials = 1;
    holder.reset(&id).await.unwrap();
    wait_until("holder reset", WAIT, || {
        holder_seen.with(|seen| seen.connected.iter().any(|(_, reset)| *reset))
    })
    .await;
    // Sealed under the old session: refused by the holder.
    for n in 0..REFUSALS {
        issuer.send(&id, format!("old session {n}")).await.unwrap();
    }
    wait_until("issuer reset", WAIT, || {
        issuer_seen.with(|seen| seen.connected.iter().any(|(_, reset)| *reset))
    })
    .await;
    works_both_ways_then_stop(issuer, &issuer_seen, holder, &holder_seen, &id).await;
}

/// Finding 4: forged messages count against the receiving key's integrity
/// limit (lowered to 3 here). At the limit the holder refuses the key and
/// asks the issuer for a key update; the issuer's later messages, under the
/// new key, are delivered. Without the request they would all be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgeries_at_the_integrity_limit_force_a_key_update() {
    let relay = MemoryRelay::new();
    let config = NodeConfig::default()
        .with_session(SessionConfig::default().with_max_failed_opens_per_key(3));
    let (issuer, issuer_seen) = start(relay.transport("issuer"), config.clone()).await;
    let holder_transport = Hostile::new(&relay, "holder");
    let forger = holder_transport.clone();
    let (holder, holder_seen) = start(holder_transport, config).await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    delivered(&issuer, &holder_seen, &id, "genuine").await;
    assert_eq!(forger.plan.lock().unwrap().highest_epoch, 0);
    // Forgeries: well-formed messages with counters ahead, whose tags
    // cannot verify.
    for counter in 100..103u64 {
        let message = wire::EncryptedMessage {
            content: vec![0x5a; 48],
            connection_id: id.as_str().to_owned(),
            counter,
            suite: confidant_core::SuiteId::AES_256_GCM_SHA256_COUNTER.0,
            epoch: 0,
        };
        forger.inject(&id, wire::encode_envelope(Body::Message(message)));
    }
    // A message to wake the holder's receive loop; the forgeries go in the
    // round after it.
    delivered(&issuer, &holder_seen, &id, "wake").await;
    // At the limit the holder asks for a key update (nothing else here
    // comes near a limit that would make it update on its own).
    wait_until("the holder asked for a key update", WAIT, || {
        forger.plan.lock().unwrap().key_updates_sent >= 1
    })
    .await;
    // The issuer moves to epoch 1 (its announcement reaches the holder),
    // and what it sends from then on opens. (What it sealed under the
    // retired key before the request reached it is refused.)
    wait_until("the issuer's key update reached the holder", WAIT, || {
        forger.plan.lock().unwrap().key_updates_received >= 1
    })
    .await;
    for n in 0..3 {
        issuer
            .send(&id, format!("after the forgeries {n}"))
            .await
            .unwrap();
    }
    wait_until("the messages after the forgeries delivered", WAIT, || {
        holder_seen
            .texts(&id)
            .iter()
            .any(|text| text == "after the forgeries 2")
    })
    .await;
    // The issuer's key was updated because the holder asked: nothing else
    // here comes near a limit.
    assert!(forger.plan.lock().unwrap().highest_epoch >= 1);
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}
