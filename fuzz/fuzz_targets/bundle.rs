//! Any bytes given to the bundle decoder give a bundle or an `X3dhError`,
//! never a panic. A decoded bundle re-encodes to an equal bundle, and
//! verifying it against its own identity key either succeeds or fails
//! cleanly.
#![no_main]

use confidant_x3dh::PreKeyBundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = PreKeyBundle::from_bytes(data) else {
        return;
    };
    let again = PreKeyBundle::from_bytes(&bundle.to_bytes()).unwrap();
    assert_eq!(again.to_bytes(), bundle.to_bytes());
    let identity = *bundle.identity_key();
    let _ = bundle.verify(&identity);
});
