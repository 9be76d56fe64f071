//! The configuration of `tidings serve`: a TOML file, overlaid by `TIDINGS_…` environment
//! variables, checked before anything starts.
//!
//! Loading ([`Config::load`]) goes in layers on a `toml::Table`, then deserializes once:
//! 1. the file, if any;
//! 2. every `TIDINGS_<SECTION>_<KEY>` / `TIDINGS_<KEY>` environment variable, converted to
//!    the type the key has in the defaults;
//! 3. serde fills what is still missing from [`Config::default`];
//! 4. [`Config::validate`] checks ranges and cross-field rules.
//!
//! The list of keys is never written down here: it is the serialization of
//! `Config::default()`. Adding a field to a section struct therefore makes it a file key and
//! an environment variable at once. The one rule this imposes is that every field must
//! appear in that serialization (no `Option` that defaults to `None`; use an empty value as
//! `base_url` does), or it cannot be set from the environment.
//!
//! Errors name the key as `section.key` and say where the value came from, because "invalid
//! type: string, expected u64" alone sends an operator hunting through files and units.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_store::Synchronous;

/// Environment variables with the `TIDINGS_` prefix that are not config keys. They are read
/// by the command line, so [`Config::load`] must not reject them:
/// - `TIDINGS_SERVER`: server URL for `tidings user …` / `tidings token …`;
/// - `TIDINGS_ADMIN_TOKEN`: admin credential for those commands;
/// - `TIDINGS_CONFIG`: path of the config file (same as `--config`);
/// - `TIDINGS_LOG`: a tracing filter that overrides `log_level` (as does `RUST_LOG`).
pub const NON_CONFIG_ENV: &[&str] = &[
    "TIDINGS_SERVER",
    "TIDINGS_ADMIN_TOKEN",
    "TIDINGS_CONFIG",
    "TIDINGS_LOG",
];

/// Prefix shared by every config environment variable.
pub const ENV_PREFIX: &str = "TIDINGS_";

/// Largest accepted body limit. Bodies are buffered in memory before they are stored, so a
/// typo that adds three zeros must not become a way to exhaust memory.
const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest mailbox / in-flight window: both are preallocated or held in memory per unit.
const MAX_QUEUE_BOUND: usize = 1 << 20;

/// The whole configuration. Field docs are the reference; `tidings.example.toml` repeats
/// them for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the database, the admin credential and `server.json`.
    pub data_dir: PathBuf,
    /// Public URL used in links (sign-in links, click URLs). Empty: derived from
    /// `http.listen`, see [`Config::effective_base_url`].
    pub base_url: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// A tracing `EnvFilter` directive such as `info` or `info,tidings_bus=debug`.
    pub log_level: String,
    // Sections come after the plain keys: TOML cannot write a plain key after a table.
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub avatars: AvatarsConfig,
    pub queue: QueueConfig,
    pub shutdown: ShutdownConfig,
    pub sources: SourcesConfig,
    pub smtp: SmtpConfig,
    pub delivery: DeliveryConfig,
    pub relay: RelayConfig,
    pub xmpp: XmppConfig,
}

/// Log line format of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[http]`: the web edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the HTTP server binds.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// Body limit of a publish; larger bodies get 413.
    pub max_message_bytes: usize,
    /// Body limit of every other request.
    pub max_request_bytes: usize,
    /// Token-bucket refill rate per credential.
    pub rate_limit_per_second: f64,
    /// Token-bucket size per credential.
    pub rate_limit_burst: u32,
    /// Serve `/metrics` without an admin token.
    pub metrics_public: bool,
    /// A client must send a request's headers within this long (also an idle keep-alive
    /// connection's next request), or the connection is closed: slow clients cannot hold
    /// connections open.
    #[serde(with = "crate::duration::serde")]
    pub header_timeout: Duration,
}

/// `[store]`: the embedded SQLite store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `full`: a commit survives power loss; `normal`: it survives a process crash only.
    pub synchronous: Synchronous,
}

/// `[avatars]`: the virtual-actor runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvatarsConfig {
    /// Number of silos (shards) avatars are spread over by hash.
    pub silos: usize,
    /// An avatar with no message for this long is passivated.
    #[serde(with = "crate::duration::serde")]
    pub idle_timeout: Duration,
    /// Capacity of each avatar's mailbox; senders wait while it is full.
    pub mailbox: usize,
}

/// `[queue]`: the durable ingest queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Deliveries of one item before it goes to the dead-letter table.
    pub max_attempts: u32,
    /// Items handed out and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// First redelivery delay; doubles per attempt.
    #[serde(with = "crate::duration::serde")]
    pub retry_base: Duration,
    /// Upper bound of the redelivery delay.
    #[serde(with = "crate::duration::serde")]
    pub retry_max: Duration,
}

/// `[sources]`: feeds and watched pages: fetching and the poll schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Allow fetching from loopback, private, link-local and other non-public addresses.
    pub allow_private_networks: bool,
    /// Networks (CIDR, e.g. "10.1.0.0/16") allowed even though they are not public.
    pub allowlist: Vec<String>,
    /// Poll interval of a feed whose rhythm is not known yet.
    #[serde(with = "crate::duration::serde")]
    pub default_interval: Duration,
    /// No source is polled more often than this.
    #[serde(with = "crate::duration::serde")]
    pub min_interval: Duration,
    /// No live source is polled less often than this.
    #[serde(with = "crate::duration::serde")]
    pub max_interval: Duration,
    /// Upper bound of the backoff after errors.
    #[serde(with = "crate::duration::serde")]
    pub max_backoff: Duration,
    /// Failed polls in a row after which subscribers are told a source is failing.
    pub failing_after: u32,
    /// Largest response body, counted after decompression.
    pub max_body_bytes: usize,
    /// Time allowed to connect.
    #[serde(with = "crate::duration::serde")]
    pub connect_timeout: Duration,
    /// Time allowed for a whole fetch, redirects included.
    #[serde(with = "crate::duration::serde")]
    pub fetch_timeout: Duration,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// Requests to one host at once, at most.
    pub per_host_concurrency: usize,
    /// Item ids remembered per source to recognise what was already notified.
    pub memory: usize,
    /// Subscribe at WebSub hubs that feeds advertise (needs `base_url`: hubs call back).
    pub websub: bool,
    /// Lease asked of WebSub hubs; renewed before it ends.
    #[serde(with = "crate::duration::serde")]
    pub websub_lease: Duration,
    /// Accept `X-Hub-Signature: sha1=...` (weak) from hubs that offer nothing better.
    pub websub_allow_sha1: bool,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            allowlist: Vec::new(),
            default_interval: Duration::from_secs(300),
            min_interval: Duration::from_secs(60),
            max_interval: Duration::from_secs(6 * 3600),
            max_backoff: Duration::from_secs(6 * 3600),
            failing_after: 3,
            max_body_bytes: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(30),
            max_redirects: 5,
            per_host_concurrency: 2,
            memory: 5000,
            websub: true,
            websub_lease: Duration::from_secs(10 * 86400),
            websub_allow_sha1: false,
        }
    }
}

/// `[smtp]`: the inbound mail listener (off while `mail_domain` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The domain of users' tidings addresses (`alice@<domain>`); empty: no SMTP listener.
    pub mail_domain: String,
    /// Address the SMTP listener binds.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// Name in the greeting; empty: the mail domain.
    pub hostname: String,
    /// Largest message accepted (552 above).
    pub max_message_bytes: usize,
    /// Most recipients of one message.
    pub max_recipients: usize,
    /// A client silent for this long is disconnected (RFC 5321 asks for at least 5m).
    #[serde(with = "crate::duration::serde")]
    pub idle_timeout: Duration,
    /// Most simultaneous SMTP connections.
    pub max_connections: usize,
    /// Most commands per minute on one connection.
    pub max_commands_per_minute: u32,
    /// PEM certificate chain for STARTTLS; empty: no STARTTLS.
    pub tls_cert: String,
    /// PEM private key for STARTTLS.
    pub tls_key: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            mail_domain: String::new(),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2525),
            hostname: String::new(),
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 50,
            idle_timeout: Duration::from_secs(300),
            max_connections: 500,
            max_commands_per_minute: 600,
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// `[delivery]`: sending to users' destinations (webhooks, mail, SMS, chat services).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts per item and destination before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(with = "crate::duration::serde")]
    pub retry_base: Duration,
    /// Longest retry delay (also caps a server's Retry-After).
    #[serde(with = "crate::duration::serde")]
    pub retry_max: Duration,
    /// Failures in a row after which a destination is paused (circuit open).
    pub breaker_threshold: u32,
    /// First pause of an open circuit; doubles while the destination keeps failing.
    #[serde(with = "crate::duration::serde")]
    pub breaker_cooldown: Duration,
    /// Longest pause of an open circuit.
    #[serde(with = "crate::duration::serde")]
    pub breaker_cooldown_max: Duration,
    /// Sends in flight across all destinations, at most.
    pub concurrency: usize,
    /// Time allowed for one HTTP delivery attempt, connecting included.
    #[serde(with = "crate::duration::serde")]
    pub timeout: Duration,
    /// Requests to one host at once, at most.
    pub per_host_concurrency: usize,
    /// Allow destinations on loopback, private and other non-public addresses.
    pub allow_private_networks: bool,
    /// Networks (CIDR) allowed for destinations even though they are not public.
    pub allowlist: Vec<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            breaker_cooldown_max: Duration::from_secs(1800),
            concurrency: 256,
            timeout: Duration::from_secs(15),
            per_host_concurrency: 64,
            allow_private_networks: false,
            allowlist: Vec::new(),
        }
    }
}

/// `[relay]`: the SMTP relay that mail to `mailto:` destinations goes through (off while
/// `host` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Relay host name; empty: no mail delivery.
    pub host: String,
    pub port: u16,
    /// `starttls` (587), `implicit` (465) or `none` (a relay on localhost only).
    pub tls: String,
    /// Login at the relay; empty: no AUTH.
    pub username: String,
    pub password: String,
    /// From of every mail, e.g. `tidings <tidings@example.org>`; empty:
    /// `tidings@<smtp.mail_domain>`.
    pub from: String,
    /// Time allowed for one whole SMTP conversation.
    #[serde(with = "crate::duration::serde")]
    pub timeout: Duration,
    /// Accept any certificate from the relay (testing only).
    pub accept_invalid_certs: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: "starttls".into(),
            username: String::new(),
            password: String::new(),
            from: String::new(),
            timeout: Duration::from_secs(30),
            accept_invalid_certs: false,
        }
    }
}

/// `[xmpp]`: tidings' XMPP connection, for IM delivery, presence and IM commands (off
/// while `mode` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppConfig {
    /// `component` (XEP-0114: the server must declare the component), `client` (an
    /// ordinary account), or empty: no XMPP.
    pub mode: String,
    /// Server to connect to; component mode: required; client mode: empty means the JID's
    /// domain.
    pub host: String,
    /// 0: 5347 for a component, 5222 for a client.
    pub port: u16,
    /// Component mode: the component's domain (e.g. `tidings.example.org`).
    pub domain: String,
    /// Component mode: the shared secret from the server's component declaration.
    pub secret: String,
    /// Client mode: the bot account's JID.
    pub jid: String,
    /// Client mode: its password.
    pub password: String,
    /// Client mode: `required` (STARTTLS or no connection) or `optional` (a server on
    /// loopback without TLS; testing only).
    pub tls: String,
    /// Client mode: a PEM file of CA certificates trusted besides Mozilla's (a server with
    /// a private CA); empty: none.
    pub ca_file: String,
    /// Longest wait between reconnect attempts.
    #[serde(with = "crate::duration::serde")]
    pub reconnect_max: Duration,
}

impl Default for XmppConfig {
    fn default() -> Self {
        Self {
            mode: String::new(),
            host: String::new(),
            port: 0,
            domain: String::new(),
            secret: String::new(),
            jid: String::new(),
            password: String::new(),
            tls: "required".into(),
            ca_file: String::new(),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

/// `[shutdown]`: what SIGTERM/SIGINT do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long to wait for in-flight work before exiting; what is left is redelivered on
    /// the next start, so a short value loses nothing.
    #[serde(with = "crate::duration::serde")]
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tidings-data"),
            base_url: String::new(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            http: HttpConfig::default(),
            store: StoreConfig::default(),
            avatars: AvatarsConfig::default(),
            queue: QueueConfig::default(),
            shutdown: ShutdownConfig::default(),
            sources: SourcesConfig::default(),
            smtp: SmtpConfig::default(),
            delivery: DeliveryConfig::default(),
            relay: RelayConfig::default(),
            xmpp: XmppConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            max_message_bytes: 64 * 1024,
            max_request_bytes: 1024 * 1024,
            rate_limit_per_second: 50.0,
            rate_limit_burst: 200,
            metrics_public: false,
            header_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
        }
    }
}

impl Default for AvatarsConfig {
    fn default() -> Self {
        Self {
            silos: 16,
            idle_timeout: Duration::from_secs(5 * 60),
            mailbox: 1024,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            max_in_flight: 8192,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a config value came from; shown in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default, or a value set in code (command-line flags).
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => Ok(()),
            Origin::File(path) => write!(f, " in {}", path.display()),
            Origin::Env(var) => write!(f, " (from {var})"),
        }
    }
}

/// Why the configuration could not be loaded. Each message is complete on its own: the CLI
/// prints it as `error: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The underlying errors are part of the message rather than `#[source]`, so that a
    // printed error chain does not repeat them.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid TOML in config file {}: {error}", path.display())]
    Toml {
        path: PathBuf,
        error: toml::de::Error,
    },
    #[error("unknown environment variable {var}: it matches no config key{hint}")]
    UnknownEnv {
        var: String,
        /// Pre-formatted " (did you mean …?)", or empty.
        hint: String,
    },
    #[error("unknown config key `{key}`{origin}: {reason}")]
    UnknownKey {
        key: String,
        origin: Origin,
        reason: String,
    },
    #[error("invalid value {value} for `{key}`{origin}: {reason}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// The value as written in TOML (strings quoted).
        value: String,
        origin: Origin,
        reason: String,
    },
    #[error("cannot write the configuration as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
}

impl ConfigError {
    /// The `section.key` the error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Loads the configuration: `file` (if any), then the `TIDINGS_…` variables among
    /// `env`, then defaults, then [`Config::validate`]. Variables without the prefix are
    /// ignored, so the whole process environment can be passed.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults = Config::default().to_table()?;

        let mut table = match file {
            Some(path) => read_file(path)?,
            None => toml::Table::new(),
        };
        let file_table = table.clone();

        // Sorted so that with several bad variables the reported one does not depend on
        // the order of the process environment.
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        let known = env_keys(&defaults);
        let mut from_env: BTreeMap<String, String> = BTreeMap::new();
        for (var, raw) in vars {
            if NON_CONFIG_ENV.contains(&var.as_str()) {
                continue;
            }
            let Some((path, default)) = known.get(&var) else {
                return Err(ConfigError::UnknownEnv {
                    hint: env_hint(&var, &known),
                    var,
                });
            };
            let key = path.join(".");
            let value = env_value(&raw, default).map_err(|reason| ConfigError::Invalid {
                key: key.clone(),
                value: toml::Value::String(raw.clone()).to_string(),
                origin: Origin::Env(var.clone()),
                reason,
            })?;
            insert(&mut table, path, value);
            from_env.insert(key, var);
        }

        let origin_of = |key: &str| -> Origin {
            if let Some(var) = from_env.get(key) {
                return Origin::Env(var.clone());
            }
            match file {
                Some(path) if lookup(&file_table, key).is_some() => Origin::File(path.to_owned()),
                _ => Origin::Default,
            }
        };

        let config = deserialize(&table, &defaults, &origin_of)?;
        config.validate().map_err(|mut err| {
            if let ConfigError::Invalid { key, origin, .. } = &mut err {
                *origin = origin_of(key);
            }
            err
        })?;
        Ok(config)
    }

    /// Checks ranges and cross-field rules that the types cannot express. [`Config::load`]
    /// calls it; call it again after changing fields (command-line overrides).
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, value: impl Serialize, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key: key.to_owned(),
                value: toml::Value::try_from(value)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| "?".to_owned()),
                origin: Origin::Default,
                reason: reason.into(),
            }
        }
        fn range<T: PartialOrd + Copy + fmt::Display + Serialize>(
            key: &str,
            value: T,
            min: T,
            max: T,
        ) -> Result<(), ConfigError> {
            if value < min || value > max {
                return Err(invalid(
                    key,
                    value,
                    format!("must be between {min} and {max}"),
                ));
            }
            Ok(())
        }
        fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
            if value.is_zero() {
                return Err(invalid(
                    key,
                    crate::duration::format(value),
                    "must be greater than zero",
                ));
            }
            Ok(())
        }

        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "", "must not be empty"));
        }
        if !self.base_url.is_empty() {
            let rest = self
                .base_url
                .strip_prefix("https://")
                .or_else(|| self.base_url.strip_prefix("http://"));
            match rest {
                None => {
                    return Err(invalid(
                        "base_url",
                        &self.base_url,
                        "must start with http:// or https://",
                    ));
                }
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    return Err(invalid("base_url", &self.base_url, "has no host"));
                }
                Some(_) if self.base_url.chars().any(char::is_whitespace) => {
                    return Err(invalid("base_url", &self.base_url, "contains whitespace"));
                }
                Some(_) => {}
            }
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid(
                "log_level",
                &self.log_level,
                format!("not a tracing filter directive: {err}"),
            ));
        }

        let http = &self.http;
        range(
            "http.max_message_bytes",
            http.max_message_bytes,
            1,
            MAX_BODY_LIMIT,
        )?;
        range(
            "http.max_request_bytes",
            http.max_request_bytes,
            1,
            MAX_BODY_LIMIT,
        )?;
        if !(http.rate_limit_per_second.is_finite() && http.rate_limit_per_second > 0.0) {
            return Err(invalid(
                "http.rate_limit_per_second",
                http.rate_limit_per_second,
                "must be a number greater than zero",
            ));
        }
        range("http.rate_limit_burst", http.rate_limit_burst, 1, u32::MAX)?;

        range("avatars.silos", self.avatars.silos, 1, 4096)?;
        positive("avatars.idle_timeout", self.avatars.idle_timeout)?;
        range("avatars.mailbox", self.avatars.mailbox, 1, MAX_QUEUE_BOUND)?;

        let src = &self.sources;
        for net in &src.allowlist {
            if net.parse::<ipnet::IpNet>().is_err() {
                return Err(invalid(
                    "sources.allowlist",
                    net,
                    "not a network in CIDR form like 10.1.0.0/16",
                ));
            }
        }
        positive("sources.default_interval", src.default_interval)?;
        positive("sources.min_interval", src.min_interval)?;
        if src.max_interval < src.min_interval {
            return Err(invalid(
                "sources.max_interval",
                crate::duration::format(src.max_interval),
                "must not be less than sources.min_interval",
            ));
        }
        positive("sources.max_backoff", src.max_backoff)?;
        range("sources.failing_after", src.failing_after, 1, 1000)?;
        range("sources.max_body_bytes", src.max_body_bytes, 1024, 1 << 30)?;
        positive("sources.connect_timeout", src.connect_timeout)?;
        positive("sources.fetch_timeout", src.fetch_timeout)?;
        range("sources.max_redirects", src.max_redirects, 0, 20)?;
        range(
            "sources.per_host_concurrency",
            src.per_host_concurrency,
            1,
            256,
        )?;
        range("sources.memory", src.memory, 10, 1_000_000)?;
        if src.websub_lease < Duration::from_secs(60) {
            return Err(invalid(
                "sources.websub_lease",
                crate::duration::format(src.websub_lease),
                "must be at least 1m",
            ));
        }

        let smtp = &self.smtp;
        if !smtp.mail_domain.is_empty()
            && (smtp.mail_domain.contains(['@', ' ', '/'])
                || !smtp.mail_domain.contains('.') && smtp.mail_domain != "localhost")
        {
            return Err(invalid(
                "smtp.mail_domain",
                &smtp.mail_domain,
                "must be a domain name like notify.example.org",
            ));
        }
        range(
            "smtp.max_message_bytes",
            smtp.max_message_bytes,
            1024,
            1 << 30,
        )?;
        range("smtp.max_recipients", smtp.max_recipients, 1, 1000)?;
        if smtp.idle_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "smtp.idle_timeout",
                crate::duration::format(smtp.idle_timeout),
                "must be at least 1s",
            ));
        }
        range("smtp.max_connections", smtp.max_connections, 1, 100_000)?;
        range(
            "smtp.max_commands_per_minute",
            smtp.max_commands_per_minute,
            1,
            1_000_000,
        )?;
        if smtp.tls_cert.is_empty() != smtp.tls_key.is_empty() {
            return Err(invalid(
                "smtp.tls_cert",
                &smtp.tls_cert,
                "tls_cert and tls_key go together",
            ));
        }

        positive("http.header_timeout", self.http.header_timeout)?;

        let dl = &self.delivery;
        range("delivery.max_attempts", dl.max_attempts, 1, 50)?;
        positive("delivery.retry_base", dl.retry_base)?;
        if dl.retry_max < dl.retry_base {
            return Err(invalid(
                "delivery.retry_max",
                crate::duration::format(dl.retry_max),
                "must not be less than delivery.retry_base",
            ));
        }
        range("delivery.breaker_threshold", dl.breaker_threshold, 1, 1000)?;
        positive("delivery.breaker_cooldown", dl.breaker_cooldown)?;
        if dl.breaker_cooldown_max < dl.breaker_cooldown {
            return Err(invalid(
                "delivery.breaker_cooldown_max",
                crate::duration::format(dl.breaker_cooldown_max),
                "must not be less than delivery.breaker_cooldown",
            ));
        }
        range("delivery.concurrency", dl.concurrency, 1, 100_000)?;
        positive("delivery.timeout", dl.timeout)?;
        range(
            "delivery.per_host_concurrency",
            dl.per_host_concurrency,
            1,
            10_000,
        )?;
        for net in &dl.allowlist {
            if net.parse::<ipnet::IpNet>().is_err() {
                return Err(invalid(
                    "delivery.allowlist",
                    net,
                    "must be networks in CIDR form like 10.1.0.0/16",
                ));
            }
        }
        let relay = &self.relay;
        if !matches!(relay.tls.as_str(), "starttls" | "implicit" | "none") {
            return Err(invalid(
                "relay.tls",
                &relay.tls,
                "must be starttls, implicit or none",
            ));
        }
        if !relay.host.is_empty() {
            range("relay.port", relay.port, 1, 65535)?;
            positive("relay.timeout", relay.timeout)?;
            if relay.from.is_empty() && self.smtp.mail_domain.is_empty() {
                return Err(invalid(
                    "relay.from",
                    "",
                    "set relay.from (or smtp.mail_domain, for tidings@<domain>)",
                ));
            }
            if relay.username.is_empty() != relay.password.is_empty() {
                return Err(invalid(
                    "relay.username",
                    &relay.username,
                    "relay.username and relay.password go together",
                ));
            }
        }

        let x = &self.xmpp;
        match x.mode.as_str() {
            "" => {}
            "component" => {
                if x.host.is_empty() || x.domain.is_empty() || x.secret.is_empty() {
                    return Err(invalid(
                        "xmpp.mode",
                        &x.mode,
                        "component mode needs xmpp.host, xmpp.domain and xmpp.secret",
                    ));
                }
            }
            "client" => {
                if x.jid.is_empty() || x.password.is_empty() {
                    return Err(invalid(
                        "xmpp.mode",
                        &x.mode,
                        "client mode needs xmpp.jid and xmpp.password",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "xmpp.mode",
                    &x.mode,
                    "must be component, client, or empty (no XMPP)",
                ));
            }
        }
        if !matches!(x.tls.as_str(), "required" | "optional") {
            return Err(invalid("xmpp.tls", &x.tls, "must be required or optional"));
        }
        positive("xmpp.reconnect_max", x.reconnect_max)?;

        let queue = &self.queue;
        range("queue.max_attempts", queue.max_attempts, 1, 1000)?;
        range(
            "queue.max_in_flight",
            queue.max_in_flight,
            1,
            MAX_QUEUE_BOUND,
        )?;
        positive("queue.retry_base", queue.retry_base)?;
        if queue.retry_max < queue.retry_base {
            return Err(invalid(
                "queue.retry_max",
                crate::duration::format(queue.retry_max),
                format!(
                    "must not be less than queue.retry_base ({})",
                    crate::duration::format(queue.retry_base)
                ),
            ));
        }

        // Zero is allowed: stop without waiting, in-flight items are redelivered on restart.
        // The upper bound keeps a service manager's stop timeout meaningful.
        if self.shutdown.drain_timeout > Duration::from_secs(3600) {
            return Err(invalid(
                "shutdown.drain_timeout",
                crate::duration::format(self.shutdown.drain_timeout),
                "must be at most 1h",
            ));
        }
        Ok(())
    }

    /// The public URL for links, without a trailing slash: `base_url` if set, else
    /// `http://` + `http.listen`, with a wildcard bind address replaced by loopback (a link
    /// to `0.0.0.0` does not work in browsers; loopback is right for the local operator).
    pub fn effective_base_url(&self) -> String {
        if self.base_url.is_empty() {
            local_url(self.http.listen)
        } else {
            self.base_url.trim_end_matches('/').to_owned()
        }
    }

    /// The configuration as a TOML table: the shape every key lookup is derived from.
    pub fn to_table(&self) -> Result<toml::Table, ConfigError> {
        Ok(toml::Table::try_from(self)?)
    }

    /// The configuration as a TOML document (`tidings config check`).
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Every environment variable that sets a config key, with its `section.key`, sorted.
    pub fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
        let defaults = Config::default().to_table()?;
        Ok(env_keys(&defaults)
            .into_iter()
            .map(|(var, (path, _))| (var, path.join(".")))
            .collect())
    }
}

/// Serde for a `SocketAddr` with an error that says what is expected: the standard one
/// ("invalid socket address syntax") does not tell that a host name is the problem.
mod socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            de::Error::custom(
                "expected an IP address and a port, such as \"127.0.0.1:8080\", \
                 \"0.0.0.0:80\" or \"[::]:8080\" (not a host name)",
            )
        })
    }
}

/// `http://<addr>` for a listen address, with wildcard addresses replaced by loopback so the
/// URL can be connected to from this machine.
pub fn local_url(listen: SocketAddr) -> String {
    let mut addr = listen;
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    format!("http://{addr}")
}

/// The process environment as `(name, value)` pairs for [`Config::load`]. Names that are
/// not Unicode cannot be config keys and are skipped; values are converted lossily so that
/// a non-Unicode value reaches validation (and its error) instead of vanishing.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            Some((name, value.to_string_lossy().into_owned()))
        })
        .collect()
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Toml {
            path: path.to_owned(),
            error,
        })
}

/// Deserializes the merged table. On failure, finds the key responsible by trying each
/// value alone on top of the defaults: serde's own message for a value deserialized from a
/// table carries neither the section nor (for bad values) the key.
fn deserialize(
    table: &toml::Table,
    defaults: &toml::Table,
    origin_of: &dyn Fn(&str) -> Origin,
) -> Result<Config, ConfigError> {
    let whole = match toml::Value::Table(table.clone()).try_into::<Config>() {
        Ok(config) => return Ok(config),
        Err(err) => err,
    };
    let mut leaves = Vec::new();
    collect_leaves(table, defaults, &mut Vec::new(), &mut leaves);
    for (path, value) in leaves {
        let mut probe = defaults.clone();
        insert(&mut probe, &path, value.clone());
        if let Err(err) = toml::Value::Table(probe).try_into::<Config>() {
            let key = path.join(".");
            let origin = origin_of(&key);
            let reason = err.message().to_owned();
            return Err(if lookup(defaults, &key).is_none() {
                ConfigError::UnknownKey {
                    key,
                    origin,
                    reason,
                }
            } else {
                ConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    origin,
                    reason,
                }
            });
        }
    }
    // No single value explains the failure (a combination of them does): report serde's
    // message as it is rather than guess.
    Err(ConfigError::Invalid {
        key: "(config)".to_owned(),
        value: String::new(),
        origin: Origin::Default,
        reason: whole.message().to_owned(),
    })
}

/// The values of `table`, descending into sub-tables only where the defaults have a table:
/// an unknown section is reported as one key rather than as each key inside it.
fn collect_leaves(
    table: &toml::Table,
    defaults: &toml::Table,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, toml::Value)>,
) {
    for (key, value) in table {
        path.push(key.clone());
        match (value, defaults.get(key)) {
            (toml::Value::Table(sub), Some(toml::Value::Table(sub_defaults))) => {
                collect_leaves(sub, sub_defaults, path, out);
            }
            _ => out.push((path.clone(), value.clone())),
        }
        path.pop();
    }
}

/// Sets `path` in `table`, creating sections as needed. A section that exists but is not a
/// table (`http = 5`) is left alone: deserializing reports it, naming the file.
fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = table;
    for name in parents {
        let entry = current
            .entry(name.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(sub) => current = sub,
            _ => return,
        }
    }
    current.insert(last.clone(), value);
}

/// The value at a dotted `section.key`, if present.
fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// Maps each environment variable name to its key path and default value.
fn env_keys(defaults: &toml::Table) -> BTreeMap<String, (Vec<String>, toml::Value)> {
    fn walk(
        table: &toml::Table,
        path: &mut Vec<String>,
        out: &mut BTreeMap<String, (Vec<String>, toml::Value)>,
    ) {
        for (key, value) in table {
            path.push(key.clone());
            if let toml::Value::Table(sub) = value {
                walk(sub, path, out);
            } else {
                out.insert(env_name(path), (path.clone(), value.clone()));
            }
            path.pop();
        }
    }
    let mut out = BTreeMap::new();
    walk(defaults, &mut Vec::new(), &mut out);
    out
}

fn env_name(path: &[String]) -> String {
    format!("{ENV_PREFIX}{}", path.join("_"))
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// Converts an environment value to the TOML type of the key's default, so that
/// `TIDINGS_HTTP_RATE_LIMIT_BURST=300` becomes an integer and not the string "300".
fn env_value(raw: &str, default: &toml::Value) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    match default {
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_owned())),
        toml::Value::Integer(_) => trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "expected an integer".to_owned()),
        toml::Value::Float(_) => trimmed
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| "expected a number".to_owned()),
        toml::Value::Boolean(_) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err("expected true or false".to_owned()),
        },
        // Arrays, datetimes (none today): accept a TOML literal.
        _ => format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| "expected a TOML value".to_owned()),
    }
}

/// " (did you mean X?)" for the closest known name, if it is close enough to be a typo.
fn env_hint(var: &str, known: &BTreeMap<String, (Vec<String>, toml::Value)>) -> String {
    known
        .keys()
        .map(String::as_str)
        .chain(NON_CONFIG_ENV.iter().copied())
        .map(|name| (edit_distance(var, name), name))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, name)| format!(" (did you mean {name}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over bytes; names are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../tidings.example.toml");

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("tidings.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults() {
        let config = Config::load(None, env(&[("HOME", "/root"), ("PATH", "/bin")])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.data_dir, PathBuf::from("./tidings-data"));
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.http.max_message_bytes, 65536);
        assert_eq!(config.http.max_request_bytes, 1048576);
        assert_eq!(config.http.rate_limit_per_second, 50.0);
        assert_eq!(config.http.rate_limit_burst, 200);
        assert!(!config.http.metrics_public);
        assert_eq!(config.store.synchronous, Synchronous::Full);
        assert_eq!(config.avatars.silos, 16);
        assert_eq!(config.avatars.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.avatars.mailbox, 1024);
        assert_eq!(config.queue.max_attempts, 10);
        assert_eq!(config.queue.max_in_flight, 8192);
        assert_eq!(config.queue.retry_base, Duration::from_millis(500));
        assert_eq!(config.queue.retry_max, Duration::from_secs(60));
        assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(10));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.effective_base_url(), "http://127.0.0.1:8080");
        config.validate().unwrap();
    }

    #[test]
    fn file_then_env_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            r#"
            data_dir = "/from/file"
            log_format = "json"
            [http]
            listen = "0.0.0.0:9000"
            rate_limit_burst = 10
            [avatars]
            idle_timeout = "1h30m"
            [store]
            synchronous = "normal"
            "#,
        );
        let config = Config::load(
            Some(&path),
            env(&[
                ("TIDINGS_DATA_DIR", "/from/env"),
                ("TIDINGS_HTTP_RATE_LIMIT_BURST", "300"),
                ("TIDINGS_HTTP_RATE_LIMIT_PER_SECOND", "2.5"),
                ("TIDINGS_HTTP_METRICS_PUBLIC", "true"),
                ("TIDINGS_QUEUE_RETRY_MAX", "2m"),
                // Not config keys, read by the CLI: must be accepted and ignored.
                ("TIDINGS_SERVER", "http://x"),
                ("TIDINGS_ADMIN_TOKEN", "tk_x"),
                ("TIDINGS_CONFIG", "/etc/x.toml"),
                ("TIDINGS_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/env"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.http.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.http.rate_limit_burst, 300);
        assert_eq!(config.http.rate_limit_per_second, 2.5);
        assert!(config.http.metrics_public);
        assert_eq!(config.avatars.idle_timeout, Duration::from_secs(5400));
        assert_eq!(config.store.synchronous, Synchronous::Normal);
        assert_eq!(config.queue.retry_max, Duration::from_secs(120));
        // Untouched keys keep their defaults.
        assert_eq!(config.avatars.silos, 16);
        assert_eq!(config.effective_base_url(), "http://127.0.0.1:9000");
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[http]\nlissten = \"127.0.0.1:1\"\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
        assert_eq!(err.key(), Some("http.lissten"));
        let msg = err.to_string();
        assert!(msg.contains("`http.lissten`"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");

        let path = write(&dir, "datadir = \"x\"\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert_eq!(err.key(), Some("datadir"), "{err}");

        let path = write(&dir, "[htp]\nlisten = \"127.0.0.1:1\"\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert_eq!(err.key(), Some("htp"), "{err}");
    }

    #[test]
    fn unknown_tidings_env_is_named() {
        let err = Config::load(None, env(&[("TIDINGS_HTTP_LISTN", "127.0.0.1:1")])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::UnknownEnv { .. }), "{err:?}");
        assert!(msg.contains("TIDINGS_HTTP_LISTN"), "{msg}");
        assert!(msg.contains("did you mean TIDINGS_HTTP_LISTEN?"), "{msg}");
        // Other prefixes are none of our business.
        Config::load(None, env(&[("TIDING_X", "1"), ("XTIDINGS_Y", "2")])).unwrap();
    }

    #[test]
    fn bad_env_value_is_named() {
        let err = Config::load(None, env(&[("TIDINGS_AVATARS_SILOS", "many")])).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.key(), Some("avatars.silos"));
        assert!(
            msg.contains("TIDINGS_AVATARS_SILOS") && msg.contains("\"many\""),
            "{msg}"
        );

        let err = Config::load(None, env(&[("TIDINGS_AVATARS_SILOS", "0")])).unwrap_err();
        assert_eq!(err.key(), Some("avatars.silos"));
        assert!(err.to_string().contains("TIDINGS_AVATARS_SILOS"), "{err}");
    }

    #[test]
    fn bad_duration_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[avatars]\nidle_timeout = \"5 minutes\"\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.key(), Some("avatars.idle_timeout"), "{msg}");
        assert!(msg.contains("\"5 minutes\""), "{msg}");

        let err = Config::load(None, env(&[("TIDINGS_QUEUE_RETRY_BASE", "10")])).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.key(), Some("queue.retry_base"), "{msg}");
        assert!(
            msg.contains("TIDINGS_QUEUE_RETRY_BASE") && msg.contains("\"10\""),
            "{msg}"
        );

        let err = Config::load(None, env(&[("TIDINGS_AVATARS_IDLE_TIMEOUT", "0s")])).unwrap_err();
        assert_eq!(err.key(), Some("avatars.idle_timeout"), "{err}");
    }

    #[test]
    fn bad_listen_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[http]\nlisten = \"localhost\"\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.key(), Some("http.listen"), "{msg}");
        assert!(msg.contains("\"localhost\""), "{msg}");

        let err = Config::load(None, env(&[("TIDINGS_HTTP_LISTEN", "127.0.0.1")])).unwrap_err();
        assert_eq!(err.key(), Some("http.listen"), "{err}");
    }

    #[test]
    fn other_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key) in [
            (
                "[http]\nmax_message_bytes = \"64k\"\n",
                "http.max_message_bytes",
            ),
            ("[http]\nmax_message_bytes = 0\n", "http.max_message_bytes"),
            (
                "[http]\nmax_request_bytes = 1000000000\n",
                "http.max_request_bytes",
            ),
            (
                "[http]\nrate_limit_per_second = 0.0\n",
                "http.rate_limit_per_second",
            ),
            ("[http]\nrate_limit_burst = -1\n", "http.rate_limit_burst"),
            ("[avatars]\nsilos = 4097\n", "avatars.silos"),
            ("[store]\nsynchronous = \"off\"\n", "store.synchronous"),
            ("[queue]\nretry_max = \"100ms\"\n", "queue.retry_max"),
            ("log_format = \"xml\"\n", "log_format"),
            ("log_level = \"info,=[\"\n", "log_level"),
            ("base_url = \"example.com\"\n", "base_url"),
            ("http = 5\n", "http"),
        ] {
            let path = write(&dir, text);
            let err = Config::load(Some(&path), env(&[])).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
            assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn file_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load(Some(&missing), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("nope.toml"), "{err}");

        let path = write(&dir, "[http\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Toml { .. }));
        assert!(err.to_string().contains("tidings.toml"), "{err}");
    }

    #[test]
    fn base_url() {
        let mut config = Config {
            base_url: "https://tidings.example.com/".into(),
            ..Config::default()
        };
        assert_eq!(config.effective_base_url(), "https://tidings.example.com");
        config.base_url.clear();
        config.http.listen = "[::]:8443".parse().unwrap();
        assert_eq!(config.effective_base_url(), "http://[::1]:8443");
    }

    #[test]
    fn round_trips_through_toml() {
        let mut config = Config::default();
        config.avatars.idle_timeout = Duration::from_millis(90_250);
        config.store.synchronous = Synchronous::Normal;
        let text = config.to_toml_string().unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn env_names_are_unique_and_not_reserved() {
        let vars = Config::env_vars().unwrap();
        let mut leaves = Vec::new();
        let defaults = Config::default().to_table().unwrap();
        collect_leaves(&defaults, &defaults, &mut Vec::new(), &mut leaves);
        // Two keys mapping to one variable name would make one of them unreachable.
        assert_eq!(vars.len(), leaves.len());
        for (var, _) in &vars {
            assert!(!NON_CONFIG_ENV.contains(&var.as_str()), "{var}");
        }
        assert!(vars.contains(&(
            "TIDINGS_AVATARS_IDLE_TIMEOUT".into(),
            "avatars.idle_timeout".into()
        )));
    }

    #[test]
    fn example_file_is_the_defaults() {
        let parsed: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn example_file_lists_every_key() {
        let example: toml::Table = EXAMPLE.parse().unwrap();
        let defaults = Config::default().to_table().unwrap();
        let mut leaves = Vec::new();
        collect_leaves(&defaults, &defaults, &mut Vec::new(), &mut leaves);
        for (path, _) in leaves {
            let key = path.join(".");
            assert!(
                lookup(&example, &key).is_some(),
                "tidings.example.toml lacks `{key}`"
            );
            // The environment rule is documented next to each key.
            let var = env_name(&path);
            assert!(
                EXAMPLE.contains(&var),
                "tidings.example.toml does not mention {var}"
            );
        }
        for var in NON_CONFIG_ENV {
            assert!(
                EXAMPLE.contains(var),
                "tidings.example.toml does not mention {var}"
            );
        }
    }
}
