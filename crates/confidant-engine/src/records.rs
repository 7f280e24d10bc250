//! The runtime's own records in the store: one per connection
//! ([`Table::Connections`]) and one per unused invitation
//! ([`Table::Invitations`]). Encoded with postcard behind a version byte.

use confidant_core::ConnectionId;
use confidant_store::{RawStore, StoreError, Table, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Version 2 added the handshake bindings (invitation token, reset nonce)
/// and the reset bundle's key, version 3 whether the invitation promised
/// the hybrid; versions 1 and 2 are still read.
const RECORD_VERSION: u8 = 3;
const RECORD_VERSION_2: u8 = 2;
const RECORD_VERSION_1: u8 = 1;

/// Which side of the handshake this node is on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// Created the invitation; sends the bundle and answers the initial
    /// message (the issuer; X3DH's responder).
    Inviter,
    /// Accepted the invitation; checks the bundle and sends the initial
    /// message (the holder; X3DH's initiator).
    Invitee,
}

/// Where a connection's handshake stands. Its `Debug` form hides the
/// greeting.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Invitee: joined, waiting for the inviter's bundle. The greeting is
    /// sealed into the initial message.
    AwaitingBundle {
        /// The first message to send.
        greeting: Vec<u8>,
    },
    /// Inviter: the bundle is sent with this one-time pre-key; waiting for
    /// the initial message.
    BundleSent {
        /// The one-time pre-key the bundle offered.
        one_time_pre_key: u32,
    },
    /// A session exists.
    Established,
}

/// The runtime's record of one connection.
///
/// Its `Debug` form shows lengths, not contents: the greeting is the
/// application's plaintext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// This node's side.
    pub side: Side,
    /// The other party's identity key: for an invitee the one from the
    /// invitation (checked against the bundle), for an inviter the one from
    /// the initial message. `None` for an inviter before the handshake.
    pub peer_identity: Option<[u8; 32]>,
    /// The handshake phase.
    pub phase: Phase,
    /// Invitee: the initial message, kept until the inviter's first message
    /// arrives, and sent again when the node starts (a crash between storing
    /// the session and sending it would otherwise strand the connection).
    pub pending_initial: Option<Vec<u8>>,
    /// Invitee: a reset was asked for; the next valid bundle replaces the
    /// session. Without it a bundle on an established connection is
    /// ignored, so a relay replaying an old bundle cannot break it.
    pub reset_requested: bool,
    /// Inviter: the one-time pre-key of a bundle sent for a reset.
    pub reset_one_time_pre_key: Option<u32>,
    /// Both sides, first contact: the invitation's token, which the
    /// inviter's bundle is bound to (with the connection id), so a bundle
    /// cannot be moved from one handshake into another. `None` in records
    /// written before version 2.
    pub invitation_token: Option<String>,
    /// Invitee: the nonce of its pending reset request, which the answering
    /// bundle must be bound to. Inviter: the nonce of the reset request its
    /// `reset_one_time_pre_key` bundle answers (a copy of that request gets
    /// the same bundle again).
    pub reset_nonce: Option<Vec<u8>>,
    /// Invitee: the one-time pre-key of the reset bundle it answered; a copy
    /// of that bundle makes it send its initial message again, nothing more.
    pub reset_bundle_key: Option<u32>,
    /// Invitee: the invitation said the inviter has the post-quantum hybrid,
    /// so every bundle of this connection (first contact and resets) must
    /// carry it; one without it was stripped and is refused. `false` in
    /// records written before version 3.
    pub hybrid_required: bool,
}

/// The layout of version 2 records.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ConnectionRecordV2 {
    side: Side,
    peer_identity: Option<[u8; 32]>,
    phase: Phase,
    pending_initial: Option<Vec<u8>>,
    reset_requested: bool,
    reset_one_time_pre_key: Option<u32>,
    invitation_token: Option<String>,
    reset_nonce: Option<Vec<u8>>,
    reset_bundle_key: Option<u32>,
}

impl From<ConnectionRecordV2> for ConnectionRecord {
    fn from(old: ConnectionRecordV2) -> Self {
        Self {
            side: old.side,
            peer_identity: old.peer_identity,
            phase: old.phase,
            pending_initial: old.pending_initial,
            reset_requested: old.reset_requested,
            reset_one_time_pre_key: old.reset_one_time_pre_key,
            invitation_token: old.invitation_token,
            reset_nonce: old.reset_nonce,
            reset_bundle_key: old.reset_bundle_key,
            hybrid_required: false,
        }
    }
}

/// The layout of version 1 records.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ConnectionRecordV1 {
    side: Side,
    peer_identity: Option<[u8; 32]>,
    phase: Phase,
    pending_initial: Option<Vec<u8>>,
    reset_requested: bool,
    reset_one_time_pre_key: Option<u32>,
}

impl From<ConnectionRecordV1> for ConnectionRecord {
    fn from(old: ConnectionRecordV1) -> Self {
        Self {
            side: old.side,
            peer_identity: old.peer_identity,
            phase: old.phase,
            pending_initial: old.pending_initial,
            reset_requested: old.reset_requested,
            reset_one_time_pre_key: old.reset_one_time_pre_key,
            invitation_token: None,
            reset_nonce: None,
            reset_bundle_key: None,
            hybrid_required: false,
        }
    }
}

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AwaitingBundle { greeting } => f
                .debug_struct("AwaitingBundle")
                .field("greeting_len", &greeting.len())
                .finish(),
            Self::BundleSent { one_time_pre_key } => f
                .debug_struct("BundleSent")
                .field("one_time_pre_key", one_time_pre_key)
                .finish(),
            Self::Established => f.write_str("Established"),
        }
    }
}

impl std::fmt::Debug for ConnectionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRecord")
            .field("side", &self.side)
            .field("peer_identity", &self.peer_identity.map(hex::encode))
            .field("phase", &self.phase)
            .field(
                "pending_initial_len",
                &self.pending_initial.as_ref().map(Vec::len),
            )
            .field("reset_requested", &self.reset_requested)
            .field("reset_one_time_pre_key", &self.reset_one_time_pre_key)
            .field("has_invitation_token", &self.invitation_token.is_some())
            .field("reset_nonce", &self.reset_nonce.as_ref().map(hex::encode))
            .field("reset_bundle_key", &self.reset_bundle_key)
            .field("hybrid_required", &self.hybrid_required)
            .finish()
    }
}

impl ConnectionRecord {
    /// The stored form: a version byte, then postcard.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut bytes = Zeroizing::new(vec![RECORD_VERSION]);
        let body = Zeroizing::new(
            postcard::to_allocvec(self)
                .map_err(|_| StoreError::Inconsistent("connection record does not encode"))?,
        );
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Reads a stored record (this version, version 2 or version 1); an
    /// error, never a panic, for bytes that are not one.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, body)) => postcard::from_bytes(body)
                .map_err(|error| StoreError::Corrupt(format!("connection record: {error}"))),
            Some((&RECORD_VERSION_2, body)) => postcard::from_bytes::<ConnectionRecordV2>(body)
                .map(Self::from)
                .map_err(|error| StoreError::Corrupt(format!("connection record: {error}"))),
            Some((&RECORD_VERSION_1, body)) => postcard::from_bytes::<ConnectionRecordV1>(body)
                .map(Self::from)
                .map_err(|error| StoreError::Corrupt(format!("connection record: {error}"))),
            Some((version, _)) => Err(StoreError::Corrupt(format!(
                "connection record version {version} is not supported"
            ))),
            None => Err(StoreError::Corrupt("empty connection record".into())),
        }
    }

    /// Adds the record to `batch`, replacing the stored one.
    pub fn put(&self, batch: &mut WriteBatch, id: &ConnectionId) -> Result<(), StoreError> {
        batch.push(WriteOp::Put {
            table: Table::Connections,
            key: id.as_bytes().to_vec(),
            value: self.encode()?,
        });
        Ok(())
    }

    /// Adds the record of a new connection: the batch fails with
    /// [`StoreError::AlreadyExists`] if `id` has a record already, so an id
    /// that the relay assigns can never replace another connection.
    pub fn insert(&self, batch: &mut WriteBatch, id: &ConnectionId) -> Result<(), StoreError> {
        batch.push(WriteOp::Insert {
            table: Table::Connections,
            key: id.as_bytes().to_vec(),
            value: self.encode()?,
        });
        Ok(())
    }

    /// The stored record of connection `id`.
    pub fn load<S: RawStore + ?Sized>(
        store: &S,
        id: &ConnectionId,
    ) -> Result<Option<Self>, StoreError> {
        store
            .get(Table::Connections, id.as_bytes())?
            .map(|bytes| Self::decode(&bytes))
            .transpose()
    }

    /// Every connection record, by connection id.
    pub fn all<S: RawStore + ?Sized>(store: &S) -> Result<Vec<(ConnectionId, Self)>, StoreError> {
        store
            .entries(Table::Connections)?
            .into_iter()
            .map(|(key, value)| {
                let id = String::from_utf8(key)
                    .ok()
                    .and_then(|id| ConnectionId::new(id).ok())
                    .ok_or_else(|| StoreError::Corrupt("malformed connection id".into()))?;
                Ok((id, Self::decode(&value)?))
            })
            .collect()
    }
}

/// An invitation this node created, kept until it is used.
pub fn put_invitation(batch: &mut WriteBatch, token: &str) {
    batch.push(WriteOp::Put {
        table: Table::Invitations,
        key: token.as_bytes().to_vec(),
        value: Zeroizing::new(vec![RECORD_VERSION]),
    });
}

/// Adds the deletion of an invitation's token to `batch`.
pub fn delete_invitation(batch: &mut WriteBatch, token: &str) {
    batch.push(WriteOp::Delete {
        table: Table::Invitations,
        key: token.as_bytes().to_vec(),
    });
}

/// Whether the invitation with `token` is stored (issued here and not
/// used yet).
pub fn has_invitation<S: RawStore + ?Sized>(store: &S, token: &str) -> Result<bool, StoreError> {
    Ok(store.get(Table::Invitations, token.as_bytes())?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_errors() {
        let record = ConnectionRecord {
            side: Side::Invitee,
            peer_identity: Some([7; 32]),
            phase: Phase::AwaitingBundle {
                greeting: b"hello".to_vec(),
            },
            pending_initial: Some(vec![1, 2, 3]),
            reset_requested: true,
            reset_one_time_pre_key: None,
            invitation_token: Some("token".into()),
            reset_nonce: Some(vec![9; 16]),
            reset_bundle_key: Some(4),
            hybrid_required: true,
        };
        let bytes = record.encode().unwrap();
        assert_eq!(ConnectionRecord::decode(&bytes).unwrap(), record);
        assert!(ConnectionRecord::decode(&[]).is_err());
        assert!(ConnectionRecord::decode(&[3, 0]).is_err());
        for cut in 1..bytes.len() {
            assert!(ConnectionRecord::decode(&bytes[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn version_1_records_are_still_read() {
        let old = ConnectionRecordV1 {
            side: Side::Inviter,
            peer_identity: Some([3; 32]),
            phase: Phase::Established,
            pending_initial: None,
            reset_requested: false,
            reset_one_time_pre_key: Some(11),
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        let record = ConnectionRecord::decode(&bytes).unwrap();
        assert_eq!(record.side, Side::Inviter);
        assert_eq!(record.peer_identity, Some([3; 32]));
        assert_eq!(record.reset_one_time_pre_key, Some(11));
        assert_eq!(record.invitation_token, None);
    }

    #[test]
    fn version_2_records_are_still_read() {
        let old = ConnectionRecordV2 {
            side: Side::Invitee,
            peer_identity: Some([4; 32]),
            phase: Phase::Established,
            pending_initial: Some(vec![5]),
            reset_requested: true,
            reset_one_time_pre_key: None,
            invitation_token: Some("token".into()),
            reset_nonce: Some(vec![6; 16]),
            reset_bundle_key: Some(8),
        };
        let mut bytes = vec![2u8];
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        let record = ConnectionRecord::decode(&bytes).unwrap();
        assert_eq!(record.invitation_token.as_deref(), Some("token"));
        assert_eq!(record.reset_bundle_key, Some(8));
        assert!(!record.hybrid_required);
        // Read back as this version, it keeps every field.
        let again = ConnectionRecord::decode(&record.encode().unwrap()).unwrap();
        assert_eq!(again, record);
    }

    #[test]
    fn debug_shows_no_greeting_or_token() {
        let record = ConnectionRecord {
            side: Side::Invitee,
            peer_identity: None,
            phase: Phase::AwaitingBundle {
                greeting: b"my secret greeting".to_vec(),
            },
            pending_initial: Some(b"sealed initial".to_vec()),
            reset_requested: false,
            reset_one_time_pre_key: None,
            invitation_token: Some("the-single-use-token".into()),
            reset_nonce: None,
            reset_bundle_key: None,
            hybrid_required: false,
        };
        let shown = format!("{record:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("sealed"), "{shown}");
        assert!(!shown.contains("single-use"), "{shown}");
        // The bytes would show up as a list of numbers without the custom form.
        assert!(
            !shown.contains(&format!("{:?}", b"my secret greeting")),
            "{shown}"
        );
        assert!(shown.contains("greeting_len: 18"), "{shown}");
    }
}
