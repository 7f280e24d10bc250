//! # confidant-conformance
//!
//! The conformance suite every Confidant cipher suite is run through, the
//! project's own and a user's alike:
//!
//! - [`wycheproof_aead`]: every Wycheproof case of a set whose key, nonce and
//!   tag sizes fit an [`Aead`](confidant_core::Aead), run through
//!   Confidant's trait (seal must reproduce `ct ‖ tag`, open must accept the
//!   valid cases and refuse the invalid ones); cases of other sizes are
//!   counted as skipped after checking that the trait refuses them with an
//!   error instead of panicking.
//! - [`known_answer`] with the RFC and specification vectors in [`kat`].
//! - [`check_aead`]: length checks and consistency of one `Aead`.
//! - [`check_iv_strategy`]: seed, output and limit checks of one
//!   [`IvStrategy`](confidant_core::IvStrategy).
//! - [`check_suite`] (or [`SuiteChecks`] to configure it): round trips,
//!   determinism, IV uniqueness over a long sequential run and random jumps,
//!   seed separation, the hard message limit, tamper rejection (every bit of
//!   `ct ‖ tag` and of the associated data, wrong counter, key and seed,
//!   truncation), empty and 1 MiB plaintexts.
//!
//! Every check returns `Result<_, Failure>`: nothing here panics on a
//! misbehaving plugin, so a test can assert on the outcome and print the
//! report.
//!
//! ```
//! # fn demo(suite: &dyn confidant_core::Suite) -> Result<(), confidant_conformance::Failure> {
//! let report = confidant_conformance::check_suite(suite)?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

mod aead_checks;
mod failure;
pub mod kat;
mod rng;
mod suite_checks;
mod wycheproof_runner;

pub use aead_checks::{Report, check_aead, check_iv_strategy};
pub use failure::Failure;
pub use kat::{KnownAnswer, known_answer};
pub use suite_checks::{SuiteChecks, SuiteReport, check_suite};
pub use wycheproof_runner::{VectorReport, wycheproof_aead};

/// The Wycheproof AEAD test sets (re-exported from the `wycheproof` crate),
/// e.g. [`AeadTestSet::AesGcm`], [`AeadTestSet::ChaCha20Poly1305`],
/// [`AeadTestSet::XChaCha20Poly1305`].
pub use wycheproof::aead::TestName as AeadTestSet;
