//! Wycheproof AEAD vectors through Confidant's [`Aead`] trait.

use crate::failure::{Failure, ensure};
use confidant_core::{Aead, KeyLengthError, SealError, TAG_LEN};
use std::fmt;
use wycheproof::TestResult;
use wycheproof::aead::{TestName, TestSet};

/// What [`wycheproof_aead`] ran.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VectorReport {
    /// The test set and the AEAD, e.g. `"wycheproof aes_gcm / AES-256-GCM (16-byte nonce)"`.
    pub subject: String,
    /// Valid (or acceptable) cases run: sealed and opened.
    pub valid: usize,
    /// Invalid cases run: opening refused.
    pub invalid: usize,
    /// Cases whose key, nonce or tag size the AEAD does not take. They are
    /// not known-answer tests for it, but each was checked to be refused
    /// with an error (wrong key length at construction, wrong nonce length at
    /// seal and open) rather than a panic.
    pub skipped: usize,
}

impl VectorReport {
    /// Cases run as known answers (valid + invalid).
    pub fn ran(&self) -> usize {
        self.valid + self.invalid
    }
}

impl fmt::Display for VectorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} cases ran ({} valid, {} invalid), {} skipped for unsupported sizes",
            self.subject,
            self.ran(),
            self.valid,
            self.invalid,
            self.skipped
        )
    }
}

/// Runs every case of the Wycheproof AEAD test set `set` whose sizes fit `A`
/// through Confidant's [`Aead`] trait.
///
/// For a case with `A`'s key, nonce and tag sizes:
/// - valid (or acceptable) cases: `seal` must reproduce `ct ‖ tag` exactly and
///   `open` must return the message (an "acceptable" case may instead be
///   refused by both);
/// - invalid cases: `open` must refuse.
///
/// Other cases are skipped, after checking that `A` refuses their sizes with
/// an error. A test should assert a meaningful minimum of
/// [`VectorReport::ran`], so that a set silently shrinking to nothing fails.
pub fn wycheproof_aead<A: Aead>(set: TestName) -> Result<VectorReport, Failure> {
    let set_name = format!("{set:?}");
    let tests = TestSet::load(set).map_err(|error| {
        Failure::new(
            format!("wycheproof {set_name}"),
            format!("cannot load: {error}"),
        )
    })?;
    let mut report = VectorReport {
        subject: format!("wycheproof {set_name} / {}", A::NAME),
        valid: 0,
        invalid: 0,
        skipped: 0,
    };
    for group in &tests.test_groups {
        for case in &group.tests {
            let check = format!("wycheproof {set_name} case {}", case.tc_id);
            let sizes_fit = case.key.len() == A::KEY_LEN
                && case.nonce.len() == A::NONCE_LEN
                && case.tag.len() == TAG_LEN;
            if !sizes_fit {
                refuses_sizes::<A>(&check, &case.key, &case.nonce)?;
                report.skipped += 1;
                continue;
            }
            let aead = A::new(&case.key)
                .map_err(|error| Failure::new(&check, format!("key refused: {error}")))?;
            let mut sealed_reference = case.ct.to_vec();
            sealed_reference.extend_from_slice(&case.tag);
            let opened = aead.open(&case.nonce, &case.aad, &sealed_reference);
            match case.result {
                TestResult::Valid => {
                    let sealed = aead
                        .seal(&case.nonce, &case.aad, &case.pt)
                        .map_err(|error| Failure::new(&check, format!("seal refused: {error}")))?;
                    ensure(
                        sealed == sealed_reference,
                        &check,
                        format!("seal differs from ct ‖ tag ({})", case.comment),
                    )?;
                    let opened = opened.map_err(|_| {
                        Failure::new(
                            &check,
                            format!("open refused a valid case ({})", case.comment),
                        )
                    })?;
                    ensure(
                        opened == *case.pt,
                        &check,
                        "open gave a different plaintext",
                    )?;
                    report.valid += 1;
                }
                TestResult::Acceptable => {
                    if let Ok(opened) = opened {
                        ensure(
                            opened == *case.pt,
                            &check,
                            "open gave a different plaintext",
                        )?;
                    }
                    report.valid += 1;
                }
                TestResult::Invalid => {
                    ensure(
                        opened.is_err(),
                        &check,
                        format!("open accepted an invalid case ({})", case.comment),
                    )?;
                    report.invalid += 1;
                }
            }
        }
    }
    Ok(report)
}

/// A case whose sizes `A` does not take must be refused with an error.
fn refuses_sizes<A: Aead>(check: &str, key: &[u8], nonce: &[u8]) -> Result<(), Failure> {
    if key.len() != A::KEY_LEN {
        return match A::new(key) {
            Err(KeyLengthError { expected, actual })
                if expected == A::KEY_LEN && actual == key.len() =>
            {
                Ok(())
            }
            Err(error) => Err(Failure::new(check, format!("wrong key error: {error}"))),
            Ok(_) => Err(Failure::new(
                check,
                format!("accepted a {}-byte key", key.len()),
            )),
        };
    }
    if nonce.len() != A::NONCE_LEN {
        let aead = A::new(key).map_err(|error| Failure::new(check, error.to_string()))?;
        let mut buffer = vec![0u8; 8];
        match aead.seal_in_place_detached(nonce, b"", &mut buffer) {
            Err(SealError::NonceLength { expected, actual })
                if expected == A::NONCE_LEN && actual == nonce.len() => {}
            other => {
                return Err(Failure::new(
                    check,
                    format!(
                        "seal with a {}-byte nonce gave {other:?}, not a nonce length error",
                        nonce.len()
                    ),
                ));
            }
        }
        ensure(
            aead.open(nonce, b"", &[0u8; 32]).is_err(),
            check,
            format!("open accepted a {}-byte nonce", nonce.len()),
        )?;
    }
    Ok(())
}
