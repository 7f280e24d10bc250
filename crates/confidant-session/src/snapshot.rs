//! Serializable snapshots of a whole session, for storage.
//!
//! A snapshot holds secrets (the current keys and chain keys): whoever stores
//! it must protect it. Its secret parts are wiped when it is dropped.
//!
//! The byte form is one format byte ([`SNAPSHOT_FORMAT`]) followed by the
//! postcard encoding of [`SessionSnapshot`]. Decoding never panics and
//! refuses inputs longer than [`MAX_SNAPSHOT_LEN`];
//! [`Session::restore`](crate::Session::restore) checks the snapshot's
//! consistency against its suite.

use crate::config::SessionConfig;
use crate::error::SnapshotError;
use crate::keys::{ChainKey, EpochKeys};
use crate::replay::ReplayWindow;
use confidant_core::{ConnectionId, Role};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// The longest snapshot accepted: room for two replay windows of the largest
/// size plus keys.
pub const MAX_SNAPSHOT_LEN: usize = 64 * 1024;

/// The state of a session, secrets included.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    pub(crate) role: Role,
    pub(crate) connection_id: ConnectionId,
    pub(crate) suite: u32,
    pub(crate) config: SessionConfig,
    pub(crate) binding: [u8; 32],
    pub(crate) send: SendSnapshot,
    pub(crate) recv: RecvSnapshot,
    pub(crate) peer_requested_update: bool,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SendSnapshot {
    pub(crate) epoch: u32,
    pub(crate) next_counter: u64,
    pub(crate) keys: EpochKeys,
    pub(crate) next_chain: ChainKey,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecvSnapshot {
    pub(crate) current: RecvEpochSnapshot,
    pub(crate) next_chain: ChainKey,
    pub(crate) previous: Option<RecvEpochSnapshot>,
    pub(crate) received_in_current: u64,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecvEpochSnapshot {
    pub(crate) epoch: u32,
    pub(crate) keys: EpochKeys,
    pub(crate) window: ReplayWindow,
}

impl fmt::Debug for SessionSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSnapshot")
            .field("role", &self.role)
            .field("connection_id", &self.connection_id)
            .field("suite", &self.suite)
            .field("send_epoch", &self.send.epoch)
            .field("next_send_counter", &self.send.next_counter)
            .field("recv_epoch", &self.recv.current.epoch)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl SessionSnapshot {
    /// The connection the session protects.
    pub fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    /// The counter the next sealed message will carry.
    pub fn next_send_counter(&self) -> u64 {
        self.send.next_counter
    }

    /// The sending epoch.
    pub fn send_epoch(&self) -> u32 {
        self.send.epoch
    }

    /// Encodes the snapshot. The bytes hold keys: they are wiped when
    /// dropped, and they are written into one buffer sized up front, so no
    /// outgrown copy is left in freed memory.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, SnapshotError> {
        // Two windows of `replay_window / 64` words, each at most 10 bytes
        // as a varint, plus keys, ids and counters well within 1 KiB.
        let window_bytes = (self.config.replay_window as usize / 64) * 10 + 16;
        let capacity = (2 * window_bytes + 1024).min(MAX_SNAPSHOT_LEN);
        let mut buffer = Zeroizing::new(vec![0u8; capacity]);
        let (format, body) = buffer
            .split_first_mut()
            .ok_or_else(|| SnapshotError::Malformed("empty buffer".into()))?;
        *format = SNAPSHOT_FORMAT;
        let used = postcard::to_slice(self, body)
            .map_err(|error| SnapshotError::Malformed(error.to_string()))?
            .len();
        buffer.truncate(1 + used);
        Ok(buffer)
    }

    /// Decodes a snapshot written by [`SessionSnapshot::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() > MAX_SNAPSHOT_LEN {
            return Err(SnapshotError::Malformed(format!(
                "{} bytes is longer than the {MAX_SNAPSHOT_LEN}-byte limit",
                bytes.len()
            )));
        }
        let Some((&format, body)) = bytes.split_first() else {
            return Err(SnapshotError::Malformed("empty input".into()));
        };
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::UnsupportedFormat {
                found: format,
                supported: SNAPSHOT_FORMAT,
            });
        }
        let (snapshot, rest) = postcard::take_from_bytes::<Self>(body)
            .map_err(|error| SnapshotError::Malformed(error.to_string()))?;
        if !rest.is_empty() {
            return Err(SnapshotError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Session, SessionConfig};
    use confidant_core::{AgreedSecret, SuiteRegistry};

    fn snapshot_and_registry() -> (SessionSnapshot, SuiteRegistry) {
        let mut registry = SuiteRegistry::new();
        confidant_aes_gcm::register(&mut registry).unwrap();
        let suite = confidant_aes_gcm::aes_256_gcm_lfsr();
        let agreed = AgreedSecret::new([5; 32], vec![], None);
        let connection = ConnectionId::new("c").unwrap();
        let session = Session::new(
            Role::Initiator,
            connection,
            suite,
            &agreed,
            SessionConfig::default(),
        )
        .unwrap();
        (session.snapshot(), registry)
    }

    #[test]
    fn the_largest_snapshot_fits_its_buffer() {
        let mut registry = SuiteRegistry::new();
        confidant_aes_gcm::register(&mut registry).unwrap();
        let agreed = AgreedSecret::new([5; 32], vec![7; 200], None);
        let config = SessionConfig::default().with_replay_window(crate::MAX_WINDOW);
        let session = Session::new(
            Role::Responder,
            ConnectionId::new("c".repeat(128)).unwrap(),
            confidant_aes_gcm::aes_256_gcm_lfsr(),
            &agreed,
            config,
        )
        .unwrap();
        let mut snapshot = session.snapshot();
        // Dense windows: every word all ones, the longest varint encoding.
        snapshot.recv.current.window =
            ReplayWindow::full_for_tests(crate::MAX_WINDOW, u64::MAX - 1);
        snapshot.recv.previous = Some(RecvEpochSnapshot {
            epoch: 0,
            keys: snapshot.recv.current.keys.clone(),
            window: ReplayWindow::full_for_tests(crate::MAX_WINDOW, u64::MAX - 1),
        });
        snapshot.recv.current.epoch = u32::MAX;
        snapshot.send.next_counter = u64::MAX;
        let bytes = snapshot.to_bytes().unwrap();
        assert!(bytes.len() > 2 * 8192, "{}", bytes.len());
        assert!(bytes.len() <= MAX_SNAPSHOT_LEN);
        assert_eq!(SessionSnapshot::from_bytes(&bytes).unwrap(), snapshot);
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let (good, registry) = snapshot_and_registry();
        assert!(Session::restore(&good, &registry).is_ok());

        let mut short_key = good.clone();
        short_key.send.keys.key.truncate(16);
        assert!(matches!(
            Session::restore(&short_key, &registry),
            Err(SnapshotError::Inconsistent(_))
        ));

        let mut other_window = good.clone();
        other_window.config.replay_window = 2048;
        assert!(matches!(
            Session::restore(&other_window, &registry),
            Err(SnapshotError::Inconsistent(_))
        ));

        let mut previous_after_current = good.clone();
        previous_after_current.recv.previous = Some(good.recv.current.clone());
        assert!(matches!(
            Session::restore(&previous_after_current, &registry),
            Err(SnapshotError::Inconsistent(_))
        ));

        let mut zero_seed = good.clone();
        zero_seed.send.keys.iv_seed.iter_mut().for_each(|b| *b = 0);
        assert!(matches!(
            Session::restore(&zero_seed, &registry),
            Err(SnapshotError::Session(_))
        ));

        let mut bad_config = good;
        bad_config.config.soft_limit_percent = 0;
        assert!(matches!(
            Session::restore(&bad_config, &registry),
            Err(SnapshotError::Session(_))
        ));
    }
}
