//! twilio (skeleton).

use tidings_sources::fetch::Fetcher;

use crate::{Error, Message, Outcome};

pub async fn send(fetcher: &Fetcher, cfg: &Config, msg: &Message) -> Outcome {
    let _ = (fetcher, cfg, msg);
    Outcome::failed("not implemented yet")
}

/// `{"kind": "twilio", "account_sid": "AC…", "auth_token": "…", "from": "+1555…",
/// "to": "+1555…", "base_url"?: "https://api.twilio.com"}`
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("twilio::Config")
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
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
    pub(crate) fn endpoint(&self) -> String {
        String::new()
    }
}

/// Twilio's `X-Twilio-Signature`: base64(HMAC-SHA1(token, url + sorted(k + v))).
pub fn sign(auth_token: &str, full_url: &str, params: &[(String, String)]) -> String {
    let _ = (auth_token, full_url, params);
    String::new()
}

/// Checks an `X-Twilio-Signature` header in constant time.
pub fn verify_signature(
    auth_token: &str,
    full_url: &str,
    params: &[(String, String)],
    header_value: &str,
) -> bool {
    tidings_core::secret::constant_time_eq(
        sign(auth_token, full_url, params).as_bytes(),
        header_value.trim().as_bytes(),
    )
}
