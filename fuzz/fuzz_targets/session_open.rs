//! An established session given any envelope bytes refuses them without a
//! panic, and a refused message leaves the session's state unchanged.
#![no_main]

use confidant_core::wire::{self, envelope::Body};
use confidant_core::{AgreedSecret, ConnectionId, Role};
use confidant_session::{Session, SessionConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let agreed = AgreedSecret::new([3; 32], vec![1; 64], None);
    let connection = ConnectionId::new("fuzz").unwrap();
    let Some((&suite_pick, data)) = data.split_first() else {
        return;
    };
    let suite = match suite_pick % 3 {
        0 => confidant_aes_gcm::aes_256_gcm_sha256_counter(),
        1 => confidant_aes_gcm::aes_256_gcm_lfsr(),
        _ => confidant_chacha20poly1305::chacha20_poly1305_counter(),
    };
    let mut session =
        Session::new(Role::Responder, connection, suite, &agreed, SessionConfig::default()).unwrap();
    let before = session.snapshot();
    let result = match wire::decode_envelope(data, wire::DEFAULT_MAX_ENVELOPE_LEN) {
        Ok(Body::Message(message)) => session.open(message).map(|_| ()),
        Ok(Body::KeyUpdate(update)) => session.open_key_update(update).map(|_| ()),
        _ => return,
    };
    if result.is_err() {
        assert_eq!(session.snapshot(), before);
    }
});
