//! What a node reports: the engine's [`Event`]s (messages among them) on
//! the node's [`Events`] stream, and what
//! [`Node::connections`](crate::Node::connections) lists.

pub use confidant_engine::event::{ConnectionInfo, ConnectionState, Event, IncomingMessage};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::sync::mpsc;

/// The node's events, in order. Messages are durable before they are
/// reported; the other events are not stored.
#[derive(Debug)]
pub struct Events {
    pub(crate) receiver: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the node is shut down.
    pub async fn next(&mut self) -> Option<Event> {
        self.receiver.recv().await
    }

    /// The next event if one is ready.
    pub fn try_next(&mut self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        self.receiver.poll_recv(cx)
    }
}
