//! Crash tests with real processes: the sender and the receiver are killed
//! with SIGKILL at random moments, at least 100 times each, and restarted
//! from their redb stores. Afterwards no (key, counter) pair appears twice
//! among all envelopes ever written, every envelope opens exactly once on the
//! receiving side, and the redb files open cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_core::wire::envelope::Body;
use confidant_core::{ConnectionId, Role};
use confidant_store::{DurableSession, InboxStore, RedbStore, StoreOptions};
use confidant_tests::crash;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KILLS: usize = 100;

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
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

/// Starts `binary` and kills it with SIGKILL after a random delay, `KILLS`
/// times. A run that ends by itself must have succeeded. Returns how many
/// runs were killed while still running.
fn kill_repeatedly(binary: &str, args: &[&Path], random: &mut Random) -> usize {
    let mut killed = 0;
    for run in 0..KILLS {
        let mut child = Command::new(binary)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(2 + random.below(40));
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let output = child.wait_with_output().unwrap();
        if let Some(code) = output.status.code() {
            assert_eq!(
                code,
                0,
                "run {run} of {binary} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    killed
}

fn run_to_completion(binary: &str, args: &[&std::ffi::OsStr]) {
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

fn assert_no_counter_twice(wire: &[Body]) {
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
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("sender.redb");
    let wire = dir.path().join("wire");
    let mut random = Random::from_clock();

    let killed = kill_repeatedly(sender, &[&store, &wire], &mut random);
    assert!(
        killed >= KILLS / 2,
        "only {killed} runs were still running when killed"
    );
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
        "{} envelopes written over {KILLS} kills ({killed} mid-run)",
        envelopes.len()
    );
    assert!(
        envelopes.len() >= 1000,
        "too little was written to test anything"
    );
    let epochs: HashSet<u32> = envelopes
        .iter()
        .filter_map(|body| match body {
            Body::Message(message) => Some(message.epoch),
            _ => None,
        })
        .collect();
    assert!(epochs.len() > 2, "key updates must happen during the test");
    assert_no_counter_twice(&envelopes);
    open_all(&envelopes);
    assert_store_opens(&store);
}

#[test]
fn the_receiver_delivers_every_message_exactly_once_across_sigkills() {
    let sender = env!("CARGO_BIN_EXE_crash_sender");
    let receiver = env!("CARGO_BIN_EXE_crash_receiver");
    let dir = tempfile::tempdir().unwrap();
    let sender_store = dir.path().join("sender.redb");
    let receiver_store = dir.path().join("receiver.redb");
    let wire = dir.path().join("wire");
    let mut random = Random::from_clock();

    run_to_completion(
        sender,
        &[
            sender_store.as_os_str(),
            wire.as_os_str(),
            "--until".as_ref(),
            "2500".as_ref(),
        ],
    );
    let envelopes = crash::read_wire(&wire).unwrap();
    let expected = open_all(&envelopes);

    let killed = kill_repeatedly(receiver, &[&receiver_store, &wire], &mut random);
    println!("receiver killed mid-run {killed} times");
    assert!(
        killed >= 10,
        "only {killed} runs were still running when killed"
    );
    run_to_completion(receiver, &[receiver_store.as_os_str(), wire.as_os_str()]);

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
    drop(store);
    assert_store_opens(&receiver_store);
}
