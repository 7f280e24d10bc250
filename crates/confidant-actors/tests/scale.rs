//! Two nodes, 10,000 connections, messages both ways, and one node
//! restarted in the middle: every message arrives exactly once and in order
//! per connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Collector, connect, redb, start, wait_until};
use confidant_actors::{MemoryRelay, Node, NodeConfig};
use confidant_core::ConnectionId;
use confidant_store::Durability;
use std::time::Duration;

const CONNECTIONS: usize = 10_000;
const PER_DIRECTION: usize = 4;

fn text(id: &ConnectionId, direction: &str, index: usize) -> String {
    format!("{id}/{direction}/{index}")
}

/// Sends messages `range` on every connection, many connections at a time,
/// each connection's messages in order.
async fn send_all(
    node: &Node,
    connections: &[ConnectionId],
    direction: &'static str,
    range: std::ops::Range<usize>,
) {
    for chunk in connections.chunks(500) {
        futures_util::future::try_join_all(chunk.iter().map(|id| {
            let node = node.clone();
            let range = range.clone();
            async move {
                for index in range {
                    node.send(id, text(id, direction, index)).await?;
                }
                Ok::<(), confidant_actors::NodeError>(())
            }
        }))
        .await
        .unwrap();
    }
}

fn check(seen: &Collector, connections: &[ConnectionId], direction: &str, skip: usize) {
    for id in connections {
        let texts = seen.texts(id);
        let expected: Vec<String> = (0..PER_DIRECTION)
            .map(|index| text(id, direction, index))
            .collect();
        assert_eq!(&texts[skip..], expected.as_slice(), "connection {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_both_ways_with_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    // Real redb files; commits are deferred (synced on close) to keep the
    // 40,000 handshake commits affordable. Crash durability is the crash
    // tests' subject.
    let issuer_path = dir.path().join("issuer.redb");
    let holder_path = dir.path().join("holder.redb");
    let config = NodeConfig::default();
    let (issuer, issuer_seen) = start(
        &relay,
        "issuer",
        redb(&issuer_path, Durability::Deferred),
        config.clone(),
    )
    .await;
    let (holder, holder_seen) = start(
        &relay,
        "holder",
        redb(&holder_path, Durability::Deferred),
        config.clone(),
    )
    .await;
    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, CONNECTIONS).await;

    // First half both ways, concurrently.
    let half = PER_DIRECTION / 2;
    tokio::join!(
        send_all(&issuer, &connections, "to-holder", 0..half),
        send_all(&holder, &connections, "to-issuer", 0..half),
    );

    // The holder restarts while the issuer keeps sending.
    let issuer_sending = tokio::spawn({
        let issuer = issuer.clone();
        let connections = connections.clone();
        async move { send_all(&issuer, &connections, "to-holder", half..PER_DIRECTION).await }
    });
    holder.shutdown().await.unwrap();
    let (holder, events) = Node::builder()
        .store(redb(&holder_path, Durability::Deferred))
        .suites(common::suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport("holder"))
        .config(config)
        .start()
        .await
        .unwrap();
    holder_seen.attach(holder.clone(), events);
    send_all(&holder, &connections, "to-issuer", half..PER_DIRECTION).await;
    issuer_sending.await.unwrap();

    wait_until("every message", Duration::from_secs(300), || {
        issuer_seen.with(|seen| {
            connections
                .iter()
                .all(|id| seen.messages.get(id).map_or(0, Vec::len) == PER_DIRECTION + 1)
        }) && holder_seen.with(|seen| {
            connections
                .iter()
                .all(|id| seen.messages.get(id).map_or(0, Vec::len) == PER_DIRECTION)
        })
    })
    .await;
    // Exactly once and in order: the greeting, then the messages.
    check(&issuer_seen, &connections, "to-issuer", 1);
    check(&holder_seen, &connections, "to-holder", 0);
    wait_until("the relay holds nothing", Duration::from_secs(60), || {
        relay.pending("issuer") == 0 && relay.pending("holder") == 0
    })
    .await;
    let total = issuer_seen.with(|seen| seen.messages.values().map(Vec::len).sum::<usize>())
        + holder_seen.with(|seen| seen.messages.values().map(Vec::len).sum::<usize>());
    assert_eq!(total, CONNECTIONS * (2 * PER_DIRECTION + 1));
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}
