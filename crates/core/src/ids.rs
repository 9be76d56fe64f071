//! Identifiers.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::InputError;

/// A notification id: 48 bits of milliseconds then 52 random bits, in lowercase Crockford
/// base32 (20 characters); 52 bits keep collisions out of reach even at tens of thousands
/// of ids per millisecond across a cluster. Ids sort by creation time, and the id is fixed at the moment an
/// edge accepts the input, which makes it the dedupe key all the way to history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NotificationId(pub String);

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

impl NotificationId {
    pub fn new(now_ms: i64) -> Self {
        Self::from_parts(now_ms as u64, rand::thread_rng().r#gen::<u64>())
    }

    fn from_parts(ms: u64, rand: u64) -> Self {
        let v: u128 = ((ms as u128 & ((1 << 48) - 1)) << 52) | (rand as u128 & ((1 << 52) - 1));
        let mut out = [0u8; 20];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (19 - i);
            *slot = CROCKFORD[((v >> shift) & 31) as usize];
        }
        NotificationId(String::from_utf8_lossy(&out).into_owned())
    }

    /// A stable id derived from a key (a feed guid, a Message-ID): the same key gives the same id.
    pub fn derived(namespace: &str, key: &str) -> Self {
        use sha2::{Digest, Sha256};
        let d = Sha256::new()
            .chain_update(namespace.as_bytes())
            .chain_update([0u8])
            .chain_update(key.as_bytes())
            .finalize();
        let mut out = String::with_capacity(21);
        out.push('d');
        for b in d.iter().take(20) {
            out.push(CROCKFORD[(b & 31) as usize] as char);
        }
        NotificationId(out)
    }

    /// Accepts what [`NotificationId::new`] or [`NotificationId::derived`] produce.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (20..=21).contains(&s.len()) && s.bytes().all(|b| CROCKFORD.contains(&b));
        ok.then(|| NotificationId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names that cannot be topics because they are routes of the HTTP edge.
pub const RESERVED_TOPICS: &[&str] = &[
    "api",
    "healthz",
    "readyz",
    "metrics",
    "feeds",
    "signin",
    "login",
    "logout",
    "static",
    "assets",
    "docs",
    "app",
    "settings",
    "account",
    "admin",
    "v1",
    "json",
    "sse",
    "ws",
    "raw",
    "auth",
    "favicon.ico",
    "websub",
];

/// A validated topic name (ntfy's rule: 1-64 of `[-_A-Za-z0-9]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(InputError::TopicName(s.chars().take(80).collect()));
        }
        if RESERVED_TOPICS.iter().any(|r| r.eq_ignore_ascii_case(s)) {
            return Err(InputError::ReservedTopic(s.to_owned()));
        }
        Ok(TopicName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The source id of a topic: `topic:<name>`.
    pub fn source_id(&self) -> String {
        format!("topic:{}", self.0)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The avatar id of a user: `user:<id>`.
pub fn user_avatar(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// The avatar id of a source: `source:<source id>`.
pub fn source_avatar(source_id: &str) -> String {
    format!("source:{source_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let a = NotificationId::from_parts(1_000, u64::MAX);
        let b = NotificationId::from_parts(1_001, 0);
        assert!(a < b);
        assert_eq!(a.0.len(), 20);
        assert_eq!(NotificationId::parse(a.as_str()), Some(a.clone()));
        assert!(NotificationId::parse("not-an-id").is_none());
        let d = NotificationId::derived("feed", "guid-1");
        assert_eq!(d, NotificationId::derived("feed", "guid-1"));
        assert_ne!(d, NotificationId::derived("feed", "guid-2"));
        assert_eq!(NotificationId::parse(d.as_str()), Some(d));
    }

    #[test]
    fn topic_names() {
        assert!(TopicName::parse("backups").is_ok());
        assert!(TopicName::parse("a-b_C9").is_ok());
        assert!(TopicName::parse("").is_err());
        assert!(TopicName::parse("has space").is_err());
        assert!(TopicName::parse(&"x".repeat(65)).is_err());
        assert!(matches!(
            TopicName::parse("API"),
            Err(InputError::ReservedTopic(_))
        ));
    }
}
