//! # holder
//!
//! A Confidant holder (a wallet), as a user would write one: it accepts an
//! issuer's invitation, refuses a bundle whose identity key is not the
//! invitation's, stores each credential it receives in a redb file of its
//! own, acknowledges it, and answers the issuer.
//!
//! The binary is a thin wrapper around [`run`], which takes the command
//! line, so tests can run the holder inside binaries of their own.
//!
//! ## Command line
//!
//! ```text
//! holder --data-dir DIR accept (--invitation TEXT | --invitation-file PATH) [--greeting TEXT] [--exit-after-credentials N]
//! holder --data-dir DIR run [--exit-after-credentials N]
//! holder --data-dir DIR list
//! ```
//!
//! - `accept` reads the invitation (the text an issuer shows as a QR code)
//!   and checks it (version, checksum: a damaged one is refused before any
//!   network call), refuses one this holder accepted already (naming
//!   `run`), asks the connector whether the token is unused
//!   (`GetConnectionTokenInfo`), and only then writes anything: it starts
//!   the node with a transport to that connector, joins the connection
//!   (the greeting, default `hello from the holder`, is the issuer's first
//!   message from this holder), stores the connector's URL in
//!   `DIR/connector.url` and the token's hash once the join succeeded,
//!   then runs the loop below.
//! - `run` starts the node again and continues every existing connection
//!   with the same loop.
//! - `list` prints the stored credentials without starting a node (an
//!   error for a directory that is missing, not a directory, or holds no
//!   holder state).
//!
//! The loop runs until SIGTERM or Ctrl-C (a graceful shutdown), or, with
//! `--exit-after-credentials N`, until `N` credentials were handled in this
//! run (a credential reported again after a restart counts, as it is
//! handled again: acknowledged and answered). For each message it:
//! 1. parses it as JSON (anything else is reported, acknowledged and
//!    ignored);
//! 2. stores it in `DIR/credentials.redb` under (connection id, inbox
//!    number), committed durably together with the answer it owes; a
//!    message reported again after a restart keeps its inbox number and is
//!    stored once, and so is the same JSON sent again on the same
//!    connection (an issuer that crashed before recording the sending);
//! 3. acknowledges it to the node (`Node::acknowledge`), only then;
//! 4. answers the issuer with `received credential HASH` (the first 8 hex
//!    digits of the credential's SHA-256), and forgets the owed answer once
//!    the connector has it; answers still owed after a crash are sent when
//!    the loop starts (a crash right after sending one sends it once more:
//!    the issuer reports a repeated answer once);
//! 5. asks the connector how many messages still wait for this holder
//!    there (the credential itself was deleted from the connector when the
//!    node stored it).
//!
//! ## What it prints
//!
//! One line per step, on stdout (tests read them; they stay stable). `ID`
//! is a connection id, `HEX` a 32-byte key in lowercase hex, `SEQ` an inbox
//! number, `JSON` a credential with control characters escaped.
//!
//! | line | when |
//! |---|---|
//! | `invitation: connector URL, issuer identity key HEX` | `accept` read the invitation |
//! | `holder identity key: HEX` | the node started |
//! | `joined connection ID` | `accept` joined the connection at the connector |
//! | `connection ID: STATE` | `run`: each stored connection (`AwaitingBundle`, `Established`, …) |
//! | `waiting for the issuer (Ctrl-C to stop)` | the loop is ready |
//! | `REFUSED bundle on connection ID: REASON` | `Event::HandshakeFailed`: for example a bundle whose identity key is not the invitation's (a relay swapped it); the connection keeps waiting for a valid one |
//! | `connected: connection ID, issuer identity key HEX (X3DH done)` | `Event::Connected` |
//! | `credential received on connection ID (message #SEQ): JSON` | a credential, now durably stored |
//! | `credential received again on connection ID (message #SEQ): already stored` | the same message reported again after a restart, or the same credential sent again |
//! | `message #SEQ on connection ID is not a JSON credential (REASON); ignored` | not JSON |
//! | `acknowledged message #SEQ` | `Node::acknowledge` returned |
//! | `replied on connection ID: received credential HASH` | the connector has the answer (also at start, for an answer a crash kept from leaving) |
//! | `deleted from the connector (N waiting)` | `N` messages still wait for this holder at the connector |
//! | `could not ask the connector what waits: REASON` | instead of the line above, when the connector did not answer |
//! | `exiting after N credentials` | `--exit-after-credentials N` was reached |
//! | `SIGTERM: shutting down` / `Ctrl-C: shutting down` | a signal arrived |
//! | `N credentials stored` then `credential on connection ID (message #SEQ): JSON` per credential | `list` |
//!
//! Errors go to stderr, and the exit code is then nonzero. The node's own
//! warnings are logged to stderr (`RUST_LOG` sets the level, default
//! `warn`). Key seeds are never printed.
//!
//! ## Files in the data directory
//!
//! | file | what |
//! |---|---|
//! | `node.redb` | the node's store: identity key, pre-keys, sessions, inbox (durable commits) |
//! | `relay.key` | the 32-byte Ed25519 seed the connector knows this party by (mode 0600, created from OS randomness) |
//! | `connector.url` | the connector's URL, from the invitation |
//! | `credentials.redb` | mode 0600: the credentials received, the answers still owed for them, and the invitations accepted ([`credentials`]) |

pub mod credentials;
pub mod files;

use clap::{ArgGroup, Parser, Subcommand};
use confidant_actors::{Event, Events, Invitation, Node, NodeConfig};
use confidant_connector::proto::GetMessagesPaginatedRequest;
use confidant_connector::{ClientTls, ConnectorTransport, RequestSigner};
use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_store::{RedbStore, StoreOptions};
use confidant_x3dh_mlkem768::X3dhMlKem768;
use credentials::CredentialStore;
use files::{CREDENTIALS, Error, NODE_STORE};
use sha2::{Digest as _, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The holder's command line.
#[derive(Debug, Parser)]
#[command(
    name = "holder",
    version,
    about = "A Confidant holder: accepts an invitation, stores the credentials it receives"
)]
pub struct Args {
    /// Directory of the holder's state (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Trust only this CA certificate (PEM) for an https:// connector,
    /// instead of the system's roots.
    #[arg(long, value_name = "PATH")]
    pub connector_ca: Option<PathBuf>,
    /// Also connect to issuers that only offer classical X3DH. By default
    /// the holder requires the post-quantum hybrid (X3DH + ML-KEM-768) and
    /// refuses a bundle without it, which is also how it catches a relay
    /// that strips the hybrid out.
    #[arg(long)]
    pub allow_classical: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The holder's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Accept an issuer's invitation, then wait for credentials.
    #[command(group(
        ArgGroup::new("source")
            .required(true)
            .args(["invitation", "invitation_file"])
    ))]
    Accept {
        /// The invitation's text (`confidant1:…`).
        #[arg(long, value_name = "TEXT", value_parser = parse_invitation)]
        invitation: Option<Invitation>,
        /// A file holding the invitation's text.
        #[arg(long, value_name = "PATH")]
        invitation_file: Option<PathBuf>,
        /// The first message to the issuer, sent with the handshake.
        #[arg(long, value_name = "TEXT", default_value = "hello from the holder")]
        greeting: String,
        /// Exit after this many credentials (otherwise run until SIGTERM or
        /// Ctrl-C).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        exit_after_credentials: Option<u64>,
    },
    /// Continue the existing connections: wait for credentials.
    Run {
        /// Exit after this many credentials (otherwise run until SIGTERM or
        /// Ctrl-C).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        exit_after_credentials: Option<u64>,
    },
    /// List the stored credentials (without starting a node).
    List,
}

/// Reads an invitation's text (clap's value parser for `--invitation`).
pub fn parse_invitation(text: &str) -> Result<Invitation, String> {
    Invitation::from_text(text).map_err(|error| error.to_string())
}

/// Runs the holder with command-line `args` (the first is the program
/// name). See the [crate documentation](crate) for the commands and what
/// they print.
pub async fn run<I, T>(args: I) -> Result<(), Box<dyn std::error::Error>>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::try_parse_from(args)?;
    init_logs();
    run_args(args).await.map_err(|error| error as _)
}

/// Runs the holder with parsed arguments.
pub async fn run_args(args: Args) -> Result<(), Error> {
    let dir = args.data_dir;
    let tls = match &args.connector_ca {
        Some(path) => ClientTls::from_ca_file(path)?,
        None => ClientTls::system_roots(),
    };
    match args.command {
        Command::Accept {
            invitation,
            invitation_file,
            greeting,
            exit_after_credentials,
        } => {
            let invitation = match (invitation, invitation_file) {
                (Some(invitation), _) => invitation,
                (None, Some(path)) => read_invitation(&path)?,
                (None, None) => return Err("give --invitation or --invitation-file".into()),
            };
            println!(
                "invitation: connector {}, issuer identity key {}",
                invitation.relay,
                hex::encode(invitation.identity_key)
            );
            // Nothing is written, and the token is not spent, until the
            // invitation and this holder's directory pass every check.
            check_before_accepting(&dir, &invitation, &tls).await?;
            let mut signals = Signals::new()?;
            let mut holder = Holder::start(
                &dir,
                &invitation.relay,
                &tls,
                exit_after_credentials,
                args.allow_classical,
            )
            .await?;
            let result = async {
                let connection = holder
                    .node
                    .accept_invitation(&invitation, greeting)
                    .await
                    .map_err(|error| {
                        format!(
                            "cannot accept the invitation: {error} (the connector URL was not \
                             stored: accept can be run again)"
                        )
                    })?;
                // Only a joined connection makes the connector this
                // holder's.
                files::remember_connector_url(&dir, &invitation.relay)?;
                holder
                    .credentials
                    .record_invitation(&invitation_key(&invitation), connection.as_str())?;
                println!("joined connection {connection}");
                tracing::info!(connection = %connection, "joined the connection at the connector");
                holder.run(&mut signals).await
            }
            .await;
            holder.stop(result).await
        }
        Command::Run {
            exit_after_credentials,
        } => {
            let url = files::connector_url(&dir)?.ok_or_else(|| {
                format!(
                    "{} has no connector URL: accept an invitation first \
                     (holder --data-dir DIR accept --invitation TEXT)",
                    dir.display()
                )
            })?;
            let mut signals = Signals::new()?;
            let mut holder = Holder::start(
                &dir,
                &url,
                &tls,
                exit_after_credentials,
                args.allow_classical,
            )
            .await?;
            let result = async {
                for connection in holder.node.connections().await? {
                    println!(
                        "connection {}: {:?}",
                        connection.connection_id, connection.state
                    );
                }
                holder.run(&mut signals).await
            }
            .await;
            holder.stop(result).await
        }
        Command::List => {
            files::existing_holder_dir(&dir)?;
            let stored = credentials::list(&dir.join(CREDENTIALS))?;
            let plural = if stored.len() == 1 { "" } else { "s" };
            println!("{} credential{plural} stored", stored.len());
            for credential in stored {
                println!(
                    "credential on connection {} (message #{}): {}",
                    credential.connection_id,
                    credential.sequence,
                    printable(&credential.json)
                );
            }
            Ok(())
        }
    }
}

/// How the holder remembers an invitation it accepted: the SHA-256 of its
/// token, in hex (the token itself is a secret until it is used).
fn invitation_key(invitation: &Invitation) -> String {
    hex::encode(Sha256::digest(invitation.token.as_bytes()))
}

/// Everything `accept` checks before it writes anything or spends the
/// token: the connector URL's form, that this holder did not accept the
/// invitation already, that it uses no other connector, and that the
/// connector is reachable and has the token unused.
async fn check_before_accepting(
    dir: &Path,
    invitation: &Invitation,
    tls: &ClientTls,
) -> Result<(), Error> {
    files::check_connector_url_form(&invitation.relay)?;
    let again = |connection: &str| -> Error {
        format!(
            "this invitation was already accepted (connection {connection}); \
             `holder --data-dir {} run` continues it",
            dir.display()
        )
        .into()
    };
    if let Some(connection) =
        credentials::accepted_invitation(&dir.join(CREDENTIALS), &invitation_key(invitation))?
    {
        return Err(again(&connection));
    }
    files::check_connector_url(dir, &invitation.relay)?;
    // An unsigned question: no key of this holder is needed (or created)
    // for it.
    let mut probe_seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(probe_seed.as_mut_slice())
        .map_err(|error| format!("no randomness: {error}"))?;
    let client = confidant_connector::SignedClient::with_tls(
        &invitation.relay,
        RequestSigner::from_seed(&probe_seed),
        tls,
    )?;
    match client.get_connection_token_info(&invitation.token).await {
        Ok(info) if info.used => Err(format!(
            "this invitation was already used: by another holder, or by an earlier `accept` \
             with this --data-dir that was interrupted before it finished (then \
             `holder --data-dir {} run` lists and continues the connection); otherwise ask \
             the issuer for a new invitation",
            dir.display()
        )
        .into()),
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Err(format!(
            "the connector at {} does not know this invitation's token (revoked, or the \
             invitation is for another connector): ask the issuer for a new invitation",
            invitation.relay
        )
        .into()),
        Err(status) => Err(format!(
            "cannot reach the connector at {}: {}; nothing was written, run accept again \
             when it is up",
            invitation.relay,
            confidant_connector::client::describe_status(&status)
        )
        .into()),
    }
}

fn read_invitation(path: &Path) -> Result<Invitation, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the invitation {}: {error}", path.display()))?;
    Invitation::from_text(&text).map_err(|error| format!("{}: {error}", path.display()).into())
}

fn init_logs() {
    let filter = confidant_connector::cli::log_filter("warn", &["holder"]);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The cipher suites the node offers and accepts.
fn suites() -> Result<SuiteRegistry, Error> {
    let mut suites = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut suites)?;
    confidant_chacha20poly1305::register(&mut suites)?;
    Ok(suites)
}

/// The connection an event is about.
fn event_connection(event: &Event) -> Option<&ConnectionId> {
    match event {
        Event::Joined { connection_id }
        | Event::Connected { connection_id, .. }
        | Event::HandshakeFailed { connection_id, .. }
        | Event::DeliveryDropped { connection_id, .. } => Some(connection_id),
        Event::Message(message) => Some(&message.connection_id),
        _ => None,
    }
}

/// The first 8 hex digits of the credential's SHA-256: how the holder
/// names a credential in its answer.
pub fn short_hash(json: &str) -> String {
    hex::encode(
        Sha256::digest(json.as_bytes())
            .iter()
            .take(4)
            .copied()
            .collect::<Vec<u8>>(),
    )
}

/// `text` with control characters escaped, safe to print on a terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// SIGTERM and Ctrl-C.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next signal; returns its name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "Ctrl-C",
        }
    }
}

/// A running holder node and what its loop needs.
struct Holder {
    node: Node,
    events: Events,
    /// A clone of the node's transport, to ask the connector what waits.
    transport: ConnectorTransport,
    credentials: CredentialStore,
    handled: u64,
    exit_after: Option<u64>,
}

impl Holder {
    /// Starts the node on `DIR/node.redb`, talking to the connector at
    /// `url` (verified by `tls` if https) under the key in `DIR/relay.key`,
    /// and opens the credentials.
    async fn start(
        dir: &Path,
        url: &str,
        tls: &ClientTls,
        exit_after: Option<u64>,
        allow_classical: bool,
    ) -> Result<Self, Error> {
        files::create_data_dir(dir)?;
        let credentials = CredentialStore::open_or_create(&dir.join(CREDENTIALS))?;
        let seed = files::relay_seed(dir)?;
        let transport = ConnectorTransport::with_tls(url, RequestSigner::from_seed(&seed), tls)?;
        let path = dir.join(NODE_STORE);
        let store = RedbStore::open_or_create(&path, StoreOptions::default())
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        let (node, events) = Node::builder()
            .store(std::sync::Arc::new(store))
            .suites(suites()?)
            .hybrid_key_agreement(X3dhMlKem768::default().with_require_hybrid(!allow_classical))
            .transport(transport.clone())
            .config(NodeConfig::default())
            .start()
            .await?;
        println!("holder identity key: {}", hex::encode(node.identity_key()));
        Ok(Self {
            node,
            events,
            transport,
            credentials,
            handled: 0,
            exit_after,
        })
    }

    /// Shuts the node down gracefully, whatever `result` is, and returns
    /// `result` (or the shutdown's error).
    async fn stop(self, result: Result<(), Error>) -> Result<(), Error> {
        let Self { node, events, .. } = self;
        drop(events);
        let stopped = node.shutdown().await;
        result?;
        stopped?;
        Ok(())
    }

    async fn run(&mut self, signals: &mut Signals) -> Result<(), Error> {
        // Answers owed from before a crash.
        self.send_pending_replies().await?;
        println!("waiting for the issuer (Ctrl-C to stop)");
        loop {
            let event = tokio::select! {
                event = self.events.next() => event.ok_or("the node stopped unexpectedly")?,
                name = signals.next() => {
                    println!("{name}: shutting down");
                    return Ok(());
                }
            };
            if self.handle(event).await? {
                return Ok(());
            }
        }
    }

    /// Handles one event (logged in a span of its connection); `true` when
    /// it is time to exit.
    async fn handle(&mut self, event: Event) -> Result<bool, Error> {
        let span = match event_connection(&event) {
            Some(id) => tracing::info_span!("connection", id = %id),
            None => tracing::info_span!("event"),
        };
        tracing::Instrument::instrument(self.handle_in_span(event), span).await
    }

    async fn handle_in_span(&mut self, event: Event) -> Result<bool, Error> {
        match event {
            Event::HandshakeFailed {
                connection_id,
                error,
            } => {
                tracing::debug!(%error, kind = ?error, "bundle refused");
                println!(
                    "REFUSED bundle on connection {connection_id}: {}",
                    printable(&error.to_string())
                );
            }
            Event::Connected {
                connection_id,
                peer_identity,
                reset,
                post_quantum,
                ..
            } => {
                let agreement = if post_quantum {
                    "post-quantum X3DH + ML-KEM-768"
                } else {
                    "classical X3DH"
                };
                let how = if reset {
                    format!("{agreement} done, session replaced")
                } else {
                    format!("{agreement} done")
                };
                tracing::debug!(
                    issuer = %hex::encode(peer_identity),
                    reset,
                    "bundle checked against the invitation; X3DH done, connected"
                );
                println!(
                    "connected: connection {connection_id}, issuer identity key {} ({how})",
                    hex::encode(peer_identity)
                );
            }
            Event::Message(message) => return self.on_credential(message).await,
            Event::DeliveryDropped {
                connection_id,
                reason,
            } => {
                tracing::debug!(%reason, "delivery dropped");
                println!(
                    "dropped a delivery on connection {connection_id}: {}",
                    printable(&reason)
                );
            }
            other => println!("event: {other:?}"),
        }
        Ok(false)
    }

    async fn on_credential(
        &mut self,
        message: confidant_actors::IncomingMessage,
    ) -> Result<bool, Error> {
        let id = message.connection_id.clone();
        let sequence = message.sequence;
        tracing::debug!(sequence, bytes = message.plaintext.len(), "message opened");
        let json = match std::str::from_utf8(&message.plaintext)
            .map_err(|error| error.to_string())
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(text)
                    .map(|_| text.to_owned())
                    .map_err(|error| error.to_string())
            }) {
            Ok(json) => json,
            Err(reason) => {
                println!(
                    "message #{sequence} on connection {id} is not a JSON credential ({reason}); ignored"
                );
                self.node.acknowledge(&[sequence]).await?;
                println!("acknowledged message #{sequence}");
                return Ok(false);
            }
        };
        // Durable before the acknowledgement, with the answer owed for it: a
        // crash in between reports the message again, under the same number,
        // and it is stored once; a crash before the answer left sends it at
        // the next start.
        let reply = format!("received credential {}", short_hash(&json));
        if self
            .credentials
            .store(id.as_str(), sequence, &json, &reply)?
        {
            println!(
                "credential received on connection {id} (message #{sequence}): {}",
                printable(&json)
            );
        } else {
            println!(
                "credential received again on connection {id} (message #{sequence}): already stored"
            );
        }
        self.node.acknowledge(&[sequence]).await?;
        tracing::debug!(sequence, "credential stored and acknowledged");
        println!("acknowledged message #{sequence}");
        self.send_pending_replies().await?;
        match self.waiting_at_connector().await {
            Ok(waiting) => println!("deleted from the connector ({waiting} waiting)"),
            Err(error) => println!("could not ask the connector what waits: {error}"),
        }
        self.handled += 1;
        if let Some(limit) = self.exit_after
            && self.handled >= limit
        {
            let plural = if self.handled == 1 { "" } else { "s" };
            println!("exiting after {} credential{plural}", self.handled);
            return Ok(true);
        }
        Ok(false)
    }

    /// Sends every answer owed (see [`credentials`]), and forgets each once
    /// the connector has it. A crash in between sends it once more.
    async fn send_pending_replies(&self) -> Result<(), Error> {
        for reply in self.credentials.pending_replies()? {
            let id = ConnectionId::new(reply.connection_id.clone())
                .map_err(|error| format!("stored connection id: {error}"))?;
            self.node
                .send(&id, reply.text.clone())
                .await
                .map_err(|error| format!("cannot answer on connection {id}: {error}"))?;
            self.credentials
                .reply_sent(&reply.connection_id, reply.sequence)?;
            println!("replied on connection {id}: {}", reply.text);
        }
        Ok(())
    }

    /// How many messages wait for this holder at the connector.
    async fn waiting_at_connector(&self) -> Result<usize, Error> {
        const PAGE: u32 = 1000;
        const MAX_PAGES: usize = 100;
        let client = self.transport.client();
        let mut cursor = 0;
        let mut waiting = 0;
        for _ in 0..MAX_PAGES {
            let page = client
                .get_messages_paginated(GetMessagesPaginatedRequest {
                    last_seen_message_id: cursor,
                    limit: PAGE,
                })
                .await?;
            waiting += page.messages.len();
            match page.messages.last() {
                Some(last) if page.messages.len() >= PAGE as usize => cursor = last.id,
                _ => break,
            }
        }
        Ok(waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["holder", "--data-dir", "/tmp/h"].iter().chain(args))
    }

    #[test]
    fn accept_needs_exactly_one_well_formed_invitation() {
        let invitation = Invitation {
            relay: "http://127.0.0.1:50051".into(),
            token: "q1w2e3r4t5y6u7i8o9p0aa".into(),
            identity_key: [0x5A; 32],
            hybrid: true,
        };
        let text = invitation.to_text();
        let text = text.as_str();
        match parse(&[
            "accept",
            "--invitation",
            text,
            "--exit-after-credentials",
            "1",
        ])
        .unwrap()
        .command
        {
            Command::Accept {
                invitation: Some(parsed),
                invitation_file: None,
                greeting,
                exit_after_credentials: Some(1),
            } => {
                assert_eq!(parsed, invitation);
                assert_eq!(greeting, "hello from the holder");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["accept"]).is_err(), "an invitation is required");
        assert!(
            parse(&["accept", "--invitation", text, "--invitation-file", "x"]).is_err(),
            "only one"
        );
        let error = parse(&["accept", "--invitation", "confidant1:AAAA"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unsupported invitation version 1"),
            "{error}"
        );
        assert!(matches!(
            parse(&["accept", "--invitation-file", "inv.txt", "--greeting", "hi"])
                .unwrap()
                .command,
            Command::Accept {
                invitation: None,
                invitation_file: Some(_),
                ..
            }
        ));
        assert!(matches!(
            parse(&["run"]).unwrap().command,
            Command::Run { .. }
        ));
        assert!(matches!(parse(&["list"]).unwrap().command, Command::List));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_without_an_accepted_invitation_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let error = run(["holder", "--data-dir", data, "run"])
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("accept an invitation first"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_prints_stored_credentials_without_a_node() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        // A directory without holder state is an error, not an empty list.
        let error = run(["holder", "--data-dir", data, "list"])
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("holds no holder state"),
            "{error}"
        );
        let store = CredentialStore::open_or_create(&dir.path().join(CREDENTIALS)).unwrap();
        store
            .store("conn", 1, "{\"degree\":\"BSc\"}", "reply")
            .unwrap();
        drop(store);
        run(["holder", "--data-dir", data, "list"]).await.unwrap();
        assert!(!dir.path().join(NODE_STORE).exists(), "no node was started");
    }

    #[test]
    fn hashes_are_short_and_text_is_made_printable() {
        assert_eq!(short_hash("{}"), "44136fa3");
        assert_eq!(printable("a\u{7}b"), "a\\u{7}b");
    }

    #[test]
    fn the_future_of_run_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let future = run(["holder", "--help"]);
        assert_send(&future);
    }
}
