//! The mobile delivery mode over real gRPC on loopback, on both backends: a
//! holder whose transport holds no stream (`with_sync_delivery`) gets
//! nothing until it calls `Node::sync`, which fetches what waits, processes
//! it durably (real redb files), and returns only once the connector has
//! deleted every fetched delivery; a sync with nothing waiting returns 0; a
//! restarted holder that syncs gets only what it had not processed; a
//! streaming transport refuses `sync` with a typed error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_actors::{Event, Events, Node, NodeConfig, NodeError, TransportError};
use confidant_connector::{ConnectorTransport, Limits};
use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_store::{MemoryStore, RedbStore, StoreOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[macro_use]
mod common;

use common::{connector_on, signer};

fn suites() -> SuiteRegistry {
    let mut suites = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut suites).unwrap();
    suites
}

async fn issuer(url: &str) -> (Node, Events) {
    Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .suites(suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(ConnectorTransport::new(url, signer(1)).unwrap())
        .config(NodeConfig::default())
        .start()
        .await
        .unwrap()
}

/// A holder on a redb file, its transport in sync delivery mode.
async fn syncing_holder(url: &str, path: &Path) -> (Node, Events) {
    let transport = ConnectorTransport::new(url, signer(2))
        .unwrap()
        .with_sync_delivery();
    assert!(transport.sync_delivery());
    Node::builder()
        .store(Arc::new(
            RedbStore::open_or_create(path, StoreOptions::new()).unwrap(),
        ))
        .suites(suites())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(transport)
        .config(NodeConfig::default())
        .start()
        .await
        .unwrap()
}

async fn sync(node: &Node) -> usize {
    tokio::time::timeout(Duration::from_secs(30), node.sync())
        .await
        .expect("a sync ends")
        .unwrap()
}

/// The events already given out, without waiting for more.
async fn events_now(events: &mut Events) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        out.push(event);
    }
    out
}

fn messages(events: &[Event]) -> Vec<(u64, Vec<u8>)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Message(message) => Some((message.sequence, message.plaintext.to_vec())),
            _ => None,
        })
        .collect()
}

async fn connected(events: &mut Events) -> ConnectionId {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event in time")
            .expect("the node runs");
        if let Event::Connected { connection_id, .. } = event {
            return connection_id;
        }
    }
}

async fn pending(connector: &common::Connector, seed: u8) -> u64 {
    connector
        .mailbox
        .pending(&signer(seed).public_key())
        .await
        .unwrap()
}

on_both_backends! {
    async fn a_syncing_holder_gets_what_waits_only_when_it_syncs(place: Place) {
        let connector = connector_on(Arc::clone(&place), Limits::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let holder_path = dir.path().join("holder.redb");
        let (issuer, mut issuer_events) = issuer(&connector.url).await;
        let (holder, mut holder_events) = syncing_holder(&connector.url, &holder_path).await;

        // A streaming transport has nothing to fetch: a typed refusal.
        let refused = issuer.sync().await.unwrap_err();
        assert!(
            matches!(refused, NodeError::Transport(TransportError::Unsupported(_))),
            "{refused:?}"
        );

        let invitation = issuer.create_invitation().await.unwrap();
        let connection = holder.accept_invitation(&invitation, "hello").await.unwrap();
        // The issuer's bundle waits at the connector until the holder syncs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while pending(&connector, 2).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the bundle never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(sync(&holder).await >= 1, "the bundle was fetched");
        assert_eq!(connected(&mut holder_events).await, connection);
        assert_eq!(connected(&mut issuer_events).await, connection);
        assert_eq!(pending(&connector, 2).await, 0, "sync returned after the acknowledgement");

        for index in 0..30 {
            issuer.send(&connection, format!("credential {index}")).await.unwrap();
        }
        // Sent and stored at the connector; nobody fetches them yet.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while pending(&connector, 2).await < 30 {
            assert!(tokio::time::Instant::now() < deadline, "the sends never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pending(&connector, 2).await, 30, "no stream took them");
        assert!(messages(&events_now(&mut holder_events).await).is_empty());

        assert_eq!(sync(&holder).await, 30);
        // Deleted at the connector before sync returned: no waiting here.
        assert_eq!(pending(&connector, 2).await, 0);
        let got = messages(&events_now(&mut holder_events).await);
        let texts: Vec<Vec<u8>> = got.iter().map(|(_, text)| text.clone()).collect();
        let expected: Vec<Vec<u8>> =
            (0..30).map(|index| format!("credential {index}").into_bytes()).collect();
        assert_eq!(texts, expected, "every message once, in order");
        assert_eq!(sync(&holder).await, 0, "nothing waits any more");

        // Acknowledge half in the app; the rest stays in the holder's inbox.
        let sequences: Vec<u64> = got.iter().map(|(sequence, _)| *sequence).collect();
        holder.acknowledge(&sequences[..15]).await.unwrap();
        for index in 30..35 {
            issuer.send(&connection, format!("credential {index}")).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while pending(&connector, 2).await < 5 {
            assert!(tokio::time::Instant::now() < deadline, "the sends never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        holder.shutdown().await.unwrap();

        // Restarted: the inbox gives back what the app had not
        // acknowledged, and a sync fetches only the five new ones.
        let (holder, mut holder_events) = syncing_holder(&connector.url, &holder_path).await;
        assert_eq!(sync(&holder).await, 5);
        assert_eq!(pending(&connector, 2).await, 0);
        let again = messages(&events_now(&mut holder_events).await);
        let texts: Vec<Vec<u8>> = again.iter().map(|(_, text)| text.clone()).collect();
        let expected: Vec<Vec<u8>> =
            (15..35).map(|index| format!("credential {index}").into_bytes()).collect();
        assert_eq!(texts, expected, "the unacknowledged 15 from the inbox, then the 5 new, once each");

        issuer.shutdown().await.unwrap();
        holder.shutdown().await.unwrap();
        connector.stop().await;
    }
}
