//! The two buses of tidings (see design.md, "Three stages, two buses").
//!
//! - [`queue`]: the durable store-and-forward ingest queue. Edges append and answer only once
//!   the item is durable; a dispatcher hands each item to its avatar with an [`ack::Ack`] and
//!   deletes it only when every effect is durable, redelivering on failure or restart.
//! - [`avatars`]: the avatar bus: virtual actors addressed by id, with `tell`, `ask`,
//!   passivation and durable reminders.
//! - [`ack`]: acknowledgements that can be shared across a fan-out: an item is done when
//!   every share is acked, and failed if any share is dropped or nacked.
//!
//! Embedded mode runs both buses in-process over the SQLite store; the seams
//! ([`queue::IngestQueue`], the avatar runtime's `tell`/`ask`) are where a NATS JetStream
//! implementation plugs in for cluster mode.

pub mod ack;
pub mod avatars;
pub mod queue;
