//! Fault tests with real processes and a real PostgreSQL server:
//! connector instances are `confidant-connector --database-url …` child
//! processes, killed with SIGKILL.
//!
//! - Three instances on one database, parties spread over them, one
//!   killed in the middle of handshakes, sends and acknowledgements: every
//!   accepted message is delivered exactly once, and the parties finish on
//!   the survivors.
//! - One nonce replayed to two instances, one token raced from two, one
//!   client id retried on two: each accepted exactly once.
//! - PostgreSQL stopped in the middle and started again (a private server
//!   this test starts, so that the shared one keeps serving the other
//!   tests): UNAVAILABLE meanwhile, nothing acknowledged that is not
//!   stored, recovery without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_actors::{Outgoing, Payload, Transport as _};
use confidant_connector::proto::{self, connector_client::ConnectorClient};
use confidant_connector::{ClientTls, ConnectorTransport, SignedClient};
use confidant_core::ConnectionId;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

mod common;

use common::{TestSchema, listening_address, signer};

/// The bound of every wait: it ends at once when the code is right, and
/// fails the test instead of hanging when it is not.
const BOUND: Duration = Duration::from_secs(120);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {BOUND:?}"))
}

/// A connector process; killed with SIGKILL when dropped.
struct Instance {
    child: std::process::Child,
    url: String,
}

impl Instance {
    async fn start(database_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confidant-connector"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--database-pool-size",
                "8",
                "--database-url",
            ])
            .arg(database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let address = listening_address(&mut child, BOUND).await;
        Self {
            child,
            url: format!("http://{address}"),
        }
    }

    /// SIGKILL, and reaped.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process still runs (it did not panic or exit).
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one party has received.
#[derive(Default)]
struct Received {
    envelopes: HashMap<Vec<u8>, usize>,
    joined: HashMap<String, ConnectionId>,
}

/// A party: a transport over every instance (its own order, started at its
/// first, so the parties' spread over the instances is fixed rather than
/// random) and the deliveries it took, acknowledged.
struct Party {
    seed: u8,
    transport: ConnectorTransport,
    received: Arc<Mutex<Received>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Party {
    fn new(seed: u8, urls: &[String], first: usize) -> Self {
        let mut order: Vec<&str> = urls.iter().map(String::as_str).collect();
        order.rotate_left(first % urls.len());
        let transport = ConnectorTransport::with_instances_starting_at(
            &order,
            0,
            signer(seed),
            &ClientTls::default(),
            1 << 20,
        )
        .unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let party = Self {
            seed,
            transport: transport.clone(),
            received: Arc::clone(&received),
            changed: Arc::clone(&changed),
        };
        tokio::spawn(async move {
            while let Ok(deliveries) = transport.receive(64).await {
                let ids = deliveries.iter().map(|delivery| delivery.id).collect();
                {
                    let mut received = received.lock().unwrap();
                    for delivery in deliveries {
                        match delivery.payload {
                            Payload::Envelope(envelope) => {
                                *received.envelopes.entry(envelope).or_default() += 1;
                            }
                            Payload::Joined { token } => {
                                received.joined.insert(token, delivery.connection_id);
                            }
                            _ => {}
                        }
                    }
                }
                changed.notify_waiters();
                if transport.acknowledge(ids).await.is_err() {
                    return;
                }
            }
        });
        party
    }

    /// Waits until `done` holds for what it received.
    async fn until<T>(&self, what: &str, mut done: impl FnMut(&Received) -> Option<T>) -> T {
        within(what, async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(value) = done(&self.received.lock().unwrap()) {
                    return value;
                }
                notified.await;
            }
        })
        .await
    }
}

/// The issuer invites, the holder joins (with a new invitation when a join
/// fails: a join is not retried, its answer may be lost with its
/// instance); returns the connection id both know.
async fn handshake(issuer: &Party, holder: &Party) -> ConnectionId {
    for _ in 0..10 {
        let invitation = issuer.transport.create_invitation().await.unwrap();
        match holder.transport.join(&invitation.token).await {
            Ok(connection) => {
                let token = invitation.token.clone();
                let seen = issuer
                    .until("the join notice", |received| {
                        received.joined.get(&token).cloned()
                    })
                    .await;
                assert_eq!(seen, connection);
                return connection;
            }
            Err(error) => eprintln!("join failed ({error}); a new invitation"),
        }
    }
    panic!("ten joins failed in a row");
}

fn body(pair: usize, round: usize, direction: &str, index: usize) -> Vec<u8> {
    format!("pair {pair} round {round} {direction} message {index}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_under_load_loses_nothing_and_delivers_nothing_twice() {
    const PAIRS: usize = 6;
    const ROUNDS: usize = 3;
    const PER_ROUND: usize = 20;
    let Some(url) = common::database_url(
        "an_instance_killed_under_load_loses_nothing_and_delivers_nothing_twice",
    ) else {
        return;
    };
    let schema = TestSchema::new(&url).await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start(&schema.url()).await);
    }
    let urls: Vec<String> = instances
        .iter()
        .map(|instance| instance.url.clone())
        .collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let kill_at = PAIRS * ROUNDS * PER_ROUND * 2 / 3;
    let reached = Arc::new(tokio::sync::Notify::new());
    let pairs: Vec<(Party, Party)> = (0..PAIRS)
        .map(|pair| {
            let seed = u8::try_from(10 + 2 * pair).unwrap();
            (
                Party::new(seed, &urls, pair),
                Party::new(seed + 1, &urls, pair + 1),
            )
        })
        .collect();
    let pairs = Arc::new(pairs);
    let work = (0..PAIRS).map(|pair| {
        let (pairs, sent, reached) = (Arc::clone(&pairs), Arc::clone(&sent), Arc::clone(&reached));
        tokio::spawn(async move {
            let (issuer, holder) = &pairs[pair];
            for round in 0..ROUNDS {
                let connection = handshake(issuer, holder).await;
                for index in 0..PER_ROUND {
                    for (from, direction) in [(issuer, "to holder"), (holder, "to issuer")] {
                        from.transport
                            .send(vec![Outgoing {
                                connection_id: connection.clone(),
                                envelope: body(pair, round, direction, index),
                            }])
                            .await
                            .unwrap_or_else(|error| panic!("a send was not accepted: {error}"));
                        if sent.fetch_add(1, Ordering::AcqRel) + 1 == kill_at {
                            reached.notify_one();
                        }
                    }
                }
            }
        })
    });
    let work: Vec<_> = work.collect();
    // SIGKILL the instance in the middle of the list in the middle of the
    // load (every party has it in its list; two pairs start on it).
    within("the middle of the load", reached.notified()).await;
    instances[1].kill();
    for task in work {
        within("the pairs' work", task).await.unwrap();
    }
    // Every message sent (each accepted: send returned Ok) arrives exactly
    // once.
    for (pair, (issuer, holder)) in pairs.iter().enumerate() {
        for (party, direction) in [(holder, "to holder"), (issuer, "to issuer")] {
            let expected: Vec<Vec<u8>> = (0..ROUNDS)
                .flat_map(|round| {
                    (0..PER_ROUND).map(move |index| body(pair, round, direction, index))
                })
                .collect();
            party
                .until("every message", |received| {
                    expected
                        .iter()
                        .all(|body| received.envelopes.contains_key(body))
                        .then_some(())
                })
                .await;
            let received = party.received.lock().unwrap();
            assert_eq!(
                received.envelopes.len(),
                expected.len(),
                "pair {pair}: nothing else arrived"
            );
            let twice: Vec<_> = received
                .envelopes
                .values()
                .filter(|count| **count != 1)
                .collect();
            assert!(
                twice.is_empty(),
                "pair {pair}: delivered more than once: {twice:?}"
            );
        }
    }
    // And everything was acknowledged: nothing waits (asked of a survivor).
    for (issuer, holder) in pairs.iter() {
        for party in [issuer, holder] {
            let client = SignedClient::new(&instances[0].url, signer(party.seed)).unwrap();
            let left = within("the mailbox drained", async {
                loop {
                    let page = client
                        .get_messages_paginated(proto::GetMessagesPaginatedRequest {
                            last_seen_message_id: 0,
                            limit: 1000,
                        })
                        .await
                        .unwrap()
                        .messages;
                    if page.is_empty() {
                        return page;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            assert!(left.is_empty());
        }
    }
    assert!(instances[0].running() && instances[2].running());
}

/// A raw gRPC client of an instance (no signing, no retries).
async fn raw(url: &str) -> ConnectorClient<tonic::transport::Channel> {
    ConnectorClient::connect(url.to_owned()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_a_token_and_a_client_id_are_each_accepted_once_across_instances() {
    const TRIES: usize = 10;
    let Some(url) = common::database_url(
        "a_nonce_a_token_and_a_client_id_are_each_accepted_once_across_instances",
    ) else {
        return;
    };
    let schema = TestSchema::new(&url).await;
    let a = Instance::start(&schema.url()).await;
    let b = Instance::start(&schema.url()).await;
    let issuer_a = SignedClient::new(&a.url, signer(1)).unwrap();
    let audience = issuer_a.connector_info().await.unwrap().audience;
    let issuer_b = SignedClient::new(&b.url, signer(1)).unwrap();
    assert_eq!(issuer_b.connector_info().await.unwrap().audience, audience);
    let (mut raw_a, mut raw_b) = (raw(&a.url).await, raw(&b.url).await);

    // One signed request, sent to both instances at once.
    for _ in 0..TRIES {
        let request = signer(1)
            .sign(
                &audience,
                "/confidant.connector.v1.Connector/GenerateConnectionToken",
                proto::GenerateConnectionTokenRequest { count: 1 },
            )
            .unwrap();
        let (metadata, _, body) = request.into_parts();
        let again = tonic::Request::from_parts(metadata.clone(), Default::default(), body);
        let first = tonic::Request::from_parts(metadata, Default::default(), body);
        let (one, two) = tokio::join!(
            raw_a.generate_connection_token(first),
            raw_b.generate_connection_token(again)
        );
        let accepted = [&one, &two].iter().filter(|answer| answer.is_ok()).count();
        assert_eq!(accepted, 1, "{one:?} {two:?}");
        let refused = one.err().or(two.err()).unwrap();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains("nonce"), "{refused:?}");
    }

    // One token, used from both instances at once by two holders.
    let holder_a = SignedClient::new(&a.url, signer(2)).unwrap();
    let holder_b = SignedClient::new(&b.url, signer(3)).unwrap();
    let mut connection_id = String::new();
    for _ in 0..TRIES {
        let token = issuer_a
            .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
            .await
            .unwrap()
            .tokens
            .remove(0);
        let request = proto::AddConnectionFromTokenRequest { token };
        let (one, two) = tokio::join!(
            holder_a.add_connection_from_token(request.clone()),
            holder_b.add_connection_from_token(request)
        );
        let winners: Vec<_> = [&one, &two]
            .into_iter()
            .filter_map(|answer| answer.as_ref().ok())
            .collect();
        assert_eq!(winners.len(), 1, "{one:?} {two:?}");
        connection_id = winners[0].connection_id.clone();
        let refused = one.as_ref().err().or(two.as_ref().err()).unwrap();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    // The last connection's holder, sending through both instances.
    let winner = if holder_a
        .send_message(proto::SendMessageRequest {
            connection_id: connection_id.clone(),
            message: b"probe".to_vec(),
            client_message_id: Vec::new(),
        })
        .await
        .is_ok()
    {
        2
    } else {
        3
    };
    let sender_a = SignedClient::new(&a.url, signer(winner)).unwrap();
    let sender_b = SignedClient::new(&b.url, signer(winner)).unwrap();

    // One client id, sent to both instances at once: stored once.
    for index in 0..TRIES {
        let request = proto::SendMessageRequest {
            connection_id: connection_id.clone(),
            message: format!("retried {index}").into_bytes(),
            client_message_id: vec![index as u8; 16],
        };
        let (one, two) = tokio::join!(
            sender_a.send_message(request.clone()),
            sender_b.send_message(request)
        );
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_eq!(one.id, two.id, "the same message");
    }
    let waiting = issuer_a
        .get_messages_paginated(proto::GetMessagesPaginatedRequest {
            last_seen_message_id: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .messages;
    for index in 0..TRIES {
        let body = format!("retried {index}").into_bytes();
        let copies = waiting
            .iter()
            .filter(|message| {
                message.content == Some(proto::received_message::Content::Envelope(body.clone()))
            })
            .count();
        assert_eq!(copies, 1, "message {index}");
    }
}

/// A PostgreSQL server of this test's own, in a temporary directory, on a
/// loopback port: started with the binaries of `pg_config --bindir` (as
/// the `postgres` user when this runs as root, since the server refuses
/// root).
struct PrivateServer {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn as_server_user(program: &std::path::Path) -> Command {
    if rustix::process::getuid().is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PrivateServer {
    /// `None` (and the test skipped, or failed under CI) without the
    /// PostgreSQL server binaries.
    fn start(test: &str) -> Option<Self> {
        let bin = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
            .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists());
        let Some(bin) = bin else {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{test}: no PostgreSQL server binaries (pg_config --bindir)");
            }
            eprintln!("SKIPPED {test}: no PostgreSQL server binaries (pg_config --bindir)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if rustix::process::getuid().is_root() {
            let postgres = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            let uid: u32 = String::from_utf8_lossy(&postgres.stdout)
                .trim()
                .parse()
                .unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let status = as_server_user(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        let server = Self {
            bin,
            data,
            port,
            _dir: dir,
        };
        server.pg_ctl("start");
        Some(server)
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let mut command = as_server_user(&self.bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-o", &options]);
        if action == "stop" {
            command.args(["-m", "fast"]);
        }
        let status = command.arg(action).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "pg_ctl {action} failed");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn health(url: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "confidant.connector.v1.Connector".into(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status)
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// Polls `probe` (bounded) until it gives `Some`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    within(what, async {
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_and_started_again_means_unavailable_then_recovery() {
    let test = "the_database_stopped_and_started_again_means_unavailable_then_recovery";
    // Needs a database of its own, but the switch says whether PostgreSQL
    // tests run here at all.
    if common::database_url(test).is_none() {
        return;
    }
    let Some(server) = PrivateServer::start(test) else {
        return;
    };
    let mut instance = Instance::start(&server.url()).await;
    let issuer = SignedClient::new(&instance.url, signer(1)).unwrap();
    let holder = SignedClient::new(&instance.url, signer(2)).unwrap();
    let connection_id = common::connect(&issuer, &holder).await;
    let send = |index: u32| {
        holder.send_message(proto::SendMessageRequest {
            connection_id: connection_id.clone(),
            message: format!("message {index}").into_bytes(),
            client_message_id: index.to_be_bytes().to_vec(),
        })
    };
    let mut accepted = Vec::new();
    for index in 0..5 {
        send(index).await.unwrap();
        accepted.push(index);
    }
    assert_eq!(health(&instance.url).await, Some(SERVING));

    server.pg_ctl("stop");
    // Meanwhile: UNAVAILABLE, never an acknowledgement, never a crash.
    for index in 5..10 {
        let refused = send(index).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    }
    let page = issuer
        .get_messages_paginated(proto::GetMessagesPaginatedRequest {
            last_seen_message_id: 0,
            limit: 100,
        })
        .await
        .unwrap_err();
    assert_eq!(page.code(), Code::Unavailable, "{page:?}");
    let url = instance.url.clone();
    eventually("health NOT_SERVING", || async {
        (health(&url).await == Some(NOT_SERVING)).then_some(())
    })
    .await;
    assert!(instance.running(), "the instance survives the outage");

    server.pg_ctl("start");
    // It recovers by itself: the refused sends, retried with their client
    // ids, are stored now (once each).
    eventually("health SERVING", || async {
        (health(&url).await == Some(SERVING)).then_some(())
    })
    .await;
    for index in 5..10 {
        eventually("a send after recovery", || async { send(index).await.ok() }).await;
        accepted.push(index);
    }
    let waiting = issuer
        .get_messages_paginated(proto::GetMessagesPaginatedRequest {
            last_seen_message_id: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .messages;
    let bodies: Vec<Vec<u8>> = waiting
        .into_iter()
        .filter_map(|message| match message.content {
            Some(proto::received_message::Content::Envelope(body)) => Some(body),
            _ => None,
        })
        .collect();
    let expected: Vec<Vec<u8>> = accepted
        .iter()
        .map(|index| format!("message {index}").into_bytes())
        .collect();
    assert_eq!(
        bodies, expected,
        "each accepted message stored once, in order"
    );
    assert!(instance.running());
}
