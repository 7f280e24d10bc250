//! The connector (`confidant-connector`): its gRPC service served in this
//! process on loopback TCP, with a `RedbMailbox` in a temporary directory
//! (durable group commits, its default).
//!
//! 1. A bare unary gRPC round trip, the baseline: `GetConnectionTokenInfo`
//!    (unsigned, one redb read) through the same tonic channel type the
//!    nodes use, one call at a time and with many calls in flight.
//! 2. Handshakes: two runtime nodes (issuer and holder, `ConnectorTransport`
//!    each, redb stores with durable commits) making 256 connections at
//!    once, each done when both nodes report `Event::Connected` (and the
//!    issuer has taken the holder's greeting). Target: ≥ 1,000 per second;
//!    the time per handshake is also given against the cost of the X3DH
//!    primitives of one handshake ([`crate::x3dh::Primitives`]), timed as a
//!    variant of the same rounds.
//! 3. Relayed messages: 256-byte messages both ways over 256 connections
//!    (`send_many`; sent by `ConnectorTransport` as `SendMessages`
//!    batches, stored by the connector, streamed to the other node,
//!    opened, committed to its inbox, acknowledged to the connector and by
//!    the application). Target: ≥ 20,000 per second.
//!
//! These alternate round after round; the handshake and message times are
//! also given as ratios to the bare round trip (lower is better), the
//! baseline against which the absolute rates above are to be read. One
//! more variant: the bare calls in flight against a second connector whose
//! accepted sockets have TCP_NODELAY, which `confidant_connector::serve`
//! does not set (see [`Serving::NoDelay`]); everything else runs on `serve`
//! as shipped.
//!
//! 4. Stored bytes per pending message: many 256-byte envelopes sent with
//!    `SignedClient::send_message` to a recipient that does not read them,
//!    on a fresh mailbox file; its growth divided by their number.

use crate::measure::{compare, format_ns, median};
use crate::runtime::{
    BenchResult, MESSAGE_LEN, connect, drain, file_len, mib, redb, runtime_round, suites, within,
};
use crate::x3dh::Primitives;
use crate::{Settings, Verdict};
use confidant_actors::{Events, Node, NodeConfig};
use confidant_connector::{
    ConnectorService, ConnectorTransport, Limits, MailboxStore, RedbMailbox, RequestSigner,
    SignedClient, proto,
};
use confidant_store::Durability;
use std::cell::RefCell;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tonic::transport::server::TcpIncoming;

/// Tokio worker threads of the application side's runtime (the
/// connector's has one per CPU, as its binary does).
const CLIENT_THREADS: usize = 2;

/// Handshakes per second that the target asks for.
const HANDSHAKES_TARGET: f64 = 1_000.0;

/// The hybrid handshake's time against the classical one, through the
/// runtime (issue 15 sets ≤ 1.5 for the handshake itself).
const HYBRID_VS_CLASSICAL_TARGET: f64 = 1.5;

/// Relayed messages per second that the target asks for.
const MESSAGES_TARGET: f64 = 20_000.0;

/// The pause before timing the X3DH primitives in a round.
const PAUSE: Duration = Duration::from_millis(100);

/// Runs the connector benchmarks and prints their tables.
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    let started = Instant::now();
    println!("## Connector: gRPC (tonic) on loopback TCP, served in this process");
    let server_threads = std::thread::available_parallelism().map_or(2, usize::from);
    let runtimes = multi_thread("connector", server_threads)
        .and_then(|server| Ok((server, multi_thread("clients", CLIENT_THREADS)?)));
    let (server, clients) = match runtimes {
        Ok(runtimes) => runtimes,
        Err(error) => {
            println!("no tokio runtime ({error}); connector benchmarks skipped\n");
            return;
        }
    };
    println!(
        "connector: RedbMailbox in a temporary directory (durable group commits, its default), \
         served on its own tokio runtime ({server_threads} worker threads: one per CPU, as its \
         binary has); clients on another ({CLIENT_THREADS} worker threads)"
    );
    if let Err(error) = through_nodes(&server, &clients, settings, verdicts) {
        println!("handshake and message benchmarks stopped: {error}");
    }
    if let Err(error) = stored_bytes(&server, &clients, settings) {
        println!("stored-bytes benchmark stopped: {error}");
    }
    println!(
        "(connector section took {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!();
}

pub(crate) fn multi_thread(name: &str, threads: usize) -> BenchResult<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(format!("bench-{name}"))
        .enable_all()
        .build()?)
}

/// How the bench serves a connector.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Serving {
    /// `confidant_connector::serve`, as the binary does.
    Shipped,
    /// The same service with TCP_NODELAY on accepted sockets: `serve`
    /// hands tonic a plain listener stream, so its answers wait for Nagle's
    /// algorithm (and the client's delayed ACK) when several are in flight.
    NoDelay,
}

/// A connector served on `server` at `127.0.0.1:<free port>`.
pub(crate) struct Connector {
    pub(crate) url: String,
    mailbox: Arc<RedbMailbox>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Connector {
    pub(crate) fn start(
        server: &Runtime,
        path: &Path,
        limits: Limits,
        serving: Serving,
    ) -> BenchResult<Self> {
        let mailbox = Arc::new(RedbMailbox::open(path, limits)?);
        let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store: Arc<dyn MailboxStore> = Arc::clone(&mailbox) as _;
        let task = match serving {
            Serving::Shipped => {
                server.spawn(confidant_connector::serve(listener, store, async move {
                    let _ = stopped.await;
                }))
            }
            Serving::NoDelay => {
                // What `serve` does, except that accepted sockets get
                // TCP_NODELAY (tonic ignores its own `tcp_nodelay` setting
                // for a caller's incoming stream).
                let (end_streams, streams_ended) = tokio::sync::watch::channel(false);
                let service = ConnectorService::new(store, streams_ended);
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                server.spawn(
                    tonic::transport::Server::builder()
                        .add_service(service.into_server())
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = stopped.await;
                            let _ = end_streams.send(true);
                        }),
                )
            }
        };
        Ok(Self {
            url,
            mailbox,
            stop: Some(stop),
            task,
        })
    }

    /// Stops serving (open streams end, requests in flight are answered),
    /// then closes the mailbox: every answered request is on disk.
    pub(crate) fn stop(mut self, server: &Runtime) -> BenchResult<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task;
        server.block_on(within(
            Duration::from_secs(30),
            "stopping the connector",
            async move { Ok(task.await??) },
        ))?;
        self.mailbox.close();
        Ok(())
    }
}

fn signer(seed: u8) -> RequestSigner {
    RequestSigner::from_seed(&[seed; 32])
}

pub(crate) async fn start_node(url: &str, seed: u8, path: &Path) -> BenchResult<(Node, Events)> {
    start_node_with(url, seed, path, false).await
}

/// A node as [`start_node`], with the post-quantum hybrid (X3DH +
/// ML-KEM-768) as its key agreement if `hybrid`.
pub(crate) async fn start_node_with(
    url: &str,
    seed: u8,
    path: &Path,
    hybrid: bool,
) -> BenchResult<(Node, Events)> {
    let builder = Node::builder()
        .store(redb(path, Durability::Durable)?)
        .suites(suites()?);
    let builder = if hybrid {
        builder.hybrid_key_agreement(confidant_x3dh_mlkem768::X3dhMlKem768::default())
    } else {
        builder.key_agreement(confidant_x3dh::X3dh::default())
    };
    Ok(builder
        .transport(ConnectorTransport::new(url, signer(seed))?)
        .config(NodeConfig::default())
        .start()
        .await?)
}

/// How long each part of a round of handshakes took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    /// Every invitation created (all at once).
    invite: Duration,
    /// Then every invitation accepted (all at once).
    accept: Duration,
    /// Then until both nodes reported every connection and the issuer
    /// took every greeting.
    finish: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.invite + self.accept + self.finish
    }
}

/// `count` handshakes at once: the issuer creates the invitations, the
/// holder accepts them; done when both report every one connected and the
/// issuer has taken (and acknowledged) every greeting. Both nodes' events
/// are taken all along.
pub(crate) async fn handshake_round(
    issuer: &Node,
    issuer_events: &mut Events,
    holder: &Node,
    holder_events: &mut Events,
    count: usize,
) -> BenchResult<Phases> {
    let establish = async {
        let start = Instant::now();
        let invitations =
            futures_util::future::try_join_all((0..count).map(|_| issuer.create_invitation()))
                .await?;
        let invited = start.elapsed();
        futures_util::future::try_join_all(
            invitations
                .iter()
                .map(|invitation| holder.accept_invitation(invitation, b"hi".to_vec())),
        )
        .await?;
        Ok::<_, Box<dyn Error>>((invited, start.elapsed()))
    };
    let issuer_done = drain(issuer, issuer_events, |seen| {
        seen.connected >= count && seen.messages >= count
    });
    let holder_done = drain(holder, holder_events, |seen| seen.connected >= count);
    let limit = Duration::from_secs(60) + Duration::from_millis(100) * count as u32;
    let start = Instant::now();
    let ((invited, accepted), _, _) = within(limit, "a round of handshakes", async {
        tokio::try_join!(establish, issuer_done, holder_done)
    })
    .await?;
    let total = start.elapsed();
    Ok(Phases {
        invite: invited,
        accept: accepted.saturating_sub(invited),
        finish: total.saturating_sub(accepted),
    })
}

/// Nanoseconds per call: `calls` unsigned `GetConnectionTokenInfo` calls,
/// `in_flight` at a time.
async fn unary_round(
    client: &SignedClient,
    token: &str,
    calls: usize,
    in_flight: usize,
) -> BenchResult<f64> {
    let start = Instant::now();
    within(Duration::from_secs(60), "the unary calls", async {
        let mut left = calls;
        while left > 0 {
            let size = in_flight.clamp(1, left);
            let answers = futures_util::future::try_join_all(
                (0..size).map(|_| client.get_connection_token_info(token)),
            )
            .await?;
            if answers
                .iter()
                .any(|info| info.creator_public_key.is_empty())
            {
                return Err("a token info without its creator".into());
            }
            left -= size;
        }
        Ok(())
    })
    .await?;
    Ok(start.elapsed().as_nanos() as f64 / calls.max(1) as f64)
}

fn through_nodes(
    server: &Runtime,
    clients: &Runtime,
    settings: &Settings,
    verdicts: &mut Vec<Verdict>,
) -> BenchResult<()> {
    let connections_count = 256;
    let per_direction = if settings.quick { 8 } else { 16 };
    let batch = per_direction;
    let handshakes = 256;
    let primitive_handshakes = if settings.quick { 16 } else { 32 };
    let mut primitives = Primitives::new().ok_or("could not build the X3DH inputs")?;
    let sequential_calls = if settings.quick { 100 } else { 300 };
    let concurrent_calls = connections_count * 4;
    let rounds = if settings.quick { 5 } else { 13 };

    let dir = tempfile::tempdir()?;
    let connector = Connector::start(
        server,
        &dir.path().join("connector.redb"),
        Limits::default(),
        Serving::Shipped,
    )?;
    let no_delay = match Connector::start(
        server,
        &dir.path().join("no-delay.redb"),
        Limits::default(),
        Serving::NoDelay,
    ) {
        Ok(no_delay) => no_delay,
        Err(error) => {
            let _ = connector.stop(server);
            return Err(error);
        }
    };
    let url = connector.url.clone();
    let no_delay_url = no_delay.url.clone();
    let setup = clients.block_on(within(Duration::from_secs(180), "the setup", async {
        let (issuer, mut issuer_events) =
            start_node(&url, 1, &dir.path().join("issuer.redb")).await?;
        let (holder, mut holder_events) =
            start_node(&url, 2, &dir.path().join("holder.redb")).await?;
        let connections = connect(
            &issuer,
            &mut issuer_events,
            &holder,
            &mut holder_events,
            connections_count,
        )
        .await?;
        let shipped = baseline_client(&url).await?;
        let no_delay = baseline_client(&no_delay_url).await?;
        let hybrid_issuer =
            start_node_with(&url, 4, &dir.path().join("hybrid-issuer.redb"), true).await?;
        let hybrid_holder =
            start_node_with(&url, 5, &dir.path().join("hybrid-holder.redb"), true).await?;
        Ok::<_, Box<dyn Error>>((
            (issuer, issuer_events),
            (holder, holder_events),
            connections,
            shipped,
            no_delay,
            (hybrid_issuer, hybrid_holder),
        ))
    }));
    let (
        (issuer, issuer_events),
        (holder, holder_events),
        connections,
        shipped,
        fixed,
        ((hybrid_issuer, hybrid_issuer_events), (hybrid_holder, hybrid_holder_events)),
    ) = match setup {
        Ok(setup) => setup,
        Err(error) => {
            let _ = connector.stop(server);
            let _ = no_delay.stop(server);
            return Err(error);
        }
    };
    let issuer_events = RefCell::new(issuer_events);
    let holder_events = RefCell::new(holder_events);
    let hybrid_issuer_events = RefCell::new(hybrid_issuer_events);
    let hybrid_holder_events = RefCell::new(hybrid_holder_events);

    let failure: RefCell<Option<String>> = RefCell::new(None);
    let fail = |error: Box<dyn Error>| {
        failure.borrow_mut().get_or_insert(error.to_string());
        f64::NAN
    };
    let unary = |(client, token): &(SignedClient, String), calls: usize, in_flight: usize| {
        clients
            .block_on(unary_round(client, token, calls, in_flight))
            .unwrap_or_else(fail)
    };
    let mut unary_one = || unary(&shipped, sequential_calls, 1);
    let mut unary_many = || unary(&shipped, concurrent_calls, connections_count);
    let mut unary_many_fixed = || unary(&fixed, concurrent_calls, connections_count);
    let phases: RefCell<Vec<Phases>> = RefCell::new(Vec::new());
    let mut handshake = || {
        clients
            .block_on(handshake_round(
                &issuer,
                &mut issuer_events.borrow_mut(),
                &holder,
                &mut holder_events.borrow_mut(),
                handshakes,
            ))
            .map(|round| {
                phases.borrow_mut().push(round);
                round.total().as_nanos() as f64 / handshakes as f64
            })
            .unwrap_or_else(fail)
    };
    let mut hybrid_handshake = || {
        clients
            .block_on(handshake_round(
                &hybrid_issuer,
                &mut hybrid_issuer_events.borrow_mut(),
                &hybrid_holder,
                &mut hybrid_holder_events.borrow_mut(),
                handshakes,
            ))
            .map(|round| round.total().as_nanos() as f64 / handshakes as f64)
            .unwrap_or_else(fail)
    };
    // First in each round, after a pause: the previous round's last
    // variant leaves work behind (acknowledgements to the connector, its
    // deletes), which would otherwise run on the same cores.
    let mut x3dh_primitives = || {
        std::thread::sleep(PAUSE);
        primitives.time(primitive_handshakes)
    };
    let mut message = || {
        clients
            .block_on(runtime_round(
                &issuer,
                &mut issuer_events.borrow_mut(),
                &holder,
                &mut holder_events.borrow_mut(),
                &connections,
                per_direction,
                batch,
            ))
            .unwrap_or_else(fail)
    };
    // Warm-up: each connection's first seal reserves counters (a synced
    // commit per connection and side).
    let _ = unary_one();
    let _ = unary_many();
    let _ = unary_many_fixed();
    let _ = x3dh_primitives();
    let warm_up = message();
    let measured = if failure.borrow().is_none() {
        Some(compare(
            rounds,
            [
                &mut x3dh_primitives,
                &mut unary_one,
                &mut unary_many,
                &mut unary_many_fixed,
                &mut handshake,
                &mut message,
                &mut hybrid_handshake,
            ],
        ))
    } else {
        None
    };
    let shutdown = clients.block_on(within(
        Duration::from_secs(60),
        "shutting the nodes down",
        async {
            issuer.shutdown().await?;
            holder.shutdown().await?;
            hybrid_issuer.shutdown().await?;
            hybrid_holder.shutdown().await?;
            Ok(())
        },
    ));
    drop((shipped, fixed));
    let stopped = connector.stop(server);
    let stopped_no_delay = no_delay.stop(server);
    if let Some(error) = failure.borrow().as_ref() {
        return Err(error.clone().into());
    }
    shutdown?;
    stopped?;
    stopped_no_delay?;
    let measured = measured.ok_or("not measured")?;

    let [
        primitives_ns,
        one_ns,
        many_ns,
        fixed_ns,
        handshake_ns,
        message_ns,
        hybrid_ns,
    ] = measured.fastest();
    let vs_rtt =
        |variant: usize| measured.median_ratio(|times: &[f64; 7]| times[variant] / times[1]);
    let hybrid_vs_classical = measured.median_ratio(|times| times[6] / times[4]);
    let median_rate = |variant: usize| 1e9 / measured.median_ratio(|times| times[variant]);
    let vs_primitives = measured.median_ratio(|times| times[4] / times[0]);
    let messages = connections_count * per_direction * 2;
    println!(
        "### Handshakes and relayed messages through the connector, against a bare unary call"
    );
    println!(
        "nodes: issuer and holder, ConnectorTransport each (one HTTP/2 connection each), redb \
         stores in temporary directories with durable (synced) commits (the default), the default \
         NodeConfig ({} connection worker threads each)",
        NodeConfig::default().workers
    );
    println!(
        "per round: {sequential_calls} unary calls one at a time; {concurrent_calls} with \
         {connections_count} in flight, to each of two connectors; {handshakes} handshakes at once \
         (invitation, join, bundle, X3DH, initial message; done when both nodes report Connected \
         and the issuer has acknowledged the greeting); {messages} messages of {MESSAGE_LEN} bytes \
         both ways on {connections_count} connections ({per_direction} per connection each way, \
         send_many batches of {batch}; each node's transport sends what waits as signed \
         SendMessages batches, entries of many connections in one request; streamed to the other node, \
         opened, committed to its inbox, acknowledged to the connector and by the application in \
         batches); first, after a pause of {} ms, the X3DH primitives of {primitive_handshakes} \
         handshakes, on this thread; {rounds} rounds in alternation (a warm-up round first: {:.0} \
         msgs/s)",
        PAUSE.as_millis(),
        1e9 / warm_up
    );
    println!(
        "{:<74} {:>10} {:>11} {:>12}",
        "", "time", "per second", "/ unary RTT"
    );
    let row = |what: &str, ns: f64, ratio: Option<f64>| {
        println!(
            "{what:<74} {:>10} {:>11.0} {:>12}",
            format_ns(ns),
            1e9 / ns,
            ratio.map_or_else(String::new, |ratio| format!("{ratio:.2}"))
        );
    };
    row(
        "bare unary GetConnectionTokenInfo, one at a time (the RTT)",
        one_ns,
        None,
    );
    row(
        &format!("bare unary, {connections_count} in flight (per call)"),
        many_ns,
        Some(vs_rtt(2)),
    );
    row(
        &format!(
            "bare unary, {connections_count} in flight, connector with TCP_NODELAY (per call)"
        ),
        fixed_ns,
        Some(vs_rtt(3)),
    );
    row(
        &format!("handshake, {handshakes} at once (per handshake)"),
        handshake_ns,
        Some(vs_rtt(4)),
    );
    row(
        &format!(
            "relayed {MESSAGE_LEN}-byte message, {connections_count} connections (per message)"
        ),
        message_ns,
        Some(vs_rtt(5)),
    );
    row(
        &format!("hybrid handshake (X3DH + ML-KEM-768), {handshakes} at once, other nodes"),
        hybrid_ns,
        Some(vs_rtt(6)),
    );
    row(
        "X3DH primitives of one handshake (verify + keygen + 8 DH + 2 HKDF)",
        primitives_ns,
        Some(vs_rtt(0)),
    );
    let handshake_rate = median_rate(4);
    let hybrid_rate = median_rate(6);
    println!(
        "hybrid handshakes (X3DH + ML-KEM-768: a one-time KEM pre-key minted, signed and stored per \
         bundle, encapsulation, decapsulation, 1.3 kB more on the wire each way): {hybrid_rate:.0}/s, \
         {hybrid_vs_classical:.2}× the classical handshake's time (median of per-round ratios; a \
         second issuer and holder on the same connector)"
    );
    let message_rate = median_rate(5);
    let unary_rate = median_rate(2);
    println!(
        "median rounds: {handshake_rate:.0} handshakes/s (target ≥ {HANDSHAKES_TARGET:.0}), \
         {message_rate:.0} relayed messages/s (target ≥ {MESSAGES_TARGET:.0}); bare unary calls \
         with {connections_count} in flight {unary_rate:.0}/s"
    );
    println!(
        "handshake / X3DH primitives: {vs_primitives:.1} (median of per-round ratios; wall time per \
         handshake with {handshakes} in flight on every core, against the primitives' cost on one \
         thread; it also pays the connector's request signatures, the initial message's AEAD and \
         every durable commit)"
    );
    verdicts.push(
        Verdict::at_least(
            format!("handshakes/s through the gRPC connector, durable redb, {handshakes} at once"),
            handshake_rate,
            HANDSHAKES_TARGET,
        )
        .in_unit("/s")
        .with_note(format!(
            "per handshake {vs_primitives:.1}× the X3DH primitives' cost (same run); bare unary \
             gRPC calls, {connections_count} in flight: {unary_rate:.0}/s"
        )),
    );
    verdicts.push(
        Verdict::at_most(
            format!("hybrid / classical handshake through the connector, {handshakes} at once"),
            hybrid_vs_classical,
            HYBRID_VS_CLASSICAL_TARGET,
        )
        .with_note(format!(
            "{hybrid_rate:.0} hybrid handshakes/s; the plugin alone: `--only pqxdh`"
        )),
    );
    verdicts.push(
        Verdict::at_least(
            format!(
                "relayed {MESSAGE_LEN} B msgs/s through one connector, {connections_count} conns"
            ),
            message_rate,
            MESSAGES_TARGET,
        )
        .in_unit("/s")
        .with_note(format!(
            "bare unary gRPC calls, {connections_count} in flight: {unary_rate:.0}/s (same run)"
        )),
    );
    let phases = phases.borrow();
    let median_ms = |part: fn(&Phases) -> Duration| {
        let mut times: Vec<f64> = phases
            .iter()
            .map(|round| part(round).as_secs_f64() * 1e3)
            .collect();
        median(&mut times)
    };
    println!(
        "a round of {handshakes} handshakes (medians over rounds): the issuer's create_invitation \
         calls, all at once, {:.0} ms; then the holder's accept_invitation calls, all at once, \
         {:.0} ms (they run concurrently; each join is its own durable commit); then until every connection \
         is reported on both nodes, {:.0} ms",
        median_ms(|round| round.invite),
        median_ms(|round| round.accept),
        median_ms(|round| round.finish),
    );
    println!(
        "times: each variant's fastest round (for handshakes and messages: wall time over the count \
         with many in flight, not a latency); ratios: medians of per-round ratios to the RTT, lower \
         is better; the targets are on the median rounds' rates"
    );
    println!(
        "every row but the third runs on confidant_connector::serve as shipped; the third on the same \
         service with TCP_NODELAY on accepted sockets (serve hands tonic a plain listener stream, \
         for which tonic ignores its tcp_nodelay setting, so with several answers in flight they \
         wait for Nagle's algorithm and the client's delayed ACK)"
    );
    Ok(())
}

/// A client of the connector at `url` and a token there to ask about.
async fn baseline_client(url: &str) -> BenchResult<(SignedClient, String)> {
    let client = SignedClient::new(url, signer(3))?;
    let token = client
        .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
        .await?
        .tokens
        .into_iter()
        .next()
        .ok_or("the connector returned no token")?;
    Ok((client, token))
}

/// Logical bytes (keys and values) the connector stores for one envelope
/// sent with a client message id, by table.
fn logical_bytes(
    connection_id_len: usize,
    envelope_len: usize,
    client_id_len: usize,
) -> [(&'static str, usize); 5] {
    let nonce_key = 32 + confidant_connector::auth::NONCE_LEN;
    let client_key = 1 + connection_id_len + 32 + client_id_len;
    [
        (
            "messages: recipient ‖ id → connection id, time, kind, envelope",
            40 + 1 + connection_id_len + 8 + 1 + envelope_len,
        ),
        (
            "client_message_ids (kept 24 h): key → message id",
            client_key + 8,
        ),
        ("client_message_id_expiry (kept 24 h)", 8 + client_key),
        ("nonces (kept 5 min): key ‖ nonce → expiry", nonce_key + 8),
        ("nonce_expiry (kept 5 min)", 8 + nonce_key),
    ]
}

fn stored_bytes(server: &Runtime, clients: &Runtime, settings: &Settings) -> BenchResult<()> {
    let count: usize = if settings.quick { 2_000 } else { 10_000 };
    const IN_FLIGHT: usize = 256;
    const CLIENT_ID_LEN: usize = 16;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("connector.redb");
    // Room for the join notice and every envelope.
    let limits = Limits {
        max_pending_per_recipient: count as u64 + 1,
        ..Limits::default()
    };
    let connector = Connector::start(server, &path, limits, Serving::Shipped)?;
    let url = connector.url.clone();
    let recipient_key = signer(4).public_key();
    let sent = clients.block_on(within(
        Duration::from_secs(120),
        "storing the envelopes",
        async {
            let recipient = SignedClient::new(&url, signer(4))?;
            let sender = SignedClient::new(&url, signer(5))?;
            let token = recipient
                .generate_connection_token(proto::GenerateConnectionTokenRequest { count: 1 })
                .await?
                .tokens
                .into_iter()
                .next()
                .ok_or("the connector returned no token")?;
            let connection_id = sender
                .add_connection_from_token(proto::AddConnectionFromTokenRequest { token })
                .await?
                .connection_id;
            let before = file_len(&path);
            let start = Instant::now();
            let indices: Vec<usize> = (0..count).collect();
            for chunk in indices.chunks(IN_FLIGHT) {
                futures_util::future::try_join_all(chunk.iter().map(|&index| {
                    let mut client_id = [0u8; CLIENT_ID_LEN];
                    client_id[..8].copy_from_slice(&(index as u64).to_be_bytes());
                    sender.send_message(proto::SendMessageRequest {
                        connection_id: connection_id.clone(),
                        message: vec![0x5A; MESSAGE_LEN],
                        client_message_id: client_id.to_vec(),
                    })
                }))
                .await?;
            }
            Ok::<_, Box<dyn Error>>((before, start.elapsed(), connection_id.len()))
        },
    ));
    let pending = connector.mailbox.pending(&recipient_key);
    let stopped = connector.stop(server);
    let (before, took, connection_id_len) = sent?;
    stopped?;
    let pending = pending?;
    if pending != count as u64 + 1 {
        return Err(format!(
            "{pending} messages pending, expected {} (the envelopes and the join notice)",
            count + 1
        )
        .into());
    }
    let after = file_len(&path);
    let growth = after.saturating_sub(before);
    let per_message = growth as f64 / count as f64;
    println!(
        "### Connector storage per pending message: {count} envelopes of {MESSAGE_LEN} bytes{}",
        if settings.quick {
            " (--quick: the full run stores 10,000)"
        } else {
            ""
        }
    );
    println!(
        "a fresh mailbox file; one connection; the recipient never reads; every envelope sent with \
         SignedClient::send_message and a {CLIENT_ID_LEN}-byte client message id (as \
         ConnectorTransport sends), {IN_FLIGHT} in flight: {:.0} stored per second (durable group \
         commits)",
        count as f64 / took.as_secs_f64()
    );
    println!(
        "file: {:.2} MiB before the sends (token and connection made), {:.2} MiB after (connector \
         stopped, mailbox closed): {growth} bytes more",
        mib(before),
        mib(after)
    );
    println!(
        "{:<64} {:>8.0} bytes (file growth / {count})",
        "stored per pending message", per_message
    );
    println!(
        "{:<64} {:>8.0} bytes ({:.2}× the envelope)",
        "overhead per message beyond the envelope",
        per_message - MESSAGE_LEN as f64,
        per_message / MESSAGE_LEN as f64
    );
    let parts = logical_bytes(connection_id_len, MESSAGE_LEN, CLIENT_ID_LEN);
    let logical: usize = parts.iter().map(|(_, bytes)| bytes).sum();
    println!(
        "logical bytes written per envelope (keys and values, before redb's page and B-tree overhead): {logical}"
    );
    for (table, bytes) in parts {
        println!("  {table:<70} {bytes:>4}");
    }
    println!(
        "the nonce entries go once their five-minute window has passed and the client message ids \
         after 24 hours (pruned by later commits); the message record goes when acknowledged"
    );
    Ok(())
}
