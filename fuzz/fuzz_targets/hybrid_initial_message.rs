//! Any bytes given to the hybrid initial message decoder give a message or
//! a `HybridError`, never a panic; a decoded message is answered by a
//! hybrid responder (classical messages allowed and not) without a panic.
#![no_main]

use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey};
use confidant_x3dh_mlkem768::{
    HybridInitialMessage, HybridResponderKeys, KemKeyPair, KemPreKey, KemPreKeyKind, X3dhMlKem768,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn responder() -> &'static HybridResponderKeys {
    static RESPONDER: OnceLock<HybridResponderKeys> = OnceLock::new();
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
        keys
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(initial) = HybridInitialMessage::from_bytes(data) else {
        return;
    };
    let again = HybridInitialMessage::from_bytes(&initial.to_bytes(None)).unwrap();
    assert_eq!(again, initial);
    for allow_classical in [false, true] {
        let hybrid = X3dhMlKem768::default().with_allow_classical(allow_classical);
        let _ = hybrid.respond_to(responder(), &initial);
    }
});
