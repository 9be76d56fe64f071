//! sources: the ingestion edges that take items in from the outside world.
//!
//! - [`fetch`]: the shared HTTP fetcher, SSRF-safe (addresses judged at connect time and on
//!   every redirect hop), with body caps, timeouts, per-host concurrency, conditional GET
//!   and the caching/WebSub headers the poller needs. Every web source goes through it.
//! - [`page`]: page watching, I/O-free: decode an HTML page and turn the elements matched
//!   by a CSS selector into items (text, first link, outer HTML, stable id).
//! - [`feed`]: the feed polling state machine (validators, dedupe memory, schedule, error
//!   streak), I/O-free; the source avatar drives it with outcomes of `fetch`.
//! - [`websub`]: WebSub as a subscriber: subscription requests, verification of intent,
//!   push signatures (I/O-free).
//! - [`smtp`]: the inbound SMTP edge: an I/O-free session state machine and the listener
//!   that hands recipients and messages to a `MailSink` (answering 250 only once durable).
//! - [`imap`]: an IMAP mailbox as a source: a small IMAP4rev1 client (TLS, STARTTLS, IDLE)
//!   that returns the mail after a UIDVALIDITY/UID cursor; its wire format is I/O-free.
//! - [`mail`]: a raw message to the fields of a notification (MIME, charsets, encoded
//!   words, HTML to text, attachments), I/O-free.
//!
//! Each kind's module holds its config, its logic and its unit tests; end-to-end tests
//! against local HTTP servers live under `tests/`.

pub mod feed;
pub mod fetch;
pub mod imap;
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
