//! Any bytes given to the initial message decoder give a header or an
//! `X3dhError`, never a panic; a decoded header is answered by a responder
//! without a panic (almost always with an error: unknown pre-key ids or a
//! secret that differs from any honest initiator's).
#![no_main]

use confidant_x3dh::{
    IdentityKeyPair, InitialMessageHeader, OneTimePreKey, ResponderKeys, SignedPreKey, X3dhConfig,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn responder() -> &'static ResponderKeys {
    static RESPONDER: OnceLock<ResponderKeys> = OnceLock::new();
    RESPONDER.get_or_init(|| {
        let identity = IdentityKeyPair::from_seed([1; 32]);
        let signed_pre_key = SignedPreKey::new(&identity, 1, [2; 32]);
        let mut keys = ResponderKeys::new(identity, signed_pre_key).unwrap();
        keys.add_one_time_pre_key(OneTimePreKey::new(1, [3; 32])).unwrap();
        keys
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = InitialMessageHeader::from_bytes(data) else {
        return;
    };
    let again = InitialMessageHeader::from_bytes(&header.to_bytes(None)).unwrap();
    assert_eq!(again.to_bytes(None), header.to_bytes(None));
    let _ = responder().respond(&X3dhConfig::default(), &header);
});
