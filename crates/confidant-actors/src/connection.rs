//! The actor that owns one connection: a driver of its engine.
//!
//! A [`ConnectionActor`] holds the connection's
//! [`confidant_engine::Connection`] and carries out the effects it returns:
//! a step's commit on the node's blocking pool (then the engine is told the
//! outcome), envelopes to the outbox, a round's commit handed to the hub's
//! group commit, events and acknowledgements back to the hub. Every
//! operation on the connection is a message to it, handled atomically
//! (actix's [`AtomicResponse`]): while one runs, even across a commit on a
//! blocking thread, no other message for the connection is handled. The
//! actor decides nothing about the protocol: that is the engine's.
//!
//! A panic while handling a message (a bug, or a user's cipher plugin) is
//! caught: the connection's memory is dropped and the next message loads it
//! from the store again. If the panic came while a batch of the connection
//! was in the round's group commit, that load waits until the commit has
//! settled, so that it reads what the commit stored.

use crate::error::NodeError;
use crate::event::Event;
use crate::shared::Shared;
use crate::transport::{DeliveryId, Outgoing, TransportError};
use actix::prelude::*;
use confidant_core::ConnectionId;
use confidant_engine::{Commit, CommitId, CommitKind, Connection, Effects, Item, Outbound};
use confidant_store::{SendResume, StoreError};
use futures_util::FutureExt as _;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// What one connection made of its part of an inbound round.
#[derive(Debug, Default)]
pub(crate) struct Processed {
    /// The round's commit (received messages), for the group commit.
    pub(crate) round: Option<Commit>,
    /// Deliveries whose effect is already durable, or that were refused.
    pub(crate) ack: Vec<DeliveryId>,
    /// Deliveries to hand back to the relay, to be tried again.
    pub(crate) release: Vec<DeliveryId>,
    /// Events to publish now (before the round's reports).
    pub(crate) events: Vec<Event>,
    /// Told (`true`) once the group commit holding `round` has settled,
    /// whatever its outcome; set when `round` is.
    pub(crate) settled: Option<watch::Sender<bool>>,
    /// Where the hub sends the outcome of the commit holding `round` (then
    /// it sends [`Settle`]); set when `round` is.
    pub(crate) outcome: Option<CommitOutcome>,
}

/// The outcome of a round's commit: the inbox numbers it gave, or the
/// error.
pub(crate) type CommitResult = Result<Range<u64>, StoreError>;

/// Where the outcome of a round's commit is sent.
pub(crate) type CommitOutcome = oneshot::Sender<CommitResult>;

/// The connection's state, moved into each handler's future and back.
pub(crate) struct ConnState {
    id: ConnectionId,
    shared: Arc<Shared>,
    /// The engine, once loaded; `None` until then, and after a failure
    /// that may have left memory ahead of the store.
    engine: Option<Connection>,
    /// A blocking task of this connection panicked during the current
    /// request.
    crashed: bool,
    /// A batch of this connection's is in the round's group commit (from
    /// the answer to [`Process`] until [`Committed`]): it says when that
    /// commit has settled. The store is about to change until then, so a
    /// state lost meanwhile (a panic) is loaded again only after it.
    in_flight: Option<watch::Receiver<bool>>,
    /// The round commit of this state's that is in the group commit, and
    /// where its outcome comes: it is carried out before the next round
    /// (which may already be on its way) and on [`Settle`].
    pending: Option<(CommitId, oneshot::Receiver<CommitResult>)>,
    /// How many joins had ended when the record was loaded (see
    /// [`Joins`](crate::shared::Joins)).
    joins_ended_at_load: u64,
    /// Where the previous actor of this connection, in this process, let
    /// the sending counter go when it stopped idle: the first load goes on
    /// from there without a reservation commit (see
    /// [`SendResume`](confidant_store::SendResume)). Used once.
    resume: Option<SendResume>,
}

impl ConnState {
    fn new(
        id: ConnectionId,
        shared: Arc<Shared>,
        in_flight: Option<watch::Receiver<bool>>,
    ) -> Self {
        Self {
            id,
            shared,
            engine: None,
            crashed: false,
            in_flight,
            pending: None,
            joins_ended_at_load: 0,
            resume: None,
        }
    }
}

/// The actor owning one connection.
pub struct ConnectionActor {
    state: Option<Box<ConnState>>,
}

impl ConnectionActor {
    pub(crate) fn new(id: ConnectionId, shared: Arc<Shared>, resume: Option<SendResume>) -> Self {
        let mut state = ConnState::new(id, shared, None);
        state.resume = resume;
        Self {
            state: Some(Box::new(state)),
        }
    }

    /// Runs `work` on the state atomically. A panic in it drops the state:
    /// the next request loads it from the store (after the commit of a
    /// batch in flight has settled).
    fn atomic<R, F, Fut>(&mut self, work: F) -> AtomicResponse<Self, Result<R, NodeError>>
    where
        R: 'static,
        F: FnOnce(Box<ConnState>) -> Fut,
        Fut: Future<Output = (Box<ConnState>, Result<R, NodeError>)> + 'static,
    {
        let Some(state) = self.state.take() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(NodeError::Crashed(
                "the connection's state was lost".into(),
            )))));
        };
        let id = state.id.clone();
        let shared = Arc::clone(&state.shared);
        let in_flight = state.in_flight.clone();
        // Everything the runtime logs while handling this connection's
        // request carries the connection's id.
        let span = tracing::debug_span!("connection", id = %id);
        let future =
            AssertUnwindSafe(tracing::Instrument::instrument(work(state), span)).catch_unwind();
        AtomicResponse::new(Box::pin(future.into_actor(self).map(
            move |outcome, actor, _| match outcome {
                Ok((state, result)) => {
                    actor.state = Some(state);
                    result
                }
                Err(_) => {
                    tracing::error!(connection = %id, "connection actor panicked; it restarts from its stored state");
                    actor.state = Some(Box::new(ConnState::new(id.clone(), shared, in_flight)));
                    Err(NodeError::Crashed(format!(
                        "connection {id} panicked; it restarts from its stored state"
                    )))
                }
            },
        )))
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

/// Seal and send application messages.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<Result<(), TransportError>>, NodeError>")]
pub(crate) struct SendMessages(pub(crate) Vec<Vec<u8>>);

impl Handler<SendMessages> for ConnectionActor {
    type Result =
        AtomicResponse<Self, Result<oneshot::Receiver<Result<(), TransportError>>, NodeError>>;

    fn handle(&mut self, message: SendMessages, _: &mut Self::Context) -> Self::Result {
        self.atomic(move |mut state| async move {
            let result = state.send(message.0).await;
            (state, result)
        })
    }
}

/// Process this connection's part of an inbound round.
#[derive(Message)]
#[rtype(result = "Result<Processed, NodeError>")]
pub(crate) struct Process(pub(crate) Vec<(DeliveryId, Item)>);

impl Handler<Process> for ConnectionActor {
    type Result = AtomicResponse<Self, Result<Processed, NodeError>>;

    fn handle(&mut self, message: Process, _: &mut Self::Context) -> Self::Result {
        self.atomic(move |mut state| async move {
            let result = state.process(message.0).await;
            (state, result)
        })
    }
}

/// The round's commit settled: its outcome is in the channel the actor
/// gave with its [`Processed`] (unless the next round carried it out
/// already).
#[derive(Message)]
#[rtype(result = "Result<(), NodeError>")]
pub(crate) struct Settle;

impl Handler<Settle> for ConnectionActor {
    type Result = AtomicResponse<Self, Result<(), NodeError>>;

    fn handle(&mut self, _: Settle, _: &mut Self::Context) -> Self::Result {
        self.atomic(move |mut state| async move {
            let result = state.settle().await;
            (state, result)
        })
    }
}

/// Start a session reset.
#[derive(Message)]
#[rtype(result = "Result<(), NodeError>")]
pub(crate) struct Reset;

impl Handler<Reset> for ConnectionActor {
    type Result = AtomicResponse<Self, Result<(), NodeError>>;

    fn handle(&mut self, _: Reset, _: &mut Self::Context) -> Self::Result {
        self.atomic(move |mut state| async move {
            let result = state.reset().await;
            (state, result)
        })
    }
}

/// How an actor answered [`StopIfIdle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub(crate) enum Stopped {
    /// Busy: it goes on.
    Busy,
    /// Stopped; where its sending counter stands, for the next actor of
    /// the connection in this process.
    Stopped(Option<SendResume>),
}

/// Stop if idle (nothing staged, no key update waiting).
#[derive(Message)]
#[rtype(result = "Stopped")]
pub(crate) struct StopIfIdle;

impl Handler<StopIfIdle> for ConnectionActor {
    type Result = Stopped;

    fn handle(&mut self, _: StopIfIdle, ctx: &mut Self::Context) -> Stopped {
        let busy = self.state.as_ref().is_some_and(|state| {
            state.in_flight.is_some()
                || state
                    .engine
                    .as_ref()
                    .is_some_and(|engine| !engine.is_idle())
        });
        if busy {
            return Stopped::Busy;
        }
        // The actor stops here: its engine seals nothing more. (An actor
        // that never loaded keeps the point it was given.)
        let point = self.state.as_ref().and_then(|state| match &state.engine {
            Some(engine) => engine.resume_point(),
            None => state.resume,
        });
        ctx.stop();
        Stopped::Stopped(point)
    }
}

impl ConnState {
    /// Loads the engine from the store, once, and carries out what loading
    /// asks for (a reset, if the session cannot be read).
    async fn ensure_loaded(&mut self) -> Result<(), NodeError> {
        if self.engine.is_some() {
            return Ok(());
        }
        // A round commit of the lost state's is of no use to the state
        // loaded here (which reads what that commit left).
        self.pending = None;
        if let Some(mut in_flight) = self.in_flight.take() {
            // The state was lost while a batch was in the group commit:
            // load what that commit leaves in the store. (Its `Committed`
            // is then ignored: the loaded state has nothing staged.) A
            // dropped sender also means it settled.
            let _ = in_flight.wait_for(|settled| *settled).await;
        }
        self.joins_ended_at_load = self.shared.joins.ended();
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        // The point is given to one load only, whatever comes of it.
        let resume = self.resume.take();
        let (engine, effects) = self
            .off_thread(move || {
                Connection::load_resuming(shared.engine(), &*shared.store, id, resume)
            })
            .await?
            .map_err(NodeError::Store)?;
        self.engine = Some(engine);
        let effects = self.drive(effects).await?;
        self.dispatch(effects.send, false)?;
        Ok(())
    }

    /// Runs `work` on a blocking thread. If that thread panicked, whatever
    /// state was moved into it is lost: forget the in-memory state so that
    /// the next request loads it from the store.
    async fn off_thread<R, F>(&mut self, work: F) -> Result<R, NodeError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let result = self.shared.blocking(work).await;
        if result.is_err() {
            self.engine = None;
            self.crashed = true;
        }
        result
    }

    /// Carries out the step commits in `effects` (each on the blocking
    /// pool, its outcome told to the engine, which may ask for more), and
    /// returns everything else the engine asked for along the way.
    async fn drive(&mut self, mut effects: Effects) -> Result<Effects, NodeError> {
        let mut out = Effects::default();
        // Ends: each step's outcome either finishes what asked for it or
        // asks for the next step of a finite request (one reservation per
        // block of counters, one key update per epoch).
        loop {
            let step = effects.take_step();
            out.append(effects);
            let Some(step) = step else {
                break;
            };
            // With whatever else the node is storing now (group commit).
            let outcome = self.shared.committer.commit(step.batch).await;
            let Some(engine) = self.engine.as_mut() else {
                return Ok(out);
            };
            effects = engine.committed(&*self.shared.store, step.id, outcome);
        }
        if self.engine.as_ref().is_some_and(Connection::is_stale) {
            // Memory may be ahead of the store: load it again next time.
            self.engine = None;
        }
        Ok(out)
    }

    /// Hands envelopes to the outbox, in order; with `wait`, the receiver
    /// resolves once the relay has them all.
    fn dispatch(
        &self,
        sends: Vec<Outbound>,
        wait: bool,
    ) -> Result<Option<oneshot::Receiver<Result<(), TransportError>>>, NodeError> {
        let envelopes: Vec<Outgoing> = sends
            .into_iter()
            .map(|outbound| Outgoing {
                connection_id: self.id.clone(),
                envelope: match outbound {
                    Outbound::Message(bytes) | Outbound::Control(bytes) => bytes,
                },
            })
            .collect();
        if wait {
            return self.shared.send(envelopes).map(Some);
        }
        if !envelopes.is_empty() {
            self.shared.send_and_forget(envelopes)?;
        }
        Ok(None)
    }

    fn engine(&mut self) -> Result<&mut Connection, NodeError> {
        self.engine
            .as_mut()
            .ok_or_else(|| NodeError::Crashed("the connection's state was lost".into()))
    }

    async fn send(
        &mut self,
        plaintexts: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<(), TransportError>>, NodeError> {
        self.ensure_loaded().await?;
        let effects = self.engine()?.send(plaintexts);
        let effects = self.drive(effects).await?;
        match effects.outcome {
            Some(Ok(())) => self.dispatch(effects.send, true)?.ok_or(NodeError::Stopped),
            other => {
                // Nothing sealed by a failed request leaves; protocol steps
                // already durable (a key update) do.
                let controls = effects
                    .send
                    .into_iter()
                    .filter(|outbound| matches!(outbound, Outbound::Control(_)))
                    .collect();
                self.dispatch(controls, false)?;
                Err(match other {
                    Some(Err(error)) => error.into(),
                    _ if self.crashed => {
                        NodeError::Crashed(format!("a task of connection {} panicked", self.id))
                    }
                    _ => NodeError::Crashed("the send did not finish".into()),
                })
            }
        }
    }

    /// Carries out the outcome of this state's round commit in the group
    /// commit, if there is one: waits for it (the hub sends it as soon as
    /// the commit has settled).
    async fn settle(&mut self) -> Result<(), NodeError> {
        let Some((id, outcome)) = self.pending.take() else {
            // None in flight, or the state that staged it was lost and
            // loaded again.
            return Ok(());
        };
        let Ok(outcome) = outcome.await else {
            // The hub dropped it unsent: what the store holds is unknown
            // here. Load it again once the commit has settled.
            self.engine = None;
            return Ok(());
        };
        self.in_flight = None;
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        let effects = engine.committed(&*self.shared.store, id, outcome);
        let effects = self.drive(effects).await?;
        self.dispatch(effects.send, false)?;
        Ok(())
    }

    async fn process(&mut self, items: Vec<(DeliveryId, Item)>) -> Result<Processed, NodeError> {
        let mut out = Processed::default();
        // The previous round's commit first (this round may have come
        // while it ran): the engine takes a round once that is settled.
        self.settle().await?;
        self.crashed = false;
        if let Err(error) = self.ensure_loaded().await {
            tracing::warn!(connection = %self.id, %error, "connection state could not be loaded; deliveries released");
            out.release = items.into_iter().map(|(id, _)| id).collect();
            return Ok(out);
        }
        let mut items = items;
        let unknown = self
            .engine
            .as_ref()
            .is_some_and(|engine| engine.record().is_none());
        if unknown && self.shared.joins.may_be_missing(self.joins_ended_at_load) {
            // Perhaps the bundle of a join whose record is being stored:
            // hand the envelopes back, and read the record again next time.
            // (A join of our own invitation creates the record: it goes on.)
            let (joined, envelopes): (Vec<_>, Vec<_>) = items
                .into_iter()
                .partition(|(_, item)| matches!(item, Item::Joined(_)));
            if !envelopes.is_empty() {
                tracing::debug!(connection = %self.id, "delivery for a connection not stored yet handed back");
                out.release = envelopes.into_iter().map(|(id, _)| id).collect();
            }
            if joined.is_empty() {
                self.engine = None;
                return Ok(out);
            }
            items = joined;
        }
        let shared = Arc::clone(&self.shared);
        let effects = self.engine()?.deliver(&*shared.store, items);
        let mut effects = self.drive(effects).await?;
        if self.crashed {
            // State was lost with a panicking task: nothing of this round
            // counts; the connection reloads and the deliveries come again.
            self.crashed = false;
            return Err(NodeError::Crashed(format!(
                "a task of connection {} panicked",
                self.id
            )));
        }
        self.dispatch(std::mem::take(&mut effects.send), false)?;
        out.round = effects
            .commits
            .into_iter()
            .find(|commit| commit.kind == CommitKind::Round);
        out.ack.append(&mut effects.ack);
        out.release.append(&mut effects.release);
        out.events = effects.events;
        // The hub sends a round's commit outcome to `outcome`, then
        // `Settle`, and tells `settled` once it has settled.
        if let Some(round) = &out.round {
            let (settled, in_flight) = watch::channel(false);
            out.settled = Some(settled);
            self.in_flight = Some(in_flight);
            let (sender, receiver) = oneshot::channel();
            out.outcome = Some(sender);
            self.pending = Some((round.id, receiver));
        }
        Ok(out)
    }

    /// The application asked for a reset.
    async fn reset(&mut self) -> Result<(), NodeError> {
        self.ensure_loaded().await?;
        let effects = self.engine()?.reset();
        let effects = self.drive(effects).await?;
        self.dispatch(effects.send, false)?;
        match effects.outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(error.into()),
            None => Err(NodeError::Crashed("the reset did not finish".into())),
        }
    }
}
