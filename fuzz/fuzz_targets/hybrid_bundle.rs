//! Any bytes given to the hybrid bundle decoder give a bundle or a
//! `HybridError`, never a panic. A decoded bundle re-encodes to an equal
//! bundle, and verifying it against its own identity key (hybrid required
//! or not) either succeeds or fails cleanly; when it verifies, agreeing
//! with it does not panic either.
#![no_main]

use confidant_core::SuiteId;
use confidant_x3dh::{EphemeralKey, IdentityKeyPair};
use confidant_x3dh_mlkem768::{HybridPreKeyBundle, X3dhMlKem768};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = HybridPreKeyBundle::from_bytes(data) else {
        return;
    };
    let again = HybridPreKeyBundle::from_bytes(&bundle.to_bytes()).unwrap();
    assert_eq!(again, bundle);
    let identity = *bundle.classical().identity_key();
    let _ = bundle.clone().verify(&identity, b"", true);
    if let Ok(verified) = bundle.verify(&identity, b"", false) {
        let _ = X3dhMlKem768::default().agree(
            verified,
            &IdentityKeyPair::from_seed([4; 32]),
            EphemeralKey::from_bytes([5; 32]),
            &[6; 32],
            SuiteId::AES_256_GCM_SHA256_COUNTER,
        );
    }
});
