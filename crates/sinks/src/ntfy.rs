//! Forwarding to an ntfy server (ntfy.sh or a self-hosted one): ntfy's JSON publishing, a
//! `POST` of `{"topic", "title", "message", "priority", "tags", "click", "actions"}` to the
//! server's root URL, with an access token (bearer) or a user and password (basic). It
//! does not create topics or users on the server and sends no attachments.
//!
//! Apprise URLs: `ntfy://host[:port]/topic` (http), `ntfys://host/topic` (https),
//! `ntfy://user:password@host/topic`, `ntfys://tk_token@host/topic`, and `ntfy://topic`
//! (ntfy.sh).

use serde_json::json;
use tidings_core::notification::{MAX_ACTIONS, MAX_TAG, MAX_TAGS, MAX_TITLE, MAX_URL};
use tidings_sources::fetch::Fetcher;

use crate::http::{self, Request};
use crate::text::{credential, cut_bytes, cut_chars, http_url_field, redact_url};
use crate::{Error, Message, Outcome};

pub const DEFAULT_SERVER: &str = "https://ntfy.sh";
/// ntfy's default `message-size-limit`; a longer message would become an attachment.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `{"kind": "ntfy", "url": "https://ntfy.sh", "topic": "alerts", "token"?: "tk_…",
/// "username"?: "…", "password"?: "…"}`: `url` is the server's base URL.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ntfy::Config")
            .field("address", &self.address())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// ntfy's topic names.
pub(crate) fn valid_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Config {
    pub(crate) fn prepare(mut self) -> Result<Config, Error> {
        let url = http_url_field("url", &self.url)?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(Error::Invalid(
                "url is the server's base URL, without user, password or query (give those as token or username and password)".into(),
            ));
        }
        self.url = url.as_str().trim_end_matches('/').to_owned();
        let topic = self.topic.trim();
        if !valid_topic(topic) {
            return Err(Error::Invalid(
                "topic must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'".into(),
            ));
        }
        self.topic = topic.to_owned();
        if let Some(token) = &self.token {
            self.token = Some(credential("token", token, 256)?);
            if self.username.is_some() || self.password.is_some() {
                return Err(Error::Invalid(
                    "token: give either an access token or a username and password, not both"
                        .into(),
                ));
            }
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => {
                if u.is_empty()
                    || u.contains(':')
                    || u.chars().any(char::is_control)
                    || u.len() > 256
                {
                    return Err(Error::Invalid(
                        "username: 1-256 characters, without ':' or control characters".into(),
                    ));
                }
                if p.chars().any(char::is_control) || p.len() > 256 {
                    return Err(Error::Invalid(
                        "password: at most 256 characters, without control characters".into(),
                    ));
                }
            }
            (Some(_), None) => {
                return Err(Error::Invalid(
                    "username is given without a password".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Invalid(
                    "password is given without a username".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(self)
    }

    pub(crate) fn redacted(&self) -> serde_json::Value {
        json!({
            "url": redact_url(&self.url).trim_end_matches('/'),
            "topic": self.topic,
            "token_set": self.token.is_some(),
            "username": self.username,
            "password_set": self.password.is_some(),
        })
    }

    pub(crate) fn address(&self) -> String {
        format!(
            "{}/{}",
            redact_url(&self.url).trim_end_matches('/'),
            self.topic
        )
    }
}

/// ntfy's JSON publishing body.
pub fn payload(cfg: &Config, msg: &Message) -> serde_json::Value {
    let n = &msg.notification;
    let mut body = json!({
        "topic": cfg.topic,
        "message": cut_bytes(&n.message, MAX_MESSAGE_BYTES),
        "priority": n.priority.as_number(),
    });
    let map = body.as_object_mut().expect("an object");
    if let Some(title) = n.title.as_deref().filter(|t| !t.is_empty()) {
        map.insert("title".into(), cut_chars(title, MAX_TITLE).into());
    }
    if !n.tags.is_empty() {
        let tags: Vec<String> = n
            .tags
            .iter()
            .take(MAX_TAGS)
            .map(|t| cut_chars(t, MAX_TAG))
            .collect();
        map.insert("tags".into(), tags.into());
    }
    // ntfy's Click also takes mailto: and tel: links, as ours does.
    if let Some(click) = n.click.as_deref().filter(|c| c.len() <= MAX_URL) {
        map.insert("click".into(), click.into());
    }
    let actions: Vec<serde_json::Value> = n
        .actions
        .iter()
        .take(MAX_ACTIONS)
        .filter_map(|a| serde_json::to_value(a).ok())
        .collect();
    if !actions.is_empty() {
        map.insert("actions".into(), actions.into());
    }
    body
}

pub(crate) async fn send(fetcher: &Fetcher, cfg: &Config, msg: &Message) -> Outcome {
    let mut req = Request::json("POST", format!("{}/", cfg.url), &payload(cfg, msg));
    if let Some(token) = &cfg.token {
        req = req.header("Authorization", format!("Bearer {token}"));
    } else if let Some(user) = &cfg.username {
        req.basic_auth = Some((user.clone(), cfg.password.clone().unwrap_or_default()));
    }
    http::send(fetcher, req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::message;

    fn cfg() -> Config {
        Config {
            url: "https://ntfy.example/".into(),
            topic: "alerts".into(),
            token: Some("tk_abc".into()),
            username: None,
            password: None,
        }
    }

    #[test]
    fn payload_shape() {
        let cfg = cfg().prepare().unwrap();
        assert_eq!(cfg.url, "https://ntfy.example");
        assert_eq!(
            payload(&cfg, &message()),
            json!({
                "topic": "alerts",
                "title": "nightly",
                "message": "Backup finished\nall good",
                "priority": 4,
                "tags": ["backup"],
                "click": "https://grafana.example/d/1",
                "actions": [{"action": "view", "label": "Open", "url": "https://ops.example/"}],
            })
        );
    }

    #[test]
    fn prepare_errors() {
        let err = |c: Config| c.prepare().unwrap_err().to_string();
        assert!(
            err(Config {
                topic: "a/b".into(),
                ..cfg()
            })
            .starts_with("topic")
        );
        assert!(
            err(Config {
                username: Some("u".into()),
                password: Some("p".into()),
                ..cfg()
            })
            .starts_with("token")
        );
        assert!(
            err(Config {
                token: None,
                username: Some("u".into()),
                ..cfg()
            })
            .starts_with("username")
        );
        assert!(
            err(Config {
                url: "https://u:p@ntfy.example".into(),
                ..cfg()
            })
            .starts_with("url")
        );
    }
}
