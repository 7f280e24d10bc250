//! Identifiers and roles: who is talking, on which connection, in which direction.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this crate speaks. It is carried in every
/// [`Envelope`](crate::wire::Envelope) and bound into every message's
/// associated data.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest connection id accepted, in bytes.
pub const MAX_CONNECTION_ID_LEN: usize = 128;

/// Identifies one connection between two parties, as assigned by the connector.
///
/// A connection id is 1 to [`MAX_CONNECTION_ID_LEN`] bytes of printable ASCII
/// (no spaces or control characters), so it can be logged, used as a storage
/// key and compared byte for byte.
///
/// ```
/// use confidant_core::ConnectionId;
/// let id = ConnectionId::new("conn-42").unwrap();
/// assert_eq!(id.as_str(), "conn-42");
/// assert!(ConnectionId::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConnectionId(String);

/// Why a string is not a valid [`ConnectionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidConnectionId {
    /// The id is empty.
    #[error("connection id is empty")]
    Empty,
    /// The id is longer than [`MAX_CONNECTION_ID_LEN`] bytes.
    #[error("connection id is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// The id contains a byte that is not printable ASCII.
    #[error("connection id contains a byte that is not printable ASCII at offset {offset}")]
    InvalidByte {
        /// Offset of the first offending byte.
        offset: usize,
    },
}

impl ConnectionId {
    /// Validates and wraps a connection id.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidConnectionId> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidConnectionId::Empty);
        }
        if id.len() > MAX_CONNECTION_ID_LEN {
            return Err(InvalidConnectionId::TooLong {
                len: id.len(),
                max: MAX_CONNECTION_ID_LEN,
            });
        }
        if let Some(offset) = id.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(InvalidConnectionId::InvalidByte { offset });
        }
        Ok(Self(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl TryFrom<String> for ConnectionId {
    type Error = InvalidConnectionId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for ConnectionId {
    type Error = InvalidConnectionId;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ConnectionId> for String {
    fn from(value: ConnectionId) -> Self {
        value.0
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({:?})", self.0)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A party's role in the X3DH handshake.
///
/// In Confidant's scenario the **holder** (wallet) is the initiator (Alice in
/// the X3DH specification) and the **issuer** is the responder (Bob).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Alice: fetches the bundle, runs X3DH, sends the initial message.
    Initiator,
    /// Bob: publishes or sends the bundle, answers the initial message.
    Responder,
}

impl Role {
    /// The other party's role.
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }

    /// The direction in which this role sends.
    pub fn sending(self) -> Direction {
        match self {
            Role::Initiator => Direction::InitiatorToResponder,
            Role::Responder => Direction::ResponderToInitiator,
        }
    }

    /// The direction in which this role receives.
    pub fn receiving(self) -> Direction {
        self.peer().sending()
    }
}

/// One of the two directions of a connection. Each has its own keys,
/// counters and epochs: one key is never used for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Messages sealed by the initiator, opened by the responder.
    InitiatorToResponder,
    /// Messages sealed by the responder, opened by the initiator.
    ResponderToInitiator,
}

impl Direction {
    /// The byte that stands for this direction in associated data and key
    /// derivation labels.
    pub fn to_byte(self) -> u8 {
        match self {
            Direction::InitiatorToResponder => 1,
            Direction::ResponderToInitiator => 2,
        }
    }

    /// A short label used in key derivation: `"i2r"` or `"r2i"`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::InitiatorToResponder => "i2r",
            Direction::ResponderToInitiator => "r2i",
        }
    }
}

/// The registered numeric id of a cipher suite (AEAD + IV strategy). It goes
/// on the wire and into the associated data of every message.
///
/// Ids below [`SuiteId::PRIVATE_USE_START`] are registered by the Confidant
/// project; a user's own suites take ids from the private-use range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SuiteId(pub u32);

impl SuiteId {
    /// AES-256-GCM with a 16-byte nonce, IV = first 16 bytes of SHA-256 of
    /// the counter. The default suite.
    pub const AES_256_GCM_SHA256_COUNTER: SuiteId = SuiteId(1);
    /// AES-256-GCM with a 16-byte nonce, IV = state of a 128-bit LFSR.
    pub const AES_256_GCM_LFSR: SuiteId = SuiteId(2);
    /// ChaCha20-Poly1305, IV = the counter as a 96-bit big-endian integer.
    pub const CHACHA20_POLY1305_COUNTER: SuiteId = SuiteId(3);
    /// First id of the range that users may assign to their own suites.
    pub const PRIVATE_USE_START: u32 = 0x8000_0000;

    /// Whether this id lies in the private-use range.
    pub fn is_private_use(self) -> bool {
        self.0 >= Self::PRIVATE_USE_START
    }
}

impl fmt::Display for SuiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// What a sealed message carries. It is bound into the associated data, so a
/// control message can never be passed off as an application message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentType {
    /// Bytes for the application.
    Application,
    /// A [`KeyUpdateBody`](crate::wire::KeyUpdateBody) announcing a new epoch.
    KeyUpdate,
}

impl ContentType {
    /// The byte that stands for this content type in associated data.
    pub fn to_byte(self) -> u8 {
        match self {
            ContentType::Application => 1,
            ContentType::KeyUpdate => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_id_validation() {
        assert!(ConnectionId::new("a").is_ok());
        assert_eq!(ConnectionId::new(""), Err(InvalidConnectionId::Empty));
        assert_eq!(
            ConnectionId::new("x".repeat(129)),
            Err(InvalidConnectionId::TooLong { len: 129, max: 128 })
        );
        assert!(ConnectionId::new("x".repeat(128)).is_ok());
        assert_eq!(
            ConnectionId::new("ab c"),
            Err(InvalidConnectionId::InvalidByte { offset: 2 })
        );
        assert_eq!(
            ConnectionId::new("é"),
            Err(InvalidConnectionId::InvalidByte { offset: 0 })
        );
    }

    #[test]
    fn directions_are_separated() {
        assert_eq!(Role::Initiator.sending(), Role::Responder.receiving());
        assert_eq!(Role::Responder.sending(), Role::Initiator.receiving());
        assert_ne!(Role::Initiator.sending(), Role::Initiator.receiving());
        assert_ne!(
            Direction::InitiatorToResponder.to_byte(),
            Direction::ResponderToInitiator.to_byte()
        );
    }
}
