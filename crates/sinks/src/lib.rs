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
//!   [`matrix`], [`mailto`]): its config struct, its I/O-free payload builder (tested
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
}

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
        };
        if let Some(map) = value.as_object_mut() {
            map.insert("kind".into(), self.kind().into());
        }
        value
    }

    /// Reaches a third party (an email address, a phone number): must be verified by a
    /// code before use.
    pub fn needs_verification(&self) -> bool {
        matches!(
            self,
            DestinationConfig::Mailto(_) | DestinationConfig::Twilio(_)
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
        }
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
            DestinationConfig::Mailto(_) => Vec::new(),
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
    fn failed(error: impl Into<String>) -> Outcome {
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
        })
    }

    /// Creation-time checks that need I/O: URLs pass the SSRF rules
    /// ([`Fetcher::check_url`]), mailto needs a relay.
    pub async fn check(&self, cfg: &DestinationConfig) -> Result<(), Error> {
        if matches!(cfg, DestinationConfig::Mailto(_)) && self.relay.is_none() {
            return Err(Error::NotAvailable(mailto::NO_RELAY.into()));
        }
        for url in cfg.http_urls() {
            self.fetcher.check_url(&url).await.map_err(|e| match e {
                FetchError::Forbidden(text) => Error::Forbidden(text),
                other => Error::Invalid(format!("{}: {other}", cfg.kind())),
            })?;
        }
        Ok(())
    }

    /// One delivery attempt, bounded in time (never hangs past the configured total
    /// timeout; a Matrix alias lookup and its send have one each). Never panics.
    pub async fn send(&self, cfg: &DestinationConfig, msg: &Message) -> Outcome {
        match cfg {
            DestinationConfig::Webhook(c) => webhook::send(&self.fetcher, c, msg).await,
            DestinationConfig::Twilio(c) => twilio::send(&self.fetcher, c, msg).await,
            DestinationConfig::Ntfy(c) => ntfy::send(&self.fetcher, c, msg).await,
            DestinationConfig::Slack(c) => slack::send(&self.fetcher, c, msg).await,
            DestinationConfig::Discord(c) => discord::send(&self.fetcher, c, msg).await,
            DestinationConfig::Matrix(c) => matrix::send(&self.fetcher, &self.matrix, c, msg).await,
            DestinationConfig::Mailto(c) => match &self.relay {
                Some(relay) => relay.send_notification(c, msg).await,
                None => Outcome::failed(mailto::NO_RELAY),
            },
        }
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
