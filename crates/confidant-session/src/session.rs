//! The established session: seal, open, key update, snapshot.

use crate::config::SessionConfig;
use crate::error::{OpenError, SealError, SessionError, SnapshotError};
use crate::keys::{self, ChainKey, EpochKeys};
use crate::replay::ReplayWindow;
use crate::snapshot::{RecvEpochSnapshot, RecvSnapshot, SendSnapshot, SessionSnapshot};
use confidant_core::wire::{self, EncryptedMessage, KeyUpdate, KeyUpdateBody};
use confidant_core::{
    AgreedSecret, ConnectionId, ContentType, Direction, DirectionCipher, PROTOCOL_VERSION, Role,
    Suite, SuiteId, SuiteRegistry, TAG_LEN,
};
use prost::Message;
use std::fmt;
use std::sync::Arc;

/// Length of the associated data of every sealed message.
pub const ASSOCIATED_DATA_LEN: usize = 4 + 4 + 1 + 1 + 4 + 8 + 32;

/// Where a session stands with respect to its sending key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Nothing to do.
    Fresh,
    /// The soft limit is reached, or the peer asked for an update: call
    /// [`Session::update_sending_key`] soon.
    UpdateRecommended,
    /// The hard limit is reached: sealing is refused until the key is
    /// updated.
    UpdateRequired,
}

/// What a received key update asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUpdateReceived {
    /// The peer's new sending epoch.
    pub epoch: u32,
    /// The peer asks us to update our sending key too.
    pub update_requested: bool,
}

struct SendDirection {
    epoch: u32,
    next_counter: u64,
    keys: EpochKeys,
    next_chain: ChainKey,
    cipher: Box<dyn DirectionCipher>,
    /// The epoch's announcement is still to be sealed as counter 0 (with
    /// this `update_requested`). In memory only: a restored session never
    /// seals it.
    announcement: Option<bool>,
}

struct RecvEpoch {
    epoch: u32,
    keys: EpochKeys,
    cipher: Box<dyn DirectionCipher>,
    window: ReplayWindow,
    /// Opens under this key whose tag did not verify (RFC 9001 §6.6's
    /// integrity limit counts these). Kept in memory only.
    failed_opens: u64,
}

struct RecvDirection {
    current: RecvEpoch,
    /// Chain key of `current.epoch + 1`.
    next_chain: ChainKey,
    previous: Option<RecvEpoch>,
    received_in_current: u64,
    /// Failed opens of messages claiming a later epoch, all such epochs
    /// together; the next current key starts its count from here. In memory
    /// only.
    failed_ahead: u64,
}

/// Which epoch's state a verified message changes.
enum Acceptance {
    Current,
    Previous,
    Next(Box<(RecvEpoch, ChainKey)>),
}

/// An established session between two parties over one connection.
///
/// Pure: bytes in, bytes out. It owns one key per direction and epoch, the
/// sending counter, and the receiving replay window. See the crate docs for
/// an example.
pub struct Session {
    role: Role,
    connection_id: ConnectionId,
    suite: Arc<dyn Suite>,
    config: SessionConfig,
    binding: [u8; 32],
    send: SendDirection,
    recv: RecvDirection,
    peer_requested_update: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("connection_id", &self.connection_id)
            .field("suite", &self.suite.id())
            .field("send_epoch", &self.send.epoch)
            .field("next_send_counter", &self.send.next_counter)
            .field("recv_epoch", &self.recv.current.epoch)
            .field("keys", &"<redacted>")
            .finish()
    }
}

fn direction_cipher(
    suite: &dyn Suite,
    keys: &EpochKeys,
) -> Result<Box<dyn DirectionCipher>, SessionError> {
    Ok(suite.direction_cipher(&keys.key, &keys.iv_seed)?)
}

fn derive_epoch(
    suite: &dyn Suite,
    chain: &ChainKey,
    direction: Direction,
    epoch: u32,
) -> Result<(EpochKeys, ChainKey, Box<dyn DirectionCipher>), SessionError> {
    let (keys, next) = chain.derive(
        suite.id(),
        direction,
        epoch,
        suite.key_len(),
        suite.iv_seed_len(),
    )?;
    let cipher = direction_cipher(suite, &keys)?;
    Ok((keys, next, cipher))
}

impl Session {
    /// Creates the session that a key agreement just established.
    ///
    /// Both parties call this with the same `agreed` secret, connection id
    /// and suite, and opposite roles.
    pub fn new(
        role: Role,
        connection_id: ConnectionId,
        suite: Arc<dyn Suite>,
        agreed: &AgreedSecret,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        config.validate()?;
        let binding = keys::binding(connection_id.as_bytes(), agreed.associated_data());
        let chain =
            |direction| keys::initial_chain_key(agreed.secret(), suite.id(), direction, &binding);
        let (send_keys, send_next, send_cipher) =
            derive_epoch(suite.as_ref(), &chain(role.sending())?, role.sending(), 0)?;
        let (recv_keys, recv_next, recv_cipher) = derive_epoch(
            suite.as_ref(),
            &chain(role.receiving())?,
            role.receiving(),
            0,
        )?;
        let window = ReplayWindow::new(config.replay_window);
        Ok(Self {
            role,
            connection_id,
            suite,
            binding,
            send: SendDirection {
                epoch: 0,
                next_counter: 0,
                keys: send_keys,
                next_chain: send_next,
                cipher: send_cipher,
                announcement: None,
            },
            recv: RecvDirection {
                current: RecvEpoch {
                    epoch: 0,
                    keys: recv_keys,
                    cipher: recv_cipher,
                    window,
                    failed_opens: 0,
                },
                next_chain: recv_next,
                previous: None,
                received_in_current: 0,
                failed_ahead: 0,
            },
            config,
            peer_requested_update: false,
        })
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The connection this session protects.
    pub fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    /// The session's suite.
    pub fn suite_id(&self) -> SuiteId {
        self.suite.id()
    }

    /// Whether `other` is a session between the same parties over the same
    /// connection: the same connection id and the same key-agreement
    /// associated data (for X3DH, the same two identity keys). A reset may
    /// only replace a session with one for which this holds.
    pub fn same_parties(&self, other: &Session) -> bool {
        self.binding == other.binding
    }

    /// The session's settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The epoch of the sending key.
    pub fn send_epoch(&self) -> u32 {
        self.send.epoch
    }

    /// The counter the next sealed message will carry.
    pub fn next_send_counter(&self) -> u64 {
        self.send.next_counter
    }

    /// The epoch of the current receiving key.
    pub fn receive_epoch(&self) -> u32 {
        self.recv.current.epoch
    }

    /// Moves the sending counter forward to `counter` (never back). A store
    /// that reserves counters in blocks calls this after a restart, so that
    /// sealing resumes above every counter that may have been used before
    /// the crash. Skipped counters are harmless.
    pub fn advance_send_counter(&mut self, counter: u64) {
        self.send.next_counter = self.send.next_counter.max(counter);
    }

    /// How many messages the current sending key may seal in all.
    pub fn hard_limit(&self) -> u64 {
        let suite_limit = self.suite.max_messages_per_key();
        self.config
            .max_messages_per_epoch
            .map_or(suite_limit, |limit| limit.min(suite_limit))
    }

    /// After how many messages a key update is recommended.
    pub fn soft_limit(&self) -> u64 {
        let hard = self.hard_limit();
        let share = u128::from(hard) * u128::from(self.config.soft_limit_percent) / 100;
        u64::try_from(share).unwrap_or(hard).max(1)
    }

    /// How many failed opens one receiving key may see: the suite's
    /// integrity limit, or [`SessionConfig::max_failed_opens_per_key`] if
    /// lower.
    pub fn failed_open_limit(&self) -> u64 {
        let suite_limit = self.suite.max_failed_opens_per_key();
        self.config
            .max_failed_opens_per_key
            .map_or(suite_limit, |limit| limit.min(suite_limit))
    }

    /// Whether the current receiving key reached its integrity limit: it
    /// opens nothing more, and the peer must move to a new epoch (send a key
    /// update asking for one: [`Session::update_sending_key`] with
    /// `request_peer_update`).
    pub fn integrity_limit_reached(&self) -> bool {
        self.recv.current.failed_opens >= self.failed_open_limit()
    }

    /// Whether the sending key needs updating.
    pub fn key_status(&self) -> KeyStatus {
        if self.send.next_counter >= self.hard_limit() {
            KeyStatus::UpdateRequired
        } else if self.peer_requested_update || self.send.next_counter >= self.soft_limit() {
            KeyStatus::UpdateRecommended
        } else {
            KeyStatus::Fresh
        }
    }

    fn max_plaintext_len(&self) -> u64 {
        self.config
            .max_plaintext_len
            .min(self.suite.max_plaintext_len())
    }

    fn associated_data(
        &self,
        direction: Direction,
        content_type: ContentType,
        epoch: u32,
        counter: u64,
    ) -> [u8; ASSOCIATED_DATA_LEN] {
        let mut ad = [0u8; ASSOCIATED_DATA_LEN];
        let fields: [&[u8]; 7] = [
            &PROTOCOL_VERSION.to_be_bytes(),
            &self.suite.id().0.to_be_bytes(),
            &[direction.to_byte()],
            &[content_type.to_byte()],
            &epoch.to_be_bytes(),
            &counter.to_be_bytes(),
            &self.binding,
        ];
        let mut at = 0;
        for field in fields {
            if let Some(slot) = ad.get_mut(at..at + field.len()) {
                slot.copy_from_slice(field);
            }
            at += field.len();
        }
        ad
    }

    /// Seals `plaintext` as the next message.
    ///
    /// The returned message carries its counter and epoch in the clear.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<EncryptedMessage, SealError> {
        let mut buffer = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buffer.extend_from_slice(plaintext);
        self.seal_buffer(buffer, ContentType::Application)
    }

    /// Seals `plaintext` in place (no copy), as the next message.
    pub fn seal_vec(&mut self, mut plaintext: Vec<u8>) -> Result<EncryptedMessage, SealError> {
        plaintext.reserve(TAG_LEN);
        self.seal_buffer(plaintext, ContentType::Application)
    }

    fn seal_buffer(
        &mut self,
        buffer: Vec<u8>,
        content_type: ContentType,
    ) -> Result<EncryptedMessage, SealError> {
        let counter = self.send.next_counter;
        let sealed = self.seal_at(counter, buffer, content_type)?;
        self.send.next_counter = counter + 1;
        Ok(sealed)
    }

    /// Seals `buffer` in place as message `counter` of the sending epoch;
    /// the caller makes sure that counter is never used again.
    fn seal_at(
        &mut self,
        counter: u64,
        mut buffer: Vec<u8>,
        content_type: ContentType,
    ) -> Result<EncryptedMessage, SealError> {
        let max = self.max_plaintext_len();
        let len = buffer.len() as u64;
        if len > max {
            return Err(SealError::TooLong { len, max });
        }
        let limit = self.hard_limit();
        if counter >= limit {
            return Err(SealError::KeyExhausted {
                epoch: self.send.epoch,
                limit,
            });
        }
        let ad = self.associated_data(self.role.sending(), content_type, self.send.epoch, counter);
        self.send
            .cipher
            .seal(counter, &ad, &mut buffer)
            .map_err(|error| SealError::Cipher(error.to_string()))?;
        Ok(EncryptedMessage {
            content: buffer,
            connection_id: self.connection_id.as_str().to_owned(),
            counter,
            suite: self.suite.id().0,
            epoch: self.send.epoch,
        })
    }

    /// Moves the sending direction to the next epoch and returns the sealed
    /// announcement to send. The old sending key is forgotten. On error the
    /// session is unchanged.
    ///
    /// With `request_peer_update` the peer is asked to update its own
    /// sending key as well.
    ///
    /// A caller that stores the session must store the new epoch *before*
    /// sealing its announcement (see [`Session::begin_key_update`]):
    /// otherwise a crash or a failed write between the two brings back the
    /// old epoch, and the next update seals counter 0 of the same new key a
    /// second time.
    pub fn update_sending_key(
        &mut self,
        request_peer_update: bool,
    ) -> Result<KeyUpdate, SealError> {
        let peer_requested_update = self.peer_requested_update;
        let previous = self.next_send_direction(request_peer_update)?;
        match self.seal_key_update() {
            Ok(update) => Ok(update),
            Err(error) => {
                // Nothing was consumed: the old sending state comes back, so
                // the new epoch's counter 0 is never used by a message that
                // did not leave.
                self.send = previous;
                self.peer_requested_update = peer_requested_update;
                Err(error)
            }
        }
    }

    /// Moves the sending direction to the next epoch without sealing its
    /// announcement yet: counter 0 of the new epoch is kept for it, and the
    /// session's next message takes counter 1. Store the session
    /// ([`Session::snapshot`]) and only then call
    /// [`Session::seal_key_update`]: a snapshot taken now already counts
    /// counter 0 as used, so whatever happens after it is stored, that
    /// (key, nonce) is sealed at most once. A session restored from such a
    /// snapshot never seals the announcement; the peer follows the new
    /// epoch with its first message instead. The old sending key is
    /// forgotten. On error the session is unchanged.
    pub fn begin_key_update(&mut self, request_peer_update: bool) -> Result<(), SealError> {
        self.next_send_direction(request_peer_update).map(drop)
    }

    /// Seals the announcement of the epoch [`Session::begin_key_update`]
    /// began, as counter 0 of that epoch; once only.
    pub fn seal_key_update(&mut self) -> Result<KeyUpdate, SealError> {
        let Some(request_peer_update) = self.send.announcement else {
            return Err(SealError::NoKeyUpdateBegun);
        };
        let body = KeyUpdateBody {
            update_requested: request_peer_update,
        }
        .encode_to_vec();
        let sealed = self.seal_at(0, body, ContentType::KeyUpdate)?;
        self.send.announcement = None;
        Ok(KeyUpdate {
            sealed: Some(sealed),
        })
    }

    /// Moves the sending direction to the next epoch, counter 0 kept for
    /// the announcement; returns the previous sending state.
    fn next_send_direction(
        &mut self,
        request_peer_update: bool,
    ) -> Result<SendDirection, SealError> {
        let epoch = self
            .send
            .epoch
            .checked_add(1)
            .ok_or(SealError::EpochsExhausted(self.send.epoch))?;
        let direction = self.role.sending();
        let (keys, next_chain, cipher) =
            derive_epoch(self.suite.as_ref(), &self.send.next_chain, direction, epoch)?;
        let previous = std::mem::replace(
            &mut self.send,
            SendDirection {
                epoch,
                next_counter: 1,
                keys,
                next_chain,
                cipher,
                announcement: Some(request_peer_update),
            },
        );
        self.peer_requested_update = false;
        Ok(previous)
    }

    /// Verifies and decrypts a received application message.
    ///
    /// On any error the session is unchanged: a forged, replayed, truncated
    /// or misdirected message leaves no trace.
    pub fn open(&mut self, message: EncryptedMessage) -> Result<Vec<u8>, OpenError> {
        let (plaintext, acceptance, counter) = self.verify(message, ContentType::Application)?;
        self.commit(acceptance, counter);
        Ok(plaintext)
    }

    /// Verifies a received key update and moves the receiving direction to
    /// its epoch.
    pub fn open_key_update(&mut self, update: KeyUpdate) -> Result<KeyUpdateReceived, OpenError> {
        let sealed = update
            .sealed
            .ok_or(wire::DecodeError::MissingField("sealed"))?;
        let epoch = sealed.epoch;
        let (plaintext, acceptance, counter) = self.verify(sealed, ContentType::KeyUpdate)?;
        let body: KeyUpdateBody = wire::decode_message(&plaintext, 64)?;
        self.commit(acceptance, counter);
        if body.update_requested {
            self.peer_requested_update = true;
        }
        Ok(KeyUpdateReceived {
            epoch,
            update_requested: body.update_requested,
        })
    }

    /// Checks and decrypts without changing the session's logical state.
    fn verify(
        &mut self,
        message: EncryptedMessage,
        content_type: ContentType,
    ) -> Result<(Vec<u8>, Acceptance, u64), OpenError> {
        if message.connection_id != self.connection_id.as_str() {
            return Err(OpenError::WrongConnection {
                expected: self.connection_id.clone(),
                got: message.connection_id,
            });
        }
        let suite = self.suite.id();
        if message.suite != suite.0 {
            return Err(OpenError::WrongSuite {
                expected: suite,
                got: SuiteId(message.suite),
            });
        }
        let len = message.content.len();
        let Some(plaintext_len) = len.checked_sub(TAG_LEN) else {
            return Err(OpenError::Truncated { len });
        };
        let max = self.max_plaintext_len();
        if plaintext_len as u64 > max {
            return Err(OpenError::TooLarge {
                len: plaintext_len as u64,
                max,
            });
        }
        let counter = message.counter;
        let limit = self.suite.max_messages_per_key();
        if counter >= limit {
            return Err(OpenError::CounterOutOfRange { counter, limit });
        }
        let direction = self.role.receiving();
        let ad = self.associated_data(direction, content_type, message.epoch, counter);
        let mut buffer = message.content;
        let mut acceptance = self.acceptance(message.epoch, direction)?;
        let limit = self.failed_open_limit();
        let derived_ahead = matches!(acceptance, Acceptance::Next(_));
        let state = match &mut acceptance {
            Acceptance::Current => &mut self.recv.current,
            Acceptance::Previous => {
                self.recv
                    .previous
                    .as_mut()
                    .ok_or(OpenError::UnacceptableEpoch {
                        current: self.recv.current.epoch,
                        got: message.epoch,
                    })?
            }
            // Forgeries claiming a later epoch attack keys that are not in
            // use yet: they are counted together, and the next current key
            // starts from that count.
            Acceptance::Next(next) => {
                if self.recv.failed_ahead >= limit {
                    return Err(OpenError::IntegrityLimit {
                        epoch: next.0.epoch,
                    });
                }
                &mut next.0
            }
        };
        if !derived_ahead && state.failed_opens >= limit {
            return Err(OpenError::IntegrityLimit { epoch: state.epoch });
        }
        state.window.check(counter)?;
        if state.cipher.open(counter, &ad, &mut buffer).is_err() {
            match &acceptance {
                Acceptance::Next(_) => self.recv.failed_ahead += 1,
                Acceptance::Current => self.recv.current.failed_opens += 1,
                Acceptance::Previous => {
                    if let Some(previous) = self.recv.previous.as_mut() {
                        previous.failed_opens += 1;
                    }
                }
            }
            return Err(OpenError::Authentication);
        }
        Ok((buffer, acceptance, counter))
    }

    /// Which epoch a message of `epoch` belongs to, deriving a later epoch's
    /// keys when the peer has moved on.
    fn acceptance(&self, epoch: u32, direction: Direction) -> Result<Acceptance, OpenError> {
        let current = self.recv.current.epoch;
        if epoch == current {
            return Ok(Acceptance::Current);
        }
        if self
            .recv
            .previous
            .as_ref()
            .is_some_and(|p| p.epoch == epoch)
        {
            return Ok(Acceptance::Previous);
        }
        let ahead = epoch.saturating_sub(current);
        if ahead == 0 || ahead > self.config.max_epoch_skip {
            return Err(OpenError::UnacceptableEpoch {
                current,
                got: epoch,
            });
        }
        let suite = self.suite.as_ref();
        let mut chain = self.recv.next_chain.clone();
        for skipped in current + 1..epoch {
            let (_, next) = chain.derive(
                suite.id(),
                direction,
                skipped,
                suite.key_len(),
                suite.iv_seed_len(),
            )?;
            chain = next;
        }
        let (keys, next_chain, cipher) = derive_epoch(suite, &chain, direction, epoch)?;
        Ok(Acceptance::Next(Box::new((
            RecvEpoch {
                epoch,
                keys,
                cipher,
                window: ReplayWindow::new(self.config.replay_window),
                failed_opens: 0,
            },
            next_chain,
        ))))
    }

    fn commit(&mut self, acceptance: Acceptance, counter: u64) {
        match acceptance {
            Acceptance::Current => {
                self.recv.current.window.mark(counter);
                self.recv.received_in_current = self.recv.received_in_current.saturating_add(1);
            }
            Acceptance::Previous => {
                if let Some(previous) = self.recv.previous.as_mut() {
                    previous.window.mark(counter);
                }
            }
            Acceptance::Next(next) => {
                let (mut epoch, next_chain) = *next;
                epoch.window.mark(counter);
                epoch.failed_opens = std::mem::take(&mut self.recv.failed_ahead);
                let old = std::mem::replace(&mut self.recv.current, epoch);
                self.recv.previous = Some(old);
                self.recv.next_chain = next_chain;
                self.recv.received_in_current = 1;
            }
        }
        if self.recv.received_in_current > self.config.previous_epoch_grace {
            self.recv.previous = None;
        }
    }

    /// Forgets the previous receiving epoch's key now, without waiting for
    /// the grace period.
    pub fn forget_previous_epoch(&mut self) {
        self.recv.previous = None;
    }

    /// Captures the whole session, secrets included, for storage.
    pub fn snapshot(&self) -> SessionSnapshot {
        let recv_epoch = |epoch: &RecvEpoch| RecvEpochSnapshot {
            epoch: epoch.epoch,
            keys: epoch.keys.clone(),
            window: epoch.window.clone(),
        };
        SessionSnapshot {
            role: self.role,
            connection_id: self.connection_id.clone(),
            suite: self.suite.id().0,
            config: self.config.clone(),
            binding: self.binding,
            send: SendSnapshot {
                epoch: self.send.epoch,
                next_counter: self.send.next_counter,
                keys: self.send.keys.clone(),
                next_chain: self.send.next_chain.clone(),
            },
            recv: RecvSnapshot {
                current: recv_epoch(&self.recv.current),
                next_chain: self.recv.next_chain.clone(),
                previous: self.recv.previous.as_ref().map(recv_epoch),
                received_in_current: self.recv.received_in_current,
            },
            peer_requested_update: self.peer_requested_update,
        }
    }

    /// Rebuilds a session from a snapshot, finding its suite in `registry`.
    pub fn restore(
        snapshot: &SessionSnapshot,
        registry: &SuiteRegistry,
    ) -> Result<Self, SnapshotError> {
        snapshot.config.validate().map_err(SessionError::from)?;
        let suite = registry
            .get(SuiteId(snapshot.suite))
            .map_err(SessionError::from)?;
        let check_keys = |keys: &EpochKeys| {
            if keys.key.len() != suite.key_len() || keys.iv_seed.len() != suite.iv_seed_len() {
                Err(SnapshotError::Inconsistent(
                    "key lengths do not match the suite",
                ))
            } else {
                Ok(())
            }
        };
        let window_size = u64::from(snapshot.config.replay_window);
        let recv_epoch = |epoch: &RecvEpochSnapshot| -> Result<RecvEpoch, SnapshotError> {
            check_keys(&epoch.keys)?;
            if !epoch.window.is_well_formed() || epoch.window.size() != window_size {
                return Err(SnapshotError::Inconsistent(
                    "replay window does not match the config",
                ));
            }
            Ok(RecvEpoch {
                epoch: epoch.epoch,
                keys: epoch.keys.clone(),
                cipher: direction_cipher(suite.as_ref(), &epoch.keys)?,
                window: epoch.window.clone(),
                failed_opens: 0,
            })
        };
        check_keys(&snapshot.send.keys)?;
        let current = recv_epoch(&snapshot.recv.current)?;
        let previous = snapshot
            .recv
            .previous
            .as_ref()
            .map(recv_epoch)
            .transpose()?;
        if previous
            .as_ref()
            .is_some_and(|previous| previous.epoch >= current.epoch)
        {
            return Err(SnapshotError::Inconsistent(
                "previous receiving epoch is not before the current one",
            ));
        }
        Ok(Self {
            role: snapshot.role,
            connection_id: snapshot.connection_id.clone(),
            config: snapshot.config.clone(),
            binding: snapshot.binding,
            send: SendDirection {
                epoch: snapshot.send.epoch,
                next_counter: snapshot.send.next_counter,
                keys: snapshot.send.keys.clone(),
                next_chain: snapshot.send.next_chain.clone(),
                cipher: direction_cipher(suite.as_ref(), &snapshot.send.keys)?,
                announcement: None,
            },
            recv: RecvDirection {
                current,
                next_chain: snapshot.recv.next_chain.clone(),
                previous,
                received_in_current: snapshot.recv.received_in_current,
                failed_ahead: 0,
            },
            suite,
            peer_requested_update: snapshot.peer_requested_update,
        })
    }
}
