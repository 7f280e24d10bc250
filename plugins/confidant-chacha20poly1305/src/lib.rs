//! # confidant-chacha20poly1305
//!
//! The ChaCha20-Poly1305 cipher suite for Confidant,
//! [`SuiteId::CHACHA20_POLY1305_COUNTER`]: RFC 8439's AEAD ([`ChaCha20Poly1305`],
//! 32-byte key, 12-byte nonce, 16-byte tag) with [`BigEndianCounterIv`],
//! IV_n = n as a 96-bit big-endian integer.
//!
//! The cipher itself is RustCrypto's `chacha20poly1305`; this crate only
//! adapts it to Confidant's [`Aead`] trait.
//!
//! ```
//! use confidant_core::{SuiteId, SuiteRegistry};
//!
//! let mut registry = SuiteRegistry::new();
//! confidant_chacha20poly1305::register(&mut registry)?;
//! let suite = registry.get(SuiteId::CHACHA20_POLY1305_COUNTER)?;
//!
//! let mut cipher = suite.direction_cipher(&[7u8; 32], &[])?;
//! let mut message = b"hello".to_vec();
//! cipher.seal(0, b"associated data", &mut message)?;
//! cipher.open(0, b"associated data", &mut message)?;
//! assert_eq!(message, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use chacha20poly1305::aead::array::Array;
use chacha20poly1305::aead::consts::U16;
use chacha20poly1305::{AeadInOut, KeyInit, Nonce};
use confidant_core::{
    Aead, IvError, IvStrategy, KeyLengthError, OpenError, RegistryError, SealError, Suite, SuiteId,
    SuiteOf, SuiteRegistry, TAG_LEN, Tag,
};
use std::fmt;
use std::sync::Arc;

/// ChaCha20-Poly1305 as specified in RFC 8439: 32-byte key, 12-byte nonce,
/// 16-byte tag. The key is wiped on drop.
///
/// # Limits
/// - **Confidentiality limit: 2^62 messages per key.** ChaCha20-Poly1305 has
///   no confidentiality limit that a realistic sender reaches: RFC 8446 §5.5
///   notes that TLS's 64-bit record sequence number "would wrap before the
///   safety limit is reached", and RFC 9001 §6.6 finds the limit "greater
///   than the number of possible packets (2^62) and so can be disregarded".
///   Confidant declares QUIC's 2^62 so that the limit is a finite, stated
///   number the session can enforce.
/// - **Integrity limit: 2^36 failed decryptions per key** (RFC 9001 §6.6).
///   The session counts failed opens per receiving key; at the limit it
///   refuses that key and asks the peer for a key update.
/// - **Plaintext: at most (2^32 − 2) · 64 bytes per message.** RFC 8439
///   allows (2^32 − 1) · 64 bytes (a 32-bit block counter whose block 0 gives
///   the Poly1305 key); the `chacha20poly1305` crate accepts one byte less
///   than that, so the declared limit is a whole block below both.
#[derive(Clone)]
pub struct ChaCha20Poly1305(chacha20poly1305::ChaCha20Poly1305);

/// Key length in bytes.
const KEY_LEN: usize = 32;
/// Nonce length in bytes.
const NONCE_LEN: usize = 12;
/// Plaintext limit (see [`ChaCha20Poly1305`]).
const MAX_PLAINTEXT_LEN: u64 = ((1 << 32) - 2) * 64;

impl Aead for ChaCha20Poly1305 {
    const NAME: &'static str = "ChaCha20-Poly1305";
    const KEY_LEN: usize = KEY_LEN;
    const NONCE_LEN: usize = NONCE_LEN;
    const CONFIDENTIALITY_LIMIT: u64 = 1 << 62;
    const INTEGRITY_LIMIT: u64 = 1 << 36;
    const MAX_PLAINTEXT_LEN: u64 = MAX_PLAINTEXT_LEN;

    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        chacha20poly1305::ChaCha20Poly1305::new_from_slice(key)
            .map(Self)
            .map_err(|_| KeyLengthError {
                expected: KEY_LEN,
                actual: key.len(),
            })
    }

    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        let nonce: &Nonce = nonce.try_into().map_err(|_| SealError::NonceLength {
            expected: NONCE_LEN,
            actual: nonce.len(),
        })?;
        if u64::try_from(buffer.len()).map_or(true, |len| len > MAX_PLAINTEXT_LEN) {
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
        let nonce: &Nonce = nonce.try_into().map_err(|_| OpenError)?;
        if tag.len() != TAG_LEN {
            return Err(OpenError);
        }
        let tag: &Array<u8, U16> = tag.try_into().map_err(|_| OpenError)?;
        self.0
            .decrypt_inout_detached(nonce, associated_data, buffer.into(), tag)
            .map_err(|_| OpenError)
    }
}

impl fmt::Debug for ChaCha20Poly1305 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChaCha20Poly1305 { .. }")
    }
}

/// IV_n = n as a 96-bit big-endian integer: 4 zero bytes ‖ n as 8 big-endian
/// bytes.
///
/// Injective by construction, so uniqueness is a proof, not a probability:
/// distinct counters are distinct integers and give distinct nonces, for all
/// 2^64 counters. A hash of the counter truncated to 96 bits would not be: by
/// the birthday bound q IVs collide with probability about q²/2^97, already
/// 2^-33 at q = 2^32 — too much for a nonce whose reuse breaks
/// ChaCha20-Poly1305's confidentiality and integrity. No seed is needed
/// because every direction and epoch has its own key. (TLS 1.3 XORs the
/// sequence number into a secret IV instead; with per-direction keys that adds
/// nothing here.)
#[derive(Debug, Clone, Copy, Default)]
pub struct BigEndianCounterIv;

impl IvStrategy for BigEndianCounterIv {
    const NAME: &'static str = "96-bit big-endian counter";
    const IV_LEN: usize = NONCE_LEN;
    const SEED_LEN: usize = 0;
    /// Every u64 counter but the last (so that the count fits in a u64).
    const MAX_IVS: u64 = u64::MAX;

    fn new(seed: &[u8]) -> Result<Self, IvError> {
        if !seed.is_empty() {
            return Err(IvError::SeedLength {
                expected: 0,
                actual: seed.len(),
            });
        }
        Ok(Self)
    }

    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        // MAX_IVS is u64::MAX: the last counter is the only one refused.
        if counter == Self::MAX_IVS {
            return Err(IvError::Exhausted {
                counter,
                max: Self::MAX_IVS,
            });
        }
        let actual = out.len();
        let out: &mut [u8; NONCE_LEN] = out.try_into().map_err(|_| IvError::OutputLength {
            expected: NONCE_LEN,
            actual,
        })?;
        let (zeros, counter_bytes) = out.split_at_mut(4);
        zeros.fill(0);
        counter_bytes.copy_from_slice(&counter.to_be_bytes());
        Ok(())
    }
}

/// The suite type of [`SuiteId::CHACHA20_POLY1305_COUNTER`].
pub type ChaCha20Poly1305Counter = SuiteOf<ChaCha20Poly1305, BigEndianCounterIv>;

/// The suite [`SuiteId::CHACHA20_POLY1305_COUNTER`].
pub fn chacha20_poly1305_counter() -> Arc<dyn Suite> {
    Arc::new(ChaCha20Poly1305Counter::new(
        SuiteId::CHACHA20_POLY1305_COUNTER,
        "ChaCha20-Poly1305 + 96-bit counter IV",
    ))
}

/// Registers the ChaCha20-Poly1305 suite.
pub fn register(registry: &mut SuiteRegistry) -> Result<(), RegistryError> {
    registry.register(chacha20_poly1305_counter())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counter_iv_layout() {
        let mut strategy = BigEndianCounterIv::new(&[]).unwrap();
        let mut out = [0xaau8; 12];
        strategy.iv(0x0102_0304_0506_0708, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        strategy.iv(0, &mut out).unwrap();
        assert_eq!(out, [0; 12]);
        strategy.iv(u64::MAX - 1, &mut out).unwrap();
        assert_eq!(
            out,
            [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
        assert!(matches!(
            strategy.iv(u64::MAX, &mut out),
            Err(IvError::Exhausted { .. })
        ));
        assert!(matches!(
            strategy.iv(0, &mut [0u8; 16]),
            Err(IvError::OutputLength {
                expected: 12,
                actual: 16
            })
        ));
        assert!(BigEndianCounterIv::new(&[1]).is_err());
    }

    #[test]
    fn register_and_parameters() {
        let mut registry = SuiteRegistry::new();
        register(&mut registry).unwrap();
        let suite = registry.get(SuiteId::CHACHA20_POLY1305_COUNTER).unwrap();
        assert_eq!(suite.key_len(), 32);
        assert_eq!(suite.nonce_len(), 12);
        assert_eq!(suite.iv_seed_len(), 0);
        assert_eq!(suite.max_messages_per_key(), 1 << 62);
        assert!(register(&mut registry).is_err());
    }

    #[test]
    fn key_is_wiped_and_hidden() {
        // Fails to compile if the `zeroize` feature were off.
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroize_on_drop::<chacha20poly1305::ChaCha20Poly1305>();
        let aead = ChaCha20Poly1305::new(&[0x42; 32]).unwrap();
        assert_eq!(format!("{aead:?}"), "ChaCha20Poly1305 { .. }");
    }
}
