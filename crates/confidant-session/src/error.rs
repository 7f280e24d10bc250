//! Errors, by operation. Each says whose fault it is: the caller's
//! (misuse), the peer's or the relay's (bad input), or an internal one.

use crate::config::InvalidConfig;
use crate::replay::ReplayError;
use confidant_core::wire::DecodeError;
use confidant_core::{ConnectionId, SuiteError, SuiteId, UnknownSuite};
use thiserror::Error;

/// A session could not be created or restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The configuration is out of range (caller).
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    /// The suite refused the derived keys (a plugin bug or an unusable
    /// suite).
    #[error("cipher suite refused its keys: {0}")]
    Suite(#[from] SuiteError),
    /// The suite of a snapshot or initial message is not registered.
    #[error(transparent)]
    UnknownSuite(#[from] UnknownSuite),
    /// HKDF refused to derive the requested key material (a suite asked for
    /// keys longer than 64 bytes).
    #[error(
        "key derivation failed: the suite asks for more key material than HKDF-SHA-256 may give"
    )]
    KeyDerivation,
}

/// A message could not be sealed. Nothing was consumed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The sending key has sealed as many messages as its suite allows: call
    /// [`Session::update_sending_key`](crate::Session::update_sending_key).
    #[error("sending key of epoch {epoch} is exhausted after {limit} messages; update the key")]
    KeyExhausted {
        /// The sending epoch.
        epoch: u32,
        /// The hard limit that was reached.
        limit: u64,
    },
    /// The plaintext is longer than the session accepts.
    #[error("plaintext is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The sending epoch cannot advance any further.
    #[error("no epoch is left after {0}; reset the session")]
    EpochsExhausted(u32),
    /// [`Session::seal_key_update`](crate::Session::seal_key_update) was
    /// called with no key update begun (or its announcement already
    /// sealed) (caller).
    #[error("no key update was begun, or its announcement is already sealed")]
    NoKeyUpdateBegun,
    /// The cipher refused to seal (a plugin bug).
    #[error("cipher refused to seal: {0}")]
    Cipher(String),
    /// A new epoch's keys could not be derived.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A received message was refused. The session's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The message belongs to another connection.
    #[error("message is for connection {got}, this session is {expected}")]
    WrongConnection {
        /// This session's connection.
        expected: ConnectionId,
        /// The message's connection id, as received.
        got: String,
    },
    /// The message names a suite other than the session's.
    #[error("message uses suite {got}, this session uses {expected}")]
    WrongSuite {
        /// This session's suite.
        expected: SuiteId,
        /// The message's suite.
        got: SuiteId,
    },
    /// The content is shorter than an authentication tag.
    #[error("message content is {len} bytes long, shorter than a tag")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The content is longer than the session accepts.
    #[error("message content is {len} bytes long, the limit is {max}")]
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The counter is at or beyond the per-key limit, so no honest sender
    /// could have used it.
    #[error("counter {counter} is beyond the per-key limit {limit}")]
    CounterOutOfRange {
        /// The counter.
        counter: u64,
        /// The limit.
        limit: u64,
    },
    /// The epoch is neither the current nor the retained previous one, nor
    /// a reachable next one.
    #[error("message epoch {got} is not acceptable (current receiving epoch {current})")]
    UnacceptableEpoch {
        /// The current receiving epoch.
        current: u32,
        /// The message's epoch.
        got: u32,
    },
    /// The counter was seen already or lies below the replay window.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The receiving key of `epoch` has seen as many failed opens as its
    /// suite's integrity limit allows: it opens nothing more (RFC 9001
    /// §6.6). The peer must move to a new epoch.
    #[error("the receiving key of epoch {epoch} reached its integrity limit")]
    IntegrityLimit {
        /// The epoch of the exhausted key.
        epoch: u32,
    },
    /// The tag did not verify: the message was forged, altered, or sealed
    /// under other keys. Deliberately says nothing more.
    #[error("message authentication failed")]
    Authentication,
    /// The plaintext of a control message is malformed (after a valid tag,
    /// so the peer's fault).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The next epoch's keys could not be derived.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A snapshot could not be decoded or restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not a snapshot.
    #[error("malformed session snapshot: {0}")]
    Malformed(String),
    /// The snapshot was written by an unknown format version.
    #[error("session snapshot format {found} is not supported (this build reads {supported})")]
    UnsupportedFormat {
        /// The version found.
        found: u8,
        /// The version supported.
        supported: u8,
    },
    /// The snapshot is well formed but inconsistent.
    #[error("inconsistent session snapshot: {0}")]
    Inconsistent(&'static str),
    /// The snapshot's session could not be rebuilt.
    #[error(transparent)]
    Session(#[from] SessionError),
}
