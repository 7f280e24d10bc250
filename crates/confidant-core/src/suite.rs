//! Cipher suites: an [`Aead`] paired with an [`IvStrategy`] under a
//! registered [`SuiteId`].
//!
//! [`Suite`] is object safe, so a [`SuiteRegistry`](crate::SuiteRegistry)
//! can hold the project's suites and a user's own side by side. Most suites
//! are built with [`SuiteOf`], which composes any `Aead` with any
//! `IvStrategy` whose IV length matches the nonce length (checked at compile
//! time).

use crate::aead::{Aead, KeyLengthError, OpenError, SealError};
use crate::ids::SuiteId;
use crate::iv::{IvError, IvStrategy};
use std::fmt;
use std::marker::PhantomData;
use thiserror::Error;

/// The longest nonce a suite may use, in bytes.
pub const MAX_NONCE_LEN: usize = 32;

/// A suite could not be set up for a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SuiteError {
    /// The key has the wrong length.
    #[error(transparent)]
    KeyLength(#[from] KeyLengthError),
    /// The IV seed was refused.
    #[error(transparent)]
    Iv(#[from] IvError),
}

/// Sealing a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SuiteSealError {
    /// No IV is left for this counter (the key must be updated).
    #[error(transparent)]
    Iv(#[from] IvError),
    /// The AEAD refused the input.
    #[error(transparent)]
    Aead(#[from] SealError),
}

/// A cipher suite: everything needed to protect one direction of a session.
///
/// Implement it through [`SuiteOf`] unless a suite needs something unusual.
pub trait Suite: Send + Sync + 'static {
    /// The registered id that goes on the wire.
    fn id(&self) -> SuiteId;
    /// A human-readable name.
    fn name(&self) -> &str;
    /// Length of the AEAD key in bytes.
    fn key_len(&self) -> usize;
    /// Length of the per-direction IV seed in bytes (0 if none).
    fn iv_seed_len(&self) -> usize;
    /// Length of the nonce (= IV) in bytes.
    fn nonce_len(&self) -> usize;
    /// How many messages one key may seal: the smaller of the AEAD's
    /// confidentiality limit and the IV strategy's number of IVs.
    fn max_messages_per_key(&self) -> u64;
    /// How many failed opens one receiving key may see: the AEAD's
    /// integrity limit ([`Aead::INTEGRITY_LIMIT`](crate::Aead::INTEGRITY_LIMIT)).
    fn max_failed_opens_per_key(&self) -> u64;
    /// Longest plaintext one message may carry.
    fn max_plaintext_len(&self) -> u64;
    /// Builds the cipher for one direction and epoch.
    fn direction_cipher(
        &self,
        key: &[u8],
        iv_seed: &[u8],
    ) -> Result<Box<dyn DirectionCipher>, SuiteError>;
}

/// One direction's cipher under one key: seals or opens message `counter`.
///
/// It does not track which counters were used; that is the session's job.
pub trait DirectionCipher: Send {
    /// Encrypts `buffer` in place as message `counter` and appends the tag.
    fn seal(
        &mut self,
        counter: u64,
        associated_data: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), SuiteSealError>;

    /// Verifies and decrypts message `counter` (`ciphertext ‖ tag` in
    /// `buffer`), leaving the plaintext in `buffer`.
    fn open(
        &mut self,
        counter: u64,
        associated_data: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), OpenError>;

    /// Writes the IV for message `counter` into `out` (of the suite's nonce
    /// length). Exposed for conformance tests of IV uniqueness.
    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError>;
}

/// A suite made of the AEAD `A` and the IV strategy `I`.
///
/// ```
/// # use confidant_core::*;
/// # fn demo<A: Aead, I: IvStrategy>() {
/// let suite = SuiteOf::<A, I>::new(SuiteId(SuiteId::PRIVATE_USE_START + 7), "my suite");
/// # let _ = suite;
/// # }
/// ```
pub struct SuiteOf<A, I> {
    id: SuiteId,
    name: &'static str,
    _types: PhantomData<fn() -> (A, I)>,
}

impl<A: Aead, I: IvStrategy> SuiteOf<A, I> {
    /// Composes `A` and `I` under `id`.
    ///
    /// Fails to compile if the IV length differs from the nonce length or
    /// exceeds [`MAX_NONCE_LEN`].
    pub fn new(id: SuiteId, name: &'static str) -> Self {
        const {
            assert!(
                A::NONCE_LEN == I::IV_LEN,
                "the IV strategy's IV length must equal the AEAD's nonce length"
            );
            assert!(
                A::NONCE_LEN <= MAX_NONCE_LEN,
                "nonce longer than MAX_NONCE_LEN"
            );
        }
        Self {
            id,
            name,
            _types: PhantomData,
        }
    }
}

impl<A, I> fmt::Debug for SuiteOf<A, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuiteOf")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl<A: Aead, I: IvStrategy> Suite for SuiteOf<A, I> {
    fn id(&self) -> SuiteId {
        self.id
    }
    fn name(&self) -> &str {
        self.name
    }
    fn key_len(&self) -> usize {
        A::KEY_LEN
    }
    fn iv_seed_len(&self) -> usize {
        I::SEED_LEN
    }
    fn nonce_len(&self) -> usize {
        A::NONCE_LEN
    }
    fn max_messages_per_key(&self) -> u64 {
        A::CONFIDENTIALITY_LIMIT.min(I::MAX_IVS)
    }
    fn max_failed_opens_per_key(&self) -> u64 {
        A::INTEGRITY_LIMIT
    }
    fn max_plaintext_len(&self) -> u64 {
        A::MAX_PLAINTEXT_LEN
    }
    fn direction_cipher(
        &self,
        key: &[u8],
        iv_seed: &[u8],
    ) -> Result<Box<dyn DirectionCipher>, SuiteError> {
        Ok(Box::new(AeadWithIv {
            aead: A::new(key)?,
            iv: I::new(iv_seed)?,
            limit: self.max_messages_per_key(),
        }))
    }
}

struct AeadWithIv<A, I> {
    aead: A,
    iv: I,
    limit: u64,
}

impl<A: Aead, I: IvStrategy> AeadWithIv<A, I> {
    fn nonce(&mut self, counter: u64) -> Result<[u8; MAX_NONCE_LEN], IvError> {
        if counter >= self.limit {
            return Err(IvError::Exhausted {
                counter,
                max: self.limit,
            });
        }
        let mut nonce = [0u8; MAX_NONCE_LEN];
        let out = nonce.get_mut(..I::IV_LEN).ok_or(IvError::OutputLength {
            expected: I::IV_LEN,
            actual: MAX_NONCE_LEN,
        })?;
        self.iv.iv(counter, out)?;
        Ok(nonce)
    }
}

impl<A: Aead, I: IvStrategy> DirectionCipher for AeadWithIv<A, I> {
    fn seal(
        &mut self,
        counter: u64,
        associated_data: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), SuiteSealError> {
        let nonce = self.nonce(counter)?;
        let nonce = nonce.get(..A::NONCE_LEN).unwrap_or_default();
        self.aead.seal_in_place(nonce, associated_data, buffer)?;
        Ok(())
    }

    fn open(
        &mut self,
        counter: u64,
        associated_data: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let nonce = self.nonce(counter).map_err(|_| OpenError)?;
        let nonce = nonce.get(..A::NONCE_LEN).unwrap_or_default();
        self.aead.open_in_place(nonce, associated_data, buffer)
    }

    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        if out.len() != I::IV_LEN {
            return Err(IvError::OutputLength {
                expected: I::IV_LEN,
                actual: out.len(),
            });
        }
        let nonce = self.nonce(counter)?;
        out.copy_from_slice(nonce.get(..I::IV_LEN).unwrap_or_default());
        Ok(())
    }
}
