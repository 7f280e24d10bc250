//! TLS between the connector and its clients, over real gRPC on loopback,
//! with certificates made here by rcgen: a client that trusts the CA works;
//! a certificate for another host, plaintext against TLS and TLS against
//! plaintext all fail, and nothing reaches the store; an https URL is never
//! downgraded; bad URLs and bad PEM files are refused with their names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_connector::proto;
use confidant_connector::{
    ClientTls, Limits, MailboxStore, RedbMailbox, RequestSigner, ServerTls, SignedClient, TlsError,
    serve_with_tls,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

mod common;

use common::{Child, listening_address};

/// Every network step of these tests ends within this.
const STEP: Duration = Duration::from_secs(20);

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .expect("a step of the test took too long")
}

/// A test CA, and certificates it issues.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Confidant test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn client(&self) -> ClientTls {
        ClientTls::from_ca_pem(self.pem().as_bytes()).unwrap()
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its
    /// key, in PEM.
    fn server_identity(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server_tls(&self, names: &[&str]) -> ServerTls {
        let (cert, key) = self.server_identity(names);
        ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
    }
}

/// One mailbox, served on any number of loopback listeners (TLS or not).
struct Connector {
    mailbox: Arc<RedbMailbox>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Connector {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = Arc::new(
            RedbMailbox::open(dir.path().join("connector.redb"), Limits::default()).unwrap(),
        );
        Self {
            mailbox,
            stops: Vec::new(),
            tasks: Vec::new(),
            _dir: dir,
        }
    }

    /// Serves the mailbox on a new 127.0.0.1 port; returns `host:port`.
    async fn listen(&mut self, tls: Option<ServerTls>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store: Arc<dyn MailboxStore> = Arc::clone(&self.mailbox) as _;
        self.tasks.push(tokio::spawn(async move {
            serve_with_tls(listener, store, tls.as_ref(), async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        }));
        self.stops.push(stop);
        address
    }

    /// Whether `token` exists and whether it was used.
    async fn token(&self, token: &str) -> Option<bool> {
        self.mailbox
            .token_info(token)
            .await
            .unwrap()
            .map(|info| info.used)
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            within(task).await.unwrap();
        }
    }
}

fn signer(seed: u8) -> RequestSigner {
    RequestSigner::from_seed(&[seed; 32])
}

/// The status and all its sources, as one line.
fn explain(status: &Status) -> String {
    let mut text = format!("{}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause}"));
        source = cause.source();
    }
    text
}

async fn new_token(client: &SignedClient) -> Result<String, Status> {
    let mut response = within(
        client.generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 }),
    )
    .await?;
    Ok(response.tokens.remove(0))
}

async fn join(client: &SignedClient, token: &str) -> Result<String, Status> {
    within(
        client.add_connection_from_token(proto::AddConnectionFromTokenRequest {
            token: token.to_owned(),
        }),
    )
    .await
    .map(|response| response.connection_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trusts_the_ca_talks_to_a_tls_connector() {
    let ca = Ca::new();
    let mut connector = Connector::new();
    let address = connector
        .listen(Some(ca.server_tls(&["127.0.0.1", "localhost"])))
        .await;
    let url = format!("https://{address}");
    let issuer = SignedClient::with_tls(&url, signer(1), &ca.client()).unwrap();
    let holder = SignedClient::with_tls(&url, signer(2), &ca.client()).unwrap();

    let token = new_token(&issuer).await.unwrap();
    let connection_id = join(&holder, &token).await.unwrap();
    assert_eq!(connector.token(&token).await, Some(true));
    let sent = within(holder.send_message(proto::SendMessageRequest {
        connection_id: connection_id.clone(),
        message: b"sealed envelope".to_vec(),
        client_message_id: Vec::new(),
    }))
    .await
    .unwrap();

    // The issuer gets the join notice, then the message, over the stream.
    let mut stream = within(issuer.get_message_stream(0)).await.unwrap();
    let mut received = Vec::new();
    while received.len() < 2 {
        let message = within(stream.message()).await.unwrap().unwrap();
        received.push(message);
    }
    assert!(matches!(
        received[0].content,
        Some(proto::received_message::Content::ConnectionAdded(_))
    ));
    assert_eq!(received[1].id, sent.id);
    assert_eq!(received[1].connection_id, connection_id);
    assert_eq!(
        received[1].content,
        Some(proto::received_message::Content::Envelope(
            b"sealed envelope".to_vec()
        ))
    );
    let deleted = within(
        issuer.acknowledge_messages(proto::AcknowledgeMessagesRequest {
            message_ids: received.iter().map(|message| message.id).collect(),
        }),
    )
    .await
    .unwrap()
    .deleted;
    assert_eq!(deleted, 2);
    drop(stream);
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_refused_and_nothing_is_stored() {
    let ca = Ca::new();
    let mut connector = Connector::new();
    // The same mailbox behind a correct certificate and behind one that the
    // CA issued for another host.
    let good = connector.listen(Some(ca.server_tls(&["127.0.0.1"]))).await;
    let wrong = connector
        .listen(Some(ca.server_tls(&["connector.example"])))
        .await;
    let issuer =
        SignedClient::with_tls(&format!("https://{good}"), signer(1), &ca.client()).unwrap();
    let token = new_token(&issuer).await.unwrap();

    let holder =
        SignedClient::with_tls(&format!("https://{wrong}"), signer(2), &ca.client()).unwrap();
    let refused = join(&holder, &token).await.unwrap_err();
    let why = explain(&refused);
    assert!(
        why.contains("certificate") && why.contains("not valid for name"),
        "{why}"
    );
    assert!(new_token(&holder).await.is_err());
    // The join never reached the connector.
    assert_eq!(connector.token(&token).await, Some(false));
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_url_is_never_downgraded_to_plaintext() {
    let ca = Ca::new();
    let mut connector = Connector::new();
    let plaintext = connector.listen(None).await;
    // The plaintext connector works over http://.
    let issuer = SignedClient::new(&format!("http://{plaintext}"), signer(1)).unwrap();
    let token = new_token(&issuer).await.unwrap();

    // The same address as https://, trusting the CA or the system's roots:
    // the handshake fails; no request goes out in plaintext.
    let url = format!("https://{plaintext}");
    let with_ca = SignedClient::with_tls(&url, signer(2), &ca.client()).unwrap();
    let refused = join(&with_ca, &token).await.unwrap_err();
    // rustls got an HTTP/2 answer where a TLS record belongs.
    let why = explain(&refused);
    assert!(why.contains("corrupt message"), "{why}");
    match SignedClient::new(&url, signer(2)) {
        // A machine with system roots: the call fails likewise.
        Ok(with_system_roots) => {
            join(&with_system_roots, &token).await.unwrap_err();
        }
        // A machine without: the URL is refused at once.
        Err(error) => assert!(error.to_string().contains("never downgraded"), "{error}"),
    }
    assert_eq!(connector.token(&token).await, Some(false));
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_cannot_talk_to_a_tls_connector() {
    let ca = Ca::new();
    let mut connector = Connector::new();
    let address = connector.listen(Some(ca.server_tls(&["127.0.0.1"]))).await;
    let issuer =
        SignedClient::with_tls(&format!("https://{address}"), signer(1), &ca.client()).unwrap();
    let token = new_token(&issuer).await.unwrap();

    let plaintext = SignedClient::new(&format!("http://{address}"), signer(2)).unwrap();
    join(&plaintext, &token).await.unwrap_err();
    assert!(
        within(plaintext.get_connection_token_info(&token))
            .await
            .is_err()
    );
    assert_eq!(connector.token(&token).await, Some(false));
    connector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_roots_do_not_vouch_for_a_private_ca() {
    let ca = Ca::new();
    let mut connector = Connector::new();
    let address = connector.listen(Some(ca.server_tls(&["127.0.0.1"]))).await;
    match SignedClient::new(&format!("https://{address}"), signer(1)) {
        Ok(client) => {
            let refused = new_token(&client).await.unwrap_err();
            assert!(
                explain(&refused).contains("certificate"),
                "{}",
                explain(&refused)
            );
        }
        Err(error) => assert!(error.to_string().contains("never downgraded"), "{error}"),
    }
    connector.stop().await;
}

#[tokio::test]
async fn urls_without_http_or_https_are_refused_at_once() {
    let ca = Ca::new();
    for url in [
        "127.0.0.1:50051",
        "localhost",
        "",
        "grpc://127.0.0.1:50051",
        "ftp://127.0.0.1:50051",
        "unix:/tmp/connector.sock",
        "https://",
    ] {
        let error = SignedClient::new(url, signer(1)).unwrap_err().to_string();
        assert!(
            error.contains("expected https://HOST:PORT"),
            "{url:?}: {error}"
        );
        let error = SignedClient::with_tls(url, signer(1), &ca.client())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("expected https://HOST:PORT"),
            "{url:?}: {error}"
        );
    }
    // A CA for a plaintext URL: the caller meant TLS.
    let error = SignedClient::with_tls("http://127.0.0.1:50051", signer(1), &ca.client())
        .unwrap_err()
        .to_string();
    assert!(error.contains("use an https:// URL"), "{error}");
    // Schemes are case-insensitive.
    SignedClient::with_tls("HTTPS://127.0.0.1:50051", signer(1), &ca.client()).unwrap();
    SignedClient::new("http://127.0.0.1:50051", signer(1)).unwrap();
}

#[test]
fn bad_pem_files_are_refused_with_their_names() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert, key) = ca.server_identity(&["127.0.0.1"]);
    let (_, other_key) = ca.server_identity(&["127.0.0.1"]);
    let cert_file = write("cert.pem", &cert);
    let key_file = write("key.pem", &key);
    let other_key_file = write("other-key.pem", &other_key);
    let garbage = write("garbage.pem", "not pem at all\n");
    let broken = write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END PRIVATE KEY-----\n",
    );
    let missing = dir.path().join("missing.pem");
    let named = |error: TlsError, file: &std::path::Path, what: &str| {
        let text = error.to_string();
        assert!(
            text.contains(&file.display().to_string()) && text.contains(what),
            "{text}"
        );
    };

    ServerTls::from_pem_files(&cert_file, &key_file).unwrap();
    let error = ServerTls::from_pem_files(&missing, &key_file).unwrap_err();
    named(error, &missing, "cannot read the TLS certificate file");
    let error = ServerTls::from_pem_files(&cert_file, &missing).unwrap_err();
    named(error, &missing, "cannot read the TLS key file");
    let error = ServerTls::from_pem_files(&garbage, &key_file).unwrap_err();
    named(error, &garbage, "holds no certificate");
    let error = ServerTls::from_pem_files(&key_file, &key_file).unwrap_err();
    named(error, &key_file, "holds no certificate");
    let error = ServerTls::from_pem_files(&cert_file, &cert_file).unwrap_err();
    named(error, &cert_file, "holds no private key");
    let error = ServerTls::from_pem_files(&broken, &key_file).unwrap_err();
    named(error, &broken, "is not valid PEM");
    let error = ServerTls::from_pem_files(&cert_file, &other_key_file).unwrap_err();
    named(error, &other_key_file, "cannot be used together");

    let ca_file = write("ca.pem", &ca.pem());
    ClientTls::from_ca_file(&ca_file).unwrap();
    let error = ClientTls::from_ca_file(&missing).unwrap_err();
    named(error, &missing, "cannot read the CA certificate file");
    let error = ClientTls::from_ca_file(&key_file).unwrap_err();
    named(error, &key_file, "holds no certificate");
    let error = ClientTls::from_ca_file(&broken).unwrap_err();
    named(error, &broken, "is not valid PEM");
    let not_a_certificate = write(
        "not-a-certificate.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    let error = ClientTls::from_ca_file(&not_a_certificate).unwrap_err();
    named(error, &not_a_certificate, "not a usable CA certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_binary_serves_tls_with_tls_cert_and_tls_key() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server_identity(&["127.0.0.1"]);
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let binary = env!("CARGO_BIN_EXE_confidant-connector");

    // A key without its certificate is refused by the command line.
    let output = std::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--tls-cert"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A missing key file is named.
    let output = std::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("nope.pem"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nope.pem"), "{stderr}");

    let mut child = Child(
        std::process::Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("key.pem"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let address = listening_address(&mut child.0, STEP).await;

    let client =
        SignedClient::with_tls(&format!("https://{address}"), signer(1), &ca.client()).unwrap();
    let token = new_token(&client).await.unwrap();
    let info = within(client.get_connection_token_info(&token))
        .await
        .unwrap();
    assert_eq!(info.creator_public_key, client.public_key().to_vec());
    let plaintext = SignedClient::new(&format!("http://{address}"), signer(2)).unwrap();
    assert!(new_token(&plaintext).await.is_err());
    drop(child);
}
