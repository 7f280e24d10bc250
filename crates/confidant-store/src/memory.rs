//! The in-memory reference store: the same semantics as the redb store,
//! nothing on disk. For tests, and for users who persist elsewhere.

use crate::batch::{WriteBatch, WriteOp};
use crate::error::StoreError;
use crate::inbox::{INBOX_NEXT_KEY, InboxChanges, InboxTables, StoredRun};
use crate::records::{Table, inbox_key};
use crate::store::{Committed, RawStore, Record, SCHEMA_VERSION};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Zeroizing<Vec<u8>>>>;

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
        // Check what can fail before anything is applied, so that an error
        // leaves the store as it was: the inbox numbering (in `begin`) and
        // the inserts. (Deleting from a run decodes it, which cannot fail
        // on runs this store wrote itself.)
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
        let tables = &mut inner.tables;
        let current = tables
            .get(&Table::Meta)
            .and_then(|meta| meta.get(INBOX_NEXT_KEY))
            .cloned();
        let (mut inbox, next) = InboxChanges::begin(
            &mut MemoryInbox(tables),
            current.as_deref().map(Vec::as_slice),
            batch.ops(),
        )?;
        if let Some(next) = next {
            tables
                .entry(Table::Meta)
                .or_default()
                .insert(INBOX_NEXT_KEY.to_vec(), Zeroizing::new(next.to_vec()));
        }
        for op in batch.into_ops() {
            match op {
                // Inserts were checked above.
                WriteOp::Put { table, key, value } | WriteOp::Insert { table, key, value } => {
                    tables.entry(table).or_default().insert(key, value);
                }
                WriteOp::Delete { table, key } => {
                    if let Some(records) = tables.get_mut(&table) {
                        records.remove(&key);
                    }
                }
                WriteOp::AppendInbox { value } => {
                    inbox.append(value);
                }
                WriteOp::DeleteInbox { sequence } => {
                    inbox.delete(&mut MemoryInbox(tables), sequence)?;
                }
            }
        }
        let numbers = inbox.finish(&mut MemoryInbox(tables))?;
        inner.commits += 1;
        Ok(Committed { inbox: numbers })
    }
}

/// The inbox tables of a memory store, for [`InboxChanges`].
struct MemoryInbox<'t>(&'t mut Tables);

impl InboxTables for MemoryInbox<'_> {
    type Error = StoreError;

    fn remove_single(&mut self, sequence: u64) -> Result<bool, StoreError> {
        Ok(self
            .0
            .get_mut(&Table::Inbox)
            .and_then(|records| records.remove(&inbox_key(sequence)))
            .is_some())
    }

    fn last_single(&mut self) -> Result<Option<u64>, StoreError> {
        self.0
            .get(&Table::Inbox)
            .and_then(|records| records.keys().next_back())
            .map(|key| {
                <[u8; 8]>::try_from(key.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("malformed inbox key".into()))
            })
            .transpose()
    }

    fn last_run(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .get(&Table::InboxRuns)
            .and_then(|records| records.keys().next_back().cloned()))
    }

    fn run_at_or_before(&mut self, sequence: u64) -> Result<Option<StoredRun>, StoreError> {
        Ok(self.0.get(&Table::InboxRuns).and_then(|records| {
            records
                .range(..=crate::inbox::run_key(sequence, u64::MAX))
                .next_back()
                .map(|(key, value)| (key.clone(), value.clone()))
        }))
    }

    fn put_run(&mut self, key: &[u8], value: &[u8], new: bool) -> Result<(), StoreError> {
        let records = self.0.entry(Table::InboxRuns).or_default();
        let replaced = records.insert(key.to_vec(), Zeroizing::new(value.to_vec()));
        if new && replaced.is_some() {
            return Err(StoreError::Inconsistent(
                "the next inbox number points at an existing entry",
            ));
        }
        Ok(())
    }

    fn remove_run(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if let Some(records) = self.0.get_mut(&Table::InboxRuns) {
            records.remove(key);
        }
        Ok(())
    }
}
