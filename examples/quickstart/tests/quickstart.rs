//! The quickstart does what it prints.
#![allow(clippy::unwrap_used)]

use confidant_session::{OpenError, ReplayError};

#[test]
fn the_demo_runs_and_every_step_holds() {
    let mut output = Vec::new();
    let transcript = quickstart::run(&mut output).unwrap();
    let output = String::from_utf8(output).unwrap();
    assert!(output.contains("1. The issuer creates its keys"));
    assert!(output.contains("Done:"));

    assert_eq!(
        transcript.issuer_received,
        [
            "hello issuer, this is the holder",
            "credential received, thank you",
            "sealed under the new key",
            "hello again",
        ]
    );
    assert_eq!(
        transcript.holder_received,
        [
            r#"{"type":"UniversityDegree","name":"Ada"}"#,
            "welcome back"
        ]
    );
    assert!(
        transcript
            .impostor_refused
            .as_deref()
            .unwrap()
            .contains("identity")
    );
    assert!(matches!(
        transcript.replay_refused,
        Some(OpenError::Replay(ReplayError::Duplicate { .. }))
    ));
    assert_eq!(transcript.tamper_refused, Some(OpenError::Authentication));
    assert!(transcript.one_time_pre_key_deleted);
    assert_eq!(transcript.holder_epoch_after_update, 1);
    assert!(transcript.old_session_message_refused_after_reset);
}

#[test]
fn help_prints_usage_and_does_not_run_the_quickstart() {
    let quickstart = env!("CARGO_BIN_EXE_quickstart");
    let help = std::process::Command::new(quickstart)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    let stdout = String::from_utf8(help.stdout).unwrap();
    assert!(stdout.contains("Usage: quickstart"), "{stdout}");
    assert!(!stdout.contains("1. The issuer creates"), "{stdout}");
    let wrong = std::process::Command::new(quickstart)
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}
