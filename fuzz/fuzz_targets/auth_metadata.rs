//! Any bytes as the connector's authentication metadata (public key, nonce
//! and signature header values) decode to fields or an error, never a
//! panic; decoded fields round-trip through the client's encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_ne!(
        confidant_connector::fuzzing::auth_metadata(data),
        Some(false),
        "decoded authentication metadata does not round-trip"
    );
});
