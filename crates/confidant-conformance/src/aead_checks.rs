//! Checks of one [`Aead`] or one [`IvStrategy`] on its own.

use crate::failure::{Failure, ensure};
use crate::rng::TestRng;
use confidant_core::{
    Aead, IvError, IvStrategy, KeyLengthError, MAX_NONCE_LEN, SealError, TAG_LEN,
};
use std::collections::HashMap;
use std::fmt;

/// What [`check_aead`] or [`check_iv_strategy`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The AEAD's or strategy's name.
    pub subject: String,
    /// One line per check that passed.
    pub checks: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} checks passed", self.subject, self.checks.len())?;
        for check in &self.checks {
            writeln!(f, "  - {check}")?;
        }
        Ok(())
    }
}

/// Checks that `A` declares usable sizes, refuses wrong key, nonce and tag
/// lengths with errors (never a panic), and that its detached and attached
/// forms agree and round-trip.
pub fn check_aead<A: Aead>() -> Result<Report, Failure> {
    let mut checks = Vec::new();
    let mut rng = TestRng::new(0xa11d);

    ensure(A::KEY_LEN >= 16, "parameters", "key shorter than 128 bits")?;
    ensure(
        (1..=MAX_NONCE_LEN).contains(&A::NONCE_LEN),
        "parameters",
        format!("nonce length {} outside 1..={MAX_NONCE_LEN}", A::NONCE_LEN),
    )?;
    ensure(
        A::CONFIDENTIALITY_LIMIT >= 1,
        "parameters",
        "confidentiality limit is 0",
    )?;
    ensure(
        A::INTEGRITY_LIMIT >= 1,
        "parameters",
        "integrity limit is 0",
    )?;
    ensure(
        A::MAX_PLAINTEXT_LEN >= 1,
        "parameters",
        "maximum plaintext length is 0",
    )?;
    checks.push(format!(
        "parameters: {}-byte key, {}-byte nonce, limit {} messages, {} failed opens, {} bytes per message",
        A::KEY_LEN,
        A::NONCE_LEN,
        A::CONFIDENTIALITY_LIMIT,
        A::INTEGRITY_LIMIT,
        A::MAX_PLAINTEXT_LEN
    ));

    for len in [0, A::KEY_LEN - 1, A::KEY_LEN + 1, 2 * A::KEY_LEN] {
        match A::new(&vec![7u8; len]) {
            Err(KeyLengthError { expected, actual }) if expected == A::KEY_LEN && actual == len => {
            }
            Err(error) => return Err(Failure::new("key length", format!("wrong error: {error}"))),
            Ok(_) => {
                return Err(Failure::new(
                    "key length",
                    format!("accepted a {len}-byte key"),
                ));
            }
        }
    }
    checks.push("wrong key lengths refused with KeyLengthError".into());

    let key = rng.bytes(A::KEY_LEN);
    let aead = A::new(&key).map_err(|error| Failure::new("key", error.to_string()))?;
    let nonce = rng.bytes(A::NONCE_LEN);
    let associated_data = rng.bytes(21);
    let plaintext = rng.bytes(77);

    for len in [0, A::NONCE_LEN - 1, A::NONCE_LEN + 1, MAX_NONCE_LEN + 1] {
        if len == A::NONCE_LEN {
            continue;
        }
        let wrong_nonce = vec![1u8; len];
        let mut buffer = plaintext.clone();
        match aead.seal_in_place_detached(&wrong_nonce, &associated_data, &mut buffer) {
            Err(SealError::NonceLength { expected, actual })
                if expected == A::NONCE_LEN && actual == len => {}
            other => {
                return Err(Failure::new(
                    "nonce length",
                    format!("seal with a {len}-byte nonce gave {other:?}"),
                ));
            }
        }
        ensure(
            aead.open(&wrong_nonce, &associated_data, &[0u8; 64])
                .is_err(),
            "nonce length",
            format!("open accepted a {len}-byte nonce"),
        )?;
    }
    checks.push("wrong nonce lengths refused by seal (NonceLength) and open".into());

    let mut detached = plaintext.clone();
    let tag = aead
        .seal_in_place_detached(&nonce, &associated_data, &mut detached)
        .map_err(|error| Failure::new("seal", error.to_string()))?;
    let sealed = aead
        .seal(&nonce, &associated_data, &plaintext)
        .map_err(|error| Failure::new("seal", error.to_string()))?;
    ensure(
        sealed.len() == plaintext.len() + TAG_LEN,
        "seal",
        "sealed length is not plaintext + 16",
    )?;
    ensure(
        sealed.split_at_checked(plaintext.len()) == Some((detached.as_slice(), tag.as_slice())),
        "seal",
        "seal() differs from seal_in_place_detached()",
    )?;
    ensure(detached != plaintext, "seal", "ciphertext equals plaintext")?;
    let opened = aead
        .open(&nonce, &associated_data, &sealed)
        .map_err(|_| Failure::new("open", "refused its own ciphertext"))?;
    ensure(
        opened == plaintext,
        "open",
        "round trip changed the plaintext",
    )?;
    let mut in_place = detached.clone();
    aead.open_in_place_detached(&nonce, &associated_data, &mut in_place, &tag)
        .map_err(|_| Failure::new("open", "detached open refused its own ciphertext"))?;
    ensure(
        in_place == plaintext,
        "open",
        "detached round trip changed the plaintext",
    )?;
    checks.push("detached and attached seal agree; both opens round-trip".into());

    for tag_len in [0, 1, TAG_LEN - 1, TAG_LEN + 1] {
        let mut wrong_tag = tag.to_vec();
        wrong_tag.resize(tag_len, 0);
        let mut buffer = detached.clone();
        ensure(
            aead.open_in_place_detached(&nonce, &associated_data, &mut buffer, &wrong_tag)
                .is_err(),
            "tag length",
            format!("open accepted a {tag_len}-byte tag"),
        )?;
    }
    for len in 0..TAG_LEN {
        ensure(
            aead.open(
                &nonce,
                &associated_data,
                sealed.get(..len).unwrap_or_default(),
            )
            .is_err(),
            "truncation",
            format!("open accepted {len} bytes"),
        )?;
    }
    checks.push("wrong tag lengths and inputs shorter than a tag refused".into());

    let mut other_nonce = nonce.clone();
    if let Some(first) = other_nonce.first_mut() {
        *first ^= 0x80;
    }
    let resealed = aead
        .seal(&other_nonce, &associated_data, &plaintext)
        .map_err(|error| Failure::new("seal", error.to_string()))?;
    ensure(
        resealed != sealed,
        "nonce",
        "two nonces gave the same ciphertext",
    )?;
    ensure(
        aead.open(&other_nonce, &associated_data, &sealed).is_err(),
        "nonce",
        "opened under the wrong nonce",
    )?;
    checks.push("the nonce changes the ciphertext and is authenticated".into());

    // A genuine message under a nonce of the wrong length (the right one cut
    // short or extended) must be refused: an implementation that pads or
    // truncates nonces would accept it. (Opening garbage could not tell.)
    let mut longer = nonce.clone();
    longer.push(0);
    let shorter = nonce
        .get(..nonce.len().saturating_sub(1))
        .unwrap_or_default()
        .to_vec();
    for wrong in [longer, shorter, Vec::new()] {
        ensure(
            aead.open(&wrong, &associated_data, &sealed).is_err(),
            "nonce length",
            format!(
                "opened a genuine message under a {}-byte nonce",
                wrong.len()
            ),
        )?;
    }
    checks.push("a genuine message under a nonce of the wrong length is refused".into());

    Ok(Report {
        subject: A::NAME.to_owned(),
        checks,
    })
}

/// Checks an [`IvStrategy`] on its own with `seed` (of length
/// `I::SEED_LEN`): seed and output lengths are checked, `MAX_IVS` is
/// enforced, IVs are a pure function of the counter whatever the order of
/// requests, and the first `sequential` IVs plus IVs at random counters below
/// `MAX_IVS` are pairwise distinct.
pub fn check_iv_strategy<I: IvStrategy>(seed: &[u8], sequential: u64) -> Result<Report, Failure> {
    let mut checks = Vec::new();
    let mut rng = TestRng::new(0x1f5);
    ensure(
        (1..=MAX_NONCE_LEN).contains(&I::IV_LEN),
        "parameters",
        format!("IV length {} outside 1..={MAX_NONCE_LEN}", I::IV_LEN),
    )?;
    ensure(I::MAX_IVS >= 1, "parameters", "MAX_IVS is 0")?;

    let mut wrong_seed_lens = vec![I::SEED_LEN + 1];
    if let Some(shorter) = I::SEED_LEN.checked_sub(1) {
        wrong_seed_lens.extend([0, shorter]);
    }
    for len in wrong_seed_lens {
        match I::new(&vec![0x5a; len]) {
            Err(IvError::SeedLength { expected, actual })
                if expected == I::SEED_LEN && actual == len => {}
            other => {
                return Err(Failure::new(
                    "seed length",
                    format!("a {len}-byte seed gave {:?}", other.map(|_| ())),
                ));
            }
        }
    }
    checks.push("wrong seed lengths refused with SeedLength".into());

    let new = || I::new(seed).map_err(|error| Failure::new("seed", error.to_string()));
    let mut strategy = new()?;
    let iv = |strategy: &mut I, counter: u64| -> Result<[u8; MAX_NONCE_LEN], Failure> {
        let mut out = [0u8; MAX_NONCE_LEN];
        let slot = out.get_mut(..I::IV_LEN).unwrap_or_default();
        strategy
            .iv(counter, slot)
            .map_err(|error| Failure::new(format!("iv({counter})"), error.to_string()))?;
        Ok(out)
    };

    for len in [0, I::IV_LEN - 1, I::IV_LEN + 1] {
        let mut out = vec![0u8; len];
        match strategy.iv(0, &mut out) {
            Err(IvError::OutputLength { expected, actual })
                if expected == I::IV_LEN && actual == len => {}
            other => {
                return Err(Failure::new(
                    "output length",
                    format!("a {len}-byte buffer gave {other:?}"),
                ));
            }
        }
    }
    checks.push("wrong output lengths refused with OutputLength".into());

    let mut out = vec![0u8; I::IV_LEN];
    match strategy.iv(I::MAX_IVS, &mut out) {
        Err(IvError::Exhausted { counter, max }) if counter == I::MAX_IVS && max == I::MAX_IVS => {}
        other => {
            return Err(Failure::new(
                "limit",
                format!("iv(MAX_IVS = {}) gave {other:?}", I::MAX_IVS),
            ));
        }
    }
    iv(&mut strategy, I::MAX_IVS - 1)?;
    checks.push(format!(
        "iv(MAX_IVS − 1) given, iv(MAX_IVS) refused (MAX_IVS = {})",
        I::MAX_IVS
    ));

    let mut seen: HashMap<[u8; MAX_NONCE_LEN], u64> = HashMap::new();
    let mut record = |value: [u8; MAX_NONCE_LEN], counter: u64| -> Result<(), Failure> {
        match seen.insert(value, counter) {
            Some(previous) if previous != counter => Err(Failure::new(
                "uniqueness",
                format!("counters {previous} and {counter} give the same IV"),
            )),
            _ => Ok(()),
        }
    };
    let sequential = sequential.min(I::MAX_IVS);
    let mut forward = new()?;
    for counter in 0..sequential {
        record(iv(&mut forward, counter)?, counter)?;
    }
    for _ in 0..2000 {
        let counter = rng.below(I::MAX_IVS);
        let value = iv(&mut strategy, counter)?;
        ensure(
            value == iv(&mut new()?, counter)?,
            "purity",
            format!("iv({counter}) depends on earlier requests"),
        )?;
        record(value, counter)?;
    }
    checks.push(format!(
        "{sequential} sequential IVs and 2000 at random counters pairwise distinct and independent of request order"
    ));

    Ok(Report {
        subject: I::NAME.to_owned(),
        checks,
    })
}
