//! Shared pieces of the crash tests: the "wire" file that stands for the
//! connector, and the session both crash-test processes start from.
//!
//! The wire file is a sequence of records, each a 4-byte big-endian length
//! followed by an encoded envelope. A process killed in the middle of an
//! append leaves a partial last record; [`read_wire`] ignores it and
//! [`repair_wire`] cuts it off, as a relay would drop a half-received frame.
//!
//! Both processes report their progress on stdout, one line per step of
//! work ([`report`]), so that the test can kill them at a point of their own
//! progress rather than after a guessed delay, and can tell a kill that
//! landed mid-run from one that came after the work was finished.

use confidant_core::wire::{self, envelope::Body};
use confidant_core::{AgreedSecret, ConnectionId, Role, SuiteRegistry};
use confidant_session::{Session, SessionConfig};
use confidant_store::{DurableSession, RedbStore, StoreOptions, WriteBatch};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// The connection both sides use.
pub const CONNECTION: &str = "crash-test-connection";

/// Messages per epoch: small, so that key updates happen during the test.
pub const MESSAGES_PER_EPOCH: u64 = 300;

/// Counters reserved per durable commit: small, so that kills land during
/// reservations too.
pub const RESERVATION_BLOCK: u64 = 16;

/// Envelopes the receiver opens per transaction (one progress report each).
pub const RECEIVER_BATCH: usize = 7;

/// A progress report, one line on a crash-test process's stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// One step of work is done: the sender has appended an envelope, the
    /// receiver has committed a batch. The number is the wire position the
    /// process has reached (the sender: envelopes on the wire; the receiver:
    /// envelopes handled and committed from the start of the wire).
    Progress(usize),
    /// The whole workload is done (the receiver reached the end of the wire,
    /// the sender reached `--until`); the process exits next.
    Done(usize),
}

/// Writes a progress report to stdout and flushes it, so that the test sees
/// it before the next step begins.
pub fn report(report: Report) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match report {
        Report::Progress(position) => writeln!(stdout, "progress {position}")?,
        Report::Done(position) => writeln!(stdout, "done {position}")?,
    }
    stdout.flush()
}

/// Parses a line written by [`report`].
pub fn parse_report(line: &str) -> Option<Report> {
    let (kind, position) = line.split_once(' ')?;
    let position = position.parse().ok()?;
    match kind {
        "progress" => Some(Report::Progress(position)),
        "done" => Some(Report::Done(position)),
        _ => None,
    }
}

/// The registry both sides use.
pub fn registry() -> SuiteRegistry {
    let mut registry = SuiteRegistry::new();
    // Registering into an empty registry cannot fail.
    let _ = confidant_aes_gcm::register(&mut registry);
    registry
}

/// The session config both sides use.
pub fn config() -> SessionConfig {
    SessionConfig::default()
        .with_max_messages_per_epoch(MESSAGES_PER_EPOCH)
        .with_previous_epoch_grace(u64::MAX)
}

/// A fresh session of `role`, as X3DH would have left it (a fixed secret:
/// the crash tests are about storage, not key agreement).
pub fn fresh_session(role: Role) -> Result<Session, Box<dyn std::error::Error>> {
    let agreed = AgreedSecret::new([0x5C; 32], vec![0xA1; 64], None);
    let suite = confidant_aes_gcm::aes_256_gcm_lfsr();
    Ok(Session::new(
        role,
        ConnectionId::new(CONNECTION)?,
        suite,
        &agreed,
        config(),
    )?)
}

/// Opens (or creates) a crash-test process's store and its durable session:
/// loaded from the store after a restart, fresh on the first run.
pub fn open_durable(
    store_path: &Path,
    role: Role,
) -> Result<(RedbStore, DurableSession), Box<dyn std::error::Error>> {
    let store = RedbStore::open_or_create(store_path, StoreOptions::default())?;
    let connection = ConnectionId::new(CONNECTION)?;
    let durable = match DurableSession::load(&store, &registry(), &connection, RESERVATION_BLOCK)? {
        Some(durable) => durable,
        None => DurableSession::create(
            &store,
            fresh_session(role)?,
            WriteBatch::new(),
            RESERVATION_BLOCK,
        )?,
    };
    Ok((store, durable))
}

/// Appends one envelope to the wire file in a single write.
pub fn append(path: &Path, body: Body) -> io::Result<()> {
    let bytes = wire::encode_envelope(body);
    let mut record = Vec::with_capacity(4 + bytes.len());
    record.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    record.extend_from_slice(&bytes);
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(&record)
}

/// Splits the wire file into complete records; returns them and the length
/// of the complete prefix.
fn records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 4) {
        let Ok(header) = <[u8; 4]>::try_from(header) else {
            break;
        };
        let len = u32::from_be_bytes(header) as usize;
        let Some(record) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        records.push(record);
        at += 4 + len;
    }
    (records, at)
}

/// Every complete envelope in the wire file, decoded.
pub fn read_wire(path: &Path) -> Result<Vec<Body>, Box<dyn std::error::Error>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    }
    let (records, _) = records(&bytes);
    records
        .into_iter()
        .map(|record| {
            Ok(wire::decode_envelope(
                record,
                wire::DEFAULT_MAX_ENVELOPE_LEN,
            )?)
        })
        .collect()
}

/// Cuts off a partial last record left by a killed writer. Returns how many
/// bytes were cut.
pub fn repair_wire(path: &Path) -> io::Result<usize> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let (_, complete) = records(&bytes);
    if complete < bytes.len() {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(complete as u64)?;
    }
    Ok(bytes.len() - complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use confidant_core::wire::EncryptedMessage;

    #[test]
    fn partial_records_are_ignored_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wire");
        for counter in 0..3 {
            append(
                &path,
                Body::Message(EncryptedMessage {
                    counter,
                    ..Default::default()
                }),
            )
            .unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        assert_eq!(read_wire(&path).unwrap().len(), 3);
        assert_eq!(repair_wire(&path).unwrap(), 6);
        assert_eq!(repair_wire(&path).unwrap(), 0);
        assert_eq!(read_wire(&path).unwrap().len(), 3);
    }

    #[test]
    fn reports_parse() {
        assert_eq!(parse_report("progress 12"), Some(Report::Progress(12)));
        assert_eq!(parse_report("done 7"), Some(Report::Done(7)));
        assert_eq!(parse_report("done"), None);
        assert_eq!(parse_report("sent 3"), None);
    }
}
