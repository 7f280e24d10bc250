//! Any bytes stored as a KEM pre-key (the hybrid's records in the
//! `agreement_keys` table) decode to a key or an error, never a panic; a
//! decoded key encodes back to the same bytes.
#![no_main]

use confidant_x3dh_mlkem768::KemPreKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = KemPreKey::from_storage_bytes(data) {
        let again = key.to_storage_bytes().expect("a stored key has its seed");
        assert_eq!(again.as_slice(), data, "a decoded KEM pre-key does not round-trip");
    }
});
