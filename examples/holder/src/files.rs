//! The holder's small files in its data directory, each written atomically
//! (a temporary file, synced, then renamed over the old one, then the
//! directory synced), so that a reader or a restart after a crash never sees
//! half a file.

use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// An error with a message for the user.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The node's store (a `RedbStore`).
pub const NODE_STORE: &str = "node.redb";
/// The 32-byte Ed25519 seed the connector knows this party by.
pub const RELAY_KEY: &str = "relay.key";
/// The connector's URL, from the first invitation accepted.
pub const CONNECTOR_URL: &str = "connector.url";
/// The credentials received (a redb file of the holder's own).
pub const CREDENTIALS: &str = "credentials.redb";

/// Creates the data directory (mode 0700 when it is new).
pub fn create_data_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| {
            format!(
                "cannot create the data directory {}: {error}",
                dir.display()
            )
            .into()
        })
}

/// Writes `bytes` to `path` atomically, with file mode `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let failed = |what: &str, error: std::io::Error| -> Error {
        format!("cannot {what} {}: {error}", path.display()).into()
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A crash in an earlier write may have left the temporary file behind;
    // only one that is there is removed (so a read-only directory is
    // reported as such, not as a stale file that does not exist).
    if std::fs::symlink_metadata(&temporary).is_ok() {
        std::fs::remove_file(&temporary).map_err(|error| {
            format!(
                "cannot remove {}, left by an interrupted write: {error}",
                temporary.display()
            )
        })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|error| failed("write", error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| failed("write", error))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|error| failed("rename into place", error))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| failed("sync the directory of", error))
}

/// The seed the connector knows this party by: read from `relay.key`, or
/// created there from the operating system's randomness (mode 0600) on
/// first use. Never printed.
pub fn relay_seed(dir: &Path) -> Result<Zeroizing<[u8; 32]>, Error> {
    let path = dir.join(RELAY_KEY);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                format!(
                    "{} is not a 32-byte key ({} bytes); remove it to start as a new party",
                    path.display(),
                    bytes.len()
                )
            })?;
            Ok(Zeroizing::new(seed))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let mut seed = Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut_slice())
                .map_err(|error| format!("no randomness for the relay key: {error}"))?;
            write_atomically(&path, seed.as_slice(), 0o600)?;
            Ok(seed)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display()).into()),
    }
}

/// The connector URL stored by an earlier `accept`, if any.
pub fn connector_url(dir: &Path) -> Result<Option<String>, Error> {
    let path = dir.join(CONNECTOR_URL);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("cannot read {}: {error}", path.display()).into()),
    }
}

/// Refuses a connector URL that is not of the form the transport takes
/// (`https://HOST:PORT`, or `http://HOST:PORT` for plaintext), at once and
/// without a network call.
pub fn check_connector_url_form(url: &str) -> Result<(), Error> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(format!(
            "connector URL {url:?} is not of the form https://HOST:PORT \
             (or http://HOST:PORT for plaintext on loopback and in tests)"
        )
        .into()),
    }
}

/// Refuses an invitation for another connector than the one this holder
/// already uses (read only; see [`remember_connector_url`]).
pub fn check_connector_url(dir: &Path, url: &str) -> Result<(), Error> {
    match connector_url(dir)? {
        Some(stored) if stored != url => Err(format!(
            "this holder already uses the connector {stored}; the invitation is for {url} \
             (use another --data-dir for another connector)"
        )
        .into()),
        _ => Ok(()),
    }
}

/// Remembers the connector URL for later runs, once a join succeeded. A
/// holder's node talks to one connector: a different URL than the stored
/// one is refused.
pub fn remember_connector_url(dir: &Path, url: &str) -> Result<(), Error> {
    check_connector_url(dir, url)?;
    if connector_url(dir)?.is_some() {
        return Ok(());
    }
    write_atomically(
        &dir.join(CONNECTOR_URL),
        format!("{url}\n").as_bytes(),
        0o644,
    )
}

/// Requires `dir` to be a holder's data directory: a directory that holds
/// the node's store or the credentials (`list` on anything else is an
/// error, not an empty list).
pub fn existing_holder_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display()).into()),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err(format!(
                "{} does not exist: no holder keeps its state there \
                 (accept an invitation with this --data-dir first)",
                dir.display()
            )
            .into());
        }
        Err(error) => return Err(format!("cannot read {}: {error}", dir.display()).into()),
    }
    if dir.join(NODE_STORE).exists() || dir.join(CREDENTIALS).exists() {
        Ok(())
    } else {
        Err(format!(
            "{} holds no holder state (no {NODE_STORE}, no {CREDENTIALS}): \
             accept an invitation with this --data-dir first",
            dir.display()
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = relay_seed(dir.path()).unwrap();
        assert_eq!(*first, *relay_seed(dir.path()).unwrap());
        let metadata = std::fs::metadata(dir.path().join(RELAY_KEY)).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(metadata.len(), 32);
    }

    #[test]
    fn the_connector_url_is_kept_and_another_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(connector_url(dir.path()).unwrap(), None);
        remember_connector_url(dir.path(), "http://127.0.0.1:5").unwrap();
        remember_connector_url(dir.path(), "http://127.0.0.1:5").unwrap();
        assert_eq!(
            connector_url(dir.path()).unwrap().as_deref(),
            Some("http://127.0.0.1:5")
        );
        let error = remember_connector_url(dir.path(), "http://127.0.0.1:6").unwrap_err();
        assert!(error.to_string().contains("already uses"), "{error}");
        assert!(check_connector_url(dir.path(), "http://127.0.0.1:6").is_err());
        check_connector_url(dir.path(), "http://127.0.0.1:5").unwrap();
    }

    #[test]
    fn a_url_without_a_scheme_is_refused_with_the_expected_form() {
        for bad in [
            "127.0.0.1:50051",
            "localhost:50051",
            "http:/x",
            "https://",
            "ftp://x:1",
            "",
        ] {
            let error = check_connector_url_form(bad).unwrap_err().to_string();
            assert!(error.contains("https://HOST:PORT"), "{bad}: {error}");
        }
        for good in ["http://127.0.0.1:50051", "https://connector.example:443"] {
            check_connector_url_form(good).unwrap();
        }
    }

    #[test]
    fn a_write_that_cannot_happen_names_the_file_not_a_stale_one() {
        // A data directory that is no directory: every write fails, and
        // no temporary file exists (the case of a read-only directory, as
        // root runs these tests and may write anywhere else).
        let dir = tempfile::tempdir().unwrap();
        let not_a_directory = dir.path().join("file");
        std::fs::write(&not_a_directory, b"").unwrap();
        let path = not_a_directory.join(CONNECTOR_URL);
        let error = write_atomically(&path, b"x", 0o600)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("stale"), "{error}");
        assert!(!error.contains("interrupted"), "{error}");
        assert!(
            error.starts_with(&format!("cannot write {}", path.display())),
            "{error}"
        );
    }
}
