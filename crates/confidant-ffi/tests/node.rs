//! The bindings' API against a real connector served in-process over
//! loopback gRPC, with nodes on real redb files in temporary directories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_connector::{Limits, MailboxStore, RedbMailbox, serve};
use confidant_ffi::{
    ConfidantError, ConfidantNode, ConnectionState, HandshakeFailureKind, InvitationErrorKind,
    NodeEvent, NodeOptions, Side, StorageErrorKind, fingerprint, open_node, parse_invitation,
};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for one event or one call.
const STEP: Duration = Duration::from_secs(30);

/// A connector on a loopback port, its mailboxes in a temporary directory.
struct Connector {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Connector {
    async fn start(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mailbox: Arc<dyn MailboxStore> =
            Arc::new(RedbMailbox::open(dir.path().join("connector.redb"), limits).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, mailbox, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STEP, task).await.unwrap().unwrap();
        }
    }
}

fn options(dir: &std::path::Path, url: &str) -> NodeOptions {
    NodeOptions {
        data_dir: dir.to_str().unwrap().to_owned(),
        connector_urls: vec![url.to_owned()],
        at_rest_key: None,
        connector_ca_pem: None,
        sync_delivery: false,
    }
}

async fn open(dir: &std::path::Path, url: &str) -> Arc<ConfidantNode> {
    tokio::time::timeout(STEP, open_node(options(dir, url)))
        .await
        .expect("open in time")
        .unwrap()
}

/// Waits for the first event that `pick` maps to `Some`, skipping others.
async fn wait_for<T>(
    node: &ConfidantNode,
    what: &str,
    mut pick: impl FnMut(NodeEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let event = tokio::time::timeout_at(deadline, node.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {STEP:?}"))
            .unwrap_or_else(|| panic!("the node stopped before {what}"));
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

async fn connected(node: &ConfidantNode) -> (String, Side, Vec<u8>, String, bool) {
    wait_for(node, "Connected", |event| match event {
        NodeEvent::Connected {
            connection_id,
            side,
            peer_identity_key,
            peer_fingerprint,
            reset,
            post_quantum,
        } => Some((
            {
                // Every node the bindings open uses the hybrid.
                assert!(post_quantum, "the bindings' session is not post-quantum");
                connection_id
            },
            side,
            peer_identity_key,
            peer_fingerprint,
            reset,
        )),
        _ => None,
    })
    .await
}

async fn message(node: &ConfidantNode) -> (String, u64, Vec<u8>) {
    wait_for(node, "a message", |event| match event {
        NodeEvent::MessageReceived {
            connection_id,
            sequence,
            message,
        } => Some((connection_id, sequence, message)),
        _ => None,
    })
    .await
}

/// An issuer and a holder connected through the connector: the holder's
/// greeting, the issuer's invitation and both nodes' events.
async fn connect(issuer: &ConfidantNode, holder: &ConfidantNode) -> String {
    let text = issuer.create_invitation().await.unwrap();
    let connection = holder
        .accept_invitation(text, b"hello from python".to_vec())
        .await
        .unwrap();
    let (id, side, peer, _, reset) = connected(holder).await;
    assert_eq!(
        (id.as_str(), side, reset),
        (connection.as_str(), Side::Invitee, false)
    );
    assert_eq!(peer, issuer.identity_key());
    let (id, side, _, _, _) = connected(issuer).await;
    assert_eq!((id.as_str(), side), (connection.as_str(), Side::Inviter));
    connection
}

/// The whole path a wallet takes: invitation, X3DH, messages both ways,
/// acknowledgement, a restart that reports again exactly the messages not
/// acknowledged (under the same numbers), and a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_handshake_messages_acknowledgement_restart_and_reset() {
    let connector = Connector::start(Limits::default()).await;
    let root = tempfile::tempdir().unwrap();
    let (issuer_dir, holder_dir) = (root.path().join("issuer"), root.path().join("holder"));
    let issuer = open(&issuer_dir, &connector.url).await;
    let holder = open(&holder_dir, &connector.url).await;
    assert_eq!(issuer.identity_key().len(), 32);
    assert_ne!(issuer.identity_key(), holder.identity_key());
    assert_eq!(issuer.connector_url(), connector.url);

    // The invitation names the connector and the issuer's key; its
    // fingerprint is the one the issuer shows.
    let text = issuer.create_invitation().await.unwrap();
    assert!(text.starts_with("confidant3:"), "{text}");
    assert!(
        confidant_actors::Invitation::from_text(&text)
            .unwrap()
            .hybrid,
        "the bindings' invitations say the node has the hybrid"
    );
    let info = parse_invitation(text.clone()).unwrap();
    assert_eq!(info.connector_url, connector.url);
    assert_eq!(info.inviter_identity_key, issuer.identity_key());
    assert_eq!(info.inviter_fingerprint, issuer.fingerprint());
    assert!(info.post_quantum);
    assert_eq!(
        fingerprint(issuer.identity_key()).unwrap(),
        issuer.fingerprint()
    );

    let connection = holder
        .accept_invitation(text, b"hello from the wallet".to_vec())
        .await
        .unwrap();
    let joined = wait_for(&issuer, "Joined", |event| match event {
        NodeEvent::Joined { connection_id } => Some(connection_id),
        _ => None,
    })
    .await;
    assert_eq!(joined, connection);
    let (_, _, peer, peer_fingerprint, _) = connected(&holder).await;
    assert_eq!(peer, issuer.identity_key());
    assert_eq!(peer_fingerprint, issuer.fingerprint());
    let (_, _, peer, peer_fingerprint, _) = connected(&issuer).await;
    assert_eq!(peer, holder.identity_key());
    assert_eq!(peer_fingerprint, holder.fingerprint());

    // The greeting is the issuer's first message from the holder.
    let (id, greeting_sequence, greeting) = message(&issuer).await;
    assert_eq!(
        (id.as_str(), greeting.as_slice()),
        (connection.as_str(), &b"hello from the wallet"[..])
    );
    issuer.acknowledge(vec![greeting_sequence]).await.unwrap();

    // Both directions, both listed as established.
    for node in [&issuer, &holder] {
        let listed = node.connections().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].connection_id, connection);
        assert_eq!(listed[0].state, ConnectionState::Established);
        assert!(listed[0].peer_identity_key.is_some());
    }
    assert_eq!(
        holder.connections().await.unwrap()[0].peer_fingerprint,
        Some(issuer.fingerprint())
    );
    let credential = br#"{"degree":"BSc"}"#.to_vec();
    issuer
        .send(connection.clone(), credential.clone())
        .await
        .unwrap();
    issuer
        .send(connection.clone(), b"second".to_vec())
        .await
        .unwrap();
    let (_, first_sequence, first) = message(&holder).await;
    let (_, second_sequence, second) = message(&holder).await;
    assert_eq!((first, second), (credential.clone(), b"second".to_vec()));
    holder
        .send(connection.clone(), b"received".to_vec())
        .await
        .unwrap();
    let (_, _, reply) = message(&issuer).await;
    assert_eq!(reply, b"received");

    // Only the first is acknowledged: after a restart, the second comes
    // again under its number, the first never.
    holder.acknowledge(vec![first_sequence]).await.unwrap();
    holder.shutdown().await.unwrap();
    assert_eq!(holder.next_event().await, None);
    assert_eq!(
        holder.send(connection.clone(), b"x".to_vec()).await,
        Err(ConfidantError::Closed)
    );
    holder.shutdown().await.unwrap();
    let holder = open(&holder_dir, &connector.url).await;
    let (_, again, text) = message(&holder).await;
    assert_eq!((again, text.as_slice()), (second_sequence, &b"second"[..]));
    holder.acknowledge(vec![again]).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), holder.next_event())
            .await
            .is_err(),
        "nothing else is reported"
    );

    // A reset replaces the session on both sides; messages flow after it.
    holder.reset(connection.clone()).await.unwrap();
    let (_, _, _, _, reset) = connected(&holder).await;
    assert!(reset);
    let (_, _, _, _, reset) = connected(&issuer).await;
    assert!(reset);
    issuer
        .send(connection.clone(), b"after reset".to_vec())
        .await
        .unwrap();
    let (_, _, text) = message(&holder).await;
    assert_eq!(text, b"after reset");

    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
    connector.stop().await;
}

/// A wait for the next event ends with `None` when the node shuts down
/// meanwhile (it neither hangs nor keeps the node from stopping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_next_event_ends_at_shutdown() {
    let connector = Connector::start(Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), &connector.url).await;
    let waiting = {
        let node = Arc::clone(&node);
        tokio::spawn(async move { node.next_event().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(STEP, node.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tokio::time::timeout(STEP, waiting).await.unwrap().unwrap(),
        None
    );
    assert_eq!(node.create_invitation().await, Err(ConfidantError::Closed));
    assert_eq!(node.connections().await, Err(ConfidantError::Closed));
    connector.stop().await;
}

/// The at-rest key: a store created with one opens only with it (typed
/// errors for none, a wrong one, and one given to an unencrypted store);
/// a key of the wrong length is refused before anything is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_at_rest_key_is_required_checked_and_typed() {
    let connector = Connector::start(Limits::default()).await;
    let root = tempfile::tempdir().unwrap();
    let sealed = root.path().join("sealed");
    let with_key = |dir: &std::path::Path, key: Option<Vec<u8>>| NodeOptions {
        at_rest_key: key,
        ..options(dir, &connector.url)
    };
    let node = open_node(with_key(&sealed, Some(vec![0x42; 32])))
        .await
        .unwrap();
    let identity = node.identity_key();
    node.shutdown().await.unwrap();

    let storage_kind = |result: Result<Arc<ConfidantNode>, ConfidantError>| match result {
        Err(ConfidantError::Storage { kind, .. }) => kind,
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("opened"),
    };
    assert_eq!(
        storage_kind(open_node(with_key(&sealed, None)).await),
        StorageErrorKind::KeyRequired
    );
    assert_eq!(
        storage_kind(open_node(with_key(&sealed, Some(vec![0x43; 32]))).await),
        StorageErrorKind::WrongKey
    );
    let node = open_node(with_key(&sealed, Some(vec![0x42; 32])))
        .await
        .unwrap();
    assert_eq!(
        node.identity_key(),
        identity,
        "the same identity after reopening"
    );
    node.shutdown().await.unwrap();

    let plain = root.path().join("plain");
    open(&plain, &connector.url).await.shutdown().await.unwrap();
    assert_eq!(
        storage_kind(open_node(with_key(&plain, Some(vec![0x42; 32]))).await),
        StorageErrorKind::NotEncrypted
    );

    let short = root.path().join("short");
    assert!(matches!(
        open_node(with_key(&short, Some(vec![0x42; 31]))).await,
        Err(ConfidantError::InvalidArgument { .. })
    ));
    assert!(!short.exists(), "nothing was created for a refused key");
    assert!(matches!(
        open_node(NodeOptions {
            connector_urls: vec![],
            ..options(&short, &connector.url)
        })
        .await,
        Err(ConfidantError::InvalidArgument { .. })
    ));
    // One node per directory.
    let node = open(&plain, &connector.url).await;
    assert_eq!(
        storage_kind(open_node(options(&plain, &connector.url)).await),
        StorageErrorKind::AlreadyOpen
    );
    node.shutdown().await.unwrap();
    connector.stop().await;
}

fn invitation_kind<T: std::fmt::Debug>(result: Result<T, ConfidantError>) -> InvitationErrorKind {
    match result {
        Err(ConfidantError::InvalidInvitation { kind, .. }) => kind,
        other => panic!("{other:?}"),
    }
}

/// Bad input gives typed errors, never a panic: damaged and foreign
/// invitation texts, an invitation of another connector, unknown and
/// malformed connection ids, a key of the wrong length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_typed_errors() {
    let connector = Connector::start(Limits::default()).await;
    let other = Connector::start(Limits::default()).await;
    let root = tempfile::tempdir().unwrap();
    let holder = open(&root.path().join("holder"), &connector.url).await;
    let elsewhere = open(&root.path().join("elsewhere"), &other.url).await;

    let text = elsewhere.create_invitation().await.unwrap();
    let cut = text[..text.len() - 3].to_owned();
    assert_eq!(
        invitation_kind(parse_invitation(cut.clone())),
        InvitationErrorKind::Damaged
    );
    assert_eq!(
        invitation_kind(holder.accept_invitation(cut, vec![]).await),
        InvitationErrorKind::Damaged
    );
    assert_eq!(
        invitation_kind(holder.accept_invitation("hello".into(), vec![]).await),
        InvitationErrorKind::NotAnInvitation
    );
    assert_eq!(
        invitation_kind(parse_invitation("confidant9:AAAA".into())),
        InvitationErrorKind::UnsupportedVersion
    );
    match holder.accept_invitation(text, vec![]).await {
        Err(ConfidantError::OtherConnector {
            invitation_connector,
            node_connector,
        }) => {
            assert_eq!(invitation_connector, other.url);
            assert_eq!(node_connector, connector.url);
        }
        other => panic!("{other:?}"),
    }
    assert!(holder.connections().await.unwrap().is_empty());

    // A used token is the connector's refusal.
    let issuer = open(&root.path().join("issuer"), &connector.url).await;
    let text = issuer.create_invitation().await.unwrap();
    holder
        .accept_invitation(text.clone(), vec![])
        .await
        .unwrap();
    let third = open(&root.path().join("third"), &connector.url).await;
    assert!(matches!(
        third.accept_invitation(text, vec![]).await,
        Err(ConfidantError::ConnectorRefused { .. })
    ));

    assert_eq!(
        holder
            .send("no-such-connection".into(), b"x".to_vec())
            .await,
        Err(ConfidantError::UnknownConnection {
            connection_id: "no-such-connection".into()
        })
    );
    assert!(matches!(
        holder.send(String::new(), b"x".to_vec()).await,
        Err(ConfidantError::InvalidArgument { .. })
    ));
    assert!(matches!(
        holder.reset(String::new()).await,
        Err(ConfidantError::InvalidArgument { .. })
    ));
    assert!(matches!(
        fingerprint(vec![1; 31]),
        Err(ConfidantError::InvalidArgument { .. })
    ));
    holder.acknowledge(vec![u64::MAX]).await.unwrap();

    for node in [holder, elsewhere, issuer, third] {
        node.shutdown().await.unwrap();
    }
    connector.stop().await;
    other.stop().await;
}

/// A connector that does not answer is `ConnectorUnreachable`; a full
/// mailbox at the connector is `MailboxFull` (from the real connector's
/// machine-readable refusal reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_connector_and_a_full_mailbox_are_typed() {
    let root = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let lonely = open(&root.path().join("lonely"), &closed).await;
    assert!(matches!(
        tokio::time::timeout(STEP, lonely.create_invitation())
            .await
            .unwrap(),
        Err(ConfidantError::ConnectorUnreachable { .. })
    ));
    lonely.shutdown().await.unwrap();

    let connector = Connector::start(Limits {
        max_pending_per_recipient: 3,
        ..Limits::default()
    })
    .await;
    let issuer = open(&root.path().join("issuer"), &connector.url).await;
    let holder_dir = root.path().join("holder");
    let holder = open(&holder_dir, &connector.url).await;
    let connection = connect(&issuer, &holder).await;
    // The holder is away: messages wait for it at the connector.
    holder.shutdown().await.unwrap();
    let mut refused = None;
    for n in 0..10 {
        match issuer
            .send(connection.clone(), format!("m{n}").into_bytes())
            .await
        {
            Ok(()) => {}
            Err(error) => {
                refused = Some((n, error));
                break;
            }
        }
    }
    match refused {
        Some((n, ConfidantError::MailboxFull { .. })) => assert!(n <= 3, "refused after {n}"),
        other => panic!("{other:?}"),
    }
    // Once the holder fetched them, sending works again.
    let holder = open(&holder_dir, &connector.url).await;
    let mut sequences = Vec::new();
    while sequences.len() < 2 {
        sequences.push(message(&holder).await.1);
    }
    holder.acknowledge(sequences).await.unwrap();
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match issuer.send(connection.clone(), b"later".to_vec()).await {
            Ok(()) => break,
            Err(ConfidantError::MailboxFull { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    issuer.shutdown().await.unwrap();
    holder.shutdown().await.unwrap();
    connector.stop().await;
}

/// The handshake kinds reach the bindings' events: an invitation whose
/// identity key is not the inviter's (as a swapped bundle looks to the
/// holder) is refused with `IdentityMismatch` and never connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_is_not_the_invitations_is_refused_with_its_kind() {
    let connector = Connector::start(Limits::default()).await;
    let root = tempfile::tempdir().unwrap();
    let issuer = open(&root.path().join("issuer"), &connector.url).await;
    let holder = open(&root.path().join("holder"), &connector.url).await;
    let impostor = open(&root.path().join("impostor"), &connector.url).await;
    // The issuer's invitation, re-written to carry another party's key: the
    // bundle that comes is then not the invitation's.
    let text = issuer.create_invitation().await.unwrap();
    let forged = forge_identity(&text, &impostor.identity_key());
    let connection = holder.accept_invitation(forged, vec![]).await.unwrap();
    let (id, kind) = wait_for(&holder, "HandshakeFailed", |event| match event {
        NodeEvent::HandshakeFailed {
            connection_id,
            kind,
            ..
        } => Some((connection_id, kind)),
        NodeEvent::Connected { .. } => panic!("connected to a bundle that is not the invitation's"),
        _ => None,
    })
    .await;
    assert_eq!(
        (id.as_str(), kind),
        (connection.as_str(), HandshakeFailureKind::IdentityMismatch)
    );
    assert_eq!(
        holder.connections().await.unwrap()[0].state,
        ConnectionState::AwaitingBundle
    );
    for node in [issuer, holder, impostor] {
        node.shutdown().await.unwrap();
    }
    connector.stop().await;
}

/// `text` with its identity key replaced by `key` (and a valid checksum):
/// what an attacker who can change the QR code would show.
fn forge_identity(text: &str, key: &[u8]) -> String {
    let invitation = confidant_actors::Invitation::from_text(text).unwrap();
    confidant_actors::Invitation {
        identity_key: key.try_into().unwrap(),
        ..invitation
    }
    .to_text()
}

/// The mobile delivery mode: a holder opened with `sync_delivery` takes
/// nothing until it syncs; a sync fetches, processes and acknowledges what
/// waits, and its events come from `next_event`; a streaming node refuses
/// `sync` with a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_delivery_node_takes_what_waits_when_it_syncs() {
    let connector = Connector::start(Limits::default()).await;
    let issuer_dir = tempfile::tempdir().unwrap();
    let holder_dir = tempfile::tempdir().unwrap();
    let issuer = open(issuer_dir.path(), &connector.url).await;
    assert!(matches!(
        issuer.sync().await,
        Err(ConfidantError::InvalidArgument { .. })
    ));
    let holder = tokio::time::timeout(
        STEP,
        open_node(NodeOptions {
            sync_delivery: true,
            ..options(holder_dir.path(), &connector.url)
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let text = issuer.create_invitation().await.unwrap();
    let connection = holder
        .accept_invitation(text, b"hello".to_vec())
        .await
        .unwrap();
    // The bundle arrives only through a sync; sync until connected.
    let deadline = tokio::time::Instant::now() + STEP;
    let mut fetched = 0;
    while fetched == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no bundle fetched");
        fetched = holder.sync().await.unwrap();
        if fetched == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (id, side, _, _, _) = connected(&holder).await;
    assert_eq!((id.as_str(), side), (connection.as_str(), Side::Invitee));
    connected(&issuer).await;

    for index in 0..5u8 {
        issuer
            .send(connection.clone(), vec![index; 8])
            .await
            .unwrap();
    }
    // Stored at the connector, and not taken without a sync.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), holder.next_event())
            .await
            .is_err(),
        "nothing arrives without a sync"
    );
    let deadline = tokio::time::Instant::now() + STEP;
    let mut got = 0;
    while got < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {got} of 5 fetched"
        );
        got += holder.sync().await.unwrap();
    }
    assert_eq!(got, 5, "each message fetched once");
    for index in 0..5u8 {
        let (id, _, message) = message(&holder).await;
        assert_eq!(
            (id.as_str(), message),
            (connection.as_str(), vec![index; 8])
        );
    }
    assert_eq!(holder.sync().await.unwrap(), 0, "nothing waits any more");
    holder.shutdown().await.unwrap();
    issuer.shutdown().await.unwrap();
    connector.stop().await;
}
