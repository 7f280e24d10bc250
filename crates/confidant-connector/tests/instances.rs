//! Several connector instances on one PostgreSQL database, in this
//! process: live delivery across instances (LISTEN/NOTIFY), a stream that
//! resumes from its cursor on another instance, and a transport that fails
//! over between instances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_actors::{Payload, Transport as _};
use confidant_connector::proto::{self, received_message::Content};
use confidant_connector::{ClientTls, ConnectorTransport, Limits, SignedClient};
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{Place, connector_on, signer};

/// A generous bound on a wait that ends at once when the code is right
/// (a bound, so a broken notification channel fails instead of hanging).
const BOUND: Duration = Duration::from_secs(30);

async fn next(stream: &mut tonic::Streaming<proto::ReceivedMessage>) -> proto::ReceivedMessage {
    tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("a message within the bound")
        .expect("the stream goes on")
        .expect("a message, not an error")
}

async fn token(client: &SignedClient) -> String {
    client
        .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
        .await
        .unwrap()
        .tokens
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_through_one_instance_reaches_a_stream_on_another_at_once() {
    let Some(place) =
        Place::postgres("a_message_sent_through_one_instance_reaches_a_stream_on_another_at_once")
            .await
    else {
        return;
    };
    let place = Arc::new(place);
    let a = connector_on(Arc::clone(&place), Limits::default()).await;
    let b = connector_on(Arc::clone(&place), Limits::default()).await;
    assert_eq!(
        a.mailbox.audience(),
        b.mailbox.audience(),
        "one connector, one audience"
    );
    let issuer_on_b = SignedClient::new(&b.url, signer(1)).unwrap();
    let holder_on_a = SignedClient::new(&a.url, signer(2)).unwrap();
    let mut stream = issuer_on_b.get_message_stream(0).await.unwrap();
    // The stream is open (and idle) before anything is stored: what comes
    // next can only reach it through a notification from instance A.
    let token = token(&issuer_on_b).await;
    let connection_id = holder_on_a
        .add_connection_from_token(proto::AddConnectionFromTokenRequest { token })
        .await
        .unwrap()
        .connection_id;
    let notice = next(&mut stream).await;
    assert!(
        matches!(notice.content, Some(Content::ConnectionAdded(_))),
        "{notice:?}"
    );
    let mut ids = Vec::new();
    for index in 0..3u8 {
        let sent = holder_on_a
            .send_message(proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: vec![index; 16],
                client_message_id: vec![index],
            })
            .await
            .unwrap();
        let received = next(&mut stream).await;
        assert_eq!(received.id, sent.id);
        assert_eq!(received.content, Some(Content::Envelope(vec![index; 16])));
        ids.push(sent.id);
    }
    // The same client's stream, reopened on instance A from its cursor
    // after the first message, resumes with the second.
    drop(stream);
    let issuer_on_a = SignedClient::new(&a.url, signer(1)).unwrap();
    let mut resumed = issuer_on_a.get_message_stream(ids[0]).await.unwrap();
    assert_eq!(next(&mut resumed).await.id, ids[1]);
    assert_eq!(next(&mut resumed).await.id, ids[2]);
    drop(resumed);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_fails_over_to_another_instance_and_its_stream_resumes_there() {
    let Some(place) =
        Place::postgres("a_transport_fails_over_to_another_instance_and_its_stream_resumes_there")
            .await
    else {
        return;
    };
    let place = Arc::new(place);
    let a = connector_on(Arc::clone(&place), Limits::default()).await;
    let b = connector_on(Arc::clone(&place), Limits::default()).await;
    // Pinned to A: the test stops A to see the transport move to B.
    let issuer = ConnectorTransport::with_instances_starting_at(
        &[&a.url, &b.url],
        0,
        signer(1),
        &ClientTls::default(),
        1 << 20,
    )
    .unwrap();
    let holder = SignedClient::new(&b.url, signer(2)).unwrap();
    let first = issuer.create_invitation().await.unwrap();
    assert_eq!(first.relay, a.url, "invitations name the first instance");
    holder
        .add_connection_from_token(proto::AddConnectionFromTokenRequest { token: first.token })
        .await
        .unwrap();
    let delivered = tokio::time::timeout(BOUND, issuer.receive(8))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(delivered[0].payload, Payload::Joined { .. }),
        "{delivered:?}"
    );
    issuer
        .acknowledge(delivered.iter().map(|delivery| delivery.id).collect())
        .await
        .unwrap();
    // Instance A goes away: the next calls and the stream move to B.
    a.stop().await;
    let second = tokio::time::timeout(BOUND, issuer.create_invitation())
        .await
        .unwrap()
        .unwrap();
    holder
        .add_connection_from_token(proto::AddConnectionFromTokenRequest {
            token: second.token.clone(),
        })
        .await
        .unwrap();
    let delivered = tokio::time::timeout(BOUND, issuer.receive(8))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        delivered.len(),
        1,
        "the first notice was acknowledged: {delivered:?}"
    );
    assert_eq!(
        delivered[0].payload,
        Payload::Joined {
            token: second.token
        }
    );
    issuer
        .acknowledge(delivered.iter().map(|delivery| delivery.id).collect())
        .await
        .unwrap();
    assert_eq!(b.mailbox.pending(&signer(1).public_key()).await.unwrap(), 0);
    b.stop().await;
}

/// A join whose answer was lost (instance A committed it and died) is
/// asked again on instance B: B answers the connection A made, and the
/// token stays refused to anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_repeated_on_another_instance_answers_the_same_connection() {
    let Some(place) =
        Place::postgres("a_join_repeated_on_another_instance_answers_the_same_connection").await
    else {
        return;
    };
    let place = Arc::new(place);
    let a = connector_on(Arc::clone(&place), Limits::default()).await;
    let b = connector_on(Arc::clone(&place), Limits::default()).await;
    let issuer = SignedClient::new(&b.url, signer(1)).unwrap();
    let token = token(&issuer).await;
    let holder_on_a = SignedClient::new(&a.url, signer(2)).unwrap();
    let first = holder_on_a
        .add_connection_from_token(proto::AddConnectionFromTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .connection_id;
    a.stop().await;
    let holder_on_b = SignedClient::new(&b.url, signer(2)).unwrap();
    let again = holder_on_b
        .add_connection_from_token(proto::AddConnectionFromTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .connection_id;
    assert_eq!(again, first);
    let stranger = SignedClient::new(&b.url, signer(3)).unwrap();
    let refused = stranger
        .add_connection_from_token(proto::AddConnectionFromTokenRequest { token })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    // One connection, one notice; the holder's connection works.
    assert_eq!(b.mailbox.pending(&signer(1).public_key()).await.unwrap(), 1);
    holder_on_b
        .send_message(proto::SendMessageRequest {
            connection_id: again,
            message: vec![7; 16],
            client_message_id: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(b.mailbox.pending(&signer(1).public_key()).await.unwrap(), 2);
    b.stop().await;
}

#[tokio::test]
async fn a_transport_needs_at_least_one_instance() {
    let refused = ConnectorTransport::with_instances(&[], signer(1), &ClientTls::default(), 1024);
    assert!(refused.is_err());
}
