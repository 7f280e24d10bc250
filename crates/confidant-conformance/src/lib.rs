//! The conformance suite every Confidant cipher suite must pass: published vectors, IV uniqueness, limits, tamper rejection.
