//! Matrix (skeleton).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tidings_sources::fetch::Fetcher;

use crate::{Error, Message, Outcome};

/// `{"kind": "matrix", "homeserver": "https://matrix.example", "access_token": "…",
/// "room": "#room:example.org" | "!id:example.org"}`
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
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl Config {
    pub(crate) fn prepare(self) -> Result<Config, Error> {
        Ok(self)
    }
    pub(crate) fn redacted(&self) -> serde_json::Value {
        serde_json::json!({"homeserver": self.homeserver, "room": self.room})
    }
    pub(crate) fn address(&self) -> String {
        self.room.clone()
    }
}

/// Resolved room aliases, shared by every send.
#[derive(Clone, Default)]
pub(crate) struct AliasCache {
    #[allow(dead_code)]
    inner: Arc<Mutex<HashMap<(String, String), String>>>,
}

pub(crate) async fn send(
    fetcher: &Fetcher,
    cache: &AliasCache,
    cfg: &Config,
    msg: &Message,
) -> Outcome {
    let _ = (fetcher, cache, cfg, msg);
    Outcome::failed("not implemented yet")
}
