//! Live delivery across instances: [`Notifier`] NOTIFYs `confidant_mailbox`
//! with each recipient of a stored message once its transaction has
//! committed (many at once in one statement), and [`listen`] keeps a
//! connection that LISTENs there and turns each notification from another
//! instance into a [`Change`]. When the connection breaks it is made
//! again with backoff; once listening again it reports
//! [`Change::Everyone`], since notifications sent meanwhile are lost.

use crate::mailbox::Change;
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::AsyncMessage;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Most recipients announced in one statement.
const NOTIFY_BATCH: usize = 1024;

/// Announces stored messages to the other instances: `notify` queues a
/// recipient and returns once its notification is sent (or failed, which
/// is logged: the message is stored either way, and a stream elsewhere
/// reads it at its next wake or reconnection).
#[derive(Clone)]
pub(super) struct Notifier {
    queue: mpsc::UnboundedSender<([u8; 32], tokio::sync::oneshot::Sender<()>)>,
}

impl Notifier {
    /// Starts the task that sends the notifications of `instance` (its
    /// random name, so its listener skips its own) over `pool`.
    pub(super) fn start(pool: deadpool_postgres::Pool, instance: String) -> Self {
        let (queue, mut queued) =
            mpsc::unbounded_channel::<([u8; 32], tokio::sync::oneshot::Sender<()>)>();
        tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut batch = vec![first];
                while batch.len() < NOTIFY_BATCH {
                    match queued.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let mut payloads: Vec<String> = batch
                    .iter()
                    .map(|(party, _)| format!("{instance}:{}", hex::encode(party)))
                    .collect();
                payloads.sort_unstable();
                payloads.dedup();
                let sent = async {
                    let client = pool.get().await.map_err(|error| error.to_string())?;
                    client
                        .execute(
                            "SELECT pg_notify('confidant_mailbox', payload)                              FROM unnest($1::text[]) AS payload",
                            &[&payloads],
                        )
                        .await
                        .map_err(|error| error.to_string())
                };
                if let Err(error) = tokio::time::timeout(super::CALL_TIMEOUT, sent)
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()))
                {
                    tracing::warn!(%error, "announcing stored messages to the other instances failed");
                }
                for (_, done) in batch {
                    let _ = done.send(());
                }
            }
        });
        Self { queue }
    }

    /// Announces a message for `party`.
    pub(super) async fn notify(&self, party: [u8; 32]) {
        let (done, sent) = tokio::sync::oneshot::channel();
        if self.queue.send((party, done)).is_ok() {
            let _ = sent.await;
        }
    }
}

/// Listens until `stop` turns true (or its sender goes), skipping the
/// notifications of `instance` (this one).
pub(super) async fn listen(
    instance: String,
    config: tokio_postgres::Config,
    connector: tokio_postgres_rustls::MakeRustlsConnect,
    changes: broadcast::Sender<Change>,
    mut stop: watch::Receiver<bool>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match config.connect(connector.clone()).await {
            Ok((client, mut connection)) => {
                let (payloads, mut received) = mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(notification)) => {
                                if payloads.send(notification.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "the notification connection broke");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute("LISTEN confidant_mailbox").await {
                    Ok(()) => {
                        backoff = FIRST_BACKOFF;
                        listening.store(true, Ordering::Release);
                        // Whatever was stored while nobody listened.
                        let _ = changes.send(Change::Everyone);
                        loop {
                            tokio::select! {
                                payload = received.recv() => match payload {
                                    Some(payload) => match payload.split_once(':') {
                                        Some((from, _)) if from == instance => {}
                                        Some((_, party)) => {
                                            if let Some(party) = decode(party) {
                                                let _ = changes.send(Change::Mailbox(party));
                                            }
                                        }
                                        None => {}
                                    },
                                    None => break,
                                },
                                _ = stop.changed() => {
                                    driver.abort();
                                    return;
                                }
                            }
                        }
                        listening.store(false, Ordering::Release);
                    }
                    Err(error) => tracing::warn!(%error, "LISTEN failed"),
                }
                driver.abort();
            }
            Err(error) => tracing::warn!(
                error = %crate::tls::error_chain(&error),
                "cannot connect to listen for notifications"
            ),
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A notification's recipient: its key in hex.
fn decode(payload: &str) -> Option<[u8; 32]> {
    let mut party = [0u8; 32];
    hex::decode_to_slice(payload, &mut party).ok()?;
    Some(party)
}
