//! The sliding replay window.
//!
//! The window remembers which of the last `size` counters below (and
//! including) the highest accepted one were accepted. A counter above the
//! highest is new; one inside the window is new exactly once; one below the
//! window is refused as too old, because the window can no longer tell
//! whether it was seen. Memory is bounded by `size` bits, whatever the
//! counters.
//!
//! [`ReplayWindow::check`] never changes the window: the session checks,
//! then decrypts, and only after the tag verifies calls
//! [`ReplayWindow::mark`].

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Smallest window size in counters.
pub const MIN_WINDOW: u32 = 64;
/// Largest window size in counters.
pub const MAX_WINDOW: u32 = 1 << 16;

/// Why a counter was refused by the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// This counter was already accepted.
    #[error("message {counter} was already received")]
    Duplicate {
        /// The counter.
        counter: u64,
    },
    /// This counter lies below the window.
    #[error("message {counter} is older than the replay window (oldest acceptable: {oldest})")]
    TooOld {
        /// The counter.
        counter: u64,
        /// The oldest counter the window can still accept.
        oldest: u64,
    },
}

/// A bounded bitmap of recently accepted counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    /// Highest accepted counter, if any.
    highest: Option<u64>,
    /// Bit `n % size` is set when counter `n` (within the window) was accepted.
    bits: Vec<u64>,
}

impl ReplayWindow {
    /// An empty window of `size` counters; `size` is a power of two between
    /// [`MIN_WINDOW`] and [`MAX_WINDOW`].
    pub(crate) fn new(size: u32) -> Self {
        Self {
            highest: None,
            bits: vec![0; (size / 64) as usize],
        }
    }

    /// A window of `size` counters with every bit set, for tests of the
    /// largest encodings.
    #[cfg(test)]
    pub(crate) fn full_for_tests(size: u32, highest: u64) -> Self {
        Self {
            highest: Some(highest),
            bits: vec![u64::MAX; (size / 64) as usize],
        }
    }

    /// Whether the window's shape is one [`ReplayWindow::new`] could make.
    pub(crate) fn is_well_formed(&self) -> bool {
        let size = self.size();
        size.is_power_of_two() && (MIN_WINDOW as u64..=MAX_WINDOW as u64).contains(&size)
    }

    /// How many counters the window covers.
    pub fn size(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn slot(&self, counter: u64) -> (usize, u64) {
        // The size is a power of two: a mask instead of a division, on the
        // path of every received message.
        let index = counter & self.size().wrapping_sub(1);
        ((index / 64) as usize, 1u64 << (index % 64))
    }

    fn is_set(&self, counter: u64) -> bool {
        let (word, mask) = self.slot(counter);
        self.bits.get(word).is_some_and(|bits| bits & mask != 0)
    }

    fn set(&mut self, counter: u64, value: bool) {
        let (word, mask) = self.slot(counter);
        if let Some(bits) = self.bits.get_mut(word) {
            if value {
                *bits |= mask;
            } else {
                *bits &= !mask;
            }
        }
    }

    /// Whether `counter` would be accepted. Changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if counter > highest {
            return Ok(());
        }
        let age = highest - counter;
        if age >= self.size() {
            return Err(ReplayError::TooOld {
                counter,
                oldest: highest.saturating_sub(self.size().saturating_sub(1)),
            });
        }
        if self.is_set(counter) {
            return Err(ReplayError::Duplicate { counter });
        }
        Ok(())
    }

    /// Records `counter` as accepted. Call only after [`ReplayWindow::check`]
    /// passed and the message authenticated.
    pub fn mark(&mut self, counter: u64) {
        match self.highest {
            Some(highest) if counter <= highest => {}
            Some(highest) => {
                // Slide: the slots of counters highest+1 ..= counter now
                // stand for new counters, so clear them (at most the whole
                // window).
                let advance = counter - highest;
                if advance >= self.size() {
                    self.bits.iter_mut().for_each(|bits| *bits = 0);
                } else {
                    for stale in highest + 1..counter {
                        self.set(stale, false);
                    }
                }
                self.highest = Some(counter);
            }
            None => {
                self.highest = Some(counter);
            }
        }
        self.set(counter, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_counter_once() {
        let mut window = ReplayWindow::new(64);
        for counter in [5, 3, 4, 0, 70, 10, 69] {
            assert_eq!(window.check(counter), Ok(()), "counter {counter}");
            window.mark(counter);
            assert_eq!(
                window.check(counter),
                Err(ReplayError::Duplicate { counter })
            );
        }
        // 70 is the highest; 7 is inside the window (70 - 7 = 63 < 64).
        assert_eq!(window.check(7), Ok(()));
        // 6 is just outside.
        assert_eq!(
            window.check(6),
            Err(ReplayError::TooOld {
                counter: 6,
                oldest: 7
            })
        );
        // Slots reused by the slide were cleared: 69 was marked after the
        // slide, 68 never.
        assert_eq!(window.check(68), Ok(()));
    }

    #[test]
    fn large_jump_clears_everything() {
        let mut window = ReplayWindow::new(128);
        for counter in 0..128 {
            window.mark(counter);
        }
        window.mark(1_000_000);
        for counter in 1_000_000 - 127..1_000_000 {
            assert_eq!(window.check(counter), Ok(()), "counter {counter}");
        }
        assert!(window.check(1_000_000 - 128).is_err());
    }

    #[test]
    fn check_does_not_change_the_window() {
        let mut window = ReplayWindow::new(64);
        window.mark(10);
        let before = window.clone();
        for counter in 0..200 {
            let _ = window.check(counter);
        }
        assert_eq!(window, before);
    }

    #[test]
    fn works_at_the_top_of_the_counter_space() {
        let mut window = ReplayWindow::new(64);
        window.mark(u64::MAX - 1);
        assert_eq!(window.check(u64::MAX), Ok(()));
        window.mark(u64::MAX);
        assert!(window.check(u64::MAX).is_err());
        assert_eq!(window.check(u64::MAX - 2), Ok(()));
    }
}
