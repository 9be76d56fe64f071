//! sources: the ingestion edges that fetch from the outside world.
//!
//! - [`fetch`]: the shared HTTP fetcher, SSRF-safe (addresses judged at connect time and on
//!   every redirect hop), with body caps, timeouts, per-host concurrency, conditional GET
//!   and the caching/WebSub headers the poller needs. Every web source goes through it.
//! - [`page`]: page watching, I/O-free: decode an HTML page and turn the elements matched
//!   by a CSS selector into items (text, first link, outer HTML, stable id).
//! - [`feed`]: the feed polling state machine (validators, dedupe memory, schedule, error
//!   streak), I/O-free; the source avatar drives it with outcomes of `fetch`.
//!
//! Each kind's module holds its config, its logic and its unit tests; end-to-end tests
//! against local HTTP servers live under `tests/`.

pub mod feed;
pub mod fetch;
pub mod mail;
pub mod page;
pub mod smtp;
pub mod websub;

pub use fetch::{FetchConfig, FetchError, FetchRequest, FetchResponse, Fetcher};
pub use page::{PageError, PageItem};

/// Any error of this crate, for callers that handle sources generically.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Page(#[from] PageError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
