//! Crash tests with real processes: the sender and the receiver are killed
//! with SIGKILL at random points of their work, 100 times each by default,
//! and restarted from their redb stores. Afterwards no (key, counter) pair
//! appears twice among all envelopes ever written, every envelope opens
//! exactly once on the receiving side, and the redb files open cleanly.
//!
//! A kill counts only if it lands mid-run: the process had not finished its
//! workload (it had not reported `done`, nor exited) when it was killed. Each
//! test prints how many of its kills did and fails if fewer than 90% did.
//! The kill point comes from the process's own progress reports (one line on
//! stdout per envelope written by the sender, per batch of
//! [`crash::RECEIVER_BATCH`] envelopes committed by the receiver): each run is
//! killed after a random number of reports, at a random moment within the
//! time its last step took, so a slow, loaded machine moves the kills in time
//! but not in the work. The receiver's wire is topped up between runs so that
//! it always holds more waiting envelopes than a run gets to commit before
//! its kill.
//!
//! Environment variables (the defaults keep the tests at a few seconds):
//!
//! - `CONFIDANT_CRASH_KILLS` (default 100): kills per test, so per side.
//! - `CONFIDANT_CRASH_SENDER_STEPS` (default 60): a sender run is killed
//!   after a random number of envelopes between 0 and this.
//! - `CONFIDANT_CRASH_RECEIVER_STEPS` (default 6): a receiver run is killed
//!   after a random number of committed batches between 0 and this.
//!
//! For example, 1,000 kills of each:
//! `CONFIDANT_CRASH_KILLS=1000 cargo nextest run -p confidant-tests --test crash --no-capture`
//! took 3 minutes on a shared, loaded 2-core machine (82 s the receiver,
//! 98 s the sender), with 1,000 of 1,000 kills mid-run on each side; the
//! nextest profile ends a test after 5 minutes, so more kills need
//! `cargo test` or a longer `slow-timeout`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_core::wire::envelope::Body;
use confidant_core::{ConnectionId, Role};
use confidant_store::{DurableSession, InboxStore, RedbStore, StoreOptions};
use confidant_tests::crash::{self, Report};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A bound on waiting for one progress report, so that a hung process fails
/// the test instead of stalling it. Not a timing assertion: a healthy
/// process reports within milliseconds.
const HANG: Duration = Duration::from_secs(120);

/// Reads a positive count from the environment, or `default`.
fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => {
            let value: usize = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value} is not a count"));
            assert!(value > 0, "{name} must be at least 1");
            value
        }
        Err(_) => default,
    }
}

fn kills() -> usize {
    setting("CONFIDANT_CRASH_KILLS", 100)
}

/// splitmix64, seeded from the clock; the seed is printed so a failure can
/// be replayed.
struct Random(u64);

impl Random {
    fn from_clock() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|time| time.as_nanos() as u64)
            .unwrap_or(7);
        println!("random seed {seed}");
        Self(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
    /// A random fraction of `duration`.
    fn within(&mut self, duration: Duration) -> Duration {
        duration.mul_f64((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// What one killed run did.
struct Run {
    /// The process had not finished its workload when it was killed.
    mid_run: bool,
    /// The last wire position it reported.
    position: Option<usize>,
    /// How long it took from its start to its first report.
    startup: Option<Duration>,
}

/// Starts `binary`, waits for `steps` progress reports, waits a random part
/// of the time the last step took (for zero steps: of `startup`, the
/// previous run's time to its first report), and kills it with SIGKILL. A run
/// that ends by itself must have succeeded.
fn kill_after(
    binary: &str,
    args: &[&OsStr],
    steps: usize,
    startup: Option<Duration>,
    random: &mut Random,
) -> Run {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, reports) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send((line, Instant::now())).is_err() {
                break;
            }
        }
    });

    let mut run = Run {
        mid_run: false,
        position: None,
        startup: None,
    };
    let mut done = false;
    let note = |line: &str, run: &mut Run, done: &mut bool| match crash::parse_report(line) {
        Some(Report::Progress(position)) => run.position = Some(position),
        Some(Report::Done(position)) => {
            run.position = Some(position);
            *done = true;
        }
        None => panic!("{binary} wrote {line:?}"),
    };
    let mut seen = 0;
    let mut last = started;
    let mut step = startup;
    while seen < steps && !done {
        match reports.recv_timeout(HANG) {
            Ok((line, at)) => {
                note(&line, &mut run, &mut done);
                seen += 1;
                step = Some(at - last);
                run.startup.get_or_insert(at - started);
                last = at;
            }
            Err(RecvTimeoutError::Disconnected) => break, // it exited
            Err(RecvTimeoutError::Timeout) => {
                child.kill().unwrap();
                panic!("{binary} reported nothing for {HANG:?}");
            }
        }
    }
    if !done && let Some(step) = step {
        std::thread::sleep(random.within(step));
    }
    let exited = child.try_wait().unwrap().is_some();
    if !exited {
        child.kill().unwrap(); // SIGKILL
    }
    // The pipe closes when the process is gone: these are the reports it
    // wrote before it died.
    for (line, at) in reports.iter() {
        note(&line, &mut run, &mut done);
        run.startup.get_or_insert(at - started);
    }
    reader.join().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    if let Some(code) = status.code() {
        assert_eq!(code, 0, "{binary} failed: {stderr}");
    }
    run.mid_run = !exited && !done;
    run
}

/// Fails unless nearly every kill landed mid-run.
fn assert_kills_count(side: &str, mid_run: usize, kills: usize) {
    println!("{side}: {mid_run} of {kills} kills landed mid-run");
    assert!(
        mid_run * 10 >= kills * 9,
        "only {mid_run} of the {side}'s {kills} kills landed mid-run"
    );
}

fn run_to_completion(binary: &str, args: &[&OsStr]) {
    let output = Command::new(binary).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{binary} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Opens every envelope of the wire with a fresh in-memory receiver, in
/// order; every one must open, so no key was used with an inconsistent
/// state. Returns the plaintexts by (epoch, counter).
fn open_all(wire: &[Body]) -> BTreeMap<(u32, u64), Vec<u8>> {
    let mut receiver = crash::fresh_session(Role::Responder).unwrap();
    let mut opened = BTreeMap::new();
    for (index, body) in wire.iter().cloned().enumerate() {
        match body {
            Body::Message(message) => {
                let key = (message.epoch, message.counter);
                let plaintext = receiver
                    .open(message)
                    .unwrap_or_else(|error| panic!("envelope {index} did not open: {error}"));
                assert!(opened.insert(key, plaintext).is_none());
            }
            Body::KeyUpdate(update) => {
                receiver
                    .open_key_update(update)
                    .unwrap_or_else(|error| panic!("key update {index} did not open: {error}"));
            }
            _ => panic!("unexpected envelope"),
        }
    }
    opened
}

/// Returns how many (epoch, counter) pairs it checked.
fn assert_no_counter_twice(wire: &[Body]) -> usize {
    let mut seen = HashSet::new();
    for body in wire {
        let message = match body {
            Body::Message(message) => message,
            Body::KeyUpdate(update) => update.sealed.as_ref().unwrap(),
            _ => panic!("unexpected envelope"),
        };
        assert!(
            seen.insert((message.epoch, message.counter)),
            "epoch {} counter {} was used twice",
            message.epoch,
            message.counter
        );
    }
    seen.len()
}

fn assert_store_opens(path: &Path) {
    let store = RedbStore::open(path, StoreOptions::default()).unwrap();
    let connection = ConnectionId::new(crash::CONNECTION).unwrap();
    DurableSession::load(
        &store,
        &crash::registry(),
        &connection,
        crash::RESERVATION_BLOCK,
    )
    .unwrap()
    .unwrap();
}

#[test]
fn the_sender_never_reuses_a_counter_across_sigkills() {
    let sender = env!("CARGO_BIN_EXE_crash_sender");
    let kills = kills();
    let steps = setting("CONFIDANT_CRASH_SENDER_STEPS", 60);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("sender.redb");
    let wire = dir.path().join("wire");
    let mut random = Random::from_clock();

    // Without `--until` the sender never finishes: a kill lands mid-run
    // unless the sender failed or its reports went missing.
    let mut mid_run = 0;
    let mut startup = None;
    for _ in 0..kills {
        let target = random.below(steps as u64 + 1) as usize;
        let run = kill_after(
            sender,
            &[store.as_os_str(), wire.as_os_str()],
            target,
            startup,
            &mut random,
        );
        mid_run += usize::from(run.mid_run);
        startup = run.startup.or(startup);
    }
    crash::repair_wire(&wire).unwrap();
    let before_final = crash::read_wire(&wire).unwrap().len();
    let until = (before_final + 50).to_string();
    run_to_completion(
        sender,
        &[
            store.as_os_str(),
            wire.as_os_str(),
            "--until".as_ref(),
            until.as_ref(),
        ],
    );

    let envelopes = crash::read_wire(&wire).unwrap();
    println!(
        "sender: {} envelopes written over {kills} kills",
        envelopes.len()
    );
    assert_kills_count("sender", mid_run, kills);
    assert!(
        envelopes.len() >= 1000,
        "too little was written to test anything \
         (raise CONFIDANT_CRASH_KILLS or CONFIDANT_CRASH_SENDER_STEPS)"
    );
    let epochs: HashSet<u32> = envelopes
        .iter()
        .filter_map(|body| match body {
            Body::Message(message) => Some(message.epoch),
            _ => None,
        })
        .collect();
    assert!(epochs.len() > 2, "key updates must happen during the test");
    let counters = assert_no_counter_twice(&envelopes);
    let opened = open_all(&envelopes);
    println!(
        "sender: {counters} (epoch, counter) pairs checked, none twice, over {} epochs; \
         {} messages open",
        epochs.len(),
        opened.len()
    );
    assert_store_opens(&store);
}

#[test]
fn the_receiver_delivers_every_message_exactly_once_across_sigkills() {
    let sender = env!("CARGO_BIN_EXE_crash_sender");
    let receiver = env!("CARGO_BIN_EXE_crash_receiver");
    let kills = kills();
    let steps = setting("CONFIDANT_CRASH_RECEIVER_STEPS", 6);
    let dir = tempfile::tempdir().unwrap();
    let sender_store = dir.path().join("sender.redb");
    let receiver_store = dir.path().join("receiver.redb");
    let wire = dir.path().join("wire");
    let mut random = Random::from_clock();

    // A run commits at most `steps` batches before its kill is due, so the
    // receiver always gets at least twice that (and a few batches more for
    // what it does while the kill is on its way) waiting on the wire; when
    // fewer wait, the sender tops the wire up with four times as many.
    let waiting = (2 * steps + 4) * crash::RECEIVER_BATCH;
    let mut written = 0;
    let mut refills = 0;
    let mut handled = 0;
    let mut mid_run = 0;
    let mut startup = None;
    for _ in 0..kills {
        if written < handled + waiting {
            written = handled + 4 * waiting;
            refills += 1;
            let until = written.to_string();
            run_to_completion(
                sender,
                &[
                    sender_store.as_os_str(),
                    wire.as_os_str(),
                    "--until".as_ref(),
                    until.as_ref(),
                ],
            );
        }
        let target = random.below(steps as u64 + 1) as usize;
        let run = kill_after(
            receiver,
            &[receiver_store.as_os_str(), wire.as_os_str()],
            target,
            startup,
            &mut random,
        );
        mid_run += usize::from(run.mid_run);
        handled = handled.max(run.position.unwrap_or(0));
        startup = run.startup.or(startup);
    }
    run_to_completion(receiver, &[receiver_store.as_os_str(), wire.as_os_str()]);

    let envelopes = crash::read_wire(&wire).unwrap();
    assert_eq!(envelopes.len(), written);
    println!(
        "receiver: {written} envelopes on the wire (topped up {refills} times), \
         {handled} of them committed before the last kill"
    );
    assert_kills_count("receiver", mid_run, kills);
    let expected = open_all(&envelopes);

    let store = RedbStore::open(&receiver_store, StoreOptions::default()).unwrap();
    let mut delivered = BTreeMap::new();
    for entry in store.inbox().unwrap() {
        let key = (entry.epoch, entry.counter);
        assert!(
            delivered.insert(key, entry.plaintext.to_vec()).is_none(),
            "message {key:?} delivered twice"
        );
    }
    assert_eq!(delivered.len(), expected.len(), "messages lost or added");
    assert_eq!(delivered, expected);
    println!(
        "receiver: {} messages delivered, each exactly once",
        delivered.len()
    );
    drop(store);
    assert_store_opens(&receiver_store);
}

/// The runtime's cheap wake-up: a node whose connection actor stops idle
/// after every message goes on from where the stopped actor let its
/// counter go, without a reservation commit; killed with SIGKILL at random
/// points, it never reuses a counter (the point lives in the process's
/// memory only, so a restart resumes above the durable reservation).
#[test]
fn a_node_waking_idle_connections_never_reuses_a_counter_across_sigkills() {
    let sender = env!("CARGO_BIN_EXE_wake_sender");
    let kills = setting("CONFIDANT_CRASH_WAKE_KILLS", 40);
    let steps = setting("CONFIDANT_CRASH_WAKE_STEPS", 12);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("node.redb");
    let wire = dir.path().join("wire");
    let mut random = Random::from_clock();
    run_to_completion(sender, &["setup".as_ref(), store.as_os_str()]);

    let mut mid_run = 0;
    let mut startup = None;
    for _ in 0..kills {
        let target = random.below(steps as u64 + 1) as usize;
        let run = kill_after(
            sender,
            &["run".as_ref(), store.as_os_str(), wire.as_os_str()],
            target,
            startup,
            &mut random,
        );
        mid_run += usize::from(run.mid_run);
        startup = run.startup.or(startup);
    }
    crash::repair_wire(&wire).unwrap();
    let before_final = crash::read_wire(&wire).unwrap().len();
    let until = (before_final + 40).to_string();
    let output = Command::new(sender)
        .args([
            "run".as_ref(),
            store.as_os_str(),
            wire.as_os_str(),
            "--until".as_ref(),
            until.as_ref(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (wakes, contiguous) = stdout
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("wakes ")?;
            let (wakes, contiguous) = rest.split_once(" contiguous ")?;
            Some((
                wakes.parse::<usize>().ok()?,
                contiguous.parse::<usize>().ok()?,
            ))
        })
        .expect("the final run reports its wakes");

    // The initial message is sent again at each start (the peer never
    // answered); the rest are sealed under the session.
    let envelopes: Vec<Body> = crash::read_wire(&wire)
        .unwrap()
        .into_iter()
        .filter(|body| !matches!(body, Body::Initial(_)))
        .collect();
    assert_kills_count("waking sender", mid_run, kills);
    let counters = assert_no_counter_twice(&envelopes);
    println!(
        "waking sender: {} envelopes over {kills} kills, {counters} (epoch, counter) pairs, \
         none twice; in the final run {contiguous} of {wakes} wake-ups went on at the next \
         counter",
        envelopes.len()
    );
    // Every wake of a stopped actor went on at the next counter: no
    // reservation was taken (a fresh load would skip to the end of the
    // reservation block).
    assert!(wakes >= 20, "too few wake-ups to tell: {wakes}");
    assert_eq!(contiguous, wakes, "a wake-up skipped counters");
}
