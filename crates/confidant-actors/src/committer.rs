//! The node's group commit: every change a node stores — a round's
//! received messages, a handshake step, a counter reservation, a key
//! update, a new invitation or join, an acknowledgement — goes through one
//! [`Committer`], which gathers what is waiting into one transaction. Many
//! connections' steps then cost one durable commit between them, not one
//! each, and no caller waits for a gate: each waits only for its own
//! change.
//!
//! If a shared transaction fails, each of its changes is committed again
//! on its own, so that one change that cannot be stored (a join whose
//! connection id is taken, a disk that refuses one record) fails alone and
//! the others are stored. (A failed transaction applied nothing.)

use confidant_store::{RawStore, StoreError, WriteBatch, WriteOp};
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most changes in one transaction.
const MAX_GROUP: usize = 1024;

struct Request {
    batch: WriteBatch,
    done: oneshot::Sender<Result<Range<u64>, StoreError>>,
}

/// Commits changes, grouped (see the module's documentation).
pub(crate) struct Committer {
    requests: mpsc::UnboundedSender<Request>,
}

impl Committer {
    /// Starts the committer on the current runtime; `in_flight`
    /// transactions may run at once (one commits while the next gathers).
    pub(crate) fn start(
        store: Arc<dyn RawStore>,
        runtime: tokio::runtime::Handle,
        in_flight: usize,
    ) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        runtime.spawn(run(store, runtime.clone(), receiver, in_flight.max(1)));
        Self { requests }
    }

    /// Commits `batch` (perhaps with others, in one transaction); the inbox
    /// numbers its entries got.
    pub(crate) async fn commit(&self, batch: WriteBatch) -> Result<Range<u64>, StoreError> {
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request { batch, done })
            .map_err(|_| StoreError::Io("the node is shut down".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Io("the node's commit task stopped".into()))?
    }
}

async fn run(
    store: Arc<dyn RawStore>,
    runtime: tokio::runtime::Handle,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    in_flight: usize,
) {
    let permits = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = receiver.recv().await {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        // Whatever came while waiting for a transaction slot joins it.
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let store = Arc::clone(&store);
        let blocking = runtime.clone();
        runtime.spawn(async move {
            let (batches, answers): (Vec<WriteBatch>, Vec<_>) = group
                .into_iter()
                .map(|request| (request.batch, request.done))
                .unzip();
            let count = batches.len();
            let results = match blocking
                .spawn_blocking(move || commit_group(&*store, batches))
                .await
            {
                Ok(results) => results,
                Err(error) => {
                    tracing::error!(%error, "a commit task panicked");
                    (0..count)
                        .map(|_| Err(StoreError::Io(format!("the commit task panicked: {error}"))))
                        .collect()
                }
            };
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
            drop(permit);
        });
    }
}

fn inbox_appends(batch: &WriteBatch) -> u64 {
    batch
        .ops()
        .iter()
        .filter(|op| matches!(op, WriteOp::AppendInbox { .. }))
        .count() as u64
}

/// Commits `batches` in one transaction; if that fails, each on its own.
fn commit_group(
    store: &dyn RawStore,
    batches: Vec<WriteBatch>,
) -> Vec<Result<Range<u64>, StoreError>> {
    if batches.len() == 1 {
        return batches
            .into_iter()
            .map(|batch| store.commit(batch).map(|committed| committed.inbox))
            .collect();
    }
    let mut merged = WriteBatch::new();
    let mut counts = Vec::with_capacity(batches.len());
    for batch in &batches {
        counts.push(inbox_appends(batch));
        merged.append(batch.clone());
    }
    match store.commit(merged) {
        Ok(committed) => {
            let mut next = committed.inbox.start;
            counts
                .into_iter()
                .map(|count| {
                    let range = next..next + count;
                    next += count;
                    Ok(range)
                })
                .collect()
        }
        Err(error) => {
            tracing::debug!(%error, changes = batches.len(), "a shared commit failed; each change is committed on its own");
            batches
                .into_iter()
                .map(|batch| store.commit(batch).map(|committed| committed.inbox))
                .collect()
        }
    }
}
