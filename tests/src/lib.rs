//! Cross-crate tests of Confidant.
