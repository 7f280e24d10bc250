//! How a node behaves: [`NodeConfig`], at the bottom of the runtime's
//! layers (every other module may read it).

use crate::error::NodeError;
use confidant_core::{SuiteId, SuiteRegistry};
use confidant_session::SessionConfig;
use confidant_store::DEFAULT_RESERVATION_BLOCK;
use std::time::Duration;

/// How a node behaves. Every field has a sensible default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// A connection actor with no request for this long is stopped (its
    /// state is durable; the next message starts it again). Default 60 s.
    pub idle_timeout: Duration,
    /// At most this many deliveries per inbound round (one group commit).
    /// Default 4,096.
    pub receive_batch: usize,
    /// At most this many envelopes per call to [`Transport::send`].
    /// Default 4,096.
    pub send_batch: usize,
    /// Threads for connection actors. Default: the number of CPUs.
    pub workers: usize,
    /// Suites offered in this node's bundles, in order of preference.
    /// Default (left empty): every registered suite, the built-in ones
    /// first (AES-256-GCM with the counter IV, ChaCha20-Poly1305, AES-256-GCM
    /// with the LFSR IV), then the others in ascending id order. The node
    /// logs its offer at start (INFO).
    pub offered_suites: Vec<SuiteId>,
    /// Session settings (replay window, key limits, …).
    pub session: SessionConfig,
    /// Counters reserved per durable commit when sealing.
    pub reservation_block: u64,
    /// Events buffered for the application before the node stops taking
    /// deliveries from the relay. Default 4,096.
    pub event_capacity: usize,
    /// Largest envelope accepted from the relay.
    pub max_envelope_len: usize,
    /// Most store calls running at once on the node's blocking threads.
    /// Default 8.
    pub blocking_threads: usize,
    /// A signed pre-key (and the hybrid's last-resort KEM pre-key beside
    /// it) older than this is replaced, at start and while the node runs
    /// (checked every quarter of this, at least every hour). Default 7
    /// days.
    pub pre_key_rotation: Duration,
    /// A replaced signed pre-key is kept this long after its successor was
    /// made, for initial messages answering bundles that offered it, then
    /// deleted. Default 30 days.
    pub pre_key_grace: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            receive_batch: 4096,
            send_batch: 4096,
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            offered_suites: Vec::new(),
            session: SessionConfig::default(),
            reservation_block: DEFAULT_RESERVATION_BLOCK,
            event_capacity: 4096,
            max_envelope_len: confidant_core::wire::DEFAULT_MAX_ENVELOPE_LEN,
            blocking_threads: 8,
            pre_key_rotation: Duration::from_secs(7 * 24 * 3600),
            pre_key_grace: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl NodeConfig {
    /// Sets [`NodeConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// Sets [`NodeConfig::receive_batch`].
    pub fn with_receive_batch(mut self, deliveries: usize) -> Self {
        self.receive_batch = deliveries;
        self
    }
    /// Sets [`NodeConfig::workers`].
    pub fn with_workers(mut self, threads: usize) -> Self {
        self.workers = threads;
        self
    }
    /// Sets [`NodeConfig::offered_suites`].
    pub fn with_offered_suites(mut self, suites: Vec<SuiteId>) -> Self {
        self.offered_suites = suites;
        self
    }
    /// Sets [`NodeConfig::session`].
    pub fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }
    /// Sets [`NodeConfig::reservation_block`].
    pub fn with_reservation_block(mut self, counters: u64) -> Self {
        self.reservation_block = counters;
        self
    }
    /// Sets [`NodeConfig::event_capacity`].
    pub fn with_event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events;
        self
    }

    /// Sets [`NodeConfig::pre_key_rotation`] and
    /// [`NodeConfig::pre_key_grace`].
    pub fn with_pre_key_rotation(mut self, every: Duration, grace: Duration) -> Self {
        self.pre_key_rotation = every;
        self.pre_key_grace = grace;
        self
    }

    /// The engine's rotation settings.
    pub(crate) fn rotation(&self) -> confidant_engine::setup::Rotation {
        confidant_engine::setup::Rotation {
            every_seconds: self.pre_key_rotation.as_secs(),
            grace_seconds: self.pre_key_grace.as_secs(),
        }
    }

    /// How often a running node checks whether its signed pre-key is due:
    /// a quarter of the rotation period, between 1 second and 1 hour.
    pub(crate) fn rotation_check_interval(&self) -> Duration {
        (self.pre_key_rotation / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    /// The engine's part of the configuration.
    pub(crate) fn protocol(&self) -> confidant_engine::ProtocolConfig {
        confidant_engine::ProtocolConfig::new(self.offered_suites.clone())
            .with_session(self.session.clone())
            .with_reservation_block(self.reservation_block)
            .with_max_envelope_len(self.max_envelope_len)
    }

    pub(crate) fn validate(&self) -> Result<(), NodeError> {
        let invalid = |reason: &str| Err(NodeError::Config(reason.into()));
        if self.idle_timeout.is_zero() {
            return invalid("idle_timeout must be positive");
        }
        if self.receive_batch == 0
            || self.send_batch == 0
            || self.event_capacity == 0
            || self.blocking_threads == 0
        {
            return invalid("batch sizes and event capacity must be at least 1");
        }
        if self.pre_key_rotation.as_secs() == 0 {
            return invalid("pre_key_rotation must be at least 1 second");
        }
        if self.reservation_block == 0 {
            return invalid("reservation_block must be at least 1");
        }
        self.session
            .validate()
            .map_err(|error| NodeError::Config(error.to_string()))
    }
}

/// The suites a node offers by default: every suite registered, so that the
/// registry and the offer agree. The built-in ones that are registered come
/// first, in their fixed order of preference; the others (a user's own)
/// follow in ascending id order. A node that prefers its own suite says so
/// with `NodeConfig::with_offered_suites`.
pub(crate) fn default_offer(registry: &SuiteRegistry) -> Vec<SuiteId> {
    let built_in = [
        SuiteId::AES_256_GCM_SHA256_COUNTER,
        SuiteId::CHACHA20_POLY1305_COUNTER,
        SuiteId::AES_256_GCM_LFSR,
    ];
    let registered = registry.ids();
    let mut offer: Vec<SuiteId> = built_in
        .into_iter()
        .filter(|id| registered.contains(id))
        .collect();
    offer.extend(registered.into_iter().filter(|id| !built_in.contains(id)));
    offer
}

/// The operating system's randomness, for the engine.
pub(crate) struct SystemRandom;

impl confidant_engine::Random for SystemRandom {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String> {
        getrandom::fill(bytes)
            .map_err(|error| format!("the operating system gave no randomness: {error}"))
    }
}
