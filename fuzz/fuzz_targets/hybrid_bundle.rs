//! Any bytes given to the hybrid bundle decoder give a bundle or a
//! `HybridError`, never a panic. A decoded bundle re-encodes to an equal
//! bundle, and verifying it against its own identity key (hybrid required
//! or not) either succeeds or fails cleanly; when it verifies, agreeing
//! with it does not panic either.
//!
//! Random bytes rarely decode (the identity key must be a valid Ed25519
//! point), so an input starting with 0xFF is taken as edits to an honest
//! hybrid bundle instead: pairs of (offset as u16 BE, byte) written over
//! its encoding, which reaches the signature and KEM checks.
#![no_main]

#[path = "../src/edits.rs"]
mod edits;

use confidant_core::{KeyAgreement, SuiteId};
use confidant_x3dh::{EphemeralKey, IdentityKeyPair, ResponderKeys, SignedPreKey};
use confidant_x3dh_mlkem768::{
    HybridPreKeyBundle, HybridResponderKeys, KemKeyPair, KemPreKey, KemPreKeyKind, X3dhMlKem768,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;

fn honest_bundle() -> &'static Vec<u8> {
    static BUNDLE: OnceLock<Vec<u8>> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let identity = IdentityKeyPair::from_seed([1; 32]);
        let signed_pre_key = SignedPreKey::new(&identity, 1, [2; 32]);
        let last_resort = KemPreKey::new(
            &identity,
            1,
            KemPreKeyKind::LastResort,
            KemKeyPair::from_seed(&[3; 32], &[4; 32]),
        );
        let classical = ResponderKeys::new(identity, signed_pre_key).unwrap();
        let keys = HybridResponderKeys::new(classical, last_resort).unwrap();
        X3dhMlKem768::default()
            .bundle(&keys, &[SuiteId::AES_256_GCM_SHA256_COUNTER], b"")
            .unwrap()
            .encode_to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    let input = edits::edited_or_raw(data, honest_bundle());
    let Ok(bundle) = HybridPreKeyBundle::from_bytes(&input) else {
        return;
    };
    let again = HybridPreKeyBundle::from_bytes(&bundle.to_bytes()).unwrap();
    assert_eq!(again, bundle);
    let identity = *bundle.classical().identity_key();
    let _ = bundle.clone().verify(&identity, b"", true);
    if let Ok(verified) = bundle.verify(&identity, b"", false) {
        let _ = X3dhMlKem768::default().agree(
            verified,
            &IdentityKeyPair::from_seed([4; 32]),
            EphemeralKey::from_bytes([5; 32]),
            &[6; 32],
            SuiteId::AES_256_GCM_SHA256_COUNTER,
        );
    }
});
