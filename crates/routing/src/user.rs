//! The user avatar: one per user. It owns the user's subscriptions, destinations, acks and
//! presence, and hands every delivery to the delivery agents: history always, the live
//! stream, and the outbox with the destinations this item goes to (each with the reason).
//! Until routing rules arrive, a destination takes every item it accepts by its options
//! (enabled, verified, minimum priority, subscriptions).

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
use crate::agents::outbox::{self, Purpose};
use crate::destinations::{self, CodeCheck, Destination, DestinationOptions, Target};
use crate::rules::Rules;
use crate::schedule::{self, UserDoc, UserSettings, Wait};
use crate::services::Services;
use crate::source::SourceMsg;
use crate::{Error, Result};
use tidings_sinks::DestinationConfig;

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
    Presence {
        channel: &'static str,
        online: bool,
    },
    ListDestinations {
        reply: oneshot::Sender<Vec<Arc<Destination>>>,
    },
    /// Adds a destination (already checked by the caller: URL rules, relay present).
    AddDestination {
        new: NewDestination,
        reply: oneshot::Sender<Result<Arc<Destination>>>,
    },
    UpdateDestination {
        id: String,
        patch: DestinationPatch,
        reply: oneshot::Sender<Result<Arc<Destination>>>,
    },
    RemoveDestination {
        id: String,
        reply: oneshot::Sender<Result<Arc<Destination>>>,
    },
    VerifyDestination {
        id: String,
        code: String,
        reply: oneshot::Sender<Result<Arc<Destination>>>,
    },
    /// Sends a new verification code.
    SendCode {
        id: String,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Queues a test message; answers its notification id.
    TestDestination {
        id: String,
        reply: oneshot::Sender<Result<NotificationId>>,
    },
    /// A reply by mail to a delivered notification (from the ingest queue).
    MailReply {
        raw_b64: String,
        token_hash: String,
        ack: Ack,
    },
    /// A text reply to one of the user's notifications (from the ingest queue).
    TextReply {
        notification_id: String,
        via: String,
        text: String,
        ack: Ack,
    },
    /// An SMS to one of the user's phone destinations (from the ingest queue).
    SmsReply {
        destination_id: String,
        text: String,
        ack: Ack,
    },
    /// A message from tidings itself for the user's history and live streams (a reply
    /// that could not be forwarded, ...); never sent to destinations.
    Notice {
        title: String,
        message: String,
    },
    /// A contact's availability on XMPP changed (folded over their resources).
    ImPresence {
        destination_id: String,
        show: tidings_xmpp::Show,
    },
    /// A contact approved tidings' presence subscription.
    ImApproved {
        destination_id: String,
    },
    /// A receipt (`received`), displayed marker (`displayed`) or bounce for an IM delivery.
    ImMark {
        destination_id: String,
        notification_id: String,
        what: String,
    },
    GetSettings {
        reply: oneshot::Sender<UserSettings>,
    },
    GetRules {
        reply: oneshot::Sender<Rules>,
    },
    PutRules {
        rules: Rules,
        reply: oneshot::Sender<Result<Rules>>,
    },
    PutSettings {
        settings: UserSettings,
        reply: oneshot::Sender<Result<UserSettings>>,
    },
}

/// A destination as a user adds it.
#[derive(Debug, Clone)]
pub struct NewDestination {
    pub name: String,
    pub config: tidings_sinks::DestinationConfig,
    pub options: DestinationOptions,
}

/// Changes to a destination.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationPatch {
    pub name: Option<String>,
    pub options: Option<DestinationOptions>,
}

pub struct UserAvatar {
    user_id: i64,
    removed: bool,
    recent: VecDeque<NotificationId>,
    recent_set: HashSet<NotificationId>,
    web_online: bool,
    destinations: Vec<Arc<Destination>>,
    settings: UserSettings,
    rules: Rules,
}

/// The reminder that ends quiet hours (releases what they held).
const QUIET_END: &str = "quiet-end";
/// Prefix of a destination's digest reminder: `digest:<destination id>`.
const DIGEST: &str = "digest:";
/// Prefix of an escalation's reminder: `esc:<notification id>:<step>`.
const ESCALATE: &str = "esc:";
/// Held items or digest items read from disk at a time.
const RELEASE_BATCH: i64 = 1000;

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
        let secrets = cx.env().secrets.clone();
        let (destinations, settings, rules) = cx
            .env()
            .store
            .read(move |c| {
                Ok((
                    destinations::load_for_user(c, &secrets, user_id)?,
                    UserDoc::Settings.load(c, user_id)?,
                    UserDoc::Rules.load(c, user_id)?,
                ))
            })
            .await?;
        let destinations = destinations.into_iter().map(Arc::new).collect();
        Ok(UserAvatar {
            user_id,
            removed,
            recent: VecDeque::with_capacity(64),
            recent_set: HashSet::with_capacity(64),
            web_online: cx.env().live.open_streams(user_id) > 0,
            destinations,
            settings,
            rules,
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
                let _ = reply.send(self.ack(id, "api", cx).await);
            }
            UserMsg::MailReply {
                raw_b64,
                token_hash,
                ack,
            } => self.mail_reply(raw_b64, token_hash, ack, cx).await,
            UserMsg::SmsReply {
                destination_id,
                text,
                ack,
            } => self.sms_reply(destination_id, text, ack, cx).await,
            UserMsg::TextReply {
                notification_id,
                via,
                text,
                ack,
            } => self.text_reply(notification_id, via, text, ack, cx).await,
            UserMsg::Notice { title, message } => self.notice(title, message, cx).await,
            UserMsg::ImPresence {
                destination_id,
                show,
            } => self.im_presence(destination_id, show, cx).await,
            UserMsg::ImApproved { destination_id } => self.im_approved(destination_id, cx).await,
            UserMsg::ImMark {
                destination_id,
                notification_id,
                what,
            } => {
                self.im_mark(destination_id, notification_id, what, cx)
                    .await
            }
            UserMsg::GetSettings { reply } => {
                let _ = reply.send(self.settings.clone());
            }
            UserMsg::GetRules { reply } => {
                let _ = reply.send(self.rules.clone());
            }
            UserMsg::PutRules { rules, reply } => {
                let _ = reply.send(self.put_rules(rules, cx).await);
            }
            UserMsg::PutSettings { settings, reply } => {
                let _ = reply.send(self.put_settings(settings, cx).await);
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
            UserMsg::ListDestinations { reply } => {
                let _ = reply.send(self.destinations.clone());
            }
            UserMsg::AddDestination { new, reply } => {
                let _ = reply.send(self.add_destination(new, cx).await);
            }
            UserMsg::UpdateDestination { id, patch, reply } => {
                let _ = reply.send(self.update_destination(&id, patch, cx).await);
            }
            UserMsg::RemoveDestination { id, reply } => {
                let _ = reply.send(self.remove_destination(&id, cx).await);
            }
            UserMsg::VerifyDestination { id, code, reply } => {
                let _ = reply.send(self.verify_destination(&id, code, cx).await);
            }
            UserMsg::SendCode { id, reply } => {
                let _ = reply.send(self.send_code(&id, cx).await);
            }
            UserMsg::TestDestination { id, reply } => {
                let _ = reply.send(self.test_destination(&id, cx).await);
            }
        }
    }

    async fn on_reminder(&mut self, name: String, _payload: String, cx: &Context<Self>) {
        if self.removed {
            return;
        }
        if name == QUIET_END {
            self.release_held(cx).await;
        } else if let Some(dest) = name.strip_prefix(DIGEST) {
            self.send_digest(dest, cx).await;
        } else if let Some(rest) = name.strip_prefix(ESCALATE) {
            self.escalate(rest, cx).await;
        } else {
            tracing::warn!(user_id = self.user_id, %name, "unknown user reminder");
        }
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
        let (targets, later) =
            match self
                .rules
                .plan(&n, subscription.as_deref(), &self.destinations)
            {
                Some(plan) => (plan.now, plan.later),
                // No rule: every destination takes what its options accept.
                None => (
                    self.destinations
                        .iter()
                        .filter_map(|d| {
                            d.accepts(&n, subscription.as_deref()).map(|reason| Target {
                                destination: d.clone(),
                                reason,
                            })
                        })
                        .collect(),
                    Vec::new(),
                ),
            };
        if !later.is_empty()
            && let Err(e) = self.schedule_escalations(&n, later, cx).await
        {
            ack.nack(format!("escalations not stored: {e}"));
            return;
        }
        let targets = match self.shape(&n, targets, cx).await {
            Ok(t) => t,
            Err(e) => {
                ack.nack(format!("held deliveries not stored: {e}"));
                return;
            }
        };
        let d = Delivery {
            user_id: self.user_id,
            notification: n.clone(),
            subscription,
            targets,
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

    /// Quiet hours and digests: targets that must wait are written to disk here (durable
    /// before this returns, with a reminder for when they are due); the rest go out now.
    async fn shape(
        &mut self,
        n: &Notification,
        targets: Vec<Target>,
        cx: &Context<Self>,
    ) -> Result<Vec<Target>> {
        if targets.is_empty() {
            return Ok(targets);
        }
        let now = now_ms();
        let quiet = self.settings.hold_until(n.priority, now);
        let mut send = Vec::new();
        let mut waiting = Vec::new();
        let mut due = Vec::new();
        let breaks_through = self
            .settings
            .quiet_hours
            .as_ref()
            .map_or(tidings_core::Priority::Urgent, |q| q.breakthrough)
            <= n.priority;
        for t in targets {
            let d = &t.destination;
            if !breaks_through && self.im_away(d, cx) {
                // Held until the user is available there; their presence releases it.
                let why = format!(
                    "held until you are available on XMPP ({})",
                    d.config.as_ref().map(|c| c.address()).unwrap_or_default()
                );
                waiting.push((Wait::Quiet, d.id.clone(), d.kind.clone(), why));
                due.push((QUIET_END.to_owned(), i64::MAX));
            } else if let Some(until) = quiet {
                let why = format!("held by quiet hours until {}", self.settings.local(until));
                waiting.push((Wait::Quiet, d.id.clone(), d.kind.clone(), why));
                due.push((QUIET_END.to_owned(), until));
            } else if let Some(window) = d.digest_for(n) {
                let every = d.options.digest.as_ref().map_or("", |g| g.every.as_str());
                let why = format!("in the digest of destination {:?} (every {every})", d.name);
                waiting.push((Wait::Digest, d.id.clone(), d.kind.clone(), why));
                due.push((format!("{DIGEST}{}", d.id), now + window.as_millis() as i64));
            } else {
                send.push(t);
            }
        }
        if waiting.is_empty() {
            return Ok(send);
        }
        let (user_id, row) = (self.user_id, n.clone());
        let first = cx
            .env()
            .store
            .write(move |c| schedule::store_waiting(c, user_id, &row, &waiting))
            .await?;
        for ((name, at), first) in due.into_iter().zip(first) {
            // A pause without an end is lifted by `resume`, which sets its own reminder.
            if first && at != i64::MAX {
                cx.set_reminder(&name, at, String::new()).await?;
            }
        }
        Ok(send)
    }

    /// Quiet hours are over: each destination gets what was held, one by one, or as one
    /// summary when there is more than `summarize_over`; digest destinations collect it.
    async fn release_held(&mut self, cx: &Context<Self>) {
        let now = now_ms();
        if let Some(until) = self.settings.quiet_until(now) {
            // Still (or again) quiet: the settings changed since the reminder was set.
            if until == i64::MAX {
                return;
            }
            if let Err(e) = cx.set_reminder(QUIET_END, until, String::new()).await {
                tracing::error!(user_id = self.user_id, error = %e, "quiet hours reminder not set");
            }
            return;
        }
        self.release_held_for(None, cx).await;
    }

    /// Releases what is held (for one destination, or all), except for IM destinations
    /// whose user is still away: those wait for their presence.
    async fn release_held_for(&mut self, only: Option<String>, cx: &Context<Self>) {
        let now = now_ms();
        let summarize_over = self.settings.summarize_over;
        let mut cursor = 0i64;
        loop {
            let user_id = self.user_id;
            let only2 = only.clone();
            let rows = cx
                .env()
                .store
                .read(move |c| {
                    let mut s = c.prepare_cached(
                        "SELECT seq, destination_id, body FROM held
                         WHERE user_id = ?1 AND seq > ?2 AND (?3 IS NULL OR destination_id = ?3)
                         ORDER BY seq LIMIT ?4",
                    )?;
                    let rows = s.query_map(
                        rusqlite::params![user_id, cursor, only2, RELEASE_BATCH],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                            ))
                        },
                    )?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })
                .await;
            let rows = match rows {
                Ok(r) if r.is_empty() => {
                    self.kick_digests(cx).await;
                    return;
                }
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(user_id, error = %e, "held items not readable; retrying in 10 s");
                    let _ = cx
                        .set_reminder(QUIET_END, now + 10_000, String::new())
                        .await;
                    return;
                }
            };
            cursor = rows.last().map_or(cursor, |r| r.0);
            let mut by_dest: Vec<(String, Vec<(i64, Notification)>)> = Vec::new();
            for (seq, dest, body) in rows {
                let Ok(n) = serde_json::from_str::<Notification>(&body) else {
                    continue;
                };
                match by_dest.iter_mut().find(|(d, _)| *d == dest) {
                    Some((_, v)) => v.push((seq, n)),
                    None => by_dest.push((dest, vec![(seq, n)])),
                }
            }
            for (dest_id, items) in by_dest {
                let dest = self.destinations.iter().find(|d| d.id == dest_id).cloned();
                if dest.as_ref().is_some_and(|d| self.im_away(d, cx)) {
                    continue;
                }
                if let Err(e) = self.release_to(dest, items, summarize_over, cx).await {
                    tracing::error!(user_id, error = %e, "held items not released; retrying in 10 s");
                    let _ = cx
                        .set_reminder(QUIET_END, now + 10_000, String::new())
                        .await;
                    return;
                }
            }
        }
    }

    /// Whether `d` is an IM destination whose user is not available there now.
    fn im_away(&self, d: &Destination, cx: &Context<Self>) -> bool {
        let Ok(DestinationConfig::Xmpp(x)) = &d.config else {
            return false;
        };
        match cx.env().xmpp() {
            Some(agent) => !crate::xmpp::is_available(agent.show(&x.jid)),
            None => true,
        }
    }

    /// A contact's availability changed: recorded, and when they are back, what waited for
    /// them goes out (unless quiet hours or a pause say otherwise).
    async fn im_presence(
        &mut self,
        destination_id: String,
        show: tidings_xmpp::Show,
        cx: &Context<Self>,
    ) {
        let user_id = self.user_id;
        let (d2, s2) = (destination_id.clone(), format!("{show:?}").to_lowercase());
        let r = cx
            .env()
            .store
            .submit(
                move |c| {
                    c.execute(
                        "INSERT INTO events(time, kind, user_id, data) VALUES (?1, 'presence_changed', ?2, json_object('channel', 'xmpp', 'destination', ?3, 'status', ?4))",
                        rusqlite::params![now_ms(), user_id, d2, s2],
                    )
                },
                |_| {},
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(user_id, error = %e, "presence event not recorded");
        }
        if crate::xmpp::is_available(show) && self.settings.quiet_until(now_ms()).is_none() {
            self.release_held_for(Some(destination_id), cx).await;
        }
    }

    /// The contact approved tidings' presence subscription: the destination is verified.
    async fn im_approved(&mut self, destination_id: String, cx: &Context<Self>) {
        let Ok((i, d)) = self.destination(&destination_id) else {
            return;
        };
        if !d.needs_verification() {
            return;
        }
        let (user_id, id) = (self.user_id, d.id.clone());
        let now = now_ms();
        let r = cx
            .env()
            .store
            .write(move |c| {
                c.execute(
                    "UPDATE destinations SET verified_at = ?2 WHERE id = ?1",
                    rusqlite::params![id, now],
                )?;
                c.execute(
                    "INSERT INTO events(time, kind, user_id, data)
                     VALUES (?1, 'destination_verified', ?2, json_object('destination', ?3, 'via', 'xmpp subscription'))",
                    rusqlite::params![now, user_id, id],
                )
            })
            .await;
        match r {
            Ok(_) => {
                let mut v = (*d).clone();
                v.verified_at = Some(now);
                self.destinations[i] = Arc::new(v);
            }
            Err(e) => tracing::error!(user_id, error = %e, "XMPP approval not stored"),
        }
    }

    /// A receipt, displayed marker or bounce for an IM delivery, on its record.
    async fn im_mark(
        &mut self,
        destination_id: String,
        nid: String,
        what: String,
        cx: &Context<Self>,
    ) {
        let user_id = self.user_id;
        let bounced = what.starts_with("bounced");
        let r = cx
            .env()
            .store
            .submit(
                move |c| {
                    let now = now_ms();
                    let attempt = if bounced {
                        serde_json::json!({"at": now, "ok": false, "error": what})
                    } else {
                        serde_json::json!({"at": now, "ok": true, "receipt": what})
                    };
                    c.execute(
                        "UPDATE deliveries SET updated_at = ?4,
                                status = CASE WHEN ?5 THEN 'dead' ELSE status END,
                                attempts = json_insert(attempts, '$[#]', json(?6))
                         WHERE notification_id = ?1 AND user_id = ?2 AND destination_id = ?3",
                        rusqlite::params![nid, user_id, destination_id, now, bounced, attempt.to_string()],
                    )?;
                    if what == "displayed" {
                        c.execute(
                            "INSERT INTO events(time, kind, user_id, notification_id, data) VALUES (?1, 'read', ?2, ?3, json_object('via', 'xmpp'))",
                            rusqlite::params![now, user_id, nid],
                        )?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(user_id, error = %e, "IM receipt not recorded");
        }
    }

    /// Digests that waited out quiet hours or a pause are due now.
    async fn kick_digests(&mut self, cx: &Context<Self>) {
        let user_id = self.user_id;
        let dests = cx
            .env()
            .store
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT DISTINCT destination_id FROM digest_items WHERE user_id = ?1",
                )?;
                let rows = s.query_map([user_id], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .unwrap_or_default();
        for d in dests {
            let _ = cx
                .set_reminder(&format!("{DIGEST}{d}"), now_ms(), String::new())
                .await;
        }
    }

    async fn release_to(
        &mut self,
        dest: Option<Arc<Destination>>,
        items: Vec<(i64, Notification)>,
        summarize_over: usize,
        cx: &Context<Self>,
    ) -> Result<()> {
        let user_id = self.user_id;
        let seqs: Vec<i64> = items.iter().map(|(s, _)| *s).collect();
        let Some(dest) = dest else {
            // Removed meanwhile: its records were marked dead with it.
            cx.env()
                .store
                .write(move |c| delete_seqs(c, "held", &seqs))
                .await?;
            return Ok(());
        };
        let outbox = cx.env().outbox.clone();
        let mut queue = Vec::new();
        let mut digest_rows = Vec::new();
        let mut digested = None;
        if items.len() > summarize_over {
            let notes: Vec<Notification> = items.iter().map(|(_, n)| n.clone()).collect();
            let summary = schedule::digest(&notes, "held during quiet hours", now_ms());
            let members: Vec<String> = notes.iter().map(|n| n.id.as_str().to_owned()).collect();
            digested = Some((members, summary.id.as_str().to_owned()));
            queue.push(outbox.item(
                &dest,
                summary,
                Purpose::Digest,
                format!("{} items held by quiet hours, summed up", notes.len()),
            ));
        } else {
            for (_, n) in items {
                if dest.digest_for(&n).is_some() {
                    digest_rows.push(n);
                } else {
                    queue.push(outbox.item(
                        &dest,
                        n,
                        Purpose::Delivery,
                        "released at the end of quiet hours".into(),
                    ));
                }
            }
        }
        let (d2, kind) = (dest.id.clone(), dest.kind.clone());
        let why = format!("in the digest of destination {:?}", dest.name);
        let first_digest = cx
            .env()
            .store
            .write(move |c| {
                let woken = outbox::insert_items(c, user_id, &queue)?;
                if let Some((members, id)) = &digested {
                    schedule::mark_digested(c, user_id, &d2, members, id)?;
                }
                let mut first = false;
                for n in &digest_rows {
                    c.execute(
                        "DELETE FROM deliveries WHERE notification_id = ?1 AND user_id = ?2 AND destination_id = ?3 AND status = 'held'",
                        rusqlite::params![n.id.as_str(), user_id, d2],
                    )?;
                    let rows = [(Wait::Digest, d2.clone(), kind.clone(), why.clone())];
                    first |= schedule::store_waiting(c, user_id, n, &rows)?[0];
                }
                delete_seqs(c, "held", &seqs)?;
                Ok((woken, first))
            })
            .await?;
        let (woken, first) = first_digest;
        for id in woken {
            cx.env().outbox.wake(id);
        }
        if first && let Some(window) = dest.options.digest.as_ref().and_then(|g| g.window().ok()) {
            cx.set_reminder(
                &format!("{DIGEST}{}", dest.id),
                now_ms() + window.as_millis() as i64,
                String::new(),
            )
            .await?;
        }
        Ok(())
    }

    /// A destination's digest window ended: what it collected goes out as one message.
    async fn send_digest(&mut self, dest_id: &str, cx: &Context<Self>) {
        let now = now_ms();
        let Some(dest) = self.destinations.iter().find(|d| d.id == dest_id).cloned() else {
            let id = dest_id.to_owned();
            let _ = cx
                .env()
                .store
                .write(move |c| {
                    c.execute("DELETE FROM digest_items WHERE destination_id = ?1", [id])
                })
                .await;
            return;
        };
        if let Some(until) = self
            .settings
            .hold_until(tidings_core::Priority::Default, now)
        {
            // A digest is a delivery like any other: it waits for the end of quiet hours
            // (or of a pause: `resume` releases it with the rest).
            if until != i64::MAX {
                let _ = cx
                    .set_reminder(&format!("{DIGEST}{dest_id}"), until, String::new())
                    .await;
            }
            return;
        }
        let id = dest_id.to_owned();
        let rows = cx
            .env()
            .store
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT seq, body FROM digest_items WHERE destination_id = ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = s.query_map(rusqlite::params![id, RELEASE_BATCH * 5], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await;
        let rows = match rows {
            Ok(r) if r.is_empty() => return,
            Ok(r) => r,
            Err(e) => {
                tracing::error!(user_id = self.user_id, error = %e, "digest items not readable; retrying in 10 s");
                let _ = cx
                    .set_reminder(&format!("{DIGEST}{dest_id}"), now + 10_000, String::new())
                    .await;
                return;
            }
        };
        let full = rows.len() as i64 >= RELEASE_BATCH * 5;
        let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
        let notes: Vec<Notification> = rows
            .iter()
            .filter_map(|(_, b)| serde_json::from_str(b).ok())
            .collect();
        let every = dest
            .options
            .digest
            .as_ref()
            .map_or("", |g| g.every.as_str())
            .to_owned();
        let summary = schedule::digest(&notes, &format!("(digest, every {every})"), now);
        let members: Vec<String> = notes.iter().map(|n| n.id.as_str().to_owned()).collect();
        let digest_id = summary.id.as_str().to_owned();
        let item = cx.env().outbox.item(
            &dest,
            summary,
            Purpose::Digest,
            format!("digest of {} items", notes.len()),
        );
        let (user_id, d2) = (self.user_id, dest.id.clone());
        let written = cx
            .env()
            .store
            .write(move |c| {
                let woken = outbox::insert_items(c, user_id, &[item])?;
                schedule::mark_digested(c, user_id, &d2, &members, &digest_id)?;
                delete_seqs(c, "digest_items", &seqs)?;
                Ok(woken)
            })
            .await;
        match written {
            Ok(woken) => woken.into_iter().for_each(|id| cx.env().outbox.wake(id)),
            Err(e) => {
                tracing::error!(user_id, error = %e, "digest not queued; retrying in 10 s");
                let _ = cx
                    .set_reminder(&format!("{DIGEST}{dest_id}"), now + 10_000, String::new())
                    .await;
                return;
            }
        }
        if full {
            // More than one batch waited: the rest follows in the next digest, soon.
            let _ = cx
                .set_reminder(&format!("{DIGEST}{dest_id}"), now + 1_000, String::new())
                .await;
        }
    }

    async fn put_settings(
        &mut self,
        settings: UserSettings,
        cx: &Context<Self>,
    ) -> Result<UserSettings> {
        settings.validate()?;
        let (user_id, row) = (
            self.user_id,
            serde_json::to_string(&settings).map_err(|e| Error::Invalid(e.to_string()))?,
        );
        cx.env()
            .store
            .write(move |c| UserDoc::Settings.save(c, user_id, &row))
            .await?;
        self.settings = settings;
        // Whatever quiet hours held is due now if the new settings say it is not quiet.
        let due = self.settings.quiet_until(now_ms()).unwrap_or_else(now_ms);
        if due != i64::MAX {
            cx.set_reminder(QUIET_END, due, String::new()).await?;
        }
        Ok(self.settings.clone())
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

    async fn ack(
        &mut self,
        id: NotificationId,
        via: &'static str,
        cx: &Context<Self>,
    ) -> Result<AckOutcome> {
        let user_id = self.user_id;
        let nid_for_cancel = id.as_str().to_owned();
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
                             VALUES (?1, 'acked', ?2, ?3, ?4, json_object('via', ?5))",
                            rusqlite::params![now, user_id, source, id.as_str(), via],
                        )?;
                        Ok(Some(AckOutcome {
                            acked_at: now,
                            newly: true,
                        }))
                    }
                }
            })
            .await?;
        let outcome = outcome.ok_or_else(|| Error::NotFound("notification".into()))?;
        if outcome.newly {
            self.cancel_escalations(nid_for_cancel, cx).await;
        }
        Ok(outcome)
    }

    /// Stores the escalations of a rule (their records say `held` and why) and sets one
    /// durable reminder each.
    async fn schedule_escalations(
        &mut self,
        n: &Notification,
        later: Vec<crate::rules::Escalation>,
        cx: &Context<Self>,
    ) -> Result<()> {
        let now = now_ms();
        let user_id = self.user_id;
        let body = serde_json::to_string(n).map_err(|e| Error::Invalid(e.to_string()))?;
        let nid = n.id.as_str().to_owned();
        let rows: Vec<(usize, String, String, String, i64)> = later
            .iter()
            .map(|e| {
                (
                    e.step,
                    e.destination.id.clone(),
                    e.destination.kind.clone(),
                    e.reason.clone(),
                    now + e.after.as_millis() as i64,
                )
            })
            .collect();
        let (nid2, rows2) = (nid.clone(), rows.clone());
        cx.env()
            .store
            .write(move |c| {
                for (step, dest, kind, reason, due) in &rows2 {
                    c.execute(
                        "INSERT OR IGNORE INTO escalations(user_id, notification_id, step, destination_id, due_at, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        rusqlite::params![user_id, nid2, *step as i64, dest, due, body],
                    )?;
                    c.execute(
                        "INSERT OR IGNORE INTO deliveries(notification_id, user_id, destination_id, kind, status, reason, updated_at)
                         VALUES (?1, ?2, ?3, ?4, 'held', ?5, ?6)",
                        rusqlite::params![nid2, user_id, dest, kind, reason, now],
                    )?;
                }
                Ok(())
            })
            .await?;
        for (step, _, _, _, due) in rows {
            cx.set_reminder(&format!("{ESCALATE}{nid}:{step}"), due, String::new())
                .await?;
        }
        Ok(())
    }

    /// An acknowledged item escalates no further: its pending escalations are cancelled,
    /// and their records say so.
    async fn cancel_escalations(&mut self, nid: String, cx: &Context<Self>) {
        let user_id = self.user_id;
        let n2 = nid.clone();
        let steps = cx
            .env()
            .store
            .write(move |c| {
                let now = now_ms();
                let mut s = c.prepare_cached(
                    "DELETE FROM escalations WHERE user_id = ?1 AND notification_id = ?2
                     RETURNING step, destination_id",
                )?;
                let rows = s
                    .query_map(rusqlite::params![user_id, n2], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for (_, dest) in &rows {
                    c.execute(
                        "UPDATE deliveries SET status = 'cancelled', updated_at = ?4,
                                attempts = json_insert(attempts, '$[#]',
                                    json_object('at', ?4, 'ok', json('true'), 'cancelled', 'acknowledged before the escalation was due'))
                         WHERE notification_id = ?1 AND user_id = ?2 AND destination_id = ?3 AND status = 'held'",
                        rusqlite::params![n2, user_id, dest, now],
                    )?;
                }
                Ok(rows)
            })
            .await;
        match steps {
            Ok(steps) => {
                for (step, _) in steps {
                    let name = format!("{ESCALATE}{nid}:{step}");
                    if let Err(e) = cx.cancel_reminder(&name).await {
                        // It fires, finds no escalation row, and does nothing.
                        tracing::warn!(user_id, error = %e, "escalation reminder not cancelled");
                    }
                }
            }
            Err(e) => tracing::error!(user_id, error = %e, "escalations not cancelled"),
        }
    }

    /// An escalation is due: unless the item was acknowledged meanwhile, it goes to the
    /// step's destination now (quiet hours still apply).
    async fn escalate(&mut self, key: &str, cx: &Context<Self>) {
        let Some((nid, step)) = key
            .rsplit_once(':')
            .and_then(|(n, s)| Some((n.to_owned(), s.parse::<i64>().ok()?)))
        else {
            return;
        };
        let user_id = self.user_id;
        let n2 = nid.clone();
        let row = cx
            .env()
            .store
            .read(move |c| {
                c.query_row(
                    "SELECT e.destination_id, e.body, i.acked_at FROM escalations e
                     LEFT JOIN inbox i ON i.user_id = e.user_id AND i.notification_id = e.notification_id
                     WHERE e.user_id = ?1 AND e.notification_id = ?2 AND e.step = ?3",
                    rusqlite::params![user_id, n2, step],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)),
                )
                .optional()
            })
            .await;
        let (dest_id, body, acked) = match row {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(user_id, error = %e, "escalation not readable; retrying in 10 s");
                let _ = cx
                    .set_reminder(
                        &format!("{ESCALATE}{key}"),
                        now_ms() + 10_000,
                        String::new(),
                    )
                    .await;
                return;
            }
        };
        if acked.is_some() {
            self.cancel_escalations(nid, cx).await;
            return;
        }
        let dest = self.destinations.iter().find(|d| d.id == dest_id).cloned();
        let Ok(n) = serde_json::from_str::<Notification>(&body) else {
            return;
        };
        let reason = format!("escalated: not acknowledged in time ({key})");
        let targets = match dest {
            // Still usable: it may have been disabled or broken since the plan was made.
            Some(d) if d.options.enabled && d.config.is_ok() && !d.needs_verification() => {
                vec![Target {
                    destination: d,
                    reason,
                }]
            }
            _ => Vec::new(),
        };
        let targets = match self.shape(&n, targets, cx).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(user_id, error = %e, "escalation not held; retrying in 10 s");
                let _ = cx
                    .set_reminder(
                        &format!("{ESCALATE}{key}"),
                        now_ms() + 10_000,
                        String::new(),
                    )
                    .await;
                return;
            }
        };
        let items: Vec<outbox::Item> = targets
            .iter()
            .map(|t| {
                cx.env().outbox.item(
                    &t.destination,
                    n.clone(),
                    Purpose::Delivery,
                    t.reason.clone(),
                )
            })
            .collect();
        let n3 = nid.clone();
        let written = cx
            .env()
            .store
            .write(move |c| {
                let woken = outbox::insert_items(c, user_id, &items)?;
                c.execute(
                    "DELETE FROM escalations WHERE user_id = ?1 AND notification_id = ?2 AND step = ?3",
                    rusqlite::params![user_id, n3, step],
                )?;
                Ok(woken)
            })
            .await;
        match written {
            Ok(woken) => woken.into_iter().for_each(|id| cx.env().outbox.wake(id)),
            Err(e) => {
                tracing::error!(user_id, error = %e, "escalation not queued; retrying in 10 s");
                let _ = cx
                    .set_reminder(
                        &format!("{ESCALATE}{key}"),
                        now_ms() + 10_000,
                        String::new(),
                    )
                    .await;
            }
        }
    }

    async fn put_rules(&mut self, rules: Rules, cx: &Context<Self>) -> Result<Rules> {
        rules.validate(&self.destinations)?;
        let user_id = self.user_id;
        let json = serde_json::to_string(&rules).map_err(|e| Error::Invalid(e.to_string()))?;
        cx.env()
            .store
            .write(move |c| UserDoc::Rules.save(c, user_id, &json))
            .await?;
        self.rules = rules;
        Ok(self.rules.clone())
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

    fn destination(&self, id: &str) -> Result<(usize, Arc<Destination>)> {
        self.destinations
            .iter()
            .position(|d| d.id == id)
            .map(|i| (i, self.destinations[i].clone()))
            .ok_or_else(|| Error::NotFound("destination".into()))
    }

    async fn add_destination(
        &mut self,
        new: NewDestination,
        cx: &Context<Self>,
    ) -> Result<Arc<Destination>> {
        let name = destinations::validate_name(&new.name)?;
        new.options.validate()?;
        if self.destinations.len() >= destinations::MAX_DESTINATIONS {
            return Err(Error::Invalid(format!(
                "at most {} destinations per user",
                destinations::MAX_DESTINATIONS
            )));
        }
        if self.destinations.iter().any(|d| d.name == name) {
            return Err(Error::Conflict(format!("destination {name:?}")));
        }
        let d = Destination {
            id: format!("dst_{}", NotificationId::new(now_ms())),
            user_id: self.user_id,
            name,
            kind: new.config.kind().to_owned(),
            options: new.options,
            verified_at: None,
            created_at: now_ms(),
            config: Ok(new.config),
        };
        let code = (d.needs_verification() && d.kind != "xmpp").then(destinations::new_code);
        let secrets = cx.env().secrets.clone();
        let (row, c2) = (d.clone(), code.clone());
        cx.env()
            .store
            .write(move |c| destinations::insert(c, &secrets, &row, c2.as_deref()))
            .await?;
        let d = Arc::new(d);
        self.destinations.push(d.clone());
        if let Ok(DestinationConfig::Xmpp(x)) = &d.config {
            // Consent is the user approving our presence subscription, not a code.
            if let Some(agent) = cx.env().xmpp() {
                agent.watch(&x.jid, self.user_id, &d.id).await;
            }
        } else if let Some(code) = code {
            self.queue_code(&d, &code, cx).await?;
        }
        Ok(d)
    }

    async fn queue_code(&self, d: &Destination, code: &str, cx: &Context<Self>) -> Result<()> {
        let minutes = destinations::CODE_TTL_MS / 60_000;
        let n = service_notification(
            "tidings verification code",
            format!(
                "Your tidings code for the destination {:?} is {code}. It expires in {minutes} minutes. If you did not add this destination, ignore this message.",
                d.name
            ),
        );
        cx.env()
            .outbox
            .enqueue_direct(d, n, Purpose::Verification)
            .await
    }

    async fn update_destination(
        &mut self,
        id: &str,
        patch: DestinationPatch,
        cx: &Context<Self>,
    ) -> Result<Arc<Destination>> {
        let (i, current) = self.destination(id)?;
        let mut d = (*current).clone();
        if let Some(name) = patch.name {
            let name = destinations::validate_name(&name)?;
            if self
                .destinations
                .iter()
                .any(|x| x.name == name && x.id != d.id)
            {
                return Err(Error::Conflict(format!("destination {name:?}")));
            }
            d.name = name;
        }
        if let Some(options) = patch.options {
            options.validate()?;
            d.options = options;
        }
        let row = d.clone();
        cx.env()
            .store
            .write(move |c| destinations::update(c, &row))
            .await?;
        let d = Arc::new(d);
        self.destinations[i] = d.clone();
        Ok(d)
    }

    async fn remove_destination(
        &mut self,
        id: &str,
        cx: &Context<Self>,
    ) -> Result<Arc<Destination>> {
        let (i, d) = self.destination(id)?;
        let row = d.clone();
        cx.env()
            .store
            .write(move |c| destinations::remove(c, &row))
            .await?;
        cx.env().outbox.forget(&d.id);
        if let (Ok(DestinationConfig::Xmpp(x)), Some(agent)) = (&d.config, cx.env().xmpp()) {
            agent.unwatch(&x.jid, &d.id).await;
        }
        self.destinations.remove(i);
        Ok(d)
    }

    async fn verify_destination(
        &mut self,
        id: &str,
        code: String,
        cx: &Context<Self>,
    ) -> Result<Arc<Destination>> {
        let (i, current) = self.destination(id)?;
        if !current.needs_verification() {
            return Ok(current);
        }
        if current.kind == "xmpp" {
            let from = cx.env().xmpp().map(|a| a.our_jid()).unwrap_or_default();
            return Err(Error::Invalid(format!(
                "an XMPP destination is verified by approving the subscription request from {from} in your XMPP client (POST .../code sends it again)"
            )));
        }
        let row = current.clone();
        let check = cx
            .env()
            .store
            .write(move |c| destinations::check_code(c, &row, &code))
            .await?;
        match check {
            CodeCheck::Verified(at) => {
                let mut d = (*current).clone();
                d.verified_at = Some(at);
                let d = Arc::new(d);
                self.destinations[i] = d.clone();
                Ok(d)
            }
            CodeCheck::Wrong { attempts_left } => Err(Error::Invalid(format!(
                "wrong code; {attempts_left} attempts left before a new code is needed"
            ))),
            CodeCheck::Expired => Err(Error::Invalid(
                "the code expired or was entered wrong too often; ask for a new one".into(),
            )),
            CodeCheck::NoCode => Err(Error::Invalid(
                "no code is pending for this destination; ask for one".into(),
            )),
        }
    }

    async fn send_code(&mut self, id: &str, cx: &Context<Self>) -> Result<()> {
        let (_, d) = self.destination(id)?;
        if !d.needs_verification() {
            return Err(Error::Invalid(
                "this destination is verified already".into(),
            ));
        }
        if let (Ok(DestinationConfig::Xmpp(x)), Some(agent)) = (&d.config, cx.env().xmpp()) {
            agent.resubscribe(&x.jid).await;
            return Ok(());
        }
        let code = destinations::new_code();
        let (row, c2) = (d.clone(), code.clone());
        let stored = cx
            .env()
            .store
            .write(move |c| destinations::store_new_code(c, &row, &c2))
            .await?;
        if !stored {
            return Err(Error::TooSoon(format!(
                "a code was sent less than {} s ago",
                destinations::CODE_RESEND_MS / 1000
            )));
        }
        self.queue_code(&d, &code, cx).await
    }

    async fn test_destination(&mut self, id: &str, cx: &Context<Self>) -> Result<NotificationId> {
        let (_, d) = self.destination(id)?;
        if d.needs_verification() {
            return Err(Error::Invalid(
                "verify this destination first (enter the code sent to it)".into(),
            ));
        }
        if let Err(e) = &d.config {
            return Err(Error::Invalid(e.clone()));
        }
        let n = service_notification(
            "tidings test",
            format!(
                "This is a test message for the destination {:?}. If you can read it, it works.",
                d.name
            ),
        );
        let id = n.id.clone();
        cx.env().outbox.enqueue_direct(&d, n, Purpose::Test).await?;
        Ok(id)
    }

    /// What a reply is for: `(notification id, source id)` by one query whose `?1` is `key`
    /// and `?2` this user.
    async fn reply_target(
        &self,
        cx: &Context<Self>,
        sql: &'static str,
        key: String,
    ) -> tidings_store::Result<Option<(String, String)>> {
        let user_id = self.user_id;
        cx.env()
            .store
            .read(move |c| {
                c.query_row(sql, rusqlite::params![key, user_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
            })
            .await
    }

    /// A reply by mail: recorded as an ack and an event, then handed to the source's reply
    /// path, which answers `ack` once the reply went on.
    async fn mail_reply(
        &mut self,
        raw_b64: String,
        token_hash: String,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        let row = self
            .reply_target(
                cx,
                "SELECT t.notification_id, i.source_id FROM reply_tokens t
                 JOIN inbox i ON i.user_id = t.user_id AND i.notification_id = t.notification_id
                 WHERE t.token_hash = ?1 AND t.user_id = ?2",
                token_hash,
            )
            .await;
        let (nid, source_id) = match row {
            Ok(Some(r)) => r,
            Ok(None) => {
                // The notification left the history (or the address was revoked) after
                // the listener accepted the reply: nothing to attach it to.
                tracing::warn!(
                    user_id = self.user_id,
                    "reply to a notification no longer in history"
                );
                ack.ack();
                return;
            }
            Err(e) => {
                ack.nack(e.to_string());
                return;
            }
        };
        let parsed = tokio::task::spawn_blocking(move || {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(raw_b64)
                .map(|raw| {
                    let m = tidings_sources::mail::parse_mail(&raw);
                    tidings_sources::mail::reply_text(&m.text)
                })
        })
        .await;
        let text = match parsed {
            Ok(Ok(t)) => tidings_core::notification::truncate_chars(&t, 4000),
            Ok(Err(e)) => {
                ack.nack(format!("queued reply is not base64: {e}"));
                return;
            }
            Err(e) => {
                ack.nack(format!("reply parser failed: {e}"));
                return;
            }
        };
        self.reply(nid, source_id, "email", text, ack, cx).await;
    }

    /// A text reply through the API or IM.
    async fn text_reply(
        &mut self,
        nid: String,
        via: String,
        text: String,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        let user_id = self.user_id;
        let source = self
            .reply_target(
                cx,
                "SELECT notification_id, source_id FROM inbox
                 WHERE notification_id = ?1 AND user_id = ?2",
                nid.clone(),
            )
            .await
            .map(|r| r.map(|(_, source)| source));
        let via: &'static str = match via.as_str() {
            "xmpp" => "xmpp",
            _ => "api",
        };
        match source {
            Ok(Some(source_id)) => self.reply(nid, source_id, via, text, ack, cx).await,
            Ok(None) => {
                tracing::warn!(user_id, "reply to a notification no longer in history");
                ack.ack();
            }
            Err(e) => ack.nack(e.to_string()),
        }
    }

    /// A reply by SMS to a destination: an ack word (`ack`, `ok`, `yes`) acknowledges the
    /// newest notification delivered there; any other text is also a reply to it.
    async fn sms_reply(
        &mut self,
        destination_id: String,
        text: String,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        let row = self
            .reply_target(
                cx,
                "SELECT d.notification_id, i.source_id FROM deliveries d
                 JOIN inbox i ON i.user_id = d.user_id AND i.notification_id = d.notification_id
                 WHERE d.destination_id = ?1 AND d.user_id = ?2 AND d.status = 'delivered'
                 ORDER BY d.updated_at DESC LIMIT 1",
                destination_id,
            )
            .await;
        let (nid, source_id) = match row {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.notice(
                    "Your SMS was not matched".into(),
                    format!("An SMS reply ({text:?}) arrived, but nothing was delivered to that phone yet."),
                    cx,
                )
                .await;
                ack.ack();
                return;
            }
            Err(e) => {
                ack.nack(e.to_string());
                return;
            }
        };
        let word = text
            .trim()
            .trim_end_matches(['.', '!'])
            .to_ascii_lowercase();
        let text = if matches!(word.as_str(), "ack" | "ok" | "okay" | "yes" | "y" | "done") {
            String::new()
        } else {
            text
        };
        self.reply(nid, source_id, "sms", text, ack, cx).await;
    }

    /// A user's reply to a notification, from any channel: recorded as an ack and a
    /// `replied` event, then handed to the source's reply path (an empty text is an ack and
    /// nothing more). `ack` is answered once the reply went on.
    async fn reply(
        &mut self,
        nid: String,
        source_id: String,
        via: &'static str,
        text: String,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        let user_id = self.user_id;
        let Some(id) = NotificationId::parse(&nid) else {
            ack.nack(format!("bad notification id {nid:?}"));
            return;
        };
        if let Err(e) = self.ack(id, via, cx).await {
            ack.nack(e.to_string());
            return;
        }
        if text.trim().is_empty() {
            ack.ack();
            return;
        }
        let (n2, s2, t2) = (nid.clone(), source_id.clone(), text.clone());
        let recorded = cx
            .env()
            .store
            .write(move |c| {
                c.execute(
                    "INSERT INTO events(time, kind, user_id, source_id, notification_id, data)
                     VALUES (?1, 'replied', ?2, ?3, ?4, json_object('via', ?5, 'text', ?6))",
                    rusqlite::params![now_ms(), user_id, s2, n2, via, t2],
                )
            })
            .await;
        if let Err(e) = recorded {
            ack.nack(e.to_string());
            return;
        }
        let msg = SourceMsg::Reply {
            notification_id: nid,
            user_id,
            text,
            ack,
        };
        if let Err(e) = cx
            .env()
            .sources()
            .tell(&source_avatar(&source_id), msg)
            .await
        {
            // The message and its ack were dropped: the queue redelivers the reply.
            tracing::warn!(user_id, error = %e, "cannot hand reply to its source");
        }
    }

    /// Puts a message from tidings itself into the user's history and live streams.
    async fn notice(&mut self, title: String, message: String, cx: &Context<Self>) {
        let mut n = service_notification(&title, message);
        n.source = format!("tidings:{}", self.user_id);
        let row = n.clone();
        let body = serde_json::to_string(&n).unwrap_or_default();
        let stored = cx
            .env()
            .store
            .write(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO notifications(id, source_id, time, priority, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![
                        row.id.as_str(),
                        row.source,
                        row.time * 1000,
                        row.priority.as_number(),
                        body
                    ],
                )
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(user_id = self.user_id, error = %e, "notice not stored");
            return;
        }
        let d = Delivery {
            user_id: self.user_id,
            notification: Arc::new(n),
            subscription: None,
            targets: Vec::new(),
        };
        for agent in cx.env().agents() {
            agent.deliver(&d, Ack::none()).await;
        }
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

/// Deletes rows of `table` by `seq`.
fn delete_seqs(c: &rusqlite::Connection, table: &str, seqs: &[i64]) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached(&format!("DELETE FROM {table} WHERE seq = ?1"))?;
    for s in seqs {
        stmt.execute([s])?;
    }
    Ok(())
}

/// A message from tidings itself (a test, a verification code).
fn service_notification(title: &str, message: String) -> Notification {
    let now = now_ms();
    Notification {
        id: NotificationId::new(now),
        time: now / 1000,
        event: "message".into(),
        source: "tidings".into(),
        topic: None,
        title: Some(title.to_owned()),
        message,
        priority: tidings_core::Priority::High,
        tags: Vec::new(),
        click: None,
        actions: Vec::new(),
        author: Some("tidings".into()),
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
