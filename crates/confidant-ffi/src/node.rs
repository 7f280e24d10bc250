//! The node as the bindings see it: [`open_node`] and [`ConfidantNode`].

use crate::error::ConfidantError;
use crate::files::{self, NODE_STORE};
use crate::fingerprint::fingerprint as fingerprint_of;
use crate::runtime::{gated, run};
use crate::types::{ConnectionInfo, InvitationInfo, NodeEvent};
use confidant_actors::{Events, Invitation, Node, NodeConfig};
use confidant_connector::client::DEFAULT_BUFFER_BYTES;
use confidant_connector::{ClientTls, ConnectorTransport, RequestSigner};
use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_store::{KeyEncryptionKey, RedbStore, StoreOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How to open a node.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NodeOptions {
    /// The node's directory (created if missing): its store `node.redb`
    /// and `relay.key` live there. One node per directory at a time.
    pub data_dir: String,
    /// The connector's URL (`http://…` or `https://…`), or several URLs
    /// of instances of one connector (the node fails over between them).
    /// Invitations this node creates name the first.
    pub connector_urls: Vec<String>,
    /// 32 secret bytes from the platform's key store (Android Keystore,
    /// the iOS Keychain): the store's secret values are then sealed at
    /// rest under it. A store created with a key must be opened with the
    /// same key; one created without must be opened without.
    #[uniffi(default = None)]
    pub at_rest_key: Option<Vec<u8>>,
    /// A CA certificate (PEM) to trust for an `https://` connector instead
    /// of the system's roots.
    #[uniffi(default = None)]
    pub connector_ca_pem: Option<String>,
    /// Sync delivery, for a phone app that cannot hold a stream to the
    /// connector open in the background: the node then takes deliveries
    /// only when the app calls [`ConfidantNode::sync`] (from a push
    /// notification or a background task). Off (the default): a stream
    /// delivers as messages arrive, and `sync` is refused.
    #[uniffi(default = false)]
    pub sync_delivery: bool,
}

/// Opens (on first use: creates) the node in `options.data_dir` and starts
/// it: it loads its identity, replays the inbox messages not acknowledged
/// yet (as `NodeEvent::MessageReceived`) and starts taking deliveries from
/// the connector.
#[uniffi::export]
pub async fn open_node(options: NodeOptions) -> Result<Arc<ConfidantNode>, ConfidantError> {
    let key = match options.at_rest_key.as_deref() {
        None => None,
        Some(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                ConfidantError::invalid(format!(
                    "the at-rest key must be 32 bytes, not {}",
                    bytes.len()
                ))
            })?;
            Some(KeyEncryptionKey::from_bytes(bytes))
        }
    };
    let Some(first_url) = options.connector_urls.first().cloned() else {
        return Err(ConfidantError::invalid("give at least one connector URL"));
    };
    let tls = match options.connector_ca_pem.as_deref() {
        Some(pem) => ClientTls::from_ca_pem(pem.as_bytes()).map_err(|error| {
            ConfidantError::invalid(format!("the connector CA certificate: {error}"))
        })?,
        None => ClientTls::system_roots(),
    };
    let dir = PathBuf::from(&options.data_dir);
    let urls = options.connector_urls;
    let sync_delivery = options.sync_delivery;
    let (node, events) = run(async move {
        files::create_data_dir(&dir)?;
        let mut store_options = StoreOptions::default();
        if let Some(key) = key.clone() {
            store_options = store_options.key_encryption_key(key);
        }
        // redb's file lock and the store's checks run on a blocking thread.
        // The store first: its key check refuses a wrong at-rest key before
        // `relay.key` is read (or sealed) with it.
        let path = dir.join(NODE_STORE);
        let store =
            tokio::task::spawn_blocking(move || RedbStore::open_or_create(&path, store_options))
                .await
                .map_err(|error| {
                    ConfidantError::internal(format!("opening the store: {error}"))
                })??;
        let seed = files::relay_seed(&dir, key.as_ref())?;
        drop(key);
        let signer = RequestSigner::from_seed(&seed);
        drop(seed);
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let mut transport =
            ConnectorTransport::with_instances(&urls, signer, &tls, DEFAULT_BUFFER_BYTES)
                .map_err(|error| ConfidantError::invalid(format!("connector URL: {error}")))?;
        if sync_delivery {
            transport = transport.with_sync_delivery();
        }
        let (node, events) = Node::builder()
            .store(Arc::new(store))
            .suites(suites()?)
            .hybrid_key_agreement(confidant_x3dh_mlkem768::X3dhMlKem768::default())
            .transport(transport)
            .config(NodeConfig::default())
            .start()
            .await?;
        Ok((node, events))
    })
    .await?;
    let (stop, _) = watch::channel(false);
    Ok(Arc::new(ConfidantNode {
        identity_key: node.identity_key(),
        connector_url: first_url,
        sync_delivery,
        node: Mutex::new(Some(node)),
        events: Arc::new(tokio::sync::Mutex::new(Some(events))),
        stop,
    }))
}

/// Reads an invitation's text (a QR code's content) without using it: which
/// connector it is for (open the node with that URL), and whose identity
/// key it carries.
#[uniffi::export]
pub fn parse_invitation(text: String) -> Result<InvitationInfo, ConfidantError> {
    let invitation = Invitation::from_text(&text)?;
    Ok(InvitationInfo {
        connector_url: invitation.relay,
        inviter_identity_key: invitation.identity_key.to_vec(),
        inviter_fingerprint: fingerprint_of(&invitation.identity_key),
        post_quantum: invitation.hybrid,
    })
}

/// The fingerprint of a 32-byte identity key: four groups of five digits
/// (`"12345 67890 12345 67890"`), derived with SHA-256 (the derivation is
/// in `docs/bindings.md`).
#[uniffi::export]
pub fn fingerprint(identity_key: Vec<u8>) -> Result<String, ConfidantError> {
    let key: [u8; 32] = identity_key.as_slice().try_into().map_err(|_| {
        ConfidantError::invalid(format!(
            "an identity key is 32 bytes, not {}",
            identity_key.len()
        ))
    })?;
    Ok(fingerprint_of(&key))
}

/// The cipher suites the node offers and accepts.
fn suites() -> Result<SuiteRegistry, ConfidantError> {
    let mut suites = SuiteRegistry::new();
    let failed = |error: confidant_core::RegistryError| {
        ConfidantError::internal(format!("registering the cipher suites: {error}"))
    };
    confidant_aes_gcm::register(&mut suites).map_err(failed)?;
    confidant_chacha20poly1305::register(&mut suites).map_err(failed)?;
    Ok(suites)
}

fn connection_id(text: String) -> Result<ConnectionId, ConfidantError> {
    ConnectionId::new(text)
        .map_err(|error| ConfidantError::invalid(format!("connection id: {error}")))
}

/// A URL as compared with another: without a trailing slash.
fn same_connector(left: &str, right: &str) -> bool {
    left.trim_end_matches('/') == right.trim_end_matches('/')
}

/// A running node. Safe to use from any thread; every method but the
/// key getters is async. Call [`ConfidantNode::shutdown`] before the
/// process ends (every state change is durable anyway: a kill loses
/// nothing acknowledged).
#[derive(uniffi::Object)]
pub struct ConfidantNode {
    identity_key: [u8; 32],
    connector_url: String,
    /// Opened with `NodeOptions::sync_delivery`.
    sync_delivery: bool,
    /// `None` once shut down.
    node: Mutex<Option<Node>>,
    /// `None` once shut down (dropped, so that the node never waits for a
    /// reader at shutdown).
    events: Arc<tokio::sync::Mutex<Option<Events>>>,
    /// Wakes a waiting `next_event` at shutdown.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for ConfidantNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfidantNode")
            .field("identity_key", &hex::encode(self.identity_key))
            .field("connector_url", &self.connector_url)
            .finish_non_exhaustive()
    }
}

impl ConfidantNode {
    fn node(&self) -> Result<Node, ConfidantError> {
        self.node
            .lock()
            .ok()
            .and_then(|node| node.clone())
            .ok_or(ConfidantError::Closed)
    }
}

#[uniffi::export]
impl ConfidantNode {
    /// This node's Ed25519 identity key (32 bytes; public), what its
    /// invitations carry.
    pub fn identity_key(&self) -> Vec<u8> {
        self.identity_key.to_vec()
    }

    /// The identity key's fingerprint, for people to compare.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.identity_key)
    }

    /// The connector URL invitations of this node name (the first given).
    pub fn connector_url(&self) -> String {
        self.connector_url.clone()
    }

    /// For a node opened with `sync_delivery`: fetches what waits at the
    /// connector, processes it durably (the events come from
    /// `next_event` as usual), and returns once the connector was told to
    /// delete all of it; returns how many deliveries it fetched (0: nothing
    /// waited). Call it when a push notification or a background task
    /// wakes the app. It has no deadline of its own: if the platform gives
    /// the app little time, cancel it (what was processed stays processed,
    /// and the rest comes with the next sync). Refused with
    /// `InvalidArgument` on a node that streams.
    pub async fn sync(&self) -> Result<u64, ConfidantError> {
        if !self.sync_delivery {
            return Err(ConfidantError::invalid(
                "sync needs a node opened with sync_delivery (this one streams)",
            ));
        }
        let node = self.node()?;
        let fetched = run(async move { Ok(node.sync().await?) }).await?;
        Ok(u64::try_from(fetched).unwrap_or(u64::MAX))
    }

    /// Creates an invitation at the connector; returns its text, to show as
    /// a QR code. When the other party accepts it, `NodeEvent::Joined`
    /// then `NodeEvent::Connected` follow.
    pub async fn create_invitation(&self) -> Result<String, ConfidantError> {
        let node = self.node()?;
        let invitation = run(async move { Ok(node.create_invitation().await?) }).await?;
        Ok(invitation.try_to_text()?)
    }

    /// Accepts an invitation (its text): joins the connection at the
    /// connector and returns its id. `greeting` is sealed into the
    /// handshake as the inviter's first message from this node.
    /// `NodeEvent::Connected` follows once the inviter's bundle checked out
    /// against the invitation's identity key; a swapped bundle is reported
    /// as `NodeEvent::HandshakeFailed` with kind `IdentityMismatch`.
    pub async fn accept_invitation(
        &self,
        invitation: String,
        greeting: Vec<u8>,
    ) -> Result<String, ConfidantError> {
        let invitation = Invitation::from_text(&invitation)?;
        if !same_connector(&invitation.relay, &self.connector_url) {
            return Err(ConfidantError::OtherConnector {
                invitation_connector: invitation.relay,
                node_connector: self.connector_url.clone(),
            });
        }
        let node = self.node()?;
        let connection =
            run(async move { Ok(node.accept_invitation(&invitation, greeting).await?) }).await?;
        Ok(connection.as_str().to_owned())
    }

    /// Every connection the node has, with its state.
    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, ConfidantError> {
        let node = self.node()?;
        let connections = run(async move { Ok(node.connections().await?) }).await?;
        Ok(connections.into_iter().map(ConnectionInfo::from).collect())
    }

    /// Seals `message` on the connection and hands it to the connector;
    /// returns once the connector has stored it.
    pub async fn send(
        &self,
        connection_id: String,
        message: Vec<u8>,
    ) -> Result<(), ConfidantError> {
        let id = self::connection_id(connection_id)?;
        let node = self.node()?;
        run(async move { Ok(node.send(&id, message).await?) }).await
    }

    /// The next event, in order; `None` once the node is shut down.
    /// Messages come as `NodeEvent::MessageReceived`, already durable in the
    /// node's inbox: acknowledge them once handled. Cancelling a wait (an
    /// asyncio timeout, a cancelled coroutine) loses no event.
    pub async fn next_event(&self) -> Option<NodeEvent> {
        let mut stopped = self.stop.subscribe();
        if *stopped.borrow() {
            return None;
        }
        // Polled by the caller's executor, not spawned: a wait that is
        // cancelled drops the receive, which takes nothing. Its wake-ups
        // come from the library's threads, so they are gated.
        gated(async {
            let mut events = self.events.lock().await;
            let events = events.as_mut()?;
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => None,
                event = events.next() => event.map(NodeEvent::from),
            }
        })
        .await
    }

    /// Deletes handled messages from the inbox (their `sequence` numbers);
    /// unknown numbers are ignored. A message not acknowledged is reported
    /// again after the next start.
    pub async fn acknowledge(&self, sequences: Vec<u64>) -> Result<(), ConfidantError> {
        let node = self.node()?;
        run(async move { Ok(node.acknowledge(&sequences).await?) }).await
    }

    /// Replaces the connection's session with a fresh X3DH;
    /// `NodeEvent::Connected` with `reset: true` follows.
    pub async fn reset(&self, connection_id: String) -> Result<(), ConfidantError> {
        let id = self::connection_id(connection_id)?;
        let node = self.node()?;
        run(async move { Ok(node.reset(&id).await?) }).await
    }

    /// Stops the node: finishes the round in progress, sends what is
    /// queued, stops its threads and closes the store. `next_event` then
    /// returns `None`, every other call fails with `Closed`. Calling it
    /// again does nothing.
    pub async fn shutdown(&self) -> Result<(), ConfidantError> {
        let node = self.node.lock().ok().and_then(|mut node| node.take());
        let Some(node) = node else {
            return Ok(());
        };
        self.stop.send_replace(true);
        let events = Arc::clone(&self.events);
        run(async move {
            // Nobody reads events any more: the node must not wait for a
            // reader (the inbox keeps the messages not acknowledged).
            drop(events.lock().await.take());
            Ok(node.shutdown().await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_urls_compare_without_a_trailing_slash() {
        assert!(same_connector("http://127.0.0.1:1", "http://127.0.0.1:1/"));
        assert!(!same_connector("http://127.0.0.1:1", "http://127.0.0.1:2"));
    }
}
