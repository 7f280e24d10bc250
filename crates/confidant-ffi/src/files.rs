//! The node's files in its data directory.
//!
//! | file | what |
//! |---|---|
//! | `node.redb` | the node's store: identity key, pre-keys, sessions, inbox; its secret values sealed at rest when a key is given |
//! | `relay.key` | the 32-byte Ed25519 seed the connector knows this party by (mode 0600 on Unix) |
//!
//! `relay.key` is not sealed under the at-rest key: the store has no
//! record for an application's secret. It only signs requests to the
//! connector (who may fetch and delete this party's ciphertext there); it
//! opens no message and is not the identity key.

use crate::error::ConfidantError;
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
/// synced, renamed into place, so a crash never leaves half a key).
pub(crate) fn relay_seed(dir: &Path) -> Result<Zeroizing<[u8; 32]>, ConfidantError> {
    let path = dir.join(RELAY_KEY);
    let mut seed = Zeroizing::new([0u8; 32]);
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            let mut bytes = Zeroizing::new(Vec::with_capacity(33));
            file.read_to_end(&mut bytes)
                .map_err(|error| io_error("read", &path, &error))?;
            if bytes.len() != seed.len() {
                return Err(ConfidantError::Storage {
                    kind: crate::error::StorageErrorKind::Corrupt,
                    message: format!(
                        "{} holds {} bytes, not a 32-byte key",
                        path.display(),
                        bytes.len()
                    ),
                });
            }
            seed.copy_from_slice(&bytes);
            Ok(seed)
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            getrandom::fill(seed.as_mut_slice()).map_err(|error| {
                ConfidantError::internal(format!(
                    "the operating system gave no randomness: {error}"
                ))
            })?;
            write_new(&path, seed.as_slice())?;
            Ok(seed)
        }
        Err(error) => Err(io_error("read", &path, &error)),
    }
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
        let first = relay_seed(dir.path()).unwrap();
        let again = relay_seed(dir.path()).unwrap();
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
        match relay_seed(dir.path()) {
            Err(ConfidantError::Storage { kind, .. }) => {
                assert_eq!(kind, crate::error::StorageErrorKind::Corrupt);
            }
            other => panic!("{other:?}"),
        }
    }
}
