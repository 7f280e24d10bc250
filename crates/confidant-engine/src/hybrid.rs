//! The X3DH + ML-KEM-768 hybrid ([`X3dhMlKem768`], PQXDH-style) as the
//! engine's key agreement: [`Hybrid`].
//!
//! Its key material beyond X3DH's is kept as the engine's *extras* (see
//! [`crate::extras`]): beside each signed pre-key `n` a signed last-resort
//! KEM pre-key with id `2³¹ + n` (rotated with it), and beside each
//! one-time pre-key a signed one-time KEM pre-key with the same id, minted
//! with it for one bundle and deleted with it in the transaction that
//! stores the session. Every bundle the engine sends offers the one-time
//! KEM pre-key of its one-time pre-key; the last-resort one is offered only
//! for a one-time pre-key stored without one (written by a classical node
//! before it turned the hybrid on).

use crate::binding::ONE_TIME_ID_LIMIT;
use crate::context::{Handshaker, Random, initiate_with};
use crate::error::EngineError;
use crate::extras;
use crate::failure::HandshakeFailure;
use confidant_core::wire::{InitialMessage, PreKeyBundle};
use confidant_core::{ConnectionId, SuiteId, SuiteRegistry};
use confidant_session::handshake::{self, Responded, ResponderPolicy};
use confidant_session::{Session, SessionConfig};
use confidant_store::RawStore;
use confidant_x3dh::{IdentityKeyPair, ResponderKeys};
use confidant_x3dh_mlkem768::{
    HybridError, HybridResponderKeys, KEM_SEED_LEN, KemKeyPair, KemPreKey, KemPreKeyKind,
    X3dhMlKem768,
};
use zeroize::Zeroizing;

/// The id of the last-resort KEM pre-key kept beside signed pre-key
/// `signed_pre_key_id`: `2³¹ + signed_pre_key_id`, above every one-time
/// id ([`ONE_TIME_ID_LIMIT`]).
pub fn last_resort_id(signed_pre_key_id: u32) -> u32 {
    ONE_TIME_ID_LIMIT | signed_pre_key_id
}

fn failure(error: &HybridError) -> HandshakeFailure {
    HandshakeFailure::from_key_agreement(error)
}

/// The hybrid with the node's last-resort KEM pre-keys: build it with
/// [`Hybrid::load`] after the node's keys are in the store (and again after
/// each rotation), and give it as the [`Context`](crate::Context)'s
/// agreement. [`Hybrid::new`] gives one without keys, which can mint KEM
/// pre-keys (for [`crate::setup::rotate_signed_pre_keys`]) and initiate,
/// but neither make a bundle nor answer one.
pub struct Hybrid {
    agreement: X3dhMlKem768,
    /// The node's keys with every last-resort KEM pre-key, no one-time
    /// ones: each handshake clones it and adds its own.
    base: Option<HybridResponderKeys>,
}

impl std::fmt::Debug for Hybrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hybrid")
            .field("require_hybrid", &self.agreement.require_hybrid())
            .field("allow_classical", &self.agreement.allow_classical())
            .field("keys", &self.base)
            .finish()
    }
}

impl Hybrid {
    /// The hybrid without the node's keys (see the type's docs).
    pub fn new(agreement: X3dhMlKem768) -> Self {
        Self {
            agreement,
            base: None,
        }
    }

    /// The hybrid over `keys` (the node's identity and signed pre-keys, as
    /// in the context) and the last-resort KEM pre-keys stored beside the
    /// signed pre-keys. Every signed pre-key must have one
    /// ([`crate::setup::rotate_signed_pre_keys`] mints missing ones); a stored
    /// key that does not decode or is not signed by this identity is an
    /// error.
    pub fn load(
        agreement: X3dhMlKem768,
        store: &dyn RawStore,
        keys: &ResponderKeys,
    ) -> Result<Self, EngineError> {
        let stored = extras::signed(store)?;
        let mut last_resort = Vec::with_capacity(stored.len());
        for id in keys.signed_pre_key_ids() {
            let Some((_, bytes)) = stored.iter().find(|(stored, _)| *stored == id) else {
                return Err(EngineError::Store(
                    confidant_store::StoreError::Inconsistent(
                        "a signed pre-key has no last-resort KEM pre-key",
                    ),
                ));
            };
            let key = KemPreKey::from_storage_bytes(bytes).map_err(|error| {
                EngineError::Store(confidant_store::StoreError::Corrupt(format!(
                    "stored last-resort KEM pre-key: {error}"
                )))
            })?;
            if key.id() != last_resort_id(id) || key.kind() != KemPreKeyKind::LastResort {
                return Err(EngineError::Store(confidant_store::StoreError::Corrupt(
                    "a stored last-resort KEM pre-key has the wrong id or kind".into(),
                )));
            }
            last_resort.push(key);
        }
        // The current signed pre-key's KEM pre-key is the current one.
        let current = keys.current_signed_pre_key().id();
        last_resort.sort_by_key(|key| (key.id() == last_resort_id(current), key.id()));
        let mut last_resort = last_resort.into_iter();
        let first = last_resort.next().ok_or(EngineError::Store(
            confidant_store::StoreError::Inconsistent("no signed pre-key"),
        ))?;
        let corrupt = |error: HybridError| {
            EngineError::Store(confidant_store::StoreError::Corrupt(format!(
                "stored KEM pre-key: {error}"
            )))
        };
        let mut base = HybridResponderKeys::new(keys.clone(), first).map_err(corrupt)?;
        for key in last_resort {
            base.add_last_resort_kem_pre_key(key).map_err(corrupt)?;
        }
        Ok(Self {
            agreement,
            base: Some(base),
        })
    }

    /// The plugin and its settings (`require_hybrid`, `allow_classical`).
    pub fn agreement(&self) -> &X3dhMlKem768 {
        &self.agreement
    }

    /// The responder's keys for one handshake: `keys` (with its one-time
    /// pre-key), every last-resort KEM pre-key, and the one-time KEM
    /// pre-key in `extra`.
    fn responder_keys(
        &self,
        keys: &ResponderKeys,
        extra: Option<&[u8]>,
    ) -> Result<HybridResponderKeys, HybridError> {
        let mut responder = self.base.clone().ok_or(HybridError::Internal(
            "the node's KEM pre-keys are not loaded",
        ))?;
        responder.set_classical(keys.clone())?;
        if let Some(extra) = extra {
            responder.add_one_time_kem_pre_key(KemPreKey::from_storage_bytes(extra)?)?;
        }
        Ok(responder)
    }

    fn new_kem_pre_key(
        identity: &IdentityKeyPair,
        id: u32,
        kind: KemPreKeyKind,
        random: &dyn Random,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HandshakeFailure> {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        random
            .fill(seed.as_mut())
            .map_err(|error| HandshakeFailure::KeyAgreement(format!("no randomness: {error}")))?;
        let key = KemPreKey::new(identity, id, kind, KemKeyPair::from_seed_bytes(&seed));
        key.to_storage_bytes()
            .map(Some)
            .ok_or_else(|| HandshakeFailure::KeyAgreement("a KEM key without a seed".into()))
    }
}

impl Handshaker for Hybrid {
    fn new_signed_extra(
        &self,
        identity: &IdentityKeyPair,
        signed_pre_key_id: u32,
        random: &dyn Random,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HandshakeFailure> {
        if signed_pre_key_id >= ONE_TIME_ID_LIMIT {
            return Err(HandshakeFailure::KeyAgreement(
                "signed pre-key ids of the hybrid stay below 2^31".into(),
            ));
        }
        Self::new_kem_pre_key(
            identity,
            last_resort_id(signed_pre_key_id),
            KemPreKeyKind::LastResort,
            random,
        )
    }

    fn new_one_time_extra(
        &self,
        identity: &IdentityKeyPair,
        one_time_pre_key_id: u32,
        random: &dyn Random,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HandshakeFailure> {
        if one_time_pre_key_id >= ONE_TIME_ID_LIMIT {
            return Err(HandshakeFailure::KeyAgreement(
                "one-time pre-key ids stay below 2^31".into(),
            ));
        }
        Self::new_kem_pre_key(
            identity,
            one_time_pre_key_id,
            KemPreKeyKind::OneTime,
            random,
        )
    }

    fn bundle(
        &self,
        keys: &ResponderKeys,
        one_time_extra: Option<&[u8]>,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<PreKeyBundle, HandshakeFailure> {
        let responder = self
            .responder_keys(keys, one_time_extra)
            .map_err(|error| failure(&error))?;
        let one_time = keys.one_time_pre_key_ids().next();
        let one_time_kem = responder.one_time_kem_pre_key_ids().next();
        responder
            .bound_bundle(one_time, one_time_kem, suites, binding)
            .map(|bundle| bundle.to_wire())
            .map_err(|error| failure(&error))
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
        hybrid_required: bool,
    ) -> Result<(Session, InitialMessage), HandshakeFailure> {
        let strict;
        let agreement = if hybrid_required && !self.agreement.require_hybrid() {
            strict = self.agreement.clone().with_require_hybrid(true);
            &strict
        } else {
            &self.agreement
        };
        initiate_with(
            agreement,
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
        one_time_extra: Option<&[u8]>,
        initial: &InitialMessage,
        policy: ResponderPolicy<'_>,
        registry: &SuiteRegistry,
        connection_id: ConnectionId,
        config: SessionConfig,
    ) -> Result<Responded, HandshakeFailure> {
        let responder = self
            .responder_keys(keys, one_time_extra)
            .map_err(|error| failure(&error))?;
        handshake::respond(
            &self.agreement,
            &responder,
            initial,
            policy,
            registry,
            connection_id,
            config,
        )
        .map_err(HandshakeFailure::from)
    }
}
