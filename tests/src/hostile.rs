//! A hostile relay for the end-to-end tests: a gRPC `Connector` that the
//! parties talk to instead of the real connector. It forwards every call to
//! the real connector (the upstream) with the caller's signature metadata
//! unchanged — requests are signed by the parties, so it cannot alter them —
//! and misbehaves on what it hands back from `GetMessageStream` and
//! `GetMessagesPaginated`, according to a [`Policy`]:
//!
//! - [`Policy::SwapIdentity`]: every pre-key bundle is replaced by a bundle
//!   of an attacker's identity (validly signed by that identity), as a relay
//!   would do to sit in the middle of the key agreement.
//! - [`Policy::Chaos`]: stream items are dropped, duplicated, reordered and
//!   replayed (earlier items handed out again), with a seeded random
//!   generator; and every stream a party opens after its first starts with
//!   a replay of everything that party was ever handed, newest first (so a
//!   reconnecting transport or a restarted party sees all its old envelopes
//!   again, out of order). The
//!   first three items of each party are dropped, duplicated and held back,
//!   in that order, so each kind of misbehaviour happens in every run
//!   whatever the random draws. A drop also **closes the stream** (after
//!   handing out what it held back): the client's transport reconnects from
//!   the last id it received, so the dropped item comes again. A relay that
//!   silently dropped an item in the middle of a live stream would hide it
//!   from that client until the client restarts (the transport's cursor has
//!   moved past it); that is a liveness attack no client can tell from
//!   silence, and not what these tests are about.
//!
//! The relay runs in-process on its own tokio runtime and counts what it
//! did ([`Stats`]) and records every envelope the parties sent through it,
//! so a test can check that its misbehaviour actually happened.

use confidant_connector::auth::{NONCE_HEADER, PUBLIC_KEY_HEADER, SIGNATURE_HEADER};
use confidant_connector::proto::connector_client::ConnectorClient;
use confidant_connector::proto::connector_server::{Connector, ConnectorServer};
use confidant_connector::proto::{self, received_message};
use confidant_core::wire::{self, envelope::Body};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// How long a held-back (reordered) item waits for a later one to overtake
/// it before it is handed out anyway.
const HOLD: Duration = Duration::from_millis(250);

/// Earlier items kept per party for replays.
const HISTORY: usize = 512;

/// How the relay misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Forwards everything unchanged.
    Honest,
    /// Replaces every pre-key bundle with one of the attacker's identity.
    SwapIdentity,
    /// Drops, duplicates, reorders and replays stream items.
    Chaos(Chaos),
}

/// The odds of [`Policy::Chaos`], per mille of items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chaos {
    /// Seed of the random generator.
    pub seed: u64,
    /// An item is dropped (and the stream closed).
    pub drop: u64,
    /// An item is handed out twice in a row.
    pub duplicate: u64,
    /// An item is held back until a later one has been handed out (or
    /// until a short while has passed).
    pub hold: u64,
    /// After an item, an earlier item of the same party is handed out
    /// again.
    pub replay: u64,
}

/// What the relay did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bundles replaced with the attacker's.
    pub bundles_swapped: AtomicU64,
    /// Items dropped.
    pub dropped: AtomicU64,
    /// Items handed out twice.
    pub duplicated: AtomicU64,
    /// Items held back (handed out after a later one, or after a pause).
    pub held_back: AtomicU64,
    /// Items handed out after a later one (a held-back item overtaken, or
    /// a replay after a newer replay).
    pub reordered: AtomicU64,
    /// Earlier items handed out again.
    pub replayed: AtomicU64,
    /// Streams opened by the parties.
    pub streams: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Bundles replaced with the attacker's.
    pub bundles_swapped: u64,
    /// Items dropped.
    pub dropped: u64,
    /// Items handed out twice.
    pub duplicated: u64,
    /// Items held back (handed out after a later one, or after a pause).
    pub held_back: u64,
    /// Items handed out after a later one (a held-back item overtaken, or
    /// a replay after a newer replay).
    pub reordered: u64,
    /// Earlier items handed out again.
    pub replayed: u64,
    /// Streams opened by the parties.
    pub streams: u64,
}

impl Stats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            bundles_swapped: self.bundles_swapped.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            held_back: self.held_back.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
        }
    }
}

/// An envelope a party sent through the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEnvelope {
    /// The sender's key at the connector (its metadata value, base64url).
    pub sender: String,
    /// The connection.
    pub connection_id: String,
    /// The envelope's bytes.
    pub envelope: Vec<u8>,
}

impl SentEnvelope {
    /// The decoded envelope body, if it decodes.
    pub fn body(&self) -> Option<Body> {
        wire::decode_envelope(&self.envelope, wire::DEFAULT_MAX_ENVELOPE_LEN).ok()
    }
}

/// splitmix64.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What happens to one item under [`Policy::Chaos`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pass,
    Drop,
    Duplicate,
    Hold,
}

struct Shared {
    upstream: ConnectorClient<Channel>,
    policy: Policy,
    attacker_bundle: wire::PreKeyBundle,
    attacker_identity: [u8; 32],
    random: Mutex<Random>,
    history: Mutex<HashMap<String, Vec<proto::ReceivedMessage>>>,
    /// Stream items seen per party (for the forced first actions).
    seen: Mutex<HashMap<String, u64>>,
    /// Streams opened per party.
    opened: Mutex<HashMap<String, u64>>,
    sent: Mutex<Vec<SentEnvelope>>,
    stats: Stats,
}

impl Shared {
    fn chaos(&self) -> Option<Chaos> {
        match self.policy {
            Policy::Chaos(chaos) => Some(chaos),
            _ => None,
        }
    }

    /// What to do with the next item: for the first three stream items of
    /// `party` (when `forced`) a drop, a duplicate and a hold; then a
    /// random draw.
    fn action(&self, party: &str, forced: bool) -> Action {
        let Some(chaos) = self.chaos() else {
            return Action::Pass;
        };
        if forced {
            let mut seen = lock(&self.seen);
            let count = seen.entry(party.to_owned()).or_default();
            *count += 1;
            match *count {
                1 => return Action::Drop,
                2 => return Action::Duplicate,
                3 => return Action::Hold,
                _ => {}
            }
        }
        let roll = lock(&self.random).below(1000);
        if roll < chaos.drop {
            Action::Drop
        } else if roll < chaos.drop + chaos.duplicate {
            Action::Duplicate
        } else if roll < chaos.drop + chaos.duplicate + chaos.hold {
            Action::Hold
        } else {
            Action::Pass
        }
    }

    /// Everything `party` was handed so far, if this is not the first
    /// stream it opens (under [`Policy::Chaos`]).
    fn replay_on_open(&self, party: &str) -> Vec<proto::ReceivedMessage> {
        if self.chaos().is_none() {
            return Vec::new();
        }
        let mut opened = lock(&self.opened);
        let count = opened.entry(party.to_owned()).or_default();
        *count += 1;
        if *count == 1 {
            return Vec::new();
        }
        let mut items = lock(&self.history).get(party).cloned().unwrap_or_default();
        // Newest first: each after one with a higher id.
        items.reverse();
        for (index, _) in items.iter().enumerate() {
            Stats::add(&self.stats.replayed);
            if index > 0 {
                Stats::add(&self.stats.reordered);
            }
        }
        items
    }

    /// An earlier item of `party` to hand out again, sometimes.
    fn replay(&self, party: &str) -> Option<proto::ReceivedMessage> {
        let chaos = self.chaos()?;
        let mut random = lock(&self.random);
        if random.below(1000) >= chaos.replay {
            return None;
        }
        let history = lock(&self.history);
        let items = history.get(party)?;
        let pick = usize::try_from(random.below(items.len() as u64)).ok()?;
        let item = items.get(pick)?.clone();
        Stats::add(&self.stats.replayed);
        Some(item)
    }

    fn remember(&self, party: &str, message: &proto::ReceivedMessage) {
        if self.chaos().is_none() {
            return;
        }
        let mut history = lock(&self.history);
        let items = history.entry(party.to_owned()).or_default();
        if items.len() >= HISTORY {
            items.remove(0);
        }
        items.push(message.clone());
    }

    /// Swaps the bundle in `message` under [`Policy::SwapIdentity`].
    fn tamper(&self, mut message: proto::ReceivedMessage) -> proto::ReceivedMessage {
        if self.policy != Policy::SwapIdentity {
            return message;
        }
        if let Some(received_message::Content::Envelope(envelope)) = &mut message.content
            && let Ok(Body::Bundle(original)) =
                wire::decode_envelope(envelope, wire::DEFAULT_MAX_ENVELOPE_LEN)
        {
            let mut forged = self.attacker_bundle.clone();
            forged.suites = original.suites;
            *envelope = wire::encode_envelope(Body::Bundle(forged));
            Stats::add(&self.stats.bundles_swapped);
        }
        message
    }
}

/// The caller's public key as its metadata carries it.
fn party_of(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get(PUBLIC_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The request to send upstream: the same message with the same signature
/// metadata.
fn forward<T>(request: Request<T>) -> Request<T> {
    let (metadata, _, message) = request.into_parts();
    let mut out = Request::new(message);
    for key in [PUBLIC_KEY_HEADER, NONCE_HEADER, SIGNATURE_HEADER] {
        if let Some(value) = metadata.get(key) {
            out.metadata_mut().insert(key, value.clone());
        }
    }
    out
}

#[derive(Clone)]
struct Service {
    shared: Arc<Shared>,
}

impl Service {
    fn upstream(&self) -> ConnectorClient<Channel> {
        self.shared.upstream.clone()
    }
}

type MessageStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<proto::ReceivedMessage, Status>> + Send>>;

type Sender = mpsc::Sender<Result<proto::ReceivedMessage, Status>>;

/// Hands out `message`; false when the client went away.
async fn emit(sender: &Sender, message: proto::ReceivedMessage) -> bool {
    sender.send(Ok(message)).await.is_ok()
}

/// Relays one upstream stream to one client, misbehaving on the way.
async fn relay_stream(
    shared: Arc<Shared>,
    party: String,
    mut upstream: tonic::Streaming<proto::ReceivedMessage>,
    sender: Sender,
) {
    for again in shared.replay_on_open(&party) {
        if !emit(&sender, again).await {
            return;
        }
    }
    let mut held: Option<proto::ReceivedMessage> = None;
    loop {
        let next = if held.is_some() {
            tokio::select! {
                item = upstream.next() => Some(item),
                () = tokio::time::sleep(HOLD) => None,
                () = sender.closed() => return,
            }
        } else {
            tokio::select! {
                item = upstream.next() => Some(item),
                () = sender.closed() => return,
            }
        };
        let message = match next {
            // Nothing overtook the held item in time.
            None => {
                if let Some(held) = held.take()
                    && !emit(&sender, held).await
                {
                    return;
                }
                continue;
            }
            Some(None) => {
                if let Some(held) = held.take() {
                    emit(&sender, held).await;
                }
                return;
            }
            Some(Some(Err(status))) => {
                if let Some(held) = held.take() {
                    emit(&sender, held).await;
                }
                let _ = sender.send(Err(status)).await;
                return;
            }
            Some(Some(Ok(message))) => shared.tamper(message),
        };
        shared.remember(&party, &message);
        match shared.action(&party, true) {
            Action::Drop => {
                Stats::add(&shared.stats.dropped);
                if let Some(held) = held.take() {
                    emit(&sender, held).await;
                }
                // Closing the stream makes the client reconnect from the
                // last id it got, so the dropped item comes again.
                return;
            }
            Action::Hold if held.is_none() => {
                Stats::add(&shared.stats.held_back);
                held = Some(message);
                continue;
            }
            Action::Duplicate => {
                Stats::add(&shared.stats.duplicated);
                if !emit(&sender, message.clone()).await || !emit(&sender, message).await {
                    return;
                }
            }
            Action::Hold | Action::Pass => {
                if !emit(&sender, message).await {
                    return;
                }
            }
        }
        if let Some(held) = held.take() {
            Stats::add(&shared.stats.reordered);
            if !emit(&sender, held).await {
                return;
            }
        }
        if let Some(again) = shared.replay(&party)
            && !emit(&sender, again).await
        {
            return;
        }
    }
}

#[tonic::async_trait]
impl Connector for Service {
    async fn get_connector_info(
        &self,
        request: Request<proto::GetConnectorInfoRequest>,
    ) -> Result<Response<proto::GetConnectorInfoResponse>, Status> {
        self.upstream().get_connector_info(forward(request)).await
    }

    async fn generate_connection_token(
        &self,
        request: Request<proto::GenerateConnectionTokenRequest>,
    ) -> Result<Response<proto::GenerateConnectionTokenResponse>, Status> {
        self.upstream()
            .generate_connection_token(forward(request))
            .await
    }

    async fn get_connection_token_info(
        &self,
        request: Request<proto::GetConnectionTokenInfoRequest>,
    ) -> Result<Response<proto::GetConnectionTokenInfoResponse>, Status> {
        self.upstream()
            .get_connection_token_info(forward(request))
            .await
    }

    async fn add_connection_from_token(
        &self,
        request: Request<proto::AddConnectionFromTokenRequest>,
    ) -> Result<Response<proto::AddConnectionFromTokenResponse>, Status> {
        self.upstream()
            .add_connection_from_token(forward(request))
            .await
    }

    async fn send_message(
        &self,
        request: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::SendMessageResponse>, Status> {
        let sent = SentEnvelope {
            sender: party_of(request.metadata()),
            connection_id: request.get_ref().connection_id.clone(),
            envelope: request.get_ref().message.clone(),
        };
        let response = self.upstream().send_message(forward(request)).await?;
        lock(&self.shared.sent).push(sent);
        Ok(response)
    }

    async fn send_messages(
        &self,
        _request: Request<proto::SendMessagesRequest>,
    ) -> Result<Response<proto::SendMessagesResponse>, Status> {
        // Clients fall back to SendMessage, whose envelopes are recorded
        // (and tampered with) one by one above.
        Err(Status::unimplemented(
            "the hostile relay forwards single sends only",
        ))
    }

    async fn get_messages_paginated(
        &self,
        request: Request<proto::GetMessagesPaginatedRequest>,
    ) -> Result<Response<proto::GetMessagesPaginatedResponse>, Status> {
        let party = party_of(request.metadata());
        let page = self
            .upstream()
            .get_messages_paginated(forward(request))
            .await?
            .into_inner();
        let shared = &self.shared;
        let mut messages = Vec::with_capacity(page.messages.len());
        let mut held = None;
        for message in page.messages {
            let message = shared.tamper(message);
            shared.remember(&party, &message);
            match shared.action(&party, false) {
                // A page cannot be closed early: a dropped item is simply
                // left out (the next call returns it again).
                Action::Drop => {
                    Stats::add(&shared.stats.dropped);
                    continue;
                }
                Action::Hold if held.is_none() => {
                    Stats::add(&shared.stats.held_back);
                    held = Some(message);
                    continue;
                }
                Action::Duplicate => {
                    Stats::add(&shared.stats.duplicated);
                    messages.push(message.clone());
                    messages.push(message);
                }
                Action::Hold | Action::Pass => messages.push(message),
            }
            if let Some(held) = held.take() {
                Stats::add(&shared.stats.reordered);
                messages.push(held);
            }
            if let Some(again) = shared.replay(&party) {
                messages.push(again);
            }
        }
        messages.extend(held);
        Ok(Response::new(proto::GetMessagesPaginatedResponse {
            messages,
        }))
    }

    type GetMessageStreamStream = MessageStream;

    async fn get_message_stream(
        &self,
        request: Request<proto::GetMessageStreamRequest>,
    ) -> Result<Response<MessageStream>, Status> {
        let party = party_of(request.metadata());
        let upstream = self
            .upstream()
            .get_message_stream(forward(request))
            .await?
            .into_inner();
        Stats::add(&self.shared.stats.streams);
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(relay_stream(
            Arc::clone(&self.shared),
            party,
            upstream,
            sender,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn acknowledge_messages(
        &self,
        request: Request<proto::AcknowledgeMessagesRequest>,
    ) -> Result<Response<proto::AcknowledgeMessagesResponse>, Status> {
        self.upstream().acknowledge_messages(forward(request)).await
    }

    async fn revoke_connection(
        &self,
        request: Request<proto::RevokeConnectionRequest>,
    ) -> Result<Response<proto::RevokeConnectionResponse>, Status> {
        self.upstream().revoke_connection(forward(request)).await
    }
}

/// A running hostile relay. Dropping it stops it.
pub struct HostileRelay {
    url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for HostileRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileRelay")
            .field("url", &self.url)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl HostileRelay {
    /// Starts a relay on a loopback port that forwards to the connector at
    /// `upstream` (a URL such as `http://127.0.0.1:50051`).
    pub fn start(upstream: &str, policy: Policy) -> Result<Self, Box<dyn std::error::Error>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hostile-relay")
            .enable_all()
            .build()?;
        let attacker = IdentityKeyPair::generate();
        let attacker_identity = attacker.public_key().to_bytes();
        let signed_pre_key = SignedPreKey::generate(&attacker, 1);
        let mut keys = ResponderKeys::new(attacker, signed_pre_key)?;
        keys.add_one_time_pre_key(OneTimePreKey::generate(1))?;
        let attacker_bundle = keys.bundle_with_one_time_pre_key(1, &[])?.to_wire();
        let seed = match policy {
            Policy::Chaos(chaos) => chaos.seed,
            _ => 0,
        };
        let channel = Endpoint::from_shared(upstream.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let shared = {
            let _guard = runtime.enter();
            Arc::new(Shared {
                upstream: ConnectorClient::new(channel.connect_lazy()),
                policy,
                attacker_bundle,
                attacker_identity,
                random: Mutex::new(Random(seed)),
                history: Mutex::default(),
                seen: Mutex::default(),
                opened: Mutex::default(),
                sent: Mutex::default(),
                stats: Stats::default(),
            })
        };
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let service = Service {
            shared: Arc::clone(&shared),
        };
        runtime.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .add_service(ConnectorServer::new(service))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                eprintln!("hostile relay: {error}");
            }
        });
        Ok(Self {
            url,
            shared,
            stop: Some(stop),
            runtime: Some(runtime),
        })
    }

    /// Its URL (what the parties connect to).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The attacker's identity key (in every swapped bundle).
    pub fn attacker_identity(&self) -> [u8; 32] {
        self.shared.attacker_identity
    }

    /// What it did so far.
    pub fn counts(&self) -> Counts {
        self.shared.stats.counts()
    }

    /// Every envelope the parties sent through it that the connector
    /// accepted, in order.
    pub fn sent(&self) -> Vec<SentEnvelope> {
        lock(&self.shared.sent).clone()
    }
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
