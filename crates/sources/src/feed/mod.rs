//! Feed polling, as a state machine with no I/O: what a feed source remembers between
//! polls (validators, dedupe memory, error streak, schedule) and what each poll's outcome
//! means (which items are new, when to poll next, whether subscribers must hear that the
//! feed is failing, back, moved or gone).
//!
//! The source avatar owns one [`FeedState`], feeds it [`Outcome`]s from the fetcher and
//! parser, and acts on the [`Transition`]s it returns. Fetching, parsing and delivering are
//! elsewhere; so is WebSub, which feeds pushed documents through the same
//! [`FeedState::on_outcome`].
//!
//! Scheduling: the interval adapts to how often the feed really changes (half the average
//! time between changes, within the operator's bounds), never below what the server asks
//! for (RSS `ttl`, `Cache-Control: max-age`, `Expires`, `Retry-After`), with jitter so that
//! thousands of feeds added at once do not fire together, and capped exponential backoff
//! on errors.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Operator bounds of the schedule.
#[derive(Debug, Clone)]
pub struct SchedulePolicy {
    /// Interval of a feed whose rhythm is not known yet.
    pub default_interval: Duration,
    /// No feed is polled more often (except a WebSub push, which is not a poll).
    pub min_interval: Duration,
    /// No live feed is polled less often.
    pub max_interval: Duration,
    /// Interval while a WebSub subscription is active: polling is then only a safety net.
    pub websub_interval: Duration,
    /// Upper bound of the error backoff.
    pub max_backoff: Duration,
    /// Consecutive failed polls after which subscribers are told the feed is failing.
    pub failing_after: u32,
    /// Jitter as a fraction of the interval (0.1 = ±10 %).
    pub jitter: f64,
    /// Item ids remembered per feed; older ones are forgotten first.
    pub memory: usize,
}

impl Default for SchedulePolicy {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(300),
            min_interval: Duration::from_secs(60),
            max_interval: Duration::from_secs(6 * 3600),
            websub_interval: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(6 * 3600),
            failing_after: 3,
            jitter: 0.1,
            memory: 5000,
        }
    }
}

/// Server hints about freshness, gathered from the response and the document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheHints {
    /// RSS `<ttl>`, minutes.
    pub ttl_minutes: Option<u32>,
    /// `Cache-Control: max-age`, seconds.
    pub max_age: Option<u64>,
    /// `Expires`, unix seconds.
    pub expires: Option<i64>,
}

/// What one poll (or push) came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 304: nothing changed.
    NotModified { hints: CacheHints },
    /// A document was parsed. `item_ids` in document order; `etag`/`last_modified` are the
    /// new validators; `warnings` non-empty when it was recovered from malformed input.
    Fetched {
        item_ids: Vec<String>,
        etag: Option<String>,
        last_modified: Option<String>,
        hints: CacheHints,
        title: Option<String>,
        warnings: Vec<String>,
    },
    /// A 301/308 somewhere on the way: the feed lives at `url` from now on.
    Moved { url: String },
    /// 410 Gone: the feed is over.
    Gone,
    /// Any other failure: an HTTP status (with `Retry-After`) or a transport error.
    Failed {
        status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// Something subscribers must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Failing since `failing_after` polls; told once per failure streak.
    Failing { reason: String },
    /// Working again after a notified failure.
    Recovered,
    /// 410: polling stopped.
    Gone,
    /// Permanently moved; polling follows.
    Moved { url: String },
}

/// What the avatar should do after an outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Indices (into the outcome's `item_ids`) of the items to notify, oldest first.
    pub new_items: Vec<usize>,
    pub notice: Option<Notice>,
    /// Unix milliseconds of the next poll; `None` when polling has stopped.
    pub next_poll: Option<i64>,
}

/// The poll state of one feed. Serialized with the source avatar's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FeedState {
    pub url: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    /// Unix ms of the last poll attempt.
    #[serde(default)]
    pub last_fetch: Option<i64>,
    /// "ok", "not_modified", "recovered_with_warnings", "error", "gone".
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub next_poll: Option<i64>,
    #[serde(default)]
    pub consecutive_errors: u32,
    #[serde(default)]
    pub failing_notified: bool,
    #[serde(default)]
    pub gone: bool,
    /// Items notified since the source began.
    #[serde(default)]
    pub items_notified: u64,
    /// Whether the first successful fetch (the baseline) happened.
    #[serde(default)]
    pub baselined: bool,
    /// Remembered item ids, oldest first.
    #[serde(default)]
    pub seen: VecDeque<String>,
    /// Smoothed seconds between changes of the feed.
    #[serde(default)]
    pub change_interval: Option<f64>,
    #[serde(default)]
    pub last_change: Option<i64>,
    /// Set while a WebSub subscription is active (lease end, unix ms).
    #[serde(default)]
    pub websub_until: Option<i64>,
    #[serde(skip)]
    seen_set: HashSet<String>,
}

/// Public view of the poll state, for the subscriptions API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PollStatus {
    pub url: String,
    pub title: Option<String>,
    pub status: String,
    pub last_fetch: Option<i64>,
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
    pub next_poll: Option<i64>,
    pub consecutive_errors: u32,
    pub items_seen: usize,
    pub items_notified: u64,
    pub websub: bool,
}

/// Canonical form of a feed URL: what makes two subscriptions the same source.
/// Lowercase scheme and host, no default port, no fragment, `/` for an empty path.
pub fn normalize_url(u: &url::Url) -> String {
    // Parsing already lowercases the scheme and host and drops a default port.
    let mut u = u.clone();
    u.set_fragment(None);
    u.to_string()
}

/// The source id of a feed or page URL: `<kind>:<first 16 hex of sha256(url)>`.
pub fn source_id(kind: &str, normalized_url: &str, extra: &str) -> String {
    let d = Sha256::new()
        .chain_update(normalized_url.as_bytes())
        .chain_update([0])
        .chain_update(extra.as_bytes())
        .finalize();
    format!("{kind}:{}", &hex::encode(d)[..16])
}

impl FeedState {
    pub fn new(url: String) -> Self {
        Self {
            url,
            status: "new".into(),
            ..Default::default()
        }
    }

    /// Rebuilds the lookup set after deserializing.
    pub fn restore(&mut self) {
        self.seen_set = self.seen.iter().cloned().collect();
    }

    pub fn status(&self) -> PollStatus {
        PollStatus {
            url: self.url.clone(),
            title: self.title.clone(),
            status: self.status.clone(),
            last_fetch: self.last_fetch,
            last_error: self.last_error.clone(),
            warnings: self.warnings.clone(),
            next_poll: self.next_poll,
            consecutive_errors: self.consecutive_errors,
            items_seen: self.seen.len(),
            items_notified: self.items_notified,
            websub: self.websub_until.is_some(),
        }
    }

    pub fn has_seen(&self, id: &str) -> bool {
        self.seen_set.contains(id)
    }

    /// The ids of a document that would be new, without remembering them.
    pub fn unseen<'a>(&self, ids: &'a [String]) -> Vec<&'a str> {
        ids.iter()
            .filter(|i| !self.seen_set.contains(i.as_str()))
            .map(String::as_str)
            .collect()
    }

    fn remember(&mut self, id: &str, memory: usize) {
        if self.seen_set.insert(id.to_owned()) {
            self.seen.push_back(id.to_owned());
            while self.seen.len() > memory.max(1) {
                if let Some(old) = self.seen.pop_front() {
                    self.seen_set.remove(&old);
                }
            }
        }
    }

    /// Applies one outcome at `now` (unix ms). `backfill` is how many of the newest items
    /// to notify at the baseline; `jitter_unit` is a number in [0, 1) (random in
    /// production, fixed in tests).
    pub fn on_outcome(
        &mut self,
        outcome: Outcome,
        now: i64,
        policy: &SchedulePolicy,
        backfill: usize,
        jitter_unit: f64,
    ) -> Transition {
        self.last_fetch = Some(now);
        let mut notice = None;
        let mut new_items = Vec::new();
        let hints = match outcome {
            Outcome::NotModified { hints } => {
                notice = self.succeeded();
                self.status = "not_modified".into();
                hints
            }
            Outcome::Fetched {
                item_ids,
                etag,
                last_modified,
                hints,
                title,
                warnings,
            } => {
                notice = self.succeeded();
                self.etag = etag;
                self.last_modified = last_modified;
                if title.is_some() {
                    self.title = title;
                }
                self.status = if warnings.is_empty() {
                    "ok".into()
                } else {
                    "recovered_with_warnings".into()
                };
                self.warnings = warnings;
                new_items = self.new_items(&item_ids, backfill, policy.memory, now);
                hints
            }
            Outcome::Moved { url } => {
                self.url = url.clone();
                // The validators belonged to the old address.
                self.etag = None;
                self.last_modified = None;
                return Transition {
                    new_items,
                    notice: Some(Notice::Moved { url }),
                    // Poll the new address at once.
                    next_poll: self.schedule_at(now),
                };
            }
            Outcome::Gone => {
                self.gone = true;
                self.status = "gone".into();
                self.last_error = Some("the feed answered 410 Gone; polling stopped".into());
                self.next_poll = None;
                return Transition {
                    new_items,
                    notice: Some(Notice::Gone),
                    next_poll: None,
                };
            }
            Outcome::Failed {
                status,
                reason,
                retry_after,
            } => {
                self.consecutive_errors = self.consecutive_errors.saturating_add(1);
                self.status = "error".into();
                self.last_error = Some(match status {
                    Some(s) => format!("HTTP {s}: {reason}"),
                    None => reason.clone(),
                });
                if self.consecutive_errors >= policy.failing_after && !self.failing_notified {
                    self.failing_notified = true;
                    notice = Some(Notice::Failing {
                        reason: self.last_error.clone().unwrap_or_default(),
                    });
                }
                let backoff = policy
                    .min_interval
                    .saturating_mul(1u32 << self.consecutive_errors.min(16))
                    .min(policy.max_backoff);
                // The server's Retry-After wins over our own backoff (but not below the minimum).
                let wait = retry_after.map_or(backoff, |r| r.max(policy.min_interval));
                // Jitter never brings a poll before the server's Retry-After: only later.
                let next = if retry_after.is_some() {
                    now + jittered(wait, policy.jitter, 0.5 + jitter_unit / 2.0)
                } else {
                    now + jittered(wait, policy.jitter, jitter_unit)
                };
                self.next_poll = Some(next);
                return Transition {
                    new_items,
                    notice,
                    next_poll: Some(next),
                };
            }
        };
        let interval = self.interval(&hints, now, policy);
        let next = now + jittered(interval, policy.jitter, jitter_unit);
        self.next_poll = Some(next);
        Transition {
            new_items,
            notice,
            next_poll: Some(next),
        }
    }

    /// Clears the error streak; reports recovery if subscribers were told of a failure.
    fn succeeded(&mut self) -> Option<Notice> {
        self.consecutive_errors = 0;
        self.last_error = None;
        if std::mem::take(&mut self.failing_notified) {
            Some(Notice::Recovered)
        } else {
            None
        }
    }

    fn schedule_at(&mut self, at: i64) -> Option<i64> {
        self.next_poll = Some(at);
        Some(at)
    }

    /// Which of `ids` to notify, remembering all of them.
    fn new_items(
        &mut self,
        ids: &[String],
        backfill: usize,
        memory: usize,
        now: i64,
    ) -> Vec<usize> {
        let unseen: Vec<usize> = (0..ids.len())
            .filter(|&i| !self.seen_set.contains(&ids[i]))
            .collect();
        // Feeds list newest first, mostly; without dates to go by, document order is the
        // best guess, so "oldest first" is the reverse of it.
        let mut chosen: Vec<usize> = if self.baselined {
            unseen.clone()
        } else {
            // Baseline: remember what is there, notify only the newest `backfill`.
            unseen.iter().copied().take(backfill).collect()
        };
        chosen.reverse();
        // Remember oldest first, so the newest are the last to be forgotten.
        for &i in unseen.iter().rev() {
            self.remember(&ids[i], memory);
        }
        if self.baselined && !chosen.is_empty() {
            if let Some(last) = self.last_change {
                let gap = ((now - last).max(0) as f64) / 1000.0;
                // Exponentially weighted: recent rhythm counts most.
                self.change_interval = Some(match self.change_interval {
                    Some(avg) => avg * 0.7 + gap * 0.3,
                    None => gap,
                });
            }
            self.last_change = Some(now);
        }
        if !self.baselined {
            self.baselined = true;
            self.last_change = Some(now);
        }
        self.items_notified += chosen.len() as u64;
        chosen
    }

    fn interval(&self, hints: &CacheHints, now: i64, policy: &SchedulePolicy) -> Duration {
        let adaptive = match self.change_interval {
            Some(avg) => Duration::from_secs_f64((avg / 2.0).max(0.0)),
            None => policy.default_interval,
        };
        let mut interval = if self.websub_until.is_some_and(|t| t > now) {
            policy.websub_interval
        } else {
            adaptive
        };
        // The server's own idea of freshness is a floor: polling sooner only wastes both sides.
        let mut floor = Duration::ZERO;
        if let Some(ttl) = hints.ttl_minutes {
            floor = floor.max(Duration::from_secs(u64::from(ttl) * 60));
        }
        if let Some(a) = hints.max_age {
            floor = floor.max(Duration::from_secs(a));
        }
        if let Some(e) = hints.expires {
            let secs = e.saturating_sub(now / 1000);
            if secs > 0 {
                floor = floor.max(Duration::from_secs(secs as u64));
            }
        }
        interval = interval.max(floor);
        interval.clamp(
            policy.min_interval,
            policy.max_interval.max(policy.min_interval),
        )
    }
}

fn jittered(d: Duration, jitter: f64, unit: f64) -> i64 {
    let ms = d.as_millis() as f64;
    let j = (unit.clamp(0.0, 1.0) * 2.0 - 1.0) * jitter.clamp(0.0, 0.5);
    (ms * (1.0 + j)).round().max(0.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn fetched(v: &[&str]) -> Outcome {
        Outcome::Fetched {
            item_ids: ids(v),
            etag: Some("\"e\"".into()),
            last_modified: None,
            hints: CacheHints::default(),
            title: Some("T".into()),
            warnings: vec![],
        }
    }

    fn policy() -> SchedulePolicy {
        SchedulePolicy {
            jitter: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn baseline_notifies_nothing_then_only_new_items_once() {
        let p = policy();
        let mut s = FeedState::new("https://x.example/feed".into());
        let t = s.on_outcome(fetched(&["c", "b", "a"]), 0, &p, 0, 0.5);
        assert!(t.new_items.is_empty());
        assert_eq!(t.next_poll, Some(300_000));
        // A new item at the top, and a reordering: only the new one.
        let t = s.on_outcome(fetched(&["d", "a", "c", "b"]), MIN, &p, 0, 0.5);
        assert_eq!(t.new_items, vec![0]);
        // Re-sent: nothing.
        let t = s.on_outcome(fetched(&["d", "c"]), 2 * MIN, &p, 0, 0.5);
        assert!(t.new_items.is_empty());
        // Two new ones come out oldest first.
        let t = s.on_outcome(fetched(&["f", "e", "d"]), 3 * MIN, &p, 0, 0.5);
        assert_eq!(t.new_items, vec![1, 0]);
        assert_eq!(s.items_notified, 3);
    }

    #[test]
    fn backfill_notifies_the_newest_n_at_baseline() {
        let p = policy();
        let mut s = FeedState::new("u".into());
        let t = s.on_outcome(fetched(&["c", "b", "a"]), 0, &p, 2, 0.5);
        assert_eq!(t.new_items, vec![1, 0]);
    }

    #[test]
    fn memory_is_bounded_and_survives_serialization() {
        let p = SchedulePolicy {
            memory: 3,
            jitter: 0.0,
            ..Default::default()
        };
        let mut s = FeedState::new("u".into());
        s.on_outcome(fetched(&["e", "d", "c", "b", "a"]), 0, &p, 0, 0.5);
        assert_eq!(s.seen.len(), 3);
        assert!(s.has_seen("e") && !s.has_seen("a"));
        let json = serde_json::to_string(&s).unwrap();
        let mut back: FeedState = serde_json::from_str(&json).unwrap();
        back.restore();
        assert!(back.has_seen("d"));
        assert_eq!(back.unseen(&ids(&["d", "z"])), vec!["z"]);
    }

    #[test]
    fn errors_back_off_and_notify_once_then_recover() {
        let p = policy();
        let mut s = FeedState::new("u".into());
        s.on_outcome(fetched(&["a"]), 0, &p, 0, 0.5);
        let fail = || Outcome::Failed {
            status: Some(500),
            reason: "server error".into(),
            retry_after: None,
        };
        let t1 = s.on_outcome(fail(), 0, &p, 0, 0.5);
        let t2 = s.on_outcome(fail(), 0, &p, 0, 0.5);
        assert!(t2.next_poll > t1.next_poll, "backoff grows");
        assert!(t1.notice.is_none() && t2.notice.is_none());
        let t3 = s.on_outcome(fail(), 0, &p, 0, 0.5);
        assert!(
            matches!(t3.notice, Some(Notice::Failing { ref reason }) if reason.contains("500"))
        );
        for _ in 0..20 {
            let t = s.on_outcome(fail(), 0, &p, 0, 0.5);
            assert!(t.notice.is_none(), "failing is told once");
            assert!(t.next_poll.unwrap() <= p.max_backoff.as_millis() as i64);
        }
        let t = s.on_outcome(
            Outcome::NotModified {
                hints: CacheHints::default(),
            },
            0,
            &p,
            0,
            0.5,
        );
        assert_eq!(t.notice, Some(Notice::Recovered));
        assert_eq!(s.consecutive_errors, 0);
    }

    #[test]
    fn retry_after_and_freshness_hints_are_honoured() {
        let p = policy();
        let mut s = FeedState::new("u".into());
        let t = s.on_outcome(
            Outcome::Failed {
                status: Some(429),
                reason: "too many".into(),
                retry_after: Some(Duration::from_secs(900)),
            },
            0,
            &p,
            0,
            0.5,
        );
        assert_eq!(t.next_poll, Some(900_000));
        // With jitter, never sooner than Retry-After.
        let jittery = SchedulePolicy::default();
        for unit in [0.0, 0.3, 0.99] {
            let t = s.on_outcome(
                Outcome::Failed {
                    status: Some(503),
                    reason: "busy".into(),
                    retry_after: Some(Duration::from_secs(900)),
                },
                0,
                &jittery,
                0,
                unit,
            );
            assert!(t.next_poll.unwrap() >= 900_000, "{unit}");
        }
        let hint = |h: CacheHints| Outcome::NotModified { hints: h };
        let t = s.on_outcome(
            hint(CacheHints {
                ttl_minutes: Some(60),
                ..Default::default()
            }),
            0,
            &p,
            0,
            0.5,
        );
        assert_eq!(t.next_poll, Some(3_600_000));
        let t = s.on_outcome(
            hint(CacheHints {
                max_age: Some(1200),
                ..Default::default()
            }),
            0,
            &p,
            0,
            0.5,
        );
        assert_eq!(t.next_poll, Some(1_200_000));
        let t = s.on_outcome(
            hint(CacheHints {
                expires: Some(10),
                ..Default::default()
            }),
            0,
            &p,
            0,
            0.5,
        );
        assert_eq!(
            t.next_poll,
            Some(300_000),
            "an expiry sooner than the interval changes nothing"
        );
        // Never below the operator's minimum.
        let fast = SchedulePolicy {
            default_interval: Duration::from_secs(1),
            ..policy()
        };
        let t = s.on_outcome(hint(CacheHints::default()), 0, &fast, 0, 0.5);
        assert_eq!(t.next_poll, Some(60_000));
    }

    #[test]
    fn interval_adapts_to_the_feed_rhythm() {
        let p = policy();
        let mut s = FeedState::new("u".into());
        s.on_outcome(fetched(&["a"]), 0, &p, 0, 0.5);
        // A change every 40 minutes: poll every ~20.
        let mut t = None;
        for k in 1..6 {
            let id = format!("i{k}");
            t = Some(s.on_outcome(fetched(&[id.as_str()]), k * 40 * MIN, &p, 0, 0.5));
        }
        let t = t.unwrap();
        let interval = t.next_poll.unwrap() - 5 * 40 * MIN;
        assert!((19 * MIN..=21 * MIN).contains(&interval), "{interval}");
    }

    #[test]
    fn jitter_spreads_polls() {
        let p = SchedulePolicy::default();
        let mut a = FeedState::new("u".into());
        let mut b = FeedState::new("u".into());
        let ta = a.on_outcome(fetched(&["x"]), 0, &p, 0, 0.0);
        let tb = b.on_outcome(fetched(&["x"]), 0, &p, 0, 0.99);
        assert_eq!(ta.next_poll, Some(270_000));
        assert!(tb.next_poll.unwrap() > 325_000);
    }

    #[test]
    fn gone_stops_and_moved_follows() {
        let p = policy();
        let mut s = FeedState::new("https://old.example/f".into());
        let t = s.on_outcome(
            Outcome::Moved {
                url: "https://new.example/f".into(),
            },
            5,
            &p,
            0,
            0.5,
        );
        assert_eq!(
            t.notice,
            Some(Notice::Moved {
                url: "https://new.example/f".into()
            })
        );
        assert_eq!(t.next_poll, Some(5));
        assert_eq!(s.url, "https://new.example/f");
        let t = s.on_outcome(Outcome::Gone, 10, &p, 0, 0.5);
        assert_eq!((t.notice, t.next_poll), (Some(Notice::Gone), None));
        assert!(s.gone);
    }

    #[test]
    fn urls_normalize() {
        let u = url::Url::parse("HTTPS://Example.ORG:443/feed#top").unwrap();
        assert_eq!(normalize_url(&u), "https://example.org/feed");
        let u = url::Url::parse("http://127.0.0.1:8097/feed").unwrap();
        assert_eq!(
            normalize_url(&u),
            "http://127.0.0.1:8097/feed",
            "a non-default port stays"
        );
        let a = source_id("feed", "https://example.org/feed", "");
        assert_eq!(a, source_id("feed", "https://example.org/feed", ""));
        assert_ne!(a, source_id("page", "https://example.org/feed", "li"));
        assert!(a.starts_with("feed:") && a.len() == 21);
    }
}
