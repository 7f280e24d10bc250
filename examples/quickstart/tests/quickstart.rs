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
