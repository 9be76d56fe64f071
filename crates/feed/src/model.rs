//! The parser's input and output types. Everything serializes to JSON (`tidings feed parse`).
//!
//! Text fields that can carry markup (titles, subtitles, summaries, content) are always HTML
//! fragments: markup a feed sends as HTML is kept (normalized, with relative URLs resolved),
//! and plain text is HTML-escaped. A consumer therefore never needs to know the original type:
//! [`crate::sanitize_html`] makes any of them safe to render and [`crate::to_plain_text`]
//! turns any of them into text. Authors, links, ids and languages are plain strings.

use serde::Serialize;

/// A fetched document and what HTTP said about it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedInput<'a> {
    pub body: &'a [u8],
    /// The HTTP `Content-Type` (may carry a charset); `None` when not fetched over HTTP.
    pub content_type: Option<&'a str>,
    /// The URL the document was fetched from: the base for relative links.
    pub url: Option<&'a str>,
    /// The HTTP `Content-Location`, which overrides `url` as the base when present.
    pub content_location: Option<&'a str>,
    /// The HTTP `Content-Language`: the feed's language unless the document says otherwise.
    pub content_language: Option<&'a str>,
}

/// The format a document was recognized as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Rss090,
    /// RSS 0.91 (Netscape or UserLand).
    Rss091,
    /// RSS 0.92 (and the 0.93/0.94 drafts).
    Rss092,
    Rss10,
    /// RSS 2.0, and RSS without a version attribute.
    Rss20,
    /// Atom 0.3 (and earlier drafts).
    Atom03,
    /// Atom 1.0, and a `<feed>` without a version.
    Atom10,
    JsonFeed,
    /// Microsoft's Channel Definition Format.
    Cdf,
    /// Nothing recognizable as a feed.
    Unknown,
}

/// The result of parsing. Parsing never fails: a malformed document yields what could be
/// recovered, with `bozo` set and the reasons in `warnings`.
#[derive(Debug, Clone, Serialize)]
pub struct ParsedFeed {
    pub format: Format,
    /// The document was not well-formed (or not served as a feed, or not in the encoding it
    /// claimed); what is here was recovered.
    pub bozo: bool,
    /// Why it is bozo, and other things worth knowing (e.g. an entity left unexpanded).
    pub warnings: Vec<String>,
    /// The character encoding the document was read in (`utf-8`, `windows-1252`, ...).
    pub encoding: String,
    pub feed: FeedMeta,
    pub items: Vec<Item>,
}

/// Feed-level metadata.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedMeta {
    /// HTML.
    pub title: Option<String>,
    /// The feed's web page.
    pub link: Option<String>,
    pub id: Option<String>,
    /// HTML: RSS description, Atom subtitle/tagline.
    pub subtitle: Option<String>,
    pub author: Option<String>,
    pub language: Option<String>,
    /// Unix seconds.
    pub updated: Option<i64>,
    /// RSS `ttl`: minutes the feed may be cached.
    pub ttl: Option<u32>,
    /// `rel="hub"` links, for WebSub.
    pub hubs: Vec<String>,
    /// The `rel="self"` link (or JSON Feed `feed_url`).
    pub self_url: Option<String>,
    /// A logo or cover image URL.
    pub image: Option<String>,
    /// A small icon URL.
    pub icon: Option<String>,
}

/// Where an item's id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdSource {
    /// The item's guid / id / `rdf:about`.
    Guid,
    /// Its link, for items without a (unique) guid.
    Link,
    /// A SHA-256 of title, summary and content (`sha256:<hex>`), for items with neither.
    ContentHash,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enclosure {
    pub url: String,
    /// Bytes, when the feed says.
    pub length: Option<u64>,
    pub mime: Option<String>,
}

/// One entry of the feed.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Stable identity: unique within the document, the same across fetches of an unchanged
    /// item.
    pub id: String,
    pub id_source: IdSource,
    /// HTML.
    pub title: Option<String>,
    pub link: Option<String>,
    /// HTML: RSS description, Atom summary.
    pub summary: Option<String>,
    /// HTML: the first full-content element (`content:encoded`, Atom content).
    pub content: Option<String>,
    pub author: Option<String>,
    /// Unix seconds.
    pub published: Option<i64>,
    /// Unix seconds.
    pub updated: Option<i64>,
    pub enclosures: Vec<Enclosure>,
    pub categories: Vec<String>,
    /// HTML: an item-level subtitle (iTunes).
    pub subtitle: Option<String>,
    /// The item's own language, when it declares one.
    pub language: Option<String>,
}
