//! The source avatar: one per source (a topic, a feed or watched page, a mail address, an
//! IMAP mailbox). It owns the source's subscribers and their filters, writes each
//! notification's content once, and sends one delivery per matching subscriber to that
//! user's avatar. Each kind's own state and run loop is a module: `web` (feeds, pages),
//! `mail` (mail to tidings' SMTP address), `imap` (a user's mailbox); `reply` is where a
//! user's reply to a notification goes.
//!
//! It answers the ingest item's ack through shares: its own (the notification row is
//! durable) and one per subscriber (that user's agents made the delivery durable). The item
//! leaves the queue only when all of them are answered.

pub mod imap;
pub mod mail;
pub mod reply;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tidings_bus::ack::Ack;
use tidings_bus::avatars::{Avatar, BoxError, Context};
use tidings_core::ids::{source_avatar, user_avatar};
use tidings_core::{Filter, Notification};
use tidings_store::{now_ms, rusqlite};
use tokio::sync::oneshot;

use crate::ingest::Ingest;
use crate::services::Services;
use crate::user::{SourceSpec, UserMsg};
use imap::{ImapMsg, ImapSource, ImapStatus};
use web::{Fetched, WebSource};

/// The reminder that wakes a web source for its next poll.
const POLL: &str = "poll";
/// The reminder that renews a WebSub lease.
const WEBSUB_RENEW: &str = "websub-renew";

/// The state of a polled or connected source, for `GET /api/v1/subscriptions/{id}`: a
/// feed's or page's poll status, or a mailbox's (the same fields and its own).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum SourceStatus {
    Web(tidings_sources::feed::PollStatus),
    Imap(ImapStatus),
}

#[derive(Debug, Clone)]
struct Subscriber {
    subscription: String,
    filter: Filter,
}

/// Messages to a source avatar.
#[derive(Debug)]
pub enum SourceMsg {
    Ingest {
        ingest: Ingest,
        ack: Ack,
    },
    /// Adds or replaces a user's subscription (idempotent). `spec` tells a new web source
    /// what to fetch.
    Subscribe {
        user_id: i64,
        subscription: String,
        filter: Filter,
        spec: Option<SourceSpec>,
    },
    Unsubscribe {
        user_id: i64,
    },
    /// How many users are subscribed (status pages, tests).
    CountSubscribers {
        reply: oneshot::Sender<usize>,
    },
    /// The poll state of a web or IMAP source (`None` for a topic or a mail address).
    Status {
        reply: oneshot::Sender<Option<SourceStatus>>,
    },
    /// The IMAP connection task, or the subscribe-time check of a mailbox.
    Imap(ImapMsg),
    /// A fetch task finished.
    Fetched(Box<Fetched>),
    /// A hub verifies our intent (`GET /websub/<id>?hub.mode=...`): answer whether to echo
    /// the challenge.
    WebSubVerify {
        mode: String,
        topic: String,
        lease_seconds: Option<u64>,
        reply: oneshot::Sender<bool>,
    },
    /// A hub pushes content (`POST /websub/<id>`). Answered once new items are durable, or
    /// with why the push was refused.
    WebSubPush {
        body: Vec<u8>,
        signature: Option<String>,
        content_type: Option<String>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The subscription request to a hub failed.
    WebSubFailed {
        hub: String,
        reason: String,
    },
    /// A user's reply to one of this source's notifications, for its reply path. The ack
    /// is answered once the reply went on (or was found to have nowhere to go).
    Reply {
        notification_id: String,
        user_id: i64,
        text: String,
        ack: Ack,
    },
}

pub struct SourceAvatar {
    source_id: String,
    topic: Option<String>,
    subscribers: HashMap<i64, Subscriber>,
    /// Feeds and watched pages; `None` for topics.
    web: Option<WebSource>,
    /// IMAP mailboxes.
    imap: Option<ImapSource>,
}

impl Avatar for SourceAvatar {
    type Msg = SourceMsg;
    type Env = Services;
    const KIND: &'static str = "source";

    async fn activate(id: &str, cx: &Context<Self>) -> Result<Self, BoxError> {
        let source_id = id
            .strip_prefix("source:")
            .ok_or_else(|| format!("{id:?} is not a source avatar id"))?
            .to_owned();
        let topic = source_id.strip_prefix("topic:").map(str::to_owned);
        let sid = source_id.clone();
        let rows: Vec<(i64, String, String)> = cx
            .env()
            .store
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT user_id, id, filter FROM subscriptions WHERE source_id = ?1",
                )?;
                st.query_map([sid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .await?;
        let mut subscribers = HashMap::with_capacity(rows.len());
        for (user_id, subscription, filter) in rows {
            let filter = serde_json::from_str(&filter).unwrap_or_else(|e| {
                tracing::error!(%subscription, error = %e, "unreadable filter; delivering unfiltered");
                Filter::default()
            });
            subscribers.insert(
                user_id,
                Subscriber {
                    subscription,
                    filter,
                },
            );
        }
        // The owner of a mail address always receives its mail; an explicit subscription
        // (loaded above) only adds a filter.
        if let Some(owner) = mail::owner(&source_id) {
            subscribers.entry(owner).or_insert_with(|| Subscriber {
                subscription: format!("mail-owner:{owner}"),
                filter: Filter::default(),
            });
        }
        let web = if source_id.starts_with("feed:") || source_id.starts_with("page:") {
            WebSource::load(&cx.env().store, &source_id).await?
        } else {
            None
        };
        let imap = if source_id.starts_with("imap:") {
            Some(ImapSource::load(cx.env(), &source_id).await?)
        } else {
            None
        };
        Ok(SourceAvatar {
            source_id,
            topic,
            subscribers,
            web,
            imap,
        })
    }

    async fn handle(&mut self, msg: SourceMsg, cx: &Context<Self>) {
        match msg {
            SourceMsg::Ingest { ingest, ack } => match ingest {
                Ingest::Publish {
                    notification,
                    bypass_filters,
                    reply_url,
                } => {
                    if let Some(url) = reply_url {
                        self.remember_reply_url(&notification, url, &ack, cx).await;
                    }
                    self.publish(notification, bypass_filters, ack, cx).await
                }
                Ingest::Mail {
                    raw_b64,
                    label,
                    received_at,
                    ..
                } => {
                    let source_id = self.source_id.clone();
                    let parsed = tokio::task::spawn_blocking(move || {
                        mail::notification(&source_id, &raw_b64, received_at, label.as_deref())
                    })
                    .await;
                    match parsed {
                        Ok(Ok((n, origin))) => {
                            if let Some(o) = origin {
                                self.remember_origin(&n, o, &ack, cx).await;
                            }
                            self.publish(n, false, ack, cx).await
                        }
                        Ok(Err(e)) => ack.nack(e),
                        Err(e) => ack.nack(format!("mail parser failed: {e}")),
                    }
                }
                Ingest::Reply { .. } | Ingest::SmsReply { .. } | Ingest::TextReply { .. } => {
                    ack.nack("a reply is for a user avatar, not a source")
                }
            },
            SourceMsg::Reply {
                notification_id,
                user_id,
                text,
                ack,
            } => self.reply(notification_id, user_id, text, ack, cx).await,
            SourceMsg::Subscribe {
                user_id,
                subscription,
                filter,
                spec,
            } => {
                self.subscribers.insert(
                    user_id,
                    Subscriber {
                        subscription,
                        filter,
                    },
                );
                if let Some(i) = &mut self.imap {
                    i.subscribed(&self.source_id, spec.as_ref(), cx).await;
                }
                self.web_subscribed(spec, cx).await;
            }
            SourceMsg::Unsubscribe { user_id } => {
                self.subscribers.remove(&user_id);
                if self.subscribers.is_empty()
                    && let Some(i) = &mut self.imap
                {
                    i.unsubscribed(&self.source_id, cx).await;
                }
                if self.subscribers.is_empty() && self.web.is_some() {
                    // Nobody listens: stop polling (the state stays for a later subscriber).
                    if let Err(e) = cx.cancel_reminder(POLL).await {
                        tracing::warn!(source = %self.source_id, error = %e, "poll reminder not cancelled");
                    }
                }
            }
            SourceMsg::CountSubscribers { reply } => {
                let _ = reply.send(self.subscribers.len());
            }
            SourceMsg::Status { reply } => {
                let status = match (&self.web, &self.imap) {
                    (Some(w), _) => Some(SourceStatus::Web(w.state.status())),
                    (None, Some(i)) => Some(SourceStatus::Imap(i.status())),
                    (None, None) => None,
                };
                let _ = reply.send(status);
            }
            SourceMsg::Imap(m) => {
                let watched = !self.subscribers.is_empty();
                if let Some(i) = &mut self.imap {
                    i.handle(&self.source_id, m, watched, cx).await;
                } else if let ImapMsg::Fetched { reply, .. } = m {
                    let _ = reply.send(false);
                }
            }
            SourceMsg::Fetched(f) => {
                if let Some(w) = &mut self.web {
                    w.fetching = false;
                }
                self.web_fetched(*f, cx).await;
            }
            SourceMsg::WebSubVerify {
                mode,
                topic,
                lease_seconds,
                reply,
            } => {
                let ok = self.websub_verify(&mode, &topic, lease_seconds, cx).await;
                let _ = reply.send(ok);
            }
            SourceMsg::WebSubPush {
                body,
                signature,
                content_type,
                reply,
            } => {
                let r = self.websub_push(body, signature, content_type, cx).await;
                let _ = reply.send(r);
            }
            SourceMsg::WebSubFailed { hub, reason } => {
                if let Some(w) = &mut self.web
                    && w.websub.as_ref().is_some_and(|s| s.hub == hub)
                {
                    tracing::warn!(source = %self.source_id, %hub, %reason, "WebSub subscription failed; polling only");
                    w.websub = None;
                    w.state.websub_until = None;
                    w.state.warnings.push(format!(
                        "WebSub hub {hub} refused the subscription: {reason}"
                    ));
                    w.save(&cx.env().store, &self.source_id).await;
                }
            }
        }
    }

    async fn on_reminder(&mut self, name: String, _payload: String, cx: &Context<Self>) {
        if name == imap::REMINDER {
            let watched = !self.subscribers.is_empty();
            if let Some(i) = &mut self.imap {
                i.on_reminder(&self.source_id, watched, cx).await;
            } else if let Err(e) = cx.cancel_reminder(imap::REMINDER).await {
                tracing::debug!(source = %self.source_id, error = %e, "stray imap reminder");
            }
        } else if name == POLL {
            self.start_poll(cx).await;
        } else if name == WEBSUB_RENEW {
            if let Some(w) = &mut self.web
                && let Some(sub) = w.websub.take()
            {
                let hub = sub.hub.clone();
                let topic = sub.topic.clone();
                self.websub_subscribe(hub, topic, cx).await;
            }
        } else {
            tracing::debug!(source = %self.source_id, %name, "unknown source reminder");
        }
    }

    async fn passivate(&mut self, cx: &Context<Self>) {
        // Every change is written through as it happens; nothing is held back. A live IMAP
        // session stops here and its reminder brings it back.
        if let Some(i) = &mut self.imap {
            i.passivate(&self.source_id, cx).await;
        }
    }
}

impl SourceAvatar {
    /// A subscriber arrived: a web source that is not polling starts now.
    async fn web_subscribed(&mut self, spec: Option<SourceSpec>, cx: &Context<Self>) {
        if self.web.is_none() {
            self.web = spec.as_ref().and_then(WebSource::from_spec);
        }
        let backfill = match &spec {
            Some(SourceSpec::Feed { backfill, .. } | SourceSpec::Page { backfill, .. }) => {
                *backfill as usize
            }
            _ => 0,
        };
        let Some(w) = &mut self.web else { return };
        w.backfill = w.backfill.max(backfill);
        if w.state.gone {
            return;
        }
        let due = w.state.next_poll.filter(|_| w.state.baselined);
        let at = due.unwrap_or_else(now_ms).min(now_ms() + 1000 * 3600 * 24);
        if let Err(e) = cx.set_reminder(POLL, at, String::new()).await {
            tracing::warn!(source = %self.source_id, error = %e, "poll reminder not set");
        }
    }

    /// Starts a fetch in a task of its own; its result comes back as `Fetched`.
    async fn start_poll(&mut self, cx: &Context<Self>) {
        let Some(w) = &mut self.web else { return };
        if w.fetching || w.state.gone || self.subscribers.is_empty() {
            return;
        }
        w.fetching = true;
        // A watchdog: if the process dies during the fetch, this reminder polls again after
        // the restart. The result of the fetch replaces it with the real next poll.
        let watchdog =
            now_ms() + 2 * cx.env().fetcher.config().total_timeout.as_millis() as i64 + 60_000;
        if let Err(e) = cx.set_reminder(POLL, watchdog, String::new()).await {
            tracing::warn!(source = %self.source_id, error = %e, "poll watchdog not set");
        }
        let env = cx.env().clone();
        let runtime = cx.runtime();
        let id = cx.id().to_owned();
        let (kind, req) = (w.kind.clone(), w.request());
        tokio::spawn(async move {
            let fetched = web::fetch_and_parse(&env.fetcher, kind, req).await;
            if let Err(e) = runtime
                .tell(&id, SourceMsg::Fetched(Box::new(fetched)))
                .await
            {
                tracing::debug!(source = %id, error = %e, "fetch result not delivered");
            }
        });
    }

    /// Applies a fetch (or push) result: new items and notices go to the durable queue as
    /// publishes to this avatar, then the poll state is saved and the next poll scheduled.
    async fn web_fetched(&mut self, f: Fetched, cx: &Context<Self>) {
        let Some(w) = &mut self.web else { return };
        let env = cx.env();
        let now = now_ms();
        let jitter: f64 = rand::random();
        let mut notices = Vec::new();
        if let Some(url) = f.moved_to {
            let t = w.state.on_outcome(
                tidings_sources::feed::Outcome::Moved { url },
                now,
                &env.schedule,
                0,
                jitter,
            );
            notices.extend(t.notice);
        }
        let ids: Vec<String> = match &f.outcome {
            tidings_sources::feed::Outcome::Fetched { item_ids, .. } => item_ids.clone(),
            _ => Vec::new(),
        };
        let t = w
            .state
            .on_outcome(f.outcome, now, &env.schedule, w.backfill, jitter);
        notices.extend(t.notice);
        let mut outgoing = Vec::new();
        for i in &t.new_items {
            if let Some(d) = f.drafts.get(*i) {
                debug_assert_eq!(ids.get(*i), Some(&d.key));
                outgoing.push((web::item_notification(&self.source_id, d, now), false));
            }
        }
        for n in &notices {
            outgoing.push((
                web::notice_notification(&self.source_id, &w.state, n, now),
                true,
            ));
        }
        // Durable first, then the state that says they were seen.
        let target = source_avatar(&self.source_id);
        for (n, bypass_filters) in outgoing {
            let payload = match serde_json::to_string(&Ingest::Publish {
                notification: n,
                bypass_filters,
                reply_url: None,
            }) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode item");
                    continue;
                }
            };
            if let Err(e) = env.queue().append(target.clone(), payload).await {
                // Not saving the state means the item is found again at the next poll.
                tracing::error!(source = %self.source_id, error = %e, "new item not queued");
                return;
            }
        }
        // A hub advertised and none subscribed (or a different one): subscribe.
        let want_hub = f.hubs.first().cloned().filter(|_| env.websub.is_some());
        let topic = f.self_url.clone().unwrap_or_else(|| w.state.url.clone());
        let resubscribe = match (&want_hub, &w.websub) {
            (Some(h), Some(s)) => s.hub != *h,
            (Some(_), None) => true,
            _ => false,
        };
        w.save(&env.store, &self.source_id).await;
        let r = match t.next_poll {
            Some(at) if !self.subscribers.is_empty() => {
                cx.set_reminder(POLL, at, String::new()).await
            }
            _ => cx.cancel_reminder(POLL).await,
        };
        if let Err(e) = r {
            tracing::warn!(source = %self.source_id, error = %e, "next poll not scheduled");
        }
        if resubscribe && let Some(hub) = want_hub {
            self.websub_subscribe(hub, topic, cx).await;
        }
    }

    /// Asks a hub for a subscription; the hub then verifies intent (`WebSubVerify`).
    async fn websub_subscribe(&mut self, hub: String, topic: String, cx: &Context<Self>) {
        let env = cx.env();
        let (Some(w), Some(cfg)) = (&mut self.web, env.websub.clone()) else {
            return;
        };
        let sub = tidings_sources::websub::Subscription::new(hub.clone(), topic, now_ms());
        let callback = format!(
            "{}/websub/{}",
            cfg.callback_base.trim_end_matches('/'),
            self.source_id
        );
        let form = sub.request_form(&callback, cfg.lease);
        w.websub = Some(sub);
        w.save(&env.store, &self.source_id).await;
        let fetcher = env.fetcher.clone();
        let runtime = cx.runtime();
        let id = cx.id().to_owned();
        tokio::spawn(async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let failure = match fetcher.post_form(&hub, &pairs).await {
                Ok((status, _)) if (200..300).contains(&status) => None,
                Ok((status, body)) => Some(format!("HTTP {status}: {body}")),
                Err(e) => Some(e.to_string()),
            };
            if let Some(reason) = failure {
                let _ = runtime
                    .tell(&id, SourceMsg::WebSubFailed { hub, reason })
                    .await;
            }
        });
    }

    async fn websub_verify(
        &mut self,
        mode: &str,
        topic: &str,
        lease_seconds: Option<u64>,
        cx: &Context<Self>,
    ) -> bool {
        let Some(w) = &mut self.web else { return false };
        let Some(sub) = &mut w.websub else {
            return false;
        };
        if !sub.verify_intent(mode, topic, lease_seconds, now_ms()) {
            return false;
        }
        w.state.websub_until = sub.lease_until;
        let renew = sub.renew_at();
        w.save(&cx.env().store, &self.source_id).await;
        if let Some(at) = renew
            && let Err(e) = cx.set_reminder(WEBSUB_RENEW, at, String::new()).await
        {
            tracing::warn!(source = %self.source_id, error = %e, "WebSub renewal not scheduled");
        }
        tracing::info!(source = %self.source_id, "WebSub subscription verified");
        true
    }

    async fn websub_push(
        &mut self,
        body: Vec<u8>,
        signature: Option<String>,
        content_type: Option<String>,
        cx: &Context<Self>,
    ) -> Result<(), String> {
        let allow_sha1 = cx.env().websub.as_ref().is_some_and(|c| c.allow_sha1);
        let Some(w) = &self.web else {
            return Err("no such subscription".into());
        };
        let Some(sub) = &w.websub else {
            return Err("no such subscription".into());
        };
        tidings_sources::websub::verify_signature(
            &sub.secret,
            signature.as_deref(),
            &body,
            allow_sha1,
        )
        .map_err(|e| e.to_string())?;
        let (kind, url) = (w.kind.clone(), w.state.url.clone());
        let (etag, last_modified) = (w.state.etag.clone(), w.state.last_modified.clone());
        let fetched = tokio::task::spawn_blocking(move || {
            web::parse_pushed(kind, &url, body, content_type, etag, last_modified)
        })
        .await
        .map_err(|e| format!("parser failed: {e}"))?;
        metrics::counter!("tidings_websub_pushes_total").increment(1);
        self.web_fetched(fetched, cx).await;
        Ok(())
    }

    async fn publish(
        &mut self,
        n: Notification,
        bypass_filters: bool,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        let env = cx.env();
        let n = Arc::new(n);
        let recipients: Vec<(i64, String)> = self
            .subscribers
            .iter()
            .filter(|(_, s)| bypass_filters || s.filter.matches(&n))
            .map(|(u, s)| (*u, s.subscription.clone()))
            .collect();

        // The content, once, and the events of publishing and routing it.
        let own = ack.share();
        let row = n.clone();
        let count = recipients.len();
        let body = match serde_json::to_string(&*n) {
            Ok(b) => b,
            Err(e) => {
                own.nack(format!("cannot encode notification: {e}"));
                return;
            }
        };
        let queued = env
            .store
            .submit(
                move |c| {
                    let new = c
                        .prepare_cached(
                            "INSERT OR IGNORE INTO notifications(id, source_id, time, priority, body)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(rusqlite::params![
                            row.id.as_str(),
                            row.source,
                            row.time * 1000,
                            row.priority.as_number(),
                            body
                        ])?;
                    if new == 1 {
                        let mut ev = c.prepare_cached(
                            "INSERT INTO events(time, kind, source_id, notification_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?;
                        let now = now_ms();
                        ev.execute(rusqlite::params![
                            now,
                            "published",
                            row.source,
                            row.id.as_str(),
                            serde_json::json!({"author": row.author, "priority": row.priority}).to_string()
                        ])?;
                        ev.execute(rusqlite::params![
                            now,
                            "routed",
                            row.source,
                            row.id.as_str(),
                            serde_json::json!({"recipients": count}).to_string()
                        ])?;
                    }
                    Ok(())
                },
                move |r| own.settle(r),
            )
            .await;
        if let Err(e) = queued {
            tracing::error!(source = %self.source_id, error = %e, "notification not stored");
        }

        if let Some(topic) = &self.topic {
            env.live.push_topic(topic, &n);
        }
        metrics::counter!("tidings_routed_total").increment(recipients.len() as u64);
        for (user_id, subscription) in recipients {
            let msg = UserMsg::Deliver {
                notification: n.clone(),
                subscription: Some(subscription),
                ack: ack.share(),
            };
            if let Err(e) = env.users().tell(&user_avatar(user_id), msg).await {
                // The share went down with the message: the item will be redelivered.
                tracing::warn!(user_id, error = %e, "delivery not handed to the user avatar");
            }
        }
        ack.ack();
    }
}
