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
//! issuer --data-dir DIR --connector URL [--qr auto|dark|light|none] invite
//! issuer --data-dir DIR --connector URL [--qr …] serve (--credential JSON | --credential-file PATH) [--invite] [--exit-after-replies N] [--burst N]
//! ```
//!
//! - `invite` starts the node, creates an invitation at the connector,
//!   prints it as text and as a QR code, writes the text to
//!   `DIR/invitation.txt` (atomically: a reader never sees half of it) and
//!   the QR code to `DIR/invitation.png`, and exits. The connector keeps
//!   the holder's join for the next `serve`. While a `serve` runs on the
//!   same directory, `invite` asks it instead, over `DIR/control.sock`
//!   ([`control`]), and the running issuer creates the invitation.
//! - `serve` runs until SIGTERM or Ctrl-C (a graceful shutdown), or until
//!   `N` replies arrived with `--exit-after-replies N`. With `--invite` it
//!   first does what `invite` does. The credential (`--credential`, or
//!   `--credential-file`) must be valid JSON; it is refused with a clear
//!   error before anything starts otherwise, and at start when it is larger
//!   than the connector takes (its `GetConnectorInfo`). It is
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
//! | `asked the running issuer (PATH) for an invitation` | `invite` while `serve` runs: the invitation lines follow |
//! | `could not ask the connector for its size limit (REASON); …` | `serve` could not check the credential's size at start |
//! | `no control socket (REASON): …` | `serve` could not create `DIR/control.sock`; it serves anyway |
//! | `waiting for holders (Ctrl-C to stop)` | `serve` is ready |
//! | `invitation requested on the control socket` | `issuer invite` asked; the invitation lines follow |
//! | `control socket: REASON` | a request on the control socket failed (the issuer goes on) |
//! | `joined: connection ID (a holder used the invitation; bundle sent)` | `Event::Joined` |
//! | `connected: connection ID, holder identity key HEX (X3DH done)` | `Event::Connected` |
//! | `credential sent on connection ID` | the connector has the sealed credential |
//! | `burst of N credentials sent on connection ID` | `--burst N`: the connector has the N more credentials |
//! | `could not send the credential on connection ID: REASON (…)` | the send failed; the issuer goes on, and sends it at its next start |
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
//! `warn`; a bare level applies to Confidant's crates only, see
//! `confidant_connector::cli::log_filter`); at `debug`, every event is
//! logged in a span `connection{id=…}`. Key seeds are never printed.
//!
//! ## Files in the data directory
//!
//! | file | what |
//! |---|---|
//! | `node.redb` | the node's store: identity key, pre-keys, sessions, inbox (durable commits) |
//! | `relay.key` | the 32-byte Ed25519 seed the connector knows this party by (mode 0600, created from OS randomness) |
//! | `invitation.txt` | the last invitation's text |
//! | `invitation.png` | the last invitation's QR code (black on white, quiet zone of 4 modules) |
//! | `control.sock` | while `serve` runs: where `invite` asks it for invitations (mode 0600) |
//! | `issuer-state.json` | which connections got the credential, each connection's greeting, and the replies reported |
//!
//! Running again with the same directory continues the same connections.

pub mod control;
pub mod files;
pub mod qr;

use clap::{ArgGroup, Parser, Subcommand};
use confidant_actors::{ConnectionState, Event, Events, Node, NodeConfig, Side};
use confidant_connector::{ClientTls, ConnectorTransport, RequestSigner};
use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_store::{RedbStore, StoreOptions};
use confidant_x3dh_mlkem768::X3dhMlKem768;
use files::{Error, INVITATION, INVITATION_PNG, IssuerState, NODE_STORE};
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
    /// How to draw the invitation's QR code: for a dark or a light terminal
    /// background (auto: light if COLORFGBG says so, otherwise dark), or
    /// not at all. DIR/invitation.png is written in every case.
    #[arg(long, value_name = "THEME", value_enum, default_value = "auto")]
    pub qr: qr::Terminal,
    /// Also answer holders that only know classical X3DH. By default the
    /// issuer requires the post-quantum hybrid (X3DH + ML-KEM-768) and
    /// refuses a classical initial message.
    #[arg(long)]
    pub allow_classical: bool,
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
    /// acknowledge their replies. `issuer invite` can create invitations
    /// meanwhile (through DIR/control.sock).
    #[command(group(
        ArgGroup::new("source")
            .required(true)
            .args(["credential", "credential_file"])
    ))]
    Serve {
        /// The credential to send (JSON).
        #[arg(long, value_name = "JSON", value_parser = parse_credential)]
        credential: Option<Credential>,
        /// A file holding the credential to send (JSON).
        #[arg(long, value_name = "PATH")]
        credential_file: Option<PathBuf>,
        /// First create and show an invitation, as `invite` does.
        #[arg(long)]
        invite: bool,
        /// Exit after this many replies from holders (otherwise run until
        /// SIGTERM or Ctrl-C).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        exit_after_replies: Option<u64>,
        /// After the credential, send N more credentials to each holder,
        /// one at a time (`{"burst":I,"of":N}`): a load for tests of
        /// delivery (the browser holder's). Not remembered across restarts.
        #[arg(long, value_name = "N", default_value_t = 0)]
        burst: u32,
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

/// The largest credential file read (no connector takes more).
const MAX_CREDENTIAL_FILE: u64 = 64 * 1024 * 1024;

/// Room an envelope needs beside the credential itself: the AEAD tag, the
/// connection id, the counter, suite and epoch, and their protobuf framing
/// (an upper bound; connection ids are far shorter than the rest of it).
pub const ENVELOPE_ROOM: u64 = 1024;

/// Reads a credential from a file (`--credential-file`).
pub fn read_credential_file(path: &Path) -> Result<Credential, Error> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|error| format!("cannot read the credential {}: {error}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CREDENTIAL_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read the credential {}: {error}", path.display()))?;
    if text.len() as u64 > MAX_CREDENTIAL_FILE {
        return Err(format!(
            "the credential {} is larger than {MAX_CREDENTIAL_FILE} bytes",
            path.display()
        )
        .into());
    }
    parse_credential(&text).map_err(|error| format!("{}: {error}", path.display()).into())
}

/// Refuses a credential that would not fit in an envelope of at most
/// `max_message_bytes` (the connector's limit, from `GetConnectorInfo`).
pub fn check_credential_size(credential: &Credential, max_message_bytes: u64) -> Result<(), Error> {
    let room = max_message_bytes.saturating_sub(ENVELOPE_ROOM);
    let len = credential.as_str().len() as u64;
    if len > room {
        return Err(format!(
            "the credential is {len} bytes; the connector takes envelopes of at most \
             {max_message_bytes} bytes, which leaves room for {room} bytes of credential \
             (raise the connector's --max-message-bytes, or send a smaller credential)"
        )
        .into());
    }
    Ok(())
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
    match args.command {
        Command::Invite => {
            files::create_data_dir(&args.data_dir)?;
            // A running `serve` holds the store: it creates the invitation.
            if let Some(text) = control::request_invitation(&args.data_dir).await? {
                println!(
                    "asked the running issuer ({}) for an invitation",
                    args.data_dir.join(control::CONTROL_SOCKET).display()
                );
                show_invitation(&text, args.qr)?;
                println!(
                    "invitation written to {}",
                    args.data_dir.join(INVITATION).display()
                );
                return Ok(());
            }
            let (node, _events, _transport) = start_node(
                &args.data_dir,
                &args.connector,
                args.connector_ca.as_deref(),
                args.allow_classical,
            )
            .await?;
            let result = invite(&node, &args.data_dir, args.qr).await;
            let stopped = node.shutdown().await;
            result?;
            stopped?;
            Ok(())
        }
        Command::Serve {
            credential,
            credential_file,
            invite: invite_first,
            exit_after_replies,
            burst,
        } => {
            let credential = match (credential, credential_file) {
                (Some(credential), _) => credential,
                (None, Some(path)) => read_credential_file(&path)?,
                (None, None) => return Err("give --credential or --credential-file".into()),
            };
            files::create_data_dir(&args.data_dir)?;
            // Listen for signals before the node starts, so that even an
            // early SIGTERM stops it gracefully.
            let mut signals = Signals::new()?;
            let (node, mut events, transport) = start_node(
                &args.data_dir,
                &args.connector,
                args.connector_ca.as_deref(),
                args.allow_classical,
            )
            .await?;
            let result = async {
                // The credential is checked against the connector's limit
                // now, when it is given, rather than refused by the
                // connector at each send.
                match transport.client().connector_info().await {
                    Ok(info) => check_credential_size(&credential, info.max_message_bytes)?,
                    Err(status) => println!(
                        "could not ask the connector for its size limit ({}); the credential \
                         is checked when it is sent",
                        confidant_connector::client::describe_status(&status)
                    ),
                }
                let control = match control::ControlSocket::listen(&args.data_dir) {
                    Ok(control) => Some(control),
                    Err(error) => {
                        println!(
                            "no control socket ({error}): `issuer invite` needs this issuer stopped"
                        );
                        None
                    }
                };
                let mut server = Server {
                    node: node.clone(),
                    dir: args.data_dir.clone(),
                    credential,
                    state: IssuerState::load(&args.data_dir)?,
                    replies: 0,
                    exit_after_replies,
                    burst,
                    qr: args.qr,
                    control,
                };
                server.serve(invite_first, &mut events, &mut signals).await
            }
            .await;
            let stopped = node.shutdown().await;
            result?;
            stopped?;
            Ok(())
        }
    }
}

fn init_logs() {
    let filter = confidant_connector::cli::log_filter("warn", &["issuer"]);
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
/// (verified against `ca` if given) under the key in `DIR/relay.key`, with
/// the post-quantum hybrid (classical holders answered if `allow_classical`).
async fn start_node(
    dir: &Path,
    url: &str,
    ca: Option<&Path>,
    allow_classical: bool,
) -> Result<(Node, Events, ConnectorTransport), Error> {
    let seed = files::relay_seed(dir)?;
    let tls = match ca {
        Some(path) => ClientTls::from_ca_file(path)?,
        None => ClientTls::system_roots(),
    };
    let transport = ConnectorTransport::with_tls(url, RequestSigner::from_seed(&seed), &tls)
        .map_err(|error| format!("{error}"))?;
    let path = dir.join(NODE_STORE);
    let store = RedbStore::open_or_create(&path, StoreOptions::default()).map_err(|error| {
        format!(
            "cannot open {}: {error} (an issuer that is running with this --data-dir holds \
             it; `issuer invite` reaches a running `serve` through {})",
            path.display(),
            control::CONTROL_SOCKET
        )
    })?;
    let (node, events) = Node::builder()
        .store(std::sync::Arc::new(store))
        .suites(suites()?)
        .hybrid_key_agreement(X3dhMlKem768::default().with_allow_classical(allow_classical))
        .transport(transport.clone())
        .config(NodeConfig::default())
        .start()
        .await?;
    println!("issuer identity key: {}", hex::encode(node.identity_key()));
    tracing::info!(identity = %hex::encode(node.identity_key()), "issuer node started");
    Ok((node, events, transport))
}

/// Creates an invitation, prints it and writes it to `DIR/invitation.txt`
/// (and its QR code to `DIR/invitation.png`); returns its text.
async fn invite(node: &Node, dir: &Path, qr: qr::Terminal) -> Result<String, Error> {
    let invitation = node
        .create_invitation()
        .await
        .map_err(|error| format!("cannot create an invitation at the connector: {error}"))?;
    let text = invitation.try_to_text()?;
    tracing::debug!("invitation created");
    show_invitation(&text, qr)?;
    files::write_atomically(&dir.join(INVITATION_PNG), &qr::png(&text)?, 0o644)?;
    let path = dir.join(INVITATION);
    files::write_atomically(&path, format!("{text}\n").as_bytes(), 0o644)?;
    println!("invitation written to {}", path.display());
    Ok(text)
}

/// Prints an invitation's text and its QR code.
fn show_invitation(text: &str, qr: qr::Terminal) -> Result<(), Error> {
    println!("invitation: {text}");
    let code = qr::terminal_code(text, qr)?;
    if !code.is_empty() {
        println!("{code}");
    }
    Ok(())
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
    /// More credentials sent after the credential (`--burst`).
    burst: u32,
    qr: qr::Terminal,
    /// Where `issuer invite` asks for invitations (none if it could not
    /// be created).
    control: Option<control::ControlSocket>,
}

/// The next control client, or never when there is no control socket.
async fn next_control_client(
    control: Option<&control::ControlSocket>,
) -> Result<tokio::net::UnixStream, Error> {
    match control {
        Some(control) => control.accept().await,
        None => std::future::pending().await,
    }
}

impl Server {
    async fn serve(
        &mut self,
        invite_first: bool,
        events: &mut Events,
        signals: &mut Signals,
    ) -> Result<(), Error> {
        if invite_first {
            invite(&self.node, &self.dir, self.qr).await?;
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
                client = next_control_client(self.control.as_ref()) => {
                    match client {
                        Ok(stream) => self.on_control(stream).await,
                        Err(error) => println!("control socket: {error}"),
                    }
                    continue;
                }
            };
            let span = match event_connection(&event) {
                Some(id) => tracing::info_span!("connection", id = %id),
                None => tracing::info_span!("event"),
            };
            if tracing::Instrument::instrument(self.handle(event), span).await? {
                return Ok(());
            }
        }
    }

    /// Answers one request on the control socket. Its failures are the
    /// client's; the server goes on.
    async fn on_control(&mut self, mut stream: tokio::net::UnixStream) {
        let outcome = async {
            match control::read_request(&mut stream).await? {
                Some(control::Request::Invite) => {
                    println!("invitation requested on the control socket");
                    let result = invite(&self.node, &self.dir, self.qr)
                        .await
                        .map_err(|error| error.to_string());
                    control::answer(&mut stream, result).await
                }
                None => Ok(()),
            }
        }
        .await;
        if let Err(error) = outcome {
            println!("control socket: {error}");
        }
    }

    fn sent(&self, connection: &ConnectionId) -> bool {
        self.state.credential_sent.contains(connection.as_str())
    }

    /// Sends the credential. A failure is reported and the issuer goes on
    /// serving: the connection did not get it, so the next start sends it.
    async fn send_credential(&mut self, connection: &ConnectionId) -> Result<(), Error> {
        if let Err(error) = self
            .node
            .send(connection, self.credential.as_str().as_bytes().to_vec())
            .await
        {
            println!(
                "could not send the credential on connection {connection}: {error} \
                 (it is sent when the issuer starts again)"
            );
            return Ok(());
        }
        tracing::debug!(connection = %connection, "credential sent");
        self.state
            .credential_sent
            .insert(connection.as_str().to_owned());
        self.state.save_and_report(&self.dir, || {
            println!("credential sent on connection {connection}");
        })?;
        for n in 1..=self.burst {
            let message = format!(r#"{{"burst":{n},"of":{}}}"#, self.burst);
            if let Err(error) = self.node.send(connection, message.into_bytes()).await {
                println!("could not send burst message {n} on connection {connection}: {error}");
                return Ok(());
            }
        }
        if self.burst > 0 {
            println!(
                "burst of {} credentials sent on connection {connection}",
                self.burst
            );
        }
        Ok(())
    }

    /// Handles one event; `true` when it is time to exit.
    async fn handle(&mut self, event: Event) -> Result<bool, Error> {
        match event {
            Event::Joined { connection_id } => {
                tracing::debug!("a holder joined; bundle sent");
                println!(
                    "joined: connection {connection_id} (a holder used the invitation; bundle sent)"
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
                tracing::debug!(holder = %hex::encode(peer_identity), reset, "X3DH done, connected");
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
                error,
            } => {
                println!(
                    "REFUSED handshake on connection {connection_id}: {}",
                    printable(&error.to_string())
                );
            }
            Event::Message(message) => {
                tracing::debug!(
                    sequence = message.sequence,
                    bytes = message.plaintext.len(),
                    "message opened"
                );
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
                    tracing::debug!(sequence = message.sequence, "greeting acknowledged");
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
                tracing::debug!(sequence = message.sequence, new, "reply acknowledged");
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
        assert!(
            parse(&["serve", "--credential", "{}", "--credential-file", "c.json"]).is_err(),
            "only one credential"
        );
        assert!(matches!(
            parse(&["serve", "--credential-file", "c.json"])
                .unwrap()
                .command,
            Command::Serve {
                credential: None,
                credential_file: Some(_),
                ..
            }
        ));
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
                credential: Some(credential),
                credential_file: None,
                invite,
                exit_after_replies,
                burst,
            } => {
                assert_eq!(credential.as_str(), "{\"degree\": \"BSc\"}");
                assert!(invite);
                assert_eq!(exit_after_replies, Some(2));
                assert_eq!(burst, 0);
            }
            other => panic!("serve expected: {other:?}"),
        }
        assert!(matches!(
            parse(&["invite"]).unwrap().command,
            Command::Invite
        ));
        assert!(Args::try_parse_from(["issuer", "--data-dir", "/tmp/x", "invite"]).is_err());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("ok\u{1b}[31m\n"), "ok\\u{1b}[31m\\n");
    }

    #[test]
    fn a_credential_file_is_read_checked_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential.json");
        std::fs::write(&path, "  {\"degree\": \"BSc\"}\n").unwrap();
        let credential = read_credential_file(&path).unwrap();
        assert_eq!(credential.as_str(), "{\"degree\": \"BSc\"}");
        std::fs::write(&path, "{\"degree\": ").unwrap();
        let error = read_credential_file(&path).unwrap_err().to_string();
        assert!(error.contains("not valid JSON"), "{error}");
        assert!(error.contains("credential.json"), "{error}");
        let missing = read_credential_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(missing.to_string().contains("missing.json"), "{missing}");

        let big = Credential(format!("\"{}\"", "x".repeat(2000)));
        check_credential_size(&big, 2002 + ENVELOPE_ROOM).unwrap();
        let error = check_credential_size(&big, 2001 + ENVELOPE_ROOM)
            .unwrap_err()
            .to_string();
        assert!(error.contains("the credential is 2002 bytes"), "{error}");
        assert!(check_credential_size(&big, 10).is_err());
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
