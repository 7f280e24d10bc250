//! The default IV strategy: IV_n = the first 16 bytes of SHA-256(n as 8
//! big-endian bytes).

use confidant_core::{IvError, IvStrategy};
use sha2::{Digest, Sha256};

/// IV_n = `SHA-256(be64(n))[..16]`: the first 16 bytes of the SHA-256 digest
/// of the counter `n` written as 8 big-endian bytes.
///
/// The strategy takes no seed (`SEED_LEN = 0`): the IVs are the same for every
/// key, which is sound because every direction and epoch has its own key.
/// Jumping to any counter costs one hash.
///
/// **Uniqueness.** A hash truncated to 128 bits is not injective in general,
/// so the number of IVs is stated, not assumed: [`Sha256CounterIv::MAX_IVS`]
/// is 2^24, the same as AES-GCM's confidentiality limit, and because the IVs
/// do not depend on any secret, a test of this crate checks all 2^24 of them
/// and finds them pairwise distinct. Uniqueness below the limit is therefore
/// a checked fact, not a probability. (Beyond it, by the birthday bound, a
/// collision among q IVs has probability about q²/2^129; for q = 2^32 that is
/// still 2^-65, but nothing above 2^24 is needed or allowed.)
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256CounterIv;

impl Sha256CounterIv {
    /// IV_n as an array.
    pub fn iv_for(counter: u64) -> [u8; 16] {
        let digest = Sha256::digest(counter.to_be_bytes());
        let mut iv = [0u8; 16];
        for (out, byte) in iv.iter_mut().zip(digest) {
            *out = byte;
        }
        iv
    }
}

impl IvStrategy for Sha256CounterIv {
    const NAME: &'static str = "SHA-256 counter";
    const IV_LEN: usize = 16;
    const SEED_LEN: usize = 0;
    const MAX_IVS: u64 = 1 << 24;

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
        if counter >= Self::MAX_IVS {
            return Err(IvError::Exhausted {
                counter,
                max: Self::MAX_IVS,
            });
        }
        if out.len() != Self::IV_LEN {
            return Err(IvError::OutputLength {
                expected: Self::IV_LEN,
                actual: out.len(),
            });
        }
        out.copy_from_slice(&Self::iv_for(counter));
        Ok(())
    }
}
