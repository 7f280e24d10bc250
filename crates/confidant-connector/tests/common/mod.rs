//! What the connector's tests share: a place for a mailbox on either
//! backend (a temporary redb file, or a fresh schema of the PostgreSQL
//! database named by `CONFIDANT_TEST_DATABASE_URL`), a real connector on a
//! loopback port over it, deterministic signers, and a macro that runs a
//! test on both backends.
//!
//! Without `CONFIDANT_TEST_DATABASE_URL` the PostgreSQL variants print that
//! they were skipped and pass, except under `CI=true`, where they fail.
#![allow(
    dead_code,
    unused_macros,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use confidant_connector::{Limits, MailboxStore, PostgresMailbox, RedbMailbox, RequestSigner};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The variable naming the test database.
pub const DATABASE_VARIABLE: &str = "CONFIDANT_TEST_DATABASE_URL";

/// The test database's URL, if one is given. Under `CI=true` a missing one
/// fails the test.
pub fn database_url(test: &str) -> Option<String> {
    match std::env::var(DATABASE_VARIABLE) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{test}: {DATABASE_VARIABLE} is not set, and CI=true forbids skipping");
            }
            eprintln!("SKIPPED {test}: no PostgreSQL ({DATABASE_VARIABLE} is not set)");
            None
        }
    }
}

/// `url` with `options` selecting `schema` as the search path.
pub fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// A schema of its own in the test database, dropped at the end.
pub struct TestSchema {
    pub base_url: String,
    pub name: String,
}

impl TestSchema {
    pub async fn new(base_url: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).unwrap();
        let name = format!(
            "confidant_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            hex::encode(random)
        );
        let (client, connection) = tokio_postgres::connect(base_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {base_url}: {error}"));
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;
        Self {
            base_url: base_url.to_owned(),
            name,
        }
    }

    /// The URL whose connections use this schema.
    pub fn url(&self) -> String {
        with_schema(&self.base_url, &self.name)
    }

    /// Runs SQL in this schema.
    pub async fn execute(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = driver.await;
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // On a thread of its own: a test's runtime may be gone or busy.
        let (url, name) = (self.base_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    let driver = tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                    drop(client);
                    let _ = driver.await;
                }
            });
        })
        .join();
    }
}

/// Where a test's mailbox lives.
pub enum Place {
    Redb(tempfile::TempDir),
    Postgres(TestSchema),
}

impl Place {
    pub fn redb() -> Self {
        Place::Redb(tempfile::tempdir().unwrap())
    }

    /// A fresh schema, or `None` (the test is skipped) without a database.
    pub async fn postgres(test: &str) -> Option<Self> {
        let url = database_url(test)?;
        Some(Place::Postgres(TestSchema::new(&url).await))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Place::Postgres(_))
    }

    /// Opens the mailbox (again: a reopened mailbox sees what the last one
    /// stored).
    pub async fn open(&self, limits: Limits) -> Arc<dyn MailboxStore> {
        self.open_with_audience(limits, None).await
    }

    pub async fn open_with_audience(
        &self,
        limits: Limits,
        audience: Option<String>,
    ) -> Arc<dyn MailboxStore> {
        match self {
            Place::Redb(dir) => Arc::new(
                RedbMailbox::open_with_audience(
                    dir.path().join("connector.redb"),
                    limits,
                    audience,
                )
                .unwrap(),
            ),
            Place::Postgres(schema) => Arc::new(
                PostgresMailbox::connect(&schema.url(), limits, audience, 8)
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// Runs each `async fn name(place: Place)` on both backends: tests
/// `on_redb::name` and `on_postgres::name`.
macro_rules! on_both_backends {
    ($($(#[$meta:meta])* async fn $name:ident($place:ident: Place) $body:block)*) => {
        $($(#[$meta])* async fn $name($place: std::sync::Arc<common::Place>) $body)*
        mod on_redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(std::sync::Arc::new(super::common::Place::redb())).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(place) = super::common::Place::postgres(stringify!($name)).await {
                        super::$name(std::sync::Arc::new(place)).await;
                    }
                }
            )*
        }
    };
}

pub struct Connector {
    pub url: String,
    pub mailbox: Arc<dyn MailboxStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _place: Arc<Place>,
}

/// A connector on a temporary redb file.
pub async fn connector(limits: Limits) -> Connector {
    connector_on(Arc::new(Place::redb()), limits).await
}

/// A connector over `place`'s mailbox.
pub async fn connector_on(place: Arc<Place>, limits: Limits) -> Connector {
    connector_with(place, limits, confidant_connector::ServiceLimits::default()).await
}

/// A connector over `place`'s mailbox with the service's `service` limits.
pub async fn connector_with(
    place: Arc<Place>,
    limits: Limits,
    service: confidant_connector::ServiceLimits,
) -> Connector {
    let mailbox = place.open(limits).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let store = Arc::clone(&mailbox);
    let task = tokio::spawn(async move {
        confidant_connector::serve_with_limits(listener, store, service, async move {
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
        _place: place,
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

/// Opens a connection: `issuer` makes a single-use token and `holder` joins
/// with it. Returns the connection's id.
pub async fn connect(
    issuer: &confidant_connector::SignedClient,
    holder: &confidant_connector::SignedClient,
) -> String {
    use confidant_connector::proto;
    let token = issuer
        .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
        .await
        .unwrap()
        .tokens
        .remove(0);
    holder
        .add_connection_from_token(proto::AddConnectionFromTokenRequest { token })
        .await
        .unwrap()
        .connection_id
}

/// A connector process, killed and reaped when dropped, so that a failing
/// test leaves none behind.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address a connector process announces on the first line of its
/// stdout (`listening on ADDRESS`), read within `limit`. The child must
/// have been started with a piped stdout, which this takes.
pub async fn listening_address(child: &mut std::process::Child, limit: Duration) -> String {
    use std::io::BufRead as _;
    let stdout = child
        .stdout
        .take()
        .expect("the connector's stdout is piped, and read once");
    let line = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("the connector announced no address within {limit:?}"))
    .unwrap()
    .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}
