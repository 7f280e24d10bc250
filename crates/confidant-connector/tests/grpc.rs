//! The connector over real gRPC on loopback: authentication, parties,
//! idempotent sends, acknowledgement, limits, and two runtime nodes talking
//! through it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_actors::{Event, Node, NodeConfig};
use confidant_connector::auth::{NONCE_HEADER, PUBLIC_KEY_HEADER, SIGNATURE_HEADER};
use confidant_connector::proto::{self, connector_client::ConnectorClient};
use confidant_connector::{ConnectorTransport, Limits, SignedClient};
use confidant_core::SuiteRegistry;
use confidant_store::MemoryStore;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

#[macro_use]
mod common;

use common::{connector_on, signer};

fn suites() -> SuiteRegistry {
    let mut suites = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut suites).unwrap();
    confidant_chacha20poly1305::register(&mut suites).unwrap();
    suites
}

async fn node(url: &str, seed: u8) -> (Node, confidant_actors::Events) {
    Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .suites(suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(ConnectorTransport::new(url, signer(seed)).unwrap())
        .config(NodeConfig::default())
        .start()
        .await
        .unwrap()
}

async fn next_message(events: &mut confidant_actors::Events) -> confidant_actors::IncomingMessage {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event in time")
            .expect("the node runs");
        if let Event::Message(message) = event {
            return message;
        }
    }
}

on_both_backends! {
    async fn requests_must_be_signed_fresh_and_by_a_party(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let stranger = SignedClient::new(&connector.url, signer(3)).unwrap();

        let token = issuer
            .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
            .await
            .unwrap()
            .tokens
            .remove(0);
        // 16 random bytes, base64url.
        assert_eq!(token.len(), 22);
        let info = stranger.get_connection_token_info(&token).await.unwrap();
        assert_eq!(info.creator_public_key, issuer.public_key().to_vec());
        assert!(!info.used);
        let connection_id = holder
            .add_connection_from_token(proto::AddConnectionFromTokenRequest {
                token: token.clone(),
            })
            .await
            .unwrap()
            .connection_id;
        // Single use.
        let again = stranger
            .add_connection_from_token(proto::AddConnectionFromTokenRequest {
                token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
        assert!(
            stranger
                .get_connection_token_info(&token)
                .await
                .unwrap()
                .used
        );

        // Unsigned: refused.
        let mut raw = ConnectorClient::connect(connector.url.clone())
            .await
            .unwrap();
        let unsigned = raw
            .send_message(proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: b"x".to_vec(),
                client_message_id: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(unsigned.code(), Code::Unauthenticated, "{unsigned:?}");

        // A replayed request (same nonce and signature): refused the second time.
        let request = signer(2)
            .sign(
                &connector.mailbox.audience(),
                "/confidant.connector.v1.Connector/SendMessage",
                proto::SendMessageRequest {
                    connection_id: connection_id.clone(),
                    message: b"once".to_vec(),
                    client_message_id: vec![],
                },
            )
            .unwrap();
        let metadata = request.metadata().clone();
        let body = request.get_ref().clone();
        raw.send_message(request).await.unwrap();
        let mut replay = tonic::Request::new(body);
        for key in [PUBLIC_KEY_HEADER, NONCE_HEADER, SIGNATURE_HEADER] {
            replay
                .metadata_mut()
                .insert(key, metadata.get(key).unwrap().clone());
        }
        let replayed = raw.send_message(replay).await.unwrap_err();
        assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");
        assert!(replayed.message().contains("nonce"), "{replayed:?}");

        // A signature over other bytes (tampered request): refused.
        let request = signer(2)
            .sign(
                &connector.mailbox.audience(),
                "/confidant.connector.v1.Connector/SendMessage",
                proto::SendMessageRequest {
                    connection_id: connection_id.clone(),
                    message: b"original".to_vec(),
                    client_message_id: vec![],
                },
            )
            .unwrap();
        let (metadata, _, mut body) = request.into_parts();
        body.message = b"tampered".to_vec();
        let tampered = raw
            .send_message(tonic::Request::from_parts(
                metadata,
                Default::default(),
                body,
            ))
            .await
            .unwrap_err();
        assert_eq!(tampered.code(), Code::Unauthenticated);

        // A stranger may neither send on the connection nor revoke it.
        let denied = stranger
            .send_message(proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: b"hi".to_vec(),
                client_message_id: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied = stranger
            .revoke_connection(proto::RevokeConnectionRequest {
                connection_id: connection_id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        // And reads only its own (empty) mailbox.
        let theirs = stranger
            .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: 0,
                limit: 0,
            })
            .await
            .unwrap();
        assert!(theirs.messages.is_empty());

        // The issuer sees the join notice and the one message that got in.
        let mine = issuer
            .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .messages;
        assert_eq!(mine.len(), 2);
        assert!(matches!(
            mine[0].content,
            Some(proto::received_message::Content::ConnectionAdded(ref added)) if added.token == token
        ));
        assert_eq!(
            mine[1].content,
            Some(proto::received_message::Content::Envelope(b"once".to_vec()))
        );
        // Pagination by cursor.
        let after = issuer
            .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: mine[0].id,
                limit: 10,
            })
            .await
            .unwrap()
            .messages;
        assert_eq!(after, mine[1..]);
        connector.stop().await;
    }

    async fn sends_are_idempotent_limits_are_clear_and_acknowledged_messages_are_deleted(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits {
            max_message_len: 100,
            max_pending_per_recipient: 3,
            ..Limits::default()
        })
        .await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection_id = common::connect(&issuer, &holder).await;
        let send = |message: &[u8], client_id: &[u8]| {
            holder.send_message(proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: message.to_vec(),
                client_message_id: client_id.to_vec(),
            })
        };
        let first = send(b"one", b"id-1").await.unwrap().id;
        // A retry with the same client id stores nothing new.
        assert_eq!(send(b"one", b"id-1").await.unwrap().id, first);
        send(b"two", b"").await.unwrap();
        // Too large: a clear error.
        let large = send(&[0u8; 101], b"").await.unwrap_err();
        assert_eq!(large.code(), Code::ResourceExhausted);
        assert!(large.message().contains("101"), "{large:?}");
        // The issuer has the join notice and two messages: one more fits.
        send(b"three", b"").await.unwrap_err(); // 3 waiting: notice + 2
        let full = send(b"four", b"").await.unwrap_err();
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert!(full.message().contains("full"), "{full:?}");
        // The reason, machine-readable, in the status's metadata.
        let reason = |status: &tonic::Status| {
            status
                .metadata()
                .get(confidant_connector::REASON_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(reason(&full).as_deref(), Some("mailbox_full"), "{full:?}");
        assert_eq!(reason(&large).as_deref(), Some("too_large"), "{large:?}");
        // The transport reports a full mailbox as its own kind, for a batch
        // and for single sends alike.
        {
            use confidant_actors::{Outgoing, Transport as _, TransportError};
            let outgoing = vec![Outgoing {
                connection_id: confidant_core::ConnectionId::new(connection_id.clone()).unwrap(),
                envelope: b"five".to_vec(),
            }];
            let transport = ConnectorTransport::new(&connector.url, signer(2)).unwrap();
            let batched = transport.send(outgoing.clone()).await.unwrap_err();
            assert!(matches!(batched, TransportError::MailboxFull(_)), "{batched:?}");
            let raw = SignedClient::new(&connector.url, signer(2)).unwrap();
            let batch = raw
                .send_messages(proto::SendMessagesRequest {
                    messages: vec![proto::SendMessageRequest {
                        connection_id: connection_id.clone(),
                        message: b"six".to_vec(),
                        client_message_id: Vec::new(),
                    }],
                })
                .await
                .unwrap();
            match &batch.results[0].outcome {
                Some(proto::send_result::Outcome::Refused(refusal)) => {
                    assert_eq!(refusal.reason, "mailbox_full", "{refusal:?}");
                }
                other => panic!("a full mailbox refuses the entry: {other:?}"),
            }
        }
        let issuer_key = issuer.public_key();
        assert_eq!(connector.mailbox.pending(&issuer_key).await.unwrap(), 3);

        // Acknowledging deletes, and only the recipient's acknowledgement
        // counts.
        let waiting = issuer
            .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .messages;
        let ids: Vec<u64> = waiting.iter().map(|message| message.id).collect();
        let by_sender = holder
            .acknowledge_messages(proto::AcknowledgeMessagesRequest {
                message_ids: ids.clone(),
            })
            .await
            .unwrap();
        assert_eq!(by_sender.deleted, 0);
        let by_recipient = issuer
            .acknowledge_messages(proto::AcknowledgeMessagesRequest { message_ids: ids })
            .await
            .unwrap();
        assert_eq!(by_recipient.deleted, 3);
        assert_eq!(connector.mailbox.pending(&issuer_key).await.unwrap(), 0);
        send(b"five", b"").await.unwrap();

        // Revoked: nothing more is accepted, and waiting messages are gone.
        holder
            .revoke_connection(proto::RevokeConnectionRequest {
                connection_id: connection_id.clone(),
            })
            .await
            .unwrap();
        let revoked = send(b"six", b"").await.unwrap_err();
        assert_eq!(revoked.code(), Code::FailedPrecondition);
        let left = issuer
            .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .messages;
        assert_eq!(left.len(), 1, "only the revocation notice");
        assert!(matches!(
            left[0].content,
            Some(proto::received_message::Content::ConnectionRevoked(_))
        ));
        connector.stop().await;
    }

    async fn two_nodes_talk_through_the_connector(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let (issuer, mut issuer_events) = node(&connector.url, 1).await;
        let (holder, mut holder_events) = node(&connector.url, 2).await;
        let invitation = issuer.create_invitation().await.unwrap();
        assert_eq!(invitation.relay, connector.url);
        let connection = holder
            .accept_invitation(&invitation, "hello from the holder")
            .await
            .unwrap();
        let greeting = next_message(&mut issuer_events).await;
        assert_eq!(greeting.plaintext.as_slice(), b"hello from the holder");
        issuer.acknowledge(&[greeting.sequence]).await.unwrap();
        for i in 0..20 {
            issuer
                .send(&connection, format!("credential {i}"))
                .await
                .unwrap();
        }
        for i in 0..20 {
            let message = next_message(&mut holder_events).await;
            assert_eq!(
                message.plaintext.as_slice(),
                format!("credential {i}").as_bytes()
            );
            holder.acknowledge(&[message.sequence]).await.unwrap();
        }
        // Everything was acknowledged to the connector, so nothing waits there.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = connector.mailbox.pending(&signer(1).public_key()).await.unwrap()
                + connector.mailbox.pending(&signer(2).public_key()).await.unwrap();
            if waiting == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{waiting} still waiting"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        issuer.shutdown().await.unwrap();
        holder.shutdown().await.unwrap();
        connector.stop().await;
    }

    /// A delivery the node hands back (the inviter's bundle that came
    /// before the join's record was stored) comes again even when nothing
    /// newer arrives: a `receive` already waiting on the stream is woken
    /// by the release, instead of holding the delivery until the next
    /// item (which, for a holder waiting for the bundle, never comes).
    async fn a_delivery_released_while_a_receive_waits_comes_again(place: Place) {
        use confidant_actors::{Outgoing, Transport as _};
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection = common::connect(&issuer, &holder).await;
        let connection = confidant_core::ConnectionId::new(connection).unwrap();
        let sender = ConnectorTransport::new(&connector.url, signer(1)).unwrap();
        let receiver = Arc::new(ConnectorTransport::new(&connector.url, signer(2)).unwrap());
        sender
            .send(vec![Outgoing { connection_id: connection.clone(), envelope: b"bundle".to_vec() }])
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), receiver.receive(8))
            .await
            .expect("the delivery in time")
            .unwrap();
        assert_eq!(first.len(), 1);
        // The next receive waits on the stream (nothing else comes) ...
        let waiting = tokio::spawn({
            let receiver = Arc::clone(&receiver);
            async move { receiver.receive(8).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "nothing new arrived");
        // ... and the release hands the delivery to it.
        receiver.release(vec![first[0].id]).await.unwrap();
        let again = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the released delivery comes again without anything newer")
            .unwrap()
            .unwrap();
        assert_eq!(again, first);
        connector.stop().await;
    }
}
