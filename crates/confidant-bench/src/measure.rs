//! Timing helpers. The machine is shared and noisy: its speed drifts by tens
//! of percent over seconds. So the variants being compared are measured in
//! alternation, a few milliseconds each, round after round; a ratio is
//! computed within each round (both sides saw the same machine) and the
//! median of those per-round ratios is reported. Times shown are each
//! variant's fastest round.

use std::time::Instant;

/// Nanoseconds per call of `operation`, timed over `iterations` calls.
pub fn per_call(iterations: u64, mut operation: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        operation();
    }
    start.elapsed().as_nanos() as f64 / iterations.max(1) as f64
}

/// Every variant's time (nanoseconds per operation) in every round.
pub struct Rounds<const N: usize> {
    rounds: Vec<[f64; N]>,
}

impl<const N: usize> Rounds<N> {
    /// Each variant's fastest round.
    pub fn fastest(&self) -> [f64; N] {
        std::array::from_fn(|variant| {
            let times: Vec<f64> = self.rounds.iter().map(|round| round[variant]).collect();
            fastest(&times)
        })
    }

    /// The median over rounds of `ratio` computed within each round.
    pub fn median_ratio(&self, ratio: impl Fn(&[f64; N]) -> f64) -> f64 {
        let mut ratios: Vec<f64> = self.rounds.iter().map(ratio).collect();
        median(&mut ratios)
    }
}

/// Runs every variant once per round, `rounds` times.
pub fn compare<const N: usize>(
    rounds: usize,
    mut variants: [&mut dyn FnMut() -> f64; N],
) -> Rounds<N> {
    let mut all = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut round = [0.0; N];
        for (variant, time) in variants.iter_mut().zip(round.iter_mut()) {
            *time = variant();
        }
        all.push(round);
    }
    Rounds { rounds: all }
}

/// The median of `samples` (NaN if empty).
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

/// The smallest of `samples` (NaN if empty).
pub fn fastest(samples: &[f64]) -> f64 {
    samples.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
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
    fn fastest_of_samples() {
        assert_eq!(fastest(&[3.0, 1.0, 2.0]), 1.0);
        assert!(fastest(&[]).is_nan());
    }

    #[test]
    fn compare_returns_one_figure_per_variant_in_order() {
        let mut a = || 1.0;
        let mut b = || 5.0;
        let rounds = compare(3, [&mut a, &mut b]);
        assert_eq!(rounds.fastest(), [1.0, 5.0]);
        assert_eq!(rounds.median_ratio(|[a, b]| b / a), 5.0);
    }

    #[test]
    fn ratios_are_paired_within_rounds() {
        // The machine halves its speed in the second round: both variants
        // slow down together, and the per-round ratio stays 2.
        let mut round = 0;
        let mut slow = || {
            round += 1;
            if round == 2 { 2.0 } else { 1.0 }
        };
        let mut calls = 0;
        let mut fast = || {
            calls += 1;
            if calls == 2 { 4.0 } else { 2.0 }
        };
        let rounds = compare(3, [&mut slow, &mut fast]);
        assert_eq!(rounds.median_ratio(|[a, b]| b / a), 2.0);
    }

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn units() {
        assert_eq!(format_ns(12.34), "12.3 ns");
        assert_eq!(format_ns(1_500.0), "1.50 µs");
        assert_eq!(format_ns(2_500_000.0), "2.50 ms");
    }
}
