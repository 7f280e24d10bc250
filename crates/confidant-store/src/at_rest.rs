//! Encryption of secret values at rest, under a key-encryption key (KEK)
//! that the embedding application supplies.
//!
//! The values of the sealed tables ([`Table::is_sealed_at_rest`]) are
//! sealed: the identity key, pre-keys, session snapshots and the inbox
//! (secret), and the counter reservations (not secret, but sealing
//! authenticates them, so that someone who can write the file cannot lower
//! one and make the next start reuse counters). Keys (record ids,
//! connection ids, inbox sequence numbers) and `Meta` (schema version, key
//! check, next inbox number) stay in plaintext, so the file reveals which
//! connections exist, never a key or a message.
//!
//! ## Format
//!
//! For each record write:
//!
//! ```text
//! salt       = 32 fresh bytes from the OS random number generator
//! record_key = HKDF-SHA-256(IKM = KEK, salt = salt, info = "Confidant at-rest v1"), 32 bytes
//! ad         = table name ‖ 0x00 ‖ record key
//! stored     = 0x01 ‖ salt ‖ AES-256-GCM(record_key, nonce = 0^96, ad, value) ‖ tag (16 bytes)
//! ```
//!
//! The leading byte is the format (1); a value with another first
//! byte is refused, so a later format can coexist with this one.
//!
//! **Why a random salt and a fixed nonce, not a random nonce.** With one
//! AES-GCM key and random 96-bit nonces, NIST SP 800-38D allows at most
//! 2^32 encryptions before the chance of a repeated nonce (which breaks
//! GCM's confidentiality and integrity) passes 2^-32. A node that rewrites
//! its session records on every received batch for years reaches that
//! bound. Deriving a fresh key per record from a 256-bit random salt
//! removes the bound: every key encrypts exactly one message, so the fixed
//! zero nonce is never reused under a key, and two records share a key
//! only if two 256-bit salts collide.
//!
//! **Why the table and record key are associated data.** A value copied to
//! another record, or another table, fails authentication instead of being
//! accepted as that record (for example an old session snapshot pasted over
//! a newer one would roll a counter back). Replaying an older value of the
//! *same* record is not detected: that is a rollback of the whole file,
//! which at-rest encryption cannot prevent.
//!
//! **Key check.** An encrypted store holds, under [`KEY_CHECK_KEY`] in the
//! `Meta` table, a sealed fixed label. Opening it tells a wrong KEK
//! ([`StoreError::WrongKey`]) apart from a record that fails to open later
//! ([`StoreError::Corrupt`]: with the right KEK, that means damage or
//! tampering).

use crate::error::StoreError;
use crate::records::{KEY_CHECK_KEY, Table};
use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The format byte of a sealed value.
pub(crate) const FORMAT: u8 = 1;
/// Length of the per-record salt.
pub(crate) const SALT_LEN: usize = 32;
/// Length of the AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub(crate) const OVERHEAD: usize = 1 + SALT_LEN + TAG_LEN;

const INFO: &[u8] = b"Confidant at-rest v1";
const KEY_CHECK_LABEL: &[u8] = b"Confidant key check v1";
const NONCE: [u8; 12] = [0; 12];

/// The key-encryption key (KEK) under which a store's secret values are
/// sealed at rest: 32 secret bytes that the embedding application supplies
/// (from a key store, an OS keychain, or a passphrase KDF of its choice).
///
/// Wiped when dropped; its `Debug` output shows nothing of it.
///
/// ```
/// use confidant_store::KeyEncryptionKey;
/// let kek = KeyEncryptionKey::from_bytes([0x42; 32]);
/// assert_eq!(format!("{kek:?}"), "KeyEncryptionKey(<redacted>)");
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyEncryptionKey([u8; 32]);

impl KeyEncryptionKey {
    /// Wraps 32 secret bytes. They should be uniformly random (or the
    /// output of a strong key-derivation function).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

/// The associated data binding a value to its table and record.
fn associated_data(table: Table, key: &[u8]) -> Vec<u8> {
    let name = table.name().as_bytes();
    let mut ad = Vec::with_capacity(name.len() + 1 + key.len());
    ad.extend_from_slice(name);
    ad.push(0);
    ad.extend_from_slice(key);
    ad
}

fn cipher(kek: &KeyEncryptionKey, salt: &[u8]) -> Result<Aes256Gcm, StoreError> {
    let mut record_key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), &kek.0)
        .expand(INFO, record_key.as_mut())
        .map_err(|_| StoreError::Inconsistent("at-rest key derivation failed"))?;
    // `Aes256Gcm` wipes its key schedule when dropped (feature `zeroize`).
    Aes256Gcm::new_from_slice(record_key.as_ref())
        .map_err(|_| StoreError::Inconsistent("at-rest key has the wrong length"))
}

/// Seals `value`, the value of record `key` in `table`.
pub(crate) fn seal(
    kek: &KeyEncryptionKey,
    table: Table,
    key: &[u8],
    value: &[u8],
) -> Result<Vec<u8>, StoreError> {
    seal_with(kek, &associated_data(table, key), value)
}

/// Opens a value sealed by [`seal`] for record `key` in `table`.
pub(crate) fn open(
    kek: &KeyEncryptionKey,
    table: Table,
    key: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    open_with(
        kek,
        &associated_data(table, key),
        sealed,
        &format!("a value in table {}", table.name()),
    )
}

/// The associated data of an application's own secret: no table has this
/// name, so a secret and a record never open as each other.
fn secret_associated_data(label: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(SECRET_DOMAIN.len() + 1 + label.len());
    ad.extend_from_slice(SECRET_DOMAIN);
    ad.push(0);
    ad.extend_from_slice(label);
    ad
}

/// The domain of [`seal_secret`]'s associated data.
const SECRET_DOMAIN: &[u8] = b"confidant-app-secret";

/// How many bytes [`seal_secret`] returns for a value of `len` bytes.
pub const fn sealed_len(len: usize) -> usize {
    OVERHEAD + len
}

/// Seals `value`, a secret the application keeps outside the store (in a
/// file of its own, say), under `kek`, bound to `label`. The format is the
/// store's (see the module's documentation), with associated data
/// `"confidant-app-secret" ‖ 0x00 ‖ label`: a sealed secret opens only
/// under the same label, and never as a record of the store.
///
/// ```
/// use confidant_store::KeyEncryptionKey;
/// use confidant_store::at_rest::{open_secret, seal_secret, sealed_len};
///
/// let kek = KeyEncryptionKey::from_bytes([7; 32]);
/// let sealed = seal_secret(&kek, b"relay.key", &[1; 32])?;
/// assert_eq!(sealed.len(), sealed_len(32));
/// assert_eq!(open_secret(&kek, b"relay.key", &sealed)?.as_slice(), &[1; 32]);
/// assert!(open_secret(&kek, b"other", &sealed).is_err());
/// # Ok::<(), confidant_store::StoreError>(())
/// ```
pub fn seal_secret(
    kek: &KeyEncryptionKey,
    label: &[u8],
    value: &[u8],
) -> Result<Vec<u8>, StoreError> {
    seal_with(kek, &secret_associated_data(label), value)
}

/// Opens a secret sealed by [`seal_secret`] under `label`. A wrong key, a
/// wrong label and a damaged value all fail as [`StoreError::Corrupt`]
/// (authentication cannot tell them apart: check the key first, as opening
/// the store does).
pub fn open_secret(
    kek: &KeyEncryptionKey,
    label: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    open_with(
        kek,
        &secret_associated_data(label),
        sealed,
        &format!("the secret {:?}", String::from_utf8_lossy(label)),
    )
}

fn seal_with(kek: &KeyEncryptionKey, ad: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt)
        .map_err(|error| StoreError::Io(format!("OS random number generator failed: {error}")))?;
    let cipher = cipher(kek, &salt)?;
    let mut sealed = Vec::with_capacity(OVERHEAD + value.len());
    sealed.push(FORMAT);
    sealed.extend_from_slice(&salt);
    sealed.extend_from_slice(value);
    let body = sealed
        .get_mut(1 + SALT_LEN..)
        .ok_or(StoreError::Inconsistent(
            "sealed value shorter than its header",
        ))?;
    let tag = cipher
        .encrypt_inout_detached(&Array::from(NONCE), ad, body.into())
        .map_err(|_| StoreError::Inconsistent("value too long to encrypt at rest"))?;
    sealed.extend_from_slice(&tag);
    Ok(sealed)
}

/// Opens a sealed value; `what` names it in errors.
fn open_with(
    kek: &KeyEncryptionKey,
    ad: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let failed = || {
        StoreError::Corrupt(format!(
            "{what} failed authentication (damaged or tampered with)"
        ))
    };
    if sealed.len() < OVERHEAD {
        return Err(StoreError::Corrupt(format!(
            "{what} is too short to be encrypted"
        )));
    }
    let (&format, rest) = sealed.split_first().ok_or_else(failed)?;
    if format != FORMAT {
        return Err(StoreError::Corrupt(format!(
            "{what} has unknown at-rest format {format}"
        )));
    }
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| failed())?;
    let cipher = cipher(kek, salt)?;
    let mut plaintext = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_inout_detached(
            &Array::from(NONCE),
            ad,
            plaintext.as_mut_slice().into(),
            &Array::from(tag),
        )
        .map_err(|_| failed())?;
    Ok(plaintext)
}

/// The key-check record written when an encrypted store is created.
pub(crate) fn key_check(kek: &KeyEncryptionKey) -> Result<Vec<u8>, StoreError> {
    seal(kek, Table::Meta, KEY_CHECK_KEY, KEY_CHECK_LABEL)
}

/// Whether `kek` is the key the store's key-check record was made with.
pub(crate) fn verify_key_check(kek: &KeyEncryptionKey, record: &[u8]) -> Result<(), StoreError> {
    match open(kek, Table::Meta, KEY_CHECK_KEY, record) {
        Ok(label) if label.as_slice() == KEY_CHECK_LABEL => Ok(()),
        _ => Err(StoreError::WrongKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes([byte; 32])
    }

    #[test]
    fn seal_open_round_trip_and_layout() {
        let sealed = seal(&kek(1), Table::Sessions, b"conn", b"session bytes").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 13);
        assert_eq!(sealed[0], FORMAT);
        assert!(!sealed.windows(13).any(|w| w == b"session bytes"));
        let opened = open(&kek(1), Table::Sessions, b"conn", &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"session bytes");
    }

    #[test]
    fn every_seal_uses_a_fresh_salt() {
        let a = seal(&kek(1), Table::Inbox, b"k", b"same").unwrap();
        let b = seal(&kek(1), Table::Inbox, b"k", b"same").unwrap();
        assert_ne!(a[1..1 + SALT_LEN], b[1..1 + SALT_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_record_table_or_tampering_fail_authentication() {
        let sealed = seal(&kek(1), Table::Sessions, b"conn-a", b"secret").unwrap();
        let is_auth_failure = |result: Result<Zeroizing<Vec<u8>>, StoreError>| matches!(result, Err(StoreError::Corrupt(message)) if message.contains("failed authentication"));
        assert!(is_auth_failure(open(
            &kek(2),
            Table::Sessions,
            b"conn-a",
            &sealed
        )));
        assert!(is_auth_failure(open(
            &kek(1),
            Table::Sessions,
            b"conn-b",
            &sealed
        )));
        assert!(is_auth_failure(open(
            &kek(1),
            Table::Inbox,
            b"conn-a",
            &sealed
        )));
        for at in [1, 1 + SALT_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 0x01;
            assert!(is_auth_failure(open(
                &kek(1),
                Table::Sessions,
                b"conn-a",
                &tampered
            )));
        }
        let mut other_format = sealed.clone();
        other_format[0] = 2;
        assert!(open(&kek(1), Table::Sessions, b"conn-a", &other_format).is_err());
        assert!(open(&kek(1), Table::Sessions, b"conn-a", &sealed[..OVERHEAD - 1]).is_err());
    }

    #[test]
    fn key_check_tells_the_right_key_from_a_wrong_one() {
        let record = key_check(&kek(7)).unwrap();
        assert!(verify_key_check(&kek(7), &record).is_ok());
        assert!(matches!(
            verify_key_check(&kek(8), &record),
            Err(StoreError::WrongKey)
        ));
    }

    #[test]
    fn debug_shows_no_key() {
        let shown = format!("{:?}", KeyEncryptionKey::from_bytes([0xAB; 32]));
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab,"));
        assert_eq!(shown, "KeyEncryptionKey(<redacted>)");
    }
}
