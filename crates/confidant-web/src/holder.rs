//! `WebHolder`, the class a page uses: the driver of the engine's
//! connections in the browser.
//!
//! Everything that touches the engine or the store runs under one async
//! lock, one input at a time (the page's calls and the deliveries of the
//! receive loop queue for it), as the native runtime's connection actor
//! handles one message at a time. For each input the driver carries out
//! the engine's effects exactly as the native driver does
//! (`confidant-actors/src/connection.rs`): every commit in order, each an
//! IndexedDB transaction awaited before its outcome is reported to the
//! engine (`Connection::committed`), which may ask for more; a round's
//! deliveries are acknowledged to the connector only once its commit is
//! durable, and its events published then; envelopes go out in order; a
//! stale connection is dropped and loaded again.

use crate::credentials::{self, CONNECTOR_URL, CREDENTIAL_PREFIX, Credential, RELAY_KEY};
use crate::engine_context;
use crate::error::{ErrorKind, WebError};
use crate::idb::{AppChange, Database};
use crate::invitation::Invitation;
use crate::mirror::{Change, Mirror};
use crate::proto::received_message::Content;
use crate::transport::Transport;
use confidant_core::ConnectionId;
use confidant_engine::{
    CommitKind, Connection, ConnectionRecord, ConnectionState, Context, DeliveryId, Effects, Event,
    Item, Outbound, Report,
};
use confidant_store::{KeyEncryptionKey, StoreError, WriteBatch};

use futures_util::lock::Mutex;
use js_sys::{Array, Function, Object, Reflect};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** A credential this holder stored. */
export interface StoredCredential {
  connectionId: string;
  /** Its inbox number: unique for this holder. */
  sequence: number;
  /** The JSON, as the issuer sent it. */
  json: string;
  /** Whether the connector has the holder's answer. */
  replied: boolean;
}
/** A connection of this holder. */
export interface HolderConnection {
  connectionId: string;
  /** "AwaitingBundle", "AwaitingInitialMessage", "Established" or "ResetRequested". */
  state: string;
  /** The issuer's identity key (hex). */
  peerIdentity: string | undefined;
}
/** seal and open timings of one message size, in nanoseconds per message. */
export interface SealOpenTiming {
  suite: string;
  bytes: number;
  messages: number;
  sealNs: number;
  openNs: number;
}
"#;

/// Messages asked for per page when the stream cannot be used.
const PAGE_LIMIT: u32 = 100;
/// Wait between polls (and before opening the stream again), in ms.
const POLL_MS: i32 = 1000;

struct State {
    db: Database,
    mirror: Mirror,
    /// The page's text records (credentials, the connector URL), as
    /// IndexedDB holds them.
    app: BTreeMap<String, String>,
    context: Arc<Context>,
    relay_seed: Zeroizing<[u8; 32]>,
    transport: Option<Rc<Transport>>,
    connections: HashMap<ConnectionId, Connection>,
    /// A delivery was handed back: read the mailbox again from the start.
    reread: bool,
    /// Connections the connector delivered for before this holder stored
    /// them (their messages were left at the connector).
    unknown: std::collections::HashSet<ConnectionId>,
}

struct Inner {
    state: Mutex<State>,
    on_step: Function,
    receiving: Cell<bool>,
    stopped: Cell<bool>,
}

/// A holder (wallet) in the browser. Open one with [`WebHolder::open`].
#[wasm_bindgen]
pub struct WebHolder {
    inner: Rc<Inner>,
    identity_key: String,
}

fn js_object(fields: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (name, value) in fields {
        // Defining a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&object, &JsValue::from_str(name), value);
    }
    object.into()
}

/// Sleeps `ms` milliseconds on the page's timer.
async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve: Function, _reject: Function| {
        let set_timeout = Reflect::get(&js_sys::global(), &JsValue::from_str("setTimeout"))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        match set_timeout {
            Some(set_timeout) => {
                let _ = set_timeout.call2(&JsValue::UNDEFINED, &resolve, &JsValue::from(ms));
            }
            None => {
                let _ = resolve.call0(&JsValue::UNDEFINED);
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// How long a page waits for another page of the same holder to let go.
const LOCK_WAIT_MS: u32 = 5000;

/// Holds the holder's Web Lock (`navigator.locks`) for as long as this
/// page lives: two pages driving one holder would each keep a mirror of
/// the store and could reserve, and seal under, the same counters. A page
/// being reloaded lets go when it is torn down; the new one waits for that
/// (up to 5 s). `Ok(false)`: this runtime has no Web Locks (Node), so
/// nothing is held.
async fn hold_exclusively(name: &str) -> Result<bool, WebError> {
    let global = js_sys::global();
    let locks = Reflect::get(&global, &JsValue::from_str("navigator"))
        .ok()
        .filter(|navigator| !navigator.is_undefined())
        .and_then(|navigator| Reflect::get(&navigator, &JsValue::from_str("locks")).ok())
        .filter(|locks| !locks.is_undefined() && !locks.is_null());
    let Some(locks) = locks else {
        return Ok(false);
    };
    let environment = |what: &str| WebError::new(ErrorKind::Environment, what.to_owned());
    let request = Reflect::get(&locks, &JsValue::from_str("request"))
        .ok()
        .and_then(|request| request.dyn_into::<Function>().ok())
        .ok_or_else(|| environment("navigator.locks has no request()"))?;
    let options = Object::new();
    if let Some(timeout) = Reflect::get(&global, &JsValue::from_str("AbortSignal"))
        .ok()
        .and_then(|signal| {
            let timeout = Reflect::get(&signal, &JsValue::from_str("timeout")).ok()?;
            timeout
                .dyn_into::<Function>()
                .ok()?
                .call1(&signal, &JsValue::from(LOCK_WAIT_MS))
                .ok()
        })
    {
        let _ = Reflect::set(&options, &JsValue::from_str("signal"), &timeout);
    }
    let lock_name = JsValue::from_str(&format!("confidant-web:{name}"));
    let acquired = js_sys::Promise::new(&mut |resolve: Function, reject: Function| {
        // Called once the lock is granted; the promise it returns never
        // settles, so the lock is held until the page goes away. (The
        // closure lives as long, by design.)
        let granted = Closure::once_into_js(move |_lock: JsValue| -> JsValue {
            let _ = resolve.call0(&JsValue::UNDEFINED);
            js_sys::Promise::new(&mut |_, _| {}).into()
        });
        match request.call3(&locks, &lock_name, &options, &granted) {
            Ok(pending) => {
                let refused = Closure::<dyn FnMut(JsValue)>::new(move |error: JsValue| {
                    let _ = reject.call1(&JsValue::UNDEFINED, &error);
                });
                if let Ok(pending) = pending.dyn_into::<js_sys::Promise>() {
                    let _ = pending.catch(&refused);
                }
                // One small handler per opened holder, kept for the page's
                // life as the lock is.
                refused.forget();
            }
            Err(error) => {
                let _ = reject.call1(&JsValue::UNDEFINED, &error);
            }
        }
    });
    wasm_bindgen_futures::JsFuture::from(acquired)
        .await
        .map(|_| true)
        .map_err(|_| {
            WebError::new(
                ErrorKind::Environment,
                "this holder is open in another tab or window (its Web Lock is held); close it first",
            )
        })
}

impl State {
    /// Commits `batch` (and the page's `app` changes) in one IndexedDB
    /// transaction; the mirror takes it only once that completed.
    async fn commit(
        &mut self,
        batch: WriteBatch,
        app: Vec<AppChange>,
    ) -> Result<Range<u64>, StoreError> {
        let staged = self.mirror.stage(batch)?;
        let written = self.db.commit(&staged.changes, &app).await;
        let committed = self.mirror.settle(staged, written.is_ok());
        if let Err(error) = written {
            return Err(StoreError::Io(error.message));
        }
        for change in app {
            match change {
                AppChange::PutText(key, text) => {
                    self.app.insert(key, text);
                }
                AppChange::PutBytes(..) => {}
            }
        }
        committed.map(|committed| committed.inbox)
    }

    fn transport(&self) -> Result<Rc<Transport>, WebError> {
        self.transport.clone().ok_or_else(|| {
            WebError::new(
                ErrorKind::Protocol,
                "no connector yet: accept an invitation first",
            )
        })
    }

    /// The connection's engine, loaded from the mirror if it is not in
    /// memory (and the effects of loading it carried out).
    async fn connection(&mut self, id: &ConnectionId, steps: &Steps) -> Result<(), WebError> {
        if self.connections.contains_key(id) {
            return Ok(());
        }
        let (connection, effects) =
            Connection::load(Arc::clone(&self.context), self.mirror.store(), id.clone())?;
        self.connections.insert(id.clone(), connection);
        let events = self.drive(id, effects, steps).await?;
        steps.report(events);
        Ok(())
    }

    /// Carries out `effects` of connection `id`: commits in order (each
    /// reported to the engine, which may ask for more), then envelopes,
    /// acknowledgements and hand-backs. Returns the events to tell, and the
    /// request's outcome inside `Ok` (or the transport's failure).
    async fn drive(
        &mut self,
        id: &ConnectionId,
        mut effects: Effects,
        steps: &Steps,
    ) -> Result<DriveOutcome, WebError> {
        let mut out = DriveOutcome::default();
        let mut ack = Vec::new();
        let mut release = Vec::new();
        loop {
            out.send.append(&mut effects.send);
            out.events.append(&mut effects.events);
            ack.append(&mut effects.ack);
            release.append(&mut effects.release);
            if effects.outcome.is_some() {
                out.outcome = effects.outcome.take();
            }
            if effects.commits.is_empty() {
                break;
            }
            let commit = effects.commits.remove(0);
            let rest = std::mem::take(&mut effects.commits);
            let outcome = self.commit(commit.batch, Vec::new()).await;
            if commit.kind == CommitKind::Round {
                match &outcome {
                    Ok(numbers) => {
                        ack.extend(commit.acknowledge);
                        out.events
                            .extend(Report::publish(commit.report, Some(numbers.clone())));
                    }
                    Err(_) => {
                        release.extend(commit.acknowledge);
                        out.events.extend(Report::publish(commit.report, None));
                    }
                }
            }
            if let Err(error) = &outcome {
                steps.say(&format!("a commit of connection {id} failed: {error}"));
            }
            let Some(connection) = self.connections.get_mut(id) else {
                break;
            };
            let mut more = connection.committed(self.mirror.store(), commit.id, outcome);
            let mut queued = rest;
            queued.append(&mut more.commits);
            more.commits = queued;
            effects = more;
        }
        if self.connections.get(id).is_some_and(Connection::is_stale) {
            // Memory may be ahead of the store: load it again next time.
            self.connections.remove(id);
        }
        let transport = self.transport.clone();
        if let Some(transport) = &transport {
            for outbound in std::mem::take(&mut out.send) {
                let sent = transport.send(id.as_str(), outbound.envelope()).await;
                match (sent, &outbound) {
                    (Ok(_), _) => {}
                    (Err(error), Outbound::Message(_)) => out.failed = Some(error),
                    (Err(error), Outbound::Control(_)) => {
                        steps.say(&format!(
                            "could not hand a protocol step of connection {id} to the connector: {error}"
                        ));
                    }
                }
            }
            let ids: Vec<u64> = ack.iter().map(|DeliveryId(id)| *id).collect();
            if let Err(error) = transport.acknowledge(ids).await {
                // They come again and are refused as replays, then
                // acknowledged: nothing is delivered twice.
                steps.say(&format!("could not acknowledge to the connector: {error}"));
            }
        } else if out
            .send
            .iter()
            .any(|outbound| matches!(outbound, Outbound::Message(_)))
        {
            // Sealed, but no connector to hand them to: the request fails
            // (protocol steps are sent again at the next start).
            out.failed = Some(WebError::new(
                ErrorKind::Connector,
                "the connector is not reachable now; try again",
            ));
        }
        if !release.is_empty() {
            self.reread = true;
        }
        Ok(out)
    }

    /// Stores a message the engine reported (a credential if it is JSON)
    /// together with its inbox entry's deletion, then answers it.
    async fn on_message(
        &mut self,
        connection_id: &ConnectionId,
        sequence: u64,
        plaintext: &[u8],
        steps: &Steps,
    ) -> Result<(), WebError> {
        let mut batch = WriteBatch::new();
        batch.delete_inbox(sequence);
        match credentials::parse_credential(plaintext) {
            Ok(json) => {
                let credential = Credential {
                    connection_id: connection_id.as_str().to_owned(),
                    sequence,
                    json,
                    replied: false,
                };
                self.commit(
                    batch,
                    vec![AppChange::PutText(credential.key(), credential.encode())],
                )
                .await?;
                steps.say(&format!(
                    "credential received on connection {connection_id} (message #{sequence}): {}",
                    credential.json
                ));
                steps.say(&format!("acknowledged message #{sequence}"));
                self.reply(&credential, steps).await
            }
            Err(reason) => {
                self.commit(batch, Vec::new()).await?;
                steps.say(&format!(
                    "message #{sequence} on connection {connection_id} is not a JSON credential ({reason}); ignored"
                ));
                steps.say(&format!("acknowledged message #{sequence}"));
                Ok(())
            }
        }
    }

    /// Sends the answer owed for `credential`, and records that the
    /// connector has it.
    async fn reply(&mut self, credential: &Credential, steps: &Steps) -> Result<(), WebError> {
        let id = ConnectionId::new(credential.connection_id.clone())
            .map_err(|error| WebError::new(ErrorKind::Storage, error.to_string()))?;
        let text = credential.reply();
        self.send(&id, vec![text.clone().into_bytes()], steps)
            .await?;
        let replied = Credential {
            replied: true,
            ..credential.clone()
        };
        self.commit(
            WriteBatch::new(),
            vec![AppChange::PutText(replied.key(), replied.encode())],
        )
        .await?;
        steps.say(&format!("replied on connection {id}: {text}"));
        Ok(())
    }

    /// Seals `messages` on connection `id` and hands them to the connector.
    async fn send(
        &mut self,
        id: &ConnectionId,
        messages: Vec<Vec<u8>>,
        steps: &Steps,
    ) -> Result<(), WebError> {
        self.connection(id, steps).await?;
        let connection = self.connections.get_mut(id).ok_or_else(|| {
            WebError::new(
                ErrorKind::Protocol,
                format!("connection {id} could not be loaded"),
            )
        })?;
        let effects = connection.send(messages);
        let mut out = self.drive(id, effects, steps).await?;
        let failed = out.failed.take();
        let outcome = out.outcome.take();
        steps.report(out);
        if let Some(error) = failed {
            return Err(error);
        }
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(error.into()),
            None => Err(WebError::new(
                ErrorKind::Protocol,
                "the send did not finish",
            )),
        }
    }

    /// One message from the connector's mailbox.
    async fn received(
        &mut self,
        message: crate::proto::ReceivedMessage,
        steps: &Steps,
    ) -> Result<(), WebError> {
        let transport = self.transport()?;
        let delivery = DeliveryId(message.id);
        let Ok(id) = ConnectionId::new(message.connection_id.clone()) else {
            steps.say("the connector delivered a message with a malformed connection id; dropped");
            transport.acknowledge(vec![message.id]).await?;
            return Ok(());
        };
        let envelope = match message.content {
            Some(Content::Envelope(envelope)) => envelope,
            Some(Content::ConnectionRevoked(_)) => {
                steps.say(&format!("connection {id} was revoked at the connector"));
                transport.acknowledge(vec![message.id]).await?;
                return Ok(());
            }
            // A holder creates no invitations: nobody joins its tokens.
            Some(Content::ConnectionAdded(_)) | None => {
                transport.acknowledge(vec![message.id]).await?;
                return Ok(());
            }
        };
        if ConnectionRecord::load(self.mirror.store(), &id)?.is_none() {
            // Not (yet) a connection of this holder: perhaps the bundle of
            // a join whose record a reload kept from being stored. Left at
            // the connector, it comes again once the invitation is
            // accepted again (the join's retry answers the same id).
            steps.say(&format!(
                "a message for connection {id}, which this holder does not know (yet), left at the connector"
            ));
            self.unknown.insert(id);
            return Ok(());
        }
        self.connection(&id, steps).await?;
        let Some(connection) = self.connections.get_mut(&id) else {
            return Ok(());
        };
        let effects = connection.deliver(
            self.mirror.store(),
            vec![(delivery, Item::Envelope(envelope))],
        );
        let out = self.drive(&id, effects, steps).await?;
        self.handle(out, steps).await
    }

    /// Tells the events of `out`; stores and answers its messages.
    async fn handle(&mut self, out: DriveOutcome, steps: &Steps) -> Result<(), WebError> {
        for event in out.events {
            match event {
                Event::Message(message) => {
                    self.on_message(
                        &message.connection_id,
                        message.sequence,
                        &message.plaintext,
                        steps,
                    )
                    .await?;
                }
                other => steps.event(&other),
            }
        }
        Ok(())
    }
}

/// What driving one input gave.
#[derive(Default)]
struct DriveOutcome {
    send: Vec<Outbound>,
    events: Vec<Event>,
    outcome: Option<Result<(), confidant_engine::EngineError>>,
    /// An application message the connector did not take.
    failed: Option<WebError>,
}

/// The page's step callback.
struct Steps(Function);

impl Steps {
    fn say(&self, line: &str) {
        let _ = self.0.call1(&JsValue::UNDEFINED, &JsValue::from_str(line));
    }

    fn event(&self, event: &Event) {
        match event {
            Event::Connected {
                connection_id,
                peer_identity,
                reset,
                post_quantum,
                ..
            } => self.say(&format!(
                "connected: connection {connection_id}, issuer identity key {} ({} done{})",
                hex::encode(peer_identity),
                if *post_quantum {
                    "post-quantum X3DH + ML-KEM-768"
                } else {
                    "classical X3DH"
                },
                if *reset { ", session replaced" } else { "" }
            )),
            Event::HandshakeFailed {
                connection_id,
                error,
            } => self.say(&format!(
                "REFUSED bundle on connection {connection_id}: {error}"
            )),
            Event::DeliveryDropped {
                connection_id,
                reason,
            } => self.say(&format!(
                "dropped a delivery on connection {connection_id}: {reason}"
            )),
            Event::Joined { connection_id } => {
                self.say(&format!("joined: connection {connection_id}"))
            }
            Event::Message(message) => self.say(&format!(
                "message #{} on connection {} (kept in the inbox)",
                message.sequence, message.connection_id
            )),
            other => self.say(&format!("event: {other:?}")),
        }
    }

    /// Tells the events of a step that cannot carry messages (a send, a
    /// load); a message among them stays in the inbox and is reported at
    /// the next start.
    fn report(&self, out: DriveOutcome) {
        for event in &out.events {
            self.event(event);
        }
    }
}

#[wasm_bindgen]
impl WebHolder {
    /// Opens the holder kept in IndexedDB database `name` (created with a
    /// new identity on first use). `onStep` is called with one line per
    /// step, as the terminal holder prints them. `atRestKey` (32 bytes),
    /// if given, seals the database's secret values at rest (see
    /// `docs/web.md` for how a page can keep such a key); a database
    /// sealed under one key opens only with it.
    #[wasm_bindgen(js_name = open)]
    pub async fn open(
        name: String,
        on_step: Function,
        at_rest_key: Option<Vec<u8>>,
    ) -> Result<WebHolder, WebError> {
        let steps = Steps(on_step.clone());
        let kek = match at_rest_key.map(Zeroizing::new) {
            None => None,
            Some(bytes) => Some(KeyEncryptionKey::from_bytes(
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    WebError::new(ErrorKind::Environment, "an at-rest key is 32 bytes")
                })?,
            )),
        };
        if !hold_exclusively(&name).await? {
            steps.say("no Web Locks here: never open this holder in two places at once");
        }
        let db = Database::open(&name, kek).await?;
        let loaded = db.load().await?;
        let fresh = loaded.records.is_empty();
        let mut mirror = Mirror::load(loaded.records)?;
        // Unix seconds from the page's clock, for the signed pre-keys'
        // rotation (at each open).
        let now_seconds = (js_sys::Date::now() / 1000.0) as u64;
        let new_keys = Some(crate::key_changes(mirror.store(), now_seconds)?)
            .filter(|batch| !batch.is_empty());
        let mut app: BTreeMap<String, String> = loaded.text.into_iter().collect();
        let mut relay_seed = loaded
            .bytes
            .iter()
            .find(|(key, _)| key == RELAY_KEY)
            .and_then(|(_, bytes)| <[u8; 32]>::try_from(bytes.as_slice()).ok())
            .map(Zeroizing::new);
        if new_keys.is_some() || relay_seed.is_none() {
            // First start: the keys (and the schema version of a new
            // store) in one transaction.
            let mut seed = Zeroizing::new([0u8; 32]);
            if let Some(existing) = &relay_seed {
                *seed = **existing;
            } else {
                getrandom::fill(seed.as_mut_slice()).map_err(|error| {
                    WebError::new(ErrorKind::Environment, format!("no randomness: {error}"))
                })?;
            }
            let staged = mirror.stage(new_keys.unwrap_or_default())?;
            let mut changes: Vec<Change> = if fresh { mirror.records()? } else { Vec::new() };
            changes.extend(staged.changes.iter().cloned());
            let written = db
                .commit(
                    &changes,
                    &[AppChange::PutBytes(
                        RELAY_KEY.to_owned(),
                        Zeroizing::new(seed.to_vec()),
                    )],
                )
                .await;
            mirror.settle(staged, written.is_ok())?;
            written?;
            relay_seed = Some(seed);
        }
        let relay_seed =
            relay_seed.ok_or_else(|| WebError::new(ErrorKind::Internal, "no relay key"))?;
        let context = Arc::new(engine_context(mirror.store())?);
        let identity_key = hex::encode(context.identity().public_key().to_bytes());
        steps.say(&format!("holder identity key: {identity_key}"));
        let transport = match app.get(CONNECTOR_URL) {
            Some(url) => match Transport::connect(url, &relay_seed).await {
                Ok(transport) => Some(Rc::new(transport)),
                Err(error) => {
                    steps.say(&format!("could not reach the connector at {url}: {error}"));
                    None
                }
            },
            None => None,
        };
        app.retain(|key, _| key != RELAY_KEY);
        let state = State {
            db,
            mirror,
            app,
            context,
            relay_seed,
            transport,
            connections: HashMap::new(),
            reread: false,
            unknown: std::collections::HashSet::new(),
        };
        Ok(WebHolder {
            inner: Rc::new(Inner {
                state: Mutex::new(state),
                on_step,
                receiving: Cell::new(false),
                stopped: Cell::new(false),
            }),
            identity_key,
        })
    }

    /// This holder's identity key (hex): what the issuer sees.
    #[wasm_bindgen(getter, js_name = identityKey)]
    pub fn identity_key(&self) -> String {
        self.identity_key.clone()
    }

    /// Accepts an issuer's invitation (its text): checks it, joins the
    /// connection at the invitation's connector, stores the connection
    /// (waiting for the issuer's bundle) and starts receiving. Returns the
    /// connection id. X3DH runs when the bundle arrives.
    #[wasm_bindgen(js_name = acceptInvitation)]
    pub async fn accept_invitation(
        &self,
        text: String,
        greeting: Option<String>,
    ) -> Result<String, WebError> {
        let steps = Steps(self.inner.on_step.clone());
        let invitation = Invitation::from_text(&text)?;
        confidant_x3dh::IdentityPublicKey::from_bytes(&invitation.identity_key).map_err(
            |error| {
                WebError::new(
                    ErrorKind::Invitation,
                    format!("the invitation's identity key: {error}"),
                )
            },
        )?;
        steps.say(&format!(
            "invitation: connector {}, issuer identity key {}",
            invitation.relay,
            hex::encode(invitation.identity_key)
        ));
        {
            let mut state = self.inner.state.lock().await;
            let accepted = ConnectionRecord::all(state.mirror.store())?
                .into_iter()
                .any(|(_, record)| {
                    record.invitation_token.as_deref() == Some(invitation.token.as_str())
                });
            if accepted {
                return Err(WebError::new(
                    ErrorKind::Invitation,
                    "this invitation was accepted already",
                ));
            }
            let transport =
                Rc::new(Transport::connect(&invitation.relay, &state.relay_seed).await?);
            let (_, used) = transport.token_info(&invitation.token).await?;
            if used {
                // Ours, if a reload came between the join and its record
                // (the retry answers the same connection); anyone else's is
                // refused by the join.
                steps.say("the token was used already: joining again");
            }
            let connection_id = transport.join(&invitation.token).await?;
            let id = ConnectionId::new(connection_id).map_err(|error| {
                WebError::new(
                    ErrorKind::Connector,
                    format!("the connector's connection id: {error}"),
                )
            })?;
            steps.say(&format!("joined connection {id}"));
            let greeting = greeting.unwrap_or_else(|| "hello from the browser holder".into());
            let batch = confidant_engine::setup::joined(
                &id,
                invitation.identity_key,
                &invitation.token,
                greeting.into_bytes(),
                invitation.hybrid,
            )?;
            state.transport = Some(transport);
            match state
                .commit(
                    batch,
                    vec![AppChange::PutText(
                        CONNECTOR_URL.to_owned(),
                        invitation.relay.clone(),
                    )],
                )
                .await
            {
                Ok(_) => {}
                Err(StoreError::AlreadyExists { .. }) => {
                    return Err(WebError::new(
                        ErrorKind::Connector,
                        format!(
                            "the connector answered with the id of an existing connection ({id}); refused"
                        ),
                    ));
                }
                Err(error) => return Err(error.into()),
            }
            if state.unknown.remove(&id) {
                // Its messages came before it was stored (a reload between
                // the join and its record) and were left at the connector:
                // take them now.
                let transport = state.transport()?;
                for message in transport.page(0, 1000).await? {
                    if message.connection_id == id.as_str() {
                        state.received(message, &steps).await?;
                    }
                }
            }
            drop(state);
            self.start(None);
            Ok(id.as_str().to_owned())
        }
    }

    /// Starts receiving (if a connector is known and it is not running):
    /// sends again what a reload kept from leaving, reports the inbox
    /// again, sends owed answers, then takes deliveries from the
    /// connector's stream (`GetMessageStream`), falling back to polling its
    /// pages (`GetMessagesPaginated`) when the stream cannot be opened.
    /// With `poll` true it only polls (for pages behind proxies that break
    /// streamed responses).
    pub fn start(&self, poll: Option<bool>) {
        if self.inner.receiving.replace(true) {
            return;
        }
        self.inner.stopped.set(false);
        let inner = Rc::clone(&self.inner);
        let poll = poll.unwrap_or(false);
        wasm_bindgen_futures::spawn_local(async move {
            let steps = Steps(inner.on_step.clone());
            if let Err(error) = receive(&inner, &steps, poll).await {
                steps.say(&format!("receiving stopped: {error}"));
            }
            inner.receiving.set(false);
        });
    }

    /// Stops receiving (after the delivery in progress).
    pub fn stop(&self) {
        self.inner.stopped.set(true);
    }

    /// The stored credentials, oldest first per connection.
    #[wasm_bindgen(unchecked_return_type = "StoredCredential[]")]
    pub async fn credentials(&self) -> Result<JsValue, WebError> {
        let state = self.inner.state.lock().await;
        let list = Array::new();
        for (key, text) in state.app.range(CREDENTIAL_PREFIX.to_owned()..) {
            if !key.starts_with(CREDENTIAL_PREFIX) {
                break;
            }
            let credential = Credential::decode(text)?;
            #[allow(clippy::cast_precision_loss)]
            list.push(&js_object(&[
                ("connectionId", credential.connection_id.as_str().into()),
                ("sequence", JsValue::from_f64(credential.sequence as f64)),
                ("json", credential.json.as_str().into()),
                ("replied", credential.replied.into()),
            ]));
        }
        Ok(list.into())
    }

    /// The holder's connections and their states.
    #[wasm_bindgen(unchecked_return_type = "HolderConnection[]")]
    pub async fn connections(&self) -> Result<JsValue, WebError> {
        let state = self.inner.state.lock().await;
        let list = Array::new();
        for (id, record) in ConnectionRecord::all(state.mirror.store())? {
            let name = match ConnectionState::of(&record) {
                ConnectionState::AwaitingBundle => "AwaitingBundle",
                ConnectionState::AwaitingInitialMessage => "AwaitingInitialMessage",
                ConnectionState::Established => "Established",
                ConnectionState::ResetRequested => "ResetRequested",
                _ => "Unknown",
            };
            list.push(&js_object(&[
                ("connectionId", id.as_str().into()),
                ("state", name.into()),
                (
                    "peerIdentity",
                    record
                        .peer_identity
                        .map_or(JsValue::UNDEFINED, |key| hex::encode(key).into()),
                ),
            ]));
        }
        Ok(list.into())
    }

    /// Seals `text` on connection `connectionId` and hands it to the
    /// connector; resolves once the connector has it.
    pub async fn send(&self, connection_id: String, text: String) -> Result<(), WebError> {
        let steps = Steps(self.inner.on_step.clone());
        let id = ConnectionId::new(connection_id)
            .map_err(|error| WebError::new(ErrorKind::Protocol, error.to_string()))?;
        let mut state = self.inner.state.lock().await;
        state.send(&id, vec![text.into_bytes()], &steps).await
    }

    /// How many messages wait for this holder at the connector.
    pub async fn waiting(&self) -> Result<u32, WebError> {
        let transport = self.inner.state.lock().await.transport()?;
        let waiting = transport.page(0, 1000).await?;
        Ok(u32::try_from(waiting.len()).unwrap_or(u32::MAX))
    }

    /// Times seal and open of `messages` messages of `bytes` bytes with the
    /// default suite in this page (see `docs/web.md`, "Measured").
    #[wasm_bindgen(js_name = timeSealOpen, unchecked_return_type = "SealOpenTiming")]
    pub fn time_seal_open(bytes: u32, messages: u32) -> Result<JsValue, WebError> {
        let performance = Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))
            .ok()
            .and_then(|performance| performance.dyn_into::<web_sys::Performance>().ok())
            .ok_or_else(|| WebError::new(ErrorKind::Environment, "no performance.now()"))?;
        let timing = crate::bench::seal_open(bytes as usize, messages, || performance.now())?;
        Ok(js_object(&[
            ("suite", timing.suite.into()),
            ("bytes", bytes.into()),
            ("messages", messages.into()),
            ("sealNs", timing.seal_ns.into()),
            ("openNs", timing.open_ns.into()),
        ]))
    }
}

/// The receive loop: resume, then the stream (or pages) until stopped.
async fn receive(inner: &Rc<Inner>, steps: &Steps, poll: bool) -> Result<(), WebError> {
    let transport = loop {
        let mut state = inner.state.lock().await;
        if let Some(transport) = state.transport.clone() {
            resume(&mut state, steps).await?;
            break transport;
        }
        let Some(url) = state.app.get(CONNECTOR_URL).cloned() else {
            steps.say("no connector yet: accept an invitation");
            return Ok(());
        };
        // The connector was not reachable when the page opened: try again.
        match Transport::connect(&url, &state.relay_seed).await {
            Ok(transport) => state.transport = Some(Rc::new(transport)),
            Err(error) => {
                drop(state);
                steps.say(&format!(
                    "could not reach the connector at {url}: {error}; trying again"
                ));
                if inner.stopped.get() {
                    return Ok(());
                }
                sleep(POLL_MS * 3).await;
            }
        }
    };
    let mut cursor = 0u64;
    let mut announced = false;
    while !inner.stopped.get() {
        let stream = if poll {
            None
        } else {
            match transport.stream(cursor).await {
                Ok(stream) => Some(stream),
                Err(error) => {
                    steps.say(&format!("{error}; polling GetMessagesPaginated instead"));
                    None
                }
            }
        };
        if let Some(mut stream) = stream {
            steps.say("waiting for the issuer (live: GetMessageStream)");
            loop {
                if inner.stopped.get() {
                    return Ok(());
                }
                match stream.message().await {
                    Ok(Some(message)) => {
                        cursor = cursor.max(message.id);
                        if !deliver(inner, message, steps).await {
                            cursor = 0;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        steps.say(&format!(
                            "the stream ended: {}",
                            crate::transport::connector_error("GetMessageStream", &status)
                        ));
                        break;
                    }
                }
            }
        } else {
            if !announced {
                steps.say("waiting for the issuer (polling GetMessagesPaginated)");
                announced = true;
            }
            match transport.page(cursor, PAGE_LIMIT).await {
                Ok(messages) => {
                    let full = messages.len() >= PAGE_LIMIT as usize;
                    for message in messages {
                        cursor = cursor.max(message.id);
                        if !deliver(inner, message, steps).await {
                            cursor = 0;
                            break;
                        }
                    }
                    if full {
                        // More wait: ask again at once.
                        continue;
                    }
                }
                Err(error) => steps.say(&format!("{error}")),
            }
        }
        sleep(POLL_MS).await;
    }
    Ok(())
}

/// Delivers one message under the lock; `false` when the mailbox must be
/// read again from the start (a delivery was handed back, or failed: its
/// connection is loaded again from the store and the message comes again).
async fn deliver(inner: &Rc<Inner>, message: crate::proto::ReceivedMessage, steps: &Steps) -> bool {
    let mut state = inner.state.lock().await;
    let connection = ConnectionId::new(message.connection_id.clone()).ok();
    if let Err(error) = state.received(message, steps).await {
        steps.say(&format!("a delivery failed ({error}); it comes again"));
        if let Some(connection) = connection {
            state.connections.remove(&connection);
        }
        return false;
    }
    !std::mem::take(&mut state.reread)
}

/// At start: what a reload kept from leaving, the inbox again, owed
/// answers.
async fn resume(state: &mut State, steps: &Steps) -> Result<(), WebError> {
    let transport = state.transport()?;
    let resumed = confidant_engine::setup::resume(&state.context, state.mirror.store())?;
    for (id, envelope) in resumed.again {
        if let Err(error) = transport.send(id.as_str(), &envelope).await {
            steps.say(&format!("could not send again on connection {id}: {error}"));
        }
    }
    for entry in resumed.inbox {
        state
            .on_message(
                &entry.connection_id,
                entry.sequence,
                &entry.plaintext,
                steps,
            )
            .await?;
    }
    let owed: Vec<Credential> = state
        .app
        .iter()
        .filter(|(key, _)| key.starts_with(CREDENTIAL_PREFIX))
        .filter_map(|(_, text)| Credential::decode(text).ok())
        .filter(|credential| !credential.replied)
        .collect();
    for credential in owed {
        if let Err(error) = state.reply(&credential, steps).await {
            steps.say(&format!(
                "could not answer on connection {}: {error}",
                credential.connection_id
            ));
        }
    }
    Ok(())
}
