//! Subscribe-time checks of a feed URL: it must be fetchable from here (not a private
//! address unless the operator allows it), and if it is a web page rather than a feed, the
//! feed it advertises (`<link rel="alternate">`) is used instead, as readers do. Used by
//! every edge that subscribes (the REST API, IM commands).
//!
//! This is the one place a request waits on the outside world: the user asked to subscribe
//! to this URL and deserves to hear now whether it can work. It is bounded by
//! [`DISCOVERY_TIMEOUT`].

use std::time::Duration;

use tidings_sources::fetch::{FetchError, FetchRequest, Fetcher};

/// Time a subscribe request may spend fetching and discovering.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a URL cannot be subscribed to.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("{0}")]
    Fetch(FetchError),
    /// It answered, but not with a 2xx.
    #[error("{0}")]
    Status(String),
    #[error("{0}")]
    NotAFeed(String),
    #[error("{0}")]
    Timeout(String),
}

/// The feed URL to subscribe to for what the user gave.
pub async fn feed_url(fetcher: &Fetcher, url: &str) -> Result<String, DiscoverError> {
    match tokio::time::timeout(DISCOVERY_TIMEOUT, discover(fetcher, url)).await {
        Ok(r) => r,
        Err(_) => Err(DiscoverError::Timeout(format!(
            "{url} did not answer within {} s",
            DISCOVERY_TIMEOUT.as_secs()
        ))),
    }
}

async fn discover(fetcher: &Fetcher, url: &str) -> Result<String, DiscoverError> {
    let checked = fetcher.check_url(url).await.map_err(DiscoverError::Fetch)?;
    let resp = fetcher
        .fetch(FetchRequest::feed(checked.as_str()))
        .await
        .map_err(DiscoverError::Fetch)?;
    if !(200..300).contains(&resp.status) {
        return Err(DiscoverError::Status(format!(
            "{url} answered HTTP {}",
            resp.status
        )));
    }
    // A permanent redirect is where the feed lives now.
    let here = resp
        .permanent_redirect()
        .map(str::to_owned)
        .unwrap_or_else(|| checked.to_string());
    let final_url = resp.final_url.clone();
    let (is_feed, candidates) = tokio::task::spawn_blocking(move || {
        let parsed = tidings_feed::parse(tidings_feed::FeedInput {
            body: &resp.body,
            content_type: resp.content_type.as_deref(),
            url: Some(&resp.final_url),
            content_location: resp.content_location.as_deref(),
            content_language: None,
        });
        if parsed.format != tidings_feed::Format::Unknown {
            return (true, Vec::new());
        }
        (
            false,
            tidings_feed::discover_feeds(&resp.body, &resp.final_url),
        )
    })
    .await
    .map_err(|e| DiscoverError::Status(format!("the feed parser failed: {e}")))?;
    if is_feed {
        return Ok(here);
    }
    for candidate in candidates.into_iter().take(3) {
        if fetcher.check_url(&candidate).await.is_err() {
            continue;
        }
        let Ok(r) = fetcher.fetch(FetchRequest::feed(candidate.as_str())).await else {
            continue;
        };
        if !(200..300).contains(&r.status) {
            continue;
        }
        let ok = tokio::task::spawn_blocking(move || {
            tidings_feed::parse(tidings_feed::FeedInput {
                body: &r.body,
                content_type: r.content_type.as_deref(),
                url: Some(&r.final_url),
                content_location: r.content_location.as_deref(),
                content_language: None,
            })
            .format
                != tidings_feed::Format::Unknown
        })
        .await
        .unwrap_or(false);
        if ok {
            return Ok(candidate);
        }
    }
    Err(DiscoverError::NotAFeed(format!(
        "{final_url} is not a feed, and the page advertises no feed (<link rel=\"alternate\">) that could be read"
    )))
}
