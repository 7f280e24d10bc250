//! The hub: routes by connection id, starts connection actors on demand,
//! stops idle ones, and runs the group commit of each inbound round.
//!
//! The hub keeps one slot per *running* connection actor; a connection
//! without an actor costs no memory. An actor is stopped after
//! [`NodeConfig::idle_timeout`](crate::NodeConfig::idle_timeout) without
//! requests, once it confirms it is idle (nothing staged). While it stops,
//! requests for it wait in the hub, so there is never more than one actor
//! per connection (two would each hold a session and could reuse counters).

use crate::connection::{
    ConnectionActor, Process, Processed, Reset, SendMessages, Settle, StopIfIdle, Stopped,
};
use crate::error::NodeError;
use crate::event::Event;
use crate::shared::Shared;
use crate::transport::{Delivery, DeliveryId, Payload, TransportError};
use actix::dev::Request;
use actix::prelude::*;
use confidant_core::ConnectionId;
use confidant_engine::{Item, Report};
use confidant_store::SendResume;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

enum SlotState {
    Running(Addr<ConnectionActor>),
    /// Asked to stop if idle; requests wait for the answer.
    Stopping(
        Addr<ConnectionActor>,
        Vec<oneshot::Sender<Addr<ConnectionActor>>>,
    ),
}

struct Slot {
    state: SlotState,
    last_used: Instant,
}

/// Where a request goes: an actor now, or one that is about to exist.
enum Target {
    Ready(Addr<ConnectionActor>),
    Later(oneshot::Receiver<Addr<ConnectionActor>>),
}

/// A request on its way to a connection actor.
enum Pending<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
    ConnectionActor: Handler<M>,
{
    Sent(Addr<ConnectionActor>, Request<ConnectionActor, M>),
    Later(oneshot::Receiver<Addr<ConnectionActor>>, M),
}

impl<M> Pending<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
    ConnectionActor: Handler<M>,
{
    async fn wait(
        self,
        id: ConnectionId,
    ) -> (Option<Addr<ConnectionActor>>, Result<M::Result, NodeError>) {
        let (addr, request) = match self {
            Pending::Sent(addr, request) => (addr, request),
            Pending::Later(receiver, message) => match receiver.await {
                Ok(addr) => {
                    let request = addr.send(message);
                    (addr, request)
                }
                Err(_) => return (None, Err(NodeError::Stopped)),
            },
        };
        match request.await {
            Ok(result) => (Some(addr), Ok(result)),
            Err(_) => (
                None,
                Err(NodeError::Crashed(format!(
                    "connection {id} stopped while handling the request; it restarts from its stored state"
                ))),
            ),
        }
    }
}

pub(crate) struct Hub {
    shared: Arc<Shared>,
    /// Connections whose actor crashed in a round: they get one delivery
    /// per round until one goes through.
    crashing: Arc<std::sync::Mutex<HashSet<ConnectionId>>>,
    slots: HashMap<ConnectionId, Slot>,
    /// Where each connection whose actor stopped idle let its sending
    /// counter go, for its next actor: a wake-up then needs no reservation
    /// commit. In memory only, so a crash forgets them all (and sealing
    /// resumes above the durable reservations).
    resume: HashMap<ConnectionId, SendResume>,
    workers: Vec<ArbiterHandle>,
    next_worker: usize,
}

impl Hub {
    /// `resume`: the points the last clean shutdown stored, already
    /// deleted from the store.
    pub(crate) fn new(
        shared: Arc<Shared>,
        workers: Vec<ArbiterHandle>,
        resume: HashMap<ConnectionId, SendResume>,
    ) -> Self {
        Self {
            shared,
            crashing: Arc::default(),
            slots: HashMap::new(),
            resume,
            workers,
            next_worker: 0,
        }
    }

    fn spawn_actor(&mut self, id: &ConnectionId) -> Addr<ConnectionActor> {
        let shared = Arc::clone(&self.shared);
        let resume = self.resume.remove(id);
        let id = id.clone();
        let Some(worker) = self
            .workers
            .get(self.next_worker % self.workers.len().max(1))
        else {
            return ConnectionActor::new(id, shared, resume).start();
        };
        self.next_worker = self.next_worker.wrapping_add(1);
        ConnectionActor::start_in_arbiter(worker, move |_| ConnectionActor::new(id, shared, resume))
    }

    fn target(&mut self, id: &ConnectionId) -> Target {
        let now = Instant::now();
        if let Some(slot) = self.slots.get_mut(id) {
            slot.last_used = now;
            match &mut slot.state {
                SlotState::Running(addr) if addr.connected() => return Target::Ready(addr.clone()),
                SlotState::Running(_) => {
                    // It crashed: a new actor starts from the stored state.
                }
                SlotState::Stopping(_, waiters) => {
                    let (sender, receiver) = oneshot::channel();
                    waiters.push(sender);
                    return Target::Later(receiver);
                }
            }
        }
        let addr = self.spawn_actor(id);
        self.slots.insert(
            id.clone(),
            Slot {
                state: SlotState::Running(addr.clone()),
                last_used: now,
            },
        );
        Target::Ready(addr)
    }

    fn route<M>(&mut self, id: &ConnectionId, message: M) -> Pending<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ConnectionActor: Handler<M>,
    {
        match self.target(id) {
            Target::Ready(addr) => {
                let request = addr.send(message);
                Pending::Sent(addr, request)
            }
            Target::Later(receiver) => Pending::Later(receiver, message),
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        // After a burst of activity, give the slots' memory back.
        if self.slots.capacity() > 4 * self.slots.len() + 64 {
            self.slots.shrink_to_fit();
        }
        let timeout = self.shared.config.idle_timeout;
        let now = Instant::now();
        let idle: Vec<ConnectionId> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                matches!(slot.state, SlotState::Running(_))
                    && now.duration_since(slot.last_used) >= timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            let SlotState::Running(addr) = &slot.state else {
                continue;
            };
            let addr = addr.clone();
            slot.state = SlotState::Stopping(addr.clone(), Vec::new());
            ctx.spawn(
                addr.send(StopIfIdle)
                    .into_actor(self)
                    .map(move |answer, hub, _| {
                        // A mailbox error: it is gone, with nothing to resume.
                        hub.after_stop(&id, answer.unwrap_or(Stopped::Stopped(None)));
                    }),
            );
        }
    }

    fn after_stop(&mut self, id: &ConnectionId, answer: Stopped) {
        let Some(slot) = self.slots.remove(id) else {
            return;
        };
        let stopped = match answer {
            Stopped::Busy => false,
            Stopped::Stopped(point) => {
                if let Some(point) = point {
                    self.resume.insert(id.clone(), point);
                }
                true
            }
        };
        let SlotState::Stopping(old, waiters) = slot.state else {
            self.slots.insert(id.clone(), slot);
            return;
        };
        let addr = if !stopped {
            old
        } else if waiters.is_empty() {
            return;
        } else {
            self.spawn_actor(id)
        };
        for waiter in waiters {
            let _ = waiter.send(addr.clone());
        }
        self.slots.insert(
            id.clone(),
            Slot {
                state: SlotState::Running(addr),
                last_used: Instant::now(),
            },
        );
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        let timeout = self.shared.config.idle_timeout;
        let period = (timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(5));
        ctx.run_interval(period, |hub, ctx| hub.sweep(ctx));
    }
}

/// Send application messages on a connection.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<Result<(), TransportError>>, NodeError>")]
pub(crate) struct HubSend(pub(crate) ConnectionId, pub(crate) Vec<Vec<u8>>);

impl Handler<HubSend> for Hub {
    type Result = ResponseFuture<Result<oneshot::Receiver<Result<(), TransportError>>, NodeError>>;

    fn handle(&mut self, HubSend(id, messages): HubSend, _: &mut Self::Context) -> Self::Result {
        let pending = self.route(&id, SendMessages(messages));
        Box::pin(async move { pending.wait(id).await.1? })
    }
}

/// Reset a connection.
#[derive(Message)]
#[rtype(result = "Result<(), NodeError>")]
pub(crate) struct HubReset(pub(crate) ConnectionId);

impl Handler<HubReset> for Hub {
    type Result = ResponseFuture<Result<(), NodeError>>;

    fn handle(&mut self, HubReset(id): HubReset, _: &mut Self::Context) -> Self::Result {
        let pending = self.route(&id, Reset);
        Box::pin(async move { pending.wait(id).await.1? })
    }
}

/// How many connection actors run.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct Active;

impl Handler<Active> for Hub {
    type Result = usize;

    fn handle(&mut self, _: Active, _: &mut Self::Context) -> usize {
        self.slots
            .values()
            .filter(|slot| match &slot.state {
                SlotState::Running(addr) | SlotState::Stopping(addr, _) => addr.connected(),
            })
            .count()
    }
}

/// At a clean shutdown: stop every idle actor and give every resume point
/// (theirs, and those of connections stopped earlier), for the store. An
/// actor that is busy keeps running and gives none: its connection
/// reserves anew after the restart.
#[derive(Message)]
#[rtype(result = "Vec<(ConnectionId, SendResume)>")]
pub(crate) struct Drain;

impl Handler<Drain> for Hub {
    type Result = ResponseFuture<Vec<(ConnectionId, SendResume)>>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let mut points: Vec<(ConnectionId, SendResume)> = self.resume.drain().collect();
        let running: Vec<(ConnectionId, Addr<ConnectionActor>)> = self
            .slots
            .iter()
            .filter_map(|(id, slot)| match &slot.state {
                SlotState::Running(addr) if addr.connected() => Some((id.clone(), addr.clone())),
                _ => None,
            })
            .collect();
        Box::pin(async move {
            let answers = futures_util::future::join_all(
                running
                    .into_iter()
                    .map(|(id, addr)| async move { (id, addr.send(StopIfIdle).await) }),
            )
            .await;
            points.extend(answers.into_iter().filter_map(|(id, answer)| match answer {
                Ok(Stopped::Stopped(Some(point))) => Some((id, point)),
                _ => None,
            }));
            points
        })
    }
}

/// Stop the node's actors and its actix system.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

impl Handler<Shutdown> for Hub {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.slots.clear();
        ctx.stop();
        System::current().stop();
    }
}

/// One inbound round: a batch of deliveries from the transport.
#[derive(Message)]
#[rtype(result = "RoundOutcome")]
pub(crate) struct Round(pub(crate) Vec<Delivery>);

/// What to tell the transport and the application after a round.
#[derive(Debug, Default)]
pub(crate) struct RoundOutcome {
    pub(crate) ack: Vec<DeliveryId>,
    pub(crate) release: Vec<DeliveryId>,
    /// Deliveries of connections whose actor crashed handling them.
    pub(crate) crashed: Vec<(DeliveryId, ConnectionId)>,
    pub(crate) events: Vec<Event>,
}

impl Handler<Round> for Hub {
    type Result = ResponseFuture<RoundOutcome>;

    fn handle(&mut self, Round(deliveries): Round, _: &mut Self::Context) -> Self::Result {
        // Group by connection, keeping arrival order within each.
        let mut order: Vec<ConnectionId> = Vec::new();
        let mut groups: HashMap<ConnectionId, Vec<(DeliveryId, Item)>> = HashMap::new();
        for delivery in deliveries {
            let item = match delivery.payload {
                Payload::Envelope(bytes) => Item::Envelope(bytes),
                Payload::Joined { token } => Item::Joined(token),
            };
            let group = groups
                .entry(delivery.connection_id.clone())
                .or_insert_with(|| {
                    order.push(delivery.connection_id.clone());
                    Vec::new()
                });
            group.push((delivery.id, item));
        }
        let mut requests = Vec::with_capacity(order.len());
        let mut held_back = Vec::new();
        let crashing: HashSet<ConnectionId> = self
            .crashing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for id in order {
            let mut items = groups.remove(&id).unwrap_or_default();
            // A connection whose actor crashed gets one delivery per round
            // until one goes through, so a crash is blamed on the delivery
            // that caused it and not on those around it.
            let single = crashing.contains(&id);
            if single && items.len() > 1 {
                held_back.extend(items.drain(1..).map(|(delivery, _)| delivery));
            }
            let ids: Vec<DeliveryId> = items.iter().map(|(delivery, _)| *delivery).collect();
            let pending = self.route(&id, Process(items));
            requests.push(async move {
                let (addr, result) = pending.wait(id.clone()).await;
                (
                    id,
                    single,
                    addr,
                    ids,
                    result.and_then(|processed| processed),
                )
            });
        }
        let shared = Arc::clone(&self.shared);
        let crashing = Arc::clone(&self.crashing);
        Box::pin(async move {
            let results = futures_util::future::join_all(requests).await;
            let mut outcome = RoundOutcome {
                release: held_back,
                ..RoundOutcome::default()
            };
            let mut to_commit: Vec<(ConnectionId, Addr<ConnectionActor>, Processed)> = Vec::new();
            {
                let mut crashing = crashing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (id, single, addr, ids, result) in results {
                    match (addr, result) {
                        (Some(addr), Ok(processed)) => {
                            crashing.remove(&id);
                            to_commit.push((id, addr, processed));
                        }
                        (_, Err(NodeError::Crashed(_))) | (None, Ok(_)) => {
                            if single {
                                // Alone in its round: this delivery did it.
                                outcome
                                    .crashed
                                    .extend(ids.into_iter().map(|delivery| (delivery, id.clone())));
                            } else {
                                crashing.insert(id);
                                outcome.release.extend(ids);
                            }
                        }
                        (_, Err(_)) => outcome.release.extend(ids),
                    }
                }
            }
            // Every connection's round in one transaction (the node's
            // committer groups them, with whatever else is waiting).
            let commits = to_commit.iter_mut().map(|(_, _, processed)| {
                let batch = processed
                    .round
                    .as_mut()
                    .map(|round| std::mem::take(&mut round.batch));
                let shared = Arc::clone(&shared);
                async move {
                    match batch {
                        Some(batch) => shared.committer.commit(batch).await.map(Some),
                        None => Ok(None),
                    }
                }
            });
            let results = futures_util::future::join_all(commits).await;
            for ((_, addr, processed), result) in to_commit.into_iter().zip(results) {
                let Processed {
                    round,
                    ack,
                    release,
                    events,
                    settled,
                    outcome: told,
                } = processed;
                outcome.ack.extend(ack);
                outcome.release.extend(release);
                outcome.events.extend(events);
                if let Some(round) = round {
                    let result = match result {
                        Ok(numbers) => {
                            let numbers = numbers.unwrap_or(0..0);
                            outcome.ack.extend(round.acknowledge);
                            outcome
                                .events
                                .extend(Report::publish(round.report, Some(numbers.clone())));
                            Ok(numbers)
                        }
                        Err(error) => {
                            tracing::warn!(%error, "commit failed; the connection reloads and its deliveries are released");
                            outcome.release.extend(round.acknowledge);
                            // Messages not stored are not reported.
                            outcome.events.extend(Report::publish(round.report, None));
                            Err(error)
                        }
                    };
                    if let Some(told) = told {
                        let _ = told.send(result);
                    }
                    addr.do_send(Settle);
                }
                // A connection whose state was lost meanwhile loads what
                // this commit left.
                if let Some(settled) = settled {
                    let _ = settled.send(true);
                }
            }
            outcome
        })
    }
}
