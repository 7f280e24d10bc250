//! The key types of X3DH: identity keys (Ed25519), signed, one-time and
//! ephemeral pre-keys (X25519).
//!
//! Every secret is held in a dalek type that wipes itself on drop
//! ([`ed25519_dalek::SigningKey`], [`x25519_dalek::StaticSecret`]); every
//! `Debug` implementation here is written by hand and prints public values
//! only.

use crate::error::{DhStep, X3dhError};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, TryRng};
use std::fmt;
use x25519_dalek::{SharedSecret, StaticSecret};
use zeroize::Zeroizing;

/// Length of every public key on the wire: `Encode(PK)` is the raw 32 bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of every secret key: an Ed25519 seed or an X25519 scalar.
pub const SECRET_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Writes `bytes` as lowercase hex; used for public values in `Debug`.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The value shown in place of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// A party's long-term identity key pair (Ed25519).
///
/// It signs the signed pre-key, and takes part in X3DH through the
/// birational map: its X25519 secret is the clamped first half of
/// SHA-512 of the seed ([`SigningKey::to_scalar_bytes`]). The seed is wiped
/// on drop and never printed.
#[derive(Clone)]
pub struct IdentityKeyPair {
    signing_key: SigningKey,
}

impl IdentityKeyPair {
    /// Builds the key pair from its 32-byte Ed25519 seed (RFC 8032's
    /// "private key").
    pub fn from_seed(seed: [u8; SECRET_KEY_LEN]) -> Self {
        let seed = Zeroizing::new(seed);
        Self {
            signing_key: SigningKey::from_bytes(&seed),
        }
    }

    /// Generates a fresh key pair from the thread-local CSPRNG
    /// ([`rand::rng`], seeded by the operating system).
    pub fn generate() -> Self {
        Self::generate_from_rng(&mut rand::rng())
    }

    /// Generates a fresh key pair from `rng`.
    pub fn generate_from_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            signing_key: SigningKey::generate(rng),
        }
    }

    /// The 32-byte seed, for storage. Handle with care: it is the identity.
    pub fn to_seed(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.signing_key.to_bytes())
    }

    /// The public half.
    pub fn public_key(&self) -> IdentityPublicKey {
        IdentityPublicKey::from_verifying_key(self.signing_key.verifying_key())
    }

    /// Signs `message` with the identity key (Ed25519, RFC 8032), for
    /// protocol messages other than the bundle, such as a session reset.
    ///
    /// X3DH signs exactly the 32 bytes of a signed pre-key with this key, so
    /// every other use must be domain-separated: start `message` with a
    /// label naming its purpose (then it is never 32 bytes of a key).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing_key.sign(message).to_bytes()
    }

    /// The X25519 form of the identity secret: the first half of SHA-512 of
    /// the seed; X25519 clamps it when it is used.
    pub(crate) fn dh_secret(&self) -> StaticSecret {
        let scalar_bytes = Zeroizing::new(self.signing_key.to_scalar_bytes());
        StaticSecret::from(*scalar_bytes)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field(
                "public_key",
                &Hex(self.signing_key.verifying_key().as_bytes()),
            )
            .field("seed", &REDACTED)
            .finish()
    }
}

/// A validated Ed25519 identity public key.
///
/// Only canonical encodings of points that are not of small order are
/// accepted, so one identity has exactly one encoding and a forged
/// "signature by anyone" under a weak key is impossible. For
/// Diffie-Hellman it is mapped to its Montgomery (X25519) form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublicKey {
    verifying_key: VerifyingKey,
}

impl IdentityPublicKey {
    /// Validates a 32-byte Ed25519 public key.
    ///
    /// Fails with [`X3dhError::InvalidIdentityKey`] when the bytes are not
    /// the canonical encoding of a curve point, and with
    /// [`X3dhError::WeakIdentityKey`] when the point has small order.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, X3dhError> {
        let verifying_key =
            VerifyingKey::from_bytes(bytes).map_err(|_| X3dhError::InvalidIdentityKey)?;
        // `from_bytes` accepts a y-coordinate that is not reduced mod p;
        // such a key has a second spelling, which would let two byte strings
        // name one identity.
        if verifying_key.to_edwards().compress().as_bytes() != bytes {
            return Err(X3dhError::InvalidIdentityKey);
        }
        if verifying_key.is_weak() {
            return Err(X3dhError::WeakIdentityKey);
        }
        Ok(Self { verifying_key })
    }

    /// Like [`from_bytes`](Self::from_bytes), for a slice that must be 32
    /// bytes long (otherwise [`X3dhError::Decode`]), such as the identity key
    /// read from an invitation.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, X3dhError> {
        Self::from_field("identity_key", bytes)
    }

    /// [`from_slice`](Self::from_slice), naming the wire field in a length
    /// error.
    pub(crate) fn from_field(field: &'static str, bytes: &[u8]) -> Result<Self, X3dhError> {
        let bytes = confidant_core::wire::fixed_len::<PUBLIC_KEY_LEN>(field, bytes)?;
        Self::from_bytes(&bytes)
    }

    fn from_verifying_key(verifying_key: VerifyingKey) -> Self {
        Self { verifying_key }
    }

    /// `Encode(IK)`: the raw 32-byte compressed Edwards point.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.verifying_key.to_bytes()
    }

    /// `Encode(IK)` by reference.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.verifying_key.as_bytes()
    }

    /// The X25519 (Montgomery u-coordinate) form of this key, as used in
    /// `DH1` (responder side) and `DH2` (initiator side).
    pub fn to_x25519(&self) -> X25519PublicKey {
        X25519PublicKey::from_bytes(self.verifying_key.to_montgomery().to_bytes())
    }

    /// Verifies an Ed25519 signature strictly (RFC 8032 §5.1.7 plus the
    /// rejection of small-order `R` and non-canonical `S`).
    pub fn verify_strict(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), X3dhError> {
        let signature = Signature::from_bytes(signature);
        self.verifying_key
            .verify_strict(message, &signature)
            .map_err(|_| X3dhError::BadSignature)
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityPublicKey")
            .field(&Hex(self.as_bytes()))
            .finish()
    }
}

/// An X25519 public key (Montgomery u-coordinate), as carried on the wire
/// for signed, one-time and ephemeral pre-keys.
///
/// Any 32 bytes are accepted here, as RFC 7748 asks; a key of low order is
/// caught when it is used, because its Diffie-Hellman output is all zeros
/// (see [`X3dhError::NonContributoryDh`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct X25519PublicKey([u8; PUBLIC_KEY_LEN]);

impl X25519PublicKey {
    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// `Encode(PK)`: the raw 32 bytes.
    pub const fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    /// `Encode(PK)` by reference.
    pub const fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    fn of(secret: &StaticSecret) -> Self {
        Self(x25519_dalek::PublicKey::from(secret).to_bytes())
    }
}

impl fmt::Debug for X25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("X25519PublicKey")
            .field(&Hex(&self.0))
            .finish()
    }
}

/// The responder's signed pre-key: an X25519 key pair with an id, and the
/// identity key's Ed25519 signature over `Encode(SPK)`.
#[derive(Clone)]
pub struct SignedPreKey {
    id: u32,
    secret: StaticSecret,
    public_key: X25519PublicKey,
    signature: [u8; SIGNATURE_LEN],
}

impl SignedPreKey {
    /// Builds a signed pre-key from its secret bytes and signs its public key
    /// with `identity`. Ed25519 signing is deterministic, so the same inputs
    /// always give the same signature.
    pub fn new(identity: &IdentityKeyPair, id: u32, secret: [u8; SECRET_KEY_LEN]) -> Self {
        let secret = StaticSecret::from(*Zeroizing::new(secret));
        let public_key = X25519PublicKey::of(&secret);
        let signature = identity.sign(public_key.as_bytes());
        Self {
            id,
            secret,
            public_key,
            signature,
        }
    }

    /// Generates a fresh signed pre-key from the thread-local CSPRNG and signs
    /// it with `identity`.
    pub fn generate(identity: &IdentityKeyPair, id: u32) -> Self {
        Self::generate_from_rng(identity, id, &mut rand::rng())
    }

    /// Generates a fresh signed pre-key from `rng` and signs it with
    /// `identity`.
    pub fn generate_from_rng<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        id: u32,
        rng: &mut R,
    ) -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rng.fill_bytes(secret.as_mut());
        Self::new(identity, id, *secret)
    }

    /// Rebuilds a signed pre-key from storage: its id, secret and the
    /// signature stored with it. The signature is checked when the key is
    /// added to [`ResponderKeys`](crate::ResponderKeys).
    pub fn from_parts(
        id: u32,
        secret: [u8; SECRET_KEY_LEN],
        signature: [u8; SIGNATURE_LEN],
    ) -> Self {
        let secret = StaticSecret::from(*Zeroizing::new(secret));
        let public_key = X25519PublicKey::of(&secret);
        Self {
            id,
            secret,
            public_key,
            signature,
        }
    }

    /// The id the responder chose for this key.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public key `SPK`.
    pub fn public_key(&self) -> X25519PublicKey {
        self.public_key
    }

    /// `Sig(IK, Encode(SPK))`.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        self.signature
    }

    /// The secret bytes, for storage.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKey")
            .field("id", &self.id)
            .field("public_key", &Hex(self.public_key.as_bytes()))
            .field("signature", &Hex(&self.signature))
            .field("secret", &REDACTED)
            .finish()
    }
}

/// One of the responder's one-time pre-keys: an X25519 key pair with an id,
/// used in at most one X3DH run and then deleted.
#[derive(Clone)]
pub struct OneTimePreKey {
    id: u32,
    secret: StaticSecret,
    public_key: X25519PublicKey,
}

impl OneTimePreKey {
    /// Builds a one-time pre-key from its secret bytes.
    pub fn new(id: u32, secret: [u8; SECRET_KEY_LEN]) -> Self {
        let secret = StaticSecret::from(*Zeroizing::new(secret));
        let public_key = X25519PublicKey::of(&secret);
        Self {
            id,
            secret,
            public_key,
        }
    }

    /// Generates a fresh one-time pre-key from the thread-local CSPRNG.
    pub fn generate(id: u32) -> Self {
        Self::generate_from_rng(id, &mut rand::rng())
    }

    /// Generates a fresh one-time pre-key from `rng`.
    pub fn generate_from_rng<R: CryptoRng + ?Sized>(id: u32, rng: &mut R) -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rng.fill_bytes(secret.as_mut());
        Self::new(id, *secret)
    }

    /// The id the responder chose for this key.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public key `OPK`.
    pub fn public_key(&self) -> X25519PublicKey {
        self.public_key
    }

    /// The secret bytes, for storage.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKey")
            .field("id", &self.id)
            .field("public_key", &Hex(self.public_key.as_bytes()))
            .field("secret", &REDACTED)
            .finish()
    }
}

/// The initiator's ephemeral key `EK_A`, used for one X3DH run.
///
/// Agreement functions take it by value, so it is wiped as soon as the run
/// is over and cannot be reused.
pub struct EphemeralKey {
    secret: StaticSecret,
    public_key: X25519PublicKey,
}

impl EphemeralKey {
    /// Builds an ephemeral key from given secret bytes. Meant for
    /// known-answer tests; in production use [`generate`](Self::generate).
    pub fn from_bytes(secret: [u8; SECRET_KEY_LEN]) -> Self {
        let secret = StaticSecret::from(*Zeroizing::new(secret));
        let public_key = X25519PublicKey::of(&secret);
        Self { secret, public_key }
    }

    /// Generates an ephemeral key straight from the operating system's
    /// random number generator.
    pub fn generate() -> Result<Self, X3dhError> {
        let mut secret = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rand::rngs::SysRng
            .try_fill_bytes(secret.as_mut())
            .map_err(|error| X3dhError::Randomness(error.to_string()))?;
        Ok(Self::from_bytes(*secret))
    }

    /// Generates an ephemeral key from `rng`.
    pub fn generate_from_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rng.fill_bytes(secret.as_mut());
        Self::from_bytes(*secret)
    }

    /// The public key `EK_A`, sent in the initial message.
    pub fn public_key(&self) -> X25519PublicKey {
        self.public_key
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("public_key", &Hex(self.public_key.as_bytes()))
            .field("secret", &REDACTED)
            .finish()
    }
}

/// One X25519 computation of X3DH, refusing an all-zero output.
pub(crate) fn diffie_hellman(
    step: DhStep,
    secret: &StaticSecret,
    public_key: &X25519PublicKey,
) -> Result<SharedSecret, X3dhError> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(public_key.to_bytes()));
    if shared.was_contributory() {
        Ok(shared)
    } else {
        Err(X3dhError::NonContributoryDh { step })
    }
}
