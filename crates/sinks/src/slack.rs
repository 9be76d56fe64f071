//! Slack incoming webhooks: a `POST` of `{"text", "blocks"}` to the webhook URL Slack gave
//! (`https://hooks.slack.com/services/T…/B…/secret`; any base works for a compatible
//! server). Text is mrkdwn with `&`, `<` and `>` escaped, so a notification cannot mention
//! `@channel` or forge links; only http(s) links are made. It does not use the Web API
//! (no bot token, no channel choice beyond the one the webhook was made for).
//!
//! Apprise URLs: `slack://TokenA/TokenB/TokenC` (becomes
//! `https://hooks.slack.com/services/TokenA/TokenB/TokenC`), `slack://botname@A/B/C`, and
//! the webhook URL itself.

use serde_json::json;
use tidings_core::Priority;
use tidings_sources::fetch::Fetcher;

use crate::http::{self, Request};
use crate::text::{click_link, cut_chars, http_url_field, one_line, redact_path_tail, web_link};
use crate::{Error, Message, Outcome};

pub const DEFAULT_BASE_URL: &str = "https://hooks.slack.com";
/// Slack's limit for a section's text.
const MAX_SECTION: usize = 3000;

/// `{"kind": "slack", "webhook_url": "https://hooks.slack.com/services/T…/B…/…",
/// "username"?: "tidings"}`
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub webhook_url: String,
    /// Overrides the name the webhook posts as (legacy webhooks honour it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("slack::Config")
            .field("webhook_url", &self.address())
            .field("username", &self.username)
            .finish()
    }
}

impl Config {
    /// The config for `slack://A/B/C`.
    pub fn from_tokens(a: &str, b: &str, c: &str) -> Config {
        Config {
            webhook_url: format!("{DEFAULT_BASE_URL}/services/{a}/{b}/{c}"),
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
                "webhook_url must be the incoming webhook's URL, like https://hooks.slack.com/services/T…/B…/…".into(),
            ));
        }
        self.webhook_url = url.to_string();
        if let Some(name) = &self.username {
            let name = one_line(name);
            if name.is_empty() || name.chars().count() > 80 {
                return Err(Error::Invalid("username must be 1-80 characters".into()));
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

    /// The URL with its secret last segment hidden.
    pub(crate) fn address(&self) -> String {
        redact_path_tail(&self.webhook_url, 1)
    }
}

/// Escapes Slack's three control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escapes `s` and cuts it to `max` characters without splitting an escape.
fn escape_within(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in s.chars() {
        let piece = match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        };
        let len = piece.chars().count();
        if count + len > max.saturating_sub(1) {
            out.push('…');
            return out;
        }
        count += len;
        out.push_str(&piece);
    }
    out
}

/// `<url|label>`: the characters that would end the link are percent-encoded.
fn link(url: &str, label: &str) -> String {
    let url = url
        .replace('&', "&amp;")
        .replace('<', "%3C")
        .replace('>', "%3E")
        .replace('|', "%7C");
    format!("<{url}|{}>", escape(label))
}

/// The incoming-webhook payload.
pub fn payload(cfg: &Config, msg: &Message) -> serde_json::Value {
    let n = &msg.notification;
    let title = n.title.as_deref().map(one_line).filter(|t| !t.is_empty());
    let message = n.message.trim();
    let mut section = String::new();
    if let Some(t) = &title {
        section.push('*');
        section.push_str(&escape_within(t, 250));
        section.push_str("*\n");
    }
    let room = MAX_SECTION - section.chars().count();
    section.push_str(&escape_within(message, room));
    if section.trim().is_empty() {
        section = escape_within(&format!("New notification from {}", msg.source_name), 300);
    }

    let mut context = vec![escape_within(&one_line(&msg.source_name), 200)];
    if n.priority != Priority::Default {
        context.push(format!("priority {}", n.priority.name()));
    }
    if let Some(click) = click_link(msg) {
        context.push(link(click, "Open link"));
    }
    if let Some(web) = web_link(msg) {
        context.push(link(web, "View in tidings"));
    }
    let fallback = match &title {
        Some(t) => format!("{t}: {}", one_line(message)),
        None => one_line(message),
    };
    let mut fallback = escape_within(&fallback, 300);
    if fallback.is_empty() {
        fallback = escape_within(&format!("New notification from {}", msg.source_name), 300);
    }
    let mut body = json!({
        "text": fallback,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": cut_chars(&context.join(" · "), MAX_SECTION)}
            ]},
        ],
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
    fn payload_shape_and_escaping() {
        let cfg = Config::from_tokens("T1", "B2", "sekrit").prepare().unwrap();
        let mut msg = message();
        msg.notification.title = Some("Disk <full> & more".into());
        msg.notification.message = "<!channel> see <https://evil|here>".into();
        assert_eq!(
            payload(&cfg, &msg),
            json!({
                "text": "Disk &lt;full&gt; &amp; more: &lt;!channel&gt; see &lt;https://evil|here&gt;",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": "*Disk &lt;full&gt; &amp; more*\n&lt;!channel&gt; see &lt;https://evil|here&gt;"}},
                    {"type": "context", "elements": [{"type": "mrkdwn",
                        "text": "backups · priority high · <https://grafana.example/d/1|Open link> · <https://tidings.example/n/01hf3zzzzzzzzzzzzzzz|View in tidings>"}]},
                ],
            })
        );
    }

    #[test]
    fn long_text_stays_within_limits_without_broken_escapes() {
        let cfg = Config::from_tokens("T1", "B2", "sekrit");
        let mut msg = message();
        msg.notification.message = "&".repeat(10_000);
        let p = payload(&cfg, &msg);
        let section = p["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= MAX_SECTION);
        assert!(
            section.ends_with("&amp;…"),
            "{}",
            &section[section.len() - 20..]
        );
    }

    #[test]
    fn address_hides_the_secret() {
        let cfg = Config::from_tokens("T1", "B2", "sekrit");
        assert_eq!(cfg.address(), "https://hooks.slack.com/services/T1/B2/…");
    }
}
