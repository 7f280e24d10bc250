//! AES-256-GCM suites for Confidant: SHA-256 counter IV and 128-bit LFSR IV.
