//! One connection's protocol as a state machine without I/O.
//!
//! A [`Connection`] takes inputs — deliveries from the relay
//! ([`Connection::deliver`]), the application's messages
//! ([`Connection::send`]), a reset request ([`Connection::reset`]), the
//! outcome of a commit it asked for ([`Connection::committed`]) — and
//! answers with [`Effects`]: store changes to commit, envelopes to hand to
//! the relay, events for the application, deliveries to acknowledge or hand
//! back. It reads the store (a one-time pre-key, an invitation) but never
//! writes it: every change comes back as a [`Commit`], and what depends on
//! it — the new record or session, the envelope that may leave only once
//! the change is durable, the event — takes effect only when the driver
//! reports that commit succeeded. If a commit fails, the connection is
//! [stale](Connection::is_stale): drop it and [load](Connection::load) it
//! again, so that memory never runs ahead of the store.
//!
//! A [`CommitKind::Step`] commit (a handshake step, a counter reservation,
//! a key update) holds the connection: until its outcome is reported the
//! connection takes no other input ([`EngineError::Busy`]), and the rest of
//! a round of deliveries waits inside it. A [`CommitKind::Round`] commit
//! (received messages) may be merged with other connections' rounds into
//! one transaction; meanwhile the connection still seals and sends.

use crate::binding::{
    self, bundle_with, invitation_binding, reset_binding, reset_request_is_valid,
    signed_reset_request, stored_bundle,
};
use crate::context::Context;
use crate::error::{EngineError, store_error};
use crate::event::{Event, IncomingMessage};
use crate::failure::HandshakeFailure;
use crate::records::{self, ConnectionRecord, Phase, Side};
use confidant_core::ConnectionId;
use confidant_core::wire::{
    self, EncryptedMessage, InitialMessage, KeyUpdate, PreKeyBundle, SessionReset, envelope::Body,
};
use confidant_session::handshake::ResponderPolicy;
use confidant_session::{KeyStatus, OpenError};
use confidant_store::{
    CounterReservation, DurableSession, InboxEntry, RawStore, ReceiveError, SendResume, StoreError,
    WriteBatch,
};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use zeroize::Zeroizing;

/// After this many messages in a row that do not open (forged, or sealed
/// under a session the other side no longer has, but not replays), a
/// connection asks for a reset: two honest sides that disagree on the
/// session find each other again unless the relay drops everything.
pub const REFUSALS_BEFORE_RESET: u32 = 4;

/// The relay's number for a delivery, to acknowledge or hand back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

/// What a connection receives from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Someone joined with our invitation's token.
    Joined(String),
    /// An encoded envelope.
    Envelope(Vec<u8>),
}

/// Names a commit the engine asked for, to report its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitId(u64);

/// How a commit may be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// A step the connection waits for (a handshake step, a counter
    /// reservation, a key update): commit it and report it before anything
    /// else reaches the connection.
    Step,
    /// A round's received messages: may share a transaction with other
    /// connections' rounds (group commit).
    Round,
}

/// Changes to commit in one transaction.
#[derive(Debug)]
pub struct Commit {
    /// Report the outcome under this id.
    pub id: CommitId,
    /// The changes.
    pub batch: WriteBatch,
    /// How it may be carried out.
    pub kind: CommitKind,
    /// A round's deliveries: acknowledge them once the commit succeeded,
    /// hand them back if it failed. (Empty for a step: its effects come
    /// from [`Connection::committed`].)
    pub acknowledge: Vec<DeliveryId>,
    /// A round's events, in order, for the driver to publish after the
    /// commit ([`Report::publish`]): a driver that commits many rounds in
    /// one transaction reports them without asking each connection again.
    pub report: Vec<Report>,
}

/// An event of a round, published once the round's commit has settled: a
/// stored message's number is known only then, and a message whose commit
/// failed is not reported.
#[derive(Debug)]
pub enum Report {
    /// Reported whatever the commit's outcome.
    Event(Event),
    /// A message stored by the commit: reported with the next inbox number
    /// the commit gave, only if it succeeded.
    Stored(InboxEntry),
}

impl Report {
    /// The events of `reports` after their commit: `numbers` are the inbox
    /// numbers the commit gave, in order (`None`: the commit failed, and
    /// stored messages are not reported).
    pub fn publish(reports: Vec<Report>, mut numbers: Option<Range<u64>>) -> Vec<Event> {
        let mut events = Vec::with_capacity(reports.len());
        for report in reports {
            match report {
                Report::Event(event) => events.push(event),
                Report::Stored(entry) => {
                    let Some(sequence) = numbers.as_mut().and_then(Iterator::next) else {
                        continue;
                    };
                    events.push(Event::Message(IncomingMessage {
                        connection_id: entry.connection_id,
                        sequence,
                        plaintext: entry.plaintext,
                    }));
                }
            }
        }
        events
    }
}

/// An envelope for the relay, in the order produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// One of the application's messages (its request waits for the relay
    /// to take it).
    Message(Vec<u8>),
    /// A protocol step (bundle, initial message, reset request, key
    /// update), sent without waiting.
    Control(Vec<u8>),
}

impl Outbound {
    /// The encoded envelope.
    pub fn envelope(&self) -> &[u8] {
        match self {
            Self::Message(bytes) | Self::Control(bytes) => bytes,
        }
    }
}

/// What the driver carries out after an input.
#[derive(Debug, Default)]
#[must_use = "effects must be carried out"]
pub struct Effects {
    /// Commit these, in order, and report each outcome with
    /// [`Connection::committed`].
    pub commits: Vec<Commit>,
    /// Hand these to the relay, in order. Each may leave now: what it
    /// depends on is durable.
    pub send: Vec<Outbound>,
    /// Tell the application, in order.
    pub events: Vec<Event>,
    /// Acknowledge these deliveries: their effect is durable, or they were
    /// refused.
    pub ack: Vec<DeliveryId>,
    /// Hand these deliveries back to the relay, to come again.
    pub release: Vec<DeliveryId>,
    /// The outcome of the application's request (a send, a reset), once it
    /// is known: `Some` in the effects that end it.
    pub outcome: Option<Result<(), EngineError>>,
}

impl Effects {
    /// Appends `other`'s effects after this one's.
    pub fn append(&mut self, mut other: Effects) {
        self.commits.append(&mut other.commits);
        self.send.append(&mut other.send);
        self.events.append(&mut other.events);
        self.ack.append(&mut other.ack);
        self.release.append(&mut other.release);
        if other.outcome.is_some() {
            self.outcome = other.outcome;
        }
    }

    /// The step commit waiting to be carried out, if any (taken out).
    pub fn take_step(&mut self) -> Option<Commit> {
        let index = self
            .commits
            .iter()
            .position(|commit| commit.kind == CommitKind::Step)?;
        Some(self.commits.remove(index))
    }
}

/// The round of deliveries being processed.
#[derive(Debug, Default)]
struct Round {
    batch: WriteBatch,
    on_commit: Vec<DeliveryId>,
    drafts: Vec<Report>,
    /// The record as it is once the round's batch is committed.
    record: Option<ConnectionRecord>,
}

/// What a commit's success brings about.
enum Then {
    Round {
        record: Option<ConnectionRecord>,
    },
    Reserve {
        reservation: CounterReservation,
        remaining: VecDeque<Vec<u8>>,
    },
    KeyUpdate {
        reservation: CounterReservation,
        /// The application's messages still to seal after it.
        remaining: Option<VecDeque<Vec<u8>>>,
    },
    Joined {
        delivery: DeliveryId,
        record: ConnectionRecord,
        bundle: PreKeyBundle,
    },
    Initiated {
        delivery: DeliveryId,
        record: ConnectionRecord,
        session: Box<DurableSession>,
        envelope: Vec<u8>,
        peer_identity: [u8; 32],
        reset: bool,
        post_quantum: bool,
    },
    Responded {
        delivery: DeliveryId,
        record: ConnectionRecord,
        session: Box<DurableSession>,
        peer_identity: [u8; 32],
        first: Option<InboxEntry>,
        reset: bool,
        post_quantum: bool,
    },
    ResetBundle {
        delivery: DeliveryId,
        record: ConnectionRecord,
        bundle: PreKeyBundle,
    },
    ResetRequested {
        delivery: Option<DeliveryId>,
        record: ConnectionRecord,
        request: SessionReset,
        /// The application asked for it: its request ends here.
        requested: bool,
    },
}

/// One connection's protocol state.
pub struct Connection {
    id: ConnectionId,
    context: Arc<Context>,
    record: Option<ConnectionRecord>,
    session: Option<DurableSession>,
    /// Why the stored session could not be read (a reset was asked for).
    unreadable: Option<String>,
    /// Messages in a row that did not open (see [`REFUSALS_BEFORE_RESET`]).
    refused_in_a_row: u32,
    /// The key update due asks the peer to update its sending key too (our
    /// receiving key reached its integrity limit).
    request_peer_update: bool,
    /// The receiving epoch whose integrity limit we already asked the peer
    /// to move past.
    integrity_update_asked: Option<u32>,
    /// A key update is due (soft limit, or the peer asked) and waits until
    /// no received messages are staged.
    update_wanted: bool,
    /// A commit failed: memory may be ahead of the store.
    stale: bool,
    /// Commits asked for and not reported yet.
    pending: Vec<(CommitId, Then)>,
    next_commit: u64,
    /// The round in progress, and its deliveries still to process (waiting
    /// for a step's commit).
    round: Option<Round>,
    queued: VecDeque<(DeliveryId, Item)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("record", &self.record)
            .field("established", &self.session.is_some())
            .field("unreadable", &self.unreadable)
            .field("stale", &self.stale)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn encode(body: Body) -> Vec<u8> {
    wire::encode_envelope(body)
}

/// The kind of a refused handshake step.
fn handshake_failure(error: EngineError) -> HandshakeFailure {
    match error {
        EngineError::Handshake(failure) => failure,
        other => HandshakeFailure::Session(other.to_string()),
    }
}

impl Connection {
    /// Loads connection `id` from the store: its record and, once
    /// established, its session (resuming the sending counter above the
    /// durable reservation). A session that cannot be read (damaged, or
    /// lost) is not an error: the connection asks for a reset, in the
    /// returned effects, and refuses to send until it is done. `Err` for a
    /// store that cannot be read now (try again later) or a damaged record.
    pub fn load(
        context: Arc<Context>,
        store: &dyn RawStore,
        id: ConnectionId,
    ) -> Result<(Self, Effects), StoreError> {
        Self::load_resuming(context, store, id, None)
    }

    /// [`Connection::load`], going on from where this process let the
    /// connection go ([`Connection::resume_point`]): the first send after
    /// a wake-up then needs no reservation commit. A stale or mismatched
    /// point is ignored (sealing resumes above the durable reservation).
    pub fn load_resuming(
        context: Arc<Context>,
        store: &dyn RawStore,
        id: ConnectionId,
        resume: Option<SendResume>,
    ) -> Result<(Self, Effects), StoreError> {
        let record = ConnectionRecord::load(store, &id)?;
        let session = match &record {
            Some(record) if record.phase == Phase::Established => {
                match DurableSession::load_resuming(
                    store,
                    &context.registry,
                    &id,
                    context.config.reservation_block,
                    resume,
                ) {
                    Ok(Some(session)) => Ok(Some(session)),
                    Ok(None) => Err("the session is missing".to_owned()),
                    // A failing disk may work again: try later.
                    Err(StoreError::Io(reason)) => return Err(StoreError::Io(reason)),
                    Err(error) => Err(error.to_string()),
                }
            }
            _ => Ok(None),
        };
        let mut connection = Self {
            id,
            context,
            record,
            session: None,
            unreadable: None,
            refused_in_a_row: 0,
            request_peer_update: false,
            integrity_update_asked: None,
            update_wanted: false,
            stale: false,
            pending: Vec::new(),
            next_commit: 0,
            round: None,
            queued: VecDeque::new(),
        };
        let mut effects = Effects::default();
        match session {
            Ok(session) => connection.session = session,
            Err(reason) => {
                tracing::error!(connection = %connection.id, %reason, "the session cannot be read; asking for a reset");
                connection.unreadable = Some(reason);
                connection.reset_unreadable(&mut effects);
            }
        }
        Ok((connection, effects))
    }

    /// The connection's id.
    pub fn id(&self) -> &ConnectionId {
        &self.id
    }

    /// The connection's record (`None`: no such connection in the store).
    pub fn record(&self) -> Option<&ConnectionRecord> {
        self.record.as_ref()
    }

    /// Whether a session is established.
    pub fn is_established(&self) -> bool {
        self.session.is_some()
    }

    /// A commit failed (or a store call did): memory may be ahead of the
    /// store. Drop this connection and load it again.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Nothing is waiting: no commit, no round, no key update due. A driver
    /// may drop an idle connection and load it again later.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.round.is_none()
            && !self.update_wanted
            && !self.session.as_ref().is_some_and(DurableSession::is_staged)
    }

    /// Where the sending counter stands, for a driver about to drop this
    /// idle connection: kept in the driver's memory (never stored) and
    /// given to the next [`Connection::load_resuming`] of this connection,
    /// once. `None` unless idle, established and not stale. Give this
    /// connection no more input after taking it.
    pub fn resume_point(&self) -> Option<SendResume> {
        if self.stale || !self.is_idle() {
            return None;
        }
        self.session.as_ref().and_then(DurableSession::resume_point)
    }

    /// Whether a step commit is waiting for its outcome.
    fn holds_step(&self) -> bool {
        self.pending
            .iter()
            .any(|(_, then)| !matches!(then, Then::Round { .. }))
    }

    /// The sending key's position, for tests and diagnostics: `(epoch, next
    /// counter)`.
    pub fn send_position(&self) -> Option<(u32, u64)> {
        self.session.as_ref().map(|session| {
            (
                session.session().send_epoch(),
                session.session().next_send_counter(),
            )
        })
    }

    fn commit(&mut self, batch: WriteBatch, kind: CommitKind, then: Then, effects: &mut Effects) {
        let id = CommitId(self.next_commit);
        self.next_commit = self.next_commit.wrapping_add(1);
        self.pending.push((id, then));
        effects.commits.push(Commit {
            id,
            batch,
            kind,
            acknowledge: Vec::new(),
            report: Vec::new(),
        });
    }

    fn control(effects: &mut Effects, body: Body) {
        effects.send.push(Outbound::Control(encode(body)));
    }

    /// A failed store call or commit: a poisoned session, or memory ahead
    /// of the store, makes the connection stale.
    fn after_failure(&mut self) {
        if self
            .session
            .as_ref()
            .is_some_and(DurableSession::is_poisoned)
        {
            self.stale = true;
        }
    }

    // ----- The application's requests -------------------------------------

    /// Seals `plaintexts` in order. The envelopes come out as
    /// [`Outbound::Message`]s once their counters are durably reserved
    /// (perhaps after a [`CommitKind::Step`] commit); a key update that is
    /// due follows them. The request ends with [`Effects::outcome`].
    pub fn send(&mut self, plaintexts: Vec<Vec<u8>>) -> Effects {
        let mut effects = Effects::default();
        let ready = if self.holds_step() || self.stale {
            Err(EngineError::Busy(self.id.clone()))
        } else if self.record.is_none() {
            Err(EngineError::UnknownConnection(self.id.clone()))
        } else if let Some(reason) = &self.unreadable {
            Err(EngineError::Session(format!(
                "the stored session cannot be read ({reason}); a reset was asked for"
            )))
        } else if self.session.is_none() {
            Err(EngineError::NotEstablished(self.id.clone()))
        } else {
            Ok(())
        };
        match ready {
            Ok(()) => self.seal_all(plaintexts.into(), &mut effects),
            Err(error) => effects.outcome = Some(Err(error)),
        }
        effects
    }

    /// Seals what remains, stopping at a commit it needs first.
    fn seal_all(&mut self, mut remaining: VecDeque<Vec<u8>>, effects: &mut Effects) {
        while !remaining.is_empty() {
            match self.key_update_if_due(effects, Some(remaining)) {
                Ok(Some(back)) => remaining = back,
                Ok(None) => return,
                Err(error) => {
                    effects.outcome = Some(Err(error));
                    return;
                }
            }
            let Some(session) = self.session.as_mut() else {
                effects.outcome = Some(Err(EngineError::NotEstablished(self.id.clone())));
                return;
            };
            if let Some(reservation) = session.reservation_due() {
                // The next counter must be durable before a message with it
                // exists.
                let mut batch = WriteBatch::new();
                batch.put_reservation(&self.id, reservation);
                self.commit(
                    batch,
                    CommitKind::Step,
                    Then::Reserve {
                        reservation,
                        remaining,
                    },
                    effects,
                );
                return;
            }
            let Some(plaintext) = remaining.pop_front() else {
                break;
            };
            match session.seal_reserved(plaintext) {
                Ok(message) => {
                    if session.session().key_status() != KeyStatus::Fresh {
                        self.update_wanted = true;
                    }
                    effects
                        .send
                        .push(Outbound::Message(encode(Body::Message(message))));
                }
                Err(error) => {
                    self.after_failure();
                    effects.outcome = Some(Err(store_error(error)));
                    return;
                }
            }
        }
        // The update (if due now) follows the messages on the wire; the
        // request ends once it is durable and on its way.
        match self.key_update_if_due(effects, Some(VecDeque::new())) {
            Ok(_) => {
                if !self.holds_step() {
                    effects.outcome = Some(Ok(()));
                }
            }
            Err(error) => effects.outcome = Some(Err(error)),
        }
    }

    /// Moves the sending key to the next epoch if it is due and nothing
    /// received is staged: stages it as a step commit (the announcement
    /// leaves once it is durable), taking `remaining` along. Gives
    /// `remaining` back (`Ok(Some)`) if no update was staged, `Ok(None)` if
    /// one was.
    fn key_update_if_due(
        &mut self,
        effects: &mut Effects,
        remaining: Option<VecDeque<Vec<u8>>>,
    ) -> Result<Option<VecDeque<Vec<u8>>>, EngineError> {
        let due = self.update_wanted
            || self
                .session
                .as_ref()
                .is_some_and(|session| session.session().key_status() != KeyStatus::Fresh);
        let back = |remaining: Option<VecDeque<Vec<u8>>>| Ok(Some(remaining.unwrap_or_default()));
        if !due {
            return back(remaining);
        }
        self.update_wanted = true;
        let request_peer_update = self.request_peer_update;
        let Some(session) = self.session.as_mut() else {
            return back(remaining);
        };
        if session.is_staged() {
            return back(remaining);
        }
        let mut batch = WriteBatch::new();
        match session.stage_key_update(&mut batch, request_peer_update) {
            Ok(reservation) => {
                self.commit(
                    batch,
                    CommitKind::Step,
                    Then::KeyUpdate {
                        reservation,
                        remaining,
                    },
                    effects,
                );
                Ok(None)
            }
            Err(error) => {
                self.after_failure();
                Err(store_error(error))
            }
        }
    }

    /// Starts a session reset: the invitee asks the inviter for a bundle
    /// bound to a fresh nonce (committed first); the inviter asks the
    /// invitee to start one.
    pub fn reset(&mut self) -> Effects {
        let mut effects = Effects::default();
        let result = (|| {
            if self.holds_step() || self.stale {
                return Err(EngineError::Busy(self.id.clone()));
            }
            let record = self
                .record
                .clone()
                .ok_or_else(|| EngineError::UnknownConnection(self.id.clone()))?;
            if record.phase != Phase::Established {
                return Err(EngineError::NotEstablished(self.id.clone()));
            }
            match record.side {
                Side::Invitee => self.request_reset(record, None, true, &mut effects),
                Side::Inviter => {
                    let request = signed_reset_request(&self.context, &self.id, None)?;
                    Self::control(&mut effects, Body::Reset(request));
                    effects.outcome = Some(Ok(()));
                    Ok(())
                }
            }
        })();
        if let Err(error) = result {
            effects.outcome = Some(Err(error));
        }
        effects
    }

    /// Invitee: commits a fresh reset nonce (the next bundle must be bound
    /// to it); the request leaves once it is durable. Each request has its
    /// own nonce, so a bundle answering an older request is refused.
    fn request_reset(
        &mut self,
        mut record: ConnectionRecord,
        delivery: Option<DeliveryId>,
        requested: bool,
        effects: &mut Effects,
    ) -> Result<(), EngineError> {
        let nonce = binding::fresh_nonce(&self.context)?;
        record.reset_requested = true;
        record.reset_nonce = Some(nonce.clone());
        let request = signed_reset_request(&self.context, &self.id, Some(nonce))?;
        let mut batch = WriteBatch::new();
        record.put(&mut batch, &self.id)?;
        self.commit(
            batch,
            CommitKind::Step,
            Then::ResetRequested {
                delivery,
                record,
                request,
                requested,
            },
            effects,
        );
        Ok(())
    }

    /// The session is unreadable (damaged or lost): start a reset, which
    /// replaces it with a fresh X3DH between the same two identities.
    fn reset_unreadable(&mut self, effects: &mut Effects) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let result = match record.side {
            Side::Invitee => self.request_reset(record, None, false, effects),
            Side::Inviter => signed_reset_request(&self.context, &self.id, None)
                .map(|request| Self::control(effects, Body::Reset(request))),
        };
        if let Err(error) = result {
            tracing::warn!(connection = %self.id, %error, "could not ask for a reset");
        }
    }

    // ----- Deliveries ------------------------------------------------------

    /// Processes a round of deliveries, in order. Received messages and key
    /// updates are opened in memory and staged into one
    /// [`CommitKind::Round`] commit; their deliveries are acknowledged and
    /// the messages reported (with their inbox numbers) once it is
    /// committed. A handshake step commits on its own
    /// ([`CommitKind::Step`]): the deliveries after it wait in the
    /// connection until its outcome is reported. A handshake step after
    /// staged messages is handed back with everything after it (it would
    /// race their snapshot); it comes again in a later round.
    ///
    /// Reads the store (one-time pre-keys, invitations).
    pub fn deliver(&mut self, store: &dyn RawStore, items: Vec<(DeliveryId, Item)>) -> Effects {
        let mut effects = Effects::default();
        if self.holds_step() || self.round.is_some() || self.stale {
            // Not now: they come again.
            effects
                .release
                .extend(items.into_iter().map(|(delivery, _)| delivery));
            return effects;
        }
        if self.session.as_ref().is_some_and(DurableSession::is_staged) {
            // The previous round's commit has not been reported.
            effects
                .release
                .extend(items.into_iter().map(|(delivery, _)| delivery));
            return effects;
        }
        self.round = Some(Round::default());
        self.queued = items.into();
        self.run_round(store, &mut effects);
        effects
    }

    /// Goes on with the round's queued deliveries until they are done (then
    /// stages the round's commit) or one waits for a step's commit.
    fn run_round(&mut self, store: &dyn RawStore, effects: &mut Effects) {
        while let Some((delivery, item)) = self.queued.pop_front() {
            let staged = self
                .round
                .as_ref()
                .is_some_and(|round| !round.on_commit.is_empty());
            let body = match item {
                Item::Joined(token) => {
                    if staged {
                        effects.release.push(delivery);
                    } else {
                        self.on_joined(store, delivery, &token, effects);
                    }
                    if self.holds_step() {
                        return;
                    }
                    continue;
                }
                Item::Envelope(bytes) => {
                    match wire::decode_envelope(&bytes, self.context.config.max_envelope_len) {
                        Ok(body) => body,
                        Err(error) => {
                            tracing::warn!(connection = %self.id, %error, "undecodable envelope dropped");
                            effects.ack.push(delivery);
                            continue;
                        }
                    }
                }
            };
            match body {
                Body::Message(message) => self.on_message(delivery, message, effects),
                Body::KeyUpdate(update) => self.on_key_update(delivery, update, effects),
                handshake => {
                    if staged {
                        effects.release.push(delivery);
                        effects
                            .release
                            .extend(self.queued.drain(..).map(|(id, _)| id));
                        break;
                    }
                    match handshake {
                        Body::Bundle(bundle) => self.on_bundle(delivery, bundle, effects),
                        Body::Initial(initial) => {
                            self.on_initial(store, delivery, initial, effects);
                        }
                        Body::Reset(reset) => self.on_reset(store, delivery, reset, effects),
                        _ => effects.ack.push(delivery),
                    }
                    if self.holds_step() {
                        return;
                    }
                }
            }
        }
        self.end_round(effects);
    }

    fn end_round(&mut self, effects: &mut Effects) {
        let Some(mut round) = self.round.take() else {
            return;
        };
        if let Some(session) = self.session.as_mut()
            && let Err(error) = session.stage(&mut round.batch)
        {
            tracing::warn!(connection = %self.id, %error, "staging failed; deliveries released");
            effects.release.append(&mut round.on_commit);
            round
                .drafts
                .retain(|draft| matches!(draft, Report::Event(_)));
            Self::publish(effects, round.drafts, None);
            self.after_failure();
            return;
        }
        if round.batch.is_empty() {
            effects.ack.append(&mut round.on_commit);
            Self::publish(effects, round.drafts, None);
            // A receiving key at its integrity limit: ask the peer for a
            // key update now (a round of refusals alone commits nothing, so
            // no commit would bring the update about).
            if self.request_peer_update
                && let Err(error) = self.key_update_if_due(effects, None)
            {
                tracing::warn!(connection = %self.id, %error, "key update not sent");
            }
            if self.refused_in_a_row >= REFUSALS_BEFORE_RESET && !self.holds_step() {
                self.refused_in_a_row = 0;
                self.recover(effects);
            }
            return;
        }
        self.commit(
            round.batch,
            CommitKind::Round,
            Then::Round {
                record: round.record,
            },
            effects,
        );
        if let Some(commit) = effects.commits.last_mut() {
            commit.acknowledge = round.on_commit;
            commit.report = round.drafts;
        }
    }

    /// Publishes a round's reports now (no commit: stored messages, which
    /// cannot exist without one, are not reported).
    fn publish(effects: &mut Effects, drafts: Vec<Report>, numbers: Option<Range<u64>>) {
        effects.events.extend(Report::publish(drafts, numbers));
    }

    /// An event of the round: after the round's stored messages if there
    /// are any (events keep their order), else now.
    fn event(&mut self, effects: &mut Effects, event: Event) {
        match self.round.as_mut() {
            Some(round) if round.drafts.iter().any(|d| matches!(d, Report::Stored(_))) => {
                round.drafts.push(Report::Event(event));
            }
            _ => effects.events.push(event),
        }
    }

    fn on_message(
        &mut self,
        delivery: DeliveryId,
        message: EncryptedMessage,
        effects: &mut Effects,
    ) {
        let Some(round) = self.round.as_mut() else {
            effects.release.push(delivery);
            return;
        };
        let Some(session) = self.session.as_mut() else {
            tracing::debug!(connection = %self.id, "message for a connection without a session dropped");
            // An inviter still waiting for the initial message: the invitee
            // believes it has a session (its initial message was lost or
            // refused). Counted toward asking it for a reset.
            if self
                .record
                .as_ref()
                .is_some_and(|record| matches!(record.phase, Phase::BundleSent { .. }))
            {
                self.refused_in_a_row += 1;
            }
            effects.ack.push(delivery);
            return;
        };
        match session.open_into(message, &mut round.batch) {
            Ok(entry) => {
                self.refused_in_a_row = 0;
                round.on_commit.push(delivery);
                round.drafts.push(Report::Stored(entry));
                // The inviter has answered (a message under the new session
                // opened): the initial message need not be sent again, and
                // a reset is complete.
                let current = round.record.as_ref().or(self.record.as_ref());
                if let Some(record) = current
                    && (record.pending_initial.is_some() || record.reset_bundle_key.is_some())
                {
                    let mut record = record.clone();
                    record.pending_initial = None;
                    if record.side == Side::Invitee && record.reset_bundle_key.is_some() {
                        record.reset_requested = false;
                        record.reset_nonce = None;
                        record.reset_bundle_key = None;
                    }
                    match record.put(&mut round.batch, &self.id) {
                        Ok(()) => round.record = Some(record),
                        Err(error) => {
                            tracing::warn!(connection = %self.id, %error, "record not updated");
                        }
                    }
                }
            }
            Err(ReceiveError::Refused(error)) => {
                tracing::debug!(connection = %self.id, %error, "message refused");
                // Copies of messages already taken are what a redelivery
                // after a crash brings: they say nothing about the session.
                if !matches!(error, OpenError::Replay(_)) {
                    self.refused_in_a_row += 1;
                }
                if session.session().integrity_limit_reached() {
                    let epoch = session.session().receive_epoch();
                    if self.integrity_update_asked != Some(epoch) {
                        tracing::warn!(connection = %self.id, epoch, "receiving key reached its integrity limit; asking the peer for a key update");
                        self.integrity_update_asked = Some(epoch);
                        self.update_wanted = true;
                        self.request_peer_update = true;
                    }
                }
                effects.ack.push(delivery);
            }
            Err(error) => {
                tracing::warn!(connection = %self.id, %error, "message not taken now; released");
                effects.release.push(delivery);
            }
        }
    }

    fn on_key_update(&mut self, delivery: DeliveryId, update: KeyUpdate, effects: &mut Effects) {
        let Some(round) = self.round.as_mut() else {
            effects.release.push(delivery);
            return;
        };
        let Some(session) = self.session.as_mut() else {
            effects.ack.push(delivery);
            return;
        };
        match session.open_key_update_into(update) {
            Ok(received) => {
                round.on_commit.push(delivery);
                if received.update_requested {
                    self.update_wanted = true;
                }
            }
            Err(ReceiveError::Refused(error)) => {
                tracing::debug!(connection = %self.id, %error, "key update refused");
                effects.ack.push(delivery);
            }
            Err(_) => effects.release.push(delivery),
        }
    }

    /// Inviter: someone joined with our token. Store a one-time pre-key and
    /// the connection; the bundle leaves once they are durable.
    fn on_joined(
        &mut self,
        store: &dyn RawStore,
        delivery: DeliveryId,
        token: &str,
        effects: &mut Effects,
    ) {
        if let Some(record) = &self.record {
            // A redelivered notice: the bundle may not have left before a
            // crash, so send it again with the same one-time pre-key.
            if let Phase::BundleSent { one_time_pre_key } = record.phase {
                let binding = invitation_binding(&self.id, record.invitation_token.as_deref());
                match stored_bundle(&self.context, store, one_time_pre_key, &binding) {
                    Ok(Some(bundle)) => Self::control(effects, Body::Bundle(bundle)),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(connection = %self.id, %error, "join not handled; released");
                        effects.release.push(delivery);
                        return;
                    }
                }
            }
            effects.ack.push(delivery);
            return;
        }
        let created = (|| -> Result<_, EngineError> {
            if !records::has_invitation(store, token)? {
                return Ok(None);
            }
            let one_time = binding::new_one_time_pre_key(&self.context, store)?;
            let record = ConnectionRecord {
                side: Side::Inviter,
                peer_identity: None,
                phase: Phase::BundleSent {
                    one_time_pre_key: one_time.key.id(),
                },
                pending_initial: None,
                reset_requested: false,
                reset_one_time_pre_key: None,
                invitation_token: Some(token.to_owned()),
                reset_nonce: None,
                reset_bundle_key: None,
                hybrid_required: false,
            };
            let mut batch = WriteBatch::new();
            one_time.put(&mut batch);
            records::delete_invitation(&mut batch, token);
            record.insert(&mut batch, &self.id)?;
            let binding = invitation_binding(&self.id, Some(token));
            let bundle = bundle_with(&self.context, one_time, &binding)?;
            Ok(Some((batch, record, bundle)))
        })();
        match created {
            Ok(Some((batch, record, bundle))) => self.commit(
                batch,
                CommitKind::Step,
                Then::Joined {
                    delivery,
                    record,
                    bundle,
                },
                effects,
            ),
            Ok(None) => {
                tracing::warn!(connection = %self.id, "join with a token this node did not issue (or already used) ignored");
                effects.ack.push(delivery);
            }
            Err(error) => {
                tracing::warn!(connection = %self.id, %error, "join not handled; released");
                effects.release.push(delivery);
            }
        }
    }

    /// Invitee: the inviter's bundle (first contact, or answering our reset
    /// request).
    fn on_bundle(&mut self, delivery: DeliveryId, bundle: PreKeyBundle, effects: &mut Effects) {
        let Some(record) = self.record.clone() else {
            tracing::debug!(connection = %self.id, "bundle for an unknown connection dropped");
            effects.ack.push(delivery);
            return;
        };
        // A bundle is taken only while one is expected, and only if its
        // offer is signed over this handshake's binding: the invitation's
        // token at first contact, the nonce of our pending reset request
        // later. A replayed bundle of another handshake is refused by the
        // signature.
        let (greeting, binding) = match (&record.side, &record.phase) {
            (Side::Invitee, Phase::AwaitingBundle { greeting }) => (
                greeting.clone(),
                invitation_binding(&self.id, record.invitation_token.as_deref()),
            ),
            (Side::Invitee, Phase::Established) if record.reset_requested => {
                let Some(nonce) = record.reset_nonce.as_deref() else {
                    tracing::debug!(connection = %self.id, "bundle for a reset without a nonce ignored");
                    effects.ack.push(delivery);
                    return;
                };
                (Vec::new(), reset_binding(&self.id, nonce))
            }
            _ => {
                tracing::debug!(connection = %self.id, "unexpected bundle ignored");
                effects.ack.push(delivery);
                return;
            }
        };
        let reset = record.phase == Phase::Established;
        let Some(expected) = record.peer_identity else {
            effects.ack.push(delivery);
            return;
        };
        let one_time = bundle.one_time_pre_key.as_ref().map(|key| key.id);
        if reset
            && one_time.is_some()
            && record.reset_bundle_key == one_time
            && let Some(initial) = record.pending_initial.clone()
        {
            // A copy of the reset bundle we answered: send the answer again
            // (it may have been lost), run no second X3DH.
            effects.send.push(Outbound::Control(initial));
            effects.ack.push(delivery);
            return;
        }
        let initiated = (|| -> Result<_, EngineError> {
            let context = &self.context;
            let (session, initial) = context
                .agreement
                .initiate(
                    context.identity(),
                    &expected,
                    &bundle,
                    &binding,
                    &context.registry,
                    self.id.clone(),
                    &greeting,
                    context.config.session.clone(),
                    record.hybrid_required,
                )
                .map_err(EngineError::Handshake)?;
            let post_quantum = context.agreement.is_post_quantum(&initial);
            let envelope = encode(Body::Initial(initial));
            let mut record = record;
            record.phase = Phase::Established;
            record.pending_initial = Some(envelope.clone());
            if reset {
                // The reset stays pending until a message under the new
                // session opens: a lost initial message, or a copy of
                // this bundle, is answered again; a bundle for a newer
                // request of ours is still taken.
                record.reset_bundle_key = one_time;
            } else {
                record.reset_requested = false;
                record.reset_nonce = None;
                record.reset_bundle_key = None;
            }
            let mut batch = WriteBatch::new();
            record.put(&mut batch, &self.id)?;
            let session =
                DurableSession::stage_new(session, &mut batch, context.config.reservation_block)?;
            Ok((batch, record, session, envelope, post_quantum))
        })();
        match initiated {
            Ok((batch, record, session, envelope, post_quantum)) => self.commit(
                batch,
                CommitKind::Step,
                Then::Initiated {
                    delivery,
                    record,
                    session: Box::new(session),
                    envelope,
                    peer_identity: expected,
                    reset,
                    post_quantum,
                },
                effects,
            ),
            Err(error) => {
                // The application reports it (Event::HandshakeFailed).
                tracing::debug!(connection = %self.id, %error, "bundle refused");
                effects.ack.push(delivery);
                self.event(
                    effects,
                    Event::HandshakeFailed {
                        connection_id: self.id.clone(),
                        error: handshake_failure(error),
                    },
                );
            }
        }
    }

    /// Inviter: the invitee's initial message (first contact, or a reset).
    fn on_initial(
        &mut self,
        store: &dyn RawStore,
        delivery: DeliveryId,
        initial: InitialMessage,
        effects: &mut Effects,
    ) {
        let Some(record) = self.record.clone() else {
            tracing::debug!(connection = %self.id, "initial message for an unknown connection dropped");
            effects.ack.push(delivery);
            return;
        };
        // The one-time pre-keys this connection's bundles offered: the
        // first contact's (while it is not answered) and a reset's.
        let first_key = match (&record.side, &record.phase) {
            (Side::Inviter, Phase::BundleSent { one_time_pre_key }) => Some(*one_time_pre_key),
            (Side::Inviter, Phase::Established) => None,
            _ => {
                effects.ack.push(delivery);
                return;
            }
        };
        let used = initial.one_time_pre_key_id;
        let reset = used.is_some() && used == record.reset_one_time_pre_key;
        let Some(key_id) = used.filter(|&key| reset || Some(key) == first_key) else {
            tracing::warn!(connection = %self.id, "initial message for another one-time pre-key ignored");
            effects.ack.push(delivery);
            return;
        };
        if reset
            && record
                .peer_identity
                .is_some_and(|peer| peer.as_slice() != initial.identity_key.as_slice())
        {
            // A reset comes from the same invitee or not at all (checked
            // here too, for a session that could not be read).
            tracing::warn!(connection = %self.id, "reset initial message from another identity ignored");
            effects.ack.push(delivery);
            return;
        }
        let responded = (|| -> Result<_, EngineError> {
            let context = &self.context;
            let one_time = binding::stored_one_time(store, key_id)?
                .ok_or(HandshakeFailure::OneTimePreKeyUsed(key_id))?;
            let peer_identity: [u8; 32] =
                initial.identity_key.as_slice().try_into().map_err(|_| {
                    HandshakeFailure::InvalidIdentityKey(
                        "the initial message's identity key is not 32 bytes".into(),
                    )
                })?;
            let mut keys = context.keys.clone();
            keys.add_one_time_pre_key(one_time.key)
                .map_err(|error| HandshakeFailure::from_key_agreement(&error))?;
            let responded = context
                .agreement
                .respond(
                    &keys,
                    one_time.extra.as_deref().map(Vec::as_slice),
                    &initial,
                    ResponderPolicy {
                        offered: &context.config.offered_suites,
                        require_one_time_pre_key: true,
                        replacing: self.session.as_ref().map(DurableSession::session),
                    },
                    &context.registry,
                    self.id.clone(),
                    context.config.session.clone(),
                )
                .map_err(EngineError::Handshake)?;
            let post_quantum = context.agreement.is_post_quantum(&initial);
            // The one-time keys the agreement used (the X25519 one-time
            // pre-key and, for the hybrid, the one-time KEM pre-key kept
            // beside it) go in the transaction that stores the session, so
            // a replayed initial message finds them gone.
            let mut batch = WriteBatch::new();
            if let Some(used) = responded.one_time_pre_key_id {
                binding::delete_one_time(&mut batch, used);
            }
            if let Some(used) = responded.one_time_kem_pre_key_id {
                binding::delete_one_time(&mut batch, used);
            }
            // Whatever other bundle of this connection is still open is
            // closed with it.
            if let Phase::BundleSent { one_time_pre_key } = record.phase {
                binding::delete_one_time(&mut batch, one_time_pre_key);
            }
            if let Some(reset_key) = record.reset_one_time_pre_key {
                binding::delete_one_time(&mut batch, reset_key);
            }
            // A reset's first message is a control message with no content
            // for the application.
            let entry = (!reset).then(|| InboxEntry {
                sequence: 0,
                connection_id: self.id.clone(),
                epoch: 0,
                counter: 0,
                plaintext: Zeroizing::new(responded.first_plaintext.to_vec()),
            });
            if let Some(entry) = &entry {
                batch.push_inbox(entry);
            }
            let mut record = record;
            record.phase = Phase::Established;
            record.peer_identity = Some(peer_identity);
            record.reset_one_time_pre_key = None;
            record.reset_nonce = None;
            record.invitation_token = None;
            record.put(&mut batch, &self.id)?;
            let session = DurableSession::stage_new(
                responded.session,
                &mut batch,
                context.config.reservation_block,
            )?;
            Ok((batch, record, session, peer_identity, entry, post_quantum))
        })();
        match responded {
            Ok((batch, record, session, peer_identity, first, post_quantum)) => self.commit(
                batch,
                CommitKind::Step,
                Then::Responded {
                    delivery,
                    record,
                    session: Box::new(session),
                    peer_identity,
                    first,
                    post_quantum,
                    reset,
                },
                effects,
            ),
            Err(error) => {
                // The application reports it (Event::HandshakeFailed).
                tracing::debug!(connection = %self.id, %error, "initial message refused");
                effects.ack.push(delivery);
                self.event(
                    effects,
                    Event::HandshakeFailed {
                        connection_id: self.id.clone(),
                        error: handshake_failure(error),
                    },
                );
            }
        }
    }

    /// A signed reset request from the other party.
    fn on_reset(
        &mut self,
        store: &dyn RawStore,
        delivery: DeliveryId,
        reset: SessionReset,
        effects: &mut Effects,
    ) {
        let Some(record) = self.record.clone() else {
            effects.ack.push(delivery);
            return;
        };
        // The signer must be the peer we know. An inviter whose first bundle
        // is not answered yet knows no peer: like the initial message it
        // waits for, the request is taken from whoever holds the
        // connection, and its bundle is bound to the request's nonce.
        let signer: Option<[u8; 32]> = match (record.peer_identity, &record.phase) {
            (Some(peer), _) => Some(peer),
            (None, Phase::BundleSent { .. }) => {
                <[u8; 32]>::try_from(reset.identity_key.as_slice()).ok()
            }
            (None, _) => None,
        };
        let Some(signer) = signer else {
            effects.ack.push(delivery);
            return;
        };
        if !reset_request_is_valid(&reset, &self.id, &signer) {
            tracing::warn!(connection = %self.id, "reset request with a bad signature ignored");
            effects.ack.push(delivery);
            return;
        }
        let result = match record.side {
            // The invitee starts its own reset; the inviter answers that.
            Side::Invitee => {
                if record.phase == Phase::Established {
                    self.request_reset(record, Some(delivery), false, effects)
                } else {
                    effects.ack.push(delivery);
                    Ok(())
                }
            }
            Side::Inviter => self.send_reset_bundle(store, record, reset.nonce, delivery, effects),
        };
        if let Err(error) = result {
            tracing::warn!(connection = %self.id, %error, "reset request not answered");
            effects.ack.push(delivery);
        }
    }

    /// Inviter: answers the reset request with `nonce` with a bundle bound
    /// to it. A copy of the request already answered gets the same bundle
    /// (same one-time pre-key) again; a new request replaces the previous
    /// reset's one-time pre-key.
    fn send_reset_bundle(
        &mut self,
        store: &dyn RawStore,
        mut record: ConnectionRecord,
        nonce: Vec<u8>,
        delivery: DeliveryId,
        effects: &mut Effects,
    ) -> Result<(), EngineError> {
        let bound = reset_binding(&self.id, &nonce);
        if record.reset_nonce.as_deref() == Some(nonce.as_slice())
            && let Some(key) = record.reset_one_time_pre_key
            && let Some(bundle) = stored_bundle(&self.context, store, key, &bound)?
        {
            Self::control(effects, Body::Bundle(bundle));
            effects.ack.push(delivery);
            return Ok(());
        }
        let one_time = binding::new_one_time_pre_key(&self.context, store)?;
        let mut batch = WriteBatch::new();
        if let Some(previous) = record.reset_one_time_pre_key.replace(one_time.key.id()) {
            binding::delete_one_time(&mut batch, previous);
        }
        record.reset_nonce = Some(nonce);
        one_time.put(&mut batch);
        record.put(&mut batch, &self.id)?;
        let bundle = bundle_with(&self.context, one_time, &bound)?;
        self.commit(
            batch,
            CommitKind::Step,
            Then::ResetBundle {
                delivery,
                record,
                bundle,
            },
            effects,
        );
        Ok(())
    }

    /// Messages keep failing to open: the two sides may disagree on the
    /// session (an initial message lost or refused, a reset half done). The
    /// invitee starts a reset; the inviter asks the invitee to start one.
    fn recover(&mut self, effects: &mut Effects) {
        let Some(record) = self.record.clone() else {
            return;
        };
        tracing::warn!(connection = %self.id, "messages keep failing to open; asking for a reset");
        let result = match (record.side, &record.phase) {
            (Side::Invitee, Phase::Established) => self.request_reset(record, None, false, effects),
            (Side::Inviter, Phase::Established | Phase::BundleSent { .. }) => {
                signed_reset_request(&self.context, &self.id, None)
                    .map(|request| Self::control(effects, Body::Reset(request)))
            }
            _ => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(connection = %self.id, %error, "could not ask for a reset");
        }
    }

    // ----- Commit outcomes -------------------------------------------------

    /// The outcome of commit `id`: `Ok` with the inbox numbers the store
    /// gave the commit's inbox entries, in order (an empty range if it held
    /// none), or the error. On success what the commit brings about takes
    /// effect (the record, the session, the envelopes, the events); on
    /// failure the connection is [stale](Connection::is_stale) when memory
    /// may be ahead of the store.
    pub fn committed(
        &mut self,
        store: &dyn RawStore,
        id: CommitId,
        outcome: Result<Range<u64>, StoreError>,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(index) = self.pending.iter().position(|(pending, _)| *pending == id) else {
            tracing::warn!(connection = %self.id, "outcome of an unknown commit ignored");
            return effects;
        };
        let (_, then) = self.pending.remove(index);
        match outcome {
            Ok(numbers) => self.succeeded(then, numbers, &mut effects),
            Err(error) => self.failed(then, error, &mut effects),
        }
        // A round waiting for this step goes on.
        if self.round.is_some() && !self.holds_step() && !self.stale {
            self.run_round(store, &mut effects);
        } else if self.stale
            && let Some(round) = self.round.take()
        {
            // Memory may be ahead of the store: nothing more of this round
            // is taken; it comes again.
            effects.release.extend(round.on_commit);
            Self::publish(&mut effects, round.drafts, None);
            effects
                .release
                .extend(self.queued.drain(..).map(|(delivery, _)| delivery));
        }
        effects
    }

    fn succeeded(&mut self, then: Then, numbers: Range<u64>, effects: &mut Effects) {
        match then {
            Then::Round { record } => {
                // The driver acknowledges the round's deliveries and
                // publishes its reports (see `Commit`).
                if let Some(session) = self.session.as_mut() {
                    session.committed();
                }
                if let Some(record) = record {
                    self.record = Some(record);
                }
                if !self.holds_step() {
                    match self.key_update_if_due(effects, None) {
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(connection = %self.id, %error, "key update not sent");
                        }
                    }
                }
            }
            Then::Reserve {
                reservation,
                remaining,
            } => {
                if let Some(session) = self.session.as_mut() {
                    session.reserved(reservation);
                }
                self.seal_all(remaining, effects);
            }
            Then::KeyUpdate {
                reservation,
                remaining,
            } => {
                // The announcement is sealed now that its epoch is durable
                // (counter 0 of the new key is then used at most once).
                let announcement = self
                    .session
                    .as_mut()
                    .map(|session| session.key_update_committed(reservation));
                self.update_wanted = false;
                self.request_peer_update = false;
                match announcement {
                    Some(Ok(update)) => {
                        tracing::debug!(connection = %self.id, "sending key updated");
                        Self::control(effects, Body::KeyUpdate(update));
                    }
                    Some(Err(error)) => {
                        // The peer follows the new epoch with its first
                        // message.
                        tracing::warn!(connection = %self.id, %error, "sending key updated; its announcement could not be sealed");
                    }
                    None => {}
                }
                if let Some(remaining) = remaining {
                    self.seal_all(remaining, effects);
                }
            }
            Then::Joined {
                delivery,
                record,
                bundle,
            } => {
                self.record = Some(record);
                Self::control(effects, Body::Bundle(bundle));
                effects.ack.push(delivery);
                self.event(
                    effects,
                    Event::Joined {
                        connection_id: self.id.clone(),
                    },
                );
            }
            Then::Initiated {
                delivery,
                record,
                session,
                envelope,
                peer_identity,
                reset,
                post_quantum,
            } => {
                self.record = Some(record);
                self.session = Some(*session);
                self.update_wanted = false;
                self.unreadable = None;
                self.refused_in_a_row = 0;
                self.integrity_update_asked = None;
                effects.send.push(Outbound::Control(envelope));
                effects.ack.push(delivery);
                self.event(
                    effects,
                    Event::Connected {
                        connection_id: self.id.clone(),
                        side: Side::Invitee,
                        peer_identity,
                        reset,
                        post_quantum,
                    },
                );
            }
            Then::Responded {
                delivery,
                record,
                session,
                peer_identity,
                first,
                reset,
                post_quantum,
            } => {
                self.record = Some(record);
                self.session = Some(*session);
                self.update_wanted = false;
                self.unreadable = None;
                effects.ack.push(delivery);
                self.event(
                    effects,
                    Event::Connected {
                        connection_id: self.id.clone(),
                        side: Side::Inviter,
                        peer_identity,
                        reset,
                        post_quantum,
                    },
                );
                if let Some(first) = first {
                    let mut numbers = numbers;
                    if let Some(sequence) = numbers.next() {
                        self.event(
                            effects,
                            Event::Message(IncomingMessage {
                                connection_id: self.id.clone(),
                                sequence,
                                plaintext: first.plaintext,
                            }),
                        );
                    }
                }
            }
            Then::ResetBundle {
                delivery,
                record,
                bundle,
            } => {
                self.record = Some(record);
                Self::control(effects, Body::Bundle(bundle));
                effects.ack.push(delivery);
            }
            Then::ResetRequested {
                delivery,
                record,
                request,
                requested,
            } => {
                self.record = Some(record);
                Self::control(effects, Body::Reset(request));
                effects.ack.extend(delivery);
                if requested {
                    effects.outcome = Some(Ok(()));
                }
            }
        }
    }

    fn failed(&mut self, then: Then, error: StoreError, effects: &mut Effects) {
        tracing::warn!(connection = %self.id, %error, "commit failed");
        match then {
            Then::Round { .. } => {
                // The driver hands the round's deliveries back and reports
                // its events but not its messages (see `Commit`).
                if let Some(session) = self.session.as_mut() {
                    session.commit_failed();
                }
                // Memory may be ahead of the store (the record too).
                self.stale = true;
            }
            Then::Reserve { .. } => {
                // Nothing was sealed with the counters it would have
                // reserved; the request fails.
                effects.outcome = Some(Err(EngineError::Store(error)));
            }
            Then::KeyUpdate { remaining, .. } => {
                // The session moved to the next epoch in memory only.
                self.stale = true;
                if remaining.is_some() {
                    effects.outcome = Some(Err(EngineError::Store(error)));
                }
            }
            Then::Joined { delivery, .. } => effects.release.push(delivery),
            Then::Initiated { delivery, .. } | Then::Responded { delivery, .. } => {
                effects.ack.push(delivery);
                self.event(
                    effects,
                    Event::HandshakeFailed {
                        connection_id: self.id.clone(),
                        error: HandshakeFailure::Session(store_error(error).to_string()),
                    },
                );
            }
            Then::ResetBundle { delivery, .. } => {
                tracing::warn!(connection = %self.id, "reset request not answered");
                effects.ack.push(delivery);
            }
            Then::ResetRequested {
                delivery,
                requested,
                ..
            } => {
                effects.ack.extend(delivery);
                if requested {
                    effects.outcome = Some(Err(EngineError::Store(error)));
                } else {
                    tracing::warn!(connection = %self.id, "could not ask for a reset");
                }
            }
        }
    }
}
