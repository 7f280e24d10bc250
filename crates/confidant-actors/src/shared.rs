//! What every actor of a node shares: the store, the engine's context (the
//! suites, the key agreement, the node's keys, the protocol's settings),
//! the node's configuration and the outbox.

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::transport::{Outgoing, TransportError};
use confidant_engine::Context;
use confidant_store::RawStore;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Envelopes for the transport, sent in order by the outbox task.
pub(crate) struct OutboxItem {
    pub(crate) envelopes: Vec<Outgoing>,
    pub(crate) done: Option<oneshot::Sender<Result<(), TransportError>>>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn RawStore>,
    /// What the connections' engines share. Replaced whole when the
    /// node's signed pre-keys rotate: a connection keeps the context it
    /// loaded with (whose keys stay valid for the grace period), a
    /// connection loaded after takes the new one.
    pub(crate) engine: std::sync::RwLock<Arc<Context>>,
    /// Every change the node stores goes through it (group commit).
    pub(crate) committer: crate::committer::Committer,
    pub(crate) config: NodeConfig,
    pub(crate) outbox: mpsc::UnboundedSender<OutboxItem>,
    /// The node thread's runtime: every blocking store call runs on its
    /// blocking pool (one pool per node, not one per worker thread).
    pub(crate) runtime: tokio::runtime::Handle,
    /// Bounds the blocking calls in flight (redb serializes writes anyway).
    pub(crate) blocking_permits: Arc<tokio::sync::Semaphore>,
    /// Joins whose connection record is not stored yet.
    pub(crate) joins: Joins,
}

impl Shared {
    /// The engine's context now.
    pub(crate) fn engine(&self) -> Arc<Context> {
        Arc::clone(
            &self
                .engine
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the engine's context (after a rotation of the keys).
    pub(crate) fn set_engine(&self, context: Arc<Context>) {
        *self
            .engine
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = context;
    }
}

/// The joins between asking the relay and storing their connection's
/// record. While any is, a delivery for a connection without a record may
/// be for one of them (the inviter's bundle can come before the join's
/// answer), so it is handed back to the relay and comes again. So is one
/// whose record was read before a join ended (the read may have missed
/// that join's record). Otherwise it is for no connection of ours and is
/// dropped.
#[derive(Debug, Default)]
pub(crate) struct Joins {
    active: std::sync::atomic::AtomicUsize,
    ended: std::sync::atomic::AtomicU64,
}

impl Joins {
    /// A join starts; it ends when the guard drops (after its record was
    /// stored, or it failed).
    pub(crate) fn start(&self) -> JoinGuard<'_> {
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        JoinGuard(self)
    }

    /// How many joins have ended: read before a record is loaded, it tells
    /// whether a join ended since.
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a record read when [`Joins::ended`] was `ended_before` may
    /// miss a join's record: a join is in progress, or one ended since.
    pub(crate) fn may_be_missing(&self, ended_before: u64) -> bool {
        self.active.load(std::sync::atomic::Ordering::SeqCst) > 0 || self.ended() != ended_before
    }
}

/// One join in progress (see [`Joins`]).
pub(crate) struct JoinGuard<'a>(&'a Joins);

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        // Ended first, then no longer active: a reader never sees neither.
        self.0
            .ended
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Shared {
    /// Queues envelopes for the transport; the receiver resolves when the
    /// relay has them.
    pub(crate) fn send(
        &self,
        envelopes: Vec<Outgoing>,
    ) -> Result<oneshot::Receiver<Result<(), TransportError>>, NodeError> {
        let (done, receiver) = oneshot::channel();
        self.outbox
            .send(OutboxItem {
                envelopes,
                done: Some(done),
            })
            .map_err(|_| NodeError::Stopped)?;
        Ok(receiver)
    }

    /// Runs `work` on the node's blocking pool, at most
    /// [`NodeConfig::blocking_threads`] at a time.
    pub(crate) async fn blocking<R, F>(&self, work: F) -> Result<R, NodeError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let _permit = Arc::clone(&self.blocking_permits)
            .acquire_owned()
            .await
            .map_err(|_| NodeError::Stopped)?;
        join(self.runtime.spawn_blocking(work).await)
    }

    /// Queues envelopes without waiting for the relay.
    pub(crate) fn send_and_forget(&self, envelopes: Vec<Outgoing>) -> Result<(), NodeError> {
        self.outbox
            .send(OutboxItem {
                envelopes,
                done: None,
            })
            .map_err(|_| NodeError::Stopped)
    }
}

fn join<R>(result: Result<R, tokio::task::JoinError>) -> Result<R, NodeError> {
    result.map_err(|error| {
        if error.is_panic() {
            NodeError::Crashed("a storage task panicked".into())
        } else {
            NodeError::Stopped
        }
    })
}
