//! Any bytes given to the hybrid initial message decoder give a message or
//! a `HybridError`, never a panic; a decoded message is answered by a
//! hybrid responder (classical messages allowed and not) without a panic.
//!
//! An input starting with 0xFF is taken as edits to an honest hybrid
//! initial message instead: pairs of (offset as u16 BE, byte) written over
//! its encoding, which reaches the DH and decapsulation paths.
#![no_main]

#[path = "../src/edits.rs"]
mod edits;

use confidant_core::{KeyAgreement, SuiteId};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey};
use confidant_x3dh_mlkem768::{
    HybridInitialMessage, HybridResponderKeys, KemKeyPair, KemPreKey, KemPreKeyKind, X3dhMlKem768,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;

fn responder() -> &'static (HybridResponderKeys, Vec<u8>) {
    static RESPONDER: OnceLock<(HybridResponderKeys, Vec<u8>)> = OnceLock::new();
    RESPONDER.get_or_init(|| {
        let identity = IdentityKeyPair::from_seed([1; 32]);
        let signed_pre_key = SignedPreKey::new(&identity, 1, [2; 32]);
        let last_resort = KemPreKey::new(
            &identity,
            1,
            KemPreKeyKind::LastResort,
            KemKeyPair::from_seed(&[3; 32], &[4; 32]),
        );
        let one_time = KemPreKey::new(
            &identity,
            2,
            KemPreKeyKind::OneTime,
            KemKeyPair::from_seed(&[5; 32], &[6; 32]),
        );
        let mut classical = ResponderKeys::new(identity, signed_pre_key).unwrap();
        classical
            .add_one_time_pre_key(OneTimePreKey::new(1, [7; 32]))
            .unwrap();
        let mut keys = HybridResponderKeys::new(classical, last_resort).unwrap();
        keys.add_one_time_kem_pre_key(one_time).unwrap();
        let hybrid = X3dhMlKem768::default();
        let suite = SuiteId::AES_256_GCM_SHA256_COUNTER;
        let bundle = hybrid.bundle(&keys, &[suite], b"").unwrap();
        let invitation = keys.classical().identity_public_key().to_bytes();
        let holder = IdentityKeyPair::from_seed([8; 32]);
        let (_, initial) = hybrid
            .initiate(&holder, &invitation, &bundle, suite, b"")
            .unwrap();
        (keys, initial.encode_to_vec())
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, honest) = responder();
    let input = edits::edited_or_raw(data, honest);
    let Ok(initial) = HybridInitialMessage::from_bytes(&input) else {
        return;
    };
    let again = HybridInitialMessage::from_bytes(&initial.to_bytes(None)).unwrap();
    assert_eq!(again, initial);
    for allow_classical in [false, true] {
        let hybrid = X3dhMlKem768::default().with_allow_classical(allow_classical);
        let _ = hybrid.respond_to(keys, &initial);
    }
});
