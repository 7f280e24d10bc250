//! The quickstart: an issuer and a holder, in one process, talking through an
//! in-memory relay that carries only encoded envelopes.
//!
//! 1. The issuer creates its identity key, a signed pre-key and a one-time
//!    pre-key, and shows an invitation (its identity key, which the issuer
//!    app of `examples/issuer` shows as a QR code; here it is printed).
//! 2. The issuer sends its pre-key bundle through the relay.
//! 3. The holder checks the bundle against the invitation, runs X3DH, and
//!    sends the initial message with its first sealed message.
//! 4. The issuer derives the same secret, opens the first message and
//!    deletes the one-time pre-key.
//! 5. Messages flow both ways; the relay's replay of a message and a
//!    tampered copy are refused; the holder updates its sending key.
//! 6. A session reset: a fresh X3DH replaces the session.
//!
//! [`run`] writes the steps to any `Write` and returns what happened, so a
//! test can check it.

use confidant_core::wire::{self, envelope::Body};
use confidant_core::{ConnectionId, KeyAgreement, SuiteId, SuiteRegistry};
use confidant_session::handshake::{self, InitiatorPolicy, ResponderPolicy};
use confidant_session::{OpenError, Session, SessionConfig};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh};
use std::collections::VecDeque;
use std::error::Error;
use std::io::Write;

/// What the demo observed, for tests.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Application messages the issuer received, in order.
    pub issuer_received: Vec<String>,
    /// Application messages the holder received, in order.
    pub holder_received: Vec<String>,
    /// The error the relay's replay got.
    pub replay_refused: Option<OpenError>,
    /// The error the tampered copy got.
    pub tamper_refused: Option<OpenError>,
    /// The error a bundle from an impostor got.
    pub impostor_refused: Option<String>,
    /// Whether the one-time pre-key was gone after the handshake.
    pub one_time_pre_key_deleted: bool,
    /// The sending epoch of the holder after its key update.
    pub holder_epoch_after_update: u32,
    /// Whether a message of the old session was refused by the new one.
    pub old_session_message_refused_after_reset: bool,
}

/// The relay: it sees only encoded envelopes.
#[derive(Default)]
struct Relay {
    to_holder: VecDeque<Vec<u8>>,
    to_issuer: VecDeque<Vec<u8>>,
    bytes_carried: usize,
}

impl Relay {
    fn send_to_holder(&mut self, body: Body) {
        let bytes = wire::encode_envelope(body);
        self.bytes_carried += bytes.len();
        self.to_holder.push_back(bytes);
    }
    fn send_to_issuer(&mut self, body: Body) {
        let bytes = wire::encode_envelope(body);
        self.bytes_carried += bytes.len();
        self.to_issuer.push_back(bytes);
    }
}

fn next(queue: &mut VecDeque<Vec<u8>>) -> Result<Body, Box<dyn Error>> {
    let bytes = queue
        .pop_front()
        .ok_or("the relay has nothing to deliver")?;
    Ok(wire::decode_envelope(
        &bytes,
        wire::DEFAULT_MAX_ENVELOPE_LEN,
    )?)
}

fn registry() -> Result<SuiteRegistry, Box<dyn Error>> {
    let mut registry = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut registry)?;
    confidant_chacha20poly1305::register(&mut registry)?;
    Ok(registry)
}

/// The issuer's side of a handshake: answers the initial message on the
/// relay, deleting the one-time pre-key it used.
fn issuer_accepts(
    relay: &mut Relay,
    x3dh: &X3dh,
    issuer_keys: &mut ResponderKeys,
    offered: &[SuiteId],
    replacing: Option<&Session>,
    registry: &SuiteRegistry,
    connection: &ConnectionId,
) -> Result<(Session, String), Box<dyn Error>> {
    let Body::Initial(initial) = next(&mut relay.to_issuer)? else {
        return Err("expected an initial message".into());
    };
    let responded = handshake::respond(
        x3dh,
        issuer_keys,
        &initial,
        ResponderPolicy {
            offered,
            replacing,
            ..ResponderPolicy::default()
        },
        registry,
        connection.clone(),
        SessionConfig::default(),
    )?;
    // With a store, this deletion and the new session are one transaction.
    if let Some(id) = responded.one_time_pre_key_id {
        issuer_keys.consume_one_time_pre_key(id);
    }
    Ok((
        responded.session,
        String::from_utf8_lossy(&responded.first_plaintext).into_owned(),
    ))
}

/// The holder's side: checks the bundle on the relay against the
/// invitation, runs X3DH and sends the initial message.
fn holder_connects(
    relay: &mut Relay,
    x3dh: &X3dh,
    holder_identity: &IdentityKeyPair,
    invitation: &[u8],
    registry: &SuiteRegistry,
    connection: &ConnectionId,
    first_message: &str,
) -> Result<Session, Box<dyn Error>> {
    let Body::Bundle(bundle) = next(&mut relay.to_holder)? else {
        return Err("expected a bundle".into());
    };
    let (session, initial) = handshake::initiate(
        x3dh,
        holder_identity,
        invitation,
        &bundle,
        // The issuer signed its offer over this binding (here the connection
        // id; the runtime adds the invitation's token).
        InitiatorPolicy {
            binding: connection.as_bytes(),
            ..InitiatorPolicy::default()
        },
        registry,
        connection.clone(),
        first_message.as_bytes(),
        SessionConfig::default(),
    )?;
    relay.send_to_issuer(Body::Initial(initial));
    Ok(session)
}

/// Runs the whole demo, writing each step to `out`.
pub fn run(out: &mut impl Write) -> Result<Transcript, Box<dyn Error>> {
    let mut transcript = Transcript::default();
    let registry = registry()?;
    let x3dh = X3dh::default();
    let mut relay = Relay::default();
    let connection = ConnectionId::new("connection-7f3a")?;
    let offered = [
        SuiteId::AES_256_GCM_SHA256_COUNTER,
        SuiteId::CHACHA20_POLY1305_COUNTER,
    ];

    writeln!(out, "1. The issuer creates its keys and an invitation")?;
    let issuer_identity = IdentityKeyPair::generate();
    let signed_pre_key = SignedPreKey::generate(&issuer_identity, 1);
    let mut issuer_keys = ResponderKeys::new(issuer_identity, signed_pre_key)?;
    issuer_keys.add_one_time_pre_key(OneTimePreKey::generate(1))?;
    issuer_keys.add_one_time_pre_key(OneTimePreKey::generate(2))?;
    let invitation = issuer_keys.identity_public_key().to_bytes();
    writeln!(
        out,
        "   invitation (what the issuer's QR code would carry; the issuer app draws one): connection {connection}, issuer identity key {}",
        hex::encode(invitation)
    )?;

    writeln!(out, "2. An impostor's bundle reaches the holder first")?;
    let impostor = IdentityKeyPair::generate();
    let impostor_pre_key = SignedPreKey::generate(&impostor, 1);
    let impostor_keys = ResponderKeys::new(impostor, impostor_pre_key)?;
    relay.send_to_holder(Body::Bundle(x3dh.bundle(
        &impostor_keys,
        &offered,
        connection.as_bytes(),
    )?));
    let holder_identity = IdentityKeyPair::generate();
    match holder_connects(
        &mut relay,
        &x3dh,
        &holder_identity,
        &invitation,
        &registry,
        &connection,
        "never sent",
    ) {
        Ok(_) => return Err("the holder accepted an impostor's bundle".into()),
        Err(error) => {
            writeln!(out, "   refused: {error}")?;
            transcript.impostor_refused = Some(error.to_string());
        }
    }

    writeln!(out, "3. The issuer sends its pre-key bundle")?;
    let bundle = issuer_keys.bound_bundle(Some(1), &offered, connection.as_bytes())?;
    relay.send_to_holder(Body::Bundle(bundle.to_wire()));
    writeln!(
        out,
        "   signed pre-key 1 and one-time pre-key 1; suites offered: {offered:?}"
    )?;

    writeln!(
        out,
        "4. The holder checks the bundle against the invitation and runs X3DH"
    )?;
    let mut holder = holder_connects(
        &mut relay,
        &x3dh,
        &holder_identity,
        &invitation,
        &registry,
        &connection,
        "hello issuer, this is the holder",
    )?;
    writeln!(
        out,
        "   agreed; suite {} chosen; initial message with the first sealed message sent",
        holder.suite_id()
    )?;

    writeln!(out, "5. The issuer answers the initial message")?;
    let (mut issuer, first) = issuer_accepts(
        &mut relay,
        &x3dh,
        &mut issuer_keys,
        &offered,
        None,
        &registry,
        &connection,
    )?;
    transcript.one_time_pre_key_deleted = !issuer_keys.has_one_time_pre_key(1);
    writeln!(out, "   first message opened: {first:?}")?;
    writeln!(
        out,
        "   one-time pre-key 1 deleted: {}",
        transcript.one_time_pre_key_deleted
    )?;
    transcript.issuer_received.push(first);

    writeln!(out, "6. Messages both ways")?;
    let credential = r#"{"type":"UniversityDegree","name":"Ada"}"#;
    relay.send_to_holder(Body::Message(issuer.seal(credential.as_bytes())?));
    let Body::Message(message) = next(&mut relay.to_holder)? else {
        return Err("expected a message".into());
    };
    let received = String::from_utf8(holder.open(message)?)?;
    writeln!(out, "   holder received: {received}")?;
    transcript.holder_received.push(received);

    let thanks = holder.seal(b"credential received, thank you")?;
    relay.send_to_issuer(Body::Message(thanks.clone()));
    let Body::Message(message) = next(&mut relay.to_issuer)? else {
        return Err("expected a message".into());
    };
    let received = String::from_utf8(issuer.open(message)?)?;
    writeln!(
        out,
        "   issuer received: {received} (counter {}, epoch {})",
        thanks.counter, thanks.epoch
    )?;
    transcript.issuer_received.push(received);

    writeln!(
        out,
        "7. The relay replays a message and tampers with another"
    )?;
    let replay = issuer.open(thanks).err();
    writeln!(out, "   replay refused: {replay:?}")?;
    transcript.replay_refused = replay;
    let mut tampered = holder.seal(b"pay 10 EUR")?;
    if let Some(byte) = tampered.content.first_mut() {
        *byte ^= 1;
    }
    let tamper = issuer.open(tampered).err();
    writeln!(out, "   tampered copy refused: {tamper:?}")?;
    transcript.tamper_refused = tamper;

    writeln!(out, "8. The holder updates its sending key")?;
    relay.send_to_issuer(Body::KeyUpdate(holder.update_sending_key(false)?));
    let Body::KeyUpdate(update) = next(&mut relay.to_issuer)? else {
        return Err("expected a key update".into());
    };
    let update = issuer.open_key_update(update)?;
    transcript.holder_epoch_after_update = holder.send_epoch();
    writeln!(out, "   issuer now receives epoch {}", update.epoch)?;
    let after = holder.seal(b"sealed under the new key")?;
    let received = String::from_utf8(issuer.open(after.clone())?)?;
    writeln!(
        out,
        "   issuer received: {received} (epoch {})",
        after.epoch
    )?;
    transcript.issuer_received.push(received);

    writeln!(
        out,
        "9. Session reset: the holder lost its state; a fresh X3DH replaces the session"
    )?;
    relay.send_to_holder(Body::Bundle(
        issuer_keys
            .bound_bundle(Some(2), &offered, connection.as_bytes())?
            .to_wire(),
    ));
    let mut holder = holder_connects(
        &mut relay,
        &x3dh,
        &holder_identity,
        &invitation,
        &registry,
        &connection,
        "hello again",
    )?;
    // The issuer only lets the same holder (same identity key) reset the
    // connection.
    let (mut new_issuer, first) = issuer_accepts(
        &mut relay,
        &x3dh,
        &mut issuer_keys,
        &offered,
        Some(&issuer),
        &registry,
        &connection,
    )?;
    writeln!(out, "   issuer opened {first:?} under the new session")?;
    transcript.issuer_received.push(first);
    let stale = new_issuer.open(after).is_err();
    writeln!(out, "   a message of the old session is refused: {stale}")?;
    transcript.old_session_message_refused_after_reset = stale;
    drop(issuer);
    relay.send_to_holder(Body::Message(new_issuer.seal(b"welcome back")?));
    let Body::Message(message) = next(&mut relay.to_holder)? else {
        return Err("expected a message".into());
    };
    let received = String::from_utf8(holder.open(message)?)?;
    writeln!(out, "   holder received: {received}")?;
    transcript.holder_received.push(received);

    writeln!(
        out,
        "Done: the relay carried {} bytes of envelopes and never saw a key or a plaintext.",
        relay.bytes_carried
    )?;
    Ok(transcript)
}
