//! The conformance suite must fail suites that are broken in the ways that
//! matter: a checker that passes everything proves nothing. Each test below
//! builds one deliberately broken suite from a real AEAD and checks that the
//! right check reports it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_aes_gcm::{Aes256Gcm16, Sha256CounterIv};
use confidant_conformance::{
    AeadTestSet, Failure, SuiteChecks, check_aead, check_iv_strategy, wycheproof_aead,
};
use confidant_core::{
    Aead, DirectionCipher, IvError, IvStrategy, KeyLengthError, OpenError, SealError, Suite,
    SuiteError, SuiteId, SuiteOf, Tag,
};
use std::time::Duration;

const ID: SuiteId = SuiteId(SuiteId::PRIVATE_USE_START + 99);

/// Small runs: these suites fail early or not at all.
fn quick() -> SuiteChecks {
    SuiteChecks::new()
        .sequential_ivs(20_000)
        .random_jumps(200)
        .large_plaintext_len(4096)
}

fn failure_of(suite: &dyn Suite, checks: SuiteChecks) -> Failure {
    match checks.run(suite) {
        Ok(report) => panic!("the broken suite passed:\n{report}"),
        Err(failure) => {
            println!("refused as expected: {failure}");
            failure
        }
    }
}

fn seed_iv(out: &mut [u8], value: u64) -> Result<(), IvError> {
    let out: &mut [u8; 16] = out.try_into().map_err(|_| IvError::OutputLength {
        expected: 16,
        actual: 0,
    })?;
    *out = u128::from(value).to_be_bytes();
    Ok(())
}

/// A well-behaved reference: the plain counter as a 128-bit IV.
struct CounterIv;
impl IvStrategy for CounterIv {
    const NAME: &'static str = "counter";
    const IV_LEN: usize = 16;
    const SEED_LEN: usize = 0;
    const MAX_IVS: u64 = u64::MAX;
    fn new(seed: &[u8]) -> Result<Self, IvError> {
        if seed.is_empty() {
            Ok(Self)
        } else {
            Err(IvError::SeedLength {
                expected: 0,
                actual: seed.len(),
            })
        }
    }
    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        if counter == u64::MAX {
            return Err(IvError::Exhausted {
                counter,
                max: u64::MAX,
            });
        }
        seed_iv(out, counter)
    }
}

#[test]
fn a_correct_suite_passes() {
    let suite = SuiteOf::<Aes256Gcm16, CounterIv>::new(ID, "reference");
    quick().run(&suite).unwrap();
}

/// IVs repeat every 1000 counters.
struct WrappingIv;
impl IvStrategy for WrappingIv {
    const NAME: &'static str = "wrapping";
    const IV_LEN: usize = 16;
    const SEED_LEN: usize = 0;
    const MAX_IVS: u64 = u64::MAX;
    fn new(seed: &[u8]) -> Result<Self, IvError> {
        CounterIv::new(seed)?;
        Ok(Self)
    }
    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        seed_iv(out, counter % 1000)
    }
}

#[test]
fn repeating_ivs_are_caught() {
    let suite = SuiteOf::<Aes256Gcm16, WrappingIv>::new(ID, "wrapping");
    let failure = failure_of(&suite, quick());
    // Seen as equal ciphertexts for counters 0 and 1000, or as an IV
    // collision.
    assert!(
        ["determinism", "IV uniqueness"].contains(&failure.check.as_str()),
        "{failure}"
    );
    assert!(check_iv_strategy::<WrappingIv>(&[], 5000).is_err());
}

/// IVs depend on what was asked before (a cache that changes the mapping).
struct StatefulIv {
    calls: u64,
}
impl IvStrategy for StatefulIv {
    const NAME: &'static str = "stateful";
    const IV_LEN: usize = 16;
    const SEED_LEN: usize = 0;
    const MAX_IVS: u64 = u64::MAX;
    fn new(seed: &[u8]) -> Result<Self, IvError> {
        CounterIv::new(seed)?;
        Ok(Self { calls: 0 })
    }
    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        self.calls += 1;
        // Correct for sequential use from 0, wrong after a jump.
        seed_iv(
            out,
            if counter < 100_000 {
                counter
            } else {
                self.calls
            },
        )
    }
}

#[test]
fn impure_ivs_are_caught() {
    let suite = SuiteOf::<Aes256Gcm16, StatefulIv>::new(ID, "stateful");
    let failure = failure_of(&suite, quick());
    // A jump gives a wrong IV: it collides with another counter's, or
    // differs from what a fresh cipher gives.
    assert!(
        ["determinism", "IV purity", "IV uniqueness"].contains(&failure.check.as_str()),
        "{failure}"
    );
}

/// Jumping costs O(n).
struct SlowIv;
impl IvStrategy for SlowIv {
    const NAME: &'static str = "slow";
    const IV_LEN: usize = 16;
    const SEED_LEN: usize = 0;
    const MAX_IVS: u64 = u64::MAX;
    fn new(seed: &[u8]) -> Result<Self, IvError> {
        CounterIv::new(seed)?;
        Ok(Self)
    }
    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        let mut value = 0u64;
        for _ in 0..counter {
            value = std::hint::black_box(value + 1);
        }
        seed_iv(out, value)
    }
}

#[test]
fn linear_time_jumps_are_caught() {
    let suite = SuiteOf::<Aes256Gcm16, SlowIv>::new(ID, "slow");
    let failure = failure_of(&suite, quick().jump_time_budget(Duration::from_micros(200)));
    assert_eq!(failure.check, "jump cost", "{failure}");
}

/// Takes a seed but ignores it.
struct SeedIgnoringIv;
impl IvStrategy for SeedIgnoringIv {
    const NAME: &'static str = "seed-ignoring";
    const IV_LEN: usize = 16;
    const SEED_LEN: usize = 16;
    const MAX_IVS: u64 = u64::MAX;
    fn new(seed: &[u8]) -> Result<Self, IvError> {
        if seed.len() == 16 {
            Ok(Self)
        } else {
            Err(IvError::SeedLength {
                expected: 16,
                actual: seed.len(),
            })
        }
    }
    fn iv(&mut self, counter: u64, out: &mut [u8]) -> Result<(), IvError> {
        seed_iv(out, counter)
    }
}

#[test]
fn ignored_seeds_are_caught() {
    let suite = SuiteOf::<Aes256Gcm16, SeedIgnoringIv>::new(ID, "seed-ignoring");
    let failure = failure_of(&suite, quick());
    assert_eq!(failure.check, "seed separation", "{failure}");
}

/// An AEAD that does not authenticate the associated data.
struct AdBlind(Aes256Gcm16);
impl Aead for AdBlind {
    const NAME: &'static str = "AD-blind";
    const KEY_LEN: usize = 32;
    const NONCE_LEN: usize = 16;
    const CONFIDENTIALITY_LIMIT: u64 = 1 << 24;
    const INTEGRITY_LIMIT: u64 = 1 << 52;
    const MAX_PLAINTEXT_LEN: u64 = 1 << 30;
    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        Aes256Gcm16::new(key).map(Self)
    }
    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        _associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        self.0.seal_in_place_detached(nonce, b"", buffer)
    }
    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        _associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        self.0.open_in_place_detached(nonce, b"", buffer, tag)
    }
}

#[test]
fn unauthenticated_associated_data_is_caught() {
    let suite = SuiteOf::<AdBlind, Sha256CounterIv>::new(ID, "AD-blind");
    let failure = failure_of(&suite, quick());
    assert!(
        failure.check.starts_with("tamper: associated data"),
        "{failure}"
    );
}

/// An AEAD whose tags are wrong (here: the last bit flipped).
struct WrongTag(Aes256Gcm16);
impl Aead for WrongTag {
    const NAME: &'static str = "wrong tag";
    const KEY_LEN: usize = 32;
    const NONCE_LEN: usize = 16;
    const CONFIDENTIALITY_LIMIT: u64 = 1 << 24;
    const INTEGRITY_LIMIT: u64 = 1 << 52;
    const MAX_PLAINTEXT_LEN: u64 = 1 << 30;
    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        Aes256Gcm16::new(key).map(Self)
    }
    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        let mut tag = self
            .0
            .seal_in_place_detached(nonce, associated_data, buffer)?;
        tag[15] ^= 1;
        Ok(tag)
    }
    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        let mut tag = tag.to_vec();
        if let Some(last) = tag.last_mut() {
            *last ^= 1;
        }
        self.0
            .open_in_place_detached(nonce, associated_data, buffer, &tag)
    }
}

#[test]
fn wrong_tags_are_caught_by_wycheproof() {
    let failure = wycheproof_aead::<WrongTag>(AeadTestSet::AesGcm).unwrap_err();
    println!("refused as expected: {failure}");
    assert!(
        failure.check.starts_with("wycheproof AesGcm case"),
        "{failure}"
    );
    // The generic checks cannot see it: it is self-consistent.
    check_aead::<WrongTag>().unwrap();
}

/// A suite that declares a lower limit than it enforces.
struct Overselling(SuiteOf<Aes256Gcm16, CounterIv>);
impl Suite for Overselling {
    fn id(&self) -> SuiteId {
        ID
    }
    fn name(&self) -> &str {
        "overselling"
    }
    fn key_len(&self) -> usize {
        self.0.key_len()
    }
    fn iv_seed_len(&self) -> usize {
        self.0.iv_seed_len()
    }
    fn nonce_len(&self) -> usize {
        self.0.nonce_len()
    }
    fn max_messages_per_key(&self) -> u64 {
        1 << 20
    }
    fn max_failed_opens_per_key(&self) -> u64 {
        self.0.max_failed_opens_per_key()
    }
    fn max_plaintext_len(&self) -> u64 {
        self.0.max_plaintext_len()
    }
    fn direction_cipher(
        &self,
        key: &[u8],
        iv_seed: &[u8],
    ) -> Result<Box<dyn DirectionCipher>, SuiteError> {
        self.0.direction_cipher(key, iv_seed)
    }
}

#[test]
fn unenforced_limits_are_caught() {
    let suite = Overselling(SuiteOf::new(ID, "inner"));
    let failure = failure_of(&suite, quick());
    assert_eq!(failure.check, "hard limit", "{failure}");
}

/// An AEAD that accepts keys of any length (padding them).
struct LaxKey(Aes256Gcm16);
impl Aead for LaxKey {
    const NAME: &'static str = "lax key";
    const KEY_LEN: usize = 32;
    const NONCE_LEN: usize = 16;
    const CONFIDENTIALITY_LIMIT: u64 = 1 << 24;
    const INTEGRITY_LIMIT: u64 = 1 << 52;
    const MAX_PLAINTEXT_LEN: u64 = 1 << 30;
    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        let mut padded = [0u8; 32];
        for (slot, byte) in padded.iter_mut().zip(key) {
            *slot = *byte;
        }
        Aes256Gcm16::new(&padded).map(Self)
    }
    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        self.0
            .seal_in_place_detached(nonce, associated_data, buffer)
    }
    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        self.0
            .open_in_place_detached(nonce, associated_data, buffer, tag)
    }
}

#[test]
fn lax_key_lengths_are_caught() {
    assert_eq!(check_aead::<LaxKey>().unwrap_err().check, "key length");
    let suite = SuiteOf::<LaxKey, CounterIv>::new(ID, "lax key");
    assert_eq!(failure_of(&suite, quick()).check, "construction");
}

/// IV_n = origin + n, with a "step from the cached state" fast path whose
/// step count is truncated to 8 bits: a fresh cipher asked first for counter
/// 4096 (a sender resuming at its reservation mark) returns IV_0. The
/// sequential run alone cannot see it; comparing with fresh ciphers at
/// cache-sized gaps does. (Found by review.)
struct TruncatedStepIv {
    origin: u128,
    cached: u64,
    state: u128,
}

impl IvStrategy for TruncatedStepIv {
    const NAME: &'static str = "truncated-step cache";
    const IV_LEN: usize = 12;
    const SEED_LEN: usize = 16;
    const MAX_IVS: u64 = u64::MAX;

    fn new(seed: &[u8]) -> Result<Self, IvError> {
        let seed: [u8; 16] = seed.try_into().map_err(|_| IvError::SeedLength {
            expected: 16,
            actual: seed.len(),
        })?;
        let origin = u128::from_be_bytes(seed);
        Ok(Self {
            origin,
            cached: 0,
            state: origin,
        })
    }

    fn iv(&mut self, n: u64, out: &mut [u8]) -> Result<(), IvError> {
        if n == u64::MAX {
            return Err(IvError::Exhausted {
                counter: n,
                max: u64::MAX,
            });
        }
        let actual = out.len();
        let out: &mut [u8; 12] = out.try_into().map_err(|_| IvError::OutputLength {
            expected: 12,
            actual,
        })?;
        let state = if n >= self.cached && n - self.cached <= 4096 {
            let steps = (n - self.cached) as u8; // the bug
            (0..steps).fold(self.state, |state, _| state.wrapping_add(1))
        } else if n < self.cached && self.cached - n <= 4096 {
            (n..self.cached).fold(self.state, |state, _| state.wrapping_sub(1))
        } else {
            self.origin.wrapping_add(u128::from(n))
        };
        self.cached = n;
        self.state = state;
        out.copy_from_slice(&state.to_be_bytes()[4..]);
        Ok(())
    }
}

#[test]
fn a_cache_wrong_for_small_gaps_is_caught() {
    let suite = SuiteOf::<confidant_chacha20poly1305::ChaCha20Poly1305, TruncatedStepIv>::new(
        ID,
        "truncated-step cache",
    );
    let failure = failure_of(&suite, quick());
    assert_eq!(failure.check, "IV purity", "{failure}");
}

/// `open` silently pads or truncates any nonce to 12 bytes. Opening garbage
/// under a wrong-length nonce fails anyway; opening a genuine message shows
/// the bug. (Found by review.)
struct LaxOpen(confidant_chacha20poly1305::ChaCha20Poly1305);

impl Aead for LaxOpen {
    const NAME: &'static str = "lax open";
    const KEY_LEN: usize = 32;
    const NONCE_LEN: usize = 12;
    const CONFIDENTIALITY_LIMIT: u64 = 1 << 62;
    const INTEGRITY_LIMIT: u64 = 1 << 36;
    const MAX_PLAINTEXT_LEN: u64 = 1 << 30;

    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        confidant_chacha20poly1305::ChaCha20Poly1305::new(key).map(Self)
    }

    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        self.0
            .seal_in_place_detached(nonce, associated_data, buffer)
    }

    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        let mut fixed = [0u8; 12];
        let len = nonce.len().min(12);
        fixed[..len].copy_from_slice(&nonce[..len]);
        self.0
            .open_in_place_detached(&fixed, associated_data, buffer, tag)
    }
}

#[test]
fn an_open_that_ignores_the_nonce_length_is_caught() {
    let failure = check_aead::<LaxOpen>().unwrap_err();
    assert_eq!(failure.check, "nonce length", "{failure}");
}
