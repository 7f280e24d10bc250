//! The redb mailbox, the embedded default, and its writer.
//!
//! Every change goes through one writer thread that applies whatever
//! requests are waiting in **one durable transaction** (group commit): a
//! request is answered only after its change is on disk, and concurrent
//! requests share one disk sync. Each request is a typed job (its
//! operation's steps from `ops` and the channel its answer goes back on),
//! so an answer always has the type its request asked for.

use super::codec::{
    AUDIENCE_KEY, CLIENT_EXPIRY, CLIENT_IDS, CONNECTIONS, Fatal, MESSAGES, META, NONCE_EXPIRY,
    NONCES, NONCES_PRUNED_KEY, PENDING, SCHEMA_KEY, TOKENS, TokenRecord, decode_message,
    message_key, message_key_id,
};
use super::ops::{self, Redb, RedbResult};
use super::{
    BatchEntry, BatchOutcome, Joined, Limits, MailboxDepth, MailboxError, MailboxStore,
    SCHEMA_VERSION, Sent, StoredMessage, TokenInfo, check_audience, new_audience, storage,
    valid_audience,
};
use crate::auth::{PartyKey, Verified};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::Path;
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// Most waiting requests applied in one transaction.
const GROUP_LIMIT: usize = 1024;
/// Expired entries pruned per transaction.
const PRUNE_LIMIT: usize = 256;

/// A request waiting for the writer.
trait Job: Send {
    /// Its clock (milliseconds).
    fn now_ms(&self) -> u64;
    /// Records its nonce and applies it in `txn`.
    fn apply(
        &mut self,
        txn: &WriteTransaction,
        limits: Limits,
        pruned_at: u64,
    ) -> Result<(), Fatal>;
    /// Answers it: its own result if the transaction committed, else
    /// `committed`'s error.
    fn answer(self: Box<Self>, committed: Result<(), MailboxError>);
}

struct Pending<T, F> {
    verified: Verified,
    now_ms: u64,
    work: Option<F>,
    result: Option<Result<T, MailboxError>>,
    sender: oneshot::Sender<Result<T, MailboxError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Redb<'_>) -> RedbResult<T> + Send,
{
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn apply(
        &mut self,
        txn: &WriteTransaction,
        limits: Limits,
        pruned_at: u64,
    ) -> Result<(), Fatal> {
        let redb = Redb {
            txn,
            limits,
            party: self.verified.party,
            now_ms: self.now_ms,
        };
        let result = match ops::nonce::redb(&redb, &self.verified, pruned_at)? {
            Err(refused) => Err(refused),
            Ok(()) => match self.work.take() {
                Some(work) => work(&redb)?,
                None => Err(MailboxError::Storage(
                    "internal: a job applied twice".into(),
                )),
            },
        };
        self.result = Some(result);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), MailboxError>) {
        let Self { result, sender, .. } = *self;
        let result = committed.and_then(|()| {
            result
                .unwrap_or_else(|| Err(MailboxError::Storage("internal: a job not applied".into())))
        });
        let _ = sender.send(result);
    }
}

/// The redb mailbox store.
pub struct RedbMailbox {
    database: Arc<Database>,
    jobs: std::sync::Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    limits: Limits,
    audience: String,
}

impl std::fmt::Debug for RedbMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbMailbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RedbMailbox {
    /// Opens (or creates) the mailbox file at `path`. Its audience is the
    /// one stored in the file (generated and stored on first open).
    pub fn open(path: impl AsRef<Path>, limits: Limits) -> Result<Self, MailboxError> {
        Self::open_with_audience(path, limits, None)
    }

    /// Opens (or creates) the mailbox file at `path`, with `audience` (if
    /// given) instead of the one stored in the file; the stored one is kept
    /// for later opens without an audience.
    pub fn open_with_audience(
        path: impl AsRef<Path>,
        limits: Limits,
        audience: Option<String>,
    ) -> Result<Self, MailboxError> {
        check_audience(audience.as_deref())?;
        let database = Database::create(path.as_ref()).map_err(storage)?;
        let txn = database.begin_write().map_err(storage)?;
        let chosen;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let found = meta
                .get(SCHEMA_KEY)
                .map_err(storage)?
                .map(|value| value.value().to_vec());
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes().as_slice())
                        .map_err(storage)?;
                }
                Some(bytes) if bytes == SCHEMA_VERSION.to_be_bytes() => {}
                Some(_) => {
                    return Err(MailboxError::Storage(format!(
                        "the mailbox file has another schema version than this build's ({SCHEMA_VERSION})"
                    )));
                }
            }
            let stored = meta
                .get(AUDIENCE_KEY)
                .map_err(storage)?
                .map(|value| String::from_utf8(value.value().to_vec()));
            let stored = match stored {
                Some(Ok(stored)) if valid_audience(&stored) => stored,
                Some(_) => {
                    return Err(MailboxError::Storage(
                        "the stored audience is malformed".into(),
                    ));
                }
                None => {
                    let fresh = new_audience()?;
                    meta.insert(AUDIENCE_KEY, fresh.as_bytes())
                        .map_err(storage)?;
                    fresh
                }
            };
            chosen = audience.unwrap_or(stored);
            // Create every table, so that reads never meet a missing one.
            txn.open_table(TOKENS).map_err(storage)?;
            txn.open_table(CONNECTIONS).map_err(storage)?;
            txn.open_table(MESSAGES).map_err(storage)?;
            txn.open_table(PENDING).map_err(storage)?;
            txn.open_table(CLIENT_IDS).map_err(storage)?;
            txn.open_table(CLIENT_EXPIRY).map_err(storage)?;
            txn.open_table(NONCES).map_err(storage)?;
            txn.open_table(NONCE_EXPIRY).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let database = Arc::new(database);
        let (jobs, receiver) = mpsc::channel();
        let writer = {
            let database = Arc::clone(&database);
            std::thread::Builder::new()
                .name("connector-writer".into())
                .spawn(move || write_loop(&database, &receiver, limits))
                .map_err(storage)?
        };
        Ok(Self {
            database,
            jobs: std::sync::Mutex::new(Some(jobs)),
            writer: std::sync::Mutex::new(Some(writer)),
            limits,
            audience: chosen,
        })
    }

    /// Stops the writer after the requests already queued, so that every
    /// answered request is on disk and the file can be closed.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut writer| writer.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// How many messages wait for `recipient`, read at once (without a
    /// runtime: for tools and tests that open the file after a run).
    pub fn pending(&self, recipient: &PartyKey) -> Result<u64, MailboxError> {
        let txn = self.database.begin_read().map_err(storage)?;
        let pending = txn.open_table(PENDING).map_err(storage)?;
        Ok(pending
            .get(recipient.as_slice())
            .map_err(storage)?
            .map_or(0, |count| count.value()))
    }

    /// Queues `work` (after the nonce of `verified`) for the writer; the
    /// answer arrives once it is on disk.
    async fn submit<T, F>(
        &self,
        verified: Verified,
        now_ms: u64,
        work: F,
    ) -> Result<T, MailboxError>
    where
        T: Send + 'static,
        F: FnOnce(&Redb<'_>) -> RedbResult<T> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending {
            verified,
            now_ms,
            work: Some(work),
            result: None,
            sender,
        });
        let closed = || MailboxError::Storage("the mailbox is closed".into());
        let jobs = self.jobs.lock().ok().and_then(|jobs| jobs.clone());
        let refused = match jobs {
            Some(jobs) => jobs.send(job).err().map(|mpsc::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = refused {
            job.answer(Err(closed()));
        }
        receiver.await.map_err(|_| closed())?
    }

    /// Runs a read off the async threads.
    async fn read<T, F>(&self, work: F) -> Result<T, MailboxError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, MailboxError> + Send + 'static,
    {
        let database = Arc::clone(&self.database);
        tokio::task::spawn_blocking(move || work(&database))
            .await
            .map_err(|_| MailboxError::Storage("a storage task failed".into()))?
    }
}

impl Drop for RedbMailbox {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl MailboxStore for RedbMailbox {
    async fn use_nonce(&self, verified: Verified, now_ms: u64) -> Result<(), MailboxError> {
        self.submit(verified, now_ms, |_| Ok(Ok(()))).await
    }

    async fn create_tokens(
        &self,
        verified: Verified,
        tokens: Vec<String>,
        now_ms: u64,
    ) -> Result<(), MailboxError> {
        self.submit(verified, now_ms, move |redb| {
            ops::tokens::create_redb(redb, &tokens)
        })
        .await
    }

    async fn token_info(&self, token: &str) -> Result<Option<TokenInfo>, MailboxError> {
        let token = token.to_owned();
        self.read(move |database| {
            let txn = database.begin_read().map_err(storage)?;
            let tokens = txn.open_table(TOKENS).map_err(storage)?;
            let Some(value) = tokens.get(token.as_bytes()).map_err(storage)? else {
                return Ok(None);
            };
            let record = TokenRecord::decode(value.value())?;
            Ok(Some(TokenInfo {
                creator: record.creator,
                used: record.used,
            }))
        })
        .await
    }

    async fn use_token(
        &self,
        verified: Verified,
        token: String,
        connection_id: String,
        now_ms: u64,
    ) -> Result<Joined, MailboxError> {
        self.submit(verified, now_ms, move |redb| {
            ops::tokens::use_redb(redb, &token, &connection_id)
        })
        .await
    }

    async fn send(
        &self,
        verified: Verified,
        connection_id: String,
        envelope: Vec<u8>,
        client_id: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<Sent, MailboxError> {
        self.submit(verified, now_ms, move |redb| {
            if let Err(refused) = ops::send::check(&envelope, redb.limits) {
                return Ok(Err(refused));
            }
            ops::send::redb(redb, &connection_id, &envelope, client_id.as_deref())
        })
        .await
    }

    async fn send_batch(
        &self,
        verified: Verified,
        entries: Vec<BatchEntry>,
        now_ms: u64,
    ) -> Result<BatchOutcome, MailboxError> {
        // One job: the whole batch in one write transaction.
        self.submit(verified, now_ms, move |redb| {
            ops::send_batch::redb(redb, &entries)
        })
        .await
    }

    async fn messages_after(
        &self,
        recipient: &PartyKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, MailboxError> {
        let recipient = *recipient;
        self.read(move |database| {
            let txn = database.begin_read().map_err(storage)?;
            let messages = txn.open_table(MESSAGES).map_err(storage)?;
            let start = message_key(&recipient, after.saturating_add(1));
            let end = message_key(&recipient, u64::MAX);
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for entry in messages
                .range(start.as_slice()..=end.as_slice())
                .map_err(storage)?
            {
                if out.len() >= limit {
                    break;
                }
                let (key, value) = entry.map_err(storage)?;
                let message = decode_message(message_key_id(key.value())?, value.value())?;
                bytes = bytes.saturating_add(message.wire_len());
                if bytes > max_bytes && !out.is_empty() {
                    break;
                }
                out.push(message);
            }
            Ok(out)
        })
        .await
    }

    async fn acknowledge(
        &self,
        verified: Verified,
        ids: Vec<u64>,
        now_ms: u64,
    ) -> Result<u32, MailboxError> {
        self.submit(verified, now_ms, move |redb| {
            ops::acknowledge::redb(redb, &ids)
        })
        .await
    }

    async fn revoke(
        &self,
        verified: Verified,
        connection_id: String,
        now_ms: u64,
    ) -> Result<PartyKey, MailboxError> {
        self.submit(verified, now_ms, move |redb| {
            ops::revoke::redb(redb, &connection_id)
        })
        .await
    }

    async fn pending(&self, recipient: &PartyKey) -> Result<u64, MailboxError> {
        let recipient = *recipient;
        self.read(move |database| {
            let txn = database.begin_read().map_err(storage)?;
            let pending = txn.open_table(PENDING).map_err(storage)?;
            Ok(pending
                .get(recipient.as_slice())
                .map_err(storage)?
                .map_or(0, |count| count.value()))
        })
        .await
    }

    async fn depth(&self) -> Result<MailboxDepth, MailboxError> {
        self.read(|database| {
            let txn = database.begin_read().map_err(storage)?;
            let pending = txn.open_table(PENDING).map_err(storage)?;
            let mut depth = MailboxDepth::default();
            for entry in pending.iter().map_err(storage)? {
                let (_, count) = entry.map_err(storage)?;
                let count = count.value();
                depth.waiting = depth.waiting.saturating_add(count);
                depth.deepest = depth.deepest.max(count);
            }
            Ok(depth)
        })
        .await
    }

    async fn healthy(&self) -> bool {
        self.jobs.lock().is_ok_and(|jobs| jobs.is_some())
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn audience(&self) -> String {
        self.audience.clone()
    }
}

/// Applies queued jobs in groups, one durable transaction per group.
fn write_loop(database: &Database, jobs: &mpsc::Receiver<Box<dyn Job>>, limits: Limits) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_LIMIT {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let txn = match database.begin_write() {
            Ok(txn) => txn,
            Err(error) => {
                let error = storage(error);
                for job in group {
                    job.answer(Err(error.clone()));
                }
                continue;
            }
        };
        let latest = group.iter().map(|job| job.now_ms()).max().unwrap_or(0);
        let mut fatal = None;
        match prune(&txn, latest) {
            Ok(pruned_at) => {
                for job in &mut group {
                    if let Err(Fatal(error)) = job.apply(&txn, limits, pruned_at) {
                        fatal = Some(error);
                        break;
                    }
                }
            }
            Err(error) => fatal = Some(error),
        }
        let committed = match fatal {
            Some(error) => {
                let _ = txn.abort();
                Err(error)
            }
            None => txn.commit().map_err(storage),
        };
        if let Err(error) = &committed {
            tracing::error!(%error, "mailbox commit failed; {} requests refused", group.len());
        }
        for job in group {
            job.answer(committed.clone());
        }
    }
}

/// Prunes expired nonces and client ids at the later of `latest` (the
/// latest clock of the transaction's requests) and the time the previous
/// pruning ran at; returns that time, before which a nonce is refused.
fn prune(txn: &WriteTransaction, latest: u64) -> Result<u64, MailboxError> {
    let now_ms = {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let pruned = meta
            .get(NONCES_PRUNED_KEY)
            .map_err(storage)?
            .and_then(|value| <[u8; 8]>::try_from(value.value()).ok())
            .map_or(0, u64::from_be_bytes);
        if latest > pruned {
            meta.insert(NONCES_PRUNED_KEY, latest.to_be_bytes().as_slice())
                .map_err(storage)?;
        }
        latest.max(pruned)
    };
    prune_expired(txn, NONCE_EXPIRY, NONCES, now_ms)?;
    prune_expired(txn, CLIENT_EXPIRY, CLIENT_IDS, now_ms)?;
    Ok(now_ms)
}

/// Deletes up to [`PRUNE_LIMIT`] entries of an expiry index (`expires (8) ‖
/// key`) that expired before `now_ms`, and each one's `key` in `records`.
fn prune_expired<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    index: TableDefinition<&[u8], ()>,
    records: TableDefinition<&[u8], V>,
    now_ms: u64,
) -> Result<(), MailboxError> {
    let mut expiry = txn.open_table(index).map_err(storage)?;
    let limit = now_ms.to_be_bytes();
    let expired: Vec<Vec<u8>> = expiry
        .range(..limit.as_slice())
        .map_err(storage)?
        .take(PRUNE_LIMIT)
        .filter_map(|entry| entry.ok().map(|(key, _)| key.value().to_vec()))
        .collect();
    if expired.is_empty() {
        return Ok(());
    }
    let mut records = txn.open_table(records).map_err(storage)?;
    for key in expired {
        expiry.remove(key.as_slice()).map_err(storage)?;
        if let Some(inner) = key.get(8..) {
            records.remove(inner).map_err(storage)?;
        }
    }
    Ok(())
}
