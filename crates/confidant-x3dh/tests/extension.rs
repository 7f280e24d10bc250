//! The entry points for protocols that extend X3DH (the ML-KEM-768 hybrid):
//! the DH halves of both sides, the secret derived from them, and the
//! bundle check with the offer checked by the caller.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::SuiteId;
use confidant_x3dh::{
    DEFAULT_INFO, EphemeralKey, IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey,
    X3dhConfig, X3dhError,
};
use std::cell::Cell;

const SUITE: SuiteId = SuiteId::AES_256_GCM_SHA256_COUNTER;

fn issuer() -> ResponderKeys {
    let identity = IdentityKeyPair::from_seed([1; 32]);
    let signed_pre_key = SignedPreKey::new(&identity, 1, [2; 32]);
    let mut keys = ResponderKeys::new(identity, signed_pre_key).unwrap();
    keys.add_one_time_pre_key(OneTimePreKey::new(5, [3; 32]))
        .unwrap();
    keys
}

#[test]
fn dh_halves_give_the_same_outputs_and_x3dh_secret() {
    let issuer = issuer();
    let holder = IdentityKeyPair::from_seed([4; 32]);
    let config = X3dhConfig::default();
    for one_time in [None, Some(5)] {
        let bundle = issuer.bound_bundle(one_time, &[SUITE], b"b").unwrap();
        let verify = || {
            bundle
                .clone()
                .verify_bound(issuer.identity_public_key(), b"b")
                .unwrap()
        };
        let (dh, header) = verify()
            .diffie_hellman_with_ephemeral(&holder, EphemeralKey::from_bytes([6; 32]), SUITE)
            .unwrap();
        assert_eq!(
            dh.as_bytes().len(),
            if one_time.is_some() { 128 } else { 96 }
        );
        assert_eq!(dh.one_time_pre_key_id(), one_time);
        let responder_dh = issuer.diffie_hellman(&header).unwrap();
        assert_eq!(responder_dh.as_bytes(), dh.as_bytes());
        // With an empty suffix and the configured info, the secret is X3DH's.
        let (agreed, _) = verify()
            .agree_with_ephemeral(&config, &holder, EphemeralKey::from_bytes([6; 32]), SUITE)
            .unwrap();
        assert_eq!(
            &*dh.derive_secret(&[], DEFAULT_INFO).unwrap(),
            agreed.secret()
        );
        // A suffix or another info gives another secret.
        assert_ne!(
            &*dh.derive_secret(&[0; 32], DEFAULT_INFO).unwrap(),
            agreed.secret()
        );
        assert_ne!(&*dh.derive_secret(&[], b"other").unwrap(), agreed.secret());
        assert_eq!(
            config.associated_data(&holder.public_key(), issuer.identity_public_key()),
            agreed.associated_data()
        );
        assert!(!format!("{dh:?}").contains(&format!("{:?}", &dh.as_bytes()[..4])));
    }
}

#[test]
fn offer_check_runs_after_identity_and_signed_pre_key_and_its_error_is_returned() {
    let issuer = issuer();
    let bundle = issuer.bound_bundle(Some(5), &[SUITE], b"b").unwrap();
    let called = Cell::new(false);
    let refuse = |_: &confidant_x3dh::PreKeyBundle| -> Result<(), X3dhError> {
        called.set(true);
        Err(X3dhError::BadOfferSignature)
    };
    // Another identity: refused before the offer check runs.
    let other = IdentityKeyPair::from_seed([9; 32]).public_key();
    assert_eq!(
        bundle
            .clone()
            .verify_with_offer_check(&other, refuse)
            .unwrap_err(),
        X3dhError::IdentityMismatch
    );
    assert!(!called.get());
    // A forged signed pre-key signature: refused before it too.
    let mut wire = bundle.to_wire();
    wire.signed_pre_key_signature[0] ^= 1;
    let forged = confidant_x3dh::PreKeyBundle::from_wire(&wire).unwrap();
    assert_eq!(
        forged
            .verify_with_offer_check(issuer.identity_public_key(), refuse)
            .unwrap_err(),
        X3dhError::BadSignature
    );
    assert!(!called.get());
    // Otherwise the caller's check decides, and its error comes back.
    assert_eq!(
        bundle
            .clone()
            .verify_with_offer_check(issuer.identity_public_key(), refuse)
            .unwrap_err(),
        X3dhError::BadOfferSignature
    );
    assert!(called.get());
    assert!(
        bundle
            .verify_with_offer_check(issuer.identity_public_key(), |_| Ok::<(), X3dhError>(()))
            .is_ok()
    );
}
