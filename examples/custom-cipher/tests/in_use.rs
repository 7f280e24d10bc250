//! The example suite in use: in a session on its own, and in two nodes
//! that agree on it by default (a node offers every suite it has
//! registered).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_actors::{Event, Events, MemoryRelay, Node, NodeConfig};
use confidant_core::{AgreedSecret, ConnectionId, Role, SuiteRegistry};
use confidant_session::{Session, SessionConfig};
use confidant_store::MemoryStore;
use custom_cipher::{XCHACHA20_POLY1305_COUNTER, xchacha20_poly1305_counter};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn the_suite_seals_and_opens_in_a_session() {
    let agreed = AgreedSecret::new([7; 32], vec![1; 64], None);
    let id = ConnectionId::new("custom-1").unwrap();
    let suite = xchacha20_poly1305_counter();
    let new = |role| {
        Session::new(
            role,
            id.clone(),
            Arc::clone(&suite),
            &agreed,
            SessionConfig::default(),
        )
        .unwrap()
    };
    let (mut holder, mut issuer) = (new(Role::Initiator), new(Role::Responder));
    for n in 0..100u32 {
        let text = format!("message {n}").into_bytes();
        let sealed = holder.seal_vec(text.clone()).unwrap();
        assert_eq!(sealed.suite, XCHACHA20_POLY1305_COUNTER.0);
        let copy = sealed.clone();
        assert_eq!(issuer.open(sealed).unwrap(), text);
        // A replay is refused.
        assert!(issuer.open(copy).is_err());
    }
    let answer = issuer.seal_vec(b"answer".to_vec()).unwrap();
    assert_eq!(holder.open(answer).unwrap(), b"answer");
}

async fn start(relay: &MemoryRelay, party: &str, suites: SuiteRegistry) -> (Node, Events) {
    Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .suites(suites)
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport(party))
        .config(NodeConfig::default())
        .start()
        .await
        .unwrap()
}

/// The next event that `pick` accepts, within a bounded time.
async fn next<T>(events: &mut Events, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let event = events.next().await.expect("the node stopped");
            if let Event::HandshakeFailed { error, .. } = &event {
                panic!("handshake refused: {error}");
            }
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

/// The issuer registers the built-in suites and the example's; the holder
/// only the example's. They connect (so the issuer offered the example's
/// suite without being told to) and messages flow both ways under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_agree_on_the_suite_by_default() {
    let relay = MemoryRelay::new();
    let mut issuer_suites = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut issuer_suites).unwrap();
    confidant_chacha20poly1305::register(&mut issuer_suites).unwrap();
    custom_cipher::register(&mut issuer_suites).unwrap();
    let mut holder_suites = SuiteRegistry::new();
    custom_cipher::register(&mut holder_suites).unwrap();
    let (issuer, mut issuer_events) = start(&relay, "issuer", issuer_suites).await;
    let (holder, mut holder_events) = start(&relay, "holder", holder_suites).await;

    let invitation = issuer.create_invitation().await.unwrap();
    let id = holder
        .accept_invitation(&invitation, "hello over XChaCha20")
        .await
        .unwrap();
    next(&mut holder_events, |event| match event {
        Event::Connected { connection_id, .. } if connection_id == id => Some(()),
        _ => None,
    })
    .await;
    let greeting = next(&mut issuer_events, |event| match event {
        Event::Message(message) if message.connection_id == id => Some(message),
        _ => None,
    })
    .await;
    assert_eq!(greeting.plaintext.as_slice(), b"hello over XChaCha20");
    issuer.acknowledge(&[greeting.sequence]).await.unwrap();

    issuer.send(&id, "answer").await.unwrap();
    let answer = next(&mut holder_events, |event| match event {
        Event::Message(message) if message.connection_id == id => Some(message),
        _ => None,
    })
    .await;
    assert_eq!(answer.plaintext.as_slice(), b"answer");
    holder.acknowledge(&[answer.sequence]).await.unwrap();
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}
