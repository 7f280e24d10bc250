//! The receiving side of the crash test: reads the wire file from the start
//! (as a connector redelivers everything not acknowledged), opens envelopes
//! in small batches with a durable session on a redb store, and commits each
//! batch's replay window and inbox entries in one transaction. It reports
//! `progress N` on stdout after each commit (N: the wire position up to which
//! envelopes are handled) and `done N` when it has reached the end of the
//! wire (N envelopes).
//!
//! `crash_receiver STORE WIRE`

use confidant_core::Role;
use confidant_core::wire::envelope::Body;
use confidant_store::{RawStore, WriteBatch};
use confidant_tests::crash::{self, Report};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let store_path = PathBuf::from(args.next().ok_or("usage: crash_receiver STORE WIRE")?);
    let wire_path = PathBuf::from(args.next().ok_or("missing WIRE")?);

    let (store, mut durable) = crash::open_durable(&store_path, Role::Responder)?;

    let envelopes = crash::read_wire(&wire_path)?;
    let mut position = 0;
    for chunk in envelopes.chunks(crash::RECEIVER_BATCH) {
        position += chunk.len();
        let mut batch = WriteBatch::new();
        for body in chunk.iter().cloned() {
            // Refusals (duplicates of what an earlier run stored) change
            // nothing and are expected after a restart.
            match body {
                Body::Message(message) => {
                    let _ = durable.open_into(message, &mut batch);
                }
                Body::KeyUpdate(update) => {
                    let _ = durable.open_key_update_into(update);
                }
                _ => return Err("unexpected envelope on the wire".into()),
            }
        }
        durable.stage(&mut batch)?;
        if batch.is_empty() {
            continue;
        }
        match store.commit(batch) {
            Ok(_) => {
                durable.committed();
                crash::report(Report::Progress(position))?;
            }
            Err(error) => {
                durable.commit_failed();
                return Err(error.into());
            }
        }
    }
    crash::report(Report::Done(envelopes.len()))?;
    Ok(())
}
