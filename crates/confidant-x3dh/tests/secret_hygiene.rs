//! No secret reaches `Debug` output, in hex or in decimal.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::SuiteId;
use confidant_x3dh::{
    EphemeralKey, IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh, X3dhConfig,
};
use ed25519_dalek::SigningKey;
use std::fmt::Debug;

const SUITE: SuiteId = SuiteId::AES_256_GCM_SHA256_COUNTER;

fn counting_bytes(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8 * 7))
}

/// Fails if any 4-byte window of `secret` appears in `shown` as hex (either
/// case, as `{:x}` or `{:02X}` would print it) or as a decimal list (as a
/// derived `Debug` of a byte array would print it).
fn assert_hidden(shown: &str, secret: &[u8], what: &str) {
    let lower = shown.to_lowercase();
    let compact: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
    for window in secret.windows(4) {
        let hex = hex::encode(window);
        assert!(!lower.contains(&hex), "{what}: hex {hex} in {shown}");
        let decimal = window
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            !compact.contains(&decimal),
            "{what}: decimal {decimal} in {shown}"
        );
    }
}

fn both_forms(value: &impl Debug) -> [String; 2] {
    [format!("{value:?}"), format!("{value:#?}")]
}

#[test]
fn debug_output_hides_every_secret() {
    let identity_seed = counting_bytes(0xA1);
    let signed_pre_key_secret = counting_bytes(0xB3);
    let one_time_secret = counting_bytes(0xC5);
    let ephemeral_secret = counting_bytes(0xD7);
    // The X25519 form of the identity secret is a secret too.
    let identity_scalar = SigningKey::from_bytes(&identity_seed).to_scalar_bytes();

    let identity = IdentityKeyPair::from_seed(identity_seed);
    let signed_pre_key = SignedPreKey::new(&identity, 1, signed_pre_key_secret);
    let one_time = OneTimePreKey::new(2, one_time_secret);
    let ephemeral = EphemeralKey::from_bytes(ephemeral_secret);

    let secrets: [(&str, &[u8]); 4] = [
        ("identity seed", &identity_seed),
        ("identity scalar", &identity_scalar),
        ("signed pre-key", &signed_pre_key_secret),
        ("one-time pre-key", &one_time_secret),
    ];
    let check = |label: &str, value: &dyn Debug, extra: &[(&str, &[u8])]| {
        for shown in [format!("{value:?}"), format!("{value:#?}")] {
            for (what, secret) in secrets.iter().chain(extra) {
                assert_hidden(&shown, secret, &format!("{label} / {what}"));
            }
            assert!(
                shown.contains("redacted") || label == "bundle",
                "{label}: {shown}"
            );
        }
    };

    check("identity", &identity, &[]);
    check("signed pre-key", &signed_pre_key, &[]);
    check("one-time pre-key", &one_time, &[]);
    check("ephemeral", &ephemeral, &[("ephemeral", &ephemeral_secret)]);

    // Public values are shown, so the redaction is not hiding everything.
    let [shown, _] = both_forms(&identity);
    assert!(shown.contains(&hex::encode(identity.public_key().as_bytes())));
    let [shown, _] = both_forms(&ephemeral);
    assert!(shown.contains(&hex::encode(ephemeral.public_key().as_bytes())));

    let one_time_public = one_time.public_key();
    let mut responder = ResponderKeys::new(identity, signed_pre_key).unwrap();
    responder.add_one_time_pre_key(one_time).unwrap();
    for shown in both_forms(&responder) {
        for (what, secret) in &secrets {
            assert_hidden(&shown, secret, &format!("responder / {what}"));
        }
    }
    let bundle = responder.bundle_with_one_time_pre_key(2, &[SUITE]).unwrap();
    assert!(format!("{bundle:?}").contains(&hex::encode(one_time_public.as_bytes())));
    check("bundle", &bundle, &[]);

    // The agreed secret, on both sides.
    let config = X3dhConfig::default();
    let holder_seed = counting_bytes(0x15);
    let holder = IdentityKeyPair::from_seed(holder_seed);
    let (agreed, header) = bundle
        .verify(responder.identity_public_key())
        .unwrap()
        .agree_with_ephemeral(&config, &holder, ephemeral, SUITE)
        .unwrap();
    let sk = *agreed.secret();
    for shown in both_forms(&agreed)
        .into_iter()
        .chain(both_forms(&responder.respond(&config, &header).unwrap()))
        .chain(both_forms(&header))
        .chain(both_forms(&holder))
    {
        assert_hidden(&shown, &sk, "agreed secret");
        assert_hidden(&shown, &holder_seed, "holder seed");
        assert_hidden(&shown, &ephemeral_secret, "ephemeral");
    }
    let plugin = X3dh::new(config);
    assert!(format!("{plugin:?}").contains("X3dh"));
}

#[test]
fn errors_carry_no_key_material() {
    let config = X3dhConfig::default();
    let identity = IdentityKeyPair::from_seed(counting_bytes(0x31));
    let responder = ResponderKeys::new(
        IdentityKeyPair::from_seed(counting_bytes(0x31)),
        SignedPreKey::new(&identity, 1, counting_bytes(0x41)),
    )
    .unwrap();
    let header = confidant_x3dh::InitialMessageHeader::new(
        identity.public_key(),
        confidant_x3dh::X25519PublicKey::from_bytes([0; 32]),
        1,
        None,
        SUITE,
    );
    let error = responder.respond(&config, &header).unwrap_err();
    for shown in [format!("{error}"), format!("{error:?}")] {
        assert_hidden(&shown, &counting_bytes(0x31), "identity seed");
        assert_hidden(&shown, &counting_bytes(0x41), "signed pre-key");
    }
    assert!(error.to_string().contains("DH2"));
}
