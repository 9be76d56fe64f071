//! One HTTP call through the SSRF-safe fetcher, and what its answer means for delivery:
//! 2xx delivered; 408, 429, 5xx, timeouts and connection trouble retried (with the
//! server's `Retry-After`); any other status failed with the start of the body, so the
//! user sees the service's own words ("invalid token"); a refused address failed.

use std::time::Duration;

use tidings_sources::fetch::{FetchError, Fetcher, HttpReply};

use crate::Outcome;

/// How much of an error body goes into an outcome's text.
const ERROR_SNIPPET_CHARS: usize = 300;

pub(crate) struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub basic_auth: Option<(String, String)>,
}

impl Request {
    pub(crate) fn json(method: &'static str, url: String, body: &serde_json::Value) -> Request {
        Request {
            method,
            url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            // Serializing a Value cannot fail.
            body: serde_json::to_vec(body).unwrap_or_default(),
            basic_auth: None,
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Sends and classifies.
pub(crate) async fn send(fetcher: &Fetcher, req: Request) -> Outcome {
    classify(call(fetcher, req).await)
}

/// Sends; the reply whatever its status, or the transport error.
pub(crate) async fn call(fetcher: &Fetcher, req: Request) -> Result<HttpReply, FetchError> {
    fetcher
        .request(req.method, &req.url, &req.headers, req.body, req.basic_auth)
        .await
}

pub(crate) fn classify(result: Result<HttpReply, FetchError>) -> Outcome {
    match result {
        Ok(reply) => classify_reply(&reply),
        Err(e) => classify_error(e),
    }
}

pub(crate) fn classify_reply(reply: &HttpReply) -> Outcome {
    let status = reply.status;
    if (200..300).contains(&status) {
        return Outcome::Delivered {
            status: Some(status),
        };
    }
    let error = status_text(reply);
    if retryable_status(status) {
        Outcome::Retry {
            status: Some(status),
            error,
            retry_after: reply.retry_after.or_else(|| body_retry_after(&reply.body)),
        }
    } else {
        Outcome::Failed {
            status: Some(status),
            error,
        }
    }
}

pub(crate) fn classify_error(e: FetchError) -> Outcome {
    match e {
        FetchError::Timeout
        | FetchError::Connect(_)
        | FetchError::Resolve(_)
        | FetchError::Http(_)
        | FetchError::TooLarge(_) => Outcome::retry(e.to_string()),
        FetchError::Forbidden(_)
        | FetchError::InvalidUrl(_)
        | FetchError::TooManyRedirects
        | FetchError::Config(_) => Outcome::failed(e.to_string()),
    }
}

pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..600).contains(&status)
}

/// "HTTP 404: <start of the body>".
pub(crate) fn status_text(reply: &HttpReply) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    let snippet = crate::text::one_line(&crate::text::cut_chars(body.trim(), ERROR_SNIPPET_CHARS));
    if snippet.is_empty() {
        format!("HTTP {}", reply.status)
    } else {
        format!("HTTP {}: {snippet}", reply.status)
    }
}

/// The wait some services put in the JSON body of a 429 instead of (or besides) the
/// header: Matrix's `retry_after_ms`, Discord's `retry_after` (seconds, fractional).
fn body_retry_after(body: &[u8]) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let secs = if let Some(ms) = value.get("retry_after_ms").and_then(|v| v.as_f64()) {
        ms / 1000.0
    } else {
        value.get("retry_after").and_then(|v| v.as_f64())?
    };
    // A day at most: a hint beyond that is a bug on the other side, not a plan.
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, retry_after: Option<u64>, body: &str) -> HttpReply {
        HttpReply {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(
            classify_reply(&reply(204, None, "")),
            Outcome::Delivered { status: Some(204) }
        );
        assert_eq!(
            classify_reply(&reply(429, Some(7), "slow down")),
            Outcome::Retry {
                status: Some(429),
                error: "HTTP 429: slow down".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
        assert!(matches!(
            classify_reply(&reply(503, None, "")),
            Outcome::Retry {
                status: Some(503),
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify_reply(&reply(408, None, "")),
            Outcome::Retry { .. }
        ));
        assert_eq!(
            classify_reply(&reply(404, None, "  no such\nhook ")),
            Outcome::Failed {
                status: Some(404),
                error: "HTTP 404: no such hook".into()
            }
        );
        assert!(matches!(
            classify_reply(&reply(301, None, "")),
            Outcome::Failed {
                status: Some(301),
                ..
            }
        ));
    }

    #[test]
    fn retry_hints_in_bodies() {
        let matrix = reply(
            429,
            None,
            r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":2500}"#,
        );
        assert!(matches!(
            classify_reply(&matrix),
            Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_millis(2500)
        ));
        let discord = reply(429, None, r#"{"message":"rate limited","retry_after":0.5}"#);
        assert!(matches!(
            classify_reply(&discord),
            Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_millis(500)
        ));
        let header_wins = reply(429, Some(3), r#"{"retry_after":99}"#);
        assert!(matches!(
            classify_reply(&header_wins),
            Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(body_retry_after(br#"{"retry_after":-1}"#).is_none());
        assert!(body_retry_after(b"1e400").is_none());
    }

    #[test]
    fn transport_errors() {
        assert!(matches!(
            classify_error(FetchError::Timeout),
            Outcome::Retry { status: None, .. }
        ));
        assert!(matches!(
            classify_error(FetchError::Connect("refused".into())),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_error(FetchError::Forbidden("refused: loopback".into())),
            Outcome::Failed { status: None, .. }
        ));
    }
}
