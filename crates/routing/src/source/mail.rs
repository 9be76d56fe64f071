//! Mail sources inside the source avatar: `mail:<user id>` for mail to `<user>@<mail_domain>`
//! and `mail:<user id>:<label>` for `<user>+<label>@<mail_domain>`. The SMTP edge appends
//! each accepted message to the durable ingest queue (the 250 is sent after that); here it
//! becomes a notification: subject as title, the text (or the HTML turned to text) as the
//! message, the sender as author, attachments listed by name and size, and an id derived
//! from the Message-ID, so the same mail delivered twice is one notification.
//!
//! The owner of the address is always a subscriber of their own mail sources; an explicit
//! subscription (`{"kind": "mail", "label": ...}`) only adds a filter.

use std::sync::Arc;

use base64::Engine as _;
use tidings_core::ids::source_avatar;
use tidings_core::notification::truncate_chars;
use tidings_core::{Notification, NotificationId, Priority};
use tidings_sources::smtp::{AcceptedMail, BoxFuture, MailSink, Refusal};

use crate::ingest::Ingest;
use crate::services::Services;

/// Longest message text taken from a mail.
const MAX_MESSAGE_CHARS: usize = 4000;

/// The source id of a user's mail address, with an optional label.
pub fn source_id(user_id: i64, label: Option<&str>) -> String {
    match label {
        Some(l) => format!("mail:{user_id}:{}", l.to_ascii_lowercase()),
        None => format!("mail:{user_id}"),
    }
}

/// The owner of a mail source id.
pub fn owner(source_id: &str) -> Option<i64> {
    source_id
        .strip_prefix("mail:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// Where a mail came from, kept so a user's reply can be relayed to its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailOrigin {
    pub reply_address: String,
    pub message_id: Option<String>,
    pub subject: String,
}

/// Builds the notification of a raw message (base64 in the queue payload), and its origin
/// when the mail names an address to reply to.
pub fn notification(
    source_id: &str,
    raw_b64: &str,
    now_ms: i64,
    label: Option<&str>,
) -> Result<(Notification, Option<MailOrigin>), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(raw_b64)
        .map_err(|e| format!("queued mail is not base64: {e}"))?;
    let m = tidings_sources::mail::parse_mail(&raw);
    let key = match &m.message_id {
        Some(id) if !id.trim().is_empty() => format!("mid:{}", id.trim()),
        _ => {
            use sha2::{Digest, Sha256};
            format!("sha256:{}", hex::encode(Sha256::digest(&raw)))
        }
    };
    let mut message = truncate_chars(m.text.trim(), MAX_MESSAGE_CHARS);
    if !m.attachments.is_empty() {
        let list: Vec<String> = m
            .attachments
            .iter()
            .map(|a| format!("{} ({})", a.name, human_size(a.size)))
            .collect();
        if !message.is_empty() {
            message.push_str("\n\n");
        }
        message.push_str(&format!("Attachments: {}", list.join(", ")));
    }
    if message.is_empty() {
        message = "(no text)".into();
    }
    let mut tags = vec!["mail".to_owned()];
    if let Some(l) = label {
        tags.push(l.chars().take(64).collect());
    }
    let origin = m.reply_address.clone().map(|reply_address| MailOrigin {
        reply_address,
        message_id: m.message_id.clone(),
        subject: m.subject.clone().unwrap_or_default(),
    });
    let n = Notification {
        id: NotificationId::derived(source_id, &key),
        time: now_ms / 1000,
        event: "message".into(),
        source: source_id.to_owned(),
        topic: None,
        title: m
            .subject
            .map(|s| truncate_chars(s.trim(), 300))
            .filter(|s| !s.is_empty()),
        message,
        priority: Priority::Default,
        tags,
        click: None,
        actions: Vec::new(),
        author: m.from.filter(|f| !f.trim().is_empty()),
    };
    Ok((n, origin))
}

/// Remembers a mail's origin (idempotent), for relaying replies.
pub fn store_origin(
    c: &tidings_store::rusqlite::Connection,
    source_id: &str,
    notification_id: &str,
    o: &MailOrigin,
) -> tidings_store::rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO mail_origins(notification_id, source_id, reply_address, message_id, subject)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(tidings_store::rusqlite::params![
        notification_id,
        source_id,
        o.reply_address,
        o.message_id,
        truncate_chars(&o.subject, 300)
    ])?;
    Ok(())
}

/// The SMTP edge's hand-off: recipients are checked against the directory (in memory), and
/// each accepted message is appended to the durable ingest queue once per recipient before
/// the listener answers 250.
pub struct MailEdge {
    services: Arc<Services>,
}

impl MailEdge {
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}

impl MailEdge {
    /// A reply to a delivered notification: durable in the queue for its user avatar.
    async fn queue_reply(
        &self,
        r: &tidings_sources::smtp::Recipient,
        msg: &AcceptedMail,
        raw_b64: &str,
    ) -> Result<(), String> {
        let token = r.label.as_deref().unwrap_or_default();
        let target = match crate::replies::check(&self.services, token, &msg.mail_from).await {
            Ok(t) => t,
            // Revoked between RCPT and the end of DATA: refused then, nothing to queue now.
            Err(Refusal::Temporary(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let payload = serde_json::to_string(&Ingest::Reply {
            raw_b64: raw_b64.to_owned(),
            token_hash: target.token_hash,
            mail_from: msg.mail_from.clone(),
            received_at: msg.received_at,
        })
        .map_err(|e| format!("cannot encode: {e}"))?;
        self.services
            .queue()
            .append(tidings_core::ids::user_avatar(target.user_id), payload)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Labels become part of a source id: keep them to a safe alphabet.
fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl MailSink for MailEdge {
    fn check_recipient<'a>(
        &'a self,
        local: &'a str,
        label: Option<&'a str>,
        mail_from: &'a str,
    ) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(async move {
            if local == crate::replies::REPLY_LOCAL {
                let token = label.ok_or(Refusal::UnknownUser)?;
                return crate::replies::check(&self.services, token, mail_from)
                    .await
                    .map(|_| ());
            }
            if self.services.directory.user_by_name(local).is_some()
                && label.is_none_or(valid_label)
            {
                Ok(())
            } else {
                Err(Refusal::UnknownUser)
            }
        })
    }

    fn deliver(&self, msg: AcceptedMail) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let raw_b64 = base64::engine::general_purpose::STANDARD.encode(&msg.raw);
            for r in &msg.recipients {
                if r.local == crate::replies::REPLY_LOCAL {
                    self.queue_reply(r, &msg, &raw_b64).await?;
                    continue;
                }
                // Removed between RCPT and the end of DATA: nobody to deliver to.
                let Some(user) = self.services.directory.user_by_name(&r.local) else {
                    continue;
                };
                let source_id = source_id(user.id, r.label.as_deref());
                let payload = serde_json::to_string(&Ingest::Mail {
                    raw_b64: raw_b64.clone(),
                    label: r.label.clone(),
                    mail_from: msg.mail_from.clone(),
                    received_at: msg.received_at,
                })
                .map_err(|e| format!("cannot encode: {e}"))?;
                self.services
                    .queue()
                    .append(source_avatar(&source_id), payload)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            metrics::counter!("tidings_smtp_accepted_total").increment(1);
            Ok(())
        })
    }
}

fn human_size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
