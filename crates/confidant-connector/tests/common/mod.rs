//! The test connector shared by the connector's gRPC tests: a real
//! connector on a loopback port with its mailboxes in a temporary redb
//! file, and deterministic signers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_connector::{Limits, RedbMailbox, RequestSigner};
use std::sync::Arc;
use std::time::Duration;

pub struct Connector {
    pub url: String,
    pub mailbox: Arc<RedbMailbox>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

pub async fn connector(limits: Limits) -> Connector {
    let dir = tempfile::tempdir().unwrap();
    let mailbox = Arc::new(RedbMailbox::open(dir.path().join("connector.redb"), limits).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let store: Arc<dyn confidant_connector::MailboxStore> = Arc::clone(&mailbox) as _;
    let task = tokio::spawn(async move {
        confidant_connector::serve(listener, store, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Connector {
        url,
        mailbox,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

impl Connector {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

pub fn signer(seed: u8) -> RequestSigner {
    RequestSigner::from_seed(&[seed; 32])
}
