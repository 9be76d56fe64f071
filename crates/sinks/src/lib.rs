//! The wire side of delivery: how one notification reaches one destination (a webhook, an
//! SMS through Twilio, an ntfy server, Slack, Discord, a Matrix room, a mailbox through the
//! operator's SMTP relay). Deciding *when* to send (outboxes, retries, backoff, circuit
//! breakers, delivery records) is the routing side's; this crate makes one attempt and says
//! what happened, as an [`Outcome`] the caller can act on without reading error texts.
//!
//! Layout:
//! - [`DestinationConfig`]: what a user configured, as JSON (`{"kind": "webhook", ...}`) or
//!   an Apprise-style URL ([`apprise`]); validated and completed by
//!   [`DestinationConfig::prepare`], shown without credentials by
//!   [`DestinationConfig::redacted`].
//! - One module per kind ([`webhook`], [`twilio`], [`ntfy`], [`slack`], [`discord`],
//!   [`matrix`], [`mailto`], [`xmpp`] — the last through the server's XMPP connection): its config struct, its I/O-free payload builder (tested
//!   without sockets) and its one send.
//! - `http`: one HTTP call through the SSRF-safe [`tidings_sources::fetch::Fetcher`] and the
//!   classification of its answer (2xx delivered; 408, 429, 5xx and transport trouble
//!   retried; other 4xx failed).
//! - [`Sinks`]: the shared clients (the fetcher, the SMTP relay, the Matrix alias cache) and
//!   the entry points [`Sinks::check`], [`Sinks::send`], [`Sinks::send_mail`].

pub mod apprise;
pub mod discord;
mod http;
pub mod mailto;
pub mod matrix;
pub mod ntfy;
pub mod slack;
mod text;
pub mod twilio;
pub mod webhook;
pub mod xmpp;

use std::time::Duration;

use tidings_sources::fetch::{FetchConfig, FetchError, Fetcher};

/// A destination as a user configured it. The JSON form is `{"kind": "<kind>", ...}` with
/// the kind's fields (see each module).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationConfig {
    Webhook(webhook::Config),
    Mailto(mailto::Config),
    Twilio(twilio::Config),
    Ntfy(ntfy::Config),
    Slack(slack::Config),
    Discord(discord::Config),
    Matrix(matrix::Config),
    Xmpp(xmpp::Config),
}

/// A boxed future, for the transport trait of [`xmpp`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl DestinationConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            DestinationConfig::Webhook(_) => "webhook",
            DestinationConfig::Mailto(_) => "mailto",
            DestinationConfig::Twilio(_) => "twilio",
            DestinationConfig::Ntfy(_) => "ntfy",
            DestinationConfig::Slack(_) => "slack",
            DestinationConfig::Discord(_) => "discord",
            DestinationConfig::Matrix(_) => "matrix",
            DestinationConfig::Xmpp(_) => "xmpp",
        }
    }

    /// Parses an Apprise-style URL (`jsons://…`, `twilio://…`, `mailto:…`); see [`apprise`].
    pub fn parse_url(url: &str) -> Result<DestinationConfig, Error> {
        apprise::parse(url)
    }

    /// Validates and completes a config a user gave (e.g. generates a webhook secret when
    /// none was given). Errors are human-readable, naming the field.
    pub fn prepare(self) -> Result<DestinationConfig, Error> {
        Ok(match self {
            DestinationConfig::Webhook(c) => DestinationConfig::Webhook(c.prepare()?),
            DestinationConfig::Mailto(c) => DestinationConfig::Mailto(c.prepare()?),
            DestinationConfig::Twilio(c) => DestinationConfig::Twilio(c.prepare()?),
            DestinationConfig::Ntfy(c) => DestinationConfig::Ntfy(c.prepare()?),
            DestinationConfig::Slack(c) => DestinationConfig::Slack(c.prepare()?),
            DestinationConfig::Discord(c) => DestinationConfig::Discord(c.prepare()?),
            DestinationConfig::Matrix(c) => DestinationConfig::Matrix(c.prepare()?),
            DestinationConfig::Xmpp(c) => DestinationConfig::Xmpp(c.prepare()?),
        })
    }

    /// JSON for the API: credentials (tokens, passwords, the webhook secret, the secret
    /// parts of URLs) never appear; `"<name>_set": true` says one is configured.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = match self {
            DestinationConfig::Webhook(c) => c.redacted(),
            DestinationConfig::Mailto(c) => c.redacted(),
            DestinationConfig::Twilio(c) => c.redacted(),
            DestinationConfig::Ntfy(c) => c.redacted(),
            DestinationConfig::Slack(c) => c.redacted(),
            DestinationConfig::Discord(c) => c.redacted(),
            DestinationConfig::Matrix(c) => c.redacted(),
            DestinationConfig::Xmpp(c) => c.redacted(),
        };
        if let Some(map) = value.as_object_mut() {
            map.insert("kind".into(), self.kind().into());
        }
        value
    }

    /// Reaches a third party (an email address, a phone number, an IM address): must be
    /// verified before use (by a code; an IM address by approving tidings' presence
    /// subscription).
    pub fn needs_verification(&self) -> bool {
        matches!(
            self,
            DestinationConfig::Mailto(_)
                | DestinationConfig::Twilio(_)
                | DestinationConfig::Xmpp(_)
        )
    }

    /// A short human label without secrets: "alice@example.org", "+15551234567",
    /// "https://hooks.example/x".
    pub fn address(&self) -> String {
        match self {
            DestinationConfig::Webhook(c) => c.address(),
            DestinationConfig::Mailto(c) => c.address(),
            DestinationConfig::Twilio(c) => c.address(),
            DestinationConfig::Ntfy(c) => c.address(),
            DestinationConfig::Slack(c) => c.address(),
            DestinationConfig::Discord(c) => c.address(),
            DestinationConfig::Matrix(c) => c.address(),
            DestinationConfig::Xmpp(c) => c.address(),
        }
    }

    /// Takes deliveries only while its user is reachable there (presence): an IM address.
    pub fn presence_aware(&self) -> bool {
        matches!(self, DestinationConfig::Xmpp(_))
    }

    /// Webhook only: the HMAC secret (the API shows it once, at creation).
    pub fn webhook_secret(&self) -> Option<&str> {
        match self {
            DestinationConfig::Webhook(c) => c.secret.as_deref(),
            _ => None,
        }
    }

    /// The URLs a send would connect to, for [`Sinks::check`].
    fn http_urls(&self) -> Vec<String> {
        match self {
            DestinationConfig::Webhook(c) => vec![c.url.clone()],
            DestinationConfig::Mailto(_) | DestinationConfig::Xmpp(_) => Vec::new(),
            DestinationConfig::Twilio(c) => vec![c.endpoint()],
            DestinationConfig::Ntfy(c) => vec![c.url.clone()],
            DestinationConfig::Slack(c) => vec![c.webhook_url.clone()],
            DestinationConfig::Discord(c) => vec![c.webhook_url.clone()],
            DestinationConfig::Matrix(c) => vec![c.homeserver.clone()],
        }
    }
}

/// One notification on its way to one destination.
#[derive(Debug, Clone)]
pub struct Message {
    pub notification: tidings_core::Notification,
    /// Human name of the source: topic name, feed title, "mail".
    pub source_name: String,
    /// Link to the item in tidings' web UI, when known.
    pub web_url: Option<String>,
    /// mailto only: per-notification Reply-To address.
    pub reply_to: Option<String>,
    /// mailto only: List-Id value for the source, e.g. `<topic-backups.tidings.example>`.
    pub list_id: Option<String>,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        status: Option<u16>,
    },
    /// Try again later: timeouts, connection errors, 5xx, 408, 429, SMTP 4xx. `retry_after`
    /// from `Retry-After` (seconds or HTTP date) or the service's own hint.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// Do not retry: other 4xx, SMTP 5xx, a config that cannot work.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

impl Outcome {
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome::Failed {
            status: None,
            error: error.into(),
        }
    }

    fn retry(error: impl Into<String>) -> Outcome {
        Outcome::Retry {
            status: None,
            error: error.into(),
            retry_after: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SinksConfig {
    /// SSRF rules and timeouts; `per_host_concurrency` should be high (64) for delivery.
    pub fetch: FetchConfig,
    /// None: mailto destinations are refused by [`Sinks::check`] with a clear error.
    pub relay: Option<mailto::RelayConfig>,
}

/// The shared clients. Cheap to clone.
#[derive(Clone)]
pub struct Sinks {
    fetcher: Fetcher,
    relay: Option<mailto::Relay>,
    matrix: matrix::AliasCache,
    /// The server's XMPP connection, once it is started (see [`Sinks::set_im`]).
    im: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn xmpp::ImTransport>>>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks")
            .field("fetcher", &self.fetcher)
            .field("relay", &self.relay.as_ref().map(|r| r.config()))
            .finish_non_exhaustive()
    }
}

impl Sinks {
    pub fn new(cfg: SinksConfig) -> Result<Sinks, Error> {
        let fetcher = Fetcher::new(cfg.fetch).map_err(|e| Error::Config(e.to_string()))?;
        let relay = cfg.relay.map(mailto::Relay::new).transpose()?;
        Ok(Sinks {
            fetcher,
            relay,
            matrix: matrix::AliasCache::default(),
            im: Default::default(),
        })
    }

    /// Hands over the server's XMPP connection (once; later calls do nothing).
    pub fn set_im(&self, transport: std::sync::Arc<dyn xmpp::ImTransport>) {
        let _ = self.im.set(transport);
    }

    /// Whether XMPP destinations can be served.
    pub fn has_im(&self) -> bool {
        self.im.get().is_some()
    }

    /// Creation-time checks that need I/O: URLs pass the SSRF rules
    /// ([`Fetcher::check_url`]), mailto needs a relay.
    pub async fn check(&self, cfg: &DestinationConfig) -> Result<(), Error> {
        if matches!(cfg, DestinationConfig::Mailto(_)) && self.relay.is_none() {
            return Err(Error::NotAvailable(mailto::NO_RELAY.into()));
        }
        if matches!(cfg, DestinationConfig::Xmpp(_)) && !self.has_im() {
            return Err(Error::NotAvailable(
                "XMPP destinations need the server's XMPP connection, and the operator has not configured one".into(),
            ));
        }
        for url in cfg.http_urls() {
            self.fetcher.check_url(&url).await.map_err(|e| match e {
                FetchError::Forbidden(text) => Error::Forbidden(text),
                other => Error::Invalid(format!("{}: {other}", cfg.kind())),
            })?;
        }
        Ok(())
    }

    /// One delivery attempt, bounded in time: the fetcher's total timeout for HTTP kinds
    /// (a Matrix alias lookup and its send together), the relay's for mail. Never panics.
    pub async fn send(&self, cfg: &DestinationConfig, msg: &Message) -> Outcome {
        if let DestinationConfig::Xmpp(c) = cfg {
            return match self.im.get() {
                Some(t) => {
                    t.send(
                        &c.jid,
                        xmpp::text(msg),
                        msg.notification.id.as_str().to_owned(),
                    )
                    .await
                }
                None => Outcome::failed("this server has no XMPP connection"),
            };
        }
        if let DestinationConfig::Mailto(c) = cfg {
            // The relay's own timeouts bound it.
            return match &self.relay {
                Some(relay) => relay.send_notification(c, msg).await,
                None => Outcome::failed(mailto::NO_RELAY),
            };
        }
        // Each HTTP call is bounded by the fetcher; a Matrix send may make two, so the
        // attempt as a whole is bounded here too.
        let total = self.fetcher.config().total_timeout;
        match tokio::time::timeout(total, self.send_http(cfg, msg)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::retry(FetchError::Timeout.to_string()),
        }
    }

    async fn send_http(&self, cfg: &DestinationConfig, msg: &Message) -> Outcome {
        match cfg {
            DestinationConfig::Webhook(c) => webhook::send(&self.fetcher, c, msg).await,
            DestinationConfig::Twilio(c) => twilio::send(&self.fetcher, c, msg).await,
            DestinationConfig::Ntfy(c) => ntfy::send(&self.fetcher, c, msg).await,
            DestinationConfig::Slack(c) => slack::send(&self.fetcher, c, msg).await,
            DestinationConfig::Discord(c) => discord::send(&self.fetcher, c, msg).await,
            DestinationConfig::Matrix(c) => matrix::send(&self.fetcher, &self.matrix, c, msg).await,
            DestinationConfig::Mailto(_) => Outcome::failed("mail is not sent over HTTP"),
            DestinationConfig::Xmpp(_) => Outcome::failed("IM is not sent over HTTP"),
        }
    }

    /// POSTs a JSON body signed like a webhook delivery (`X-Tidings-Timestamp`,
    /// `X-Tidings-Signature: sha256=<hmac(secret, "<timestamp>.<body>")>`,
    /// `Idempotency-Key: <id>`), under the same address rules: a reply handed back to a
    /// publisher's callback URL.
    pub async fn post_signed_json(
        &self,
        url: &str,
        secret: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Outcome {
        webhook::post_signed(&self.fetcher, url, secret, id, body).await
    }

    /// Whether `url` may be called at all (http(s), and the address rules).
    pub async fn check_url(&self, url: &str) -> Result<(), Error> {
        self.fetcher
            .check_url(url)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                tidings_sources::fetch::FetchError::Forbidden(m) => Error::Forbidden(m),
                e => Error::Invalid(e.to_string()),
            })
    }

    /// Sends one plain mail through the relay (replies relayed back to a mail source's
    /// sender).
    pub async fn send_mail(&self, mail: &mailto::PlainMail) -> Outcome {
        match &self.relay {
            Some(relay) => relay.send_plain(mail).await,
            None => Outcome::failed(mailto::NO_RELAY),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The config or URL is wrong; the text names the field and says what is expected.
    #[error("{0}")]
    Invalid(String),
    /// A kind this server cannot deliver to (XMPP before its agent, mail without a relay).
    #[error("{0}")]
    NotAvailable(String),
    /// The destination's address is refused by the SSRF rules.
    #[error("{0}")]
    Forbidden(String),
    /// The operator's configuration (fetcher, relay) is unusable.
    #[error("invalid delivery configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
pub(crate) mod test_support {
    use tidings_core::{Action, Notification, NotificationId, Priority};

    use crate::Message;

    pub(crate) fn message() -> Message {
        Message {
            notification: Notification {
                id: NotificationId("01hf3zzzzzzzzzzzzzzz".into()),
                time: 1_700_000_000,
                event: "message".into(),
                source: "topic:backups".into(),
                topic: Some("backups".into()),
                title: Some("nightly".into()),
                message: "Backup finished\nall good".into(),
                priority: Priority::High,
                tags: vec!["backup".into()],
                click: Some("https://grafana.example/d/1".into()),
                actions: vec![Action {
                    action: "view".into(),
                    label: "Open".into(),
                    url: Some("https://ops.example/".into()),
                    method: None,
                    body: None,
                    clear: false,
                }],
                author: Some("alice".into()),
            },
            source_name: "backups".into(),
            web_url: Some("https://tidings.example/n/01hf3zzzzzzzzzzzzzzz".into()),
            reply_to: Some("reply+abc@tidings.example".into()),
            list_id: Some("<topic-backups.tidings.example>".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::message;

    /// One config of each kind, every credential set to a recognizable string.
    fn all_kinds() -> Vec<(DestinationConfig, Vec<&'static str>)> {
        vec![
            (
                DestinationConfig::parse_url(
                    "jsons://hookuser:HOOKPASS1@hooks.example/in?token=QUERYSECRET1&+X-Api-Key=HEADERSECRET1",
                )
                .unwrap(),
                vec!["HOOKPASS1", "QUERYSECRET1", "HEADERSECRET1"],
            ),
            (
                DestinationConfig::Webhook(webhook::Config {
                    url: "https://hooks.example/in".into(),
                    secret: Some("whsec_GIVENSECRET123456".into()),
                    headers: Default::default(),
                    username: None,
                    password: None,
                }),
                vec!["GIVENSECRET123456"],
            ),
            (
                DestinationConfig::parse_url("twilio://AC123:TWILIOTOKEN1@15551234567/15557654321")
                    .unwrap(),
                vec!["TWILIOTOKEN1"],
            ),
            (
                DestinationConfig::parse_url("ntfys://tk_NTFYTOKEN1@ntfy.example/alerts").unwrap(),
                vec!["tk_NTFYTOKEN1"],
            ),
            (
                DestinationConfig::parse_url("ntfys://bob:NTFYPASS1@ntfy.example/alerts").unwrap(),
                vec!["NTFYPASS1"],
            ),
            (
                DestinationConfig::parse_url("slack://T1ABC/B2DEF/SLACKSECRET1").unwrap(),
                vec!["SLACKSECRET1"],
            ),
            (
                DestinationConfig::parse_url("discord://123456/DISCORDTOKEN1").unwrap(),
                vec!["DISCORDTOKEN1"],
            ),
            (
                DestinationConfig::parse_url("matrixs://MATRIXTOKEN1@matrix.example.org/#ops:example.org")
                    .unwrap(),
                vec!["MATRIXTOKEN1"],
            ),
            (
                DestinationConfig::parse_url("mailto:alice@example.org").unwrap(),
                vec![],
            ),
        ]
    }

    #[test]
    fn redaction_never_leaks_a_secret() {
        for (cfg, secrets) in all_kinds() {
            let cfg = cfg.prepare().unwrap();
            let mut secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
            if let Some(s) = cfg.webhook_secret() {
                secrets.push(s.to_owned());
            }
            let shown = [
                serde_json::to_string(&cfg.redacted()).unwrap(),
                cfg.address(),
                format!("{cfg:?}"),
            ];
            for secret in &secrets {
                for text in &shown {
                    assert!(
                        !text.contains(secret.as_str()),
                        "{} leaks {secret}: {text}",
                        cfg.kind()
                    );
                }
                // The stored form does keep it (the routing side encrypts it at rest).
                assert!(
                    serde_json::to_string(&cfg)
                        .unwrap()
                        .contains(secret.as_str())
                );
            }
            assert_eq!(cfg.redacted()["kind"], cfg.kind());
        }
    }

    #[test]
    fn redacted_shapes() {
        let cfg = DestinationConfig::parse_url("jsons://u:p@hooks.example/in?token=abc")
            .unwrap()
            .prepare()
            .unwrap();
        assert_eq!(
            cfg.redacted(),
            serde_json::json!({
                "kind": "webhook",
                "url": "https://hooks.example/in?token=…",
                "secret_set": true,
                "headers": [],
                "username": "u",
                "password_set": true,
            })
        );
        assert_eq!(cfg.address(), "https://hooks.example/in?token=…");
        let cfg = DestinationConfig::parse_url("twilio://AC1:tok@15551234567/15557654321").unwrap();
        assert_eq!(
            cfg.redacted(),
            serde_json::json!({
                "kind": "twilio",
                "account_sid": "AC1",
                "auth_token_set": true,
                "from": "+15551234567",
                "to": "+15557654321",
                "base_url": null,
            })
        );
        assert_eq!(cfg.address(), "+15557654321");
        let cfg = DestinationConfig::parse_url("matrixs://tok@matrix.example.org/#ops:example.org")
            .unwrap();
        assert_eq!(cfg.address(), "#ops:example.org on matrix.example.org");
    }

    #[test]
    fn kinds_and_verification() {
        let kinds: Vec<(&str, bool)> = all_kinds()
            .iter()
            .map(|(c, _)| (c.kind(), c.needs_verification()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("webhook", false),
                ("webhook", false),
                ("twilio", true),
                ("ntfy", false),
                ("ntfy", false),
                ("slack", false),
                ("discord", false),
                ("matrix", false),
                ("mailto", true),
            ]
        );
    }

    #[test]
    fn json_form_round_trips_and_names_unknown_fields() {
        let cfg: DestinationConfig = serde_json::from_value(serde_json::json!({
            "kind": "ntfy", "url": "https://ntfy.example", "topic": "alerts", "token": "tk_x"
        }))
        .unwrap();
        assert_eq!(cfg.kind(), "ntfy");
        let back: DestinationConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let err = serde_json::from_value::<DestinationConfig>(serde_json::json!({
            "kind": "webhook", "url": "https://x.example", "secert": "typo"
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("secert"), "{err}");
        let err = serde_json::from_value::<DestinationConfig>(serde_json::json!({"kind": "pager"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pager"), "{err}");
    }

    /// Odd, huge and unicode inputs through every payload builder and parser: no panic, and
    /// the limits hold.
    #[test]
    fn payload_builders_never_panic() {
        let odd_strings: Vec<String> = vec![
            String::new(),
            " ".into(),
            "\u{0}\u{7}\r\n\t".into(),
            "é".repeat(70_000),
            "😀".repeat(50_000),
            "&<>\"'".repeat(20_000),
            "\u{202e}rtl\u{200b}zero-width\u{fe0f}".into(),
            "a\r\nBcc: evil@example.org".into(),
            "x".repeat(1_000_000),
            "ж".repeat(3),
            "€[]{}^~|\\".repeat(500),
        ];
        let slack = slack::Config::from_tokens("T", "B", "C");
        let discord = discord::Config::from_parts("1", "t");
        let ntfy_cfg = ntfy::Config {
            url: "https://ntfy.example".into(),
            topic: "t".into(),
            token: None,
            username: None,
            password: None,
        };
        let twilio_cfg = twilio::Config {
            account_sid: "AC1".into(),
            auth_token: "t".into(),
            from: "+15550000000".into(),
            to: "+15551111111".into(),
            base_url: None,
        };
        for s in &odd_strings {
            let mut msg = message();
            msg.notification.title = Some(s.clone());
            msg.notification.message = s.clone();
            msg.notification.tags = vec![s.clone(); 30];
            msg.notification.click = Some(s.clone());
            msg.notification.author = Some(s.clone());
            msg.notification.source = s.clone();
            msg.notification.id = tidings_core::NotificationId(s.clone());
            msg.notification.time = i64::MIN;
            msg.source_name = s.clone();
            msg.web_url = Some(format!("https://x.example/{s}"));
            msg.reply_to = Some(s.clone());
            msg.list_id = Some(s.clone());

            let body = serde_json::to_vec(&webhook::payload(&msg)).unwrap();
            assert!(body.len() < 400_000, "webhook body {}", body.len());
            let sms = twilio::sms_text(&msg);
            assert_eq!(twilio::form(&twilio_cfg, &msg)[2].1, sms);
            assert!(twilio::segments(&sms) <= twilio::MAX_SEGMENTS, "{sms}");
            let ntfy_body = ntfy::payload(&ntfy_cfg, &msg);
            assert!(ntfy_body["message"].as_str().unwrap().len() <= ntfy::MAX_MESSAGE_BYTES);
            let slack_body = slack::payload(&slack, &msg);
            assert!(
                slack_body["blocks"][0]["text"]["text"]
                    .as_str()
                    .unwrap()
                    .chars()
                    .count()
                    <= 3000
            );
            let d = discord::payload(&discord, &msg);
            let embed = &d["embeds"][0];
            let chars = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.chars().count());
            assert!(chars(&embed["title"]) <= 256 && chars(&embed["description"]) <= 4096);
            assert!(
                chars(&embed["title"])
                    + chars(&embed["description"])
                    + chars(&embed["footer"]["text"])
                    + chars(&embed["author"]["name"])
                    <= 6000
            );
            let event = matrix::event(&msg);
            assert!(serde_json::to_vec(&event).unwrap().len() < 65_000);
            let _ = matrix::txn_id(s, s);
            let _ = mailto::text_body(&msg);
            let html = mailto::html_body(&msg);
            assert!(!html.contains("<script") && !html.contains("Bcc: evil\r"));
            let subject = mailto::subject(&msg);
            assert!(!subject.contains('\n') && subject.chars().count() <= 200);
            let _ = mailto::message_id(s, s, "example.org");
            let _ = twilio::sign(s, s, &[(s.clone(), s.clone())]);
            let _ = webhook::sign(s, i64::MAX, s.as_bytes());

            // Parsers and preparation on the same inputs.
            let _ = DestinationConfig::parse_url(s);
            for scheme in [
                "json://",
                "twilio://",
                "ntfy://",
                "slack://",
                "discord://",
                "matrixs://",
                "mailto:",
                "mailto://",
            ] {
                let _ = DestinationConfig::parse_url(&format!("{scheme}{s}"));
                let _ = DestinationConfig::parse_url(&format!("{scheme}{s}@{s}/{s}?{s}={s}"));
            }
            let _ = DestinationConfig::Webhook(webhook::Config {
                url: s.clone(),
                secret: Some(s.clone()),
                headers: [(s.clone(), s.clone())].into(),
                username: Some(s.clone()),
                password: Some(s.clone()),
            })
            .prepare();
            let _ = DestinationConfig::Matrix(matrix::Config {
                homeserver: s.clone(),
                access_token: s.clone(),
                room: s.clone(),
            })
            .prepare();
            let _ = DestinationConfig::Mailto(mailto::Config { to: s.clone() }).prepare();
        }
    }
}
