//! Confidant's connection protocol, without I/O.
//!
//! Everything a connection does — the X3DH handshake at first contact,
//! resets, key updates, the resend of an unanswered initial message, what
//! each delivery does to the store — is a state machine here, in the style
//! of `quinn-proto` beneath `quinn`: plain types, no threads, no async, no
//! clock, and no randomness or store writes it was not handed. A driver
//! (the actix runtime in `confidant-actors`, the bindings, the browser
//! build, a test) feeds it inputs and carries out the [`Effects`] it
//! returns:
//!
//! ```text
//!   driver                                  engine (Connection)
//!   ──────                                  ───────────────────
//!   load(store, id)                    ──▶  record + session read
//!   deliver(store, deliveries)         ──▶  open, stage, handshake steps
//!   send(messages) / reset()           ──▶  seal (after reservations)
//!                                      ◀──  Effects { commits, send, events,
//!                                                     ack, release, outcome }
//!   commit each batch, then
//!   committed(id, Ok(numbers) | Err)   ──▶  apply what the commit brings:
//!                                      ◀──  the envelopes and events that
//!                                           depended on it
//! ```
//!
//! **Memory never runs ahead of the store.** A new record or session, an
//! envelope that may leave only once something is durable (a bundle after
//! its one-time pre-key, an initial message after its session, a message
//! after its counter's reservation, a key update's announcement after its
//! epoch), and the events that report them, are held until the driver
//! reports the commit succeeded. A failed commit leaves the connection
//! [stale](Connection::is_stale): the driver drops it and loads it again.
//!
//! # Example
//!
//! Two engines, a memory store each, and a driver loop that commits every
//! batch and hands every envelope straight to the other side:
//! see `tests/engine.rs` in this crate, which drives every handshake and
//! reset path this way.

pub mod binding;
pub mod connection;
pub mod context;
pub mod error;
pub mod event;
pub mod extras;
pub mod failure;
pub mod hybrid;
pub mod records;
pub mod setup;

pub use connection::{
    Commit, CommitId, CommitKind, Connection, DeliveryId, Effects, Item, Outbound,
    REFUSALS_BEFORE_RESET, Report,
};
pub use context::{Context, Handshaker, ProtocolConfig, Random};
pub use error::EngineError;
pub use event::{ConnectionInfo, ConnectionState, Event, IncomingMessage};
pub use failure::HandshakeFailure;
pub use records::{ConnectionRecord, Phase, Side};

/// Entry points for the fuzz targets (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a stored connection record. `None`: it does not decode (an
    /// error, never a panic); `Some(same)`: whether re-encoding what
    /// decoded gives back the same record.
    pub fn connection_record(bytes: &[u8]) -> Option<bool> {
        use crate::records::ConnectionRecord;
        let record = ConnectionRecord::decode(bytes).ok()?;
        Some(
            record
                .encode()
                .ok()
                .and_then(|again| ConnectionRecord::decode(&again).ok())
                .is_some_and(|again| again == record),
        )
    }
}
