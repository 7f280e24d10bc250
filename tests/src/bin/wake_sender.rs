//! The sending side of the wake-up crash test: a real node (the runtime,
//! with its actors) on a redb store, whose connection actor stops idle
//! after every message and is woken by the next one, so that most sends
//! wake a stopped actor. Its transport appends every envelope to the wire
//! file before it reports the send done.
//!
//! ```text
//! wake_sender setup STORE              # a connection, handshake done
//! wake_sender run STORE WIRE [--until N]
//! ```
//!
//! `run` reports `progress N` on stdout after each message (N: envelopes on
//! the wire), and `done N` at `--until`; a run that reaches `--until` then
//! prints `wakes W contiguous C`: of the W sends that woke a stopped actor,
//! C sealed with the counter right after the previous message's (no
//! reservation was skipped: the actor went on where the stopped one let
//! go).
//!
//! Every [`RESTART_EVERY`] messages the node shuts down cleanly and starts
//! again in the same process, on the same store: the send after that is a
//! wake-up too, which must go on at the next counter from the resume point
//! the shutdown stored (and a kill can land anywhere in between).

use async_trait::async_trait;
use confidant_actors::{
    ConnectionState, Delivery, DeliveryId, Event, MemoryRelay, Node, NodeConfig, Outgoing,
    RelayInvitation, Transport, TransportError,
};
use confidant_core::ConnectionId;
use confidant_core::wire::{self, envelope::Body};
use confidant_store::{MemoryStore, RedbStore, StoreOptions};
use confidant_tests::crash::{self, Report};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The actors' idle timeout: short, so that they stop between messages.
const IDLE: Duration = Duration::from_millis(10);

/// How often the node shuts down cleanly and starts again.
const RESTART_EVERY: u64 = 5;

type Error = Box<dyn std::error::Error>;

/// Appends each envelope to the wire file (one write each) before the send
/// returns; never delivers anything.
struct WireTransport {
    path: PathBuf,
    written: AtomicUsize,
    /// (epoch, counter) of the last message written.
    last: Mutex<Option<(u32, u64)>>,
}

#[async_trait]
impl Transport for WireTransport {
    async fn create_invitation(&self) -> Result<RelayInvitation, TransportError> {
        Err(TransportError::Refused(
            "the wire takes no invitations".into(),
        ))
    }

    async fn join(&self, _: &str) -> Result<ConnectionId, TransportError> {
        Err(TransportError::Refused("the wire takes no joins".into()))
    }

    async fn send(&self, envelopes: Vec<Outgoing>) -> Result<(), TransportError> {
        for outgoing in envelopes {
            let body = wire::decode_envelope(&outgoing.envelope, usize::MAX)
                .map_err(|error| TransportError::Refused(error.to_string()))?;
            if let Body::Message(message) = &body
                && let Ok(mut last) = self.last.lock()
            {
                *last = Some((message.epoch, message.counter));
            }
            crash::append(&self.path, body)
                .map_err(|error| TransportError::Unavailable(error.to_string()))?;
            self.written.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn receive(&self, _: usize) -> Result<Vec<Delivery>, TransportError> {
        std::future::pending().await
    }

    async fn acknowledge(&self, _: Vec<DeliveryId>) -> Result<(), TransportError> {
        Ok(())
    }

    async fn release(&self, _: Vec<DeliveryId>) -> Result<(), TransportError> {
        Ok(())
    }
}

fn config() -> NodeConfig {
    NodeConfig::default()
        .with_idle_timeout(IDLE)
        .with_session(crash::config())
        .with_reservation_block(crash::RESERVATION_BLOCK)
}

async fn start(store: Arc<RedbStore>, transport: impl Transport) -> Result<Node, Error> {
    let (node, _events) = Node::builder()
        .store(store)
        .suites(crash::registry())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(transport)
        .config(config())
        .start()
        .await?;
    Ok(node)
}

/// A connection between a node on `store_path` and a throwaway peer.
async fn setup(store_path: &Path) -> Result<(), Error> {
    let relay = MemoryRelay::new();
    let store = Arc::new(RedbStore::create(store_path, StoreOptions::default())?);
    let (peer, mut peer_events) = Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .suites(crash::registry())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport("peer"))
        .config(config())
        .start()
        .await?;
    let (node, mut events) = Node::builder()
        .store(store)
        .suites(crash::registry())
        .key_agreement(confidant_x3dh::X3dh::default())
        .transport(relay.transport("sender"))
        .config(config())
        .start()
        .await?;
    let invitation = peer.create_invitation().await?;
    node.accept_invitation(&invitation, "hello").await?;
    let connected = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.next().await {
            if matches!(event, Event::Connected { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    if connected != Ok(true) {
        return Err("the handshake did not finish".into());
    }
    // The peer took the greeting: the initial message need not be resent.
    let _ = tokio::time::timeout(Duration::from_secs(60), peer_events.next()).await;
    node.shutdown().await?;
    peer.shutdown().await?;
    Ok(())
}

async fn run(store_path: &Path, wire_path: &Path, until: Option<usize>) -> Result<(), Error> {
    // A frame half-written when the last run was killed never reached the
    // relay.
    crash::repair_wire(wire_path)?;
    let written = crash::read_wire(wire_path)?.len();
    let store = Arc::new(RedbStore::open(store_path, StoreOptions::default())?);
    let transport = Arc::new(WireTransport {
        path: wire_path.to_owned(),
        written: AtomicUsize::new(written),
        last: Mutex::new(None),
    });
    let mut node = start(Arc::clone(&store), ForwardTo(Arc::clone(&transport))).await?;
    let connection = node
        .connections()
        .await?
        .into_iter()
        .find(|info| info.state == ConnectionState::Established)
        .ok_or("no established connection in the store")?
        .connection_id;
    let (mut wakes, mut contiguous) = (0usize, 0usize);
    let pid = std::process::id();
    let mut sequence = 0u64;
    while until.is_none_or(|until| transport.written.load(Ordering::SeqCst) < until) {
        if sequence % RESTART_EVERY == RESTART_EVERY - 1 {
            node.shutdown().await?;
            node = start(Arc::clone(&store), ForwardTo(Arc::clone(&transport))).await?;
        }
        // Wait (bounded) until the connection's actor has stopped idle.
        let mut stopped = false;
        for _ in 0..500 {
            if node.active_connections().await? == 0 {
                stopped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let before = *transport.last.lock().map_err(|_| "poisoned")?;
        node.send(&connection, format!("message {pid}-{sequence}"))
            .await?;
        sequence += 1;
        let after = *transport.last.lock().map_err(|_| "poisoned")?;
        // (A key update between the two moves to a new epoch: not counted.)
        if stopped
            && let (Some(before), Some(after)) = (before, after)
            && before.0 == after.0
        {
            wakes += 1;
            contiguous += usize::from(after.1 == before.1 + 1);
        }
        crash::report(Report::Progress(transport.written.load(Ordering::SeqCst)))?;
    }
    crash::report(Report::Done(transport.written.load(Ordering::SeqCst)))?;
    println!("wakes {wakes} contiguous {contiguous}");
    node.shutdown().await?;
    Ok(())
}

/// The node owns its transport; the run keeps a handle to read counts.
struct ForwardTo(Arc<WireTransport>);

#[async_trait]
impl Transport for ForwardTo {
    async fn create_invitation(&self) -> Result<RelayInvitation, TransportError> {
        self.0.create_invitation().await
    }
    async fn join(&self, token: &str) -> Result<ConnectionId, TransportError> {
        self.0.join(token).await
    }
    async fn send(&self, envelopes: Vec<Outgoing>) -> Result<(), TransportError> {
        self.0.send(envelopes).await
    }
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, TransportError> {
        self.0.receive(max).await
    }
    async fn acknowledge(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        self.0.acknowledge(ids).await
    }
    async fn release(&self, ids: Vec<DeliveryId>) -> Result<(), TransportError> {
        self.0.release(ids).await
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: wake_sender setup STORE | wake_sender run STORE WIRE [--until N]";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.as_slice() {
        [command, store] if command == "setup" => runtime.block_on(setup(Path::new(store))),
        [command, store, wire] if command == "run" => {
            runtime.block_on(run(Path::new(store), Path::new(wire), None))
        }
        [command, store, wire, flag, until] if command == "run" && flag == "--until" => {
            runtime.block_on(run(Path::new(store), Path::new(wire), Some(until.parse()?)))
        }
        _ => Err(usage.into()),
    }
}
