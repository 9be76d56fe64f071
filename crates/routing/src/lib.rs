//! Routing: the avatars that own tidings' data and decide where each notification goes.
//!
//! Layout:
//! - [`source`]: the source avatar (one per topic, feed, mailbox): subscribers and their
//!   filters; writes each notification once and sends one message per matching subscriber.
//! - [`user`]: the user avatar (one per user): history, acks, subscriptions, presence; hands
//!   every delivery to the agents.
//! - [`agents`]: delivery agents, one module per kind (`history`, `live`, `outbox`). Adding a channel is
//!   a new module plus one line in [`agents::default_agents`].
//! - [`destinations`]: a user's destinations (webhooks, mail, SMS, chat): options, sealed
//!   credentials, verification codes; owned by the user avatar, sent to by `agents::outbox`.
//! - [`discover`]: subscribe-time checks of a feed URL (fetchable, or the feed a page
//!   advertises).
//! - [`directory`]: users, tokens, sessions, topics and grants, cached in memory so that no
//!   request waits on the store to authenticate or authorize.
//! - [`history`]: read-only queries over a user's history for the API.
//! - [`im`]: IM commands (`help`, `list`, `sub`, `pause`, `ack`, `reply`...) and how a
//!   notification reads as an instant message.
//! - [`ingest`]: the payloads that travel through the durable ingest queue, and the handler
//!   that hands them to source avatars.
//! - [`private_feed`]: private Atom feeds' secrets (create/rotate, list, delete, resolve).
//! - [`replies`]: reply addresses of delivered mail, checked when a reply arrives.
//! - [`rules`]: routing rules (ordered steps, escalations), pure planning.
//! - [`schedule`]: quiet hours and digests (settings, windows, the digest message).
//! - [`xmpp`]: the XMPP agent: the one connection, presence to avatars, IM in and out.
//! - [`services`]: the shared environment every avatar sees.

pub mod agents;
pub mod destinations;
pub mod directory;
pub mod discover;
pub mod history;
pub mod im;
pub mod ingest;
pub mod private_feed;
pub mod replies;
pub mod rules;
pub mod schedule;
pub mod services;
pub mod source;
pub mod user;
pub mod xmpp;

pub use directory::Directory;
pub use services::{Services, ServicesConfig, WebSubConfig};

/// Errors of routing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] tidings_store::Error),
    #[error(transparent)]
    Avatar(#[from] tidings_bus::avatars::Error),
    #[error(transparent)]
    Input(#[from] tidings_core::InputError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("too soon: {0}")]
    TooSoon(String),
}

impl From<tidings_store::rusqlite::Error> for Error {
    fn from(e: tidings_store::rusqlite::Error) -> Self {
        Error::Store(tidings_store::Error::Sqlite(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
