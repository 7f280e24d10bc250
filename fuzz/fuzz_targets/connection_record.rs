//! Any bytes in the runtime's `connections` table decode to a record or an
//! error, never a panic; a decoded record round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_ne!(
        confidant_actors::fuzzing::connection_record(data),
        Some(false),
        "a decoded record does not round-trip"
    );
});
