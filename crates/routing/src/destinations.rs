//! Destinations: the places besides history and the live stream where a user's deliveries
//! go (a webhook, an address, a phone, a chat room). The user avatar owns them: it keeps the
//! list in memory, writes every change through, and picks the destinations of each delivery.
//! The wire side of each kind is `tidings_sinks`; the durable per-destination queue that
//! sends to them is [`crate::agents::outbox`].
//!
//! A destination's config, credentials included, is stored sealed with the data dir's key
//! and shown by the API only in redacted form. Destinations that reach a third party (an
//! email address, a phone) take no deliveries until the code sent to them was entered, so
//! nobody can aim tidings at someone else's inbox or phone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidings_core::secret::{constant_time_eq, hash_secret};
use tidings_core::{Notification, Priority};
use tidings_sinks::DestinationConfig;
use tidings_store::rusqlite::{self, Connection, OptionalExtension as _};
use tidings_store::{SecretBox, now_ms};

use crate::{Error, Result};

/// Most destinations one user may have.
pub const MAX_DESTINATIONS: usize = 50;
/// Longest destination name.
pub const MAX_NAME: usize = 64;
/// How long a verification code is valid.
pub const CODE_TTL_MS: i64 = 15 * 60 * 1000;
/// Wrong codes accepted before the code is void and a new one must be sent.
pub const MAX_CODE_ATTEMPTS: i64 = 5;
/// Least time between two codes sent to one destination.
pub const CODE_RESEND_MS: i64 = 60 * 1000;

/// What a user may tune on a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationOptions {
    /// Disabled destinations take no new deliveries (what is queued still goes out).
    pub enabled: bool,
    /// Items below this priority are not sent here.
    pub min_priority: Priority,
    /// Only items from these subscriptions (ids); empty means all.
    pub subscriptions: Vec<String>,
    /// Collect items up to a priority and send them as one message per window.
    pub digest: Option<crate::schedule::DigestOptions>,
}

impl Default for DestinationOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            min_priority: Priority::Min,
            subscriptions: Vec::new(),
            digest: None,
        }
    }
}

impl DestinationOptions {
    pub fn validate(&self) -> Result<()> {
        if self.subscriptions.len() > 100 {
            return Err(Error::Invalid(
                "a destination names at most 100 subscriptions".into(),
            ));
        }
        if let Some(d) = &self.digest {
            d.window()?;
        }
        Ok(())
    }
}

/// One destination of one user.
#[derive(Debug, Clone)]
pub struct Destination {
    pub id: String,
    pub user_id: i64,
    pub name: String,
    pub kind: String,
    /// `Err` when the sealed config cannot be opened (the data dir's key changed).
    pub config: std::result::Result<DestinationConfig, String>,
    pub options: DestinationOptions,
    pub verified_at: Option<i64>,
    pub created_at: i64,
}

impl Destination {
    /// The digest window this item goes into, if it goes into one.
    pub fn digest_for(&self, n: &Notification) -> Option<std::time::Duration> {
        let d = self.options.digest.as_ref()?;
        (n.priority <= d.max_priority)
            .then(|| d.window().ok())
            .flatten()
    }

    /// Whether it needs a verification code entered before it takes deliveries.
    pub fn needs_verification(&self) -> bool {
        self.verified_at.is_none()
            && self
                .config
                .as_ref()
                .is_ok_and(DestinationConfig::needs_verification)
    }

    /// Why this destination takes `n` (from `subscription`), or `None` when it does not.
    pub fn accepts(&self, n: &Notification, subscription: Option<&str>) -> Option<String> {
        if !self.options.enabled || self.config.is_err() || self.needs_verification() {
            return None;
        }
        if n.priority < self.options.min_priority {
            return None;
        }
        if !self.options.subscriptions.is_empty()
            && !subscription.is_some_and(|s| self.options.subscriptions.iter().any(|x| x == s))
        {
            return None;
        }
        let mut why = format!(
            "destination {:?} takes priority {} and above",
            self.name,
            self.options.min_priority.name()
        );
        if let Some(s) = subscription.filter(|_| !self.options.subscriptions.is_empty()) {
            why.push_str(&format!(" from subscription {s}"));
        }
        Some(why)
    }

    /// The API's view: no credential ever appears in it.
    pub fn view(&self) -> Value {
        let (address, config, error) = match &self.config {
            Ok(c) => (c.address(), c.redacted(), None),
            Err(e) => (String::new(), Value::Null, Some(e.clone())),
        };
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "address": address,
            "config": config,
            "options": self.options,
            "verified": !self.needs_verification(),
            "verified_at": self.verified_at,
            "created_at": self.created_at,
        });
        if let Some(e) = error {
            v["error"] = json!(e);
        }
        v
    }
}

/// Checks a destination name.
pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "a destination name is 1-{MAX_NAME} characters without control characters"
        )));
    }
    Ok(name.to_owned())
}

/// The stored form of a verification code: bound to its destination, so a code is useless
/// anywhere else.
pub fn code_hash(destination_id: &str, code: &str) -> String {
    hash_secret(&format!("{destination_id}:{}", code.trim()))
}

/// A new six-digit verification code.
pub fn new_code() -> String {
    use rand::Rng as _;
    format!("{:06}", rand::thread_rng().gen_range(0..1_000_000))
}

/// Reads every destination of a user (on the avatar's activation).
pub fn load_for_user(
    c: &Connection,
    secrets: &SecretBox,
    user_id: i64,
) -> rusqlite::Result<Vec<Destination>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, user_id, name, kind, config, options, verified_at, created_at
         FROM destinations WHERE user_id = ?1 ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([user_id], |r| from_row(r, secrets))?;
    rows.collect()
}

/// Reads one destination (the outbox worker, before each batch).
pub fn load(
    c: &Connection,
    secrets: &SecretBox,
    id: &str,
) -> rusqlite::Result<Option<Destination>> {
    c.prepare_cached(
        "SELECT id, user_id, name, kind, config, options, verified_at, created_at
         FROM destinations WHERE id = ?1",
    )?
    .query_row([id], |r| from_row(r, secrets))
    .optional()
}

fn from_row(r: &rusqlite::Row<'_>, secrets: &SecretBox) -> rusqlite::Result<Destination> {
    let sealed: Vec<u8> = r.get(4)?;
    let options: String = r.get(5)?;
    let config = secrets
        .open(&sealed)
        .map_err(|e| e.to_string())
        .and_then(|plain| {
            serde_json::from_slice::<DestinationConfig>(&plain)
                .map_err(|e| format!("stored config is not readable: {e}"))
        })
        .map_err(|e| format!("{e}; remove the destination and add it again"));
    Ok(Destination {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        kind: r.get(3)?,
        config,
        options: serde_json::from_str(&options).unwrap_or_default(),
        verified_at: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// Inserts a new destination (with the hash of its first code when it needs one).
pub fn insert(
    c: &Connection,
    secrets: &SecretBox,
    d: &Destination,
    code: Option<&str>,
) -> rusqlite::Result<()> {
    let config = d
        .config
        .as_ref()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.clone().into()))?;
    let sealed = secrets.seal(&serde_json::to_vec(config).unwrap_or_default());
    let options = serde_json::to_string(&d.options).unwrap_or_else(|_| "{}".into());
    let now = now_ms();
    c.execute(
        "INSERT INTO destinations(id, user_id, name, kind, config, options, verified_at,
                                  verify_hash, verify_expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        rusqlite::params![
            d.id,
            d.user_id,
            d.name,
            d.kind,
            sealed,
            options,
            d.verified_at,
            code.map(|k| code_hash(&d.id, k)),
            code.map(|_| now + CODE_TTL_MS),
            d.created_at
        ],
    )?;
    c.execute(
        "INSERT INTO events(time, kind, user_id, data)
         VALUES (?1, 'destination_added', ?2, json_object('destination', ?3, 'kind', ?4))",
        rusqlite::params![now, d.user_id, d.id, d.kind],
    )?;
    Ok(())
}

/// Writes a destination's name and options.
pub fn update(c: &Connection, d: &Destination) -> rusqlite::Result<()> {
    let options = serde_json::to_string(&d.options).unwrap_or_else(|_| "{}".into());
    c.execute(
        "UPDATE destinations SET name = ?2, options = ?3 WHERE id = ?1",
        rusqlite::params![d.id, d.name, options],
    )?;
    Ok(())
}

/// Removes a destination, its queue and its pending reply addresses. Queued deliveries are
/// recorded as dead ("destination removed"), so nothing disappears without a trace.
pub fn remove(c: &Connection, d: &Destination) -> rusqlite::Result<()> {
    let now = now_ms();
    c.execute("DELETE FROM destinations WHERE id = ?1", [&d.id])?;
    c.execute("DELETE FROM outbox WHERE destination_id = ?1", [&d.id])?;
    c.execute(
        "UPDATE deliveries SET status = 'dead', updated_at = ?2,
                attempts = json_insert(attempts, '$[#]',
                    json_object('at', ?2, 'ok', json('false'), 'error', 'destination removed'))
         WHERE destination_id = ?1 AND status IN ('queued', 'retrying', 'held')",
        rusqlite::params![d.id, now],
    )?;
    c.execute(
        "DELETE FROM reply_tokens WHERE destination_id = ?1",
        [&d.id],
    )?;
    c.execute(
        "INSERT INTO events(time, kind, user_id, data)
         VALUES (?1, 'destination_removed', ?2, json_object('destination', ?3))",
        rusqlite::params![now, d.user_id, d.id],
    )?;
    Ok(())
}

/// Result of entering a verification code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Verified(i64),
    Wrong { attempts_left: i64 },
    Expired,
    NoCode,
}

/// Checks a code against the stored hash; counts wrong attempts and voids the code after
/// [`MAX_CODE_ATTEMPTS`].
pub fn check_code(c: &Connection, d: &Destination, code: &str) -> rusqlite::Result<CodeCheck> {
    let row: Option<(Option<String>, Option<i64>, i64)> = c
        .query_row(
            "SELECT verify_hash, verify_expires_at, verify_attempts FROM destinations WHERE id = ?1",
            [&d.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((Some(hash), Some(expires), attempts)) = row else {
        return Ok(CodeCheck::NoCode);
    };
    let now = now_ms();
    if now > expires || attempts >= MAX_CODE_ATTEMPTS {
        return Ok(CodeCheck::Expired);
    }
    if constant_time_eq(hash.as_bytes(), code_hash(&d.id, code).as_bytes()) {
        c.execute(
            "UPDATE destinations SET verified_at = ?2, verify_hash = NULL,
                    verify_expires_at = NULL, verify_attempts = 0 WHERE id = ?1",
            rusqlite::params![d.id, now],
        )?;
        c.execute(
            "INSERT INTO events(time, kind, user_id, data)
             VALUES (?1, 'destination_verified', ?2, json_object('destination', ?3))",
            rusqlite::params![now, d.user_id, d.id],
        )?;
        return Ok(CodeCheck::Verified(now));
    }
    c.execute(
        "UPDATE destinations SET verify_attempts = verify_attempts + 1 WHERE id = ?1",
        [&d.id],
    )?;
    Ok(CodeCheck::Wrong {
        attempts_left: MAX_CODE_ATTEMPTS - attempts - 1,
    })
}

/// Stores a fresh code unless one was sent less than [`CODE_RESEND_MS`] ago; returns
/// whether it was stored.
pub fn store_new_code(c: &Connection, d: &Destination, code: &str) -> rusqlite::Result<bool> {
    let now = now_ms();
    let sent_recently: bool = c
        .query_row(
            "SELECT verify_expires_at FROM destinations WHERE id = ?1",
            [&d.id],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten()
        .is_some_and(|exp| exp - CODE_TTL_MS + CODE_RESEND_MS > now);
    if sent_recently {
        return Ok(false);
    }
    c.execute(
        "UPDATE destinations SET verify_hash = ?2, verify_expires_at = ?3, verify_attempts = 0
         WHERE id = ?1",
        rusqlite::params![d.id, code_hash(&d.id, code), now + CODE_TTL_MS],
    )?;
    Ok(true)
}

/// A destination in a delivery, with the reason it was chosen.
#[derive(Debug, Clone)]
pub struct Target {
    pub destination: Arc<Destination>,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::NotificationId;

    fn dest(config: DestinationConfig) -> Destination {
        Destination {
            id: "dst_1".into(),
            user_id: 1,
            name: "phone".into(),
            kind: config.kind().into(),
            config: Ok(config),
            options: DestinationOptions::default(),
            verified_at: None,
            created_at: 0,
        }
    }

    fn note(priority: Priority) -> Notification {
        Notification {
            id: NotificationId::new(1),
            time: 1,
            event: "message".into(),
            source: "topic:x".into(),
            topic: Some("x".into()),
            title: None,
            message: "hi".into(),
            priority,
            tags: vec![],
            click: None,
            actions: vec![],
            author: None,
        }
    }

    #[test]
    fn unverified_third_party_destinations_take_nothing() {
        let mut d = dest(DestinationConfig::parse_url("mailto:alice@example.org").unwrap());
        assert!(d.needs_verification());
        assert!(d.accepts(&note(Priority::Urgent), None).is_none());
        d.verified_at = Some(5);
        assert!(d.accepts(&note(Priority::Urgent), None).is_some());
        // A webhook needs no code.
        let w = dest(DestinationConfig::parse_url("json://hooks.example.org/x").unwrap());
        assert!(!w.needs_verification());
        assert!(w.accepts(&note(Priority::Default), None).is_some());
    }

    #[test]
    fn options_narrow_what_a_destination_takes() {
        let mut d = dest(DestinationConfig::parse_url("json://hooks.example.org/x").unwrap());
        d.options.min_priority = Priority::High;
        assert!(d.accepts(&note(Priority::Default), None).is_none());
        let why = d.accepts(&note(Priority::Urgent), None).unwrap();
        assert!(why.contains("high"), "{why}");
        d.options.subscriptions = vec!["sub_a".into()];
        assert!(d.accepts(&note(Priority::Urgent), Some("sub_b")).is_none());
        assert!(d.accepts(&note(Priority::Urgent), None).is_none());
        assert!(d.accepts(&note(Priority::Urgent), Some("sub_a")).is_some());
        d.options.enabled = false;
        assert!(d.accepts(&note(Priority::Urgent), Some("sub_a")).is_none());
    }

    #[test]
    fn codes_are_bound_to_their_destination() {
        let code = new_code();
        assert_eq!(code.len(), 6);
        assert_ne!(code_hash("dst_1", &code), code_hash("dst_2", &code));
        assert_eq!(
            code_hash("dst_1", &code),
            code_hash("dst_1", &format!(" {code} "))
        );
        assert!(validate_name("  ").is_err());
        assert!(validate_name("bad\u{7}name").is_err());
        assert_eq!(validate_name(" Phone ").unwrap(), "Phone");
    }
}
