//! The browser holder (`examples/web-holder`, on `crates/confidant-web`)
//! end to end, in a real headless Chromium: a real connector process with
//! gRPC-Web and CORS for the page's origin, the Rust issuer app as a
//! process sending a credential and then a burst of more, the page served
//! on loopback, and `examples/web-holder/e2e.mjs` driving Chromium with
//! playwright-core. The page accepts the invitation (X3DH in WebAssembly),
//! stores the credential, is **reloaded in the middle of the burst**, and
//! must end with every message stored exactly once, each answered (the
//! issuer reports every answer), nothing left at the connector, and a
//! damaged invitation refused with its typed kind. Saves a screenshot in
//! the target directory (`web-holder-e2e.png`).
//!
//! Needs the built page (`./scripts/web-build.sh`, which `./scripts/test.sh`
//! runs first), Node.js with the page's npm packages, and Chromium
//! (`/usr/bin/chromium`, or `CONFIDANT_CHROMIUM`). Without them the test
//! says so and passes, except under `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_tests::e2e::ConnectorProcess;
use confidant_tests::process::Process;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CONNECTOR: &str = env!("CARGO_BIN_EXE_e2e_connector");
const ISSUER: &str = env!("CARGO_BIN_EXE_e2e_issuer");

/// Credentials the issuer sends after the first.
const BURST: usize = 40;
/// Stored credentials after which the page is reloaded (mid-burst).
const RELOAD_AT: usize = 6;
/// The bound of one step (generous: a loaded 2-core machine).
const STEP: Duration = Duration::from_secs(60);
/// The browser's whole run.
const BROWSER: Duration = Duration::from_secs(240);

const CREDENTIAL: &str = r#"{"degree":"BSc Computer Science","holder":"Ada"}"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target directory this test was built in (where `web-build.sh` put
/// the page): the test binary is `TARGET/debug/deps/web-…`.
fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map_or_else(|| workspace().join("target"), Path::to_path_buf)
}

fn chromium() -> PathBuf {
    std::env::var_os("CONFIDANT_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether everything the test needs is there; without it, a failure under
/// `CI=true` and a loud skip otherwise.
fn ready(test: &str) -> bool {
    let mut missing = Vec::new();
    if !target_dir()
        .join("web-holder/pkg/confidant_web_bg.wasm")
        .is_file()
    {
        missing.push(format!(
            "the built page in {} (run ./scripts/web-build.sh)",
            target_dir().join("web-holder").display()
        ));
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !node {
        missing.push("node".to_owned());
    }
    if !workspace()
        .join("examples/web-holder/node_modules/playwright-core")
        .is_dir()
    {
        missing.push("playwright-core (cd examples/web-holder && npm ci)".to_owned());
    }
    if !chromium().is_file() {
        missing.push(format!(
            "Chromium at {} (apt-get install -y chromium)",
            chromium().display()
        ));
    }
    confidant_tests::e2e::ready_or_skip(test, &missing)
}

/// Serves `root`'s files on `listener` (GET only, one request per
/// connection), on a thread that ends with the test process.
fn serve_page(listener: TcpListener, root: PathBuf) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &root);
            });
        }
    });
}

fn answer(mut stream: TcpStream, root: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(STEP))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let relative = if path == "/" {
        "index.html"
    } else {
        path.trim_start_matches('/')
    };
    let file = root.join(relative);
    let inside = !relative.split('/').any(|part| part == "..");
    let (status, body, kind) = match std::fs::read(&file) {
        Ok(body) if inside => {
            let kind = match file.extension().and_then(|ext| ext.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript",
                Some("wasm") => "application/wasm",
                _ => "application/octet-stream",
            };
            ("200 OK", body, kind)
        }
        _ => ("404 Not Found", b"not found".to_vec(), "text/plain"),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    Ok(())
}

fn arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// The JSON value of the driver's `result:` line.
fn result_of(lines: &[String]) -> serde_json::Value {
    let line = lines
        .iter()
        .find_map(|line| line.strip_prefix("result: "))
        .unwrap_or_else(|| panic!("the browser driver printed no result: {lines:?}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn the_browser_holder_gets_every_credential_exactly_once_across_a_reload_mid_burst() {
    if !ready("the_browser_holder_gets_every_credential_exactly_once_across_a_reload_mid_burst") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", page_listener.local_addr().unwrap());
    serve_page(page_listener, target_dir().join("web-holder"));

    let connector_dir = dir.path().join("connector");
    let connector = ConnectorProcess::start_with(
        CONNECTOR,
        &connector_dir,
        &["--grpc-web", "--cors-origin", &origin],
    )
    .unwrap();
    let issuer_dir = dir.path().join("issuer");
    let burst = BURST.to_string();
    let replies = (BURST + 1).to_string();
    let mut issuer = Process::spawn(
        "issuer",
        ISSUER,
        &[
            "--data-dir",
            &arg(&issuer_dir),
            "--connector",
            connector.url(),
            "--qr",
            "none",
            "serve",
            "--invite",
            "--credential",
            CREDENTIAL,
            "--burst",
            &burst,
            "--exit-after-replies",
            &replies,
        ],
    )
    .unwrap();
    issuer
        .wait_for_line("`invitation written`", STEP, |line| {
            line.starts_with("invitation written to ")
        })
        .unwrap();
    let invitation = std::fs::read_to_string(issuer_dir.join("invitation.txt")).unwrap();

    let screenshot = target_dir().join("web-holder-e2e.png");
    let profile = dir.path().join("chromium-profile");
    let driver = workspace().join("examples/web-holder/e2e.mjs");
    let settings = serde_json::json!({
        // Sealed at rest, with the page's WebCrypto-wrapped key.
        "PAGE_URL": format!("{origin}/?db=e2e&sealed=1"),
        "INVITATION": invitation.trim(),
        "EXPECTED": BURST + 1,
        "RELOAD_AT": RELOAD_AT,
        "SCREENSHOT": arg(&screenshot),
        "CHROMIUM": arg(&chromium()),
        "USER_DATA_DIR": arg(&profile),
        "TIMEOUT_MS": STEP.as_millis() * 2,
    });
    let mut browser =
        Process::spawn("browser", "node", &[arg(&driver), settings.to_string()]).unwrap();
    let finished = browser.wait_success(BROWSER);
    let lines = browser.lines();
    if let Err(error) = finished {
        panic!(
            "the browser driver failed: {error}\nissuer:\n{}",
            issuer.transcript()
        );
    }
    let result = result_of(&lines);

    // The page kept its identity across the reload (IndexedDB).
    assert_eq!(result["identity"], result["identityAfter"], "{result}");
    // The reload came in the middle of the burst.
    let at_reload = result["storedAtReload"].as_u64().unwrap();
    assert!(
        at_reload >= RELOAD_AT as u64 && at_reload < (BURST + 1) as u64,
        "the reload did not come mid-burst: {at_reload} of {} stored",
        BURST + 1
    );
    // Every credential exactly once, each answered.
    let credentials = result["credentials"].as_array().unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for credential in credentials {
        assert_eq!(credential["replied"], true, "{credential}");
        *seen
            .entry(credential["json"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut expected: Vec<String> = vec![CREDENTIAL.to_owned()];
    expected.extend((1..=BURST).map(|n| format!(r#"{{"burst":{n},"of":{BURST}}}"#)));
    for json in &expected {
        assert_eq!(
            seen.get(json),
            Some(&1),
            "{json} stored {:?} times",
            seen.get(json)
        );
    }
    assert_eq!(credentials.len(), expected.len(), "stored: {seen:?}");
    let sequences: std::collections::BTreeSet<u64> = credentials
        .iter()
        .map(|credential| credential["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences.len(),
        credentials.len(),
        "an inbox number used twice"
    );
    // Nothing is left for the page at the connector.
    assert_eq!(result["waiting"], 0, "{result}");
    let connections = result["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert_eq!(connections[0]["state"], "Established");
    // The page showed each step the terminal holder shows.
    let steps: Vec<&str> = result["afterReload"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line.as_str())
        .collect();
    let before: Vec<&str> = result["beforeReload"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line.as_str())
        .collect();
    for prefix in [
        "state sealed at rest",
        "holder identity key: ",
        "invitation: connector ",
        "joined connection ",
        "connected: connection ",
        "credential received on connection ",
        "acknowledged message #",
        "replied on connection ",
    ] {
        assert!(
            before.iter().any(|line| line.starts_with(prefix)),
            "no `{prefix}` line before the reload: {before:#?}"
        );
    }
    // The browser holder and the issuer app both use the hybrid.
    assert!(
        before
            .iter()
            .any(|line| line.starts_with("connected: connection ")
                && line.ends_with("(post-quantum X3DH + ML-KEM-768 done)")),
        "the browser's session is not post-quantum: {before:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|line| line.starts_with("credential received on connection ")),
        "nothing received after the reload: {steps:#?}"
    );
    // What was stored before the reload is not received again after it.
    let found = result["storedAfterReload"].as_u64().unwrap();
    assert!(found >= at_reload, "{result}");
    let received_after = steps
        .iter()
        .filter(|line| line.starts_with("credential received on connection "))
        .count();
    assert_eq!(
        received_after as u64 + found,
        (BURST + 1) as u64,
        "received after the reload: {steps:#?}"
    );
    // Live delivery before the reload, pages after it.
    assert!(
        before.contains(&"waiting for the issuer (live: GetMessageStream)"),
        "{before:#?}"
    );
    assert!(
        steps.contains(&"waiting for the issuer (polling GetMessagesPaginated)"),
        "{steps:#?}"
    );
    // A second tab of the same holder is refused (its Web Lock is held):
    // two mirrors of one store could reserve the same counters.
    let second = result["secondSteps"].to_string();
    assert!(
        second.contains("could not start: error (environment)") && second.contains("another tab"),
        "{second}"
    );
    // A damaged invitation is refused with its kind.
    assert_eq!(result["refused"]["kind"], "invitation", "{result}");
    // The issuer got every answer, each reported once, and exits.
    issuer.wait_success(STEP).unwrap();
    let issuer_lines = issuer.lines();
    let answers = issuer_lines
        .iter()
        .filter(|line| line.starts_with("reply from "))
        .count();
    assert_eq!(answers, BURST + 1, "{issuer_lines:#?}");
    connector.stop().unwrap();
    println!(
        "stored at the reload: {at_reload}; found after it: {}; in all: {}",
        result["storedAfterReload"],
        credentials.len()
    );
    println!(
        "seal/open in Chromium:\n{}",
        result["timing"].as_str().unwrap_or_default()
    );
    println!("screenshot: {}", screenshot.display());
}
