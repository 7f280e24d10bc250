//! The engine's store in a page: an in-memory mirror of what IndexedDB
//! holds, whose commits are IndexedDB transactions.
//!
//! [`confidant_store::RawStore`] is synchronous and the engine reads it
//! synchronously, while IndexedDB only answers asynchronously. So the whole
//! database is read into memory when the page starts ([`Mirror::load`]),
//! every read is served from there, and each batch the engine (or the page)
//! commits goes in three steps:
//!
//! 1. [`Mirror::stage`] applies the batch to a *shadow* copy and gives the
//!    record-level changes it made ([`Staged::changes`]: puts and deletes
//!    of `(table, key)`), including what the store's own bookkeeping
//!    (inbox numbers and runs) adds. Nothing the engine reads has changed.
//! 2. The driver writes those changes in **one** readwrite IndexedDB
//!    transaction and awaits its `complete` event: all of them or none are
//!    stored, whatever happens to the tab.
//! 3. [`Mirror::settle`] applies the batch to the mirror the engine reads
//!    only once the transaction completed (or brings the shadow back if it
//!    failed), and the driver reports the outcome to the engine.
//!
//! So memory never runs ahead of IndexedDB, and a page that is closed or
//! reloaded at any point finds in IndexedDB exactly the commits that
//! completed: a counter reservation, a consumed one-time pre-key, an opened
//! message with its replay window, each is either durable (and then known
//! to the engine) or not there at all.

use confidant_store::{Committed, MemoryStore, RawStore, StoreError, Table, WriteBatch, WriteOp};
use std::collections::BTreeSet;
use zeroize::Zeroizing;

/// A record as IndexedDB holds it: table, key, value.
pub type StoredRecord = (Table, Vec<u8>, Zeroizing<Vec<u8>>);

/// One record-level change of a staged commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store `value` under `(table, key)`.
    Put {
        /// The table.
        table: Table,
        /// The record's key.
        key: Vec<u8>,
        /// Its new value (wiped when dropped).
        value: Zeroizing<Vec<u8>>,
    },
    /// Delete `(table, key)`.
    Delete {
        /// The table.
        table: Table,
        /// The record's key.
        key: Vec<u8>,
    },
}

/// A batch applied to the shadow, waiting for its IndexedDB transaction.
#[derive(Debug)]
#[must_use = "a staged commit must be settled"]
pub struct Staged {
    /// What to write, in one transaction.
    pub changes: Vec<Change>,
    /// What the commit gives once it is durable (inbox numbers).
    pub committed: Committed,
    batch: WriteBatch,
}

/// The stored state: what the engine reads, and a shadow that runs one
/// commit ahead while its transaction is in flight.
#[derive(Debug)]
pub struct Mirror {
    durable: MemoryStore,
    shadow: MemoryStore,
}

/// A table's name in IndexedDB keys: the store's own stable name.
pub fn table_name(table: Table) -> String {
    table.name().to_owned()
}

/// The table named `name` in an IndexedDB key.
pub fn table_named(name: &str) -> Option<Table> {
    Table::ALL
        .into_iter()
        .find(|table| table_name(*table) == name)
}

fn copy_of(records: &[StoredRecord]) -> Result<MemoryStore, StoreError> {
    let store = MemoryStore::new();
    let mut batch = WriteBatch::new();
    for (table, key, value) in records {
        batch.push(WriteOp::Put {
            table: *table,
            key: key.clone(),
            value: value.clone(),
        });
    }
    if !batch.is_empty() {
        store.commit(batch)?;
    }
    Ok(store)
}

fn all_records(store: &MemoryStore) -> Result<Vec<StoredRecord>, StoreError> {
    let mut records = Vec::new();
    for table in Table::ALL {
        for (key, value) in store.entries(table)? {
            records.push((table, key, value));
        }
    }
    Ok(records)
}

impl Mirror {
    /// The mirror of `records` (every record IndexedDB holds). An empty
    /// database gives a new store (with its schema version, which the
    /// first commit writes).
    pub fn load(records: Vec<StoredRecord>) -> Result<Self, StoreError> {
        Ok(Self {
            durable: copy_of(&records)?,
            shadow: copy_of(&records)?,
        })
    }

    /// What the engine reads: only commits whose transaction completed.
    pub fn store(&self) -> &MemoryStore {
        &self.durable
    }

    /// Every record, for the first transaction of a new database (the
    /// schema version a fresh store starts with).
    pub fn records(&self) -> Result<Vec<Change>, StoreError> {
        Ok(all_records(&self.durable)?
            .into_iter()
            .map(|(table, key, value)| Change::Put { table, key, value })
            .collect())
    }

    /// Applies `batch` to the shadow and gives the changes to write. `Err`
    /// (a taken insert key, a damaged record) leaves everything as it was:
    /// report it to the engine as the commit's outcome.
    pub fn stage(&mut self, batch: WriteBatch) -> Result<Staged, StoreError> {
        let mut touched: BTreeSet<(Table, Vec<u8>)> = BTreeSet::new();
        let mut inbox = false;
        for op in batch.ops() {
            match op {
                WriteOp::Put { table, key, .. }
                | WriteOp::Insert { table, key, .. }
                | WriteOp::Delete { table, key } => {
                    touched.insert((*table, key.clone()));
                }
                WriteOp::AppendInbox { .. } | WriteOp::DeleteInbox { .. } => inbox = true,
                // A new kind of operation: diff every table (slow, right).
                _ => inbox = true,
            }
        }
        // The store numbers and groups inbox entries itself (runs, the next
        // number in Meta): which records that touches is the store's
        // business, so every record of those tables is compared.
        let diffed: &[Table] = if inbox {
            &[Table::Meta, Table::Inbox, Table::InboxRuns]
        } else {
            &[]
        };
        let before: Vec<(Table, Vec<confidant_store::Record>)> = diffed
            .iter()
            .map(|table| Ok((*table, self.shadow.entries(*table)?)))
            .collect::<Result<_, StoreError>>()?;
        let committed = self.shadow.commit(batch.clone())?;
        for (table, records) in before {
            for (key, _) in records {
                touched.insert((table, key));
            }
            for (key, _) in self.shadow.entries(table)? {
                touched.insert((table, key));
            }
        }
        let mut changes = Vec::with_capacity(touched.len());
        for (table, key) in touched {
            let now = self.shadow.get(table, &key)?;
            let was = self.durable.get(table, &key)?;
            match (now, was) {
                (Some(now), Some(was)) if now == was => {}
                (Some(value), _) => changes.push(Change::Put { table, key, value }),
                (None, Some(_)) => changes.push(Change::Delete { table, key }),
                (None, None) => {}
            }
        }
        Ok(Staged {
            changes,
            committed,
            batch,
        })
    }

    /// The outcome of `staged`'s transaction: `true` if it completed. On
    /// success the engine's view takes the batch (with the same inbox
    /// numbers the shadow gave); on failure the shadow is brought back to
    /// the durable state.
    pub fn settle(&mut self, staged: Staged, completed: bool) -> Result<Committed, StoreError> {
        if !completed {
            self.shadow = copy_of(&all_records(&self.durable)?)?;
            return Err(StoreError::Io(
                "the IndexedDB transaction did not complete".into(),
            ));
        }
        let committed = self.durable.commit(staged.batch)?;
        if committed != staged.committed {
            return Err(StoreError::Inconsistent(
                "the mirror and its shadow numbered a commit differently",
            ));
        }
        Ok(committed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use confidant_core::ConnectionId;
    use confidant_store::{InboxEntry, InboxStore};

    /// What IndexedDB would hold: the changes of every completed commit.
    fn apply(db: &mut std::collections::BTreeMap<(Table, Vec<u8>), Vec<u8>>, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Put { table, key, value } => {
                    db.insert((*table, key.clone()), value.to_vec());
                }
                Change::Delete { table, key } => {
                    db.remove(&(*table, key.clone()));
                }
            }
        }
    }

    fn reload(db: &std::collections::BTreeMap<(Table, Vec<u8>), Vec<u8>>) -> Mirror {
        Mirror::load(
            db.iter()
                .map(|((table, key), value)| (*table, key.clone(), Zeroizing::new(value.clone())))
                .collect(),
        )
        .unwrap()
    }

    fn entry(connection: &ConnectionId, text: &str) -> InboxEntry {
        InboxEntry {
            sequence: 0,
            connection_id: connection.clone(),
            epoch: 0,
            counter: 0,
            plaintext: Zeroizing::new(text.as_bytes().to_vec()),
        }
    }

    #[test]
    fn the_changes_of_completed_commits_rebuild_the_same_store() {
        let connection = ConnectionId::new("c-test").unwrap();
        let mut mirror = Mirror::load(Vec::new()).unwrap();
        let mut db = std::collections::BTreeMap::new();
        apply(&mut db, &mirror.records().unwrap());
        let mut numbers = Vec::new();
        for round in 0..40u64 {
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::Put {
                table: Table::Counters,
                key: connection.as_bytes().to_vec(),
                value: Zeroizing::new(round.to_be_bytes().to_vec()),
            });
            for n in 0..3 {
                batch.push_inbox(&entry(&connection, &format!("message {round}.{n}")));
            }
            if round % 3 == 2 {
                batch.delete_inbox(numbers[numbers.len() - 2]);
            }
            let staged = mirror.stage(batch).unwrap();
            let changes = staged.changes.clone();
            let committed = mirror.settle(staged, true).unwrap();
            numbers.extend(committed.inbox);
            apply(&mut db, &changes);
            let again = reload(&db);
            assert_eq!(
                again.store().inbox().unwrap(),
                mirror.store().inbox().unwrap(),
                "round {round}"
            );
            for table in Table::ALL {
                assert_eq!(
                    again.store().entries(table).unwrap(),
                    mirror.store().entries(table).unwrap(),
                    "{table:?} after round {round}"
                );
            }
        }
    }

    #[test]
    fn a_commit_whose_transaction_failed_is_not_seen_and_numbers_are_not_reused() {
        let connection = ConnectionId::new("c-test").unwrap();
        let mut mirror = Mirror::load(Vec::new()).unwrap();
        let mut batch = WriteBatch::new();
        batch.push_inbox(&entry(&connection, "first"));
        let staged = mirror.stage(batch).unwrap();
        assert!(!staged.changes.is_empty());
        // Staged, not settled: the engine's view has nothing yet.
        assert!(mirror.store().inbox().unwrap().is_empty());
        assert!(mirror.settle(staged, false).is_err());
        assert!(mirror.store().inbox().unwrap().is_empty());
        let mut batch = WriteBatch::new();
        batch.push_inbox(&entry(&connection, "second"));
        let staged = mirror.stage(batch).unwrap();
        let committed = mirror.settle(staged, true).unwrap();
        let inbox = mirror.store().inbox().unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].plaintext.as_slice(), b"second");
        assert_eq!(Some(inbox[0].sequence), committed.inbox.clone().next());
    }

    #[test]
    fn a_refused_insert_changes_nothing() {
        let mut mirror = Mirror::load(Vec::new()).unwrap();
        let insert = || {
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::Insert {
                table: Table::Connections,
                key: b"c-1".to_vec(),
                value: Zeroizing::new(vec![1]),
            });
            batch
        };
        let staged = mirror.stage(insert()).unwrap();
        mirror.settle(staged, true).unwrap();
        assert!(matches!(
            mirror.stage(insert()),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(mirror.store().entries(Table::Connections).unwrap().len(), 1);
    }

    #[test]
    fn table_names_round_trip() {
        for table in Table::ALL {
            assert_eq!(table_named(&table_name(table)), Some(table));
        }
        assert_eq!(table_named("NoSuchTable"), None);
    }
}
