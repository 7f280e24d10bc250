//! The mistakes a newcomer makes with the apps and the connector, with real
//! processes on loopback (the wrapper binaries in `src/bin/`): damaged and
//! reused invitations, an unreachable connector, a URL without a scheme, a
//! second invitation while `serve` runs, a credential too large for the
//! connector, `--help` and `--version`, errors that name their path or
//! address, and the logs. Every wait is bounded; every child is killed
//! when its handle drops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_actors::Invitation;
use confidant_tests::e2e::ConnectorProcess;
use confidant_tests::process::{Process, wait_until};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

const CONNECTOR: &str = env!("CARGO_BIN_EXE_e2e_connector");
const ISSUER: &str = env!("CARGO_BIN_EXE_e2e_issuer");
const HOLDER: &str = env!("CARGO_BIN_EXE_e2e_holder");

/// The bound of one step (generous: a loaded 2-core machine).
const STEP: Duration = Duration::from_secs(60);

fn arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn issuer(dir: &Path, url: &str, args: &[&str]) -> Process {
    let mut all = vec![
        "--data-dir".to_owned(),
        arg(dir),
        "--connector".to_owned(),
        url.to_owned(),
        "--qr".to_owned(),
        "none".to_owned(),
    ];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    Process::spawn("issuer", ISSUER, &all).unwrap()
}

fn holder(dir: &Path, args: &[&str]) -> Process {
    let mut all = vec!["--data-dir".to_owned(), arg(dir)];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    Process::spawn("holder", HOLDER, &all).unwrap()
}

/// Runs a process to its end and requires it to fail; returns its stderr.
fn fails(mut process: Process) -> String {
    let status = process.wait_exit(STEP).unwrap();
    assert!(!status.success(), "{}", process.transcript());
    process.stderr()
}

/// `issuer invite`; returns the invitation's text.
fn invite(dir: &Path, url: &str) -> String {
    let mut process = issuer(dir, url, &["invite"]);
    process.wait_success(STEP).unwrap();
    std::fs::read_to_string(dir.join("invitation.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A one-character typo, a truncated paste and a version-1 text are
/// refused before any network call: the holder writes nothing and the
/// single-use token stays unspent, so the real invitation still works.
#[test]
fn a_damaged_invitation_is_refused_and_the_real_one_still_works() {
    let root = tempfile::tempdir().unwrap();
    let connector = ConnectorProcess::start(CONNECTOR, &root.path().join("connector")).unwrap();
    let issuer_dir = root.path().join("issuer");
    let text = invite(&issuer_dir, connector.url());
    let holder_dir = root.path().join("holder");

    // A typo in the middle of the key's part of the text.
    let mut typo: Vec<char> = text.chars().collect();
    let position = typo.len() - 20;
    typo[position] = if typo[position] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    let truncated = &text[..text.len() - 7];
    for damaged in [typo.as_str(), truncated] {
        let stderr = fails(holder(&holder_dir, &["accept", "--invitation", damaged]));
        assert!(
            stderr.contains("incomplete or damaged invitation"),
            "{stderr}"
        );
        assert!(!holder_dir.exists(), "nothing is written for {damaged}");
    }
    let stderr = fails(holder(
        &holder_dir,
        &[
            "accept",
            "--invitation",
            "confidant1:ABZodHRwOi8vMTI3LjAuMC4xOjUwMDUx",
        ],
    ));
    assert!(
        stderr.contains("unsupported invitation version 1"),
        "{stderr}"
    );
    // The same refusal from a file.
    let file = root.path().join("typo.txt");
    std::fs::write(&file, format!("{typo}\n")).unwrap();
    let stderr = fails(holder(
        &holder_dir,
        &["accept", "--invitation-file", &arg(&file)],
    ));
    assert!(stderr.contains("typo.txt"), "{stderr}");
    assert!(
        stderr.contains("incomplete or damaged invitation"),
        "{stderr}"
    );
    assert!(!holder_dir.exists());

    // The token is unspent: the real invitation joins and completes.
    let mut serving = issuer(
        &issuer_dir,
        connector.url(),
        &[
            "serve",
            "--credential",
            "{\"degree\":\"BSc\"}",
            "--exit-after-replies",
            "1",
        ],
    );
    let mut accepted = holder(
        &holder_dir,
        &[
            "accept",
            "--invitation",
            &text,
            "--exit-after-credentials",
            "1",
        ],
    );
    accepted.wait_success(STEP).unwrap();
    serving.wait_success(STEP).unwrap();
    assert!(
        accepted
            .lines()
            .iter()
            .any(|line| line.starts_with("joined connection ")),
        "{}",
        accepted.transcript()
    );
}

/// An accept against an unreachable connector writes nothing, so a retry
/// with the right invitation works; an accept of an invitation already
/// accepted says so and names `holder run`, which continues it.
#[test]
fn accept_writes_nothing_until_it_joins_and_again_names_holder_run() {
    let root = tempfile::tempdir().unwrap();
    let connector = ConnectorProcess::start(CONNECTOR, &root.path().join("connector")).unwrap();
    let url = connector.url().to_owned();
    let issuer_dir = root.path().join("issuer");
    let text = invite(&issuer_dir, &url);
    let real = Invitation::from_text(&text).unwrap();
    let holder_dir = root.path().join("holder");

    // The same invitation, for a connector that is not there (port 1 on
    // loopback is closed).
    let unreachable = Invitation {
        relay: "http://127.0.0.1:1".into(),
        ..real.clone()
    }
    .to_text();
    let stderr = fails(holder(
        &holder_dir,
        &["accept", "--invitation", &unreachable],
    ));
    assert!(
        stderr.contains("cannot reach the connector at http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!stderr.contains("MetadataMap"), "{stderr}");
    assert!(!holder_dir.exists());
    // A URL without a scheme: refused at once, with the expected form.
    let schemeless = Invitation {
        relay: "127.0.0.1:50051".into(),
        ..real.clone()
    }
    .to_text();
    let stderr = fails(holder(
        &holder_dir,
        &["accept", "--invitation", &schemeless],
    ));
    assert!(stderr.contains("https://HOST:PORT"), "{stderr}");
    assert!(!holder_dir.exists());

    // The right invitation: it joins; then the holder is stopped while it
    // waits for the issuer (who is not serving).
    let mut first = holder(&holder_dir, &["accept", "--invitation", &text]);
    let joined = first
        .wait_for_line("`joined connection`", STEP, |line| {
            line.starts_with("joined connection ")
        })
        .unwrap();
    let connection = joined["joined connection ".len()..].trim().to_owned();
    first
        .wait_for_line("`waiting for the issuer`", STEP, |line| {
            line.starts_with("waiting for the issuer")
        })
        .unwrap();
    first.terminate().unwrap();
    first.wait_success(STEP).unwrap();
    assert_eq!(
        std::fs::read_to_string(holder_dir.join("connector.url"))
            .unwrap()
            .trim(),
        url
    );
    for private in ["credentials.redb", "relay.key"] {
        assert_eq!(mode(&holder_dir.join(private)), 0o600, "{private}");
    }

    // Accepting it again: refused with the way to continue.
    let stderr = fails(holder(&holder_dir, &["accept", "--invitation", &text]));
    assert!(
        stderr.contains(&format!(
            "this invitation was already accepted (connection {connection})"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("run` continues it"), "{stderr}");

    // And `holder run` does continue it.
    let mut serving = issuer(
        &issuer_dir,
        &url,
        &[
            "serve",
            "--credential",
            "{\"degree\":\"MSc\"}",
            "--exit-after-replies",
            "1",
        ],
    );
    let mut continued = holder(&holder_dir, &["run", "--exit-after-credentials", "1"]);
    continued.wait_success(STEP).unwrap();
    serving.wait_success(STEP).unwrap();
    assert!(
        continued
            .lines()
            .iter()
            .any(|line| line
                .starts_with(&format!("credential received on connection {connection} "))),
        "{}",
        continued.transcript()
    );
}

/// `holder list` on a directory that is missing, a file, or holds no
/// holder is an error, not "0 credentials stored".
#[test]
fn holder_list_refuses_what_is_not_a_holder_directory() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("missing");
    let stderr = fails(holder(&missing, &["list"]));
    assert!(stderr.contains("does not exist"), "{stderr}");
    let file = root.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let stderr = fails(holder(&file, &["list"]));
    assert!(stderr.contains("is not a directory"), "{stderr}");
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let stderr = fails(holder(&empty, &["list"]));
    assert!(stderr.contains("holds no holder state"), "{stderr}");
}

/// While `serve` runs, `issuer invite` gets a new invitation from it over
/// the control socket (mode 0600), and holders joining with either
/// invitation get the credential, read from `--credential-file`.
#[test]
fn issuer_invite_while_serve_runs_asks_the_running_issuer() {
    let root = tempfile::tempdir().unwrap();
    let connector = ConnectorProcess::start(CONNECTOR, &root.path().join("connector")).unwrap();
    let url = connector.url().to_owned();
    let issuer_dir = root.path().join("issuer");
    let credential = root.path().join("credential.json");
    std::fs::write(&credential, "{\"degree\":\"BSc\",\"from\":\"a file\"}\n").unwrap();
    let mut serving = issuer(
        &issuer_dir,
        &url,
        &[
            "serve",
            "--invite",
            "--credential-file",
            &arg(&credential),
            "--exit-after-replies",
            "2",
        ],
    );
    serving
        .wait_for_line("`waiting for holders`", STEP, |line| {
            line.starts_with("waiting for holders")
        })
        .unwrap();
    let first = std::fs::read_to_string(issuer_dir.join("invitation.txt")).unwrap();
    let socket = issuer_dir.join("control.sock");
    assert_eq!(mode(&socket), 0o600);
    assert!(
        std::fs::read(issuer_dir.join("invitation.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );

    let mut second = issuer(&issuer_dir, &url, &["invite"]);
    second.wait_success(STEP).unwrap();
    let lines = second.lines();
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("asked the running issuer")),
        "{lines:#?}"
    );
    let text = lines
        .iter()
        .find_map(|line| line.strip_prefix("invitation: "))
        .unwrap()
        .to_owned();
    assert_ne!(text, first.trim());
    assert_eq!(
        std::fs::read_to_string(issuer_dir.join("invitation.txt"))
            .unwrap()
            .trim(),
        text
    );

    let mut holders = Vec::new();
    for (name, invitation) in [("one", first.trim().to_owned()), ("two", text)] {
        holders.push(holder(
            &root.path().join(name),
            &[
                "accept",
                "--invitation",
                &invitation,
                "--exit-after-credentials",
                "1",
            ],
        ));
    }
    for holder in &mut holders {
        holder.wait_success(STEP).unwrap();
        assert!(
            holder
                .lines()
                .iter()
                .any(|line| line.ends_with("): {\"degree\":\"BSc\",\"from\":\"a file\"}")),
            "{}",
            holder.transcript()
        );
    }
    serving.wait_success(STEP).unwrap();
    assert!(!socket.exists(), "the socket is removed when serve stops");
}

/// A credential larger than the connector takes is refused when `serve`
/// starts, naming both sizes.
#[test]
fn a_credential_too_large_for_the_connector_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let connector = ConnectorProcess::start_with(
        CONNECTOR,
        &root.path().join("connector"),
        &["--max-message-bytes", "4096"],
    )
    .unwrap();
    let credential = root.path().join("big.json");
    std::fs::write(&credential, format!("\"{}\"", "x".repeat(5000))).unwrap();
    let stderr = fails(issuer(
        &root.path().join("issuer"),
        connector.url(),
        &["serve", "--credential-file", &arg(&credential)],
    ));
    assert!(
        stderr.contains(
            "the credential is 5002 bytes; the connector takes envelopes of at most 4096 bytes"
        ),
        "{stderr}"
    );
}

/// A connector URL without a scheme is refused at once with the form
/// expected.
#[test]
fn a_connector_url_without_a_scheme_is_refused_with_the_expected_form() {
    let root = tempfile::tempdir().unwrap();
    let stderr = fails(issuer(
        &root.path().join("issuer"),
        "127.0.0.1:50051",
        &["invite"],
    ));
    assert!(stderr.contains("https://HOST:PORT"), "{stderr}");
    assert!(!stderr.contains("transport error"), "{stderr}");
}

/// `--help` and `--version` print on stdout and exit 0, for the connector
/// and both apps.
#[test]
fn help_and_version_go_to_stdout_and_exit_zero() {
    for (binary, name) in [
        (CONNECTOR, "confidant-connector"),
        (ISSUER, "issuer"),
        (HOLDER, "holder"),
    ] {
        let mut help = Process::spawn(name, binary, &["--help"]).unwrap();
        help.wait_success(STEP).unwrap();
        assert!(
            help.lines().iter().any(|line| line.starts_with("Usage: ")),
            "{}",
            help.transcript()
        );
        let mut version = Process::spawn(name, binary, &["--version"]).unwrap();
        version.wait_success(STEP).unwrap();
        assert_eq!(version.lines(), [format!("{name} 0.1.0")]);
        assert_eq!(version.stderr(), "");
    }
}

/// The connector's errors name the path or the address they are about,
/// and its start-up line lists its limits by name.
#[test]
fn connector_errors_name_their_path_and_address() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let stderr = fails(
        Process::spawn(
            "connector",
            CONNECTOR,
            &["--listen", "127.0.0.1:0", "--data-dir", &arg(&file)],
        )
        .unwrap(),
    );
    assert!(
        stderr.contains(&format!(
            "cannot create the data directory {}",
            file.display()
        )),
        "{stderr}"
    );

    let mut running = ConnectorProcess::start(CONNECTOR, &root.path().join("one")).unwrap();
    let address = running.url().trim_start_matches("http://").to_owned();
    // The start-up line reaches stderr's reader on its own schedule: the
    // address on stdout can come first.
    let logged = wait_until("the start-up line", STEP, || {
        Ok(running.process().stderr().contains("max_message_bytes="))
    });
    let startup = running.process().stderr();
    assert!(logged.is_ok(), "{startup}");
    assert!(!startup.contains("Limits {"), "{startup}");
    let stderr = fails(
        Process::spawn(
            "connector",
            CONNECTOR,
            &[
                "--listen",
                &address,
                "--data-dir",
                &arg(&root.path().join("two")),
            ],
        )
        .unwrap(),
    );
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    running.stop().unwrap();
}

/// While the connector is down, an app logs one short line with the
/// connector's address, and logs repeats with back-off (attempts 1, 2, 4,
/// …); with `RUST_LOG=trace`, its own events show and the dependencies'
/// do not.
#[test]
fn an_unreachable_connector_is_one_short_line_with_back_off() {
    let root = tempfile::tempdir().unwrap();
    let mut serving = Process::spawn(
        "issuer",
        ISSUER,
        &[
            "--data-dir",
            &arg(&root.path().join("issuer")),
            "--connector",
            "http://127.0.0.1:1",
            "--qr",
            "none",
            "serve",
            "--credential",
            "{}",
        ],
    )
    .unwrap();
    let warnings = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|line| line.contains("WARN") && line.contains("cannot reach the connector"))
            .map(str::to_owned)
            .collect()
    };
    wait_until("four attempts", STEP, || {
        Ok(serving.stderr().contains("attempts=4"))
    })
    .unwrap();
    serving.kill().unwrap();
    let stderr = serving.stderr();
    let lines = warnings(&stderr);
    assert!(lines.len() >= 3, "{stderr}");
    for (line, attempts) in lines.iter().zip(["attempts=1", "attempts=2", "attempts=4"]) {
        assert!(line.contains(attempts), "{line}");
        assert!(line.contains("http://127.0.0.1:1"), "{line}");
        assert!(line.len() < 300, "{line}");
        assert!(!line.contains("MetadataMap"), "{line}");
    }
    assert!(
        !stderr.contains("attempts=3\u{1b}")
            && !lines.iter().any(|line| line.contains("attempts=3")),
        "{stderr}"
    );

    let mut traced = Process::spawn_with_log(
        "issuer",
        ISSUER,
        &[
            "--data-dir",
            &arg(&root.path().join("traced")),
            "--connector",
            "http://127.0.0.1:1",
            "--qr",
            "none",
            "serve",
            "--credential",
            "{}",
        ],
        "trace",
    )
    .unwrap();
    wait_until("two attempts", STEP, || {
        Ok(traced.stderr().contains("attempts=2"))
    })
    .unwrap();
    traced.kill().unwrap();
    let stderr = traced.stderr();
    assert!(stderr.contains("offering cipher suites"), "{stderr}");
    assert!(stderr.contains("issuer node started"), "{stderr}");
    for dependency in [" h2::", " tower::", " hyper::", " hyper_util::", " tonic::"] {
        assert!(!stderr.contains(dependency), "{dependency} in {stderr}");
    }
}

/// The connector logs each refusal with its reason: a join with a token
/// already used, a message above its limit, and a request too large to
/// be decoded at all.
#[test]
fn the_connector_logs_refused_joins_and_oversized_messages() {
    use confidant_connector::proto;
    use confidant_connector::{RequestSigner, SignedClient};
    let root = tempfile::tempdir().unwrap();
    let mut connector = ConnectorProcess::start_with(
        CONNECTOR,
        &root.path().join("connector"),
        &["--max-message-bytes", "4096"],
    )
    .unwrap();
    let text = invite(&root.path().join("issuer"), connector.url());
    let token = Invitation::from_text(&text).unwrap().token;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _context = runtime.enter();
    let client = SignedClient::new(connector.url(), RequestSigner::from_seed(&[7; 32])).unwrap();
    // Another party, for whom the token is used.
    let stranger = SignedClient::new(connector.url(), RequestSigner::from_seed(&[8; 32])).unwrap();
    let join = |client: &SignedClient| {
        runtime.block_on(
            client.add_connection_from_token(proto::AddConnectionFromTokenRequest {
                token: token.clone(),
            }),
        )
    };
    let connection_id = join(&client).unwrap().connection_id;
    // The joiner repeating its join (its answer lost) gets the same
    // connection; anyone else is refused.
    assert_eq!(join(&client).unwrap().connection_id, connection_id);
    join(&stranger).unwrap_err();
    for size in [5000, 200_000] {
        runtime
            .block_on(client.send_message(proto::SendMessageRequest {
                connection_id: connection_id.clone(),
                message: vec![0; size],
                client_message_id: vec![],
            }))
            .unwrap_err();
    }
    let process = connector.process();
    wait_until("three refusals logged", STEP, || {
        Ok(process
            .stderr()
            .lines()
            .filter(|line| line.contains("request refused"))
            .count()
            >= 3)
    })
    .unwrap();
    let stderr = process.stderr();
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("request refused"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|line| line.contains("AddConnectionFromToken") && line.contains("used")),
        "{stderr}"
    );
    assert_eq!(
        refusals
            .iter()
            .filter(|line| line.contains("SendMessage") && line.contains("ResourceExhausted"))
            .count(),
        2,
        "{stderr}"
    );
}
