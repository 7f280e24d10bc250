//! # confidant-aes-gcm
//!
//! AES-256-GCM cipher suites for Confidant:
//!
//! | suite id | AEAD | IV strategy |
//! |---|---|---|
//! | [`SuiteId::AES_256_GCM_SHA256_COUNTER`] (the default) | [`Aes256Gcm16`] | [`Sha256CounterIv`]: IV_n = SHA-256(be64(n))\[..16\] |
//! | [`SuiteId::AES_256_GCM_LFSR`] | [`Aes256Gcm16`] | [`Lfsr128Iv`]: IV_n = state of a 128-bit LFSR after n steps |
//!
//! Both use AES-256-GCM with a 16-byte nonce and a 16-byte tag, at most 2^24
//! messages per key (the confidentiality bound), and plaintexts of at most
//! 2^36 − 32 bytes. [`Aes256Gcm12`], the standard 96-bit-nonce variant, is
//! provided for users who compose their own suites.
//!
//! The cipher itself is RustCrypto's `aes-gcm`; this crate only adapts it to
//! Confidant's [`Aead`](confidant_core::Aead) trait and adds the IV
//! strategies.
//!
//! ```
//! use confidant_core::{SuiteId, SuiteRegistry};
//!
//! let mut registry = SuiteRegistry::new();
//! confidant_aes_gcm::register(&mut registry)?;
//! let suite = registry.get(SuiteId::AES_256_GCM_SHA256_COUNTER)?;
//!
//! let mut cipher = suite.direction_cipher(&[7u8; 32], &[])?;
//! let mut message = b"hello".to_vec();
//! cipher.seal(0, b"associated data", &mut message)?;
//! cipher.open(0, b"associated data", &mut message)?;
//! assert_eq!(message, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aead;
mod gf2;
mod lfsr;
mod sha256_counter;

pub use aead::{Aes256Gcm12, Aes256Gcm16};
pub use lfsr::Lfsr128Iv;
pub use sha256_counter::Sha256CounterIv;

use confidant_core::{RegistryError, Suite, SuiteId, SuiteOf, SuiteRegistry};
use std::sync::Arc;

/// The default suite: AES-256-GCM (16-byte nonce) with the SHA-256 counter IV.
pub type Aes256GcmSha256Counter = SuiteOf<Aes256Gcm16, Sha256CounterIv>;

/// AES-256-GCM (16-byte nonce) with the 128-bit LFSR IV.
pub type Aes256GcmLfsr = SuiteOf<Aes256Gcm16, Lfsr128Iv>;

/// The suite [`SuiteId::AES_256_GCM_SHA256_COUNTER`], the default.
pub fn aes_256_gcm_sha256_counter() -> Arc<dyn Suite> {
    Arc::new(Aes256GcmSha256Counter::new(
        SuiteId::AES_256_GCM_SHA256_COUNTER,
        "AES-256-GCM + SHA-256 counter IV",
    ))
}

/// The suite [`SuiteId::AES_256_GCM_LFSR`].
pub fn aes_256_gcm_lfsr() -> Arc<dyn Suite> {
    Arc::new(Aes256GcmLfsr::new(
        SuiteId::AES_256_GCM_LFSR,
        "AES-256-GCM + 128-bit LFSR IV",
    ))
}

/// Registers both AES-256-GCM suites.
pub fn register(registry: &mut SuiteRegistry) -> Result<(), RegistryError> {
    registry.register(aes_256_gcm_sha256_counter())?;
    registry.register(aes_256_gcm_lfsr())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn register_adds_both_suites_once() {
        let mut registry = SuiteRegistry::new();
        register(&mut registry).unwrap();
        assert_eq!(
            registry.ids(),
            vec![
                SuiteId::AES_256_GCM_SHA256_COUNTER,
                SuiteId::AES_256_GCM_LFSR
            ]
        );
        assert!(matches!(
            register(&mut registry),
            Err(RegistryError::DuplicateId { .. })
        ));
    }

    #[test]
    fn declared_parameters() {
        for (suite, seed_len) in [(aes_256_gcm_sha256_counter(), 0), (aes_256_gcm_lfsr(), 16)] {
            assert_eq!(suite.key_len(), 32);
            assert_eq!(suite.nonce_len(), 16);
            assert_eq!(suite.iv_seed_len(), seed_len);
            assert_eq!(suite.max_messages_per_key(), 1 << 24);
            assert_eq!(suite.max_plaintext_len(), (1 << 36) - 32);
        }
    }
}
