//! X3DH as a [`KeyAgreement`] plugin, speaking the wire types.

use crate::agreement::X3dhConfig;
use crate::bundle::PreKeyBundle;
use crate::error::X3dhError;
use crate::initial::InitialMessageHeader;
use crate::keys::{EphemeralKey, IdentityKeyPair, IdentityPublicKey};
use crate::responder::ResponderKeys;
use confidant_core::{AgreedSecret, KeyAgreement, SuiteId, wire};

/// X3DH with X25519, SHA-256 and Ed25519 identity keys, as Confidant's
/// [`KeyAgreement`] plugin.
///
/// ```
/// use confidant_core::{KeyAgreement, SuiteId};
/// use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh};
///
/// let x3dh = X3dh::default();
/// let issuer_identity = IdentityKeyPair::generate();
/// let signed_pre_key = SignedPreKey::generate(&issuer_identity, 1);
/// let mut issuer = ResponderKeys::new(issuer_identity, signed_pre_key)?;
/// issuer.add_one_time_pre_key(OneTimePreKey::generate(1))?;
/// let invitation = issuer.identity_public_key().to_bytes(); // in the QR code
///
/// let suite = SuiteId::AES_256_GCM_SHA256_COUNTER;
/// // Both sides know the binding (the runtime uses the connection id and the
/// // invitation's token); the offer is signed over it.
/// let binding = b"connection 1, token 7";
/// let bundle = x3dh.bundle(&issuer, &[suite], binding)?;
/// let holder = IdentityKeyPair::generate();
/// let (holder_secret, initial) = x3dh.initiate(&holder, &invitation, &bundle, suite, binding)?;
/// let issuer_secret = x3dh.respond(&issuer, &initial)?;
/// assert_eq!(holder_secret.secret(), issuer_secret.secret());
/// assert_eq!(issuer_secret.one_time_pre_key_id(), Some(1));
/// # Ok::<(), confidant_x3dh::X3dhError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct X3dh {
    config: X3dhConfig,
}

impl X3dh {
    /// The plugin's name.
    pub const NAME: &'static str = "X3DH-25519-SHA-256";

    /// X3DH with the given configuration.
    pub fn new(config: X3dhConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &X3dhConfig {
        &self.config
    }

    /// [`KeyAgreement::initiate`] with a given ephemeral key, for
    /// known-answer tests.
    pub fn initiate_with_ephemeral(
        &self,
        initiator: &IdentityKeyPair,
        expected_responder_identity: &[u8],
        bundle: &wire::PreKeyBundle,
        ephemeral: EphemeralKey,
        suite: SuiteId,
        binding: &[u8],
    ) -> Result<(AgreedSecret, wire::InitialMessage), X3dhError> {
        self.initiate_inner(
            initiator,
            expected_responder_identity,
            bundle,
            suite,
            binding,
            || Ok(ephemeral),
        )
    }

    fn initiate_inner(
        &self,
        initiator: &IdentityKeyPair,
        expected_responder_identity: &[u8],
        bundle: &wire::PreKeyBundle,
        suite: SuiteId,
        binding: &[u8],
        ephemeral: impl FnOnce() -> Result<EphemeralKey, X3dhError>,
    ) -> Result<(AgreedSecret, wire::InitialMessage), X3dhError> {
        // The identity from the invitation is compared before anything else
        // in the bundle is even parsed: a swapped bundle stops here.
        if bundle.identity_key.as_slice() != expected_responder_identity {
            return Err(X3dhError::IdentityMismatch);
        }
        let expected = IdentityPublicKey::from_field(
            "expected_responder_identity",
            expected_responder_identity,
        )?;
        let verified = PreKeyBundle::from_wire(bundle)?.verify_bound(&expected, binding)?;
        let (agreed, header) =
            verified.agree_with_ephemeral(&self.config, initiator, ephemeral()?, suite)?;
        Ok((agreed, header.to_wire(None)))
    }
}

impl KeyAgreement for X3dh {
    type ResponderKeys = ResponderKeys;
    type InitiatorKeys = IdentityKeyPair;
    type Error = X3dhError;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The bundle carries the current signed pre-key and, if any is held, the
    /// one-time pre-key with the lowest id, its offer signed over `binding`.
    /// A store that serves several handshakes at once should hand out
    /// distinct one-time pre-keys with [`ResponderKeys::bound_bundle`]
    /// instead.
    fn bundle(
        &self,
        responder: &ResponderKeys,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<wire::PreKeyBundle, X3dhError> {
        let one_time = responder.one_time_pre_key_ids().next();
        Ok(responder.bound_bundle(one_time, suites, binding)?.to_wire())
    }

    /// Checks the bundle's identity key against `expected_responder_identity`
    /// first, then the bundle's fields, its signed pre-key signature and its
    /// offer signature over `binding`, then runs X3DH with an
    /// ephemeral key from the operating system. The returned message's
    /// `first_message` is `None`, for the caller to fill in.
    fn initiate(
        &self,
        initiator: &IdentityKeyPair,
        expected_responder_identity: &[u8],
        bundle: &wire::PreKeyBundle,
        suite: SuiteId,
        binding: &[u8],
    ) -> Result<(AgreedSecret, wire::InitialMessage), X3dhError> {
        self.initiate_inner(
            initiator,
            expected_responder_identity,
            bundle,
            suite,
            binding,
            EphemeralKey::generate,
        )
    }

    /// See [`ResponderKeys::respond`]: the one-time pre-key is reported, not
    /// deleted.
    fn respond(
        &self,
        responder: &ResponderKeys,
        initial: &wire::InitialMessage,
    ) -> Result<AgreedSecret, X3dhError> {
        let header = InitialMessageHeader::from_wire(initial)?;
        responder.respond(&self.config, &header)
    }
}
