//! The gRPC service.

use crate::auth::{self, AuthError, PartyKey, Verified};
use crate::mailbox::{Content, MailboxError, MailboxStore, Reply, StoredMessage};
use crate::proto::connector_server::{Connector, ConnectorServer};
use crate::proto::{self, received_message};
use base64::Engine as _;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, watch};
use tonic::{Request, Response, Status};

/// The gRPC path prefix of the connector's methods.
pub const SERVICE_PATH: &str = "/confidant.connector.v1.Connector/";

/// Messages fetched per read while streaming.
const STREAM_PAGE: usize = 256;

/// Wakes the streams of a recipient when something is stored for it.
#[derive(Default)]
struct Notifier {
    waiting: Mutex<HashMap<PartyKey, Arc<Notify>>>,
}

impl Notifier {
    fn of(&self, party: &PartyKey) -> Arc<Notify> {
        let mut waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(waiting.entry(*party).or_default())
    }

    fn wake(&self, party: &PartyKey) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(notify) = waiting.get(party) {
            notify.notify_waiters();
        }
    }
}

/// The connector service over a [`MailboxStore`].
pub struct ConnectorService {
    store: Arc<dyn MailboxStore>,
    notifier: Arc<Notifier>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for ConnectorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorService").finish_non_exhaustive()
    }
}

impl ConnectorService {
    /// A service over `store`. Open streams end when `shutdown` turns true.
    pub fn new(store: Arc<dyn MailboxStore>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            store,
            notifier: Arc::default(),
            shutdown,
        }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> ConnectorServer<Self> {
        ConnectorServer::new(self)
    }
}

fn auth_status(error: AuthError) -> Status {
    Status::unauthenticated(error.to_string())
}

fn mailbox_status(error: MailboxError) -> Status {
    let message = error.to_string();
    match error {
        MailboxError::UnknownToken | MailboxError::UnknownConnection => Status::not_found(message),
        MailboxError::TokenUsed | MailboxError::Revoked => Status::failed_precondition(message),
        MailboxError::NotAParty => Status::permission_denied(message),
        MailboxError::TooLarge { .. } | MailboxError::MailboxFull { .. } => {
            Status::resource_exhausted(message)
        }
        MailboxError::NonceReplayed => Status::unauthenticated(message),
        MailboxError::Invalid(_) => Status::invalid_argument(message),
        MailboxError::Storage(_) => {
            tracing::error!(error = %message, "storage failure");
            Status::unavailable("the connector's storage failed; retry later")
        }
    }
}

async fn settle<T>(reply: Reply<T>) -> Result<T, Status> {
    reply
        .await
        .map_err(|_| Status::unavailable("the connector is shutting down"))?
        .map_err(mailbox_status)
}

/// Checks a request's signature; the nonce is recorded by the store.
fn check<T: prost::Message>(request: &Request<T>, method: &str) -> Result<Verified, Status> {
    let path = format!("{SERVICE_PATH}{method}");
    auth::verify(
        request.metadata(),
        &path,
        &request.get_ref().encode_to_vec(),
        auth::now_ms(),
    )
    .map_err(auth_status)
}

fn party_label(party: &PartyKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&party[..6])
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

async fn read<T, F>(store: &Arc<dyn MailboxStore>, work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&dyn MailboxStore) -> Result<T, MailboxError> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || work(&*store))
        .await
        .map_err(|_| Status::internal("a storage task failed"))?
        .map_err(mailbox_status)
}

type MessageStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<proto::ReceivedMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Connector for ConnectorService {
    async fn generate_connection_token(
        &self,
        request: Request<proto::GenerateConnectionTokenRequest>,
    ) -> Result<Response<proto::GenerateConnectionTokenResponse>, Status> {
        let verified = check(&request, "GenerateConnectionToken")?;
        let count = match request.get_ref().count {
            0 => 1,
            count @ 1..=100 => count,
            _ => return Err(Status::invalid_argument("count must be from 1 to 100")),
        };
        let tokens = (0..count)
            .map(|_| new_token())
            .collect::<Result<Vec<_>, _>>()?;
        settle(
            self.store
                .create_tokens(verified, tokens.clone(), auth::now_ms()),
        )
        .await?;
        tracing::info!(party = %party_label(&verified.party), count, "tokens created");
        Ok(Response::new(proto::GenerateConnectionTokenResponse {
            tokens,
        }))
    }

    async fn get_connection_token_info(
        &self,
        request: Request<proto::GetConnectionTokenInfoRequest>,
    ) -> Result<Response<proto::GetConnectionTokenInfoResponse>, Status> {
        let token = request.into_inner().token;
        let info = read(&self.store, move |store| store.token_info(&token))
            .await?
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
        let verified = check(&request, "AddConnectionFromToken")?;
        let token = request.into_inner().token;
        if token.is_empty() || token.len() > 64 {
            return Err(Status::invalid_argument("malformed token"));
        }
        let connection_id = format!("c-{}", new_token()?);
        let joined = settle(
            self.store
                .use_token(verified, token, connection_id, auth::now_ms()),
        )
        .await?;
        self.notifier.wake(&joined.creator);
        tracing::info!(connection = %joined.connection_id, party = %party_label(&verified.party), "connection added");
        Ok(Response::new(proto::AddConnectionFromTokenResponse {
            connection_id: joined.connection_id,
        }))
    }

    async fn send_message(
        &self,
        request: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::SendMessageResponse>, Status> {
        let verified = check(&request, "SendMessage")?;
        let request = request.into_inner();
        if request.client_message_id.len() > 64 {
            return Err(Status::invalid_argument(
                "client_message_id must be at most 64 bytes",
            ));
        }
        let client_id =
            (!request.client_message_id.is_empty()).then_some(request.client_message_id);
        let sent = settle(self.store.send(
            verified,
            request.connection_id.clone(),
            request.message,
            client_id,
            auth::now_ms(),
        ))
        .await?;
        if !sent.duplicate {
            self.notifier.wake(&sent.recipient);
        }
        tracing::debug!(connection = %request.connection_id, id = sent.id, duplicate = sent.duplicate, "message stored");
        Ok(Response::new(proto::SendMessageResponse { id: sent.id }))
    }

    async fn get_messages_paginated(
        &self,
        request: Request<proto::GetMessagesPaginatedRequest>,
    ) -> Result<Response<proto::GetMessagesPaginatedResponse>, Status> {
        let verified = check(&request, "GetMessagesPaginated")?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 100,
            limit @ 1..=1000 => limit as usize,
            _ => return Err(Status::invalid_argument("limit must be from 1 to 1000")),
        };
        settle(self.store.use_nonce(verified, auth::now_ms())).await?;
        let party = verified.party;
        let after = request.last_seen_message_id;
        let messages = read(&self.store, move |store| {
            store.messages_after(&party, after, limit)
        })
        .await?;
        Ok(Response::new(proto::GetMessagesPaginatedResponse {
            messages: messages.into_iter().map(to_proto).collect(),
        }))
    }

    type GetMessageStreamStream = MessageStream;

    async fn get_message_stream(
        &self,
        request: Request<proto::GetMessageStreamRequest>,
    ) -> Result<Response<MessageStream>, Status> {
        let verified = check(&request, "GetMessageStream")?;
        settle(self.store.use_nonce(verified, auth::now_ms())).await?;
        let party = verified.party;
        let mut cursor = request.get_ref().last_seen_message_id;
        let notify = self.notifier.of(&party);
        let store = Arc::clone(&self.store);
        let mut shutdown = self.shutdown.clone();
        let (sender, receiver) = mpsc::channel(STREAM_PAGE);
        tracing::info!(party = %party_label(&party), cursor, "stream opened");
        tokio::spawn(async move {
            loop {
                // Register before reading, so a message stored in between
                // still wakes this stream.
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let after = cursor;
                let page = read(&store, move |store| {
                    store.messages_after(&party, after, STREAM_PAGE)
                })
                .await;
                let page = match page {
                    Ok(page) => page,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let full = page.len() == STREAM_PAGE;
                for message in page {
                    cursor = message.id;
                    if sender.send(Ok(to_proto(message))).await.is_err() {
                        return; // the client went away
                    }
                }
                if full {
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
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn acknowledge_messages(
        &self,
        request: Request<proto::AcknowledgeMessagesRequest>,
    ) -> Result<Response<proto::AcknowledgeMessagesResponse>, Status> {
        let verified = check(&request, "AcknowledgeMessages")?;
        let ids = request.into_inner().message_ids;
        if ids.len() > 10_000 {
            return Err(Status::invalid_argument(
                "at most 10,000 ids per acknowledgement",
            ));
        }
        let deleted = settle(self.store.acknowledge(verified, ids, auth::now_ms())).await?;
        tracing::debug!(party = %party_label(&verified.party), deleted, "messages acknowledged and deleted");
        Ok(Response::new(proto::AcknowledgeMessagesResponse {
            deleted,
        }))
    }

    async fn revoke_connection(
        &self,
        request: Request<proto::RevokeConnectionRequest>,
    ) -> Result<Response<proto::RevokeConnectionResponse>, Status> {
        let verified = check(&request, "RevokeConnection")?;
        let connection_id = request.into_inner().connection_id;
        let other = settle(
            self.store
                .revoke(verified, connection_id.clone(), auth::now_ms()),
        )
        .await?;
        self.notifier.wake(&other);
        tracing::info!(connection = %connection_id, "connection revoked");
        Ok(Response::new(proto::RevokeConnectionResponse {}))
    }
}

/// Serves the connector in plaintext on `listener` until `shutdown`
/// resolves; then stops accepting, ends open streams, and returns once
/// in-flight requests are answered. Plaintext is for loopback and tests;
/// see [`serve_with_tls`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MailboxStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with_tls(listener, store, None, shutdown).await
}

/// [`serve`], over TLS with `tls`'s identity when it is given (only TLS is
/// accepted then: a plaintext client fails its handshake).
pub async fn serve_with_tls(
    listener: tokio::net::TcpListener,
    store: Arc<dyn MailboxStore>,
    tls: Option<&crate::tls::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop, stopped) = watch::channel(false);
    let service = ConnectorService::new(store, stopped);
    // Small answers must not wait for Nagle's algorithm (tonic's own
    // `tcp_nodelay` setting does not reach a listener handed in like this).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.config())?;
    }
    builder
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await
}
