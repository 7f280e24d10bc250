//! `SendMessages` over real gRPC on loopback, on both backends: a batch is
//! stored in order and delivered, each entry is judged as `SendMessage`
//! judges it alone, a retried batch stores nothing new, the batch limits
//! refuse the whole request, a batch is signed for its own method; and the
//! client transport: batches cut by the announced limits, a refused entry
//! as the error a single send gives, and single sends with a connector
//! that answers UNIMPLEMENTED.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_actors::{Outgoing, Transport as _, TransportError};
use confidant_connector::proto::connector_server::ConnectorServer;
use confidant_connector::proto::{self, connector_client::ConnectorClient, send_result};
use confidant_connector::{
    ConnectorService, ConnectorTransport, Limits, MailboxStore, ServiceLimits, SignedClient,
};
use confidant_core::ConnectionId;
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

#[macro_use]
mod common;

use common::{connect, connector_on, connector_with, signer};

const SEND_MESSAGES: &str = "/confidant.connector.v1.Connector/SendMessages";

fn entry(connection_id: &str, message: &[u8], client_id: &[u8]) -> proto::SendMessageRequest {
    proto::SendMessageRequest {
        connection_id: connection_id.to_owned(),
        message: message.to_vec(),
        client_message_id: client_id.to_vec(),
    }
}

fn batch(messages: Vec<proto::SendMessageRequest>) -> proto::SendMessagesRequest {
    proto::SendMessagesRequest { messages }
}

/// The ids of a batch's answer, which must have stored every entry.
fn ids(response: &proto::SendMessagesResponse) -> Vec<u64> {
    response
        .results
        .iter()
        .map(|result| match &result.outcome {
            Some(send_result::Outcome::Id(id)) => *id,
            other => panic!("refused: {other:?}"),
        })
        .collect()
}

/// An entry's answer as a status code and message (`Ok` for an id).
fn outcome(result: &proto::SendResult) -> Result<u64, (Code, String)> {
    match &result.outcome {
        Some(send_result::Outcome::Id(id)) => Ok(*id),
        Some(send_result::Outcome::Refused(refusal)) => Err((
            Code::from(i32::try_from(refusal.code).unwrap()),
            refusal.message.clone(),
        )),
        None => panic!("an entry without an outcome"),
    }
}

/// The envelopes waiting for `client`, in order, with their ids.
async fn envelopes(client: &SignedClient) -> Vec<(u64, Vec<u8>)> {
    client
        .get_messages_paginated(proto::GetMessagesPaginatedRequest {
            last_seen_message_id: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .messages
        .into_iter()
        .filter_map(|message| match message.content {
            Some(proto::received_message::Content::Envelope(envelope)) => {
                Some((message.id, envelope))
            }
            _ => None,
        })
        .collect()
}

on_both_backends! {
    async fn a_batch_is_stored_in_order_and_delivered(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let info = issuer.connector_info().await.unwrap();
        assert_eq!((info.max_batch_messages, info.max_batch_bytes), (1000, 4 * 1024 * 1024));
        let connection = connect(&issuer, &holder).await;
        let mut stream = issuer.get_message_stream(0).await.unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(
            notice.content,
            Some(proto::received_message::Content::ConnectionAdded(_))
        ));
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|index| vec![index; 10 + usize::from(index)]).collect();
        let response = holder
            .send_messages(batch(
                bodies
                    .iter()
                    .enumerate()
                    .map(|(index, body)| entry(&connection, body, format!("id-{index}").as_bytes()))
                    .collect(),
            ))
            .await
            .unwrap();
        let stored = ids(&response);
        assert_eq!(stored.len(), 5);
        assert!(stored.windows(2).all(|pair| pair[0] < pair[1]), "{stored:?}");
        // The open stream delivers them, in order.
        for (id, body) in stored.iter().zip(&bodies) {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("delivered at once")
                .unwrap()
                .unwrap();
            assert_eq!(message.id, *id);
            assert_eq!(message.connection_id, connection);
            assert_eq!(
                message.content,
                Some(proto::received_message::Content::Envelope(body.clone()))
            );
        }
        connector.stop().await;
    }

    async fn each_entry_is_judged_as_send_message_would_judge_it_alone(place: Place) {
        let limits = Limits { max_message_len: 100, ..Limits::default() };
        let connector = connector_on(Arc::clone(&place), limits).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let third = SignedClient::new(&connector.url, signer(3)).unwrap();
        let connection = connect(&issuer, &holder).await;
        let others = connect(&issuer, &third).await;
        let revoked = connect(&issuer, &holder).await;
        issuer
            .revoke_connection(proto::RevokeConnectionRequest { connection_id: revoked.clone() })
            .await
            .unwrap();
        let entries = vec![
            entry(&connection, b"first", b""),
            entry("c-unknown", b"x", b""),
            entry(&others, b"not the holder's", b""),
            entry(&connection, &[0; 101], b""),
            entry(&connection, b"", b""),
            entry(&connection, b"long id", &[7; 65]),
            entry(&revoked, b"late", b""),
            entry(&connection, b"second", b"id-2"),
        ];
        let response = holder.send_messages(batch(entries.clone())).await.unwrap();
        assert_eq!(response.results.len(), entries.len());
        let answers: Vec<_> = response.results.iter().map(outcome).collect();
        let codes: Vec<Option<Code>> =
            answers.iter().map(|answer| answer.as_ref().err().map(|(code, _)| *code)).collect();
        assert_eq!(
            codes,
            [
                None,
                Some(Code::NotFound),
                Some(Code::PermissionDenied),
                Some(Code::ResourceExhausted),
                Some(Code::InvalidArgument),
                Some(Code::InvalidArgument),
                Some(Code::FailedPrecondition),
                None,
            ]
        );
        // Each refusal is what SendMessage answers for that entry alone.
        for (entry, answer) in entries.iter().zip(&answers) {
            if let Err((code, message)) = answer {
                let alone = holder.send_message(entry.clone()).await.unwrap_err();
                assert_eq!((alone.code(), alone.message()), (*code, message.as_str()));
            }
        }
        // The others were stored, in order.
        let waiting = envelopes(&issuer).await;
        assert_eq!(
            waiting,
            vec![
                (*answers[0].as_ref().unwrap(), b"first".to_vec()),
                (*answers[7].as_ref().unwrap(), b"second".to_vec()),
            ]
        );
        connector.stop().await;
    }

    async fn a_retried_batch_returns_the_same_ids_and_a_reused_id_is_refused_alone(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection = connect(&issuer, &holder).await;
        let request = batch(vec![
            entry(&connection, b"one", b"a"),
            entry(&connection, b"two", b"b"),
            entry(&connection, b"three", b"c"),
        ]);
        let first = ids(&holder.send_messages(request.clone()).await.unwrap());
        let pending = connector.mailbox.pending(&issuer.public_key()).await.unwrap();
        // Signed again (a fresh nonce), as a client retries.
        let again = ids(&holder.send_messages(request).await.unwrap());
        assert_eq!(again, first);
        assert_eq!(connector.mailbox.pending(&issuer.public_key()).await.unwrap(), pending);
        let mixed = holder
            .send_messages(batch(vec![
                entry(&connection, b"not two", b"b"),
                entry(&connection, b"four", b"d"),
            ]))
            .await
            .unwrap();
        let (code, message) = outcome(&mixed.results[0]).unwrap_err();
        assert_eq!(code, Code::AlreadyExists, "{message}");
        assert!(outcome(&mixed.results[1]).unwrap() > first[2]);
        assert_eq!(connector.mailbox.pending(&issuer.public_key()).await.unwrap(), pending + 1);
        connector.stop().await;
    }

    async fn the_batch_limits_refuse_the_whole_request(place: Place) {
        let service = ServiceLimits {
            max_batch_messages: 3,
            max_batch_bytes: 100,
            ..ServiceLimits::default()
        };
        let connector = connector_with(Arc::clone(&place), Limits::default(), service).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let info = holder.connector_info().await.unwrap();
        assert_eq!((info.max_batch_messages, info.max_batch_bytes), (3, 100));
        let connection = connect(&issuer, &holder).await;
        let pending = connector.mailbox.pending(&issuer.public_key()).await.unwrap();
        let refusals = [
            (batch(vec![]), "at least one"),
            (batch((0..4).map(|_| entry(&connection, b"m", b"")).collect()), "max_batch_messages"),
            (
                batch(vec![entry(&connection, &[1; 60], b""), entry(&connection, &[2; 41], b"")]),
                "max_batch_bytes",
            ),
        ];
        for (request, reason) in refusals {
            let refused = holder.send_messages(request).await.unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
            assert!(refused.message().contains(reason), "{refused:?}");
        }
        assert_eq!(connector.mailbox.pending(&issuer.public_key()).await.unwrap(), pending);
        // At the limits exactly: accepted.
        let response = holder
            .send_messages(batch(vec![
                entry(&connection, &[1; 50], b""),
                entry(&connection, &[2; 25], b""),
                entry(&connection, &[3; 25], b""),
            ]))
            .await
            .unwrap();
        assert_eq!(ids(&response).len(), 3);

        // The transport cuts a burst by these limits (and sends an envelope
        // above the batch bytes alone), in order.
        let transport = ConnectorTransport::new(&connector.url, signer(2)).unwrap();
        let id = ConnectionId::new(connection.clone()).unwrap();
        let mut bodies: Vec<Vec<u8>> = (0..10u8).map(|index| vec![index; 40]).collect();
        bodies.insert(5, vec![99; 150]);
        transport
            .send(
                bodies
                    .iter()
                    .map(|body| Outgoing { connection_id: id.clone(), envelope: body.clone() })
                    .collect(),
            )
            .await
            .unwrap();
        let waiting = envelopes(&issuer).await;
        let sent: Vec<Vec<u8>> = waiting.into_iter().skip(3).map(|(_, body)| body).collect();
        assert_eq!(sent, bodies);
        connector.stop().await;
    }

    async fn a_batch_signed_for_another_method_is_refused(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection = connect(&issuer, &holder).await;
        let pending = connector.mailbox.pending(&issuer.public_key()).await.unwrap();
        let audience = connector.mailbox.audience();
        let mut raw = ConnectorClient::connect(connector.url.clone()).await.unwrap();
        let request = batch(vec![entry(&connection, b"signed for SendMessage", b"")]);
        let wrong = signer(2)
            .sign(&audience, "/confidant.connector.v1.Connector/SendMessage", request.clone())
            .unwrap();
        let refused = raw.send_messages(wrong).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        // Unsigned: refused too.
        let unsigned = raw.send_messages(request.clone()).await.unwrap_err();
        assert_eq!(unsigned.code(), Code::Unauthenticated, "{unsigned:?}");
        assert_eq!(connector.mailbox.pending(&issuer.public_key()).await.unwrap(), pending);
        // Signed for its own method: stored.
        let right = signer(2).sign(&audience, SEND_MESSAGES, request).unwrap();
        let response = raw.send_messages(right).await.unwrap().into_inner();
        assert_eq!(ids(&response).len(), 1);
        connector.stop().await;
    }

    async fn a_transport_sends_singly_to_a_connector_without_batches(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let old = OldConnector::start(Arc::clone(&connector.mailbox)).await;
        let issuer = SignedClient::new(&old.url, signer(1)).unwrap();
        let holder = SignedClient::new(&old.url, signer(2)).unwrap();
        let first = connect(&issuer, &holder).await;
        let second = connect(&issuer, &holder).await;
        let transport = ConnectorTransport::new(&old.url, signer(2)).unwrap();
        let outgoing = |round: u8| -> Vec<Outgoing> {
            (0..6u8)
                .map(|index| Outgoing {
                    connection_id: ConnectionId::new(if index % 2 == 0 { &first } else { &second }.clone())
                        .unwrap(),
                    envelope: vec![round, index],
                })
                .collect()
        };
        transport.send(outgoing(1)).await.unwrap();
        // The two connections' first batches went side by side: each may
        // have met UNIMPLEMENTED before the other remembered it.
        let tried = old.batches.load(Ordering::Acquire);
        assert!((1..=2).contains(&tried), "{tried}");
        transport.send(outgoing(2)).await.unwrap();
        // Remembered: every later envelope sent with SendMessage alone.
        assert_eq!(old.batches.load(Ordering::Acquire), tried);
        assert_eq!(old.singles.load(Ordering::Acquire), 12);
        let waiting = envelopes(&issuer).await;
        assert_eq!(waiting.len(), 12);
        for connection in [&first, &second] {
            let expected: Vec<Vec<u8>> = [1u8, 2]
                .iter()
                .flat_map(|round| {
                    (0..6u8)
                        .filter(|index| (index % 2 == 0) == (connection == &first))
                        .map(move |index| vec![*round, index])
                })
                .collect();
            let page = issuer
                .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                    last_seen_message_id: 0,
                    limit: 1000,
                })
                .await
                .unwrap();
            let got: Vec<Vec<u8>> = page
                .messages
                .into_iter()
                .filter(|message| &message.connection_id == connection)
                .filter_map(|message| match message.content {
                    Some(proto::received_message::Content::Envelope(envelope)) => Some(envelope),
                    _ => None,
                })
                .collect();
            assert_eq!(got, expected, "in order on each connection");
        }
        old.stop().await;
        connector.stop().await;
    }

    async fn connections_share_batches_and_a_refused_one_stops_alone(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let first = connect(&issuer, &holder).await;
        let revoked = connect(&issuer, &holder).await;
        let second = connect(&issuer, &holder).await;
        issuer
            .revoke_connection(proto::RevokeConnectionRequest { connection_id: revoked.clone() })
            .await
            .unwrap();
        let transport = ConnectorTransport::new(&connector.url, signer(2)).unwrap();
        let on = |connection: &str, body: &[u8]| Outgoing {
            connection_id: ConnectionId::new(connection.to_owned()).unwrap(),
            envelope: body.to_vec(),
        };
        let refused = transport
            .send(vec![
                on(&first, b"a1"),
                on(&revoked, b"r1"),
                on(&second, b"b1"),
                on(&first, b"a2"),
                on(&revoked, b"r2"),
                on(&second, b"b2"),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, TransportError::Refused(text) if text.contains("revoked")),
            "{refused:?}"
        );
        // The other connections' envelopes were all sent, each in order (in
        // one batch, connection after connection).
        let waiting: Vec<Vec<u8>> = envelopes(&issuer).await.into_iter().map(|(_, body)| body).collect();
        assert_eq!(waiting, [b"a1", b"a2", b"b1", b"b2"].map(|body| body.to_vec()));
        connector.stop().await;
    }

    async fn a_refused_entry_is_the_error_a_single_send_gives(place: Place) {
        let limits = Limits { max_message_len: 100, ..Limits::default() };
        let connector = connector_on(Arc::clone(&place), limits).await;
        let old = OldConnector::start(Arc::clone(&connector.mailbox)).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let open = connect(&issuer, &holder).await;
        let revoked = connect(&issuer, &holder).await;
        issuer
            .revoke_connection(proto::RevokeConnectionRequest { connection_id: revoked.clone() })
            .await
            .unwrap();
        let batching = ConnectorTransport::new(&connector.url, signer(2)).unwrap();
        let single = ConnectorTransport::new(&old.url, signer(2)).unwrap();
        let on = |connection: &str, body: Vec<u8>| Outgoing {
            connection_id: ConnectionId::new(connection.to_owned()).unwrap(),
            envelope: body,
        };
        for burst in [
            vec![on(&revoked, b"late".to_vec())],
            vec![on(&open, b"fine".to_vec()), on(&open, vec![0; 101])],
        ] {
            let batched = batching.send(burst.clone()).await.unwrap_err();
            let alone = single.send(burst).await.unwrap_err();
            assert_eq!(batched, alone);
            assert!(matches!(batched, TransportError::Refused(_)), "{batched:?}");
        }
        assert!(old.batches.load(Ordering::Acquire) >= 1);
        // The envelope before the refused one was stored (once: the second
        // transport's send of it was a retry by its client message id).
        let waiting = envelopes(&issuer).await;
        assert_eq!(waiting.iter().filter(|(_, body)| body == b"fine").count(), 1);
        old.stop().await;
        connector.stop().await;
    }
}

/// A connector that predates `SendMessages`: the real service, but
/// `SendMessages` answers UNIMPLEMENTED. Counts the calls of both sends.
struct OldConnector {
    url: String,
    batches: Arc<AtomicUsize>,
    singles: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct OldService {
    inner: ConnectorService,
    batches: Arc<AtomicUsize>,
    singles: Arc<AtomicUsize>,
}

impl OldConnector {
    async fn start(store: Arc<dyn MailboxStore>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let batches = Arc::new(AtomicUsize::new(0));
        let singles = Arc::new(AtomicUsize::new(0));
        let service = OldService {
            inner: ConnectorService::new(store, stopped.clone()),
            batches: Arc::clone(&batches),
            singles: Arc::clone(&singles),
        };
        let mut stopped = stopped;
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ConnectorServer::new(service))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move {
                        let _ = stopped.changed().await;
                    },
                )
                .await
                .unwrap();
        });
        Self {
            url,
            batches,
            singles,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tonic::async_trait]
impl proto::connector_server::Connector for OldService {
    async fn get_connector_info(
        &self,
        request: Request<proto::GetConnectorInfoRequest>,
    ) -> Result<Response<proto::GetConnectorInfoResponse>, Status> {
        // As an older connector: no batch limits announced.
        let mut info = self.inner.get_connector_info(request).await?;
        info.get_mut().max_batch_messages = 0;
        info.get_mut().max_batch_bytes = 0;
        Ok(info)
    }

    async fn generate_connection_token(
        &self,
        request: Request<proto::GenerateConnectionTokenRequest>,
    ) -> Result<Response<proto::GenerateConnectionTokenResponse>, Status> {
        self.inner.generate_connection_token(request).await
    }

    async fn get_connection_token_info(
        &self,
        request: Request<proto::GetConnectionTokenInfoRequest>,
    ) -> Result<Response<proto::GetConnectionTokenInfoResponse>, Status> {
        self.inner.get_connection_token_info(request).await
    }

    async fn add_connection_from_token(
        &self,
        request: Request<proto::AddConnectionFromTokenRequest>,
    ) -> Result<Response<proto::AddConnectionFromTokenResponse>, Status> {
        self.inner.add_connection_from_token(request).await
    }

    async fn send_message(
        &self,
        request: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::SendMessageResponse>, Status> {
        self.singles.fetch_add(1, Ordering::AcqRel);
        self.inner.send_message(request).await
    }

    async fn send_messages(
        &self,
        _request: Request<proto::SendMessagesRequest>,
    ) -> Result<Response<proto::SendMessagesResponse>, Status> {
        self.batches.fetch_add(1, Ordering::AcqRel);
        Err(Status::unimplemented(
            "this connector predates SendMessages",
        ))
    }

    async fn get_messages_paginated(
        &self,
        request: Request<proto::GetMessagesPaginatedRequest>,
    ) -> Result<Response<proto::GetMessagesPaginatedResponse>, Status> {
        self.inner.get_messages_paginated(request).await
    }

    type GetMessageStreamStream =
        <ConnectorService as proto::connector_server::Connector>::GetMessageStreamStream;

    async fn get_message_stream(
        &self,
        request: Request<proto::GetMessageStreamRequest>,
    ) -> Result<Response<Self::GetMessageStreamStream>, Status> {
        self.inner.get_message_stream(request).await
    }

    async fn acknowledge_messages(
        &self,
        request: Request<proto::AcknowledgeMessagesRequest>,
    ) -> Result<Response<proto::AcknowledgeMessagesResponse>, Status> {
        self.inner.acknowledge_messages(request).await
    }

    async fn revoke_connection(
        &self,
        request: Request<proto::RevokeConnectionRequest>,
    ) -> Result<Response<proto::RevokeConnectionResponse>, Status> {
        self.inner.revoke_connection(request).await
    }
}
