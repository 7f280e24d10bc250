//! # A cipher suite written outside Confidant's plugins
//!
//! This crate is what you copy to add your own suite. It wraps
//! XChaCha20-Poly1305 (24-byte nonce) from RustCrypto, gives it an IV
//! strategy of its own (a 192-bit big-endian counter), composes the two
//! under an id from the private-use range, and registers the result. Its test
//! (`tests/conformance.rs`) runs the suite through `confidant-conformance`,
//! exactly as the project's own suites are run.
//!
//! Four steps:
//! 1. **Wrap the cipher** in [`confidant_core::Aead`]: sizes as constants, a
//!    limit, length checks that return errors (a session never panics on
//!    input), one opaque error on failed decryption. Never implement the
//!    primitive yourself.
//! 2. **Write the IV strategy** ([`confidant_core::IvStrategy`]): `IV_n` must
//!    be a pure function of the seed and `n`, distinct for distinct `n` below
//!    `MAX_IVS`, and cheap to compute for any `n`.
//! 3. **Compose** them with [`SuiteOf`] under an id at or above
//!    [`SuiteId::PRIVATE_USE_START`].
//! 4. **Register** the suite beside the project's, and **run the conformance
//!    suite** on it.
//!
//! ```
//! use confidant_core::SuiteRegistry;
//!
//! let mut registry = SuiteRegistry::new();
//! custom_cipher::register(&mut registry)?;
//! let suite = registry.get(custom_cipher::XCHACHA20_POLY1305_COUNTER)?;
//!
//! let mut cipher = suite.direction_cipher(&[9u8; 32], &[])?;
//! let mut message = b"hello".to_vec();
//! cipher.seal(0, b"associated data", &mut message)?;
//! cipher.open(0, b"associated data", &mut message)?;
//! assert_eq!(message, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use chacha20poly1305::aead::array::Array;
use chacha20poly1305::aead::consts::U16;
use chacha20poly1305::{AeadInOut, KeyInit, XNonce};
use confidant_core::{
    Aead, IvError, IvStrategy, KeyLengthError, OpenError, RegistryError, SealError, Suite, SuiteId,
    SuiteOf, SuiteRegistry, TAG_LEN, Tag,
};
use std::fmt;
use std::sync::Arc;

/// Our suite's id: anything from [`SuiteId::PRIVATE_USE_START`] up is ours
/// to assign. Both parties must agree on it; it goes on the wire and into the
/// associated data of every message.
pub const XCHACHA20_POLY1305_COUNTER: SuiteId = SuiteId(SuiteId::PRIVATE_USE_START + 0x20);

/// Step 1: XChaCha20-Poly1305 behind Confidant's [`Aead`] trait.
///
/// The inner cipher wipes its key on drop (the `zeroize` feature is on) and
/// our `Debug` never prints it.
pub struct XChaCha20Poly1305(chacha20poly1305::XChaCha20Poly1305);

impl Aead for XChaCha20Poly1305 {
    const NAME: &'static str = "XChaCha20-Poly1305";
    const KEY_LEN: usize = 32;
    const NONCE_LEN: usize = 24;
    /// The same ChaCha20 core and Poly1305 as ChaCha20-Poly1305, whose
    /// confidentiality limit is beyond any realistic message count (RFC 9001
    /// §6.6); we state QUIC's 2^62 so the session has a finite number.
    const CONFIDENTIALITY_LIMIT: u64 = 1 << 62;
    const INTEGRITY_LIMIT: u64 = 1 << 36;
    /// A 32-bit block counter of 64-byte blocks, less one block (see the
    /// ChaCha20-Poly1305 plugin for why).
    const MAX_PLAINTEXT_LEN: u64 = ((1 << 32) - 2) * 64;

    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        chacha20poly1305::XChaCha20Poly1305::new_from_slice(key)
            .map(Self)
            .map_err(|_| KeyLengthError {
                expected: Self::KEY_LEN,
                actual: key.len(),
            })
    }

    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        // A wrong length is an error, never a panic.
        let nonce: &XNonce = nonce.try_into().map_err(|_| SealError::NonceLength {
            expected: Self::NONCE_LEN,
            actual: nonce.len(),
        })?;
        if u64::try_from(buffer.len()).map_or(true, |len| len > Self::MAX_PLAINTEXT_LEN) {
            return Err(SealError::TooLong);
        }
        let tag = self
            .0
            .encrypt_inout_detached(nonce, associated_data, buffer.into())
            .map_err(|_| SealError::TooLong)?;
        Ok(tag.into())
    }

    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        // Every failure is the same opaque error.
        let nonce: &XNonce = nonce.try_into().map_err(|_| OpenError)?;
        if tag.len() != TAG_LEN {
            return Err(OpenError);
        }
        let tag: &Array<u8, U16> = tag.try_into().map_err(|_| OpenError)?;
        self.0
            .decrypt_inout_detached(nonce, associated_data, buffer.into(), tag)
            .map_err(|_| OpenError)
    }
}

impl fmt::Debug for XChaCha20Poly1305 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XChaCha20Poly1305 { .. }")
    }
}

/// Step 2: IV_n = n as a 192-bit big-endian integer (16 zero bytes ‖ n as 8
/// big-endian bytes).
///
/// Injective, so distinct counters give distinct nonces by construction. The
/// session gives each direction and epoch its own key, so the IVs need no
/// seed. (XChaCha20's long nonce would also allow random nonces; a counter is
/// simpler to check and survives a broken random generator.)
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter192Iv;

impl IvStrategy for Counter192Iv {
    const NAME: &'static str = "192-bit big-endian counter";
    const IV_LEN: usize = 24;
    const SEED_LEN: usize = 0;
    /// Every u64 counter but the last, so that the count fits in a u64.
    const MAX_IVS: u64 = u64::MAX;

    fn new(seed: &[u8]) -> Result<Self, IvError> {
        if !seed.is_empty() {
            return Err(IvError::SeedLength {
                expected: Self::SEED_LEN,
                actual: seed.len(),
            });
        }
        Ok(Self)
    }

    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        if counter == Self::MAX_IVS {
            return Err(IvError::Exhausted {
                counter,
                max: Self::MAX_IVS,
            });
        }
        let actual = out.len();
        let out: &mut [u8; 24] = out.try_into().map_err(|_| IvError::OutputLength {
            expected: Self::IV_LEN,
            actual,
        })?;
        let (zeros, counter_bytes) = out.split_at_mut(16);
        zeros.fill(0);
        counter_bytes.copy_from_slice(&counter.to_be_bytes());
        Ok(())
    }
}

/// Step 3: the suite. [`SuiteOf`] checks at compile time that the IV length
/// equals the nonce length, and refuses to seal past the smaller of the
/// AEAD's limit and the strategy's number of IVs.
pub type XChaCha20Poly1305Counter = SuiteOf<XChaCha20Poly1305, Counter192Iv>;

/// The suite as the session layer takes it.
pub fn xchacha20_poly1305_counter() -> Arc<dyn Suite> {
    Arc::new(XChaCha20Poly1305Counter::new(
        XCHACHA20_POLY1305_COUNTER,
        "XChaCha20-Poly1305 + 192-bit counter IV (example)",
    ))
}

/// Step 4: register it beside the project's suites.
pub fn register(registry: &mut SuiteRegistry) -> Result<(), RegistryError> {
    registry.register(xchacha20_poly1305_counter())
}
