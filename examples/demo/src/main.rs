//! The end-to-end demo: `cargo run -p demo`.
//!
//! It runs the three programs as real processes on loopback and prints
//! what each of them does, prefixed with its name:
//!
//! 1. builds `confidant-connector`, `issuer` and `holder` with cargo (the
//!    same profile and target directory as the demo itself);
//! 2. starts the connector on `127.0.0.1:0` with its mailboxes in a fresh
//!    temporary directory, and reads its port from its `listening on`
//!    line;
//! 3. starts the issuer (`serve --invite`), which shows an invitation (text
//!    and QR code) and writes it to `issuer/invitation.txt`;
//! 4. starts the holder (`accept --invitation-file …`), which joins, checks
//!    the issuer's bundle against the invitation's identity key, runs the
//!    post-quantum hybrid (X3DH + ML-KEM-768; both sides must say so),
//!    receives the credential (a university degree, JSON), stores it,
//!    acknowledges it and answers;
//! 5. waits for both to exit (at most 120 s), stops the connector with
//!    SIGTERM, and checks that the connector's redb file does not contain
//!    the credential's plaintext;
//! 6. lists the holder's stored credentials (`holder list`).
//!
//! The exit code is nonzero if any step fails; every child still running
//! is killed then.

use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The credential the issuer sends: a university degree.
const CREDENTIAL: &str = r#"{"type":"UniversityDegreeCredential","issuer":"Example University","subject":{"name":"Alice Example","degree":"Bachelor of Science in Computer Science","awarded":"2025-06-30"}}"#;
/// A distinctive part of it, looked for as well.
const CREDENTIAL_NAME: &str = "Alice Example";

/// How long the issuer and the holder may take together.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// How long the connector may take to start, and to stop.
const CONNECTOR_LIMIT: Duration = Duration::from_secs(30);
/// How often the demo looks at its children.
const POLL: Duration = Duration::from_millis(50);

/// The demo's command line: no options besides `--help` and `--version`
/// (which print and exit before anything is built or started).
#[derive(Debug, clap::Parser)]
#[command(
    name = "demo",
    version,
    about = "Builds and runs the connector, the issuer and the holder as real processes on \
             loopback, and checks that a credential and its reply cross end to end"
)]
struct Args {}

fn main() -> ExitCode {
    let Args {} = <Args as clap::Parser>::parse();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("[demo] FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn say(text: &str) {
    println!("[demo] {text}");
}

fn run() -> Result<(), Error> {
    let bin = build()?;
    let temporary = tempfile::Builder::new()
        .prefix("confidant-demo-")
        .tempdir()?;
    let root = temporary.path();
    say(&format!("working in {}", root.display()));
    let mut children = Children::default();

    // The connector.
    let connector_dir = root.join("connector");
    let (address_sender, address) = mpsc::channel();
    children.spawn(
        "connector",
        Command::new(bin.join("confidant-connector"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&connector_dir),
        Some(address_sender),
    )?;
    let line = address
        .recv_timeout(CONNECTOR_LIMIT)
        .map_err(|_| "the connector did not say where it listens")?;
    let url = line
        .strip_prefix("listening on ")
        .map(|address| format!("http://{}", address.trim()))
        .ok_or_else(|| format!("unexpected first line from the connector: {line}"))?;
    say(&format!("the connector listens at {url}"));

    // The issuer, with an invitation.
    let issuer_dir = root.join("issuer");
    let invitation = issuer_dir.join("invitation.txt");
    let started = Instant::now();
    children.spawn(
        "issuer",
        Command::new(bin.join("issuer"))
            .arg("--data-dir")
            .arg(&issuer_dir)
            .args(["--connector", &url, "serve", "--invite"])
            .args(["--credential", CREDENTIAL, "--exit-after-replies", "1"]),
        None,
    )?;
    while !invitation.exists() {
        children.check_running("issuer")?;
        if started.elapsed() > RUN_LIMIT {
            return Err("the issuer wrote no invitation in time".into());
        }
        std::thread::sleep(POLL);
    }
    say(&format!(
        "the invitation is in {}; starting the holder",
        invitation.display()
    ));

    // The holder accepts it.
    let holder_dir = root.join("holder");
    children.spawn(
        "holder",
        Command::new(bin.join("holder"))
            .arg("--data-dir")
            .arg(&holder_dir)
            .arg("accept")
            .arg("--invitation-file")
            .arg(&invitation)
            .args(["--exit-after-credentials", "1"]),
        None,
    )?;

    // Both finish by themselves.
    for name in ["issuer", "holder"] {
        let remaining = RUN_LIMIT.saturating_sub(started.elapsed());
        children.wait_success(name, remaining)?;
        say(&format!("the {name} exited successfully"));
    }
    // Both sides say which key agreement their session came from.
    for name in ["issuer", "holder"] {
        let lines = children.lines(name)?;
        let connected = lines
            .iter()
            .find(|line| line.starts_with("connected: "))
            .ok_or_else(|| format!("the {name} never said it connected"))?;
        if !connected.contains("(post-quantum X3DH + ML-KEM-768 done)") {
            return Err(format!("the {name}'s session is not post-quantum: {connected}").into());
        }
    }
    say("check passed: both sides connected with the post-quantum hybrid (X3DH + ML-KEM-768)");
    // The connector stops on SIGTERM.
    children.terminate("connector", CONNECTOR_LIMIT)?;
    say("the connector stopped (SIGTERM)");

    // The connector never saw the credential.
    let mailbox = connector_dir.join("connector.redb");
    let bytes = std::fs::read(&mailbox)
        .map_err(|error| format!("cannot read {}: {error}", mailbox.display()))?;
    for needle in [CREDENTIAL, CREDENTIAL_NAME] {
        if contains(&bytes, needle.as_bytes()) {
            return Err(format!(
                "{} contains the credential's plaintext ({needle:?})",
                mailbox.display()
            )
            .into());
        }
    }
    say(&format!(
        "check passed: {} ({} bytes) does not contain the credential's plaintext",
        mailbox.display(),
        bytes.len()
    ));

    // The holder has it.
    say("the holder's stored credentials (holder list):");
    let output = Command::new(bin.join("holder"))
        .arg("--data-dir")
        .arg(&holder_dir)
        .arg("list")
        .stdin(Stdio::null())
        .output()?;
    let listed = String::from_utf8_lossy(&output.stdout);
    for line in listed.lines() {
        println!("[holder] {line}");
    }
    if !output.status.success() {
        return Err(format!(
            "holder list failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    if !listed.contains(CREDENTIAL) {
        return Err("the holder did not store the credential".into());
    }
    say("check passed: the holder stored the credential");
    say(
        "done: invitation, X3DH, the sealed credential and the holder's answer went through the connector, which saw only ciphertext",
    );
    Ok(())
}

/// Builds the three programs with the demo's own profile into the demo's
/// own target directory; returns the directory they are in.
fn build() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .ok_or("the demo's executable has no directory")?
        .to_owned();
    let target_dir = profile_dir
        .parent()
        .ok_or("the demo's executable is not in a cargo target directory")?;
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(name) => name.to_owned(),
        None => return Err("cannot tell the demo's build profile".into()),
    };
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    say(&format!(
        "building confidant-connector, issuer and holder (profile {profile})"
    ));
    let status = Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--profile", &profile])
        .args(["-p", "confidant-connector", "-p", "issuer", "-p", "holder"])
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|error| format!("cannot run {}: {error}", Path::new(&cargo).display()))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})").into());
    }
    Ok(profile_dir)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// One child process and the threads that print its output.
struct Process {
    name: &'static str,
    child: Child,
    readers: Vec<JoinHandle<()>>,
    /// Every line it printed on stdout.
    lines: Lines,
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// The children; whichever still runs when this is dropped (on an error)
/// is killed.
#[derive(Default)]
struct Children {
    processes: Vec<Process>,
}

impl Children {
    /// Starts `command`, printing its stdout to the demo's stdout and its
    /// stderr to the demo's stderr, each line prefixed with `[name]`. The
    /// first stdout line also goes to `first_line`, if given.
    fn spawn(
        &mut self,
        name: &'static str,
        command: &mut Command,
        first_line: Option<mpsc::Sender<String>>,
    ) -> Result<(), Error> {
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start the {name}: {error}"))?;
        let mut readers = Vec::new();
        let lines = Lines::default();
        if let Some(stdout) = child.stdout.take() {
            readers.push(stream(
                name,
                stdout,
                Some(std::sync::Arc::clone(&lines)),
                first_line,
            )?);
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(stream(name, stderr, None, None)?);
        }
        self.processes.push(Process {
            name,
            child,
            readers,
            lines,
        });
        Ok(())
    }

    /// The lines `name` printed on stdout so far.
    fn lines(&mut self, name: &str) -> Result<Vec<String>, Error> {
        let process = self.get(name)?;
        Ok(process
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }

    fn get(&mut self, name: &str) -> Result<&mut Process, Error> {
        self.processes
            .iter_mut()
            .find(|process| process.name == name)
            .ok_or_else(|| format!("no process named {name}").into())
    }

    /// An error if `name` has exited already.
    fn check_running(&mut self, name: &str) -> Result<(), Error> {
        let process = self.get(name)?;
        match process.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("the {name} exited early ({status})").into()),
        }
    }

    /// Waits at most `limit` for `name` to exit, successfully, and for its
    /// output to be printed.
    fn wait_success(&mut self, name: &str, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        loop {
            // Another child failing is an error too: do not wait for
            // nothing.
            for process in &mut self.processes {
                if process.name != name
                    && process.name != "connector"
                    && let Some(status) = process.child.try_wait()?
                    && !status.success()
                {
                    return Err(format!("the {} failed ({status})", process.name).into());
                }
            }
            let process = self.get(name)?;
            if let Some(status) = process.child.try_wait()? {
                for reader in process.readers.drain(..) {
                    let _ = reader.join();
                }
                if status.success() {
                    return Ok(());
                }
                return Err(format!("the {name} failed ({status})").into());
            }
            if Instant::now() > deadline {
                return Err(format!("the {name} did not finish within {limit:?}").into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM to `name` and waits at most `limit` for it to exit
    /// successfully.
    fn terminate(&mut self, name: &str, limit: Duration) -> Result<(), Error> {
        let process = self.get(name)?;
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&process.child),
            rustix::process::Signal::TERM,
        )
        .map_err(|error| format!("cannot send SIGTERM to the {name}: {error}"))?;
        self.wait_success(name, limit)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for process in &mut self.processes {
            if matches!(process.child.try_wait(), Ok(None)) {
                eprintln!("[demo] killing the {}", process.name);
                let _ = process.child.kill();
                let _ = process.child.wait();
            }
        }
    }
}

/// A thread that prints each line of `from` prefixed with `[name]`: to
/// stdout, keeping it in `lines`, if `lines` is given, to stderr otherwise.
fn stream(
    name: &'static str,
    from: impl Read + Send + 'static,
    lines: Option<Lines>,
    mut first_line: Option<mpsc::Sender<String>>,
) -> Result<JoinHandle<()>, Error> {
    let handle = std::thread::Builder::new()
        .name(format!("{name}-output"))
        .spawn(move || {
            let mut reader = BufReader::new(from);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                match &lines {
                    None => eprintln!("[{name}] {text}"),
                    Some(lines) => {
                        println!("[{name}] {text}");
                        lines
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(text.to_owned());
                    }
                }
                if let Some(sender) = first_line.take() {
                    let _ = sender.send(text.to_owned());
                }
            }
        })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_credential_is_json_and_found_where_it_is() {
        assert!(CREDENTIAL.starts_with('{') && CREDENTIAL.ends_with('}'));
        assert!(CREDENTIAL.contains(CREDENTIAL_NAME));
        assert!(contains(b"xx{\"a\":1}yy", b"{\"a\":1}"));
        assert!(!contains(b"xx{\"a\":2}yy", b"{\"a\":1}"));
        assert!(!contains(b"short", b"much longer than that"));
    }
}
