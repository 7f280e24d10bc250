//! Suite seal and open throughput against the raw AEAD crate, and the cost
//! of each IV strategy per message.

use crate::measure::{Rounds, compare, format_ns, per_call};
use crate::{Settings, Verdict};
use aes::Aes256;
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead as _, AeadInOut, KeyInit};
use confidant_aes_gcm::{Lfsr128Iv, Sha256CounterIv};
use confidant_chacha20poly1305::BigEndianCounterIv;
use confidant_core::wire::EncryptedMessage;
use confidant_core::{AgreedSecret, ConnectionId, IvStrategy, Role, Suite};
use confidant_session::{ASSOCIATED_DATA_LEN, Session, SessionConfig};
use std::hint::black_box;
use std::sync::Arc;

const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 1024 * 1024];

/// The raw AEAD crate a suite wraps, called with a fixed nonce and the same
/// length of associated data as the session uses.
enum Raw {
    AesGcm16(Box<AesGcm<Aes256, U16>>),
    ChaCha(Box<chacha20poly1305::ChaCha20Poly1305>),
}

impl Raw {
    fn seal(&self, plaintext: &[u8], ad: &[u8]) -> Vec<u8> {
        let result = match self {
            Raw::AesGcm16(cipher) => cipher.encrypt(
                &[0x24; 16].into(),
                aes_gcm::aead::Payload {
                    msg: plaintext,
                    aad: ad,
                },
            ),
            Raw::ChaCha(cipher) => cipher.encrypt(
                &[0x24; 12].into(),
                chacha20poly1305::aead::Payload {
                    msg: plaintext,
                    aad: ad,
                },
            ),
        };
        result.unwrap_or_default()
    }

    fn seal_in_place(&self, buffer: &mut Vec<u8>, ad: &[u8]) -> bool {
        match self {
            Raw::AesGcm16(cipher) => cipher.encrypt_in_place(&[0x24; 16].into(), ad, buffer),
            Raw::ChaCha(cipher) => cipher.encrypt_in_place(&[0x24; 12].into(), ad, buffer),
        }
        .is_ok()
    }

    fn open(&self, buffer: &mut Vec<u8>, ad: &[u8]) -> bool {
        match self {
            Raw::AesGcm16(cipher) => cipher.decrypt_in_place(&[0x24; 16].into(), ad, buffer),
            Raw::ChaCha(cipher) => cipher.decrypt_in_place(&[0x24; 12].into(), ad, buffer),
        }
        .is_ok()
    }
}

/// Nanoseconds per item: `run` consumes batches of `batch` items made by
/// `prepare` (untimed) until `iterations` items are done. Outputs are freed
/// after each batch's timing, as a caller would keep them for a while.
fn timed_batches<T, O>(
    iterations: u64,
    batch: usize,
    mut prepare: impl FnMut(usize) -> Vec<T>,
    mut run: impl FnMut(T) -> O,
) -> f64 {
    let mut done = 0u64;
    let mut elapsed = std::time::Duration::ZERO;
    let mut outputs = Vec::with_capacity(batch);
    while done < iterations {
        let items = prepare(batch);
        done += items.len().max(1) as u64;
        let start = std::time::Instant::now();
        for item in items {
            outputs.push(black_box(run(item)));
        }
        elapsed += start.elapsed();
        outputs.clear();
    }
    elapsed.as_nanos() as f64 / done.max(1) as f64
}

struct SuiteUnderTest {
    suite: Arc<dyn Suite>,
    raw: Raw,
    iv_cost: fn(u64) -> f64,
}

/// Per-message cost of an IV strategy over `iterations` sequential counters.
fn iv_cost<I: IvStrategy>(iterations: u64) -> f64 {
    let seed = vec![0x5A; I::SEED_LEN];
    let Ok(mut strategy) = I::new(&seed) else {
        return f64::NAN;
    };
    let mut out = vec![0u8; I::IV_LEN];
    let mut counter = 0u64;
    per_call(iterations, || {
        let _ = strategy.iv(black_box(counter), &mut out);
        black_box(&out);
        counter += 1;
    })
}

/// Per-message cost of an IV strategy when every counter is a random jump.
fn iv_jump_cost<I: IvStrategy>(iterations: u64) -> f64 {
    let seed = vec![0x5A; I::SEED_LEN];
    let Ok(mut strategy) = I::new(&seed) else {
        return f64::NAN;
    };
    let mut out = vec![0u8; I::IV_LEN];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    per_call(iterations, || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let _ = strategy.iv(black_box(state % (1 << 24)), &mut out);
        black_box(&out);
    })
}

fn pair(suite: &Arc<dyn Suite>) -> Option<(Session, Session)> {
    let agreed = AgreedSecret::new([0x11; 32], vec![0x22; 64], None);
    let connection = ConnectionId::new("bench-connection-0001").ok()?;
    let holder = Session::new(
        Role::Initiator,
        connection.clone(),
        suite.clone(),
        &agreed,
        SessionConfig::default(),
    )
    .ok()?;
    let issuer = Session::new(
        Role::Responder,
        connection,
        suite.clone(),
        &agreed,
        SessionConfig::default(),
    )
    .ok()?;
    Some((holder, issuer))
}

fn iterations_for(size: usize, settings: &Settings) -> u64 {
    // Short samples, many rounds: the compared variants alternate every few
    // milliseconds, so a slow spell of the shared machine hits both.
    let budget = if settings.quick { 1 << 20 } else { 4 << 20 };
    (budget / size).clamp(8, 20_000) as u64
}

/// Runs the suite benchmarks and prints their table.
pub fn run(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    let suites = [
        SuiteUnderTest {
            suite: confidant_aes_gcm::aes_256_gcm_sha256_counter(),
            raw: Raw::AesGcm16(Box::new(AesGcm::new(&[0x33; 32].into()))),
            iv_cost: iv_cost::<Sha256CounterIv>,
        },
        SuiteUnderTest {
            suite: confidant_aes_gcm::aes_256_gcm_lfsr(),
            raw: Raw::AesGcm16(Box::new(AesGcm::new(&[0x33; 32].into()))),
            iv_cost: iv_cost::<Lfsr128Iv>,
        },
        SuiteUnderTest {
            suite: confidant_chacha20poly1305::chacha20_poly1305_counter(),
            raw: Raw::ChaCha(Box::new(chacha20poly1305::ChaCha20Poly1305::new(
                &[0x33; 32].into(),
            ))),
            iv_cost: iv_cost::<BigEndianCounterIv>,
        },
    ];
    let ad = [0x44u8; ASSOCIATED_DATA_LEN];

    println!("## Suites: seal and open, as a ratio to the raw AEAD crate plus the IV cost");
    println!(
        "raw = the AEAD crate in place, with a fixed nonce and {ASSOCIATED_DATA_LEN} bytes of associated \
         data (what the session binds); confidant = Session::seal_vec / Session::open"
    );
    println!(
        "{:<38} {:>8} {:>5} {:>11} {:>9} {:>11} {:>7} {:>7}  MB/s",
        "suite", "size", "op", "raw", "IV", "confidant", "ratio", "target"
    );
    for under_test in &suites {
        for size in SIZES {
            let iterations = iterations_for(size, settings);
            let plaintext = vec![0x5Au8; size];
            let target = if size >= 1024 { 1.10 } else { 1.25 };

            // Seal: both sides encrypt buffers prepared outside the timing
            // (with room for the tag), so the allocator's page faults do not
            // decide the result. The session seals without copying
            // (`seal_vec`); `seal(&[u8])` adds one copy of the plaintext.
            // A batch stays within about 1 MiB so that both sides read their
            // input from cache.
            let batch = ((1 << 20) / size).clamp(4, 1024);
            let fresh = |count: usize| -> Vec<Vec<u8>> {
                (0..count)
                    .map(|_| {
                        let mut buffer = Vec::with_capacity(size + 16);
                        buffer.extend_from_slice(&plaintext);
                        buffer
                    })
                    .collect()
            };
            let mut raw_seal = || {
                timed_batches(iterations, batch, fresh, |mut buffer| {
                    let ok = under_test.raw.seal_in_place(&mut buffer, &ad);
                    (ok, buffer)
                })
            };
            let mut iv = || (under_test.iv_cost)(iterations.max(10_000));
            let mut confidant_seal = || {
                let Some((mut holder, _)) = pair(&under_test.suite) else {
                    return f64::NAN;
                };
                timed_batches(iterations, batch, fresh, |buffer| {
                    holder.seal_vec(buffer).ok()
                })
            };
            let rounds = compare(
                settings.rounds,
                [&mut raw_seal, &mut iv, &mut confidant_seal],
            );
            report(under_test, size, "seal", &rounds, target, verdicts);

            // Open: likewise, each side consumes prepared batches.
            let mut raw_open = || {
                let sealed = under_test.raw.seal(&plaintext, &ad);
                timed_batches(
                    iterations,
                    batch,
                    |count| vec![sealed.clone(); count],
                    |mut buffer| {
                        let ok = under_test.raw.open(&mut buffer, &ad);
                        (ok, buffer)
                    },
                )
            };
            let mut confidant_open = || {
                let Some((mut holder, mut issuer)) = pair(&under_test.suite) else {
                    return f64::NAN;
                };
                let mut prepare = |count| -> Vec<EncryptedMessage> {
                    (0..count)
                        .filter_map(|_| holder.seal(&plaintext).ok())
                        .collect()
                };
                timed_batches(iterations, batch, &mut prepare, |message| {
                    issuer.open(message).ok()
                })
            };
            let rounds = compare(
                settings.rounds,
                [&mut raw_open, &mut iv, &mut confidant_open],
            );
            report(under_test, size, "open", &rounds, target, verdicts);
        }
    }
    println!();
}

fn report(
    under_test: &SuiteUnderTest,
    size: usize,
    op: &str,
    rounds: &Rounds<3>,
    target: f64,
    verdicts: &mut Vec<Verdict>,
) {
    let [raw, iv, confidant] = rounds.fastest();
    let ratio = rounds.median_ratio(|[raw, iv, confidant]| confidant / (raw + iv));
    let throughput = size as f64 / confidant * 1_000.0;
    let size_label = if size >= 1024 * 1024 {
        format!("{} MiB", size / (1024 * 1024))
    } else if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    };
    println!(
        "{:<38} {:>8} {:>5} {:>11} {:>9} {:>11} {:>7.3} {:>7}  {:.0}",
        under_test.suite.name(),
        size_label,
        op,
        format_ns(raw),
        format_ns(iv),
        format_ns(confidant),
        ratio,
        format!("≤{target:.2}"),
        throughput,
    );
    verdicts.push(Verdict::at_most(
        format!("{} {op} {size_label}", under_test.suite.name()),
        ratio,
        target,
    ));
}

/// Per-message cost of each IV strategy, sequential and with random jumps.
pub fn run_iv(settings: &Settings, verdicts: &mut Vec<Verdict>) {
    let iterations = if settings.quick { 20_000 } else { 400_000 };
    let mut sha = || iv_cost::<Sha256CounterIv>(iterations);
    let mut lfsr = || iv_cost::<Lfsr128Iv>(iterations);
    let mut lfsr_jump = || iv_jump_cost::<Lfsr128Iv>(iterations / 20);
    let mut sha_jump = || iv_jump_cost::<Sha256CounterIv>(iterations / 20);
    let mut counter = || iv_cost::<BigEndianCounterIv>(iterations);
    let rounds = compare(
        settings.rounds,
        [
            &mut sha,
            &mut lfsr,
            &mut lfsr_jump,
            &mut sha_jump,
            &mut counter,
        ],
    );
    let [sha, lfsr, lfsr_jump, sha_jump, counter] = rounds.fastest();
    println!("## IV strategies: cost per message");
    println!("{:<46} {:>10}", "strategy", "per IV");
    println!(
        "{:<46} {:>10}",
        "SHA-256 counter (sequential)",
        format_ns(sha)
    );
    println!(
        "{:<46} {:>10}",
        "SHA-256 counter (random counters)",
        format_ns(sha_jump)
    );
    println!(
        "{:<46} {:>10}",
        "128-bit LFSR (sequential)",
        format_ns(lfsr)
    );
    println!(
        "{:<46} {:>10}",
        "128-bit LFSR (random jumps below 2^24)",
        format_ns(lfsr_jump)
    );
    println!(
        "{:<46} {:>10}",
        "96-bit big-endian counter",
        format_ns(counter)
    );
    let ratio = rounds.median_ratio(|[sha, lfsr, ..]| lfsr / sha);
    println!("LFSR / SHA-256 counter, sequential: {ratio:.3} (target ≤ 1.00)");
    println!();
    verdicts.push(Verdict::at_most(
        "LFSR IV vs SHA-256 counter IV (sequential)",
        ratio,
        1.0,
    ));
}
