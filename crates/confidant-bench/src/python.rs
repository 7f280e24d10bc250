//! The Python bindings against Rust: messages sent by a holder, relayed
//! by a connector and opened by a Rust issuer, once from Rust and once from
//! Python on the generated bindings, in the same run (issue 13's target:
//! Python at ≥ 0.8 of Rust).
//!
//! One connector (`confidant_connector::serve` on loopback in this process,
//! a `RedbMailbox` with durable commits, as in the connector section) and
//! one issuer, a runtime `Node` in this process on a durable redb store.
//! Three holders, each with its own connections to the issuer, each
//! sending the same messages in a round: [`CONNECTIONS`] connections,
//! 256-byte messages sent one after the other on each connection (every
//! send awaited: it returns once the connector stored the message), the
//! connections at once. A round is timed from its first send to the
//! issuer having opened (and committed to its inbox) the round's last
//! message; the issuer acknowledges as it goes, the same for every holder.
//!
//! 1. Rust: a runtime `Node` (`confidant-actors`) configured as the
//!    bindings configure theirs (durable redb store, `ConnectorTransport`
//!    with its default buffer, the default `NodeConfig`, both suites).
//! 2. Rust through `confidant-ffi`: the bindings' own Rust API
//!    (`open_node`, `ConfidantNode::send`), called from Rust: what the
//!    library adds below the language boundary.
//! 3. Python: `python/bench_holder.py`, a separate `python3` process on
//!    the generated module (`bindings/python/confidant_ffi.py` and the
//!    shared library beside it; `CONFIDANT_PYTHON_BINDINGS` names another
//!    directory), sending with `await node.send(…)` from asyncio. The bench
//!    tells it to start a round on its stdin.
//!
//! The three alternate round after round; the ratio Python/Rust (messages
//! per second) is the median of the ratios within each round. Without
//! `python3` or the bindings the section says so and is skipped. The
//! shared library should be a release build (the bench's profile):
//! `./scripts/bench-python.sh` builds one and runs this section (and says
//! so); on another library the section warns that its profile is unknown.

use crate::connector::{Connector, Serving, multi_thread, start_node};
use crate::measure::{compare, format_ns};
use crate::runtime::{BenchResult, MESSAGE_LEN, drain, within};
use crate::{Settings, Verdict};
use confidant_actors::{Events, Node};
use confidant_connector::Limits;
use confidant_core::ConnectionId;
use confidant_ffi::{ConfidantNode, NodeEvent, NodeOptions};
use std::cell::RefCell;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Connections per holder.
const CONNECTIONS: usize = 16;

/// Python's messages per second over Rust's that issue 13 asks for.
const TARGET: f64 = 0.8;

/// Longest wait for a setup step or a round.
const STEP: Duration = Duration::from_secs(120);

/// The shared library's file name.
const LIBRARY: &str = if cfg!(target_os = "macos") {
    "libconfidant_ffi.dylib"
} else {
    "libconfidant_ffi.so"
};

/// Runs the section and prints its table.
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    let started = Instant::now();
    println!("## Python bindings: messages from a Python holder against a Rust one");
    let bindings = match locate() {
        Ok(bindings) => bindings,
        Err(missing) => {
            println!(
                "skipped: bindings not built ({missing}); run ./scripts/bench-python.sh, \
                 or ./scripts/bindings.sh --release first\n"
            );
            return;
        }
    };
    println!("bindings: {} ({})", bindings.display(), library_build());
    let runtimes =
        multi_thread("connector", 2).and_then(|server| Ok((server, multi_thread("clients", 2)?)));
    let (server, clients) = match runtimes {
        Ok(runtimes) => runtimes,
        Err(error) => {
            println!("no tokio runtime ({error}); skipped\n");
            return;
        }
    };
    if let Err(error) = measure(&server, &clients, &bindings, settings, verdicts) {
        println!("stopped: {error}");
    }
    println!(
        "(python section took {:.1} s)\n",
        started.elapsed().as_secs_f64()
    );
}

/// The directory of the generated module and the shared library, or what
/// is missing.
fn locate() -> Result<PathBuf, String> {
    let bindings = std::env::var_os("CONFIDANT_PYTHON_BINDINGS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bindings/python"),
        PathBuf::from,
    );
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !python {
        return Err("no python3".to_owned());
    }
    for file in ["confidant_ffi.py", LIBRARY] {
        if !bindings.join(file).is_file() {
            return Err(format!("no {}", bindings.join(file).display()));
        }
    }
    Ok(bindings)
}

/// Which build of the shared library this is, as far as the bench knows:
/// `scripts/bench-python.sh` says so (`CONFIDANT_BENCH_FFI_PROFILE`), and
/// `bindings/python` holds whatever `scripts/bindings.sh` last built (by
/// default a debug build).
fn library_build() -> String {
    match std::env::var("CONFIDANT_BENCH_FFI_PROFILE") {
        Ok(profile) => format!("a {profile} build of the library, from scripts/bench-python.sh"),
        Err(_) => {
            "a library of unknown profile: WARNING, a debug build makes the ratio mean little; \
                   ./scripts/bench-python.sh builds a release one"
                .to_owned()
        }
    }
}

fn measure(
    server: &Runtime,
    clients: &Runtime,
    bindings: &Path,
    settings: &Settings,
    verdicts: &mut Vec<Verdict>,
) -> BenchResult<()> {
    let per_connection = if settings.quick { 64 } else { 128 };
    let rounds = if settings.quick { 3 } else { 7 };
    let total = per_connection * CONNECTIONS;
    let dir = tempfile::tempdir()?;
    let connector = Connector::start(
        server,
        &dir.path().join("connector.redb"),
        Limits::default(),
        Serving::Shipped,
    )?;
    let url = connector.url.clone();
    let setup = clients.block_on(within(STEP, "the setup", async {
        let (issuer, mut issuer_events) =
            start_node(&url, 1, &dir.path().join("issuer.redb")).await?;
        let (holder, mut holder_events) =
            start_node(&url, 2, &dir.path().join("holder.redb")).await?;
        let connections = crate::runtime::connect(
            &issuer,
            &mut issuer_events,
            &holder,
            &mut holder_events,
            CONNECTIONS,
        )
        .await?;
        let ffi =
            FfiHolder::start(&issuer, &mut issuer_events, &url, &dir.path().join("ffi")).await?;
        let python = PythonHolder::start(
            &issuer,
            &mut issuer_events,
            &url,
            &dir.path().join("python"),
            bindings,
        )
        .await?;
        Ok((
            issuer,
            issuer_events,
            holder,
            holder_events,
            connections,
            ffi,
            python,
        ))
    }));
    let (issuer, issuer_events, holder, holder_events, connections, ffi, python) = match setup {
        Ok(setup) => setup,
        Err(error) => {
            let _ = connector.stop(server);
            return Err(error);
        }
    };
    println!(
        "{CONNECTIONS} connections per holder, {per_connection} messages of {MESSAGE_LEN} B on each per round \
         ({total} per round), every send awaited, the connections at once; {rounds} rounds"
    );
    let issuer_events = RefCell::new(issuer_events);
    let python = RefCell::new(python);
    let failure = RefCell::new(None::<String>);
    let fail = |error: Box<dyn Error>| {
        failure.borrow_mut().get_or_insert(error.to_string());
        f64::NAN
    };
    let per_message = |elapsed: Duration| elapsed.as_nanos() as f64 / total as f64;
    let mut rust = || {
        clients
            .block_on(round(
                &issuer,
                &mut issuer_events.borrow_mut(),
                total,
                async { send_rust(&holder, &connections, per_connection).await },
            ))
            .map_or_else(fail, per_message)
    };
    let mut through_ffi = || {
        clients
            .block_on(round(
                &issuer,
                &mut issuer_events.borrow_mut(),
                total,
                async { ffi.send(per_connection).await },
            ))
            .map_or_else(fail, per_message)
    };
    let mut from_python = || {
        let mut python = python.borrow_mut();
        clients
            .block_on(round(
                &issuer,
                &mut issuer_events.borrow_mut(),
                total,
                python.send(per_connection),
            ))
            .map_or_else(fail, per_message)
    };
    // Warm-up: each connection's first seal reserves counters (a synced
    // commit per connection).
    let _ = rust();
    let _ = through_ffi();
    let _ = from_python();
    let measured = if failure.borrow().is_none() {
        Some(compare(
            rounds,
            [&mut rust, &mut through_ffi, &mut from_python],
        ))
    } else {
        None
    };
    let python = python.into_inner();
    let shutdown = clients.block_on(within(STEP, "shutting down", async {
        python.quit().await?;
        ffi.node.shutdown().await?;
        holder.shutdown().await?;
        issuer.shutdown().await?;
        Ok(())
    }));
    drop(holder_events);
    let stopped = connector.stop(server);
    if let Some(error) = failure.into_inner() {
        return Err(error.into());
    }
    shutdown?;
    stopped?;
    let Some(measured) = measured else {
        return Err("no rounds".into());
    };
    let [rust_ns, ffi_ns, python_ns] = measured.fastest();
    let rate = |ns: f64| 1e9 / ns;
    let python_ratio = measured.median_ratio(|[rust, _, python]| rust / python);
    let ffi_ratio = measured.median_ratio(|[rust, ffi, _]| rust / ffi);
    let python_over_ffi = measured.median_ratio(|[_, ffi, python]| ffi / python);
    println!(
        "| holder | per message (fastest round) | messages/s (fastest round) | ratio to Rust (median) |"
    );
    println!("|---|---|---|---|");
    println!(
        "| Rust, runtime Node | {} | {:.0} | 1 |",
        format_ns(rust_ns),
        rate(rust_ns)
    );
    println!(
        "| Rust, confidant-ffi's Rust API | {} | {:.0} | {ffi_ratio:.3} |",
        format_ns(ffi_ns),
        rate(ffi_ns)
    );
    println!(
        "| Python, generated bindings | {} | {:.0} | {python_ratio:.3} |",
        format_ns(python_ns),
        rate(python_ns)
    );
    println!();
    verdicts.push(
        Verdict::at_least(
            format!(
                "Python holder's messages/s / Rust holder's, {MESSAGE_LEN} B, {CONNECTIONS} connections"
            ),
            python_ratio,
            TARGET,
        )
        .with_note(format!(
            "fastest rounds: Python {:.0}/s, Rust {:.0}/s; Python / confidant-ffi from Rust {python_over_ffi:.3}",
            rate(python_ns),
            rate(rust_ns)
        )),
    );
    Ok(())
}

/// Runs `send` while the issuer takes `total` messages; the time from the
/// start to the issuer's last one.
async fn round(
    issuer: &Node,
    issuer_events: &mut Events,
    total: usize,
    send: impl Future<Output = BenchResult<()>>,
) -> BenchResult<Duration> {
    let start = Instant::now();
    let received = drain(issuer, issuer_events, |seen| seen.messages >= total);
    within(STEP, "a round", async { tokio::try_join!(send, received) }).await?;
    Ok(start.elapsed())
}

fn message() -> Vec<u8> {
    vec![b'a'; MESSAGE_LEN]
}

async fn send_rust(
    holder: &Node,
    connections: &[ConnectionId],
    per_connection: usize,
) -> BenchResult<()> {
    futures_util::future::try_join_all(connections.iter().map(|id| async move {
        for _ in 0..per_connection {
            holder.send(id, message()).await?;
        }
        Ok::<_, Box<dyn Error>>(())
    }))
    .await?;
    Ok(())
}

/// `count` invitations of the issuer, as text.
async fn invitations(issuer: &Node, count: usize) -> BenchResult<Vec<String>> {
    let mut texts = Vec::with_capacity(count);
    for _ in 0..count {
        texts.push(issuer.create_invitation().await?.try_to_text()?);
    }
    Ok(texts)
}

/// Waits until the issuer reports `count` connections and their greetings.
async fn issuer_connected(
    issuer: &Node,
    issuer_events: &mut Events,
    count: usize,
) -> BenchResult<()> {
    drain(issuer, issuer_events, |seen| {
        seen.connected >= count && seen.messages >= count
    })
    .await?;
    Ok(())
}

/// A holder on `confidant-ffi`'s Rust API.
struct FfiHolder {
    node: Arc<ConfidantNode>,
    connections: Vec<String>,
}

impl FfiHolder {
    async fn start(
        issuer: &Node,
        issuer_events: &mut Events,
        url: &str,
        dir: &Path,
    ) -> BenchResult<Self> {
        let node = confidant_ffi::open_node(NodeOptions {
            data_dir: dir
                .to_str()
                .ok_or("a temporary path that is not UTF-8")?
                .to_owned(),
            connector_urls: vec![url.to_owned()],
            at_rest_key: None,
            connector_ca_pem: None,
            sync_delivery: false,
        })
        .await?;
        let texts = invitations(issuer, CONNECTIONS).await?;
        let holder = async {
            let mut connections = Vec::with_capacity(CONNECTIONS);
            for text in texts {
                connections.push(node.accept_invitation(text, b"hi".to_vec()).await?);
            }
            let mut connected = 0;
            while connected < CONNECTIONS {
                match node.next_event().await {
                    None => return Err("the ffi holder stopped".into()),
                    Some(NodeEvent::Connected { .. }) => connected += 1,
                    Some(NodeEvent::HandshakeFailed { message, .. }) => {
                        return Err(format!("a handshake failed: {message}").into());
                    }
                    Some(_) => {}
                }
            }
            Ok::<_, Box<dyn Error>>(connections)
        };
        let (connections, ()) =
            tokio::try_join!(holder, issuer_connected(issuer, issuer_events, CONNECTIONS))?;
        Ok(Self { node, connections })
    }

    async fn send(&self, per_connection: usize) -> BenchResult<()> {
        futures_util::future::try_join_all(self.connections.iter().map(|id| async move {
            for _ in 0..per_connection {
                self.node.send(id.clone(), message()).await?;
            }
            Ok::<_, Box<dyn Error>>(())
        }))
        .await?;
        Ok(())
    }
}

/// `python/bench_holder.py` in a `python3` process, driven line by line
/// (its stdout read by a thread of its own, which hands the lines over).
struct PythonHolder {
    child: Child,
    input: ChildStdin,
    output: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl PythonHolder {
    async fn start(
        issuer: &Node,
        issuer_events: &mut Events,
        url: &str,
        dir: &Path,
        bindings: &Path,
    ) -> BenchResult<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/bench_holder.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir)
            .arg(url)
            .env("CONFIDANT_PYTHON_BINDINGS", bindings)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(input), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("no pipes to the Python holder".into());
        };
        let (lines, output) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("bench-python-stdout".to_owned())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            })?;
        let mut holder = Self {
            child,
            input,
            output,
        };
        holder.expect("ready").await?;
        let texts = invitations(issuer, CONNECTIONS).await?;
        let accept = async {
            for text in &texts {
                holder.command(&format!("accept {text}"))?;
                holder.expect("joined ").await?;
            }
            holder.command(&format!("wait-connected {CONNECTIONS}"))?;
            holder.expect("connected").await
        };
        tokio::try_join!(accept, issuer_connected(issuer, issuer_events, CONNECTIONS))?;
        Ok(holder)
    }

    fn command(&mut self, line: &str) -> BenchResult<()> {
        // A line into a pipe: it does not block.
        self.input.write_all(format!("{line}\n").as_bytes())?;
        self.input.flush()?;
        Ok(())
    }

    /// Reads the next line, which must start with `prefix`.
    async fn expect(&mut self, prefix: &str) -> BenchResult<String> {
        match self.output.recv().await {
            Some(line) if line.starts_with(prefix) => Ok(line),
            Some(line) => Err(format!("the Python holder said {line:?}, not {prefix:?}…").into()),
            None => {
                Err(format!("the Python holder ended before {prefix:?} (see its stderr)").into())
            }
        }
    }

    async fn send(&mut self, per_connection: usize) -> BenchResult<()> {
        self.command(&format!("send {per_connection} {MESSAGE_LEN}"))?;
        self.expect("sent").await?;
        Ok(())
    }

    async fn quit(mut self) -> BenchResult<()> {
        self.command("quit")?;
        self.expect("bye").await?;
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("the Python holder exited with {status}").into());
        }
        Ok(())
    }
}

impl Drop for PythonHolder {
    fn drop(&mut self) {
        // Ends a holder left running by an error (after `quit`, it has
        // exited already and this does nothing).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
