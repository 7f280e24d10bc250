//! ChaCha20-Poly1305 suite for Confidant with a counter IV.
