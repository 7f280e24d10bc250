//! A cipher suite written outside Confidant's plugins (XChaCha20-Poly1305), run through the conformance suite.
