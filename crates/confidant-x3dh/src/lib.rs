//! X3DH key agreement as the Signal specification defines it, with Ed25519 identity keys.
