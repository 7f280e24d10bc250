//! The handshake glue of `confidant-session` driven by the X3DH plugin,
//! through encoded envelopes: suite negotiation, refusals, one-time pre-key
//! reuse, session reset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_core::wire::{self, envelope::Body};
use confidant_core::{ConnectionId, KeyAgreement, SuiteId, SuiteRegistry};
use confidant_session::handshake::{self, HandshakeError, InitiatorPolicy, ResponderPolicy};
use confidant_session::{OpenError, Session, SessionConfig};
use confidant_x3dh::{
    IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh, X3dhError,
};

fn registry() -> SuiteRegistry {
    let mut registry = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut registry).unwrap();
    confidant_chacha20poly1305::register(&mut registry).unwrap();
    registry
}

fn issuer() -> ResponderKeys {
    let identity = IdentityKeyPair::generate();
    let signed_pre_key = SignedPreKey::generate(&identity, 1);
    let mut keys = ResponderKeys::new(identity, signed_pre_key).unwrap();
    for id in 1..=3 {
        keys.add_one_time_pre_key(OneTimePreKey::generate(id))
            .unwrap();
    }
    keys
}

fn connection() -> ConnectionId {
    ConnectionId::new("conn-handshake").unwrap()
}

/// The holder's side of a handshake, with the registry, connection and
/// config every test here uses.
fn initiate(
    x3dh: &X3dh,
    holder: &IdentityKeyPair,
    invitation: &[u8],
    bundle: &wire::PreKeyBundle,
    first: &[u8],
) -> Result<(Session, wire::InitialMessage), HandshakeError<X3dhError>> {
    initiate_with(
        x3dh,
        holder,
        invitation,
        bundle,
        first,
        InitiatorPolicy::default(),
    )
}

fn initiate_with(
    x3dh: &X3dh,
    holder: &IdentityKeyPair,
    invitation: &[u8],
    bundle: &wire::PreKeyBundle,
    first: &[u8],
    policy: InitiatorPolicy<'_>,
) -> Result<(Session, wire::InitialMessage), HandshakeError<X3dhError>> {
    handshake::initiate(
        x3dh,
        holder,
        invitation,
        bundle,
        policy,
        &registry(),
        connection(),
        first,
        SessionConfig::default(),
    )
}

/// Encodes and decodes a body, as the relay would carry it.
fn over_the_wire(body: Body) -> Body {
    wire::decode_envelope(&wire::encode_envelope(body), wire::DEFAULT_MAX_ENVELOPE_LEN).unwrap()
}

fn bundle_for(keys: &ResponderKeys, one_time: u32, suites: &[SuiteId]) -> wire::PreKeyBundle {
    match over_the_wire(Body::Bundle(
        keys.bundle_with_one_time_pre_key(one_time, suites)
            .unwrap()
            .to_wire(),
    )) {
        Body::Bundle(bundle) => bundle,
        _ => unreachable!(),
    }
}

fn initial(body: Body) -> wire::InitialMessage {
    match over_the_wire(body) {
        Body::Initial(initial) => initial,
        _ => unreachable!(),
    }
}

fn establish(
    x3dh: &X3dh,
    issuer_keys: &mut ResponderKeys,
    holder: &IdentityKeyPair,
    one_time: u32,
    suites: &[SuiteId],
) -> (Session, Session) {
    let registry = registry();
    let invitation = issuer_keys.identity_public_key().to_bytes();
    let bundle = bundle_for(issuer_keys, one_time, suites);
    let (holder_session, initial_message) =
        initiate(x3dh, holder, &invitation, &bundle, b"first").unwrap();
    let initial_message = initial(Body::Initial(initial_message));
    let responded = handshake::respond(
        x3dh,
        issuer_keys,
        &initial_message,
        ResponderPolicy {
            offered: suites,
            ..ResponderPolicy::default()
        },
        &registry,
        connection(),
        SessionConfig::default(),
    )
    .unwrap();
    assert_eq!(responded.first_plaintext.as_slice(), b"first");
    assert_eq!(responded.one_time_pre_key_id, Some(one_time));
    issuer_keys.consume_one_time_pre_key(one_time);
    (holder_session, responded.session)
}

#[test]
fn every_suite_can_be_negotiated_and_used() {
    let x3dh = X3dh::default();
    for suite in [
        SuiteId::AES_256_GCM_SHA256_COUNTER,
        SuiteId::AES_256_GCM_LFSR,
        SuiteId::CHACHA20_POLY1305_COUNTER,
    ] {
        let mut issuer_keys = issuer();
        let holder = IdentityKeyPair::generate();
        let (mut holder_session, mut issuer_session) =
            establish(&x3dh, &mut issuer_keys, &holder, 1, &[suite]);
        assert_eq!(holder_session.suite_id(), suite);
        assert_eq!(issuer_session.suite_id(), suite);
        let reply = issuer_session.seal(b"credential").unwrap();
        assert_eq!(holder_session.open(reply).unwrap(), b"credential");
    }
}

#[test]
fn the_first_supported_suite_of_the_offer_is_chosen() {
    let x3dh = X3dh::default();
    let mut issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let offer = [
        SuiteId(SuiteId::PRIVATE_USE_START + 99), // nobody has it
        SuiteId::CHACHA20_POLY1305_COUNTER,
        SuiteId::AES_256_GCM_SHA256_COUNTER,
    ];
    let (holder_session, _) = establish(&x3dh, &mut issuer_keys, &holder, 1, &offer);
    assert_eq!(
        holder_session.suite_id(),
        SuiteId::CHACHA20_POLY1305_COUNTER
    );

    let only_unknown = bundle_for(&issuer_keys, 2, &[SuiteId(SuiteId::PRIVATE_USE_START + 99)]);
    let result = initiate(
        &x3dh,
        &holder,
        &issuer_keys.identity_public_key().to_bytes(),
        &only_unknown,
        b"x",
    );
    assert!(matches!(result, Err(HandshakeError::NoCommonSuite { .. })));
}

#[test]
fn a_swapped_bundle_is_refused_before_any_session_exists() {
    let x3dh = X3dh::default();
    let genuine = issuer();
    let impostor = issuer();
    let holder = IdentityKeyPair::generate();
    let swapped = bundle_for(&impostor, 1, &[]);
    let result = initiate(
        &x3dh,
        &holder,
        &genuine.identity_public_key().to_bytes(),
        &swapped,
        b"x",
    );
    assert!(matches!(
        result,
        Err(HandshakeError::KeyAgreement(X3dhError::IdentityMismatch))
    ));
}

#[test]
fn the_responder_refuses_tampered_or_unoffered_initial_messages() {
    let x3dh = X3dh::default();
    let issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let registry = registry();
    let offered = [SuiteId::AES_256_GCM_SHA256_COUNTER];
    let bundle = bundle_for(&issuer_keys, 1, &offered);
    let (_, initial_message) = initiate(
        &x3dh,
        &holder,
        &issuer_keys.identity_public_key().to_bytes(),
        &bundle,
        b"first",
    )
    .unwrap();
    let respond = |initial: &wire::InitialMessage, offered: &[SuiteId]| {
        handshake::respond(
            &x3dh,
            &issuer_keys,
            initial,
            ResponderPolicy {
                offered,
                ..ResponderPolicy::default()
            },
            &registry,
            connection(),
            SessionConfig::default(),
        )
    };

    let mut tampered = initial_message.clone();
    tampered.first_message.as_mut().unwrap().content[0] ^= 0x80;
    assert!(matches!(
        respond(&tampered, &offered),
        Err(HandshakeError::FirstMessage(OpenError::Authentication))
    ));

    let mut other_ephemeral = initial_message.clone();
    other_ephemeral.ephemeral_key = IdentityKeyPair::generate()
        .public_key()
        .to_x25519()
        .to_bytes()
        .to_vec();
    assert!(matches!(
        respond(&other_ephemeral, &offered),
        Err(HandshakeError::FirstMessage(OpenError::Authentication))
    ));

    let mut no_first = initial_message.clone();
    no_first.first_message = None;
    assert!(matches!(
        respond(&no_first, &offered),
        Err(HandshakeError::MalformedInitialMessage(_))
    ));

    assert!(matches!(
        respond(&initial_message, &[SuiteId::CHACHA20_POLY1305_COUNTER]),
        Err(HandshakeError::UnknownSuite(_))
    ));

    assert!(respond(&initial_message, &offered).is_ok());
}

#[test]
fn a_consumed_one_time_pre_key_cannot_serve_a_replayed_initial_message() {
    let x3dh = X3dh::default();
    let mut issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let registry = registry();
    let bundle = bundle_for(&issuer_keys, 2, &[]);
    let (_, initial_message) = initiate(
        &x3dh,
        &holder,
        &issuer_keys.identity_public_key().to_bytes(),
        &bundle,
        b"first",
    )
    .unwrap();
    let responded = handshake::respond(
        &x3dh,
        &issuer_keys,
        &initial_message,
        ResponderPolicy::default(),
        &registry,
        connection(),
        SessionConfig::default(),
    )
    .unwrap();
    issuer_keys.consume_one_time_pre_key(responded.one_time_pre_key_id.unwrap());
    let replay = handshake::respond(
        &x3dh,
        &issuer_keys,
        &initial_message,
        ResponderPolicy::default(),
        &registry,
        connection(),
        SessionConfig::default(),
    );
    assert!(matches!(
        replay,
        Err(HandshakeError::KeyAgreement(
            X3dhError::UnknownOneTimePreKey { id: 2 }
        ))
    ));
}

#[test]
fn a_session_reset_starts_again_under_new_keys() {
    let x3dh = X3dh::default();
    let mut issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let (mut old_holder, mut old_issuer) = establish(&x3dh, &mut issuer_keys, &holder, 1, &[]);
    for _ in 0..5 {
        old_issuer.open(old_holder.seal(b"old").unwrap()).unwrap();
    }
    old_holder.update_sending_key(false).unwrap();
    let old_message = old_holder.seal(b"old epoch 1").unwrap();

    // The holder lost its state: a fresh X3DH.
    let (mut new_holder, mut new_issuer) = establish(&x3dh, &mut issuer_keys, &holder, 2, &[]);
    // Counter 0 was taken by the first message in the initial message.
    assert_eq!(new_holder.next_send_counter(), 1);
    assert_eq!(new_holder.send_epoch(), 0);
    // Epoch 1 is a reachable next epoch for the new session, so the tag is
    // what refuses the old session's message.
    assert_eq!(new_issuer.open(old_message), Err(OpenError::Authentication));
    let fresh = new_holder.seal(b"new").unwrap();
    assert_eq!(fresh.counter, 1);
    assert_eq!(new_issuer.open(fresh.clone()).unwrap(), b"new");
    // The old session cannot read the new one's messages.
    assert!(old_issuer.open(fresh).is_err());
}

#[test]
fn the_bundle_from_the_key_agreement_trait_works_through_the_glue() {
    let x3dh = X3dh::default();
    let issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let bundle = x3dh
        .bundle(&issuer_keys, &[SuiteId::AES_256_GCM_LFSR], b"")
        .unwrap();
    let (mut holder_session, initial_message) = initiate(
        &x3dh,
        &holder,
        &issuer_keys.identity_public_key().to_bytes(),
        &bundle,
        b"hi",
    )
    .unwrap();
    let mut responded = handshake::respond(
        &x3dh,
        &issuer_keys,
        &initial_message,
        ResponderPolicy {
            offered: &[SuiteId::AES_256_GCM_LFSR],
            ..ResponderPolicy::default()
        },
        &registry(),
        connection(),
        SessionConfig::default(),
    )
    .unwrap();
    assert_eq!(responded.first_plaintext.as_slice(), b"hi");
    let reply = responded.session.seal(b"hello").unwrap();
    assert_eq!(holder_session.open(reply).unwrap(), b"hello");
}

#[test]
fn a_relay_cannot_reset_a_connection_with_its_own_identity() {
    let x3dh = X3dh::default();
    let mut issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let (_, established) = establish(&x3dh, &mut issuer_keys, &holder, 1, &[]);
    let registry = registry();
    let invitation = issuer_keys.identity_public_key().to_bytes();
    let respond_to = |initial: &wire::InitialMessage| {
        handshake::respond(
            &x3dh,
            &issuer_keys,
            initial,
            ResponderPolicy {
                replacing: Some(&established),
                ..ResponderPolicy::default()
            },
            &registry,
            connection(),
            SessionConfig::default(),
        )
    };

    // The relay knows the issuer's public bundle and runs X3DH itself.
    let relay = IdentityKeyPair::generate();
    let (_, forged) = initiate(
        &x3dh,
        &relay,
        &invitation,
        &bundle_for(&issuer_keys, 2, &[]),
        b"I am the holder now",
    )
    .unwrap();
    assert!(matches!(
        respond_to(&forged),
        Err(HandshakeError::OtherParties)
    ));

    // The real holder may reset.
    let (_, genuine) = initiate(
        &x3dh,
        &holder,
        &invitation,
        &bundle_for(&issuer_keys, 3, &[]),
        b"hello again",
    )
    .unwrap();
    let responded = respond_to(&genuine).unwrap();
    assert!(responded.session.same_parties(&established));
}

#[test]
fn an_initial_message_without_a_one_time_pre_key_is_refused_by_default() {
    let x3dh = X3dh::default();
    let issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let registry = registry();
    let bundle = match over_the_wire(Body::Bundle(issuer_keys.bundle(&[]).to_wire())) {
        Body::Bundle(bundle) => bundle,
        _ => unreachable!(),
    };
    assert!(bundle.one_time_pre_key.is_none());
    // The initiator refuses such a bundle by default too.
    assert!(matches!(
        initiate(
            &x3dh,
            &holder,
            &issuer_keys.identity_public_key().to_bytes(),
            &bundle,
            b"first",
        ),
        Err(HandshakeError::OneTimePreKeyRequired)
    ));
    let (_, initial_message) = initiate_with(
        &x3dh,
        &holder,
        &issuer_keys.identity_public_key().to_bytes(),
        &bundle,
        b"first",
        InitiatorPolicy {
            require_one_time_pre_key: false,
            ..InitiatorPolicy::default()
        },
    )
    .unwrap();
    let respond = |policy| {
        handshake::respond(
            &x3dh,
            &issuer_keys,
            &initial_message,
            policy,
            &registry,
            connection(),
            SessionConfig::default(),
        )
    };
    assert!(matches!(
        respond(ResponderPolicy::default()),
        Err(HandshakeError::OneTimePreKeyRequired)
    ));
    // Allowed explicitly, the same initial message builds the same session
    // every time it is replayed: the reason the default refuses it.
    let lenient = ResponderPolicy {
        require_one_time_pre_key: false,
        ..ResponderPolicy::default()
    };
    let mut first = respond(lenient).unwrap().session;
    let mut replayed = respond(lenient).unwrap().session;
    assert_eq!(
        first.seal(b"same").unwrap().content,
        replayed.seal(b"same").unwrap().content
    );
}

/// The relay may rewrite the bundle's unsigned-looking parts; the offer
/// signature covers them all. Each rewrite that once changed the outcome
/// (a downgrade to a weaker suite, a stripped one-time pre-key that left the
/// issuer refusing the initial message) is refused by the initiator now.
#[test]
fn a_relay_cannot_strip_or_reorder_the_offer_or_strip_the_one_time_pre_key() {
    let x3dh = X3dh::default();
    let issuer_keys = issuer();
    let holder = IdentityKeyPair::generate();
    let invitation = issuer_keys.identity_public_key().to_bytes();
    let binding = b"conn-handshake / token";
    let offer = [
        SuiteId::CHACHA20_POLY1305_COUNTER,
        SuiteId::AES_256_GCM_SHA256_COUNTER,
        SuiteId::AES_256_GCM_LFSR,
    ];
    let honest = issuer_keys
        .bound_bundle(Some(1), &offer, binding)
        .unwrap()
        .to_wire();
    let policy = InitiatorPolicy {
        binding,
        ..InitiatorPolicy::default()
    };
    // Untouched, the issuer's most preferred suite is taken.
    let (session, _) = initiate_with(&x3dh, &holder, &invitation, &honest, b"x", policy).unwrap();
    assert_eq!(session.suite_id(), SuiteId::CHACHA20_POLY1305_COUNTER);

    let refused = |bundle: &wire::PreKeyBundle, what: &str| match initiate_with(
        &x3dh,
        &holder,
        &invitation,
        bundle,
        b"x",
        policy,
    ) {
        Err(HandshakeError::KeyAgreement(X3dhError::BadOfferSignature)) => {}
        other => panic!("{what}: {:?}", other.map(|(session, _)| session.suite_id())),
    };
    let mut stripped = honest.clone();
    stripped.suites.remove(0);
    refused(&stripped, "first suite stripped");
    let mut reordered = honest.clone();
    reordered.suites.reverse();
    refused(&reordered, "suites reordered");
    let mut no_one_time = honest.clone();
    no_one_time.one_time_pre_key = None;
    refused(&no_one_time, "one-time pre-key stripped");
    let mut other_one_time = honest.clone();
    if let Some(key) = other_one_time.one_time_pre_key.as_mut() {
        key.id = 2;
    }
    refused(&other_one_time, "one-time pre-key id changed");
    // Replayed into another handshake (another binding).
    match initiate_with(
        &x3dh,
        &holder,
        &invitation,
        &honest,
        b"x",
        InitiatorPolicy {
            binding: b"another connection / reset nonce",
            ..InitiatorPolicy::default()
        },
    ) {
        Err(HandshakeError::KeyAgreement(X3dhError::BadOfferSignature)) => {}
        other => panic!(
            "other binding: {:?}",
            other.map(|(session, _)| session.suite_id())
        ),
    }
    // No offer signature at all.
    let mut unsigned = honest.clone();
    unsigned.offer_signature.clear();
    match initiate_with(&x3dh, &holder, &invitation, &unsigned, b"x", policy) {
        Err(HandshakeError::KeyAgreement(X3dhError::UnsignedOffer)) => {}
        other => panic!(
            "unsigned: {:?}",
            other.map(|(session, _)| session.suite_id())
        ),
    }
}
