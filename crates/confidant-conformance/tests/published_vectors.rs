//! The published vectors the harness ships, checked against the project's
//! own AEADs (each plugin runs them too; this keeps the vectors honest).

#![allow(clippy::unwrap_used)]

use confidant_aes_gcm::Aes256Gcm12;
use confidant_chacha20poly1305::ChaCha20Poly1305;
use confidant_conformance::{kat, known_answer};

#[test]
fn vectors_decode_and_pass() {
    known_answer::<ChaCha20Poly1305>(&kat::RFC8439_2_8_2).unwrap();
    for vector in &kat::GCM_SPEC_AES_256 {
        known_answer::<Aes256Gcm12>(vector).unwrap();
    }
}

#[test]
fn a_wrong_vector_is_reported() {
    let mut vector = kat::GCM_SPEC_TEST_CASE_14;
    vector.tag = "d0d1c8a799996bf0265b98b5d48ab918";
    let failure = known_answer::<Aes256Gcm12>(&vector).unwrap_err();
    assert_eq!(failure.detail, "tag differs");
}
