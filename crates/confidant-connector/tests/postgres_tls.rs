//! TLS to a real PostgreSQL: the test cluster's own TLS (Debian sets
//! `ssl = on` with its snakeoil certificate, issued for `localhost`),
//! reached over TCP as a role of the test's own with a password (TCP
//! connections authenticate with SCRAM), and its Unix socket, over which
//! PostgreSQL never offers TLS. Which connections used TLS is read from
//! `pg_stat_ssl` through the superuser's socket connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_connector::auth::{NONCE_LEN, Verified, now_ms};
use confidant_connector::{Limits, MailboxStore as _, PostgresMailbox};
use std::str::FromStr as _;
use std::time::Duration;

mod common;

use common::{Child, TestSchema, database_url, listening_address, signer};

/// A login role with a password, allowed into `schema`; dropped at the end.
struct TestRole {
    base_url: String,
    name: String,
    password: String,
}

async fn superuser(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

impl TestRole {
    async fn new(schema: &TestSchema) -> Self {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).unwrap();
        let name = format!("confidant_tls_{}", hex::encode(&random[..6]));
        let password = hex::encode(&random[6..]);
        superuser(&schema.base_url)
            .await
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}';
                 GRANT ALL ON SCHEMA {schema} TO {name};",
                schema = schema.name
            ))
            .await
            .unwrap();
        Self {
            base_url: schema.base_url.clone(),
            name,
            password,
        }
    }

    /// A URL reaching `host` over TCP as this role, in `schema`, with
    /// `application_name` set to `tag` and `tls` (the sslmode and
    /// sslrootcert parameters).
    fn url(&self, schema: &TestSchema, host: &str, tag: &str, tls: &str) -> String {
        let base = tokio_postgres::Config::from_str(&self.base_url).unwrap();
        let port = base.get_ports().first().copied().unwrap_or(5432);
        let database = base.get_dbname().unwrap();
        format!(
            "postgres://{}:{}@{host}:{port}/{database}?options=-csearch_path%3D{}\
             &application_name={tag}&{tls}",
            self.name, self.password, schema.name
        )
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let (url, name) = (self.base_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = superuser(&url).await;
                let _ = client
                    .batch_execute(&format!(
                        "DROP OWNED BY {name} CASCADE; DROP ROLE IF EXISTS {name}"
                    ))
                    .await;
            });
        })
        .join();
    }
}

fn verified() -> Verified {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).unwrap();
    Verified {
        party: signer(1).public_key(),
        nonce,
        expires_ms: now_ms() + 60_000,
    }
}

/// Connects a mailbox, uses it, and answers how many of its connections
/// (the pool's and the listener's, tagged `tag`) used TLS and how many not.
async fn tls_of_connections(base_url: &str, url: &str, tag: &str) -> (i64, i64) {
    let store = PostgresMailbox::connect(url, Limits::default(), None, 2)
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    store
        .create_tokens(verified(), vec![format!("tls-{tag}")], now_ms())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !store.listening() {
        assert!(tokio::time::Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = tls_counts(base_url, tag).await;
    store.close();
    counts
}

/// How many of the database connections tagged `tag` (their
/// `application_name`) use TLS, and how many not, from `pg_stat_ssl`.
async fn tls_counts(base_url: &str, tag: &str) -> (i64, i64) {
    let row = superuser(base_url)
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = $1",
            &[&tag],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn refusal(url: &str) -> String {
    match PostgresMailbox::connect(url, Limits::default(), None, 2).await {
        Ok(_) => panic!("{url} was accepted"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmode_is_honoured_against_a_real_server() {
    let test = "postgres_sslmode_is_honoured_against_a_real_server";
    let Some(base_url) = database_url(test) else {
        return;
    };
    let admin = superuser(&base_url).await;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(
        ssl, "on",
        "{test} needs the test cluster's TLS (ssl = on, as Debian's pg_createcluster sets it)"
    );
    let cert_file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let schema = TestSchema::new(&base_url).await;
    let role = TestRole::new(&schema).await;
    let root = format!("sslrootcert={cert_file}");

    // require: every connection of the instance is encrypted.
    let url = role.url(&schema, "localhost", "tls_require", "sslmode=require");
    let (tls, plain) = tls_of_connections(&base_url, &url, "tls_require").await;
    assert!(
        tls >= 2 && plain == 0,
        "require: {tls} with TLS, {plain} without"
    );

    // disable: none is, though the server offers TLS.
    let url = role.url(&schema, "localhost", "tls_disable", "sslmode=disable");
    let (tls, plain) = tls_of_connections(&base_url, &url, "tls_disable").await;
    assert!(
        tls == 0 && plain >= 2,
        "disable: {tls} with TLS, {plain} without"
    );

    // verify-full against the server's certificate (for localhost).
    let url = role.url(
        &schema,
        "localhost",
        "tls_verify_full",
        &format!("sslmode=verify-full&{root}"),
    );
    let (tls, plain) = tls_of_connections(&base_url, &url, "tls_verify_full").await;
    assert!(
        tls >= 2 && plain == 0,
        "verify-full: {tls} with TLS, {plain} without"
    );

    // verify-ca does not look at the name: 127.0.0.1 is fine ...
    let url = role.url(
        &schema,
        "127.0.0.1",
        "tls_verify_ca",
        &format!("sslmode=verify-ca&{root}"),
    );
    let (tls, plain) = tls_of_connections(&base_url, &url, "tls_verify_ca").await;
    assert!(
        tls >= 2 && plain == 0,
        "verify-ca: {tls} with TLS, {plain} without"
    );

    // ... verify-full does: the certificate is not for 127.0.0.1.
    let url = role.url(
        &schema,
        "127.0.0.1",
        "tls_wrong_name",
        &format!("sslmode=verify-full&{root}"),
    );
    let error = refusal(&url).await;
    assert!(
        error.contains("cannot connect to the database") && error.contains("not valid for name"),
        "{error}"
    );

    // A root the server's certificate does not chain to.
    let dir = tempfile::tempdir().unwrap();
    let other_root = dir.path().join("other-root.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&other_root, other.cert.pem()).unwrap();
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = role.url(
            &schema,
            "localhost",
            "tls_other_root",
            &format!("sslmode={mode}&sslrootcert={}", other_root.display()),
        );
        let error = refusal(&url).await;
        assert!(
            error.contains("cannot connect to the database") && error.contains("UnknownIssuer"),
            "{mode}: {error}"
        );
    }

    // require over the Unix socket, where the server offers no TLS: refused,
    // never plaintext; the default (prefer) takes plaintext there.
    let socket = format!(
        "{}&sslmode=require",
        common::with_schema(&base_url, &schema.name)
    );
    let error = refusal(&socket).await;
    assert!(error.contains("server does not support TLS"), "{error}");
    let socket = common::with_schema(&base_url, &schema.name);
    PostgresMailbox::connect(&socket, Limits::default(), None, 2)
        .await
        .unwrap()
        .close();
}

/// The connector binary on `database_url`, with `SSL_CERT_FILE` naming
/// `system_roots` (the system's roots, as `rustls-native-certs` reads
/// them) and an empty `SSL_CERT_DIR`.
fn connector_binary(
    database_url: &str,
    system_roots: &std::path::Path,
    empty_dir: &std::path::Path,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_confidant-connector"));
    command
        .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
        .env("SSL_CERT_FILE", system_roots)
        .env("SSL_CERT_DIR", empty_dir)
        .env_remove("RUST_LOG");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_binary_verifies_postgres_against_the_systems_roots() {
    let test = "the_connector_binary_verifies_postgres_against_the_systems_roots";
    let Some(base_url) = database_url(test) else {
        return;
    };
    let admin = superuser(&base_url).await;
    let cert_file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let schema = TestSchema::new(&base_url).await;
    let role = TestRole::new(&schema).await;
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-certificates");
    std::fs::create_dir(&empty).unwrap();
    // `sslrootcert=system` without `sslmode`: verify-full, as libpq.
    let url = role.url(&schema, "localhost", "tls_system", "sslrootcert=system");

    // The system's roots hold another CA only: the binary does not start,
    // and says why.
    let other_root = dir.path().join("other-root.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&other_root, other.cert.pem()).unwrap();
    let output = connector_binary(&url, &other_root, &empty)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to the database") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    // A weaker sslmode with the system's roots is refused at start.
    let weak = role.url(
        &schema,
        "localhost",
        "tls_system",
        "sslmode=require&sslrootcert=system",
    );
    let output = connector_binary(&weak, &other_root, &empty)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sslrootcert=system needs sslmode=verify-full"),
        "{stderr}"
    );

    // The system's roots vouch for the server's certificate: the binary
    // serves, and every connection it keeps to the database is TLS.
    let mut child = Child(
        connector_binary(&url, std::path::Path::new(&cert_file), &empty)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let address = listening_address(&mut child.0, Duration::from_secs(30)).await;
    let client =
        confidant_connector::SignedClient::new(&format!("http://{address}"), signer(2)).unwrap();
    let tokens = client
        .generate_connection_token(confidant_connector::proto::GenerateConnectionTokenRequest {
            count: 1,
        })
        .await
        .unwrap();
    assert_eq!(tokens.tokens.len(), 1);
    let (tls, plain) = tls_counts(&base_url, "tls_system").await;
    assert!(
        tls >= 1 && plain == 0,
        "sslrootcert=system: {tls} with TLS, {plain} without"
    );
    drop(child);
}
