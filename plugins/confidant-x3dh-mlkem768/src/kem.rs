//! ML-KEM-768 (FIPS 203) behind Confidant's own types: the key pair, the
//! public key, the ciphertext, the shared secret and the signed KEM pre-key.
//!
//! The primitive is RustCrypto's `ml-kem`; this module adds no
//! cryptography of its own, only fixed-length encodings, validation and
//! secret hygiene (every secret is wiped on drop and never printed).

use crate::error::HybridError;
use confidant_core::wire;
use confidant_x3dh::{IdentityKeyPair, IdentityPublicKey, SIGNATURE_LEN};
use ml_kem::{Decapsulate, KeyExport, MlKem768, ml_kem_768};
use rand::{CryptoRng, TryRng};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Length of an ML-KEM-768 encapsulation key `ek` (FIPS 203, Table 3).
pub const KEM_PUBLIC_KEY_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext `c`.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Length of FIPS 203's expanded decapsulation key `dk`.
pub const KEM_DECAPSULATION_KEY_LEN: usize = 2400;
/// Length of the seed a key pair is stored as: `d ‖ z`.
pub const KEM_SEED_LEN: usize = 64;
/// Length of the KEM shared secret `SS` (`K` in FIPS 203).
pub const KEM_SHARED_SECRET_LEN: usize = 32;

/// The KEM type byte of `EncodeKEM` for ML-KEM-768, in Confidant's own
/// registry (PQXDH leaves the constant to the application).
pub const KEM_TYPE_ML_KEM_768: u8 = 0x01;

/// Writes the first bytes of a public value as hex, for `Debug`.
struct Fingerprint<'a>(&'a [u8]);

impl fmt::Debug for Fingerprint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.iter().take(8) {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "… ({} bytes)", self.0.len())
    }
}

const REDACTED: &str = "<redacted>";

/// Fills `bytes` from the operating system's random number generator.
pub(crate) fn system_random(bytes: &mut [u8]) -> Result<(), HybridError> {
    rand::rngs::SysRng
        .try_fill_bytes(bytes)
        .map_err(|error| HybridError::Randomness(error.to_string()))
}

/// A validated ML-KEM-768 encapsulation key (`ek`, 1184 bytes).
///
/// Validation is FIPS 203's encapsulation key check (§7.2): every
/// coefficient is reduced modulo q, so the encoding is canonical.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    key: ml_kem_768::EncapsulationKey,
    bytes: Box<[u8; KEM_PUBLIC_KEY_LEN]>,
}

impl KemPublicKey {
    /// Validates 1184 bytes ([`HybridError::InvalidKemPublicKey`]).
    pub fn from_bytes(bytes: &[u8; KEM_PUBLIC_KEY_LEN]) -> Result<Self, HybridError> {
        let encoded = ml_kem::Key::<ml_kem_768::EncapsulationKey>::from(*bytes);
        let key = ml_kem_768::EncapsulationKey::new(&encoded)
            .map_err(|_| HybridError::InvalidKemPublicKey)?;
        Ok(Self {
            key,
            bytes: Box::new(*bytes),
        })
    }

    /// Like [`from_bytes`](Self::from_bytes), for a slice that must be 1184
    /// bytes long (else [`HybridError::Decode`] naming `field`).
    pub fn from_field(field: &'static str, bytes: &[u8]) -> Result<Self, HybridError> {
        let bytes = wire::fixed_len::<KEM_PUBLIC_KEY_LEN>(field, bytes)?;
        Self::from_bytes(&bytes)
    }

    fn from_key(key: &ml_kem_768::EncapsulationKey) -> Self {
        let encoded = key.to_bytes();
        let mut bytes = Box::new([0u8; KEM_PUBLIC_KEY_LEN]);
        bytes.copy_from_slice(&encoded);
        Self {
            key: key.clone(),
            bytes,
        }
    }

    /// The FIPS 203 encoding of `ek`, 1184 bytes.
    pub fn as_bytes(&self) -> &[u8; KEM_PUBLIC_KEY_LEN] {
        &self.bytes
    }

    /// `EncodeKEM(PK)` as PQXDH defines it: the KEM type byte
    /// ([`KEM_TYPE_ML_KEM_768`]) followed by the key's encoding, 1185
    /// bytes. This is what a KEM pre-key's signature covers.
    pub fn encode_kem(&self) -> Vec<u8> {
        let mut encoded = Vec::with_capacity(1 + KEM_PUBLIC_KEY_LEN);
        encoded.push(KEM_TYPE_ML_KEM_768);
        encoded.extend_from_slice(self.as_bytes());
        encoded
    }

    /// `(CT, SS) = PQKEM-ENC(PK)` with fresh randomness from the operating
    /// system.
    pub fn encapsulate(&self) -> Result<(KemCiphertext, KemSharedSecret), HybridError> {
        let mut randomness = Zeroizing::new([0u8; 32]);
        system_random(randomness.as_mut())?;
        Ok(self.encapsulate_with_randomness(&randomness))
    }

    /// `ML-KEM.Encaps_internal(ek, m)` (FIPS 203, Algorithm 17) with the
    /// given 32 bytes of randomness `m`. For known-answer tests only: a
    /// repeated `m` gives away the shared secret.
    pub fn encapsulate_with_randomness(
        &self,
        randomness: &[u8; 32],
    ) -> (KemCiphertext, KemSharedSecret) {
        let mut m = ml_kem::B32::from(*randomness);
        let (ciphertext, mut shared) = self.key.encapsulate_deterministic(&m);
        m.as_mut_slice().zeroize();
        let secret = KemSharedSecret::from_slice(&shared);
        shared.as_mut_slice().zeroize();
        (KemCiphertext::from_array(&ciphertext), secret)
    }
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KemPublicKey")
            .field(&Fingerprint(self.as_bytes()))
            .finish()
    }
}

/// An ML-KEM-768 ciphertext (`c`, 1088 bytes). Any 1088 bytes are a
/// ciphertext: a forged or altered one decapsulates to an unrelated
/// secret (implicit rejection).
#[derive(Clone, PartialEq, Eq)]
pub struct KemCiphertext(Box<[u8; KEM_CIPHERTEXT_LEN]>);

impl KemCiphertext {
    /// Wraps 1088 bytes.
    pub fn from_bytes(bytes: &[u8; KEM_CIPHERTEXT_LEN]) -> Self {
        Self(Box::new(*bytes))
    }

    /// A slice that must be 1088 bytes long (else [`HybridError::Decode`]
    /// naming `field`).
    pub fn from_field(field: &'static str, bytes: &[u8]) -> Result<Self, HybridError> {
        let bytes = wire::fixed_len::<KEM_CIPHERTEXT_LEN>(field, bytes)?;
        Ok(Self::from_bytes(&bytes))
    }

    fn from_array(ciphertext: &ml_kem_768::Ciphertext) -> Self {
        let mut bytes = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
        bytes.copy_from_slice(ciphertext);
        Self(bytes)
    }

    /// The 1088 bytes.
    pub fn as_bytes(&self) -> &[u8; KEM_CIPHERTEXT_LEN] {
        &self.0
    }
}

impl fmt::Debug for KemCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KemCiphertext")
            .field(&Fingerprint(self.as_bytes()))
            .finish()
    }
}

/// The KEM shared secret `SS`, 32 bytes. Wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KemSharedSecret(Zeroizing<[u8; KEM_SHARED_SECRET_LEN]>);

impl KemSharedSecret {
    fn from_slice(bytes: &[u8]) -> Self {
        let mut secret = Zeroizing::new([0u8; KEM_SHARED_SECRET_LEN]);
        secret.copy_from_slice(bytes);
        Self(secret)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEM_SHARED_SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for KemSharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KemSharedSecret(<redacted>)")
    }
}

/// An ML-KEM-768 key pair: the decapsulation key and its encapsulation
/// key. Built from its 64-byte seed `d ‖ z` (FIPS 203's
/// `ML-KEM.KeyGen_internal(d, z)`), which is also how it is stored. The
/// decapsulation key is wiped on drop (`ml-kem`'s `zeroize` feature) and
/// never printed.
#[derive(Clone)]
pub struct KemKeyPair {
    decapsulation_key: ml_kem_768::DecapsulationKey,
    public_key: KemPublicKey,
}

impl KemKeyPair {
    /// `ML-KEM.KeyGen_internal(d, z)` (FIPS 203, Algorithm 16).
    pub fn from_seed(d: &[u8; 32], z: &[u8; 32]) -> Self {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        if let Some((first, second)) = seed.split_first_chunk_mut::<32>() {
            first.copy_from_slice(d);
            second.copy_from_slice(z);
        }
        Self::from_seed_bytes(&seed)
    }

    /// The key pair from its stored 64-byte seed `d ‖ z`.
    pub fn from_seed_bytes(seed: &[u8; KEM_SEED_LEN]) -> Self {
        let mut seed = ml_kem::Seed::from(*seed);
        let decapsulation_key = ml_kem_768::DecapsulationKey::from_seed(seed);
        seed.as_mut_slice().zeroize();
        let public_key = KemPublicKey::from_key(decapsulation_key.encapsulation_key());
        Self {
            decapsulation_key,
            public_key,
        }
    }

    /// A fresh key pair from the operating system's random number
    /// generator.
    pub fn generate() -> Result<Self, HybridError> {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        system_random(seed.as_mut())?;
        Ok(Self::from_seed_bytes(&seed))
    }

    /// A fresh key pair from `rng`.
    pub fn generate_from_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed_bytes(&seed)
    }

    /// The key pair from FIPS 203's 2400-byte expanded decapsulation key
    /// `dk` (as NIST's ACVP decapsulation vectors give it), checked as
    /// FIPS 203 §7.3 asks (the embedded `H(ek)` must match).
    /// [`to_seed`](Self::to_seed) is `None` for such a key: prefer seeds.
    /// Fails with [`HybridError::InvalidKemDecapsulationKey`].
    pub fn from_decapsulation_key_bytes(
        bytes: &[u8; KEM_DECAPSULATION_KEY_LEN],
    ) -> Result<Self, HybridError> {
        // `ml-kem` deprecates the expanded form in favour of seeds; it is
        // kept here for the known-answer tests and for keys from other
        // implementations.
        #[allow(deprecated)]
        let decapsulation_key = {
            use ml_kem::ExpandedKeyEncoding;
            let mut expanded = ml_kem::ExpandedDecapsulationKey::<MlKem768>::from(*bytes);
            let key = ml_kem_768::DecapsulationKey::from_expanded_bytes(&expanded);
            expanded.as_mut_slice().zeroize();
            key.map_err(|_| HybridError::InvalidKemDecapsulationKey)?
        };
        let public_key = KemPublicKey::from_key(decapsulation_key.encapsulation_key());
        Ok(Self {
            decapsulation_key,
            public_key,
        })
    }

    /// FIPS 203's expanded decapsulation key `dk`, 2400 bytes. Secret.
    pub fn to_decapsulation_key_bytes(&self) -> Zeroizing<Vec<u8>> {
        #[allow(deprecated)]
        let mut expanded = {
            use ml_kem::ExpandedKeyEncoding;
            self.decapsulation_key.to_expanded_bytes()
        };
        let bytes = Zeroizing::new(expanded.to_vec());
        expanded.as_mut_slice().zeroize();
        bytes
    }

    /// The 64-byte seed `d ‖ z`, for storage; `None` for a key built from
    /// the expanded form. Secret.
    pub fn to_seed(&self) -> Option<Zeroizing<[u8; KEM_SEED_LEN]>> {
        let mut seed = self.decapsulation_key.to_seed()?;
        let mut bytes = Zeroizing::new([0u8; KEM_SEED_LEN]);
        bytes.copy_from_slice(&seed);
        seed.as_mut_slice().zeroize();
        Some(bytes)
    }

    /// The encapsulation key.
    pub fn public_key(&self) -> &KemPublicKey {
        &self.public_key
    }

    /// `SS = PQKEM-DEC(dk, CT)` (FIPS 203, `ML-KEM.Decaps_internal`). Never
    /// fails: an altered ciphertext gives FIPS 203's implicit-rejection
    /// value `J(z ‖ c)`, unrelated to the encapsulator's secret.
    pub fn decapsulate(&self, ciphertext: &KemCiphertext) -> KemSharedSecret {
        let ciphertext = ml_kem_768::Ciphertext::from(*ciphertext.as_bytes());
        let mut shared = self.decapsulation_key.decapsulate(&ciphertext);
        let secret = KemSharedSecret::from_slice(&shared);
        shared.as_mut_slice().zeroize();
        secret
    }
}

impl fmt::Debug for KemKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemKeyPair")
            .field("public_key", &Fingerprint(self.public_key.as_bytes()))
            .field("decapsulation_key", &REDACTED)
            .finish()
    }
}

/// Version byte of [`KemPreKey::to_storage_bytes`].
const KEM_PRE_KEY_STORAGE_VERSION: u8 = 1;
/// Length of [`KemPreKey::to_storage_bytes`].
pub const KEM_PRE_KEY_STORAGE_LEN: usize = 2 + 4 + KEM_SEED_LEN + SIGNATURE_LEN;

/// Whether a KEM pre-key serves many handshakes (PQXDH's signed
/// last-resort `PQSPK_B`) or one (a one-time `PQOPK_B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KemPreKeyKind {
    /// The signed last-resort KEM pre-key, used when no one-time KEM
    /// pre-key is left.
    LastResort,
    /// A signed one-time KEM pre-key, used for one handshake and deleted.
    OneTime,
}

impl KemPreKeyKind {
    /// The byte that stands for the kind in the hybrid offer transcript.
    pub const fn transcript_byte(self) -> u8 {
        match self {
            Self::LastResort => 0x01,
            Self::OneTime => 0x02,
        }
    }

    /// The wire enum `KemPreKeyKind`.
    pub fn to_wire(self) -> wire::KemPreKeyKind {
        match self {
            Self::LastResort => wire::KemPreKeyKind::LastResort,
            Self::OneTime => wire::KemPreKeyKind::OneTime,
        }
    }

    /// From the wire enum's number: unspecified (0) and unknown values are
    /// refused ([`HybridError::Decode`]).
    pub fn from_wire(value: i32) -> Result<Self, HybridError> {
        match wire::KemPreKeyKind::try_from(value) {
            Ok(wire::KemPreKeyKind::LastResort) => Ok(Self::LastResort),
            Ok(wire::KemPreKeyKind::OneTime) => Ok(Self::OneTime),
            _ => Err(HybridError::Decode(wire::DecodeError::Malformed(format!(
                "bundle.kem_pre_key.kind {value} is not last-resort (1) or one-time (2)"
            )))),
        }
    }
}

/// One of the responder's signed ML-KEM-768 pre-keys: an id, its kind, the
/// key pair, and the identity key's Ed25519 signature over
/// `EncodeKEM(PQPK)` ([`KemPublicKey::encode_kem`]).
#[derive(Clone)]
pub struct KemPreKey {
    id: u32,
    kind: KemPreKeyKind,
    key_pair: KemKeyPair,
    signature: [u8; SIGNATURE_LEN],
}

impl KemPreKey {
    /// Signs `key_pair`'s public key with `identity` (Ed25519 is
    /// deterministic: the same inputs give the same signature).
    pub fn new(
        identity: &IdentityKeyPair,
        id: u32,
        kind: KemPreKeyKind,
        key_pair: KemKeyPair,
    ) -> Self {
        let signature = identity.sign(&key_pair.public_key().encode_kem());
        Self {
            id,
            kind,
            key_pair,
            signature,
        }
    }

    /// A fresh KEM pre-key from the operating system's random number
    /// generator, signed by `identity`.
    pub fn generate(
        identity: &IdentityKeyPair,
        id: u32,
        kind: KemPreKeyKind,
    ) -> Result<Self, HybridError> {
        Ok(Self::new(identity, id, kind, KemKeyPair::generate()?))
    }

    /// Rebuilds a KEM pre-key from storage with the signature stored beside
    /// it; the signature is checked when the key is added to
    /// [`HybridResponderKeys`](crate::HybridResponderKeys).
    pub fn from_parts(
        id: u32,
        kind: KemPreKeyKind,
        key_pair: KemKeyPair,
        signature: [u8; SIGNATURE_LEN],
    ) -> Self {
        Self {
            id,
            kind,
            key_pair,
            signature,
        }
    }

    /// The id the responder chose.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Last-resort or one-time.
    pub fn kind(&self) -> KemPreKeyKind {
        self.kind
    }

    /// The key pair (secret).
    pub fn key_pair(&self) -> &KemKeyPair {
        &self.key_pair
    }

    /// The public key `PQPK`.
    pub fn public_key(&self) -> &KemPublicKey {
        self.key_pair.public_key()
    }

    /// `Sig(IK, EncodeKEM(PQPK))`.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        self.signature
    }

    /// The storage encoding: a version byte (1), the kind's transcript
    /// byte, the id (`u32` big-endian), the 64-byte seed `d ‖ z` of the key
    /// pair and the 64-byte signature: 134 bytes, secret. `None` for a key
    /// pair rebuilt from an expanded decapsulation key, which has no seed.
    pub fn to_storage_bytes(&self) -> Option<Zeroizing<Vec<u8>>> {
        let seed = self.key_pair.to_seed()?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEM_PRE_KEY_STORAGE_LEN));
        bytes.push(KEM_PRE_KEY_STORAGE_VERSION);
        bytes.push(self.kind.transcript_byte());
        bytes.extend_from_slice(&self.id.to_be_bytes());
        bytes.extend_from_slice(seed.as_ref());
        bytes.extend_from_slice(&self.signature);
        Some(bytes)
    }

    /// Decodes [`to_storage_bytes`](Self::to_storage_bytes): a wrong
    /// length, version or kind is [`HybridError::Decode`], never a panic.
    /// The signature is not checked here; it is when the key is added to
    /// [`HybridResponderKeys`](crate::HybridResponderKeys).
    pub fn from_storage_bytes(bytes: &[u8]) -> Result<Self, HybridError> {
        let malformed = |what: &str| {
            HybridError::Decode(wire::DecodeError::Malformed(format!(
                "stored KEM pre-key: {what}"
            )))
        };
        if bytes.len() != KEM_PRE_KEY_STORAGE_LEN {
            return Err(malformed("wrong length"));
        }
        let (&[version, kind, id @ ..], rest) = bytes
            .split_first_chunk::<6>()
            .ok_or_else(|| malformed("wrong length"))?;
        if version != KEM_PRE_KEY_STORAGE_VERSION {
            return Err(malformed("unknown version"));
        }
        let kind = match kind {
            b if b == KemPreKeyKind::LastResort.transcript_byte() => KemPreKeyKind::LastResort,
            b if b == KemPreKeyKind::OneTime.transcript_byte() => KemPreKeyKind::OneTime,
            _ => return Err(malformed("unknown kind")),
        };
        let id = u32::from_be_bytes(id);
        let (seed, signature) = rest
            .split_first_chunk::<KEM_SEED_LEN>()
            .ok_or_else(|| malformed("seed"))?;
        let seed: Zeroizing<[u8; KEM_SEED_LEN]> = Zeroizing::new(*seed);
        let signature: [u8; SIGNATURE_LEN] =
            signature.try_into().map_err(|_| malformed("signature"))?;
        Ok(Self::from_parts(
            id,
            kind,
            KemKeyPair::from_seed_bytes(&seed),
            signature,
        ))
    }

    /// Whether the signature verifies under `identity`.
    pub(crate) fn check_signature(&self, identity: &IdentityPublicKey) -> Result<(), HybridError> {
        identity
            .verify_strict(&self.public_key().encode_kem(), &self.signature)
            .map_err(|_| HybridError::ForeignKemPreKey { id: self.id })
    }
}

impl fmt::Debug for KemPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemPreKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("public_key", &Fingerprint(self.public_key().as_bytes()))
            .field("secret", &REDACTED)
            .finish()
    }
}
