//! The gRPC service.

use crate::auth::{self, AuthError, PartyKey, Verified};
use crate::mailbox::{BatchEntry, Change, Content, MailboxError, MailboxStore, StoredMessage};
use crate::proto::connector_server::{Connector, ConnectorServer};
use crate::proto::{self, received_message};
use base64::Engine as _;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, watch};
use tonic::{Request, Response, Status};

/// The gRPC path prefix of the connector's methods.
pub const SERVICE_PATH: &str = "/confidant.connector.v1.Connector/";
/// The connector's gRPC service name (as the health service knows it).
pub const SERVICE_NAME: &str = "confidant.connector.v1.Connector";

/// Most messages fetched per read while streaming (and at most
/// [`Limits::max_page_bytes`](crate::Limits) of them).
const STREAM_PAGE: usize = 256;
/// Messages a stream holds ready for its client: few, since each may be as
/// large as the largest envelope.
const STREAM_BUFFER: usize = 4;
/// Room for a request's or answer's fields beside its envelopes, in bytes:
/// the gRPC decoding limit is the largest envelope plus this, the encoding
/// limit the largest page (or envelope) plus this.
pub const FIELD_ROOM: usize = 64 * 1024;
/// Room for each entry of a `SendMessages` request beside its envelope, in
/// bytes: a connection id (at most 255 bytes), a client message id (at
/// most 64) and their tags and lengths. The decoding limit admits
/// `max_batch_bytes` of envelopes, [`FIELD_ROOM`] and this much per entry.
pub const BATCH_ENTRY_ROOM: usize = 384;
/// Most entries of a `SendMessages` request, by default.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 1000;
/// Most bytes of envelopes in a `SendMessages` request, by default: 4 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Bounds of the service that are not the store's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Most message streams one key may hold open at once.
    pub max_streams_per_party: usize,
    /// Most message streams open at once, all keys together.
    pub max_streams: usize,
    /// Most refused requests logged (at `warn`) per second; the others are
    /// counted and the count logged.
    pub refusal_logs_per_second: u64,
    /// Most entries in one `SendMessages` request.
    pub max_batch_messages: usize,
    /// Most bytes of envelopes, added up, in one `SendMessages` request.
    pub max_batch_bytes: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            max_streams_per_party: 16,
            max_streams: 10_000,
            refusal_logs_per_second: 10,
            max_batch_messages: DEFAULT_MAX_BATCH_MESSAGES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// The open streams of each recipient, and what wakes them. An entry lives
/// as long as one of its key's streams: the map holds only keys with a
/// stream open.
struct Streams {
    limits: ServiceLimits,
    open: Mutex<StreamTable>,
}

#[derive(Default)]
struct StreamTable {
    total: usize,
    parties: HashMap<PartyKey, (Arc<Notify>, usize)>,
}

/// A stream's place in [`Streams`]; freed on drop.
struct StreamSlot {
    streams: Arc<Streams>,
    party: PartyKey,
    notify: Arc<Notify>,
}

impl Streams {
    fn new(limits: ServiceLimits) -> Self {
        Self {
            limits,
            open: Mutex::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, StreamTable> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(self: &Arc<Self>, party: &PartyKey) -> Result<StreamSlot, Status> {
        let mut table = self.table();
        if table.total >= self.limits.max_streams {
            return Err(Status::resource_exhausted(format!(
                "the connector has the most message streams it serves open ({}, max-streams)",
                self.limits.max_streams
            )));
        }
        let held = table.parties.get(party).map_or(0, |(_, count)| *count);
        if held >= self.limits.max_streams_per_party {
            return Err(Status::resource_exhausted(format!(
                "this key has the most message streams it may hold open ({}, max-streams-per-key)",
                self.limits.max_streams_per_party
            )));
        }
        table.total += 1;
        crate::telemetry::open_streams(table.total);
        let entry = table.parties.entry(*party).or_default();
        entry.1 += 1;
        let notify = Arc::clone(&entry.0);
        Ok(StreamSlot {
            streams: Arc::clone(self),
            party: *party,
            notify,
        })
    }

    fn wake(&self, party: &PartyKey) {
        if let Some((notify, _)) = self.table().parties.get(party) {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for (notify, _) in self.table().parties.values() {
            notify.notify_waiters();
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.table().parties.len()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut table = self.streams.table();
        table.total = table.total.saturating_sub(1);
        crate::telemetry::open_streams(table.total);
        if let Some((_, count)) = table.parties.get_mut(&self.party) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.parties.remove(&self.party);
            }
        }
    }
}

/// Rate-limits the log lines of refused requests.
#[derive(Debug)]
struct RefusalLog {
    per_second: u64,
    /// The second being counted, and how many refusals it had.
    second: AtomicU64,
    in_second: AtomicU64,
    suppressed: AtomicU64,
}

/// Whether to log a refusal.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Log it; `suppressed` refusals were not logged since the last line.
    Log { suppressed: u64 },
    /// Count it only.
    Suppress,
}

impl RefusalLog {
    fn new(per_second: u64) -> Self {
        Self {
            per_second,
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn admit(&self, now_second: u64) -> Admit {
        if self.second.swap(now_second, Ordering::AcqRel) != now_second {
            self.in_second.store(0, Ordering::Release);
        }
        if self.in_second.fetch_add(1, Ordering::AcqRel) < self.per_second {
            Admit::Log {
                suppressed: self.suppressed.swap(0, Ordering::AcqRel),
            }
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            Admit::Suppress
        }
    }

    fn refused(&self, method: &'static str, party: Option<&PartyKey>, status: &Status) {
        if let Admit::Log { suppressed } = self.admit(auth::now_ms() / 1000) {
            let party = party.map(party_label).unwrap_or_default();
            tracing::warn!(
                method,
                %party,
                code = ?status.code(),
                reason = status.message(),
                suppressed,
                "request refused"
            );
        }
    }
}

/// The connector service over a [`MailboxStore`].
pub struct ConnectorService {
    store: Arc<dyn MailboxStore>,
    streams: Arc<Streams>,
    /// Set once the task that wakes streams for other instances' changes
    /// runs (started with the first stream, inside the runtime).
    forwarding: std::sync::OnceLock<()>,
    refusals: Arc<RefusalLog>,
    audience: String,
    limits: ServiceLimits,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for ConnectorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorService").finish_non_exhaustive()
    }
}

impl ConnectorService {
    /// A service over `store` with the default [`ServiceLimits`]. Open
    /// streams end when `shutdown` turns true.
    pub fn new(store: Arc<dyn MailboxStore>, shutdown: watch::Receiver<bool>) -> Self {
        Self::with_limits(store, ServiceLimits::default(), shutdown)
    }

    /// A service over `store` with `limits`.
    pub fn with_limits(
        store: Arc<dyn MailboxStore>,
        limits: ServiceLimits,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            audience: store.audience(),
            store,
            streams: Arc::new(Streams::new(limits)),
            forwarding: std::sync::OnceLock::new(),
            refusals: Arc::new(RefusalLog::new(limits.refusal_logs_per_second)),
            limits,
            shutdown,
        }
    }

    /// The tonic server, its gRPC size limits following the store's
    /// [`Limits`](crate::Limits) and the batch limits, wrapped so that a
    /// request above the decoding limit is answered RESOURCE_EXHAUSTED.
    pub fn into_server(self) -> SizeLimited<ConnectorServer<Self>> {
        let limits = self.store.limits();
        let batch = self
            .limits
            .max_batch_bytes
            .saturating_add(
                self.limits
                    .max_batch_messages
                    .saturating_mul(BATCH_ENTRY_ROOM),
            )
            .saturating_add(FIELD_ROOM);
        let decoding = limits.max_message_len.saturating_add(FIELD_ROOM).max(batch);
        let encoding = limits
            .max_message_len
            .max(limits.max_page_bytes)
            .saturating_add(FIELD_ROOM);
        let refusals = Arc::clone(&self.refusals);
        SizeLimited {
            inner: ConnectorServer::new(self)
                .max_decoding_message_size(decoding)
                .max_encoding_message_size(encoding),
            decoding,
            refusals,
        }
    }

    /// Logs a refusal (rate-limited) and passes the result on.
    fn logged<T>(
        &self,
        method: &'static str,
        party: Option<&PartyKey>,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        crate::telemetry::request(method, result.as_ref().map(|_| ()).map_err(Status::code));
        if let Err(status) = &result {
            self.refusals.refused(method, party, status);
        }
        result
    }
}

/// The connector's gRPC server with tonic's answer to a request above its
/// decoding limit (OUT_OF_RANGE, which the connector never answers
/// otherwise) turned into RESOURCE_EXHAUSTED, as for an envelope above the
/// limit.
#[derive(Debug, Clone)]
pub struct SizeLimited<S> {
    inner: S,
    decoding: usize,
    /// Refusals above the limit never reach the service: they are logged
    /// here, with the service's rate limit.
    refusals: Arc<RefusalLog>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for SizeLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for SizeLimited<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().map(method_name);
        let answer = self.inner.call(request);
        let decoding = self.decoding;
        let refusals = Arc::clone(&self.refusals);
        Box::pin(async move {
            let mut response = answer.await?;
            let out_of_range = Status::from_header_map(response.headers())
                .is_some_and(|status| status.code() == tonic::Code::OutOfRange);
            if out_of_range {
                let headers = response.headers_mut();
                headers.remove("grpc-status");
                headers.remove("grpc-message");
                let status = Status::resource_exhausted(format!(
                    "the request exceeds the limit of {decoding} bytes"
                ));
                refusals.refused(method.unwrap_or("unknown method"), None, &status);
                // Only fails for a message that is not a valid header value;
                // this one is ASCII.
                let _ = status.add_header(headers);
            }
            Ok(response)
        })
    }
}

/// The name of a connector method, as the refusal log names it.
fn method_name(path_tail: &str) -> &'static str {
    const METHODS: [&str; 10] = [
        "GetConnectorInfo",
        "GenerateConnectionToken",
        "GetConnectionTokenInfo",
        "AddConnectionFromToken",
        "SendMessage",
        "SendMessages",
        "GetMessagesPaginated",
        "GetMessageStream",
        "AcknowledgeMessages",
        "RevokeConnection",
    ];
    METHODS
        .into_iter()
        .find(|method| *method == path_tail)
        .unwrap_or("unknown method")
}

fn auth_status(error: AuthError) -> Status {
    crate::telemetry::refusal("unauthenticated");
    Status::unauthenticated(error.to_string())
}

fn mailbox_status(error: MailboxError) -> Status {
    let reason = error.reason();
    crate::telemetry::refusal(reason);
    let message = error.to_string();
    let mut status = match error {
        MailboxError::UnknownToken | MailboxError::UnknownConnection => Status::not_found(message),
        MailboxError::TokenUsed | MailboxError::Revoked => Status::failed_precondition(message),
        MailboxError::NotAParty => Status::permission_denied(message),
        MailboxError::TooLarge { .. } | MailboxError::MailboxFull { .. } => {
            Status::resource_exhausted(message)
        }
        MailboxError::NonceReplayed | MailboxError::NonceExpired => {
            Status::unauthenticated(message)
        }
        MailboxError::ClientIdReused => Status::already_exists(message),
        MailboxError::Invalid(_) => Status::invalid_argument(message),
        MailboxError::Storage(_) | MailboxError::Schema(_) => {
            tracing::error!(error = %message, "storage failure");
            Status::unavailable("the connector's storage failed; retry later")
        }
    };
    status.metadata_mut().insert(
        crate::mailbox::REASON_HEADER,
        tonic::metadata::MetadataValue::from_static(reason),
    );
    status
}

/// The checks of one envelope that need neither the store nor the nonce
/// (a `SendMessage`, or an entry of a `SendMessages`).
fn check_entry(request: &proto::SendMessageRequest) -> Result<(), Status> {
    if request.client_message_id.len() > 64 {
        return Err(Status::invalid_argument(
            "client_message_id must be at most 64 bytes",
        ));
    }
    if request.message.is_empty() {
        return Err(Status::invalid_argument("the message is empty"));
    }
    Ok(())
}

/// The refusal reason a status carries (see [`crate::REASON_HEADER`]).
pub(crate) fn status_reason(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(crate::mailbox::REASON_HEADER)
        .and_then(|value| value.to_str().ok())
}

/// A batch entry's refusal: the status a `SendMessage` would have answered.
fn refused(status: &Status) -> proto::send_result::Outcome {
    proto::send_result::Outcome::Refused(proto::Refusal {
        code: u32::try_from(i32::from(status.code())).unwrap_or(u32::from(u8::MAX)),
        message: status.message().to_owned(),
        reason: status_reason(status).unwrap_or_default().to_owned(),
    })
}

fn settle<T>(result: Result<T, MailboxError>) -> Result<T, Status> {
    result.map_err(mailbox_status)
}

fn party_label(party: &PartyKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(party.first_chunk::<6>().unwrap_or(&[0; 6]))
}

fn new_token() -> Result<String, Status> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|_| Status::unavailable("no randomness"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random))
}

fn to_proto(message: StoredMessage) -> proto::ReceivedMessage {
    let content = match message.content {
        Content::Envelope(envelope) => received_message::Content::Envelope(envelope),
        Content::ConnectionAdded { token, peer } => {
            received_message::Content::ConnectionAdded(proto::ConnectionAdded {
                token,
                peer_public_key: peer.to_vec(),
            })
        }
        Content::ConnectionRevoked => {
            received_message::Content::ConnectionRevoked(proto::ConnectionRevoked {})
        }
    };
    proto::ReceivedMessage {
        id: message.id,
        connection_id: message.connection_id,
        received_at_ms: message.received_at_ms,
        content: Some(content),
    }
}

type MessageStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<proto::ReceivedMessage, Status>> + Send>>;

impl ConnectorService {
    /// Checks a request's signature for this connector; the nonce is
    /// recorded by the store.
    fn check<T: prost::Message>(
        &self,
        request: &Request<T>,
        method: &str,
    ) -> Result<Verified, Status> {
        let path = format!("{SERVICE_PATH}{method}");
        auth::verify(
            request.metadata(),
            &self.audience,
            &path,
            &request.get_ref().encode_to_vec(),
            auth::now_ms(),
        )
        .map_err(auth_status)
    }

    async fn generate_tokens(
        &self,
        verified: Verified,
        request: proto::GenerateConnectionTokenRequest,
    ) -> Result<proto::GenerateConnectionTokenResponse, Status> {
        let count = match request.count {
            0 => 1,
            count @ 1..=100 => count,
            _ => return Err(Status::invalid_argument("count must be from 1 to 100")),
        };
        let tokens = (0..count)
            .map(|_| new_token())
            .collect::<Result<Vec<_>, _>>()?;
        settle(
            crate::telemetry::committed(
                "create_tokens",
                self.store
                    .create_tokens(verified, tokens.clone(), auth::now_ms()),
            )
            .await,
        )?;
        tracing::info!(party = %party_label(&verified.party), count, "tokens created");
        Ok(proto::GenerateConnectionTokenResponse { tokens })
    }

    async fn join(
        &self,
        verified: Verified,
        request: proto::AddConnectionFromTokenRequest,
    ) -> Result<proto::AddConnectionFromTokenResponse, Status> {
        let token = request.token;
        if token.is_empty() || token.len() > 64 {
            return Err(Status::invalid_argument("malformed token"));
        }
        let connection_id = format!("c-{}", new_token()?);
        let joined = settle(
            crate::telemetry::committed(
                "use_token",
                self.store
                    .use_token(verified, token, connection_id, auth::now_ms()),
            )
            .await,
        )?;
        if joined.repeated {
            // The joiner asks again (its first answer was lost): the same
            // connection, nothing new for the creator.
            tracing::info!(connection = %joined.connection_id, party = %party_label(&verified.party), "join repeated");
        } else {
            self.streams.wake(&joined.creator);
            tracing::info!(connection = %joined.connection_id, party = %party_label(&verified.party), "connection added");
        }
        Ok(proto::AddConnectionFromTokenResponse {
            connection_id: joined.connection_id,
        })
    }

    async fn send(
        &self,
        verified: Verified,
        request: proto::SendMessageRequest,
    ) -> Result<proto::SendMessageResponse, Status> {
        check_entry(&request)?;
        let client_id =
            (!request.client_message_id.is_empty()).then_some(request.client_message_id);
        let sent = settle(
            crate::telemetry::committed(
                "send",
                self.store.send(
                    verified,
                    request.connection_id.clone(),
                    request.message,
                    client_id,
                    auth::now_ms(),
                ),
            )
            .await,
        )?;
        if !sent.duplicate {
            self.streams.wake(&sent.recipient);
        }
        tracing::debug!(connection = %request.connection_id, id = sent.id, duplicate = sent.duplicate, "message stored");
        Ok(proto::SendMessageResponse { id: sent.id })
    }

    /// `SendMessages`: the batch's limits, then each entry as
    /// [`ConnectorService::send`] judges one, all stored in one store call.
    async fn send_many(
        &self,
        verified: Verified,
        request: proto::SendMessagesRequest,
    ) -> Result<proto::SendMessagesResponse, Status> {
        let requests = request.messages;
        if requests.is_empty() {
            return Err(Status::invalid_argument(
                "a batch holds at least one message",
            ));
        }
        if requests.len() > self.limits.max_batch_messages {
            return Err(Status::invalid_argument(format!(
                "a batch of {} messages exceeds the limit of {} (max_batch_messages)",
                requests.len(),
                self.limits.max_batch_messages
            )));
        }
        let bytes = requests
            .iter()
            .fold(0usize, |sum, entry| sum.saturating_add(entry.message.len()));
        if bytes > self.limits.max_batch_bytes {
            return Err(Status::invalid_argument(format!(
                "a batch of {bytes} bytes of messages exceeds the limit of {} bytes \
                 (max_batch_bytes)",
                self.limits.max_batch_bytes
            )));
        }
        // Entries the service refuses on their own never reach the store;
        // `places` maps the store's answers back to the batch.
        let mut results: Vec<Option<proto::send_result::Outcome>> = Vec::new();
        let mut places = Vec::new();
        let mut entries = Vec::new();
        for (place, entry) in requests.into_iter().enumerate() {
            match check_entry(&entry) {
                Err(status) => results.push(Some(refused(&status))),
                Ok(()) => {
                    results.push(None);
                    places.push(place);
                    entries.push(BatchEntry {
                        connection_id: entry.connection_id,
                        client_id: (!entry.client_message_id.is_empty())
                            .then_some(entry.client_message_id),
                        envelope: entry.message,
                    });
                }
            }
        }
        let outcome = if entries.is_empty() {
            // As for a single send refused by the service: no nonce used.
            Vec::new()
        } else {
            settle(
                crate::telemetry::committed(
                    "send_batch",
                    self.store.send_batch(verified, entries, auth::now_ms()),
                )
                .await,
            )?
        };
        if outcome.len() != places.len() {
            tracing::error!(
                expected = places.len(),
                answered = outcome.len(),
                "the store answered a batch with another number of entries"
            );
            return Err(Status::unavailable(
                "the connector's storage failed; retry later",
            ));
        }
        let mut woken: Vec<crate::auth::PartyKey> = Vec::new();
        for (place, result) in places.into_iter().zip(outcome) {
            let answer = match result {
                Ok(sent) => {
                    if !sent.duplicate && !woken.contains(&sent.recipient) {
                        woken.push(sent.recipient);
                    }
                    proto::send_result::Outcome::Id(sent.id)
                }
                Err(error) => refused(&mailbox_status(error)),
            };
            if let Some(slot) = results.get_mut(place) {
                *slot = Some(answer);
            }
        }
        // Live delivery once per batch: each recipient woken once.
        for recipient in &woken {
            self.streams.wake(recipient);
        }
        let results: Vec<proto::SendResult> = results
            .into_iter()
            .map(|outcome| proto::SendResult { outcome })
            .collect();
        let stored = results
            .iter()
            .filter(|result| matches!(result.outcome, Some(proto::send_result::Outcome::Id(_))))
            .count();
        crate::telemetry::batched(stored, results.len() - stored);
        tracing::debug!(party = %party_label(&verified.party), entries = results.len(), stored, "batch stored");
        Ok(proto::SendMessagesResponse { results })
    }

    async fn page(
        &self,
        verified: Verified,
        request: proto::GetMessagesPaginatedRequest,
    ) -> Result<proto::GetMessagesPaginatedResponse, Status> {
        let limit = match request.limit {
            0 => 100,
            limit @ 1..=1000 => limit as usize,
            _ => return Err(Status::invalid_argument("limit must be from 1 to 1000")),
        };
        settle(self.store.use_nonce(verified, auth::now_ms()).await)?;
        let max_bytes = self.store.limits().max_page_bytes;
        let messages = settle(
            self.store
                .messages_after(
                    &verified.party,
                    request.last_seen_message_id,
                    limit,
                    max_bytes,
                )
                .await,
        )?;
        Ok(proto::GetMessagesPaginatedResponse {
            messages: messages.into_iter().map(to_proto).collect(),
        })
    }

    async fn stream(
        &self,
        verified: Verified,
        request: proto::GetMessageStreamRequest,
    ) -> Result<MessageStream, Status> {
        // The slot first: a refusal for too many streams consumes no nonce.
        let slot = self.streams.open(&verified.party)?;
        self.forward_changes();
        settle(self.store.use_nonce(verified, auth::now_ms()).await)?;
        let party = verified.party;
        let mut cursor = request.last_seen_message_id;
        let store = Arc::clone(&self.store);
        let max_bytes = store.limits().max_page_bytes;
        // The most a message adds to a page: its envelope, a connection id
        // (at most 255 bytes) and the fixed 64.
        let max_message_wire = store.limits().max_message_len.saturating_add(255 + 64);
        let mut shutdown = self.shutdown.clone();
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tracing::info!(party = %party_label(&party), cursor, "stream opened");
        tokio::spawn(async move {
            // Held until the stream's task ends: then the slot is free and,
            // with the key's last stream, its notifier entry gone.
            let slot = slot;
            loop {
                // Register before reading, so a message stored in between
                // still wakes this stream.
                let notified = slot.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let page = settle(
                    store
                        .messages_after(&party, cursor, STREAM_PAGE, max_bytes)
                        .await,
                );
                let page = match page {
                    Ok(page) => page,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                // Read on at once only when the page may have been cut
                // short (by its count or its byte cap); otherwise it held
                // everything, and whatever is stored after the read wakes
                // `notified`, which was registered before it.
                let bytes: usize = page.iter().map(StoredMessage::wire_len).sum();
                let more =
                    page.len() >= STREAM_PAGE || bytes.saturating_add(max_message_wire) > max_bytes;
                for message in page {
                    cursor = message.id;
                    tokio::select! {
                        sent = sender.send(Ok(to_proto(message))) => {
                            if sent.is_err() {
                                return; // the client went away
                            }
                        }
                        _ = shutdown.changed() => return,
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
                if more {
                    continue;
                }
                tokio::select! {
                    () = &mut notified => {}
                    () = sender.closed() => return,
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    async fn acknowledge(
        &self,
        verified: Verified,
        request: proto::AcknowledgeMessagesRequest,
    ) -> Result<proto::AcknowledgeMessagesResponse, Status> {
        let ids = request.message_ids;
        if ids.len() > 10_000 {
            return Err(Status::invalid_argument(
                "at most 10,000 ids per acknowledgement",
            ));
        }
        let deleted = settle(
            crate::telemetry::committed(
                "acknowledge",
                self.store.acknowledge(verified, ids, auth::now_ms()),
            )
            .await,
        )?;
        tracing::debug!(party = %party_label(&verified.party), deleted, "messages acknowledged and deleted");
        Ok(proto::AcknowledgeMessagesResponse { deleted })
    }

    async fn revoke(
        &self,
        verified: Verified,
        request: proto::RevokeConnectionRequest,
    ) -> Result<proto::RevokeConnectionResponse, Status> {
        let connection_id = request.connection_id;
        let other = settle(
            crate::telemetry::committed(
                "revoke",
                self.store
                    .revoke(verified, connection_id.clone(), auth::now_ms()),
            )
            .await,
        )?;
        self.streams.wake(&other);
        tracing::info!(connection = %connection_id, "connection revoked");
        Ok(proto::RevokeConnectionResponse {})
    }
}

impl ConnectorService {
    /// Wakes this instance's streams when the store reports changes made
    /// elsewhere (another instance on the same database): started once,
    /// ends with the store's change channel or the shutdown.
    fn forward_changes(&self) {
        self.forwarding.get_or_init(|| {
            let Some(mut changes) = self.store.changes() else {
                return;
            };
            let streams = Arc::clone(&self.streams);
            let mut shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let change = tokio::select! {
                        change = changes.recv() => change,
                        _ = shutdown.changed() => return,
                    };
                    match change {
                        Ok(Change::Mailbox(party)) => streams.wake(&party),
                        Ok(Change::Everyone)
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            streams.wake_all();
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        });
    }
}

/// A signed call: checks the signature, runs `$handler` and logs a refusal.
macro_rules! signed {
    ($self:ident, $request:ident, $method:literal, $handler:ident) => {{
        let verified = match $self.check(&$request, $method) {
            Ok(verified) => verified,
            Err(status) => return $self.logged($method, None, Err(status)),
        };
        let result = $self.$handler(verified, $request.into_inner()).await;
        $self
            .logged($method, Some(&verified.party), result)
            .map(Response::new)
    }};
}

#[tonic::async_trait]
impl Connector for ConnectorService {
    async fn get_connector_info(
        &self,
        _request: Request<proto::GetConnectorInfoRequest>,
    ) -> Result<Response<proto::GetConnectorInfoResponse>, Status> {
        let limits = self.store.limits();
        Ok(Response::new(proto::GetConnectorInfoResponse {
            audience: self.audience.clone(),
            max_message_bytes: u64::try_from(limits.max_message_len).unwrap_or(u64::MAX),
            max_page_bytes: u64::try_from(limits.max_page_bytes).unwrap_or(u64::MAX),
            max_batch_messages: u64::try_from(self.limits.max_batch_messages).unwrap_or(u64::MAX),
            max_batch_bytes: u64::try_from(self.limits.max_batch_bytes).unwrap_or(u64::MAX),
        }))
    }

    async fn generate_connection_token(
        &self,
        request: Request<proto::GenerateConnectionTokenRequest>,
    ) -> Result<Response<proto::GenerateConnectionTokenResponse>, Status> {
        signed!(self, request, "GenerateConnectionToken", generate_tokens)
    }

    async fn get_connection_token_info(
        &self,
        request: Request<proto::GetConnectionTokenInfoRequest>,
    ) -> Result<Response<proto::GetConnectionTokenInfoResponse>, Status> {
        let token = request.into_inner().token;
        let info = settle(self.store.token_info(&token).await)?
            .ok_or_else(|| Status::not_found("unknown token"))?;
        Ok(Response::new(proto::GetConnectionTokenInfoResponse {
            creator_public_key: info.creator.to_vec(),
            used: info.used,
        }))
    }

    async fn add_connection_from_token(
        &self,
        request: Request<proto::AddConnectionFromTokenRequest>,
    ) -> Result<Response<proto::AddConnectionFromTokenResponse>, Status> {
        signed!(self, request, "AddConnectionFromToken", join)
    }

    async fn send_message(
        &self,
        request: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::SendMessageResponse>, Status> {
        signed!(self, request, "SendMessage", send)
    }

    async fn send_messages(
        &self,
        request: Request<proto::SendMessagesRequest>,
    ) -> Result<Response<proto::SendMessagesResponse>, Status> {
        signed!(self, request, "SendMessages", send_many)
    }

    async fn get_messages_paginated(
        &self,
        request: Request<proto::GetMessagesPaginatedRequest>,
    ) -> Result<Response<proto::GetMessagesPaginatedResponse>, Status> {
        signed!(self, request, "GetMessagesPaginated", page)
    }

    type GetMessageStreamStream = MessageStream;

    async fn get_message_stream(
        &self,
        request: Request<proto::GetMessageStreamRequest>,
    ) -> Result<Response<MessageStream>, Status> {
        signed!(self, request, "GetMessageStream", stream)
    }

    async fn acknowledge_messages(
        &self,
        request: Request<proto::AcknowledgeMessagesRequest>,
    ) -> Result<Response<proto::AcknowledgeMessagesResponse>, Status> {
        signed!(self, request, "AcknowledgeMessages", acknowledge)
    }

    async fn revoke_connection(
        &self,
        request: Request<proto::RevokeConnectionRequest>,
    ) -> Result<Response<proto::RevokeConnectionResponse>, Status> {
        signed!(self, request, "RevokeConnection", revoke)
    }
}

/// Serves the connector in plaintext on `listener` until `shutdown`
/// resolves, with the default [`ServiceLimits`]; then stops accepting, ends
/// open streams, and returns once in-flight requests are answered.
/// Plaintext is for loopback and tests; see [`serve_with`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MailboxStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, store, ServiceLimits::default(), None, shutdown).await
}

/// [`serve`] with `limits`.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MailboxStore>,
    limits: ServiceLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, store, limits, None, shutdown).await
}

/// [`serve`], over TLS with `tls`'s identity when it is given (only TLS is
/// accepted then: a plaintext client fails its handshake).
pub async fn serve_with_tls(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MailboxStore>,
    tls: Option<&crate::tls::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, store, ServiceLimits::default(), tls, shutdown).await
}

/// [`serve`] with `limits`, over TLS when `tls` is given.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MailboxStore>,
    limits: ServiceLimits,
    tls: Option<&crate::tls::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let options = ServeOptions {
        limits,
        tls,
        grpc_web: None,
    };
    serve_with_options(listener, store, options, shutdown).await
}

/// How [`serve_with_options`] serves: the default is [`serve`]'s
/// (default limits, plaintext, native gRPC only).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions<'a> {
    /// The service's bounds.
    pub limits: ServiceLimits,
    /// Serve TLS (only TLS) with this identity.
    pub tls: Option<&'a crate::tls::ServerTls>,
    /// Also answer gRPC-Web requests (HTTP/1.1 accepted then) and CORS
    /// preflights, for browsers.
    pub grpc_web: Option<crate::web::GrpcWeb>,
}

/// [`serve`] with `options`.
pub async fn serve_with_options(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MailboxStore>,
    options: ServeOptions<'_>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop, stopped) = watch::channel(false);
    let (reporter, health) = tonic_health::server::health_reporter();
    // The first status before the first connection is accepted.
    let healthy = crate::telemetry::report(&*store, &reporter, None).await;
    tokio::spawn(crate::telemetry::follow_store(
        Arc::clone(&store),
        reporter,
        healthy,
        stopped.clone(),
    ));
    let service = ConnectorService::with_limits(store, options.limits, stopped);
    // Small answers must not wait for Nagle's algorithm (tonic's own
    // `tcp_nodelay` setting does not reach a listener handed in like this).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls.config())?;
    }
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    match options.grpc_web {
        None => {
            builder
                .add_service(health)
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        // CORS outside: a preflight is answered before the translation.
        Some(web) => {
            builder
                .accept_http1(true)
                .layer(web.cors())
                .layer(tonic_web::GrpcWebLayer::new())
                .add_service(health)
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refusal_logs_are_rate_limited_and_the_rest_counted() {
        let log = RefusalLog::new(3);
        for _ in 0..3 {
            assert!(matches!(log.admit(10), Admit::Log { .. }));
        }
        assert_eq!(log.admit(10), Admit::Suppress);
        assert_eq!(log.admit(10), Admit::Suppress);
        // The next second logs again and reports what was suppressed.
        assert_eq!(log.admit(11), Admit::Log { suppressed: 2 });
        assert_eq!(log.admit(11), Admit::Log { suppressed: 0 });
    }

    #[test]
    fn a_key_leaves_the_stream_table_with_its_last_stream() {
        let streams = Arc::new(Streams::new(ServiceLimits {
            max_streams_per_party: 2,
            max_streams: 3,
            refusal_logs_per_second: 1,
            ..ServiceLimits::default()
        }));
        let first = streams.open(&[1; 32]).unwrap();
        let second = streams.open(&[1; 32]).unwrap();
        let refused = streams.open(&[1; 32]).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("max-streams-per-key"),
            "{refused:?}"
        );
        let other = streams.open(&[2; 32]).unwrap();
        let total = streams.open(&[3; 32]).err().unwrap();
        assert!(total.message().contains("(3, max-streams)"), "{total:?}");
        assert_eq!(streams.keys(), 2);
        drop(first);
        assert_eq!(streams.keys(), 2);
        drop(second);
        drop(other);
        assert_eq!(streams.keys(), 0, "no entry outlives its key's streams");
        // Every slot is free again.
        let _again = streams.open(&[3; 32]).unwrap();
    }
}
