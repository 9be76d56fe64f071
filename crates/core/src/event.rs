//! Kinds of the immutable events appended to the archive where they happen.

/// What happened. Stored as its `as_str()` in the `events.kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Published,
    Routed,
    Delivered,
    Failed,
    Acked,
    Subscribed,
    Unsubscribed,
    PresenceChanged,
    UserCreated,
    UserRemoved,
    TokenCreated,
    TokenRevoked,
    TopicCreated,
    GrantChanged,
    DeadLettered,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Published => "published",
            EventKind::Routed => "routed",
            EventKind::Delivered => "delivered",
            EventKind::Failed => "failed",
            EventKind::Acked => "acked",
            EventKind::Subscribed => "subscribed",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::PresenceChanged => "presence_changed",
            EventKind::UserCreated => "user_created",
            EventKind::UserRemoved => "user_removed",
            EventKind::TokenCreated => "token_created",
            EventKind::TokenRevoked => "token_revoked",
            EventKind::TopicCreated => "topic_created",
            EventKind::GrantChanged => "grant_changed",
            EventKind::DeadLettered => "dead_lettered",
        }
    }
}
