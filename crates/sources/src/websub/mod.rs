//! WebSub (W3C Recommendation) as a subscriber: the pieces without I/O. What a subscription
//! request says, how a hub's verification of intent is checked, and how a pushed body is
//! authenticated (`X-Hub-Signature: sha256=<hex>` over the raw body with the subscription's
//! secret). The source avatar keeps a [`Subscription`] in its state and drives the exchange;
//! the HTTP edge hands it what hubs send to `/websub/<source id>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubState {
    /// Requested; the hub has not verified it yet.
    Pending,
    /// Verified by the hub until `lease_until`.
    Active,
}

/// One subscription at one hub, kept in the source's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub hub: String,
    /// The topic URL (the feed's self link, else its URL).
    pub topic: String,
    /// Shared with the hub; signs every push.
    pub secret: String,
    pub state: SubState,
    /// Unix ms when requested.
    pub requested_at: i64,
    /// Unix ms when the lease ends (active only).
    pub lease_until: Option<i64>,
}

impl Subscription {
    pub fn new(hub: String, topic: String, now: i64) -> Self {
        Subscription {
            hub,
            topic,
            secret: new_secret(),
            state: SubState::Pending,
            requested_at: now,
            lease_until: None,
        }
    }

    /// The form a subscriber POSTs to the hub.
    pub fn request_form(&self, callback: &str, lease: Duration) -> Vec<(&'static str, String)> {
        vec![
            ("hub.mode", "subscribe".to_owned()),
            ("hub.topic", self.topic.clone()),
            ("hub.callback", callback.to_owned()),
            ("hub.secret", self.secret.clone()),
            ("hub.lease_seconds", lease.as_secs().to_string()),
        ]
    }

    /// Checks a hub's verification of intent (`GET callback?hub.mode=...`). On a valid
    /// `subscribe`, the subscription becomes active for the lease the hub granted.
    pub fn verify_intent(
        &mut self,
        mode: &str,
        topic: &str,
        lease_seconds: Option<u64>,
        now: i64,
    ) -> bool {
        if topic != self.topic {
            return false;
        }
        match mode {
            "subscribe" => {
                let lease = lease_seconds.unwrap_or(86_400).clamp(60, 365 * 86_400);
                self.state = SubState::Active;
                self.lease_until = Some(now + (lease as i64) * 1000);
                true
            }
            // We never ask to unsubscribe while we hold the subscription: refuse.
            "unsubscribe" => false,
            _ => false,
        }
    }

    /// When to renew: at 80 % of the lease.
    pub fn renew_at(&self) -> Option<i64> {
        let until = self.lease_until?;
        let granted = until - self.requested_at;
        Some(self.requested_at + granted * 8 / 10)
    }
}

fn new_secret() -> String {
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| {
            let n = rng.gen_range(0..62u8);
            (match n {
                0..=9 => b'0' + n,
                10..=35 => b'a' + n - 10,
                _ => b'A' + n - 36,
            }) as char
        })
        .collect()
}

/// Why a pushed body was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the push carries no X-Hub-Signature")]
    Missing,
    #[error("X-Hub-Signature {0:?} is not of the form method=hex")]
    Malformed(String),
    #[error("X-Hub-Signature method {0} is not accepted (use sha256 or stronger)")]
    WeakMethod(String),
    #[error("X-Hub-Signature does not match the body")]
    Mismatch,
}

/// Verifies `X-Hub-Signature` over `body`. sha256, sha384 and sha512 are accepted; sha1
/// only when `allow_sha1`. Comparison is constant-time (HMAC's own verify).
pub fn verify_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    allow_sha1: bool,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let (method, hex_sig) = header
        .split_once('=')
        .ok_or_else(|| SignatureError::Malformed(header.chars().take(40).collect()))?;
    let sig = hex::decode(hex_sig.trim())
        .map_err(|_| SignatureError::Malformed(header.chars().take(40).collect()))?;
    let key = secret.as_bytes();
    let ok = match method.trim().to_ascii_lowercase().as_str() {
        "sha256" => hmac_matches!(sha2::Sha256, key, body, &sig),
        "sha384" => hmac_matches!(sha2::Sha384, key, body, &sig),
        "sha512" => hmac_matches!(sha2::Sha512, key, body, &sig),
        "sha1" if allow_sha1 => hmac_matches!(sha1::Sha1, key, body, &sig),
        other => return Err(SignatureError::WeakMethod(other.to_owned())),
    };
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Whether `sig` is the HMAC of `body` under `key` with the given digest (constant-time).
macro_rules! hmac_matches {
    ($digest:ty, $key:expr, $body:expr, $sig:expr) => {
        match <Hmac<$digest> as Mac>::new_from_slice($key) {
            Ok(mut mac) => {
                mac.update($body);
                mac.verify_slice($sig).is_ok()
            }
            Err(_) => false,
        }
    };
}
use hmac_matches;

/// Signs a body as a hub would (for tests and the benchmark's local hub).
pub fn sign_sha256(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty signature would only
    // fail verification.
    match <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_weak_or_wrong_ones_do_not() {
        let body = b"<feed/>";
        let sig = sign_sha256("s3cret", body);
        assert!(verify_signature("s3cret", Some(&sig), body, false).is_ok());
        assert_eq!(
            verify_signature("other", Some(&sig), body, false),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature("s3cret", Some(&sig), b"<feed>x</feed>", false),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature("s3cret", None, body, false),
            Err(SignatureError::Missing)
        );
        assert!(matches!(
            verify_signature("s3cret", Some("sha1=00ff"), body, false),
            Err(SignatureError::WeakMethod(_))
        ));
        // sha1 only when the operator allows it.
        let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sha1 = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        assert!(verify_signature("s3cret", Some(&sha1), body, true).is_ok());
        assert!(verify_signature("s3cret", Some(&sha1), body, false).is_err());
        assert!(matches!(
            verify_signature("s3cret", Some("garbage"), body, false),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn intent_is_verified_for_our_topic_only() {
        let mut s = Subscription::new(
            "https://hub.example/".into(),
            "https://x.example/feed".into(),
            1000,
        );
        assert!(!s.verify_intent("subscribe", "https://evil.example/feed", Some(600), 2000));
        assert_eq!(s.state, SubState::Pending);
        assert!(!s.verify_intent("unsubscribe", "https://x.example/feed", None, 2000));
        assert!(s.verify_intent("subscribe", "https://x.example/feed", Some(600), 2000));
        assert_eq!(s.state, SubState::Active);
        assert_eq!(s.lease_until, Some(602_000));
        assert!(s.renew_at().unwrap() < 602_000);
        let form = s.request_form(
            "https://me.example/websub/feed:1",
            Duration::from_secs(3600),
        );
        assert!(form.contains(&("hub.secret", s.secret.clone())));
        assert_eq!(s.secret.len(), 40);
    }
}
