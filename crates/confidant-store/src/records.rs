//! The records Confidant stores, their tables, and their byte encodings.
//!
//! Every table maps byte keys to byte values. Integers in keys and values
//! are big-endian, so keys sort numerically. The same encodings serve every
//! backend, so a backend only moves bytes.

use crate::error::StoreError;
use confidant_core::ConnectionId;
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, SignedPreKey};
use zeroize::Zeroizing;

/// The tables of a Confidant store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Table {
    /// Schema version and at-rest encryption check. Not secret.
    Meta,
    /// The long-term identity key (one record). Secret.
    Identity,
    /// Signed pre-keys by id. Secret.
    SignedPreKeys,
    /// One-time pre-keys by id. Secret.
    OneTimePreKeys,
    /// Session snapshots by connection id. Secret (they hold keys).
    Sessions,
    /// Counter reservations by connection id. Not secret.
    Counters,
    /// Opened messages waiting for the application, one record per
    /// message by sequence number: how schema version 1 stored them. Read
    /// and deleted, no longer written. Secret (plaintext).
    Inbox,
    /// Opened messages waiting for the application, in runs (see
    /// [`crate::inbox`]). Secret (plaintext).
    InboxRuns,
    /// Where each connection's sending counter stood when the node last
    /// shut down cleanly ([`SendResume`]), by connection id; deleted at the
    /// next start. Not secret, but sealed at rest with a key, as the
    /// reservations are: a raised point would make counters be reused.
    ResumePoints,
    /// The runtime's record of each connection (role, handshake state, the
    /// peer's identity key), by connection id. Sealed at rest: it can hold
    /// a greeting waiting to be sent.
    Connections,
    /// Invitations the runtime created and nobody has used yet, by token.
    /// Sealed at rest.
    Invitations,
    /// Key material of the key agreement beyond X3DH's own keys (the
    /// hybrid's ML-KEM pre-keys), opaque to the store and keyed by the
    /// engine, and when each signed pre-key was made (for its rotation).
    /// Secret.
    AgreementKeys,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 12] = [
        Table::Meta,
        Table::Identity,
        Table::SignedPreKeys,
        Table::OneTimePreKeys,
        Table::Sessions,
        Table::Counters,
        Table::Inbox,
        Table::Connections,
        Table::Invitations,
        Table::InboxRuns,
        Table::ResumePoints,
        Table::AgreementKeys,
    ];

    /// The table's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "confidant_meta",
            Table::Identity => "identity",
            Table::SignedPreKeys => "signed_pre_keys",
            Table::OneTimePreKeys => "one_time_pre_keys",
            Table::Sessions => "sessions",
            Table::Counters => "counters",
            Table::Inbox => "inbox",
            Table::Connections => "connections",
            Table::Invitations => "invitations",
            Table::InboxRuns => "inbox_runs",
            Table::ResumePoints => "resume_points",
            Table::AgreementKeys => "agreement_keys",
        }
    }

    /// Whether the table's values are sealed at rest when the store has a
    /// key-encryption key: the secret tables, and the counter reservations,
    /// which are not secret but must not be lowered by someone who can write
    /// the file (that would make the next start reuse counters).
    pub fn is_sealed_at_rest(self) -> bool {
        self.is_secret() || matches!(self, Table::Counters | Table::ResumePoints)
    }

    /// Whether the table's values are secret.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            Table::Identity
                | Table::SignedPreKeys
                | Table::OneTimePreKeys
                | Table::Sessions
                | Table::Inbox
                | Table::InboxRuns
                | Table::Connections
                | Table::Invitations
                | Table::AgreementKeys
        )
    }
}

/// Key of the single identity record.
pub(crate) const IDENTITY_KEY: &[u8] = b"identity";
/// Meta key holding the schema version (4 bytes, big-endian).
pub const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";
/// Meta key holding the at-rest encryption check value (absent when the
/// store is not encrypted).
pub const KEY_CHECK_KEY: &[u8] = b"key_check";

/// Key of a record numbered by a `u32` id.
pub(crate) fn id_key(id: u32) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Key of an inbox entry.
pub fn inbox_key(sequence: u64) -> Vec<u8> {
    sequence.to_be_bytes().to_vec()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("malformed {what} record"))
}

pub(crate) fn take<const N: usize>(
    bytes: &[u8],
    at: &mut usize,
    what: &str,
) -> Result<[u8; N], StoreError> {
    let slice = bytes.get(*at..*at + N).ok_or_else(|| corrupt(what))?;
    *at += N;
    slice.try_into().map_err(|_| corrupt(what))
}

pub(crate) fn encode_identity(identity: &IdentityKeyPair) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(identity.to_seed().to_vec())
}

pub(crate) fn decode_identity(bytes: &[u8]) -> Result<IdentityKeyPair, StoreError> {
    let seed: Zeroizing<[u8; 32]> =
        Zeroizing::new(bytes.try_into().map_err(|_| corrupt("identity"))?);
    Ok(IdentityKeyPair::from_seed(*seed))
}

pub(crate) fn encode_signed_pre_key(key: &SignedPreKey) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(4 + 32 + 64));
    bytes.extend_from_slice(&key.id().to_be_bytes());
    bytes.extend_from_slice(key.to_secret_bytes().as_ref());
    bytes.extend_from_slice(&key.signature());
    bytes
}

pub(crate) fn decode_signed_pre_key(bytes: &[u8]) -> Result<SignedPreKey, StoreError> {
    let what = "signed pre-key";
    if bytes.len() != 4 + 32 + 64 {
        return Err(corrupt(what));
    }
    let mut at = 0;
    let id = u32::from_be_bytes(take(bytes, &mut at, what)?);
    let secret = Zeroizing::new(take::<32>(bytes, &mut at, what)?);
    let signature = take::<64>(bytes, &mut at, what)?;
    Ok(SignedPreKey::from_parts(id, *secret, signature))
}

pub(crate) fn encode_one_time_pre_key(key: &OneTimePreKey) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(4 + 32));
    bytes.extend_from_slice(&key.id().to_be_bytes());
    bytes.extend_from_slice(key.to_secret_bytes().as_ref());
    bytes
}

pub(crate) fn decode_one_time_pre_key(bytes: &[u8]) -> Result<OneTimePreKey, StoreError> {
    let what = "one-time pre-key";
    if bytes.len() != 4 + 32 {
        return Err(corrupt(what));
    }
    let mut at = 0;
    let id = u32::from_be_bytes(take(bytes, &mut at, what)?);
    let secret = Zeroizing::new(take::<32>(bytes, &mut at, what)?);
    Ok(OneTimePreKey::new(id, *secret))
}

/// How far a connection's sending counter has been durably reserved.
///
/// Every counter below `reserved_until` in sending epoch `epoch` may have
/// been used before a crash; sealing resumes at `reserved_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterReservation {
    /// The sending epoch the reservation belongs to.
    pub epoch: u32,
    /// The first counter not yet reserved.
    pub reserved_until: u64,
}

impl CounterReservation {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12);
        bytes.extend_from_slice(&self.epoch.to_be_bytes());
        bytes.extend_from_slice(&self.reserved_until.to_be_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let what = "counter reservation";
        if bytes.len() != 12 {
            return Err(corrupt(what));
        }
        let mut at = 0;
        Ok(Self {
            epoch: u32::from_be_bytes(take(bytes, &mut at, what)?),
            reserved_until: u64::from_be_bytes(take(bytes, &mut at, what)?),
        })
    }
}

/// Where a session's sending counter stood when its holder let it go
/// cleanly: the next counter, in an epoch whose durable reservation runs to
/// `reserved_until`. It lets the next
/// [`DurableSession::load_resuming`](crate::DurableSession::load_resuming)
/// go on at `next_counter` without a new reservation, since no counter from
/// there to `reserved_until` was used.
///
/// A point is true only until the session seals again, so it must never
/// outlive a crash: the runtime keeps points in memory, and stores them
/// ([`Table::ResumePoints`]) only when a node shuts down cleanly, deleting
/// them durably at its next start before anything is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendResume {
    /// The sending epoch.
    pub epoch: u32,
    /// The next counter to seal with.
    pub next_counter: u64,
    /// The durable reservation's end when it was let go.
    pub reserved_until: u64,
}

/// A record of [`Table::ResumePoints`]: its connection and its point.
pub fn decode_resume_point(
    key: &[u8],
    value: &[u8],
) -> Result<(ConnectionId, SendResume), StoreError> {
    let id = std::str::from_utf8(key)
        .ok()
        .and_then(|id| ConnectionId::new(id).ok())
        .ok_or_else(|| StoreError::Corrupt("malformed connection id".into()))?;
    Ok((id, SendResume::decode(value)?))
}

impl SendResume {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&self.epoch.to_be_bytes());
        bytes.extend_from_slice(&self.next_counter.to_be_bytes());
        bytes.extend_from_slice(&self.reserved_until.to_be_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let what = "resume point";
        if bytes.len() != 20 {
            return Err(corrupt(what));
        }
        let mut at = 0;
        let point = Self {
            epoch: u32::from_be_bytes(take(bytes, &mut at, what)?),
            next_counter: u64::from_be_bytes(take(bytes, &mut at, what)?),
            reserved_until: u64::from_be_bytes(take(bytes, &mut at, what)?),
        };
        if point.next_counter > point.reserved_until {
            return Err(corrupt(what));
        }
        Ok(point)
    }
}

/// An opened message waiting for the application, stored in the same
/// transaction that made its replay window durable, so a crash can neither
/// lose it nor deliver it twice.
#[derive(Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// The store's sequence number (assigned on commit; 0 before).
    pub sequence: u64,
    /// The connection it arrived on.
    pub connection_id: ConnectionId,
    /// The sender's epoch.
    pub epoch: u32,
    /// The sender's counter.
    pub counter: u64,
    /// The opened message.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for InboxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxEntry")
            .field("sequence", &self.sequence)
            .field("connection_id", &self.connection_id)
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

impl InboxEntry {
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let id = self.connection_id.as_bytes();
        let mut bytes =
            Zeroizing::new(Vec::with_capacity(1 + id.len() + 12 + self.plaintext.len()));
        // A connection id is at most 128 bytes, so its length fits a byte.
        bytes.push(id.len() as u8);
        bytes.extend_from_slice(id);
        bytes.extend_from_slice(&self.epoch.to_be_bytes());
        bytes.extend_from_slice(&self.counter.to_be_bytes());
        bytes.extend_from_slice(&self.plaintext);
        bytes
    }

    pub(crate) fn decode(sequence: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        let what = "inbox";
        let (&id_len, rest) = bytes.split_first().ok_or_else(|| corrupt(what))?;
        let id = rest.get(..id_len as usize).ok_or_else(|| corrupt(what))?;
        let connection_id = std::str::from_utf8(id)
            .ok()
            .and_then(|id| ConnectionId::new(id).ok())
            .ok_or_else(|| corrupt(what))?;
        let mut at = 1 + id_len as usize;
        let epoch = u32::from_be_bytes(take(bytes, &mut at, what)?);
        let counter = u64::from_be_bytes(take(bytes, &mut at, what)?);
        let plaintext = Zeroizing::new(bytes.get(at..).unwrap_or_default().to_vec());
        Ok(Self {
            sequence,
            connection_id,
            epoch,
            counter,
            plaintext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let identity = IdentityKeyPair::from_seed([7; 32]);
        let decoded = decode_identity(&encode_identity(&identity)).unwrap();
        assert_eq!(decoded.public_key(), identity.public_key());

        let spk = SignedPreKey::new(&identity, 9, [3; 32]);
        let decoded = decode_signed_pre_key(&encode_signed_pre_key(&spk)).unwrap();
        assert_eq!(decoded.id(), 9);
        assert_eq!(decoded.public_key(), spk.public_key());
        assert_eq!(decoded.signature(), spk.signature());

        let opk = OneTimePreKey::new(4, [5; 32]);
        let decoded = decode_one_time_pre_key(&encode_one_time_pre_key(&opk)).unwrap();
        assert_eq!(decoded.id(), 4);
        assert_eq!(decoded.public_key(), opk.public_key());

        let reservation = CounterReservation {
            epoch: 3,
            reserved_until: 1 << 40,
        };
        assert_eq!(
            CounterReservation::decode(&reservation.encode()).unwrap(),
            reservation
        );

        let entry = InboxEntry {
            sequence: 0,
            connection_id: ConnectionId::new("c-1").unwrap(),
            epoch: 2,
            counter: 77,
            plaintext: Zeroizing::new(b"credential".to_vec()),
        };
        let decoded = InboxEntry::decode(12, &entry.encode()).unwrap();
        assert_eq!(decoded.sequence, 12);
        assert_eq!(decoded.plaintext, entry.plaintext);
        assert_eq!(decoded.connection_id, entry.connection_id);
        assert_eq!((decoded.epoch, decoded.counter), (2, 77));
    }

    #[test]
    fn malformed_records_are_corrupt_not_panics() {
        for bytes in [&[][..], &[1, 2, 3], &[0xFF; 200]] {
            assert!(decode_identity(bytes).is_err() || bytes.len() == 32);
            assert!(decode_signed_pre_key(bytes).is_err());
            assert!(decode_one_time_pre_key(bytes).is_err());
            assert!(CounterReservation::decode(bytes).is_err());
        }
        assert!(InboxEntry::decode(0, &[]).is_err());
        assert!(InboxEntry::decode(0, &[5, b'a']).is_err());
        assert!(InboxEntry::decode(0, &[1, b' ', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
