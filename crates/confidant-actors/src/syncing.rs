//! Who waits for which deliveries to be acknowledged: the bookkeeping
//! behind [`Node::sync`](crate::Node::sync).
//!
//! A sync registers a waiter *before* it asks the transport to fetch, since
//! the node may process and acknowledge a fetched delivery before the fetch
//! returns its ids; until the ids are known, the waiter records every
//! acknowledged id it sees. Then it waits for the ids not yet seen.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::transport::DeliveryId;

/// How a waited-for acknowledgement ended.
pub(crate) type Acknowledged = Result<(), String>;

struct Waiter {
    id: u64,
    /// The deliveries still to be acknowledged, once known.
    expected: Option<HashSet<DeliveryId>>,
    /// Acknowledged (and how) while the ids were not yet known.
    seen: HashMap<DeliveryId, Acknowledged>,
    /// The first failed acknowledgement that touched this waiter's ids.
    failed: Option<String>,
    done: Option<oneshot::Sender<Acknowledged>>,
}

impl Waiter {
    fn finish_if_done(&mut self) {
        let complete = self.expected.as_ref().is_some_and(HashSet::is_empty);
        if complete && let Some(done) = self.done.take() {
            let _ = done.send(self.failed.take().map_or(Ok(()), Err));
        }
    }
}

#[derive(Default)]
struct State {
    next: u64,
    waiters: Vec<Waiter>,
    /// The node's deliveries have stopped: nothing more is acknowledged.
    stopped: bool,
}

/// The node's sync waiters (cheap to clone; all clones share them).
#[derive(Clone, Default)]
pub(crate) struct SyncWaiters {
    state: Arc<Mutex<State>>,
}

/// A registered waiter; dropping it unregisters it.
pub(crate) struct Registration {
    waiters: SyncWaiters,
    id: u64,
    done: Option<oneshot::Receiver<Acknowledged>>,
}

impl SyncWaiters {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new waiter that starts recording acknowledgements now.
    pub(crate) fn register(&self) -> Registration {
        let (sender, receiver) = oneshot::channel();
        let mut state = self.state();
        let id = state.next;
        state.next += 1;
        if state.stopped {
            // The sender drops here: the wait ends at once.
            return Registration {
                waiters: self.clone(),
                id,
                done: Some(receiver),
            };
        }
        state.waiters.push(Waiter {
            id,
            expected: None,
            seen: HashMap::new(),
            failed: None,
            done: Some(sender),
        });
        Registration {
            waiters: self.clone(),
            id,
            done: Some(receiver),
        }
    }

    /// The node stopped taking deliveries: every wait ends (as failed), and
    /// later ones end at once.
    pub(crate) fn stop(&self) {
        let mut state = self.state();
        state.stopped = true;
        state.waiters.clear();
    }

    /// `ids` were handed to the relay's acknowledgement, which ended with
    /// `outcome`. Cheap when nobody syncs.
    pub(crate) fn acknowledged(&self, ids: &[DeliveryId], outcome: &Acknowledged) {
        let mut state = self.state();
        for waiter in &mut state.waiters {
            match &mut waiter.expected {
                None => {
                    for id in ids {
                        waiter.seen.insert(*id, outcome.clone());
                    }
                }
                Some(expected) => {
                    let mut touched = false;
                    for id in ids {
                        touched |= expected.remove(id);
                    }
                    if touched && let Err(error) = outcome {
                        waiter.failed.get_or_insert_with(|| error.clone());
                    }
                    waiter.finish_if_done();
                }
            }
        }
    }
}

impl Registration {
    /// The fetched deliveries this waiter waits for; then waits until each
    /// is acknowledged. `Err` carries the first failed acknowledgement, or
    /// says that the node stopped first.
    pub(crate) async fn wait_for(mut self, ids: &[DeliveryId]) -> Acknowledged {
        {
            let mut state = self.waiters.state();
            if let Some(waiter) = state.waiters.iter_mut().find(|w| w.id == self.id) {
                let seen = std::mem::take(&mut waiter.seen);
                let mut expected = HashSet::with_capacity(ids.len());
                for id in ids {
                    match seen.get(id) {
                        None => {
                            expected.insert(*id);
                        }
                        Some(Ok(())) => {}
                        Some(Err(error)) => {
                            waiter.failed.get_or_insert_with(|| error.clone());
                        }
                    }
                }
                waiter.expected = Some(expected);
                waiter.finish_if_done();
            }
        }
        match self.done.take() {
            Some(done) => done
                .await
                .unwrap_or_else(|_| Err("the node stopped before the acknowledgement".into())),
            None => Err("the node stopped before the acknowledgement".into()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = self.id;
        self.waiters
            .state()
            .waiters
            .retain(|waiter| waiter.id != id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(range: std::ops::Range<u64>) -> Vec<DeliveryId> {
        range.map(DeliveryId).collect()
    }

    #[tokio::test]
    async fn waits_for_every_id_including_those_acknowledged_before_they_were_known() {
        let waiters = SyncWaiters::default();
        let registration = waiters.register();
        // Acknowledged while the fetch was still running (and an unrelated
        // failure then, which is not this sync's).
        waiters.acknowledged(&ids(1..3), &Ok(()));
        waiters.acknowledged(&ids(40..41), &Err("not ours".into()));
        let wait = tokio::spawn(async move { registration.wait_for(&ids(1..6)).await });
        tokio::task::yield_now().await;
        waiters.acknowledged(&ids(3..5), &Ok(()));
        tokio::task::yield_now().await;
        assert!(!wait.is_finished(), "5 is not acknowledged yet");
        waiters.acknowledged(&ids(5..6), &Ok(()));
        assert_eq!(wait.await.unwrap(), Ok(()));
        assert!(waiters.state().waiters.is_empty(), "unregistered when done");
    }

    #[tokio::test]
    async fn nothing_fetched_returns_at_once_and_a_failure_is_reported() {
        let waiters = SyncWaiters::default();
        assert_eq!(waiters.register().wait_for(&[]).await, Ok(()));

        let registration = waiters.register();
        let wait = tokio::spawn(async move { registration.wait_for(&ids(1..3)).await });
        tokio::task::yield_now().await;
        // Another sync's ids failing does not touch this one.
        waiters.acknowledged(&ids(7..8), &Err("unrelated".into()));
        waiters.acknowledged(&ids(1..3), &Err("relay down".into()));
        assert_eq!(wait.await.unwrap(), Err("relay down".into()));

        // A failure seen before the ids were known, on one of them.
        let registration = waiters.register();
        waiters.acknowledged(&ids(9..10), &Err("cut".into()));
        assert_eq!(registration.wait_for(&ids(9..10)).await, Err("cut".into()));
    }

    #[tokio::test]
    async fn a_stopped_node_ends_the_wait() {
        let waiters = SyncWaiters::default();
        let registration = waiters.register();
        let wait = tokio::spawn(async move { registration.wait_for(&ids(1..2)).await });
        tokio::task::yield_now().await;
        waiters.stop();
        assert!(wait.await.unwrap().is_err());
        // A sync that starts after the stop does not wait.
        assert!(waiters.register().wait_for(&ids(2..3)).await.is_err());
    }
}
