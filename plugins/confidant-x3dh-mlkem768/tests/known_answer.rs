//! FIPS 203 ML-KEM-768 known answers (NIST ACVP vectors; see
//! `tests/data/README.md` for where each file comes from) through this
//! crate's own API.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_x3dh_mlkem768::{
    KEM_CIPHERTEXT_LEN, KEM_DECAPSULATION_KEY_LEN, KEM_PUBLIC_KEY_LEN, KemCiphertext, KemKeyPair,
    KemPublicKey,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap()
}

fn bytes(value: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        value[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field}")),
    )
    .unwrap()
}

fn array<const N: usize>(value: &Value, field: &str) -> [u8; N] {
    bytes(value, field)
        .try_into()
        .unwrap_or_else(|bytes: Vec<u8>| panic!("{field} is {} bytes, not {N}", bytes.len()))
}

fn tests(file: &Value) -> &Vec<Value> {
    assert_eq!(file["parameterSet"], "ML-KEM-768");
    file["tests"].as_array().unwrap()
}

#[test]
fn key_generation_from_d_and_z() {
    let file = load("ml-kem-768-keygen.json");
    let tests = tests(&file);
    assert_eq!(tests.len(), 3);
    for test in tests {
        let id = &test["tcId"];
        let key_pair = KemKeyPair::from_seed(&array(test, "d"), &array(test, "z"));
        assert_eq!(
            key_pair.public_key().as_bytes()[..],
            bytes(test, "ek")[..],
            "ek, tcId {id}"
        );
        assert_eq!(
            key_pair.to_decapsulation_key_bytes()[..],
            bytes(test, "dk")[..],
            "dk, tcId {id}"
        );
        // The seed it is stored as is d ‖ z.
        let seed = key_pair.to_seed().unwrap();
        assert_eq!(seed[..32], bytes(test, "d")[..]);
        assert_eq!(seed[32..], bytes(test, "z")[..]);
    }
}

#[test]
fn encapsulation_with_given_randomness() {
    let file = load("ml-kem-768-encapsulation.json");
    let tests = tests(&file);
    assert_eq!(tests.len(), 3);
    for test in tests {
        let id = &test["tcId"];
        let public_key =
            KemPublicKey::from_bytes(&array::<KEM_PUBLIC_KEY_LEN>(test, "ek")).unwrap();
        let (ciphertext, shared) = public_key.encapsulate_with_randomness(&array(test, "m"));
        assert_eq!(
            ciphertext.as_bytes()[..],
            bytes(test, "c")[..],
            "c, tcId {id}"
        );
        assert_eq!(shared.as_bytes()[..], bytes(test, "k")[..], "k, tcId {id}");
        // The test's dk decapsulates c to the same k.
        let key_pair = KemKeyPair::from_decapsulation_key_bytes(
            &array::<KEM_DECAPSULATION_KEY_LEN>(test, "dk"),
        )
        .unwrap();
        assert_eq!(key_pair.public_key(), &public_key);
        assert_eq!(key_pair.decapsulate(&ciphertext), shared, "tcId {id}");
    }
}

#[test]
fn decapsulation_including_implicit_rejection() {
    let file = load("ml-kem-768-decapsulation.json");
    let key_pair =
        KemKeyPair::from_decapsulation_key_bytes(&array::<KEM_DECAPSULATION_KEY_LEN>(&file, "dk"))
            .unwrap();
    assert_eq!(key_pair.public_key().as_bytes()[..], bytes(&file, "ek")[..]);
    assert!(key_pair.to_seed().is_none());
    let tests = tests(&file);
    let mut modified = 0;
    for test in tests {
        let id = &test["tcId"];
        let ciphertext = KemCiphertext::from_bytes(&array::<KEM_CIPHERTEXT_LEN>(test, "c"));
        assert_eq!(
            key_pair.decapsulate(&ciphertext).as_bytes()[..],
            bytes(test, "k")[..],
            "tcId {id} ({})",
            test["reason"]
        );
        if test["reason"] == "modify ciphertext" {
            modified += 1;
        }
    }
    // Both kinds are in the set: valid ciphertexts and altered ones, whose
    // expected key is FIPS 203's rejection value J(z ‖ c).
    assert_eq!((tests.len(), modified), (5, 3));
}

#[test]
fn an_expanded_key_with_a_wrong_hash_is_refused() {
    let file = load("ml-kem-768-decapsulation.json");
    let mut dk = array::<KEM_DECAPSULATION_KEY_LEN>(&file, "dk");
    // dk = dk_PKE (1152) ‖ ek (1184) ‖ H(ek) (32) ‖ z (32).
    dk[1152 + 1184] ^= 1;
    assert_eq!(
        KemKeyPair::from_decapsulation_key_bytes(&dk).unwrap_err(),
        confidant_x3dh_mlkem768::HybridError::InvalidKemDecapsulationKey
    );
}
