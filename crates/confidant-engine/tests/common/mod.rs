//! A deterministic driver for two engines and a relay in memory: every
//! effect is carried out by hand, so a test can crash a party between any
//! two effects, fail a commit, or have the relay drop, copy and reorder
//! deliveries.

#![allow(dead_code, reason = "each test file uses part of the harness")]

use confidant_core::wire::{self, envelope::Body};
use confidant_core::{
    Aead, ConnectionId, KeyLengthError, OpenError, SealError, SuiteId, SuiteOf, SuiteRegistry, Tag,
};
use confidant_engine::hybrid::Hybrid;
use confidant_engine::{
    CommitKind, Connection, Context, DeliveryId, Effects, EngineError, Event, Item, Outbound,
    ProtocolConfig, Random, Report, setup,
};
use confidant_session::SessionConfig;
use confidant_store::{
    Committed, InboxStore, MemoryStore, RawStore, Record, StoreError, Table, WriteBatch,
};
use confidant_x3dh::{IdentityKeyPair, ResponderKeys, SignedPreKey, X3dh};
use confidant_x3dh_mlkem768::X3dhMlKem768;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use zeroize::Zeroizing;

/// A key (as a hash) and a nonce.
type KeyAndNonce = (u64, Vec<u8>);

thread_local! {
    /// Every (key, nonce) a [`Recording`] cipher sealed with on this
    /// thread since the last [`Sim::new`]: a simulation runs on one thread,
    /// so tests running side by side (and a property test's cases, and its
    /// shrinking) each see only their own seals.
    static SEALED: RefCell<HashSet<KeyAndNonce>> = RefCell::new(HashSet::new());
    /// (key, nonce) pairs sealed twice on this thread since the last
    /// [`Sim::new`].
    static REUSED: RefCell<Vec<KeyAndNonce>> = const { RefCell::new(Vec::new()) };
}

/// AES-256-GCM that records every (key, nonce) it seals with: a reuse is
/// caught at the cipher itself, whatever the layers above believe.
pub struct Recording {
    inner: confidant_aes_gcm::Aes256Gcm12,
    key: u64,
}

impl Aead for Recording {
    const NAME: &'static str = "recording AES-256-GCM";
    const KEY_LEN: usize = confidant_aes_gcm::Aes256Gcm12::KEY_LEN;
    const NONCE_LEN: usize = confidant_aes_gcm::Aes256Gcm12::NONCE_LEN;
    const CONFIDENTIALITY_LIMIT: u64 = confidant_aes_gcm::Aes256Gcm12::CONFIDENTIALITY_LIMIT;
    const INTEGRITY_LIMIT: u64 = confidant_aes_gcm::Aes256Gcm12::INTEGRITY_LIMIT;
    const MAX_PLAINTEXT_LEN: u64 = confidant_aes_gcm::Aes256Gcm12::MAX_PLAINTEXT_LEN;

    fn new(key: &[u8]) -> Result<Self, KeyLengthError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        Ok(Self {
            inner: confidant_aes_gcm::Aes256Gcm12::new(key)?,
            key: hasher.finish(),
        })
    }

    fn seal_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> Result<Tag, SealError> {
        let fresh = SEALED.with(|sealed| sealed.borrow_mut().insert((self.key, nonce.to_vec())));
        if !fresh {
            REUSED.with(|reused| reused.borrow_mut().push((self.key, nonce.to_vec())));
        }
        self.inner
            .seal_in_place_detached(nonce, associated_data, buffer)
    }

    fn open_in_place_detached(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        self.inner
            .open_in_place_detached(nonce, associated_data, buffer, tag)
    }
}

/// (key, nonce) pairs sealed twice on this thread since the last
/// [`Sim::new`].
pub fn reused() -> usize {
    REUSED.with(|reused| reused.borrow().len())
}

/// Forgets this thread's seals: a new simulation starts with fresh keys,
/// and a reuse it finds is its own.
fn forget_seals() {
    SEALED.with(|sealed| sealed.borrow_mut().clear());
    REUSED.with(|reused| reused.borrow_mut().clear());
}

pub const RECORDING: SuiteId = SuiteId(SuiteId::PRIVATE_USE_START + 5);

struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String> {
        getrandom::fill(bytes).map_err(|error| error.to_string())
    }
}

/// A context with a fresh identity, offering the recording suite, with
/// small reservation blocks and short epochs so that reservations and key
/// updates happen within a few messages.
pub fn context(session: SessionConfig, block: u64) -> Arc<Context> {
    let mut registry = SuiteRegistry::new();
    registry
        .register(Arc::new(SuiteOf::<
            Recording,
            confidant_chacha20poly1305::BigEndianCounterIv,
        >::new(RECORDING, "recording")))
        .expect("fresh registry");
    confidant_aes_gcm::register(&mut registry).expect("fresh registry");
    let identity = IdentityKeyPair::generate();
    let signed = SignedPreKey::generate(&identity, 1);
    let keys = ResponderKeys::new(identity, signed).expect("valid keys");
    Arc::new(Context {
        registry: Arc::new(registry),
        agreement: Arc::new(X3dh::default()),
        keys,
        config: ProtocolConfig::new(vec![RECORDING])
            .with_session(session)
            .with_reservation_block(block),
        random: Arc::new(SystemRandom),
    })
}

/// A context over `store`'s keys with the X3DH + ML-KEM-768 hybrid: the
/// node's identity and first signed pre-key (with its last-resort KEM
/// pre-key) are stored in `store` first, as a node does at its first start.
pub fn hybrid_context_in(store: &TestStore, agreement: X3dhMlKem768) -> Arc<Context> {
    let identity = IdentityKeyPair::generate();
    let mut batch = WriteBatch::new();
    batch.put_identity(&identity);
    batch.append(
        setup::rotate_signed_pre_keys(
            &Hybrid::new(agreement.clone()),
            &identity,
            &SystemRandom,
            store,
            START_SECONDS,
            setup::Rotation::default(),
        )
        .expect("rotation"),
    );
    store.apply(batch).expect("keys stored");
    hybrid_context_over(store, agreement)
}

/// The hybrid context over the keys already in `store`.
pub fn hybrid_context_over(store: &TestStore, agreement: X3dhMlKem768) -> Arc<Context> {
    let keys = setup::responder_keys(store)
        .expect("keys read")
        .expect("keys stored");
    let hybrid = Hybrid::load(agreement, store, &keys).expect("hybrid loads");
    let base = small_context();
    Arc::new(Context {
        registry: Arc::clone(&base.registry),
        agreement: Arc::new(hybrid),
        keys,
        config: base.config.clone(),
        random: Arc::new(SystemRandom),
    })
}

/// The Unix time the hybrid contexts' keys are made at.
pub const START_SECONDS: u64 = 1_000_000;

/// The system's randomness, for tests that mint keys themselves.
pub fn system_random() -> impl Random {
    SystemRandom
}

/// The settings most tests use: 3 counters per reservation, 12 messages
/// per epoch.
pub fn small_context() -> Arc<Context> {
    context(SessionConfig::default().with_max_messages_per_epoch(12), 3)
}

/// A memory store that counts the commits made through its `RawStore`
/// face, which is the only one the engine sees: the harness commits
/// through [`TestStore::apply`], so any count is the engine writing behind
/// its driver's back.
#[derive(Default)]
pub struct TestStore {
    inner: MemoryStore,
    pub engine_commits: AtomicUsize,
}

impl TestStore {
    /// The driver's commit.
    pub fn apply(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        self.inner.commit(batch)
    }

    /// The inbox: (number, plaintext) of every entry.
    pub fn inbox_entries(&self) -> Vec<(u64, Vec<u8>)> {
        self.inner
            .inbox()
            .expect("inbox reads")
            .into_iter()
            .map(|entry| (entry.sequence, entry.plaintext.to_vec()))
            .collect()
    }

    pub fn engine_commits(&self) -> usize {
        self.engine_commits.load(Ordering::SeqCst)
    }
}

impl RawStore for TestStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.inner.get(table, key)
    }

    fn entries(&self, table: Table) -> Result<Vec<Record>, StoreError> {
        self.inner.entries(table)
    }

    fn commit(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        self.engine_commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(batch)
    }
}

/// When a party's process dies, counted in the party's commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Dies before carrying out its n-th commit (0: its first).
    Before(usize),
    /// Dies after its n-th commit, before telling the engine.
    After(usize),
}

/// What happens to a party's next key-update commit (a step commit that
/// stores the session, of a connection already established).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUpdateFault {
    /// The commit fails.
    Fail,
    /// The party dies before carrying it out.
    CrashBefore,
}

/// One party: its context, its store (which survives crashes), its engine
/// (which does not) and what its application saw.
pub struct Party {
    pub name: &'static str,
    pub context: Arc<Context>,
    pub store: TestStore,
    pub engine: Option<Connection>,
    /// Every event the application was told, in order.
    pub events: Vec<Event>,
    /// Dies at this point of its commits (counted from its first).
    pub crash: Option<Crash>,
    /// Commits carried out so far.
    pub commits_seen: usize,
    /// The next commits fail (an I/O error) while this is above zero.
    pub failing_commits: usize,
    /// What happens to its next key-update commit.
    pub key_update_fault: Option<KeyUpdateFault>,
    /// How often it died.
    pub crashes: usize,
    /// Every batch its store took, in order.
    pub applied: Vec<WriteBatch>,
}

/// Two parties (0 the inviter, 1 the invitee) of one connection and the
/// relay between them.
pub struct Sim {
    pub parties: [Party; 2],
    pub id: ConnectionId,
    /// Deliveries not yet acknowledged, per party (in arrival order).
    pub inbox: [Vec<(DeliveryId, Item)>; 2],
    next_delivery: u64,
    /// What each application message's envelope carries, by envelope.
    pub plaintexts: HashMap<Vec<u8>, Vec<u8>>,
    /// Application messages whose send ended `Ok`, per sender.
    pub sent: [Vec<Vec<u8>>; 2],
    /// Application messages the relay lost every copy of, or whose send
    /// was cut by a crash.
    pub maybe_lost: HashSet<Vec<u8>>,
    /// The relay dropped a protocol step (bundle, initial message, reset,
    /// key update).
    pub control_dropped: bool,
    /// The kind of every envelope the relay took, with its sender.
    pub carried: Vec<(usize, &'static str)>,
}

#[derive(Default)]
struct RunState {
    outcome: Option<Result<(), EngineError>>,
    messages: Vec<Vec<u8>>,
    steps: usize,
}

pub const TOKEN: &str = "the-invitation-token";

impl Sim {
    /// Two parties with fresh contexts built by `context`; the invitation
    /// is issued, the invitee has joined and the relay holds the join
    /// notice for the inviter.
    pub fn new(context: impl Fn() -> Arc<Context>) -> Self {
        Self::new_with(|_| context(), |_| context())
    }

    /// As [`Sim::new`], each party's context built over its own store
    /// (which may store the party's keys first).
    pub fn new_with(
        inviter: impl FnOnce(&TestStore) -> Arc<Context>,
        invitee: impl FnOnce(&TestStore) -> Arc<Context>,
    ) -> Self {
        forget_seals();
        let party = |name, context: &mut dyn FnMut(&TestStore) -> Arc<Context>| {
            let store = TestStore::default();
            Party {
                name,
                context: context(&store),
                store,
                engine: None,
                events: Vec::new(),
                crash: None,
                commits_seen: 0,
                failing_commits: 0,
                key_update_fault: None,
                crashes: 0,
                applied: Vec::new(),
            }
        };
        let mut inviter = Some(inviter);
        let mut invitee = Some(invitee);
        let parties = [
            party("inviter", &mut |store| {
                (inviter.take().expect("once"))(store)
            }),
            party("invitee", &mut |store| {
                (invitee.take().expect("once"))(store)
            }),
        ];
        let id = ConnectionId::new("connection-1").expect("valid id");
        parties[0]
            .store
            .apply(setup::invitation_created(TOKEN))
            .expect("invitation stored");
        let identity = parties[0].context.keys.identity_public_key().to_bytes();
        // The invitation says whether the inviter has the hybrid, as a
        // node's does: a hybrid inviter keeps KEM keys beside its signed
        // pre-keys.
        let hybrid_invitation = !confidant_engine::extras::signed(&parties[0].store)
            .expect("agreement keys read")
            .is_empty();
        parties[1]
            .store
            .apply(
                setup::joined(
                    &id,
                    identity,
                    TOKEN,
                    b"greeting".to_vec(),
                    hybrid_invitation,
                )
                .expect("record"),
            )
            .expect("join stored");
        let mut sim = Self {
            parties,
            id,
            inbox: [Vec::new(), Vec::new()],
            next_delivery: 0,
            plaintexts: HashMap::new(),
            sent: [Vec::new(), Vec::new()],
            maybe_lost: HashSet::new(),
            control_dropped: false,
            carried: Vec::new(),
        };
        sim.push(0, Item::Joined(TOKEN.to_owned()));
        sim
    }

    /// The relay takes an item for party `to`.
    pub fn push(&mut self, to: usize, item: Item) {
        let id = DeliveryId(self.next_delivery);
        self.next_delivery += 1;
        if let Item::Envelope(bytes) = &item {
            self.carried.push((1 - to, kind(bytes)));
        }
        if let Some(inbox) = self.inbox.get_mut(to) {
            inbox.push((id, item));
        }
    }

    /// The party's engine, loading it (and carrying out what loading asks
    /// for) if it is not in memory. A party loading after a crash first
    /// does what a node does at start: sends again the handshake steps a
    /// crash may have kept from leaving, and reports unacknowledged inbox
    /// entries again.
    fn ensure_loaded(&mut self, party: usize) -> bool {
        if self.parties[party].engine.is_some() {
            return true;
        }
        let p = &self.parties[party];
        let resumed = setup::resume(&p.context, &p.store).expect("resume reads the store");
        for (_, envelope) in resumed.again {
            self.push(1 - party, Item::Envelope(envelope));
        }
        let p = &mut self.parties[party];
        for entry in resumed.inbox {
            p.events
                .push(Event::Message(confidant_engine::IncomingMessage {
                    connection_id: entry.connection_id,
                    sequence: entry.sequence,
                    plaintext: entry.plaintext,
                }));
        }
        match Connection::load(Arc::clone(&p.context), &p.store, self.id.clone()) {
            Ok((engine, effects)) => {
                p.engine = Some(engine);
                self.run(party, effects);
                self.parties[party].engine.is_some()
            }
            Err(error) => panic!("{} cannot load: {error}", p.name),
        }
    }

    /// The party's application asks for a reset of the (loaded)
    /// connection; carried out as [`Sim::run`] carries out any request.
    pub fn reset(&mut self, party: usize) -> Option<Result<(), EngineError>> {
        let effects = self.parties[party]
            .engine
            .as_mut()
            .expect("the engine is loaded")
            .reset();
        self.run(party, effects)
    }

    /// The party dies: its engine is gone; its store stays.
    pub fn kill(&mut self, party: usize) {
        let p = &mut self.parties[party];
        p.engine = None;
        p.crash = None;
        p.crashes += 1;
    }

    /// Carries out `effects` for `party`, and whatever the engine asks for
    /// in turn, until nothing is left or the party dies (`None`). Returns
    /// the outcome of the application's request if it ended.
    pub fn run(&mut self, party: usize, effects: Effects) -> Option<Result<(), EngineError>> {
        let mut state = RunState::default();
        if !self.run_inner(party, effects, &mut state) {
            return None;
        }
        if matches!(state.outcome, Some(Ok(()))) {
            // The application's messages leave when its request ends well
            // (as the runtime hands them to the relay).
            for envelope in state.messages {
                self.push(1 - party, Item::Envelope(envelope));
            }
        }
        if self.parties[party]
            .engine
            .as_ref()
            .is_some_and(Connection::is_stale)
        {
            self.parties[party].engine = None;
        }
        state.outcome
    }

    fn run_inner(&mut self, party: usize, mut effects: Effects, state: &mut RunState) -> bool {
        state.steps += 1;
        assert!(
            state.steps < 10_000,
            "the engine asks for effects without end"
        );
        for outbound in effects.send.drain(..) {
            match outbound {
                Outbound::Message(envelope) => state.messages.push(envelope),
                Outbound::Control(envelope) => self.push(1 - party, Item::Envelope(envelope)),
            }
        }
        self.parties[party].events.append(&mut effects.events);
        self.acknowledge(party, &effects.ack);
        if let Some(result) = effects.outcome.take() {
            state.outcome = Some(result);
        }
        for commit in effects.commits {
            let p = &mut self.parties[party];
            let index = p.commits_seen;
            p.commits_seen += 1;
            if is_key_update(&commit) {
                match p.key_update_fault.take() {
                    Some(KeyUpdateFault::Fail) => p.failing_commits = p.failing_commits.max(1),
                    Some(KeyUpdateFault::CrashBefore) => p.crash = Some(Crash::Before(index)),
                    None => {}
                }
            }
            if p.crash == Some(Crash::Before(index)) {
                self.kill(party);
                return false;
            }
            let result = if p.failing_commits > 0 {
                p.failing_commits -= 1;
                Err(StoreError::Io("the test's disk failed".into()))
            } else {
                p.applied.push(commit.batch.clone());
                p.store.apply(commit.batch).map(|committed| committed.inbox)
            };
            if p.crash == Some(Crash::After(index)) {
                self.kill(party);
                return false;
            }
            if commit.kind == CommitKind::Round {
                match &result {
                    Ok(numbers) => {
                        self.acknowledge(party, &commit.acknowledge);
                        self.parties[party]
                            .events
                            .extend(Report::publish(commit.report, Some(numbers.clone())));
                    }
                    Err(_) => self.parties[party]
                        .events
                        .extend(Report::publish(commit.report, None)),
                }
            }
            let p = &mut self.parties[party];
            let Some(engine) = p.engine.as_mut() else {
                return true;
            };
            let next = engine.committed(&p.store, commit.id, result);
            if !self.run_inner(party, next, state) {
                return false;
            }
        }
        true
    }

    fn acknowledge(&mut self, party: usize, deliveries: &[DeliveryId]) {
        if let Some(inbox) = self.inbox.get_mut(party) {
            inbox.retain(|(id, _)| !deliveries.contains(id));
        }
    }

    /// The relay delivers `picks` (indices into the party's unacknowledged
    /// deliveries, in that order; repeats allowed) in one round.
    pub fn deliver(&mut self, party: usize, picks: &[usize]) {
        if !self.ensure_loaded(party) {
            return;
        }
        let inbox = &self.inbox[party];
        let items: Vec<(DeliveryId, Item)> = picks
            .iter()
            .filter_map(|&pick| inbox.get(pick).cloned())
            .collect();
        if items.is_empty() {
            return;
        }
        let p = &mut self.parties[party];
        let Some(engine) = p.engine.as_mut() else {
            return;
        };
        let effects = engine.deliver(&p.store, items);
        self.run(party, effects);
    }

    /// The relay delivers everything it holds for `party`, in order.
    pub fn deliver_all(&mut self, party: usize) {
        let picks: Vec<usize> = (0..self.inbox[party].len()).collect();
        self.deliver(party, &picks);
    }

    /// The party's application sends `text`.
    pub fn send(&mut self, party: usize, text: &[u8]) -> Option<Result<(), EngineError>> {
        if !self.ensure_loaded(party) {
            return None;
        }
        let p = &mut self.parties[party];
        let engine = p.engine.as_mut()?;
        let effects = engine.send(vec![text.to_vec()]);
        // Which envelope carries which text: the message envelopes come
        // out in order, one per text.
        let before: usize = self.inbox[1 - party].len();
        let outcome = self.run(party, effects);
        match &outcome {
            Some(Ok(())) => {
                self.sent[party].push(text.to_vec());
                if let Some(envelope) = self.inbox[1 - party]
                    .get(before..)
                    .into_iter()
                    .flatten()
                    .find_map(|(_, item)| match item {
                        Item::Envelope(bytes) if is_message(bytes) => Some(bytes.clone()),
                        _ => None,
                    })
                {
                    self.plaintexts.insert(envelope, text.to_vec());
                }
            }
            None => {
                // Cut by a crash: it may or may not have left (here it did
                // not, as the runtime hands messages over at the end).
                self.maybe_lost.insert(text.to_vec());
            }
            Some(Err(_)) => {}
        }
        outcome
    }

    /// The relay loses the party's `pick`-th unacknowledged delivery.
    pub fn drop_delivery(&mut self, party: usize, pick: usize) {
        let inbox = &mut self.inbox[party];
        // The join notice is the relay's own word: losing it is refusing
        // the connection, which a relay can always do.
        if pick >= inbox.len() || matches!(inbox.get(pick), Some((_, Item::Joined(_)))) {
            return;
        }
        let (_, item) = inbox.remove(pick);
        match item {
            Item::Envelope(bytes) if is_message(&bytes) => {
                let copies_left = inbox
                    .iter()
                    .any(|(_, other)| matches!(other, Item::Envelope(b) if *b == bytes));
                if !copies_left && let Some(text) = self.plaintexts.get(&bytes) {
                    self.maybe_lost.insert(text.clone());
                }
            }
            _ => self.control_dropped = true,
        }
    }

    /// The relay copies the party's `pick`-th unacknowledged delivery.
    pub fn duplicate(&mut self, party: usize, pick: usize) {
        if let Some((_, item)) = self.inbox[party].get(pick).cloned() {
            self.push(party, item);
        }
    }

    /// Delivers everything to both sides, round after round, until the
    /// relay is empty (bounded).
    pub fn settle(&mut self) {
        for _ in 0..64 {
            // Loaded, so that what a load or a restart asks for is done.
            self.ensure_loaded(0);
            self.ensure_loaded(1);
            if self.inbox[0].is_empty() && self.inbox[1].is_empty() {
                break;
            }
            self.deliver_all(0);
            self.deliver_all(1);
        }
    }

    /// Runs the handshake to the end, with no faults.
    pub fn connect(&mut self) {
        self.settle();
        assert!(self.established(0) && self.established(1), "not connected");
    }

    pub fn established(&self, party: usize) -> bool {
        self.parties[party]
            .engine
            .as_ref()
            .is_some_and(Connection::is_established)
    }

    /// The application messages in the party's inbox (the store), in
    /// order.
    pub fn stored(&self, party: usize) -> Vec<Vec<u8>> {
        self.parties[party]
            .store
            .inbox()
            .expect("inbox reads")
            .into_iter()
            .map(|entry| entry.plaintext.to_vec())
            .collect()
    }

    /// The application messages the party's application was told of, by
    /// inbox number (a number told twice, after a restart, counts once).
    pub fn told(&self, party: usize) -> Vec<(u64, Vec<u8>)> {
        let mut seen = HashSet::new();
        self.parties[party]
            .events
            .iter()
            .filter_map(|event| match event {
                Event::Message(message) if seen.insert(message.sequence) => {
                    Some((message.sequence, message.plaintext.to_vec()))
                }
                _ => None,
            })
            .collect()
    }
}

/// Whether a commit moves an established session's sending key: a step
/// that stores the session without touching the connection record (the
/// handshake's commits write the record too).
fn is_key_update(commit: &confidant_engine::Commit) -> bool {
    let writes =
        |wanted: Table| {
            commit.batch.ops().iter().any(
                |op| matches!(op, confidant_store::WriteOp::Put { table, .. } if *table == wanted),
            )
        };
    commit.kind == CommitKind::Step && writes(Table::Sessions) && !writes(Table::Connections)
}

/// Whether an envelope is an application message.
pub fn is_message(bytes: &[u8]) -> bool {
    matches!(
        wire::decode_envelope(bytes, usize::MAX),
        Ok(Body::Message(_))
    )
}

/// The kind of an envelope, for assertions.
pub fn kind(bytes: &[u8]) -> &'static str {
    match wire::decode_envelope(bytes, usize::MAX) {
        Ok(Body::Bundle(_)) => "bundle",
        Ok(Body::Initial(_)) => "initial",
        Ok(Body::Message(_)) => "message",
        Ok(Body::KeyUpdate(_)) => "key update",
        Ok(Body::Reset(_)) => "reset",
        _ => "other",
    }
}
