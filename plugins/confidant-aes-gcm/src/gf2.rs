//! Arithmetic in GF(2)[x] modulo the LFSR's characteristic polynomial
//! P(x) = x^128 + x^126 + x^101 + x^99 + 1.
//!
//! A polynomial of degree below 128 is a `u128` whose bit `i` is the
//! coefficient of `x^i`. This is bookkeeping for the IV generator's
//! jump-ahead, not a cryptographic primitive: the values are public (the
//! counter), so plain shift-and-xor loops are fine. All functions are `const`
//! so the jump table is computed by the compiler.

/// The coefficients of P(x) below x^128: P(x) = x^128 + TAPS(x), so
/// x^128 ≡ TAPS(x) (mod P). Taps 126, 101, 99 and 0: the maximal-length
/// polynomial of Xilinx XAPP052 for 128 bits, whose primitivity the tests
/// prove.
pub(crate) const TAPS: u128 = (1 << 126) | (1 << 101) | (1 << 99) | 1;

/// The polynomial `x`.
pub(crate) const X: u128 = 0b10;

/// The polynomial `1`.
pub(crate) const ONE: u128 = 1;

/// Carry-less product of two polynomials of degree < 128, as (high, low)
/// halves of the up-to-255-degree result.
const fn clmul(a: u128, b: u128) -> (u128, u128) {
    let (mut high, mut low) = (0u128, 0u128);
    let mut i = 0;
    while i < 128 {
        if (b >> i) & 1 == 1 {
            low ^= a << i;
            if i > 0 {
                high ^= a >> (128 - i);
            }
        }
        i += 1;
    }
    (high, low)
}

/// Reduces `high · x^128 + low` modulo P.
const fn reduce(mut high: u128, mut low: u128) -> u128 {
    // Bit i of `high` stands for x^(128+i) ≡ x^i · TAPS(x), whose degree is at
    // most i + 126: its part above x^127 lands on bits below i of `high`, so
    // clearing from the top down terminates in one pass.
    let mut i = 128;
    while i > 0 {
        i -= 1;
        if (high >> i) & 1 == 1 {
            high ^= 1 << i;
            low ^= TAPS << i;
            if i > 0 {
                high ^= TAPS >> (128 - i);
            }
        }
    }
    low
}

/// `a · b mod P`.
pub(crate) const fn mul_mod(a: u128, b: u128) -> u128 {
    let (high, low) = clmul(a, b);
    reduce(high, low)
}

/// `x^(2^k) mod P` for k = 0..64: multiplying the entries selected by the
/// bits of n gives `x^n mod P` with at most 64 products and no squaring.
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time, with k < 64, the table's length"
)]
pub(crate) const X_POW_2K: [u128; 64] = {
    let mut table = [0u128; 64];
    let mut power = X;
    let mut k = 0;
    while k < 64 {
        table[k] = power;
        power = mul_mod(power, power);
        k += 1;
    }
    table
};

/// `x^n mod P` for a 64-bit exponent, from [`X_POW_2K`].
pub(crate) fn x_pow(n: u64) -> u128 {
    X_POW_2K
        .iter()
        .enumerate()
        .filter(|(k, _)| (n >> k) & 1 == 1)
        .fold(ONE, |acc, (_, power)| mul_mod(acc, *power))
}

/// `x^e mod P` for a 128-bit exponent, by square-and-multiply. Used to prove
/// the polynomial primitive, where exponents reach 2^128 − 1.
#[cfg(test)]
pub(crate) fn x_pow_u128(mut e: u128) -> u128 {
    let (mut result, mut base) = (ONE, X);
    while e != 0 {
        if e & 1 == 1 {
            result = mul_mod(result, base);
        }
        base = mul_mod(base, base);
        e >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prime factors of 2^128 − 1 = (2^64+1)(2^32+1)(2^16+1)(2^8+1)(2^4+1)
    /// (2^2+1)(2+1), with 2^32+1 = 641 · 6700417 and 2^64+1 = 274177 ·
    /// 67280421310721.
    const FACTORS: [u128; 9] = [
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

    fn is_prime(n: u64) -> bool {
        if n < 2 {
            return false;
        }
        let mut d = 2u64;
        while d * d <= n {
            if n.is_multiple_of(d) {
                return false;
            }
            d += if d == 2 { 1 } else { 2 };
        }
        true
    }

    #[test]
    fn factorisation_of_the_group_order_is_complete_and_prime() {
        assert_eq!(FACTORS.iter().product::<u128>(), u128::MAX);
        for q in FACTORS {
            let q = u64::try_from(q).unwrap_or(0);
            assert!(is_prime(q), "{q} is not prime");
        }
    }

    /// P is primitive iff x has multiplicative order exactly 2^128 − 1 modulo
    /// P: x^(2^128−1) ≡ 1 and x^((2^128−1)/q) ≢ 1 for every prime q dividing
    /// 2^128 − 1. (Order 2^128 − 1 makes every non-zero residue a power of x,
    /// hence a unit, so GF(2)[x]/P is a field and P is irreducible too.) The
    /// LFSR whose characteristic polynomial is P then runs through all 2^128 − 1
    /// non-zero states before repeating.
    #[test]
    fn characteristic_polynomial_is_primitive() {
        assert_eq!(TAPS & 1, 1, "P(0) must be 1 for x to be invertible");
        assert_eq!(x_pow_u128(u128::MAX), ONE);
        for q in FACTORS {
            assert_ne!(
                x_pow_u128(u128::MAX / q),
                ONE,
                "order of x divides (2^128-1)/{q}"
            );
        }
    }

    #[test]
    fn multiplication_agrees_with_repeated_multiplication_by_x() {
        // x^n by n successive multiplications by x, each a shift and at most
        // one reduction, against the table-driven power.
        let mut power = ONE;
        for n in 0..2000u64 {
            assert_eq!(x_pow(n), power, "n = {n}");
            assert_eq!(x_pow_u128(u128::from(n)), power, "n = {n}");
            let carry = power >> 127;
            power <<= 1;
            if carry == 1 {
                power ^= TAPS;
            }
        }
    }

    #[test]
    fn multiplication_is_commutative_associative_and_distributive() {
        let samples = [
            0u128,
            1,
            2,
            TAPS,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            1 << 127,
            0x8000_0000_0000_0001_8000_0000_0000_0001,
        ];
        for a in samples {
            assert_eq!(mul_mod(a, ONE), a);
            assert_eq!(mul_mod(a, 0), 0);
            for b in samples {
                assert_eq!(mul_mod(a, b), mul_mod(b, a));
                for c in samples {
                    assert_eq!(mul_mod(mul_mod(a, b), c), mul_mod(a, mul_mod(b, c)));
                    assert_eq!(mul_mod(a, b ^ c), mul_mod(a, b) ^ mul_mod(a, c));
                }
            }
        }
    }

    #[test]
    fn exponents_add() {
        let exponents = [0u64, 1, 127, 128, 129, 1 << 20, 0xdead_beef, u64::MAX >> 1];
        for a in exponents {
            for b in exponents {
                let sum = u128::from(a) + u128::from(b);
                assert_eq!(mul_mod(x_pow(a), x_pow(b)), x_pow_u128(sum));
            }
        }
    }
}
