//! The AEAD plugin trait.
//!
//! An [`Aead`] is one authenticated cipher with its sizes in the type. A
//! plugin implements the two in-place, detached methods; the allocating
//! helpers come for free. Decryption fails with one opaque [`OpenError`] that
//! never says why.

use thiserror::Error;

/// Length of every authentication tag Confidant accepts. Truncated tags are
/// not supported.
pub const TAG_LEN: usize = 16;

/// An authentication tag.
pub type Tag = [u8; TAG_LEN];

/// Decryption failed: the tag did not verify, the message was too short, or
/// the nonce had the wrong length. Deliberately says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error, Default)]
#[error("message authentication failed")]
pub struct OpenError;

/// A key of the wrong length was given to a cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("key is {actual} bytes long, the cipher takes {expected}")]
pub struct KeyLengthError {
    /// What the cipher takes.
    pub expected: usize,
    /// What it was given.
    pub actual: usize,
}

/// Encryption was refused. This is always the caller's mistake or an
/// exhausted limit, never a property of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The nonce has the wrong length for this cipher.
    #[error("nonce is {actual} bytes long, the cipher takes {expected}")]
    NonceLength {
        /// What the cipher takes.
        expected: usize,
        /// What it was given.
        actual: usize,
    },
    /// The plaintext is longer than the cipher can encrypt under one nonce.
    #[error("plaintext is too long for this cipher")]
    TooLong,
}

/// An authenticated cipher with associated data.
///
/// Implementations wrap a well-reviewed crate (RustCrypto, ring, …); Confidant
/// never implements a primitive itself. Every implementation should pass
/// `confidant-conformance`.
///
/// The nonce passed in is the IV that the session's
/// [`IvStrategy`](crate::IvStrategy) derived; its length is always
/// [`Aead::NONCE_LEN`] when called by a session, but implementations must
/// check it and return an error rather than panic.
pub trait Aead: Send + Sync + Sized + 'static {
    /// A human-readable name, e.g. `"AES-256-GCM (16-byte nonce)"`.
    const NAME: &'static str;
    /// Key length in bytes.
    const KEY_LEN: usize;
    /// Nonce length in bytes.
    const NONCE_LEN: usize;
    /// How many messages may be sealed under one key before its
    /// confidentiality bound is reached (for AES-GCM, 2^24 is the accepted
    /// bound). The session refuses to seal past it.
    const CONFIDENTIALITY_LIMIT: u64;
    /// How many failed decryptions (forgery attempts) one key may see before
    /// its integrity bound is reached: for AES-GCM 2^52, for
    /// ChaCha20-Poly1305 2^36 (RFC 9001 §6.6). The session counts failed
    /// opens per receiving key and, at this limit, refuses that key and asks
    /// the peer for a key update.
    const INTEGRITY_LIMIT: u64;
    /// Longest plaintext this cipher accepts under one nonce, in bytes.
    const MAX_PLAINTEXT_LEN: u64;

    /// Builds the cipher from key bytes of length [`Aead::KEY_LEN`].
    fn new(key: &[u8]) -> Result<Self, KeyLengthError>;

    /// Encrypts `buffer` in place and returns the tag.
    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError>;

    /// Verifies `tag` and decrypts `buffer` in place. On failure `buffer`'s
    /// contents are unspecified (but no plaintext is released to the caller
    /// by the session layer, which discards it).
    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError>;

    /// Encrypts `buffer` in place and appends the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        let tag = self.seal_in_place_detached(nonce, associated_data, buffer)?;
        buffer.extend_from_slice(&tag);
        Ok(())
    }

    /// Verifies and decrypts `ciphertext ‖ tag` held in `buffer`, leaving the
    /// plaintext in it.
    fn open_in_place(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let Some(split) = buffer.len().checked_sub(TAG_LEN) else {
            return Err(OpenError);
        };
        let (content, tag) = buffer.split_at_mut(split);
        let tag: Tag = (&*tag).try_into().map_err(|_| OpenError)?;
        self.open_in_place_detached(nonce, associated_data, content, &tag)?;
        buffer.truncate(split);
        Ok(())
    }

    /// Returns `ciphertext ‖ tag`.
    fn seal(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut buffer = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buffer.extend_from_slice(plaintext);
        self.seal_in_place(nonce, associated_data, &mut buffer)?;
        Ok(buffer)
    }

    /// Verifies and decrypts `ciphertext ‖ tag`.
    fn open(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        let mut buffer = sealed.to_vec();
        self.open_in_place(nonce, associated_data, &mut buffer)?;
        Ok(buffer)
    }
}
