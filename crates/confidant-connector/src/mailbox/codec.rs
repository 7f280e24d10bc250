//! The redb file's tables and the byte layout of their records (fixed
//! endianness: big-endian everywhere, so keys sort by their numbers).

use super::{Content, MailboxError, StoredMessage, storage};
use crate::auth::{NONCE_LEN, PartyKey};
use redb::TableDefinition;

pub(super) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("connector_meta");
pub(super) const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
pub(super) const CONNECTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("connections");
pub(super) const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
pub(super) const PENDING: TableDefinition<&[u8], u64> = TableDefinition::new("pending_counts");
pub(super) const CLIENT_IDS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("client_message_ids");
pub(super) const CLIENT_EXPIRY: TableDefinition<&[u8], ()> =
    TableDefinition::new("client_message_id_expiry");
pub(super) const NONCES: TableDefinition<&[u8], u64> = TableDefinition::new("nonces");
pub(super) const NONCE_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("nonce_expiry");

pub(super) const SCHEMA_KEY: &[u8] = b"schema_version";
pub(super) const NEXT_ID_KEY: &[u8] = b"next_message_id";
/// The latest time any transaction pruned nonces at (milliseconds): a nonce
/// that expired before it is refused, whatever the clock says now, so a
/// pruned nonce can never be accepted again.
pub(super) const NONCES_PRUNED_KEY: &[u8] = b"nonces_pruned_before";
/// The connector's audience, generated on first open.
pub(super) const AUDIENCE_KEY: &[u8] = b"audience";

/// A storage error that aborts the whole redb transaction.
pub(super) struct Fatal(pub(super) MailboxError);

impl<E: Into<redb::Error>> From<E> for Fatal {
    fn from(error: E) -> Self {
        Fatal(storage(error.into()))
    }
}

/// `recipient (32) ‖ id (8)`.
pub(super) fn message_key(recipient: &PartyKey, id: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    let (party, rest) = key.split_at_mut(32);
    party.copy_from_slice(recipient);
    rest.copy_from_slice(&id.to_be_bytes());
    key
}

/// The id of a [`message_key`].
pub(super) fn message_key_id(key: &[u8]) -> Result<u64, MailboxError> {
    key.get(32..40)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| MailboxError::Storage("a message key is malformed".into()))
}

/// `party (32) ‖ nonce`.
pub(super) fn nonce_key(party: &PartyKey, nonce: &[u8; NONCE_LEN]) -> [u8; 32 + NONCE_LEN] {
    let mut key = [0u8; 32 + NONCE_LEN];
    let (first, rest) = key.split_at_mut(32);
    first.copy_from_slice(party);
    rest.copy_from_slice(nonce);
    key
}

/// `len (1) ‖ connection id ‖ sender (32) ‖ client id`.
pub(super) fn client_key(connection_id: &str, sender: &PartyKey, client_id: &[u8]) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut key = Vec::with_capacity(1 + id.len() + 32 + client_id.len());
    key.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(id);
    key.extend_from_slice(sender);
    key.extend_from_slice(client_id);
    key
}

/// `expires (8) ‖ key`: an expiry index entry.
pub(super) fn expiry_key(expires_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + key.len());
    bytes.extend_from_slice(&expires_ms.to_be_bytes());
    bytes.extend_from_slice(key);
    bytes
}

/// `len (1) ‖ connection id ‖ received (8) ‖ kind (1) ‖ payload`.
pub(super) fn encode_message(
    connection_id: &str,
    received_at_ms: u64,
    content: &Content,
) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut bytes = Vec::with_capacity(1 + id.len() + 9 + 64);
    bytes.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(id.get(..id.len().min(255)).unwrap_or_default());
    bytes.extend_from_slice(&received_at_ms.to_be_bytes());
    match content {
        Content::Envelope(envelope) => {
            bytes.push(0);
            bytes.extend_from_slice(envelope);
        }
        Content::ConnectionAdded { token, peer } => {
            bytes.push(1);
            bytes.extend_from_slice(peer);
            bytes.extend_from_slice(token.as_bytes());
        }
        Content::ConnectionRevoked => bytes.push(2),
    }
    bytes
}

pub(super) fn decode_message(id: u64, bytes: &[u8]) -> Result<StoredMessage, MailboxError> {
    let corrupt = || MailboxError::Storage("a stored message is malformed".into());
    let (&len, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (connection_id, rest) = rest
        .split_at_checked(usize::from(len))
        .ok_or_else(corrupt)?;
    let (received, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let (&kind, payload) = rest.split_first().ok_or_else(corrupt)?;
    let content = match kind {
        0 => Content::Envelope(payload.to_vec()),
        1 => {
            let (peer, token) = payload.split_first_chunk::<32>().ok_or_else(corrupt)?;
            Content::ConnectionAdded {
                token: String::from_utf8(token.to_vec()).map_err(|_| corrupt())?,
                peer: *peer,
            }
        }
        2 => Content::ConnectionRevoked,
        _ => return Err(corrupt()),
    };
    Ok(StoredMessage {
        id,
        connection_id: String::from_utf8(connection_id.to_vec()).map_err(|_| corrupt())?,
        received_at_ms: u64::from_be_bytes(*received),
        content,
    })
}

/// A token: `creator (32) ‖ used (1) ‖ created (8) [‖ joiner (32) ‖
/// connection id]`, the last two once it is used: who used it and the
/// connection that made, so that a repeated join by the same joiner
/// answers the same connection.
pub(super) struct TokenRecord {
    pub(super) creator: PartyKey,
    pub(super) used: bool,
    pub(super) created_ms: u64,
    /// Who used it and the connection it made; `None` while it is unused,
    /// and for a token used before these were kept.
    pub(super) joined: Option<(PartyKey, String)>,
}

impl TokenRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        let connection = self
            .joined
            .as_ref()
            .map_or(0, |(_, connection)| connection.len());
        let mut bytes = Vec::with_capacity(41 + 32 + connection);
        bytes.extend_from_slice(&self.creator);
        bytes.push(u8::from(self.used));
        bytes.extend_from_slice(&self.created_ms.to_be_bytes());
        if let Some((joiner, connection)) = &self.joined {
            bytes.extend_from_slice(joiner);
            bytes.extend_from_slice(connection.as_bytes());
        }
        bytes
    }

    /// Records written before the creation time was kept may lack it, and
    /// those written before the joiner was kept lack the joiner and the
    /// connection.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, MailboxError> {
        let malformed = || MailboxError::Storage("a stored token is malformed".into());
        let (creator, rest) = bytes.split_first_chunk::<32>().ok_or_else(malformed)?;
        let (&used, rest) = rest.split_first().ok_or_else(malformed)?;
        let (created_ms, joined) = match rest.split_first_chunk::<8>() {
            None => (0, None),
            Some((created, [])) => (u64::from_be_bytes(*created), None),
            Some((created, rest)) => {
                let (joiner, connection) = rest.split_first_chunk::<32>().ok_or_else(malformed)?;
                if connection.is_empty() {
                    return Err(malformed());
                }
                let connection = String::from_utf8(connection.to_vec()).map_err(|_| malformed())?;
                (u64::from_be_bytes(*created), Some((*joiner, connection)))
            }
        };
        Ok(Self {
            creator: *creator,
            used: used == 1,
            created_ms,
            joined,
        })
    }
}

/// A connection: `first (32) ‖ second (32) ‖ revoked (1)`.
pub(super) struct ConnectionRecord {
    pub(super) parties: [PartyKey; 2],
    pub(super) revoked: bool,
}

impl ConnectionRecord {
    pub(super) fn encode(&self) -> [u8; 65] {
        let [first, second] = &self.parties;
        let mut bytes = [0u8; 65];
        let (a, rest) = bytes.split_at_mut(32);
        let (b, revoked) = rest.split_at_mut(32);
        a.copy_from_slice(first);
        b.copy_from_slice(second);
        revoked.fill(u8::from(self.revoked));
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, MailboxError> {
        let malformed = || MailboxError::Storage("a stored connection is malformed".into());
        let bytes: &[u8; 65] = bytes.try_into().map_err(|_| malformed())?;
        let (first, rest) = bytes.split_first_chunk::<32>().ok_or_else(malformed)?;
        let (second, revoked) = rest.split_first_chunk::<32>().ok_or_else(malformed)?;
        Ok(Self {
            parties: [*first, *second],
            revoked: revoked.first().is_some_and(|&revoked| revoked != 0),
        })
    }

    /// The other party, if `party` is one of the two.
    pub(super) fn other(&self, party: &PartyKey) -> Option<PartyKey> {
        let [first, second] = self.parties;
        if first == *party {
            Some(second)
        } else if second == *party {
            Some(first)
        } else {
            None
        }
    }
}

/// A client message id's record: `message id (8) ‖ SHA-256 of the
/// envelope (32)`; records written before the digest was kept hold the id
/// alone.
pub(super) fn encode_client_record(id: u64, digest: &[u8; 32]) -> [u8; 40] {
    let mut value = [0u8; 40];
    let (first, rest) = value.split_at_mut(8);
    first.copy_from_slice(&id.to_be_bytes());
    rest.copy_from_slice(digest);
    value
}

/// The message id and (if kept) the digest of a client id record.
pub(super) fn decode_client_record(bytes: &[u8]) -> Result<(u64, Option<[u8; 32]>), MailboxError> {
    let malformed = || MailboxError::Storage("a stored client message id is malformed".into());
    let (id, digest) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
    let digest = match digest.len() {
        0 => None,
        _ => Some(<[u8; 32]>::try_from(digest).map_err(|_| malformed())?),
    };
    Ok((u64::from_be_bytes(*id), digest))
}

/// Decodes a stored message and checks that it round-trips (fuzzing).
pub(crate) fn fuzz_round_trip(bytes: &[u8]) -> Option<bool> {
    let message = decode_message(7, bytes).ok()?;
    let again = encode_message(
        &message.connection_id,
        message.received_at_ms,
        &message.content,
    );
    Some(decode_message(7, &again).is_ok_and(|decoded| decoded == message))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn record(joined: Option<(PartyKey, String)>) -> TokenRecord {
        TokenRecord {
            creator: [1; 32],
            used: joined.is_some(),
            created_ms: 0x0102_0304_0506_0708,
            joined,
        }
    }

    #[test]
    fn a_token_record_keeps_its_joiner_and_connection() {
        let unused = TokenRecord::decode(&record(None).encode()).unwrap();
        assert_eq!(
            (
                unused.creator,
                unused.used,
                unused.created_ms,
                unused.joined
            ),
            ([1; 32], false, 0x0102_0304_0506_0708, None)
        );
        let bytes = record(Some(([2; 32], "c-abc".into()))).encode();
        assert_eq!(bytes.len(), 41 + 32 + 5);
        let used = TokenRecord::decode(&bytes).unwrap();
        assert!(used.used);
        assert_eq!(used.joined, Some(([2; 32], "c-abc".to_owned())));
    }

    #[test]
    fn older_token_records_decode_and_damaged_ones_are_refused() {
        // Before the creation time was kept: creator and used flag alone.
        let mut old = vec![1u8; 32];
        old.push(1);
        let decoded = TokenRecord::decode(&old).unwrap();
        assert_eq!(
            (decoded.used, decoded.created_ms, decoded.joined),
            (true, 0, None)
        );
        // Before the joiner was kept: used, but by whom is unknown.
        old.extend_from_slice(&9u64.to_be_bytes());
        let decoded = TokenRecord::decode(&old).unwrap();
        assert_eq!(
            (decoded.used, decoded.created_ms, decoded.joined),
            (true, 9, None)
        );
        // A joiner cut short, a joiner without a connection, a connection
        // that is not UTF-8, no used flag at all.
        let full = record(Some(([2; 32], "c-abc".into()))).encode();
        for damaged in [
            &full[..41 + 10],
            &full[..41 + 32],
            &[&full[..41 + 32], &[0xff, 0xfe][..]].concat()[..],
            &full[..32],
        ] {
            assert!(
                matches!(TokenRecord::decode(damaged), Err(MailboxError::Storage(_))),
                "{damaged:?}"
            );
        }
    }
}
