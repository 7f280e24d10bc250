//! The post-quantum hybrid (X3DH + ML-KEM-768, `confidant-x3dh-mlkem768`)
//! against classical X3DH and against the sum of its own primitive
//! operations, all timed in the same run, with the sizes of its bundle and
//! initial message.

use crate::measure::{compare, format_ns, per_call};
use crate::{Settings, Verdict};
use confidant_core::{KeyAgreement, SuiteId};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh};
use confidant_x3dh_mlkem768::{
    HybridPreKeyBundle, HybridResponderKeys, KemKeyPair, KemPreKey, KemPreKeyKind, X3dhMlKem768,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use ml_kem::{Decapsulate, KeyExport, ml_kem_768};
use prost::Message;
use sha2::Sha256;
use std::hint::black_box;

/// The issuer's keys for both plugins: the same classical keys (with a
/// one-time pre-key), plus a last-resort ML-KEM-768 pre-key for the
/// hybrid.
fn issuer_keys() -> Option<(ResponderKeys, HybridResponderKeys)> {
    let identity = IdentityKeyPair::from_seed([0x01; 32]);
    let signed_pre_key = SignedPreKey::new(&identity, 1, [0x02; 32]);
    let last_resort = KemPreKey::new(
        &identity,
        100,
        KemPreKeyKind::LastResort,
        KemKeyPair::from_seed(&[0x07; 32], &[0x08; 32]),
    );
    let mut classical = ResponderKeys::new(identity, signed_pre_key).ok()?;
    classical
        .add_one_time_pre_key(OneTimePreKey::new(9, [0x03; 32]))
        .ok()?;
    let hybrid = HybridResponderKeys::new(classical.clone(), last_resort).ok()?;
    Some((classical, hybrid))
}

/// Nanoseconds per full handshake with `plugin`, both sides, each run
/// building its bundle: the issuer signs the offer(s), the holder
/// (`initiator`: its keys and the invitation's identity key) verifies and
/// agrees, the issuer answers. One-time keys are only reported, so the same
/// keys serve every run.
fn handshake_ns<K>(
    plugin: &K,
    issuer: &K::ResponderKeys,
    (holder, invitation): (&IdentityKeyPair, &[u8]),
    (suite, binding): (SuiteId, &[u8]),
    iterations: u64,
) -> f64
where
    K: KeyAgreement<InitiatorKeys = IdentityKeyPair>,
{
    per_call(iterations, || {
        let Ok(bundle) = plugin.bundle(black_box(issuer), &[suite], binding) else {
            return;
        };
        let Ok((holder_secret, initial)) =
            plugin.initiate(holder, invitation, black_box(&bundle), suite, binding)
        else {
            return;
        };
        let issuer_secret = plugin.respond(issuer, black_box(&initial)).ok();
        black_box((holder_secret, issuer_secret));
    })
}

/// Runs the hybrid benchmark and prints its table.
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    let iterations = if settings.quick { 4 } else { 8 };
    let suite = SuiteId::AES_256_GCM_SHA256_COUNTER;
    let binding = b"connection 1, token 7";
    let x3dh = X3dh::default();
    let hybrid = X3dhMlKem768::default();
    let Some((classical_issuer, hybrid_issuer)) = issuer_keys() else {
        println!("could not build the responder's keys");
        return;
    };
    let invitation = classical_issuer.identity_public_key().to_bytes();
    let holder = IdentityKeyPair::from_seed([0x04; 32]);

    // Sizes, from one honest handshake of each kind.
    let (Ok(hybrid_bundle), Ok(classical_bundle)) = (
        hybrid.bundle(&hybrid_issuer, &[suite], binding),
        x3dh.bundle(&classical_issuer, &[suite], binding),
    ) else {
        println!("could not build the bundles");
        return;
    };
    let (Ok((_, hybrid_initial)), Ok((_, classical_initial))) = (
        hybrid.initiate(&holder, &invitation, &hybrid_bundle, suite, binding),
        x3dh.initiate(&holder, &invitation, &classical_bundle, suite, binding),
    ) else {
        println!("could not run the handshakes");
        return;
    };
    let sizes = [
        hybrid_bundle.encoded_len(),
        classical_bundle.encoded_len(),
        hybrid_initial.encoded_len(),
        classical_initial.encoded_len(),
    ];
    if HybridPreKeyBundle::from_bytes(&hybrid_bundle.encode_to_vec()).is_err() {
        println!("the hybrid bundle does not decode");
        return;
    }

    // The full handshakes, both sides, each building its bundle: the
    // issuer signs the offer(s), the holder verifies and agrees, the
    // issuer answers. One-time keys are only reported, so the same keys
    // serve every run.
    let mut hybrid_handshake = || {
        handshake_ns(
            &hybrid,
            &hybrid_issuer,
            (&holder, &invitation),
            (suite, binding),
            iterations,
        )
    };
    let mut classical_handshake = || {
        handshake_ns(
            &x3dh,
            &classical_issuer,
            (&holder, &invitation),
            (suite, binding),
            iterations,
        )
    };

    // The primitives, on the same kind of inputs.
    let signing_key = SigningKey::from_bytes(&[0x01; 32]);
    let verifying_key = signing_key.verifying_key().to_bytes();
    let message = [0x5A; 1400];
    let signature = signing_key.sign(&message);
    let mut sign = || {
        per_call(iterations, || {
            black_box(black_box(&signing_key).sign(black_box(&message)));
        })
    };
    let mut verify = || {
        per_call(iterations, || {
            let ok = VerifyingKey::from_bytes(black_box(&verifying_key)).is_ok_and(|key| {
                key.verify_strict(
                    black_box(&message),
                    &Signature::from_bytes(&signature.to_bytes()),
                )
                .is_ok()
            });
            black_box(ok);
        })
    };
    let mut dh = || crate::x3dh::dh_ns(iterations);
    let mut x25519_keygen = || crate::x3dh::x25519_keygen_ns(iterations);
    let decapsulation_key = ml_kem_768::DecapsulationKey::from_seed(ml_kem::Seed::from([0x07; 64]));
    let encapsulation_key_bytes = decapsulation_key.encapsulation_key().to_bytes();
    let encapsulation_key = decapsulation_key.encapsulation_key().clone();
    let (ciphertext, _) = encapsulation_key.encapsulate_deterministic(&ml_kem::B32::from([9; 32]));
    let mut kem_keygen = || {
        let mut seed = 0u8;
        per_call(iterations, || {
            seed = seed.wrapping_add(1);
            black_box(ml_kem_768::DecapsulationKey::from_seed(ml_kem::Seed::from(
                [seed; 64],
            )));
        })
    };
    let mut kem_key_decoding = || {
        per_call(iterations, || {
            black_box(
                ml_kem_768::EncapsulationKey::new(black_box(&encapsulation_key_bytes)).is_ok(),
            );
        })
    };
    let mut encapsulate = || {
        let mut seed = 0u8;
        per_call(iterations, || {
            seed = seed.wrapping_add(1);
            black_box(
                black_box(&encapsulation_key)
                    .encapsulate_deterministic(&ml_kem::B32::from([seed; 32])),
            );
        })
    };
    let mut decapsulate = || {
        per_call(iterations, || {
            black_box(black_box(&decapsulation_key).decapsulate(black_box(&ciphertext)));
        })
    };
    let ikm = [0xAB; 32 * 6];
    let mut hkdf = || {
        per_call(iterations * 10, || {
            let hkdf = Hkdf::<Sha256>::new(Some(&[0u8; 32]), black_box(&ikm));
            let mut okm = [0u8; 32];
            let _ = hkdf.expand(b"Confidant X3DH-25519-MLKEM768-SHA-256 v1", &mut okm);
            black_box(okm);
        })
    };

    let rounds = compare(
        settings.rounds,
        [
            &mut hybrid_handshake,
            &mut classical_handshake,
            &mut sign,
            &mut verify,
            &mut dh,
            &mut x25519_keygen,
            &mut kem_key_decoding,
            &mut encapsulate,
            &mut decapsulate,
            &mut hkdf,
            &mut kem_keygen,
        ],
    );
    // What one hybrid handshake does, both sides: the issuer signs the
    // classical and the hybrid offer (the KEM pre-key's own signature is
    // made once, with the key); the holder verifies the signed pre-key,
    // the KEM pre-key and the hybrid offer (3), decodes the KEM key
    // (FIPS 203 check and H(ek)), makes an ephemeral key, computes 4 DH,
    // encapsulates and runs HKDF once; the issuer computes 4 DH,
    // decapsulates and runs HKDF once. No KEM key generation happens in a
    // handshake (it is shown for reference only).
    let sum = |r: &[f64; 11]| {
        2.0 * r[2] + 3.0 * r[3] + 8.0 * r[4] + r[5] + r[6] + r[7] + r[8] + 2.0 * r[9]
    };
    let fastest = rounds.fastest();
    let primitives = sum(&fastest);
    let versus_classical = rounds.median_ratio(|round| round[0] / round[1]);
    let versus_primitives = rounds.median_ratio(|round| round[0] / sum(round));
    let [
        full,
        classical,
        sign,
        verify,
        dh,
        x25519_keygen,
        kem_key_decoding,
        encapsulate,
        decapsulate,
        hkdf,
        kem_keygen,
    ] = fastest;
    println!(
        "## PQXDH: X3DH + ML-KEM-768, a full handshake (both sides, bundle included, one-time pre-key, last-resort KEM pre-key)"
    );
    let row = |what: &str, ns: f64| println!("{what:<60} {:>10}", format_ns(ns));
    row("Ed25519 sign (1,400-byte transcript)", sign);
    row("Ed25519 verify (key decoding + verify_strict)", verify);
    row("X25519 DH", dh);
    row("X25519 key generation (base point)", x25519_keygen);
    row(
        "ML-KEM-768 encapsulation key decoding (check + H(ek))",
        kem_key_decoding,
    );
    row("ML-KEM-768 encapsulation", encapsulate);
    row("ML-KEM-768 decapsulation", decapsulate);
    row("HKDF-SHA-256 (192-byte IKM, 32-byte output)", hkdf);
    row("ML-KEM-768 key generation (not in a handshake)", kem_keygen);
    row(
        "sum: 2 sign + 3 verify + 8 DH + keygen + ek + encaps + decaps + 2 HKDF",
        primitives,
    );
    row(
        "classical X3DH handshake, both sides, bundle included",
        classical,
    );
    row("hybrid handshake, both sides, bundle included", full);
    println!(
        "ratio hybrid / classical (median of per-round ratios): {versus_classical:.3} (target ≤ 1.5)"
    );
    println!(
        "ratio hybrid / its primitives (median of per-round ratios): {versus_primitives:.3} (target ≤ 1.15)"
    );
    let [
        hybrid_bundle_len,
        classical_bundle_len,
        hybrid_initial_len,
        classical_initial_len,
    ] = sizes;
    println!(
        "bundle: {hybrid_bundle_len} bytes hybrid, {classical_bundle_len} bytes classical; \
         initial message (without its first sealed message): {hybrid_initial_len} bytes hybrid, \
         {classical_initial_len} bytes classical"
    );
    println!();
    verdicts.push(
        Verdict::at_most(
            "PQXDH handshake (both sides) vs classical X3DH",
            versus_classical,
            1.5,
        )
        .with_note(format!(
            "bundle {hybrid_bundle_len} B (classical {classical_bundle_len} B), initial message \
             {hybrid_initial_len} B (classical {classical_initial_len} B) without the first message"
        )),
    );
    verdicts.push(Verdict::at_most(
        "PQXDH handshake (both sides) vs its primitives",
        versus_primitives,
        1.15,
    ));
}
