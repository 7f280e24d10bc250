//! The IV strategy plugin trait.
//!
//! The session owns the counter; the strategy owns the IV. Given the
//! direction's seed and a counter `n`, a strategy returns `IV_n`, the same on
//! both sides, and distinct for distinct `n` below [`IvStrategy::MAX_IVS`].

use thiserror::Error;

/// Why an IV could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IvError {
    /// The counter is at or beyond the number of IVs the strategy can give.
    #[error("counter {counter} is beyond the {max} IVs this strategy can give")]
    Exhausted {
        /// The counter asked for.
        counter: u64,
        /// How many IVs the strategy can give.
        max: u64,
    },
    /// The output buffer does not have the strategy's IV length.
    #[error("IV buffer is {actual} bytes long, the strategy gives {expected}")]
    OutputLength {
        /// The strategy's IV length.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// The seed has the wrong length.
    #[error("IV seed is {actual} bytes long, the strategy takes {expected}")]
    SeedLength {
        /// The strategy's seed length.
        expected: usize,
        /// The seed's length.
        actual: usize,
    },
    /// The seed is one the strategy cannot use (an all-zero LFSR state).
    #[error("IV seed is degenerate for this strategy")]
    DegenerateSeed,
}

/// Derives the IV for message `n` of one direction under one key.
///
/// `iv(n)` must be a pure function of the seed and `n`: both sides compute it
/// independently, and a receiver asks for counters out of order. The `&mut`
/// receiver only lets an implementation cache (for example the last LFSR
/// state), never change the mapping. Jumping to any `n` must cost less than
/// `O(n)`.
pub trait IvStrategy: Send + Sized + 'static {
    /// A human-readable name, e.g. `"SHA-256 counter"`.
    const NAME: &'static str;
    /// Length of the IVs produced, which must equal the AEAD's nonce length.
    const IV_LEN: usize;
    /// Length of the per-direction seed derived for this strategy; 0 if it
    /// needs none.
    const SEED_LEN: usize;
    /// How many distinct IVs this strategy can give: counters
    /// `0..MAX_IVS` are valid.
    const MAX_IVS: u64;

    /// Builds the strategy for one direction and epoch from its seed.
    fn new(seed: &[u8]) -> Result<Self, IvError>;

    /// Writes `IV_counter` into `out`, which has length [`IvStrategy::IV_LEN`].
    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError>;
}
