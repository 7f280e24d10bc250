//! A full X3DH handshake (both sides) against the sum of its primitive
//! operations, timed in the same run. [`Primitives`] times that sum in one
//! call, for the connector section's handshakes to be paired against.

use crate::measure::{compare, format_ns, per_call};
use crate::{Settings, Verdict};
use confidant_core::{KeyAgreement, SuiteId};
use confidant_x3dh::{IdentityKeyPair, OneTimePreKey, ResponderKeys, SignedPreKey, X3dh};
use ed25519_dalek::{Signature, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use std::hint::black_box;
use x25519_dalek::{PublicKey, StaticSecret};

/// The primitive operations of one X3DH handshake, both sides (the
/// holder: one signature verification, one ephemeral key, four DH, one
/// HKDF; the issuer: four DH, one HKDF), on fixed inputs.
pub struct Primitives {
    identity: [u8; 32],
    signed_pre_key: [u8; 32],
    signature: Signature,
    secret: StaticSecret,
    peer: PublicKey,
    seed: u8,
}

impl Primitives {
    /// Inputs of the same kind as a real handshake's: a signed pre-key and
    /// its signature by an identity key.
    pub fn new() -> Option<Self> {
        let identity = IdentityKeyPair::from_seed([0x01; 32]);
        let signed_pre_key = SignedPreKey::new(&identity, 1, [0x02; 32]);
        let responder = ResponderKeys::new(identity, signed_pre_key).ok()?;
        let bundle = X3dh::default()
            .bundle(&responder, &[SuiteId::AES_256_GCM_SHA256_COUNTER], b"")
            .ok()?;
        Some(Self {
            identity: responder.identity_public_key().to_bytes(),
            signed_pre_key: bundle.signed_pre_key.as_slice().try_into().ok()?,
            signature: Signature::from_slice(&bundle.signed_pre_key_signature).ok()?,
            secret: StaticSecret::from([0x05; 32]),
            peer: PublicKey::from(&StaticSecret::from([0x06; 32])),
            seed: 0,
        })
    }

    /// Nanoseconds per handshake's worth of primitives (verify + keygen +
    /// 8 DH + 2 HKDF, run in sequence), over `iterations` of them.
    pub fn time(&mut self, iterations: u64) -> f64 {
        let ikm = [0xAB; 32 * 5];
        per_call(iterations, || {
            let verified = VerifyingKey::from_bytes(black_box(&self.identity)).is_ok_and(|key| {
                key.verify_strict(&self.signed_pre_key, &self.signature)
                    .is_ok()
            });
            self.seed = self.seed.wrapping_add(1);
            let ephemeral = PublicKey::from(&StaticSecret::from([self.seed; 32]));
            for _ in 0..8 {
                black_box(black_box(&self.secret).diffie_hellman(black_box(&self.peer)));
            }
            for _ in 0..2 {
                let hkdf = Hkdf::<Sha256>::new(Some(&[0u8; 32]), black_box(&ikm));
                let mut okm = [0u8; 32];
                let _ = hkdf.expand(b"Confidant X3DH v1", &mut okm);
                black_box(okm);
            }
            black_box((verified, ephemeral));
        })
    }
}

/// Runs the handshake benchmark and prints its table.
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    let iterations = if settings.quick { 4 } else { 8 };
    let suite = SuiteId::AES_256_GCM_SHA256_COUNTER;
    let x3dh = X3dh::default();

    let issuer_identity = IdentityKeyPair::from_seed([0x01; 32]);
    let signed_pre_key = SignedPreKey::new(&issuer_identity, 1, [0x02; 32]);
    let Ok(mut issuer) = ResponderKeys::new(issuer_identity, signed_pre_key) else {
        println!("could not build the responder's keys");
        return;
    };
    if issuer
        .add_one_time_pre_key(OneTimePreKey::new(9, [0x03; 32]))
        .is_err()
    {
        println!("could not add a one-time pre-key");
        return;
    }
    let invitation = issuer.identity_public_key().to_bytes();
    let holder = IdentityKeyPair::from_seed([0x04; 32]);
    let Ok(bundle) = x3dh.bundle(&issuer, &[suite], b"") else {
        println!("could not build a bundle");
        return;
    };

    // The full handshake, both sides, through the KeyAgreement plugin: the
    // holder verifies the bundle and agrees, the issuer answers. `respond`
    // only reports the one-time pre-key, so the same keys serve every run.
    let mut handshake = || {
        per_call(iterations, || {
            let Ok((holder_secret, initial)) =
                x3dh.initiate(&holder, &invitation, black_box(&bundle), suite, b"")
            else {
                return;
            };
            let issuer_secret = x3dh.respond(&issuer, black_box(&initial)).ok();
            black_box((holder_secret, issuer_secret));
        })
    };

    // The primitives, on the same kind of inputs.
    let spk_public: [u8; 32] = bundle
        .signed_pre_key
        .as_slice()
        .try_into()
        .unwrap_or([0; 32]);
    let signature_bytes: [u8; 64] = bundle
        .signed_pre_key_signature
        .as_slice()
        .try_into()
        .unwrap_or([0; 64]);
    let mut verify = || {
        per_call(iterations, || {
            let ok = VerifyingKey::from_bytes(black_box(&invitation)).is_ok_and(|key| {
                key.verify_strict(&spk_public, &Signature::from_bytes(&signature_bytes))
                    .is_ok()
            });
            black_box(ok);
        })
    };
    let mut dh = || dh_ns(iterations);
    let mut keygen = || x25519_keygen_ns(iterations);
    let ikm = [0xAB; 32 * 5];
    let mut hkdf = || {
        per_call(iterations * 10, || {
            let hkdf = Hkdf::<Sha256>::new(Some(&[0u8; 32]), black_box(&ikm));
            let mut okm = [0u8; 32];
            let _ = hkdf.expand(b"Confidant X3DH v1", &mut okm);
            black_box(okm);
        })
    };
    let rounds = compare(
        settings.rounds,
        [&mut handshake, &mut verify, &mut dh, &mut keygen, &mut hkdf],
    );
    // Initiator: 1 signature verification, 1 ephemeral key, 4 DH, 1 HKDF;
    // responder: 4 DH, 1 HKDF.
    let sum = |[_, verify, dh, keygen, hkdf]: &[f64; 5]| verify + keygen + 8.0 * dh + 2.0 * hkdf;
    let [full, verify, dh, keygen, hkdf] = rounds.fastest();
    let primitives = sum(&[full, verify, dh, keygen, hkdf]);
    let ratio = rounds.median_ratio(|round| round[0] / sum(round));
    println!("## X3DH: a full handshake (both sides, with a one-time pre-key)");
    println!(
        "{:<52} {:>10}",
        "signature verify (key decoding + verify_strict)",
        format_ns(verify)
    );
    println!("{:<52} {:>10}", "X25519 DH", format_ns(dh));
    println!(
        "{:<52} {:>10}",
        "X25519 key generation (base point)",
        format_ns(keygen)
    );
    println!(
        "{:<52} {:>10}",
        "HKDF-SHA-256 (160-byte IKM, 32-byte output)",
        format_ns(hkdf)
    );
    println!(
        "{:<52} {:>10}",
        "sum: verify + keygen + 8 DH + 2 HKDF",
        format_ns(primitives)
    );
    println!("{:<52} {:>10}", "full X3DH, both sides", format_ns(full));
    println!("ratio full / primitives (median of per-round ratios): {ratio:.3} (target ≤ 1.15)");
    println!();
    verdicts.push(Verdict::at_most(
        "X3DH both sides vs its primitives",
        ratio,
        1.15,
    ));
}

/// Nanoseconds per X25519 Diffie-Hellman (also the PQXDH section's).
pub(crate) fn dh_ns(iterations: u64) -> f64 {
    let secret = StaticSecret::from([0x05; 32]);
    let peer = PublicKey::from(&StaticSecret::from([0x06; 32]));
    per_call(iterations, || {
        black_box(black_box(&secret).diffie_hellman(black_box(&peer)));
    })
}

/// Nanoseconds per X25519 key generation (a base-point multiplication;
/// also the PQXDH section's).
pub(crate) fn x25519_keygen_ns(iterations: u64) -> f64 {
    let mut seed = 0u8;
    per_call(iterations, || {
        seed = seed.wrapping_add(1);
        black_box(PublicKey::from(&StaticSecret::from([seed; 32])));
    })
}
