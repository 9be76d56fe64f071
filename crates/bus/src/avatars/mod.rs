//! The avatar runtime: virtual actors addressed by id (design.md, "Avatars are virtual
//! actors"). A [`Runtime<A>`] serves one kind of avatar. [`Runtime::tell`] and
//! [`Runtime::ask`] reach an avatar whether or not it is in memory: the first message
//! activates it ([`Avatar::activate`] loads its state), an idle timeout passivates it
//! ([`Avatar::passivate`] flushes it), and at most one activation per id exists at any time.
//! Each activation is its own tokio task with a bounded mailbox, so one avatar handles its
//! messages one at a time in send order, a full mailbox pushes back on its senders only, and
//! a panicking handler restarts that avatar from its stored state without touching others.
//! Durable reminders ([`Context::set_reminder`]) live in the store's `reminders` table and
//! reactivate their avatar when due, across restarts.
//!
//! What it does not do: it is not a durable queue (a message accepted by `tell` lives in
//! memory until handled; durable inputs come from the ingest queue, which redelivers what a
//! crash or a panic lost), it does not persist avatar state for you (the avatar owns its
//! write-behind), and it only knows local silos: in a cluster, routing a message to the node
//! that owns a silo sits in front of `tell`, using [`Runtime::silo_of`].
//!
//! Layout: `runtime` holds the handle, `tell`/`ask`, shutdown and the activation task;
//! `registry` the sharded id → activation map that enforces one activation per id;
//! `context` what a handler sees; `reminders` the reminder table and its loop.

mod context;
mod registry;
mod reminders;
mod runtime;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

pub use context::Context;
pub use runtime::Runtime;

/// The error type avatars return from [`Avatar::activate`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One kind of avatar. A value of the type is the in-memory state of one activation.
///
/// The runtime calls these methods from the avatar's own task, never concurrently for one id.
pub trait Avatar: Sized + Send + 'static {
    type Msg: Send + 'static;
    /// Shared services (store handles, other runtimes, configuration), handed to every
    /// activation through [`Context::env`].
    type Env: Send + Sync + 'static;
    /// Short kind name used in metrics and reminders: "user", "source".
    const KIND: &'static str;

    /// Load state from the store. Called on activation and again after a handler panic. An
    /// error is retried with backoff while messages wait in the mailbox.
    fn activate(
        id: &str,
        cx: &Context<Self>,
    ) -> impl Future<Output = Result<Self, BoxError>> + Send;

    /// Handle one message. A panic here drops the message and restarts the avatar.
    fn handle(&mut self, msg: Self::Msg, cx: &Context<Self>) -> impl Future<Output = ()> + Send;

    /// A durable reminder of this avatar is due. The reminder row is deleted once this
    /// returns (unless it was set again meanwhile), so a crash before that fires it again.
    fn on_reminder(
        &mut self,
        name: String,
        payload: String,
        cx: &Context<Self>,
    ) -> impl Future<Output = ()> + Send;

    /// Flush write-behind state; called before passivation and at shutdown.
    fn passivate(&mut self, cx: &Context<Self>) -> impl Future<Output = ()> + Send;
}

/// Tuning of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of silos (`silo = hash(id) mod silos`); also the number of registry shards.
    pub silos: usize,
    /// An avatar with no message for this long is passivated.
    pub idle_timeout: Duration,
    /// Capacity of each avatar's mailbox; `tell` waits while it is full.
    pub mailbox: usize,
    /// First delay before retrying a failed [`Avatar::activate`]; doubles on each failure.
    pub activate_backoff_min: Duration,
    /// Upper bound of that delay.
    pub activate_backoff_max: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            silos: 16,
            idle_timeout: Duration::from_secs(5 * 60),
            mailbox: 1024,
            activate_backoff_min: Duration::from_millis(100),
            activate_backoff_max: Duration::from_secs(10),
        }
    }
}

/// Counters of a [`Runtime`] since it was created, for tests and status pages. The same
/// numbers are exported as metrics labelled with the avatar kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Successful calls of [`Avatar::activate`], including restarts after a panic.
    pub activations: u64,
    /// Failed (erroring or panicking) calls of [`Avatar::activate`].
    pub activation_failures: u64,
    /// Activations that ended: idle passivation or shutdown.
    pub passivations: u64,
    /// Panics caught in `handle`, `on_reminder` or `passivate`.
    pub panics: u64,
    /// Activations currently registered (activating, active or passivating).
    pub active: usize,
    /// Messages sent but not yet received, over all avatars of the runtime.
    pub mailbox_depth: i64,
}

/// Errors of the avatar bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ask` got no answer in time (the message may still be handled later).
    #[error("timed out waiting for the avatar")]
    Timeout,
    /// The avatar dropped the reply sender without answering (it panicked, or ignored it).
    #[error("the avatar dropped the request without answering")]
    Dropped,
    /// The runtime is shut down and accepts no more messages.
    #[error("the avatar runtime is shut down")]
    ShutDown,
    /// An avatar tried to wait on itself: `ask` to its own id, or `tell` to its own id while
    /// its mailbox is full or it is passivating. Waiting would never end.
    #[error("an avatar cannot wait on its own mailbox")]
    WouldDeadlock,
    /// Called outside a tokio runtime, so no avatar task can be spawned.
    #[error("no tokio runtime to run the avatar on")]
    NoRuntime,
    #[error(transparent)]
    Store(#[from] tidings_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
