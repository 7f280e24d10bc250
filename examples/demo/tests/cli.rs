//! `demo --help` and `--version` print and exit, without building or
//! starting anything.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn help_and_version_print_and_exit_without_running_the_demo() {
    let demo = env!("CARGO_BIN_EXE_demo");
    let help = Command::new(demo).arg("--help").output().unwrap();
    assert!(help.status.success(), "{help:?}");
    let stdout = String::from_utf8(help.stdout).unwrap();
    assert!(stdout.contains("Usage: demo"), "{stdout}");
    assert!(!stdout.contains("[demo]"), "the demo ran: {stdout}");
    assert!(
        help.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&help.stderr)
    );
    let version = Command::new(demo).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(String::from_utf8(version.stdout).unwrap(), "demo 0.1.0\n");
    let wrong = Command::new(demo).arg("--no-such-flag").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}
