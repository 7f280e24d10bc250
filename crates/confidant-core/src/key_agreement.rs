//! The key agreement plugin trait and its output.

use crate::ids::SuiteId;
use crate::wire;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the shared secret every key agreement produces.
pub const SHARED_SECRET_LEN: usize = 32;

/// What a key agreement leaves both parties with: the shared secret `SK` and
/// the associated data `AD` that binds the parties' identities.
///
/// The secret is wiped on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AgreedSecret {
    secret: [u8; SHARED_SECRET_LEN],
    associated_data: Vec<u8>,
    #[zeroize(skip)]
    one_time_pre_key_id: Option<u32>,
    #[zeroize(skip)]
    one_time_kem_pre_key_id: Option<u32>,
}

impl AgreedSecret {
    /// Wraps a shared secret and its associated data.
    ///
    /// `one_time_pre_key_id` names the responder's one-time pre-key that this
    /// agreement used; the responder must delete it in the same transaction
    /// that stores the new session.
    pub fn new(
        secret: [u8; SHARED_SECRET_LEN],
        associated_data: Vec<u8>,
        one_time_pre_key_id: Option<u32>,
    ) -> Self {
        Self {
            secret,
            associated_data,
            one_time_pre_key_id,
            one_time_kem_pre_key_id: None,
        }
    }

    /// Records the responder's one-time KEM pre-key that this agreement
    /// used (a post-quantum hybrid such as X3DH + ML-KEM-768); like the
    /// one-time pre-key, the responder deletes it in the transaction that
    /// stores the new session.
    #[must_use]
    pub fn with_one_time_kem_pre_key_id(mut self, id: Option<u32>) -> Self {
        self.one_time_kem_pre_key_id = id;
        self
    }

    /// The shared secret `SK`.
    pub fn secret(&self) -> &[u8; SHARED_SECRET_LEN] {
        &self.secret
    }

    /// The associated data `AD`.
    pub fn associated_data(&self) -> &[u8] {
        &self.associated_data
    }

    /// The one-time pre-key this agreement consumed, if any.
    pub fn one_time_pre_key_id(&self) -> Option<u32> {
        self.one_time_pre_key_id
    }

    /// The one-time KEM pre-key this agreement consumed, if any (always
    /// `None` for a classical key agreement).
    pub fn one_time_kem_pre_key_id(&self) -> Option<u32> {
        self.one_time_kem_pre_key_id
    }
}

impl fmt::Debug for AgreedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgreedSecret")
            .field("secret", &"<redacted>")
            .field("associated_data_len", &self.associated_data.len())
            .field("one_time_pre_key_id", &self.one_time_pre_key_id)
            .field("one_time_kem_pre_key_id", &self.one_time_kem_pre_key_id)
            .finish()
    }
}

/// A key agreement protocol (X3DH is the one Confidant ships), seen by the
/// runtime through the wire messages it exchanges.
///
/// The responder sends a [`wire::PreKeyBundle`]; the initiator checks it
/// against the responder identity it learned out of band and answers with a
/// [`wire::InitialMessage`]; both end with the same [`AgreedSecret`].
///
/// **The offer is authenticated.** A bundle's suites (in the responder's
/// order of preference), its pre-keys and a *binding* are signed with the
/// responder's identity key, and the initiator refuses a bundle whose
/// signature does not cover exactly what it received, so a relay can neither
/// strip nor reorder the suites, nor strip the one-time pre-key. The binding
/// is a byte string both sides know without the relay's help (the runtime
/// uses the connection id with the invitation's token, or with the nonce of
/// the reset request a bundle answers), so a bundle cannot be replayed into
/// another handshake.
pub trait KeyAgreement: Send + Sync + 'static {
    /// The responder's identity and pre-key secrets.
    type ResponderKeys;
    /// The initiator's identity secret.
    type InitiatorKeys;
    /// Why an agreement failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A name for logs and errors, e.g. `"X3DH-25519-SHA-256"`.
    fn name(&self) -> &'static str;

    /// Responder: the bundle to send to an initiator, offering `suites`
    /// (most preferred first), with its offer signed over `binding`.
    fn bundle(
        &self,
        responder: &Self::ResponderKeys,
        suites: &[SuiteId],
        binding: &[u8],
    ) -> Result<wire::PreKeyBundle, Self::Error>;

    /// Initiator: verifies `bundle` against `expected_responder_identity`
    /// and its offer signature against `binding`, checks that `suite` is
    /// offered, agrees on a secret, and returns it with the initial message
    /// to send (whose `first_message` the caller fills in).
    fn initiate(
        &self,
        initiator: &Self::InitiatorKeys,
        expected_responder_identity: &[u8],
        bundle: &wire::PreKeyBundle,
        suite: SuiteId,
        binding: &[u8],
    ) -> Result<(AgreedSecret, wire::InitialMessage), Self::Error>;

    /// Responder: derives the secret from an initial message. The one-time
    /// pre-key it used is reported in the result, not deleted here.
    fn respond(
        &self,
        responder: &Self::ResponderKeys,
        initial: &wire::InitialMessage,
    ) -> Result<AgreedSecret, Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let secret = AgreedSecret::new([0xAB; 32], vec![1, 2, 3], Some(7));
        let shown = format!("{secret:?}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("ab, ab"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn one_time_kem_pre_key_id_is_reported_separately() {
        let classical = AgreedSecret::new([1; 32], vec![], Some(7));
        assert_eq!(classical.one_time_kem_pre_key_id(), None);
        let hybrid = classical.with_one_time_kem_pre_key_id(Some(9));
        assert_eq!(hybrid.one_time_pre_key_id(), Some(7));
        assert_eq!(hybrid.one_time_kem_pre_key_id(), Some(9));
        assert!(format!("{hybrid:?}").contains("one_time_kem_pre_key_id: Some(9)"));
    }
}
