//! Known-answer tests: every key fixed, the expected secret recomputed here
//! from the raw primitives (x25519, SHA-512, HKDF-SHA-256) by the formula of
//! the X3DH specification, and pinned as a regression constant.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::SuiteId;
use confidant_x3dh::{
    EphemeralKey, IdentityKeyPair, InitialMessageHeader, OneTimePreKey, ResponderKeys,
    SignedPreKey, X3dhConfig,
};
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use sha2::{Digest, Sha256, Sha512};
use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};

const SUITE: SuiteId = SuiteId::AES_256_GCM_SHA256_COUNTER;

/// `start, start + 1, …, start + 31`.
fn counting_bytes(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start + i as u8)
}

struct Fixture {
    alice_seed: [u8; 32],
    bob_seed: [u8; 32],
    signed_pre_key: [u8; 32],
    one_time_pre_key: [u8; 32],
    ephemeral: [u8; 32],
}

fn fixture() -> Fixture {
    Fixture {
        alice_seed: counting_bytes(0x00),
        bob_seed: counting_bytes(0x20),
        signed_pre_key: counting_bytes(0x40),
        one_time_pre_key: counting_bytes(0x60),
        ephemeral: counting_bytes(0x80),
    }
}

/// The X25519 form of an Ed25519 seed, computed from its definition: the
/// first half of SHA-512 of the seed (`x25519` clamps it).
fn x25519_secret_of_seed(seed: &[u8; 32]) -> [u8; 32] {
    let digest = Sha512::digest(seed);
    digest[..32].try_into().unwrap()
}

fn public(secret: [u8; 32]) -> [u8; 32] {
    x25519(secret, X25519_BASEPOINT_BYTES)
}

/// SK and AD by the formula, from raw primitives only.
fn expected(f: &Fixture, with_one_time_pre_key: bool, info: &[u8]) -> ([u8; 32], Vec<u8>) {
    let ik_a = x25519_secret_of_seed(&f.alice_seed);
    let ik_b_public = public(x25519_secret_of_seed(&f.bob_seed));
    let spk_b_public = public(f.signed_pre_key);
    let opk_b_public = public(f.one_time_pre_key);

    let dh1 = x25519(ik_a, spk_b_public);
    let dh2 = x25519(f.ephemeral, ik_b_public);
    let dh3 = x25519(f.ephemeral, spk_b_public);
    let dh4 = x25519(f.ephemeral, opk_b_public);

    let mut ikm = vec![0xFF; 32];
    ikm.extend_from_slice(&dh1);
    ikm.extend_from_slice(&dh2);
    ikm.extend_from_slice(&dh3);
    if with_one_time_pre_key {
        ikm.extend_from_slice(&dh4);
    }
    let mut sk = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm)
        .expand(info, &mut sk)
        .unwrap();

    let mut ad = SigningKey::from_bytes(&f.alice_seed)
        .verifying_key()
        .to_bytes()
        .to_vec();
    ad.extend_from_slice(
        &SigningKey::from_bytes(&f.bob_seed)
            .verifying_key()
            .to_bytes(),
    );
    (sk, ad)
}

/// Runs the crate's X3DH on the fixture, both sides.
fn run(f: &Fixture, with_one_time_pre_key: bool, config: &X3dhConfig) -> ([u8; 32], Vec<u8>) {
    let bob_identity = IdentityKeyPair::from_seed(f.bob_seed);
    let signed_pre_key = SignedPreKey::new(&bob_identity, 1, f.signed_pre_key);
    let mut bob = ResponderKeys::new(bob_identity, signed_pre_key).unwrap();
    bob.add_one_time_pre_key(OneTimePreKey::new(2, f.one_time_pre_key))
        .unwrap();
    let alice = IdentityKeyPair::from_seed(f.alice_seed);

    let bundle = if with_one_time_pre_key {
        bob.bundle_with_one_time_pre_key(2, &[SUITE]).unwrap()
    } else {
        bob.bundle(&[SUITE])
    };
    let (alice_secret, header) = bundle
        .verify(bob.identity_public_key())
        .unwrap()
        .agree_with_ephemeral(config, &alice, EphemeralKey::from_bytes(f.ephemeral), SUITE)
        .unwrap();
    assert_eq!(header.ephemeral_key().to_bytes(), public(f.ephemeral));
    let header = InitialMessageHeader::from_bytes(&header.to_bytes(None)).unwrap();
    let bob_secret = bob.respond_and_consume(config, &header).unwrap();
    assert_eq!(alice_secret.secret(), bob_secret.secret());
    assert_eq!(alice_secret.associated_data(), bob_secret.associated_data());
    (*bob_secret.secret(), bob_secret.associated_data().to_vec())
}

/// SK with the one-time pre-key, default info. Besides the recomputation in
/// [`expected`], these constants were reproduced once with a second,
/// unrelated implementation (Python `cryptography` 48 on OpenSSL: X25519
/// keys from `SHA-512(seed)[..32]`, Ed25519 public keys from the seeds,
/// `HKDF(SHA256, salt = 0^32)`).
const PINNED_SK_WITH_ONE_TIME_PRE_KEY: &str =
    "19df07758c8796691aa8e59e5385477d4d64bf736ab048b231d795da3fd768b8";
/// SK without the one-time pre-key, default info.
const PINNED_SK_WITHOUT_ONE_TIME_PRE_KEY: &str =
    "087afe1bacd9c44ba9b1124c7205c4090a0d82dc755ef109b2b2bd9dfef0bffd";
/// `Encode(IK_A) ‖ Encode(IK_B)` for the fixture's seeds.
const PINNED_AD: &str = concat!(
    "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
    "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7",
);

#[test]
fn known_answer_with_one_time_pre_key() {
    let f = fixture();
    let config = X3dhConfig::default();
    let (sk, ad) = run(&f, true, &config);
    let (expected_sk, expected_ad) = expected(&f, true, b"Confidant X3DH v1");
    assert_eq!(sk, expected_sk);
    assert_eq!(ad, expected_ad);
    assert_eq!(hex::encode(sk), PINNED_SK_WITH_ONE_TIME_PRE_KEY);
    assert_eq!(hex::encode(ad), PINNED_AD);
}

#[test]
fn known_answer_without_one_time_pre_key() {
    let f = fixture();
    let config = X3dhConfig::default();
    let (sk, ad) = run(&f, false, &config);
    let (expected_sk, expected_ad) = expected(&f, false, b"Confidant X3DH v1");
    assert_eq!(sk, expected_sk);
    assert_eq!(ad, expected_ad);
    assert_eq!(hex::encode(sk), PINNED_SK_WITHOUT_ONE_TIME_PRE_KEY);
}

#[test]
fn known_answer_with_custom_info_and_appendix() {
    let f = fixture();
    let config = X3dhConfig::default()
        .with_info("example.org wallet")
        .with_associated_data_appendix(b"cert".to_vec());
    let (sk, ad) = run(&f, true, &config);
    let (expected_sk, expected_ad) = expected(&f, true, b"example.org wallet");
    assert_eq!(sk, expected_sk);
    assert_eq!(ad, [expected_ad.as_slice(), b"cert"].concat());
}

#[test]
fn birational_map_matches_for_identity_keys() {
    // The X25519 public key of `to_scalar_bytes()` is `to_montgomery()` of
    // the verifying key, for fixed and random seeds.
    let mut seeds = vec![
        fixture().alice_seed,
        fixture().bob_seed,
        [0xFF; 32],
        [0; 32],
    ];
    seeds.extend((0..32).map(|_| *IdentityKeyPair::generate().to_seed()));
    for seed in seeds {
        let signing_key = SigningKey::from_bytes(&seed);
        let scalar_bytes = signing_key.to_scalar_bytes();
        assert_eq!(scalar_bytes, x25519_secret_of_seed(&seed));
        let from_secret = public(scalar_bytes);
        let from_public = signing_key.verifying_key().to_montgomery().to_bytes();
        assert_eq!(from_secret, from_public);
        // And the crate's own view of the identity agrees.
        let identity = IdentityKeyPair::from_seed(seed);
        assert_eq!(identity.public_key().to_x25519().to_bytes(), from_public);
    }
    // RFC 8032 §7.1 TEST 1 and TEST 2 seeds, with X25519 public keys from
    // ed25519-dalek's own conversion test (libsodium agrees).
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d85e07ec22b0ad881537c2f44d662d1a143cf830c57aca4305d85c7a90f6b62e",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "25c704c594b88afc00a76b69d1ed2b984d7e22550f3ed0802d04fbcd07d38d47",
        ),
    ];
    for (seed, x25519_public) in cases {
        let seed: [u8; 32] = hex::decode(seed).unwrap().try_into().unwrap();
        let identity = IdentityKeyPair::from_seed(seed);
        assert_eq!(
            hex::encode(identity.public_key().to_x25519().to_bytes()),
            x25519_public
        );
        assert_eq!(
            hex::encode(public(x25519_secret_of_seed(&seed))),
            x25519_public
        );
    }
}
