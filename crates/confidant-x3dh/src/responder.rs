//! The responder's key store: identity, signed pre-keys and one-time
//! pre-keys, each found by id.

use crate::agreement::{DhOutputs, X3dhConfig};
use crate::bundle::{PreKeyBundle, PublicOneTimePreKey};
use crate::error::{DhStep, X3dhError};
use crate::initial::InitialMessageHeader;
use crate::keys::{
    Hex, IdentityKeyPair, IdentityPublicKey, OneTimePreKey, SignedPreKey, diffie_hellman,
};
use confidant_core::{AgreedSecret, SuiteId};
use std::collections::BTreeMap;
use std::fmt;

/// Everything the responder (Bob; the issuer in Confidant) needs to answer
/// initial messages: its identity key pair, its signed pre-keys by id (the
/// newest is the *current* one, advertised in bundles; older ones stay until
/// removed, so initial messages already in flight still succeed), and its
/// one-time pre-keys by id.
///
/// [`respond`](Self::respond) does **not** delete the one-time pre-key it
/// uses: it reports the id in [`AgreedSecret::one_time_pre_key_id`], and the
/// storage layer deletes the key in the same transaction that creates the
/// session (then calls
/// [`consume_one_time_pre_key`](Self::consume_one_time_pre_key) on the
/// in-memory copy). [`respond_and_consume`](Self::respond_and_consume) does
/// both for callers without a store.
#[derive(Clone)]
pub struct ResponderKeys {
    identity: IdentityKeyPair,
    identity_public_key: IdentityPublicKey,
    current_signed_pre_key: SignedPreKey,
    older_signed_pre_keys: BTreeMap<u32, SignedPreKey>,
    one_time_pre_keys: BTreeMap<u32, OneTimePreKey>,
}

impl ResponderKeys {
    /// A key store with an identity and its first signed pre-key, which
    /// becomes the current one.
    ///
    /// Fails with [`X3dhError::ForeignSignedPreKey`] when the signed
    /// pre-key's signature does not verify under `identity` (a key restored
    /// from the wrong store, or corrupted).
    pub fn new(identity: IdentityKeyPair, signed_pre_key: SignedPreKey) -> Result<Self, X3dhError> {
        let identity_public_key = identity.public_key();
        check_signed_pre_key(&identity_public_key, &signed_pre_key)?;
        Ok(Self {
            identity,
            identity_public_key,
            current_signed_pre_key: signed_pre_key,
            older_signed_pre_keys: BTreeMap::new(),
            one_time_pre_keys: BTreeMap::new(),
        })
    }

    /// The identity key pair.
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// The identity public key `IK_B`, as put in the invitation.
    pub fn identity_public_key(&self) -> &IdentityPublicKey {
        &self.identity_public_key
    }

    /// Adds a signed pre-key and makes it the current one. The previous ones
    /// stay until [`remove_signed_pre_key`](Self::remove_signed_pre_key).
    pub fn add_signed_pre_key(&mut self, signed_pre_key: SignedPreKey) -> Result<(), X3dhError> {
        check_signed_pre_key(&self.identity_public_key, &signed_pre_key)?;
        let id = signed_pre_key.id();
        if self.signed_pre_key(id).is_some() {
            return Err(X3dhError::DuplicatePreKeyId { kind: "signed", id });
        }
        let previous = std::mem::replace(&mut self.current_signed_pre_key, signed_pre_key);
        self.older_signed_pre_keys.insert(previous.id(), previous);
        Ok(())
    }

    /// Removes (and returns) an older signed pre-key. The current one cannot
    /// be removed ([`X3dhError::CurrentSignedPreKey`]); `Ok(None)` when no
    /// key has this id.
    pub fn remove_signed_pre_key(&mut self, id: u32) -> Result<Option<SignedPreKey>, X3dhError> {
        if id == self.current_signed_pre_key.id() {
            return Err(X3dhError::CurrentSignedPreKey { id });
        }
        Ok(self.older_signed_pre_keys.remove(&id))
    }

    /// Makes the signed pre-key `id`, already held, the one advertised in
    /// bundles (for a store restoring its keys in any order).
    pub fn set_current_signed_pre_key(&mut self, id: u32) -> Result<(), X3dhError> {
        if id == self.current_signed_pre_key.id() {
            return Ok(());
        }
        let next = self
            .older_signed_pre_keys
            .remove(&id)
            .ok_or(X3dhError::UnknownSignedPreKey { id })?;
        let previous = std::mem::replace(&mut self.current_signed_pre_key, next);
        self.older_signed_pre_keys.insert(previous.id(), previous);
        Ok(())
    }

    /// The signed pre-key advertised in bundles.
    pub fn current_signed_pre_key(&self) -> &SignedPreKey {
        &self.current_signed_pre_key
    }

    /// The signed pre-key with this id, current or older, if held.
    pub fn signed_pre_key(&self, id: u32) -> Option<&SignedPreKey> {
        if self.current_signed_pre_key.id() == id {
            Some(&self.current_signed_pre_key)
        } else {
            self.older_signed_pre_keys.get(&id)
        }
    }

    /// The ids of the signed pre-keys held, in increasing order.
    pub fn signed_pre_key_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.older_signed_pre_keys.keys().copied().collect();
        ids.push(self.current_signed_pre_key.id());
        ids.sort_unstable();
        ids
    }

    /// Adds a one-time pre-key; its id must be new
    /// ([`X3dhError::DuplicatePreKeyId`] otherwise).
    pub fn add_one_time_pre_key(
        &mut self,
        one_time_pre_key: OneTimePreKey,
    ) -> Result<(), X3dhError> {
        let id = one_time_pre_key.id();
        if self.one_time_pre_keys.contains_key(&id) {
            return Err(X3dhError::DuplicatePreKeyId {
                kind: "one-time",
                id,
            });
        }
        self.one_time_pre_keys.insert(id, one_time_pre_key);
        Ok(())
    }

    /// Removes and returns the one-time pre-key with this id, if held. After
    /// this, an initial message naming it fails with
    /// [`X3dhError::UnknownOneTimePreKey`].
    pub fn consume_one_time_pre_key(&mut self, id: u32) -> Option<OneTimePreKey> {
        self.one_time_pre_keys.remove(&id)
    }

    /// The one-time pre-key with this id, if held.
    pub fn one_time_pre_key(&self, id: u32) -> Option<&OneTimePreKey> {
        self.one_time_pre_keys.get(&id)
    }

    /// Whether a one-time pre-key with this id is held.
    pub fn has_one_time_pre_key(&self, id: u32) -> bool {
        self.one_time_pre_keys.contains_key(&id)
    }

    /// The ids of the one-time pre-keys held, in increasing order.
    pub fn one_time_pre_key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.one_time_pre_keys.keys().copied()
    }

    /// A bundle with the current signed pre-key and no one-time pre-key,
    /// its offer signed with an empty binding.
    pub fn bundle(&self, suites: &[SuiteId]) -> PreKeyBundle {
        self.build_bundle(None, suites, &[])
    }

    /// A bundle with the current signed pre-key and, if `one_time_pre_key_id`
    /// names one, that one-time pre-key ([`X3dhError::UnknownOneTimePreKey`]
    /// if it is not held), its offer signed over `binding` (see
    /// [`offer_transcript`](crate::PreKeyBundle::offer_transcript)).
    pub fn bound_bundle(
        &self,
        one_time_pre_key_id: Option<u32>,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<PreKeyBundle, X3dhError> {
        let one_time = match one_time_pre_key_id {
            None => None,
            Some(id) => {
                let one_time = self
                    .one_time_pre_keys
                    .get(&id)
                    .ok_or(X3dhError::UnknownOneTimePreKey { id })?;
                Some(PublicOneTimePreKey {
                    id: one_time.id(),
                    public_key: one_time.public_key(),
                })
            }
        };
        Ok(self.build_bundle(one_time, suites, binding))
    }

    /// A bundle with the current signed pre-key and the one-time pre-key
    /// `one_time_pre_key_id` ([`X3dhError::UnknownOneTimePreKey`] if not
    /// held). Offering one key in two bundles is harmless but only the first
    /// initial message to use it succeeds.
    pub fn bundle_with_one_time_pre_key(
        &self,
        one_time_pre_key_id: u32,
        suites: &[SuiteId],
    ) -> Result<PreKeyBundle, X3dhError> {
        self.bound_bundle(Some(one_time_pre_key_id), suites, &[])
    }

    fn build_bundle(
        &self,
        one_time_pre_key: Option<PublicOneTimePreKey>,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> PreKeyBundle {
        let signed_pre_key = &self.current_signed_pre_key;
        let bundle = PreKeyBundle::new(
            self.identity_public_key,
            signed_pre_key.id(),
            signed_pre_key.public_key(),
            signed_pre_key.signature(),
            one_time_pre_key,
            suites.to_vec(),
        );
        let transcript = bundle.offer_transcript(binding);
        bundle.with_offer_signature(self.identity.sign(&transcript))
    }

    /// Responder: derives the agreed secret from an initial message.
    ///
    /// Looks up the signed pre-key ([`X3dhError::UnknownSignedPreKey`]) and
    /// the one-time pre-key, if one is named
    /// ([`X3dhError::UnknownOneTimePreKey`]), then computes
    /// `DH1 = DH(SPK_B, IK_A)`, `DH2 = DH(IK_B, EK_A)`, `DH3 = DH(SPK_B, EK_A)`
    /// and `DH4 = DH(OPK_B, EK_A)`, refusing an all-zero output
    /// ([`X3dhError::NonContributoryDh`]).
    ///
    /// The one-time pre-key is **not** deleted; its id is in the result's
    /// [`one_time_pre_key_id`](AgreedSecret::one_time_pre_key_id). The suite
    /// named in the header is not checked here (the session layer knows
    /// which suites it accepts).
    pub fn respond(
        &self,
        config: &X3dhConfig,
        initial: &InitialMessageHeader,
    ) -> Result<AgreedSecret, X3dhError> {
        let dh_outputs = self.diffie_hellman(initial)?;
        let secret = dh_outputs.derive_secret(&[], config.info())?;
        Ok(AgreedSecret::new(
            *secret,
            config.associated_data(initial.identity_key(), &self.identity_public_key),
            dh_outputs.one_time_pre_key_id(),
        ))
    }

    /// Responder: the Diffie-Hellman half of [`respond`](Self::respond), for
    /// protocols that extend X3DH's key derivation (see [`DhOutputs`]): the
    /// same look-ups and checks, and the outputs `DH1 ‖ DH2 ‖ DH3 [‖ DH4]`
    /// with the id of the one-time pre-key used (not deleted).
    pub fn diffie_hellman(&self, initial: &InitialMessageHeader) -> Result<DhOutputs, X3dhError> {
        let signed_pre_key_id = initial.signed_pre_key_id();
        let signed_pre_key =
            self.signed_pre_key(signed_pre_key_id)
                .ok_or(X3dhError::UnknownSignedPreKey {
                    id: signed_pre_key_id,
                })?;
        let one_time_pre_key = match initial.one_time_pre_key_id() {
            None => None,
            Some(id) => Some(
                self.one_time_pre_keys
                    .get(&id)
                    .ok_or(X3dhError::UnknownOneTimePreKey { id })?,
            ),
        };

        let initiator_identity = initial.identity_key();
        let ephemeral_key = initial.ephemeral_key();
        let dh1 = diffie_hellman(
            DhStep::Dh1,
            signed_pre_key.secret(),
            &initiator_identity.to_x25519(),
        )?;
        let dh2 = diffie_hellman(DhStep::Dh2, &self.identity.dh_secret(), ephemeral_key)?;
        let dh3 = diffie_hellman(DhStep::Dh3, signed_pre_key.secret(), ephemeral_key)?;
        Ok(match one_time_pre_key {
            Some(one_time) => {
                let dh4 = diffie_hellman(DhStep::Dh4, one_time.secret(), ephemeral_key)?;
                DhOutputs::new(&[&dh1, &dh2, &dh3, &dh4], Some(one_time.id()))
            }
            None => DhOutputs::new(&[&dh1, &dh2, &dh3], None),
        })
    }

    /// Responder without a separate store: [`respond`](Self::respond), then,
    /// only if that succeeded, deletes the one-time pre-key it used.
    pub fn respond_and_consume(
        &mut self,
        config: &X3dhConfig,
        initial: &InitialMessageHeader,
    ) -> Result<AgreedSecret, X3dhError> {
        let agreed = self.respond(config, initial)?;
        if let Some(id) = agreed.one_time_pre_key_id() {
            self.consume_one_time_pre_key(id);
        }
        Ok(agreed)
    }
}

fn check_signed_pre_key(
    identity: &IdentityPublicKey,
    signed_pre_key: &SignedPreKey,
) -> Result<(), X3dhError> {
    identity
        .verify_strict(
            signed_pre_key.public_key().as_bytes(),
            &signed_pre_key.signature(),
        )
        .map_err(|_| X3dhError::ForeignSignedPreKey {
            id: signed_pre_key.id(),
        })
}

impl fmt::Debug for ResponderKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderKeys")
            .field("identity_key", &Hex(self.identity_public_key.as_bytes()))
            .field(
                "current_signed_pre_key_id",
                &self.current_signed_pre_key.id(),
            )
            .field(
                "older_signed_pre_key_ids",
                &self.older_signed_pre_keys.keys().collect::<Vec<_>>(),
            )
            .field(
                "one_time_pre_key_ids",
                &self.one_time_pre_keys.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
