//! The LFSR IV strategy: IV_n = the state of a maximal-length 128-bit
//! Fibonacci LFSR after n steps from the direction's seed.

use crate::gf2;
use confidant_core::{IvError, IvStrategy};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// How far from the cached state a request may be and still be served by
/// stepping (forward or backward) instead of a jump. One step is a masked
/// parity and a shift (a few nanoseconds); a jump is up to 64 polynomial
/// products plus 127 steps (tens of microseconds unoptimised), so stepping
/// wins up to several thousand steps. 4096 stays below that break-even.
const MAX_STEPS: u64 = 4096;

/// IV_n = the state of a 128-bit Fibonacci LFSR after `n` steps, as 16
/// big-endian bytes.
///
/// # Definition
/// The state `s` holds 128 consecutive bits a_t … a_{t+127} of a sequence with
/// bit `i` of the `u128` being a_{t+i}. One step computes
///
/// ```text
/// f = parity(s & TAPS)          // a_{t+128} = a_t + a_{t+99} + a_{t+101} + a_{t+126}
/// s = (s >> 1) | (f << 127)
/// ```
///
/// which realises the linear recurrence with characteristic polynomial
/// P(x) = x^128 + x^126 + x^101 + x^99 + 1 (Xilinx XAPP052's taps 128, 126,
/// 101, 99). P is primitive (proved by a test: x has order 2^128 − 1 modulo
/// P), so from any non-zero state the LFSR visits all 2^128 − 1 non-zero
/// states before it repeats. The seed is the initial state s_0 (16 bytes, big
/// endian; all zero is refused with [`IvError::DegenerateSeed`]), so IV_0 is
/// the seed itself and IV_n ≠ IV_m for all n ≠ m below 2^64.
///
/// # Jumping ahead
/// If x^n ≡ Σ r_k x^k (mod P), every sequence satisfying the recurrence has
/// a_{n+i} = Σ r_k a_{k+i}, so s_n = XOR of the s_k (k < 128) with r_k = 1.
/// `x^n mod P` comes from a compile-time table of x^(2^k) mod P, one product
/// per set bit of n; the s_k take 127 steps. A jump thus costs O(log n), not
/// O(n).
///
/// # Caching
/// The strategy remembers the last state it produced. A request within
/// 4096 steps of it, forward or backward (the LFSR steps backward as easily,
/// since the tap at x^0 is set), is served by stepping: sequential sealing
/// costs one step per message, cheaper than a SHA-256 call. The cache never
/// changes the mapping: IV_n is a pure function of (seed, n).
///
/// The LFSR is linear and its IVs are public: it gives distinct nonces, not
/// secrecy, and nothing more is asked of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Lfsr128Iv {
    /// s_0, from the seed.
    origin: u128,
    /// The counter of the cached state.
    cached_counter: u64,
    /// s_{cached_counter}.
    cached_state: u128,
}

impl fmt::Debug for Lfsr128Iv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The state is derived from the seed: keep it out of logs.
        f.write_str("Lfsr128Iv { .. }")
    }
}

/// One step forward: s_t → s_{t+1}.
#[inline]
const fn step(state: u128) -> u128 {
    let feedback = (state & gf2::TAPS).count_ones() as u128 & 1;
    (state >> 1) | (feedback << 127)
}

/// One step backward: s_{t+1} → s_t. From a_{t+128} = a_t + Σ_{j≥1} c_j
/// a_{t+j}: a_t = a_{t+128} + Σ_{j≥1} c_j a_{t+j}, all of which s_{t+1}
/// holds (a_{t+128} in bit 127, a_{t+j} in bit j−1).
#[inline]
const fn step_back(state: u128) -> u128 {
    let oldest = ((state >> 127) ^ ((state & (gf2::TAPS >> 1)).count_ones() as u128)) & 1;
    (state << 1) | oldest
}

impl Lfsr128Iv {
    /// s_n computed from scratch in O(log n), ignoring the cache.
    fn jump(&self, n: u64) -> u128 {
        Self::jump_with(self.origin, gf2::x_pow(n))
    }

    /// The state reached from `origin` by the transition whose polynomial is
    /// `power` (= x^n mod P for n steps).
    fn jump_with(origin: u128, power: u128) -> u128 {
        let mut basis = origin;
        let mut state = 0u128;
        for k in 0..128 {
            if (power >> k) & 1 == 1 {
                state ^= basis;
            }
            basis = step(basis);
        }
        state
    }

    /// s_n, using and refreshing the cache.
    fn state_at(&mut self, n: u64) -> u128 {
        let state = if n >= self.cached_counter && n - self.cached_counter <= MAX_STEPS {
            (self.cached_counter..n).fold(self.cached_state, |s, _| step(s))
        } else if n < self.cached_counter && self.cached_counter - n <= MAX_STEPS {
            (n..self.cached_counter).fold(self.cached_state, |s, _| step_back(s))
        } else {
            self.jump(n)
        };
        self.cached_counter = n;
        self.cached_state = state;
        state
    }
}

impl IvStrategy for Lfsr128Iv {
    const NAME: &'static str = "128-bit LFSR";
    const IV_LEN: usize = 16;
    const SEED_LEN: usize = 16;
    /// Every u64 counter but the last. The period is 2^128 − 1, far above
    /// 2^64, so all these states are distinct; the AEAD's limit is lower still.
    const MAX_IVS: u64 = u64::MAX;

    fn new(seed: &[u8]) -> Result<Self, IvError> {
        let seed: [u8; 16] = seed.try_into().map_err(|_| IvError::SeedLength {
            expected: Self::SEED_LEN,
            actual: seed.len(),
        })?;
        let origin = u128::from_be_bytes(seed);
        if origin == 0 {
            // The all-zero state is the LFSR's fixed point.
            return Err(IvError::DegenerateSeed);
        }
        Ok(Self {
            origin,
            cached_counter: 0,
            cached_state: origin,
        })
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
        let out: &mut [u8; 16] = out.try_into().map_err(|_| IvError::OutputLength {
            expected: Self::IV_LEN,
            actual,
        })?;
        *out = self.state_at(counter).to_be_bytes();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const SEED: [u8; 16] = *b"confidant-lfsr-1";

    fn lfsr(seed: [u8; 16]) -> Lfsr128Iv {
        Lfsr128Iv::new(&seed).unwrap()
    }

    fn iv(strategy: &mut Lfsr128Iv, n: u64) -> u128 {
        let mut out = [0u8; 16];
        strategy.iv(n, &mut out).unwrap();
        u128::from_be_bytes(out)
    }

    #[test]
    fn seed_is_checked() {
        assert_eq!(
            Lfsr128Iv::new(&[0u8; 16]).err(),
            Some(IvError::DegenerateSeed)
        );
        assert_eq!(
            Lfsr128Iv::new(&[1u8; 15]).err(),
            Some(IvError::SeedLength {
                expected: 16,
                actual: 15
            })
        );
        assert!(Lfsr128Iv::new(&[1u8; 17]).is_err());
        assert!(Lfsr128Iv::new(&[]).is_err());
        let mut one = [0u8; 16];
        one[15] = 1;
        assert!(Lfsr128Iv::new(&one).is_ok());
    }

    #[test]
    fn output_length_and_exhaustion_are_errors() {
        let mut strategy = lfsr(SEED);
        let mut short = [0u8; 12];
        assert_eq!(
            strategy.iv(0, &mut short),
            Err(IvError::OutputLength {
                expected: 16,
                actual: 12
            })
        );
        let mut out = [0u8; 16];
        assert!(matches!(
            strategy.iv(u64::MAX, &mut out),
            Err(IvError::Exhausted { .. })
        ));
        assert!(strategy.iv(u64::MAX - 1, &mut out).is_ok());
    }

    #[test]
    fn iv_zero_is_the_seed_and_the_step_is_the_documented_recurrence() {
        let mut strategy = lfsr(SEED);
        let s0 = u128::from_be_bytes(SEED);
        assert_eq!(iv(&mut strategy, 0), s0);
        // a_{t+128} = a_t + a_{t+99} + a_{t+101} + a_{t+126}, written bit by bit.
        let bit = |s: u128, i: u32| (s >> i) & 1;
        let f = bit(s0, 0) ^ bit(s0, 99) ^ bit(s0, 101) ^ bit(s0, 126);
        assert_eq!(iv(&mut strategy, 1), (s0 >> 1) | (f << 127));
    }

    #[test]
    fn step_back_inverts_step() {
        let mut state = u128::from_be_bytes(SEED);
        for _ in 0..10_000 {
            let next = step(state);
            assert_eq!(step_back(next), state);
            state = next;
        }
    }

    /// Stepping one by one from the seed to 300,000, every state equals a
    /// fresh jump for a sample of counters, and every state is non-zero.
    #[test]
    fn jump_equals_stepping_up_to_300k() {
        for seed in [SEED, [0xff; 16], {
            let mut one = [0u8; 16];
            one[15] = 1;
            one
        }] {
            let strategy = lfsr(seed);
            let mut state = u128::from_be_bytes(seed);
            for n in 0..300_000u64 {
                assert_ne!(state, 0);
                if n < 1000 || n % 997 == 0 || n.is_power_of_two() || n == 299_999 {
                    assert_eq!(strategy.jump(n), state, "n = {n}");
                }
                state = step(state);
            }
        }
    }

    /// The state sequence has period exactly 2^128 − 1: s_{2^128−1} = s_0,
    /// and s_{(2^128−1)/q} ≠ s_0 for each prime factor q.
    #[test]
    fn state_sequence_has_full_period() {
        let factors: [u128; 9] = [
            3,
            5,
            17,
            257,
            641,
            65537,
            274_177,
            6_700_417,
            67_280_421_310_721,
        ];
        let origin = u128::from_be_bytes(SEED);
        assert_eq!(
            Lfsr128Iv::jump_with(origin, gf2::x_pow_u128(u128::MAX)),
            origin
        );
        for q in factors {
            assert_ne!(
                Lfsr128Iv::jump_with(origin, gf2::x_pow_u128(u128::MAX / q)),
                origin
            );
        }
    }

    #[test]
    fn cache_never_changes_the_mapping() {
        let counters = [
            0u64,
            5,
            4,
            1000,
            999,
            1001,
            1256,
            1257,
            900,
            5097,
            5098,
            1001,
            9000,
            1 << 40,
            (1 << 40) - 256,
            (1 << 40) + 300,
            3,
            u64::MAX - 1,
            u64::MAX - 200,
            17,
        ];
        let mut shared = lfsr(SEED);
        for n in counters {
            let mut fresh = lfsr(SEED);
            assert_eq!(iv(&mut shared, n), iv(&mut fresh, n), "n = {n}");
            assert_eq!(iv(&mut shared, n), shared.jump(n));
        }
    }

    #[test]
    fn stepping_threshold_edges() {
        let base = 1u64 << 30;
        for offset in [MAX_STEPS - 1, MAX_STEPS, MAX_STEPS + 1] {
            for target in [base + offset, base - offset] {
                let mut strategy = lfsr(SEED);
                iv(&mut strategy, base);
                assert_eq!(iv(&mut strategy, target), strategy.jump(target), "{target}");
            }
        }
    }

    #[test]
    fn sequential_use_matches_jumps() {
        let mut strategy = lfsr(SEED);
        for n in (1 << 33)..(1 << 33) + 2000u64 {
            let got = iv(&mut strategy, n);
            if n % 101 == 0 {
                assert_eq!(got, strategy.jump(n));
            }
        }
    }

    #[test]
    fn different_seeds_give_different_ivs() {
        let mut a = lfsr(SEED);
        let mut other = SEED;
        other[0] ^= 1;
        let mut b = lfsr(other);
        for n in [0u64, 1, 2, 1000, 1 << 24] {
            assert_ne!(iv(&mut a, n), iv(&mut b, n));
        }
    }

    #[test]
    fn debug_hides_the_state() {
        assert_eq!(format!("{:?}", lfsr(SEED)), "Lfsr128Iv { .. }");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Jumps compose: from s_a, the transition x^b lands on s_{a+b},
        /// for arbitrary 63-bit a and b.
        #[test]
        fn jumps_compose(a in 0u64..(1 << 63), b in 0u64..(1 << 63), seed in any::<u128>()) {
            prop_assume!(seed != 0);
            let strategy = lfsr(seed.to_be_bytes());
            let s_a = strategy.jump(a);
            prop_assert_eq!(Lfsr128Iv::jump_with(s_a, gf2::x_pow(b)), strategy.jump(a + b));
        }

        /// Any order of requests gives what fresh instances give, and
        /// distinct counters give distinct IVs.
        #[test]
        fn out_of_order_requests(counters in proptest::collection::vec(any::<u64>(), 1..40), near in proptest::collection::vec(0u64..600, 1..40)) {
            let mut shared = lfsr(SEED);
            let base = counters[0] >> 1;
            let mut seen = std::collections::HashMap::new();
            for n in counters.iter().map(|c| c >> 1).chain(near.iter().map(|d| base.wrapping_add(*d) >> 1)) {
                let got = iv(&mut shared, n);
                prop_assert_eq!(got, lfsr(SEED).jump(n));
                prop_assert_ne!(got, 0);
                if let Some(previous) = seen.insert(got, n) {
                    prop_assert_eq!(previous, n);
                }
            }
        }
    }
}
