//! The connector on PostgreSQL against redb, paired in one run: relayed
//! 256-byte messages per second and handshakes per second, with one
//! connector instance on redb, and with 1, 2 and 3 instances on one
//! PostgreSQL database (each its own schema). Needs a database:
//! `CONFIDANT_BENCH_DATABASE_URL` or `CONFIDANT_TEST_DATABASE_URL`;
//! skipped (and said so) without one.
//!
//! Every configuration has the same load: three issuer/holder node pairs
//! (redb stores, durable commits, `ConnectorTransport`), pair `p`'s issuer
//! on instance `p mod N` and its holder on instance `p + 1 mod N`, so with
//! several instances most messages cross instances (NOTIFY). The variants
//! alternate round after round; the ratios are medians of per-round
//! ratios.

use crate::connector::{handshake_round, multi_thread, start_node};
use crate::measure::{compare, format_ns};
use crate::runtime::{BenchResult, MESSAGE_LEN, connect, runtime_round, within};
use crate::{Settings, Verdict};
use confidant_actors::{Events, Node};
use confidant_connector::{Limits, MailboxStore, PostgresMailbox, RedbMailbox};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Node pairs per configuration.
const PAIRS: usize = 3;

/// A connector instance served in this process.
struct Instance {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

fn serve(server: &Runtime, store: Arc<dyn MailboxStore>) -> BenchResult<Instance> {
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = server.spawn(confidant_connector::serve(listener, store, async move {
        let _ = stopped.await;
    }));
    Ok(Instance {
        url,
        stop: Some(stop),
        task,
    })
}

impl Instance {
    fn stop(mut self, server: &Runtime) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task;
        let _ = server.block_on(within(Duration::from_secs(30), "stopping", async move {
            Ok(task.await??)
        }));
    }
}

/// One configuration: its instances and node pairs.
struct Setup {
    name: String,
    instances: Vec<Instance>,
    pairs: Vec<Pair>,
}

struct Pair {
    issuer: Node,
    issuer_events: tokio::sync::Mutex<Events>,
    holder: Node,
    holder_events: tokio::sync::Mutex<Events>,
    connections: Vec<confidant_core::ConnectionId>,
}

fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// A fresh schema named `name` in the database at `url` (dropped first if
/// a previous run left it).
async fn fresh_schema(url: &str, name: &str) -> BenchResult<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ))
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(with_schema(url, name))
}

fn setup(
    server: &Runtime,
    clients: &Runtime,
    dir: &std::path::Path,
    database: Option<&str>,
    instances: usize,
    connections: usize,
    seed: u8,
) -> BenchResult<Setup> {
    let (name, stores): (String, Vec<Arc<dyn MailboxStore>>) = match database {
        None => {
            let path = dir.join(format!("connector-{seed}.redb"));
            (
                "redb, 1 instance".to_owned(),
                vec![Arc::new(RedbMailbox::open(path, Limits::default())?)],
            )
        }
        Some(url) => {
            let url =
                server.block_on(fresh_schema(url, &format!("confidant_bench_{instances}")))?;
            let mut stores: Vec<Arc<dyn MailboxStore>> = Vec::new();
            for _ in 0..instances {
                stores.push(Arc::new(server.block_on(PostgresMailbox::connect(
                    &url,
                    Limits::default(),
                    None,
                    confidant_connector::mailbox::postgres::DEFAULT_POOL_SIZE,
                ))?));
            }
            (
                format!(
                    "PostgreSQL, {instances} instance{}",
                    if instances == 1 { "" } else { "s" }
                ),
                stores,
            )
        }
    };
    let instances = stores
        .into_iter()
        .map(|store| serve(server, store))
        .collect::<BenchResult<Vec<_>>>()?;
    let urls: Vec<String> = instances
        .iter()
        .map(|instance| instance.url.clone())
        .collect();
    let pairs = clients.block_on(within(Duration::from_secs(300), "the setup", async {
        let mut pairs = Vec::new();
        for pair in 0..PAIRS {
            let base = seed.wrapping_mul(16).wrapping_add(u8::try_from(pair * 2)?);
            let issuer_url = &urls[pair % urls.len()];
            let holder_url = &urls[(pair + 1) % urls.len()];
            let (issuer, mut issuer_events) = start_node(
                issuer_url,
                base,
                &dir.join(format!("issuer-{seed}-{pair}.redb")),
            )
            .await?;
            let (holder, mut holder_events) = start_node(
                holder_url,
                base.wrapping_add(1),
                &dir.join(format!("holder-{seed}-{pair}.redb")),
            )
            .await?;
            let connections = connect(
                &issuer,
                &mut issuer_events,
                &holder,
                &mut holder_events,
                connections,
            )
            .await?;
            pairs.push(Pair {
                issuer,
                issuer_events: tokio::sync::Mutex::new(issuer_events),
                holder,
                holder_events: tokio::sync::Mutex::new(holder_events),
                connections,
            });
        }
        Ok(pairs)
    }))?;
    Ok(Setup {
        name,
        instances,
        pairs,
    })
}

/// Nanoseconds per relayed message, all pairs at once (wall time).
async fn messages(setup: &Setup, per_direction: usize) -> BenchResult<f64> {
    let start = Instant::now();
    let rounds = setup.pairs.iter().map(|pair| async move {
        let mut issuer_events = pair.issuer_events.lock().await;
        let mut holder_events = pair.holder_events.lock().await;
        runtime_round(
            &pair.issuer,
            &mut issuer_events,
            &pair.holder,
            &mut holder_events,
            &pair.connections,
            per_direction,
            per_direction,
        )
        .await
    });
    futures_util::future::try_join_all(rounds).await?;
    let count = setup
        .pairs
        .iter()
        .map(|pair| pair.connections.len() * per_direction * 2)
        .sum::<usize>();
    Ok(start.elapsed().as_nanos() as f64 / count.max(1) as f64)
}

/// Nanoseconds per handshake, all pairs at once (wall time).
async fn handshakes(setup: &Setup, count: usize) -> BenchResult<f64> {
    let start = Instant::now();
    let rounds = setup.pairs.iter().map(|pair| async move {
        let mut issuer_events = pair.issuer_events.lock().await;
        let mut holder_events = pair.holder_events.lock().await;
        handshake_round(
            &pair.issuer,
            &mut issuer_events,
            &pair.holder,
            &mut holder_events,
            count,
        )
        .await
    });
    futures_util::future::try_join_all(rounds).await?;
    Ok(start.elapsed().as_nanos() as f64 / (count * setup.pairs.len()).max(1) as f64)
}

/// Runs the comparison and prints its table; the two one-instance ratios
/// go into `verdicts`.
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    println!("## Connector: PostgreSQL against redb (paired in one run)");
    let database = std::env::var("CONFIDANT_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("CONFIDANT_TEST_DATABASE_URL"))
        .ok()
        .filter(|url| !url.is_empty());
    let Some(database) = database else {
        println!(
            "skipped: no PostgreSQL (set CONFIDANT_BENCH_DATABASE_URL or \
             CONFIDANT_TEST_DATABASE_URL)\n"
        );
        return;
    };
    if let Err(error) = compare_backends(settings, &database, verdicts) {
        println!("the PostgreSQL comparison stopped: {error}\n");
    }
}

fn compare_backends(
    settings: &Settings,
    database: &str,
    verdicts: &mut Vec<Verdict>,
) -> BenchResult<()> {
    let connections = if settings.quick { 16 } else { 48 };
    let per_direction = if settings.quick { 8 } else { 16 };
    let handshake_count = if settings.quick { 16 } else { 48 };
    let rounds = if settings.quick { 3 } else { 7 };
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let server = multi_thread("connectors", threads)?;
    let clients = multi_thread("clients", 2)?;
    let dir = tempfile::tempdir()?;
    let mut setups = Vec::new();
    for (index, instances) in [None, Some(1), Some(2), Some(3)].into_iter().enumerate() {
        let seed = u8::try_from(index + 8)?;
        let database = instances.map(|_| database);
        setups.push(setup(
            &server,
            &clients,
            dir.path(),
            database,
            instances.unwrap_or(1),
            connections,
            seed,
        )?);
    }
    let failure: RefCell<Option<String>> = RefCell::new(None);
    let measure = |result: BenchResult<f64>| {
        result.unwrap_or_else(|error| {
            failure.borrow_mut().get_or_insert(error.to_string());
            f64::NAN
        })
    };
    let run_messages = |setup: &Setup| {
        measure(clients.block_on(within(
            Duration::from_secs(300),
            "a round of messages",
            messages(setup, per_direction),
        )))
    };
    let run_handshakes = |setup: &Setup| {
        measure(clients.block_on(within(
            Duration::from_secs(300),
            "a round of handshakes",
            handshakes(setup, handshake_count),
        )))
    };
    // Warm-up: first seals reserve counters.
    for setup in &setups {
        let _ = run_messages(setup);
    }
    let [redb, pg1, pg2, pg3] = [&setups[0], &setups[1], &setups[2], &setups[3]];
    let measured = compare(
        rounds,
        [
            &mut || run_messages(redb),
            &mut || run_messages(pg1),
            &mut || run_messages(pg2),
            &mut || run_messages(pg3),
            &mut || run_handshakes(redb),
            &mut || run_handshakes(pg1),
            &mut || run_handshakes(pg2),
            &mut || run_handshakes(pg3),
        ],
    );
    let names: Vec<String> = setups.iter().map(|setup| setup.name.clone()).collect();
    for setup in setups {
        let Setup {
            instances, pairs, ..
        } = setup;
        clients.block_on(async {
            for pair in pairs {
                let _ = pair.issuer.shutdown().await;
                let _ = pair.holder.shutdown().await;
            }
        });
        for instance in instances {
            instance.stop(&server);
        }
    }
    if let Some(error) = failure.borrow().as_ref() {
        return Err(error.clone().into());
    }
    let fastest = measured.fastest();
    let ratio =
        |of: usize, to: usize| measured.median_ratio(|times: &[f64; 8]| times[to] / times[of]);
    println!(
        "load per round and configuration: {PAIRS} issuer/holder node pairs (redb stores, durable \
         commits), pair p's issuer on instance p mod N and its holder on p+1 mod N; {} messages \
         of {MESSAGE_LEN} bytes ({connections} connections per pair, {per_direction} each way), \
         then {} handshakes ({handshake_count} per pair at once); {rounds} rounds, the eight \
         variants alternating; connectors in this process on {threads} tokio threads, the \
         PostgreSQL server on the same machine (fsync as configured)",
        PAIRS * connections * per_direction * 2,
        PAIRS * handshake_count
    );
    println!(
        "{:<28} {:>14} {:>12} {:>16} {:>14} {:>12} {:>16}",
        "",
        "message time",
        "messages/s",
        "/ redb (median)",
        "handshake",
        "handshakes/s",
        "/ redb (median)"
    );
    for (index, name) in names.iter().enumerate() {
        println!(
            "{name:<28} {:>14} {:>12.0} {:>16.2} {:>14} {:>12.1} {:>16.2}",
            format_ns(fastest[index]),
            1e9 / fastest[index],
            ratio(index, 0),
            format_ns(fastest[index + 4]),
            1e9 / fastest[index + 4],
            ratio(index + 4, 4),
        );
    }
    println!(
        "times: each variant's fastest round (wall time over the count, many in flight); ratios: \
         throughput against redb's, medians of per-round ratios (higher is better)"
    );
    println!(
        "2 and 3 instances against 1, both on PostgreSQL: messages {:.2} and {:.2}, handshakes \
         {:.2} and {:.2} (on a 2-core machine more instances add no CPU: the nodes, the \
         connectors and the database share the same two cores)",
        ratio(2, 1),
        ratio(3, 1),
        ratio(6, 5),
        ratio(7, 5)
    );
    println!();
    verdicts.push(Verdict::at_least(
        "connector relayed messages/s, PostgreSQL vs redb (1 instance)",
        ratio(1, 0),
        0.5,
    ));
    verdicts.push(Verdict::at_least(
        "connector handshakes/s, PostgreSQL vs redb (1 instance)",
        ratio(5, 4),
        0.5,
    ));
    Ok(())
}
