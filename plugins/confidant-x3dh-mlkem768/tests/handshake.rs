//! The hybrid handshake: round trips, implicit rejection, wrong keys,
//! the KEM signature's type byte, downgrades, one-time KEM pre-keys and
//! the decoders.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::wire::{self, DecodeError};
use confidant_core::{ConnectionId, KeyAgreement, SuiteId, SuiteRegistry};
use confidant_session::SessionConfig;
use confidant_session::handshake::{self, HandshakeError, InitiatorPolicy, ResponderPolicy};
use confidant_x3dh::{
    EphemeralKey, IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh, X3dhConfig,
    X3dhError,
};
use confidant_x3dh_mlkem768::{
    DEFAULT_HYBRID_INFO, HybridError, HybridInitialMessage, HybridPreKeyBundle,
    HybridResponderKeys, KEM_CIPHERTEXT_LEN, KEM_PUBLIC_KEY_LEN, KemKeyPair, KemPreKey,
    KemPreKeyKind, X3dhMlKem768, hybrid_offer_transcript,
};
use hkdf::Hkdf;
use sha2::Sha256;

const SUITE: SuiteId = SuiteId::AES_256_GCM_SHA256_COUNTER;
const BINDING: &[u8] = b"connection 1, token 7";
const LAST_RESORT_ID: u32 = 100;
const ONE_TIME_KEM_ID: u32 = 101;
const ONE_TIME_ID: u32 = 7;

fn issuer_identity() -> IdentityKeyPair {
    IdentityKeyPair::from_seed([0x11; 32])
}

/// The issuer's keys: classical (one signed, one one-time pre-key), a
/// last-resort KEM pre-key and, if asked, a one-time KEM pre-key.
fn issuer(with_one_time_kem: bool) -> HybridResponderKeys {
    let identity = issuer_identity();
    let signed_pre_key = SignedPreKey::new(&identity, 1, [0x12; 32]);
    let last_resort = KemPreKey::new(
        &identity,
        LAST_RESORT_ID,
        KemPreKeyKind::LastResort,
        KemKeyPair::from_seed(&[0x13; 32], &[0x14; 32]),
    );
    let one_time_kem = KemPreKey::new(
        &identity,
        ONE_TIME_KEM_ID,
        KemPreKeyKind::OneTime,
        KemKeyPair::from_seed(&[0x15; 32], &[0x16; 32]),
    );
    let mut classical = ResponderKeys::new(identity, signed_pre_key).unwrap();
    classical
        .add_one_time_pre_key(OneTimePreKey::new(ONE_TIME_ID, [0x17; 32]))
        .unwrap();
    let mut keys = HybridResponderKeys::new(classical, last_resort).unwrap();
    if with_one_time_kem {
        keys.add_one_time_kem_pre_key(one_time_kem).unwrap();
    }
    keys
}

fn invitation(keys: &HybridResponderKeys) -> [u8; 32] {
    keys.classical().identity_public_key().to_bytes()
}

fn holder() -> IdentityKeyPair {
    IdentityKeyPair::from_seed([0x21; 32])
}

fn strip(bundle: &wire::PreKeyBundle) -> wire::PreKeyBundle {
    let mut stripped = bundle.clone();
    stripped.kem_pre_key = None;
    stripped.hybrid_offer_signature.clear();
    stripped
}

#[test]
fn round_trip_with_last_resort_and_one_time_kem_pre_keys() {
    let hybrid = X3dhMlKem768::default();
    for with_one_time_kem in [false, true] {
        let issuer = issuer(with_one_time_kem);
        let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
        let (holder_secret, initial) = hybrid
            .initiate(&holder(), &invitation(&issuer), &bundle, SUITE, BINDING)
            .unwrap();
        assert_eq!(initial.kem_ciphertext.len(), KEM_CIPHERTEXT_LEN);
        let issuer_secret = hybrid.respond(&issuer, &initial).unwrap();
        assert_eq!(holder_secret.secret(), issuer_secret.secret());
        assert_eq!(
            holder_secret.associated_data(),
            issuer_secret.associated_data()
        );
        let mut associated_data = holder().public_key().to_bytes().to_vec();
        associated_data.extend_from_slice(&invitation(&issuer));
        assert_eq!(issuer_secret.associated_data(), associated_data);
        assert_eq!(issuer_secret.one_time_pre_key_id(), Some(ONE_TIME_ID));
        let expected_kem_id = with_one_time_kem.then_some(ONE_TIME_KEM_ID);
        assert_eq!(issuer_secret.one_time_kem_pre_key_id(), expected_kem_id);
        assert_eq!(holder_secret.one_time_kem_pre_key_id(), expected_kem_id);
        assert_eq!(
            initial.kem_pre_key_id,
            Some(if with_one_time_kem {
                ONE_TIME_KEM_ID
            } else {
                LAST_RESORT_ID
            })
        );
    }
}

/// SK recomputed from the raw primitives: the classical DH outputs (from
/// the classical plugin's own DH half) and ML-KEM's shared secret, through
/// HKDF with F, a zero salt and the hybrid info.
#[test]
fn secret_is_hkdf_of_f_dh_outputs_and_kem_secret() {
    let hybrid = X3dhMlKem768::default();
    let issuer = issuer(false);
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let m = [0x31; 32];
    let (holder_secret, initial) = hybrid
        .initiate_with_randomness(
            &holder(),
            &invitation(&issuer),
            &bundle,
            EphemeralKey::from_bytes([0x32; 32]),
            &m,
            SUITE,
            BINDING,
        )
        .unwrap();
    let header = HybridInitialMessage::from_wire(&initial).unwrap();
    let dh = issuer.classical().diffie_hellman(header.header()).unwrap();
    assert_eq!(dh.as_bytes().len(), 128);
    let kem_key = issuer.kem_pre_key(LAST_RESORT_ID).unwrap();
    let (ciphertext, shared) = kem_key.public_key().encapsulate_with_randomness(&m);
    assert_eq!(ciphertext.as_bytes().as_slice(), initial.kem_ciphertext);
    let mut ikm = vec![0xFF; 32];
    ikm.extend_from_slice(dh.as_bytes());
    ikm.extend_from_slice(shared.as_bytes());
    let mut expected = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm)
        .expand(DEFAULT_HYBRID_INFO, &mut expected)
        .unwrap();
    assert_eq!(holder_secret.secret(), &expected);
    // The classical secret of the same DH outputs differs: the KEM secret
    // and the info are in the key.
    let classical = dh.derive_secret(&[], confidant_x3dh::DEFAULT_INFO).unwrap();
    assert_ne!(holder_secret.secret(), &*classical);
    // Deterministic entry point: the same inputs, the same message.
    let (again, initial_again) = hybrid
        .initiate_with_randomness(
            &holder(),
            &invitation(&issuer),
            &bundle,
            EphemeralKey::from_bytes([0x32; 32]),
            &m,
            SUITE,
            BINDING,
        )
        .unwrap();
    assert_eq!(again.secret(), holder_secret.secret());
    assert_eq!(initial_again, initial);
}

#[test]
fn tampered_ciphertext_is_implicitly_rejected() {
    let hybrid = X3dhMlKem768::default();
    let issuer = issuer(true);
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let (holder_secret, initial) = hybrid
        .initiate(&holder(), &invitation(&issuer), &bundle, SUITE, BINDING)
        .unwrap();
    for position in [0, 500, KEM_CIPHERTEXT_LEN - 1] {
        let mut tampered = initial.clone();
        tampered.kem_ciphertext[position] ^= 0x01;
        // Decapsulation does not fail (implicit rejection): the responder
        // derives a secret, but not the initiator's.
        let issuer_secret = hybrid.respond(&issuer, &tampered).unwrap();
        assert_ne!(issuer_secret.secret(), holder_secret.secret());
    }
}

fn registry() -> SuiteRegistry {
    let mut registry = SuiteRegistry::new();
    confidant_aes_gcm::register(&mut registry).unwrap();
    registry
}

/// Further up, the session layer refuses the result of a tampered
/// ciphertext: the first message does not open under the responder's key.
#[test]
fn session_layer_refuses_a_tampered_ciphertext() {
    let hybrid = X3dhMlKem768::default();
    let issuer = issuer(true);
    let registry = registry();
    let connection = ConnectionId::new("c1").unwrap();
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let (_, initial) = handshake::initiate(
        &hybrid,
        &holder(),
        &invitation(&issuer),
        &bundle,
        InitiatorPolicy {
            binding: BINDING,
            require_one_time_pre_key: true,
        },
        &registry,
        connection.clone(),
        b"first",
        SessionConfig::default(),
    )
    .unwrap();
    let responded = handshake::respond(
        &hybrid,
        &issuer,
        &initial,
        ResponderPolicy::default(),
        &registry,
        connection.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    assert_eq!(&responded.first_plaintext[..], b"first");

    let mut tampered = initial.clone();
    tampered.kem_ciphertext[10] ^= 0x80;
    assert!(matches!(
        handshake::respond(
            &hybrid,
            &issuer,
            &tampered,
            ResponderPolicy::default(),
            &registry,
            connection,
            SessionConfig::default(),
        ),
        Err(HandshakeError::FirstMessage(_))
    ));
}

#[test]
fn wrong_kem_key_gives_another_secret_or_an_unknown_id() {
    let hybrid = X3dhMlKem768::default();
    let issuer = issuer(true);
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let (holder_secret, initial) = hybrid
        .initiate(&holder(), &invitation(&issuer), &bundle, SUITE, BINDING)
        .unwrap();
    assert_eq!(initial.kem_pre_key_id, Some(ONE_TIME_KEM_ID));
    // The ciphertext decapsulated with the other KEM key (the last-resort
    // one): a secret, but another.
    let mut other_key = initial.clone();
    other_key.kem_pre_key_id = Some(LAST_RESORT_ID);
    let issuer_secret = hybrid.respond(&issuer, &other_key).unwrap();
    assert_ne!(issuer_secret.secret(), holder_secret.secret());
    // A KEM pre-key the responder never had.
    let mut unknown = initial.clone();
    unknown.kem_pre_key_id = Some(999);
    assert_eq!(
        hybrid.respond(&issuer, &unknown).unwrap_err(),
        HybridError::UnknownKemPreKey { id: 999 }
    );
    // The same key pair in another responder (same identity and classical
    // keys, another last-resort KEM key) derives another secret.
    let identity = issuer_identity();
    let mut other_issuer = HybridResponderKeys::new(
        issuer.classical().clone(),
        KemPreKey::new(
            &identity,
            ONE_TIME_KEM_ID,
            KemPreKeyKind::LastResort,
            KemKeyPair::from_seed(&[0x41; 32], &[0x42; 32]),
        ),
    )
    .unwrap();
    let other_secret = hybrid.respond(&other_issuer, &initial).unwrap();
    assert_ne!(other_secret.secret(), holder_secret.secret());
    // ... and once its id is taken, it cannot be added again.
    assert_eq!(
        other_issuer
            .add_one_time_kem_pre_key(KemPreKey::new(
                &identity,
                ONE_TIME_KEM_ID,
                KemPreKeyKind::OneTime,
                KemKeyPair::from_seed(&[0x43; 32], &[0x44; 32]),
            ))
            .unwrap_err(),
        HybridError::DuplicateKemPreKeyId {
            id: ONE_TIME_KEM_ID
        }
    );
}

#[test]
fn kem_signature_covers_the_type_byte() {
    let hybrid = X3dhMlKem768::default();
    let issuer = issuer(false);
    let identity = issuer_identity();
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let kem = bundle.kem_pre_key.clone().unwrap();
    // The honest signature is over 0x01 ‖ ek.
    let mut encode_kem = vec![0x01];
    encode_kem.extend_from_slice(&kem.public_key);
    assert_eq!(kem.signature, identity.sign(&encode_kem));
    // A signature by the right identity over the bare encoding is refused.
    let mut bare = bundle.clone();
    if let Some(kem) = bare.kem_pre_key.as_mut() {
        kem.signature = identity.sign(&kem.public_key).to_vec();
    }
    assert_eq!(
        hybrid
            .initiate(&holder(), &invitation(&issuer), &bare, SUITE, BINDING)
            .unwrap_err(),
        HybridError::BadKemSignature
    );
    // So is one over another type byte.
    let mut other_type = bundle.clone();
    encode_kem[0] = 0x02;
    if let Some(kem) = other_type.kem_pre_key.as_mut() {
        kem.signature = identity.sign(&encode_kem).to_vec();
    }
    assert_eq!(
        hybrid
            .initiate(&holder(), &invitation(&issuer), &other_type, SUITE, BINDING)
            .unwrap_err(),
        HybridError::BadKemSignature
    );
    // The responder refuses to hold a KEM pre-key signed over the bare
    // encoding too.
    let key_pair = KemKeyPair::from_seed(&[0x51; 32], &[0x52; 32]);
    let bare_signature = identity.sign(key_pair.public_key().as_bytes());
    let mut keys = issuer.clone();
    assert_eq!(
        keys.add_one_time_kem_pre_key(KemPreKey::from_parts(
            5,
            KemPreKeyKind::OneTime,
            key_pair,
            bare_signature
        ))
        .unwrap_err(),
        HybridError::ForeignKemPreKey { id: 5 }
    );
}

#[test]
fn hybrid_offer_signature_covers_kem_id_kind_key_and_classical_offer() {
    let hybrid = X3dhMlKem768::default();
    let issuer = issuer(true);
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let refuse = |bundle: &wire::PreKeyBundle, binding: &[u8]| {
        hybrid
            .initiate(&holder(), &invitation(&issuer), bundle, SUITE, binding)
            .unwrap_err()
    };
    let mut relabelled = bundle.clone();
    if let Some(kem) = relabelled.kem_pre_key.as_mut() {
        kem.kind = wire::KemPreKeyKind::LastResort.into();
    }
    assert_eq!(
        refuse(&relabelled, BINDING),
        HybridError::BadHybridOfferSignature
    );
    let mut renumbered = bundle.clone();
    if let Some(kem) = renumbered.kem_pre_key.as_mut() {
        kem.id = LAST_RESORT_ID;
    }
    assert_eq!(
        refuse(&renumbered, BINDING),
        HybridError::BadHybridOfferSignature
    );
    // The last-resort key with its own valid KEM signature, swapped in.
    let mut swapped = bundle.clone();
    let last_resort = issuer.current_last_resort_kem_pre_key();
    if let Some(kem) = swapped.kem_pre_key.as_mut() {
        kem.public_key = last_resort.public_key().as_bytes().to_vec();
        kem.signature = last_resort.signature().to_vec();
    }
    assert_eq!(
        refuse(&swapped, BINDING),
        HybridError::BadHybridOfferSignature
    );
    // The classical offer: suites reordered, one-time pre-key stripped,
    // another binding.
    let mut suites = bundle.clone();
    suites.suites = vec![SUITE.0, 3];
    assert_eq!(
        refuse(&suites, BINDING),
        HybridError::BadHybridOfferSignature
    );
    let mut no_one_time = bundle.clone();
    no_one_time.one_time_pre_key = None;
    assert_eq!(
        refuse(&no_one_time, BINDING),
        HybridError::BadHybridOfferSignature
    );
    assert_eq!(
        refuse(&bundle, b"another binding"),
        HybridError::BadHybridOfferSignature
    );
    // The transcript is the documented one.
    let decoded = HybridPreKeyBundle::from_wire(&bundle).unwrap();
    let kem = decoded.kem_pre_key().unwrap();
    let transcript = hybrid_offer_transcript(
        &decoded.classical().offer_transcript(BINDING),
        kem.id,
        kem.kind,
        &kem.public_key,
    );
    let classical_len = decoded.classical().offer_transcript(BINDING).len();
    assert_eq!(transcript.len(), 25 + 4 + classical_len + 1 + 4 + 1 + 1184);
    assert_eq!(&transcript[..25], b"confidant-v1-hybrid-offer");
    let tail = &transcript[25 + 4 + classical_len..];
    assert_eq!(tail[0], 0x01);
    assert_eq!(tail[1..5], ONE_TIME_KEM_ID.to_be_bytes());
    assert_eq!(tail[5], 0x02);
    assert_eq!(&tail[6..], kem.public_key.as_bytes());
    issuer
        .classical()
        .identity_public_key()
        .verify_strict(&transcript, decoded.hybrid_offer_signature().unwrap())
        .unwrap();
}

#[test]
fn stripped_hybrid_is_refused_when_required() {
    let hybrid = X3dhMlKem768::default();
    assert!(hybrid.require_hybrid());
    let issuer = issuer(true);
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let stripped = strip(&bundle);
    let mut no_signature = bundle.clone();
    no_signature.hybrid_offer_signature.clear();
    let mut no_kem = bundle.clone();
    no_kem.kem_pre_key = None;
    for bundle in [&stripped, &no_signature, &no_kem] {
        assert_eq!(
            hybrid
                .initiate(&holder(), &invitation(&issuer), bundle, SUITE, BINDING)
                .unwrap_err(),
            HybridError::HybridStripped
        );
    }
    // A swap is still reported as a swap, before the stripping.
    let other = IdentityKeyPair::from_seed([0x99; 32])
        .public_key()
        .to_bytes();
    assert_eq!(
        hybrid
            .initiate(&holder(), &other, &stripped, SUITE, BINDING)
            .unwrap_err(),
        HybridError::X3dh(X3dhError::IdentityMismatch)
    );
    let decoded = HybridPreKeyBundle::from_wire(&stripped).unwrap();
    assert_eq!(
        decoded
            .verify(issuer.classical().identity_public_key(), BINDING, true)
            .unwrap_err(),
        HybridError::HybridStripped
    );
}

#[test]
fn stripped_hybrid_falls_back_to_classical_only_where_both_allow_it() {
    let issuer = issuer(true);
    let strict = X3dhMlKem768::default();
    let bundle = strict.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let stripped = strip(&bundle);
    let lenient_holder = X3dhMlKem768::default().with_require_hybrid(false);
    let (holder_secret, initial) = lenient_holder
        .initiate(&holder(), &invitation(&issuer), &stripped, SUITE, BINDING)
        .unwrap();
    assert!(initial.kem_pre_key_id.is_none() && initial.kem_ciphertext.is_empty());
    // The issuer refuses it by default ...
    assert!(!strict.allow_classical());
    assert_eq!(
        strict.respond(&issuer, &initial).unwrap_err(),
        HybridError::ClassicalRefused
    );
    // ... and answers it with classical X3DH where it allows it.
    let lenient_issuer = X3dhMlKem768::default().with_allow_classical(true);
    let issuer_secret = lenient_issuer.respond(&issuer, &initial).unwrap();
    assert_eq!(issuer_secret.secret(), holder_secret.secret());
    assert_eq!(issuer_secret.one_time_kem_pre_key_id(), None);
    // That secret is exactly classical X3DH's.
    let classical_secret = X3dh::default()
        .respond(issuer.classical(), &initial)
        .unwrap();
    assert_eq!(classical_secret.secret(), holder_secret.secret());
}

#[test]
fn classical_holder_connects_to_a_hybrid_issuer_that_allows_it() {
    let issuer = issuer(true);
    let hybrid_issuer = X3dhMlKem768::default().with_allow_classical(true);
    let bundle = hybrid_issuer.bundle(&issuer, &[SUITE], BINDING).unwrap();
    // The classical plugin ignores fields 8 and 9 and checks the classical
    // offer signature, also through the byte decoder.
    let bytes = HybridPreKeyBundle::from_wire(&bundle).unwrap().to_bytes();
    assert!(bytes.len() > 1500);
    assert!(confidant_x3dh::PreKeyBundle::from_bytes(&bytes).is_ok());
    let classical = X3dh::default();
    let (holder_secret, initial) = classical
        .initiate(&holder(), &invitation(&issuer), &bundle, SUITE, BINDING)
        .unwrap();
    let issuer_secret = hybrid_issuer.respond(&issuer, &initial).unwrap();
    assert_eq!(issuer_secret.secret(), holder_secret.secret());
    // Refused by an issuer that does not allow classical sessions.
    assert_eq!(
        X3dhMlKem768::default()
            .respond(&issuer, &initial)
            .unwrap_err(),
        HybridError::ClassicalRefused
    );
}

#[test]
fn one_time_kem_pre_key_is_reported_then_consumed() {
    let hybrid = X3dhMlKem768::default();
    let mut issuer = issuer(true);
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let (_, initial) = hybrid
        .initiate(&holder(), &invitation(&issuer), &bundle, SUITE, BINDING)
        .unwrap();
    let header = HybridInitialMessage::from_wire(&initial).unwrap();
    // `respond` reports and keeps it.
    let agreed = hybrid.respond(&issuer, &initial).unwrap();
    assert_eq!(agreed.one_time_kem_pre_key_id(), Some(ONE_TIME_KEM_ID));
    assert!(issuer.kem_pre_key(ONE_TIME_KEM_ID).is_some());
    // `respond_and_consume` deletes both one-time keys.
    let agreed = hybrid.respond_and_consume(&mut issuer, &header).unwrap();
    assert_eq!(agreed.one_time_kem_pre_key_id(), Some(ONE_TIME_KEM_ID));
    assert!(issuer.kem_pre_key(ONE_TIME_KEM_ID).is_none());
    assert!(!issuer.classical().has_one_time_pre_key(ONE_TIME_ID));
    assert_eq!(
        hybrid.respond(&issuer, &initial).unwrap_err(),
        HybridError::X3dh(X3dhError::UnknownOneTimePreKey { id: ONE_TIME_ID })
    );
    // The next bundle falls back to the last-resort key, which is never
    // reported as consumed.
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    assert_eq!(bundle.kem_pre_key.as_ref().unwrap().id, LAST_RESORT_ID);
    let (_, initial) = hybrid
        .initiate(&holder(), &invitation(&issuer), &bundle, SUITE, BINDING)
        .unwrap();
    assert_eq!(
        hybrid
            .respond(&issuer, &initial)
            .unwrap()
            .one_time_kem_pre_key_id(),
        None
    );
}

#[test]
fn responder_keys_check_kind_signature_and_rotation() {
    let identity = issuer_identity();
    let mut keys = issuer(false);
    let one_time = KemPreKey::new(
        &identity,
        9,
        KemPreKeyKind::OneTime,
        KemKeyPair::from_seed(&[1; 32], &[2; 32]),
    );
    assert_eq!(
        HybridResponderKeys::new(keys.classical().clone(), one_time.clone()).unwrap_err(),
        HybridError::WrongKemPreKeyKind { id: 9 }
    );
    let last_resort = KemPreKey::new(
        &identity,
        200,
        KemPreKeyKind::LastResort,
        KemKeyPair::from_seed(&[3; 32], &[4; 32]),
    );
    assert_eq!(
        keys.add_one_time_kem_pre_key(last_resort.clone())
            .unwrap_err(),
        HybridError::WrongKemPreKeyKind { id: 200 }
    );
    let stranger = IdentityKeyPair::from_seed([0x77; 32]);
    let foreign = KemPreKey::new(
        &stranger,
        201,
        KemPreKeyKind::LastResort,
        KemKeyPair::from_seed(&[5; 32], &[6; 32]),
    );
    assert_eq!(
        keys.add_last_resort_kem_pre_key(foreign).unwrap_err(),
        HybridError::ForeignKemPreKey { id: 201 }
    );
    // Rotation: the new last-resort key is advertised, the old one still
    // answers messages in flight until removed.
    let hybrid = X3dhMlKem768::default();
    let old_bundle = hybrid.bundle(&keys, &[SUITE], BINDING).unwrap();
    let (old_secret, old_initial) = hybrid
        .initiate(&holder(), &invitation(&keys), &old_bundle, SUITE, BINDING)
        .unwrap();
    keys.add_last_resort_kem_pre_key(last_resort).unwrap();
    assert_eq!(keys.current_last_resort_kem_pre_key().id(), 200);
    assert_eq!(
        hybrid.respond(&keys, &old_initial).unwrap().secret(),
        old_secret.secret()
    );
    assert_eq!(
        keys.remove_last_resort_kem_pre_key(200).unwrap_err(),
        HybridError::CurrentKemPreKey { id: 200 }
    );
    assert!(
        keys.remove_last_resort_kem_pre_key(LAST_RESORT_ID)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        hybrid.respond(&keys, &old_initial).unwrap_err(),
        HybridError::UnknownKemPreKey { id: LAST_RESORT_ID }
    );
}

#[test]
fn decoders_refuse_wrong_lengths_and_half_hybrids() {
    let hybrid = X3dhMlKem768::default();
    let issuer = issuer(true);
    let bundle = hybrid.bundle(&issuer, &[SUITE], BINDING).unwrap();
    let field_length = |error: HybridError| match error {
        HybridError::Decode(DecodeError::FieldLength { field, .. }) => field,
        other => panic!("expected a field length error, got {other:?}"),
    };
    for len in [0, KEM_PUBLIC_KEY_LEN - 1, KEM_PUBLIC_KEY_LEN + 1] {
        let mut short = bundle.clone();
        if let Some(kem) = short.kem_pre_key.as_mut() {
            kem.public_key.resize(len, 0);
        }
        assert_eq!(
            field_length(HybridPreKeyBundle::from_wire(&short).unwrap_err()),
            "bundle.kem_pre_key.public_key"
        );
    }
    let mut short_signature = bundle.clone();
    if let Some(kem) = short_signature.kem_pre_key.as_mut() {
        kem.signature.pop();
    }
    assert_eq!(
        field_length(HybridPreKeyBundle::from_wire(&short_signature).unwrap_err()),
        "bundle.kem_pre_key.signature"
    );
    let mut long_offer = bundle.clone();
    long_offer.hybrid_offer_signature.push(0);
    assert_eq!(
        field_length(HybridPreKeyBundle::from_wire(&long_offer).unwrap_err()),
        "bundle.hybrid_offer_signature"
    );
    for kind in [0, 3, -1] {
        let mut unknown_kind = bundle.clone();
        if let Some(kem) = unknown_kind.kem_pre_key.as_mut() {
            kem.kind = kind;
        }
        assert!(matches!(
            HybridPreKeyBundle::from_wire(&unknown_kind),
            Err(HybridError::Decode(DecodeError::Malformed(_)))
        ));
    }
    // A key with a coefficient not reduced mod q (12 bits of ones) fails
    // FIPS 203's check.
    let mut unreduced = bundle.clone();
    if let Some(kem) = unreduced.kem_pre_key.as_mut() {
        kem.public_key[0] = 0xFF;
        kem.public_key[1] = 0xFF;
    }
    assert_eq!(
        HybridPreKeyBundle::from_wire(&unreduced).unwrap_err(),
        HybridError::InvalidKemPublicKey
    );
    // Bytes: round trip, truncations never panic, too long refused.
    let decoded = HybridPreKeyBundle::from_wire(&bundle).unwrap();
    let bytes = decoded.to_bytes();
    assert_eq!(HybridPreKeyBundle::from_bytes(&bytes).unwrap(), decoded);
    for cut in 0..bytes.len() {
        let _ = HybridPreKeyBundle::from_bytes(&bytes[..cut]);
    }
    assert!(matches!(
        HybridPreKeyBundle::from_bytes(&vec![
            0;
            confidant_x3dh_mlkem768::MAX_HYBRID_BUNDLE_LEN + 1
        ]),
        Err(HybridError::Decode(DecodeError::TooLarge { .. }))
    ));

    // Initial message.
    let (_, initial) = hybrid
        .initiate(&holder(), &invitation(&issuer), &bundle, SUITE, BINDING)
        .unwrap();
    for len in [1, KEM_CIPHERTEXT_LEN - 1, KEM_CIPHERTEXT_LEN + 1] {
        let mut wrong = initial.clone();
        wrong.kem_ciphertext.resize(len, 0);
        assert_eq!(
            field_length(HybridInitialMessage::from_wire(&wrong).unwrap_err()),
            "initial.kem_ciphertext"
        );
        assert_eq!(
            field_length(hybrid.respond(&issuer, &wrong).unwrap_err()),
            "initial.kem_ciphertext"
        );
    }
    let mut no_ciphertext = initial.clone();
    no_ciphertext.kem_ciphertext.clear();
    assert_eq!(
        HybridInitialMessage::from_wire(&no_ciphertext).unwrap_err(),
        HybridError::Decode(DecodeError::MissingField("initial.kem_ciphertext"))
    );
    let mut no_id = initial.clone();
    no_id.kem_pre_key_id = None;
    assert_eq!(
        HybridInitialMessage::from_wire(&no_id).unwrap_err(),
        HybridError::Decode(DecodeError::MissingField("initial.kem_pre_key_id"))
    );
    let decoded = HybridInitialMessage::from_wire(&initial).unwrap();
    let bytes = decoded.to_bytes(None);
    assert_eq!(HybridInitialMessage::from_bytes(&bytes).unwrap(), decoded);
    for cut in 0..bytes.len() {
        let _ = HybridInitialMessage::from_bytes(&bytes[..cut]);
    }
}

#[test]
fn wire_field_numbers() {
    use prost::Message;
    // Field 8 of PreKeyBundle (a message: tag 0x42), field 9 (bytes: 0x4A);
    // field 7 of InitialMessage (varint: 0x38), field 8 (bytes: 0x42).
    let bundle = wire::PreKeyBundle {
        kem_pre_key: Some(wire::KemPreKey::default()),
        hybrid_offer_signature: vec![0xAA],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(bundle, vec![0x42, 0x00, 0x4A, 0x01, 0xAA]);
    let kem = wire::KemPreKey {
        id: 1,
        public_key: vec![2],
        signature: vec![3],
        kind: wire::KemPreKeyKind::OneTime.into(),
    }
    .encode_to_vec();
    assert_eq!(kem, vec![0x08, 1, 0x12, 1, 2, 0x1A, 1, 3, 0x20, 2]);
    let initial = wire::InitialMessage {
        kem_pre_key_id: Some(5),
        kem_ciphertext: vec![0xBB],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(initial, vec![0x38, 5, 0x42, 0x01, 0xBB]);
}

#[test]
fn debug_output_shows_no_secret() {
    let seed_d = [0xC3; 32];
    let seed_z = [0xD4; 32];
    let key_pair = KemKeyPair::from_seed(&seed_d, &seed_z);
    let expanded = key_pair.to_decapsulation_key_bytes();
    let pre_key = KemPreKey::new(
        &issuer_identity(),
        1,
        KemPreKeyKind::OneTime,
        key_pair.clone(),
    );
    let (ciphertext, shared) = key_pair
        .public_key()
        .encapsulate_with_randomness(&[0xE5; 32]);
    let keys = issuer(true);
    let shown = format!(
        "{key_pair:?} {pre_key:?} {shared:?} {ciphertext:?} {keys:?} {:?}",
        X3dhMlKem768::default()
    );
    for secret in [
        &seed_d[..],
        &seed_z[..],
        &shared.as_bytes()[..],
        &expanded[..32],
    ] {
        let hex: String = secret[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex), "{hex} in {shown}");
        assert!(!shown.contains(&format!("{:?}", &secret[..4])), "{shown}");
    }
    assert!(shown.contains("redacted"));
    assert_eq!(key_pair.to_seed().unwrap()[..32], seed_d);
    let _ = X3dhConfig::default();
}
