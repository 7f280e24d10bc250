//! The AES-256-GCM suites through the conformance suite: published vectors
//! (Wycheproof, the GCM specification), AEAD and IV-strategy checks, and the
//! whole-suite checks the session layer relies on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_aes_gcm::{
    Aes256Gcm12, Aes256Gcm16, Lfsr128Iv, Sha256CounterIv, aes_256_gcm_lfsr,
    aes_256_gcm_sha256_counter,
};
use confidant_conformance::{
    AeadTestSet, check_aead, check_iv_strategy, check_suite, kat, known_answer, wycheproof_aead,
};

#[test]
fn wycheproof_aes_gcm_128_bit_iv_through_aes256gcm16() {
    let report = wycheproof_aead::<Aes256Gcm16>(AeadTestSet::AesGcm).unwrap();
    println!("{report}");
    // The set has 19 valid AES-256 cases with 128-bit IVs; the rest have
    // other key or IV sizes.
    assert!(report.valid >= 19, "{report}");
    assert_eq!(report.ran() + report.skipped, 316);
}

#[test]
fn wycheproof_aes_gcm_96_bit_iv_through_aes256gcm12() {
    let report = wycheproof_aead::<Aes256Gcm12>(AeadTestSet::AesGcm).unwrap();
    println!("{report}");
    // 39 valid and 27 invalid AES-256 cases with 96-bit IVs.
    assert!(report.valid >= 39, "{report}");
    assert!(report.invalid >= 27, "{report}");
}

#[test]
fn gcm_specification_aes_256_test_cases_13_to_16() {
    for vector in &kat::GCM_SPEC_AES_256 {
        known_answer::<Aes256Gcm12>(vector).unwrap();
    }
}

#[test]
fn aead_checks() {
    println!("{}", check_aead::<Aes256Gcm16>().unwrap());
    println!("{}", check_aead::<Aes256Gcm12>().unwrap());
}

#[test]
fn iv_strategy_checks() {
    println!(
        "{}",
        check_iv_strategy::<Sha256CounterIv>(&[], 100_000).unwrap()
    );
    println!(
        "{}",
        check_iv_strategy::<Lfsr128Iv>(b"0123456789abcdef", 100_000).unwrap()
    );
}

#[test]
fn suite_sha256_counter() {
    let report = check_suite(aes_256_gcm_sha256_counter().as_ref()).unwrap();
    println!("{report}");
    assert_eq!(report.sequential_ivs, 1_000_000);
}

#[test]
fn suite_lfsr() {
    let report = check_suite(aes_256_gcm_lfsr().as_ref()).unwrap();
    println!("{report}");
    assert_eq!(report.sequential_ivs, 1_000_000);
}
