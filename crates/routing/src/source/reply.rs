//! The reply path of a source: where a user's reply to one of its notifications goes. For
//! mail (SMTP addresses and IMAP mailboxes) the reply text is mailed to the original sender
//! (its Reply-To, else its From), from the user's tidings address, threaded with
//! In-Reply-To. For a topic, the publisher's `Reply-To-Url` (given when publishing) is
//! called with a JSON body signed with the topic's reply key. Feeds and pages have no reply
//! path: the user is told so in their history.
//! The reply counts as an ack either way (the user avatar records that first).

use tidings_bus::ack::Ack;
use tidings_bus::avatars::Context;
use tidings_core::Notification;
use tidings_sinks::Outcome;
use tidings_sinks::mailto::PlainMail;
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{now_ms, rusqlite};

use super::SourceAvatar;
use super::mail::{MailOrigin, store_origin};
use crate::services::Services;
use crate::user::UserMsg;

impl SourceAvatar {
    /// Stores where a mail came from, in the same group commit as its notification.
    pub(super) async fn remember_origin(
        &self,
        n: &Notification,
        o: MailOrigin,
        ack: &Ack,
        cx: &Context<Self>,
    ) {
        let own = ack.share();
        let (source, id) = (self.source_id.clone(), n.id.as_str().to_owned());
        let r = cx
            .env()
            .store
            .submit(
                move |c| store_origin(c, &source, &id, &o),
                move |r| own.settle(r),
            )
            .await;
        if let Err(e) = r {
            tracing::error!(source = %self.source_id, error = %e, "mail origin not stored");
        }
    }

    /// Stores a publisher's `Reply-To-Url`, in the same group commit as its notification.
    pub(super) async fn remember_reply_url(
        &self,
        n: &Notification,
        url: String,
        ack: &Ack,
        cx: &Context<Self>,
    ) {
        let own = ack.share();
        let id = n.id.as_str().to_owned();
        let r = cx
            .env()
            .store
            .submit(
                move |c| {
                    c.execute(
                        "INSERT OR IGNORE INTO reply_paths(notification_id, url, created_at) VALUES (?1, ?2, ?3)",
                        rusqlite::params![id, url, now_ms()],
                    )
                    .map(|_| ())
                },
                move |r| own.settle(r),
            )
            .await;
        if let Err(e) = r {
            tracing::error!(source = %self.source_id, error = %e, "reply URL not stored");
        }
    }

    pub(super) async fn reply(
        &mut self,
        notification_id: String,
        user_id: i64,
        text: String,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        if let Some(topic) = self.topic.clone() {
            self.reply_to_publisher(topic, notification_id, user_id, text, ack, cx)
                .await;
            return;
        }
        let is_mail = self.source_id.starts_with("mail:") || self.source_id.starts_with("imap:");
        if !is_mail {
            no_reply_path(
                cx,
                user_id,
                &notification_id,
                &self.source_id,
                "this source has no reply path; your reply was recorded as an acknowledgement",
            )
            .await;
            ack.ack();
            return;
        }
        let env = cx.env();
        let nid = notification_id.clone();
        let origin = env
            .store
            .read(move |c| {
                c.query_row(
                    "SELECT reply_address, message_id, subject FROM mail_origins WHERE notification_id = ?1",
                    [&nid],
                    |r| {
                        Ok(MailOrigin {
                            reply_address: r.get(0)?,
                            message_id: r.get(1)?,
                            subject: r.get(2)?,
                        })
                    },
                )
                .optional()
            })
            .await;
        let origin = match origin {
            Ok(Some(o)) => o,
            Ok(None) => {
                no_reply_path(
                    cx,
                    user_id,
                    &notification_id,
                    &self.source_id,
                    "the mail named no address to reply to; your reply was recorded as an acknowledgement",
                )
                .await;
                ack.ack();
                return;
            }
            Err(e) => {
                ack.nack(format!("mail origin not readable: {e}"));
                return;
            }
        };
        let user = env.directory.user(user_id).map(|u| u.name);
        let domain = env.outbox.config().mail_domain.clone();
        let (Some(user), Some(domain)) = (user, domain) else {
            no_reply_path(
                cx,
                user_id,
                &notification_id,
                &self.source_id,
                "this server has no mail domain to send your reply from",
            )
            .await;
            ack.ack();
            return;
        };
        let thread = origin.message_id.as_ref().map(|m| format!("<{m}>"));
        let subject = if origin.subject.to_ascii_lowercase().starts_with("re:") {
            origin.subject.clone()
        } else {
            format!("Re: {}", origin.subject)
        };
        let mail = PlainMail {
            from: format!("{user}@{domain}"),
            to: origin.reply_address.clone(),
            subject,
            text,
            in_reply_to: thread.clone(),
            references: thread.into_iter().collect(),
            reply_to: None,
        };
        // Sending waits on the relay: in a task of its own, never in the avatar. The ingest
        // item stays queued until the relay took the mail, so a crash resends it.
        let services = env.clone();
        let users = services.users().clone();
        let source_id = self.source_id.clone();
        tokio::spawn(async move {
            let outcome = services.outbox.sinks().send_mail(&mail).await;
            let relay = Relayed {
                user_id,
                notification_id,
                source_id,
                to: mail.to.clone(),
                what: format!("Your reply to {}", mail.to),
            };
            relay.settle(&services, &users, outcome, ack).await;
        });
    }
}

impl SourceAvatar {
    /// A topic's reply path: the publisher's `Reply-To-Url`, called with a signed JSON body
    /// (the key is the topic's reply key, shown to its owner).
    async fn reply_to_publisher(
        &mut self,
        topic: String,
        notification_id: String,
        user_id: i64,
        text: String,
        ack: Ack,
        cx: &Context<Self>,
    ) {
        let env = cx.env();
        let nid = notification_id.clone();
        let url = env
            .store
            .read(move |c| {
                c.query_row(
                    "SELECT url FROM reply_paths WHERE notification_id = ?1",
                    [&nid],
                    |r| r.get::<_, String>(0),
                )
                .optional()
            })
            .await;
        let url = match url {
            Ok(Some(u)) => u,
            Ok(None) => {
                no_reply_path(
                    cx,
                    user_id,
                    &notification_id,
                    &self.source_id,
                    "its publisher gave no Reply-To-Url; your reply was recorded as an acknowledgement",
                )
                .await;
                ack.ack();
                return;
            }
            Err(e) => {
                ack.nack(format!("reply path not readable: {e}"));
                return;
            }
        };
        let user = env
            .directory
            .user(user_id)
            .map(|u| u.name)
            .unwrap_or_default();
        let body = serde_json::json!({
            "type": "reply",
            "notification_id": notification_id,
            "topic": topic,
            "user": user,
            "text": text,
            "time": now_ms() / 1000,
        });
        let key = topic_reply_key(&env.secrets, &topic);
        let services = env.clone();
        let users = services.users().clone();
        let source_id = self.source_id.clone();
        tokio::spawn(async move {
            let id = format!("reply-{notification_id}-{user_id}");
            let outcome = services
                .outbox
                .sinks()
                .post_signed_json(&url, &key, &id, &body)
                .await;
            let relay = Relayed {
                user_id,
                notification_id,
                source_id,
                to: "reply_url".into(),
                what: format!("Your reply to the publisher of {topic}"),
            };
            relay.settle(&services, &users, outcome, ack).await;
        });
    }
}

/// A reply handed to a reply path (a relay, a callback), and what to do with its outcome.
struct Relayed {
    user_id: i64,
    notification_id: String,
    source_id: String,
    /// Where it went, for the event (an address, `reply_url`).
    to: String,
    /// The start of the note to the user if it fails ("Your reply to bob@example.org").
    what: String,
}

impl Relayed {
    /// Retry: nack (the ingest queue brings the reply back later). Delivered or failed for
    /// good: an event, a note in the user's history when it failed, and the ack.
    async fn settle(
        self,
        services: &Services,
        users: &tidings_bus::avatars::Runtime<crate::user::UserAvatar>,
        outcome: Outcome,
        ack: Ack,
    ) {
        let (kind, detail) = match outcome {
            Outcome::Delivered { .. } => ("reply_relayed", String::new()),
            Outcome::Retry { error, .. } => {
                ack.nack(format!("passing the reply on: {error}"));
                return;
            }
            Outcome::Failed { error, .. } => ("reply_failed", error),
        };
        let Relayed {
            user_id,
            notification_id,
            source_id,
            to,
            what,
        } = self;
        let why = detail.clone();
        let r = services
            .store
            .write(move |c| {
                c.execute(
                    "INSERT INTO events(time, kind, user_id, source_id, notification_id, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, json_object('to', ?6, 'error', ?7))",
                    rusqlite::params![now_ms(), kind, user_id, source_id, notification_id, to, why],
                )
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "reply event not recorded");
        }
        if kind == "reply_failed" {
            let msg = UserMsg::Notice {
                title: "Your reply was not sent".into(),
                message: format!(
                    "{what} could not be passed on: {detail}. It was recorded as an acknowledgement."
                ),
            };
            let _ = users
                .tell(&tidings_core::ids::user_avatar(user_id), msg)
                .await;
        }
        ack.ack();
    }
}

/// The key a topic's reply callbacks are signed with (shown to the topic's owner).
pub fn topic_reply_key(secrets: &tidings_store::SecretBox, topic: &str) -> String {
    secrets.derive(&format!("topic-reply:{topic}"))
}

/// Records that a reply had nowhere to go, and tells the user in their history.
async fn no_reply_path(
    cx: &Context<SourceAvatar>,
    user_id: i64,
    notification_id: &str,
    source_id: &str,
    why: &str,
) {
    let env = cx.env();
    let (nid, src, reason) = (
        notification_id.to_owned(),
        source_id.to_owned(),
        why.to_owned(),
    );
    let r = env
        .store
        .write(move |c| {
            c.execute(
                "INSERT INTO events(time, kind, user_id, source_id, notification_id, data)
                 VALUES (?1, 'reply_unroutable', ?2, ?3, ?4, json_object('reason', ?5))",
                rusqlite::params![now_ms(), user_id, src, nid, reason],
            )
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "reply event not recorded");
    }
    let msg = UserMsg::Notice {
        title: "Your reply was not forwarded".into(),
        message: format!("Reply to a notification from {source_id}: {why}."),
    };
    let _ = env
        .users()
        .tell(&tidings_core::ids::user_avatar(user_id), msg)
        .await;
}
