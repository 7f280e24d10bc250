//! Benchmarks of Confidant against the raw primitives, measured in the same
//! run on the same machine, printed as ratios (absolute times drift on a
//! shared machine; ratios measured side by side do not).
//!
//! ```text
//! cargo run --release -p confidant-bench            # full run
//! cargo run --release -p confidant-bench -- --quick # a fast smoke run
//! cargo run --release -p confidant-bench -- --only x3dh   # one section: suites, iv, x3dh, storage, runtime, connector or postgres
//! ```
//!
//! Sections: the suites' seal and open at 64 B, 1 KiB, 16 KiB and 1 MiB
//! against the raw AEAD crate plus the IV cost; the IV strategies per
//! message; a full X3DH (both sides) against the sum of its primitive
//! operations; sealing with durable counter reservation on redb against the
//! in-memory store, session load/save latency and bytes per idle session;
//! the runtime (`confidant-actors`): messages per second through two nodes
//! against the session layer alone, resident memory per active and per idle
//! connection, and the time to wake an idle connection; the connector
//! (`confidant-connector`, gRPC on loopback in this process): handshakes
//! and relayed messages per second through it against a bare unary gRPC
//! round trip, and its stored bytes per pending message (3.5 to 5 minutes
//! on two cores, depending on their load; about 35 s with `--quick`). The
//! compared variants alternate every few milliseconds for many rounds; each
//! ratio is the median of the ratios measured within a round, and each time
//! shown is the fastest round.

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
mod runtime;
mod storage;
mod x3dh;

/// How long to measure.
pub struct Settings {
    /// Fewer iterations and rounds: a smoke run.
    pub quick: bool,
    /// Rounds per figure.
    pub rounds: usize,
}

/// One ratio and its target, for the summary.
pub struct Verdict {
    /// What was compared.
    pub what: String,
    /// Measured ratio.
    pub ratio: f64,
    /// The bound the ratio must respect.
    pub target: f64,
    /// The ratio must be at least `target` (a throughput) rather than at
    /// most (a cost).
    pub at_least: bool,
}

impl Verdict {
    /// A cost ratio that must not exceed `target`.
    pub fn at_most(what: impl Into<String>, ratio: f64, target: f64) -> Self {
        Self {
            what: what.into(),
            ratio,
            target,
            at_least: false,
        }
    }

    /// A throughput ratio that must reach `target`.
    pub fn at_least(what: impl Into<String>, ratio: f64, target: f64) -> Self {
        Self {
            what: what.into(),
            ratio,
            target,
            at_least: true,
        }
    }

    fn ok(&self) -> bool {
        if self.at_least {
            self.ratio >= self.target
        } else {
            self.ratio <= self.target
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
    if selected("storage") {
        storage::run(&settings, &mut verdicts);
    }
    if selected("runtime") {
        runtime::run(&settings, &mut verdicts);
    }
    if selected("connector") {
        connector::run(&settings);
    }
    if selected("connector") || selected("postgres") {
        connector_postgres::run(&settings, &mut verdicts);
    }

    println!("## Summary");
    let mut missed = 0;
    for verdict in &verdicts {
        let ok = verdict.ok();
        if !ok {
            missed += 1;
        }
        println!(
            "{:<4} {:<58} ratio {:>6.3}  target {} {:.2}",
            if ok { "ok" } else { "MISS" },
            verdict.what,
            verdict.ratio,
            if verdict.at_least { "≥" } else { "≤" },
            verdict.target
        );
    }
    println!(
        "{} of {} ratios within target",
        verdicts.len() - missed,
        verdicts.len()
    );
}
