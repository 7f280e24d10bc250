//! Any bytes given to the envelope decoder give a body or a `DecodeError`,
//! never a panic; a decoded envelope re-encodes to bytes that decode to the
//! same body.
#![no_main]

use confidant_core::wire::{self, DEFAULT_MAX_ENVELOPE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = wire::decode_envelope(data, DEFAULT_MAX_ENVELOPE_LEN) {
        let again = wire::encode_envelope(body.clone());
        assert_eq!(wire::decode_envelope(&again, DEFAULT_MAX_ENVELOPE_LEN), Ok(body));
    }
});
