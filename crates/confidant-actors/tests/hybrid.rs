//! The runtime with the post-quantum hybrid (X3DH + ML-KEM-768) on real
//! redb files: sessions are post-quantum, no one-time key outlives its
//! handshake, the KEM keys survive a restart, and a running node rotates
//! its signed pre-keys and goes on connecting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Collector, connect, redb, start, start_hybrid, wait_until};
use confidant_actors::{HandshakeFailure, MemoryRelay, Node, NodeConfig};
use confidant_store::{Durability, PreKeyStore, RawStore, RedbStore, Table};
use confidant_x3dh_mlkem768::X3dhMlKem768;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The tags of the agreement-key records in `store` (`o` one-time KEM
/// pre-keys, `s` last-resort ones, `t` signed pre-key times), one per
/// record.
fn agreement_tags(store: &RedbStore) -> Vec<u8> {
    store
        .entries(Table::AgreementKeys)
        .unwrap()
        .into_iter()
        .filter_map(|(key, _)| key.first().copied())
        .collect()
}

async fn hybrid_node(
    relay: &MemoryRelay,
    party: &str,
    path: &Path,
) -> (Node, Collector, Arc<RedbStore>) {
    let store = redb(path, Durability::Durable);
    let (node, seen) = start_hybrid(
        relay,
        party,
        Arc::clone(&store),
        NodeConfig::default(),
        X3dhMlKem768::default(),
    )
    .await;
    (node, seen, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_nodes_connect_post_quantum_and_their_kem_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let issuer_path = dir.path().join("issuer.redb");
    let (issuer, issuer_seen, issuer_store) = hybrid_node(&relay, "issuer", &issuer_path).await;
    let (holder, holder_seen, _holder_store) =
        hybrid_node(&relay, "holder", &dir.path().join("holder.redb")).await;
    // The invitation says the issuer has the hybrid.
    assert!(issuer.create_invitation().await.unwrap().hybrid);

    let connections = connect(&issuer, &issuer_seen, &holder, &holder_seen, 8).await;
    for seen in [&issuer_seen, &holder_seen] {
        assert!(seen.with(|seen| seen.post_quantum.iter().all(|pq| *pq)));
        assert_eq!(seen.with(|seen| seen.post_quantum.len()), 8);
    }
    for id in &connections {
        holder.send(id, "after the hybrid handshake").await.unwrap();
    }
    wait_until("the messages", WAIT, || {
        connections
            .iter()
            .all(|id| issuer_seen.messages(id).len() == 2)
    })
    .await;
    // Every one-time key went with its session; one last-resort KEM key
    // and one time record remain, beside signed pre-key 1. (The unused
    // invitation above has no keys: keys are made when someone joins.)
    assert!(issuer_store.one_time_pre_key_ids().unwrap().is_empty());
    let mut tags = agreement_tags(&issuer_store);
    tags.sort_unstable();
    assert_eq!(tags, b"st".to_vec());
    let identity = issuer.identity_key();
    issuer.shutdown().await.unwrap();
    drop(issuer_store);

    // The issuer restarts on its file: its KEM keys load, and it connects
    // again, post-quantum, with the same identity.
    let (issuer, issuer_seen, issuer_store) = hybrid_node(&relay, "issuer", &issuer_path).await;
    assert_eq!(issuer.identity_key(), identity);
    let more = connect(&issuer, &issuer_seen, &holder, &holder_seen, 2).await;
    assert!(issuer_seen.with(|seen| seen.post_quantum == vec![true, true]));
    for id in &more {
        issuer.send(id, "hello again").await.unwrap();
    }
    wait_until("the new connections' messages", WAIT, || {
        more.iter().all(|id| holder_seen.messages(id).len() == 1)
    })
    .await;
    assert_eq!(issuer_store.signed_pre_key_ids().unwrap(), vec![1]);
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_rotates_its_signed_pre_key_and_goes_on_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    let issuer_store = redb(&dir.path().join("issuer.redb"), Durability::Durable);
    // Due every second (checked every second), kept an hour.
    let config = NodeConfig::default()
        .with_pre_key_rotation(Duration::from_secs(1), Duration::from_secs(3600));
    let (issuer, issuer_seen) = start_hybrid(
        &relay,
        "issuer",
        Arc::clone(&issuer_store),
        config,
        X3dhMlKem768::default(),
    )
    .await;
    let (holder, holder_seen, _) =
        hybrid_node(&relay, "holder", &dir.path().join("holder.redb")).await;
    connect(&issuer, &issuer_seen, &holder, &holder_seen, 1).await;
    assert_eq!(issuer_store.signed_pre_key_ids().unwrap(), vec![1]);
    // While it runs, the node makes new signed pre-keys, each with its
    // last-resort KEM key and time, and keeps the old ones (grace).
    wait_until("two rotations", WAIT, || {
        issuer_store.signed_pre_key_ids().unwrap().len() >= 3
    })
    .await;
    let ids = issuer_store.signed_pre_key_ids().unwrap();
    assert_eq!(ids[..3], [1, 2, 3]);
    let tags = agreement_tags(&issuer_store);
    assert!(
        tags.iter().filter(|tag| **tag == b's').count() >= 3,
        "{tags:?}"
    );
    // New handshakes use the rotated keys and still connect.
    connect(&issuer, &issuer_seen, &holder, &holder_seen, 3).await;
    assert_eq!(issuer_seen.with(|seen| seen.post_quantum.len()), 4);
    assert!(issuer_seen.with(|seen| seen.post_quantum.iter().all(|pq| *pq)));
    assert!(holder_seen.with(|seen| seen.failed.is_empty()));
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classical_and_hybrid_nodes_meet_only_where_one_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MemoryRelay::new();
    // A hybrid issuer, a classical holder: refused by default.
    let (issuer, issuer_seen, _) =
        hybrid_node(&relay, "issuer", &dir.path().join("issuer.redb")).await;
    let (classical, classical_seen) = start(
        &relay,
        "classical",
        redb(&dir.path().join("classical.redb"), Durability::Durable),
        NodeConfig::default(),
    )
    .await;
    let invitation = issuer.create_invitation().await.unwrap();
    classical
        .accept_invitation(&invitation, "hi")
        .await
        .unwrap();
    wait_until("the refusal", WAIT, || {
        issuer_seen.with(|seen| {
            seen.failed
                .iter()
                .any(|(_, error)| *error == HandshakeFailure::ClassicalRefused)
        })
    })
    .await;
    assert!(issuer_seen.with(|seen| seen.connected.is_empty()));
    issuer.shutdown().await.unwrap();

    // A hybrid holder, a classical issuer: the invitation has no hybrid
    // bit, and the holder requires the hybrid by default.
    let (holder, holder_seen, _) =
        hybrid_node(&relay, "holder", &dir.path().join("holder.redb")).await;
    let invitation = classical.create_invitation().await.unwrap();
    assert!(!invitation.hybrid);
    holder.accept_invitation(&invitation, "hi").await.unwrap();
    wait_until("the holder's refusal", WAIT, || {
        holder_seen.with(|seen| {
            seen.failed
                .iter()
                .any(|(_, error)| *error == HandshakeFailure::HybridStripped)
        })
    })
    .await;
    // A holder that allows classical issuers connects, classically.
    let (lenient, lenient_seen) = start_hybrid(
        &relay,
        "lenient",
        redb(&dir.path().join("lenient.redb"), Durability::Durable),
        NodeConfig::default(),
        X3dhMlKem768::default().with_require_hybrid(false),
    )
    .await;
    connect(&classical, &classical_seen, &lenient, &lenient_seen, 1).await;
    assert_eq!(
        lenient_seen.with(|seen| seen.post_quantum.clone()),
        vec![false]
    );
    holder.shutdown().await.unwrap();
    lenient.shutdown().await.unwrap();
    classical.shutdown().await.unwrap();
}
