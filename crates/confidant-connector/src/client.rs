//! The client side: [`SignedClient`] (every call signed) and
//! [`ConnectorTransport`], the runtime's transport over gRPC.

use crate::auth::{RequestSigner, SignError};
use crate::proto::{self, connector_client::ConnectorClient, received_message};
use crate::server::{FIELD_ROOM, SERVICE_PATH, status_reason};
use crate::tls::ClientTls;
use async_trait::async_trait;
use confidant_actors::{
    Delivery, DeliveryId, Outgoing, Payload, RelayInvitation, Transport, TransportError,
};
use confidant_core::ConnectionId;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Attempts of a call that fails with a transient error before giving up.
const ATTEMPTS: u32 = 8;
/// First pause between attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts (and between stream reconnections).
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Largest answer a client accepts by default, whatever the connector
/// announces: 64 MiB (plus room for the other fields).
pub const DEFAULT_MAX_RECEIVE_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes of deliveries a [`ConnectorTransport`] holds that the node
/// has not taken yet, by default; when they are reached it stops reading
/// its stream until the node takes some.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// Most deliveries a [`ConnectorTransport`] holds that the node has not
/// taken yet.
const BUFFER_COUNT: usize = 4096;

fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
    )
}

fn to_transport(status: &Status) -> TransportError {
    refusal_to_transport(status, status_reason(status))
}

/// [`to_transport`] for a status whose refusal reason came apart from it
/// (a batch entry's `Refusal.reason`).
fn refusal_to_transport(status: &Status, reason: Option<&str>) -> TransportError {
    if reason == Some("mailbox_full") {
        return TransportError::MailboxFull(describe_status(status));
    }
    if transient(status) {
        TransportError::Unavailable(format!("{}: {}", status.code(), describe_status(status)))
    } else {
        TransportError::Refused(format!("{}: {}", status.code(), describe_status(status)))
    }
}

impl From<SignError> for Status {
    fn from(error: SignError) -> Self {
        Status::internal(error.to_string())
    }
}

/// A connector client that signs every call with the party's key, for the
/// connector's audience (fetched once with `GetConnectorInfo`, or pinned
/// with [`SignedClient::with_audience`]).
#[derive(Clone)]
pub struct SignedClient {
    client: ConnectorClient<Channel>,
    signer: RequestSigner,
    info: Arc<tokio::sync::OnceCell<proto::GetConnectorInfoResponse>>,
    audience: Option<String>,
    max_receive_bytes: usize,
}

impl std::fmt::Debug for SignedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedClient")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

macro_rules! signed_call {
    ($(#[$doc:meta])* $name:ident, $method:literal, $request:ty, $response:ty) => {
        $(#[$doc])*
        pub async fn $name(&self, request: $request) -> Result<$response, Status> {
            let (audience, mut client) = self.prepared().await?;
            let request = self.signer.sign(&audience, concat!("/confidant.connector.v1.Connector/", $method), request)?;
            Ok(client.$name(request).await?.into_inner())
        }
    };
}

impl SignedClient {
    /// A client for the connector at `url`: `https://HOST:PORT` (TLS,
    /// the certificate verified for HOST against the system's roots) or
    /// `http://HOST:PORT` (plaintext, for loopback and tests). Connects
    /// lazily and reconnects by itself.
    ///
    /// Call it within a tokio runtime: the channel's background task is
    /// spawned on the current runtime, which must outlive the client.
    pub fn new(url: &str, signer: RequestSigner) -> Result<Self, TransportError> {
        Self::with_tls(url, signer, &ClientTls::default())
    }

    /// [`SignedClient::new`], verifying an `https://` connector against
    /// what `tls` trusts. Refused (never downgraded) when TLS cannot be set
    /// up; an `http://` URL with a CA is refused too; any other scheme is
    /// refused. The error is [`TransportError::Refused`] with the
    /// [`TlsError`](crate::tls::TlsError)'s text.
    pub fn with_tls(
        url: &str,
        signer: RequestSigner,
        tls: &ClientTls,
    ) -> Result<Self, TransportError> {
        let endpoint = tls
            .endpoint(url)
            .map_err(|error| TransportError::Refused(error.to_string()))?;
        Ok(Self {
            client: ConnectorClient::new(endpoint.connect_lazy()),
            signer,
            info: Arc::default(),
            audience: None,
            max_receive_bytes: DEFAULT_MAX_RECEIVE_BYTES,
        })
    }

    /// Signs for `audience` instead of the one the connector announces: a
    /// client that knows its connector's audience (from its configuration)
    /// is then safe from a connector that announces another's.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Accepts answers of at most `bytes` (plus room for the fields beside
    /// the envelopes), whatever the connector announces. Default:
    /// [`DEFAULT_MAX_RECEIVE_BYTES`].
    #[must_use]
    pub fn with_max_receive_bytes(mut self, bytes: usize) -> Self {
        self.max_receive_bytes = bytes;
        self
    }

    /// The party's public key at the connector.
    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    /// `GetConnectorInfo` (not signed), asked once and remembered.
    pub async fn connector_info(&self) -> Result<proto::GetConnectorInfoResponse, Status> {
        self.info
            .get_or_try_init(|| async {
                let info = self
                    .client
                    .clone()
                    .get_connector_info(proto::GetConnectorInfoRequest {})
                    .await?
                    .into_inner();
                if !crate::mailbox::valid_audience(&info.audience) {
                    return Err(Status::failed_precondition(
                        "the connector announced a malformed audience",
                    ));
                }
                Ok(info)
            })
            .await
            .cloned()
    }

    /// The audience to sign for, and a client whose decoding limit admits
    /// the connector's largest answers (up to the client's own ceiling).
    async fn prepared(&self) -> Result<(String, ConnectorClient<Channel>), Status> {
        let info = self.connector_info().await?;
        let announced =
            usize::try_from(info.max_message_bytes.max(info.max_page_bytes)).unwrap_or(usize::MAX);
        let limit = announced
            .min(self.max_receive_bytes)
            .saturating_add(FIELD_ROOM);
        let client = self.client.clone().max_decoding_message_size(limit);
        Ok((self.audience.clone().unwrap_or(info.audience), client))
    }

    signed_call!(
        /// `GenerateConnectionToken`.
        generate_connection_token, "GenerateConnectionToken",
        proto::GenerateConnectionTokenRequest, proto::GenerateConnectionTokenResponse);
    signed_call!(
        /// `AddConnectionFromToken`.
        add_connection_from_token, "AddConnectionFromToken",
        proto::AddConnectionFromTokenRequest, proto::AddConnectionFromTokenResponse);
    signed_call!(
        /// `SendMessage`.
        send_message, "SendMessage", proto::SendMessageRequest, proto::SendMessageResponse);
    signed_call!(
        /// `SendMessages`: many envelopes in one signed request, answered
        /// per envelope.
        send_messages, "SendMessages", proto::SendMessagesRequest, proto::SendMessagesResponse);
    signed_call!(
        /// `GetMessagesPaginated`.
        get_messages_paginated, "GetMessagesPaginated",
        proto::GetMessagesPaginatedRequest, proto::GetMessagesPaginatedResponse);
    signed_call!(
        /// `AcknowledgeMessages`.
        acknowledge_messages, "AcknowledgeMessages",
        proto::AcknowledgeMessagesRequest, proto::AcknowledgeMessagesResponse);
    signed_call!(
        /// `RevokeConnection`.
        revoke_connection, "RevokeConnection",
        proto::RevokeConnectionRequest, proto::RevokeConnectionResponse);

    /// `GetConnectionTokenInfo` (not signed).
    pub async fn get_connection_token_info(
        &self,
        token: &str,
    ) -> Result<proto::GetConnectionTokenInfoResponse, Status> {
        Ok(self
            .client
            .clone()
            .get_connection_token_info(proto::GetConnectionTokenInfoRequest {
                token: token.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// `GetMessageStream`, from after `cursor`.
    pub async fn get_message_stream(
        &self,
        cursor: u64,
    ) -> Result<tonic::Streaming<proto::ReceivedMessage>, Status> {
        let (audience, mut client) = self.prepared().await?;
        let request = self.signer.sign(
            &audience,
            &format!("{SERVICE_PATH}GetMessageStream"),
            proto::GetMessageStreamRequest {
                last_seen_message_id: cursor,
            },
        )?;
        Ok(client.get_message_stream(request).await?.into_inner())
    }
}

/// The connector instances a transport may use, and the one it uses now:
/// after a transient failure it moves on to the next, round the list.
struct Failover {
    /// The first instance (also `clients[0]`).
    first: SignedClient,
    clients: Vec<SignedClient>,
    current: AtomicUsize,
}

impl Failover {
    /// The instance in use, and its place in the list.
    fn current(&self) -> (usize, SignedClient) {
        let index = self.current.load(Ordering::Acquire) % self.clients.len().max(1);
        match self.clients.get(index) {
            Some(client) => (index, client.clone()),
            None => (0, self.first.clone()),
        }
    }

    /// Moves on from instance `failed` (unless another call already did).
    fn failed(&self, failed: usize) {
        if self.clients.len() > 1 {
            let next = (failed + 1) % self.clients.len();
            if self
                .current
                .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                tracing::warn!(
                    instance = next,
                    "failing over to another connector instance"
                );
            }
        }
    }
}

/// A random place in a list of `instances` URLs, the instance a new
/// transport starts at (0 for one instance). The modulo's bias is below
/// `instances / 2^64`, nothing next to the point, which is spreading load.
/// Should the operating system's random source fail, the first instance,
/// as before randomness: a client that works matters more than the spread.
fn random_start(instances: usize) -> usize {
    if instances <= 1 {
        return 0;
    }
    match getrandom::u64() {
        Ok(random) => usize::try_from(random % instances as u64).unwrap_or(0),
        Err(error) => {
            tracing::warn!(%error, "no randomness: starting at the first connector instance");
            0
        }
    }
}

/// Retries `call` on transient errors with exponential backoff, moving to
/// the next connector instance after each.
async fn retry<T, F, Fut>(what: &str, failover: &Failover, call: F) -> Result<T, TransportError>
where
    F: FnMut(SignedClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    retry_status(what, failover, call)
        .await
        .map_err(|status| to_transport(&status))
}

/// [`retry`], giving the last status itself.
async fn retry_status<T, F, Fut>(what: &str, failover: &Failover, mut call: F) -> Result<T, Status>
where
    F: FnMut(SignedClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let (index, client) = failover.current();
        match call(client).await {
            Ok(value) => return Ok(value),
            Err(status) if transient(&status) && attempt < ATTEMPTS => {
                tracing::debug!(what, attempt, %status, "retrying");
                failover.failed(index);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

#[derive(Default)]
struct Deliveries {
    /// Handed to the node and not yet acknowledged or released.
    in_flight: BTreeMap<u64, Delivery>,
    /// Released by the node: handed out again before anything newer.
    released: BTreeMap<u64, Delivery>,
}

struct Inner {
    url: String,
    failover: Failover,
    deliveries: Mutex<Deliveries>,
    /// Told when deliveries are released, so that a [`Transport::receive`]
    /// waiting on the stream hands them out at once (nothing newer may
    /// ever come to wake it otherwise).
    released: tokio::sync::Notify,
    incoming: tokio::sync::Mutex<Option<mpsc::Receiver<Buffered>>>,
    /// Bytes of deliveries read from the stream and not yet taken by the
    /// node.
    buffer: Arc<Semaphore>,
    buffer_bytes: usize,
    /// Set once a connector answered `SendMessages` with UNIMPLEMENTED:
    /// sends are single `SendMessage` calls from then on.
    no_batches: AtomicBool,
    /// Sync delivery: no stream; [`Transport::fetch_waiting`] pages.
    pull: Pull,
    stop: watch::Sender<bool>,
}

/// Sync delivery (see [`ConnectorTransport::with_sync_delivery`]): what
/// [`Transport::fetch_waiting`] fetched waits here for `receive`.
struct Pull {
    on: AtomicBool,
    sender: mpsc::Sender<Buffered>,
    receiver: Mutex<Option<mpsc::Receiver<Buffered>>>,
    /// The id of the last message fetched: a fetch goes on from there, so
    /// nothing handed out is fetched twice (locked for the whole fetch, so
    /// fetches run one at a time).
    cursor: tokio::sync::Mutex<u64>,
}

impl Pull {
    fn new() -> Self {
        let (sender, receiver) = mpsc::channel(BUFFER_COUNT);
        Self {
            on: AtomicBool::new(false),
            sender,
            receiver: Mutex::new(Some(receiver)),
            cursor: tokio::sync::Mutex::new(0),
        }
    }
}

/// Messages asked for per `GetMessagesPaginated` page.
const PAGE_LIMIT: u32 = 1000;

/// A delivery read from the stream and the buffer space it holds until the
/// node takes it.
type Buffered = (Delivery, OwnedSemaphorePermit);

/// The runtime's [`Transport`] over the gRPC connector.
///
/// - One `GetMessageStream` feeds deliveries; when it breaks, it is opened
///   again (with backoff) from the id of the last message received, so
///   nothing is skipped and nothing received is fetched twice.
/// - A delivery is acknowledged (and so deleted by the connector) only when
///   the node calls [`Transport::acknowledge`], which it does once the
///   delivery's effect is durable. Released deliveries are handed out again
///   before newer ones. A new transport (a restarted node) starts from the
///   beginning of its mailbox: everything not acknowledged comes again.
/// - It holds at most [`DEFAULT_BUFFER_BYTES`] (or the bound given to
///   [`ConnectorTransport::with_buffer_bytes`]) and 4096 deliveries that
///   the node has not taken; when full, it stops reading the stream (the
///   connector's stream waits), it drops nothing.
/// - Sends carry a client message id (the first 16 bytes of the envelope's
///   SHA-256), so a retried send is stored once. Each connection's envelopes
///   are sent in order. They go as `SendMessages` batches, entries of
///   several connections sharing one (cut by the limits `GetConnectorInfo`
///   announces, 1000 envelopes and 4 MiB without them), a retried batch
///   stored once by its client message ids; a connection's first envelope
///   refused ends that connection's send with the error a `SendMessage` of
///   it would have given (the other connections go on). A connector that
///   answers `SendMessages` with UNIMPLEMENTED gets one `SendMessage` per
///   envelope from then on, different connections' concurrently.
#[derive(Clone)]
pub struct ConnectorTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConnectorTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorTransport")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl ConnectorTransport {
    /// A transport to the connector at `url`, signing with `signer`. The
    /// message stream starts on the first [`Transport::receive`].
    ///
    /// Call it within a tokio runtime that outlives the transport (see
    /// [`SignedClient::new`]).
    pub fn new(url: &str, signer: RequestSigner) -> Result<Self, TransportError> {
        Self::with_options(url, signer, &ClientTls::default(), DEFAULT_BUFFER_BYTES)
    }

    /// [`ConnectorTransport::new`] holding at most `buffer_bytes` of
    /// deliveries the node has not taken (one delivery larger than that is
    /// still taken, alone). The client accepts messages of that size too.
    pub fn with_buffer_bytes(
        url: &str,
        signer: RequestSigner,
        buffer_bytes: usize,
    ) -> Result<Self, TransportError> {
        Self::with_options(url, signer, &ClientTls::default(), buffer_bytes)
    }

    /// [`ConnectorTransport::new`], verifying an `https://` connector
    /// against what `tls` trusts (see [`SignedClient::with_tls`]).
    pub fn with_tls(
        url: &str,
        signer: RequestSigner,
        tls: &ClientTls,
    ) -> Result<Self, TransportError> {
        Self::with_options(url, signer, tls, DEFAULT_BUFFER_BYTES)
    }

    /// [`ConnectorTransport::with_tls`] and
    /// [`ConnectorTransport::with_buffer_bytes`] together.
    pub fn with_options(
        url: &str,
        signer: RequestSigner,
        tls: &ClientTls,
        buffer_bytes: usize,
    ) -> Result<Self, TransportError> {
        Self::with_instances(&[url], signer, tls, buffer_bytes)
    }

    /// [`ConnectorTransport::with_options`] over several instances of one
    /// connector (stateless instances sharing one database, so one
    /// audience): calls go to one instance at a time, starting at one
    /// chosen at random (so a fleet of clients given the same list spreads
    /// over the instances instead of all loading the first); a call or
    /// stream that fails with a transient error moves to the next
    /// instance, round the list, and a stream resumes there from its
    /// cursor. Invitations name the first URL whichever instance is in
    /// use, so an invitation names the same connector every time. Refused
    /// when `urls` is empty.
    pub fn with_instances(
        urls: &[&str],
        signer: RequestSigner,
        tls: &ClientTls,
        buffer_bytes: usize,
    ) -> Result<Self, TransportError> {
        Self::with_instances_starting_at(urls, random_start(urls.len()), signer, tls, buffer_bytes)
    }

    /// [`ConnectorTransport::with_instances`], starting at `urls[start]`
    /// instead of a random instance (for tests, or a client that picks its
    /// instance itself). Refused when `urls` is empty or `start` is not an
    /// index of it.
    pub fn with_instances_starting_at(
        urls: &[&str],
        start: usize,
        signer: RequestSigner,
        tls: &ClientTls,
        buffer_bytes: usize,
    ) -> Result<Self, TransportError> {
        let Some(first) = urls.first() else {
            return Err(TransportError::Refused(
                "a transport needs at least one connector URL".into(),
            ));
        };
        if start >= urls.len() {
            return Err(TransportError::Refused(format!(
                "instance {start} is not one of the {} connector URLs given",
                urls.len()
            )));
        }
        let buffer_bytes = buffer_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let clients = urls
            .iter()
            .map(|url| {
                Ok(SignedClient::with_tls(url, signer.clone(), tls)?
                    .with_max_receive_bytes(buffer_bytes.max(DEFAULT_MAX_RECEIVE_BYTES)))
            })
            .collect::<Result<Vec<_>, TransportError>>()?;
        let (stop, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                url: (*first).to_owned(),
                failover: Failover {
                    first: clients
                        .first()
                        .cloned()
                        .ok_or_else(|| TransportError::Refused("no connector URL".into()))?,
                    clients,
                    current: AtomicUsize::new(start),
                },
                deliveries: Mutex::new(Deliveries::default()),
                released: tokio::sync::Notify::new(),
                incoming: tokio::sync::Mutex::new(None),
                buffer: Arc::new(Semaphore::new(buffer_bytes)),
                buffer_bytes,
                no_batches: AtomicBool::new(false),
                pull: Pull::new(),
                stop,
            }),
        })
    }

    /// Bytes of deliveries read from the stream that the node has not
    /// taken yet (never more than the buffer's bound, but for one delivery
    /// larger than the bound, which is taken alone).
    pub fn buffered_bytes(&self) -> usize {
        self.inner
            .buffer_bytes
            .saturating_sub(self.inner.buffer.available_permits())
    }

    /// The signed client of the instance in use (for calls the runtime
    /// does not make, such as listing what waits at the connector).
    pub fn client(&self) -> SignedClient {
        self.inner.failover.current().1
    }

    /// Sync delivery, for an app that cannot hold a stream open (a phone
    /// app in the background): no `GetMessageStream` is opened; deliveries
    /// come only when [`Node::sync`](confidant_actors::Node::sync) (through
    /// [`Transport::fetch_waiting`]) pages through what waits with
    /// `GetMessagesPaginated`. Set it before the transport is handed to a
    /// node: once the transport has started receiving, its mode is fixed.
    #[must_use]
    pub fn with_sync_delivery(self) -> Self {
        self.inner.pull.on.store(true, Ordering::Release);
        self
    }

    /// Whether this transport is in sync delivery mode.
    pub fn sync_delivery(&self) -> bool {
        self.inner.pull.on.load(Ordering::Acquire)
    }

    /// The place in the list of URLs of the instance in use.
    #[cfg(test)]
    pub(crate) fn current_instance(&self) -> usize {
        self.inner.failover.current().0
    }

    /// Up to `max` released deliveries, oldest first, back in flight; none
    /// when nothing was released.
    fn take_released(&self, max: usize) -> Option<Vec<Delivery>> {
        let mut deliveries = self.deliveries();
        if deliveries.released.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some((id, delivery)) = deliveries.released.pop_first() else {
                break;
            };
            deliveries.in_flight.insert(id, delivery.clone());
            out.push(delivery);
        }
        Some(out)
    }

    fn deliveries(&self) -> MutexGuard<'_, Deliveries> {
        self.inner
            .deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start_stream(&self) -> mpsc::Receiver<Buffered> {
        let (sender, receiver) = mpsc::channel(BUFFER_COUNT);
        let inner = Arc::downgrade(&self.inner);
        let buffer = Arc::clone(&self.inner.buffer);
        let buffer_bytes = self.inner.buffer_bytes;
        let mut stop = self.inner.stop.subscribe();
        let url = self.inner.url.clone();
        tokio::spawn(async move {
            let mut cursor = 0u64;
            let mut backoff = FIRST_BACKOFF;
            let mut outage = Outage::default();
            loop {
                let Some((index, client)) = inner.upgrade().map(|inner| inner.failover.current())
                else {
                    return;
                };
                let failed = || {
                    if let Some(inner) = inner.upgrade() {
                        inner.failover.failed(index);
                    }
                };
                match client.get_message_stream(cursor).await {
                    Ok(mut stream) => {
                        backoff = FIRST_BACKOFF;
                        outage.ended(&url);
                        loop {
                            let item = tokio::select! {
                                item = stream.next() => item,
                                _ = stop.changed() => return,
                            };
                            match item {
                                Some(Ok(message)) => {
                                    cursor = cursor.max(message.id);
                                    let Some(delivery) = to_delivery(&client, message).await else {
                                        continue;
                                    };
                                    // Room in the buffer first: while it is
                                    // full, the stream is not read.
                                    let bytes = delivery_len(&delivery).clamp(1, buffer_bytes);
                                    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                                    let permit = tokio::select! {
                                        permit = Arc::clone(&buffer).acquire_many_owned(bytes) => permit,
                                        _ = stop.changed() => return,
                                    };
                                    let Ok(permit) = permit else { return };
                                    if sender.send((delivery, permit)).await.is_err() {
                                        return;
                                    }
                                }
                                Some(Err(status)) => {
                                    outage.failed(&url, "the message stream broke", &status);
                                    if transient(&status) {
                                        failed();
                                    }
                                    break;
                                }
                                None => {
                                    tracing::info!("message stream ended; reconnecting");
                                    failed();
                                    break;
                                }
                            }
                        }
                    }
                    Err(status) => {
                        outage.failed(&url, "cannot reach the connector", &status);
                        if transient(&status) {
                            failed();
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        receiver
    }
}

/// Failures in a row to reach the connector, logged with back-off: one
/// short WARN line for the first, then one for the 2nd, 4th, 8th, … (the
/// others at DEBUG), and one INFO line when the connector answers again.
#[derive(Default)]
struct Outage {
    failures: u64,
}

impl Outage {
    fn failed(&mut self, url: &str, what: &str, status: &Status) {
        self.failures += 1;
        let reason = describe_status(status);
        if self.failures.is_power_of_two() {
            tracing::warn!(
                connector = url,
                attempts = self.failures,
                "{what}: {reason}; retrying (logged again after {} more attempts)",
                self.failures
            );
        } else {
            tracing::debug!(
                connector = url,
                attempts = self.failures,
                "{what}: {reason}"
            );
        }
    }

    fn ended(&mut self, url: &str) {
        if self.failures > 0 {
            tracing::info!(
                connector = url,
                attempts = self.failures,
                "the connector answers again"
            );
        }
        self.failures = 0;
    }
}

/// A short, one-line description of a failed call: the status's message
/// and, for a transport failure, its deepest cause (connection refused, no
/// such host, …), without tonic's metadata dump.
pub fn describe_status(status: &Status) -> String {
    let mut text = status.message().to_owned();
    if text.is_empty() {
        text = status.code().description().to_owned();
    }
    let mut cause = None;
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        cause = Some(error.to_string());
        source = error.source();
    }
    match cause {
        Some(cause) if !text.contains(&cause) => format!("{text}: {cause}"),
        _ => text,
    }
}

/// The bytes a delivery holds.
fn delivery_len(delivery: &Delivery) -> usize {
    match &delivery.payload {
        Payload::Envelope(envelope) => envelope.len(),
        Payload::Joined { token } => token.len(),
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

/// A stored message as a delivery; revocation notices are acknowledged here
/// (the runtime has nothing to do with them) and logged.
async fn to_delivery(client: &SignedClient, message: proto::ReceivedMessage) -> Option<Delivery> {
    let connection_id = match ConnectionId::new(message.connection_id.clone()) {
        Ok(id) => id,
        Err(error) => {
            tracing::warn!(%error, "message with an unusable connection id dropped");
            acknowledge_now(client, message.id).await;
            return None;
        }
    };
    let payload = match message.content {
        Some(received_message::Content::Envelope(envelope)) => Payload::Envelope(envelope),
        Some(received_message::Content::ConnectionAdded(added)) => {
            Payload::Joined { token: added.token }
        }
        Some(received_message::Content::ConnectionRevoked(_)) | None => {
            tracing::info!(connection = %connection_id, "the other party revoked the connection");
            acknowledge_now(client, message.id).await;
            return None;
        }
    };
    Some(Delivery {
        id: DeliveryId(message.id),
        connection_id,
        payload,
    })
}

async fn acknowledge_now(client: &SignedClient, id: u64) {
    // On the instance the stream came from; the stream's own failover
    // covers the rest.
    let single = Failover {
        first: client.clone(),
        clients: vec![client.clone()],
        current: AtomicUsize::new(0),
    };
    let result = retry("acknowledge", &single, |client| async move {
        client
            .acknowledge_messages(proto::AcknowledgeMessagesRequest {
                message_ids: vec![id],
            })
            .await
    })
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, "acknowledging a notice failed");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The batch limits `info` announces, or the defaults where it announces
/// none (a connector that predates batches).
fn batch_limits(info: Option<&proto::GetConnectorInfoResponse>) -> (usize, usize) {
    let announced = |value: Option<u64>, default: usize| match value {
        Some(0) | None => default,
        Some(value) => usize::try_from(value).unwrap_or(usize::MAX),
    };
    (
        announced(
            info.map(|info| info.max_batch_messages),
            crate::server::DEFAULT_MAX_BATCH_MESSAGES,
        ),
        announced(
            info.map(|info| info.max_batch_bytes),
            crate::server::DEFAULT_MAX_BATCH_BYTES,
        ),
    )
}

/// One batch to send: entries of one or more connections (each
/// connection's in its order), or one envelope too large for a batch.
enum Chunk {
    Batch(Vec<(usize, Vec<u8>)>),
    Single(usize, Vec<u8>),
}

/// Cuts the connections' envelopes (`bursts[c]` for connection `c`, in
/// order) into batches of at most `max_messages` entries and `max_bytes`
/// of envelopes, connection after connection, so that each connection's
/// envelopes keep their order across batches; an envelope larger than
/// `max_bytes` goes alone, with `SendMessage`, in its place.
fn chunked(bursts: Vec<Vec<Vec<u8>>>, max_messages: usize, max_bytes: usize) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    for (connection, envelopes) in bursts.into_iter().enumerate() {
        for envelope in envelopes {
            if envelope.len() > max_bytes {
                if !current.is_empty() {
                    chunks.push(Chunk::Batch(std::mem::take(&mut current)));
                    bytes = 0;
                }
                chunks.push(Chunk::Single(connection, envelope));
                continue;
            }
            if current.len() >= max_messages.max(1)
                || bytes.saturating_add(envelope.len()) > max_bytes
            {
                chunks.push(Chunk::Batch(std::mem::take(&mut current)));
                bytes = 0;
            }
            bytes = bytes.saturating_add(envelope.len());
            current.push((connection, envelope));
        }
    }
    if !current.is_empty() {
        chunks.push(Chunk::Batch(current));
    }
    chunks
}

/// A send's request for `envelope` on `connection_id`, with its client
/// message id.
fn send_request(connection_id: &ConnectionId, envelope: Vec<u8>) -> proto::SendMessageRequest {
    proto::SendMessageRequest {
        connection_id: connection_id.as_str().to_owned(),
        client_message_id: client_message_id(&envelope),
        message: envelope,
    }
}

impl Inner {
    /// Sends the connections' envelopes (`bursts[c]` on `connections[c]`)
    /// as `SendMessages` batches cut by the connector's announced limits,
    /// entries of several connections sharing a batch, each connection's
    /// in order. A connection's first envelope refused (or failed after
    /// the retries) is its error, and none of its later envelopes is sent;
    /// the other connections go on. Once the connector answers
    /// UNIMPLEMENTED, what is left goes with [`Inner::send_singly`].
    async fn send_batched(
        &self,
        connections: &[ConnectionId],
        bursts: Vec<Vec<Vec<u8>>>,
    ) -> Vec<Result<(), TransportError>> {
        let info = self.failover.current().1.connector_info().await.ok();
        let (max_messages, max_bytes) = batch_limits(info.as_ref());
        let mut outcome: Vec<Result<(), TransportError>> =
            connections.iter().map(|_| Ok(())).collect();
        let failed = |outcome: &[Result<(), TransportError>], connection: usize| {
            outcome.get(connection).is_some_and(Result::is_err)
        };
        let mut chunks = chunked(bursts, max_messages, max_bytes).into_iter();
        while let Some(chunk) = chunks.next() {
            let entries: Vec<(usize, Vec<u8>)> = match chunk {
                Chunk::Single(connection, envelope) => {
                    if !failed(&outcome, connection)
                        && let Some(id) = connections.get(connection)
                        && let Err(error) = self.send_singly(id, vec![envelope]).await
                        && let Some(slot) = outcome.get_mut(connection)
                    {
                        *slot = Err(error);
                    }
                    continue;
                }
                Chunk::Batch(entries) => entries
                    .into_iter()
                    .filter(|(connection, _)| !failed(&outcome, *connection))
                    .collect(),
            };
            if entries.is_empty() {
                continue;
            }
            let request = proto::SendMessagesRequest {
                messages: entries
                    .iter()
                    .filter_map(|(connection, envelope)| {
                        let id = connections.get(*connection)?;
                        Some(send_request(id, envelope.clone()))
                    })
                    .collect(),
            };
            let answered = retry_status("send batch", &self.failover, |client| {
                let request = request.clone();
                async move { client.send_messages(request).await }
            })
            .await;
            let results = match answered {
                Ok(response) if response.results.len() == entries.len() => response.results,
                Ok(response) => {
                    let error = TransportError::Refused(format!(
                        "the connector answered a batch of {} envelopes with {} results",
                        entries.len(),
                        response.results.len()
                    ));
                    fail_all(&mut outcome, &entries, &error);
                    continue;
                }
                Err(status) if status.code() == Code::Unimplemented => {
                    // An older connector, or another implementation: it
                    // stored nothing of the batch.
                    if !self.no_batches.swap(true, Ordering::AcqRel) {
                        tracing::info!(
                            connector = %self.url,
                            "the connector has no SendMessages; sending one envelope per call"
                        );
                    }
                    let mut rest: Vec<Vec<Vec<u8>>> =
                        connections.iter().map(|_| Vec::new()).collect();
                    let left = entries
                        .into_iter()
                        .chain(chunks.flat_map(|chunk| match chunk {
                            Chunk::Batch(entries) => entries,
                            Chunk::Single(connection, envelope) => vec![(connection, envelope)],
                        }));
                    for (connection, envelope) in left {
                        if !failed(&outcome, connection)
                            && let Some(burst) = rest.get_mut(connection)
                        {
                            burst.push(envelope);
                        }
                    }
                    let singles = self.send_each_singly(connections, rest).await;
                    for (slot, result) in outcome.iter_mut().zip(singles) {
                        if slot.is_ok() {
                            *slot = result;
                        }
                    }
                    return outcome;
                }
                Err(status) => {
                    fail_all(&mut outcome, &entries, &to_transport(&status));
                    continue;
                }
            };
            // In order: a connection's first refused entry is its error (its
            // entries after it in this batch may be stored; a later send of
            // them is a retry, stored once by their client message ids).
            for ((connection, _), result) in entries.iter().zip(results) {
                let error = match result.outcome {
                    Some(proto::send_result::Outcome::Id(_)) => continue,
                    Some(proto::send_result::Outcome::Refused(refusal)) => {
                        let code = i32::try_from(refusal.code).map_or(Code::Unknown, Code::from);
                        refusal_to_transport(
                            &Status::new(code, refusal.message),
                            Some(&refusal.reason),
                        )
                    }
                    None => TransportError::Refused(
                        "the connector answered a batch entry with no outcome".into(),
                    ),
                };
                if let Some(slot) = outcome.get_mut(*connection)
                    && slot.is_ok()
                {
                    *slot = Err(error);
                }
            }
        }
        outcome
    }

    /// [`Inner::send_singly`] for each connection's envelopes
    /// (`bursts[c]` on `connections[c]`), connections side by side.
    async fn send_each_singly(
        &self,
        connections: &[ConnectionId],
        bursts: Vec<Vec<Vec<u8>>>,
    ) -> Vec<Result<(), TransportError>> {
        let sends = connections
            .iter()
            .zip(bursts)
            .map(|(connection_id, burst)| self.send_singly(connection_id, burst));
        futures_util::future::join_all(sends).await
    }

    /// One `SendMessage` per envelope, in order, each retried; stops at the
    /// first failure.
    async fn send_singly(
        &self,
        connection_id: &ConnectionId,
        envelopes: Vec<Vec<u8>>,
    ) -> Result<(), TransportError> {
        for envelope in envelopes {
            let request = send_request(connection_id, envelope);
            retry("send", &self.failover, |client| {
                let request = request.clone();
                async move { client.send_message(request).await }
            })
            .await?;
        }
        Ok(())
    }
}

/// Marks every connection of `entries` that has not failed yet as failed
/// with `error`.
fn fail_all(
    outcome: &mut [Result<(), TransportError>],
    entries: &[(usize, Vec<u8>)],
    error: &TransportError,
) {
    for (connection, _) in entries {
        if let Some(slot) = outcome.get_mut(*connection)
            && slot.is_ok()
        {
            *slot = Err(error.clone());
        }
    }
}

/// The client message id of an envelope.
pub fn client_message_id(envelope: &[u8]) -> Vec<u8> {
    let digest: [u8; 32] = Sha256::digest(envelope).into();
    digest
        .first_chunk::<16>()
        .map(|id| id.to_vec())
        .unwrap_or_default()
}

#[async_trait]
impl Transport for ConnectorTransport {
    async fn create_invitation(&self) -> Result<RelayInvitation, TransportError> {
        let response = retry(
            "generate token",
            &self.inner.failover,
            |client| async move {
                client
                    .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
                    .await
            },
        )
        .await?;
        let token = response
            .tokens
            .into_iter()
            .next()
            .ok_or_else(|| TransportError::Refused("the connector returned no token".into()))?;
        Ok(RelayInvitation {
            relay: self.inner.url.clone(),
            token,
        })
    }

    async fn join(&self, token: &str) -> Result<ConnectionId, TransportError> {
        // Retried like any call: the connector answers a join repeated by
        // the same party with the same token with the connection the first
        // one made, so a join whose answer was lost (the instance committed
        // it and died) is asked again, on the next instance, without harm.
        let request = proto::AddConnectionFromTokenRequest {
            token: token.to_owned(),
        };
        let response = retry("join", &self.inner.failover, |client| {
            let request = request.clone();
            async move { client.add_connection_from_token(request).await }
        })
        .await?;
        ConnectionId::new(response.connection_id)
            .map_err(|error| TransportError::Refused(format!("bad connection id: {error}")))
    }

    async fn send(&self, envelopes: Vec<Outgoing>) -> Result<(), TransportError> {
        // Per connection in order.
        let mut order: Vec<ConnectionId> = Vec::new();
        let mut groups: std::collections::HashMap<ConnectionId, Vec<Vec<u8>>> =
            std::collections::HashMap::new();
        for outgoing in envelopes {
            groups
                .entry(outgoing.connection_id.clone())
                .or_insert_with(|| {
                    order.push(outgoing.connection_id.clone());
                    Vec::new()
                })
                .push(outgoing.envelope);
        }
        let bursts: Vec<Vec<Vec<u8>>> = order
            .iter()
            .map(|connection_id| groups.remove(connection_id).unwrap_or_default())
            .collect();
        let inner = &*self.inner;
        let outcome = if inner.no_batches.load(Ordering::Acquire) {
            inner.send_each_singly(&order, bursts).await
        } else {
            inner.send_batched(&order, bursts).await
        };
        // The first failed connection's error, in the order of the burst.
        outcome.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError> {
        let max = max.max(1);
        if let Some(again) = self.take_released(max) {
            return Ok(again);
        }
        let mut incoming = self.inner.incoming.lock().await;
        if incoming.is_none() {
            let pulled = if self.sync_delivery() {
                self.inner
                    .pull
                    .receiver
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
            } else {
                None
            };
            *incoming = Some(match pulled {
                Some(receiver) => receiver,
                None => self.start_stream(),
            });
        }
        let receiver = incoming.as_mut().ok_or(TransportError::Closed)?;
        // Taking a delivery out frees its buffer space (its permit drops),
        // but only once the batch is complete: a permit freed earlier would
        // let the stream refill the buffer while the batch is still being
        // taken, and one batch could then hold more than the buffer.
        let (first, permit) = loop {
            // A release while this waits (or since the check above: the
            // notification keeps a permit) hands the released ones out
            // first; the stream's next item stays where it is.
            tokio::select! {
                biased;
                () = self.inner.released.notified() => {
                    if let Some(again) = self.take_released(max) {
                        return Ok(again);
                    }
                }
                next = receiver.recv() => break next.ok_or(TransportError::Closed)?,
            }
        };
        let mut out = vec![first];
        let mut taken = vec![permit];
        while out.len() < max {
            match receiver.try_recv() {
                Ok((delivery, permit)) => {
                    out.push(delivery);
                    taken.push(permit);
                }
                Err(_) => break,
            }
        }
        drop(taken);
        let mut deliveries = self.deliveries();
        for delivery in &out {
            deliveries.in_flight.insert(delivery.id.0, delivery.clone());
        }
        Ok(out)
    }

    async fn acknowledge(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        for chunk in ids.chunks(10_000) {
            let request = proto::AcknowledgeMessagesRequest {
                message_ids: chunk.iter().map(|id| id.0).collect(),
            };
            retry("acknowledge", &self.inner.failover, |client| {
                let request = request.clone();
                async move { client.acknowledge_messages(request).await }
            })
            .await?;
            let mut deliveries = self.deliveries();
            for id in chunk {
                deliveries.in_flight.remove(&id.0);
            }
        }
        Ok(())
    }

    async fn fetch_waiting(&self) -> Result<Vec<DeliveryId>, TransportError> {
        if !self.sync_delivery() {
            return Err(TransportError::Unsupported(
                "fetching what waits: this transport streams (build it with_sync_delivery)".into(),
            ));
        }
        let inner = &*self.inner;
        let mut cursor = inner.pull.cursor.lock().await;
        let mut stop = inner.stop.subscribe();
        let mut handed = Vec::new();
        // Until a page comes back empty: what arrives meanwhile is fetched
        // too (a page is at most PAGE_LIMIT messages, so this ends when the
        // senders pause).
        loop {
            let request = proto::GetMessagesPaginatedRequest {
                last_seen_message_id: *cursor,
                limit: PAGE_LIMIT,
            };
            let (client, page) = retry("fetch", &inner.failover, |client| async move {
                let page = client.get_messages_paginated(request).await?;
                Ok((client, page))
            })
            .await?;
            if page.messages.is_empty() {
                return Ok(handed);
            }
            for message in page.messages {
                *cursor = (*cursor).max(message.id);
                let Some(delivery) = to_delivery(&client, message).await else {
                    continue;
                };
                let id = delivery.id;
                let bytes = delivery_len(&delivery).clamp(1, inner.buffer_bytes);
                let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                // Room in the buffer first, as for a stream: the node takes
                // deliveries while this goes on.
                let permit = tokio::select! {
                    permit = Arc::clone(&inner.buffer).acquire_many_owned(bytes) => permit,
                    _ = stop.changed() => return Err(TransportError::Closed),
                };
                let permit = permit.map_err(|_| TransportError::Closed)?;
                inner
                    .pull
                    .sender
                    .send((delivery, permit))
                    .await
                    .map_err(|_| TransportError::Closed)?;
                handed.push(id);
            }
        }
    }

    async fn release(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        let released = {
            let mut deliveries = self.deliveries();
            let mut released = false;
            for id in ids {
                if let Some(delivery) = deliveries.in_flight.remove(&id.0) {
                    deliveries.released.insert(id.0, delivery);
                    released = true;
                }
            }
            released
        };
        if released {
            self.inner.released.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const URLS: [&str; 3] = [
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
    ];

    fn signer() -> RequestSigner {
        RequestSigner::from_seed(&[7; 32])
    }

    // Construction connects lazily, so no connector needs to listen.
    #[tokio::test]
    async fn a_transport_over_several_instances_starts_at_a_random_one() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let transport =
                ConnectorTransport::with_instances(&URLS, signer(), &ClientTls::default(), 1024)
                    .unwrap();
            let start = transport.current_instance();
            assert!(start < URLS.len(), "{start}");
            // Wherever it starts, invitations name the first URL.
            assert_eq!(transport.inner.url, URLS[0]);
            seen.insert(start);
        }
        // A fixed start shows one index; a uniform one shows a single
        // index in 64 draws with probability 3 * 3^-64.
        assert!(seen.len() > 1, "every transport started at {seen:?}");
    }

    #[tokio::test]
    async fn a_pinned_start_is_kept_and_an_impossible_one_refused() {
        for start in 0..URLS.len() {
            let transport = ConnectorTransport::with_instances_starting_at(
                &URLS,
                start,
                signer(),
                &ClientTls::default(),
                1024,
            )
            .unwrap();
            assert_eq!(transport.current_instance(), start);
            assert_eq!(transport.inner.url, URLS[0]);
        }
        let refused = ConnectorTransport::with_instances_starting_at(
            &URLS,
            URLS.len(),
            signer(),
            &ClientTls::default(),
            1024,
        );
        assert!(
            matches!(&refused, Err(TransportError::Refused(reason)) if reason.contains("not one of the 3")),
            "{refused:?}"
        );
        let one =
            ConnectorTransport::with_instances(&URLS[..1], signer(), &ClientTls::default(), 1024)
                .unwrap();
        assert_eq!(one.current_instance(), 0);
    }
}
