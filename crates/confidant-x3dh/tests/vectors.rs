//! Published vectors for every primitive X3DH is built from, as this crate
//! uses them: X25519 (RFC 7748, Wycheproof), Ed25519 (RFC 8032, Wycheproof)
//! and HKDF-SHA-256 (RFC 5869, Wycheproof).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::SuiteId;
use confidant_x3dh::{
    DhStep, IdentityKeyPair, IdentityPublicKey, InitialMessageHeader, ResponderKeys, SignedPreKey,
    X3dhConfig, X3dhError, X25519PublicKey,
};
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use sha2::{Digest, Sha256, Sha512};
use wycheproof::TestResult;
use x25519_dalek::{PublicKey, StaticSecret, X25519_BASEPOINT_BYTES, x25519};

fn bytes(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

fn array<const N: usize>(text: &str) -> [u8; N] {
    bytes(text).try_into().unwrap()
}

// ---------------------------------------------------------------- RFC 7748

#[test]
fn rfc7748_section_5_2_scalar_multiplication() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (scalar, u, expected) in cases {
        assert_eq!(x25519(array(scalar), array(u)), array::<32>(expected));
        // The same through the StaticSecret path this crate uses.
        let shared = StaticSecret::from(array::<32>(scalar))
            .diffie_hellman(&PublicKey::from(array::<32>(u)));
        assert_eq!(shared.to_bytes(), array::<32>(expected));
    }
}

fn iterate(k: &mut [u8; 32], u: &mut [u8; 32], times: usize) {
    for _ in 0..times {
        let result = x25519(*k, *u);
        *u = *k;
        *k = result;
    }
}

#[test]
fn rfc7748_section_5_2_iterated_1_and_1000() {
    let mut k = X25519_BASEPOINT_BYTES;
    let mut u = X25519_BASEPOINT_BYTES;
    iterate(&mut k, &mut u, 1);
    assert_eq!(
        hex::encode(k),
        "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    );
    iterate(&mut k, &mut u, 999);
    assert_eq!(
        hex::encode(k),
        "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"
    );
}

#[test]
#[ignore = "a million X25519 operations; run with --ignored"]
fn rfc7748_section_5_2_iterated_1000000() {
    let mut k = X25519_BASEPOINT_BYTES;
    let mut u = X25519_BASEPOINT_BYTES;
    iterate(&mut k, &mut u, 1_000_000);
    assert_eq!(
        hex::encode(k),
        "7c3911e0ab2586fd864497297e575e6f3bc601c0883c30df5f4dd2d24f665424"
    );
}

#[test]
fn rfc7748_section_6_1_diffie_hellman() {
    let alice_private = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    let alice_public = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    let bob_private = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    let bob_public = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    let alice = StaticSecret::from(array::<32>(alice_private));
    let bob = StaticSecret::from(array::<32>(bob_private));
    assert_eq!(
        hex::encode(PublicKey::from(&alice).as_bytes()),
        alice_public
    );
    assert_eq!(hex::encode(PublicKey::from(&bob).as_bytes()), bob_public);
    let alice_shared = alice.diffie_hellman(&PublicKey::from(array::<32>(bob_public)));
    let bob_shared = bob.diffie_hellman(&PublicKey::from(array::<32>(alice_public)));
    assert_eq!(hex::encode(alice_shared.as_bytes()), shared);
    assert_eq!(hex::encode(bob_shared.as_bytes()), shared);
    assert!(alice_shared.was_contributory());
}

// ---------------------------------------------------------------- RFC 8032

#[test]
fn rfc8032_section_7_1_ed25519() {
    let sha_abc = Sha512::digest(b"abc");
    assert_eq!(
        hex::encode(sha_abc),
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    );
    let sha_abc = hex::encode(sha_abc);
    let cases = [
        (
            "TEST 1",
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "TEST 2",
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "TEST 3",
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
        (
            "TEST SHA(abc)",
            "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
            "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
            sha_abc.as_str(),
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
        ),
    ];
    for (name, seed, public, message, signature) in cases {
        let message = bytes(message);
        let signing_key = SigningKey::from_bytes(&array(seed));
        assert_eq!(
            hex::encode(signing_key.verifying_key().as_bytes()),
            public,
            "{name}"
        );
        assert_eq!(
            hex::encode(signing_key.sign(&message).to_bytes()),
            signature,
            "{name}"
        );
        // The crate's identity types give the same key and verify the
        // signature strictly.
        let identity = IdentityKeyPair::from_seed(array(seed));
        assert_eq!(
            hex::encode(identity.public_key().as_bytes()),
            public,
            "{name}"
        );
        let verifier = IdentityPublicKey::from_bytes(&array(public)).unwrap();
        verifier
            .verify_strict(&message, &array(signature))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut wrong = message.clone();
        wrong.push(0);
        assert_eq!(
            verifier.verify_strict(&wrong, &array(signature)),
            Err(X3dhError::BadSignature),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------- RFC 5869

#[test]
fn rfc5869_hkdf_sha256_cases_1_to_3() {
    let range = |start: u8, end: u8| (start..=end).collect::<Vec<u8>>();
    let cases = [
        (
            vec![0x0b; 22],
            range(0x00, 0x0c),
            range(0xf0, 0xf9),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            range(0x00, 0x4f),
            range(0x60, 0xaf),
            range(0xb0, 0xff),
            "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
             59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
             cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        (
            vec![0x0b; 22],
            vec![],
            vec![],
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ];
    for (case, (ikm, salt, info, prk, okm)) in cases.into_iter().enumerate() {
        let (actual_prk, hkdf) = Hkdf::<Sha256>::extract(Some(&salt), &ikm);
        assert_eq!(hex::encode(actual_prk), prk, "case {}", case + 1);
        let mut actual_okm = vec![0u8; okm.len() / 2];
        hkdf.expand(&info, &mut actual_okm).unwrap();
        assert_eq!(hex::encode(&actual_okm), okm, "case {}", case + 1);
    }
    // RFC 5869 §2.2: an absent salt is HashLen zero bytes, which is the salt
    // X3DH uses; case 3 shows both give the same PRK.
    let (with_zero_salt, _) = Hkdf::<Sha256>::extract(Some(&[0u8; 32]), &[0x0b; 22]);
    let (without_salt, _) = Hkdf::<Sha256>::extract(None, &[0x0b; 22]);
    assert_eq!(with_zero_salt, without_salt);
}

// ---------------------------------------------------------------- Wycheproof

#[test]
fn wycheproof_x25519() {
    let set = wycheproof::xdh::TestSet::load(wycheproof::xdh::TestName::X25519).unwrap();
    // A responder whose identity and signed pre-key are fixed; every
    // Wycheproof public key is sent to it as an ephemeral key.
    let identity = IdentityKeyPair::from_seed([0x21; 32]);
    let signed_pre_key = SignedPreKey::new(&identity, 1, [0x22; 32]);
    let responder = ResponderKeys::new(identity, signed_pre_key).unwrap();
    let initiator = IdentityKeyPair::from_seed([0x23; 32]).public_key();
    let config = X3dhConfig::default();

    let mut count = 0;
    let mut zero_outputs = 0;
    for group in set.test_groups {
        for test in group.tests {
            count += 1;
            let private: [u8; 32] = test.private_key.as_slice().try_into().unwrap();
            let public: [u8; 32] = test.public_key.as_slice().try_into().unwrap();
            // Every X25519 vector in the set is valid or acceptable: RFC 7748
            // asks implementations to accept any 32-byte u-coordinate.
            assert_ne!(test.result, TestResult::Invalid, "tc {}", test.tc_id);
            let shared = StaticSecret::from(private).diffie_hellman(&PublicKey::from(public));
            assert_eq!(
                shared.as_bytes(),
                test.shared_secret.as_slice(),
                "tc {}",
                test.tc_id
            );
            assert_eq!(
                x25519(private, public),
                shared.to_bytes(),
                "tc {}",
                test.tc_id
            );

            let zero = test
                .flags
                .contains(&wycheproof::xdh::TestFlag::ZeroSharedSecret);
            assert_eq!(zero, !shared.was_contributory(), "tc {}", test.tc_id);
            assert_eq!(zero, shared.as_bytes() == &[0u8; 32], "tc {}", test.tc_id);

            // The crate refuses exactly the low-order keys, whatever secret
            // they meet.
            let header = InitialMessageHeader::new(
                initiator,
                X25519PublicKey::from_bytes(public),
                1,
                None,
                SuiteId::AES_256_GCM_SHA256_COUNTER,
            );
            let result = responder.respond(&config, &header);
            if zero {
                zero_outputs += 1;
                assert_eq!(
                    result.unwrap_err(),
                    X3dhError::NonContributoryDh { step: DhStep::Dh2 },
                    "tc {}",
                    test.tc_id
                );
            } else {
                assert!(result.is_ok(), "tc {}: {result:?}", test.tc_id);
            }
        }
    }
    assert!(count > 500, "only {count} vectors");
    assert!(zero_outputs > 20, "only {zero_outputs} low-order vectors");
}

#[test]
fn wycheproof_ed25519() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut valid = 0;
    let mut invalid = 0;
    for group in set.test_groups {
        let key: [u8; 32] = group.key.pk.as_slice().try_into().unwrap();
        let verifier = IdentityPublicKey::from_bytes(&key);
        for test in group.tests {
            let signature: Option<[u8; 64]> = test.sig.as_slice().try_into().ok();
            let outcome = match (&verifier, signature) {
                (Ok(verifier), Some(signature)) => verifier.verify_strict(&test.msg, &signature),
                (Err(error), _) => Err(error.clone()),
                (_, None) => Err(X3dhError::BadSignature),
            };
            match test.result {
                TestResult::Valid => {
                    valid += 1;
                    assert!(
                        outcome.is_ok(),
                        "tc {} {}: {outcome:?}",
                        test.tc_id,
                        test.comment
                    );
                }
                TestResult::Invalid => {
                    invalid += 1;
                    assert!(outcome.is_err(), "tc {} {}", test.tc_id, test.comment);
                }
                TestResult::Acceptable => {}
            }
        }
    }
    assert!(
        valid > 50 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut count = 0;
    for group in set.test_groups {
        for test in group.tests {
            count += 1;
            let hkdf = Hkdf::<Sha256>::new(Some(&test.salt), &test.ikm);
            let mut okm = vec![0u8; test.size];
            let result = hkdf.expand(&test.info, &mut okm);
            match test.result {
                TestResult::Valid => {
                    assert!(result.is_ok(), "tc {}", test.tc_id);
                    assert_eq!(okm.as_slice(), test.okm.as_slice(), "tc {}", test.tc_id);
                }
                TestResult::Invalid => assert!(result.is_err(), "tc {}", test.tc_id),
                TestResult::Acceptable => {}
            }
        }
    }
    assert!(count > 50, "only {count} vectors");
}
