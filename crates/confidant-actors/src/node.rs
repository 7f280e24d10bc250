//! The embedding API: [`Node::builder`], the [`Node`] handle and its
//! [`Events`].
//!
//! A node runs its actors on its own actix system, on a thread of its own
//! (plus [`NodeConfig::workers`] worker threads for connection actors and a
//! few blocking threads for the store). The handle is `Clone + Send + Sync`
//! and its methods are plain futures, so it can be used from any async
//! runtime, such as the tokio runtime of the service that embeds it.

use crate::config::{NodeConfig, default_offer};
use crate::error::{HandshakeFailure, NodeError};
use crate::event::{ConnectionInfo, ConnectionState, Event, Events, IncomingMessage};
use crate::hub::{Active, Drain, Hub, HubReset, HubSend, Round, RoundOutcome, Shutdown};
use crate::invitation::Invitation;
use crate::shared::{OutboxItem, Shared};
use crate::syncing::SyncWaiters;
use crate::transport::{Transport, TransportError};
use actix::prelude::*;
use confidant_core::{ConnectionId, KeyAgreement, SuiteRegistry};
use confidant_engine::hybrid::Hybrid;
use confidant_engine::records::ConnectionRecord;
use confidant_store::{RawStore, SendResume, StoreError, WriteBatch};
use confidant_x3dh::{IdentityKeyPair, ResponderKeys};
use confidant_x3dh_mlkem768::X3dhMlKem768;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Builds a [`Node`]: the store, the suites, the key agreement and the
/// transport are required.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use confidant_actors::{MemoryRelay, Node, NodeConfig};
/// use confidant_core::SuiteRegistry;
/// use confidant_store::{RedbStore, StoreOptions};
/// use std::sync::Arc;
///
/// let mut suites = SuiteRegistry::new();
/// confidant_aes_gcm::register(&mut suites)?;
/// let store = Arc::new(RedbStore::open_or_create("issuer.redb", StoreOptions::default())?);
/// let relay = MemoryRelay::new();
/// let (node, mut events) = Node::builder()
///     .store(store)
///     .suites(suites)
///     .key_agreement(confidant_x3dh::X3dh::default())
///     .transport(relay.transport("issuer"))
///     .config(NodeConfig::default())
///     .start()
///     .await?;
/// let invitation = node.create_invitation().await?;
/// println!("show this as a QR code: {invitation}");
/// while let Some(event) = events.next().await {
///     println!("{event:?}");
/// }
/// # Ok(()) }
/// ```
#[must_use]
pub struct NodeBuilder {
    store: Option<Arc<dyn RawStore>>,
    suites: Option<SuiteRegistry>,
    agreement: Option<AgreementChoice>,
    transport: Option<Arc<dyn Transport>>,
    config: NodeConfig,
}

/// The key agreement a builder was given.
#[derive(Clone)]
enum AgreementChoice {
    /// One over X3DH's keys alone.
    Classical(Arc<dyn confidant_engine::Handshaker>),
    /// The X3DH + ML-KEM-768 hybrid, loaded with the node's KEM pre-keys at
    /// start and after each rotation.
    Hybrid(X3dhMlKem768),
}

impl AgreementChoice {
    /// What mints the keys of a rotation (no keys needed).
    fn minting(&self) -> Arc<dyn confidant_engine::Handshaker> {
        match self {
            Self::Classical(agreement) => Arc::clone(agreement),
            Self::Hybrid(agreement) => Arc::new(Hybrid::new(agreement.clone())),
        }
    }

    /// The agreement for a context over `keys`.
    fn loaded(
        &self,
        store: &dyn RawStore,
        keys: &ResponderKeys,
    ) -> Result<Arc<dyn confidant_engine::Handshaker>, NodeError> {
        Ok(match self {
            Self::Classical(agreement) => Arc::clone(agreement),
            Self::Hybrid(agreement) => Arc::new(Hybrid::load(agreement.clone(), store, keys)?),
        })
    }
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Where the node keeps its keys, sessions and inbox. Keep one node per
    /// store.
    pub fn store<S: RawStore + 'static>(mut self, store: Arc<S>) -> Self {
        self.store = Some(store);
        self
    }

    /// The cipher suites the node can use (the user's own too).
    pub fn suites(mut self, registry: SuiteRegistry) -> Self {
        self.suites = Some(registry);
        self
    }

    /// The key agreement, over X3DH's key types (identity, signed and
    /// one-time pre-keys), which is what the store keeps.
    pub fn key_agreement<K>(mut self, agreement: K) -> Self
    where
        K: KeyAgreement<ResponderKeys = ResponderKeys, InitiatorKeys = IdentityKeyPair>,
    {
        self.agreement = Some(AgreementChoice::Classical(Arc::new(agreement)));
        self
    }

    /// The post-quantum hybrid, X3DH + ML-KEM-768 (PQXDH-style), as the key
    /// agreement: the node keeps a signed last-resort ML-KEM-768 pre-key
    /// beside each signed pre-key (rotated with it) and mints a signed
    /// one-time one for every bundle, deleted with the session's commit.
    /// Its settings say whether a bundle without the hybrid is refused
    /// ([`X3dhMlKem768::with_require_hybrid`], on by default: a relay that
    /// strips it is detected) and whether classical initial messages are
    /// answered ([`X3dhMlKem768::with_allow_classical`], off by default).
    /// [`Event::Connected`] says which a session got (`post_quantum`).
    pub fn hybrid_key_agreement(mut self, agreement: X3dhMlKem768) -> Self {
        self.agreement = Some(AgreementChoice::Hybrid(agreement));
        self
    }

    /// How the node reaches the relay.
    pub fn transport<T: Transport>(mut self, transport: T) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Tuning (see [`NodeConfig`]).
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the node: loads (or, on first start, creates and stores) its
    /// identity and signed pre-key, starts its actors, replays the inbox
    /// entries the application has not acknowledged, and starts taking
    /// deliveries from the transport.
    pub async fn start(self) -> Result<(Node, Events), NodeError> {
        let missing = |what: &str| NodeError::Config(format!("the builder needs {what}"));
        let store = self.store.ok_or_else(|| missing("a store"))?;
        let registry = self.suites.ok_or_else(|| missing("suites"))?;
        let agreement = self.agreement.ok_or_else(|| missing("a key agreement"))?;
        let transport = self.transport.ok_or_else(|| missing("a transport"))?;
        let mut config = self.config;
        config.validate()?;
        if config.offered_suites.is_empty() {
            config.offered_suites = default_offer(&registry);
        }
        if config.offered_suites.is_empty() {
            return Err(NodeError::Config(
                "no suite to offer: register one and list it in offered_suites".into(),
            ));
        }
        let mut offered = Vec::with_capacity(config.offered_suites.len());
        for suite in &config.offered_suites {
            let plugin = registry
                .get(*suite)
                .map_err(|error| NodeError::Config(error.to_string()))?;
            offered.push(format!("{} ({})", plugin.name(), suite));
        }
        tracing::info!(
            suites = %offered.join(", "),
            "offering cipher suites, most preferred first"
        );

        let (ready_sender, ready) = oneshot::channel();
        let (done_sender, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("confidant-node".into())
            .spawn(move || {
                run_node(
                    store,
                    registry,
                    agreement,
                    transport,
                    config,
                    ready_sender,
                    done_sender,
                );
            })
            .map_err(|error| NodeError::Config(format!("cannot start the node thread: {error}")))?;
        let started = ready.await.map_err(|_| NodeError::Stopped)?;
        let (parts, events) = match started {
            Ok(started) => started,
            Err(error) => {
                let _ = thread.join();
                return Err(error);
            }
        };
        let node = Node {
            inner: Arc::new(Inner {
                parts,
                done: std::sync::Mutex::new(Some(done)),
            }),
        };
        Ok((node, events))
    }
}

/// Everything the handle needs, created on the node thread.
struct Parts {
    hub: Addr<Hub>,
    /// Taken at shutdown, so that the store is released even while clones
    /// of the handle live on.
    shared: std::sync::Mutex<Option<Arc<Shared>>>,
    transport: Arc<dyn Transport>,
    stop: watch::Sender<bool>,
    inbound_done: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    identity_key: [u8; 32],
    /// Whether the node's key agreement is the hybrid (its invitations
    /// say so).
    hybrid: bool,
    /// Who waits in [`Node::sync`] for which acknowledgements.
    waiters: SyncWaiters,
}

struct Inner {
    parts: Parts,
    done: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone without a shutdown: stop the node anyway.
        let _ = self.parts.stop.send(true);
        self.parts.hub.do_send(Shutdown);
    }
}

type Started = Result<(Parts, Events), NodeError>;

/// The time now, in seconds since the Unix epoch (0 for a clock before it).
fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Loads the node's identity (creating it on first start), brings its
/// signed pre-keys up to date (creating the first, rotating a due one,
/// deleting those past their grace, minting the agreement's keys beside
/// them) in one durable commit, and reads the keys back with the agreement
/// loaded over them. Says whether anything was committed.
fn load_keys(
    store: &dyn RawStore,
    choice: &AgreementChoice,
    rotation: confidant_engine::setup::Rotation,
) -> Result<(ResponderKeys, Arc<dyn confidant_engine::Handshaker>, bool), NodeError> {
    let batch = confidant_engine::setup::key_changes(
        &*choice.minting(),
        &crate::config::SystemRandom,
        store,
        now_seconds(),
        rotation,
    )?;
    let changed = !batch.is_empty();
    if changed {
        store.commit(batch)?;
    }
    let keys = confidant_engine::setup::responder_keys(store)?.ok_or(StoreError::Inconsistent(
        "no signed pre-key after the rotation",
    ))?;
    let agreement = choice.loaded(store, &keys)?;
    Ok((keys, agreement, changed))
}

/// Rotates the node's signed pre-keys while it runs: every `interval`, the
/// rotation of [`load_keys`]; when it changed anything, the context that
/// connections load from is replaced.
async fn rotation_loop(
    shared: Arc<Shared>,
    choice: AgreementChoice,
    mut stop: watch::Receiver<bool>,
) {
    let rotation = shared.config.rotation();
    let interval = shared.config.rotation_check_interval();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let store = Arc::clone(&shared.store);
        let choice = choice.clone();
        let loaded = shared
            .blocking(move || load_keys(&*store, &choice, rotation))
            .await;
        match loaded {
            Ok(Ok((keys, agreement, true))) => {
                let old = shared.engine();
                shared.set_engine(Arc::new(confidant_engine::Context {
                    registry: Arc::clone(&old.registry),
                    agreement,
                    keys,
                    config: old.config.clone(),
                    random: Arc::clone(&old.random),
                }));
                tracing::info!("signed pre-keys rotated");
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) | Err(error) => {
                tracing::warn!(%error, "signed pre-key rotation failed; tried again later");
            }
        }
    }
}

/// Reads the resume points a clean shutdown stored and deletes them in one
/// durable commit; gives them only once that commit succeeded.
fn take_resume_points(
    store: &dyn RawStore,
) -> Result<std::collections::HashMap<ConnectionId, SendResume>, NodeError> {
    let (points, delete) = confidant_engine::setup::stored_resume_points(store)?;
    if delete.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    store.commit(delete)?;
    tracing::debug!(
        count = points.len(),
        "sending counters resume where the last clean shutdown left them"
    );
    Ok(points.into_iter().collect())
}

#[allow(clippy::too_many_arguments)]
fn run_node(
    store: Arc<dyn RawStore>,
    registry: SuiteRegistry,
    choice: AgreementChoice,
    transport: Arc<dyn Transport>,
    config: NodeConfig,
    ready: oneshot::Sender<Started>,
    done: oneshot::Sender<()>,
) {
    let hybrid = matches!(choice, AgreementChoice::Hybrid(_));
    let (keys, agreement) = match load_keys(&*store, &choice, config.rotation()) {
        Ok((keys, agreement, _)) => (keys, agreement),
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    // Where the last clean shutdown left each sending counter: trusted
    // only once deleted from the store, before anything is sealed (a crash
    // from here on must not find them again).
    let resume = match take_resume_points(&*store) {
        Ok(resume) => resume,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let system = actix_rt::System::new();
    let workers: Vec<Arbiter> = (0..config.workers).map(|_| Arbiter::new()).collect();
    let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();
    system.block_on(async move {
        let (outbox_sender, outbox) = mpsc::unbounded_channel();
        let identity_key = keys.identity_public_key().to_bytes();
        let event_capacity = config.event_capacity;
        let committer = crate::committer::Committer::start(
            Arc::clone(&store),
            tokio::runtime::Handle::current(),
            2,
        );
        let shared = Arc::new(Shared {
            committer,
            store,
            engine: std::sync::RwLock::new(Arc::new(confidant_engine::Context {
                registry: Arc::new(registry),
                agreement,
                keys,
                config: config.protocol(),
                random: Arc::new(crate::config::SystemRandom),
            })),
            blocking_permits: Arc::new(tokio::sync::Semaphore::new(config.blocking_threads)),
            joins: crate::shared::Joins::default(),
            config,
            outbox: outbox_sender,
            runtime: tokio::runtime::Handle::current(),
        });
        let hub = Hub::new(Arc::clone(&shared), handles, resume).start();
        let (stop, stop_receiver) = watch::channel(false);
        actix_rt::spawn(rotation_loop(
            Arc::clone(&shared),
            choice,
            stop_receiver.clone(),
        ));
        let (events_sender, events_receiver) = mpsc::channel(event_capacity);
        let (inbound_done_sender, inbound_done) = oneshot::channel();
        let waiters = SyncWaiters::default();
        actix_rt::spawn(outbox_loop(
            Arc::clone(&transport),
            outbox,
            shared.config.send_batch,
        ));
        actix_rt::spawn({
            let inbound = Inbound {
                shared: Arc::clone(&shared),
                transport: Arc::clone(&transport),
                hub: hub.clone(),
                events: events_sender,
                stop: stop_receiver,
                waiters: waiters.clone(),
            };
            async move {
                inbound.run().await;
                let _ = inbound_done_sender.send(());
            }
        });
        let parts = Parts {
            hub,
            shared: std::sync::Mutex::new(Some(shared)),
            transport,
            stop,
            inbound_done: std::sync::Mutex::new(Some(inbound_done)),
            identity_key,
            hybrid,
            waiters,
        };
        let _ = ready.send(Ok((
            parts,
            Events {
                receiver: events_receiver,
            },
        )));
    });
    let _ = system.run();
    for worker in workers {
        worker.stop();
        let _ = worker.join();
    }
    let _ = done.send(());
}

/// Sends queued envelopes in order, in batches.
async fn outbox_loop(
    transport: Arc<dyn Transport>,
    mut outbox: mpsc::UnboundedReceiver<OutboxItem>,
    max: usize,
) {
    while let Some(first) = outbox.recv().await {
        let mut count = first.envelopes.len();
        let mut items = vec![first];
        while count < max {
            match outbox.try_recv() {
                Ok(item) => {
                    count += item.envelopes.len();
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        let mut envelopes = Vec::with_capacity(count);
        let mut waiters = Vec::with_capacity(items.len());
        for item in items {
            envelopes.extend(item.envelopes);
            waiters.extend(item.done);
        }
        let result = if envelopes.is_empty() {
            Ok(())
        } else {
            transport.send(envelopes).await
        };
        if let Err(error) = &result {
            tracing::warn!(%error, "sending to the relay failed");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// How long the inbound loop pauses after a round that handed deliveries
/// back to the relay.
const RETRY_DELAY: Duration = Duration::from_millis(10);

/// After this many crashes of its connection's actor, a delivery is
/// dropped.
const CRASH_ATTEMPTS: u32 = 3;

/// How many inbound rounds may be at the hub at once: while one round's
/// group commit runs, the next is received and processed (a connection in
/// both waits, inside its actor, for the first round's outcome).
const ROUNDS_IN_FLIGHT: usize = 2;

/// Takes deliveries from the transport and hands them to the hub, one
/// round at a time, with up to [`ROUNDS_IN_FLIGHT`] rounds at the hub;
/// their outcomes are carried out in order by [`Outcomes`].
struct Inbound {
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    hub: Addr<Hub>,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    waiters: SyncWaiters,
}

/// A round at the hub, and its place among the rounds in flight.
type RoundInFlight = (
    actix::dev::Request<Hub, Round>,
    tokio::sync::OwnedSemaphorePermit,
);

impl Inbound {
    async fn run(mut self) {
        if let Err(error) = self.resume().await {
            tracing::error!(%error, "could not replay the stored state at start");
        }
        let (rounds, mut pending) = mpsc::channel::<RoundInFlight>(ROUNDS_IN_FLIGHT);
        let permits = Arc::new(tokio::sync::Semaphore::new(ROUNDS_IN_FLIGHT));
        let mut outcomes = Outcomes {
            crashes: std::collections::HashMap::new(),
            transport: Arc::clone(&self.transport),
            events: self.events.clone(),
            acknowledging: None,
            waiters: self.waiters.clone(),
        };
        // The rounds' outcomes, in the order the rounds were handed over:
        // a connection's events stay in order across rounds.
        let carried_out = actix_rt::spawn(async move {
            while let Some((round, permit)) = pending.recv().await {
                let Ok(outcome) = round.await else {
                    // The hub stopped.
                    break;
                };
                outcomes.carry_out(outcome).await;
                drop(permit);
            }
            // Stopping: let the last acknowledgement finish (bounded by the
            // transport's own timeouts), so that a clean stop does not
            // leave the relay to deliver again what is already stored.
            if let Some(previous) = outcomes.acknowledging.take() {
                let _ = previous.await;
            }
            outcomes.waiters.stop();
        });
        self.rounds(&rounds, &permits).await;
        // The rounds already at the hub finish and are carried out.
        drop(rounds);
        let _ = carried_out.await;
    }

    async fn rounds(
        &mut self,
        rounds: &mpsc::Sender<RoundInFlight>,
        permits: &Arc<tokio::sync::Semaphore>,
    ) {
        let mut backoff = RETRY_DELAY;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let permit = tokio::select! {
                _ = self.stop.changed() => return,
                permit = Arc::clone(permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let received = tokio::select! {
                _ = self.stop.changed() => return,
                received = self.transport.receive(self.shared.config.receive_batch) => received,
            };
            let deliveries = match received {
                Ok(deliveries) => {
                    backoff = RETRY_DELAY;
                    deliveries
                }
                Err(TransportError::Closed) => {
                    tracing::info!("transport closed; no more deliveries");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "receiving from the relay failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // A delivery for a connection whose join is still being stored
            // is handed back and comes again (see `Shared::joins`).
            let round = self.hub.send(Round(deliveries));
            if rounds.send((round, permit)).await.is_err() {
                return;
            }
        }
    }

    /// At start: send again the handshake steps that may not have left
    /// before a crash, and replay unacknowledged inbox entries (the
    /// engine's [`resume`](confidant_engine::setup::resume) says which).
    async fn resume(&mut self) -> Result<(), NodeError> {
        let shared = Arc::clone(&self.shared);
        let resumed = self
            .shared
            .blocking(move || confidant_engine::setup::resume(&shared.engine(), &*shared.store))
            .await??;
        let again: Vec<_> = resumed
            .again
            .into_iter()
            .map(|(connection_id, envelope)| crate::transport::Outgoing {
                connection_id,
                envelope,
            })
            .collect();
        if !again.is_empty() {
            tracing::info!(count = again.len(), "handshake steps sent again at start");
            self.shared.send_and_forget(again)?;
        }
        for entry in resumed.inbox {
            let event = Event::Message(IncomingMessage {
                connection_id: entry.connection_id,
                sequence: entry.sequence,
                plaintext: entry.plaintext,
            });
            if self.events.send(event).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Carries out the rounds' outcomes, in order: acknowledgements (behind
/// the next round), deliveries handed back, events for the application.
struct Outcomes {
    crashes: std::collections::HashMap<crate::transport::DeliveryId, u32>,
    transport: Arc<dyn Transport>,
    events: mpsc::Sender<Event>,
    /// The previous round's acknowledgement, still on its way to the
    /// relay while later rounds run (see `acknowledge_behind`).
    acknowledging: Option<tokio::task::JoinHandle<()>>,
    /// Told when an acknowledgement ends (for [`Node::sync`]).
    waiters: SyncWaiters,
}

impl Outcomes {
    /// Hands `ack` to the relay in a task of its own, once the previous
    /// round's acknowledgement has finished: the next round does not wait
    /// for the relay's answer (a durable commit at a connector), and at
    /// most one acknowledgement is in flight. Safe because the deliveries
    /// are stored before they are acknowledged and the transport hands out
    /// nothing in flight again; a lost acknowledgement only makes the relay
    /// deliver again, and the replay window refuses the copies.
    async fn acknowledge_behind(&mut self, ack: Vec<crate::transport::DeliveryId>) {
        if let Some(previous) = self.acknowledging.take() {
            let _ = previous.await;
        }
        let transport = Arc::clone(&self.transport);
        let waiters = self.waiters.clone();
        self.acknowledging = Some(actix_rt::spawn(async move {
            let outcome = transport.acknowledge(ack.clone()).await.map_err(|error| {
                tracing::warn!(%error, "acknowledging failed; the relay will deliver again and the replay window refuses the copies");
                error.to_string()
            });
            waiters.acknowledged(&ack, &outcome);
        }));
    }

    async fn carry_out(&mut self, outcome: RoundOutcome) {
        let RoundOutcome {
            mut ack,
            mut release,
            crashed,
            mut events,
        } = outcome;
        // A delivery that crashes its connection's actor again and again
        // (a message that makes a plugin panic) is dropped after a few
        // attempts, so that it cannot stall its connection forever.
        for (delivery, connection_id) in crashed {
            let attempts = self.crashes.entry(delivery).or_insert(0);
            *attempts += 1;
            if *attempts >= CRASH_ATTEMPTS {
                self.crashes.remove(&delivery);
                tracing::error!(connection = %connection_id, "a delivery crashed its connection {CRASH_ATTEMPTS} times; dropped");
                ack.push(delivery);
                events.push(Event::DeliveryDropped {
                    connection_id,
                    reason: format!("handling it crashed the connection {CRASH_ATTEMPTS} times"),
                });
            } else {
                release.push(delivery);
            }
        }
        for delivery in &ack {
            self.crashes.remove(delivery);
        }
        if !ack.is_empty() {
            self.acknowledge_behind(ack).await;
        }
        let released = !release.is_empty();
        if released && let Err(error) = self.transport.release(release).await {
            tracing::warn!(%error, "releasing deliveries failed");
        }
        for event in events {
            if self.events.send(event).await.is_err() {
                // Nobody listens; the inbox keeps the messages.
                break;
            }
        }
        if released {
            // Something could not be handled now: give it a moment (short,
            // as the other connections wait too) before the next round.
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
}

/// A running node. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("identity_key", &hex_key(&self.inner.parts.identity_key))
            .finish_non_exhaustive()
    }
}

fn hex_key(key: &[u8; 32]) -> String {
    key.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Node {
    /// A builder (see [`NodeBuilder`]).
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            store: None,
            suites: None,
            agreement: None,
            transport: None,
            config: NodeConfig::default(),
        }
    }

    fn parts(&self) -> &Parts {
        &self.inner.parts
    }

    fn shared(&self) -> Result<Arc<Shared>, NodeError> {
        self.parts()
            .shared
            .lock()
            .ok()
            .and_then(|shared| shared.clone())
            .ok_or(NodeError::Stopped)
    }

    /// This node's identity key (what its invitations carry).
    pub fn identity_key(&self) -> [u8; 32] {
        self.parts().identity_key
    }

    /// The delivery mode for an app that cannot hold a stream open (a phone
    /// app in the background, woken by a push notification or a background
    /// task): fetches what waits at the relay now, lets the node process it
    /// durably as it processes any delivery (the events reach [`Events`]
    /// as usual), and returns once the relay has been told to delete every
    /// fetched delivery. Returns how many deliveries were fetched (0: none
    /// waited).
    ///
    /// Needs a transport that fetches on request, such as the connector's
    /// transport in sync delivery mode; on a streaming transport it fails
    /// with [`TransportError::Unsupported`] (the stream already delivers).
    /// Calls may overlap; each waits for its own deliveries. The wait has no
    /// deadline of its own: a delivery that cannot be handled now is handed
    /// back and tried again (and dropped after a few crashes), so bound the
    /// call with a timeout if the platform gives you little time; what was
    /// processed stays processed.
    ///
    /// Fails with [`NodeError::Transport`] when the fetch or an
    /// acknowledgement fails (what was stored stays stored; the relay
    /// delivers the rest again on the next sync, and the replay window
    /// refuses what was already processed), and [`NodeError::Stopped`] when
    /// the node stops first.
    pub async fn sync(&self) -> Result<usize, NodeError> {
        let parts = self.parts();
        let registration = parts.waiters.register();
        let transport = Arc::clone(&parts.transport);
        let fetched =
            run_on_node(&parts.hub, async move { transport.fetch_waiting().await }).await??;
        if fetched.is_empty() {
            return Ok(0);
        }
        registration
            .wait_for(&fetched)
            .await
            .map_err(|reason| match self.shared() {
                Err(stopped) => stopped,
                Ok(_) => NodeError::Transport(TransportError::Unavailable(reason)),
            })?;
        Ok(fetched.len())
    }

    /// Creates an invitation at the relay. Show it to the other party (as a
    /// QR code); when it joins, the node sends its bundle and reports
    /// [`Event::Joined`], then [`Event::Connected`].
    pub async fn create_invitation(&self) -> Result<Invitation, NodeError> {
        let parts = self.parts();
        let transport = Arc::clone(&parts.transport);
        let relay = run_on_node(
            &parts.hub,
            async move { transport.create_invitation().await },
        )
        .await??;
        let shared = self.shared()?;
        let token = relay.token.clone();
        run_on_node(&parts.hub, async move {
            shared
                .committer
                .commit(confidant_engine::setup::invitation_created(&token))
                .await
        })
        .await??;
        Ok(Invitation {
            relay: relay.relay,
            token: relay.token,
            identity_key: self.identity_key(),
            hybrid: parts.hybrid,
        })
    }

    /// Accepts an invitation: joins the connection at the relay and waits
    /// for the inviter's bundle, which must carry the invitation's identity
    /// key. `greeting` is sealed into the initial message (the inviter's
    /// first message from this node). Returns the connection's id;
    /// [`Event::Connected`] follows when the handshake is done.
    pub async fn accept_invitation(
        &self,
        invitation: &Invitation,
        greeting: impl Into<Vec<u8>>,
    ) -> Result<ConnectionId, NodeError> {
        confidant_x3dh::IdentityPublicKey::from_bytes(&invitation.identity_key).map_err(
            |error| {
                NodeError::Handshake(HandshakeFailure::InvalidIdentityKey(format!(
                    "the invitation's identity key: {error}"
                )))
            },
        )?;
        let parts = self.parts();
        let transport = Arc::clone(&parts.transport);
        let shared = self.shared()?;
        let token = invitation.token.clone();
        let identity = invitation.identity_key;
        let hybrid = invitation.hybrid;
        let greeting = greeting.into();
        run_on_node(&parts.hub, async move {
            // Until the record is stored, a delivery for a connection
            // without one is handed back to the relay instead of dropped:
            // the bundle may come before the join's answer. Joins run
            // concurrently; this is ordering, not a lock.
            let _joining = shared.joins.start();
            let connection_id = transport.join(&token).await?;
            let batch =
                confidant_engine::setup::joined(
                &connection_id,
                identity,
                &token,
                greeting,
                hybrid,
            )?;
            // Stored with the other joins and steps in flight (group
            // commit).
            match shared.committer.commit(batch).await {
                Ok(_) => Ok(connection_id),
                Err(StoreError::AlreadyExists { .. }) => {
                    tracing::error!(connection = %connection_id, "the relay answered a join with the id of an existing connection; refused");
                    Err(NodeError::ConnectionIdTaken(connection_id))
                }
                Err(error) => Err(error.into()),
            }
        })
        .await?
    }

    /// Seals `message` and hands it to the relay; returns once the relay has
    /// it.
    pub async fn send(
        &self,
        connection_id: &ConnectionId,
        message: impl Into<Vec<u8>>,
    ) -> Result<(), NodeError> {
        self.send_many(connection_id, vec![message.into()]).await
    }

    /// Seals `messages` in order and hands them to the relay in one go;
    /// returns once the relay has them all. On an error none of them was
    /// handed over.
    pub async fn send_many(
        &self,
        connection_id: &ConnectionId,
        messages: Vec<Vec<u8>>,
    ) -> Result<(), NodeError> {
        if messages.is_empty() {
            return Ok(());
        }
        let sent = self
            .parts()
            .hub
            .send(HubSend(connection_id.clone(), messages))
            .await
            .map_err(|_| NodeError::Stopped)??;
        sent.await.map_err(|_| NodeError::Stopped)??;
        Ok(())
    }

    /// Deletes handled messages from the inbox (numbers from
    /// [`IncomingMessage::sequence`]). Unknown numbers are ignored.
    pub async fn acknowledge(&self, sequences: &[u64]) -> Result<(), NodeError> {
        if sequences.is_empty() {
            return Ok(());
        }
        let shared = self.shared()?;
        let mut batch = WriteBatch::new();
        for &sequence in sequences {
            batch.delete_inbox(sequence);
        }
        run_on_node(&self.parts().hub, async move {
            shared.committer.commit(batch).await
        })
        .await??;
        Ok(())
    }

    /// Every connection the store knows, whether or not its actor runs.
    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, NodeError> {
        let shared = self.shared()?;
        let store = Arc::clone(&shared.store);
        let records = run_on_node(&self.parts().hub, async move {
            shared
                .blocking(move || ConnectionRecord::all(&*store))
                .await
        })
        .await???;
        Ok(records
            .into_iter()
            .map(|(connection_id, record)| ConnectionInfo {
                connection_id,
                side: record.side,
                state: ConnectionState::of(&record),
                peer_identity: record.peer_identity,
            })
            .collect())
    }

    /// Replaces the connection's session with a fresh X3DH. The invitee
    /// asks the inviter for a new bundle; the inviter asks the invitee to
    /// do so. Both sides keep using the old session until the new one is in
    /// place ([`Event::Connected`] with `reset: true`); messages sealed
    /// under the old one and still in flight then are refused.
    pub async fn reset(&self, connection_id: &ConnectionId) -> Result<(), NodeError> {
        self.parts()
            .hub
            .send(HubReset(connection_id.clone()))
            .await
            .map_err(|_| NodeError::Stopped)?
    }

    /// How many connection actors are running (the rest are idle: on disk
    /// only).
    pub async fn active_connections(&self) -> Result<usize, NodeError> {
        self.parts()
            .hub
            .send(Active)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Stops taking deliveries, lets the current round finish, sends what
    /// is queued, then stops every actor and the node's threads. Every state
    /// change is already durable.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let parts = self.parts();
        let _ = parts.stop.send(true);
        let inbound = parts
            .inbound_done
            .lock()
            .ok()
            .and_then(|mut done| done.take());
        if let Some(inbound) = inbound {
            let _ = inbound.await;
        }
        // Everything queued before this point leaves first.
        let shared = parts
            .shared
            .lock()
            .ok()
            .and_then(|mut shared| shared.take());
        if let Some(shared) = shared {
            if let Ok(flushed) = shared.send(Vec::new()) {
                let _ = flushed.await;
            }
            // Where each idle connection's counter stands, so that the
            // next start wakes it without a reservation commit. Best
            // effort: without them, connections reserve anew.
            if let Ok(points) = parts.hub.send(Drain).await
                && !points.is_empty()
            {
                let batch = confidant_engine::setup::stopped_cleanly(&points);
                let stored =
                    run_on_node(
                        &parts.hub,
                        async move { shared.committer.commit(batch).await },
                    )
                    .await
                    .and_then(|committed| committed.map_err(NodeError::Store));
                if let Err(error) = stored {
                    tracing::warn!(%error, "resume points not stored; connections reserve anew after the restart");
                }
            }
        }
        parts.hub.do_send(Shutdown);
        let done = self.inner.done.lock().ok().and_then(|mut done| done.take());
        if let Some(done) = done {
            let _ = done.await;
        }
        Ok(())
    }
}

/// A hub message that runs a future on the node's runtime (transport
/// calls and store work belong there, not on the caller's executor).
struct OnNode<T: Send + 'static>(Pin<Box<dyn std::future::Future<Output = T> + Send>>);

impl<T: Send + 'static> Message for OnNode<T> {
    type Result = T;
}

impl<T: Send + 'static> Handler<OnNode<T>> for Hub {
    type Result = ResponseFuture<T>;

    fn handle(&mut self, message: OnNode<T>, _: &mut Self::Context) -> Self::Result {
        message.0
    }
}

async fn run_on_node<T, F>(hub: &Addr<Hub>, future: F) -> Result<T, NodeError>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    hub.send(OnNode(Box::pin(future)))
        .await
        .map_err(|_| NodeError::Stopped)
}
