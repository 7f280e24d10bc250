//! How the inbox is stored: opened messages in *runs*, not one record each.
//!
//! A commit that stores many opened messages (a round of deliveries, or a
//! group commit of many connections' rounds) writes them as few records:
//! each run of consecutive entries of one connection, at most
//! [`RUN_LIMIT`] of them, is one record of [`Table::InboxRuns`]. Its key is
//! `first ‖ end` (two big-endian `u64`: the first sequence number the run
//! was given and the one after its last), its value the entries, each as
//! `sequence u64 ‖ length u32 ‖ entry`, where `entry` is the encoding of an
//! [`InboxEntry`] without its sequence number (the encoding a schema-1
//! `inbox` record holds).
//!
//! Sequence numbers stay per message: the application sees and
//! acknowledges each message by its own number, exactly as before.
//! Acknowledging deletes the entries from their run; the run's record is
//! rewritten without them (once per run and commit, however many of its
//! entries the commit deletes) and removed with its last entry. The common
//! case — an application that acknowledges what one round brought — costs
//! one insert and one delete per run instead of per message.
//!
//! Stores of schema version 1 kept one record per message in
//! [`Table::Inbox`], keyed by its sequence number. A version-1 file is
//! upgraded in place when opened: those records stay where they are, are
//! read with the runs, and are deleted one by one when acknowledged. New
//! entries always go into runs.
//!
//! Every backend runs this module's logic inside its own write transaction
//! through [`InboxTables`], so the rules exist once.

use crate::batch::WriteOp;
use crate::error::StoreError;
use crate::records::InboxEntry;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Meta key of the next inbox sequence number (8 bytes, big-endian).
pub(crate) const INBOX_NEXT_KEY: &[u8] = b"inbox_next";

/// The most entries one run holds. Bounds what one acknowledgement of a
/// single message rewrites (about 64 messages' bytes).
pub const RUN_LIMIT: usize = 64;

/// The key of a run: its first sequence number and the one after its last.
pub fn run_key(first: u64, end: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&first.to_be_bytes());
    key.extend_from_slice(&end.to_be_bytes());
    key
}

/// The `(first, end)` of a run's key.
pub(crate) fn parse_run_key(key: &[u8]) -> Result<(u64, u64), StoreError> {
    let malformed = || StoreError::Corrupt("malformed inbox run key".into());
    let (first, end) = key
        .split_first_chunk::<8>()
        .and_then(|(first, rest)| Some((first, <&[u8; 8]>::try_from(rest).ok()?)))
        .ok_or_else(malformed)?;
    let (first, end) = (u64::from_be_bytes(*first), u64::from_be_bytes(*end));
    if first >= end {
        return Err(malformed());
    }
    Ok((first, end))
}

/// A run's entries: sequence numbers, ascending, with encoded entries.
#[derive(Default)]
pub(crate) struct Run {
    entries: Vec<(u64, Zeroizing<Vec<u8>>)>,
}

impl Run {
    /// Decodes the value of the run keyed `(first, end)`.
    pub(crate) fn decode(first: u64, end: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("malformed inbox run".into());
        let mut entries = Vec::new();
        let mut rest = bytes;
        let mut previous: Option<u64> = None;
        while !rest.is_empty() {
            let (sequence, after) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let (length, after) = after.split_first_chunk::<4>().ok_or_else(corrupt)?;
            let sequence = u64::from_be_bytes(*sequence);
            let length = u32::from_be_bytes(*length) as usize;
            let entry = after.get(..length).ok_or_else(corrupt)?;
            rest = after.get(length..).ok_or_else(corrupt)?;
            if sequence < first || sequence >= end || previous.is_some_and(|p| p >= sequence) {
                return Err(corrupt());
            }
            previous = Some(sequence);
            entries.push((sequence, Zeroizing::new(entry.to_vec())));
        }
        if entries.is_empty() {
            return Err(corrupt());
        }
        Ok(Self { entries })
    }

    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let length = self.entries.iter().map(|(_, entry)| 12 + entry.len()).sum();
        let mut bytes = Zeroizing::new(Vec::with_capacity(length));
        for (sequence, entry) in &self.entries {
            bytes.extend_from_slice(&sequence.to_be_bytes());
            // An entry is far below 4 GiB (a message is bounded by the
            // session layer's limits).
            bytes.extend_from_slice(&(entry.len() as u32).to_be_bytes());
            bytes.extend_from_slice(entry);
        }
        bytes
    }

    /// The run's entries, decoded.
    pub(crate) fn into_entries(self) -> Result<Vec<InboxEntry>, StoreError> {
        self.entries
            .into_iter()
            .map(|(sequence, entry)| InboxEntry::decode(sequence, &entry))
            .collect()
    }

    fn remove(&mut self, sequence: u64) -> bool {
        match self
            .entries
            .binary_search_by_key(&sequence, |(stored, _)| *stored)
        {
            Ok(index) => {
                self.entries.remove(index);
                true
            }
            Err(_) => false,
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A stored run: its key and its value.
pub(crate) type StoredRun = (Vec<u8>, Zeroizing<Vec<u8>>);

/// What the inbox logic needs of a backend inside one write transaction.
/// Values are given and returned as plaintext: a backend that seals at
/// rest seals and opens them itself.
pub(crate) trait InboxTables {
    /// The backend's error (a storage error, or one of ours).
    type Error: From<StoreError>;

    /// Removes the schema-1 record of `sequence`; whether there was one.
    fn remove_single(&mut self, sequence: u64) -> Result<bool, Self::Error>;

    /// The highest sequence number of a schema-1 record.
    fn last_single(&mut self) -> Result<Option<u64>, Self::Error>;

    /// The key of the run with the highest first sequence number.
    fn last_run(&mut self) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The run with the highest first sequence number at or below
    /// `sequence`: its key and its value.
    fn run_at_or_before(&mut self, sequence: u64) -> Result<Option<StoredRun>, Self::Error>;

    /// Writes the run `key` (a new one, or a rewrite); `new` says which:
    /// a new run that finds a record under its key is an error.
    fn put_run(&mut self, key: &[u8], value: &[u8], new: bool) -> Result<(), Self::Error>;

    /// Removes the run `key`.
    fn remove_run(&mut self, key: &[u8]) -> Result<(), Self::Error>;
}

/// A commit's changes to the inbox, gathered in its order and written at
/// its end.
pub(crate) struct InboxChanges {
    first: u64,
    next: u64,
    /// The runs this commit makes: the connection prefix of their entries
    /// (to tell where a run ends), and the run.
    new: Vec<(Vec<u8>, Run)>,
    /// Stored runs this commit deletes entries from, by key.
    touched: BTreeMap<Vec<u8>, Run>,
}

impl InboxChanges {
    /// Starts a commit of `ops`, numbering its inbox entries from the
    /// stored next number `current` (the `Meta` record under
    /// [`INBOX_NEXT_KEY`]; 1 when there is none yet), so that numbers are
    /// never reused, even after deletions. Returns the next number to store
    /// when the commit appends entries. Refuses, before anything is
    /// written, a malformed or exhausted next number and numbers that an
    /// unread message already has: a lowered next number (a damaged or
    /// tampered file) must not overwrite one.
    pub(crate) fn begin<T: InboxTables>(
        tables: &mut T,
        current: Option<&[u8]>,
        ops: &[WriteOp],
    ) -> Result<(Self, Option<[u8; 8]>), T::Error> {
        let first = match current {
            None => 1,
            Some(bytes) => bytes
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("malformed inbox sequence".into()))?,
        };
        let exhausted = || StoreError::Inconsistent("inbox sequence numbers exhausted");
        first.checked_add(1).ok_or_else(exhausted)?;
        let appends = ops
            .iter()
            .filter(|op| matches!(op, WriteOp::AppendInbox { .. }))
            .count() as u64;
        let after = first.checked_add(appends).ok_or_else(exhausted)?;
        if appends > 0 {
            let taken =
                StoreError::Inconsistent("the next inbox number points at an existing entry");
            if tables.last_single()?.is_some_and(|last| last >= first) {
                return Err(taken.into());
            }
            if let Some(key) = tables.last_run()?
                && parse_run_key(&key)?.1 > first
            {
                return Err(taken.into());
            }
        }
        let changes = Self {
            first,
            next: first,
            new: Vec::new(),
            touched: BTreeMap::new(),
        };
        Ok((changes, (appends > 0).then(|| after.to_be_bytes())))
    }

    /// Appends an encoded entry; returns its sequence number.
    pub(crate) fn append(&mut self, entry: Zeroizing<Vec<u8>>) -> u64 {
        let sequence = self.next;
        self.next = self.next.saturating_add(1);
        // An entry starts with its connection id's length and the id.
        let prefix_len = entry
            .first()
            .map_or(0, |&len| 1 + usize::from(len))
            .min(entry.len());
        let prefix = entry.get(..prefix_len).unwrap_or_default();
        match self.new.last_mut() {
            Some((last, run)) if last.as_slice() == prefix && run.entries.len() < RUN_LIMIT => {
                run.entries.push((sequence, entry));
            }
            _ => {
                let prefix = prefix.to_vec();
                self.new.push((
                    prefix,
                    Run {
                        entries: vec![(sequence, entry)],
                    },
                ));
            }
        }
        sequence
    }

    /// Deletes the entry `sequence`, wherever it is (no error if there is
    /// none).
    pub(crate) fn delete<T: InboxTables>(
        &mut self,
        tables: &mut T,
        sequence: u64,
    ) -> Result<(), T::Error> {
        if sequence >= self.first {
            // Given by this very commit (or not given at all).
            for (_, run) in &mut self.new {
                if run.remove(sequence) {
                    break;
                }
            }
            self.new.retain(|(_, run)| !run.is_empty());
            return Ok(());
        }
        if tables.remove_single(sequence)? {
            return Ok(());
        }
        // A run this commit already changed?
        if let Some((key, run)) = self
            .touched
            .range_mut(..=run_key(sequence, u64::MAX))
            .next_back()
            && sequence < parse_run_key(key)?.1
        {
            run.remove(sequence);
            return Ok(());
        }
        let Some((key, value)) = tables.run_at_or_before(sequence)? else {
            return Ok(());
        };
        if self.touched.contains_key(&key) {
            // Looked at above: the entry is not there.
            return Ok(());
        }
        let (first, end) = parse_run_key(&key)?;
        if sequence >= end {
            return Ok(());
        }
        let mut run = Run::decode(first, end, &value)?;
        if run.remove(sequence) {
            self.touched.insert(key, run);
        }
        Ok(())
    }

    /// Writes every run the commit made or changed; returns the numbers
    /// its appended entries got.
    pub(crate) fn finish<T: InboxTables>(
        self,
        tables: &mut T,
    ) -> Result<std::ops::Range<u64>, T::Error> {
        for (key, run) in &self.touched {
            if run.is_empty() {
                tables.remove_run(key)?;
            } else {
                tables.put_run(key, &run.encode(), false)?;
            }
        }
        let mut start = self.first;
        for (_, run) in &self.new {
            // Keys cover the numbers the run was given, including entries
            // the commit deleted again, so keys never overlap.
            let end = run
                .entries
                .last()
                .map_or(start, |(sequence, _)| sequence.saturating_add(1));
            let first = run.entries.first().map_or(start, |(sequence, _)| *sequence);
            tables.put_run(&run_key(first.min(start), end), &run.encode(), true)?;
            start = end;
        }
        Ok(self.first..self.next)
    }
}
