//! Operations of the connector binary: the command line's choice of
//! storage, the Prometheus metrics endpoint and the gRPC health service
//! (on redb; `faults.rs` follows the health through a PostgreSQL outage).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_connector::SignedClient;
use confidant_connector::proto;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod common;

use common::{Child, listening_address, signer};

const BINARY: &str = env!("CARGO_BIN_EXE_confidant-connector");
const BOUND: Duration = Duration::from_secs(60);

#[test]
fn the_command_line_wants_one_storage() {
    let neither = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!neither.status.success());
    let stderr = String::from_utf8_lossy(&neither.stderr);
    assert!(stderr.contains("--data-dir"), "{stderr}");
    let both = Command::new(BINARY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/nonexistent",
            "--database-url",
        ])
        .arg("postgres://127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!both.status.success());
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    // A database that does not answer: a clear error, not a panic.
    let unreachable = Command::new(BINARY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("cannot connect to the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

async fn get_metrics(address: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    Some(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut child = Child(
        Command::new(BINARY)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                &metrics,
                "--data-dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let address = listening_address(&mut child.0, BOUND).await;
    let url = format!("http://{address}");

    let client = SignedClient::new(&url, signer(1)).unwrap();
    client
        .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
        .await
        .unwrap();
    let refused = client
        .add_connection_from_token(proto::AddConnectionFromTokenRequest {
            token: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "confidant.connector.v1.Connector".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let text = get_metrics(&metrics)
        .await
        .expect("the metrics endpoint answers");
    for expected in [
        "confidant_connector_requests_total{method=\"GenerateConnectionToken\",result=\"OK\"} 1",
        "confidant_connector_requests_total{method=\"AddConnectionFromToken\",result=\"NotFound\"} 1",
        "confidant_connector_refusals_total{reason=\"unknown_token\"} 1",
        "confidant_connector_commit_seconds_bucket{operation=\"create_tokens\"",
        "confidant_connector_store_up 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }

    // The mailbox depth, sampled every second: 1 holds its join notice and
    // the holder's 3 messages; 2 its own 1 message from 1.
    let holder = SignedClient::new(&url, signer(2)).unwrap();
    let connection = common::connect(&client, &holder).await;
    for (sender, count) in [(&holder, 3u8), (&client, 1)] {
        for body in 0..count {
            sender
                .send_message(proto::SendMessageRequest {
                    connection_id: connection.clone(),
                    message: vec![body; 8],
                    client_message_id: Vec::new(),
                })
                .await
                .unwrap();
        }
    }
    let expected = [
        "confidant_connector_waiting_messages 5",
        "confidant_connector_deepest_mailbox_messages 4",
    ];
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let text = get_metrics(&metrics).await.unwrap_or_default();
        if expected
            .iter()
            .all(|line| text.lines().any(|got| got == *line))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{expected:?} missing from:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
