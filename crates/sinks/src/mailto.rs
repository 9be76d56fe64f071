//! Email (skeleton).

use std::time::Duration;

use crate::{Error, Message, Outcome};

pub(crate) const NO_RELAY: &str =
    "email delivery needs an SMTP relay, and the operator has not configured one";

/// `{"kind": "mailto", "to": "alice@example.org"}`
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub to: String,
}

impl Config {
    pub(crate) fn prepare(self) -> Result<Config, Error> {
        Ok(self)
    }
    pub(crate) fn redacted(&self) -> serde_json::Value {
        serde_json::json!({"to": self.to})
    }
    pub(crate) fn address(&self) -> String {
        self.to.clone()
    }
}

/// How the relay connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum RelayTls {
    /// Plain text (a relay on localhost).
    #[serde(rename = "none")]
    None,
    /// Plain connection upgraded with STARTTLS (port 587); refused if the relay cannot.
    #[default]
    #[serde(rename = "starttls", alias = "start_tls")]
    StartTls,
    /// TLS from the first byte (port 465).
    #[serde(rename = "implicit", alias = "tls")]
    Implicit,
}

/// The operator's SMTP relay.
#[derive(Clone)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The From of every mail, e.g. `tidings <tidings@example.org>`.
    pub from: String,
    /// For one whole SMTP conversation.
    pub timeout: Duration,
    /// Tests only: accept the relay's certificate whatever it is.
    pub accept_invalid_certs: bool,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_set", &self.password.is_some())
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

/// A text-only mail (a reply relayed back to a mail source's sender).
#[derive(Debug, Clone, PartialEq)]
pub struct PlainMail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub reply_to: Option<String>,
}

/// The relay client.
#[derive(Clone)]
pub(crate) struct Relay {
    cfg: std::sync::Arc<RelayConfig>,
}

impl Relay {
    pub(crate) fn new(cfg: RelayConfig) -> Result<Relay, Error> {
        Ok(Relay {
            cfg: std::sync::Arc::new(cfg),
        })
    }
    pub(crate) fn config(&self) -> &RelayConfig {
        &self.cfg
    }
    pub(crate) async fn send_notification(&self, cfg: &Config, msg: &Message) -> Outcome {
        let _ = (cfg, msg);
        Outcome::failed("not implemented yet")
    }
    pub(crate) async fn send_plain(&self, mail: &PlainMail) -> Outcome {
        let _ = mail;
        Outcome::failed("not implemented yet")
    }
}
