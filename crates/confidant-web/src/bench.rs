//! Seal and open per message, timed by whatever clock the caller has (the
//! page's `performance.now()`, `std::time::Instant` natively), on the same
//! session code the engine uses. `examples/seal_open.rs` prints the
//! native figure; the page's `WebHolder.timeSealOpen` the browser's.

use crate::error::{ErrorKind, WebError};
use confidant_core::{AgreedSecret, ConnectionId, Role, SuiteId};
use confidant_session::{Session, SessionConfig};

/// Nanoseconds per message.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// The suite timed (the default one).
    pub suite: String,
    /// Seal, per message.
    pub seal_ns: f64,
    /// Open, per message.
    pub open_ns: f64,
}

/// Seals `messages` messages of `bytes` bytes with the default suite, then
/// opens them all (checking each), timing both loops with `now_ms`.
pub fn seal_open(
    bytes: usize,
    messages: u32,
    now_ms: impl Fn() -> f64,
) -> Result<Timing, WebError> {
    let failed = |what: &str| WebError::new(ErrorKind::Internal, format!("timing: {what}"));
    if messages == 0 || bytes > 1 << 20 {
        return Err(WebError::new(
            ErrorKind::Environment,
            "time 1 or more messages of at most 1 MiB",
        ));
    }
    let registry = crate::suites()?;
    let id = SuiteId::AES_256_GCM_SHA256_COUNTER;
    let suite = registry.get(id).map_err(|_| failed("no default suite"))?;
    let suite_name = suite.name().to_owned();
    // A fixed secret: what is timed is the AEAD, the IV and the session's
    // bookkeeping, not the key agreement.
    let agreed = AgreedSecret::new([0x11; 32], vec![0x22; 64], None);
    let connection = ConnectionId::new("timing-connection").map_err(|_| failed("connection id"))?;
    let session = |role| {
        Session::new(
            role,
            connection.clone(),
            suite.clone(),
            &agreed,
            SessionConfig::default(),
        )
        .map_err(|error| failed(&error.to_string()))
    };
    let mut sender = session(Role::Initiator)?;
    let mut receiver = session(Role::Responder)?;
    let plaintext = vec![0x5a; bytes];
    let mut sealed = Vec::with_capacity(messages as usize);
    let start = now_ms();
    for _ in 0..messages {
        sealed.push(
            sender
                .seal(&plaintext)
                .map_err(|error| failed(&error.to_string()))?,
        );
    }
    let seal_ms = now_ms() - start;
    let start = now_ms();
    for message in sealed {
        let opened = receiver
            .open(message)
            .map_err(|error| failed(&error.to_string()))?;
        if opened.len() != bytes {
            return Err(failed("a message opened to another length"));
        }
    }
    let open_ms = now_ms() - start;
    let per = |ms: f64| ms * 1e6 / f64::from(messages);
    Ok(Timing {
        suite: suite_name,
        seal_ns: per(seal_ms),
        open_ns: per(open_ms),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_message_seals_and_opens_and_bad_arguments_are_refused() {
        let start = std::time::Instant::now();
        let timing = seal_open(64, 100, || start.elapsed().as_secs_f64() * 1e3).unwrap();
        assert!(timing.seal_ns > 0.0 && timing.open_ns > 0.0, "{timing:?}");
        assert!(seal_open(64, 0, || 0.0).is_err());
        assert!(seal_open(2 << 20, 1, || 0.0).is_err());
    }
}
