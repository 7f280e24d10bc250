//! A write batch: every change one transaction makes, applied atomically.
//!
//! Group commit is a batch with many messages' changes in it: one
//! transaction, one disk sync.

use crate::error::StoreError;
use crate::records::{
    self, CounterReservation, IDENTITY_KEY, InboxEntry, SendResume, Table, encode_identity,
    encode_one_time_pre_key, encode_signed_pre_key, id_key,
};
use confidant_core::ConnectionId;
use confidant_session::SessionSnapshot;
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, SignedPreKey};
use zeroize::Zeroizing;

/// One change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WriteOp {
    /// Insert or replace a record.
    Put {
        /// The table.
        table: Table,
        /// The record's key.
        key: Vec<u8>,
        /// The record's value (wiped when dropped).
        value: Zeroizing<Vec<u8>>,
    },
    /// Insert a record that must not exist yet: if one does, the whole
    /// batch fails with [`StoreError::AlreadyExists`](crate::StoreError)
    /// and nothing of it is applied. The check and the write are one
    /// transaction.
    Insert {
        /// The table.
        table: Table,
        /// The record's key.
        key: Vec<u8>,
        /// The record's value (wiped when dropped).
        value: Zeroizing<Vec<u8>>,
    },
    /// Remove a record (no error if it is absent).
    Delete {
        /// The table.
        table: Table,
        /// The record's key.
        key: Vec<u8>,
    },
    /// Append an entry to the inbox; the store assigns its sequence number.
    AppendInbox {
        /// The encoded entry.
        value: Zeroizing<Vec<u8>>,
    },
    /// Remove the inbox entry with this sequence number, wherever the store
    /// keeps it (no error if there is none).
    DeleteInbox {
        /// The entry's sequence number.
        sequence: u64,
    },
}

/// Changes to apply in one transaction: all of them, or none.
///
/// ```
/// use confidant_store::{CounterReservation, WriteBatch};
/// use confidant_core::ConnectionId;
/// let mut batch = WriteBatch::new();
/// batch.delete_one_time_pre_key(7);
/// batch.put_reservation(&ConnectionId::new("c").unwrap(), CounterReservation { epoch: 0, reserved_until: 4096 });
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many changes the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The changes, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Takes the changes out.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Adds every change of `other` after this batch's.
    pub fn append(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// Adds a raw change. Prefer the typed methods.
    pub fn push(&mut self, op: WriteOp) {
        self.ops.push(op);
    }

    fn put(&mut self, table: Table, key: Vec<u8>, value: Zeroizing<Vec<u8>>) {
        self.ops.push(WriteOp::Put { table, key, value });
    }

    fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete { table, key });
    }

    /// Stores the long-term identity key.
    pub fn put_identity(&mut self, identity: &IdentityKeyPair) {
        self.put(
            Table::Identity,
            IDENTITY_KEY.to_vec(),
            encode_identity(identity),
        );
    }

    /// Stores a signed pre-key (the one with the highest id is current).
    pub fn put_signed_pre_key(&mut self, key: &SignedPreKey) {
        self.put(
            Table::SignedPreKeys,
            id_key(key.id()),
            encode_signed_pre_key(key),
        );
    }

    /// Removes a signed pre-key.
    pub fn delete_signed_pre_key(&mut self, id: u32) {
        self.delete(Table::SignedPreKeys, id_key(id));
    }

    /// Stores a one-time pre-key.
    pub fn put_one_time_pre_key(&mut self, key: &OneTimePreKey) {
        self.put(
            Table::OneTimePreKeys,
            id_key(key.id()),
            encode_one_time_pre_key(key),
        );
    }

    /// Removes a one-time pre-key: put this in the batch that stores the
    /// session the key served, so both happen or neither.
    pub fn delete_one_time_pre_key(&mut self, id: u32) {
        self.delete(Table::OneTimePreKeys, id_key(id));
    }

    /// Stores a session snapshot.
    pub fn put_session(&mut self, snapshot: &SessionSnapshot) -> Result<(), StoreError> {
        let bytes = snapshot.to_bytes()?;
        self.put(
            Table::Sessions,
            snapshot.connection_id().as_bytes().to_vec(),
            bytes,
        );
        Ok(())
    }

    /// Removes a connection's session and its counter reservation.
    pub fn delete_session(&mut self, connection_id: &ConnectionId) {
        self.delete(Table::Sessions, connection_id.as_bytes().to_vec());
        self.delete(Table::Counters, connection_id.as_bytes().to_vec());
    }

    /// Records how far a connection's sending counter is reserved.
    pub fn put_reservation(
        &mut self,
        connection_id: &ConnectionId,
        reservation: CounterReservation,
    ) {
        self.put(
            Table::Counters,
            connection_id.as_bytes().to_vec(),
            Zeroizing::new(reservation.encode()),
        );
    }

    /// Records where a connection's sending counter stands as its node
    /// shuts down cleanly (see [`SendResume`]).
    pub fn put_resume_point(&mut self, connection_id: &ConnectionId, point: SendResume) {
        self.put(
            Table::ResumePoints,
            connection_id.as_bytes().to_vec(),
            Zeroizing::new(point.encode()),
        );
    }

    /// Removes a connection's stored resume point.
    pub fn delete_resume_point(&mut self, connection_id: &ConnectionId) {
        self.delete(Table::ResumePoints, connection_id.as_bytes().to_vec());
    }

    /// Appends an opened message to the inbox.
    pub fn push_inbox(&mut self, entry: &InboxEntry) {
        self.ops.push(WriteOp::AppendInbox {
            value: entry.encode(),
        });
    }

    /// Removes an inbox entry the application has taken.
    pub fn delete_inbox(&mut self, sequence: u64) {
        self.ops.push(WriteOp::DeleteInbox { sequence });
    }

    /// Writes the schema version (used by backends when creating a store).
    pub fn put_schema_version(&mut self, version: u32) {
        self.put(
            Table::Meta,
            records::SCHEMA_VERSION_KEY.to_vec(),
            Zeroizing::new(version.to_be_bytes().to_vec()),
        );
    }
}
