//! Operations: the metrics the connector records (through the `metrics`
//! facade: nothing is recorded unless a recorder is installed, as
//! [`install_prometheus`] does for `--metrics-listen`), and the standard
//! gRPC health service (`grpc.health.v1`) whose status follows the store.

use crate::mailbox::MailboxStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Requests answered, by `method` and `result` (the gRPC code's name).
pub const REQUESTS: &str = "confidant_connector_requests_total";
/// Requests refused, by `reason`.
pub const REFUSALS: &str = "confidant_connector_refusals_total";
/// Entries of `SendMessages` batches answered, by `result` (`stored`, a
/// duplicate of a retry included, or `refused`).
pub const BATCHED_MESSAGES: &str = "confidant_connector_batched_messages_total";
/// Seconds from a write's start to its durable answer, by `operation`.
pub const COMMIT_SECONDS: &str = "confidant_connector_commit_seconds";
/// Messages waiting in all mailboxes (sampled every [`SAMPLE_EVERY`]).
pub const WAITING_MESSAGES: &str = "confidant_connector_waiting_messages";
/// Messages waiting in the deepest single mailbox, the most any one
/// recipient has waiting (sampled with [`WAITING_MESSAGES`]; no label, so
/// one series however many recipients there are).
pub const DEEPEST_MAILBOX_MESSAGES: &str = "confidant_connector_deepest_mailbox_messages";
/// Message streams open on this instance.
pub const OPEN_STREAMS: &str = "confidant_connector_open_streams";
/// 1 while the store answers, 0 when it does not.
pub const STORE_UP: &str = "confidant_connector_store_up";

/// How often the health status and the mailbox depth are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Counts an answered request.
pub(crate) fn request(method: &'static str, result: Result<(), tonic::Code>) {
    let result = match result {
        Ok(()) => "OK".to_owned(),
        Err(code) => format!("{code:?}"),
    };
    metrics::counter!(REQUESTS, "method" => method, "result" => result).increment(1);
}

/// Counts the entries of an answered batch.
pub(crate) fn batched(stored: usize, refused: usize) {
    for (result, count) in [("stored", stored), ("refused", refused)] {
        if count > 0 {
            metrics::counter!(BATCHED_MESSAGES, "result" => result)
                .increment(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }
}

/// Counts a refusal.
pub(crate) fn refusal(reason: &'static str) {
    metrics::counter!(REFUSALS, "reason" => reason).increment(1);
}

/// Awaits a store write and records how long it took to be durable.
pub(crate) async fn committed<T>(
    operation: &'static str,
    write: impl std::future::Future<Output = T>,
) -> T {
    let start = Instant::now();
    let result = write.await;
    metrics::histogram!(COMMIT_SECONDS, "operation" => operation)
        .record(start.elapsed().as_secs_f64());
    result
}

/// Sets the open-streams gauge.
pub(crate) fn open_streams(count: usize) {
    metrics::gauge!(OPEN_STREAMS).set(count as f64);
}

/// Installs the Prometheus recorder and serves its text exposition over
/// HTTP at `address` (any path). Call it within a tokio runtime, once.
pub fn install_prometheus(address: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(COMMIT_SECONDS.to_owned()),
            &[
                0.000_25, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                10.0,
            ],
        )
        .map_err(|error| error.to_string())?
        .install()
        .map_err(|error| format!("cannot serve metrics on {address}: {error}"))
}

/// Sets the health service's status (for the connector service and for
/// the whole server, the empty name) from the store's answer, when it
/// changed from `last`; returns it.
pub(crate) async fn report(
    store: &dyn MailboxStore,
    reporter: &tonic_health::server::HealthReporter,
    last: Option<bool>,
) -> bool {
    let healthy = tokio::time::timeout(SAMPLE_EVERY * 5, store.healthy())
        .await
        .unwrap_or(false);
    if last != Some(healthy) {
        let status = if healthy {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        reporter
            .set_service_status(crate::server::SERVICE_NAME, status)
            .await;
        reporter.set_service_status("", status).await;
        if healthy {
            tracing::info!("storage answers: serving");
        } else {
            tracing::warn!("storage does not answer: health is NOT_SERVING");
        }
    }
    metrics::gauge!(STORE_UP).set(if healthy { 1.0 } else { 0.0 });
    healthy
}

/// Keeps the health status following the store (after a first [`report`]
/// gave `last`), and samples the mailbox depth, every [`SAMPLE_EVERY`]
/// until `shutdown` turns true.
pub(crate) async fn follow_store(
    store: Arc<dyn MailboxStore>,
    reporter: tonic_health::server::HealthReporter,
    mut last: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if last && let Ok(depth) = store.depth().await {
            metrics::gauge!(WAITING_MESSAGES).set(depth.waiting as f64);
            metrics::gauge!(DEEPEST_MAILBOX_MESSAGES).set(depth.deepest as f64);
        }
        tokio::select! {
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        last = report(&*store, &reporter, Some(last)).await;
    }
}
