//! Benchmarks of Confidant against the raw primitives, measured in the same
//! run on the same machine, printed as ratios (absolute times drift on a
//! shared machine; ratios measured side by side do not). The few targets
//! that are absolute (a rate, bytes per connection) are printed beside a
//! baseline measured in the same run, to read them against.
//!
//! ```text
//! cargo run --release -p confidant-bench            # full run
//! cargo run --release -p confidant-bench -- --quick # a fast smoke run
//! cargo run --release -p confidant-bench -- --only x3dh   # one section: suites, iv, x3dh, pqxdh, storage, runtime, connector, postgres or python
//! cargo run --release -p confidant-bench -- --only throughput # the runtime's throughput round alone (for profiling)
//! ```
//!
//! Sections: the suites' seal and open at 64 B, 1 KiB, 16 KiB and 1 MiB
//! against the raw AEAD crate plus the IV cost; the IV strategies per
//! message; a full X3DH (both sides) against the sum of its primitive
//! operations; the post-quantum hybrid (X3DH + ML-KEM-768, both sides)
//! against classical X3DH and against its primitives, with its bundle and
//! initial message sizes; sealing with durable counter reservation on redb against the
//! in-memory store, session load/save latency and bytes per idle session;
//! the runtime (`confidant-actors`): messages per second through two nodes
//! against the session layer alone, resident memory and live heap per
//! active and per idle connection, and the time to wake an idle connection;
//! the connector (`confidant-connector`, gRPC on loopback in this process):
//! handshakes and relayed messages per second through it against a bare
//! unary gRPC round trip and (handshakes) the X3DH primitives, and its
//! stored bytes per pending message. The compared variants alternate every
//! few milliseconds for many rounds; each ratio is the median of the ratios
//! measured within a round, and each time shown is the fastest round.
//!
//! The summary lists every figure with a target as `ok` or `MISS`,
//! among them the five targets of issue 11, each beside a baseline
//! measured in the same run:
//!
//! | row | target | baseline |
//! |---|---|---|
//! | two nodes, durable redb, 256 B both ways, 256 connections | ≥ 0.50 of it | the session layer alone |
//! | send on an idle connection, durable redb | ≤ 2× | a send on a running one |
//! | handshakes through the gRPC connector, durable redb, 256 at once | ≥ 1,000/s | bare unary calls; the X3DH primitives (their ratio is printed) |
//! | relayed 256 B messages through one connector, 256 connections | ≥ 20,000/s | bare unary calls |
//! | resident memory per idle connection, 100,000 connections, redb page cache 32 MiB per store | ≤ 2 KiB | the empty nodes; the live heap per idle connection beside it |
//!
//! The live heap is counted by this binary's global allocator (`cap`
//! around the system allocator). `--quick` makes 10,000 connections for
//! the memory row instead of 100,000 (and says so); the other rows keep
//! their parameters, with fewer rounds. A full run takes 5 to 6 minutes
//! on two cores (more when something else is using them), `--quick` about
//! a minute.

#![allow(clippy::print_stdout)]
#![allow(
    clippy::indexing_slicing,
    reason = "a benchmark binary: it indexes arrays and samples it sized itself, and a panic only ends the run"
)]

mod aead;
mod backends;
mod connector;
mod connector_postgres;
mod measure;
mod pqxdh;
mod python;
mod runtime;
mod storage;
mod x3dh;

/// Every allocation of this binary goes through `cap`'s wrapper around the
/// system allocator (glibc malloc, as without it), which keeps a count of
/// the bytes allocated and not yet freed: the live heap. Its cost is one
/// atomic add per allocation and per free. (`GlobalAlloc` needs an `unsafe
/// impl`, which this workspace forbids in its own code, hence the crate.)
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Bytes allocated on the heap and not yet freed, now.
pub fn live_heap_bytes() -> u64 {
    u64::try_from(ALLOCATOR.allocated()).unwrap_or(u64::MAX)
}

/// How long to measure.
pub struct Settings {
    /// Fewer iterations and rounds: a smoke run.
    pub quick: bool,
    /// Rounds per figure.
    pub rounds: usize,
}

/// One measured figure and its target, for the summary: a ratio of two
/// variants measured in the same run, or an absolute figure (a rate, a
/// size) shown with the same-run baseline it should be read against.
pub struct Verdict {
    /// What was measured.
    pub what: String,
    /// Measured figure.
    pub ratio: f64,
    /// The bound the figure must respect.
    pub target: f64,
    /// The figure must be at least `target` (a throughput) rather than at
    /// most (a cost).
    pub at_least: bool,
    /// The unit of an absolute figure (`None` for a ratio).
    pub unit: Option<&'static str>,
    /// Context printed under the verdict: the same-run baseline of an
    /// absolute figure, or a related ratio without a target.
    pub note: Option<String>,
}

impl Verdict {
    /// A cost ratio that must not exceed `target`.
    pub fn at_most(what: impl Into<String>, ratio: f64, target: f64) -> Self {
        Self {
            what: what.into(),
            ratio,
            target,
            at_least: false,
            unit: None,
            note: None,
        }
    }

    /// A throughput ratio that must reach `target`.
    pub fn at_least(what: impl Into<String>, ratio: f64, target: f64) -> Self {
        Self {
            at_least: true,
            ..Self::at_most(what, ratio, target)
        }
    }

    /// An absolute figure in `unit` (a rate, a size) rather than a ratio.
    pub fn in_unit(mut self, unit: &'static str) -> Self {
        self.unit = Some(unit);
        self
    }

    /// Context for the summary (the baseline measured in the same run).
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    fn ok(&self) -> bool {
        if self.at_least {
            self.ratio >= self.target
        } else {
            self.ratio <= self.target
        }
    }

    fn print(&self) {
        let ok = if self.ok() { "ok" } else { "MISS" };
        let bound = if self.at_least { "≥" } else { "≤" };
        match self.unit {
            None => println!(
                "{ok:<4} {:<72} ratio {:>8.3}  target {bound} {:.2}",
                self.what, self.ratio, self.target
            ),
            Some(unit) => println!(
                "{ok:<4} {:<72} {:>8.0} {unit}  target {bound} {:.0} {unit}",
                self.what, self.ratio, self.target
            ),
        }
        if let Some(note) = &self.note {
            println!("     {note}");
        }
    }
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let settings = Settings {
        quick,
        rounds: if quick { 3 } else { 41 },
    };
    if cfg!(debug_assertions) {
        println!("warning: this is a debug build; run with --release for meaningful figures\n");
    }
    let only = std::env::args()
        .skip_while(|arg| arg != "--only")
        .nth(1)
        .unwrap_or_default();
    let selected = |section: &str| only.is_empty() || only == section;
    backends::print();
    let mut verdicts = Vec::new();
    if selected("suites") {
        aead::run(&settings, &mut verdicts);
    }
    if selected("iv") {
        aead::run_iv(&settings, &mut verdicts);
    }
    if selected("x3dh") {
        x3dh::run(&settings, &mut verdicts);
    }
    if selected("pqxdh") {
        pqxdh::run(&settings, &mut verdicts);
    }
    if selected("storage") {
        storage::run(&settings, &mut verdicts);
    }
    if selected("runtime") || only == "throughput" {
        runtime::run(&settings, &mut verdicts, only == "throughput");
    }
    if selected("connector") {
        connector::run(&settings, &mut verdicts);
    }
    if selected("connector") || selected("postgres") {
        connector_postgres::run(&settings, &mut verdicts);
    }
    if selected("python") {
        python::run(&settings, &mut verdicts);
    }

    println!("## Summary");
    let mut missed = 0;
    for verdict in &verdicts {
        if !verdict.ok() {
            missed += 1;
        }
        verdict.print();
    }
    println!(
        "{} of {} figures within target",
        verdicts.len() - missed,
        verdicts.len()
    );
}
