//! # issuer
//!
//! A Confidant issuer, as a user would write one: it shows an invitation
//! (text and QR code), and sends a credential (JSON) to every holder that
//! connects through the connector, end-to-end encrypted after X3DH.
//!
//! The binary is a thin wrapper around [`run`], which takes the command
//! line, so tests can run the issuer inside binaries of their own.
//!
//! ## Command line
//!
//! ```text
//! issuer --data-dir DIR --connector URL invite
//! issuer --data-dir DIR --connector URL serve --credential JSON [--invite] [--exit-after-replies N]
//! ```
//!
//! - `invite` starts the node, creates an invitation at the connector,
//!   prints it as text and as a QR code, writes the text to
//!   `DIR/invitation.txt` (atomically: a reader never sees half of it), and
//!   exits. The connector keeps the holder's join for the next `serve`.
//! - `serve` runs until SIGTERM or Ctrl-C (a graceful shutdown), or until
//!   `N` replies arrived with `--exit-after-replies N`. With `--invite` it
//!   first does what `invite` does. The credential must be valid JSON; it
//!   is refused with a clear error before anything starts otherwise. It is
//!   sent once to every connection, as soon as the connection is
//!   established. Which connections got it is remembered in
//!   `DIR/issuer-state.json`, so a restart neither sends it again nor
//!   forgets a connection that was established while the issuer was down
//!   (at start, every established connection without it gets it). A crash
//!   between handing it to the connector and recording that sends it once
//!   more after the restart: at least once, never lost (the holder stores
//!   the same credential on a connection once).
//! - Each reply is reported once: it is recorded in `issuer-state.json`
//!   before it is printed, and a reply already recorded on its connection
//!   (a holder answers again after a crash) is acknowledged and not
//!   reported again. `--exit-after-replies` counts new replies in this run.
//!
//! ## What it prints
//!
//! One line per step, on stdout (tests read them; they stay stable).
//! `ID` is a connection id, `HEX` a 32-byte key in lowercase hex, `TEXT` a
//! holder's message with control characters escaped.
//!
//! | line | when |
//! |---|---|
//! | `issuer identity key: HEX` | the node started (the key the invitations carry) |
//! | `invitation: confidant1:…` | an invitation was created; a QR code of the same text follows |
//! | `invitation written to PATH` | the invitation's text is in `DIR/invitation.txt` |
//! | `waiting for holders (Ctrl-C to stop)` | `serve` is ready |
//! | `joined: connection ID (a holder used the invitation; bundle sent)` | `Event::Joined` |
//! | `connected: connection ID, holder identity key HEX (X3DH done)` | `Event::Connected` |
//! | `credential sent on connection ID` | the connector has the sealed credential |
//! | `greeting from ID: TEXT` | the holder's first message (its greeting), acknowledged |
//! | `reply from ID: TEXT` | any later message from the holder, acknowledged |
//! | `repeated reply from ID ignored: TEXT` | a reply already reported (a holder that crashed after answering answers again), acknowledged |
//! | `REFUSED handshake on connection ID: REASON` | `Event::HandshakeFailed` |
//! | `dropped a delivery on connection ID: REASON` | `Event::DeliveryDropped` |
//! | `exiting after N replies` | `--exit-after-replies N` was reached |
//! | `SIGTERM: shutting down` / `Ctrl-C: shutting down` | a signal arrived |
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
//! | `invitation.txt` | the last invitation's text |
//! | `issuer-state.json` | which connections got the credential, each connection's greeting, and the replies reported |
//!
//! Running again with the same directory continues the same connections.

pub mod files;

use clap::{Parser, Subcommand};
use confidant_actors::{ConnectionState, Event, Events, Node, NodeConfig, Side};
use confidant_connector::{ClientTls, ConnectorTransport, RequestSigner};
use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_store::{RedbStore, StoreOptions};
use files::{Error, INVITATION, IssuerState, NODE_STORE};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The issuer's command line.
#[derive(Debug, Parser)]
#[command(
    name = "issuer",
    version,
    about = "A Confidant issuer: shows an invitation and sends a credential to every holder that connects"
)]
pub struct Args {
    /// Directory of the issuer's state (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// URL of the connector: https://HOST:PORT, or http://127.0.0.1:50051
    /// (plaintext, for loopback and tests).
    #[arg(long, value_name = "URL")]
    pub connector: String,
    /// Trust only this CA certificate (PEM) for an https:// connector,
    /// instead of the system's roots.
    #[arg(long, value_name = "PATH")]
    pub connector_ca: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The issuer's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an invitation, print it (text and QR code), write it to
    /// DIR/invitation.txt, and exit.
    Invite,
    /// Run: send the credential to every holder that connects, print and
    /// acknowledge their replies.
    Serve {
        /// The credential to send (JSON).
        #[arg(long, value_name = "JSON", value_parser = parse_credential)]
        credential: Credential,
        /// First create and show an invitation, as `invite` does.
        #[arg(long)]
        invite: bool,
        /// Exit after this many replies from holders (otherwise run until
        /// SIGTERM or Ctrl-C).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        exit_after_replies: Option<u64>,
    },
}

/// A credential: text that is valid JSON, sent as it was given (without
/// surrounding whitespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    /// The credential's JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that `text` is JSON (clap's value parser for `--credential`).
pub fn parse_credential(text: &str) -> Result<Credential, String> {
    let text = text.trim();
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|error| format!("the credential is not valid JSON: {error}"))?;
    Ok(Credential(text.to_owned()))
}

/// Runs the issuer with command-line `args` (the first is the program
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

/// Runs the issuer with parsed arguments.
pub async fn run_args(args: Args) -> Result<(), Error> {
    files::create_data_dir(&args.data_dir)?;
    match args.command {
        Command::Invite => {
            let (node, _events) = start_node(
                &args.data_dir,
                &args.connector,
                args.connector_ca.as_deref(),
            )
            .await?;
            let result = invite(&node, &args.data_dir).await;
            let stopped = node.shutdown().await;
            result?;
            stopped?;
            Ok(())
        }
        Command::Serve {
            credential,
            invite: invite_first,
            exit_after_replies,
        } => {
            // Listen for signals before the node starts, so that even an
            // early SIGTERM stops it gracefully.
            let mut signals = Signals::new()?;
            let (node, mut events) = start_node(
                &args.data_dir,
                &args.connector,
                args.connector_ca.as_deref(),
            )
            .await?;
            let mut server = Server {
                node: node.clone(),
                dir: args.data_dir.clone(),
                credential,
                state: IssuerState::load(&args.data_dir)?,
                replies: 0,
                exit_after_replies,
            };
            let result = server.serve(invite_first, &mut events, &mut signals).await;
            drop(server);
            let stopped = node.shutdown().await;
            result?;
            stopped?;
            Ok(())
        }
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
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

/// Starts the node on `DIR/node.redb`, talking to the connector at `url`
/// (verified against `ca` if given) under the key in `DIR/relay.key`.
async fn start_node(dir: &Path, url: &str, ca: Option<&Path>) -> Result<(Node, Events), Error> {
    let seed = files::relay_seed(dir)?;
    let tls = match ca {
        Some(path) => ClientTls::from_ca_file(path)?,
        None => ClientTls::system_roots(),
    };
    let transport = ConnectorTransport::with_tls(url, RequestSigner::from_seed(&seed), &tls)?;
    let path = dir.join(NODE_STORE);
    let store = RedbStore::open_or_create(&path, StoreOptions::default())
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let (node, events) = Node::builder()
        .store(std::sync::Arc::new(store))
        .suites(suites()?)
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(transport)
        .config(NodeConfig::default())
        .start()
        .await?;
    println!("issuer identity key: {}", hex::encode(node.identity_key()));
    Ok((node, events))
}

/// Creates an invitation, prints it and writes it to `DIR/invitation.txt`.
async fn invite(node: &Node, dir: &Path) -> Result<(), Error> {
    let invitation = node
        .create_invitation()
        .await
        .map_err(|error| format!("cannot create an invitation at the connector: {error}"))?;
    let text = invitation.to_text();
    println!("invitation: {text}");
    println!("{}", qr_code(&text)?);
    let path = dir.join(INVITATION);
    files::write_atomically(&path, format!("{text}\n").as_bytes(), 0o644)?;
    println!("invitation written to {}", path.display());
    Ok(())
}

/// `text` as a QR code of Unicode half blocks (two rows per line), light on
/// dark as most terminals show it.
pub fn qr_code(text: &str) -> Result<String, Error> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
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

struct Server {
    node: Node,
    dir: PathBuf,
    credential: Credential,
    state: IssuerState,
    replies: u64,
    exit_after_replies: Option<u64>,
}

impl Server {
    async fn serve(
        &mut self,
        invite_first: bool,
        events: &mut Events,
        signals: &mut Signals,
    ) -> Result<(), Error> {
        if invite_first {
            invite(&self.node, &self.dir).await?;
        }
        // Connections established while the issuer was down (or before it
        // could send) get the credential now.
        for connection in self.node.connections().await? {
            if connection.side == Side::Inviter
                && connection.state == ConnectionState::Established
                && !self.sent(&connection.connection_id)
            {
                self.send_credential(&connection.connection_id).await?;
            }
        }
        println!("waiting for holders (Ctrl-C to stop)");
        loop {
            let event = tokio::select! {
                event = events.next() => event.ok_or("the node stopped unexpectedly")?,
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

    fn sent(&self, connection: &ConnectionId) -> bool {
        self.state.credential_sent.contains(connection.as_str())
    }

    async fn send_credential(&mut self, connection: &ConnectionId) -> Result<(), Error> {
        self.node
            .send(connection, self.credential.as_str().as_bytes().to_vec())
            .await
            .map_err(|error| {
                format!(
                    "cannot send the credential on connection {connection}: {error} \
                     (it is sent when the issuer starts again)"
                )
            })?;
        self.state
            .credential_sent
            .insert(connection.as_str().to_owned());
        self.state.save_and_report(&self.dir, || {
            println!("credential sent on connection {connection}");
        })
    }

    /// Handles one event; `true` when it is time to exit.
    async fn handle(&mut self, event: Event) -> Result<bool, Error> {
        match event {
            Event::Joined { connection_id } => {
                println!(
                    "joined: connection {connection_id} (a holder used the invitation; bundle sent)"
                );
            }
            Event::Connected {
                connection_id,
                peer_identity,
                reset,
                ..
            } => {
                let how = if reset {
                    "X3DH done, session replaced"
                } else {
                    "X3DH done"
                };
                println!(
                    "connected: connection {connection_id}, holder identity key {} ({how})",
                    hex::encode(peer_identity)
                );
                if !self.sent(&connection_id) {
                    self.send_credential(&connection_id).await?;
                }
            }
            Event::HandshakeFailed {
                connection_id,
                reason,
            } => {
                println!(
                    "REFUSED handshake on connection {connection_id}: {}",
                    printable(&reason)
                );
            }
            Event::Message(message) => {
                let id = message.connection_id.as_str().to_owned();
                let text = printable(&String::from_utf8_lossy(&message.plaintext));
                let report_greeting = || println!("greeting from {id}: {text}");
                let greeting = match self.state.greetings.get(&id) {
                    Some(&sequence) if sequence == message.sequence => {
                        report_greeting();
                        true
                    }
                    Some(_) => false,
                    None => {
                        // The greeting is the first inbox entry of its
                        // connection: it is stored with the session.
                        self.state.greetings.insert(id.clone(), message.sequence);
                        self.state.save_and_report(&self.dir, report_greeting)?;
                        true
                    }
                };
                if greeting {
                    self.node.acknowledge(&[message.sequence]).await?;
                    return Ok(false);
                }
                // Recorded before it is reported: a holder that crashed right
                // after answering answers again, and a restarted issuer sees
                // the same inbox entry again; neither is reported twice.
                let new = self
                    .state
                    .replies
                    .entry(id.clone())
                    .or_default()
                    .insert(text.clone());
                if new {
                    self.state.save_and_report(&self.dir, || {
                        println!("reply from {id}: {text}");
                    })?;
                } else {
                    println!("repeated reply from {id} ignored: {text}");
                }
                self.node.acknowledge(&[message.sequence]).await?;
                if new {
                    self.replies += 1;
                    if let Some(limit) = self.exit_after_replies
                        && self.replies >= limit
                    {
                        let plural = if self.replies == 1 {
                            "reply"
                        } else {
                            "replies"
                        };
                        println!("exiting after {} {plural}", self.replies);
                        return Ok(true);
                    }
                }
            }
            Event::DeliveryDropped {
                connection_id,
                reason,
            } => {
                println!(
                    "dropped a delivery on connection {connection_id}: {}",
                    printable(&reason)
                );
            }
            other => println!("event: {other:?}"),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            [
                "issuer",
                "--data-dir",
                "/tmp/x",
                "--connector",
                "http://127.0.0.1:1",
            ]
            .iter()
            .chain(args),
        )
    }

    #[test]
    fn the_command_line_refuses_a_credential_that_is_not_json() {
        let error = parse(&["serve", "--credential", "{\"degree\": "]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            error
                .to_string()
                .contains("the credential is not valid JSON"),
            "{error}"
        );
        assert!(parse(&["serve"]).is_err(), "the credential is required");
        assert!(parse(&["serve", "--credential", "{}", "--exit-after-replies", "0"]).is_err());
    }

    #[test]
    fn the_command_line_takes_both_commands() {
        let args = parse(&[
            "serve",
            "--credential",
            " {\"degree\": \"BSc\"} ",
            "--invite",
            "--exit-after-replies",
            "2",
        ])
        .unwrap();
        match args.command {
            Command::Serve {
                credential,
                invite,
                exit_after_replies,
            } => {
                assert_eq!(credential.as_str(), "{\"degree\": \"BSc\"}");
                assert!(invite);
                assert_eq!(exit_after_replies, Some(2));
            }
            Command::Invite => panic!("serve expected"),
        }
        assert!(matches!(
            parse(&["invite"]).unwrap().command,
            Command::Invite
        ));
        assert!(Args::try_parse_from(["issuer", "--data-dir", "/tmp/x", "invite"]).is_err());
    }

    #[test]
    fn a_qr_code_is_printable_and_control_characters_are_escaped() {
        let code = qr_code("confidant1:AAAA").unwrap();
        assert!(code.lines().count() > 10);
        assert!(code.chars().all(|c| c == '\n' || !c.is_control()));
        assert_eq!(printable("ok\u{1b}[31m\n"), "ok\\u{1b}[31m\\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_refuses_bad_json_before_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("issuer");
        let data_arg = data.to_str().unwrap();
        let error = run([
            "issuer",
            "--data-dir",
            data_arg,
            "--connector",
            "http://127.0.0.1:1",
            "serve",
            "--credential",
            "not json",
        ])
        .await
        .unwrap_err();
        assert!(error.to_string().contains("not valid JSON"), "{error}");
        assert!(
            !data.exists(),
            "nothing is created for a refused command line"
        );
    }

    #[test]
    fn the_future_of_run_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let future = run(["issuer", "--help"]);
        assert_send(&future);
    }
}
