//! Matrix rooms through the client-server API with an access token: a room alias is
//! resolved once (`GET /_matrix/client/v3/directory/room/{alias}`, cached for an hour),
//! then each notification is one `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}`
//! of an `m.text` event with a plain and an HTML body. The transaction id is derived from
//! the notification id and the room, so a retry of the same notification is deduplicated
//! by the homeserver (the spec's idempotency for `send`). It does not log in with a
//! password, join rooms, or handle end-to-end encryption (the room must be unencrypted, or
//! accept unencrypted events).
//!
//! Apprise URLs: `matrixs://access_token@host[:port]/#alias:server` (https),
//! `matrix://…` (http), a room id (`/!id:server`) instead of an alias, and `#alias` alone
//! meaning `#alias:host`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use tidings_core::Priority;
use tidings_sources::fetch::Fetcher;

use crate::http::{self, Request};
use crate::text::{
    click_link, credential, cut_bytes, html_escape, html_text, http_url_field, one_line,
    redact_url, short_hash, strip_controls, web_link,
};
use crate::{Error, Message, Outcome};

/// How long a resolved alias is trusted.
const ALIAS_TTL: Duration = Duration::from_secs(3600);
/// Aliases remembered at most (the cache starts over when full).
const ALIAS_CACHE_MAX: usize = 4096;
/// Bodies stay far below Matrix's 64 KiB event limit.
const MAX_BODY_BYTES: usize = 8 * 1024;
const MAX_HTML_BYTES: usize = 24 * 1024;

/// `{"kind": "matrix", "homeserver": "https://matrix.example.org", "access_token": "…",
/// "room": "#alias:example.org" | "!roomid:example.org"}`
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: String,
    pub access_token: String,
    pub room: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("matrix::Config")
            .field("homeserver", &self.homeserver)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// `#alias:server` or `!id:server`.
pub(crate) fn valid_room(room: &str) -> bool {
    let Some(rest) = room.strip_prefix('#').or_else(|| room.strip_prefix('!')) else {
        return false;
    };
    let Some((local, server)) = rest.split_once(':') else {
        return false;
    };
    room.len() <= 255
        && !local.is_empty()
        && !server.is_empty()
        && !room.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl Config {
    pub(crate) fn prepare(mut self) -> Result<Config, Error> {
        let url = http_url_field("homeserver", &self.homeserver)?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(Error::Invalid(
                "homeserver is the server's base URL, like https://matrix.example.org".into(),
            ));
        }
        self.homeserver = url.as_str().trim_end_matches('/').to_owned();
        self.access_token = credential("access_token", &self.access_token, 1024)?;
        let room = self.room.trim();
        if !valid_room(room) {
            return Err(Error::Invalid(
                "room must be a room alias (#room:example.org) or a room id (!abc:example.org)"
                    .into(),
            ));
        }
        self.room = room.to_owned();
        Ok(self)
    }

    pub(crate) fn redacted(&self) -> serde_json::Value {
        json!({
            "homeserver": redact_url(&self.homeserver).trim_end_matches('/'),
            "room": self.room,
            "access_token_set": !self.access_token.is_empty(),
        })
    }

    pub(crate) fn address(&self) -> String {
        let host = url::Url::parse(&self.homeserver)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!("{} on {host}", self.room)
    }
}

/// (homeserver, alias).
type AliasKey = (String, String);

/// Resolved room aliases, shared by every send: (homeserver, alias) → (room id, when).
#[derive(Clone, Default)]
pub(crate) struct AliasCache {
    inner: Arc<Mutex<HashMap<AliasKey, (String, Instant)>>>,
}

impl AliasCache {
    fn get(&self, key: &AliasKey) -> Option<String> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, at)| at.elapsed() < ALIAS_TTL)
            .map(|(id, _)| id.clone())
    }

    fn put(&self, key: AliasKey, room_id: String) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= ALIAS_CACHE_MAX {
            map.clear();
        }
        map.insert(key, (room_id, Instant::now()));
    }

    fn forget(&self, key: &AliasKey) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

/// Path segments: everything but unreserved characters is encoded (`!`, `#`, `:`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The transaction id: the same for a notification and room on every attempt.
pub fn txn_id(notification_id: &str, room_id: &str) -> String {
    format!(
        "tidings.{}.{}",
        utf8_percent_encode(&cut_bytes(notification_id, 64), SEGMENT),
        short_hash(room_id, 12)
    )
}

/// The `m.room.message` event content.
pub fn event(msg: &Message) -> serde_json::Value {
    let n = &msg.notification;
    let title = n.title.as_deref().map(one_line).filter(|t| !t.is_empty());
    let message = strip_controls(n.message.trim());
    let mut plain = String::new();
    let mut html = String::new();
    if let Some(t) = &title {
        plain.push_str(t);
        plain.push('\n');
        html.push_str(&format!("<strong>{}</strong><br>\n", html_escape(t)));
    }
    let message = cut_bytes(&message, MAX_BODY_BYTES);
    plain.push_str(&message);
    html.push_str(&html_text(&message));
    let mut links = Vec::new();
    if let Some(click) = click_link(msg) {
        plain.push_str(&format!("\n{click}"));
        links.push(format!("<a href=\"{}\">Open link</a>", html_escape(click)));
    }
    if let Some(web) = web_link(msg) {
        plain.push_str(&format!("\nView in tidings: {web}"));
        links.push(format!(
            "<a href=\"{}\">View in tidings</a>",
            html_escape(web)
        ));
    }
    let mut meta = vec![html_escape(&one_line(&msg.source_name))];
    if n.priority != Priority::Default {
        meta.push(format!("priority {}", n.priority.name()));
    }
    meta.extend(links);
    html.push_str(&format!("<br>\n<small>{}</small>", meta.join(" · ")));
    if plain.trim().is_empty() {
        plain = format!("New notification from {}", one_line(&msg.source_name));
    }
    json!({
        "msgtype": "m.text",
        "body": cut_bytes(&plain, MAX_BODY_BYTES + 8192),
        "format": "org.matrix.custom.html",
        // Every piece was escaped before joining; a cut can only lose the end.
        "formatted_body": cut_html(&html, MAX_HTML_BYTES),
    })
}

/// Cuts HTML built by [`event`] without leaving half a tag or entity behind.
fn cut_html(html: &str, max: usize) -> String {
    if html.len() <= max {
        return html.to_owned();
    }
    let cut = cut_bytes(html, max);
    let body = cut.trim_end_matches('…');
    let end = match (body.rfind('<'), body.rfind('>')) {
        (Some(lt), Some(gt)) if lt > gt => lt,
        (Some(lt), None) => lt,
        _ => body.len(),
    };
    let body = &body[..end];
    let end = match (body.rfind('&'), body.rfind(';')) {
        (Some(amp), Some(semi)) if amp > semi => amp,
        (Some(amp), None) => amp,
        _ => body.len(),
    };
    format!("{}…", &body[..end])
}

pub(crate) async fn send(
    fetcher: &Fetcher,
    cache: &AliasCache,
    cfg: &Config,
    msg: &Message,
) -> Outcome {
    let auth = format!("Bearer {}", cfg.access_token);
    let base = cfg.homeserver.trim_end_matches('/');
    let alias_key = (base.to_owned(), cfg.room.clone());
    let room_id = if cfg.room.starts_with('!') {
        cfg.room.clone()
    } else if let Some(id) = cache.get(&alias_key) {
        id
    } else {
        let url = format!(
            "{base}/_matrix/client/v3/directory/room/{}",
            utf8_percent_encode(&cfg.room, SEGMENT)
        );
        let req = Request {
            method: "GET",
            url,
            headers: vec![("Authorization".into(), auth.clone())],
            body: Vec::new(),
            basic_auth: None,
        };
        let reply = match http::call(fetcher, req).await {
            Ok(reply) => reply,
            Err(e) => return http::classify_error(e),
        };
        if reply.status == 404 {
            return Outcome::Failed {
                status: Some(404),
                error: format!("the room alias {} does not exist on {base}", cfg.room),
            };
        }
        let outcome = http::classify_reply(&reply);
        if !matches!(outcome, Outcome::Delivered { .. }) {
            return outcome;
        }
        let room_id = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("room_id")?.as_str().map(str::to_owned))
            .filter(|id| valid_room(id) && id.starts_with('!'));
        match room_id {
            Some(id) => {
                cache.put(alias_key.clone(), id.clone());
                id
            }
            None => {
                return Outcome::retry(format!(
                    "the homeserver's answer for {} has no room id",
                    cfg.room
                ));
            }
        }
    };
    let url = format!(
        "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        utf8_percent_encode(&room_id, SEGMENT),
        txn_id(&msg.notification.id.0, &room_id)
    );
    let outcome = http::send(
        fetcher,
        Request::json("PUT", url, &event(msg)).header("Authorization", auth),
    )
    .await;
    // A refusal may mean the alias now points elsewhere: resolve it again next time.
    if matches!(outcome, Outcome::Failed { .. }) {
        cache.forget(&alias_key);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::message;

    #[test]
    fn event_shape() {
        assert_eq!(
            event(&message()),
            json!({
                "msgtype": "m.text",
                "body": "nightly\nBackup finished\nall good\nhttps://grafana.example/d/1\nView in tidings: https://tidings.example/n/01hf3zzzzzzzzzzzzzzz",
                "format": "org.matrix.custom.html",
                "formatted_body": "<strong>nightly</strong><br>\nBackup finished<br>\nall good<br>\n<small>backups · priority high · <a href=\"https://grafana.example/d/1\">Open link</a> · <a href=\"https://tidings.example/n/01hf3zzzzzzzzzzzzzzz\">View in tidings</a></small>",
            })
        );
    }

    #[test]
    fn html_is_escaped() {
        let mut msg = message();
        msg.notification.title = Some("<script>alert(1)</script>".into());
        msg.notification.message = "<img src=x onerror=alert(1)> & \"q\"".into();
        msg.notification.click = Some("javascript:alert(1)".into());
        let e = event(&msg);
        let html = e["formatted_body"].as_str().unwrap();
        assert!(
            !html.contains("<script") && !html.contains("<img") && !html.contains("javascript:")
        );
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot;"));
    }

    #[test]
    fn cut_html_never_leaves_half_a_tag_or_entity() {
        assert_eq!(
            cut_html("ab<strong>cd</strong>", 100),
            "ab<strong>cd</strong>"
        );
        assert_eq!(cut_html("abcdef<strong>cd", 12), "abcdef…");
        assert_eq!(cut_html("abcd&amp;ef", 10), "abcd…");
    }

    #[test]
    fn txn_ids_are_stable_per_notification_and_room() {
        let a = txn_id("01hf3zzzzzzzzzzzzzzz", "!a:example.org");
        assert_eq!(a, txn_id("01hf3zzzzzzzzzzzzzzz", "!a:example.org"));
        assert_ne!(a, txn_id("01hf3zzzzzzzzzzzzzzz", "!b:example.org"));
        assert_ne!(a, txn_id("01hf3zzzzzzzzzzzzzzy", "!a:example.org"));
        assert!(a.starts_with("tidings.01hf3zzzzzzzzzzzzzzz."));
    }

    #[test]
    fn rooms() {
        assert!(valid_room("#ops:example.org"));
        assert!(valid_room("!abc:example.org:8448"));
        assert!(!valid_room("ops:example.org"));
        assert!(!valid_room("#ops"));
        assert!(!valid_room("#:x"));
        assert!(!valid_room("#a b:x"));
    }
}
