//! Full handshakes and every way the handshake must refuse its input.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::wire::{self, DecodeError};
use confidant_core::{KeyAgreement, SuiteId};
use confidant_x3dh::{
    DhStep, EphemeralKey, IdentityKeyPair, IdentityPublicKey, InitialMessageHeader, OneTimePreKey,
    PreKeyBundle, ResponderKeys, SignedPreKey, X3dh, X3dhConfig, X3dhError, X25519PublicKey,
};

const SUITE: SuiteId = SuiteId::AES_256_GCM_SHA256_COUNTER;

/// X25519 u-coordinates of low order (RFC 7748 §7 and the libsodium
/// blocklist): 0, 1, two points of order 8, and p - 1 (order 2).
const LOW_ORDER_X25519: [&str; 5] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

fn low_order_x25519() -> Vec<[u8; 32]> {
    LOW_ORDER_X25519
        .iter()
        .map(|h| hex::decode(h).unwrap().try_into().unwrap())
        .collect()
}

fn issuer() -> ResponderKeys {
    let identity = IdentityKeyPair::generate();
    let signed_pre_key = SignedPreKey::generate(&identity, 1);
    let mut keys = ResponderKeys::new(identity, signed_pre_key).unwrap();
    keys.add_one_time_pre_key(OneTimePreKey::generate(10))
        .unwrap();
    keys.add_one_time_pre_key(OneTimePreKey::generate(11))
        .unwrap();
    keys
}

fn handshake(with_one_time_pre_key: bool) {
    let config = X3dhConfig::default();
    let issuer = issuer();
    let bundle = if with_one_time_pre_key {
        issuer.bundle_with_one_time_pre_key(10, &[SUITE]).unwrap()
    } else {
        issuer.bundle(&[SUITE])
    };
    let holder = IdentityKeyPair::generate();
    let (holder_secret, header) = bundle
        .verify(issuer.identity_public_key())
        .unwrap()
        .agree(&config, &holder, SUITE)
        .unwrap();
    let issuer_secret = issuer.respond(&config, &header).unwrap();

    assert_eq!(holder_secret.secret(), issuer_secret.secret());
    assert_ne!(holder_secret.secret(), &[0u8; 32]);
    assert_eq!(
        holder_secret.associated_data(),
        issuer_secret.associated_data()
    );
    let mut expected_ad = holder.public_key().to_bytes().to_vec();
    expected_ad.extend_from_slice(issuer.identity_public_key().as_bytes());
    assert_eq!(issuer_secret.associated_data(), expected_ad.as_slice());

    let expected_id = with_one_time_pre_key.then_some(10);
    assert_eq!(header.one_time_pre_key_id(), expected_id);
    assert_eq!(holder_secret.one_time_pre_key_id(), expected_id);
    assert_eq!(issuer_secret.one_time_pre_key_id(), expected_id);
    assert_eq!(header.signed_pre_key_id(), 1);
    assert_eq!(header.suite(), SUITE);
    assert_eq!(header.identity_key(), &holder.public_key());
    // `respond` reports the one-time pre-key and leaves it in place.
    assert!(issuer.has_one_time_pre_key(10));
}

#[test]
fn full_handshake_with_one_time_pre_key() {
    handshake(true);
}

#[test]
fn full_handshake_without_one_time_pre_key() {
    handshake(false);
}

#[test]
fn one_time_pre_key_changes_the_secret() {
    let config = X3dhConfig::default();
    let issuer = issuer();
    let holder = IdentityKeyPair::generate();
    let agree = |bundle: PreKeyBundle| {
        bundle
            .verify(issuer.identity_public_key())
            .unwrap()
            .agree_with_ephemeral(&config, &holder, EphemeralKey::from_bytes([5; 32]), SUITE)
            .unwrap()
            .0
    };
    let without = agree(issuer.bundle(&[SUITE]));
    let with = agree(issuer.bundle_with_one_time_pre_key(10, &[SUITE]).unwrap());
    let with_other = agree(issuer.bundle_with_one_time_pre_key(11, &[SUITE]).unwrap());
    assert_ne!(without.secret(), with.secret());
    assert_ne!(with.secret(), with_other.secret());
}

#[test]
fn different_ephemeral_keys_give_different_secrets() {
    let config = X3dhConfig::default();
    let issuer = issuer();
    let holder = IdentityKeyPair::generate();
    let verified = issuer
        .bundle(&[SUITE])
        .verify(issuer.identity_public_key())
        .unwrap();
    let (first, first_header) = verified
        .clone()
        .agree_with_ephemeral(&config, &holder, EphemeralKey::from_bytes([1; 32]), SUITE)
        .unwrap();
    let (second, second_header) = verified
        .clone()
        .agree_with_ephemeral(&config, &holder, EphemeralKey::from_bytes([2; 32]), SUITE)
        .unwrap();
    let (again, _) = verified
        .clone()
        .agree_with_ephemeral(&config, &holder, EphemeralKey::from_bytes([1; 32]), SUITE)
        .unwrap();
    assert_ne!(first.secret(), second.secret());
    assert_ne!(first_header.ephemeral_key(), second_header.ephemeral_key());
    assert_eq!(first.secret(), again.secret());
    // The OS-generated ephemeral differs from run to run as well.
    let (random_one, _) = verified.clone().agree(&config, &holder, SUITE).unwrap();
    let (random_two, _) = verified.agree(&config, &holder, SUITE).unwrap();
    assert_ne!(random_one.secret(), random_two.secret());
    // And both sides agree on each of them.
    assert_eq!(
        issuer.respond(&config, &second_header).unwrap().secret(),
        second.secret()
    );
}

#[test]
fn info_and_appendix_are_bound() {
    let issuer = issuer();
    let holder = IdentityKeyPair::generate();
    let run = |config: &X3dhConfig| {
        issuer
            .bundle(&[SUITE])
            .verify(issuer.identity_public_key())
            .unwrap()
            .agree_with_ephemeral(config, &holder, EphemeralKey::from_bytes([9; 32]), SUITE)
            .unwrap()
    };
    let default = X3dhConfig::default();
    assert_eq!(default.info(), b"Confidant X3DH v1");
    let other_info = X3dhConfig::default().with_info("another application");
    let appendix = X3dhConfig::default().with_associated_data_appendix(b"issuer.example".to_vec());
    let (base, header) = run(&default);
    let (with_other_info, _) = run(&other_info);
    let (with_appendix, _) = run(&appendix);
    assert_ne!(base.secret(), with_other_info.secret());
    assert_eq!(base.associated_data(), with_other_info.associated_data());
    assert_eq!(base.secret(), with_appendix.secret());
    assert_eq!(
        with_appendix.associated_data(),
        [base.associated_data(), b"issuer.example"].concat()
    );
    // A responder configured differently derives a different secret.
    assert_ne!(
        issuer.respond(&other_info, &header).unwrap().secret(),
        base.secret()
    );
}

#[test]
fn a_one_time_pre_key_can_be_used_only_once() {
    let config = X3dhConfig::default();
    let mut issuer = issuer();
    let bundle = issuer.bundle_with_one_time_pre_key(10, &[SUITE]).unwrap();
    let holder = IdentityKeyPair::generate();
    let (holder_secret, header) = bundle
        .clone()
        .verify(issuer.identity_public_key())
        .unwrap()
        .agree(&config, &holder, SUITE)
        .unwrap();

    // `respond` may be repeated (nothing was stored yet)...
    let first = issuer.respond(&config, &header).unwrap();
    assert_eq!(first.secret(), holder_secret.secret());
    assert!(issuer.has_one_time_pre_key(10));
    // ...until the key is consumed, with the session's creation.
    let consumed = issuer.respond_and_consume(&config, &header).unwrap();
    assert_eq!(consumed.secret(), holder_secret.secret());
    assert!(!issuer.has_one_time_pre_key(10));
    assert_eq!(issuer.one_time_pre_key_ids().collect::<Vec<_>>(), vec![11]);

    // A replay of the initial message now fails.
    assert_eq!(
        issuer.respond(&config, &header).unwrap_err(),
        X3dhError::UnknownOneTimePreKey { id: 10 }
    );
    assert_eq!(
        issuer.respond_and_consume(&config, &header).unwrap_err(),
        X3dhError::UnknownOneTimePreKey { id: 10 }
    );
    // So does a second initiator that got the same bundle.
    let (_, second_header) = bundle
        .verify(issuer.identity_public_key())
        .unwrap()
        .agree(&config, &IdentityKeyPair::generate(), SUITE)
        .unwrap();
    let error = issuer.respond(&config, &second_header).unwrap_err();
    assert_eq!(error, X3dhError::UnknownOneTimePreKey { id: 10 });
    assert!(error.to_string().contains("one-time pre-key 10"));
    // The bundle can no longer be made either.
    assert_eq!(
        issuer
            .bundle_with_one_time_pre_key(10, &[SUITE])
            .unwrap_err(),
        X3dhError::UnknownOneTimePreKey { id: 10 }
    );
}

#[test]
fn explicit_consumption_matches_the_reported_id() {
    let config = X3dhConfig::default();
    let mut issuer = issuer();
    let (_, header) = issuer
        .bundle_with_one_time_pre_key(11, &[SUITE])
        .unwrap()
        .verify(issuer.identity_public_key())
        .unwrap()
        .agree(&config, &IdentityKeyPair::generate(), SUITE)
        .unwrap();
    let agreed = issuer.respond(&config, &header).unwrap();
    let id = agreed.one_time_pre_key_id().unwrap();
    let removed = issuer.consume_one_time_pre_key(id).unwrap();
    assert_eq!(removed.id(), 11);
    assert!(issuer.consume_one_time_pre_key(id).is_none());
    assert_eq!(
        issuer.respond(&config, &header).unwrap_err(),
        X3dhError::UnknownOneTimePreKey { id: 11 }
    );
}

#[test]
fn a_failed_respond_does_not_consume() {
    let config = X3dhConfig::default();
    let mut issuer = issuer();
    let (_, header) = issuer
        .bundle_with_one_time_pre_key(10, &[SUITE])
        .unwrap()
        .verify(issuer.identity_public_key())
        .unwrap()
        .agree(&config, &IdentityKeyPair::generate(), SUITE)
        .unwrap();
    let forged = InitialMessageHeader::new(
        *header.identity_key(),
        X25519PublicKey::from_bytes([0; 32]),
        header.signed_pre_key_id(),
        header.one_time_pre_key_id(),
        header.suite(),
    );
    assert!(matches!(
        issuer.respond_and_consume(&config, &forged),
        Err(X3dhError::NonContributoryDh { .. })
    ));
    assert!(issuer.has_one_time_pre_key(10));
}

#[test]
fn swapped_bundle_is_refused_as_identity_mismatch() {
    let config = X3dhConfig::default();
    let issuer = issuer();
    let impostor = self::issuer();
    let holder = IdentityKeyPair::generate();
    // The impostor's bundle is perfectly valid, just not the invited issuer's.
    let swapped = impostor.bundle(&[SUITE]);
    assert_eq!(
        swapped
            .clone()
            .verify(issuer.identity_public_key())
            .unwrap_err(),
        X3dhError::IdentityMismatch
    );
    // Through the plugin, with wire types.
    let x3dh = X3dh::new(config);
    let expected = issuer.identity_public_key().to_bytes();
    assert_eq!(
        x3dh.initiate(&holder, &expected, &swapped.to_wire(), SUITE, b"")
            .unwrap_err(),
        X3dhError::IdentityMismatch
    );
    // The identity check comes before anything else: a bundle that is both
    // swapped and broken in every other field still reports the swap.
    let broken = wire::PreKeyBundle {
        identity_key: vec![1, 2, 3],
        signed_pre_key: vec![],
        signed_pre_key_signature: vec![0; 3],
        ..Default::default()
    };
    assert_eq!(
        x3dh.initiate(&holder, &expected, &broken, SUITE, b"")
            .unwrap_err(),
        X3dhError::IdentityMismatch
    );
    let mut low_order_swap = swapped.to_wire();
    low_order_swap.signed_pre_key = vec![0; 32];
    assert_eq!(
        x3dh.initiate(&holder, &expected, &low_order_swap, SUITE, b"")
            .unwrap_err(),
        X3dhError::IdentityMismatch
    );
}

#[test]
fn forged_signatures_are_refused() {
    let issuer_identity = IdentityKeyPair::from_seed([7; 32]);
    let other = IdentityKeyPair::from_seed([8; 32]);
    let issuer = ResponderKeys::new(
        IdentityKeyPair::from_seed([7; 32]),
        SignedPreKey::new(&issuer_identity, 1, [3; 32]),
    )
    .unwrap();
    let expected = issuer.identity_public_key();
    let good = issuer.bundle(&[SUITE]);
    assert!(good.clone().verify(expected).is_ok());

    // Signed by another identity key.
    let foreign = SignedPreKey::new(&other, 1, [3; 32]);
    let forged = PreKeyBundle::new(
        *expected,
        1,
        foreign.public_key(),
        foreign.signature(),
        None,
        vec![SUITE],
    );
    assert_eq!(
        forged.verify(expected).unwrap_err(),
        X3dhError::BadSignature
    );

    // A signature over a different signed pre-key.
    let substituted = PreKeyBundle::new(
        *expected,
        1,
        SignedPreKey::new(&issuer_identity, 1, [4; 32]).public_key(),
        good.signed_pre_key_signature().to_owned(),
        None,
        vec![SUITE],
    );
    assert_eq!(
        substituted.verify(expected).unwrap_err(),
        X3dhError::BadSignature
    );

    // Any single flipped bit, in the signature or in the signed pre-key.
    let wire_bundle = good.to_wire();
    for bit in 0..64 * 8 {
        let mut tampered = wire_bundle.clone();
        tampered.signed_pre_key_signature[bit / 8] ^= 1 << (bit % 8);
        let result = PreKeyBundle::from_wire(&tampered).and_then(|b| b.verify(expected));
        assert_eq!(result.unwrap_err(), X3dhError::BadSignature, "bit {bit}");
    }
    for bit in 0..32 * 8 {
        let mut tampered = wire_bundle.clone();
        tampered.signed_pre_key[bit / 8] ^= 1 << (bit % 8);
        let result = PreKeyBundle::from_wire(&tampered).and_then(|b| b.verify(expected));
        assert_eq!(result.unwrap_err(), X3dhError::BadSignature, "bit {bit}");
    }

    // Through the plugin.
    let x3dh = X3dh::default();
    let mut tampered = wire_bundle.clone();
    tampered.signed_pre_key_signature[10] ^= 0x40;
    assert_eq!(
        x3dh.initiate(
            &IdentityKeyPair::generate(),
            expected.as_bytes(),
            &tampered,
            SUITE,
            b""
        )
        .unwrap_err(),
        X3dhError::BadSignature
    );

    // A responder store refuses a signed pre-key that is not its own.
    assert_eq!(
        ResponderKeys::new(IdentityKeyPair::from_seed([7; 32]), foreign).unwrap_err(),
        X3dhError::ForeignSignedPreKey { id: 1 }
    );
    let restored = SignedPreKey::from_parts(2, [5; 32], [0xAA; 64]);
    let mut store = ResponderKeys::new(
        IdentityKeyPair::from_seed([7; 32]),
        SignedPreKey::new(&issuer_identity, 1, [3; 32]),
    )
    .unwrap();
    assert_eq!(
        store.add_signed_pre_key(restored).unwrap_err(),
        X3dhError::ForeignSignedPreKey { id: 2 }
    );
}

#[test]
fn malleated_signature_is_refused() {
    // S + L verifies under a lax verifier but not under `verify_strict`.
    let identity = IdentityKeyPair::from_seed([7; 32]);
    let signed_pre_key = SignedPreKey::new(&identity, 1, [3; 32]);
    let mut signature = signed_pre_key.signature();
    // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
    let order: [u8; 32] =
        hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
            .unwrap()
            .try_into()
            .unwrap();
    let mut carry = 0u16;
    for (s, l) in signature[32..].iter_mut().zip(order) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    let bundle = PreKeyBundle::new(
        identity.public_key(),
        1,
        signed_pre_key.public_key(),
        signature,
        None,
        vec![SUITE],
    );
    assert_eq!(
        bundle.verify(&identity.public_key()).unwrap_err(),
        X3dhError::BadSignature
    );
}

#[test]
fn low_order_pre_keys_are_refused_without_panic() {
    let config = X3dhConfig::default();
    let issuer = issuer();
    let holder = IdentityKeyPair::generate();
    let good = issuer.bundle_with_one_time_pre_key(10, &[SUITE]).unwrap();
    for point in low_order_x25519() {
        let point = X25519PublicKey::from_bytes(point);
        // Low-order signed pre-key, even correctly signed by the issuer:
        // the first DH that uses it fails.
        let spk_bundle = PreKeyBundle::new(
            *issuer.identity_public_key(),
            1,
            point,
            signed_by(issuer.identity(), &point),
            None,
            vec![SUITE],
        )
        .sign_offer(issuer.identity(), b"")
        .unwrap();
        assert_eq!(
            spk_bundle
                .verify(issuer.identity_public_key())
                .unwrap()
                .agree(&config, &holder, SUITE)
                .unwrap_err(),
            X3dhError::NonContributoryDh { step: DhStep::Dh1 }
        );
        // Low-order one-time pre-key.
        let opk_bundle = PreKeyBundle::new(
            *good.identity_key(),
            good.signed_pre_key_id(),
            *good.signed_pre_key(),
            *good.signed_pre_key_signature(),
            Some(confidant_x3dh::PublicOneTimePreKey {
                id: 10,
                public_key: point,
            }),
            vec![SUITE],
        )
        .sign_offer(issuer.identity(), b"")
        .unwrap();
        assert_eq!(
            opk_bundle
                .verify(issuer.identity_public_key())
                .unwrap()
                .agree(&config, &holder, SUITE)
                .unwrap_err(),
            X3dhError::NonContributoryDh { step: DhStep::Dh4 }
        );
        // Low-order ephemeral key in an initial message.
        for one_time_pre_key_id in [None, Some(10)] {
            let header = InitialMessageHeader::new(
                holder.public_key(),
                point,
                1,
                one_time_pre_key_id,
                SUITE,
            );
            assert_eq!(
                issuer.respond(&config, &header).unwrap_err(),
                X3dhError::NonContributoryDh { step: DhStep::Dh2 }
            );
        }
    }
}

/// A valid signature by `identity` over the 32 bytes of `point`, so that a
/// low-order signed pre-key gets past the signature check and the test shows
/// the DH check stopping it.
fn signed_by(identity: &IdentityKeyPair, point: &X25519PublicKey) -> [u8; 64] {
    identity.sign(point.as_bytes())
}

#[test]
fn identity_signatures_verify_strictly() {
    let identity = IdentityKeyPair::generate();
    let message = b"Confidant v1 reset: example transcript";
    let signature = identity.sign(message);
    let public = IdentityPublicKey::from_slice(identity.public_key().as_bytes()).unwrap();
    assert!(public.verify_strict(message, &signature).is_ok());
    assert_eq!(
        public.verify_strict(b"another transcript", &signature),
        Err(X3dhError::BadSignature)
    );
    assert_eq!(
        IdentityKeyPair::generate()
            .public_key()
            .verify_strict(message, &signature),
        Err(X3dhError::BadSignature)
    );
    assert_eq!(
        IdentityPublicKey::from_slice(&[1; 31]).unwrap_err(),
        X3dhError::Decode(DecodeError::FieldLength {
            field: "identity_key",
            expected: 32,
            actual: 31
        })
    );
}

#[test]
fn low_order_identity_keys_are_refused() {
    let identity_point = hex32("0100000000000000000000000000000000000000000000000000000000000000");
    let order_two = hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    let order_four = hex32("0000000000000000000000000000000000000000000000000000000000000000");
    let order_four_negative =
        hex32("0000000000000000000000000000000000000000000000000000000000000080");
    for weak in [identity_point, order_two, order_four, order_four_negative] {
        assert!(ed25519_dalek::VerifyingKey::from_bytes(&weak).is_ok());
        assert_eq!(
            IdentityPublicKey::from_bytes(&weak).unwrap_err(),
            X3dhError::WeakIdentityKey
        );
    }
    // y = 2 is not on the curve.
    let not_on_curve = hex32("0200000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(
        IdentityPublicKey::from_bytes(&not_on_curve).unwrap_err(),
        X3dhError::InvalidIdentityKey
    );
    // y = p + 3 is a second spelling of the point with y = 3.
    let non_canonical = hex32("f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    assert!(ed25519_dalek::VerifyingKey::from_bytes(&non_canonical).is_ok());
    assert_eq!(
        IdentityPublicKey::from_bytes(&non_canonical).unwrap_err(),
        X3dhError::InvalidIdentityKey
    );

    // On the wire: in a bundle and in an initial message.
    let issuer = issuer();
    for bad in [identity_point, order_two, not_on_curve] {
        let mut bundle = issuer.bundle(&[SUITE]).to_wire();
        bundle.identity_key = bad.to_vec();
        assert!(matches!(
            PreKeyBundle::from_wire(&bundle),
            Err(X3dhError::WeakIdentityKey | X3dhError::InvalidIdentityKey)
        ));
        // The initiator expecting that very key still refuses it.
        assert!(matches!(
            X3dh::default().initiate(&IdentityKeyPair::generate(), &bad, &bundle, SUITE, b""),
            Err(X3dhError::WeakIdentityKey | X3dhError::InvalidIdentityKey)
        ));
        let initial = wire::InitialMessage {
            identity_key: bad.to_vec(),
            ephemeral_key: vec![9; 32],
            signed_pre_key_id: 1,
            ..Default::default()
        };
        assert!(matches!(
            X3dh::default().respond(&issuer, &initial),
            Err(X3dhError::WeakIdentityKey | X3dhError::InvalidIdentityKey)
        ));
    }
}

fn hex32(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

#[test]
fn truncated_and_oversized_fields_are_decode_errors() {
    let issuer = issuer();
    let bundle = issuer
        .bundle_with_one_time_pre_key(10, &[SUITE])
        .unwrap()
        .to_wire();
    type Field = fn(&mut wire::PreKeyBundle) -> &mut Vec<u8>;
    let cases: [(&str, Field, usize); 4] = [
        ("bundle.identity_key", |b| &mut b.identity_key, 32),
        ("bundle.signed_pre_key", |b| &mut b.signed_pre_key, 32),
        (
            "bundle.signed_pre_key_signature",
            |b| &mut b.signed_pre_key_signature,
            64,
        ),
        (
            "bundle.one_time_pre_key.public_key",
            |b| &mut b.one_time_pre_key.as_mut().unwrap().public_key,
            32,
        ),
    ];
    for (field, select, expected) in cases {
        for actual in [0, 1, expected - 1, expected + 1, 2 * expected] {
            let mut broken = bundle.clone();
            select(&mut broken).resize(actual, 0x55);
            assert_eq!(
                PreKeyBundle::from_wire(&broken).unwrap_err(),
                X3dhError::Decode(DecodeError::FieldLength {
                    field,
                    expected,
                    actual
                }),
                "{field} at {actual} bytes"
            );
        }
    }

    let header = InitialMessageHeader::new(
        IdentityKeyPair::generate().public_key(),
        X25519PublicKey::from_bytes([9; 32]),
        1,
        Some(10),
        SUITE,
    )
    .to_wire(None);
    for actual in [0, 31, 33] {
        let mut broken = header.clone();
        broken.identity_key.resize(actual, 1);
        assert_eq!(
            InitialMessageHeader::from_wire(&broken).unwrap_err(),
            X3dhError::Decode(DecodeError::FieldLength {
                field: "initial.identity_key",
                expected: 32,
                actual
            })
        );
        let mut broken = header.clone();
        broken.ephemeral_key.resize(actual, 1);
        assert_eq!(
            InitialMessageHeader::from_wire(&broken).unwrap_err(),
            X3dhError::Decode(DecodeError::FieldLength {
                field: "initial.ephemeral_key",
                expected: 32,
                actual
            })
        );
    }

    // Whole messages: truncated encodings, garbage and oversized inputs.
    // A cut inside a field is an error; a cut between fields may leave a
    // shorter valid bundle (without its optional one-time pre-key, its
    // suites or its offer signature), never the original one.
    let original = PreKeyBundle::from_wire(&bundle).unwrap();
    let bytes = original.to_bytes();
    let mut errors = 0;
    for cut in 0..bytes.len() {
        match PreKeyBundle::from_bytes(&bytes[..cut]) {
            Err(_) => errors += 1,
            Ok(shorter) => assert!(
                shorter.one_time_pre_key().is_none()
                    || shorter.suites().is_empty()
                    || shorter.offer_signature().is_none(),
                "cut {cut}"
            ),
        }
    }
    assert!(errors >= bytes.len() - 3, "{errors} of {}", bytes.len());
    assert!(matches!(
        PreKeyBundle::from_bytes(&[0xFF; 8]),
        Err(X3dhError::Decode(DecodeError::Malformed(_)))
    ));
    let huge = vec![0u8; confidant_x3dh::MAX_BUNDLE_LEN + 1];
    assert_eq!(
        PreKeyBundle::from_bytes(&huge).unwrap_err(),
        X3dhError::Decode(DecodeError::TooLarge {
            len: huge.len(),
            max: confidant_x3dh::MAX_BUNDLE_LEN
        })
    );
    let initial_bytes = InitialMessageHeader::from_wire(&header)
        .unwrap()
        .to_bytes(None);
    let original = InitialMessageHeader::from_wire(&header).unwrap();
    for cut in 0..initial_bytes.len() {
        if let Ok(shorter) = InitialMessageHeader::from_bytes(&initial_bytes[..cut]) {
            assert_ne!(shorter, original, "cut {cut}");
        }
    }
    let huge = vec![0u8; confidant_x3dh::MAX_INITIAL_MESSAGE_LEN + 1];
    assert!(matches!(
        InitialMessageHeader::from_bytes(&huge),
        Err(X3dhError::Decode(DecodeError::TooLarge { .. }))
    ));
}

#[test]
fn wire_round_trips() {
    let issuer = issuer();
    for bundle in [
        issuer.bundle(&[SUITE, SuiteId::CHACHA20_POLY1305_COUNTER]),
        issuer.bundle_with_one_time_pre_key(11, &[SUITE]).unwrap(),
    ] {
        assert_eq!(PreKeyBundle::from_wire(&bundle.to_wire()).unwrap(), bundle);
        assert_eq!(
            PreKeyBundle::from_bytes(&bundle.to_bytes()).unwrap(),
            bundle
        );
        let wire_bundle = wire::PreKeyBundle::from(&bundle);
        assert_eq!(PreKeyBundle::try_from(&wire_bundle).unwrap(), bundle);
    }
    let header = InitialMessageHeader::new(
        IdentityKeyPair::generate().public_key(),
        X25519PublicKey::from_bytes([9; 32]),
        3,
        None,
        SuiteId(0x8000_0001),
    );
    let first_message = wire::EncryptedMessage {
        content: vec![1, 2, 3],
        connection_id: "c1".into(),
        counter: 0,
        suite: 0x8000_0001,
        epoch: 0,
    };
    let initial = header.to_wire(Some(first_message.clone()));
    assert_eq!(initial.first_message, Some(first_message.clone()));
    assert_eq!(InitialMessageHeader::from_wire(&initial).unwrap(), header);
    assert_eq!(
        InitialMessageHeader::from_bytes(&header.to_bytes(Some(first_message))).unwrap(),
        header
    );
    assert_eq!(InitialMessageHeader::try_from(&initial).unwrap(), header);
    // An envelope carries them unchanged.
    let bytes = wire::encode_envelope(wire::envelope::Body::Initial(initial.clone()));
    assert_eq!(
        wire::decode_envelope(&bytes, 1 << 20).unwrap(),
        wire::envelope::Body::Initial(initial)
    );
}

#[test]
fn key_agreement_trait_end_to_end() {
    let x3dh = X3dh::default();
    assert_eq!(x3dh.name(), "X3DH-25519-SHA-256");
    let mut issuer = issuer();
    let holder = IdentityKeyPair::generate();
    let invitation = issuer.identity_public_key().to_bytes();

    let bundle = x3dh.bundle(&issuer, &[SUITE], b"").unwrap();
    // The lowest-numbered one-time pre-key is offered.
    assert_eq!(bundle.one_time_pre_key.as_ref().unwrap().id, 10);
    let (holder_secret, initial) = x3dh
        .initiate(&holder, &invitation, &bundle, SUITE, b"")
        .unwrap();
    assert_eq!(initial.first_message, None);
    assert_eq!(initial.one_time_pre_key_id, Some(10));
    let issuer_secret = x3dh.respond(&issuer, &initial).unwrap();
    assert_eq!(holder_secret.secret(), issuer_secret.secret());
    assert_eq!(
        holder_secret.associated_data(),
        issuer_secret.associated_data()
    );
    assert_eq!(issuer_secret.one_time_pre_key_id(), Some(10));

    // The storage layer deletes it; the next bundle offers the next key.
    issuer.consume_one_time_pre_key(10);
    assert!(x3dh.respond(&issuer, &initial).is_err());
    let bundle = x3dh.bundle(&issuer, &[SUITE], b"").unwrap();
    assert_eq!(bundle.one_time_pre_key.as_ref().unwrap().id, 11);
    issuer.consume_one_time_pre_key(11);
    // With none left, the bundle has no one-time pre-key and still works.
    let bundle = x3dh.bundle(&issuer, &[SUITE], b"").unwrap();
    assert!(bundle.one_time_pre_key.is_none());
    let (holder_secret, initial) = x3dh
        .initiate(&holder, &invitation, &bundle, SUITE, b"")
        .unwrap();
    assert_eq!(initial.one_time_pre_key_id, None);
    assert_eq!(
        x3dh.respond(&issuer, &initial).unwrap().secret(),
        holder_secret.secret()
    );

    // A suite the bundle does not offer is refused.
    assert_eq!(
        x3dh.initiate(&holder, &invitation, &bundle, SuiteId(99), b"")
            .unwrap_err(),
        X3dhError::SuiteNotOffered { suite: SuiteId(99) }
    );

    // An empty suite list stands for the default suite only.
    let unlisted = issuer.bundle(&[]);
    assert!(unlisted.offers(SuiteId::AES_256_GCM_SHA256_COUNTER));
    assert!(!unlisted.offers(SuiteId::CHACHA20_POLY1305_COUNTER));
    let unlisted = unlisted.to_wire();
    assert!(
        x3dh.initiate(
            &holder,
            &invitation,
            &unlisted,
            SuiteId::AES_256_GCM_SHA256_COUNTER,
            b""
        )
        .is_ok()
    );
    assert_eq!(
        x3dh.initiate(
            &holder,
            &invitation,
            &unlisted,
            SuiteId::CHACHA20_POLY1305_COUNTER,
            b""
        )
        .unwrap_err(),
        X3dhError::SuiteNotOffered {
            suite: SuiteId::CHACHA20_POLY1305_COUNTER
        }
    );

    // Known-answer path through the plugin: same ephemeral, same secret.
    let (first, _) = x3dh
        .initiate_with_ephemeral(
            &holder,
            &invitation,
            &bundle,
            EphemeralKey::from_bytes([3; 32]),
            SUITE,
            b"",
        )
        .unwrap();
    let (second, _) = x3dh
        .initiate_with_ephemeral(
            &holder,
            &invitation,
            &bundle,
            EphemeralKey::from_bytes([3; 32]),
            SUITE,
            b"",
        )
        .unwrap();
    assert_eq!(first.secret(), second.secret());
}

#[test]
fn unknown_signed_pre_key_and_rotation() {
    let config = X3dhConfig::default();
    let identity = IdentityKeyPair::generate();
    let first = SignedPreKey::generate(&identity, 1);
    let second = SignedPreKey::generate(&identity, 2);
    let duplicate = SignedPreKey::generate(&identity, 2);
    let mut issuer = ResponderKeys::new(identity, first).unwrap();
    let holder = IdentityKeyPair::generate();

    let (old_secret, old_header) = issuer
        .bundle(&[SUITE])
        .verify(issuer.identity_public_key())
        .unwrap()
        .agree(&config, &holder, SUITE)
        .unwrap();
    issuer.add_signed_pre_key(second).unwrap();
    assert_eq!(
        issuer.add_signed_pre_key(duplicate).unwrap_err(),
        X3dhError::DuplicatePreKeyId {
            kind: "signed",
            id: 2
        }
    );
    assert_eq!(issuer.current_signed_pre_key().id(), 2);
    assert_eq!(issuer.bundle(&[SUITE]).signed_pre_key_id(), 2);
    assert_eq!(issuer.signed_pre_key_ids(), vec![1, 2]);
    // An initial message in flight for the old key still succeeds...
    assert_eq!(
        issuer.respond(&config, &old_header).unwrap().secret(),
        old_secret.secret()
    );
    // ...until it is removed.
    assert_eq!(
        issuer.remove_signed_pre_key(2).unwrap_err(),
        X3dhError::CurrentSignedPreKey { id: 2 }
    );
    // A store restoring its keys may pick the current one explicitly.
    issuer.set_current_signed_pre_key(1).unwrap();
    assert_eq!(issuer.bundle(&[SUITE]).signed_pre_key_id(), 1);
    assert_eq!(
        issuer.set_current_signed_pre_key(3).unwrap_err(),
        X3dhError::UnknownSignedPreKey { id: 3 }
    );
    issuer.set_current_signed_pre_key(2).unwrap();
    assert_eq!(issuer.signed_pre_key_ids(), vec![1, 2]);
    assert_eq!(issuer.remove_signed_pre_key(1).unwrap().unwrap().id(), 1);
    assert!(issuer.remove_signed_pre_key(1).unwrap().is_none());
    assert_eq!(
        issuer.respond(&config, &old_header).unwrap_err(),
        X3dhError::UnknownSignedPreKey { id: 1 }
    );
    let made_up = InitialMessageHeader::new(
        holder.public_key(),
        X25519PublicKey::from_bytes([9; 32]),
        77,
        None,
        SUITE,
    );
    assert_eq!(
        issuer.respond(&config, &made_up).unwrap_err(),
        X3dhError::UnknownSignedPreKey { id: 77 }
    );
    // Unknown one-time pre-key id in an otherwise valid message.
    let made_up = InitialMessageHeader::new(
        holder.public_key(),
        X25519PublicKey::from_bytes([9; 32]),
        2,
        Some(5),
        SUITE,
    );
    assert_eq!(
        issuer.respond(&config, &made_up).unwrap_err(),
        X3dhError::UnknownOneTimePreKey { id: 5 }
    );
    // Duplicate one-time pre-key ids are refused.
    issuer
        .add_one_time_pre_key(OneTimePreKey::generate(5))
        .unwrap();
    assert_eq!(
        issuer
            .add_one_time_pre_key(OneTimePreKey::generate(5))
            .unwrap_err(),
        X3dhError::DuplicatePreKeyId {
            kind: "one-time",
            id: 5
        }
    );
}

#[test]
fn keys_rebuild_from_their_secret_bytes() {
    let identity = IdentityKeyPair::generate();
    let restored = IdentityKeyPair::from_seed(*identity.to_seed());
    assert_eq!(identity.public_key(), restored.public_key());

    let signed_pre_key = SignedPreKey::generate(&identity, 4);
    let again = SignedPreKey::new(&restored, 4, *signed_pre_key.to_secret_bytes());
    assert_eq!(again.public_key(), signed_pre_key.public_key());
    // Ed25519 is deterministic: re-signing gives the stored signature.
    assert_eq!(again.signature(), signed_pre_key.signature());
    let from_parts = SignedPreKey::from_parts(
        4,
        *signed_pre_key.to_secret_bytes(),
        signed_pre_key.signature(),
    );
    assert_eq!(from_parts.public_key(), signed_pre_key.public_key());
    assert!(ResponderKeys::new(restored, from_parts).is_ok());

    let one_time = OneTimePreKey::generate(9);
    let again = OneTimePreKey::new(9, *one_time.to_secret_bytes());
    let mut store = ResponderKeys::new(
        IdentityKeyPair::from_seed(*identity.to_seed()),
        SignedPreKey::new(&identity, 1, [1; 32]),
    )
    .unwrap();
    store
        .add_one_time_pre_key(OneTimePreKey::new(9, *one_time.to_secret_bytes()))
        .unwrap();
    assert_eq!(
        store.one_time_pre_key(9).unwrap().public_key(),
        one_time.public_key()
    );
    assert!(store.one_time_pre_key(8).is_none());
    assert_eq!(again.public_key(), one_time.public_key());
    assert_eq!(again.id(), 9);

    let ephemeral = EphemeralKey::generate().unwrap();
    let other = EphemeralKey::generate().unwrap();
    assert_ne!(ephemeral.public_key(), other.public_key());
}
