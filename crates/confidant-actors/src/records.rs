//! The runtime's own records in the store: one per connection
//! ([`Table::Connections`]) and one per unused invitation
//! ([`Table::Invitations`]). Encoded with postcard behind a version byte.

use confidant_core::ConnectionId;
use confidant_store::{RawStore, StoreError, Table, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const RECORD_VERSION: u8 = 1;

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

/// Where a connection's handshake stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl ConnectionRecord {
    pub(crate) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut bytes = Zeroizing::new(vec![RECORD_VERSION]);
        let body = Zeroizing::new(
            postcard::to_allocvec(self)
                .map_err(|_| StoreError::Inconsistent("connection record does not encode"))?,
        );
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, body)) => postcard::from_bytes(body)
                .map_err(|error| StoreError::Corrupt(format!("connection record: {error}"))),
            Some((version, _)) => Err(StoreError::Corrupt(format!(
                "connection record version {version} is not supported"
            ))),
            None => Err(StoreError::Corrupt("empty connection record".into())),
        }
    }

    pub(crate) fn put(&self, batch: &mut WriteBatch, id: &ConnectionId) -> Result<(), StoreError> {
        batch.push(WriteOp::Put {
            table: Table::Connections,
            key: id.as_bytes().to_vec(),
            value: self.encode()?,
        });
        Ok(())
    }

    pub(crate) fn load<S: RawStore + ?Sized>(
        store: &S,
        id: &ConnectionId,
    ) -> Result<Option<Self>, StoreError> {
        store
            .get(Table::Connections, id.as_bytes())?
            .map(|bytes| Self::decode(&bytes))
            .transpose()
    }

    /// Every connection record, by connection id.
    pub(crate) fn all<S: RawStore + ?Sized>(
        store: &S,
    ) -> Result<Vec<(ConnectionId, Self)>, StoreError> {
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
pub(crate) fn put_invitation(batch: &mut WriteBatch, token: &str) {
    batch.push(WriteOp::Put {
        table: Table::Invitations,
        key: token.as_bytes().to_vec(),
        value: Zeroizing::new(vec![RECORD_VERSION]),
    });
}

pub(crate) fn delete_invitation(batch: &mut WriteBatch, token: &str) {
    batch.push(WriteOp::Delete {
        table: Table::Invitations,
        key: token.as_bytes().to_vec(),
    });
}

pub(crate) fn has_invitation<S: RawStore + ?Sized>(
    store: &S,
    token: &str,
) -> Result<bool, StoreError> {
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
        };
        let bytes = record.encode().unwrap();
        assert_eq!(ConnectionRecord::decode(&bytes).unwrap(), record);
        assert!(ConnectionRecord::decode(&[]).is_err());
        assert!(ConnectionRecord::decode(&[2, 0]).is_err());
        for cut in 1..bytes.len() {
            assert!(ConnectionRecord::decode(&bytes[..cut]).is_err(), "{cut}");
        }
    }
}
