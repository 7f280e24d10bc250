//! Any bytes given to the snapshot decoder, and any decoded snapshot given to
//! `Session::restore`, give a value or an error, never a panic. A restored
//! session can seal, and its snapshot round-trips.
#![no_main]

use confidant_core::SuiteRegistry;
use confidant_session::{Session, SessionSnapshot};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn registry() -> &'static SuiteRegistry {
    static REGISTRY: OnceLock<SuiteRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = SuiteRegistry::new();
        confidant_aes_gcm::register(&mut registry).unwrap();
        confidant_chacha20poly1305::register(&mut registry).unwrap();
        registry
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = SessionSnapshot::from_bytes(data) else {
        return;
    };
    let bytes = snapshot.to_bytes().unwrap();
    assert_eq!(SessionSnapshot::from_bytes(&bytes).unwrap(), snapshot);
    if let Ok(mut session) = Session::restore(&snapshot, registry()) {
        let _ = session.seal(b"fuzz");
        let _ = session.snapshot().to_bytes().unwrap();
    }
});
