//! An in-memory relay for tests and examples.
//!
//! [`MemoryRelay`] behaves like the connector as far as a node can tell:
//! single-use invitation tokens, connections between two parties, a mailbox
//! per party that keeps every envelope until its recipient acknowledges it.
//! Each party talks to it through its own [`MemoryTransport`]; a new
//! transport for the same party (a restarted node) receives again everything
//! that was not acknowledged.

use crate::transport::{
    Delivery, DeliveryId, Outgoing, Payload, RelayInvitation, Transport, TransportError,
};
use async_trait::async_trait;
use base64::Engine as _;
use confidant_core::ConnectionId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

#[derive(Default)]
struct Mailbox {
    /// Every unacknowledged delivery, by id (ids grow, so this is arrival
    /// order).
    pending: BTreeMap<u64, (ConnectionId, Payload)>,
    /// Handed out to the current transport and not yet acknowledged or
    /// released.
    in_flight: BTreeSet<u64>,
    /// Which transport instance is subscribed.
    generation: u64,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_connection: u64,
    mailboxes: HashMap<String, Mailbox>,
    /// Token → the party that created it.
    tokens: HashMap<String, String>,
    /// Connection → its two parties (inviter, joiner).
    connections: HashMap<ConnectionId, (String, String)>,
    delivered: u64,
}

/// An in-memory relay shared by every party's [`MemoryTransport`].
#[derive(Clone, Default)]
pub struct MemoryRelay {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRelay").finish_non_exhaustive()
    }
}

impl MemoryRelay {
    /// An empty relay.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder of the lock panicked:
        // every change below is a single insertion or removal.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A transport for `party`. Creating one for a party that already has
    /// one takes over its mailbox: everything unacknowledged is delivered
    /// again, as after a restart.
    pub fn transport(&self, party: &str) -> MemoryTransport {
        let mut state = self.lock();
        let mailbox = state.mailboxes.entry(party.to_owned()).or_default();
        mailbox.generation += 1;
        mailbox.in_flight.clear();
        mailbox.notify.notify_one();
        MemoryTransport {
            relay: self.clone(),
            party: party.to_owned(),
            generation: mailbox.generation,
            notify: Arc::clone(&mailbox.notify),
        }
    }

    /// How many deliveries wait for `party`'s acknowledgement.
    pub fn pending(&self, party: &str) -> usize {
        self.lock()
            .mailboxes
            .get(party)
            .map_or(0, |mailbox| mailbox.pending.len())
    }

    /// Throws away everything waiting for `party` (a relay that loses
    /// messages); returns how many.
    pub fn discard_pending(&self, party: &str) -> usize {
        let mut state = self.lock();
        state.mailboxes.get_mut(party).map_or(0, |mailbox| {
            let count = mailbox.pending.len();
            mailbox.pending.clear();
            mailbox.in_flight.clear();
            count
        })
    }

    /// How many deliveries the relay has handed out in total (redeliveries
    /// included).
    pub fn delivered(&self) -> u64 {
        self.lock().delivered
    }

    /// The number of connections.
    pub fn connections(&self) -> usize {
        self.lock().connections.len()
    }
}

/// One party's handle on a [`MemoryRelay`].
pub struct MemoryTransport {
    relay: MemoryRelay,
    party: String,
    generation: u64,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("party", &self.party)
            .finish_non_exhaustive()
    }
}

impl MemoryTransport {
    fn check_current(&self, state: &State) -> Result<(), TransportError> {
        match state.mailboxes.get(&self.party) {
            Some(mailbox) if mailbox.generation == self.generation => Ok(()),
            _ => Err(TransportError::Closed),
        }
    }
}

fn push(state: &mut State, party: &str, connection_id: ConnectionId, payload: Payload) {
    state.next_id += 1;
    let id = state.next_id;
    let mailbox = state.mailboxes.entry(party.to_owned()).or_default();
    mailbox.pending.insert(id, (connection_id, payload));
    mailbox.notify.notify_one();
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn create_invitation(&self) -> Result<RelayInvitation, TransportError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .map_err(|error| TransportError::Unavailable(format!("no randomness: {error}")))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let mut state = self.relay.lock();
        self.check_current(&state)?;
        state.tokens.insert(token.clone(), self.party.clone());
        Ok(RelayInvitation {
            relay: "memory".into(),
            token,
        })
    }

    async fn join(&self, token: &str) -> Result<ConnectionId, TransportError> {
        let mut state = self.relay.lock();
        self.check_current(&state)?;
        let inviter = state
            .tokens
            .remove(token)
            .ok_or_else(|| TransportError::Refused("unknown or already used token".into()))?;
        state.next_connection += 1;
        let connection_id = ConnectionId::new(format!("mem-{}", state.next_connection))
            .map_err(|error| TransportError::Refused(error.to_string()))?;
        state
            .connections
            .insert(connection_id.clone(), (inviter.clone(), self.party.clone()));
        push(
            &mut state,
            &inviter,
            connection_id.clone(),
            Payload::Joined {
                token: token.to_owned(),
            },
        );
        Ok(connection_id)
    }

    async fn send(&self, envelopes: Vec<Outgoing>) -> Result<(), TransportError> {
        let mut state = self.relay.lock();
        self.check_current(&state)?;
        // Check the whole batch first: all or nothing.
        let mut recipients = Vec::with_capacity(envelopes.len());
        for outgoing in &envelopes {
            let (inviter, joiner) =
                state
                    .connections
                    .get(&outgoing.connection_id)
                    .ok_or_else(|| {
                        TransportError::Refused(format!(
                            "unknown connection {}",
                            outgoing.connection_id
                        ))
                    })?;
            let recipient = if *inviter == self.party {
                joiner.clone()
            } else if *joiner == self.party {
                inviter.clone()
            } else {
                return Err(TransportError::Refused(format!(
                    "not a party of connection {}",
                    outgoing.connection_id
                )));
            };
            recipients.push(recipient);
        }
        for (outgoing, recipient) in envelopes.into_iter().zip(recipients) {
            push(
                &mut state,
                &recipient,
                outgoing.connection_id,
                Payload::Envelope(outgoing.envelope),
            );
        }
        Ok(())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError> {
        loop {
            // Register interest before looking, so a push between the look
            // and the wait is not missed.
            let notified = self.notify.notified();
            {
                let mut state = self.relay.lock();
                self.check_current(&state)?;
                let mailbox = state
                    .mailboxes
                    .get_mut(&self.party)
                    .ok_or(TransportError::Closed)?;
                let mut out = Vec::new();
                for (id, (connection_id, payload)) in &mailbox.pending {
                    if out.len() >= max.max(1) {
                        break;
                    }
                    if mailbox.in_flight.contains(id) {
                        continue;
                    }
                    out.push(Delivery {
                        id: DeliveryId(*id),
                        connection_id: connection_id.clone(),
                        payload: payload.clone(),
                    });
                }
                if !out.is_empty() {
                    for delivery in &out {
                        mailbox.in_flight.insert(delivery.id.0);
                    }
                    // More may be waiting for another receive.
                    mailbox.notify.notify_one();
                    state.delivered += out.len() as u64;
                    return Ok(out);
                }
            }
            notified.await;
        }
    }

    async fn acknowledge(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        let mut state = self.relay.lock();
        self.check_current(&state)?;
        if let Some(mailbox) = state.mailboxes.get_mut(&self.party) {
            for id in ids {
                mailbox.pending.remove(&id.0);
                mailbox.in_flight.remove(&id.0);
            }
        }
        Ok(())
    }

    async fn release(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        let mut state = self.relay.lock();
        self.check_current(&state)?;
        if let Some(mailbox) = state.mailboxes.get_mut(&self.party) {
            for id in ids {
                mailbox.in_flight.remove(&id.0);
            }
            mailbox.notify.notify_one();
        }
        Ok(())
    }
}
