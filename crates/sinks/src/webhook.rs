//! webhook (skeleton).

use tidings_sources::fetch::Fetcher;

use crate::{Error, Message, Outcome};

pub async fn send(fetcher: &Fetcher, cfg: &Config, msg: &Message) -> Outcome {
    let _ = (fetcher, cfg, msg);
    Outcome::failed("not implemented yet")
}

/// `{"kind": "webhook", "url": "https://…", "secret"?: "…", "headers"?: {"X-A": "b"},
/// "username"?: "…", "password"?: "…"}`
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("webhook::Config")
            .field("url", &self.address())
            .finish_non_exhaustive()
    }
}

impl Config {
    pub(crate) fn prepare(self) -> Result<Config, Error> {
        Ok(self)
    }
    pub(crate) fn redacted(&self) -> serde_json::Value {
        serde_json::json!({"url": self.address()})
    }
    pub(crate) fn address(&self) -> String {
        String::new()
    }
}

/// `sha256=<hex hmac-sha256(secret, "<timestamp>.<body>")>`
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let _ = (secret, timestamp, body);
    String::new()
}
