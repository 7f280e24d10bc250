//! The responder's pre-key bundle, as a validated domain type.

use crate::error::X3dhError;
use crate::keys::{
    Hex, IdentityKeyPair, IdentityPublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN, X25519PublicKey,
};
use confidant_core::SuiteId;
use confidant_core::wire::{self, fixed_len};
use prost::Message;
use std::fmt;

/// Label at the start of the offer transcript (see [`offer_transcript`]).
pub const OFFER_LABEL: &[u8] = b"confidant-v1-bundle-offer";

/// The bytes the responder's identity key signs to authenticate its offer:
///
/// ```text
/// "confidant-v1-bundle-offer"
/// ‖ len(binding) as u32 BE ‖ binding
/// ‖ Encode(IK_B) (32) ‖ signed_pre_key_id as u32 BE ‖ Encode(SPK_B) (32)
/// ‖ 0x00                                     (no one-time pre-key)
///   | 0x01 ‖ one-time pre-key id as u32 BE ‖ Encode(OPK_B) (32)
/// ‖ number of suites as u32 BE ‖ each suite id as u32 BE, in offer order
/// ```
///
/// The signed pre-key keeps its own signature over `Encode(SPK_B)` exactly
/// as X3DH specifies; this second signature covers what X3DH leaves
/// unsigned, so a relay can neither strip the one-time pre-key nor strip or
/// reorder the suites, nor move the bundle into another handshake (the
/// binding).
pub fn offer_transcript(
    binding: &[u8],
    identity_key: &IdentityPublicKey,
    signed_pre_key_id: u32,
    signed_pre_key: &X25519PublicKey,
    one_time_pre_key: Option<&PublicOneTimePreKey>,
    suites: &[SuiteId],
) -> Vec<u8> {
    let mut transcript = Vec::with_capacity(
        OFFER_LABEL.len() + 4 + binding.len() + 32 + 4 + 32 + 37 + 4 + 4 * suites.len(),
    );
    transcript.extend_from_slice(OFFER_LABEL);
    transcript.extend_from_slice(
        &u32::try_from(binding.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    transcript.extend_from_slice(binding);
    transcript.extend_from_slice(identity_key.as_bytes());
    transcript.extend_from_slice(&signed_pre_key_id.to_be_bytes());
    transcript.extend_from_slice(signed_pre_key.as_bytes());
    match one_time_pre_key {
        None => transcript.push(0),
        Some(one_time) => {
            transcript.push(1);
            transcript.extend_from_slice(&one_time.id.to_be_bytes());
            transcript.extend_from_slice(one_time.public_key.as_bytes());
        }
    }
    transcript.extend_from_slice(
        &u32::try_from(suites.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for suite in suites {
        transcript.extend_from_slice(&suite.0.to_be_bytes());
    }
    transcript
}

/// The longest encoded bundle [`PreKeyBundle::from_bytes`] accepts. A
/// classical bundle with every field set is under 300 bytes; a hybrid one
/// (X3DH + ML-KEM-768, whose fields this decoder skips) about 1,600. The
/// rest leaves room for a long list of suites.
pub const MAX_BUNDLE_LEN: usize = 4096;

/// A one-time pre-key as offered in a bundle: its id and public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicOneTimePreKey {
    /// The id the responder chose for it.
    pub id: u32,
    /// The public key `OPK_B`.
    pub public_key: X25519PublicKey,
}

/// The responder's pre-key bundle: identity key, signed pre-key with its
/// signature, an optional one-time pre-key, and the suites on offer.
///
/// A value of this type is well formed (every key has the right length, the
/// identity key is a valid, non-weak Ed25519 key) but **not yet trusted**:
/// [`verify`](Self::verify) checks the identity against the expected one and
/// the signature, and only the [`VerifiedPreKeyBundle`] it returns can be
/// used to agree on a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    identity_key: IdentityPublicKey,
    signed_pre_key_id: u32,
    signed_pre_key: X25519PublicKey,
    signed_pre_key_signature: [u8; SIGNATURE_LEN],
    one_time_pre_key: Option<PublicOneTimePreKey>,
    suites: Vec<SuiteId>,
    offer_signature: Option<[u8; SIGNATURE_LEN]>,
}

impl PreKeyBundle {
    /// Assembles a bundle from its parts, without an offer signature (the
    /// responder normally builds it with
    /// [`ResponderKeys::bundle`](crate::ResponderKeys::bundle), which signs
    /// the offer; see [`sign_offer`](Self::sign_offer)). A bundle without an
    /// offer signature does not [`verify`](Self::verify).
    pub fn new(
        identity_key: IdentityPublicKey,
        signed_pre_key_id: u32,
        signed_pre_key: X25519PublicKey,
        signed_pre_key_signature: [u8; SIGNATURE_LEN],
        one_time_pre_key: Option<PublicOneTimePreKey>,
        suites: Vec<SuiteId>,
    ) -> Self {
        Self {
            identity_key,
            signed_pre_key_id,
            signed_pre_key,
            signed_pre_key_signature,
            one_time_pre_key,
            suites,
            offer_signature: None,
        }
    }

    /// The offer transcript of this bundle for `binding` (see
    /// [`offer_transcript`](Self::offer_transcript)).
    pub fn offer_transcript(&self, binding: &[u8]) -> Vec<u8> {
        offer_transcript(
            binding,
            &self.identity_key,
            self.signed_pre_key_id,
            &self.signed_pre_key,
            self.one_time_pre_key.as_ref(),
            &self.suites,
        )
    }

    /// Signs the offer over `binding` with the responder's identity key
    /// ([`X3dhError::IdentityMismatch`] if `identity` is not the bundle's).
    pub fn sign_offer(self, identity: &IdentityKeyPair, binding: &[u8]) -> Result<Self, X3dhError> {
        if identity.public_key() != self.identity_key {
            return Err(X3dhError::IdentityMismatch);
        }
        let signature = identity.sign(&self.offer_transcript(binding));
        Ok(self.with_offer_signature(signature))
    }

    /// Sets the offer signature (for tests and for bundles assembled from
    /// parts; [`verify_bound`](Self::verify_bound) checks it).
    pub fn with_offer_signature(mut self, signature: [u8; SIGNATURE_LEN]) -> Self {
        self.offer_signature = Some(signature);
        self
    }

    /// The offer signature, if the bundle carries one.
    pub fn offer_signature(&self) -> Option<&[u8; SIGNATURE_LEN]> {
        self.offer_signature.as_ref()
    }

    /// Validates a bundle received from the wire: every key field must have
    /// exactly its length, and the identity key must be a valid, non-weak
    /// Ed25519 key. The signature is not checked here; see
    /// [`verify`](Self::verify).
    pub fn from_wire(bundle: &wire::PreKeyBundle) -> Result<Self, X3dhError> {
        let identity_key =
            IdentityPublicKey::from_field("bundle.identity_key", &bundle.identity_key)?;
        let signed_pre_key = X25519PublicKey::from_bytes(fixed_len::<PUBLIC_KEY_LEN>(
            "bundle.signed_pre_key",
            &bundle.signed_pre_key,
        )?);
        let signed_pre_key_signature = fixed_len::<SIGNATURE_LEN>(
            "bundle.signed_pre_key_signature",
            &bundle.signed_pre_key_signature,
        )?;
        let one_time_pre_key = match &bundle.one_time_pre_key {
            None => None,
            Some(one_time) => Some(PublicOneTimePreKey {
                id: one_time.id,
                public_key: X25519PublicKey::from_bytes(fixed_len::<PUBLIC_KEY_LEN>(
                    "bundle.one_time_pre_key.public_key",
                    &one_time.public_key,
                )?),
            }),
        };
        let offer_signature = if bundle.offer_signature.is_empty() {
            None
        } else {
            Some(fixed_len::<SIGNATURE_LEN>(
                "bundle.offer_signature",
                &bundle.offer_signature,
            )?)
        };
        Ok(Self {
            identity_key,
            signed_pre_key_id: bundle.signed_pre_key_id,
            signed_pre_key,
            signed_pre_key_signature,
            one_time_pre_key,
            suites: bundle.suites.iter().copied().map(SuiteId).collect(),
            offer_signature,
        })
    }

    /// The wire form of this bundle.
    pub fn to_wire(&self) -> wire::PreKeyBundle {
        wire::PreKeyBundle {
            identity_key: self.identity_key.to_bytes().to_vec(),
            signed_pre_key_id: self.signed_pre_key_id,
            signed_pre_key: self.signed_pre_key.to_bytes().to_vec(),
            signed_pre_key_signature: self.signed_pre_key_signature.to_vec(),
            one_time_pre_key: self.one_time_pre_key.map(|one_time| wire::OneTimePreKey {
                id: one_time.id,
                public_key: one_time.public_key.to_bytes().to_vec(),
            }),
            suites: self.suites.iter().map(|suite| suite.0).collect(),
            offer_signature: self
                .offer_signature
                .map(|signature| signature.to_vec())
                .unwrap_or_default(),
            // The hybrid's fields (8 and 9) belong to the hybrid plugin,
            // which adds them to this classical form.
            ..Default::default()
        }
    }

    /// Decodes and validates a bare protobuf `PreKeyBundle` (not wrapped in an
    /// envelope) of at most [`MAX_BUNDLE_LEN`] bytes. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, X3dhError> {
        let bundle: wire::PreKeyBundle = wire::decode_message(bytes, MAX_BUNDLE_LEN)?;
        Self::from_wire(&bundle)
    }

    /// Encodes this bundle as a bare protobuf `PreKeyBundle`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// The responder's identity key `IK_B`.
    pub fn identity_key(&self) -> &IdentityPublicKey {
        &self.identity_key
    }

    /// The id of the signed pre-key.
    pub fn signed_pre_key_id(&self) -> u32 {
        self.signed_pre_key_id
    }

    /// The signed pre-key `SPK_B`.
    pub fn signed_pre_key(&self) -> &X25519PublicKey {
        &self.signed_pre_key
    }

    /// The signature `Sig(IK_B, Encode(SPK_B))`.
    pub fn signed_pre_key_signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signed_pre_key_signature
    }

    /// The one-time pre-key `OPK_B`, if the bundle carries one.
    pub fn one_time_pre_key(&self) -> Option<&PublicOneTimePreKey> {
        self.one_time_pre_key.as_ref()
    }

    /// The suites the responder accepts, most preferred first, as listed on
    /// the wire (possibly empty; see [`offers`](Self::offers)).
    pub fn suites(&self) -> &[SuiteId] {
        &self.suites
    }

    /// Whether the bundle offers `suite`. An empty list stands for the
    /// default suite, [`SuiteId::AES_256_GCM_SHA256_COUNTER`] (see
    /// `docs/protocol.md`).
    pub fn offers(&self, suite: SuiteId) -> bool {
        if self.suites.is_empty() {
            suite == SuiteId::AES_256_GCM_SHA256_COUNTER
        } else {
            self.suites.contains(&suite)
        }
    }

    /// [`verify_bound`](Self::verify_bound) with an empty binding.
    pub fn verify(
        self,
        expected_identity: &IdentityPublicKey,
    ) -> Result<VerifiedPreKeyBundle, X3dhError> {
        self.verify_bound(expected_identity, &[])
    }

    /// Checks the bundle before it is used, in this order:
    ///
    /// 1. its identity key must equal `expected_identity` (the one from the
    ///    invitation), else [`X3dhError::IdentityMismatch`]: a bundle swapped
    ///    by the relay stops here;
    /// 2. the signed pre-key's signature must verify strictly under that
    ///    identity key, else [`X3dhError::BadSignature`];
    /// 3. the offer signature must be present ([`X3dhError::UnsignedOffer`])
    ///    and verify strictly over [`offer_transcript`](Self::offer_transcript) with `binding`
    ///    ([`X3dhError::BadOfferSignature`]): a stripped one-time pre-key,
    ///    a stripped or reordered suite, or a bundle replayed from another
    ///    handshake stops here.
    pub fn verify_bound(
        self,
        expected_identity: &IdentityPublicKey,
        binding: &[u8],
    ) -> Result<VerifiedPreKeyBundle, X3dhError> {
        self.verify_with_offer_check(expected_identity, |bundle| {
            let signature = bundle.offer_signature.ok_or(X3dhError::UnsignedOffer)?;
            bundle
                .identity_key
                .verify_strict(&bundle.offer_transcript(binding), &signature)
                .map_err(|_| X3dhError::BadOfferSignature)
        })
    }

    /// Checks the bundle as [`verify_bound`](Self::verify_bound) does, but
    /// with the offer checked by `check_offer` instead of against this
    /// bundle's `offer_signature`. For protocols that extend the bundle and
    /// sign an offer transcript of their own that contains
    /// [`offer_transcript`](Self::offer_transcript) (the X3DH + ML-KEM-768 hybrid signs the
    /// classical transcript followed by its KEM pre-key), so that one
    /// signature covers both. In this order:
    ///
    /// 1. the identity key must equal `expected_identity`
    ///    ([`X3dhError::IdentityMismatch`]);
    /// 2. the signed pre-key's signature must verify strictly
    ///    ([`X3dhError::BadSignature`]);
    /// 3. `check_offer(&bundle)` must succeed; its error is returned as is.
    ///
    /// `check_offer` must verify a signature by the identity key over a
    /// transcript that covers everything [`offer_transcript`](Self::offer_transcript) covers, or the
    /// offer (suites, one-time pre-key, binding) is left unauthenticated.
    pub fn verify_with_offer_check<E: From<X3dhError>>(
        self,
        expected_identity: &IdentityPublicKey,
        check_offer: impl FnOnce(&Self) -> Result<(), E>,
    ) -> Result<VerifiedPreKeyBundle, E> {
        if self.identity_key != *expected_identity {
            return Err(X3dhError::IdentityMismatch.into());
        }
        self.identity_key.verify_strict(
            self.signed_pre_key.as_bytes(),
            &self.signed_pre_key_signature,
        )?;
        check_offer(&self)?;
        Ok(VerifiedPreKeyBundle { bundle: self })
    }
}

impl fmt::Debug for PreKeyBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKeyBundle")
            .field("identity_key", &Hex(self.identity_key.as_bytes()))
            .field("signed_pre_key_id", &self.signed_pre_key_id)
            .field("signed_pre_key", &Hex(self.signed_pre_key.as_bytes()))
            .field(
                "signed_pre_key_signature",
                &Hex(&self.signed_pre_key_signature),
            )
            .field("one_time_pre_key", &self.one_time_pre_key)
            .field("suites", &self.suites)
            .field(
                "offer_signature",
                &self
                    .offer_signature
                    .as_ref()
                    .map(|signature| Hex(signature)),
            )
            .finish()
    }
}

impl TryFrom<&wire::PreKeyBundle> for PreKeyBundle {
    type Error = X3dhError;
    fn try_from(bundle: &wire::PreKeyBundle) -> Result<Self, Self::Error> {
        Self::from_wire(bundle)
    }
}

impl From<&PreKeyBundle> for wire::PreKeyBundle {
    fn from(bundle: &PreKeyBundle) -> Self {
        bundle.to_wire()
    }
}

/// A bundle whose identity key is the expected one and whose signed pre-key
/// signature verifies. Made only by [`PreKeyBundle::verify`]; consumed by
/// [`agree`](VerifiedPreKeyBundle::agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPreKeyBundle {
    pub(crate) bundle: PreKeyBundle,
}

impl VerifiedPreKeyBundle {
    /// The verified bundle.
    pub fn bundle(&self) -> &PreKeyBundle {
        &self.bundle
    }
}
