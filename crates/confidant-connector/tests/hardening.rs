//! The connector's answers to a security review, over real gRPC on loopback
//! with real redb files: nonces at the edge of their window, requests bound
//! to one connector, size limits and byte-capped pages, bounded streams,
//! damaged records, and clear answers to malformed requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_actors::{Payload, Transport as _};
use confidant_connector::proto::{self, connector_client::ConnectorClient};
use confidant_connector::{ConnectorTransport, Limits, SignedClient};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

const MIB: usize = 1024 * 1024;

#[macro_use]
mod common;

use common::{connect, connector, connector_on, signer};

on_both_backends! {
    /// Item 10: a client message id reused with another body is refused with
    /// ALREADY_EXISTS (a retry of the same body still returns the first id);
    /// an empty envelope is refused with INVALID_ARGUMENT.
    async fn a_reused_client_id_with_another_body_and_an_empty_envelope_are_refused(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection_id = connect(&issuer, &holder).await;
        let send = |message: &[u8], client_id: &[u8]| {
            holder.send_message(proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: message.to_vec(),
                client_message_id: client_id.to_vec(),
            })
        };
        let first = send(b"one", b"id-1").await.unwrap().id;
        assert_eq!(send(b"one", b"id-1").await.unwrap().id, first);
        let other = send(b"two", b"id-1").await.unwrap_err();
        assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
        assert!(other.message().contains("client message id"), "{other:?}");
        let empty = send(b"", b"").await.unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
        assert!(empty.message().contains("empty"), "{empty:?}");
        // Only the join notice and the first message wait.
        assert_eq!(connector.mailbox.pending(&issuer.public_key()).await.unwrap(), 2);
        connector.stop().await;
    }

    /// Item 6: a request signed for connector A is refused by connector B with
    /// an error naming B's audience.
    async fn a_request_signed_for_one_connector_is_refused_by_another(place: Place) {
        let first = connector_on(Arc::clone(&place), Limits::default()).await;
        // Another connector: its own mailbox, so its own audience.
        let second = connector(Limits::default()).await;
        let method = "/confidant.connector.v1.Connector/GenerateConnectionToken";
        // Signed for the first connector, as its GetConnectorInfo announces it.
        let audience = SignedClient::new(&first.url, signer(1))
            .unwrap()
            .connector_info()
            .await
            .unwrap()
            .audience;
        assert_eq!(audience, first.mailbox.audience());
        assert_ne!(audience, second.mailbox.audience());
        let request = signer(1)
            .sign(
                &audience,
                method,
                proto::GenerateConnectionTokenRequest { count: 1 },
            )
            .unwrap();
        let (metadata, _, body) = request.into_parts();
        let replay = tonic::Request::from_parts(metadata.clone(), Default::default(), body);
        ConnectorClient::connect(first.url.clone())
            .await
            .unwrap()
            .generate_connection_token(tonic::Request::from_parts(
                metadata,
                Default::default(),
                body,
            ))
            .await
            .unwrap();
        let refused = ConnectorClient::connect(second.url.clone())
            .await
            .unwrap()
            .generate_connection_token(replay)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains("audience"), "{refused:?}");
        first.stop().await;
        second.stop().await;
    }

    /// Item 7: with `max_message_len` above tonic's default 4 MiB, an envelope
    /// of 5 MiB is stored and read back; one above the limit gets
    /// RESOURCE_EXHAUSTED naming its size.
    async fn envelopes_above_four_mib_pass_when_the_limit_allows_them(place: Place) {
        let limits = Limits {
            max_message_len: 6 * MIB,
            ..Limits::default()
        };
        let connector = connector_on(Arc::clone(&place), limits).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection_id = connect(&issuer, &holder).await;
        let send = |len: usize| {
            holder.send_message(proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: vec![7u8; len],
                client_message_id: vec![],
            })
        };
        send(5 * MIB).await.unwrap();
        let large = send(6 * MIB + 1).await.unwrap_err();
        assert_eq!(large.code(), Code::ResourceExhausted, "{large:?}");
        assert!(
            large.message().contains(&(6 * MIB + 1).to_string()),
            "{large:?}"
        );
        // Far above the limit (beyond the room left for the other fields):
        // still RESOURCE_EXHAUSTED, not OUT_OF_RANGE.
        let huge = send(8 * MIB).await.unwrap_err();
        assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");
        // The 5 MiB envelope comes back (alone on its page: larger than the
        // page cap, but a page always holds at least one message).
        let page = issuer
            .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .messages;
        let last = page.last().unwrap().id;
        let page = issuer
            .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: last,
                limit: 0,
            })
            .await
            .unwrap()
            .messages;
        assert_eq!(page.len(), 1);
        assert!(matches!(
            &page[0].content,
            Some(proto::received_message::Content::Envelope(envelope)) if envelope.len() == 5 * MIB
        ));
        // And through a stream.
        let mut stream = issuer.get_message_stream(last).await.unwrap();
        let streamed = stream.message().await.unwrap().unwrap();
        assert_eq!(streamed.id, page[0].id);
        drop(stream);
        connector.stop().await;
    }

    /// Item 7: a page holds at most 4 MiB (by default) of messages, so a
    /// default gRPC client can read it; paging by cursor gets them all.
    async fn pages_are_capped_by_bytes(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection_id = connect(&issuer, &holder).await;
        for fill in 0..6u8 {
            holder
                .send_message(proto::SendMessageRequest {
                    connection_id: connection_id.clone(),
                    message: vec![fill; MIB],
                    client_message_id: vec![],
                })
                .await
                .unwrap();
        }
        let mut cursor = 0;
        let mut envelopes = 0;
        let mut pages = 0;
        loop {
            let request = proto::GetMessagesPaginatedRequest {
                last_seen_message_id: cursor,
                limit: 1000,
            };
            let page = issuer.get_messages_paginated(request).await.unwrap();
            if page.messages.is_empty() {
                break;
            }
            let bytes = prost::Message::encoded_len(&page);
            assert!(bytes <= 4 * MIB, "a page of {bytes} bytes");
            // A client with tonic's default limits (4 MiB) reads it too.
            let signed = signer(1)
                .sign(
                    &connector.mailbox.audience(),
                    "/confidant.connector.v1.Connector/GetMessagesPaginated",
                    request,
                )
                .unwrap();
            let raw = ConnectorClient::connect(connector.url.clone())
                .await
                .unwrap()
                .get_messages_paginated(signed)
                .await
                .unwrap()
                .into_inner();
            assert_eq!(raw, page);
            pages += 1;
            envelopes += page
                .messages
                .iter()
                .filter(|message| {
                    matches!(
                        message.content,
                        Some(proto::received_message::Content::Envelope(_))
                    )
                })
                .count();
            cursor = page.messages.last().unwrap().id;
        }
        assert_eq!(envelopes, 6);
        assert!(pages >= 2, "{pages} pages");
        connector.stop().await;
    }

    /// Item 8: one key may hold a bounded number of streams (16 by default);
    /// one more is refused with RESOURCE_EXHAUSTED naming the limit, and once a
    /// stream ends its slot is free again.
    async fn streams_per_key_are_bounded(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let client = SignedClient::new(&connector.url, signer(1)).unwrap();
        let mut streams = Vec::new();
        for _ in 0..16 {
            streams.push(client.get_message_stream(0).await.unwrap());
        }
        let refused = client.get_message_stream(0).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("16"), "{refused:?}");
        // Another key is not affected.
        let other = SignedClient::new(&connector.url, signer(2)).unwrap();
        let _theirs = other.get_message_stream(0).await.unwrap();
        // Closing one frees its slot (the server notices the client went away).
        drop(streams.pop());
        let mut reopened = None;
        for _ in 0..200 {
            match client.get_message_stream(0).await {
                Ok(stream) => {
                    reopened = Some(stream);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
        assert!(reopened.is_some(), "the slot was never freed");
        drop(streams);
        drop(reopened);
        connector.stop().await;
    }

    /// Item 8: the runtime's transport holds a bounded number of bytes of
    /// deliveries the node has not taken (here 10,000: two 4,000-byte
    /// envelopes), stops reading its stream while full, and loses nothing.
    async fn the_transport_buffers_a_bounded_number_of_bytes_and_loses_nothing(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let issuer = SignedClient::new(&connector.url, signer(1)).unwrap();
        let holder = SignedClient::new(&connector.url, signer(2)).unwrap();
        let connection_id = connect(&issuer, &holder).await;
        for fill in 0..10u8 {
            holder
                .send_message(proto::SendMessageRequest {
                    connection_id: connection_id.clone(),
                    message: vec![fill; 4_000],
                    client_message_id: vec![],
                })
                .await
                .unwrap();
        }
        let transport =
            ConnectorTransport::with_buffer_bytes(&connector.url, signer(1), 10_000).unwrap();
        let mut fills = Vec::new();
        // Bounds the whole exchange, so a stalled stream fails instead of
        // hanging; nothing is asserted about how long anything takes.
        tokio::time::timeout(Duration::from_secs(60), async {
            while fills.len() < 10 {
                let batch = transport.receive(100).await.unwrap();
                let bytes: usize = batch
                    .iter()
                    .map(|delivery| match &delivery.payload {
                        Payload::Envelope(envelope) => envelope.len(),
                        Payload::Joined { token } => token.len(),
                        _ => 0,
                    })
                    .sum();
                assert!(bytes <= 10_000, "a batch of {bytes} bytes was buffered");
                assert!(transport.buffered_bytes() <= 10_000);
                for delivery in batch {
                    if let Payload::Envelope(envelope) = delivery.payload {
                        fills.push(envelope[0]);
                    }
                }
            }
        })
        .await
        .expect("every delivery arrives");
        assert_eq!(fills, (0..10u8).collect::<Vec<_>>());
        drop(transport);
        connector.stop().await;
    }
}
