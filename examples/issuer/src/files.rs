//! The issuer's files in its data directory, each written atomically (a
//! temporary file, synced, then renamed over the old one, then the directory
//! synced), so that a reader or a restart after a crash never sees half a
//! file.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
/// The last invitation's text.
pub const INVITATION: &str = "invitation.txt";
/// The last invitation's QR code, as a PNG for printing.
pub const INVITATION_PNG: &str = "invitation.png";
/// Which connections already got the credential, and their greetings.
pub const STATE: &str = "issuer-state.json";

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
    replace_file(path, bytes, mode)?;
    sync_parent(path)
}

/// Puts `bytes` in place at `path` (a synced temporary file renamed over
/// it): any process that reads `path` from now on sees them. They survive a
/// power loss once [`sync_parent`] returned.
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
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
    std::fs::rename(&temporary, path).map_err(|error| failed("rename into place", error))
}

/// Syncs the directory of `path`, so that a rename in it survives a power
/// loss.
fn sync_parent(path: &Path) -> Result<(), Error> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| format!("cannot sync the directory of {}: {error}", path.display()).into())
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

/// What the issuer remembers about its connections, beside the node's own
/// store.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerState {
    /// Connections the credential was handed to the connector on.
    pub credential_sent: BTreeSet<String>,
    /// The inbox number of each connection's greeting (the holder's first
    /// message, sealed into the X3DH initial message). Every later message
    /// on the connection is a reply.
    pub greetings: BTreeMap<String, u64>,
    /// The replies reported, per connection. A holder that crashed right
    /// after answering answers again; the repeat is not reported.
    #[serde(default)]
    pub replies: BTreeMap<String, BTreeSet<String>>,
}

impl IssuerState {
    /// Reads the state from `dir` (empty if there is none yet).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(STATE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| format!("{} is damaged: {error}", path.display()).into()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(format!("cannot read {}: {error}", path.display()).into()),
        }
    }

    /// Writes the state to `dir`, atomically and durably.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        self.save_and_report(dir, || {})
    }

    /// Writes the state to `dir`, atomically and durably, and calls
    /// `report` as soon as the new state is in place for any later process,
    /// before the directory sync that makes it survive a power loss. So a
    /// process killed between recording something and reporting it (the
    /// window would otherwise be as long as that sync) is rare enough to
    /// ignore; a report is then missed, never repeated.
    pub fn save_and_report(&self, dir: &Path, report: impl FnOnce()) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|error| format!("cannot encode the issuer state: {error}"))?;
        let path = dir.join(STATE);
        replace_file(&path, &bytes, 0o600)?;
        report();
        sync_parent(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_key_is_created_once_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first = relay_seed(dir.path()).unwrap();
        let second = relay_seed(dir.path()).unwrap();
        assert_eq!(*first, *second);
        assert_ne!(*first, [0; 32]);
        let path = dir.path().join(RELAY_KEY);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("relay.key.tmp").exists());
        std::fs::write(&path, b"short").unwrap();
        let error = relay_seed(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a 32-byte key"), "{error}");
    }

    #[test]
    fn state_survives_a_reload_and_a_stale_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            IssuerState::load(dir.path()).unwrap(),
            IssuerState::default()
        );
        let mut state = IssuerState::default();
        state.credential_sent.insert("conn-1".into());
        state.greetings.insert("conn-1".into(), 7);
        state
            .replies
            .entry("conn-1".into())
            .or_default()
            .insert("received credential 0a1b2c3d".into());
        // A crash in the middle of an earlier save left this behind.
        std::fs::write(dir.path().join("issuer-state.json.tmp"), b"{\"credential_").unwrap();
        state.save(dir.path()).unwrap();
        assert_eq!(IssuerState::load(dir.path()).unwrap(), state);
        std::fs::write(dir.path().join(STATE), b"{").unwrap();
        assert!(IssuerState::load(dir.path()).is_err());
        // A state file from before replies were recorded still loads.
        std::fs::write(
            dir.path().join(STATE),
            br#"{"credential_sent":["c"],"greetings":{"c":1}}"#,
        )
        .unwrap();
        assert!(IssuerState::load(dir.path()).unwrap().replies.is_empty());
    }
}
