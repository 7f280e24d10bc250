//! Any bytes in the connector's `messages` table decode to a message or an
//! error, never a panic; a decoded message round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_ne!(
        confidant_connector::fuzzing::mailbox_message(data),
        Some(false),
        "a decoded message does not round-trip"
    );
});
