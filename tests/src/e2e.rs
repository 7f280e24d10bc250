//! The pieces of the end-to-end tests that run the real programs: the
//! connector as a child process, and helpers around the apps' data
//! directories.

use crate::process::{HarnessError, Process};
use confidant_connector::proto::{self, received_message};
use confidant_connector::{RequestSigner, SignedClient};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a program gets to start or stop: generous, since the tests may
/// run on a loaded machine.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// The connector, running as a child process on a loopback port.
#[derive(Debug)]
pub struct ConnectorProcess {
    process: Process,
    url: String,
    data_dir: PathBuf,
}

impl ConnectorProcess {
    /// Starts `binary` (the connector's command line) with its mailbox file
    /// under `data_dir`, on a free loopback port, and waits until it
    /// listens.
    pub fn start(binary: impl AsRef<Path>, data_dir: &Path) -> Result<Self, HarnessError> {
        Self::start_with(binary, data_dir, &[])
    }

    /// [`ConnectorProcess::start`] with more command-line arguments.
    pub fn start_with(
        binary: impl AsRef<Path>,
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<Self, HarnessError> {
        let data = data_dir.to_string_lossy().into_owned();
        let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", data.as_str()];
        args.extend_from_slice(extra);
        let process = Process::spawn("connector", binary, &args)?;
        let line = process.wait_for_line("`listening on`", START_LIMIT, |line| {
            line.starts_with("listening on ")
        })?;
        let address = line.trim_start_matches("listening on ").trim();
        Ok(Self {
            process,
            url: format!("http://{address}"),
            data_dir: data_dir.to_owned(),
        })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its mailbox file.
    pub fn mailbox_path(&self) -> PathBuf {
        self.data_dir.join("connector.redb")
    }

    /// The process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Stops it with SIGTERM and requires a clean exit (status 0).
    pub fn stop(mut self) -> Result<(), HarnessError> {
        self.process.terminate()?;
        self.process.wait_success(START_LIMIT)
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The key a party (issuer or holder) is known by at the connector: the
/// seed in its `DIR/relay.key`.
pub fn relay_signer(party_dir: &Path) -> Result<RequestSigner, HarnessError> {
    relay_signer_with(party_dir, None)
}

/// [`relay_signer`] for a party whose `relay.key` is sealed under the
/// at-rest key `kek` (the bindings' nodes opened with one).
pub fn relay_signer_with(
    party_dir: &Path,
    kek: Option<&confidant_store::KeyEncryptionKey>,
) -> Result<RequestSigner, HarnessError> {
    let path = party_dir.join("relay.key");
    let bytes = std::fs::read(&path)
        .map_err(|error| HarnessError::new(format!("cannot read {}: {error}", path.display())))?;
    let bytes = match kek {
        None => zeroize::Zeroizing::new(bytes),
        Some(kek) => confidant_store::at_rest::open_secret(kek, b"relay.key", &bytes)
            .map_err(|error| HarnessError::new(format!("{}: {error}", path.display())))?,
    };
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| HarnessError::new(format!("{} is not a 32-byte seed", path.display())))?;
    Ok(RequestSigner::from_seed(&seed))
}

/// Everything that waits for the party of `party_dir` at the connector at
/// `url`, read with a signed `GetMessagesPaginated` (no acknowledgement).
pub fn waiting_for(url: &str, party_dir: &Path) -> Result<Vec<Waiting>, HarnessError> {
    waiting_for_with(url, party_dir, None)
}

/// [`waiting_for`] for a party whose `relay.key` is sealed under `kek`.
pub fn waiting_for_with(
    url: &str,
    party_dir: &Path,
    kek: Option<&confidant_store::KeyEncryptionKey>,
) -> Result<Vec<Waiting>, HarnessError> {
    let signer = relay_signer_with(party_dir, kek)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| HarnessError::new(error.to_string()))?;
    // The client's channel needs the runtime to exist in.
    let _context = runtime.enter();
    let client =
        SignedClient::new(url, signer).map_err(|error| HarnessError::new(error.to_string()))?;
    let page = runtime
        .block_on(
            client.get_messages_paginated(proto::GetMessagesPaginatedRequest {
                last_seen_message_id: 0,
                limit: 1000,
            }),
        )
        .map_err(|status| HarnessError::new(format!("GetMessagesPaginated: {status}")))?;
    Ok(page.messages.into_iter().map(Waiting::from).collect())
}

/// A message waiting at the connector, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// An envelope from the other party, with the name of its body
    /// (`bundle`, `initial`, `message`, …, or `undecodable`).
    Envelope(&'static str),
    /// Someone used the party's token.
    ConnectionAdded,
    /// The other party revoked the connection.
    ConnectionRevoked,
}

impl From<proto::ReceivedMessage> for Waiting {
    fn from(message: proto::ReceivedMessage) -> Self {
        use confidant_core::wire::{self, envelope::Body};
        match message.content {
            Some(received_message::Content::Envelope(envelope)) => Self::Envelope(
                match wire::decode_envelope(&envelope, wire::DEFAULT_MAX_ENVELOPE_LEN) {
                    Ok(Body::Bundle(_)) => "bundle",
                    Ok(Body::Initial(_)) => "initial",
                    Ok(Body::Message(_)) => "message",
                    Ok(Body::KeyUpdate(_)) => "key update",
                    Ok(Body::Reset(_)) => "reset",
                    Err(_) => "undecodable",
                },
            ),
            Some(received_message::Content::ConnectionAdded(_)) => Self::ConnectionAdded,
            Some(received_message::Content::ConnectionRevoked(_)) | None => Self::ConnectionRevoked,
        }
    }
}

/// A connection id at the start of `text` (up to a space, comma or colon).
pub fn connection_id_in(text: &str) -> &str {
    text.split([' ', ',', ':']).next().unwrap_or_default()
}

/// Whether a test that needs outside tools can run: `missing` names what
/// is not there. With nothing missing, `true`; otherwise a loud skip
/// (`false`), except under `CI=true`, where a skip is a failure (a panic
/// naming what is missing).
///
/// # Panics
///
/// Under `CI=true` when something is missing.
#[allow(clippy::panic)]
pub fn ready_or_skip(test: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: missing {}, and CI=true forbids skipping",
            missing.join(", ")
        );
    }
    eprintln!("{test}: SKIPPED, missing {}", missing.join(", "));
    false
}
