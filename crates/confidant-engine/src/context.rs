//! What every connection of a node shares: the suites, the key agreement,
//! the node's keys, the protocol's settings and a source of randomness.
//! The engine takes nothing else from its surroundings: no clock, no
//! thread, no store handle for writing.

use crate::failure::HandshakeFailure;
use confidant_core::wire::{InitialMessage, PreKeyBundle};
use confidant_core::{ConnectionId, KeyAgreement, SuiteId, SuiteRegistry};
use confidant_session::handshake::{self, InitiatorPolicy, Responded, ResponderPolicy};
use confidant_session::{Session, SessionConfig};
use confidant_store::DEFAULT_RESERVATION_BLOCK;
use confidant_x3dh::{IdentityKeyPair, ResponderKeys};
use std::sync::Arc;

/// The protocol's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProtocolConfig {
    /// Suites offered in bundles, most preferred first (must not be empty).
    pub offered_suites: Vec<SuiteId>,
    /// The sessions' settings (key update and integrity limits).
    pub session: SessionConfig,
    /// Counters reserved per durable commit.
    pub reservation_block: u64,
    /// Longest envelope taken from the relay.
    pub max_envelope_len: usize,
}

impl ProtocolConfig {
    /// Settings offering `offered_suites`, with the default session
    /// settings, reservation block and envelope limit.
    pub fn new(offered_suites: Vec<SuiteId>) -> Self {
        Self {
            offered_suites,
            session: SessionConfig::default(),
            reservation_block: DEFAULT_RESERVATION_BLOCK,
            max_envelope_len: confidant_core::wire::DEFAULT_MAX_ENVELOPE_LEN,
        }
    }

    /// With these session settings.
    pub fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// With this reservation block (at least 1).
    pub fn with_reservation_block(mut self, counters: u64) -> Self {
        self.reservation_block = counters;
        self
    }

    /// With this envelope limit.
    pub fn with_max_envelope_len(mut self, bytes: usize) -> Self {
        self.max_envelope_len = bytes;
        self
    }
}

/// The random bytes the engine needs (reset nonces, one-time pre-keys and
/// their ids), given by its driver: the runtime passes the operating
/// system's, the browser build Web Crypto's, a test a seeded generator.
/// (The key agreement plugin draws its own ephemeral keys.)
pub trait Random: Send + Sync + 'static {
    /// Fills `bytes` with random bytes, or says why it cannot.
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String>;
}

/// Everything the engine's connections share.
pub struct Context {
    /// The registered suites.
    pub registry: Arc<SuiteRegistry>,
    /// The key agreement.
    pub agreement: Arc<dyn Handshaker>,
    /// The node's identity and current signed pre-key, without one-time
    /// pre-keys (those are added per handshake).
    pub keys: ResponderKeys,
    /// The protocol's settings.
    pub config: ProtocolConfig,
    /// Randomness.
    pub random: Arc<dyn Random>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field(
                "identity_key",
                &hex::encode(self.keys.identity_public_key().to_bytes()),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The node's identity key pair.
    pub fn identity(&self) -> &IdentityKeyPair {
        self.keys.identity()
    }
}

/// A key agreement over X3DH's key types, with its error type erased, so
/// the engine and its drivers need no type parameter.
pub trait Handshaker: Send + Sync + 'static {
    /// The responder's bundle offering `suites`, its offer signed over
    /// `binding`.
    fn bundle(
        &self,
        keys: &ResponderKeys,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<PreKeyBundle, HandshakeFailure>;

    /// The initiator's side: checks `bundle` against `expected` and
    /// `binding`, and seals `first` into the initial message.
    #[allow(clippy::too_many_arguments)]
    fn initiate(
        &self,
        identity: &IdentityKeyPair,
        expected: &[u8],
        bundle: &PreKeyBundle,
        binding: &[u8],
        registry: &SuiteRegistry,
        connection_id: ConnectionId,
        first: &[u8],
        config: SessionConfig,
    ) -> Result<(Session, InitialMessage), HandshakeFailure>;

    /// The responder's side: answers `initial` under `policy`.
    fn respond(
        &self,
        keys: &ResponderKeys,
        initial: &InitialMessage,
        policy: ResponderPolicy<'_>,
        registry: &SuiteRegistry,
        connection_id: ConnectionId,
        config: SessionConfig,
    ) -> Result<Responded, HandshakeFailure>;
}

impl<K> Handshaker for K
where
    K: KeyAgreement<ResponderKeys = ResponderKeys, InitiatorKeys = IdentityKeyPair>,
{
    fn bundle(
        &self,
        keys: &ResponderKeys,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<PreKeyBundle, HandshakeFailure> {
        KeyAgreement::bundle(self, keys, suites, binding)
            .map_err(|error| HandshakeFailure::from_key_agreement(&error))
    }

    fn initiate(
        &self,
        identity: &IdentityKeyPair,
        expected: &[u8],
        bundle: &PreKeyBundle,
        binding: &[u8],
        registry: &SuiteRegistry,
        connection_id: ConnectionId,
        first: &[u8],
        config: SessionConfig,
    ) -> Result<(Session, InitialMessage), HandshakeFailure> {
        handshake::initiate(
            self,
            identity,
            expected,
            bundle,
            InitiatorPolicy {
                binding,
                require_one_time_pre_key: true,
            },
            registry,
            connection_id,
            first,
            config,
        )
        .map_err(HandshakeFailure::from)
    }

    fn respond(
        &self,
        keys: &ResponderKeys,
        initial: &InitialMessage,
        policy: ResponderPolicy<'_>,
        registry: &SuiteRegistry,
        connection_id: ConnectionId,
        config: SessionConfig,
    ) -> Result<Responded, HandshakeFailure> {
        handshake::respond(self, keys, initial, policy, registry, connection_id, config)
            .map_err(HandshakeFailure::from)
    }
}
