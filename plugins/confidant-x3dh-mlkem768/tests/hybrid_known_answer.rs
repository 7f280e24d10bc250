//! Known answer for the whole hybrid handshake: every key and all
//! randomness fixed, the expected `SK` recomputed here from the raw
//! primitives (x25519, SHA-512, ML-KEM-768 from `ml-kem` directly,
//! HKDF-SHA-256) by the formula of `docs/protocol.md`, and pinned as a
//! regression constant.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::{KeyAgreement, SuiteId};
use confidant_x3dh::{EphemeralKey, IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey};
use confidant_x3dh_mlkem768::{
    HybridResponderKeys, KemKeyPair, KemPreKey, KemPreKeyKind, X3dhMlKem768,
};
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use ml_kem::{KeyExport, ml_kem_768};
use sha2::{Digest, Sha256, Sha512};
use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};

const SUITE: SuiteId = SuiteId::AES_256_GCM_SHA256_COUNTER;

fn counting_bytes(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn x25519_secret_of_seed(seed: &[u8; 32]) -> [u8; 32] {
    Sha512::digest(seed)[..32].try_into().unwrap()
}

fn public(secret: [u8; 32]) -> [u8; 32] {
    x25519(secret, X25519_BASEPOINT_BYTES)
}

const ALICE: u8 = 0x00;
const BOB: u8 = 0x20;
const SPK: u8 = 0x40;
const OPK: u8 = 0x60;
const EK: u8 = 0x80;
const KEM_D: u8 = 0xA0;
const KEM_Z: u8 = 0xC0;
const KEM_M: u8 = 0xE0;

/// SK and the ciphertext by the formula, from raw primitives only.
fn expected() -> ([u8; 32], Vec<u8>) {
    let ik_a = x25519_secret_of_seed(&counting_bytes(ALICE));
    let ik_b_public = public(x25519_secret_of_seed(&counting_bytes(BOB)));
    let spk_b_public = public(counting_bytes(SPK));
    let opk_b_public = public(counting_bytes(OPK));
    let ek = counting_bytes(EK);
    let dh1 = x25519(ik_a, spk_b_public);
    let dh2 = x25519(ek, ik_b_public);
    let dh3 = x25519(ek, spk_b_public);
    let dh4 = x25519(ek, opk_b_public);

    let mut seed = [0u8; 64];
    seed[..32].copy_from_slice(&counting_bytes(KEM_D));
    seed[32..].copy_from_slice(&counting_bytes(KEM_Z));
    let dk = ml_kem_768::DecapsulationKey::from_seed(ml_kem::Seed::from(seed));
    let ek_kem = ml_kem_768::EncapsulationKey::new(&dk.encapsulation_key().to_bytes()).unwrap();
    let (ct, ss) = ek_kem.encapsulate_deterministic(&ml_kem::B32::from(counting_bytes(KEM_M)));

    let mut ikm = vec![0xFF; 32];
    for part in [&dh1[..], &dh2, &dh3, &dh4, &ss] {
        ikm.extend_from_slice(part);
    }
    let mut sk = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm)
        .expand(b"Confidant X3DH-25519-MLKEM768-SHA-256 v1", &mut sk)
        .unwrap();
    (sk, ct.to_vec())
}

#[test]
fn hybrid_handshake_matches_the_formula_and_the_pinned_secret() {
    let bob_identity = IdentityKeyPair::from_seed(counting_bytes(BOB));
    let signed_pre_key = SignedPreKey::new(&bob_identity, 1, counting_bytes(SPK));
    let kem = KemPreKey::new(
        &bob_identity,
        3,
        KemPreKeyKind::LastResort,
        KemKeyPair::from_seed(&counting_bytes(KEM_D), &counting_bytes(KEM_Z)),
    );
    let mut classical = ResponderKeys::new(bob_identity, signed_pre_key).unwrap();
    classical
        .add_one_time_pre_key(OneTimePreKey::new(2, counting_bytes(OPK)))
        .unwrap();
    let bob = HybridResponderKeys::new(classical, kem).unwrap();
    let alice = IdentityKeyPair::from_seed(counting_bytes(ALICE));
    let hybrid = X3dhMlKem768::default();
    let bundle = hybrid.bundle(&bob, &[SUITE], b"binding").unwrap();
    let (alice_secret, initial) = hybrid
        .initiate_with_randomness(
            &alice,
            &bob.classical().identity_public_key().to_bytes(),
            &bundle,
            EphemeralKey::from_bytes(counting_bytes(EK)),
            &counting_bytes(KEM_M),
            SUITE,
            b"binding",
        )
        .unwrap();
    let bob_secret = hybrid.respond(&bob, &initial).unwrap();

    let (sk, ct) = expected();
    assert_eq!(initial.kem_ciphertext, ct);
    assert_eq!(alice_secret.secret(), &sk);
    assert_eq!(bob_secret.secret(), &sk);
    let mut ad = SigningKey::from_bytes(&counting_bytes(ALICE))
        .verifying_key()
        .to_bytes()
        .to_vec();
    ad.extend_from_slice(
        &SigningKey::from_bytes(&counting_bytes(BOB))
            .verifying_key()
            .to_bytes(),
    );
    assert_eq!(bob_secret.associated_data(), ad);
    // Regression: the value the formula gave when this test was written.
    assert_eq!(hex::encode(sk), PINNED_SK);
}

const PINNED_SK: &str = "217b09d825d41a1e0f618340bc64560ad64d8a445638c1d617119ecc5fca6f91";
