//! The runtime (`confidant-actors`): two nodes, an issuer and a holder, in
//! this process, talking through the in-memory relay.
//!
//! 1. Memory per active and per idle connection at 100,000 connections
//!    (10,000 with `--quick`), from the process's resident set and from
//!    the live heap (the bench's counting global allocator), on redb
//!    stores with deferred durability (so that building them takes
//!    seconds, not minutes) and their page caches bounded to
//!    [`CACHE_BYTES`] each. Target: resident memory per idle connection
//!    ≤ 2 KiB.
//! 2. The time to wake an idle connection: a send on a connection whose
//!    actor was stopped as idle (it loads its session from redb) against a
//!    send on a running one. Target, on durable stores: ≤ 2×.
//! 3. Throughput: 256-byte messages both ways over 256 connections, on
//!    redb stores with durable commits, with the receivers acknowledging in
//!    batches; against sealing and opening as many messages with the
//!    session layer alone, measured in alternation in the same run.
//!    Target: ≥ 0.50 of the session layer.
//!
//! The memory part runs first, on a heap that has seen little else: freed
//! memory that the allocator keeps would otherwise absorb growth. The
//! wake-up time is measured on both kinds of store: the deferred ones with
//! the many connections, and the durable ones of the throughput part, where
//! the nodes are restarted so that every connection starts idle.

use crate::measure::{compare, format_ns, median};
use crate::{Settings, Verdict};
use confidant_actors::{Event, Events, MemoryRelay, Node, NodeConfig};
use confidant_core::{ConnectionId, KeyAgreement, SuiteId, SuiteRegistry};
use confidant_session::handshake::{self, ResponderPolicy};
use confidant_session::{Session, SessionConfig};
use confidant_store::{Durability, RedbStore, StoreOptions};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh};
use std::cell::RefCell;
use std::error::Error;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type BenchResult<T> = Result<T, Box<dyn Error>>;

pub(crate) const MESSAGE_LEN: usize = 256;

/// The page cache of each redb store in the memory benchmark (redb's
/// default is 1 GiB, which the stores of 100,000 connections would fill).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Bytes per idle connection that the target allows.
const IDLE_TARGET_BYTES: f64 = 2048.0;

/// Runs the runtime benchmarks and prints their tables.
/// With `throughput_only`, only the throughput round runs (`--only
/// throughput`: for profiling it without the handshakes of the memory run).
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>, throughput_only: bool) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("no tokio runtime ({error}); runtime benchmarks skipped\n");
            return;
        }
    };
    println!("## Runtime: two nodes (issuer and holder) over the in-memory relay");
    println!(
        "each node: its own actix system with {} connection worker threads (the default: one per CPU); \
         the application side runs on a current-thread tokio runtime",
        NodeConfig::default().workers
    );
    let started = Instant::now();
    if !throughput_only && let Err(error) = memory_and_wake(&runtime, settings, verdicts) {
        println!("memory and wake-up benchmarks stopped: {error}");
    }
    if let Err(error) = throughput(&runtime, settings, verdicts) {
        println!("throughput benchmark stopped: {error}");
    }
    println!(
        "(runtime section took {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!();
}

pub(crate) fn suites() -> BenchResult<SuiteRegistry> {
    let mut suites = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut suites)?;
    confidant_chacha20poly1305::register(&mut suites)?;
    Ok(suites)
}

pub(crate) fn redb(path: &Path, durability: Durability) -> BenchResult<Arc<RedbStore>> {
    Ok(Arc::new(RedbStore::create(
        path,
        StoreOptions::new().durability(durability),
    )?))
}

/// A redb store whose page cache holds at most `cache` bytes.
fn redb_bounded(path: &Path, durability: Durability, cache: usize) -> BenchResult<Arc<RedbStore>> {
    Ok(Arc::new(RedbStore::create(
        path,
        StoreOptions::new().durability(durability).cache_size(cache),
    )?))
}

async fn start(
    relay: &MemoryRelay,
    party: &str,
    store: Arc<RedbStore>,
    config: NodeConfig,
) -> BenchResult<(Node, Events)> {
    Ok(Node::builder()
        .store(store)
        .suites(suites()?)
        .key_agreement(X3dh::default())
        .transport(relay.transport(party))
        .config(config)
        .start()
        .await?)
}

/// `future`, or an error if it takes longer than `limit` (a lost message
/// would otherwise hang the benchmark).
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = BenchResult<T>>,
) -> BenchResult<T> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| format!("{what} took more than {limit:?}"))?
}

/// What a node reported while it was drained.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) connected: usize,
    pub(crate) messages: usize,
    failed: usize,
}

/// Takes `events` in batches, acknowledging every message of a batch in
/// one call, until `done` holds.
pub(crate) async fn drain(
    node: &Node,
    events: &mut Events,
    done: impl Fn(&Seen) -> bool,
) -> BenchResult<Seen> {
    let mut seen = Seen::default();
    let mut sequences = Vec::new();
    while !done(&seen) {
        let first = events.next().await.ok_or("a node stopped")?;
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match events.try_next() {
                Some(event) => batch.push(event),
                None => break,
            }
        }
        for event in batch {
            match event {
                Event::Connected { .. } => seen.connected += 1,
                Event::Message(message) => {
                    seen.messages += 1;
                    sequences.push(message.sequence);
                }
                Event::HandshakeFailed { .. } => seen.failed += 1,
                Event::DeliveryDropped { reason, .. } => {
                    return Err(format!("a delivery was dropped: {reason}").into());
                }
                _ => {}
            }
        }
        if seen.failed > 0 {
            return Err("a handshake failed".into());
        }
        if !sequences.is_empty() {
            node.acknowledge(&sequences).await?;
            sequences.clear();
        }
    }
    Ok(seen)
}

/// Creates `count` connections (the issuer invites, the holder accepts) and
/// waits until both report every one connected. The issuer gets each
/// holder's greeting as a message and acknowledges it.
pub(crate) async fn connect(
    issuer: &Node,
    issuer_events: &mut Events,
    holder: &Node,
    holder_events: &mut Events,
    count: usize,
) -> BenchResult<Vec<ConnectionId>> {
    const CHUNK: usize = 512;
    let establish = async {
        let mut connections = Vec::with_capacity(count);
        while connections.len() < count {
            let size = CHUNK.min(count - connections.len());
            let invitations =
                futures_util::future::try_join_all((0..size).map(|_| issuer.create_invitation()))
                    .await?;
            let accepted = futures_util::future::try_join_all(
                invitations
                    .iter()
                    .map(|invitation| holder.accept_invitation(invitation, b"hi".to_vec())),
            )
            .await?;
            connections.extend(accepted);
        }
        Ok::<_, Box<dyn Error>>(connections)
    };
    let issuer_done = drain(issuer, issuer_events, |seen| {
        seen.connected >= count && seen.messages >= count
    });
    let holder_done = drain(holder, holder_events, |seen| seen.connected >= count);
    let limit = Duration::from_secs(60) + Duration::from_millis(5) * count as u32;
    let (connections, _, _) = within(limit, "making the connections", async {
        tokio::try_join!(establish, issuer_done, holder_done)
    })
    .await?;
    Ok(connections)
}

/// From `/proc/self/status`: a field in bytes (or a plain count).
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => Some(value * 1024),
            _ => Some(value),
        }
    })
}

/// The process's resident memory, live heap and thread count.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    heap: u64,
    threads: u64,
}

impl Memory {
    fn now() -> BenchResult<Self> {
        Ok(Self {
            rss: status_field("VmRSS").ok_or("no VmRSS in /proc/self/status")?,
            anon: status_field("RssAnon").unwrap_or(0),
            heap: crate::live_heap_bytes(),
            threads: status_field("Threads").unwrap_or(0),
        })
    }

    fn show(&self, label: &str) {
        println!(
            "RSS {:>7.1} MiB (anonymous {:>7.1} MiB) live heap {:>7.1} MiB {:>5} threads   {label}",
            mib(self.rss),
            mib(self.anon),
            mib(self.heap),
            self.threads
        );
    }
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn per(delta: i128, count: usize) -> f64 {
    delta as f64 / count.max(1) as f64
}

fn delta(after: u64, before: u64) -> i128 {
    i128::from(after) - i128::from(before)
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

/// Waits until neither node runs a connection actor.
async fn wait_idle(issuer: &Node, holder: &Node, limit: Duration) -> BenchResult<Duration> {
    let start = Instant::now();
    loop {
        let active = issuer.active_connections().await? + holder.active_connections().await?;
        if active == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!("{active} actors still running after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most `limit`) until the process runs at most `threads`
/// threads: the store's blocking threads end after tokio's keep-alive of
/// 10 s without work, and their stacks leave the resident set with them.
async fn wait_threads(threads: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit && status_field("Threads").is_some_and(|now| now > threads) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// `from` sends one 256-byte message on every connection (many sends in
/// flight at once); `to` takes and acknowledges them all.
async fn one_message_each(
    from: &Node,
    to: &Node,
    to_events: &mut Events,
    connections: &[ConnectionId],
) -> BenchResult<Duration> {
    const IN_FLIGHT: usize = 256;
    let start = Instant::now();
    let send = async {
        for chunk in connections.chunks(IN_FLIGHT) {
            futures_util::future::try_join_all(
                chunk
                    .iter()
                    .map(|connection| from.send(connection, vec![0x5A; MESSAGE_LEN])),
            )
            .await?;
        }
        Ok::<_, Box<dyn Error>>(())
    };
    let receive = drain(to, to_events, |seen| seen.messages >= connections.len());
    let limit = Duration::from_secs(60) + Duration::from_millis(1) * connections.len() as u32;
    within(limit, "one message on each connection", async {
        tokio::try_join!(send, receive)
    })
    .await?;
    Ok(start.elapsed())
}

fn memory_and_wake(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    verdicts: &mut Vec<Verdict>,
) -> BenchResult<()> {
    let count: usize = if settings.quick { 10_000 } else { 100_000 };
    // The store's blocking threads end 10 s after their last work (tokio's
    // keep-alive); a full run waits for that before measuring, a quick one
    // does not (their stacks are then in the figures).
    let settle_limit = Duration::from_secs(if settings.quick { 0 } else { 12 });
    // Making the connections takes longer than any idle timeout worth
    // waiting for, so the first nodes effectively never stop an actor; the
    // nodes are then restarted on the same stores with a short one.
    let long_timeout = Duration::from_secs(3600);
    let short_timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let issuer_path = dir.path().join("issuer.redb");
    let holder_path = dir.path().join("holder.redb");
    let issuer_store = redb_bounded(&issuer_path, Durability::Deferred, CACHE_BYTES)?;
    let holder_store = redb_bounded(&holder_path, Durability::Deferred, CACHE_BYTES)?;
    runtime.block_on(async {
        println!(
            "### Memory per connection: {count} connections{}",
            if settings.quick {
                " (--quick: the full run makes 100,000)"
            } else {
                ""
            }
        );
        println!(
            "redb stores with Durability::Deferred (commits not synced; {count} full handshakes with \
             synced commits would take far longer) and a page cache of at most {} MiB each; resident \
             memory (VmRSS) of this whole process, both nodes and the relay included; live heap: \
             bytes allocated and not yet freed, counted by this binary's global allocator",
            CACHE_BYTES / (1024 * 1024)
        );
        let relay = MemoryRelay::new();
        let config = NodeConfig::default().with_idle_timeout(long_timeout);
        let (issuer, mut issuer_events) =
            start(&relay, "issuer", Arc::clone(&issuer_store), config.clone()).await?;
        let (holder, mut holder_events) =
            start(&relay, "holder", Arc::clone(&holder_store), config).await?;
        let empty = Memory::now()?;
        let started = Instant::now();
        let connections = connect(
            &issuer,
            &mut issuer_events,
            &holder,
            &mut holder_events,
            count,
        )
        .await?;
        let made_in = started.elapsed();
        // The issuer's first message: it also tells the holder that its
        // initial message arrived (otherwise the holder sends it again at
        // its next start).
        let greeted_in =
            one_message_each(&issuer, &holder, &mut holder_events, &connections).await?;
        let busy = Memory::now()?;
        let settle_active = wait_threads(empty.threads, settle_limit).await;
        let running = (
            issuer.active_connections().await?,
            holder.active_connections().await?,
        );
        let active = Memory::now()?;
        let settled = |waited: Duration| {
            if settings.quick {
                " (--quick: not waiting for the blocking threads to end)".to_owned()
            } else {
                format!(
                    " ({:.1} s later: the blocking threads ended)",
                    waited.as_secs_f64()
                )
            }
        };
        println!(
            "{count} connections made in {:.1} s ({:.0} per second: X3DH, a one-time pre-key and \
             about six commits per connection), then one message from the issuer on each in {:.1} s",
            made_in.as_secs_f64(),
            count as f64 / made_in.as_secs_f64(),
            greeted_in.as_secs_f64()
        );
        empty.show("nodes started, no connection");
        if !settings.quick {
            busy.show("all connections made, right after");
        }
        active.show(&format!(
            "actors running: issuer {}, holder {}{}",
            running.0,
            running.1,
            settled(settle_active)
        ));
        issuer.shutdown().await?;
        holder.shutdown().await?;
        Memory::now()?.show("nodes shut down: every actor dropped");

        // The same stores, with a short idle timeout: every connection is
        // woken once (a message from the holder), then every actor stops as
        // idle.
        let config = NodeConfig::default().with_idle_timeout(short_timeout);
        let (issuer, mut issuer_events) =
            start(&relay, "issuer", Arc::clone(&issuer_store), config.clone()).await?;
        let (holder, _holder_events) =
            start(&relay, "holder", Arc::clone(&holder_store), config).await?;
        let restarted_threads = status_field("Threads").unwrap_or(0);
        let woken_in =
            one_message_each(&holder, &issuer, &mut issuer_events, &connections).await?;
        let stop_wait = wait_idle(&issuer, &holder, Duration::from_secs(60)).await?;
        let settle_idle = wait_threads(restarted_threads, settle_limit).await;
        let idle = Memory::now()?;
        Memory::show(
            &idle,
            &format!("every actor stopped as idle (active_connections() 0 on both){}", settled(settle_idle)),
        );
        println!(
            "(the nodes restarted on the same stores with idle timeout {short_timeout:?}; every \
             connection was woken by one message from the holder, in {:.1} s; no actor ran {:.1} s \
             after that)",
            woken_in.as_secs_f64(),
            stop_wait.as_secs_f64(),
        );
        let files = file_len(&issuer_path) + file_len(&holder_path);
        println!(
            "store files: {:.1} MiB together, {:.0} bytes per connection; redb keeps the pages it \
             wrote or read in its page cache (here at most {} MiB per store, {:.0} bytes per \
             connection for the two; redb's default is 1 GiB), in this process",
            mib(files),
            files as f64 / count as f64,
            CACHE_BYTES / (1024 * 1024),
            (2 * CACHE_BYTES) as f64 / count as f64
        );
        println!(
            "{:<48} {:>8.0} bytes  (RSS with every actor running - RSS of the empty nodes) / {count}",
            "per active connection (an actor at each end)",
            per(delta(active.rss, empty.rss), count),
        );
        println!(
            "{:<48} {:>8.0} bytes  (RSS with every actor stopped as idle - RSS of the empty nodes) / {count}",
            "per idle connection (no actor, no hub slot)",
            per(delta(idle.rss, empty.rss), count),
        );
        println!(
            "{:<48} {:>+8.0} bytes per connection",
            "RSS change from all running to all idle",
            per(delta(idle.rss, active.rss), count),
        );
        let idle_heap = per(delta(idle.heap, empty.heap), count);
        println!(
            "{:<48} {:>8.0} bytes  (live heap with every actor running - live heap of the empty nodes) / {count}",
            "live heap per active connection",
            per(delta(active.heap, empty.heap), count),
        );
        println!(
            "{:<48} {idle_heap:>8.0} bytes  (live heap with every actor stopped as idle - live heap of the empty nodes) / {count}",
            "live heap per idle connection",
        );
        println!(
            "RSS is not live memory: it holds the redb page caches, the relay's connection table, \
             the stacks of live threads, and memory freed by stopped actors that glibc malloc keeps \
             in its arenas for reuse instead of returning it to the system, so it does not fall \
             when actors stop (see also the shutdown line); the live heap counts only what is \
             allocated now (the page caches included, as far as they are filled), without \
             malloc's own overhead and kept free memory"
        );
        let idle_rss = per(delta(idle.rss, empty.rss), count);
        verdicts.push(
            Verdict::at_most(
                format!(
                    "RSS per idle connection, {count} conns{}, redb cache {} MiB/store",
                    if settings.quick { " (--quick)" } else { "" },
                    CACHE_BYTES / (1024 * 1024)
                ),
                idle_rss,
                IDLE_TARGET_BYTES,
            )
            .in_unit("B")
            .with_note(format!(
                "live heap per idle connection: {idle_heap:.0} B (counting allocator); per active \
                 connection: RSS {:.0} B, live heap {:.0} B",
                per(delta(active.rss, empty.rss), count),
                per(delta(active.heap, empty.heap), count)
            )),
        );

        within(
            Duration::from_secs(120),
            "the wake-up samples",
            wake(
            &issuer,
            &mut issuer_events,
            &holder,
            &connections,
            if settings.quick { 50 } else { 300 },
            "Deferred stores with the connections above (informational: the target is on durable stores, below)",
        ),
        )
        .await?;
        issuer.shutdown().await?;
        holder.shutdown().await?;
        Ok::<_, Box<dyn Error>>(())
    })?;
    Ok(())
}

/// Times a send on an idle connection (its actor starts, loads the record
/// and session from redb and reserves counters, a commit), then, once the
/// issuer has taken that message, a send on the same connection, now
/// running. Every connection in `connections` must be idle.
async fn wake(
    issuer: &Node,
    issuer_events: &mut Events,
    holder: &Node,
    connections: &[ConnectionId],
    samples: usize,
    stores: &str,
) -> BenchResult<f64> {
    let samples = samples.min(connections.len());
    let message = vec![0x5A; MESSAGE_LEN];
    let mut idle = Vec::with_capacity(samples);
    let mut active = Vec::with_capacity(samples);
    let mut ratios = Vec::with_capacity(samples);
    for sample in 0..samples {
        let connection = &connections[sample * connections.len() / samples];
        let start = Instant::now();
        holder.send(connection, message.clone()).await?;
        let woken = start.elapsed().as_nanos() as f64;
        // The issuer's side of it must not overlap the next timing.
        drain(issuer, issuer_events, |seen| seen.messages >= 1).await?;
        let start = Instant::now();
        holder.send(connection, message.clone()).await?;
        let running = start.elapsed().as_nanos() as f64;
        drain(issuer, issuer_events, |seen| seen.messages >= 1).await?;
        idle.push(woken);
        active.push(running);
        ratios.push(woken / running);
    }
    println!("### Waking an idle connection: {samples} samples on {stores}");
    println!(
        "{:<78} {:>10}",
        "send on an idle connection (actor starts, loads from redb, reserves counters)",
        format_ns(median(&mut idle))
    );
    println!(
        "{:<78} {:>10}",
        "send on the same connection next (actor running)",
        format_ns(median(&mut active))
    );
    let ratio = median(&mut ratios);
    println!(
        "idle / running: {ratio:.2} (median of per-sample ratios; times are medians; returns once \
         the relay has the message)"
    );
    Ok(ratio)
}

/// Session pairs made by real X3DH handshakes, as the runtime makes them.
fn session_pairs(count: usize) -> BenchResult<Vec<(Session, Session)>> {
    let registry = suites()?;
    let x3dh = X3dh::default();
    let issuer_identity = IdentityKeyPair::generate();
    let signed_pre_key = SignedPreKey::generate(&issuer_identity, 1);
    let mut issuer = ResponderKeys::new(issuer_identity, signed_pre_key)?;
    issuer.add_one_time_pre_key(OneTimePreKey::generate(1))?;
    let invitation = issuer.identity_public_key().to_bytes();
    let holder = IdentityKeyPair::generate();
    let offered = [SuiteId::AES_256_GCM_SHA256_COUNTER];
    let bundle = x3dh.bundle(&issuer, &offered, b"")?;
    let mut pairs = Vec::with_capacity(count);
    for index in 0..count {
        let connection = ConnectionId::new(format!("bench-runtime-{index}"))?;
        let (holder_session, initial) = handshake::initiate(
            &x3dh,
            &holder,
            &invitation,
            &bundle,
            handshake::InitiatorPolicy::default(),
            &registry,
            connection.clone(),
            b"hi",
            SessionConfig::default(),
        )?;
        let responded = handshake::respond(
            &x3dh,
            &issuer,
            &initial,
            ResponderPolicy {
                offered: &offered,
                ..ResponderPolicy::default()
            },
            &registry,
            connection,
            SessionConfig::default(),
        )?;
        pairs.push((responded.session, holder_session));
    }
    Ok(pairs)
}

/// Nanoseconds per message: every pair seals `per_direction` messages each
/// way in batches of `batch` and the other side opens them.
fn session_round(
    pairs: &mut [(Session, Session)],
    per_direction: usize,
    batch: usize,
) -> BenchResult<f64> {
    let plaintext = [0x5Au8; MESSAGE_LEN];
    let mut sealed = Vec::with_capacity(batch);
    let start = Instant::now();
    for (issuer, holder) in pairs.iter_mut() {
        for issuer_sends in [true, false] {
            let (from, to) = if issuer_sends {
                (&mut *issuer, &mut *holder)
            } else {
                (&mut *holder, &mut *issuer)
            };
            let mut left = per_direction;
            while left > 0 {
                let size = batch.min(left);
                for _ in 0..size {
                    sealed.push(from.seal(&plaintext)?);
                }
                for message in sealed.drain(..) {
                    black_box(to.open(message)?);
                }
                left -= size;
            }
        }
    }
    let messages = pairs.len() * per_direction * 2;
    Ok(start.elapsed().as_nanos() as f64 / messages.max(1) as f64)
}

/// Nanoseconds per message through both nodes: every connection sends
/// `per_direction` messages each way in `send_many` batches of `batch`;
/// done when both receivers have taken and acknowledged all of them.
pub(crate) async fn runtime_round(
    issuer: &Node,
    issuer_events: &mut Events,
    holder: &Node,
    holder_events: &mut Events,
    connections: &[ConnectionId],
    per_direction: usize,
    batch: usize,
) -> BenchResult<f64> {
    let expected = connections.len() * per_direction;
    // Every connection's sends run at once; each connection's batches go
    // in order.
    let send_all = |node: &Node| {
        let node = node.clone();
        async move {
            futures_util::future::try_join_all(connections.iter().map(|connection| {
                let node = node.clone();
                async move {
                    let mut left = per_direction;
                    while left > 0 {
                        let size = batch.min(left);
                        let messages = vec![vec![0x5Au8; MESSAGE_LEN]; size];
                        node.send_many(connection, messages).await?;
                        left -= size;
                    }
                    Ok::<_, Box<dyn Error>>(())
                }
            }))
            .await
        }
    };
    let start = Instant::now();
    within(Duration::from_secs(120), "a throughput round", async {
        tokio::try_join!(
            send_all(issuer),
            send_all(holder),
            drain(issuer, issuer_events, |seen| seen.messages >= expected),
            drain(holder, holder_events, |seen| seen.messages >= expected),
        )
    })
    .await?;
    Ok(start.elapsed().as_nanos() as f64 / (2 * expected).max(1) as f64)
}

fn throughput(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    verdicts: &mut Vec<Verdict>,
) -> BenchResult<()> {
    let connections_count = 256;
    let per_direction = if settings.quick { 16 } else { 64 };
    let batch = if settings.quick { 16 } else { 32 };
    let rounds = if settings.quick { 3 } else { 9 };
    let dir = tempfile::tempdir()?;
    let issuer_store = redb(&dir.path().join("issuer.redb"), Durability::Durable)?;
    let holder_store = redb(&dir.path().join("holder.redb"), Durability::Durable)?;
    let relay = MemoryRelay::new();
    let (issuer, mut issuer_events, holder, mut holder_events, connections) =
        runtime.block_on(async {
            let config = NodeConfig::default();
            let (issuer, mut issuer_events) =
                start(&relay, "issuer", Arc::clone(&issuer_store), config.clone()).await?;
            let (holder, mut holder_events) =
                start(&relay, "holder", Arc::clone(&holder_store), config).await?;
            let connections = connect(
                &issuer,
                &mut issuer_events,
                &holder,
                &mut holder_events,
                connections_count,
            )
            .await?;
            Ok::<_, Box<dyn Error>>((issuer, issuer_events, holder, holder_events, connections))
        })?;
    let mut pairs = session_pairs(connections_count)?;

    let failure: RefCell<Option<String>> = RefCell::new(None);
    let fail = |error: Box<dyn Error>| {
        failure.borrow_mut().get_or_insert(error.to_string());
        f64::NAN
    };
    let mut through_nodes = || {
        runtime
            .block_on(runtime_round(
                &issuer,
                &mut issuer_events,
                &holder,
                &mut holder_events,
                &connections,
                per_direction,
                batch,
            ))
            .unwrap_or_else(fail)
    };
    let mut session_only = || session_round(&mut pairs, per_direction, batch).unwrap_or_else(fail);
    // A warm-up round: each connection's first seal reserves counters (one
    // synced commit per connection and side).
    let warm_up = through_nodes();
    let _ = session_only();
    let measured = compare(rounds, [&mut through_nodes, &mut session_only]);
    if let Some(error) = failure.borrow().as_ref() {
        return Err(error.clone().into());
    }
    let [nodes_ns, session_ns] = measured.fastest();
    let ratio = measured.median_ratio(|[nodes, session]| session / nodes);
    let messages = connections_count * per_direction * 2;
    println!(
        "### Throughput: {MESSAGE_LEN}-byte messages, {connections_count} connections, both ways"
    );
    println!(
        "per round: {messages} messages ({per_direction} per connection each way, send_many batches of {batch}); \
         receivers acknowledge each batch of events in one call; redb stores with durable (synced) commits; \
         {rounds} rounds alternating with the session layer alone (first round, not counted: {:.0} msgs/s)",
        1e9 / warm_up
    );
    println!("{:<58} {:>12} {:>14}", "", "per message", "messages/s");
    println!(
        "{:<58} {:>12} {:>14.0}",
        "two nodes (seal, relay, open, inbox commit, acknowledge)",
        format_ns(nodes_ns),
        1e9 / nodes_ns
    );
    println!(
        "{:<58} {:>12} {:>14.0}",
        "session layer alone (Session::seal + Session::open)",
        format_ns(session_ns),
        1e9 / session_ns
    );
    println!(
        "nodes / session layer throughput: {ratio:.3} (median of per-round ratios; target ≥ 0.50); \
         the session layer runs on one thread here, the nodes on every core"
    );
    verdicts.push(
        Verdict::at_least(
            format!(
                "two nodes (durable redb, {MESSAGE_LEN} B both ways, {connections_count} conns) vs session layer"
            ),
            ratio,
            0.5,
        )
        .with_note(format!(
            "two nodes {:.0} msgs/s, session layer alone {:.0} msgs/s (fastest rounds)",
            1e9 / nodes_ns,
            1e9 / session_ns
        )),
    );
    // Waking on durable stores: the nodes restart on the same stores with
    // a short idle timeout, so every connection starts idle.
    let wake_ratio = runtime.block_on(async {
        issuer.shutdown().await?;
        holder.shutdown().await?;
        let config = NodeConfig::default().with_idle_timeout(Duration::from_secs(2));
        let (issuer, mut issuer_events) =
            start(&relay, "issuer", Arc::clone(&issuer_store), config.clone()).await?;
        let (holder, _holder_events) =
            start(&relay, "holder", Arc::clone(&holder_store), config).await?;
        let ratio = within(
            Duration::from_secs(120),
            "the wake-up samples",
            wake(
                &issuer,
                &mut issuer_events,
                &holder,
                &connections,
                if settings.quick { 64 } else { 128 },
                "the durable stores above (nodes restarted, so every connection starts idle)",
            ),
        )
        .await?;
        issuer.shutdown().await?;
        holder.shutdown().await?;
        Ok::<_, Box<dyn Error>>(ratio)
    })?;
    verdicts.push(Verdict::at_most(
        "send on an idle connection vs a running one, durable redb",
        wake_ratio,
        2.0,
    ));
    Ok(())
}
