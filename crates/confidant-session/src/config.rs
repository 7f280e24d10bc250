//! Session settings.

use crate::replay::{MAX_WINDOW, MIN_WINDOW};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid session config: {0}")]
pub struct InvalidConfig(pub &'static str);

/// How a session behaves. The defaults suit most uses.
///
/// ```
/// use confidant_session::SessionConfig;
/// let config = SessionConfig::default().with_replay_window(4096);
/// assert!(config.validate().is_ok());
/// assert!(SessionConfig::default().with_replay_window(100).validate().is_err());
/// assert!(SessionConfig::default().with_replay_window(192).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionConfig {
    /// How many counters the replay window covers: a message whose counter is
    /// this far or more below the highest received one is refused. A power
    /// of two from 64 to 65,536. Default 1,024.
    pub replay_window: u32,
    /// Lowers the number of messages one sending key may seal (the hard
    /// limit) below the suite's own limit; `None` keeps the suite's.
    pub max_messages_per_epoch: Option<u64>,
    /// At what share of the hard limit, in percent, the session recommends a
    /// key update (the soft limit). 1 to 100. Default 75.
    pub soft_limit_percent: u8,
    /// Longest plaintext accepted for sealing or opening, in bytes (also
    /// capped by the suite). At least 64. Default 16 MiB.
    pub max_plaintext_len: u64,
    /// How many epochs ahead of the current one a received message may be
    /// (the peer updated its key and the messages between were lost). 1 to
    /// 1,024. Default 16.
    pub max_epoch_skip: u32,
    /// After moving to a new receiving epoch, how many messages of the new
    /// epoch are received before the previous epoch's key is forgotten. Late
    /// messages of the previous epoch open until then. Default 1,024.
    pub previous_epoch_grace: u64,
    /// Lowers the suite's integrity limit (failed opens per receiving key),
    /// for tests; `None`: the suite's limit. Not stored in snapshots: a
    /// restored session uses the suite's limit.
    #[serde(skip)]
    pub max_failed_opens_per_key: Option<u64>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            replay_window: 1024,
            max_messages_per_epoch: None,
            soft_limit_percent: 75,
            max_plaintext_len: 16 * 1024 * 1024,
            max_epoch_skip: 16,
            previous_epoch_grace: 1024,
            max_failed_opens_per_key: None,
        }
    }
}

impl SessionConfig {
    /// Sets [`SessionConfig::replay_window`].
    pub fn with_replay_window(mut self, counters: u32) -> Self {
        self.replay_window = counters;
        self
    }

    /// Sets [`SessionConfig::max_messages_per_epoch`].
    pub fn with_max_messages_per_epoch(mut self, limit: u64) -> Self {
        self.max_messages_per_epoch = Some(limit);
        self
    }

    /// Sets [`SessionConfig::soft_limit_percent`].
    pub fn with_soft_limit_percent(mut self, percent: u8) -> Self {
        self.soft_limit_percent = percent;
        self
    }

    /// Sets [`SessionConfig::max_plaintext_len`].
    pub fn with_max_plaintext_len(mut self, bytes: u64) -> Self {
        self.max_plaintext_len = bytes;
        self
    }

    /// Sets [`SessionConfig::max_epoch_skip`].
    pub fn with_max_epoch_skip(mut self, epochs: u32) -> Self {
        self.max_epoch_skip = epochs;
        self
    }

    /// Sets [`SessionConfig::max_failed_opens_per_key`].
    pub fn with_max_failed_opens_per_key(mut self, limit: u64) -> Self {
        self.max_failed_opens_per_key = Some(limit);
        self
    }

    /// Sets [`SessionConfig::previous_epoch_grace`].
    pub fn with_previous_epoch_grace(mut self, messages: u64) -> Self {
        self.previous_epoch_grace = messages;
        self
    }

    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&self.replay_window)
            || !self.replay_window.is_power_of_two()
        {
            return Err(InvalidConfig(
                "replay_window must be a power of two from 64 to 65536",
            ));
        }
        // A key update announcement takes counter 0 of the new epoch, so an
        // epoch must hold at least one more message than that.
        if self.max_messages_per_epoch.is_some_and(|limit| limit < 2) {
            return Err(InvalidConfig("max_messages_per_epoch must be at least 2"));
        }
        // A key update announcement must fit.
        if self.max_failed_opens_per_key == Some(0) {
            return Err(InvalidConfig("max_failed_opens_per_key must be at least 1"));
        }
        if self.max_plaintext_len < 64 {
            return Err(InvalidConfig("max_plaintext_len must be at least 64"));
        }
        if !(1..=100).contains(&self.soft_limit_percent) {
            return Err(InvalidConfig("soft_limit_percent must be from 1 to 100"));
        }
        if !(1..=1024).contains(&self.max_epoch_skip) {
            return Err(InvalidConfig("max_epoch_skip must be from 1 to 1024"));
        }
        Ok(())
    }
}
