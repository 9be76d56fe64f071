//! Time-shaped delivery: a user's quiet hours (in their IANA time zone, with a priority that
//! breaks through) and per-destination digests. Both are decided by the user avatar and
//! timed by its durable reminders; this module holds the pure parts: the settings, "is it
//! quiet now and until when", and how a digest reads.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Notification, NotificationId, Priority};

use crate::{Error, Result};

/// A user's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserSettings {
    /// IANA time zone name (`Europe/Berlin`); empty means UTC.
    pub time_zone: String,
    pub quiet_hours: Option<QuietHours>,
    /// When more items than this were held for one destination, they are released as one
    /// summary message instead of a burst.
    pub summarize_over: usize,
    /// Deliveries to destinations paused (IM `pause`) until this time (ms); `i64::MAX`:
    /// until `resume`. The quiet hours' breakthrough priority (default urgent) still passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<i64>,
}

impl Default for UserSettings {
    fn default() -> Self {
        Self {
            time_zone: String::new(),
            quiet_hours: None,
            summarize_over: summary_threshold(),
            paused_until: None,
        }
    }
}

/// Quiet hours: deliveries to destinations below `breakthrough` wait until `end`.
/// History and live streams are never held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local time of day, `HH:MM` or `HH:MM:SS`.
    pub start: String,
    pub end: String,
    /// This priority and above is delivered anyway (default: urgent).
    #[serde(default = "urgent")]
    pub breakthrough: Priority,
}

fn urgent() -> Priority {
    Priority::Urgent
}

fn summary_threshold() -> usize {
    5
}

impl UserSettings {
    pub fn validate(&self) -> Result<()> {
        self.zone()?;
        if self.summarize_over > 10_000 {
            return Err(Error::Invalid("summarize_over is at most 10000".into()));
        }
        if let Some(q) = &self.quiet_hours {
            let (s, e) = (parse_time(&q.start)?, parse_time(&q.end)?);
            if s == e {
                return Err(Error::Invalid(
                    "quiet_hours: start and end must differ".into(),
                ));
            }
        }
        Ok(())
    }

    fn zone(&self) -> Result<jiff::tz::TimeZone> {
        if self.time_zone.is_empty() {
            return Ok(jiff::tz::TimeZone::UTC);
        }
        jiff::tz::TimeZone::get(&self.time_zone).map_err(|_| {
            Error::Invalid(format!(
                "time_zone {:?} is not an IANA time zone name like Europe/Berlin",
                self.time_zone
            ))
        })
    }

    /// Until when an item of `priority` waits at `now_ms` (quiet hours or a pause), or
    /// `None` when it goes out now. `i64::MAX`: until the pause is lifted.
    pub fn hold_until(&self, priority: Priority, now_ms: i64) -> Option<i64> {
        let breakthrough = self
            .quiet_hours
            .as_ref()
            .map_or(Priority::Urgent, |q| q.breakthrough);
        if priority >= breakthrough {
            return None;
        }
        self.quiet_until(now_ms)
    }

    /// When quiet hours or a pause are on at `now_ms`: the time (ms) they end. `None` when
    /// not quiet.
    pub fn quiet_until(&self, now_ms: i64) -> Option<i64> {
        let paused = self.paused_until.filter(|&t| t > now_ms);
        match (self.quiet_hours_until(now_ms), paused) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn quiet_hours_until(&self, now_ms: i64) -> Option<i64> {
        let q = self.quiet_hours.as_ref()?;
        let (start, end) = (parse_time(&q.start).ok()?, parse_time(&q.end).ok()?);
        let tz = self.zone().ok()?;
        let now = jiff::Timestamp::from_millisecond(now_ms)
            .ok()?
            .to_zoned(tz.clone());
        let t = now.time();
        let quiet = if start < end {
            start <= t && t < end
        } else {
            t >= start || t < end
        };
        if !quiet {
            return None;
        }
        let mut until = now.date().to_datetime(end).to_zoned(tz).ok()?;
        if until.timestamp() <= now.timestamp() {
            until = until.checked_add(jiff::Span::new().days(1)).ok()?;
        }
        Some(until.timestamp().as_millisecond())
    }
}

impl UserSettings {
    /// `07:00 Europe/Berlin`: a time in the user's zone, for reasons shown to them.
    pub fn local(&self, ms: i64) -> String {
        if ms == i64::MAX {
            return "resumed".into();
        }
        let tz = self.zone().unwrap_or(jiff::tz::TimeZone::UTC);
        let name = if self.time_zone.is_empty() {
            "UTC"
        } else {
            &self.time_zone
        };
        match jiff::Timestamp::from_millisecond(ms) {
            Ok(t) => format!("{} {name}", t.to_zoned(tz).strftime("%H:%M")),
            Err(_) => ms.to_string(),
        }
    }
}

/// A per-user JSON document the user avatar owns (settings, rules): its table and column.
#[derive(Debug, Clone, Copy)]
pub enum UserDoc {
    Settings,
    Rules,
}

impl UserDoc {
    fn table(self) -> (&'static str, &'static str, &'static str) {
        match self {
            UserDoc::Settings => ("user_settings", "settings", "settings_changed"),
            UserDoc::Rules => ("user_rules", "rules", "rules_changed"),
        }
    }

    /// Reads the document (its default when none was saved, or it no longer parses).
    pub fn load<T: serde::de::DeserializeOwned + Default>(
        self,
        c: &tidings_store::rusqlite::Connection,
        user_id: i64,
    ) -> tidings_store::rusqlite::Result<T> {
        use tidings_store::rusqlite::OptionalExtension as _;
        let (table, column, _) = self.table();
        let raw: Option<String> = c
            .query_row(
                &format!("SELECT {column} FROM {table} WHERE user_id = ?1"),
                [user_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(raw
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default())
    }

    /// Writes the document (JSON) and its change event.
    pub fn save(
        self,
        c: &tidings_store::rusqlite::Connection,
        user_id: i64,
        json: &str,
    ) -> tidings_store::rusqlite::Result<()> {
        let (table, column, event) = self.table();
        c.execute(
            &format!(
                "INSERT INTO {table}(user_id, {column}) VALUES (?1, ?2)
                 ON CONFLICT(user_id) DO UPDATE SET {column} = excluded.{column}"
            ),
            tidings_store::rusqlite::params![user_id, json],
        )?;
        c.execute(
            "INSERT INTO events(time, kind, user_id) VALUES (?1, ?2, ?3)",
            tidings_store::rusqlite::params![tidings_store::now_ms(), event, user_id],
        )?;
        Ok(())
    }
}

/// Where an item waits instead of going out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Quiet hours (table `held`).
    Quiet,
    /// A destination's digest (table `digest_items`).
    Digest,
}

/// Writes items that wait (and their `held` delivery records). Returns, per table, whether
/// it held nothing of this user (or destination) before: then a reminder must be set.
pub fn store_waiting(
    c: &tidings_store::rusqlite::Connection,
    user_id: i64,
    n: &Notification,
    rows: &[(Wait, String, String, String)],
) -> tidings_store::rusqlite::Result<Vec<bool>> {
    use tidings_store::rusqlite::params;
    let body = serde_json::to_string(n)
        .map_err(|e| tidings_store::rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let now = tidings_store::now_ms();
    let mut first = Vec::with_capacity(rows.len());
    for (wait, dest, kind, reason) in rows {
        let (before, insert_sql): (i64, _) = match wait {
            Wait::Quiet => (
                c.prepare_cached("SELECT count(*) FROM held WHERE user_id = ?1")?
                    .query_row([user_id], |r| r.get(0))?,
                "INSERT OR IGNORE INTO held(user_id, destination_id, notification_id, body, held_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            ),
            Wait::Digest => (
                c.prepare_cached("SELECT count(*) FROM digest_items WHERE destination_id = ?1")?
                    .query_row([dest], |r| r.get(0))?,
                "INSERT OR IGNORE INTO digest_items(user_id, destination_id, notification_id, body, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            ),
        };
        first.push(before == 0);
        c.prepare_cached(insert_sql)?
            .execute(params![user_id, dest, n.id.as_str(), body, now])?;
        c.prepare_cached(
            "INSERT OR IGNORE INTO deliveries(notification_id, user_id, destination_id, kind, status, reason, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'held', ?5, ?6)",
        )?
        .execute(params![n.id.as_str(), user_id, dest, kind, reason, now])?;
    }
    Ok(first)
}

/// Marks the records of items summed up in a digest.
pub fn mark_digested(
    c: &tidings_store::rusqlite::Connection,
    user_id: i64,
    destination_id: &str,
    members: &[String],
    digest_id: &str,
) -> tidings_store::rusqlite::Result<()> {
    let now = tidings_store::now_ms();
    let mut stmt = c.prepare_cached(
        "UPDATE deliveries SET status = 'digested', updated_at = ?4,
                attempts = json_insert(attempts, '$[#]', json_object('at', ?4, 'ok', json('true'), 'digest', ?5))
         WHERE notification_id = ?1 AND user_id = ?2 AND destination_id = ?3 AND status = 'held'",
    )?;
    for m in members {
        stmt.execute(tidings_store::rusqlite::params![
            m,
            user_id,
            destination_id,
            now,
            digest_id
        ])?;
    }
    Ok(())
}

fn parse_time(s: &str) -> Result<jiff::civil::Time> {
    let ok = matches!(s.len(), 5 | 8) && s.as_bytes()[2] == b':';
    ok.then(|| s.parse::<jiff::civil::Time>().ok())
        .flatten()
        .ok_or_else(|| Error::Invalid(format!("{s:?} is not a time of day like 22:00")))
}

/// A destination's digest: items up to `max_priority` are collected and sent as one
/// message every `every`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestOptions {
    /// Window, e.g. `1h`, `30m`, `1d` (at least 1s).
    pub every: String,
    /// Items of this priority and below go into the digest; above it they are sent at
    /// once (default: default).
    #[serde(default)]
    pub max_priority: Priority,
}

impl DigestOptions {
    pub fn window(&self) -> Result<Duration> {
        parse_span("digest.every", &self.every)
    }
}

/// Longest window or delay in delivery policy: a week.
pub const MAX_SPAN: Duration = Duration::from_secs(7 * 86400);

/// A window or delay as users write it: a number and `s`, `m`, `h` or `d` (`30s`, `10m`,
/// `2h`, `1d`), between 1 s and [`MAX_SPAN`]. `field` names it in the error.
pub fn parse_span(field: &str, s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let bad = || {
        Error::Invalid(format!(
            "{field} {s:?}: use a number and s, m, h or d, like 10m"
        ))
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86400),
        _ => return Err(bad()),
    };
    let d = Duration::from_secs(secs);
    if d.is_zero() || d > MAX_SPAN {
        return Err(Error::Invalid(format!("{field} {s:?}: between 1s and 7d")));
    }
    Ok(d)
}

/// Most items listed in one digest; the rest are counted.
pub const DIGEST_LINES: usize = 50;

/// One message summing up `items` (oldest first).
pub fn digest(items: &[Notification], what: &str, now_ms: i64) -> Notification {
    let mut lines = Vec::new();
    for n in items.iter().take(DIGEST_LINES) {
        let head = n
            .title
            .clone()
            .unwrap_or_else(|| n.message.lines().next().unwrap_or("").to_owned());
        let from = n
            .topic
            .clone()
            .unwrap_or_else(|| n.author.clone().unwrap_or_else(|| n.source.clone()));
        lines.push(format!(
            "• {} ({from})",
            tidings_core::notification::truncate_chars(&head, 200)
        ));
    }
    if items.len() > DIGEST_LINES {
        lines.push(format!("… and {} more", items.len() - DIGEST_LINES));
    }
    let priority = items
        .iter()
        .map(|n| n.priority)
        .max()
        .unwrap_or(Priority::Default);
    Notification {
        id: NotificationId::new(now_ms),
        time: now_ms / 1000,
        event: "message".into(),
        source: "tidings:digest".into(),
        topic: None,
        title: Some(format!(
            "{} {} {what}",
            items.len(),
            if items.len() == 1 {
                "notification"
            } else {
                "notifications"
            }
        )),
        message: lines.join("\n"),
        priority,
        tags: vec!["digest".into()],
        click: None,
        actions: Vec::new(),
        author: Some("tidings".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn settings(tz: &str, start: &str, end: &str) -> UserSettings {
        UserSettings {
            time_zone: tz.into(),
            quiet_hours: Some(QuietHours {
                start: start.into(),
                end: end.into(),
                breakthrough: Priority::Urgent,
            }),
            summarize_over: 5,
            paused_until: None,
        }
    }

    #[test]
    fn quiet_hours_across_midnight_in_the_users_zone() {
        let s = settings("Europe/Berlin", "22:00", "07:00");
        s.validate().unwrap();
        // 21:30 UTC is 22:30 in Berlin (winter, UTC+1): quiet until 07:00 Berlin = 06:00 UTC.
        assert_eq!(
            s.quiet_until(at("2026-01-10T21:30:00Z")),
            Some(at("2026-01-11T06:00:00Z"))
        );
        // 03:00 Berlin: still quiet, until the same morning.
        assert_eq!(
            s.quiet_until(at("2026-01-11T02:00:00Z")),
            Some(at("2026-01-11T06:00:00Z"))
        );
        // Noon: not quiet.
        assert_eq!(s.quiet_until(at("2026-01-11T11:00:00Z")), None);
        // Summer time (UTC+2): 07:00 Berlin is 05:00 UTC.
        assert_eq!(
            s.quiet_until(at("2026-07-01T01:00:00Z")),
            Some(at("2026-07-01T05:00:00Z"))
        );
    }

    #[test]
    fn quiet_hours_within_a_day_and_bad_settings() {
        let s = settings("", "13:00:00", "13:00:30");
        assert_eq!(
            s.quiet_until(at("2026-01-10T13:00:10Z")),
            Some(at("2026-01-10T13:00:30Z"))
        );
        assert_eq!(s.quiet_until(at("2026-01-10T13:00:30Z")), None);
        assert!(
            settings("Mars/Olympus", "22:00", "07:00")
                .validate()
                .is_err()
        );
        assert!(settings("", "25:00", "07:00").validate().is_err());
        assert!(settings("", "7:00", "08:00").validate().is_err());
        assert!(settings("", "07:00", "07:00").validate().is_err());
        assert!(UserSettings::default().quiet_until(0).is_none());
    }

    #[test]
    fn digest_windows_and_text() {
        let d = |e: &str| DigestOptions {
            every: e.into(),
            max_priority: Priority::Default,
        };
        assert_eq!(d("1h").window().unwrap(), Duration::from_secs(3600));
        assert_eq!(d("2s").window().unwrap(), Duration::from_secs(2));
        assert!(d("0s").window().is_err());
        assert!(d("8d").window().is_err());
        assert!(d("1 hour").window().is_err());
        let mk = |t: &str, p: Priority| Notification {
            id: NotificationId::new(1),
            time: 1,
            event: "message".into(),
            source: "topic:x".into(),
            topic: Some("x".into()),
            title: Some(t.into()),
            message: "m".into(),
            priority: p,
            tags: vec![],
            click: None,
            actions: vec![],
            author: None,
        };
        let items: Vec<_> = (0..60)
            .map(|i| mk(&format!("item {i}"), Priority::Low))
            .chain([mk("last", Priority::High)])
            .collect();
        let n = digest(&items, "in the last hour", 5_000);
        assert_eq!(
            n.title.as_deref(),
            Some("61 notifications in the last hour")
        );
        assert!(n.message.starts_with("• item 0 (x)\n"), "{}", n.message);
        assert!(n.message.ends_with("… and 11 more"), "{}", n.message);
        assert_eq!(n.priority, Priority::High);
    }
}
