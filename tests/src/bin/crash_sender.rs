//! The sending side of the crash test: seals messages with a durable session
//! on a redb store and appends each envelope to the wire file, updating its
//! key whenever the session asks, until killed or, with `--until N`, until
//! the wire holds N envelopes. It reports `progress N` on stdout after each
//! envelope (N: envelopes on the wire) and `done N` when it reaches
//! `--until`.
//!
//! `crash_sender STORE WIRE [--until N]`

use confidant_core::Role;
use confidant_core::wire::envelope::Body;
use confidant_session::KeyStatus;
use confidant_tests::crash::{self, Report};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let store_path = PathBuf::from(
        args.next()
            .ok_or("usage: crash_sender STORE WIRE [--until N]")?,
    );
    let wire_path = PathBuf::from(args.next().ok_or("missing WIRE")?);
    let until: Option<usize> = match (args.next().as_deref(), args.next()) {
        (Some("--until"), Some(n)) => Some(n.parse()?),
        _ => None,
    };

    // A frame half-written when the last run was killed never reached the
    // relay.
    crash::repair_wire(&wire_path)?;
    let mut sent = crash::read_wire(&wire_path)?.len();

    let (store, mut durable) = crash::open_durable(&store_path, Role::Initiator)?;

    let pid = std::process::id();
    let mut sequence = 0u64;
    while until.is_none_or(|until| sent < until) {
        if durable.session().key_status() != KeyStatus::Fresh {
            let update = durable.update_sending_key(&store, false)?;
            crash::append(&wire_path, Body::KeyUpdate(update))?;
        } else {
            let plaintext = format!("message {pid}-{sequence}");
            sequence += 1;
            let message = durable.seal(&store, plaintext.as_bytes())?;
            crash::append(&wire_path, Body::Message(message))?;
        }
        sent += 1;
        crash::report(Report::Progress(sent))?;
    }
    crash::report(Report::Done(sent))?;
    Ok(())
}
