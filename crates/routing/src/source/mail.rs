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

/// Builds the notification of a raw message (base64 in the queue payload).
pub fn notification(
    source_id: &str,
    raw_b64: &str,
    now_ms: i64,
    label: Option<&str>,
) -> Result<Notification, String> {
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
    Ok(Notification {
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
    })
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

/// Labels become part of a source id: keep them to a safe alphabet.
fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl MailSink for MailEdge {
    fn check_recipient(
        &self,
        local: &str,
        label: Option<&str>,
    ) -> BoxFuture<'_, Result<(), Refusal>> {
        let ok =
            self.services.directory.user_by_name(local).is_some() && label.is_none_or(valid_label);
        Box::pin(async move {
            if ok {
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
