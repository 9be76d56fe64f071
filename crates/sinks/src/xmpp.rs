//! XMPP destinations: `{"kind": "xmpp", "jid": "alice@example.org"}` or
//! `xmpp://alice@example.org`. The message goes through tidings' own XMPP connection (a
//! component or a client account, `tidings_xmpp`), which the server hands to [`Sinks`] as an
//! [`ImTransport`]; without one, XMPP destinations are refused when added.
//!
//! Consent: tidings asks the address for a presence subscription when the destination is
//! added, and the destination takes deliveries once the user approved it in their client.
//! A send counts as delivered once the connection took it (queued in order, kept across
//! reconnects); the client's XEP-0184 receipt is recorded later, on the delivery record.

use tidings_core::notification::truncate_chars;

use crate::{BoxFuture, Error, Message, Outcome};

/// Longest message text sent by IM; the rest is behind the link to the full item.
pub const MAX_IM_CHARS: usize = 1500;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A bare JID: `local@domain`.
    pub jid: String,
}

impl Config {
    pub(crate) fn prepare(self) -> Result<Config, Error> {
        let jid = self.jid.trim().to_lowercase();
        let ok = jid.len() <= 3071
            && jid.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty()
                    && !d.is_empty()
                    && d.contains('.') | (d == "localhost")
                    && !jid.contains(['/', ' ', '<', '>', '"', '\'', '&'])
                    && !d.contains('@')
            });
        if !ok {
            return Err(Error::Invalid(format!(
                "jid {:?}: a bare address like alice@example.org",
                self.jid
            )));
        }
        Ok(Config { jid })
    }

    pub(crate) fn redacted(&self) -> serde_json::Value {
        serde_json::json!({"jid": self.jid})
    }

    pub(crate) fn address(&self) -> String {
        self.jid.clone()
    }
}

/// The server's XMPP connection, as the sinks see it.
pub trait ImTransport: Send + Sync + 'static {
    /// Queues one chat message to `jid` with stanza id `id` (a receipt answers with it).
    /// `Delivered` once queued; `Retry` while the connection cannot take it.
    fn send<'a>(&'a self, jid: &'a str, body: String, id: String) -> BoxFuture<'a, Outcome>;
}

/// The message text (XEP-0393 styling): the title in bold, the text trimmed to
/// [`MAX_IM_CHARS`] with a link to the full item, the click link, and the source.
pub fn text(msg: &Message) -> String {
    format_text(
        &msg.notification,
        &msg.source_name,
        msg.web_url.as_deref(),
        MAX_IM_CHARS,
    )
}

/// [`text`] with an explicit limit.
pub fn format_text(
    n: &tidings_core::Notification,
    source_name: &str,
    full_item_url: Option<&str>,
    max_chars: usize,
) -> String {
    let mut out = String::new();
    if let Some(t) = n.title.as_deref().filter(|t| !t.trim().is_empty()) {
        // A `*` inside the title would end the bold span early.
        out.push_str(&format!("*{}*\n", t.trim().replace('*', "∗")));
    }
    let body = n.message.trim();
    let trimmed = truncate_chars(body, max_chars);
    out.push_str(&trimmed);
    if trimmed.chars().count() < body.chars().count()
        && let Some(u) = full_item_url
    {
        out.push_str(&format!("\n(more: {u})"));
    }
    if let Some(c) = &n.click {
        out.push_str(&format!("\n{c}"));
    }
    out.push_str(&format!("\n_{}_", source_name.replace('_', " ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_are_bare_addresses() {
        let ok = Config {
            jid: " Alice@Example.org ".into(),
        }
        .prepare()
        .unwrap();
        assert_eq!(ok.jid, "alice@example.org");
        for bad in [
            "alice",
            "@example.org",
            "alice@",
            "alice@example.org/phone",
            "a b@x.org",
            "a@b@c.org",
        ] {
            assert!(Config { jid: bad.into() }.prepare().is_err(), "{bad}");
        }
    }
}
