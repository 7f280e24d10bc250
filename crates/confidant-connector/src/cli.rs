//! The connector's command line (used by the `confidant-connector` binary,
//! and by tests that run it as a child process).
//!
//! It prints `listening on ADDRESS` on stdout once it accepts connections
//! (useful with `--listen 127.0.0.1:0`), logs to stderr (`RUST_LOG` sets the
//! level; `--log-json` for JSON lines), and on SIGTERM or Ctrl-C stops
//! accepting, answers the requests in flight, and closes the file: every
//! message it acknowledged receiving is on disk. With `--tls-cert` and
//! `--tls-key` it serves TLS; without them, plaintext (and logs a warning).
//!
//! Its mailboxes are in a redb file under `--data-dir` (one instance), or
//! in the PostgreSQL database of `--database-url` (any number of stateless
//! instances on one database). `--metrics-listen` serves Prometheus
//! metrics over HTTP; the gRPC port also serves `grpc.health.v1`. With
//! `--grpc-web` it answers gRPC-Web requests too (for browser pages of the
//! `--cors-origin` origins).

use crate::{
    GrpcWeb, Limits, MailboxStore, PostgresMailbox, RedbMailbox, ServeOptions, ServerTls,
    ServiceLimits, serve_with_options,
};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "confidant-connector",
    version,
    about = "The Confidant connector (gRPC relay)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Directory of the mailbox file (created if missing): one instance on
    /// an embedded redb file.
    #[arg(
        long,
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    data_dir: Option<PathBuf>,
    /// Keep the mailboxes in this PostgreSQL database instead
    /// (`postgres://USER@HOST:PORT/DB`): several instances may share it.
    /// TLS as libpq's `sslmode` (disable, prefer: the default, require,
    /// verify-ca, verify-full) and `sslrootcert=PATH` parameters ask.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Connections to the database each instance keeps at most.
    #[arg(long, default_value_t = crate::mailbox::postgres::DEFAULT_POOL_SIZE)]
    database_pool_size: usize,
    /// Serve Prometheus metrics over HTTP on this address.
    #[arg(long, value_name = "ADDRESS")]
    metrics_listen: Option<SocketAddr>,
    /// Largest envelope accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_message_len)]
    max_message_bytes: usize,
    /// Most messages waiting for one recipient.
    #[arg(long, default_value_t = Limits::default().max_pending_per_recipient)]
    max_pending: u64,
    /// Most bytes of messages in one page or stream batch (a page always
    /// holds at least one message).
    #[arg(long, default_value_t = Limits::default().max_page_bytes)]
    max_page_bytes: usize,
    /// The connector's name, which requests are signed for. Default: the one
    /// stored in the mailbox file (`confidant-connector:` and 16 random
    /// bytes, generated on first start).
    #[arg(long)]
    audience: Option<String>,
    /// Most message streams one key may hold open.
    #[arg(long, default_value_t = ServiceLimits::default().max_streams_per_party)]
    max_streams_per_key: usize,
    /// Most message streams open at once.
    #[arg(long, default_value_t = ServiceLimits::default().max_streams)]
    max_streams: usize,
    /// Most refused requests logged per second (the rest are counted).
    #[arg(long, default_value_t = ServiceLimits::default().refusal_logs_per_second)]
    refusal_logs_per_second: u64,
    /// Most entries in one SendMessages (batch) request.
    #[arg(long, default_value_t = ServiceLimits::default().max_batch_messages)]
    max_batch_messages: usize,
    /// Most bytes of envelopes, added up, in one SendMessages request.
    #[arg(long, default_value_t = ServiceLimits::default().max_batch_bytes)]
    max_batch_bytes: usize,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Serve TLS with this certificate chain (PEM, the connector's
    /// certificate first). Without it the connector serves plaintext, which
    /// is for loopback and tests.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also answer gRPC-Web requests (HTTP/1.1 accepted too), for browser
    /// pages; see `--cors-origin`.
    #[arg(long)]
    grpc_web: bool,
    /// A web page origin (`https://wallet.example`, `http://127.0.0.1:8080`)
    /// whose pages browsers may let call the connector; repeat for more, or
    /// `*` for any. Without it only the connector's own origin. Needs
    /// `--grpc-web`.
    #[arg(long, value_name = "ORIGIN", requires = "grpc_web")]
    cors_origin: Vec<String>,
}

/// Runs the connector with command-line `args` (the first is the program
/// name) until SIGTERM or Ctrl-C.
pub async fn run<I, T>(args: I) -> Result<(), Box<dyn std::error::Error>>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::try_parse_from(args)?;
    let filter = log_filter("info", &[]);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        let _ = logs.json().try_init();
    } else {
        let _ = logs.try_init();
    }

    // Before anything else, so a bad certificate or key stops the start.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_pem_files(cert, key)?),
        _ => None,
    };
    let grpc_web = if args.grpc_web {
        Some(GrpcWeb::new(args.cors_origin.iter().cloned())?)
    } else {
        None
    };
    let limits = Limits {
        max_message_len: args.max_message_bytes,
        max_pending_per_recipient: args.max_pending,
        max_page_bytes: args.max_page_bytes,
    };
    let service_limits = ServiceLimits {
        max_streams_per_party: args.max_streams_per_key,
        max_streams: args.max_streams,
        refusal_logs_per_second: args.refusal_logs_per_second,
        max_batch_messages: args.max_batch_messages,
        max_batch_bytes: args.max_batch_bytes,
    };
    let (mailbox, storage): (Arc<dyn MailboxStore>, String) =
        match (&args.database_url, &args.data_dir) {
            (Some(url), _) => (
                Arc::new(
                    PostgresMailbox::connect(
                        url,
                        limits,
                        args.audience.clone(),
                        args.database_pool_size,
                    )
                    .await?,
                ),
                "PostgreSQL".to_owned(),
            ),
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir).map_err(|error| {
                    format!(
                        "cannot create the data directory {}: {error}",
                        dir.display()
                    )
                })?;
                let path = dir.join("connector.redb");
                let redb = RedbMailbox::open_with_audience(&path, limits, args.audience.clone())
                    .map_err(|error| {
                        format!("cannot open the mailbox file {}: {error}", path.display())
                    })?;
                (Arc::new(redb), path.display().to_string())
            }
            (None, None) => return Err("give --data-dir or --database-url".into()),
        };
    if let Some(address) = args.metrics_listen {
        crate::telemetry::install_prometheus(address)?;
        tracing::info!(%address, "serving Prometheus metrics");
    }
    // Install the signal handlers before announcing the address, so that a
    // SIGTERM right after the announcement is a graceful stop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        %storage,
        audience = %mailbox.audience(),
        max_message_bytes = limits.max_message_len,
        max_pending = limits.max_pending_per_recipient,
        max_page_bytes = limits.max_page_bytes,
        max_streams_per_key = service_limits.max_streams_per_party,
        max_streams = service_limits.max_streams,
        refusal_logs_per_second = service_limits.refusal_logs_per_second,
        max_batch_messages = service_limits.max_batch_messages,
        max_batch_bytes = service_limits.max_batch_bytes,
        "connector started"
    );
    match &args.tls_cert {
        Some(cert) => tracing::info!(certificate = %cert.display(), "serving TLS"),
        None => tracing::warn!(
            "serving PLAINTEXT (no --tls-cert and --tls-key): for loopback and tests only; \
             clients must use http:// URLs"
        ),
    }
    if let Some(web) = &grpc_web {
        tracing::info!(origins = ?web.origins(), "serving gRPC-Web too");
    }
    println!("listening on {address}");

    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
        }
        let _ = stopping.send(true);
    };
    let options = ServeOptions {
        limits: service_limits,
        tls: tls.as_ref(),
        grpc_web,
    };
    let server = serve_with_options(listener, Arc::clone(&mailbox), options, signal);
    // Clients that keep their connections open (a stopped process holding a
    // stream) must not keep the connector alive forever: after the grace
    // period it stops anyway. Every answered request is on disk already.
    let grace = async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result?,
        () = grace => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "clients still connected after the grace period; stopping anyway"
        ),
    }
    // The last reference: a redb mailbox closes its file (its writer
    // finishes what was queued), a PostgreSQL one its pool.
    drop(mailbox);
    tracing::info!("connector stopped; every message it acknowledged is stored");
    Ok(())
}

/// The log filter of Confidant's programs. `RUST_LOG` as a bare level
/// (`trace`, `debug`, …) applies to Confidant's own crates and to `extra`
/// (the program's crate), while every dependency stays at `warn`: the h2,
/// tower and hyper internals would otherwise drown the program's own
/// events. Any other `RUST_LOG` (with targets, e.g. `warn,h2=trace`) is
/// used as given. Without `RUST_LOG` (or with one that does not parse),
/// Confidant's crates log at `default_level` and dependencies at `warn`.
pub fn log_filter(default_level: &str, extra: &[&str]) -> tracing_subscriber::EnvFilter {
    const OURS: [&str; 7] = [
        "confidant_actors",
        "confidant_connector",
        "confidant_core",
        "confidant_session",
        "confidant_store",
        "confidant_x3dh",
        "confidant_aes_gcm",
    ];
    let ours = |level: &str| {
        let mut directives = vec!["warn".to_owned()];
        directives.extend(
            OURS.iter()
                .chain(extra)
                .map(|target| format!("{target}={level}")),
        );
        directives.join(",")
    };
    let wanted = std::env::var("RUST_LOG").unwrap_or_default();
    let wanted = wanted.trim();
    let bare_level = matches!(
        wanted.to_ascii_lowercase().as_str(),
        "trace" | "debug" | "info" | "warn" | "error" | "off"
    );
    let directives = if wanted.is_empty() {
        ours(default_level)
    } else if bare_level {
        ours(wanted)
    } else {
        wanted.to_owned()
    };
    tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(ours(default_level)))
}

/// How long a stopping connector waits for its clients to disconnect.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
