//! Subscribe-time checks of a feed URL over the API: [`tidings_routing::discover`], with its
//! errors as API errors.

use axum::http::StatusCode;
use tidings_routing::discover::DiscoverError;
use tidings_sources::fetch::FetchError;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The error of a URL the fetcher refuses or cannot reach.
pub fn refused(e: FetchError) -> ApiError {
    match e {
        FetchError::Forbidden(m) => ApiError::new(StatusCode::BAD_REQUEST, "url_refused", m),
        FetchError::InvalidUrl(m) => ApiError::bad_request("invalid_url", m),
        e => ApiError::bad_request("fetch_failed", format!("cannot fetch the URL: {e}")),
    }
}

/// The feed URL to subscribe to for what the user gave.
pub async fn feed_url(state: &AppState, url: &str) -> ApiResult<String> {
    tidings_routing::discover::feed_url(&state.services().fetcher, url)
        .await
        .map_err(|e| match e {
            DiscoverError::Fetch(f) => refused(f),
            DiscoverError::NotAFeed(m) => ApiError::bad_request("not_a_feed", m),
            DiscoverError::Status(m) | DiscoverError::Timeout(m) => {
                ApiError::bad_request("fetch_failed", m)
            }
        })
}
