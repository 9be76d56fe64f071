//! Generic webhooks: one signed JSON `POST` per notification to a URL the user gives. It
//! does not follow redirects, does not read the receiver's answer beyond its status, and
//! does not retry (the caller does, with the same idempotency key).
//!
//! # Webhook payload
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Tidings-Timestamp: 1700000000
//! X-Tidings-Signature: sha256=5d3c…   (hex HMAC-SHA256 of "<timestamp>.<body>" with the secret)
//! Idempotency-Key: 01hf3…              (the notification id: the same on every retry)
//!
//! {
//!   "id": "01hf3…",                       // notification id, stable across retries
//!   "time": 1700000000,                   // Unix seconds when tidings accepted it
//!   "source": "topic:backups",            // source id
//!   "source_name": "backups",             // human name: topic name, feed title, "mail"
//!   "title": "nightly",                   // or null
//!   "message": "Backup finished",
//!   "priority": 4,                        // 1 (min) .. 5 (urgent)
//!   "priority_name": "high",              // min, low, default, high, urgent
//!   "tags": ["backup"],
//!   "click": "https://grafana.example/",  // or null
//!   "actions": [{"action": "view", "label": "Open", "url": "https://…"}],
//!   "author": "alice",                    // or null
//!   "web_url": "https://tidings.example/n/01hf3…"  // or null
//! }
//! ```
//!
//! Fields are bounded: title 1024 characters, message 64 KiB, tags 20 of 64 characters, at
//! most 3 actions, URLs 2048 characters (a longer one becomes null).
//!
//! A receiver checks the signature over the raw body before parsing it, compares in
//! constant time, and refuses timestamps far from its clock (say 5 minutes) so a captured
//! request cannot be replayed later; it drops duplicates by `Idempotency-Key`. In Python:
//!
//! ```text
//! import hmac, hashlib, time
//! def verify(secret: str, headers, body: bytes) -> bool:
//!     ts = headers["X-Tidings-Timestamp"]
//!     if abs(time.time() - int(ts)) > 300:
//!         return False
//!     mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
//!     return hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-Tidings-Signature"])
//! ```
//!
//! Apprise URLs: `json://host[:port]/path` (http), `jsons://…` (https),
//! `json://user:password@host/path` (HTTP basic auth), `?+X-Header=value` (an extra header;
//! other query parameters stay in the URL).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tidings_core::notification::{MAX_ACTIONS, MAX_TAG, MAX_TAGS, MAX_TITLE, MAX_URL};
use tidings_sources::fetch::Fetcher;

use crate::http::{self, Request};
use crate::text::{cut_bytes, cut_chars, http_url_field, is_http_url, redact_url};
use crate::{Error, Message, Outcome};

/// The largest message text sent (the edge accepts 64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Extra headers a destination may add.
pub const MAX_HEADERS: usize = 20;
const MAX_HEADER_VALUE: usize = 1024;

/// `{"kind": "webhook", "url": "https://…", "secret"?: "…", "headers"?: {"X-A": "b"},
/// "username"?: "…", "password"?: "…"}`. `prepare` generates the secret when none is given
/// and moves a `user:password@` out of the URL into `username` and `password`.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// HTTP basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("webhook::Config")
            .field("url", &self.address())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Headers the payload's meaning depends on; a destination cannot override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "idempotency-key",
    "te",
    "upgrade",
];

impl Config {
    pub(crate) fn prepare(mut self) -> Result<Config, Error> {
        let mut url = http_url_field("url", &self.url)?;
        if !url.username().is_empty() || url.password().is_some() {
            if self.username.is_some() || self.password.is_some() {
                return Err(Error::Invalid(
                    "url: give the user and password either in the URL or as username and password, not both".into(),
                ));
            }
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            self.username = Some(decode(url.username()));
            self.password = url.password().map(decode);
            // Cannot fail on an http(s) URL with a host.
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        self.url = url.to_string();
        if let Some(user) = &self.username
            && (user.contains(':') || user.chars().any(char::is_control) || user.len() > 256)
        {
            return Err(Error::Invalid(
                "username: at most 256 characters, without ':' or control characters".into(),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(Error::Invalid(
                "password is given without a username".into(),
            ));
        }
        if let Some(password) = &self.password
            && (password.chars().any(char::is_control) || password.len() > 256)
        {
            return Err(Error::Invalid(
                "password: at most 256 characters, without control characters".into(),
            ));
        }
        self.secret = Some(match self.secret.take() {
            None => tidings_core::secret::random_secret("whsec_"),
            Some(s) => {
                let s = crate::text::credential("secret", &s, 256)?;
                if s.len() < 16 {
                    return Err(Error::Invalid(
                        "secret is too short: at least 16 characters (or leave it out and one is generated)".into(),
                    ));
                }
                s
            }
        });
        if self.headers.len() > MAX_HEADERS {
            return Err(Error::Invalid(format!(
                "headers: at most {MAX_HEADERS} extra headers"
            )));
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            let token = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(Error::Invalid(format!(
                    "headers: {:?} is not a valid header name (letters, digits and - _ . at most 64)",
                    cut_chars(name, 70)
                )));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-tidings-") {
                return Err(Error::Invalid(format!(
                    "headers: {name} is set by tidings and cannot be changed"
                )));
            }
            if lower == "authorization" && self.username.is_some() {
                return Err(Error::Invalid(
                    "headers: an Authorization header and a username/password cannot both be given"
                        .into(),
                ));
            }
            if value.len() > MAX_HEADER_VALUE
                || !value.bytes().all(|b| b == b'\t' || (32..127).contains(&b))
            {
                return Err(Error::Invalid(format!(
                    "headers: the value of {name} must be printable ASCII, at most {MAX_HEADER_VALUE} characters"
                )));
            }
        }
        Ok(self)
    }

    pub(crate) fn redacted(&self) -> serde_json::Value {
        json!({
            "url": self.address(),
            "secret_set": self.secret.is_some(),
            "headers": self.headers.keys().collect::<Vec<_>>(),
            "username": self.username,
            "password_set": self.password.is_some(),
        })
    }

    pub(crate) fn address(&self) -> String {
        redact_url(&self.url)
    }
}

/// `sha256=<hex hmac-sha256(secret, "<timestamp>.<body>")>`
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The documented JSON body (see the module documentation), every field bounded.
pub fn payload(msg: &Message) -> serde_json::Value {
    let n = &msg.notification;
    let url = |u: &Option<String>| {
        u.as_deref()
            .filter(|u| u.len() <= MAX_URL)
            .map(str::to_owned)
    };
    let tags: Vec<String> = n
        .tags
        .iter()
        .take(MAX_TAGS)
        .map(|t| cut_chars(t, MAX_TAG))
        .collect();
    let actions: Vec<&tidings_core::Action> = n.actions.iter().take(MAX_ACTIONS).collect();
    json!({
        "id": cut_chars(&n.id.0, 64),
        "time": n.time,
        "source": cut_chars(&n.source, 256),
        "source_name": cut_chars(&msg.source_name, 256),
        "title": n.title.as_deref().map(|t| cut_chars(t, MAX_TITLE)),
        "message": cut_bytes(&n.message, MAX_MESSAGE_BYTES),
        "priority": n.priority.as_number(),
        "priority_name": n.priority.name(),
        "tags": tags,
        "click": url(&n.click),
        "actions": bounded_actions(&actions),
        "author": n.author.as_deref().map(|a| cut_chars(a, 256)),
        "web_url": msg.web_url.as_deref().filter(|u| is_http_url(u)),
    })
}

fn bounded_actions(actions: &[&tidings_core::Action]) -> serde_json::Value {
    actions
        .iter()
        .map(|a| {
            let mut v = json!({
                "action": cut_chars(&a.action, 32),
                "label": cut_chars(&a.label, 128),
            });
            let map = v.as_object_mut().expect("an object");
            if let Some(u) = a.url.as_deref().filter(|u| u.len() <= MAX_URL) {
                map.insert("url".into(), u.into());
            }
            if let Some(m) = &a.method {
                map.insert("method".into(), cut_chars(m, 16).into());
            }
            if let Some(b) = &a.body {
                map.insert("body".into(), cut_bytes(b, 4096).into());
            }
            if a.clear {
                map.insert("clear".into(), true.into());
            }
            v
        })
        .collect()
}

/// A signed JSON POST outside destinations (see [`crate::Sinks::post_signed_json`]).
pub(crate) async fn post_signed(
    fetcher: &Fetcher,
    url: &str,
    secret: &str,
    id: &str,
    body: &serde_json::Value,
) -> Outcome {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Tidings-Timestamp".to_owned(), timestamp.to_string()),
        (
            "X-Tidings-Signature".to_owned(),
            sign(secret, timestamp, &body),
        ),
        ("Idempotency-Key".to_owned(), cut_chars(id, 64)),
    ];
    http::send(
        fetcher,
        http::Request {
            method: "POST",
            url: url.to_owned(),
            headers,
            body,
            basic_auth: None,
        },
    )
    .await
}

pub(crate) async fn send(fetcher: &Fetcher, cfg: &Config, msg: &Message) -> Outcome {
    let Some(secret) = cfg.secret.as_deref() else {
        return Outcome::failed("the webhook has no secret (the destination was not prepared)");
    };
    let body = serde_json::to_vec(&payload(msg)).unwrap_or_default();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Tidings-Timestamp".to_owned(), timestamp.to_string()),
        (
            "X-Tidings-Signature".to_owned(),
            sign(secret, timestamp, &body),
        ),
        (
            "Idempotency-Key".to_owned(),
            cut_chars(&msg.notification.id.0, 64),
        ),
    ];
    headers.extend(cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    let basic_auth = cfg
        .username
        .clone()
        .map(|u| (u, cfg.password.clone().unwrap_or_default()));
    http::send(
        fetcher,
        Request {
            method: "POST",
            url: cfg.url.clone(),
            headers,
            body,
            basic_auth,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::message;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec_test'
        assert_eq!(
            sign("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "sha256=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn payload_shape() {
        let msg = message();
        assert_eq!(
            payload(&msg),
            json!({
                "id": "01hf3zzzzzzzzzzzzzzz",
                "time": 1_700_000_000,
                "source": "topic:backups",
                "source_name": "backups",
                "title": "nightly",
                "message": "Backup finished\nall good",
                "priority": 4,
                "priority_name": "high",
                "tags": ["backup"],
                "click": "https://grafana.example/d/1",
                "actions": [{"action": "view", "label": "Open", "url": "https://ops.example/"}],
                "author": "alice",
                "web_url": "https://tidings.example/n/01hf3zzzzzzzzzzzzzzz",
            })
        );
    }

    #[test]
    fn prepare_generates_a_secret_and_moves_credentials() {
        let cfg = Config {
            url: "https://bob:p%40ss@hooks.example/x?y=1".into(),
            secret: None,
            headers: BTreeMap::from([("X-Team".into(), "ops".into())]),
            username: None,
            password: None,
        }
        .prepare()
        .unwrap();
        assert_eq!(cfg.url, "https://hooks.example/x?y=1");
        assert_eq!(cfg.username.as_deref(), Some("bob"));
        assert_eq!(cfg.password.as_deref(), Some("p@ss"));
        let secret = cfg.secret.clone().unwrap();
        assert!(secret.starts_with("whsec_") && secret.len() == 38);
        // Preparing again keeps the secret.
        assert_eq!(cfg.clone().prepare().unwrap().secret, Some(secret));
    }

    #[test]
    fn prepare_errors_name_the_field() {
        let base = Config {
            url: "https://hooks.example/x".into(),
            secret: None,
            headers: BTreeMap::new(),
            username: None,
            password: None,
        };
        let err = |c: Config| c.prepare().unwrap_err().to_string();
        assert!(
            err(Config {
                url: "ftp://x/".into(),
                ..base.clone()
            })
            .starts_with("url")
        );
        assert!(
            err(Config {
                secret: Some("short".into()),
                ..base.clone()
            })
            .starts_with("secret")
        );
        for (name, value) in [
            ("Content-Type", "text/plain"),
            ("X-Tidings-Signature", "forged"),
            ("Bad Name", "x"),
            ("X-Ok", "line\r\nbreak"),
        ] {
            let c = Config {
                headers: BTreeMap::from([(name.into(), value.into())]),
                ..base.clone()
            };
            assert!(err(c).starts_with("headers"), "{name}");
        }
    }
}
