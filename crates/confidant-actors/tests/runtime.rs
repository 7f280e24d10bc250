//! The runtime end to end over the in-memory relay: handshakes, messages
//! both ways, idle actors, resets, refusals and typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Collector, connect, redb, start, start_with, wait_until};
use confidant_actors::{
    ConnectionState, HandshakeFailure, MemoryRelay, NodeConfig, NodeError, Side, TransportError,
};
use confidant_core::ConnectionId;
use confidant_store::{Durability, InboxStore, MemoryStore};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A node with an in-memory store and the default configuration.
async fn in_memory(relay: &MemoryRelay, party: &str) -> (confidant_actors::Node, Collector) {
    start(
        relay,
        party,
        Arc::new(MemoryStore::new()),
        NodeConfig::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_both_ways_in_order_and_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let issuer_store = redb(&dir.path().join("issuer.redb"), Durability::Durable);
    let holder_store = redb(&dir.path().join("holder.redb"), Durability::Durable);
    let (issuer, issuer_seen) = start(
        &relay,
        "issuer",
        Arc::clone(&issuer_store),
        NodeConfig::default(),
    )
    .await;
    let (holder, holder_seen) = start(
        &relay,
        "holder",
        Arc::clone(&holder_store),
        NodeConfig::default(),
    )
    .await;

    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 3).await;
    // The issuer's first message from each holder is its greeting.
    wait_until("greetings", WAIT, || {
        connections
            .iter()
            .all(|id| issuer_seen.messages(id).len() == 1)
    })
    .await;
    for (index, id) in connections.iter().enumerate() {
        assert_eq!(issuer_seen.texts(id), [format!("greeting {index}")]);
    }
    // Both sides list the connections, with the other's identity.
    let listed = issuer.connections().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|info| info.side == Side::Inviter
        && info.state == ConnectionState::Established
        && info.peer_identity == Some(holder.identity_key())));
    let listed = holder.connections().await.unwrap();
    assert!(listed.iter().all(
        |info| info.side == Side::Invitee && info.peer_identity == Some(issuer.identity_key())
    ));

    for id in &connections {
        let batch: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("to holder {i}").into_bytes())
            .collect();
        issuer.send_many(id, batch).await.unwrap();
        for i in 0..20 {
            holder.send(id, format!("to issuer {i}")).await.unwrap();
        }
    }
    wait_until("every message", WAIT, || {
        connections
            .iter()
            .all(|id| holder_seen.messages(id).len() == 50 && issuer_seen.messages(id).len() == 21)
    })
    .await;
    for id in &connections {
        let expected: Vec<String> = (0..50).map(|i| format!("to holder {i}")).collect();
        assert_eq!(holder_seen.texts(id), expected);
        assert_eq!(issuer_seen.texts(id)[1..].len(), 20);
        assert_eq!(issuer_seen.texts(id)[20], "to issuer 19");
    }
    // Everything was acknowledged: nothing waits at the relay or in the
    // inboxes.
    wait_until("relay and inboxes empty", WAIT, || {
        relay.pending("issuer") == 0
            && relay.pending("holder") == 0
            && issuer_store.inbox().unwrap().is_empty()
            && holder_store.inbox().unwrap().is_empty()
    })
    .await;
    // One-time pre-keys were deleted as they were used.
    assert!(
        confidant_store::PreKeyStore::one_time_pre_key_ids(&*issuer_store)
            .unwrap()
            .is_empty()
    );
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_stop_and_start_again_on_demand() {
    let relay = MemoryRelay::new();
    let config = NodeConfig::default().with_idle_timeout(Duration::from_millis(150));
    let (issuer, issuer_seen) = start(
        &relay,
        "issuer",
        Arc::new(MemoryStore::new()),
        config.clone(),
    )
    .await;
    let (holder, holder_seen) = start(&relay, "holder", Arc::new(MemoryStore::new()), config).await;
    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 20).await;
    assert!(issuer.active_connections().await.unwrap() > 0);

    // Idle: every actor stops; the connections stay listed.
    wait_until("actors stopped", WAIT, || {
        futures_executor_block(issuer.active_connections()).unwrap() == 0
            && futures_executor_block(holder.active_connections()).unwrap() == 0
    })
    .await;
    assert_eq!(issuer.connections().await.unwrap().len(), 20);

    // A message wakes the sender's actor and then the receiver's.
    for (i, id) in connections.iter().enumerate() {
        holder.send(id, format!("after idle {i}")).await.unwrap();
    }
    wait_until("woken connections deliver", WAIT, || {
        connections
            .iter()
            .enumerate()
            .all(|(i, id)| issuer_seen.texts(id).last() == Some(&format!("after idle {i}")))
    })
    .await;
    assert!(issuer.active_connections().await.unwrap() > 0);
    // And they stop again.
    wait_until("actors stopped again", WAIT, || {
        futures_executor_block(issuer.active_connections()).unwrap() == 0
    })
    .await;
    // A woken sender continues above its stored reservation: the receiver
    // takes the message (a reused counter would be refused as a replay).
    issuer.send(&connections[0], "again").await.unwrap();
    wait_until("delivered after a second wake", WAIT, || {
        holder_seen.texts(&connections[0]) == ["again"]
    })
    .await;
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

/// Polls a node query from a synchronous condition.
fn futures_executor_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_another_identity_is_refused_and_the_connection_waits() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let (holder, holder_seen) = in_memory(&relay, "holder").await;
    let mut invitation = issuer.create_invitation().await.unwrap();
    // The QR code names another issuer (as if the relay had swapped the
    // bundle for its own).
    invitation.identity_key = confidant_x3dh::IdentityKeyPair::generate()
        .public_key()
        .to_bytes();
    let id = holder.accept_invitation(&invitation, "hi").await.unwrap();
    wait_until("refusal reported", WAIT, || {
        holder_seen.with(|seen| !seen.failed.is_empty())
    })
    .await;
    // A swapped bundle is told apart from every other refusal.
    let failure = holder_seen.with(|seen| seen.failed[0].1.clone());
    assert_eq!(failure, HandshakeFailure::IdentityMismatch, "{failure}");
    assert_eq!(holder_seen.connected_count(), 0);
    let listed = holder.connections().await.unwrap();
    assert_eq!(listed[0].state, ConnectionState::AwaitingBundle);
    assert!(matches!(
        holder.send(&id, "too early").await,
        Err(NodeError::NotEstablished(_))
    ));
    // The issuer never got an initial message.
    assert_eq!(issuer_seen.connected_count(), 0);
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_replaces_the_session_from_either_side() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let (holder, holder_seen) = in_memory(&relay, "holder").await;
    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 2).await;
    let resets = |seen: &Collector| {
        seen.with(|seen| seen.connected.iter().filter(|(_, reset)| *reset).count())
    };

    // The holder asks; then the issuer asks.
    holder.reset(&connections[0]).await.unwrap();
    wait_until("reset by the holder", WAIT, || {
        resets(&issuer_seen) == 1 && resets(&holder_seen) == 1
    })
    .await;
    issuer.reset(&connections[1]).await.unwrap();
    wait_until("reset by the issuer", WAIT, || {
        resets(&issuer_seen) == 2 && resets(&holder_seen) == 2
    })
    .await;
    // The new sessions work both ways; the reset's control message is not
    // reported to the application.
    for id in &connections {
        issuer.send(id, "after reset").await.unwrap();
        holder.send(id, "after reset too").await.unwrap();
    }
    wait_until("messages after the resets", WAIT, || {
        connections.iter().all(|id| {
            holder_seen.texts(id) == ["after reset"]
                && issuer_seen.texts(id).last().map(String::as_str) == Some("after reset too")
        })
    })
    .await;
    for id in &connections {
        assert_eq!(issuer_seen.texts(id).len(), 2, "greeting and one message");
    }
    assert!(
        holder
            .connections()
            .await
            .unwrap()
            .iter()
            .all(|info| info.state == ConnectionState::Established)
    );
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_reported_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let path = dir.path().join("holder.redb");
    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let (holder, holder_seen) = start(
        &relay,
        "holder",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1).await;
    holder.shutdown().await.unwrap();

    // A holder that does not acknowledge: its events are read but never
    // acknowledged.
    let store = redb(&path, Durability::Durable);
    let (holder, mut events) = confidant_actors::Node::builder()
        .store(Arc::clone(&store))
        .suites(common::suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport("holder"))
        .start()
        .await
        .unwrap();
    issuer.send(&connections[0], "keep me").await.unwrap();
    let first = loop {
        if let Some(confidant_actors::Event::Message(message)) = events.next().await {
            break message;
        }
    };
    assert_eq!(first.plaintext.as_slice(), b"keep me");
    assert_eq!(store.inbox().unwrap().len(), 1);
    holder.shutdown().await.unwrap();
    drop(events);
    drop(store);

    // After the restart the same entry (same number) is reported again.
    let (holder, mut events) = confidant_actors::Node::builder()
        .store(redb(&path, Durability::Durable))
        .suites(common::suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport("holder"))
        .start()
        .await
        .unwrap();
    let again = loop {
        if let Some(confidant_actors::Event::Message(message)) = events.next().await {
            break message;
        }
    };
    assert_eq!(again, first);
    holder.acknowledge(&[again.sequence]).await.unwrap();
    holder.shutdown().await.unwrap();
    drop(events);
    let store = redb(&path, Durability::Durable);
    assert!(store.inbox().unwrap().is_empty());
    // It was delivered by the relay once and never again after being stored.
    assert_eq!(relay.pending("holder"), 0);
    issuer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed() {
    let relay = MemoryRelay::new();
    // A builder without a store.
    let missing = confidant_actors::Node::builder()
        .suites(common::suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport("nobody"))
        .start()
        .await;
    assert!(matches!(missing, Err(NodeError::Config(reason)) if reason.contains("store")));
    // A suite offered that is not registered.
    let unregistered = confidant_actors::Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .suites(common::suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport("nobody"))
        .config(
            NodeConfig::default().with_offered_suites(vec![confidant_core::SuiteId(0x8000_0001)]),
        )
        .start()
        .await;
    assert!(matches!(unregistered, Err(NodeError::Config(_))));

    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let (holder, holder_seen) = in_memory(&relay, "holder").await;
    let unknown = ConnectionId::new("no-such-connection").unwrap();
    assert!(matches!(
        issuer.send(&unknown, "x").await,
        Err(NodeError::UnknownConnection(id)) if id == unknown
    ));
    assert!(matches!(
        issuer.reset(&unknown).await,
        Err(NodeError::UnknownConnection(_))
    ));
    let invitation = issuer.create_invitation().await.unwrap();
    let text = invitation.to_text();
    let parsed: confidant_actors::Invitation = text.parse().unwrap();
    holder.accept_invitation(&parsed, "one").await.unwrap();
    // A token is single-use.
    assert!(matches!(
        holder.accept_invitation(&parsed, "two").await,
        Err(NodeError::Transport(TransportError::Refused(_)))
    ));
    wait_until("connected", WAIT, || {
        issuer_seen.connected_count() == 1 && holder_seen.connected_count() == 1
    })
    .await;
    // Too long for the session's limit.
    let id = holder.connections().await.unwrap()[0].connection_id.clone();
    let huge = vec![0u8; 16 * 1024 * 1024 + 1];
    assert!(matches!(
        holder.send(&id, huge).await,
        Err(NodeError::Session(_))
    ));
    // The connection still works.
    holder.send(&id, "fine").await.unwrap();
    wait_until("delivered", WAIT, || {
        issuer_seen.texts(&id) == ["one", "fine"]
    })
    .await;
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_keys_are_updated_when_they_near_their_limit() {
    let relay = MemoryRelay::new();
    // 100 messages per key, an update recommended at half of that, and a
    // small reservation block so that reservations are committed along the
    // way too.
    let session = confidant_session::SessionConfig::default()
        .with_max_messages_per_epoch(100)
        .with_soft_limit_percent(50);
    let config = NodeConfig::default()
        .with_session(session)
        .with_reservation_block(16);
    let issuer_store = Arc::new(MemoryStore::new());
    let holder_store = Arc::new(MemoryStore::new());
    let (issuer, issuer_seen) =
        start(&relay, "issuer", Arc::clone(&issuer_store), config.clone()).await;
    let (holder, holder_seen) = start(&relay, "holder", Arc::clone(&holder_store), config).await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    for chunk in 0..10 {
        let batch: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{}", chunk * 50 + i).into_bytes())
            .collect();
        issuer.send_many(&id, batch).await.unwrap();
    }
    for i in 0..130 {
        holder.send(&id, format!("{i}")).await.unwrap();
    }
    wait_until("500 and 130 messages", WAIT, || {
        holder_seen.texts(&id).len() == 500 && issuer_seen.texts(&id).len() == 131
    })
    .await;
    let expected: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    assert_eq!(holder_seen.texts(&id), expected);
    // 500 messages at most 100 per key: at least 5 updates (epoch ≥ 5).
    let epoch = |store: &MemoryStore| {
        confidant_store::SessionStore::session(store, &id)
            .unwrap()
            .unwrap()
            .send_epoch()
    };
    assert!(
        epoch(&issuer_store) >= 5,
        "issuer epoch {}",
        epoch(&issuer_store)
    );
    assert!(
        epoch(&holder_store) >= 1,
        "holder epoch {}",
        epoch(&holder_store)
    );
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_initial_message_is_sent_again_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let path = dir.path().join("holder.redb");
    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let (holder, holder_seen) = start(
        &relay,
        "holder",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    wait_until("greeting", WAIT, || issuer_seen.texts(&id).len() == 1).await;
    // The issuer has not answered yet, so the holder keeps the initial
    // message and sends it again when it starts; the issuer refuses the
    // copy (its one-time pre-key is gone) without reporting anything.
    holder.shutdown().await.unwrap();
    let before = relay.delivered();
    let (holder, holder_seen) = start(
        &relay,
        "holder",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    // Nothing else is waiting anywhere: a delivery now is the copy.
    wait_until("copy delivered and handled", WAIT, || {
        relay.delivered() > before && relay.pending("issuer") == 0
    })
    .await;
    assert_eq!(issuer_seen.texts(&id).len(), 1);
    assert_eq!(issuer_seen.connected_count(), 1);
    // Once the issuer's first message arrives, nothing is sent again.
    issuer.send(&id, "answer").await.unwrap();
    wait_until("answer", WAIT, || holder_seen.texts(&id) == ["answer"]).await;
    holder.shutdown().await.unwrap();
    let delivered = relay.delivered();
    let (holder, _holder_seen) = start(
        &relay,
        "holder",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(relay.delivered(), delivered, "nothing was sent again");
    holder.shutdown().await.unwrap();
    issuer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_be_read_is_reset_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let path = dir.path().join("holder.redb");
    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let (holder, holder_seen) = start(
        &relay,
        "holder",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    issuer.send(&id, "before").await.unwrap();
    wait_until("first message", WAIT, || {
        holder_seen.texts(&id) == ["before"]
    })
    .await;
    holder.shutdown().await.unwrap();

    // The holder's stored session is damaged.
    {
        let store = redb(&path, Durability::Durable);
        let mut batch = confidant_store::WriteBatch::new();
        batch.push(confidant_store::WriteOp::Put {
            table: confidant_store::Table::Sessions,
            key: id.as_bytes().to_vec(),
            value: zeroize::Zeroizing::new(vec![0xEE; 40]),
        });
        confidant_store::RawStore::commit(&*store, batch).unwrap();
    }

    // At its next start, a message on the connection wakes it: it cannot
    // read the session, asks for a reset, and the two sides agree on a new
    // session with the same identities.
    let (holder, holder_seen) = start(
        &relay,
        "holder",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    issuer
        .send(&id, "lost: sealed under the old session")
        .await
        .unwrap();
    wait_until("reset on both sides", WAIT, || {
        holder_seen.with(|seen| seen.connected.iter().any(|(_, reset)| *reset))
            && issuer_seen.with(|seen| seen.connected.iter().any(|(_, reset)| *reset))
    })
    .await;
    issuer.send(&id, "after the reset").await.unwrap();
    holder.send(&id, "holder is back").await.unwrap();
    wait_until("messages under the new session", WAIT, || {
        holder_seen.texts(&id) == ["after the reset"]
            && issuer_seen.texts(&id).last().map(String::as_str) == Some("holder is back")
    })
    .await;
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bundle_is_sent_again_when_the_inviter_starts() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let path = dir.path().join("issuer.redb");
    let (issuer, issuer_seen) = start(
        &relay,
        "issuer",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    // The holder joins with a bare transport and does not read yet.
    let invitation = issuer.create_invitation().await.unwrap();
    let early = relay.transport("holder");
    let id = confidant_actors::Transport::join(&early, &invitation.token)
        .await
        .unwrap();
    wait_until("join handled", WAIT, || {
        issuer_seen.with(|seen| seen.joined.len() == 1) && relay.pending("holder") == 1
    })
    .await;
    // The relay loses the bundle, then the inviter restarts.
    assert_eq!(relay.discard_pending("holder"), 1);
    issuer.shutdown().await.unwrap();
    let (issuer, _issuer_seen) = start(
        &relay,
        "issuer",
        redb(&path, Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    wait_until("bundle sent again", WAIT, || relay.pending("holder") == 1).await;
    let delivered = confidant_actors::Transport::receive(&early, 10)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].connection_id, id);
    let confidant_actors::Payload::Envelope(bytes) = &delivered[0].payload else {
        panic!("expected an envelope");
    };
    let body = confidant_core::wire::decode_envelope(bytes, 1 << 20).unwrap();
    assert!(
        matches!(body, confidant_core::wire::envelope::Body::Bundle(ref bundle)
        if bundle.identity_key == issuer.identity_key().to_vec()
            && bundle.one_time_pre_key.is_some())
    );
    issuer.shutdown().await.unwrap();
}

/// Two nodes without a suite in common: the invitee's refusal says so, as
/// a kind of its own (not a string to parse), naming what was offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_common_suite_is_its_own_kind_of_refusal() {
    let relay = MemoryRelay::new();
    let mut aes_only = confidant_core::SuiteRegistry::new();
    confidant_aes_gcm::register(&mut aes_only).unwrap();
    let mut chacha_only = confidant_core::SuiteRegistry::new();
    confidant_chacha20poly1305::register(&mut chacha_only).unwrap();
    let offered: Vec<u32> = aes_only.ids().iter().map(|id| id.0).collect();
    let (issuer, _issuer_seen) = start_with(
        &relay,
        "issuer",
        Arc::new(MemoryStore::new()),
        NodeConfig::default(),
        aes_only,
    )
    .await;
    let (holder, holder_seen) = start_with(
        &relay,
        "holder",
        Arc::new(MemoryStore::new()),
        NodeConfig::default(),
        chacha_only,
    )
    .await;
    let invitation = issuer.create_invitation().await.unwrap();
    holder.accept_invitation(&invitation, "hi").await.unwrap();
    wait_until("refusal reported", WAIT, || {
        holder_seen.with(|seen| !seen.failed.is_empty())
    })
    .await;
    let failure = holder_seen.with(|seen| seen.failed[0].1.clone());
    let HandshakeFailure::NoCommonSuite { offered: named } = &failure else {
        panic!("{failure:?}");
    };
    let mut named = named.clone();
    named.sort_unstable();
    let mut offered = offered;
    offered.sort_unstable();
    assert_eq!(named, offered);
    assert_eq!(holder_seen.connected_count(), 0);
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

/// A holder's transport whose joins for one token are answered only when
/// the test says so (the relay has already joined them, so the inviter's
/// bundle may come first); it notes the connections of what it delivers.
#[derive(Clone)]
struct SlowJoin {
    inner: Arc<confidant_actors::MemoryTransport>,
    slow_token: Arc<std::sync::Mutex<Option<String>>>,
    answer: Arc<tokio::sync::Notify>,
    delivered_on: Arc<std::sync::Mutex<Vec<ConnectionId>>>,
    joined: Arc<std::sync::Mutex<Option<ConnectionId>>>,
}

#[async_trait::async_trait]
impl confidant_actors::Transport for SlowJoin {
    async fn create_invitation(&self) -> Result<confidant_actors::RelayInvitation, TransportError> {
        self.inner.create_invitation().await
    }
    async fn join(&self, token: &str) -> Result<ConnectionId, TransportError> {
        let id = self.inner.join(token).await?;
        let slow = self.slow_token.lock().unwrap().as_deref() == Some(token);
        if slow {
            *self.joined.lock().unwrap() = Some(id.clone());
            self.answer.notified().await;
        }
        Ok(id)
    }
    async fn send(&self, envelopes: Vec<confidant_actors::Outgoing>) -> Result<(), TransportError> {
        self.inner.send(envelopes).await
    }
    async fn receive(&self, max: usize) -> Result<Vec<confidant_actors::Delivery>, TransportError> {
        let deliveries = self.inner.receive(max).await?;
        self.delivered_on.lock().unwrap().extend(
            deliveries
                .iter()
                .map(|delivery| delivery.connection_id.clone()),
        );
        Ok(deliveries)
    }
    async fn acknowledge(
        &self,
        ids: Vec<confidant_actors::DeliveryId>,
    ) -> Result<(), TransportError> {
        self.inner.acknowledge(ids).await
    }
    async fn release(&self, ids: Vec<confidant_actors::DeliveryId>) -> Result<(), TransportError> {
        self.inner.release(ids).await
    }
}

/// Handshakes do not wait for each other: while one join's answer is slow
/// to come back, another invitation is accepted and connects, and an
/// existing connection's messages are delivered. The slow one's bundle,
/// which arrives before its record is stored, is taken once the record is
/// there (not dropped as a bundle for an unknown connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_join_holds_back_neither_other_handshakes_nor_deliveries() {
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let transport = SlowJoin {
        inner: Arc::new(relay.transport("holder")),
        slow_token: Arc::default(),
        answer: Arc::default(),
        delivered_on: Arc::default(),
        joined: Arc::default(),
    };
    let (holder, holder_seen) = common::start_on(
        transport.clone(),
        Arc::new(MemoryStore::new()),
        NodeConfig::default(),
        common::suites(),
    )
    .await;
    let existing = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);

    let slow_invitation = issuer.create_invitation().await.unwrap();
    *transport.slow_token.lock().unwrap() = Some(slow_invitation.token.clone());
    let slow_holder = holder.clone();
    let slow = tokio::spawn(async move {
        slow_holder
            .accept_invitation(&slow_invitation, "slow")
            .await
    });
    wait_until("the slow join reached the relay", WAIT, || {
        transport.joined.lock().unwrap().is_some()
    })
    .await;
    let slow_id = transport.joined.lock().unwrap().clone().unwrap();

    // Meanwhile: another handshake, and a message on the existing one.
    let quick_invitation = issuer.create_invitation().await.unwrap();
    let quick = tokio::time::timeout(WAIT, holder.accept_invitation(&quick_invitation, "quick"))
        .await
        .expect("the second accept waited for the first")
        .unwrap();
    issuer.send(&existing, "meanwhile").await.unwrap();
    wait_until("the quick handshake and the message", WAIT, || {
        holder_seen.with(|seen| seen.connected.iter().any(|(id, _)| *id == quick))
            && holder_seen.texts(&existing) == ["meanwhile"]
    })
    .await;

    // The slow connection's bundle has come before its record.
    wait_until("the slow connection's bundle delivered", WAIT, || {
        transport.delivered_on.lock().unwrap().contains(&slow_id)
    })
    .await;
    transport.answer.notify_one();
    assert_eq!(slow.await.unwrap().unwrap(), slow_id);
    wait_until("the slow handshake done", WAIT, || {
        holder_seen.with(|seen| seen.connected.iter().any(|(id, _)| *id == slow_id))
            && issuer_seen.texts(&slow_id) == ["slow"]
    })
    .await;
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

/// A burst that needs more reservation commits than any fixed bound (one
/// counter per reservation here) is sealed to the end, and the connection
/// takes requests afterwards: the actor carries out every step its engine
/// asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_needing_many_reservations_is_sent_whole() {
    let relay = MemoryRelay::new();
    let config = NodeConfig::default().with_reservation_block(1);
    let (issuer, issuer_seen) = start(
        &relay,
        "issuer",
        Arc::new(MemoryStore::new()),
        config.clone(),
    )
    .await;
    let (holder, holder_seen) = start(&relay, "holder", Arc::new(MemoryStore::new()), config).await;
    let id = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1)
        .await
        .remove(0);
    let burst: Vec<Vec<u8>> = (0..1500)
        .map(|n| format!("burst {n}").into_bytes())
        .collect();
    holder.send_many(&id, burst).await.unwrap();
    holder.send(&id, "after the burst").await.unwrap();
    wait_until("the burst and the message after it", WAIT, || {
        issuer_seen.texts(&id).len() == 1502
    })
    .await;
    let texts = issuer_seen.texts(&id);
    assert_eq!(texts[1], "burst 0");
    assert_eq!(texts[1500], "burst 1499");
    assert_eq!(texts[1501], "after the burst");
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

/// A clean shutdown stores where each idle connection's sending counter
/// stands; the next start deletes those points before sealing anything and
/// wakes the connection there, without a reservation commit. A node that
/// goes away without a shutdown stores none, so the connection then
/// resumes above its durable reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_wakes_connections_without_a_reservation_commit() {
    use confidant_store::CounterStore;
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let (issuer, issuer_seen) = in_memory(&relay, "issuer").await;
    let store = redb(&dir.path().join("holder.redb"), Durability::Durable);
    let (holder, holder_seen) =
        start(&relay, "holder", Arc::clone(&store), NodeConfig::default()).await;
    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 1).await;
    let id = &connections[0];
    holder.send(id, "before").await.unwrap();
    let reserved = store.reservation(id).unwrap().unwrap();
    assert!(store.resume_points().unwrap().is_empty());
    holder.shutdown().await.unwrap();
    let points = store.resume_points().unwrap();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(&points[0].0, id);
    assert_eq!(points[0].1.reserved_until, reserved.reserved_until);
    assert_eq!(points[0].1.epoch, reserved.epoch);

    // Started again: the point is gone from the store before anything is
    // sealed, and the wake-up seals from it, under the same reservation.
    let (holder, _holder_seen) =
        start(&relay, "holder", Arc::clone(&store), NodeConfig::default()).await;
    assert!(store.resume_points().unwrap().is_empty());
    holder.send(id, "after a clean restart").await.unwrap();
    wait_until("delivered after the clean restart", WAIT, || {
        issuer_seen.texts(id).last().map(String::as_str) == Some("after a clean restart")
    })
    .await;
    assert_eq!(store.reservation(id).unwrap().unwrap(), reserved);

    // Gone without a shutdown (as after a crash): no point is stored, and
    // the next wake-up reserves above the durable reservation; the
    // receiver takes it (a reused counter would be refused as a replay).
    drop(holder);
    assert!(store.resume_points().unwrap().is_empty());
    let (holder, _holder_seen) =
        start(&relay, "holder", Arc::clone(&store), NodeConfig::default()).await;
    holder.send(id, "after a crash").await.unwrap();
    wait_until("delivered after the unclean stop", WAIT, || {
        issuer_seen.texts(id).last().map(String::as_str) == Some("after a crash")
    })
    .await;
    assert!(store.reservation(id).unwrap().unwrap().reserved_until > reserved.reserved_until);
    holder.shutdown().await.unwrap();
    issuer.shutdown().await.unwrap();
}
