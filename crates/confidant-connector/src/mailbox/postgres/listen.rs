//! Live delivery across instances: a connection that LISTENs on
//! `confidant_mailbox` (each stored message's function NOTIFYs its
//! recipient, delivered when its transaction commits) and turns each
//! notification into a [`Change`]. When the connection breaks it is made
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

/// Listens until `stop` turns true (or its sender goes).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    changes: broadcast::Sender<Change>,
    mut stop: watch::Receiver<bool>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match config.connect(tokio_postgres::NoTls).await {
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
                                    Some(payload) => {
                                        if let Some(party) = decode(&payload) {
                                            let _ = changes.send(Change::Mailbox(party));
                                        }
                                    }
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
            Err(error) => tracing::warn!(%error, "cannot connect to listen for notifications"),
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

/// A notification's payload: the recipient's key in hex.
fn decode(payload: &str) -> Option<[u8; 32]> {
    let mut party = [0u8; 32];
    hex::decode_to_slice(payload, &mut party).ok()?;
    Some(party)
}
