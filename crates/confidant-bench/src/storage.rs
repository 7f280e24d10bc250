//! Storage: sealing with durable counter reservation on a redb file against
//! the in-memory reference store, session load and save latency, and the
//! bytes an idle session takes on disk.

use crate::measure::{compare, format_ns, per_call};
use crate::{Settings, Verdict};
use confidant_core::{AgreedSecret, ConnectionId, Role, SuiteRegistry};
use confidant_session::{Session, SessionConfig};
use confidant_store::{
    DEFAULT_RESERVATION_BLOCK, DurableSession, MemoryStore, RawStore, RedbStore, StoreOptions,
    WriteBatch,
};
use std::hint::black_box;
use std::path::Path;

fn session(connection: &str) -> Option<Session> {
    let agreed = AgreedSecret::new([0x11; 32], vec![0x22; 64], None);
    Session::new(
        Role::Initiator,
        ConnectionId::new(connection).ok()?,
        confidant_aes_gcm::aes_256_gcm_sha256_counter(),
        &agreed,
        SessionConfig::default(),
    )
    .ok()
}

/// Nanoseconds per sealed message with a durable session on `store`. Both
/// stores go through the same (dynamically dispatched) code, so that the
/// compiler's inlining choices for two copies of the loop do not decide the
/// comparison.
fn seal_rate(store: &dyn RawStore, messages: u64, connection: &str) -> f64 {
    let Some(session) = session(connection) else {
        return f64::NAN;
    };
    let Ok(mut durable) =
        DurableSession::create(store, session, WriteBatch::new(), DEFAULT_RESERVATION_BLOCK)
    else {
        return f64::NAN;
    };
    let plaintext = [0x5Au8; 256];
    per_call(messages, || {
        black_box(durable.seal(store, &plaintext).ok());
    })
}

/// Runs the storage benchmarks and prints their table.
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    let Ok(dir) = tempfile::tempdir() else {
        println!("no temporary directory; storage benchmarks skipped");
        return;
    };
    let Ok(redb) = RedbStore::create(dir.path().join("bench.redb"), StoreOptions::default()) else {
        println!("could not create a redb store; storage benchmarks skipped");
        return;
    };
    let memory = MemoryStore::new();

    // Each sample seals four reservation blocks' worth of messages, so it
    // includes four durable commits on the redb side.
    let messages = if settings.quick {
        2 * DEFAULT_RESERVATION_BLOCK
    } else {
        4 * DEFAULT_RESERVATION_BLOCK
    };
    // A fresh connection per sample, so that every sample starts with an
    // unreserved counter.
    let mut memory_samples = 0;
    let mut on_memory = || {
        memory_samples += 1;
        seal_rate(&memory, messages, &format!("bench-memory-{memory_samples}"))
    };
    let mut redb_samples = 0;
    let mut on_redb = || {
        redb_samples += 1;
        seal_rate(&redb, messages, &format!("bench-redb-{redb_samples}"))
    };
    let rounds = compare(settings.rounds.min(15), [&mut on_memory, &mut on_redb]);
    let [memory_ns, redb_ns] = rounds.fastest();
    let ratio = rounds.median_ratio(|[memory, redb]| memory / redb);
    println!("## Storage: sealing 256-byte messages with durable counter reservation");
    println!(
        "reservation block {DEFAULT_RESERVATION_BLOCK} counters; redb with durable (fsynced) commits"
    );
    println!("{:<44} {:>10} {:>14}", "store", "per seal", "messages/s");
    println!(
        "{:<44} {:>10} {:>14.0}",
        "in-memory reference store",
        format_ns(memory_ns),
        1e9 / memory_ns
    );
    println!(
        "{:<44} {:>10} {:>14.0}",
        "redb file",
        format_ns(redb_ns),
        1e9 / redb_ns
    );
    println!("redb / in-memory throughput: {ratio:.3} (target ≥ 0.90)");
    verdicts.push(Verdict::at_least(
        "sealing 256 B on redb vs in memory (throughput)",
        ratio,
        0.9,
    ));

    latency(&redb, settings);
    idle_bytes(dir.path(), settings);
    println!();
}

/// Load and save latency of one session on the redb store.
fn latency(store: &RedbStore, settings: &Settings) {
    let registry = {
        let mut registry = SuiteRegistry::new();
        let _ = confidant_aes_gcm::register(&mut registry);
        registry
    };
    let Some(session) = session("bench-latency") else {
        return;
    };
    let Ok(durable) = DurableSession::create(store, session, WriteBatch::new(), 1024) else {
        return;
    };
    let Ok(connection) = ConnectionId::new("bench-latency") else {
        return;
    };
    let iterations = if settings.quick { 20 } else { 200 };
    let snapshot = durable.session().snapshot();
    let mut save = || {
        per_call(iterations, || {
            let mut batch = WriteBatch::new();
            if batch.put_session(&snapshot).is_ok() {
                black_box(store.commit(batch).is_ok());
            }
        })
    };
    let mut load = || {
        per_call(iterations * 10, || {
            black_box(DurableSession::load(store, &registry, &connection, 1024).ok());
        })
    };
    let [save, load] = compare(settings.rounds.min(9), [&mut save, &mut load]).fastest();
    println!(
        "session save (one durable commit): {}; session load (read, decode, restore): {}",
        format_ns(save),
        format_ns(load)
    );
}

/// Bytes on disk per idle session: many sessions in a fresh file.
fn idle_bytes(dir: &Path, settings: &Settings) {
    let sessions = if settings.quick { 1_000 } else { 10_000 };
    let path = dir.join("idle.redb");
    let (empty, full) = {
        let Ok(store) = RedbStore::create(&path, StoreOptions::default()) else {
            return;
        };
        let empty = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
        let mut snapshot_bytes = 0;
        for chunk in 0..sessions / 1000 {
            let mut batch = WriteBatch::new();
            for index in 0..1000 {
                let Some(session) = session(&format!("idle-{chunk}-{index}")) else {
                    return;
                };
                let snapshot = session.snapshot();
                snapshot_bytes = snapshot.to_bytes().map(|bytes| bytes.len()).unwrap_or(0);
                if batch.put_session(&snapshot).is_err() {
                    return;
                }
                batch.put_reservation(
                    session.connection_id(),
                    confidant_store::CounterReservation {
                        epoch: 0,
                        reserved_until: DEFAULT_RESERVATION_BLOCK,
                    },
                );
            }
            if store.commit(batch).is_err() {
                return;
            }
        }
        println!("session snapshot: {snapshot_bytes} bytes encoded");
        drop(store);
        (
            empty,
            std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0),
        )
    };
    println!(
        "on disk: {} bytes per idle session ({sessions} sessions with reservations, file {} KiB, empty store {} KiB)",
        (full.saturating_sub(empty)) / sessions,
        full / 1024,
        empty / 1024
    );
}
