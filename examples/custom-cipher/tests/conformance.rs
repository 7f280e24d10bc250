//! The example suite goes through the same conformance suite as the
//! project's own: published vectors through our `Aead` wrapper, then the
//! whole-suite checks.

#![allow(clippy::unwrap_used)]

use confidant_conformance::{
    AeadTestSet, check_aead, check_iv_strategy, check_suite, kat, known_answer, wycheproof_aead,
};
use confidant_core::SuiteRegistry;
use custom_cipher::{Counter192Iv, XCHACHA20_POLY1305_COUNTER, XChaCha20Poly1305};

#[test]
fn wycheproof_xchacha20_poly1305() {
    let report = wycheproof_aead::<XChaCha20Poly1305>(AeadTestSet::XChaCha20Poly1305).unwrap();
    println!("{report}");
    // 246 valid and 60 invalid cases with a 192-bit nonce.
    assert!(report.valid >= 246, "{report}");
    assert!(report.invalid >= 60, "{report}");
}

#[test]
fn xchacha_draft_vector() {
    known_answer::<XChaCha20Poly1305>(&kat::XCHACHA_DRAFT_A_3_1).unwrap();
}

#[test]
fn aead_and_iv_strategy_checks() {
    check_aead::<XChaCha20Poly1305>().unwrap();
    check_iv_strategy::<Counter192Iv>(&[], 100_000).unwrap();
}

#[test]
fn suite_checks() {
    let mut registry = SuiteRegistry::new();
    custom_cipher::register(&mut registry).unwrap();
    let suite = registry.get(XCHACHA20_POLY1305_COUNTER).unwrap();
    assert!(suite.id().is_private_use());
    let report = check_suite(suite.as_ref()).unwrap();
    println!("{report}");
}

#[test]
fn the_binary_answers_help() {
    let binary = env!("CARGO_BIN_EXE_custom-cipher");
    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    let stdout = String::from_utf8(help.stdout).unwrap();
    assert!(stdout.contains("Usage: custom-cipher"), "{stdout}");
}
