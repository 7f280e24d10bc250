//! The in-memory reference store: the same semantics as the redb store,
//! nothing on disk. For tests, and for users who persist elsewhere.

use crate::batch::{WriteBatch, WriteOp};
use crate::error::StoreError;
use crate::records::{Table, inbox_key};
use crate::store::{Committed, RawStore, Record, SCHEMA_VERSION};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

/// Meta key of the next inbox sequence number (8 bytes, big-endian).
pub(crate) const INBOX_NEXT_KEY: &[u8] = b"inbox_next";

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Zeroizing<Vec<u8>>>>;

/// Reads the next inbox sequence number from its `Meta` record (1 when there
/// is none yet) and returns it with the encoding of the one after it.
/// Shared by every backend so that sequence numbers are never reused, even
/// after deletions.
pub(crate) fn next_inbox_sequence(current: Option<&[u8]>) -> Result<(u64, [u8; 8]), StoreError> {
    let sequence = match current {
        None => 1,
        Some(bytes) => bytes
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("malformed inbox sequence".into()))?,
    };
    let next = sequence
        .checked_add(1)
        .ok_or(StoreError::Inconsistent("inbox sequence numbers exhausted"))?;
    Ok((sequence, next.to_be_bytes()))
}

/// A store in memory.
///
/// ```
/// use confidant_store::{MemoryStore, IdentityStore, WriteBatch, RawStore};
/// use confidant_x3dh::IdentityKeyPair;
/// let store = MemoryStore::new();
/// let mut batch = WriteBatch::new();
/// batch.put_identity(&IdentityKeyPair::from_seed([1; 32]));
/// store.commit(batch).unwrap();
/// assert!(store.identity().unwrap().is_some());
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: Tables,
    commits: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the current schema version.
    pub fn new() -> Self {
        let mut inner = Inner::default();
        inner.tables.entry(Table::Meta).or_default().insert(
            crate::records::SCHEMA_VERSION_KEY.to_vec(),
            Zeroizing::new(SCHEMA_VERSION.to_be_bytes().to_vec()),
        );
        Self {
            inner: Mutex::new(inner),
        }
    }

    /// How many batches were committed (tests use it to check that counter
    /// reservation commits once per block, not once per message).
    pub fn commit_count(&self) -> u64 {
        self.lock().commits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Applying a batch cannot panic half-way, so a poisoned lock still
        // guards consistent data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RawStore for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self
            .lock()
            .tables
            .get(&table)
            .and_then(|records| records.get(key))
            .cloned())
    }

    fn entries(&self, table: Table) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .lock()
            .tables
            .get(&table)
            .map(|records| {
                records
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        let mut inner = self.lock();
        // The only fallible step is numbering inbox entries: do it first, so
        // that an error leaves nothing applied. Everything after cannot fail.
        let appends = batch
            .ops()
            .iter()
            .filter(|op| matches!(op, WriteOp::AppendInbox { .. }))
            .count() as u64;
        let meta = inner.tables.entry(Table::Meta).or_default();
        let (mut sequence, _) =
            next_inbox_sequence(meta.get(INBOX_NEXT_KEY).map(|value| value.as_slice()))?;
        let first = sequence;
        let after = sequence
            .checked_add(appends)
            .ok_or(StoreError::Inconsistent("inbox sequence numbers exhausted"))?;
        // A lowered `inbox_next` must not overwrite an unread message.
        let inbox = inner.tables.get(&Table::Inbox);
        if (sequence..after)
            .any(|taken| inbox.is_some_and(|records| records.contains_key(&inbox_key(taken))))
        {
            return Err(StoreError::Inconsistent(
                "the next inbox number points at an existing entry",
            ));
        }
        for op in batch.ops() {
            if let WriteOp::Insert { table, key, .. } = op
                && inner
                    .tables
                    .get(table)
                    .is_some_and(|records| records.contains_key(key))
            {
                return Err(StoreError::AlreadyExists {
                    table: format!("{table:?}"),
                });
            }
        }
        let meta = inner.tables.entry(Table::Meta).or_default();
        if appends > 0 {
            meta.insert(
                INBOX_NEXT_KEY.to_vec(),
                Zeroizing::new(after.to_be_bytes().to_vec()),
            );
        }
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { table, key, value } | WriteOp::Insert { table, key, value } => {
                    inner.tables.entry(table).or_default().insert(key, value);
                }
                WriteOp::Delete { table, key } => {
                    if let Some(records) = inner.tables.get_mut(&table) {
                        records.remove(&key);
                    }
                }
                WriteOp::AppendInbox { value } => {
                    inner
                        .tables
                        .entry(Table::Inbox)
                        .or_default()
                        .insert(inbox_key(sequence), value);
                    sequence += 1;
                }
            }
        }
        inner.commits += 1;
        Ok(Committed {
            inbox: first..after,
        })
    }
}
