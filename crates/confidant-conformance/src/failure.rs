//! The one error type of the conformance suite.

use thiserror::Error;

/// A conformance check failed: which one, and what was observed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{check}: {detail}")]
#[non_exhaustive]
pub struct Failure {
    /// The check, e.g. `"wycheproof aes_gcm case 42"` or
    /// `"tamper: ciphertext bit 17"`.
    pub check: String,
    /// What went wrong.
    pub detail: String,
}

impl Failure {
    /// A failure of `check` with `detail`.
    pub fn new(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            detail: detail.into(),
        }
    }
}

/// `Err(Failure)` unless `condition` holds.
pub(crate) fn ensure(
    condition: bool,
    check: impl Into<String>,
    detail: impl Into<String>,
) -> Result<(), Failure> {
    if condition {
        Ok(())
    } else {
        Err(Failure::new(check, detail))
    }
}
