//! Timing helpers. The machine is shared and noisy, so every figure is the
//! median of several rounds, and the variants being compared are measured in
//! alternation within each round rather than one after the other.

use std::time::Instant;

/// Nanoseconds per call of `operation`, timed over `iterations` calls.
pub fn per_call(iterations: u64, mut operation: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        operation();
    }
    start.elapsed().as_nanos() as f64 / iterations.max(1) as f64
}

/// The median of `samples` (which must not be empty; returns NaN if it is).
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let middle = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[middle]
    } else {
        (samples[middle - 1] + samples[middle]) / 2.0
    }
}

/// Runs every variant once per round, `rounds` times, and returns each
/// variant's median in nanoseconds.
pub fn compare<const N: usize>(
    rounds: usize,
    mut variants: [&mut dyn FnMut() -> f64; N],
) -> [f64; N] {
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for _ in 0..rounds {
        for (variant, samples) in variants.iter_mut().zip(samples.iter_mut()) {
            samples.push(variant());
        }
    }
    samples.map(|mut samples| median(&mut samples))
}

/// Formats nanoseconds with a sensible unit.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn compare_returns_one_median_per_variant_in_order() {
        let mut a = || 1.0;
        let mut b = || 5.0;
        assert_eq!(compare(3, [&mut a, &mut b]), [1.0, 5.0]);
    }

    #[test]
    fn units() {
        assert_eq!(format_ns(12.34), "12.3 ns");
        assert_eq!(format_ns(1_500.0), "1.50 µs");
        assert_eq!(format_ns(2_500_000.0), "2.50 ms");
    }
}
