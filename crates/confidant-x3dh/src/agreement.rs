//! The X3DH computation itself: configuration, the initiator's side, and the
//! key derivation and associated data shared by both sides.

use crate::bundle::VerifiedPreKeyBundle;
use crate::error::{DhStep, X3dhError};
use crate::initial::InitialMessageHeader;
use crate::keys::{
    EphemeralKey, IdentityKeyPair, IdentityPublicKey, PUBLIC_KEY_LEN, diffie_hellman,
};
use confidant_core::{AgreedSecret, SHARED_SECRET_LEN, SuiteId};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use x25519_dalek::SharedSecret;
use zeroize::Zeroizing;

/// The default HKDF `info`: the application name the X3DH specification
/// asks for.
pub const DEFAULT_INFO: &[u8] = b"Confidant X3DH v1";

/// `F`: 32 bytes of `0xFF`, prepended to the DH outputs for X25519 (X3DH §2.2).
const KDF_PREFIX: [u8; 32] = [0xFF; 32];

/// `HKDF` salt: as many zero bytes as SHA-256's output.
const KDF_SALT: [u8; 32] = [0u8; 32];

/// The application-specific parameters of X3DH.
///
/// * `info` is HKDF's `info`, the "application identifying" string of the
///   specification; default [`DEFAULT_INFO`]. Two applications with
///   different strings never derive the same key.
/// * `associated_data_appendix` is appended to
///   `AD = Encode(IK_A) ‖ Encode(IK_B)`; empty by default. The
///   specification suggests certificates, usernames or other identifying
///   information here.
///
/// Both parties must use the same configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X3dhConfig {
    info: Vec<u8>,
    associated_data_appendix: Vec<u8>,
}

impl Default for X3dhConfig {
    fn default() -> Self {
        Self {
            info: DEFAULT_INFO.to_vec(),
            associated_data_appendix: Vec::new(),
        }
    }
}

impl X3dhConfig {
    /// The default configuration: `info` = [`DEFAULT_INFO`], no appendix.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces HKDF's `info`.
    pub fn with_info(mut self, info: impl Into<Vec<u8>>) -> Self {
        self.info = info.into();
        self
    }

    /// Sets the bytes appended to the associated data.
    pub fn with_associated_data_appendix(mut self, appendix: impl Into<Vec<u8>>) -> Self {
        self.associated_data_appendix = appendix.into();
        self
    }

    /// HKDF's `info`.
    pub fn info(&self) -> &[u8] {
        &self.info
    }

    /// The bytes appended to the associated data.
    pub fn associated_data_appendix(&self) -> &[u8] {
        &self.associated_data_appendix
    }

    /// `AD = Encode(IK_A) ‖ Encode(IK_B) ‖ appendix`, as both parties
    /// compute it (public so that protocols extending X3DH, such as the
    /// ML-KEM-768 hybrid, bind the same associated data).
    pub fn associated_data(
        &self,
        initiator_identity: &IdentityPublicKey,
        responder_identity: &IdentityPublicKey,
    ) -> Vec<u8> {
        let mut associated_data =
            Vec::with_capacity(2 * PUBLIC_KEY_LEN + self.associated_data_appendix.len());
        associated_data.extend_from_slice(initiator_identity.as_bytes());
        associated_data.extend_from_slice(responder_identity.as_bytes());
        associated_data.extend_from_slice(&self.associated_data_appendix);
        associated_data
    }
}

/// The Diffie-Hellman outputs of one X3DH run, `DH1 ‖ DH2 ‖ DH3 [‖ DH4]`
/// (32 bytes each, all checked to be contributory), with the id of the
/// one-time pre-key that gave `DH4`.
///
/// X3DH derives its secret from them with [`derive_secret`](Self::derive_secret)
/// and an empty suffix. They are exposed for protocols that extend X3DH's
/// key derivation with a further secret, as PQXDH appends a KEM shared
/// secret: `IKM = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS`. Wiped on drop and
/// never printed.
pub struct DhOutputs {
    concatenated: Zeroizing<Vec<u8>>,
    one_time_pre_key_id: Option<u32>,
}

impl DhOutputs {
    pub(crate) fn new(outputs: &[&SharedSecret], one_time_pre_key_id: Option<u32>) -> Self {
        let mut concatenated = Zeroizing::new(Vec::with_capacity(4 * PUBLIC_KEY_LEN));
        for dh in outputs {
            concatenated.extend_from_slice(dh.as_bytes());
        }
        Self {
            concatenated,
            one_time_pre_key_id,
        }
    }

    /// `DH1 ‖ DH2 ‖ DH3 [‖ DH4]`: 96 bytes, or 128 with a one-time pre-key.
    /// Secret.
    pub fn as_bytes(&self) -> &[u8] {
        &self.concatenated
    }

    /// The one-time pre-key that gave `DH4`, if one was used.
    pub fn one_time_pre_key_id(&self) -> Option<u32> {
        self.one_time_pre_key_id
    }

    /// `SK = HKDF-SHA-256(salt = 0^32, IKM = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ suffix, info)`,
    /// 32 bytes. X3DH uses an empty `suffix` and [`X3dhConfig::info`].
    pub fn derive_secret(
        &self,
        suffix: &[u8],
        info: &[u8],
    ) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>, X3dhError> {
        let mut input_key_material = Zeroizing::new(Vec::with_capacity(
            KDF_PREFIX.len() + self.concatenated.len() + suffix.len(),
        ));
        input_key_material.extend_from_slice(&KDF_PREFIX);
        input_key_material.extend_from_slice(&self.concatenated);
        input_key_material.extend_from_slice(suffix);
        let hkdf = Hkdf::<Sha256>::new(Some(&KDF_SALT), &input_key_material);
        let mut secret = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
        hkdf.expand(info, secret.as_mut())
            .map_err(|_| X3dhError::Internal("HKDF refused a 32-byte output"))?;
        Ok(secret)
    }
}

impl fmt::Debug for DhOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhOutputs")
            .field("len", &self.concatenated.len())
            .field("one_time_pre_key_id", &self.one_time_pre_key_id)
            .field("outputs", &crate::keys::REDACTED)
            .finish()
    }
}

impl VerifiedPreKeyBundle {
    /// Initiator: runs X3DH against this bundle with a fresh ephemeral key
    /// from the operating system's random number generator.
    ///
    /// Returns the agreed secret and the header of the initial message to
    /// send. Consumes the bundle: its one-time pre-key may serve one run
    /// only.
    pub fn agree(
        self,
        config: &X3dhConfig,
        initiator: &IdentityKeyPair,
        suite: SuiteId,
    ) -> Result<(AgreedSecret, InitialMessageHeader), X3dhError> {
        let ephemeral = EphemeralKey::generate()?;
        self.agree_with_ephemeral(config, initiator, ephemeral, suite)
    }

    /// Initiator: runs X3DH against this bundle with the given ephemeral key
    /// (known-answer tests supply it; otherwise use [`agree`](Self::agree)).
    ///
    /// Fails with [`X3dhError::SuiteNotOffered`] when the bundle does not
    /// offer `suite` ([`PreKeyBundle::offers`](crate::PreKeyBundle::offers)), and with [`X3dhError::NonContributoryDh`] when a pre-key of
    /// the bundle has low order.
    pub fn agree_with_ephemeral(
        self,
        config: &X3dhConfig,
        initiator: &IdentityKeyPair,
        ephemeral: EphemeralKey,
        suite: SuiteId,
    ) -> Result<(AgreedSecret, InitialMessageHeader), X3dhError> {
        let responder_identity = *self.bundle.identity_key();
        let (dh_outputs, header) =
            self.diffie_hellman_with_ephemeral(initiator, ephemeral, suite)?;
        let secret = dh_outputs.derive_secret(&[], config.info())?;
        let agreed = AgreedSecret::new(
            *secret,
            config.associated_data(header.identity_key(), &responder_identity),
            dh_outputs.one_time_pre_key_id(),
        );
        Ok((agreed, header))
    }

    /// Initiator: the Diffie-Hellman half of
    /// [`agree_with_ephemeral`](Self::agree_with_ephemeral), for protocols
    /// that extend X3DH's key derivation (see [`DhOutputs`]): the same
    /// checks (the suite is offered, every output is contributory), the
    /// outputs `DH1 ‖ DH2 ‖ DH3 [‖ DH4]`, and the header of the initial
    /// message. No secret is derived here.
    pub fn diffie_hellman_with_ephemeral(
        self,
        initiator: &IdentityKeyPair,
        ephemeral: EphemeralKey,
        suite: SuiteId,
    ) -> Result<(DhOutputs, InitialMessageHeader), X3dhError> {
        let bundle = &self.bundle;
        if !bundle.offers(suite) {
            return Err(X3dhError::SuiteNotOffered { suite });
        }
        let responder_identity = bundle.identity_key();
        let signed_pre_key = bundle.signed_pre_key();

        let dh1 = diffie_hellman(DhStep::Dh1, &initiator.dh_secret(), signed_pre_key)?;
        let dh2 = diffie_hellman(
            DhStep::Dh2,
            ephemeral.secret(),
            &responder_identity.to_x25519(),
        )?;
        let dh3 = diffie_hellman(DhStep::Dh3, ephemeral.secret(), signed_pre_key)?;
        let one_time_pre_key_id = bundle.one_time_pre_key().map(|one_time| one_time.id);
        let dh_outputs = match bundle.one_time_pre_key() {
            Some(one_time) => {
                let dh4 = diffie_hellman(DhStep::Dh4, ephemeral.secret(), &one_time.public_key)?;
                DhOutputs::new(&[&dh1, &dh2, &dh3, &dh4], one_time_pre_key_id)
            }
            None => DhOutputs::new(&[&dh1, &dh2, &dh3], None),
        };
        let header = InitialMessageHeader::new(
            initiator.public_key(),
            ephemeral.public_key(),
            bundle.signed_pre_key_id(),
            one_time_pre_key_id,
            suite,
        );
        Ok((dh_outputs, header))
    }
}
