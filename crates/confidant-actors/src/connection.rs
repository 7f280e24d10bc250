//! The actor that owns one connection.
//!
//! A [`ConnectionActor`] holds the connection's record and its
//! [`DurableSession`]. Every operation on the connection is a message to it,
//! handled atomically (actix's [`AtomicResponse`]): while one runs, even
//! across a commit on a blocking thread, no other message for the
//! connection is handled, so no two operations on one session interleave.
//! The protocol itself stays in the session and store crates; the actor
//! only sequences it.
//!
//! A panic while handling a message (a bug, or a user's cipher plugin) is
//! caught: the connection's memory is dropped and the next message loads it
//! from the store again. If the panic came while a batch of the connection
//! was in the round's group commit, that load waits until the commit has
//! settled, so that it reads what the commit stored.

use crate::error::{HandshakeFailure, NodeError};
use crate::event::{Event, IncomingMessage};
use crate::records::{self, ConnectionRecord, Phase, Side};
use crate::shared::Shared;
use crate::transport::{DeliveryId, Outgoing, TransportError};
use actix::prelude::*;
use confidant_core::ConnectionId;
use confidant_core::wire::{self, InitialMessage, PreKeyBundle, SessionReset, envelope::Body};
use confidant_session::handshake::ResponderPolicy;
use confidant_session::{KeyStatus, OpenError};
use confidant_store::{
    DurableSession, InboxEntry, PreKeyStore, ReceiveError, StoreError, WriteBatch,
};
use confidant_x3dh::{IdentityPublicKey, OneTimePreKey};
use futures_util::FutureExt as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use zeroize::Zeroizing;

/// Label of a session reset request's signature.
const RESET_LABEL: &[u8] = b"confidant-v1-session-reset";
/// Label of a first-contact bundle's binding.
const INVITATION_BINDING: &[u8] = b"confidant-v1-bind-invitation";
/// Label of a reset bundle's binding.
const RESET_BINDING: &[u8] = b"confidant-v1-bind-reset";
/// Length of a reset request's nonce.
const RESET_NONCE_LEN: usize = 16;
/// After this many messages in a row that do not open (forged, or sealed
/// under a session the other side no longer has, but not replays), a
/// connection asks for a reset: two honest sides that disagree on the
/// session find each other again unless the relay drops everything.
pub(crate) const REFUSALS_BEFORE_RESET: u32 = 4;

/// What a connection receives from the relay.
#[derive(Debug)]
pub(crate) enum Item {
    /// Someone joined with our invitation's token.
    Joined(String),
    /// An encoded envelope.
    Envelope(Vec<u8>),
}

/// An event waiting for the group commit: a stored message's number is
/// known only once the batch is committed.
#[derive(Debug)]
pub(crate) enum Draft {
    Ready(Event),
    Stored(InboxEntry),
}

/// What one connection made of its part of an inbound round.
#[derive(Debug, Default)]
pub(crate) struct Processed {
    /// Changes to commit with the round (session snapshot, inbox entries,
    /// record).
    pub(crate) batch: WriteBatch,
    /// Deliveries to acknowledge once `batch` is committed.
    pub(crate) on_commit: Vec<DeliveryId>,
    /// Deliveries whose effect is already durable, or that were refused.
    pub(crate) ack: Vec<DeliveryId>,
    /// Deliveries to hand back to the relay, to be tried again.
    pub(crate) release: Vec<DeliveryId>,
    pub(crate) events: Vec<Draft>,
    /// Told (`true`) once the group commit holding `batch` has settled,
    /// whatever its outcome; set when `batch` is not empty.
    pub(crate) settled: Option<watch::Sender<bool>>,
}

/// The connection's state, moved into each handler's future and back.
pub(crate) struct ConnState {
    /// Messages in a row that did not open (see [`REFUSALS_BEFORE_RESET`]).
    /// In memory only.
    refused_in_a_row: u32,
    /// The key update due asks the peer to update its sending key too (our
    /// receiving key reached its integrity limit).
    request_peer_update: bool,
    /// The receiving epoch whose integrity limit we already asked the peer
    /// to move past.
    integrity_update_asked: Option<u32>,
    id: ConnectionId,
    shared: Arc<Shared>,
    loaded: bool,
    record: Option<ConnectionRecord>,
    session: Option<DurableSession>,
    /// A key update is due (soft limit, or the peer asked) and waits until
    /// no received messages are staged.
    update_wanted: bool,
    /// A blocking task of this connection panicked during the current
    /// request.
    crashed: bool,
    /// Why the stored session could not be read (a reset was asked for).
    unreadable: Option<String>,
    /// A batch of this connection's is in the round's group commit (from
    /// the answer to [`Process`] until [`Committed`]): it says when that
    /// commit has settled. The store is about to change until then, so a
    /// state lost meanwhile (a panic) is loaded again only after it.
    in_flight: Option<watch::Receiver<bool>>,
    /// How many joins had ended when the record was loaded (see
    /// [`Joins`](crate::shared::Joins)).
    joins_ended_at_load: u64,
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
            loaded: false,
            record: None,
            session: None,
            update_wanted: false,
            crashed: false,
            unreadable: None,
            refused_in_a_row: 0,
            request_peer_update: false,
            integrity_update_asked: None,
            in_flight,
            joins_ended_at_load: 0,
        }
    }
}

/// The actor owning one connection.
pub struct ConnectionActor {
    state: Option<Box<ConnState>>,
}

impl ConnectionActor {
    pub(crate) fn new(id: ConnectionId, shared: Arc<Shared>) -> Self {
        Self {
            state: Some(Box::new(ConnState::new(id, shared, None))),
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

/// The round's batch was committed (`true`) or not.
#[derive(Message)]
#[rtype(result = "Result<(), NodeError>")]
pub(crate) struct Committed(pub(crate) bool);

impl Handler<Committed> for ConnectionActor {
    type Result = AtomicResponse<Self, Result<(), NodeError>>;

    fn handle(&mut self, message: Committed, _: &mut Self::Context) -> Self::Result {
        self.atomic(move |mut state| async move {
            let result = state.committed(message.0).await;
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

/// Stop if idle (nothing staged, no key update waiting). Answers whether it
/// stopped.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct StopIfIdle;

impl Handler<StopIfIdle> for ConnectionActor {
    type Result = bool;

    fn handle(&mut self, _: StopIfIdle, ctx: &mut Self::Context) -> bool {
        let busy = self.state.as_ref().is_some_and(|state| {
            state.update_wanted
                || state.in_flight.is_some()
                || state
                    .session
                    .as_ref()
                    .is_some_and(DurableSession::is_staged)
        });
        if busy {
            return false;
        }
        ctx.stop();
        true
    }
}

fn encode(body: Body) -> Vec<u8> {
    wire::encode_envelope(body)
}

fn reset_message(connection_id: &ConnectionId, nonce: &[u8]) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut message = Vec::with_capacity(RESET_LABEL.len() + 1 + id.len() + nonce.len());
    message.extend_from_slice(RESET_LABEL);
    message.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    message.extend_from_slice(id);
    message.extend_from_slice(nonce);
    message
}

/// `label ‖ len(connection id) as u32 BE ‖ connection id ‖ len(value) as
/// u32 BE ‖ value`: what a bundle's offer is signed over (see
/// `docs/protocol.md`).
fn binding(label: &[u8], connection_id: &ConnectionId, value: &[u8]) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut binding = Vec::with_capacity(label.len() + 8 + id.len() + value.len());
    binding.extend_from_slice(label);
    binding.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
    binding.extend_from_slice(id);
    binding.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
    binding.extend_from_slice(value);
    binding
}

/// The binding of a first-contact bundle: the connection and the
/// invitation's token.
pub(crate) fn invitation_binding(connection_id: &ConnectionId, token: Option<&str>) -> Vec<u8> {
    binding(
        INVITATION_BINDING,
        connection_id,
        token.unwrap_or_default().as_bytes(),
    )
}

/// The binding of a reset bundle: the connection and the nonce of the reset
/// request it answers.
pub(crate) fn reset_binding(connection_id: &ConnectionId, nonce: &[u8]) -> Vec<u8> {
    binding(RESET_BINDING, connection_id, nonce)
}

fn fresh_nonce() -> Result<Vec<u8>, NodeError> {
    let mut nonce = vec![0u8; RESET_NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|error| {
        NodeError::Crashed(format!("the operating system gave no randomness: {error}"))
    })?;
    Ok(nonce)
}

/// A reset request for `connection_id` with `nonce` (a fresh one if
/// `None`), signed with the node's identity key.
pub(crate) fn signed_reset_request(
    shared: &Shared,
    connection_id: &ConnectionId,
    nonce: Option<Vec<u8>>,
) -> Result<SessionReset, NodeError> {
    let nonce = match nonce {
        Some(nonce) => nonce,
        None => fresh_nonce()?,
    };
    let signature = shared
        .identity()
        .sign(&reset_message(connection_id, &nonce));
    Ok(SessionReset {
        connection_id: connection_id.as_str().to_owned(),
        identity_key: shared.identity().public_key().to_bytes().to_vec(),
        nonce,
        signature: signature.to_vec(),
    })
}

/// The node's bundle with one one-time pre-key, its offer signed over
/// `binding`.
pub(crate) fn bundle_with(
    shared: &Shared,
    key: OneTimePreKey,
    binding: &[u8],
) -> Result<PreKeyBundle, NodeError> {
    let mut keys = shared.keys.clone();
    keys.add_one_time_pre_key(key)
        .map_err(|error| HandshakeFailure::from_key_agreement(&error))?;
    shared
        .agreement
        .bundle(&keys, &shared.config.offered_suites, binding)
        .map_err(NodeError::Handshake)
}

/// The node's bundle with the stored one-time pre-key `key_id`; `None` if
/// that key is gone (its handshake finished). Reads the store: call it off
/// the actor threads.
pub(crate) fn stored_bundle(
    shared: &Shared,
    key_id: u32,
    binding: &[u8],
) -> Result<Option<PreKeyBundle>, NodeError> {
    shared
        .store
        .one_time_pre_key(key_id)?
        .map(|key| bundle_with(shared, key, binding))
        .transpose()
}

fn store_error(error: StoreError) -> NodeError {
    match error {
        StoreError::Session(reason) => NodeError::Session(reason),
        other => NodeError::Store(other),
    }
}

impl ConnState {
    fn outgoing(&self, envelope: Vec<u8>) -> Outgoing {
        Outgoing {
            connection_id: self.id.clone(),
            envelope,
        }
    }

    /// Loads the record and the session from the store, once.
    async fn ensure_loaded(&mut self) -> Result<(), NodeError> {
        if self.loaded {
            return Ok(());
        }
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
        let (record, session) = self
            .off_thread(move || -> Result<_, StoreError> {
                let record = ConnectionRecord::load(&*shared.store, &id)?;
                let session = match &record {
                    Some(record) if record.phase == Phase::Established => {
                        match DurableSession::load(
                            &*shared.store,
                            &shared.registry,
                            &id,
                            shared.config.reservation_block,
                        ) {
                            Ok(Some(session)) => Ok(session),
                            Ok(None) => Err("the session is missing".to_owned()),
                            // A failing disk may work again: try later.
                            Err(StoreError::Io(reason)) => return Err(StoreError::Io(reason)),
                            Err(error) => Err(error.to_string()),
                        }
                        .map(Some)
                    }
                    _ => Ok(None),
                };
                Ok((record, session))
            })
            .await?
            .map_err(NodeError::Store)?;
        self.record = record;
        self.loaded = true;
        match session {
            Ok(session) => {
                self.session = session;
                self.unreadable = None;
            }
            Err(reason) => {
                tracing::error!(connection = %self.id, %reason, "the session cannot be read; asking for a reset");
                self.session = None;
                self.unreadable = Some(reason);
                self.reset_unreadable().await;
            }
        }
        Ok(())
    }

    /// The session is unreadable (damaged or lost): start a reset, which
    /// replaces it with a fresh X3DH between the same two identities.
    async fn reset_unreadable(&mut self) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let result = match record.side {
            Side::Invitee => self.request_reset(record).await,
            Side::Inviter => self.reset_request(None).and_then(|request| {
                self.shared
                    .send_and_forget(vec![self.outgoing(encode(Body::Reset(request)))])
            }),
        };
        if let Err(error) = result {
            tracing::warn!(connection = %self.id, %error, "could not ask for a reset");
        }
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
            self.unload();
            self.crashed = true;
        }
        result
    }

    /// Forgets the in-memory state; the next request loads it again (after
    /// the commit of a batch in flight has settled).
    fn unload(&mut self) {
        self.loaded = false;
        self.record = None;
        self.session = None;
        self.update_wanted = false;
        self.unreadable = None;
    }

    /// After a failed store call: a poisoned session is reloaded.
    fn after_failure(&mut self) {
        if self
            .session
            .as_ref()
            .is_some_and(DurableSession::is_poisoned)
        {
            self.unload();
        }
    }

    async fn send(
        &mut self,
        plaintexts: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<(), TransportError>>, NodeError> {
        self.ensure_loaded().await?;
        if self.record.is_none() {
            return Err(NodeError::UnknownConnection(self.id.clone()));
        }
        if let Some(reason) = &self.unreadable {
            return Err(NodeError::Session(format!(
                "the stored session cannot be read ({reason}); a reset was asked for"
            )));
        }
        if self.session.is_none() {
            return Err(NodeError::NotEstablished(self.id.clone()));
        }
        let mut envelopes = Vec::with_capacity(plaintexts.len());
        for plaintext in plaintexts {
            self.update_key_if_due().await?;
            let message = match self.seal(plaintext).await {
                Ok(message) => message,
                Err(error) => {
                    self.after_failure();
                    return Err(error);
                }
            };
            envelopes.push(self.outgoing(encode(Body::Message(message))));
        }
        let receiver = self.shared.send(envelopes)?;
        // The update (if due now) follows the messages on the wire.
        self.update_key_if_due().await?;
        Ok(receiver)
    }

    async fn seal(&mut self, plaintext: Vec<u8>) -> Result<wire::EncryptedMessage, NodeError> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| NodeError::NotEstablished(self.id.clone()))?;
        if !session.seal_commits() {
            let message = session
                .seal_vec(&*self.shared.store, plaintext)
                .map_err(store_error)?;
            if session.session().key_status() != KeyStatus::Fresh {
                self.update_wanted = true;
            }
            return Ok(message);
        }
        // This seal reserves the next block of counters: a durable commit,
        // on a blocking thread. The session travels there and back.
        let Some(mut session) = self.session.take() else {
            return Err(NodeError::NotEstablished(self.id.clone()));
        };
        let shared = Arc::clone(&self.shared);
        let (session, result) = self
            .off_thread(move || {
                let result = session.seal_vec(&*shared.store, plaintext);
                (session, result)
            })
            .await?;
        if session.session().key_status() != KeyStatus::Fresh {
            self.update_wanted = true;
        }
        self.session = Some(session);
        result.map_err(store_error)
    }

    /// Moves the sending key to the next epoch if it is due and nothing
    /// received is staged; the announcement goes out after every message
    /// sealed before it.
    async fn update_key_if_due(&mut self) -> Result<(), NodeError> {
        let due = self.update_wanted
            || self
                .session
                .as_ref()
                .is_some_and(|session| session.session().key_status() != KeyStatus::Fresh);
        if !due {
            return Ok(());
        }
        self.update_wanted = true;
        let Some(mut session) = self.session.take() else {
            return Ok(());
        };
        if session.is_staged() {
            self.session = Some(session);
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let request_peer_update = self.request_peer_update;
        let (session, result) = self
            .off_thread(move || {
                let result = session.update_sending_key(&*shared.store, request_peer_update);
                (session, result)
            })
            .await?;
        self.session = Some(session);
        match result {
            Ok(update) => {
                self.update_wanted = false;
                self.request_peer_update = false;
                tracing::debug!(connection = %self.id, "sending key updated");
                self.shared
                    .send_and_forget(vec![self.outgoing(encode(Body::KeyUpdate(update)))])
            }
            Err(error) => {
                self.after_failure();
                Err(store_error(error))
            }
        }
    }

    async fn committed(&mut self, ok: bool) -> Result<(), NodeError> {
        if self.in_flight.take().is_none() {
            // The state that staged the batch was lost and loaded again.
            return Ok(());
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        if ok {
            session.committed();
            self.update_key_if_due().await
        } else {
            session.commit_failed();
            // Memory may be ahead of the store (the record too): reload.
            self.unload();
            Ok(())
        }
    }

    async fn process(&mut self, items: Vec<(DeliveryId, Item)>) -> Result<Processed, NodeError> {
        let mut out = Processed::default();
        self.crashed = false;
        if let Err(error) = self.ensure_loaded().await {
            tracing::warn!(connection = %self.id, %error, "connection state could not be loaded; deliveries released");
            out.release = items.into_iter().map(|(id, _)| id).collect();
            return Ok(out);
        }
        let mut items = items;
        if self.record.is_none() && self.shared.joins.may_be_missing(self.joins_ended_at_load) {
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
                self.unload();
                return Ok(out);
            }
            items = joined;
        }
        let mut items = items.into_iter();
        while let Some((delivery, item)) = items.next() {
            let body = match item {
                Item::Joined(token) => {
                    if out.on_commit.is_empty() {
                        self.on_joined(delivery, &token, &mut out).await;
                    } else {
                        out.release.push(delivery);
                    }
                    continue;
                }
                Item::Envelope(bytes) => {
                    match wire::decode_envelope(&bytes, self.shared.config.max_envelope_len) {
                        Ok(body) => body,
                        Err(error) => {
                            tracing::warn!(connection = %self.id, %error, "undecodable envelope dropped");
                            out.ack.push(delivery);
                            continue;
                        }
                    }
                }
            };
            match body {
                Body::Message(message) => self.on_message(delivery, message, &mut out),
                Body::KeyUpdate(update) => self.on_key_update(delivery, update, &mut out),
                handshake => {
                    // A handshake step commits on its own; with received
                    // messages staged it would race their snapshot, so it
                    // and everything after it wait for the next round.
                    if !out.on_commit.is_empty() {
                        out.release.push(delivery);
                        out.release.extend(items.by_ref().map(|(id, _)| id));
                        break;
                    }
                    match handshake {
                        Body::Bundle(bundle) => self.on_bundle(delivery, bundle, &mut out).await,
                        Body::Initial(initial) => {
                            self.on_initial(delivery, initial, &mut out).await;
                        }
                        Body::Reset(reset) => self.on_reset(delivery, reset, &mut out).await,
                        _ => out.ack.push(delivery),
                    }
                }
            }
        }
        // A receiving key at its integrity limit: ask the peer for a key
        // update now (a round of refusals alone commits nothing, so no
        // commit would bring the update about).
        if self.request_peer_update
            && out.on_commit.is_empty()
            && let Err(error) = self.update_key_if_due().await
        {
            tracing::warn!(connection = %self.id, %error, "key update not sent");
        }
        if self.refused_in_a_row >= REFUSALS_BEFORE_RESET && out.on_commit.is_empty() {
            self.refused_in_a_row = 0;
            self.recover().await;
        }
        if self.crashed {
            // State was lost with a panicking task: nothing of this round
            // counts; the connection reloads and the deliveries come again.
            self.crashed = false;
            return Err(NodeError::Crashed(format!(
                "a task of connection {} panicked",
                self.id
            )));
        }
        if let Some(session) = self.session.as_mut()
            && let Err(error) = session.stage(&mut out.batch)
        {
            tracing::warn!(connection = %self.id, %error, "staging failed; deliveries released");
            out.release.append(&mut out.on_commit);
            out.batch = WriteBatch::new();
            out.events.retain(|draft| matches!(draft, Draft::Ready(_)));
            self.after_failure();
        }
        // The hub answers a non-empty batch with `Committed`, and tells
        // `settled` once its commit has settled.
        if !out.batch.is_empty() {
            let (settled, in_flight) = watch::channel(false);
            out.settled = Some(settled);
            self.in_flight = Some(in_flight);
        }
        Ok(out)
    }

    fn on_message(
        &mut self,
        delivery: DeliveryId,
        message: wire::EncryptedMessage,
        out: &mut Processed,
    ) {
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
            out.ack.push(delivery);
            return;
        };
        match session.open_into(message, &mut out.batch) {
            Ok(entry) => {
                self.refused_in_a_row = 0;
                out.on_commit.push(delivery);
                out.events.push(Draft::Stored(entry));
                // The inviter has answered (a message under the new session
                // opened): the initial message need not be sent again, and
                // a reset is complete.
                if let Some(record) = self.record.as_mut()
                    && (record.pending_initial.is_some() || record.reset_bundle_key.is_some())
                {
                    record.pending_initial = None;
                    if record.side == Side::Invitee && record.reset_bundle_key.is_some() {
                        record.reset_requested = false;
                        record.reset_nonce = None;
                        record.reset_bundle_key = None;
                    }
                    if let Err(error) = record.put(&mut out.batch, &self.id) {
                        tracing::warn!(connection = %self.id, %error, "record not updated");
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
                out.ack.push(delivery);
            }
            Err(error) => {
                tracing::warn!(connection = %self.id, %error, "message not taken now; released");
                out.release.push(delivery);
            }
        }
    }

    fn on_key_update(
        &mut self,
        delivery: DeliveryId,
        update: wire::KeyUpdate,
        out: &mut Processed,
    ) {
        let Some(session) = self.session.as_mut() else {
            out.ack.push(delivery);
            return;
        };
        match session.open_key_update_into(update) {
            Ok(received) => {
                out.on_commit.push(delivery);
                if received.update_requested {
                    self.update_wanted = true;
                }
            }
            Err(ReceiveError::Refused(error)) => {
                tracing::debug!(connection = %self.id, %error, "key update refused");
                out.ack.push(delivery);
            }
            Err(_) => out.release.push(delivery),
        }
    }

    /// A fresh one-time pre-key with an id not in the store.
    fn new_one_time_pre_key(shared: &Shared) -> Result<OneTimePreKey, NodeError> {
        for _ in 0..16 {
            let mut id = [0u8; 4];
            getrandom::fill(&mut id).map_err(|error| {
                NodeError::Crashed(format!("the operating system gave no randomness: {error}"))
            })?;
            let id = u32::from_be_bytes(id);
            if shared.store.one_time_pre_key(id)?.is_none() {
                return Ok(OneTimePreKey::generate(id));
            }
        }
        Err(NodeError::Store(StoreError::Inconsistent(
            "no free one-time pre-key id found",
        )))
    }

    /// Inviter: someone joined with our token. Store a one-time pre-key and
    /// the connection, then send the bundle.
    async fn on_joined(&mut self, delivery: DeliveryId, token: &str, out: &mut Processed) {
        let result = self.joined(token).await;
        match result {
            Ok(true) => {
                out.ack.push(delivery);
                out.events.push(Draft::Ready(Event::Joined {
                    connection_id: self.id.clone(),
                }));
            }
            Ok(false) => out.ack.push(delivery),
            Err(error) => {
                tracing::warn!(connection = %self.id, %error, "join not handled; released");
                out.release.push(delivery);
            }
        }
    }

    async fn joined(&mut self, token: &str) -> Result<bool, NodeError> {
        if let Some(record) = &self.record {
            // A redelivered notice: the bundle may not have left before a
            // crash, so send it again with the same one-time pre-key.
            if let Phase::BundleSent { one_time_pre_key } = record.phase {
                let shared = Arc::clone(&self.shared);
                let binding = invitation_binding(&self.id, record.invitation_token.as_deref());
                let bundle = self
                    .off_thread(move || stored_bundle(&shared, one_time_pre_key, &binding))
                    .await??;
                if let Some(bundle) = bundle {
                    self.shared
                        .send_and_forget(vec![self.outgoing(encode(Body::Bundle(bundle)))])?;
                }
            }
            return Ok(false);
        }
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        let token = token.to_owned();
        let created = self
            .off_thread(move || -> Result<_, NodeError> {
                if !records::has_invitation(&*shared.store, &token)? {
                    return Ok(None);
                }
                let key = Self::new_one_time_pre_key(&shared)?;
                let record = ConnectionRecord {
                    side: Side::Inviter,
                    peer_identity: None,
                    phase: Phase::BundleSent {
                        one_time_pre_key: key.id(),
                    },
                    pending_initial: None,
                    reset_requested: false,
                    reset_one_time_pre_key: None,
                    invitation_token: Some(token.clone()),
                    reset_nonce: None,
                    reset_bundle_key: None,
                };
                let mut batch = WriteBatch::new();
                batch.put_one_time_pre_key(&key);
                records::delete_invitation(&mut batch, &token);
                record.insert(&mut batch, &id)?;
                shared.store.commit(batch)?;
                Ok(Some((record, key)))
            })
            .await??;
        let Some((record, key)) = created else {
            tracing::warn!(connection = %self.id, "join with a token this node did not issue (or already used) ignored");
            return Ok(false);
        };
        let binding = invitation_binding(&self.id, record.invitation_token.as_deref());
        self.record = Some(record);
        let bundle = bundle_with(&self.shared, key, &binding)?;
        self.shared
            .send_and_forget(vec![self.outgoing(encode(Body::Bundle(bundle)))])?;
        Ok(true)
    }

    /// Invitee: the inviter's bundle (first contact, or answering our reset
    /// request).
    async fn on_bundle(&mut self, delivery: DeliveryId, bundle: PreKeyBundle, out: &mut Processed) {
        out.ack.push(delivery);
        let Some(record) = self.record.clone() else {
            tracing::debug!(connection = %self.id, "bundle for an unknown connection dropped");
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
                    return;
                };
                (Vec::new(), reset_binding(&self.id, nonce))
            }
            _ => {
                tracing::debug!(connection = %self.id, "unexpected bundle ignored");
                return;
            }
        };
        let reset = record.phase == Phase::Established;
        let Some(expected) = record.peer_identity else {
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
            if let Err(error) = self.shared.send_and_forget(vec![self.outgoing(initial)]) {
                tracing::warn!(connection = %self.id, %error, "initial message not sent again");
            }
            return;
        }
        match self
            .initiate(record, expected, bundle, &binding, greeting, reset)
            .await
        {
            Ok(()) => out.events.push(Draft::Ready(Event::Connected {
                connection_id: self.id.clone(),
                side: Side::Invitee,
                peer_identity: expected,
                reset,
            })),
            Err(error) => {
                // The application reports it (Event::HandshakeFailed).
                tracing::debug!(connection = %self.id, %error, "bundle refused");
                out.events.push(Draft::Ready(Event::HandshakeFailed {
                    connection_id: self.id.clone(),
                    error: handshake_failure(error),
                }));
            }
        }
    }

    async fn initiate(
        &mut self,
        mut record: ConnectionRecord,
        expected: [u8; 32],
        bundle: PreKeyBundle,
        binding: &[u8],
        greeting: Vec<u8>,
        reset: bool,
    ) -> Result<(), NodeError> {
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        let binding = binding.to_vec();
        let created = self
            .off_thread(move || -> Result<_, NodeError> {
                let one_time = bundle.one_time_pre_key.as_ref().map(|key| key.id);
                let (session, initial) = shared
                    .agreement
                    .initiate(
                        shared.identity(),
                        &expected,
                        &bundle,
                        &binding,
                        &shared.registry,
                        id.clone(),
                        &greeting,
                        shared.config.session.clone(),
                    )
                    .map_err(NodeError::Handshake)?;
                let envelope = encode(Body::Initial(initial));
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
                record.put(&mut batch, &id)?;
                let session = DurableSession::create(
                    &*shared.store,
                    session,
                    batch,
                    shared.config.reservation_block,
                )?;
                Ok((record, session, envelope))
            })
            .await??;
        let (record, session, envelope) = created;
        self.record = Some(record);
        self.session = Some(session);
        self.update_wanted = false;
        self.unreadable = None;
        self.refused_in_a_row = 0;
        self.integrity_update_asked = None;
        self.shared.send_and_forget(vec![self.outgoing(envelope)])
    }

    /// Inviter: the invitee's initial message (first contact, or a reset).
    async fn on_initial(
        &mut self,
        delivery: DeliveryId,
        initial: InitialMessage,
        out: &mut Processed,
    ) {
        out.ack.push(delivery);
        let Some(record) = self.record.clone() else {
            tracing::debug!(connection = %self.id, "initial message for an unknown connection dropped");
            return;
        };
        // The one-time pre-keys this connection's bundles offered: the
        // first contact's (while it is not answered) and a reset's.
        let first_key = match (&record.side, &record.phase) {
            (Side::Inviter, Phase::BundleSent { one_time_pre_key }) => Some(*one_time_pre_key),
            (Side::Inviter, Phase::Established) => None,
            _ => return,
        };
        let used = initial.one_time_pre_key_id;
        let reset = used.is_some() && used == record.reset_one_time_pre_key;
        let Some(expected_key) = used.filter(|&key| reset || Some(key) == first_key) else {
            tracing::warn!(connection = %self.id, "initial message for another one-time pre-key ignored");
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
            return;
        }
        match self.respond(record, expected_key, initial, reset).await {
            Ok((peer_identity, first)) => {
                out.events.push(Draft::Ready(Event::Connected {
                    connection_id: self.id.clone(),
                    side: Side::Inviter,
                    peer_identity,
                    reset,
                }));
                if let Some(first) = first {
                    out.events.push(Draft::Ready(Event::Message(first)));
                }
            }
            Err(error) => {
                // The application reports it (Event::HandshakeFailed).
                tracing::debug!(connection = %self.id, %error, "initial message refused");
                out.events.push(Draft::Ready(Event::HandshakeFailed {
                    connection_id: self.id.clone(),
                    error: handshake_failure(error),
                }));
            }
        }
    }

    async fn respond(
        &mut self,
        mut record: ConnectionRecord,
        key_id: u32,
        initial: InitialMessage,
        reset: bool,
    ) -> Result<([u8; 32], Option<IncomingMessage>), NodeError> {
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        let old = self.session.take();
        let outcome = self
            .off_thread(move || {
                let result = (|| -> Result<_, NodeError> {
                    let key = shared
                        .store
                        .one_time_pre_key(key_id)?
                        .ok_or(HandshakeFailure::OneTimePreKeyUsed(key_id))?;
                    let peer_identity: [u8; 32] =
                        initial.identity_key.as_slice().try_into().map_err(|_| {
                            HandshakeFailure::InvalidIdentityKey(
                                "the initial message's identity key is not 32 bytes".into(),
                            )
                        })?;
                    let mut keys = shared.keys.clone();
                    keys.add_one_time_pre_key(key)
                        .map_err(|error| HandshakeFailure::from_key_agreement(&error))?;
                    let responded = shared
                        .agreement
                        .respond(
                            &keys,
                            &initial,
                            ResponderPolicy {
                                offered: &shared.config.offered_suites,
                                require_one_time_pre_key: true,
                                replacing: old.as_ref().map(DurableSession::session),
                            },
                            &shared.registry,
                            id.clone(),
                            shared.config.session.clone(),
                        )
                        .map_err(NodeError::Handshake)?;
                    let mut batch = WriteBatch::new();
                    if let Some(used) = responded.one_time_pre_key_id {
                        batch.delete_one_time_pre_key(used);
                    }
                    // Whatever other bundle of this connection is still
                    // open is closed with it.
                    if let Phase::BundleSent { one_time_pre_key } = record.phase {
                        batch.delete_one_time_pre_key(one_time_pre_key);
                    }
                    if let Some(reset_key) = record.reset_one_time_pre_key {
                        batch.delete_one_time_pre_key(reset_key);
                    }
                    // A reset's first message is a control message with no
                    // content for the application.
                    let entry = (!reset).then(|| InboxEntry {
                        sequence: 0,
                        connection_id: id.clone(),
                        epoch: 0,
                        counter: 0,
                        plaintext: Zeroizing::new(responded.first_plaintext.to_vec()),
                    });
                    if let Some(entry) = &entry {
                        batch.push_inbox(entry);
                    }
                    record.phase = Phase::Established;
                    record.peer_identity = Some(peer_identity);
                    record.reset_one_time_pre_key = None;
                    record.reset_nonce = None;
                    record.invitation_token = None;
                    record.put(&mut batch, &id)?;
                    let (session, committed) = DurableSession::create_committed(
                        &*shared.store,
                        responded.session,
                        batch,
                        shared.config.reservation_block,
                    )?;
                    let first = entry.map(|entry| IncomingMessage {
                        connection_id: id.clone(),
                        sequence: committed.inbox.start,
                        plaintext: entry.plaintext,
                    });
                    Ok((record, session, peer_identity, first))
                })();
                (old, result)
            })
            .await?;
        let (old, result) = outcome;
        match result {
            Ok((record, session, peer_identity, first)) => {
                self.record = Some(record);
                self.session = Some(session);
                self.update_wanted = false;
                self.unreadable = None;
                Ok((peer_identity, first))
            }
            Err(error) => {
                self.session = old;
                Err(error)
            }
        }
    }

    /// A signed reset request from the other party.
    async fn on_reset(&mut self, delivery: DeliveryId, reset: SessionReset, out: &mut Processed) {
        out.ack.push(delivery);
        let Some(record) = self.record.clone() else {
            return;
        };
        // The signer must be the peer we know. An inviter whose first bundle
        // is not answered yet knows no peer: like the initial message it
        // waits for, the request is taken from whoever holds the
        // connection, and its bundle is bound to the request's nonce.
        let signer: [u8; 32] = match (record.peer_identity, &record.phase) {
            (Some(peer), _) => peer,
            (None, Phase::BundleSent { .. }) => {
                match <[u8; 32]>::try_from(reset.identity_key.as_slice()) {
                    Ok(key) => key,
                    Err(_) => return,
                }
            }
            (None, _) => return,
        };
        let valid = reset.connection_id == self.id.as_str()
            && reset.identity_key.as_slice() == signer.as_slice()
            && reset.nonce.len() == RESET_NONCE_LEN
            && <[u8; 64]>::try_from(reset.signature.as_slice())
                .ok()
                .zip(IdentityPublicKey::from_bytes(&signer).ok())
                .is_some_and(|(signature, key)| {
                    key.verify_strict(&reset_message(&self.id, &reset.nonce), &signature)
                        .is_ok()
                });
        if !valid {
            tracing::warn!(connection = %self.id, "reset request with a bad signature ignored");
            return;
        }
        if let Err(error) = self.answer_reset(record, reset.nonce).await {
            tracing::warn!(connection = %self.id, %error, "reset request not answered");
        }
    }

    async fn answer_reset(
        &mut self,
        record: ConnectionRecord,
        nonce: Vec<u8>,
    ) -> Result<(), NodeError> {
        match record.side {
            // The invitee starts its own reset; the inviter answers that.
            Side::Invitee => {
                if record.phase != Phase::Established {
                    return Ok(());
                }
                self.request_reset(record).await
            }
            Side::Inviter => self.send_reset_bundle(record, nonce).await,
        }
    }

    /// Inviter: answers the reset request with `nonce` with a bundle bound
    /// to it. A copy of the request already answered gets the same bundle
    /// (same one-time pre-key) again; a new request replaces the previous
    /// reset's one-time pre-key.
    async fn send_reset_bundle(
        &mut self,
        mut record: ConnectionRecord,
        nonce: Vec<u8>,
    ) -> Result<(), NodeError> {
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        let bound = reset_binding(&self.id, &nonce);
        let (record, bundle) = self
            .off_thread(move || -> Result<_, NodeError> {
                if record.reset_nonce.as_deref() == Some(nonce.as_slice())
                    && let Some(key) = record.reset_one_time_pre_key
                    && let Some(bundle) = stored_bundle(&shared, key, &bound)?
                {
                    return Ok((record, bundle));
                }
                let key = Self::new_one_time_pre_key(&shared)?;
                let mut batch = WriteBatch::new();
                if let Some(previous) = record.reset_one_time_pre_key.replace(key.id()) {
                    batch.delete_one_time_pre_key(previous);
                }
                record.reset_nonce = Some(nonce);
                batch.put_one_time_pre_key(&key);
                record.put(&mut batch, &id)?;
                shared.store.commit(batch)?;
                let bundle = bundle_with(&shared, key, &bound)?;
                Ok((record, bundle))
            })
            .await??;
        self.record = Some(record);
        self.shared
            .send_and_forget(vec![self.outgoing(encode(Body::Bundle(bundle)))])
    }

    fn reset_request(&self, nonce: Option<Vec<u8>>) -> Result<SessionReset, NodeError> {
        signed_reset_request(&self.shared, &self.id, nonce)
    }

    /// Invitee: commits a fresh reset nonce (the next bundle must be bound
    /// to it), then asks the inviter for a bundle. Each request has its own
    /// nonce, so a bundle answering an older request is refused.
    async fn request_reset(&mut self, mut record: ConnectionRecord) -> Result<(), NodeError> {
        let nonce = fresh_nonce()?;
        record.reset_requested = true;
        record.reset_nonce = Some(nonce.clone());
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        record = self
            .off_thread(move || -> Result<_, NodeError> {
                let mut batch = WriteBatch::new();
                record.put(&mut batch, &id)?;
                shared.store.commit(batch)?;
                Ok(record)
            })
            .await??;
        self.record = Some(record);
        let request = self.reset_request(Some(nonce))?;
        self.shared
            .send_and_forget(vec![self.outgoing(encode(Body::Reset(request)))])
    }

    /// Messages keep failing to open: the two sides may disagree on the
    /// session (an initial message lost or refused, a reset half done). The
    /// invitee starts a reset; the inviter asks the invitee to start one.
    async fn recover(&mut self) {
        let Some(record) = self.record.clone() else {
            return;
        };
        tracing::warn!(connection = %self.id, "messages keep failing to open; asking for a reset");
        let result = match (record.side, &record.phase) {
            (Side::Invitee, Phase::Established) => self.request_reset(record).await,
            (Side::Inviter, Phase::Established | Phase::BundleSent { .. }) => {
                self.reset_request(None).and_then(|request| {
                    self.shared
                        .send_and_forget(vec![self.outgoing(encode(Body::Reset(request)))])
                })
            }
            _ => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(connection = %self.id, %error, "could not ask for a reset");
        }
    }

    /// The application asked for a reset.
    async fn reset(&mut self) -> Result<(), NodeError> {
        self.ensure_loaded().await?;
        let record = self
            .record
            .clone()
            .ok_or_else(|| NodeError::UnknownConnection(self.id.clone()))?;
        if record.phase != Phase::Established {
            return Err(NodeError::NotEstablished(self.id.clone()));
        }
        match record.side {
            Side::Invitee => self.request_reset(record).await,
            Side::Inviter => {
                // Ask the invitee to start one (it answers with its own
                // signed request, which this node answers with a bundle).
                let request = self.reset_request(None)?;
                self.shared
                    .send_and_forget(vec![self.outgoing(encode(Body::Reset(request)))])
            }
        }
    }
}

/// The kind of a refused handshake step, for [`Event::HandshakeFailed`].
fn handshake_failure(error: NodeError) -> HandshakeFailure {
    match error {
        NodeError::Handshake(failure) => failure,
        other => HandshakeFailure::Session(other.to_string()),
    }
}
