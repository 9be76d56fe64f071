//! The user avatar: one per user. It owns the user's subscriptions, acks and presence, and
//! hands every delivery to the delivery agents (history always, the live stream, and the
//! channels later issues add). Routing is the skeleton here: every agent gets every item.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings_bus::ack::Ack;
use tidings_bus::avatars::{Avatar, BoxError, Context};
use tidings_core::ids::source_avatar;
use tidings_core::{Filter, Notification, NotificationId, TopicName};
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{now_ms, rusqlite};
use tokio::sync::oneshot;

use crate::agents::Delivery;
use crate::services::Services;
use crate::source::SourceMsg;
use crate::{Error, Result};

/// How many recent notification ids a user avatar remembers to drop redeliveries before
/// they reach the live stream (history dedupes by its primary key on its own).
const RECENT_IDS: usize = 4096;

/// A source as a user names it when subscribing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// A topic published to over HTTP.
    Topic { topic: String },
    /// An RSS, Atom or JSON feed. `backfill`: how many of the newest items already in the
    /// feed to notify when the subscription starts (default none).
    Feed {
        url: String,
        #[serde(default)]
        backfill: u32,
    },
    /// A web page watched for new elements matching a CSS selector.
    Page {
        url: String,
        selector: String,
        #[serde(default)]
        backfill: u32,
    },
    /// One folder of the subscriber's own IMAP mailbox (`crate::source::imap`). The
    /// password is never serialized (not stored with the subscription, not in any answer):
    /// it is sealed into `source_secrets`. The port defaults by TLS mode (993 / 143).
    Imap {
        host: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default = "crate::source::imap::default_tls")]
        tls: tidings_sources::imap::TlsMode,
        username: String,
        #[serde(default, skip_serializing)]
        password: crate::source::imap::Password,
        #[serde(default = "crate::source::imap::default_folder")]
        folder: String,
    },
}

/// Most items a subscription may ask to be backfilled with.
pub const MAX_BACKFILL: u32 = 50;

impl SourceSpec {
    /// The source id (`topic:backups`, `feed:<hash>`, `page:<hash>`), after validating the
    /// spec. Feed and page URLs are normalized, so one feed is one source however it is
    /// spelled.
    pub fn source_id(&self) -> Result<String> {
        match self {
            SourceSpec::Topic { topic } => Ok(TopicName::parse(topic)?.source_id()),
            SourceSpec::Feed { url, backfill } => {
                check_backfill(*backfill)?;
                Ok(tidings_sources::feed::source_id(
                    "feed",
                    &normalized(url)?,
                    "",
                ))
            }
            SourceSpec::Page {
                url,
                selector,
                backfill,
            } => {
                check_backfill(*backfill)?;
                tidings_sources::page::validate_selector(selector)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                Ok(tidings_sources::feed::source_id(
                    "page",
                    &normalized(url)?,
                    selector.trim(),
                ))
            }
            SourceSpec::Imap { .. } => Err(Error::Invalid(
                "an IMAP source's id depends on its owner (SourceSpec::source_id_for)".into(),
            )),
        }
    }

    /// The source id as `user_id` subscribes to it: a mailbox is its owner's own, so an
    /// IMAP source's id covers the owner, host, port, user name and folder; any other kind
    /// is [`SourceSpec::source_id`].
    pub fn source_id_for(&self, user_id: i64) -> Result<String> {
        match self {
            SourceSpec::Imap {
                host,
                port,
                tls,
                username,
                password,
                folder,
            } => {
                let n =
                    crate::source::imap::normalize(host, *port, *tls, username, password, folder)?;
                Ok(crate::source::imap::source_id(
                    user_id,
                    &n.host,
                    n.port,
                    &n.username,
                    &n.folder,
                ))
            }
            _ => self.source_id(),
        }
    }

    /// The same spec with its URL in normalized form.
    pub fn normalized(&self) -> Result<SourceSpec> {
        Ok(match self {
            SourceSpec::Topic { .. } => self.clone(),
            SourceSpec::Feed { url, backfill } => SourceSpec::Feed {
                url: normalized(url)?,
                backfill: *backfill,
            },
            SourceSpec::Page {
                url,
                selector,
                backfill,
            } => SourceSpec::Page {
                url: normalized(url)?,
                selector: selector.trim().to_owned(),
                backfill: *backfill,
            },
            SourceSpec::Imap {
                host,
                port,
                tls,
                username,
                password,
                folder,
            } => {
                let n =
                    crate::source::imap::normalize(host, *port, *tls, username, password, folder)?;
                SourceSpec::Imap {
                    host: n.host,
                    port: Some(n.port),
                    tls: *tls,
                    username: n.username,
                    password: password.clone(),
                    folder: n.folder,
                }
            }
        })
    }
}

fn check_backfill(n: u32) -> Result<()> {
    if n > MAX_BACKFILL {
        return Err(Error::Invalid(format!(
            "backfill is at most {MAX_BACKFILL}"
        )));
    }
    Ok(())
}

fn normalized(u: &str) -> Result<String> {
    let parsed =
        url::Url::parse(u.trim()).map_err(|e| Error::Invalid(format!("invalid URL {u:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::Invalid(format!("{u:?} is not an http(s) URL")));
    }
    Ok(tidings_sources::feed::normalize_url(&parsed))
}

/// A subscription as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub source_id: String,
    pub source: SourceSpec,
    pub filter: Filter,
    pub created_at: i64,
}

/// Result of acknowledging a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AckOutcome {
    pub acked_at: i64,
    /// `false` when it had been acknowledged before.
    pub newly: bool,
}

/// Messages to a user avatar.
#[derive(Debug)]
pub enum UserMsg {
    Deliver {
        notification: Arc<Notification>,
        subscription: Option<String>,
        ack: Ack,
    },
    Ack {
        id: NotificationId,
        reply: oneshot::Sender<Result<AckOutcome>>,
    },
    Subscribe {
        source: SourceSpec,
        filter: Filter,
        reply: oneshot::Sender<Result<Subscription>>,
    },
    Unsubscribe {
        id: String,
        reply: oneshot::Sender<Result<Subscription>>,
    },
    /// Presence on a channel changed (`web` for live streams).
    Presence { channel: &'static str, online: bool },
}

pub struct UserAvatar {
    user_id: i64,
    removed: bool,
    recent: VecDeque<NotificationId>,
    recent_set: HashSet<NotificationId>,
    web_online: bool,
}

impl Avatar for UserAvatar {
    type Msg = UserMsg;
    type Env = Services;
    const KIND: &'static str = "user";

    async fn activate(id: &str, cx: &Context<Self>) -> std::result::Result<Self, BoxError> {
        let user_id: i64 = id
            .strip_prefix("user:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{id:?} is not a user avatar id"))?;
        let removed = cx.env().directory.user(user_id).is_none();
        Ok(UserAvatar {
            user_id,
            removed,
            recent: VecDeque::with_capacity(64),
            recent_set: HashSet::with_capacity(64),
            web_online: cx.env().live.open_streams(user_id) > 0,
        })
    }

    async fn handle(&mut self, msg: UserMsg, cx: &Context<Self>) {
        match msg {
            UserMsg::Deliver {
                notification,
                subscription,
                ack,
            } => self.deliver(notification, subscription, ack, cx).await,
            UserMsg::Ack { id, reply } => {
                let _ = reply.send(self.ack(id, cx).await);
            }
            UserMsg::Subscribe {
                source,
                filter,
                reply,
            } => {
                let _ = reply.send(self.subscribe(source, filter, cx).await);
            }
            UserMsg::Unsubscribe { id, reply } => {
                let _ = reply.send(self.unsubscribe(id, cx).await);
            }
            UserMsg::Presence { channel, online } => self.presence(channel, online, cx).await,
        }
    }

    async fn on_reminder(&mut self, name: String, _payload: String, _cx: &Context<Self>) {
        tracing::debug!(user_id = self.user_id, %name, "user reminder with no use yet");
    }

    async fn passivate(&mut self, _cx: &Context<Self>) {
        // History, acks and subscriptions are written through as they happen.
    }
}

impl UserAvatar {
    async fn deliver(
        &mut self,
        n: Arc<Notification>,
        subscription: Option<String>,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        if self.removed {
            // Nobody to deliver to; the item is done for this user.
            ack.ack();
            return;
        }
        let d = Delivery {
            user_id: self.user_id,
            notification: n.clone(),
            subscription,
        };
        let seen = !self.remember(&n.id);
        for agent in cx.env().agents() {
            // A redelivery after a crash still goes to history (idempotent there) but not
            // again to channels that would show it twice.
            if seen && agent.name() != "history" {
                continue;
            }
            agent.deliver(&d, ack.share()).await;
        }
        ack.ack();
    }

    fn remember(&mut self, id: &NotificationId) -> bool {
        if !self.recent_set.insert(id.clone()) {
            return false;
        }
        self.recent.push_back(id.clone());
        if self.recent.len() > RECENT_IDS
            && let Some(old) = self.recent.pop_front()
        {
            self.recent_set.remove(&old);
        }
        true
    }

    async fn ack(&mut self, id: NotificationId, cx: &Context<Self>) -> Result<AckOutcome> {
        let user_id = self.user_id;
        let now = now_ms();
        let outcome = cx
            .env()
            .store
            .write(move |c| {
                let row: Option<(Option<i64>, String)> = c
                    .query_row(
                        "SELECT acked_at, source_id FROM inbox WHERE user_id = ?1 AND notification_id = ?2",
                        rusqlite::params![user_id, id.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                match row {
                    None => Ok(None),
                    Some((Some(at), _)) => Ok(Some(AckOutcome {
                        acked_at: at,
                        newly: false,
                    })),
                    Some((None, source)) => {
                        c.execute(
                            "UPDATE inbox SET acked_at = ?3 WHERE user_id = ?1 AND notification_id = ?2",
                            rusqlite::params![user_id, id.as_str(), now],
                        )?;
                        c.execute(
                            "INSERT INTO events(time, kind, user_id, source_id, notification_id, data)
                             VALUES (?1, 'acked', ?2, ?3, ?4, json_object('via', 'api'))",
                            rusqlite::params![now, user_id, source, id.as_str()],
                        )?;
                        Ok(Some(AckOutcome {
                            acked_at: now,
                            newly: true,
                        }))
                    }
                }
            })
            .await?;
        outcome.ok_or_else(|| Error::NotFound("notification".into()))
    }

    async fn subscribe(
        &mut self,
        source: SourceSpec,
        filter: Filter,
        cx: &Context<Self>,
    ) -> Result<Subscription> {
        filter.validate()?;
        let source = source.normalized()?;
        let source_id = source.source_id_for(self.user_id)?;
        let user_id = self.user_id;
        // IMAP hook: the account, password included, is sealed and stored in the
        // subscription's own transaction (`crate::source::imap`); the login was checked
        // before the subscription got here.
        let sealed = crate::source::imap::seal(&cx.env().secrets, &source_id, &source);
        let fresh = Subscription {
            id: format!("sub_{}", NotificationId::new(now_ms())),
            source_id: source_id.clone(),
            source: source.clone(),
            filter: filter.clone(),
            created_at: now_ms(),
        };
        let spec = serde_json::to_string(&source).map_err(|e| Error::Invalid(e.to_string()))?;
        let filter_json =
            serde_json::to_string(&filter).map_err(|e| Error::Invalid(e.to_string()))?;
        let f = fresh.clone();
        // One subscription per (user, source): subscribing again replaces the filter.
        let (id, created_at): (String, i64) = cx
            .env()
            .store
            .write(move |c| {
                let row = c.query_row(
                    "INSERT INTO subscriptions(id, user_id, source_id, source, filter, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(user_id, source_id) DO UPDATE SET filter = excluded.filter
                     RETURNING id, created_at",
                    rusqlite::params![f.id, user_id, f.source_id, spec, filter_json, f.created_at],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                c.execute(
                    "INSERT INTO events(time, kind, user_id, source_id, data) VALUES (?1, 'subscribed', ?2, ?3, json_object('subscription', ?4))",
                    rusqlite::params![now_ms(), user_id, f.source_id, row.0],
                )?;
                if let Some(sealed) = &sealed {
                    crate::source::imap::store_sealed(c, user_id, &f.source_id, &spec, sealed)?;
                }
                Ok(row)
            })
            .await?;
        let sub = Subscription {
            id,
            created_at,
            ..fresh
        };
        cx.env()
            .sources()
            .tell(
                &source_avatar(&source_id),
                SourceMsg::Subscribe {
                    user_id,
                    subscription: sub.id.clone(),
                    filter,
                    spec: Some(sub.source.clone()),
                },
            )
            .await?;
        Ok(sub)
    }

    async fn unsubscribe(&mut self, id: String, cx: &Context<Self>) -> Result<Subscription> {
        let user_id = self.user_id;
        let removed: Option<Subscription> = cx
            .env()
            .store
            .write(move |c| {
                let row = c
                    .query_row(
                        "DELETE FROM subscriptions WHERE id = ?1 AND user_id = ?2
                         RETURNING id, source_id, source, filter, created_at",
                        rusqlite::params![id, user_id],
                        subscription_from_row,
                    )
                    .optional()?;
                if let Some(s) = &row {
                    c.execute(
                        "INSERT INTO events(time, kind, user_id, source_id, data) VALUES (?1, 'unsubscribed', ?2, ?3, json_object('subscription', ?4))",
                        rusqlite::params![now_ms(), user_id, s.source_id, s.id],
                    )?;
                }
                Ok(row)
            })
            .await?;
        let sub = removed.ok_or_else(|| Error::NotFound("subscription".into()))?;
        cx.env()
            .sources()
            .tell(
                &source_avatar(&sub.source_id),
                SourceMsg::Unsubscribe { user_id },
            )
            .await?;
        Ok(sub)
    }

    async fn presence(&mut self, channel: &'static str, online: bool, cx: &Context<Self>) {
        if channel == "web" {
            if self.web_online == online {
                return;
            }
            self.web_online = online;
        }
        let user_id = self.user_id;
        let r = cx
            .env()
            .store
            .submit(
                move |c| {
                    c.execute(
                        "INSERT INTO events(time, kind, user_id, data) VALUES (?1, 'presence_changed', ?2, json_object('channel', ?3, 'status', ?4))",
                        rusqlite::params![now_ms(), user_id, channel, if online { "online" } else { "offline" }],
                    )
                },
                |_| {},
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(user_id, error = %e, "presence event not recorded");
        }
    }
}

/// Reads a subscription from `id, source_id, source, filter, created_at`.
pub fn subscription_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    let source: String = r.get(2)?;
    let filter: String = r.get(3)?;
    let bad = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(Subscription {
        id: r.get(0)?,
        source_id: r.get(1)?,
        source: serde_json::from_str(&source).map_err(|e| bad(2, e))?,
        filter: serde_json::from_str(&filter).map_err(|e| bad(3, e))?,
        created_at: r.get(4)?,
    })
}
