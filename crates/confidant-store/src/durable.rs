//! A session whose state survives crashes.
//!
//! **Sending: counter reservation.** Before a message with counter `n`
//! leaves [`DurableSession::seal`], the store holds a durable reservation
//! `(epoch, reserved_until)` with `n < reserved_until`. Reservations are
//! taken in blocks (default [`DEFAULT_RESERVATION_BLOCK`] counters): one
//! durable commit per block, not per message. After a crash, sealing
//! resumes at `reserved_until`, above every counter that may have been used;
//! the counters skipped are harmless, a reused one would be fatal. A key
//! update stores the new epoch and its first reservation in one commit before
//! the announcement is returned.
//!
//! **Receiving: durable before reported.** [`DurableSession::receive`] opens
//! a batch of messages, then commits in one transaction the session (with its
//! replay window) and an inbox entry for each opened message. Only then does
//! it report them. A crash before the commit loses nothing (the connector
//! redelivers, and the messages are accepted once); a crash after it cannot
//! deliver them again (the window refuses them). The application takes
//! messages from the inbox and deletes them when it has handled them.
//!
//! If a commit fails after the session changed in memory, the session is
//! *poisoned*: every later call fails until it is loaded again from the
//! store, so memory never runs ahead of the disk.

use crate::batch::WriteBatch;
use crate::error::StoreError;
use crate::records::{CounterReservation, InboxEntry, SendResume};
use crate::store::{Committed, CounterStore, RawStore, SessionStore};
use confidant_core::wire::{EncryptedMessage, KeyUpdate};
use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_session::{KeyUpdateReceived, OpenError, Session};
use zeroize::Zeroizing;

/// Default number of counters reserved per durable commit.
pub const DEFAULT_RESERVATION_BLOCK: u64 = 65_536;

/// A [`Session`] bound to a store.
#[derive(Debug)]
pub struct DurableSession {
    session: Session,
    reservation: CounterReservation,
    block: u64,
    /// Received messages changed the session since it was last stored.
    dirty: bool,
    /// A snapshot was staged into a batch whose fate is not known yet.
    staged: bool,
    poisoned: bool,
}

/// Why a received message was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The session refused the message (forged, replayed, …); nothing
    /// changed.
    #[error(transparent)]
    Refused(#[from] OpenError),
    /// A staged batch is waiting: call [`DurableSession::committed`] or
    /// [`DurableSession::commit_failed`] first, so that no later change is
    /// overwritten by an older staged snapshot.
    #[error("a staged batch is waiting for committed() or commit_failed()")]
    Pending,
    /// A failed commit left the session ahead of the store: load it again.
    #[error("a failed commit left this session ahead of the store; load it again")]
    Poisoned,
}

/// What [`DurableSession::receive`] did with one message.
#[derive(Debug)]
pub enum Received {
    /// Opened, and durably in the inbox under the entry's `sequence`.
    Stored(InboxEntry),
    /// Refused; nothing changed.
    Refused(ReceiveError),
}

fn poisoned() -> StoreError {
    StoreError::Inconsistent("a failed commit left this session ahead of the store; load it again")
}

impl DurableSession {
    /// Stores a newly established session, together with the other changes
    /// in `batch`, in one transaction. For a responder, `batch` holds the
    /// deletion of the one-time pre-key the handshake used and an inbox
    /// entry for the initiator's first message (the session already counts
    /// it as received, so it must be stored with it).
    ///
    /// Keep one `DurableSession` per connection at a time: two handles would
    /// each reserve counters without seeing the other's.
    pub fn create<S: RawStore + ?Sized>(
        store: &S,
        session: Session,
        batch: WriteBatch,
        block: u64,
    ) -> Result<Self, StoreError> {
        Self::create_committed(store, session, batch, block).map(|(durable, _)| durable)
    }

    /// [`DurableSession::create`], also returning what the commit did (the
    /// inbox numbers of entries in `batch`).
    pub fn create_committed<S: RawStore + ?Sized>(
        store: &S,
        session: Session,
        mut batch: WriteBatch,
        block: u64,
    ) -> Result<(Self, Committed), StoreError> {
        if block == 0 {
            return Err(StoreError::Inconsistent(
                "reservation block must be at least 1",
            ));
        }
        let reservation = CounterReservation {
            epoch: session.send_epoch(),
            reserved_until: session.next_send_counter(),
        };
        batch.put_session(&session.snapshot())?;
        batch.put_reservation(session.connection_id(), reservation);
        let committed = store.commit(batch)?;
        Ok((
            Self {
                session,
                reservation,
                block,
                dirty: false,
                staged: false,
                poisoned: false,
            },
            committed,
        ))
    }

    /// Stages a newly established session into `batch` (its snapshot and
    /// first counter reservation), for a caller that commits the batch
    /// itself (the connection engine). Use the returned session only once
    /// that commit has succeeded; drop it if the commit failed.
    pub fn stage_new(
        session: Session,
        batch: &mut WriteBatch,
        block: u64,
    ) -> Result<Self, StoreError> {
        if block == 0 {
            return Err(StoreError::Inconsistent(
                "reservation block must be at least 1",
            ));
        }
        let reservation = CounterReservation {
            epoch: session.send_epoch(),
            reserved_until: session.next_send_counter(),
        };
        batch.put_session(&session.snapshot())?;
        batch.put_reservation(session.connection_id(), reservation);
        Ok(Self {
            session,
            reservation,
            block,
            dirty: false,
            staged: false,
            poisoned: false,
        })
    }

    /// Loads a connection's session, resuming its sending counter above the
    /// durable reservation. `None` if the connection has no session.
    pub fn load<S: RawStore + ?Sized>(
        store: &S,
        registry: &SuiteRegistry,
        connection_id: &ConnectionId,
        block: u64,
    ) -> Result<Option<Self>, StoreError> {
        Self::load_resuming(store, registry, connection_id, block, None)
    }

    /// [`DurableSession::load`], going on from `resume` (where this
    /// process let the session go, see [`SendResume`]) if it still matches
    /// the store: the same epoch and the same reservation, with the stored
    /// counter not past it. Otherwise (or with `None`) sealing resumes
    /// above the durable reservation. Give each `resume` to one load only.
    pub fn load_resuming<S: RawStore + ?Sized>(
        store: &S,
        registry: &SuiteRegistry,
        connection_id: &ConnectionId,
        block: u64,
        resume: Option<SendResume>,
    ) -> Result<Option<Self>, StoreError> {
        if block == 0 {
            return Err(StoreError::Inconsistent(
                "reservation block must be at least 1",
            ));
        }
        let Some(snapshot) = store.session(connection_id)? else {
            return Ok(None);
        };
        let reservation = store
            .reservation(connection_id)?
            .ok_or(StoreError::Inconsistent(
                "session without a counter reservation",
            ))?;
        if reservation.epoch != snapshot.send_epoch() {
            return Err(StoreError::Inconsistent(
                "counter reservation and session are in different sending epochs",
            ));
        }
        let mut session = confidant_session::Session::restore(&snapshot, registry)?;
        let resume_at = resume
            .filter(|resume| {
                resume.epoch == reservation.epoch
                    && resume.epoch == session.send_epoch()
                    && resume.reserved_until == reservation.reserved_until
                    && session.next_send_counter() <= resume.next_counter
                    && resume.next_counter <= reservation.reserved_until
            })
            .map_or(reservation.reserved_until, |resume| resume.next_counter);
        session.advance_send_counter(resume_at);
        Ok(Some(Self {
            session,
            reservation,
            block,
            dirty: false,
            staged: false,
            poisoned: false,
        }))
    }

    /// The session (read only: every change goes through this type).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether a failed commit left this session ahead of the store: every
    /// call fails until it is loaded again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether received messages are staged and wait for
    /// [`DurableSession::committed`] or [`DurableSession::commit_failed`].
    pub fn is_staged(&self) -> bool {
        self.staged
    }

    /// The durable reservation.
    pub fn reservation(&self) -> CounterReservation {
        self.reservation
    }

    /// Where the sending counter stands, for a later
    /// [`DurableSession::load_resuming`] in this process; `None` if nothing
    /// is reserved in the current epoch (or the session is poisoned).
    /// Seal nothing more with this session after taking it.
    pub fn resume_point(&self) -> Option<SendResume> {
        let next_counter = self.session.next_send_counter();
        (!self.poisoned
            && self.reservation.epoch == self.session.send_epoch()
            && next_counter <= self.reservation.reserved_until)
            .then_some(SendResume {
                epoch: self.reservation.epoch,
                next_counter,
                reserved_until: self.reservation.reserved_until,
            })
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.poisoned {
            Err(poisoned())
        } else {
            Ok(())
        }
    }

    /// Whether the next [`DurableSession::seal`] commits a reservation
    /// first (the next counter is not reserved yet). A caller that must not
    /// block on the store (an async runtime) can move that seal to a
    /// blocking thread.
    pub fn seal_commits(&self) -> bool {
        let next = self.session.next_send_counter();
        !(self.reservation.epoch == self.session.send_epoch()
            && next < self.reservation.reserved_until)
            && next < self.session.hard_limit()
    }

    /// Makes sure the next counter is durably reserved in the current
    /// sending epoch.
    fn reserve<S: RawStore + ?Sized>(&mut self, store: &S) -> Result<(), StoreError> {
        if let Some(reservation) = self.reservation_due() {
            let mut batch = WriteBatch::new();
            batch.put_reservation(self.session.connection_id(), reservation);
            store.commit(batch)?;
            self.reservation = reservation;
        }
        Ok(())
    }

    /// The reservation to commit before the next seal, if the next counter
    /// is not durably reserved yet (see [`DurableSession::seal_commits`]).
    /// Commit it (with [`WriteBatch::put_reservation`]), then report it with
    /// [`DurableSession::reserved`]; only then seal with
    /// [`DurableSession::seal_reserved`].
    pub fn reservation_due(&self) -> Option<CounterReservation> {
        if !self.seal_commits() {
            return None;
        }
        let next = self.session.next_send_counter();
        Some(CounterReservation {
            epoch: self.session.send_epoch(),
            reserved_until: next
                .saturating_add(self.block)
                .min(self.session.hard_limit()),
        })
    }

    /// A reservation from [`DurableSession::reservation_due`] was committed.
    pub fn reserved(&mut self, reservation: CounterReservation) {
        if reservation.epoch == self.session.send_epoch()
            && (reservation.epoch != self.reservation.epoch
                || reservation.reserved_until > self.reservation.reserved_until)
        {
            self.reservation = reservation;
        }
    }

    /// Seals `plaintext` in place if its counter is durably reserved; an
    /// error (and nothing sealed) if a reservation is due first.
    pub fn seal_reserved(&mut self, plaintext: Vec<u8>) -> Result<EncryptedMessage, StoreError> {
        self.check()?;
        if self.seal_commits() {
            return Err(StoreError::Inconsistent(
                "the next counter is not reserved; commit the reservation first",
            ));
        }
        self.session
            .seal_vec(plaintext)
            .map_err(|error| StoreError::Session(error.to_string()))
    }

    /// Moves the sending direction to the next epoch in memory and stages
    /// the new epoch and its first reservation into `batch`. The
    /// announcement is not sealed yet: report the commit with
    /// [`DurableSession::key_update_committed`], which seals it. Until then
    /// nothing seals (the session is poisoned); if the commit failed, drop
    /// this session and load it again. (Sealing the announcement before the
    /// commit would seal counter 0 of the new key twice when the commit
    /// fails or the process dies: the reloaded session derives the same
    /// key again.)
    ///
    /// Refused while received messages are not committed, as
    /// [`DurableSession::update_sending_key`].
    pub fn stage_key_update(
        &mut self,
        batch: &mut WriteBatch,
        request_peer_update: bool,
    ) -> Result<CounterReservation, StoreError> {
        self.check()?;
        if self.dirty || self.staged {
            return Err(StoreError::Inconsistent(
                "received messages are not committed yet; commit them before a key update",
            ));
        }
        self.session
            .begin_key_update(request_peer_update)
            .map_err(|error| StoreError::Session(error.to_string()))?;
        let next = self.session.next_send_counter();
        let reservation = CounterReservation {
            epoch: self.session.send_epoch(),
            reserved_until: next
                .saturating_add(self.block)
                .min(self.session.hard_limit()),
        };
        // Poisoned until the commit is reported: the session in memory is
        // ahead of the store.
        self.poisoned = true;
        batch.put_session(&self.session.snapshot())?;
        batch.put_reservation(self.session.connection_id(), reservation);
        Ok(reservation)
    }

    /// The batch of [`DurableSession::stage_key_update`] was committed:
    /// seals the announcement to send (counter 0 of the new epoch, which
    /// the stored session already counts as used). An error leaves the new
    /// epoch in use without an announcement; the peer follows it with the
    /// first message of the epoch.
    pub fn key_update_committed(
        &mut self,
        reservation: CounterReservation,
    ) -> Result<KeyUpdate, StoreError> {
        self.poisoned = false;
        self.reservation = reservation;
        self.session
            .seal_key_update()
            .map_err(|error| StoreError::Session(error.to_string()))
    }

    /// Seals `plaintext`, first reserving counters durably if needed.
    pub fn seal<S: RawStore + ?Sized>(
        &mut self,
        store: &S,
        plaintext: &[u8],
    ) -> Result<EncryptedMessage, StoreError> {
        self.check()?;
        self.reserve(store)?;
        self.session
            .seal(plaintext)
            .map_err(|error| StoreError::Session(error.to_string()))
    }

    /// Seals `plaintext` in place, first reserving counters if needed.
    pub fn seal_vec<S: RawStore + ?Sized>(
        &mut self,
        store: &S,
        plaintext: Vec<u8>,
    ) -> Result<EncryptedMessage, StoreError> {
        self.check()?;
        self.reserve(store)?;
        self.session
            .seal_vec(plaintext)
            .map_err(|error| StoreError::Session(error.to_string()))
    }

    /// Moves the sending direction to the next epoch. The new epoch and its
    /// first reservation are durable before the announcement is returned.
    ///
    /// Refused while received messages are not committed (the snapshot it
    /// stores would mark them as seen before their inbox entries exist).
    pub fn update_sending_key<S: RawStore + ?Sized>(
        &mut self,
        store: &S,
        request_peer_update: bool,
    ) -> Result<KeyUpdate, StoreError> {
        let mut batch = WriteBatch::new();
        let reservation = self.stage_key_update(&mut batch, request_peer_update)?;
        // On failure nothing was sealed, and the session stays poisoned
        // (ahead of the store) until it is loaded again.
        store.commit(batch)?;
        self.key_update_committed(reservation)
    }

    /// Opens a message in memory only and adds its inbox entry to `batch`.
    /// Call [`DurableSession::stage`] and commit the batch before reporting
    /// the message anywhere. Lets a caller commit many sessions' messages
    /// in one transaction (group commit).
    pub fn open_into(
        &mut self,
        message: EncryptedMessage,
        batch: &mut WriteBatch,
    ) -> Result<InboxEntry, ReceiveError> {
        self.ready_to_receive()?;
        let (epoch, counter) = (message.epoch, message.counter);
        let plaintext = self.session.open(message)?;
        self.dirty = true;
        let entry = InboxEntry {
            sequence: 0,
            connection_id: self.session.connection_id().clone(),
            epoch,
            counter,
            plaintext: Zeroizing::new(plaintext),
        };
        batch.push_inbox(&entry);
        Ok(entry)
    }

    /// Opens a key update in memory only (see [`DurableSession::open_into`]).
    pub fn open_key_update_into(
        &mut self,
        update: KeyUpdate,
    ) -> Result<KeyUpdateReceived, ReceiveError> {
        self.ready_to_receive()?;
        let received = self.session.open_key_update(update)?;
        self.dirty = true;
        Ok(received)
    }

    fn ready_to_receive(&self) -> Result<(), ReceiveError> {
        if self.poisoned {
            Err(ReceiveError::Poisoned)
        } else if self.staged {
            Err(ReceiveError::Pending)
        } else {
            Ok(())
        }
    }

    /// Adds the session's snapshot to `batch` if anything changed since it
    /// was last stored. After committing the batch, call
    /// [`DurableSession::committed`]; if the commit failed,
    /// [`DurableSession::commit_failed`]. Until then the session takes no
    /// further message and no key update. (With nothing to store, nothing is
    /// staged and nothing waits.)
    pub fn stage(&mut self, batch: &mut WriteBatch) -> Result<(), StoreError> {
        self.check()?;
        if self.staged {
            return Err(StoreError::Inconsistent(
                "a staged batch is already waiting for committed() or commit_failed()",
            ));
        }
        if self.dirty {
            batch.put_session(&self.session.snapshot())?;
            // Only a staged snapshot can go stale; with nothing staged there
            // is nothing to wait for.
            self.staged = true;
        }
        Ok(())
    }

    /// The staged batch was committed.
    pub fn committed(&mut self) {
        self.staged = false;
        self.dirty = false;
    }

    /// The staged batch was not committed: memory is ahead of the store.
    pub fn commit_failed(&mut self) {
        self.staged = false;
        if self.dirty {
            self.poisoned = true;
        }
    }

    /// Opens `messages`, then commits the session and the opened messages'
    /// inbox entries in one transaction, and only then reports them.
    pub fn receive<S: RawStore + ?Sized>(
        &mut self,
        store: &S,
        messages: Vec<EncryptedMessage>,
    ) -> Result<Vec<Received>, StoreError> {
        self.check()?;
        if self.staged {
            return Err(StoreError::Inconsistent(
                "a staged batch is waiting for committed() or commit_failed()",
            ));
        }
        let mut batch = WriteBatch::new();
        let results: Vec<Received> = messages
            .into_iter()
            .map(|message| match self.open_into(message, &mut batch) {
                Ok(entry) => Received::Stored(entry),
                Err(error) => Received::Refused(error),
            })
            .collect();
        self.stage(&mut batch)?;
        if batch.is_empty() {
            return Ok(results);
        }
        match store.commit(batch) {
            Ok(committed) => {
                self.committed();
                let mut numbers = committed.inbox;
                let mut results = results;
                for result in &mut results {
                    if let Received::Stored(entry) = result {
                        entry.sequence = numbers.next().ok_or(StoreError::Inconsistent(
                            "the store numbered fewer inbox entries than were stored",
                        ))?;
                    }
                }
                Ok(results)
            }
            Err(error) => {
                self.commit_failed();
                Err(error)
            }
        }
    }
}
