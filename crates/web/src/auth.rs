//! Who is calling, and how often.
//!
//! Credentials, in order: `Authorization: Bearer <token>`; `Authorization: Basic` with a
//! token as the password (ntfy's convention) or a user's password; ntfy's `?auth=` query
//! parameter (the base64 of an Authorization header, for clients that cannot set headers);
//! the web session cookie. There is no anonymous access. Every credential has its own token
//! bucket: over the limit is a 429 with `Retry-After`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use tidings_routing::directory::User;

use crate::AppState;
use crate::error::ApiError;

/// Name of the web session cookie.
pub const SESSION_COOKIE: &str = "tidings_session";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: User,
}

/// An authenticated administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    pub user: User,
}

enum Credential {
    Token(String),
    Password(String, String),
    Session(String),
}

fn credential(parts: &Parts) -> Result<Option<Credential>, ApiError> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        return parse_authorization(v).map(Some);
    }
    if let Some(q) = parts.uri.query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("auth=") {
                let raw = percent_decode(v);
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(raw.trim_end_matches('='))
                    .or_else(|_| base64::engine::general_purpose::STANDARD.decode(&raw))
                    .map_err(|_| ApiError::unauthorized("the auth parameter is not base64"))?;
                let header = String::from_utf8(decoded)
                    .map_err(|_| ApiError::unauthorized("the auth parameter is not valid text"))?;
                return parse_authorization(&header).map(Some);
            }
        }
    }
    for cookie in parts.headers.get_all(header::COOKIE) {
        let Ok(cookie) = cookie.to_str() else {
            continue;
        };
        for c in cookie.split(';') {
            if let Some(v) = c
                .trim()
                .strip_prefix(SESSION_COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                return Ok(Some(Credential::Session(v.to_owned())));
            }
        }
    }
    Ok(None)
}

fn parse_authorization(v: &str) -> Result<Credential, ApiError> {
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credential::Token(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| ApiError::unauthorized("Basic credentials are not base64"))?;
        let s = String::from_utf8(raw)
            .map_err(|_| ApiError::unauthorized("Basic credentials are not valid text"))?;
        let (user, pass) = s.split_once(':').unwrap_or(("", s.as_str()));
        if pass.starts_with("tk_") {
            return Ok(Credential::Token(pass.to_owned()));
        }
        return Ok(Credential::Password(user.to_owned(), pass.to_owned()));
    }
    Err(ApiError::unauthorized(
        "unsupported Authorization scheme: use Bearer <token>",
    ))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(a) = parts.extensions.get::<Authed>() {
            return Ok(a.clone());
        }
        let dir = &state.services().directory;
        let (user, key) = match credential(parts)? {
            None => {
                return Err(ApiError::unauthorized(
                    "this needs an API token: Authorization: Bearer <token>",
                ));
            }
            Some(Credential::Token(t)) => {
                (dir.authenticate_token(&t), format!("t:{}", short_hash(&t)))
            }
            Some(Credential::Session(s)) => (
                dir.authenticate_session(&s),
                format!("s:{}", short_hash(&s)),
            ),
            Some(Credential::Password(u, p)) => {
                // Limit guesses before spending argon2 time on them.
                state.limiter().check(&format!("p:{u}"))?;
                let user = dir.verify_password(&u, p).await.map_err(ApiError::from)?;
                (user, format!("u:{u}"))
            }
        };
        let Some(user) = user else {
            return Err(ApiError::unauthorized("invalid or revoked credentials"));
        };
        state.limiter().check(&key)?;
        let a = Authed { user };
        parts.extensions.insert(a.clone());
        Ok(a)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let a = Authed::from_request_parts(parts, state).await?;
        if !a.user.is_admin {
            return Err(ApiError::forbidden("this needs an administrator"));
        }
        Ok(Admin { user: a.user })
    }
}

fn short_hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Token buckets per credential, sharded to keep lock contention low under load.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<String, (f64, Instant)>>>,
}

const SHARDS: usize = 16;
/// Buckets kept per shard before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second: per_second.max(0.001),
            burst: (burst as f64).max(1.0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let shard = &self.shards[(short_hash(key) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = map.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64;
            metrics::counter!("tidings_http_rate_limited_total").increment(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests: at most {} per second (burst {})",
                    self.per_second, self.burst
                ),
            );
            e.retry_after = Some(wait);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_burst() {
        let l = RateLimiter::new(1.0, 3);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let e = l.check("a").unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(1));
        assert!(l.check("b").is_ok(), "buckets are per credential");
    }

    #[test]
    fn authorization_forms() {
        assert!(
            matches!(parse_authorization("Bearer tk_abc"), Ok(Credential::Token(t)) if t == "tk_abc")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(":tk_abc");
        assert!(
            matches!(parse_authorization(&format!("Basic {basic}")), Ok(Credential::Token(t)) if t == "tk_abc")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:secret");
        assert!(
            matches!(parse_authorization(&format!("Basic {basic}")), Ok(Credential::Password(u, p)) if u == "bob" && p == "secret")
        );
        assert!(parse_authorization("Digest x").is_err());
        assert_eq!(percent_decode("a%3Db"), "a=b");
        assert_eq!(percent_decode("abc%"), "abc%");
    }
}
