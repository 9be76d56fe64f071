//! The durable ingest queue: every accepted input is appended here before the edge answers,
//! and stays until the avatar it is for has made all of its effects durable.
//!
//! What it does: durable append (group-committed with everything else), at-least-once
//! hand-off in append order to a handler with an [`Ack`](crate::ack::Ack), redelivery with
//! capped exponential backoff on nack, replay of everything unacknowledged after a crash,
//! and a dead-letter table after the last attempt. What it does not do: dedupe. Consumers
//! are idempotent (notification ids are fixed at the edge), which is cheaper than
//! exactly-once machinery and survives crashes at any point.
//!
//! [`IngestQueue`] is the seam; [`embedded::EmbeddedQueue`] keeps the queue in the SQLite
//! store. A cluster implementation appends to a JetStream stream instead.

pub mod embedded;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::ack::Ack;

pub use embedded::{DispatcherConfig, EmbeddedQueue};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One queued item as a handler sees it.
#[derive(Debug, Clone)]
pub struct Item {
    /// Position in the queue; increasing in append order.
    pub seq: i64,
    /// The avatar id the item is for (`source:topic:backups`).
    pub target: String,
    /// JSON payload, opaque to the queue.
    pub payload: String,
    /// Deliveries before this one.
    pub attempts: u32,
}

/// Receives items; must eventually answer each [`Ack`] (dropping it counts as a nack).
pub type Handler = Arc<dyn Fn(Item, Ack) -> BoxFuture<'static, ()> + Send + Sync>;

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] tidings_store::Error),
    #[error("the queue is closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Durable append: the one operation edges need.
pub trait IngestQueue: Send + Sync + 'static {
    /// Appends an item for `target`; returns its sequence number once it is durable.
    fn append(&self, target: String, payload: String) -> BoxFuture<'_, Result<i64>>;
}
