//! The ChaCha20-Poly1305 suite through the conformance suite: Wycheproof and
//! RFC 8439 vectors, AEAD and IV-strategy checks, and the whole-suite checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_chacha20poly1305::{BigEndianCounterIv, ChaCha20Poly1305, chacha20_poly1305_counter};
use confidant_conformance::{
    AeadTestSet, check_aead, check_iv_strategy, check_suite, kat, known_answer, wycheproof_aead,
};

#[test]
fn wycheproof_chacha20_poly1305() {
    let report = wycheproof_aead::<ChaCha20Poly1305>(AeadTestSet::ChaCha20Poly1305).unwrap();
    println!("{report}");
    // 256 valid and 60 invalid cases with a 96-bit nonce; the 9 cases with
    // other nonce sizes are refused by length.
    assert!(report.valid >= 256, "{report}");
    assert!(report.invalid >= 60, "{report}");
}

#[test]
fn rfc8439_aead_vector() {
    known_answer::<ChaCha20Poly1305>(&kat::RFC8439_2_8_2).unwrap();
}

#[test]
fn aead_and_iv_strategy_checks() {
    println!("{}", check_aead::<ChaCha20Poly1305>().unwrap());
    println!(
        "{}",
        check_iv_strategy::<BigEndianCounterIv>(&[], 100_000).unwrap()
    );
}

#[test]
fn suite_checks() {
    let report = check_suite(chacha20_poly1305_counter().as_ref()).unwrap();
    println!("{report}");
    assert_eq!(report.sequential_ivs, 1_000_000);
}
