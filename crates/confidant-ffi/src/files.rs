//! The node's files in its data directory.
//!
//! | file | what |
//! |---|---|
//! | `node.redb` | the node's store: identity key, pre-keys, sessions, inbox; its secret values sealed at rest when a key is given |
//! | `relay.key` | the 32-byte Ed25519 seed the connector knows this party by (mode 0600 on Unix); sealed under the at-rest key when one is given |
//!
//! `relay.key` signs requests to the connector (who may fetch and delete
//! this party's ciphertext there); it opens no message and is not the
//! identity key. With an at-rest key it is sealed as the store seals its
//! records (`confidant_store::at_rest::seal_secret`, label `relay.key`):
//! 81 bytes instead of 32. A plaintext `relay.key` found when a key is
//! given (a node first opened without one, whose store was sealed since)
//! is sealed in place, keeping its seed.

use crate::error::{ConfidantError, StorageErrorKind};
use confidant_store::KeyEncryptionKey;
use confidant_store::at_rest::{open_secret, seal_secret, sealed_len};
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The node's store.
pub(crate) const NODE_STORE: &str = "node.redb";
/// The seed the connector knows this party by.
pub(crate) const RELAY_KEY: &str = "relay.key";

fn io_error(what: &str, path: &Path, error: &std::io::Error) -> ConfidantError {
    ConfidantError::Storage {
        kind: crate::error::StorageErrorKind::Io,
        message: format!("cannot {what} {}: {error}", path.display()),
    }
}

/// Creates the data directory if it is missing (mode 0700 on Unix).
pub(crate) fn create_data_dir(dir: &Path) -> Result<(), ConfidantError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|error| {
        ConfidantError::invalid(format!(
            "cannot create the data directory {}: {error}",
            dir.display()
        ))
    })
}

/// The relay seed: read from `relay.key`, or created there from the
/// operating system's randomness on first use (written to a temporary file,
/// synced, renamed into place, so a crash never leaves half a key). With
/// `kek` it is kept sealed under it. Call it after the store opened with
/// the same `kek`: the store's key check tells a wrong key apart, so a
/// sealed `relay.key` that fails to open here is damaged.
pub(crate) fn relay_seed(
    dir: &Path,
    kek: Option<&KeyEncryptionKey>,
) -> Result<Zeroizing<[u8; 32]>, ConfidantError> {
    let path = dir.join(RELAY_KEY);
    let mut seed = Zeroizing::new([0u8; 32]);
    let corrupt = |message: String| ConfidantError::Storage {
        kind: StorageErrorKind::Corrupt,
        message,
    };
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            let mut bytes = Zeroizing::new(Vec::with_capacity(SEALED_LEN + 1));
            file.read_to_end(&mut bytes)
                .map_err(|error| io_error("read", &path, &error))?;
            match (bytes.len(), kek) {
                (PLAIN_LEN, None) => seed.copy_from_slice(&bytes),
                (PLAIN_LEN, Some(kek)) => {
                    seed.copy_from_slice(&bytes);
                    write_new(&path, &seal(kek, &seed)?)?;
                }
                (SEALED_LEN, Some(kek)) => {
                    let opened = open_secret(kek, RELAY_KEY.as_bytes(), &bytes)
                        .map_err(|error| corrupt(format!("{}: {error}", path.display())))?;
                    if opened.len() != seed.len() {
                        return Err(corrupt(format!(
                            "{} holds a sealed value of {} bytes, not a 32-byte key",
                            path.display(),
                            opened.len()
                        )));
                    }
                    seed.copy_from_slice(&opened);
                }
                (SEALED_LEN, None) => {
                    return Err(ConfidantError::Storage {
                        kind: StorageErrorKind::KeyRequired,
                        message: format!(
                            "{} is sealed under an at-rest key: open the node with its key",
                            path.display()
                        ),
                    });
                }
                (other, _) => {
                    return Err(corrupt(format!(
                        "{} holds {other} bytes, not a 32-byte key (or {SEALED_LEN} sealed)",
                        path.display()
                    )));
                }
            }
            Ok(seed)
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            getrandom::fill(seed.as_mut_slice()).map_err(|error| {
                ConfidantError::internal(format!(
                    "the operating system gave no randomness: {error}"
                ))
            })?;
            match kek {
                Some(kek) => write_new(&path, &seal(kek, &seed)?)?,
                None => write_new(&path, seed.as_slice())?,
            }
            Ok(seed)
        }
        Err(error) => Err(io_error("read", &path, &error)),
    }
}

/// A plaintext `relay.key`'s length.
const PLAIN_LEN: usize = 32;
/// A sealed `relay.key`'s length.
const SEALED_LEN: usize = sealed_len(PLAIN_LEN);

fn seal(kek: &KeyEncryptionKey, seed: &[u8; 32]) -> Result<Vec<u8>, ConfidantError> {
    seal_secret(kek, RELAY_KEY.as_bytes(), seed)
        .map_err(|error| ConfidantError::internal(format!("sealing {RELAY_KEY}: {error}")))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ConfidantError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    if std::fs::symlink_metadata(&temporary).is_ok() {
        std::fs::remove_file(&temporary)
            .map_err(|error| io_error("remove the stale", &temporary, &error))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .map_err(|error| io_error("create", &temporary, &error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error("write", &temporary, &error))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|error| io_error("rename into", path, &error))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| io_error("sync", parent, &error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_relay_seed_is_created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = relay_seed(dir.path(), None).unwrap();
        let again = relay_seed(dir.path(), None).unwrap();
        assert_eq!(*first, *again);
        assert_ne!(*first, [0u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(RELAY_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(RELAY_KEY), b"short").unwrap();
        match relay_seed(dir.path(), None) {
            Err(ConfidantError::Storage { kind, .. }) => {
                assert_eq!(kind, crate::error::StorageErrorKind::Corrupt);
            }
            other => panic!("{other:?}"),
        }
    }

    fn kind(result: Result<Zeroizing<[u8; 32]>, ConfidantError>) -> StorageErrorKind {
        match result {
            Err(ConfidantError::Storage { kind, .. }) => kind,
            other => panic!("expected a storage error, got {other:?}"),
        }
    }

    #[test]
    fn with_an_at_rest_key_the_relay_seed_is_sealed_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let kek = KeyEncryptionKey::from_bytes([9; 32]);
        let first = relay_seed(dir.path(), Some(&kek)).unwrap();
        let stored = std::fs::read(dir.path().join(RELAY_KEY)).unwrap();
        assert_eq!(stored.len(), SEALED_LEN);
        assert!(
            !stored.windows(32).any(|window| window == first.as_slice()),
            "the seed is in the file in plaintext"
        );
        assert_eq!(*relay_seed(dir.path(), Some(&kek)).unwrap(), *first);
        // Without the key: refused, typed, and the file is left as it was.
        assert_eq!(
            kind(relay_seed(dir.path(), None)),
            StorageErrorKind::KeyRequired
        );
        assert_eq!(std::fs::read(dir.path().join(RELAY_KEY)).unwrap(), stored);
        // Another key, or a flipped bit: refused as damaged.
        let other = KeyEncryptionKey::from_bytes([8; 32]);
        assert_eq!(
            kind(relay_seed(dir.path(), Some(&other))),
            StorageErrorKind::Corrupt
        );
        let mut damaged = stored.clone();
        if let Some(byte) = damaged.get_mut(40) {
            *byte ^= 1;
        }
        std::fs::write(dir.path().join(RELAY_KEY), &damaged).unwrap();
        assert_eq!(
            kind(relay_seed(dir.path(), Some(&kek))),
            StorageErrorKind::Corrupt
        );
    }

    #[test]
    fn a_plaintext_relay_seed_is_sealed_in_place_when_a_key_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let plain = relay_seed(dir.path(), None).unwrap();
        let kek = KeyEncryptionKey::from_bytes([9; 32]);
        let sealed = relay_seed(dir.path(), Some(&kek)).unwrap();
        assert_eq!(*sealed, *plain, "sealing must keep the party's key");
        let stored = std::fs::read(dir.path().join(RELAY_KEY)).unwrap();
        assert_eq!(stored.len(), SEALED_LEN);
        assert_eq!(*relay_seed(dir.path(), Some(&kek)).unwrap(), *plain);
        assert!(!dir.path().join(format!("{RELAY_KEY}.tmp")).exists());
    }
}
