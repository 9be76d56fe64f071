//! discord (skeleton).

use tidings_sources::fetch::Fetcher;

use crate::{Error, Message, Outcome};

pub async fn send(fetcher: &Fetcher, cfg: &Config, msg: &Message) -> Outcome {
    let _ = (fetcher, cfg, msg);
    Outcome::failed("not implemented yet")
}

/// `{"kind": "discord", "webhook_url": "https://…", "username"?: "…"}`
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub webhook_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("discord::Config")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl Config {
    pub(crate) fn prepare(self) -> Result<Config, Error> {
        Ok(self)
    }
    pub(crate) fn redacted(&self) -> serde_json::Value {
        serde_json::json!({"webhook_url": self.address()})
    }
    pub(crate) fn address(&self) -> String {
        String::new()
    }
}
