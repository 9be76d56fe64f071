//! Web sources inside the source avatar: feeds (`feed:<hash>`) and watched pages
//! (`page:<hash>`). The avatar owns the poll state ([`FeedState`]); a durable reminder
//! named `poll` wakes it when the next poll is due; the fetch and the parse run in a task of
//! their own (the avatar keeps answering meanwhile) that tells the avatar the result.
//!
//! New items are not delivered from here: they are appended to the durable ingest queue as
//! ordinary publishes addressed to this same avatar, with ids derived from the item's
//! identity. From there they follow the path every notification takes (notification row,
//! filters, one delivery per matching subscriber, acks), and a crash between the append and
//! the saving of the poll state only means the items are found again and deduplicated by id.

use serde::{Deserialize, Serialize};
use tidings_core::notification::truncate_chars;
use tidings_core::{Notification, NotificationId, Priority};
use tidings_sources::feed::{CacheHints, FeedState, Notice, Outcome};
use tidings_sources::fetch::{FetchError, FetchRequest, FetchResponse, Fetcher};
use tidings_sources::websub;
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{Store, now_ms, rusqlite};

use crate::user::SourceSpec;

/// Longest message text taken from an item.
const MAX_MESSAGE_CHARS: usize = 4000;
const MAX_TITLE_CHARS: usize = 300;

/// What kind of web source, with what it needs to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebKind {
    Feed,
    Page { selector: String },
}

/// What is stored in `avatar_state` for a web source.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    kind: WebKind,
    state: FeedState,
    #[serde(default)]
    websub: Option<websub::Subscription>,
}

/// An item ready to become a notification.
#[derive(Debug, Clone)]
pub struct Draft {
    pub key: String,
    pub title: Option<String>,
    pub message: String,
    pub link: Option<String>,
    pub author: Option<String>,
    pub tags: Vec<String>,
}

/// What a fetch task reports back to the avatar.
#[derive(Debug)]
pub struct Fetched {
    pub outcome: Outcome,
    /// Drafts in document order, matching the outcome's `item_ids`.
    pub drafts: Vec<Draft>,
    /// Set when a permanent redirect (301/308) moved the source.
    pub moved_to: Option<String>,
    /// WebSub hubs the document or its Link headers advertise.
    pub hubs: Vec<String>,
    /// The topic URL to subscribe with (`rel="self"`).
    pub self_url: Option<String>,
}

pub struct WebSource {
    pub kind: WebKind,
    pub state: FeedState,
    pub fetching: bool,
    /// Newest items to notify at the baseline, the largest any subscriber asked for.
    pub backfill: usize,
    /// The WebSub subscription, when the feed has a hub and this server can be called back.
    pub websub: Option<websub::Subscription>,
}

impl WebSource {
    pub fn from_spec(spec: &SourceSpec) -> Option<WebSource> {
        let (kind, url, backfill) = match spec {
            SourceSpec::Topic { .. } | SourceSpec::Imap { .. } => return None,
            SourceSpec::Feed { url, backfill } => (WebKind::Feed, url, *backfill),
            SourceSpec::Page {
                url,
                selector,
                backfill,
            } => (
                WebKind::Page {
                    selector: selector.clone(),
                },
                url,
                *backfill,
            ),
        };
        Some(WebSource {
            kind,
            state: FeedState::new(url.clone()),
            fetching: false,
            backfill: backfill as usize,
            websub: None,
        })
    }

    /// Loads a source's stored state, or rebuilds it from a subscription that names it.
    pub async fn load(store: &Store, source_id: &str) -> tidings_store::Result<Option<WebSource>> {
        let id = source_id.to_owned();
        let (stored, spec): (Option<String>, Option<String>) = store
            .read(move |c| {
                let stored = c
                    .query_row(
                        "SELECT state FROM avatar_state WHERE avatar_id = ?1",
                        [format!("source:{id}")],
                        |r| r.get(0),
                    )
                    .optional()?;
                let spec = c
                    .query_row(
                        "SELECT source FROM subscriptions WHERE source_id = ?1 LIMIT 1",
                        [&id],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok((stored, spec))
            })
            .await?;
        if let Some(s) = stored.and_then(|s| serde_json::from_str::<Stored>(&s).ok()) {
            let mut state = s.state;
            state.restore();
            return Ok(Some(WebSource {
                kind: s.kind,
                state,
                fetching: false,
                backfill: 0,
                websub: s.websub,
            }));
        }
        Ok(spec
            .and_then(|s| serde_json::from_str::<SourceSpec>(&s).ok())
            .and_then(|s| WebSource::from_spec(&s)))
    }

    /// Writes the state behind (no waiting): a lost write only means items are found again
    /// and deduplicated by id.
    pub async fn save(&self, store: &Store, source_id: &str) {
        let stored = Stored {
            kind: self.kind.clone(),
            state: self.state.clone(),
            websub: self.websub.clone(),
        };
        let Ok(json) = serde_json::to_string(&stored) else {
            return;
        };
        let id = format!("source:{source_id}");
        let r = store
            .submit(
                move |c| {
                    c.prepare_cached(
                        "INSERT INTO avatar_state(avatar_id, state, updated_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT(avatar_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    )?
                    .execute(rusqlite::params![id, json, now_ms()])
                },
                |r| {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "poll state not saved");
                    }
                },
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "poll state not queued for saving");
        }
    }

    pub fn request(&self) -> FetchRequest {
        FetchRequest {
            url: self.state.url.clone(),
            etag: self.state.etag.clone(),
            last_modified: self.state.last_modified.clone(),
            accept: match self.kind {
                WebKind::Feed => {
                    "application/atom+xml, application/rss+xml, application/feed+json, application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
                }
                WebKind::Page { .. } => "text/html, application/xhtml+xml;q=0.9, */*;q=0.5",
            },
        }
    }
}

/// Fetches and parses one document. Runs in its own task; parsing runs on the blocking pool.
pub async fn fetch_and_parse(fetcher: &Fetcher, kind: WebKind, req: FetchRequest) -> Fetched {
    let resp = match fetcher.fetch(req).await {
        Ok(r) => r,
        Err(e) => return failed(None, fetch_error_text(&e), None),
    };
    // Only a leading run of permanent hops moves the source: a 301 to a 302 moves it to the
    // 301's target, not to wherever the temporary hop pointed.
    let moved_to = resp.permanent_redirect().map(str::to_owned);
    let hints = CacheHints {
        ttl_minutes: None,
        max_age: resp.cache_control_max_age,
        expires: resp.expires.and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64)
        }),
    };
    if resp.not_modified {
        return Fetched {
            outcome: Outcome::NotModified { hints },
            drafts: Vec::new(),
            moved_to,
            hubs: Vec::new(),
            self_url: None,
        };
    }
    match resp.status {
        410 => {
            return Fetched {
                outcome: Outcome::Gone,
                drafts: Vec::new(),
                moved_to: None,
                hubs: Vec::new(),
                self_url: None,
            };
        }
        200..=299 => {}
        s => {
            let reason = reqwest::StatusCode::from_u16(s)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("unexpected status")
                .to_owned();
            return failed(Some(s), reason, resp.retry_after);
        }
    }
    let link_hubs = resp.link_hub.clone();
    let link_self = resp.link_self.clone();
    let parsed = tokio::task::spawn_blocking(move || parse(kind, resp, hints)).await;
    match parsed {
        Ok(mut f) => {
            f.moved_to = moved_to;
            // HTTP Link headers take precedence over links in the document (WebSub §4).
            if !link_hubs.is_empty() {
                f.hubs = link_hubs;
            }
            if link_self.is_some() {
                f.self_url = link_self;
            }
            f
        }
        Err(e) => failed(None, format!("parser failed: {e}"), None),
    }
}

fn failed(
    status: Option<u16>,
    reason: String,
    retry_after: Option<std::time::Duration>,
) -> Fetched {
    Fetched {
        outcome: Outcome::Failed {
            status,
            reason,
            retry_after,
        },
        drafts: Vec::new(),
        moved_to: None,
        hubs: Vec::new(),
        self_url: None,
    }
}

/// The text subscribers see for a fetch error.
pub fn fetch_error_text(e: &FetchError) -> String {
    e.to_string()
}

/// Parses a document a WebSub hub pushed, as if it had been fetched from `url`. Pushed
/// content carries no validators, so the ones from the last poll stay.
pub fn parse_pushed(
    kind: WebKind,
    url: &str,
    body: Vec<u8>,
    content_type: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
) -> Fetched {
    let resp = FetchResponse {
        status: 200,
        final_url: url.to_owned(),
        redirects: Vec::new(),
        not_modified: false,
        etag,
        last_modified,
        content_type,
        content_location: None,
        cache_control_max_age: None,
        expires: None,
        retry_after: None,
        link_hub: Vec::new(),
        link_self: None,
        body,
    };
    parse(kind, resp, CacheHints::default())
}

fn parse(kind: WebKind, resp: FetchResponse, mut hints: CacheHints) -> Fetched {
    match kind {
        WebKind::Feed => {
            let parsed = tidings_feed::parse(tidings_feed::FeedInput {
                body: &resp.body,
                content_type: resp.content_type.as_deref(),
                url: Some(&resp.final_url),
                content_location: resp.content_location.as_deref(),
                content_language: None,
            });
            if parsed.items.is_empty() && matches!(parsed.format, tidings_feed::Format::Unknown) {
                let why = parsed.warnings.first().cloned().unwrap_or_default();
                return failed(
                    None,
                    format!("the document is not a feed this parser understands {why}")
                        .trim()
                        .to_owned(),
                    None,
                );
            }
            hints.ttl_minutes = parsed.feed.ttl;
            let feed_title = parsed
                .feed
                .title
                .as_deref()
                .map(tidings_feed::to_plain_text);
            let mut ids = Vec::with_capacity(parsed.items.len());
            let mut drafts = Vec::with_capacity(parsed.items.len());
            for item in &parsed.items {
                ids.push(item.id.clone());
                let title = item
                    .title
                    .as_deref()
                    .map(tidings_feed::to_plain_text)
                    .filter(|t| !t.is_empty())
                    .map(|t| truncate_chars(&t, MAX_TITLE_CHARS));
                let body = item
                    .summary
                    .as_deref()
                    .or(item.content.as_deref())
                    .map(tidings_feed::to_plain_text)
                    .unwrap_or_default();
                let link = item.link.clone().filter(|l| is_http(l));
                let message = if body.is_empty() {
                    title
                        .clone()
                        .or_else(|| link.clone())
                        .unwrap_or_else(|| "(new item)".into())
                } else {
                    truncate_chars(&body, MAX_MESSAGE_CHARS)
                };
                drafts.push(Draft {
                    key: item.id.clone(),
                    title,
                    message,
                    link,
                    author: item
                        .author
                        .clone()
                        .filter(|a| !a.trim().is_empty())
                        .or_else(|| feed_title.clone()),
                    tags: item
                        .categories
                        .iter()
                        .map(|c| {
                            c.replace(',', " ")
                                .trim()
                                .chars()
                                .take(64)
                                .collect::<String>()
                        })
                        .filter(|c| !c.is_empty())
                        .take(5)
                        .collect(),
                });
            }
            Fetched {
                outcome: Outcome::Fetched {
                    item_ids: ids,
                    etag: resp.etag.clone(),
                    last_modified: resp.last_modified.clone(),
                    hints,
                    title: feed_title,
                    warnings: parsed.warnings.clone(),
                },
                drafts,
                moved_to: None,
                hubs: parsed.feed.hubs.clone(),
                self_url: parsed.feed.self_url.clone(),
            }
        }
        WebKind::Page { selector } => {
            let items = match tidings_sources::page::extract(
                &resp.body,
                resp.content_type.as_deref(),
                &resp.final_url,
                &selector,
            ) {
                Ok(items) => items,
                Err(e) => return failed(None, e.to_string(), None),
            };
            let ids = items.iter().map(|i| i.id.clone()).collect();
            let drafts = items
                .into_iter()
                .map(|i| {
                    let first_line = i.text.lines().next().unwrap_or("").to_owned();
                    Draft {
                        key: i.id,
                        title: Some(truncate_chars(&first_line, 120)).filter(|t| !t.is_empty()),
                        message: truncate_chars(&i.text, MAX_MESSAGE_CHARS),
                        link: i.link,
                        author: None,
                        tags: Vec::new(),
                    }
                })
                .collect();
            Fetched {
                outcome: Outcome::Fetched {
                    item_ids: ids,
                    etag: resp.etag.clone(),
                    last_modified: resp.last_modified.clone(),
                    hints,
                    title: None,
                    warnings: Vec::new(),
                },
                drafts,
                moved_to: None,
                hubs: Vec::new(),
                self_url: None,
            }
        }
    }
}

fn is_http(u: &str) -> bool {
    let l = u.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// The notification of a new item.
pub fn item_notification(source_id: &str, d: &Draft, now: i64) -> Notification {
    Notification {
        id: NotificationId::derived(source_id, &d.key),
        time: now / 1000,
        event: "message".into(),
        source: source_id.to_owned(),
        topic: None,
        title: d.title.clone(),
        message: d.message.clone(),
        priority: Priority::Default,
        tags: d.tags.clone(),
        click: d.link.clone(),
        actions: Vec::new(),
        author: d.author.clone(),
    }
}

/// The notification telling subscribers about the source itself (failing, back, gone, moved).
pub fn notice_notification(
    source_id: &str,
    state: &FeedState,
    notice: &Notice,
    now: i64,
) -> Notification {
    let name = state.title.clone().unwrap_or_else(|| state.url.clone());
    let (title, message, priority, tag) = match notice {
        Notice::Failing { reason } => (
            format!("Source failing: {name}"),
            format!(
                "{} could not be fetched: {reason}. tidings keeps trying and will tell you when it works again.",
                state.url
            ),
            Priority::High,
            "warning",
        ),
        Notice::Recovered => (
            format!("Source working again: {name}"),
            format!("{} can be fetched again.", state.url),
            Priority::Default,
            "ok",
        ),
        Notice::Gone => (
            format!("Source gone: {name}"),
            format!(
                "{} answered 410 Gone: it no longer exists, so tidings stopped watching it.",
                state.url
            ),
            Priority::High,
            "warning",
        ),
        Notice::Moved { url } => (
            format!("Source moved: {name}"),
            format!("The source moved permanently to {url}; tidings follows it."),
            Priority::Low,
            "info",
        ),
    };
    Notification {
        id: NotificationId::new(now),
        time: now / 1000,
        event: "message".into(),
        source: source_id.to_owned(),
        topic: None,
        title: Some(title),
        message,
        priority,
        tags: vec![tag.to_owned()],
        click: None,
        actions: Vec::new(),
        author: Some("tidings".into()),
    }
}
