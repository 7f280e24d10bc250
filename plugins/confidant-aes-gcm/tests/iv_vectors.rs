//! Known answers of the two IV strategies, for other implementations of the
//! protocol to check against (computed with an independent Python script
//! from the definitions in `docs/protocol.md`), and the exhaustive check
//! behind `Sha256CounterIv::MAX_IVS`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confidant_aes_gcm::{Lfsr128Iv, Sha256CounterIv};
use confidant_core::{IvError, IvStrategy};
use std::time::{Duration, Instant};

fn iv<I: IvStrategy>(strategy: &mut I, counter: u64) -> String {
    let mut out = vec![0u8; I::IV_LEN];
    strategy.iv(counter, &mut out).unwrap();
    hex::encode(out)
}

#[test]
fn sha256_counter_known_answers() {
    let mut strategy = Sha256CounterIv::new(&[]).unwrap();
    for (counter, expected) in [
        (0, "af5570f5a1810b7af78caf4bc70a660f"),
        (1, "cd2662154e6d76b2b2b92e70c0cac3cc"),
        (255, "b8862208a16d307a1e2b3a5df2b44a63"),
        ((1 << 24) - 1, "87361904a32defc1e118677018362480"),
    ] {
        assert_eq!(iv(&mut strategy, counter), expected, "counter {counter}");
    }
    let mut out = [0u8; 16];
    assert_eq!(
        strategy.iv(1 << 24, &mut out),
        Err(IvError::Exhausted {
            counter: 1 << 24,
            max: 1 << 24
        })
    );
}

#[test]
fn lfsr_known_answers() {
    let seed = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
    let mut strategy = Lfsr128Iv::new(&seed).unwrap();
    for (counter, expected) in [
        (0, "000102030405060708090a0b0c0d0e0f"),
        (1, "80008101820283038404850586068707"),
        (2, "c0004080c1014181c2024282c3034383"),
        (1000, "eae00653c97fc03e5571269101fbf26b"),
        ((1 << 24) - 1, "4b7a5b28572445ddfa31bef67fd35c7a"),
        (1 << 40, "265c2eb4f23ed05c517b52f6dc70c477"),
        (u64::MAX - 1, "b64dbb3f7c263dceb22191c2e394df67"),
    ] {
        assert_eq!(iv(&mut strategy, counter), expected, "counter {counter}");
        assert_eq!(
            iv(&mut Lfsr128Iv::new(&seed).unwrap(), counter),
            expected,
            "fresh, counter {counter}"
        );
    }
}

/// The SHA-256 counter IVs do not depend on the key or a seed, so their
/// uniqueness below `MAX_IVS` = 2^24 is a fixed fact: check all of them.
/// (16.7 M hashes and a sort of 256 MiB; a few seconds.)
#[test]
fn sha256_counter_ivs_are_distinct_below_max_ivs() {
    let count = usize::try_from(Sha256CounterIv::MAX_IVS).unwrap();
    let mut ivs: Vec<u128> = (0..Sha256CounterIv::MAX_IVS)
        .map(|counter| u128::from_be_bytes(Sha256CounterIv::iv_for(counter)))
        .collect();
    assert_eq!(ivs.len(), count);
    ivs.sort_unstable();
    let repeats = ivs.windows(2).filter(|pair| pair[0] == pair[1]).count();
    assert_eq!(repeats, 0);
}

/// Sequential LFSR IVs cost one step each: no dearer than a SHA-256 call.
/// Best of several rounds, so a busy machine does not make it flaky.
#[test]
fn sequential_lfsr_is_no_dearer_than_sha256_counter() {
    const ROUND: u64 = 200_000;
    let best = |mut round: Box<dyn FnMut(u64)>| {
        (0..5)
            .map(|r| {
                let started = Instant::now();
                round(r * ROUND);
                started.elapsed()
            })
            .min()
            .unwrap_or(Duration::MAX)
    };
    let mut sha = Sha256CounterIv::new(&[]).unwrap();
    let sha_time = best(Box::new(move |start| {
        let mut out = [0u8; 16];
        for counter in start..start + ROUND {
            sha.iv(counter, &mut out).unwrap();
            std::hint::black_box(&out);
        }
    }));
    let mut lfsr = Lfsr128Iv::new(b"0123456789abcdef").unwrap();
    let lfsr_time = best(Box::new(move |start| {
        let mut out = [0u8; 16];
        for counter in start..start + ROUND {
            lfsr.iv(counter, &mut out).unwrap();
            std::hint::black_box(&out);
        }
    }));
    println!(
        "per IV: SHA-256 counter {:?}, LFSR {:?}",
        sha_time / ROUND as u32,
        lfsr_time / ROUND as u32
    );
    assert!(
        lfsr_time <= sha_time,
        "LFSR {lfsr_time:?} vs SHA-256 {sha_time:?}"
    );
}

/// A far jump is cheap: O(log n) polynomial products, not O(n) steps.
#[test]
fn lfsr_far_jumps_are_cheap() {
    let started = Instant::now();
    for i in 0..1000u64 {
        let mut fresh = Lfsr128Iv::new(b"0123456789abcdef").unwrap();
        let mut out = [0u8; 16];
        fresh
            .iv(
                u64::MAX - 1 - i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (1 << 62),
                &mut out,
            )
            .unwrap();
    }
    let per_jump = started.elapsed() / 1000;
    println!("per far jump: {per_jump:?}");
    assert!(per_jump < Duration::from_millis(5), "{per_jump:?}");
}
