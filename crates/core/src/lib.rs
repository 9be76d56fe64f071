//! Types shared by every stage of tidings: the notification as it travels from an edge to a
//! user's history, its priority, tags and actions, ids and the names of events.
//!
//! Layout:
//! - [`notification`]: [`Notification`], [`Priority`], [`Action`] and their parsing from the
//!   ntfy-compatible header/query forms (I/O-free, tested without sockets).
//! - [`ids`]: notification ids (time-sortable, random), topic names, avatar ids.
//! - [`filter`]: per-subscription filters (keywords, minimum priority).
//! - [`event`]: the kinds of immutable events appended to the archive.
//! - [`secret`]: random tokens, their hashes and constant-time comparison.

pub mod event;
pub mod filter;
pub mod ids;
pub mod notification;
pub mod secret;

pub use event::EventKind;
pub use filter::Filter;
pub use ids::{NotificationId, TopicName};
pub use notification::{Action, Notification, Priority};

/// Errors from parsing user input into core types. Each becomes a 400 at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("invalid priority {0:?}: use 1-5 or min, low, default, high, urgent")]
    Priority(String),
    #[error("invalid topic name {0:?}: use 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    TopicName(String),
    #[error("topic name {0:?} is reserved")]
    ReservedTopic(String),
    #[error("invalid actions: {0}")]
    Actions(String),
    #[error("invalid tag {0:?}: tags are 1-64 characters without commas")]
    Tag(String),
    #[error("too many tags: at most {0}")]
    TooManyTags(usize),
    #[error("{field} is too long: at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("invalid click URL {0:?}: use an http(s), mailto or tel URL")]
    Click(String),
    #[error("invalid filter: {0}")]
    Filter(String),
}
