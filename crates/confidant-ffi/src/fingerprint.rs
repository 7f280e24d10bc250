//! A short, human-comparable fingerprint of an identity key.
//!
//! Two people compare it aloud or side by side (a wallet's screen against
//! an issuer's web page) to check that an invitation, or a connection, is
//! with the key they expect.
//!
//! ## Derivation
//!
//! ```text
//! digest      = SHA-256("confidant fingerprint v1" ‖ identity key (32 bytes))
//! group i     = big-endian u40 of digest[5i .. 5i+5], modulo 100000, for i = 0..4
//! fingerprint = the four groups as five decimal digits each (zero-padded),
//!               separated by single spaces: "DDDDD DDDDD DDDDD DDDDD"
//! ```
//!
//! That is 20 digits, about 66 bits of the digest: enough that nobody can
//! make a second key with the same fingerprint, short enough to read out.
//! (The same idea as Signal's safety numbers, with one key instead of two.)
//! The label keeps these digits apart from any other SHA-256 of the key.

use sha2::{Digest as _, Sha256};

const LABEL: &[u8] = b"confidant fingerprint v1";
const GROUPS: usize = 4;
const GROUP_BYTES: usize = 5;

/// The fingerprint of a 32-byte identity key (see the module docs).
pub(crate) fn fingerprint(identity_key: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(LABEL)
        .chain_update(identity_key)
        .finalize();
    let groups: Vec<String> = digest
        .chunks_exact(GROUP_BYTES)
        .take(GROUPS)
        .map(|chunk| {
            let value = chunk
                .iter()
                .fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
            format!("{:05}", value % 100_000)
        })
        .collect();
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// The derivation, recomputed step by step from the documented
    /// formula, agrees with the code for a few keys, and the form is fixed.
    #[test]
    fn the_fingerprint_is_the_documented_derivation() {
        for seed in [0u8, 1, 0x5A, 0xFF] {
            let key = [seed; 32];
            let mut input = b"confidant fingerprint v1".to_vec();
            input.extend_from_slice(&key);
            let digest = Sha256::digest(&input);
            let mut expected = Vec::new();
            for group in 0..4 {
                let mut value = 0u64;
                for byte in &digest[group * 5..group * 5 + 5] {
                    value = value * 256 + u64::from(*byte);
                }
                expected.push(format!("{:05}", value % 100_000));
            }
            let text = fingerprint(&key);
            assert_eq!(text, expected.join(" "));
            assert_eq!(text.len(), 23);
            assert!(
                text.split(' ')
                    .all(|group| group.len() == 5 && group.bytes().all(|b| b.is_ascii_digit()))
            );
        }
    }

    /// A fixed vector, so that another implementation (a web page showing
    /// the issuer's fingerprint) can check itself.
    #[test]
    fn a_fixed_vector() {
        assert_eq!(fingerprint(&[0u8; 32]), FINGERPRINT_OF_ZERO_KEY);
    }

    // Computed independently (Python hashlib) from the documented formula.
    const FINGERPRINT_OF_ZERO_KEY: &str = "98729 48568 72272 14696";

    #[test]
    fn one_bit_changes_the_fingerprint() {
        let key = [7u8; 32];
        let base = fingerprint(&key);
        for bit in 0..256 {
            let mut other = key;
            other[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(fingerprint(&other), base, "bit {bit}");
        }
    }
}
