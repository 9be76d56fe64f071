//! Feed autodiscovery: the `<link rel="alternate" type="application/rss+xml" href="...">`
//! elements of an HTML page, resolved against the page URL (or its `<base href>`).

use crate::entities::decode_html_entities;
use crate::html::{HtmlToken, HtmlTokenizer};
use crate::url;

const FEED_TYPES: &[&str] = &[
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/json",
    "application/rdf+xml",
    "application/x.atom+xml",
    "application/x-atom+xml",
];

/// The feed URLs an HTML page advertises, in document order, without duplicates.
pub fn discover_feeds(html: &[u8], base_url: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(html);
    let mut base = base_url.to_string();
    let mut found: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for token in HtmlTokenizer::new(&text) {
        let HtmlToken::Start { name, attrs, .. } = token else {
            continue;
        };
        let get = |key: &str| {
            attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .and_then(|(_, v)| *v)
                .map(|v| decode_html_entities(v).trim().to_string())
        };
        if name.eq_ignore_ascii_case("base") {
            if let Some(href) = get("href").filter(|h| !h.is_empty()) {
                base = url::resolve(base_url, &href);
            }
            continue;
        }
        if !name.eq_ignore_ascii_case("link") {
            continue;
        }
        let rel = get("rel").unwrap_or_default().to_ascii_lowercase();
        if !rel.split_ascii_whitespace().any(|r| r == "alternate") {
            continue;
        }
        let kind = get("type").unwrap_or_default().to_ascii_lowercase();
        let kind = kind.split(';').next().unwrap_or("").trim().to_string();
        if !FEED_TYPES.contains(&kind.as_str()) {
            continue;
        }
        let Some(href) = get("href").filter(|h| !h.is_empty()) else {
            continue;
        };
        let resolved = url::resolve(&base, &href);
        if url::is_safe_scheme(&resolved) && seen.insert(resolved.clone()) {
            found.push(resolved);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_alternate_feeds() {
        let page = br#"<!DOCTYPE html><html><head>
            <link rel="stylesheet" href="/s.css">
            <LINK REL="alternate" TYPE="application/rss+xml" HREF="/feed.xml" title="RSS">
            <link rel="alternate nofollow" type="application/atom+xml" href="atom.xml">
            <link rel="alternate" type="application/feed+json" href="https://cdn.example/f.json">
            <link rel="alternate" type="text/html" href="/fr/">
            <link rel="alternate" type="application/rss+xml" href="/feed.xml">
            <link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
            </head><body><a href="/other.rss">not a link element</a></body></html>"#;
        assert_eq!(
            discover_feeds(page, "https://example.org/blog/post"),
            [
                "https://example.org/feed.xml",
                "https://example.org/blog/atom.xml",
                "https://cdn.example/f.json"
            ]
        );
    }

    #[test]
    fn honours_base_href() {
        let page = br#"<head><base href="https://static.example/x/"><link rel=alternate type=application/atom+xml href=a.xml></head>"#;
        assert_eq!(
            discover_feeds(page, "https://example.org/"),
            ["https://static.example/x/a.xml"]
        );
        assert!(discover_feeds(b"", "https://example.org/").is_empty());
    }
}
