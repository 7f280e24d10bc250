//! Checks of a whole [`Suite`]: what the session layer relies on.

use crate::failure::{Failure, ensure};
use crate::rng::TestRng;
use confidant_core::{DirectionCipher, MAX_NONCE_LEN, Suite, SuiteId, SuiteSealError, TAG_LEN};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// What [`check_suite`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuiteReport {
    /// The suite's id.
    pub id: SuiteId,
    /// The suite's name.
    pub name: String,
    /// One line per check that passed.
    pub checks: Vec<String>,
    /// Sequential counters whose IVs were checked pairwise distinct.
    pub sequential_ivs: u64,
    /// Random counters jumped to (IVs checked distinct and order-independent).
    pub random_jumps: u64,
    /// The slowest of the jumps to a far counter from a fresh cipher,
    /// including the jump to `max_messages_per_key − 1`.
    pub slowest_jump: Duration,
    /// Forged or mismatched inputs that open refused.
    pub refused_forgeries: u64,
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "suite {} ({}): {} checks passed",
            self.id,
            self.name,
            self.checks.len()
        )?;
        for check in &self.checks {
            writeln!(f, "  - {check}")?;
        }
        Ok(())
    }
}

/// A configurable run of the suite checks; [`check_suite`] runs the
/// defaults.
///
/// ```
/// # fn demo(suite: &dyn confidant_core::Suite) -> Result<(), confidant_conformance::Failure> {
/// use confidant_conformance::SuiteChecks;
/// let report = SuiteChecks::new().sequential_ivs(200_000).random_jumps(500).run(suite)?;
/// # let _ = report;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SuiteChecks {
    sequential_ivs: u64,
    random_jumps: u64,
    large_plaintext_len: usize,
    jump_time_budget: Duration,
    rng_seed: u64,
}

impl Default for SuiteChecks {
    fn default() -> Self {
        Self {
            sequential_ivs: 1_000_000,
            random_jumps: 2_000,
            large_plaintext_len: 1 << 20,
            jump_time_budget: Duration::from_millis(250),
            rng_seed: 0xc0f1_da47,
        }
    }
}

/// Runs [`SuiteChecks`] with its defaults: 1,000,000 sequential IVs, 2,000
/// random jumps, a 1 MiB plaintext, 250 ms allowed for any one jump.
pub fn check_suite(suite: &dyn Suite) -> Result<SuiteReport, Failure> {
    SuiteChecks::default().run(suite)
}

impl SuiteChecks {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many counters from 0 on have their IVs checked pairwise distinct
    /// (capped at the suite's message limit). Default 1,000,000.
    pub fn sequential_ivs(mut self, count: u64) -> Self {
        self.sequential_ivs = count;
        self
    }

    /// How many random counters below the message limit are jumped to.
    /// Default 2,000.
    pub fn random_jumps(mut self, count: u64) -> Self {
        self.random_jumps = count;
        self
    }

    /// Length of the large plaintext (capped at the suite's maximum).
    /// Default 1 MiB.
    pub fn large_plaintext_len(mut self, len: usize) -> Self {
        self.large_plaintext_len = len;
        self
    }

    /// The longest a fresh cipher may take to produce the IV of a far
    /// counter (a jump must not cost O(n)). Default 250 ms, generous enough
    /// for unoptimised builds on a busy machine.
    pub fn jump_time_budget(mut self, budget: Duration) -> Self {
        self.jump_time_budget = budget;
        self
    }

    /// The seed of the generator of keys, seeds, messages and counters, for
    /// reproducing a run.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// Runs every check against `suite`.
    pub fn run(&self, suite: &dyn Suite) -> Result<SuiteReport, Failure> {
        let mut run = Run::new(self, suite)?;
        run.parameters()?;
        run.construction()?;
        run.round_trips()?;
        run.determinism()?;
        run.iv_uniqueness()?;
        run.seed_separation()?;
        run.hard_limit()?;
        run.tampering()?;
        run.large_plaintext()?;
        Ok(run.report)
    }
}

/// State shared by the checks of one run.
struct Run<'a> {
    config: &'a SuiteChecks,
    suite: &'a dyn Suite,
    rng: TestRng,
    key: Vec<u8>,
    seed: Vec<u8>,
    limit: u64,
    report: SuiteReport,
}

type Nonce = [u8; MAX_NONCE_LEN];

impl<'a> Run<'a> {
    fn new(config: &'a SuiteChecks, suite: &'a dyn Suite) -> Result<Self, Failure> {
        let mut rng = TestRng::new(config.rng_seed);
        let key = rng.bytes(suite.key_len());
        let mut seed = rng.bytes(suite.iv_seed_len());
        if let Some(first) = seed.first_mut() {
            // Never the all-zero seed some strategies refuse.
            *first |= 1;
        }
        Ok(Self {
            config,
            suite,
            rng,
            key,
            seed,
            limit: suite.max_messages_per_key(),
            report: SuiteReport {
                id: suite.id(),
                name: suite.name().to_owned(),
                checks: Vec::new(),
                sequential_ivs: 0,
                random_jumps: 0,
                slowest_jump: Duration::ZERO,
                refused_forgeries: 0,
            },
        })
    }

    fn passed(&mut self, check: impl Into<String>) {
        self.report.checks.push(check.into());
    }

    fn cipher_with(&self, key: &[u8], seed: &[u8]) -> Result<Box<dyn DirectionCipher>, Failure> {
        self.suite
            .direction_cipher(key, seed)
            .map_err(|error| Failure::new("direction_cipher", error.to_string()))
    }

    fn cipher(&self) -> Result<Box<dyn DirectionCipher>, Failure> {
        self.cipher_with(&self.key, &self.seed)
    }

    fn seal(
        cipher: &mut dyn DirectionCipher,
        counter: u64,
        associated_data: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let mut buffer = plaintext.to_vec();
        cipher
            .seal(counter, associated_data, &mut buffer)
            .map_err(|error| {
                Failure::new(format!("seal at counter {counter}"), error.to_string())
            })?;
        Ok(buffer)
    }

    fn open(
        cipher: &mut dyn DirectionCipher,
        counter: u64,
        associated_data: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        let mut buffer = sealed.to_vec();
        cipher.open(counter, associated_data, &mut buffer).ok()?;
        Some(buffer)
    }

    fn iv(&self, cipher: &mut dyn DirectionCipher, counter: u64) -> Result<Nonce, Failure> {
        let mut out = [0u8; MAX_NONCE_LEN];
        let slot = out.get_mut(..self.suite.nonce_len()).unwrap_or_default();
        cipher
            .iv(counter, slot)
            .map_err(|error| Failure::new(format!("iv at counter {counter}"), error.to_string()))?;
        Ok(out)
    }

    /// Opening must fail; counts the refusal.
    fn refused(
        &mut self,
        cipher: &mut dyn DirectionCipher,
        counter: u64,
        associated_data: &[u8],
        sealed: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<(), Failure> {
        ensure(
            Self::open(cipher, counter, associated_data, sealed).is_none(),
            format!("tamper: {}", what()),
            "open accepted it",
        )?;
        self.report.refused_forgeries += 1;
        Ok(())
    }

    fn parameters(&mut self) -> Result<(), Failure> {
        let suite = self.suite;
        ensure(
            suite.key_len() >= 16,
            "parameters",
            "key shorter than 128 bits",
        )?;
        ensure(
            (1..=MAX_NONCE_LEN).contains(&suite.nonce_len()),
            "parameters",
            format!(
                "nonce length {} outside 1..={MAX_NONCE_LEN}",
                suite.nonce_len()
            ),
        )?;
        // The checks use counters up to 15; a suite allowing fewer messages
        // per key would be useless anyway.
        ensure(
            self.limit >= 16,
            "parameters",
            format!("max_messages_per_key is {}, under 16", self.limit),
        )?;
        ensure(
            suite.max_plaintext_len() >= 1,
            "parameters",
            "max_plaintext_len is 0",
        )?;
        self.passed(format!(
            "parameters: {}-byte key, {}-byte IV seed, {}-byte nonce, {} messages per key, {} bytes per message",
            suite.key_len(),
            suite.iv_seed_len(),
            suite.nonce_len(),
            self.limit,
            suite.max_plaintext_len()
        ));
        Ok(())
    }

    fn construction(&mut self) -> Result<(), Failure> {
        let key_len = self.suite.key_len();
        for len in [0, key_len - 1, key_len + 1] {
            ensure(
                self.suite
                    .direction_cipher(&vec![1u8; len], &self.seed)
                    .is_err(),
                "construction",
                format!("accepted a {len}-byte key"),
            )?;
        }
        let seed_len = self.suite.iv_seed_len();
        let mut wrong_seed_lens = vec![seed_len + 1];
        if seed_len > 0 {
            wrong_seed_lens.extend([0, seed_len - 1]);
        }
        for len in wrong_seed_lens {
            ensure(
                self.suite
                    .direction_cipher(&self.key, &vec![1u8; len])
                    .is_err(),
                "construction",
                format!("accepted a {len}-byte IV seed"),
            )?;
        }
        self.cipher()?;
        self.passed("construction: wrong key and seed lengths refused");
        Ok(())
    }

    fn round_trips(&mut self) -> Result<(), Failure> {
        let mut sender = self.cipher()?;
        let mut receiver = self.cipher()?;
        let lengths = [0usize, 1, 15, 16, 17, 63, 64, 65, 1000, 4096];
        for (counter, len) in (0u64..).zip(lengths) {
            let plaintext = self.rng.bytes(len);
            let associated_data = self.rng.bytes(len % 40);
            let sealed = Self::seal(sender.as_mut(), counter, &associated_data, &plaintext)?;
            let check = format!("round trip of {len} bytes");
            ensure(
                sealed.len() == len + TAG_LEN,
                &check,
                format!("sealed length {} is not {len} + 16", sealed.len()),
            )?;
            if len >= 16 {
                ensure(
                    sealed.get(..len) != Some(plaintext.as_slice()),
                    &check,
                    "ciphertext equals plaintext",
                )?;
            }
            let opened = Self::open(receiver.as_mut(), counter, &associated_data, &sealed)
                .ok_or_else(|| Failure::new(&check, "the receiver refused it"))?;
            ensure(
                opened == plaintext,
                &check,
                "the receiver got another plaintext",
            )?;
            let reopened = Self::open(sender.as_mut(), counter, &associated_data, &sealed)
                .ok_or_else(|| Failure::new(&check, "the sender's own cipher refused it"))?;
            ensure(
                reopened == plaintext,
                &check,
                "reopening gave another plaintext",
            )?;
        }
        self.passed(
            "round trips of 0 to 4096 bytes (empty plaintext included) through a separate receiver",
        );
        Ok(())
    }

    fn determinism(&mut self) -> Result<(), Failure> {
        let mut first = self.cipher()?;
        let mut second = self.cipher()?;
        let plaintext = self.rng.bytes(48);
        let associated_data = self.rng.bytes(13);
        let mut counters = vec![0u64, 1, 2, 3, 1000, self.limit / 2, self.limit - 1];
        counters.retain(|counter| *counter < self.limit);
        counters.dedup();
        let mut ciphertexts: Vec<(u64, Vec<u8>)> = Vec::new();
        for counter in counters {
            let a = Self::seal(first.as_mut(), counter, &associated_data, &plaintext)?;
            let b = Self::seal(second.as_mut(), counter, &associated_data, &plaintext)?;
            ensure(
                a == b,
                "determinism",
                format!("two ciphers from one key and seed disagree at counter {counter}"),
            )?;
            ensure(
                self.iv(first.as_mut(), counter)? == self.iv(second.as_mut(), counter)?,
                "determinism",
                format!("two ciphers from one key and seed give different IVs at {counter}"),
            )?;
            for (other, earlier) in &ciphertexts {
                ensure(
                    *other == counter || *earlier != a,
                    "determinism",
                    format!("counters {other} and {counter} give the same ciphertext"),
                )?;
            }
            ciphertexts.push((counter, a));
        }
        self.passed("determinism: same key, seed and counter give the same ciphertext; different counters differ");
        Ok(())
    }

    fn iv_uniqueness(&mut self) -> Result<(), Failure> {
        let sequential = self.config.sequential_ivs.min(self.limit);
        let mut seen: HashMap<Nonce, u64> = HashMap::with_capacity(
            usize::try_from(sequential.saturating_add(self.config.random_jumps)).unwrap_or(0),
        );
        let mut cipher = self.cipher()?;
        for counter in 0..sequential {
            let iv = self.iv(cipher.as_mut(), counter)?;
            if let Some(previous) = seen.insert(iv, counter) {
                return Err(Failure::new(
                    "IV uniqueness",
                    format!("counters {previous} and {counter} give the same IV"),
                ));
            }
        }

        // A fresh cipher asked first for counter k must give the IV the
        // sequential run gave for k: a sender resuming at a reservation mark
        // starts exactly like this. Sampled along the run, plus the gaps a
        // cache is most likely to get wrong.
        let stride = (sequential / 1000).max(1);
        let sampled = (0..sequential).step_by(usize::try_from(stride).unwrap_or(1));
        let edges = [2u64, 3, 100, 255, 256, 257, 1000, 4095, 4096, 4097]
            .into_iter()
            .filter(|&counter| counter < sequential);
        for counter in sampled.chain(edges) {
            let fresh_iv = self.iv(self.cipher()?.as_mut(), counter)?;
            ensure(
                seen.get(&fresh_iv) == Some(&counter),
                "IV purity",
                format!(
                    "a fresh cipher gives another IV for counter {counter} than the sequential run"
                ),
            )?;
        }

        // Jump around in one long-lived cipher (exercising any cache) and
        // compare with fresh ciphers.
        let mut wanderer = self.cipher()?;
        for _ in 0..self.config.random_jumps {
            let counter = self.rng.below(self.limit);
            let iv = self.iv(wanderer.as_mut(), counter)?;
            let mut fresh = self.cipher()?;
            let started = Instant::now();
            let fresh_iv = self.iv(fresh.as_mut(), counter)?;
            self.check_jump_time(started.elapsed())?;
            ensure(
                iv == fresh_iv,
                "IV purity",
                format!("the IV of counter {counter} depends on earlier requests"),
            )?;
            match seen.insert(iv, counter) {
                Some(previous) if previous != counter => {
                    return Err(Failure::new(
                        "IV uniqueness",
                        format!("counters {previous} and {counter} give the same IV"),
                    ));
                }
                _ => {}
            }
        }
        // Backwards and nearby requests after a far jump, then walks from a
        // far point with small and cache-sized gaps, forwards and backwards
        // (a receiver skipping lost messages, a reordered delivery).
        let far = self.limit - 1;
        let mut requests = vec![far, far.saturating_sub(1), far / 2, far / 2 + 1, 1, 0, far];
        let base = far / 3;
        for gap in [2u64, 3, 100, 255, 256, 1000, 4095, 4096, 4097] {
            requests.push(base);
            requests.push(base.saturating_add(gap).min(far));
            requests.push(base.saturating_add(gap).min(far).saturating_sub(2 * gap));
        }
        for counter in requests {
            let iv = self.iv(wanderer.as_mut(), counter)?;
            ensure(
                iv == self.iv(self.cipher()?.as_mut(), counter)?,
                "IV purity",
                format!("the IV of counter {counter} depends on earlier requests"),
            )?;
        }
        self.report.sequential_ivs = sequential;
        self.report.random_jumps = self.config.random_jumps;
        self.passed(format!(
            "IV uniqueness: {sequential} sequential counters and {} random jumps give pairwise distinct IVs, independent of request order",
            self.config.random_jumps
        ));
        Ok(())
    }

    fn check_jump_time(&mut self, elapsed: Duration) -> Result<(), Failure> {
        self.report.slowest_jump = self.report.slowest_jump.max(elapsed);
        ensure(
            elapsed <= self.config.jump_time_budget,
            "jump cost",
            format!(
                "a jump took {elapsed:?}, over the budget of {:?}: jumping ahead must not cost O(n)",
                self.config.jump_time_budget
            ),
        )
    }

    fn seed_separation(&mut self) -> Result<(), Failure> {
        if self.suite.iv_seed_len() == 0 {
            self.passed("seed separation: not applicable (the strategy takes no seed)");
            return Ok(());
        }
        let mut other_seed = self.seed.clone();
        if let Some(last) = other_seed.last_mut() {
            *last ^= 0x40;
        }
        let mut ours = self.cipher()?;
        let mut theirs = self.cipher_with(&self.key, &other_seed)?;
        let mut counters: Vec<u64> = (0..1000.min(self.limit)).collect();
        counters.extend((0..100).map(|_| self.rng.below(self.limit)));
        for counter in counters {
            ensure(
                self.iv(ours.as_mut(), counter)? != self.iv(theirs.as_mut(), counter)?,
                "seed separation",
                format!("two seeds give the same IV at counter {counter}"),
            )?;
        }
        self.passed("seed separation: two seeds give different IVs at 1100 counters");
        Ok(())
    }

    fn hard_limit(&mut self) -> Result<(), Failure> {
        let limit = self.limit;
        let last = limit - 1;
        let plaintext = self.rng.bytes(20);
        let mut sender = self.cipher()?;
        let started = Instant::now();
        let sealed = Self::seal(sender.as_mut(), last, b"limit", &plaintext)?;
        self.check_jump_time(started.elapsed())?;
        let mut receiver = self.cipher()?;
        ensure(
            Self::open(receiver.as_mut(), last, b"limit", &sealed).as_deref()
                == Some(&plaintext[..]),
            "hard limit",
            format!("message {last} (the last allowed) did not open"),
        )?;
        for counter in [limit, limit.saturating_add(1), u64::MAX] {
            if counter < limit {
                continue;
            }
            let mut buffer = plaintext.clone();
            match sender.seal(counter, b"limit", &mut buffer) {
                Err(SuiteSealError::Iv(_)) => {}
                other => {
                    return Err(Failure::new(
                        "hard limit",
                        format!("sealing at counter {counter} (limit {limit}) gave {other:?}"),
                    ));
                }
            }
            let mut out = [0u8; MAX_NONCE_LEN];
            let slot = out.get_mut(..self.suite.nonce_len()).unwrap_or_default();
            ensure(
                sender.iv(counter, slot).is_err(),
                "hard limit",
                format!("an IV was given for counter {counter} (limit {limit})"),
            )?;
            let mut forged = sealed.clone();
            ensure(
                receiver.open(counter, b"limit", &mut forged).is_err(),
                "hard limit",
                format!("open accepted counter {counter} (limit {limit})"),
            )?;
        }
        self.passed(format!(
            "hard limit: counter {last} seals and opens, counter {limit} and above are refused"
        ));
        Ok(())
    }

    fn tampering(&mut self) -> Result<(), Failure> {
        let counter = 5u64;
        let plaintext = self.rng.bytes(37);
        let associated_data = self.rng.bytes(29);
        let mut sender = self.cipher()?;
        let mut receiver = self.cipher()?;
        let sealed = Self::seal(sender.as_mut(), counter, &associated_data, &plaintext)?;
        let empty_sealed = Self::seal(sender.as_mut(), counter + 1, &associated_data, &[])?;

        for (message, message_counter) in [(&sealed, counter), (&empty_sealed, counter + 1)] {
            for bit in 0..message.len() * 8 {
                let mut forged = message.clone();
                if let Some(byte) = forged.get_mut(bit / 8) {
                    *byte ^= 1 << (bit % 8);
                }
                self.refused(
                    receiver.as_mut(),
                    message_counter,
                    &associated_data,
                    &forged,
                    || format!("bit {bit} of a {}-byte ct ‖ tag flipped", message.len()),
                )?;
            }
        }
        for bit in 0..associated_data.len() * 8 {
            let mut forged_ad = associated_data.clone();
            if let Some(byte) = forged_ad.get_mut(bit / 8) {
                *byte ^= 1 << (bit % 8);
            }
            self.refused(receiver.as_mut(), counter, &forged_ad, &sealed, || {
                format!("associated data bit {bit} flipped")
            })?;
        }
        self.refused(receiver.as_mut(), counter, &[], &sealed, || {
            "associated data dropped".into()
        })?;
        let mut longer_ad = associated_data.clone();
        longer_ad.push(0);
        self.refused(receiver.as_mut(), counter, &longer_ad, &sealed, || {
            "associated data extended".into()
        })?;

        let far = self.rng.below(self.limit);
        for wrong in [
            counter - 1,
            counter + 1,
            counter + 2,
            0,
            far,
            self.limit - 1,
        ] {
            if wrong != counter {
                self.refused(receiver.as_mut(), wrong, &associated_data, &sealed, || {
                    format!("opened as counter {wrong} instead of {counter}")
                })?;
            }
        }
        for (len, truncated) in
            (0..sealed.len()).filter_map(|len| sealed.get(..len).map(|truncated| (len, truncated)))
        {
            self.refused(
                receiver.as_mut(),
                counter,
                &associated_data,
                truncated,
                || format!("truncated to {len} bytes"),
            )?;
        }
        let mut extended = sealed.clone();
        extended.push(0);
        self.refused(
            receiver.as_mut(),
            counter,
            &associated_data,
            &extended,
            || "one byte appended".into(),
        )?;

        let mut other_key = self.key.clone();
        if let Some(first) = other_key.first_mut() {
            *first ^= 1;
        }
        let mut wrong_key = self.cipher_with(&other_key, &self.seed)?;
        self.refused(
            wrong_key.as_mut(),
            counter,
            &associated_data,
            &sealed,
            || "wrong key".into(),
        )?;
        if !self.seed.is_empty() {
            let mut other_seed = self.seed.clone();
            if let Some(last) = other_seed.last_mut() {
                *last ^= 0x40;
            }
            let mut wrong_seed = self.cipher_with(&self.key, &other_seed)?;
            self.refused(
                wrong_seed.as_mut(),
                counter,
                &associated_data,
                &sealed,
                || "wrong IV seed".into(),
            )?;
        }

        // Failed opens change nothing: the genuine messages still open.
        ensure(
            Self::open(receiver.as_mut(), counter, &associated_data, &sealed).as_deref()
                == Some(&plaintext[..]),
            "tamper",
            "the genuine message no longer opens after refused forgeries",
        )?;
        ensure(
            Self::open(
                receiver.as_mut(),
                counter + 1,
                &associated_data,
                &empty_sealed,
            )
            .is_some_and(|opened| opened.is_empty()),
            "tamper",
            "the genuine empty message no longer opens after refused forgeries",
        )?;
        self.passed(format!(
            "tamper rejection: every bit of ct ‖ tag (37-byte and empty plaintext) and of the associated data, \
             wrong counters, truncation to every shorter length, an appended byte, wrong key{} ({} forgeries refused)",
            if self.seed.is_empty() { "" } else { " and wrong seed" },
            self.report.refused_forgeries
        ));
        Ok(())
    }

    fn large_plaintext(&mut self) -> Result<(), Failure> {
        let len = usize::try_from(self.suite.max_plaintext_len())
            .unwrap_or(usize::MAX)
            .min(self.config.large_plaintext_len);
        let plaintext = self.rng.bytes(len);
        let associated_data = self.rng.bytes(64);
        let counter = 77;
        let mut sender = self.cipher()?;
        let mut receiver = self.cipher()?;
        let sealed = Self::seal(sender.as_mut(), counter, &associated_data, &plaintext)?;
        ensure(
            Self::open(receiver.as_mut(), counter, &associated_data, &sealed).as_deref()
                == Some(&plaintext[..]),
            "large plaintext",
            format!("a {len}-byte message did not round-trip"),
        )?;
        for position in [0, len / 2, len.saturating_sub(1), len + TAG_LEN - 1] {
            let mut forged = sealed.clone();
            if let Some(byte) = forged.get_mut(position) {
                *byte ^= 0x10;
            }
            self.refused(
                receiver.as_mut(),
                counter,
                &associated_data,
                &forged,
                || format!("byte {position} of a {len}-byte message flipped"),
            )?;
        }
        self.passed(format!(
            "large plaintext: {len} bytes round-trip; flips at its start, middle and end refused"
        ));
        Ok(())
    }
}
