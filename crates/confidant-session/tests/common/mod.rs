//! Helpers shared by the session tests.
#![allow(dead_code, clippy::unwrap_used)]

use confidant_core::{AgreedSecret, ConnectionId, Role, Suite, SuiteRegistry};
use confidant_session::{Session, SessionConfig};
use std::sync::Arc;

/// Every suite the workspace ships.
pub fn suites() -> Vec<Arc<dyn Suite>> {
    vec![
        confidant_aes_gcm::aes_256_gcm_sha256_counter(),
        confidant_aes_gcm::aes_256_gcm_lfsr(),
        confidant_chacha20poly1305::chacha20_poly1305_counter(),
    ]
}

/// A registry with every suite the workspace ships.
pub fn registry() -> SuiteRegistry {
    let mut registry = SuiteRegistry::new();
    for suite in suites() {
        registry.register(suite).unwrap();
    }
    registry
}

/// The connection id the tests use.
pub fn connection() -> ConnectionId {
    ConnectionId::new("conn-test").unwrap()
}

/// A holder (initiator) and issuer (responder) session over the same secret.
pub fn pair(suite: Arc<dyn Suite>, config: SessionConfig) -> (Session, Session) {
    let agreed = AgreedSecret::new([0x42; 32], vec![0xA5; 64], None);
    let holder = Session::new(
        Role::Initiator,
        connection(),
        suite.clone(),
        &agreed,
        config.clone(),
    )
    .unwrap();
    let issuer = Session::new(Role::Responder, connection(), suite, &agreed, config).unwrap();
    (holder, issuer)
}
