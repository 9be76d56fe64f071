//! Discord webhooks: a `POST` of one embed (title, description, link, timestamp, a colour
//! by priority, the source in the footer) to `{base}/api/webhooks/{id}/{token}`, within
//! Discord's limits (title 256, description 4096, footer 2048, 6000 in all) and with
//! mentions disabled, so a notification cannot ping `@everyone`. It does not use a bot
//! account or threads.
//!
//! Apprise URLs: `discord://WebhookID/WebhookToken`, `discord://botname@ID/Token`, and the
//! webhook URL itself (`https://discord.com/api/webhooks/ID/Token`).

use serde_json::json;
use tidings_core::Priority;
use tidings_sources::fetch::Fetcher;

use crate::http::{self, Request};
use crate::text::{best_link, cut_chars, http_url_field, one_line, redact_path_tail, rfc3339};
use crate::{Error, Message, Outcome};

pub const DEFAULT_BASE_URL: &str = "https://discord.com";
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const MAX_FOOTER: usize = 2048;
const MAX_AUTHOR: usize = 256;
const MAX_TOTAL: usize = 6000;

/// `{"kind": "discord", "webhook_url": "https://discord.com/api/webhooks/ID/TOKEN",
/// "username"?: "tidings"}`
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub webhook_url: String,
    /// Overrides the webhook's name for these messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("discord::Config")
            .field("webhook_url", &self.address())
            .field("username", &self.username)
            .finish()
    }
}

impl Config {
    /// The config for `discord://ID/TOKEN`.
    pub fn from_parts(id: &str, token: &str) -> Config {
        Config {
            webhook_url: format!("{DEFAULT_BASE_URL}/api/webhooks/{id}/{token}"),
            username: None,
        }
    }

    pub(crate) fn prepare(mut self) -> Result<Config, Error> {
        let url = http_url_field("webhook_url", &self.webhook_url)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::Invalid(
                "webhook_url must not contain a user or password".into(),
            ));
        }
        if url
            .path_segments()
            .is_none_or(|s| s.filter(|s| !s.is_empty()).count() < 2)
        {
            return Err(Error::Invalid(
                "webhook_url must be the webhook's URL, like https://discord.com/api/webhooks/ID/TOKEN".into(),
            ));
        }
        self.webhook_url = url.to_string();
        if let Some(name) = &self.username {
            let name = one_line(name);
            // Discord refuses names containing "discord" and longer than 80 characters.
            if name.is_empty()
                || name.chars().count() > 80
                || name.to_lowercase().contains("discord")
            {
                return Err(Error::Invalid(
                    "username must be 1-80 characters and must not contain \"discord\"".into(),
                ));
            }
            self.username = Some(name);
        }
        Ok(self)
    }

    pub(crate) fn redacted(&self) -> serde_json::Value {
        json!({
            "webhook_url": self.address(),
            "webhook_url_set": true,
            "username": self.username,
        })
    }

    /// The URL with its token hidden.
    pub(crate) fn address(&self) -> String {
        redact_path_tail(&self.webhook_url, 1)
    }
}

/// The embed's colour by priority (Discord's palette).
pub fn color(p: Priority) -> u32 {
    match p {
        Priority::Min => 0x99AAB5,
        Priority::Low => 0x5865F2,
        Priority::Default => 0x57F287,
        Priority::High => 0xFEE75C,
        Priority::Urgent => 0xED4245,
    }
}

/// The webhook payload: one embed, within Discord's limits.
pub fn payload(cfg: &Config, msg: &Message) -> serde_json::Value {
    let n = &msg.notification;
    let source = one_line(&msg.source_name);
    let title = n
        .title
        .as_deref()
        .map(one_line)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| source.clone());
    let title = cut_chars(&title, MAX_TITLE);
    let title = if title.is_empty() {
        "Notification".to_owned()
    } else {
        title
    };
    let footer = cut_chars(&source, MAX_FOOTER);
    let author = n
        .author
        .as_deref()
        .map(one_line)
        .filter(|a| !a.is_empty())
        .map(|a| cut_chars(&a, MAX_AUTHOR));
    let used = title.chars().count()
        + footer.chars().count()
        + author.as_deref().map_or(0, |a| a.chars().count());
    let room = MAX_DESCRIPTION.min(MAX_TOTAL.saturating_sub(used));
    let description = cut_chars(n.message.trim(), room);

    let mut embed = json!({
        "title": title,
        "timestamp": rfc3339(n.time),
        "color": color(n.priority),
    });
    let map = embed.as_object_mut().expect("an object");
    if !description.is_empty() {
        map.insert("description".into(), description.into());
    }
    if let Some(link) = best_link(msg) {
        map.insert("url".into(), link.into());
    }
    if !footer.is_empty() {
        map.insert("footer".into(), json!({"text": footer}));
    }
    if let Some(a) = author {
        map.insert("author".into(), json!({"name": a}));
    }
    let mut body = json!({
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    });
    if let Some(name) = &cfg.username {
        body["username"] = name.clone().into();
    }
    body
}

pub(crate) async fn send(fetcher: &Fetcher, cfg: &Config, msg: &Message) -> Outcome {
    http::send(
        fetcher,
        Request::json("POST", cfg.webhook_url.clone(), &payload(cfg, msg)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::message;

    #[test]
    fn payload_shape() {
        let cfg = Config::from_parts("123", "tok").prepare().unwrap();
        assert_eq!(
            payload(&cfg, &message()),
            json!({
                "embeds": [{
                    "title": "nightly",
                    "description": "Backup finished\nall good",
                    "url": "https://tidings.example/n/01hf3zzzzzzzzzzzzzzz",
                    "timestamp": "2023-11-14T22:13:20Z",
                    "color": 0xFEE75C,
                    "footer": {"text": "backups"},
                    "author": {"name": "alice"},
                }],
                "allowed_mentions": {"parse": []},
            })
        );
    }

    #[test]
    fn limits() {
        let cfg = Config::from_parts("123", "tok");
        let mut msg = message();
        msg.notification.title = Some("t".repeat(1000));
        msg.notification.message = "m".repeat(10_000);
        msg.source_name = "s".repeat(3000);
        msg.notification.author = Some("a".repeat(1000));
        let p = payload(&cfg, &msg);
        let e = &p["embeds"][0];
        let len = |v: &serde_json::Value| v.as_str().unwrap().chars().count();
        assert_eq!(len(&e["title"]), 256);
        assert_eq!(len(&e["footer"]["text"]), 2048);
        assert_eq!(len(&e["author"]["name"]), 256);
        let total = len(&e["title"])
            + len(&e["description"])
            + len(&e["footer"]["text"])
            + len(&e["author"]["name"]);
        assert_eq!(total, 6000);
    }

    #[test]
    fn address_hides_the_token() {
        assert_eq!(
            Config::from_parts("123", "tok").address(),
            "https://discord.com/api/webhooks/123/…"
        );
    }
}
