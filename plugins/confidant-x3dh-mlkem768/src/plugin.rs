//! The hybrid as a [`KeyAgreement`] plugin, speaking the wire types.

use crate::bundle::{HybridPreKeyBundle, VerifiedHybridBundle};
use crate::error::HybridError;
use crate::initial::{HybridInitialMessage, KemEncapsulation};
use crate::kem::{KemPreKeyKind, system_random};
use crate::responder::HybridResponderKeys;
use confidant_core::{AgreedSecret, KeyAgreement, SuiteId, wire};
use confidant_x3dh::{EphemeralKey, IdentityKeyPair, IdentityPublicKey, X3dhConfig, X3dhError};
use zeroize::Zeroizing;

/// The default HKDF `info` of the hybrid: it names the KEM, and differs
/// from the classical [`confidant_x3dh::DEFAULT_INFO`].
pub const DEFAULT_HYBRID_INFO: &[u8] = b"Confidant X3DH-25519-MLKEM768-SHA-256 v1";

/// X3DH + ML-KEM-768 (Signal's PQXDH, revision 3, with Confidant's Ed25519
/// identity keys), as Confidant's [`KeyAgreement`] plugin.
///
/// Two policies decide what happens when the hybrid is missing:
///
/// * [`require_hybrid`](Self::require_hybrid) (initiator; **on** by
///   default): refuse a bundle without the hybrid
///   ([`HybridError::HybridStripped`]). Set it from an authenticated source
///   (the invitation in the QR code says the issuer has the hybrid); turn it
///   off only for responders that may not have it, and then a bundle
///   without the hybrid gives classical X3DH.
/// * [`allow_classical`](Self::allow_classical) (responder; **off** by
///   default): answer a classical initial message (from a holder that does
///   not know the hybrid, or whose bundle a relay stripped) with classical
///   X3DH, or refuse it ([`HybridError::ClassicalRefused`]).
///
/// ```
/// use confidant_core::{KeyAgreement, SuiteId};
/// use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey};
/// use confidant_x3dh_mlkem768::{HybridResponderKeys, KemPreKey, KemPreKeyKind, X3dhMlKem768};
///
/// let hybrid = X3dhMlKem768::default();
///
/// // Issuer (responder): the classical keys plus a signed last-resort
/// // ML-KEM-768 pre-key and a one-time one.
/// let identity = IdentityKeyPair::generate();
/// let signed_pre_key = SignedPreKey::generate(&identity, 1);
/// let last_resort = KemPreKey::generate(&identity, 100, KemPreKeyKind::LastResort)?;
/// let one_time_kem = KemPreKey::generate(&identity, 101, KemPreKeyKind::OneTime)?;
/// let mut classical = ResponderKeys::new(identity, signed_pre_key)?;
/// classical.add_one_time_pre_key(OneTimePreKey::generate(7))?;
/// let mut issuer = HybridResponderKeys::new(classical, last_resort)?;
/// issuer.add_one_time_kem_pre_key(one_time_kem)?;
/// let invitation = issuer.classical().identity_public_key().to_bytes(); // in the QR code
///
/// let suite = SuiteId::AES_256_GCM_SHA256_COUNTER;
/// let binding = b"connection 1, token 7";
/// let bundle = hybrid.bundle(&issuer, &[suite], binding)?;
///
/// // Holder (initiator): checks the bundle, encapsulates, agrees.
/// let holder = IdentityKeyPair::generate();
/// let (holder_secret, initial) = hybrid.initiate(&holder, &invitation, &bundle, suite, binding)?;
/// assert_eq!(initial.kem_ciphertext.len(), 1088);
///
/// // Issuer: decapsulates and derives the same secret; the one-time keys
/// // used are reported, for the store to delete with the new session.
/// let issuer_secret = hybrid.respond(&issuer, &initial)?;
/// assert_eq!(holder_secret.secret(), issuer_secret.secret());
/// assert_eq!(issuer_secret.one_time_pre_key_id(), Some(7));
/// assert_eq!(issuer_secret.one_time_kem_pre_key_id(), Some(101));
///
/// // A relay that strips the KEM part is refused by a holder that requires
/// // the hybrid (the default).
/// let mut stripped = bundle.clone();
/// stripped.kem_pre_key = None;
/// stripped.hybrid_offer_signature.clear();
/// assert!(hybrid.initiate(&holder, &invitation, &stripped, suite, binding).is_err());
/// # Ok::<(), confidant_x3dh_mlkem768::HybridError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X3dhMlKem768 {
    config: X3dhConfig,
    hybrid_info: Vec<u8>,
    require_hybrid: bool,
    allow_classical: bool,
}

impl Default for X3dhMlKem768 {
    fn default() -> Self {
        Self::new(X3dhConfig::default())
    }
}

impl X3dhMlKem768 {
    /// The plugin's name.
    pub const NAME: &'static str = "X3DH-25519-MLKEM768-SHA-256";

    /// The hybrid with `config` (its `info` serves the classical fallback,
    /// its associated-data appendix both), the hybrid `info`
    /// [`DEFAULT_HYBRID_INFO`], the hybrid required of bundles, and
    /// classical initial messages refused.
    pub fn new(config: X3dhConfig) -> Self {
        Self {
            config,
            hybrid_info: DEFAULT_HYBRID_INFO.to_vec(),
            require_hybrid: true,
            allow_classical: false,
        }
    }

    /// Replaces the hybrid's HKDF `info` (both parties must agree; keep it
    /// distinct from the classical one).
    #[must_use]
    pub fn with_hybrid_info(mut self, info: impl Into<Vec<u8>>) -> Self {
        self.hybrid_info = info.into();
        self
    }

    /// Initiator policy: refuse bundles without the hybrid
    /// ([`HybridError::HybridStripped`]) when `true`; fall back to
    /// classical X3DH when `false`.
    #[must_use]
    pub fn with_require_hybrid(mut self, require_hybrid: bool) -> Self {
        self.require_hybrid = require_hybrid;
        self
    }

    /// Responder policy: answer classical initial messages when `true`;
    /// refuse them ([`HybridError::ClassicalRefused`]) when `false`.
    #[must_use]
    pub fn with_allow_classical(mut self, allow_classical: bool) -> Self {
        self.allow_classical = allow_classical;
        self
    }

    /// The X3DH configuration (classical `info`, associated-data appendix).
    pub fn config(&self) -> &X3dhConfig {
        &self.config
    }

    /// The hybrid's HKDF `info`.
    pub fn hybrid_info(&self) -> &[u8] {
        &self.hybrid_info
    }

    /// Whether the initiator refuses bundles without the hybrid.
    pub fn require_hybrid(&self) -> bool {
        self.require_hybrid
    }

    /// Whether the responder answers classical initial messages.
    pub fn allow_classical(&self) -> bool {
        self.allow_classical
    }

    /// Initiator: agrees with a verified bundle, given the ephemeral key
    /// `EK_A` and the encapsulation randomness `m` (known-answer tests
    /// supply them). With a KEM pre-key:
    ///
    /// ```text
    /// (CT, SS) = ML-KEM-768.Encaps_internal(PQPK_B, m)
    /// SK = HKDF-SHA-256(salt = 0^32, IKM = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
    ///                   info = hybrid_info), 32 bytes
    /// ```
    ///
    /// without one (a classical bundle accepted because the hybrid is not
    /// required), classical X3DH with the classical `info` (`m` unused).
    pub fn agree(
        &self,
        bundle: VerifiedHybridBundle,
        initiator: &IdentityKeyPair,
        ephemeral: EphemeralKey,
        encapsulation_randomness: &[u8; 32],
        suite: SuiteId,
    ) -> Result<(AgreedSecret, HybridInitialMessage), HybridError> {
        let VerifiedHybridBundle {
            classical,
            kem_pre_key,
        } = bundle;
        let Some(kem) = kem_pre_key else {
            let (agreed, header) =
                classical.agree_with_ephemeral(&self.config, initiator, ephemeral, suite)?;
            return Ok((agreed, HybridInitialMessage::new(header, None)));
        };
        let responder_identity = *classical.bundle().identity_key();
        let (dh_outputs, header) =
            classical.diffie_hellman_with_ephemeral(initiator, ephemeral, suite)?;
        let (ciphertext, shared) = kem
            .public_key
            .encapsulate_with_randomness(encapsulation_randomness);
        let secret = dh_outputs.derive_secret(shared.as_bytes(), &self.hybrid_info)?;
        let agreed = AgreedSecret::new(
            *secret,
            self.config
                .associated_data(header.identity_key(), &responder_identity),
            dh_outputs.one_time_pre_key_id(),
        )
        .with_one_time_kem_pre_key_id(one_time(kem.kind, kem.id));
        let initial = HybridInitialMessage::new(
            header,
            Some(KemEncapsulation {
                kem_pre_key_id: kem.id,
                ciphertext,
            }),
        );
        Ok((agreed, initial))
    }

    /// [`KeyAgreement::initiate`] with a given ephemeral key and
    /// encapsulation randomness `m`, for known-answer tests.
    #[allow(clippy::too_many_arguments)]
    pub fn initiate_with_randomness(
        &self,
        initiator: &IdentityKeyPair,
        expected_responder_identity: &[u8],
        bundle: &wire::PreKeyBundle,
        ephemeral: EphemeralKey,
        encapsulation_randomness: &[u8; 32],
        suite: SuiteId,
        binding: &[u8],
    ) -> Result<(AgreedSecret, wire::InitialMessage), HybridError> {
        // The identity from the invitation is compared before anything else
        // in the bundle is parsed: a swapped bundle stops here.
        if bundle.identity_key.as_slice() != expected_responder_identity {
            return Err(X3dhError::IdentityMismatch.into());
        }
        let expected = IdentityPublicKey::from_slice(expected_responder_identity)?;
        let verified = HybridPreKeyBundle::from_wire(bundle)?.verify(
            &expected,
            binding,
            self.require_hybrid,
        )?;
        let (agreed, initial) = self.agree(
            verified,
            initiator,
            ephemeral,
            encapsulation_randomness,
            suite,
        )?;
        Ok((agreed, initial.to_wire(None)))
    }

    /// Responder: derives the secret from a decoded initial message.
    ///
    /// A classical one (no KEM part) is refused unless
    /// [`allow_classical`](Self::allow_classical)
    /// ([`HybridError::ClassicalRefused`]), and otherwise answered exactly
    /// as [`confidant_x3dh::ResponderKeys::respond`] would. A hybrid one:
    /// the classical look-ups and DH checks, the KEM pre-key by id
    /// ([`HybridError::UnknownKemPreKey`]), `SS = Decaps(dk, CT)`, and the
    /// hybrid `SK`. A tampered ciphertext is not detected here (implicit
    /// rejection gives an unrelated `SS`, hence an unrelated `SK`); the
    /// first sealed message then fails to open.
    ///
    /// One-time pre-keys (classical and KEM) are reported, not deleted.
    pub fn respond_to(
        &self,
        responder: &HybridResponderKeys,
        initial: &HybridInitialMessage,
    ) -> Result<AgreedSecret, HybridError> {
        let Some(kem) = initial.kem() else {
            if !self.allow_classical {
                return Err(HybridError::ClassicalRefused);
            }
            return Ok(responder
                .classical()
                .respond(&self.config, initial.header())?);
        };
        let dh_outputs = responder.classical().diffie_hellman(initial.header())?;
        let kem_pre_key =
            responder
                .kem_pre_key(kem.kem_pre_key_id)
                .ok_or(HybridError::UnknownKemPreKey {
                    id: kem.kem_pre_key_id,
                })?;
        let shared = kem_pre_key.key_pair().decapsulate(&kem.ciphertext);
        let secret = dh_outputs.derive_secret(shared.as_bytes(), &self.hybrid_info)?;
        Ok(AgreedSecret::new(
            *secret,
            self.config.associated_data(
                initial.header().identity_key(),
                responder.classical().identity_public_key(),
            ),
            dh_outputs.one_time_pre_key_id(),
        )
        .with_one_time_kem_pre_key_id(one_time(kem_pre_key.kind(), kem_pre_key.id())))
    }

    /// Responder without a separate store: [`respond_to`](Self::respond_to),
    /// then, only if it succeeded, deletes the one-time pre-key and the
    /// one-time KEM pre-key it used.
    pub fn respond_and_consume(
        &self,
        responder: &mut HybridResponderKeys,
        initial: &HybridInitialMessage,
    ) -> Result<AgreedSecret, HybridError> {
        let agreed = self.respond_to(responder, initial)?;
        if let Some(id) = agreed.one_time_pre_key_id() {
            responder.classical_mut().consume_one_time_pre_key(id);
        }
        if let Some(id) = agreed.one_time_kem_pre_key_id() {
            responder.consume_one_time_kem_pre_key(id);
        }
        Ok(agreed)
    }
}

fn one_time(kind: KemPreKeyKind, id: u32) -> Option<u32> {
    (kind == KemPreKeyKind::OneTime).then_some(id)
}

impl KeyAgreement for X3dhMlKem768 {
    type ResponderKeys = HybridResponderKeys;
    type InitiatorKeys = IdentityKeyPair;
    type Error = HybridError;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The bundle carries the current signed pre-key, the one-time pre-key
    /// with the lowest id if any is held, the one-time KEM pre-key with the
    /// lowest id or else the current last-resort KEM pre-key, and both
    /// offer signatures over `binding`. A store serving several handshakes
    /// at once should hand out distinct one-time keys with
    /// [`HybridResponderKeys::bound_bundle`].
    fn bundle(
        &self,
        responder: &HybridResponderKeys,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<wire::PreKeyBundle, HybridError> {
        let one_time = responder.classical().one_time_pre_key_ids().next();
        let one_time_kem = responder.one_time_kem_pre_key_ids().next();
        Ok(responder
            .bound_bundle(one_time, one_time_kem, suites, binding)?
            .to_wire())
    }

    /// Checks the bundle's identity key against
    /// `expected_responder_identity` first, then the bundle
    /// ([`HybridPreKeyBundle::verify`] under this plugin's
    /// [`require_hybrid`](Self::require_hybrid)), then agrees with an
    /// ephemeral key and encapsulation randomness from the operating
    /// system. The returned message's `first_message` is `None`.
    fn initiate(
        &self,
        initiator: &IdentityKeyPair,
        expected_responder_identity: &[u8],
        bundle: &wire::PreKeyBundle,
        suite: SuiteId,
        binding: &[u8],
    ) -> Result<(AgreedSecret, wire::InitialMessage), HybridError> {
        let ephemeral = EphemeralKey::generate()?;
        let mut randomness = Zeroizing::new([0u8; 32]);
        system_random(randomness.as_mut())?;
        self.initiate_with_randomness(
            initiator,
            expected_responder_identity,
            bundle,
            ephemeral,
            &randomness,
            suite,
            binding,
        )
    }

    /// See [`respond_to`](Self::respond_to).
    fn respond(
        &self,
        responder: &HybridResponderKeys,
        initial: &wire::InitialMessage,
    ) -> Result<AgreedSecret, HybridError> {
        self.respond_to(responder, &HybridInitialMessage::from_wire(initial)?)
    }
}
