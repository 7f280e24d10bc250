//! Cross-crate tests of Confidant live in `tests/tests/`. This library holds
//! what they share with the helper processes in `src/bin/` (the crash
//! tests' sender and receiver).

pub mod crash;

/// The README, compiled as a doc test so its example cannot go stale.
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctest;

/// `docs/plugins.md`, compiled as a doc test so its examples cannot go stale.
#[doc = include_str!("../../docs/plugins.md")]
pub struct PluginGuideDoctest;
