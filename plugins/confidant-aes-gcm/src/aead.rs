//! AES-256-GCM behind Confidant's [`Aead`] trait, with a 16-byte nonce (the
//! suites' cipher) and with the standard 12-byte nonce (for composition and
//! for running published 96-bit-IV vectors through the same trait).

use aes::Aes256;
use aes_gcm::AesGcm;
use aes_gcm::aead::array::typenum::Unsigned;
use aes_gcm::aead::array::{Array, ArraySize};
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadInOut, KeyInit};
use confidant_core::{Aead, KeyLengthError, OpenError, SealError, TAG_LEN, Tag};
use std::fmt;

/// Key length of AES-256 in bytes.
const KEY_LEN: usize = 32;

/// GCM's confidentiality bound as Confidant applies it: at most 2^24 messages
/// per key. With 16-byte nonces GCM first hashes the nonce into its initial
/// counter block (`J0 = GHASH_H(IV ‖ 0^64 ‖ [128]_64)`), so two distinct
/// nonces can still yield overlapping counter streams with probability about
/// q²·ℓ/2^128 (Iwata, Ohashi and Minematsu, CRYPTO 2012); 2^24 messages keep
/// that, and the usual distinguishing bound, far below 2^-32 for messages of
/// up to a few megabytes.
const CONFIDENTIALITY_LIMIT: u64 = 1 << 24;

/// GCM's integrity bound: 2^52 failed decryptions per key (RFC 9001 §6.6,
/// for AES-GCM, from the analysis of Bellare and Tackmann and of Hoang,
/// Tessaro and Thiruvengadam cited there). The session counts failed opens
/// per receiving key and stops using the key at this limit.
const INTEGRITY_LIMIT: u64 = 1 << 52;

/// GCM's plaintext limit under one nonce (NIST SP 800-38D §5.2.1.1:
/// 2^39 − 256 bits), which is also what `aes-gcm` enforces.
const MAX_PLAINTEXT_LEN: u64 = aes_gcm::P_MAX;

/// AES-256-GCM with a 16-byte (128-bit) nonce and a full 16-byte tag: the AEAD
/// of the suites [`AES_256_GCM_SHA256_COUNTER`] and [`AES_256_GCM_LFSR`].
///
/// The nonce is not a plain counter block as with 12-byte nonces: GCM derives
/// the initial counter block by GHASH of the nonce (SP 800-38D §7.1, step 2).
/// The key schedule and the GHASH key are wiped on drop.
///
/// [`AES_256_GCM_SHA256_COUNTER`]: confidant_core::SuiteId::AES_256_GCM_SHA256_COUNTER
/// [`AES_256_GCM_LFSR`]: confidant_core::SuiteId::AES_256_GCM_LFSR
// Aligned to a cache line: the VAES-512 backend loads its round keys with
// 64-byte vector loads, and a state straddling cache lines measurably slows
// small messages (see the bench).
#[derive(Clone)]
#[repr(align(64))]
pub struct Aes256Gcm16(AesGcm<Aes256, U16>);

/// AES-256-GCM with the standard 12-byte (96-bit) nonce and a 16-byte tag.
///
/// Not registered as a suite: no IV strategy of this crate gives 12-byte IVs.
/// It is here for users who compose their own suite, and so that the 96-bit-IV
/// test vectors (Wycheproof, the GCM specification) run through Confidant's
/// [`Aead`] trait. Same limits as [`Aes256Gcm16`].
#[derive(Clone)]
#[repr(align(64))]
pub struct Aes256Gcm12(AesGcm<Aes256, U12>);

macro_rules! impl_aes_gcm {
    ($name:ident, $nonce_len:expr, $label:expr) => {
        impl Aead for $name {
            const NAME: &'static str = $label;
            const KEY_LEN: usize = KEY_LEN;
            const NONCE_LEN: usize = $nonce_len;
            const CONFIDENTIALITY_LIMIT: u64 = CONFIDENTIALITY_LIMIT;
            const INTEGRITY_LIMIT: u64 = INTEGRITY_LIMIT;
            const MAX_PLAINTEXT_LEN: u64 = MAX_PLAINTEXT_LEN;

            fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
                AesGcm::new_from_slice(key)
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
                seal_detached(&self.0, nonce, associated_data, buffer, MAX_PLAINTEXT_LEN)
            }

            fn open_in_place_detached(
                &self,
                nonce: &[u8],
                associated_data: &[u8],
                buffer: &mut [u8],
                tag: &[u8],
            ) -> Result<(), OpenError> {
                open_detached(&self.0, nonce, associated_data, buffer, tag)
            }
        }

        // The key never appears in `Debug` output.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), " { .. }"))
            }
        }

        // Holds: `AesGcm` is `ZeroizeOnDrop` with the `zeroize` feature, which
        // this crate enables (a test checks the bound).
        impl zeroize::ZeroizeOnDrop for $name {}
    };
}

impl_aes_gcm!(Aes256Gcm16, 16, "AES-256-GCM (16-byte nonce)");
impl_aes_gcm!(Aes256Gcm12, 12, "AES-256-GCM (12-byte nonce)");

/// Encrypts `buffer` in place with any RustCrypto AEAD that has 16-byte tags,
/// checking lengths instead of panicking.
pub(crate) fn seal_detached<C>(
    cipher: &C,
    nonce: &[u8],
    associated_data: &[u8],
    buffer: &mut [u8],
    max_plaintext_len: u64,
) -> Result<Tag, SealError>
where
    C: AeadInOut<TagSize = U16>,
    C::NonceSize: ArraySize,
{
    let nonce: &Array<u8, C::NonceSize> = nonce.try_into().map_err(|_| SealError::NonceLength {
        expected: C::NonceSize::USIZE,
        actual: nonce.len(),
    })?;
    if u64::try_from(buffer.len()).map_or(true, |len| len > max_plaintext_len) {
        return Err(SealError::TooLong);
    }
    // The only failure left is an over-long input (associated data beyond
    // 2^61 bytes), which is a length problem too.
    let tag = cipher
        .encrypt_inout_detached(nonce, associated_data, buffer.into())
        .map_err(|_| SealError::TooLong)?;
    Ok(tag.into())
}

/// Verifies and decrypts `buffer` in place; every failure is the same opaque
/// [`OpenError`].
pub(crate) fn open_detached<C>(
    cipher: &C,
    nonce: &[u8],
    associated_data: &[u8],
    buffer: &mut [u8],
    tag: &[u8],
) -> Result<(), OpenError>
where
    C: AeadInOut<TagSize = U16>,
    C::NonceSize: ArraySize,
{
    let nonce: &Array<u8, C::NonceSize> = nonce.try_into().map_err(|_| OpenError)?;
    if tag.len() != TAG_LEN {
        return Err(OpenError);
    }
    let tag: &Array<u8, U16> = tag.try_into().map_err(|_| OpenError)?;
    cipher
        .decrypt_inout_detached(nonce, associated_data, buffer.into(), tag)
        .map_err(|_| OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn inner_ciphers_wipe_their_keys() {
        // Fails to compile if the `zeroize` features were not enabled.
        assert_zeroize_on_drop::<AesGcm<Aes256, U16>>();
        assert_zeroize_on_drop::<AesGcm<Aes256, U12>>();
    }

    #[test]
    fn debug_shows_no_key() {
        let key = [0x5au8; 32];
        let Ok(aead) = Aes256Gcm16::new(&key) else {
            unreachable!("32-byte key")
        };
        let shown = format!("{aead:?}");
        assert_eq!(shown, "Aes256Gcm16 { .. }");
        assert!(!shown.contains("5a") && !shown.contains("90"));
    }
}
