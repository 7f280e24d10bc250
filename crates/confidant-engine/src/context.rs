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
use zeroize::Zeroizing;

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
///
/// Every key agreement over [`ResponderKeys`] and [`IdentityKeyPair`] is one
/// (a blanket implementation: classical X3DH, or a user's own over the
/// same keys). An agreement that needs key material beyond X3DH's — the
/// X3DH + ML-KEM-768 hybrid ([`crate::hybrid::Hybrid`]) and its signed
/// KEM pre-keys — mints it with [`new_signed_extra`](Self::new_signed_extra)
/// and [`new_one_time_extra`](Self::new_one_time_extra): the engine stores
/// each *extra* in the same batch as the pre-key it belongs to, hands the
/// one-time one back to [`bundle`](Self::bundle) and
/// [`respond`](Self::respond), and deletes it in the transaction that
/// stores the session, as it does the one-time pre-key.
pub trait Handshaker: Send + Sync + 'static {
    /// The key material to keep beside a new signed pre-key (the hybrid: its
    /// signed last-resort KEM pre-key), in a form the agreement reads back;
    /// `None`, the default, when it needs none.
    fn new_signed_extra(
        &self,
        identity: &IdentityKeyPair,
        signed_pre_key_id: u32,
        random: &dyn Random,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HandshakeFailure> {
        let _ = (identity, signed_pre_key_id, random);
        Ok(None)
    }

    /// The key material to keep beside a new one-time pre-key (the hybrid:
    /// a signed one-time KEM pre-key); `None`, the default, when it needs
    /// none.
    fn new_one_time_extra(
        &self,
        identity: &IdentityKeyPair,
        one_time_pre_key_id: u32,
        random: &dyn Random,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HandshakeFailure> {
        let _ = (identity, one_time_pre_key_id, random);
        Ok(None)
    }

    /// Whether a finished handshake's initial message made a post-quantum
    /// session (the hybrid's KEM part was in it).
    fn is_post_quantum(&self, initial: &InitialMessage) -> bool {
        initial.kem_pre_key_id.is_some()
    }

    /// The responder's bundle offering `suites`, its offer signed over
    /// `binding`; `keys` hold the one one-time pre-key to offer, and
    /// `one_time_extra` what [`new_one_time_extra`](Self::new_one_time_extra)
    /// minted beside it (`None` if nothing was).
    fn bundle(
        &self,
        keys: &ResponderKeys,
        one_time_extra: Option<&[u8]>,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<PreKeyBundle, HandshakeFailure>;

    /// The initiator's side: checks `bundle` against `expected` and
    /// `binding`, and seals `first` into the initial message.
    /// `hybrid_required`: the invitation said the inviter has the
    /// post-quantum hybrid, so an agreement that knows the hybrid refuses a
    /// bundle without it ([`HandshakeFailure::HybridStripped`]) whatever
    /// its own setting; a classical agreement ignores it.
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
        hybrid_required: bool,
    ) -> Result<(Session, InitialMessage), HandshakeFailure>;

    /// The responder's side: answers `initial` under `policy`, with the
    /// one-time pre-key it names in `keys` and its extra, if any.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        keys: &ResponderKeys,
        one_time_extra: Option<&[u8]>,
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
        _one_time_extra: Option<&[u8]>,
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
        _hybrid_required: bool,
    ) -> Result<(Session, InitialMessage), HandshakeFailure> {
        initiate_with(
            self,
            identity,
            expected,
            bundle,
            binding,
            registry,
            connection_id,
            first,
            config,
        )
    }

    fn respond(
        &self,
        keys: &ResponderKeys,
        _one_time_extra: Option<&[u8]>,
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

/// The initiator's side with any key agreement over an identity key pair:
/// the bundle must offer a one-time pre-key and be bound to `binding`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn initiate_with<K>(
    agreement: &K,
    identity: &IdentityKeyPair,
    expected: &[u8],
    bundle: &PreKeyBundle,
    binding: &[u8],
    registry: &SuiteRegistry,
    connection_id: ConnectionId,
    first: &[u8],
    config: SessionConfig,
) -> Result<(Session, InitialMessage), HandshakeFailure>
where
    K: KeyAgreement<InitiatorKeys = IdentityKeyPair>,
{
    handshake::initiate(
        agreement,
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
