//! # confidant-session
//!
//! The per-connection session state machine. Pure: bytes in, bytes out; no
//! I/O, no clock, no threads.
//!
//! A [`Session`] is what a key agreement leaves behind. It keeps one key per
//! direction (never one key for both: two parties counting from zero under a
//! shared key would reuse every IV), a sending counter that travels in the
//! clear in every message, a bounded replay window for the receiving
//! direction, the suite's limits, and key epochs.
//!
//! * [`Session::seal`] refuses to seal at the suite's hard limit;
//!   [`Session::key_status`] recommends an update at the soft limit.
//! * [`Session::open`] checks connection id, suite, length, counter range,
//!   epoch and replay window, then the tag; only after the tag verifies does
//!   it change any state.
//! * [`Session::update_sending_key`] moves the sending direction to the next
//!   epoch; the receiver follows when the announcement (or any message of
//!   the new epoch) verifies.
//! * [`Session::snapshot`] and [`Session::restore`] persist the whole state.
//! * A session reset is a fresh key agreement: [`handshake::initiate`] and
//!   [`handshake::respond`] build a new session that replaces the old one.
//!
//! The key schedule and the associated data are described in
//! `docs/protocol.md` and in the source of the `keys` module.
//!
//! ```
//! use std::sync::Arc;
//! use confidant_core::{AgreedSecret, ConnectionId, Role, Suite};
//! use confidant_session::{Session, SessionConfig};
//!
//! let suite: Arc<dyn Suite> = confidant_aes_gcm::aes_256_gcm_sha256_counter();
//! // In real use the secret comes from X3DH; see `handshake`.
//! let agreed = AgreedSecret::new([7; 32], b"IK_A || IK_B".to_vec(), None);
//! let connection = ConnectionId::new("conn-1").unwrap();
//! let mut holder = Session::new(Role::Initiator, connection.clone(), suite.clone(), &agreed, SessionConfig::default()).unwrap();
//! let mut issuer = Session::new(Role::Responder, connection, suite, &agreed, SessionConfig::default()).unwrap();
//!
//! let sealed = holder.seal(b"hello issuer").unwrap();
//! assert_eq!(issuer.open(sealed.clone()).unwrap(), b"hello issuer");
//! // The same message again is a replay.
//! assert!(issuer.open(sealed).is_err());
//! let reply = issuer.seal(b"hello holder").unwrap();
//! assert_eq!(holder.open(reply).unwrap(), b"hello holder");
//! ```

mod config;
mod error;
pub mod handshake;
mod keys;
mod replay;
mod session;
mod snapshot;

pub use config::{InvalidConfig, SessionConfig};
pub use error::{OpenError, SealError, SessionError, SnapshotError};
pub use replay::{MAX_WINDOW, MIN_WINDOW, ReplayError, ReplayWindow};
pub use session::{ASSOCIATED_DATA_LEN, KeyStatus, KeyUpdateReceived, Session};
pub use snapshot::{MAX_SNAPSHOT_LEN, SNAPSHOT_FORMAT, SessionSnapshot};
