//! Cross-crate tests of Confidant live in `tests/tests/`. This library holds
//! what they share with the helper processes in `src/bin/` (the crash
//! tests' sender and receiver; the end-to-end tests' wrappers of the
//! connector and the example apps), the end-to-end tests' child-process
//! harness ([`process`], [`e2e`]) and their hostile relay ([`hostile`]).

pub mod crash;
pub mod e2e;
pub mod hostile;
pub mod process;

/// The README, compiled as a doc test so its example cannot go stale.
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctest;

/// `docs/plugins.md`, compiled as a doc test so its examples cannot go stale.
#[doc = include_str!("../../docs/plugins.md")]
pub struct PluginGuideDoctest;
