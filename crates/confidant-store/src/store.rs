//! The storage traits: one raw trait a backend implements, and small typed
//! traits per kind of record that every backend gets for free.

use crate::batch::WriteBatch;
use crate::error::StoreError;
use crate::inbox::{Run, parse_run_key};
use crate::records::{
    CounterReservation, IDENTITY_KEY, InboxEntry, SendResume, Table, decode_identity,
    decode_one_time_pre_key, decode_resume_point, decode_signed_pre_key, id_key,
};
use confidant_core::ConnectionId;
use confidant_session::SessionSnapshot;
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dhError};
use zeroize::Zeroizing;

/// The schema version this build writes and reads. Version 2 keeps the
/// inbox in runs ([`crate::inbox`]); a version-1 file is upgraded in place
/// when opened (nothing is rewritten: its inbox records are still read).
pub const SCHEMA_VERSION: u32 = 2;

/// A record: its key and its value (wiped when dropped).
pub type Record = (Vec<u8>, Zeroizing<Vec<u8>>);

/// What a commit did that its caller could not know in advance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Committed {
    /// The sequence numbers the batch's inbox entries got, in the order they
    /// were pushed (empty without inbox entries).
    pub inbox: std::ops::Range<u64>,
}

/// What a backend implements: byte records in tables, and atomic batches.
///
/// Reads see every batch committed before them. `commit` applies the whole
/// batch or nothing; when it returns `Ok` with the store's default
/// durability, the changes survive a crash.
pub trait RawStore: Send + Sync {
    /// The value stored under `key` in `table`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;

    /// Every record of `table`, in key order.
    fn entries(&self, table: Table) -> Result<Vec<Record>, StoreError>;

    /// Applies `batch` atomically, and says which inbox numbers its entries
    /// got.
    fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError>;
}

fn u32_key(key: &[u8]) -> Result<u32, StoreError> {
    key.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("malformed record id".into()))
}

/// The long-term identity key.
pub trait IdentityStore {
    /// The identity key pair, if one was stored.
    fn identity(&self) -> Result<Option<IdentityKeyPair>, StoreError>;
}

/// Signed and one-time pre-keys.
pub trait PreKeyStore {
    /// A signed pre-key by id.
    fn signed_pre_key(&self, id: u32) -> Result<Option<SignedPreKey>, StoreError>;
    /// The ids of the stored signed pre-keys, ascending.
    fn signed_pre_key_ids(&self) -> Result<Vec<u32>, StoreError>;
    /// A one-time pre-key by id.
    fn one_time_pre_key(&self, id: u32) -> Result<Option<OneTimePreKey>, StoreError>;
    /// The ids of the stored one-time pre-keys, ascending.
    fn one_time_pre_key_ids(&self) -> Result<Vec<u32>, StoreError>;
    /// The responder's whole key set: identity, every signed pre-key (the
    /// highest id is current) and every one-time pre-key. `None` without an
    /// identity or a signed pre-key.
    fn responder_keys(&self) -> Result<Option<ResponderKeys>, StoreError>;
}

/// Session snapshots.
pub trait SessionStore {
    /// The session of a connection.
    fn session(&self, connection_id: &ConnectionId) -> Result<Option<SessionSnapshot>, StoreError>;
    /// Every connection that has a session.
    fn connection_ids(&self) -> Result<Vec<ConnectionId>, StoreError>;
}

/// Sending-counter reservations.
pub trait CounterStore {
    /// How far a connection's sending counter is reserved.
    fn reservation(
        &self,
        connection_id: &ConnectionId,
    ) -> Result<Option<CounterReservation>, StoreError>;

    /// The resume points the last clean shutdown stored, by connection.
    fn resume_points(&self) -> Result<Vec<(ConnectionId, SendResume)>, StoreError>;
}

/// Opened messages waiting for the application.
pub trait InboxStore {
    /// Every inbox entry, oldest first.
    fn inbox(&self) -> Result<Vec<InboxEntry>, StoreError>;
}

/// Everything Confidant keeps: every typed trait over one raw backend.
pub trait Store:
    RawStore + IdentityStore + PreKeyStore + SessionStore + CounterStore + InboxStore
{
}

impl<S: RawStore + ?Sized> Store for S {}

impl<S: RawStore + ?Sized> IdentityStore for S {
    fn identity(&self) -> Result<Option<IdentityKeyPair>, StoreError> {
        self.get(Table::Identity, IDENTITY_KEY)?
            .map(|bytes| decode_identity(&bytes))
            .transpose()
    }
}

impl<S: RawStore + ?Sized> PreKeyStore for S {
    fn signed_pre_key(&self, id: u32) -> Result<Option<SignedPreKey>, StoreError> {
        self.get(Table::SignedPreKeys, &id_key(id))?
            .map(|bytes| decode_signed_pre_key(&bytes))
            .transpose()
    }

    fn signed_pre_key_ids(&self) -> Result<Vec<u32>, StoreError> {
        self.entries(Table::SignedPreKeys)?
            .iter()
            .map(|(key, _)| u32_key(key))
            .collect()
    }

    fn one_time_pre_key(&self, id: u32) -> Result<Option<OneTimePreKey>, StoreError> {
        self.get(Table::OneTimePreKeys, &id_key(id))?
            .map(|bytes| decode_one_time_pre_key(&bytes))
            .transpose()
    }

    fn one_time_pre_key_ids(&self) -> Result<Vec<u32>, StoreError> {
        self.entries(Table::OneTimePreKeys)?
            .iter()
            .map(|(key, _)| u32_key(key))
            .collect()
    }

    fn responder_keys(&self) -> Result<Option<ResponderKeys>, StoreError> {
        let Some(identity) = self.identity()? else {
            return Ok(None);
        };
        let signed: Vec<SignedPreKey> = self
            .entries(Table::SignedPreKeys)?
            .iter()
            .map(|(_, bytes)| decode_signed_pre_key(bytes))
            .collect::<Result<_, _>>()?;
        let mut signed = signed.into_iter();
        let Some(first) = signed.next() else {
            return Ok(None);
        };
        let keys_error = |error: X3dhError| StoreError::Corrupt(format!("stored pre-key: {error}"));
        let mut keys = ResponderKeys::new(identity, first).map_err(keys_error)?;
        for key in signed {
            keys.add_signed_pre_key(key).map_err(keys_error)?;
        }
        for (_, bytes) in self.entries(Table::OneTimePreKeys)? {
            keys.add_one_time_pre_key(decode_one_time_pre_key(&bytes)?)
                .map_err(keys_error)?;
        }
        Ok(Some(keys))
    }
}

impl<S: RawStore + ?Sized> SessionStore for S {
    fn session(&self, connection_id: &ConnectionId) -> Result<Option<SessionSnapshot>, StoreError> {
        self.get(Table::Sessions, connection_id.as_bytes())?
            .map(|bytes| SessionSnapshot::from_bytes(&bytes).map_err(StoreError::from))
            .transpose()
    }

    fn connection_ids(&self) -> Result<Vec<ConnectionId>, StoreError> {
        self.entries(Table::Sessions)?
            .into_iter()
            .map(|(key, _)| {
                String::from_utf8(key)
                    .ok()
                    .and_then(|id| ConnectionId::new(id).ok())
                    .ok_or_else(|| StoreError::Corrupt("malformed connection id".into()))
            })
            .collect()
    }
}

impl<S: RawStore + ?Sized> CounterStore for S {
    fn reservation(
        &self,
        connection_id: &ConnectionId,
    ) -> Result<Option<CounterReservation>, StoreError> {
        self.get(Table::Counters, connection_id.as_bytes())?
            .map(|bytes| CounterReservation::decode(&bytes))
            .transpose()
    }

    fn resume_points(&self) -> Result<Vec<(ConnectionId, SendResume)>, StoreError> {
        self.entries(Table::ResumePoints)?
            .iter()
            .map(|(key, bytes)| decode_resume_point(key, bytes))
            .collect()
    }
}

impl<S: RawStore + ?Sized> InboxStore for S {
    fn inbox(&self) -> Result<Vec<InboxEntry>, StoreError> {
        let mut entries = self
            .entries(Table::Inbox)?
            .into_iter()
            .map(|(key, bytes)| {
                let sequence = key
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("malformed inbox key".into()))?;
                InboxEntry::decode(sequence, &bytes)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (key, bytes) in self.entries(Table::InboxRuns)? {
            let (first, end) = parse_run_key(&key)?;
            entries.extend(Run::decode(first, end, &bytes)?.into_entries()?);
        }
        entries.sort_by_key(|entry| entry.sequence);
        Ok(entries)
    }
}
