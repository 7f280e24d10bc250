//! gRPC-Web, as a browser speaks it: real HTTP/1.1 on loopback (a hyper
//! client that speaks nothing else, with tonic-web's client translation),
//! against a connector on a real redb file. The whole exchange of two
//! parties (token, join, live delivery on the server-streaming call,
//! acknowledgement, a refusal with its reason), CORS preflights for an
//! allowed and a foreign origin, the headers a page must read, and
//! gRPC-Web off by default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use confidant_connector::proto::{self, connector_client::ConnectorClient};
use confidant_connector::{
    GrpcWeb, Limits, REASON_HEADER, RedbMailbox, RequestSigner, ServeOptions, serve_with_options,
};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};

mod common;

use common::{Child, listening_address};

/// The origin of the page allowed in these tests.
const PAGE: &str = "http://wallet.test:8080";
const STEP: Duration = Duration::from_secs(10);
const API: &str = "/confidant.connector.v1.Connector/";

struct Served {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STEP, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn serve(grpc_web: Option<GrpcWeb>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mailbox = RedbMailbox::open(dir.path().join("connector.redb"), Limits::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let options = ServeOptions {
            grpc_web,
            ..ServeOptions::default()
        };
        serve_with_options(listener, Arc::new(mailbox), options, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Served {
        url,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

type WebClient =
    ConnectorClient<GrpcWebClientService<Client<HttpConnector, GrpcWebCall<tonic::body::Body>>>>;

/// A client that speaks gRPC-Web over HTTP/1.1 only, as a browser's
/// `fetch` does on a plaintext origin.
fn web_client(url: &str) -> WebClient {
    let http1 = Client::builder(TokioExecutor::new()).build_http();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http1);
    ConnectorClient::with_origin(service, url.parse().unwrap())
}

/// A party: its key and its gRPC-Web client.
struct Party {
    signer: RequestSigner,
    client: WebClient,
    audience: String,
}

impl Party {
    async fn new(url: &str, seed: u8) -> Self {
        let mut client = web_client(url);
        let audience = client
            .get_connector_info(proto::GetConnectorInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .audience;
        Self {
            signer: RequestSigner::from_seed(&[seed; 32]),
            client,
            audience,
        }
    }

    fn signed<T: prost::Message>(&self, method: &str, message: T) -> tonic::Request<T> {
        self.signer
            .sign(&self.audience, &format!("{API}{method}"), message)
            .unwrap()
    }

    async fn stream(&self) -> tonic::Streaming<proto::ReceivedMessage> {
        let request = self.signed(
            "GetMessageStream",
            proto::GetMessageStreamRequest {
                last_seen_message_id: 0,
            },
        );
        self.client
            .clone()
            .get_message_stream(request)
            .await
            .unwrap()
            .into_inner()
    }
}

async fn next(stream: &mut tonic::Streaming<proto::ReceivedMessage>) -> proto::ReceivedMessage {
    tokio::time::timeout(STEP, stream.message())
        .await
        .expect("nothing came on the stream")
        .unwrap()
        .expect("the stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_parties_talk_over_grpc_web_with_live_delivery_on_the_stream() {
    let served = serve(Some(GrpcWeb::new([PAGE]).unwrap())).await;
    let issuer = Party::new(&served.url, 1).await;
    let holder = Party::new(&served.url, 2).await;

    // The issuer's stream is open before anyone joins: the join comes live.
    let mut issuer_stream = issuer.stream().await;
    let token = issuer
        .client
        .clone()
        .generate_connection_token(issuer.signed(
            "GenerateConnectionToken",
            proto::GenerateConnectionTokenRequest { count: 1 },
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .remove(0);
    let connection_id = holder
        .client
        .clone()
        .add_connection_from_token(holder.signed(
            "AddConnectionFromToken",
            proto::AddConnectionFromTokenRequest {
                token: token.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .connection_id;
    let joined = next(&mut issuer_stream).await;
    assert_eq!(joined.connection_id, connection_id);
    match joined.content {
        Some(proto::received_message::Content::ConnectionAdded(added)) => {
            assert_eq!(added.token, token);
            assert_eq!(added.peer_public_key, holder.signer.public_key().to_vec());
        }
        other => panic!("expected the join notice, got {other:?}"),
    }

    // The holder's stream is open; the issuer's envelope comes live on it.
    let mut holder_stream = holder.stream().await;
    let sent = issuer
        .client
        .clone()
        .send_message(issuer.signed(
            "SendMessage",
            proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: b"the issuer's bundle".to_vec(),
                client_message_id: b"bundle-1".to_vec(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let delivered = next(&mut holder_stream).await;
    assert_eq!(delivered.id, sent);
    assert_eq!(
        delivered.content,
        Some(proto::received_message::Content::Envelope(
            b"the issuer's bundle".to_vec()
        ))
    );

    // Acknowledged over gRPC-Web: deleted, nothing left to page through.
    let deleted = holder
        .client
        .clone()
        .acknowledge_messages(holder.signed(
            "AcknowledgeMessages",
            proto::AcknowledgeMessagesRequest {
                message_ids: vec![sent],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
    let page = holder
        .client
        .clone()
        .get_messages_paginated(holder.signed(
            "GetMessagesPaginated",
            proto::GetMessagesPaginatedRequest {
                last_seen_message_id: 0,
                limit: 10,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(page.messages.is_empty(), "{page:?}");

    // A refusal keeps its code and its reason through the translation.
    let refused = holder
        .client
        .clone()
        .send_message(holder.signed(
            "SendMessage",
            proto::SendMessageRequest {
                connection_id: "c-no-such-connection".to_owned(),
                message: b"lost".to_vec(),
                client_message_id: Vec::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get(REASON_HEADER)
            .and_then(|value| value.to_str().ok()),
        Some("unknown_connection"),
        "{refused:?}"
    );
    served.stop().await;
}

/// An OPTIONS preflight for a gRPC-Web call of the API from `origin`.
async fn preflight(url: &str, origin: &str) -> http::Response<hyper::body::Incoming> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::builder()
        .method(http::Method::OPTIONS)
        .uri(format!("{url}{API}SendMessage"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,x-confidant-public-key,\
             x-confidant-nonce,x-confidant-signature",
        )
        .body(Empty::new())
        .unwrap();
    tokio::time::timeout(STEP, client.request(request))
        .await
        .unwrap()
        .unwrap()
}

fn header<'a>(response: &'a http::Response<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_allow_the_listed_origin_and_no_other() {
    let served = serve(Some(GrpcWeb::new([PAGE]).unwrap())).await;

    let allowed = preflight(&served.url, PAGE).await;
    assert!(allowed.status().is_success(), "{allowed:?}");
    assert_eq!(header(&allowed, "access-control-allow-origin"), Some(PAGE));
    let methods = header(&allowed, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let headers = header(&allowed, "access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for needed in [
        "content-type",
        "x-grpc-web",
        "x-confidant-public-key",
        "x-confidant-nonce",
        "x-confidant-signature",
    ] {
        assert!(headers.contains(needed), "{needed} not allowed: {headers}");
    }

    let foreign = preflight(&served.url, "http://elsewhere.test").await;
    assert_eq!(header(&foreign, "access-control-allow-origin"), None);

    // A call from the page's origin: the page may read the status and the
    // refusal reason.
    let party = Party::new(&served.url, 3).await;
    let mut request = party.signed(
        "GenerateConnectionToken",
        proto::GenerateConnectionTokenRequest { count: 1 },
    );
    request
        .metadata_mut()
        .insert("origin", PAGE.parse().unwrap());
    let answer = party
        .client
        .clone()
        .generate_connection_token(request)
        .await
        .unwrap();
    let metadata = answer.metadata();
    assert_eq!(
        metadata
            .get("access-control-allow-origin")
            .and_then(|value| value.to_str().ok()),
        Some(PAGE)
    );
    let exposed = metadata
        .get("access-control-expose-headers")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    for needed in ["grpc-status", "grpc-message", REASON_HEADER] {
        assert!(exposed.contains(needed), "{needed} not exposed: {exposed}");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_origin_is_allowed_with_a_star() {
    let served = serve(Some(GrpcWeb::any_origin())).await;
    let answer = preflight(&served.url, "http://anywhere.test").await;
    assert_eq!(header(&answer, "access-control-allow-origin"), Some("*"));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_is_off_by_default() {
    let served = serve(None).await;
    let mut client = web_client(&served.url);
    let refused = tokio::time::timeout(
        STEP,
        client.get_connector_info(proto::GetConnectorInfoRequest {}),
    )
    .await
    .unwrap();
    assert!(refused.is_err(), "{refused:?}");
    // Native gRPC still works on the same connector.
    let mut native = ConnectorClient::connect(served.url.clone()).await.unwrap();
    let info = native
        .get_connector_info(proto::GetConnectorInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!info.audience.is_empty());
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_binary_serves_grpc_web_with_grpc_web_and_cors_origin() {
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_confidant-connector");
    let run = |extra: &[&str]| {
        std::process::Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .output()
            .unwrap()
    };

    // An origin without gRPC-Web is refused by the command line.
    let output = run(&["--cors-origin", PAGE]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--grpc-web"), "{stderr}");
    // An origin with a path is refused before the connector starts.
    let output = run(&["--grpc-web", "--cors-origin", "https://wallet.test/app"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid CORS origin"), "{stderr}");

    let mut child = Child(
        std::process::Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--grpc-web", "--cors-origin", PAGE])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let address = listening_address(&mut child.0, STEP).await;
    let url = format!("http://{address}");
    let party = Party::new(&url, 5).await;
    assert!(!party.audience.is_empty());
    let answer = preflight(&url, PAGE).await;
    assert_eq!(header(&answer, "access-control-allow-origin"), Some(PAGE));
    drop(child);
}
