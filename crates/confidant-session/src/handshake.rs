//! From a key agreement to an established [`Session`], generic over the
//! [`KeyAgreement`] plugin.
//!
//! The initiator (holder) verifies the responder's bundle, agrees on a
//! secret, creates its session and seals its first message into the initial
//! message. The responder (issuer) derives the same secret, creates its
//! session and opens the first message; if that fails, the new session is
//! discarded, as X3DH requires. The same two calls perform a **session
//! reset**: the new session simply replaces the old one, with fresh keys and
//! counters starting again at zero.

use crate::config::SessionConfig;
use crate::error::{OpenError, SealError, SessionError};
use crate::session::Session;
use confidant_core::wire::{InitialMessage, PreKeyBundle};
use confidant_core::{ConnectionId, KeyAgreement, Role, SuiteId, SuiteRegistry, UnknownSuite};
use thiserror::Error;
use zeroize::Zeroizing;

/// A handshake failed. No session was created.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HandshakeError<E: std::error::Error + 'static> {
    /// The key agreement refused (bad bundle, identity mismatch, …).
    #[error("key agreement failed: {0}")]
    KeyAgreement(#[source] E),
    /// None of the bundle's suites is registered here.
    #[error("no suite offered by the responder ({offered:?}) is registered")]
    NoCommonSuite {
        /// The suites the bundle offered.
        offered: Vec<u32>,
    },
    /// The initial message names a suite that is not registered, or one the
    /// responder did not offer.
    #[error(transparent)]
    UnknownSuite(#[from] UnknownSuite),
    /// The initial message carries no first message, or its first message
    /// names another suite.
    #[error("initial message is malformed: {0}")]
    MalformedInitialMessage(&'static str),
    /// The session could not be set up.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The first message could not be sealed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The first message did not open: the agreed secrets differ, or the
    /// message was tampered with.
    #[error("first message did not open: {0}")]
    FirstMessage(#[source] OpenError),
    /// The initial message used no one-time pre-key, and the responder
    /// requires one (a replayed initial message without one would recreate
    /// the same session, keys and counters included); or, on the
    /// initiator's side, the bundle carries none and the initiator requires
    /// one.
    #[error("no one-time pre-key was used; one is required")]
    OneTimePreKeyRequired,
    /// A reset would replace the session with one between other parties
    /// (another initiator identity): refused, or the relay could take the
    /// connection over by running X3DH itself.
    #[error("the new session is not between the same parties as the one it would replace")]
    OtherParties,
}

/// What the initiator accepts in a bundle.
#[derive(Debug, Clone, Copy)]
pub struct InitiatorPolicy<'a> {
    /// The binding the responder signed the offer over (the runtime uses the
    /// connection id with the invitation's token or with the nonce of the
    /// reset request the bundle answers). A bundle signed over anything else
    /// is refused.
    pub binding: &'a [u8],
    /// Refuse a bundle without a one-time pre-key. On by default, as on the
    /// responder's side: without one, the session's forward secrecy rests on
    /// the signed pre-key alone, and a relay that stripped it (were the
    /// offer unsigned) would leave the responder refusing the initial
    /// message.
    pub require_one_time_pre_key: bool,
}

impl Default for InitiatorPolicy<'_> {
    fn default() -> Self {
        Self {
            binding: &[],
            require_one_time_pre_key: true,
        }
    }
}

/// The suite an initiator picks: the responder's most preferred suite that
/// is registered here (the offer's order is the responder's, and it is
/// signed). An empty offer stands for the default suite.
pub fn choose_suite(offered: &[u32], registry: &SuiteRegistry) -> Option<SuiteId> {
    if offered.is_empty() {
        let default = SuiteId::AES_256_GCM_SHA256_COUNTER;
        return registry.get(default).ok().map(|_| default);
    }
    offered
        .iter()
        .map(|&id| SuiteId(id))
        .find(|&id| registry.get(id).is_ok())
}

/// Initiator: verifies `bundle` against the responder identity learned out
/// of band and its offer signature against `policy.binding`, agrees on a
/// secret, and returns the new session with the initial message (carrying
/// `first_plaintext` sealed) to send.
#[allow(clippy::too_many_arguments)]
pub fn initiate<K: KeyAgreement>(
    key_agreement: &K,
    initiator_keys: &K::InitiatorKeys,
    expected_responder_identity: &[u8],
    bundle: &PreKeyBundle,
    policy: InitiatorPolicy<'_>,
    registry: &SuiteRegistry,
    connection_id: ConnectionId,
    first_plaintext: &[u8],
    config: SessionConfig,
) -> Result<(Session, InitialMessage), HandshakeError<K::Error>> {
    let suite_id =
        choose_suite(&bundle.suites, registry).ok_or_else(|| HandshakeError::NoCommonSuite {
            offered: bundle.suites.clone(),
        })?;
    let suite = registry.get(suite_id)?;
    let (agreed, mut initial) = key_agreement
        .initiate(
            initiator_keys,
            expected_responder_identity,
            bundle,
            suite_id,
            policy.binding,
        )
        .map_err(HandshakeError::KeyAgreement)?;
    // After the key agreement's checks, so that a bundle swapped or altered
    // by the relay is reported as such.
    if policy.require_one_time_pre_key && agreed.one_time_pre_key_id().is_none() {
        return Err(HandshakeError::OneTimePreKeyRequired);
    }
    let mut session = Session::new(Role::Initiator, connection_id, suite, &agreed, config)?;
    initial.suite = suite_id.0;
    initial.first_message = Some(session.seal(first_plaintext)?);
    Ok((session, initial))
}

/// What the responder gets from a valid initial message.
pub struct Responded {
    /// The new session.
    pub session: Session,
    /// The plaintext of the initiator's first message. Store it (for example
    /// as an inbox entry) in the same transaction as the session: the
    /// session already counts it as received.
    pub first_plaintext: Zeroizing<Vec<u8>>,
    /// The one-time pre-key the agreement used: delete it in the same
    /// transaction that stores `session`.
    pub one_time_pre_key_id: Option<u32>,
    /// The one-time KEM pre-key a hybrid agreement used (see
    /// [`AgreedSecret::one_time_kem_pre_key_id`](confidant_core::AgreedSecret::one_time_kem_pre_key_id)):
    /// delete it in the same transaction too.
    pub one_time_kem_pre_key_id: Option<u32>,
}

impl std::fmt::Debug for Responded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responded")
            .field("session", &self.session)
            .field("first_plaintext_len", &self.first_plaintext.len())
            .field("one_time_pre_key_id", &self.one_time_pre_key_id)
            .field("one_time_kem_pre_key_id", &self.one_time_kem_pre_key_id)
            .finish()
    }
}

/// What the responder accepts in an initial message.
#[derive(Debug, Clone, Copy)]
pub struct ResponderPolicy<'a> {
    /// The suites the responder put in its bundle; a suite outside them is
    /// refused even if registered. Empty: any registered suite.
    pub offered: &'a [SuiteId],
    /// Refuse initial messages that used no one-time pre-key. On by default:
    /// a one-time pre-key is deleted when its session is stored, so a
    /// replayed initial message then fails; without one, a replay would
    /// recreate the very same session (keys, counters, first message).
    pub require_one_time_pre_key: bool,
    /// For a session reset: the session being replaced. The new one must be
    /// between the same parties (same connection, identities and associated
    /// data), or the relay could take the connection over with its own
    /// identity key.
    pub replacing: Option<&'a Session>,
}

impl Default for ResponderPolicy<'_> {
    fn default() -> Self {
        Self {
            offered: &[],
            require_one_time_pre_key: true,
            replacing: None,
        }
    }
}

/// Responder: derives the secret from `initial`, creates the session and
/// opens the first message. Nothing is kept if any step fails.
pub fn respond<K: KeyAgreement>(
    key_agreement: &K,
    responder_keys: &K::ResponderKeys,
    initial: &InitialMessage,
    policy: ResponderPolicy<'_>,
    registry: &SuiteRegistry,
    connection_id: ConnectionId,
    config: SessionConfig,
) -> Result<Responded, HandshakeError<K::Error>> {
    let first = initial
        .first_message
        .clone()
        .ok_or(HandshakeError::MalformedInitialMessage("no first message"))?;
    if first.suite != initial.suite {
        return Err(HandshakeError::MalformedInitialMessage(
            "first message uses another suite than the initial message",
        ));
    }
    if policy.require_one_time_pre_key && initial.one_time_pre_key_id.is_none() {
        return Err(HandshakeError::OneTimePreKeyRequired);
    }
    let suite_id = SuiteId(initial.suite);
    if !policy.offered.is_empty() && !policy.offered.contains(&suite_id) {
        return Err(UnknownSuite(suite_id).into());
    }
    let suite = registry.get(suite_id)?;
    let agreed = key_agreement
        .respond(responder_keys, initial)
        .map_err(HandshakeError::KeyAgreement)?;
    let mut session = Session::new(Role::Responder, connection_id, suite, &agreed, config)?;
    if policy
        .replacing
        .is_some_and(|old| !session.same_parties(old))
    {
        return Err(HandshakeError::OtherParties);
    }
    let first_plaintext = session.open(first).map_err(HandshakeError::FirstMessage)?;
    Ok(Responded {
        session,
        first_plaintext: Zeroizing::new(first_plaintext),
        one_time_pre_key_id: agreed.one_time_pre_key_id(),
        one_time_kem_pre_key_id: agreed.one_time_kem_pre_key_id(),
    })
}
