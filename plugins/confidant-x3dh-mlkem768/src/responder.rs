//! The responder's keys for the hybrid: the classical X3DH
//! [`ResponderKeys`] plus its signed ML-KEM-768 pre-keys.

use crate::bundle::{HybridPreKeyBundle, PublicKemPreKey, hybrid_offer_transcript};
use crate::error::HybridError;
use crate::kem::{KemPreKey, KemPreKeyKind};
use confidant_core::SuiteId;
use confidant_x3dh::ResponderKeys;
use std::collections::BTreeMap;
use std::fmt;

/// Everything the responder (the issuer) needs to answer hybrid and, where
/// allowed, classical initial messages: the classical [`ResponderKeys`]
/// (identity, signed and one-time pre-keys), its signed last-resort KEM
/// pre-keys (the newest is the *current* one, advertised in bundles; older
/// ones stay until removed, for initial messages in flight) and its signed
/// one-time KEM pre-keys.
///
/// KEM pre-key ids are unique across both kinds: the initial message names
/// only the id. As with one-time pre-keys,
/// [`X3dhMlKem768::respond`](crate::X3dhMlKem768) does not delete a
/// one-time KEM pre-key: it reports it in
/// [`AgreedSecret::one_time_kem_pre_key_id`](confidant_core::AgreedSecret::one_time_kem_pre_key_id),
/// for the store to delete in the transaction that creates the session,
/// then [`consume_one_time_kem_pre_key`](Self::consume_one_time_kem_pre_key).
#[derive(Clone)]
pub struct HybridResponderKeys {
    classical: ResponderKeys,
    current_last_resort: KemPreKey,
    older_last_resort: BTreeMap<u32, KemPreKey>,
    one_time: BTreeMap<u32, KemPreKey>,
}

impl HybridResponderKeys {
    /// The classical keys with a first signed last-resort KEM pre-key,
    /// which becomes the current one. Its signature must verify under the
    /// identity key ([`HybridError::ForeignKemPreKey`]) and its kind must
    /// be last-resort ([`HybridError::WrongKemPreKeyKind`]).
    pub fn new(classical: ResponderKeys, last_resort: KemPreKey) -> Result<Self, HybridError> {
        check(&classical, &last_resort, KemPreKeyKind::LastResort)?;
        Ok(Self {
            classical,
            current_last_resort: last_resort,
            older_last_resort: BTreeMap::new(),
            one_time: BTreeMap::new(),
        })
    }

    /// The classical keys.
    pub fn classical(&self) -> &ResponderKeys {
        &self.classical
    }

    /// The classical keys, to add or consume classical pre-keys.
    pub fn classical_mut(&mut self) -> &mut ResponderKeys {
        &mut self.classical
    }

    /// Replaces the classical keys (with the one-time pre-key of one
    /// handshake added, say), keeping the KEM pre-keys. Their signatures
    /// are checked again, and the call fails as [`new`](Self::new) would,
    /// only if the identity key differs.
    pub fn set_classical(&mut self, classical: ResponderKeys) -> Result<(), HybridError> {
        if classical.identity_public_key().to_bytes()
            != self.classical.identity_public_key().to_bytes()
        {
            check(
                &classical,
                &self.current_last_resort,
                KemPreKeyKind::LastResort,
            )?;
            for key in self.older_last_resort.values() {
                check(&classical, key, KemPreKeyKind::LastResort)?;
            }
            for key in self.one_time.values() {
                check(&classical, key, KemPreKeyKind::OneTime)?;
            }
        }
        self.classical = classical;
        Ok(())
    }

    fn holds(&self, id: u32) -> bool {
        self.kem_pre_key(id).is_some()
    }

    /// Adds a signed last-resort KEM pre-key and makes it the current one;
    /// the previous ones stay until
    /// [`remove_last_resort_kem_pre_key`](Self::remove_last_resort_kem_pre_key).
    pub fn add_last_resort_kem_pre_key(&mut self, key: KemPreKey) -> Result<(), HybridError> {
        check(&self.classical, &key, KemPreKeyKind::LastResort)?;
        if self.holds(key.id()) {
            return Err(HybridError::DuplicateKemPreKeyId { id: key.id() });
        }
        let previous = std::mem::replace(&mut self.current_last_resort, key);
        self.older_last_resort.insert(previous.id(), previous);
        Ok(())
    }

    /// Removes (and returns) an older last-resort KEM pre-key; the current
    /// one cannot be removed ([`HybridError::CurrentKemPreKey`]).
    pub fn remove_last_resort_kem_pre_key(
        &mut self,
        id: u32,
    ) -> Result<Option<KemPreKey>, HybridError> {
        if id == self.current_last_resort.id() {
            return Err(HybridError::CurrentKemPreKey { id });
        }
        Ok(self.older_last_resort.remove(&id))
    }

    /// The last-resort KEM pre-key advertised when no one-time one is
    /// offered.
    pub fn current_last_resort_kem_pre_key(&self) -> &KemPreKey {
        &self.current_last_resort
    }

    /// Adds a signed one-time KEM pre-key; its id must be new.
    pub fn add_one_time_kem_pre_key(&mut self, key: KemPreKey) -> Result<(), HybridError> {
        check(&self.classical, &key, KemPreKeyKind::OneTime)?;
        if self.holds(key.id()) {
            return Err(HybridError::DuplicateKemPreKeyId { id: key.id() });
        }
        self.one_time.insert(key.id(), key);
        Ok(())
    }

    /// Removes and returns a one-time KEM pre-key. After this, an initial
    /// message naming it fails with [`HybridError::UnknownKemPreKey`].
    pub fn consume_one_time_kem_pre_key(&mut self, id: u32) -> Option<KemPreKey> {
        self.one_time.remove(&id)
    }

    /// The ids of the one-time KEM pre-keys held, in increasing order.
    pub fn one_time_kem_pre_key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.one_time.keys().copied()
    }

    /// The KEM pre-key with this id, of either kind, if held.
    pub fn kem_pre_key(&self, id: u32) -> Option<&KemPreKey> {
        if self.current_last_resort.id() == id {
            return Some(&self.current_last_resort);
        }
        self.older_last_resort
            .get(&id)
            .or_else(|| self.one_time.get(&id))
    }

    /// A hybrid bundle: the classical bundle (current signed pre-key,
    /// optionally the one-time pre-key `one_time_pre_key_id`, the suites,
    /// its classical offer signed over `binding`), the one-time KEM pre-key
    /// `one_time_kem_pre_key_id` or, if `None`, the current last-resort KEM
    /// pre-key, and the hybrid offer signed over `binding` (see
    /// [`hybrid_offer_transcript`]).
    ///
    /// The classical offer signature stays, so a classical initiator that
    /// ignores the hybrid's fields can still check the bundle and, if the
    /// responder allows it, connect classically.
    pub fn bound_bundle(
        &self,
        one_time_pre_key_id: Option<u32>,
        one_time_kem_pre_key_id: Option<u32>,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<HybridPreKeyBundle, HybridError> {
        let classical = self
            .classical
            .bound_bundle(one_time_pre_key_id, suites, binding)?;
        let kem = match one_time_kem_pre_key_id {
            None => &self.current_last_resort,
            Some(id) => self
                .one_time
                .get(&id)
                .ok_or(HybridError::UnknownKemPreKey { id })?,
        };
        let transcript = hybrid_offer_transcript(
            &classical.offer_transcript(binding),
            kem.id(),
            kem.kind(),
            kem.public_key(),
        );
        let hybrid_offer_signature = self.classical.identity().sign(&transcript);
        Ok(HybridPreKeyBundle::new(
            classical,
            Some(PublicKemPreKey {
                id: kem.id(),
                kind: kem.kind(),
                public_key: kem.public_key().clone(),
                signature: kem.signature(),
            }),
            Some(hybrid_offer_signature),
        ))
    }
}

fn check(
    classical: &ResponderKeys,
    key: &KemPreKey,
    expected: KemPreKeyKind,
) -> Result<(), HybridError> {
    if key.kind() != expected {
        return Err(HybridError::WrongKemPreKeyKind { id: key.id() });
    }
    key.check_signature(classical.identity_public_key())
}

impl fmt::Debug for HybridResponderKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridResponderKeys")
            .field("classical", &self.classical)
            .field(
                "current_last_resort_kem_pre_key_id",
                &self.current_last_resort.id(),
            )
            .field(
                "older_last_resort_kem_pre_key_ids",
                &self.older_last_resort.keys().collect::<Vec<_>>(),
            )
            .field(
                "one_time_kem_pre_key_ids",
                &self.one_time.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
