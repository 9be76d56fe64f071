//! I/O-free feed parsing for tidings: RSS 0.90/0.91/0.92/1.0/2.0, Atom 0.3/1.0, JSON Feed
//! 1.0/1.1 and CDF, from the bytes and headers of a fetch to normalized feed metadata and
//! items with stable ids. Nothing here touches the network; the poller hands in what it
//! fetched.
//!
//! [`parse`] never fails and never panics: a malformed document yields what can be recovered,
//! with [`ParsedFeed::bozo`] set and the reasons in [`ParsedFeed::warnings`]. Its behaviour is
//! scored against feedparser's test corpus (`tests/conformance.rs`).
//!
//! Layout, in the order a document flows through it:
//! - `charset`: bytes to text (HTTP charset, BOM, XML declaration; RFC 3023 precedence).
//! - `xml`: a recovering XML tokenizer that notes well-formedness errors, decodes HTML
//!   entities where feeds use them undeclared, and never expands a DTD entity.
//! - `builder`: the element semantics of every XML format and the extension namespaces,
//!   including typed text constructs (text, escaped HTML, base64, inline XHTML).
//! - `json`: JSON Feed.
//! - `html`: the HTML inside feeds: normalization with relative-URL resolution,
//!   [`sanitize_html`] (ammonia) for rendering, [`to_plain_text`] for IM/SMS.
//! - `url`: string-based relative reference resolution (xml:base, Content-Location, URL).
//! - `date`: RFC 822 and ISO 8601 dates in their many broken variants.
//! - `discover`: feed autodiscovery in HTML pages.
//! - `entities`: character and entity references.
//! - `model`: the public input and output types (all `Serialize`).
//! - this file: [`parse`], which ties the above together, and item identity.
//!
//! Tests: unit tests beside the code; `tests/conformance.rs` (feedparser's corpus, with a
//! pass-rate floor, and the sanitizer against its hostile documents); `tests/robustness.rs`
//! (truncated and corrupted corpus documents, pathological inputs). `examples/parse.rs`
//! prints the JSON of a file.

mod builder;
mod charset;
mod date;
mod discover;
mod entities;
mod html;
mod json;
mod model;
mod url;
mod xml;

use std::collections::HashSet;

use sha2::{Digest, Sha256};

pub use date::parse_date;
pub use discover::discover_feeds;
pub use entities::decode_html_entities;
pub use html::{sanitize_html, to_plain_text};
pub use model::{Enclosure, FeedInput, FeedMeta, Format, IdSource, Item, ParsedFeed};
pub use url::resolve as resolve_url;

use builder::{Ctx, Version};

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The base URI for relative references: Content-Location (resolved against the URL), else
/// the URL. A base with an unsafe scheme is ignored.
fn base_uri(input: &FeedInput<'_>) -> String {
    let href = input.url.unwrap_or("").trim();
    let location = input.content_location.unwrap_or("").trim();
    if !location.is_empty() {
        if let Some(b) = url::safe_absolute(href, location).filter(|b| !b.is_empty()) {
            return b;
        }
        if let Some(b) = url::safe_absolute(location, "").filter(|b| !b.is_empty()) {
            return b;
        }
    }
    href.to_string()
}

fn format_of(version: Version) -> Format {
    match version {
        Version::Rss090 => Format::Rss090,
        Version::Rss091n | Version::Rss091u => Format::Rss091,
        Version::Rss092 | Version::Rss093 | Version::Rss094 => Format::Rss092,
        Version::Rss20 | Version::Rss => Format::Rss20,
        Version::Rss10 => Format::Rss10,
        Version::Atom01 | Version::Atom02 | Version::Atom03 => Format::Atom03,
        Version::Atom10 | Version::Atom => Format::Atom10,
        Version::Cdf => Format::Cdf,
        Version::None => Format::Unknown,
    }
}

fn content_hash(title: Option<&str>, summary: Option<&str>, content: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [title, summary, content] {
        h.update(part.unwrap_or("").as_bytes());
        h.update([0x1F]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn feed_meta(feed: Ctx, image: Option<Ctx>) -> FeedMeta {
    let link_of = |rel: &str| -> Vec<String> {
        feed.links
            .iter()
            .filter(|l| l.rel == rel)
            .filter_map(|l| l.href.clone())
            .filter(|h| !h.is_empty())
            .collect()
    };
    let mut seen = HashSet::new();
    let hubs: Vec<String> = link_of("hub")
        .into_iter()
        .filter(|h| seen.insert(h.clone()))
        .collect();
    let self_url = link_of("self").into_iter().next();
    let image = non_empty(image.and_then(|i| i.href))
        .or_else(|| non_empty(feed.itunes_image.clone()))
        .or_else(|| non_empty(feed.logo.clone()));
    FeedMeta {
        title: non_empty(feed.title),
        link: non_empty(feed.link),
        id: non_empty(feed.id),
        subtitle: non_empty(feed.subtitle).or_else(|| non_empty(feed.summary)),
        author: non_empty(feed.author),
        language: non_empty(feed.language),
        updated: feed.updated.or(feed.published),
        ttl: feed
            .ttl
            .as_deref()
            .and_then(|t| t.trim().parse().ok())
            .or_else(|| {
                // RSS 1.0's syndication module says "hourly, twice": 30 minutes.
                let minutes: u32 = match feed.update_period.as_deref()?.trim() {
                    "hourly" => 60,
                    "daily" => 1440,
                    "weekly" => 10_080,
                    "monthly" => 43_200,
                    "yearly" => 525_600,
                    _ => return None,
                };
                let times: u32 = feed
                    .update_frequency
                    .as_deref()
                    .map_or(Some(1), |f| f.trim().parse().ok())?;
                (times > 0).then(|| minutes / times)
            }),
        hubs,
        self_url,
        image,
        icon: non_empty(feed.icon),
    }
}

/// Build items and give each a stable id, unique within the document.
///
/// An entry identical to an earlier one (same guid, link and text) is the same item sent
/// twice and is dropped. Otherwise an item's id is its guid when no other item of the
/// document shares that guid; else its link when no other item shares that link; else a
/// hash of its text. Shared guids are common breakage (every item with the same guid), and
/// using one for the first item that carries it would move the id from item to item as new
/// ones arrive at the top: a guid that is not unique identifies nothing, so none of its
/// holders use it.
fn items(entries: Vec<Ctx>, inherited_author: Option<&str>) -> Vec<Item> {
    struct Keyed {
        e: Ctx,
        title: Option<String>,
        summary: Option<String>,
        content: Option<String>,
        link: Option<String>,
        guid: Option<String>,
        hash: String,
    }
    let mut keyed: Vec<Keyed> = Vec::with_capacity(entries.len());
    let mut copies: HashSet<(Option<String>, Option<String>, String)> = HashSet::new();
    for mut e in entries {
        let title = non_empty(e.title.take());
        let summary = non_empty(e.summary.take());
        let content = std::mem::take(&mut e.content)
            .into_iter()
            .find_map(|c| non_empty(Some(c)));
        let link = non_empty(e.link.take());
        let guid = non_empty(e.id.take());
        let hash = content_hash(title.as_deref(), summary.as_deref(), content.as_deref());
        if !copies.insert((guid.clone(), link.clone(), hash.clone())) {
            continue;
        }
        keyed.push(Keyed {
            e,
            title,
            summary,
            content,
            link,
            guid,
            hash,
        });
    }
    let mut guid_count: std::collections::HashMap<&str, usize> = Default::default();
    let mut link_count: std::collections::HashMap<&str, usize> = Default::default();
    for k in &keyed {
        if let Some(g) = &k.guid {
            *guid_count.entry(g).or_default() += 1;
        }
        if let Some(l) = &k.link {
            *link_count.entry(l).or_default() += 1;
        }
    }
    let unique = |m: &std::collections::HashMap<&str, usize>, v: &Option<String>| {
        v.as_deref()
            .filter(|v| m.get(v) == Some(&1))
            .map(str::to_owned)
    };
    let picks: Vec<(Option<String>, Option<String>)> = keyed
        .iter()
        .map(|k| (unique(&guid_count, &k.guid), unique(&link_count, &k.link)))
        .collect();
    let mut used: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(keyed.len());
    for (k, (guid, link_id)) in keyed.into_iter().zip(picks) {
        let Keyed {
            e,
            title,
            summary,
            content,
            link,
            hash,
            ..
        } = k;
        let candidates = [
            (guid, IdSource::Guid),
            (link_id, IdSource::Link),
            (Some(hash.clone()), IdSource::ContentHash),
        ];
        let picked = candidates
            .into_iter()
            .find_map(|(id, source)| id.filter(|id| !used.contains(id)).map(|id| (id, source)));
        let (id, id_source) = picked.unwrap_or_else(|| {
            let id = (2u64..)
                .map(|n| format!("{hash}#{n}"))
                .find(|id| !used.contains(id))
                .unwrap_or_else(|| hash.clone());
            (id, IdSource::ContentHash)
        });
        used.insert(id.clone());

        let mut enclosures: Vec<Enclosure> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for l in e.links.iter().filter(|l| l.rel == "enclosure") {
            if let Some(href) = l.href.clone().filter(|h| !h.is_empty())
                && seen.insert(href.clone())
            {
                enclosures.push(Enclosure {
                    url: href,
                    length: l.length.as_deref().and_then(|n| n.trim().parse().ok()),
                    mime: non_empty(l.mime.clone()),
                });
            }
        }
        for m in e.media {
            if !m.url.is_empty() && seen.insert(m.url.clone()) {
                enclosures.push(Enclosure {
                    url: m.url,
                    length: m.length.as_deref().and_then(|n| n.trim().parse().ok()),
                    mime: non_empty(m.mime),
                });
            }
        }
        let mut categories: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for t in e.tags {
            if let Some(c) = non_empty(t.term.or(t.label))
                && seen.insert(c.clone())
            {
                categories.push(c);
            }
        }
        out.push(Item {
            id,
            id_source,
            title,
            link,
            summary,
            content,
            author: non_empty(e.author).or_else(|| inherited_author.map(str::to_string)),
            published: e.published,
            updated: e.updated,
            enclosures,
            categories,
            subtitle: non_empty(e.subtitle),
            language: non_empty(e.language),
        });
    }
    out
}

/// A JSON Feed document.
fn parse_json(
    text: &str,
    base: &str,
    language: Option<&str>,
    mut errors: Vec<String>,
    encoding: String,
) -> ParsedFeed {
    let raw = json::parse(text, base);
    errors.extend(raw.errors);
    let format = if raw.is_json_feed {
        Format::JsonFeed
    } else {
        Format::Unknown
    };
    let mut feed = feed_meta(raw.feed, None);
    if feed.language.is_none() {
        feed.language = non_empty(language.map(str::to_string));
    }
    ParsedFeed {
        format,
        bozo: !errors.is_empty(),
        warnings: errors,
        encoding,
        feed,
        items: items(raw.entries, None),
    }
}

/// Parse a fetched document into a feed. Never panics, never errors: see [`ParsedFeed`].
pub fn parse(input: FeedInput<'_>) -> ParsedFeed {
    let decoded = charset::decode(input.body, input.content_type);
    let base = base_uri(&input);
    let mut errors = decoded.errors;
    let trimmed = decoded.text.trim_start_matches('\u{FEFF}').trim_start();

    if trimmed.is_empty() {
        errors.push("empty document".into());
        return ParsedFeed {
            format: Format::Unknown,
            bozo: true,
            warnings: errors,
            encoding: decoded.encoding,
            feed: FeedMeta::default(),
            items: Vec::new(),
        };
    }
    let looks_like_json = trimmed.starts_with('{');
    if decoded.is_json && looks_like_json {
        return parse_json(
            &decoded.text,
            &base,
            input.content_language,
            errors,
            decoded.encoding,
        );
    }
    if decoded.is_json {
        errors.push("served as JSON but is not JSON".into());
    }

    let raw = builder::build(
        &decoded.text,
        builder::Options {
            base: base.clone(),
            lang: input.content_language.map(str::to_string),
        },
    );
    if raw.root.is_none() && looks_like_json {
        // JSON served with an XML (or no) media type.
        errors.push("served as XML but is JSON".into());
        return parse_json(
            &decoded.text,
            &base,
            input.content_language,
            errors,
            decoded.encoding,
        );
    }
    errors.extend(raw.errors);
    let mut version = raw.version;
    if version == Version::None && raw.root.as_deref() == Some("rdf:rdf") {
        version = Version::Rss10;
    }
    let format = format_of(version);
    if format == Format::Unknown {
        let root = raw.root.as_deref().unwrap_or("nothing");
        errors.push(format!(
            "not a feed: the document's root element is <{root}>"
        ));
    }
    let bozo = !errors.is_empty();
    errors.extend(raw.notes);
    let feed = feed_meta(raw.feed, raw.image);
    // Atom (RFC 4287, 4.2.1): an entry without an author has the feed's.
    let inherited = matches!(format, Format::Atom03 | Format::Atom10)
        .then_some(feed.author.as_deref())
        .flatten();
    let items = items(raw.entries, inherited);
    ParsedFeed {
        format,
        bozo,
        warnings: errors,
        encoding: decoded.encoding,
        feed,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(doc: &str) -> ParsedFeed {
        parse(FeedInput {
            body: doc.as_bytes(),
            ..FeedInput::default()
        })
    }

    #[test]
    fn rss20_basics() {
        let f = p(r#"<?xml version="1.0"?>
            <rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">
            <channel><title>T &amp; co</title><link>http://example.org/</link>
            <description>D</description><ttl>30</ttl><language>en-us</language>
            <atom:link rel="hub" href="https://hub.example/"/>
            <atom:link rel="self" href="https://example.org/rss"/>
            <item><title>One</title><link>http://example.org/1</link><guid>urn:1</guid>
              <description>&lt;p&gt;Hello&lt;/p&gt;</description>
              <pubDate>Sat, 07 Sep 2002 00:00:01 GMT</pubDate>
              <enclosure url="http://example.org/a.mp3" length="123" type="audio/mpeg"/>
              <category>news</category></item>
            </channel></rss>"#);
        assert!(!f.bozo, "{:?}", f.warnings);
        assert_eq!(f.format, Format::Rss20);
        assert_eq!(f.feed.title.as_deref(), Some("T &amp; co"));
        assert_eq!(f.feed.ttl, Some(30));
        assert_eq!(f.feed.hubs, ["https://hub.example/"]);
        assert_eq!(f.feed.self_url.as_deref(), Some("https://example.org/rss"));
        assert_eq!(f.feed.language.as_deref(), Some("en-us"));
        let i = &f.items[0];
        assert_eq!((i.id.as_str(), i.id_source), ("urn:1", IdSource::Guid));
        assert_eq!(i.summary.as_deref(), Some("<p>Hello</p>"));
        assert_eq!(i.published, Some(1_031_356_801));
        assert_eq!(
            i.enclosures,
            [Enclosure {
                url: "http://example.org/a.mp3".into(),
                length: Some(123),
                mime: Some("audio/mpeg".into())
            }]
        );
        assert_eq!(i.categories, ["news"]);
    }

    #[test]
    fn id_fallbacks() {
        let f = p(r#"<rss version="2.0"><channel>
            <item><title>a</title><link>http://x/1</link></item>
            <item><title>b</title></item>
            <item><title>c</title><guid>g</guid><link>http://x/3</link></item>
            <item><title>d</title><guid>g</guid><link>http://x/4</link></item>
            <item><title>e</title><guid>g</guid><link>http://x/4</link></item>
            <item><title>e</title><guid>g</guid><link>http://x/4</link></item>
            <item><title>f</title><link>http://x/1</link></item>
            </channel></rss>"#);
        let ids: Vec<(&str, IdSource)> = f
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.id_source))
            .collect();
        // The identical copy of "e" is dropped: six items remain.
        assert_eq!(ids.len(), 6);
        // "http://x/1" is shared by "a" and "f": neither uses it.
        assert_eq!(ids[0].1, IdSource::ContentHash);
        assert_eq!(ids[1].1, IdSource::ContentHash);
        assert!(ids[1].0.starts_with("sha256:"));
        // "g" is shared by c, d and e: none uses it; c has a link of its own.
        assert_eq!(ids[2], ("http://x/3", IdSource::Link));
        // d and e share http://x/4 too: their text tells them apart.
        assert_eq!(ids[3].1, IdSource::ContentHash);
        assert_eq!(ids[4].1, IdSource::ContentHash);
        assert_eq!(ids[5].1, IdSource::ContentHash);
        let unique: HashSet<&str> = ids.iter().map(|(i, _)| *i).collect();
        assert_eq!(unique.len(), ids.len());
        // Stable across parses.
        let again =
            p(r#"<rss version="2.0"><channel><item><title>b</title></item></channel></rss>"#);
        assert_eq!(again.items[0].id, ids[1].0);
    }

    #[test]
    fn atom_xhtml_content() {
        let f = p(
            r#"<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://example.org/a/">
            <title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">A <b>bold</b> title</div></title>
            <entry><id>tag:x,2020:1</id><title>1 &lt; 2</title>
            <link href="one.html"/>
            <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Hi <a href="../b">there</a><br/></p></div></content>
            <author><name>Ann</name><email>ann@example.org</email></author>
            <updated>2002-09-07T00:00:01Z</updated></entry></feed>"#,
        );
        assert!(!f.bozo, "{:?}", f.warnings);
        assert_eq!(f.format, Format::Atom10);
        assert_eq!(f.feed.title.as_deref(), Some("A <b>bold</b> title"));
        let i = &f.items[0];
        assert_eq!(i.title.as_deref(), Some("1 &lt; 2"));
        assert_eq!(i.link.as_deref(), Some("http://example.org/a/one.html"));
        assert_eq!(
            i.content.as_deref(),
            Some("<p>Hi <a href=\"http://example.org/b\">there</a><br /></p>")
        );
        assert_eq!(i.author.as_deref(), Some("Ann (ann@example.org)"));
        assert_eq!(i.updated, Some(1_031_356_801));
    }

    #[test]
    fn relative_links_against_content_location_and_url() {
        let doc = br#"<rss version="2.0"><channel><link>/home</link><item><link>p/1</link>
            <description>&lt;img src="i.png"&gt;</description></item></channel></rss>"#;
        let f = parse(FeedInput {
            body: doc,
            content_type: Some("application/rss+xml"),
            url: Some("http://a.example/feeds/rss"),
            content_location: Some("http://b.example/x/"),
            content_language: None,
        });
        assert_eq!(f.feed.link.as_deref(), Some("http://b.example/home"));
        assert_eq!(f.items[0].link.as_deref(), Some("http://b.example/x/p/1"));
        assert_eq!(
            f.items[0].summary.as_deref(),
            Some("<img src=\"http://b.example/x/i.png\" />")
        );
        let f = parse(FeedInput {
            body: doc,
            url: Some("http://a.example/feeds/rss"),
            ..FeedInput::default()
        });
        assert_eq!(
            f.items[0].link.as_deref(),
            Some("http://a.example/feeds/p/1")
        );
    }

    #[test]
    fn billion_laughs_is_not_expanded() {
        let mut doc = String::from("<?xml version=\"1.0\"?><!DOCTYPE rss [<!ENTITY lol \"lol\">");
        doc.push_str("<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">");
        for i in 2..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&lol{prev};").repeat(10)
            ));
        }
        doc.push_str("]><rss version=\"2.0\"><channel><title>&lol9;</title></channel></rss>");
        let start = std::time::Instant::now();
        let f = p(&doc);
        assert!(start.elapsed().as_secs() < 2);
        let title = f.feed.title.unwrap_or_default();
        assert!(title.len() < 64, "{title}");
        assert!(!title.contains("lollol"));
        assert!(f.warnings.iter().any(|w| w.contains("unexpanded")));
        // External entities are never fetched or expanded either.
        let f = p(
            r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss><channel><title>&x;</title></channel></rss>"#,
        );
        assert_eq!(f.feed.title.as_deref(), Some("&amp;x;"));
    }

    #[test]
    fn html_entities_in_rss() {
        let f = p("<rss><channel><title>caf&eacute; &rArr; &hellip;</title></channel></rss>");
        assert!(f.bozo);
        assert_eq!(f.feed.title.as_deref(), Some("caf\u{e9} \u{21d2} \u{2026}"));
    }

    #[test]
    fn recovers_from_broken_xml() {
        let f = p(
            "<rss version=\"2.0\"><channel><title>T</title><item><title>A & B</title><link>http://x/1</link></item><item><title>C</title></channel>",
        );
        assert!(f.bozo);
        assert!(!f.warnings.is_empty());
        assert_eq!(f.items.len(), 2);
        assert_eq!(f.items[0].title.as_deref(), Some("A &amp; B"));
        let f = p("");
        assert!(f.bozo);
        let f = p("<html><body>not a feed</body></html>");
        assert!(f.bozo);
        assert_eq!(f.format, Format::Unknown);
    }

    #[test]
    fn json_feed() {
        let f = parse(FeedInput {
            body: br#"{"version":"https://jsonfeed.org/version/1","title":"J","items":[{"id":"1","title":"x","content_text":"t"}]}"#,
            content_type: Some("application/feed+json"),
            ..FeedInput::default()
        });
        assert!(!f.bozo, "{:?}", f.warnings);
        assert_eq!(f.format, Format::JsonFeed);
        assert_eq!(f.items[0].id, "1");
        assert_eq!(f.items[0].content.as_deref(), Some("t"));
    }

    #[test]
    fn scheduling_hints_and_inheritance() {
        let f = p(
            r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
            xmlns:sy="http://purl.org/rss/1.0/modules/syndication/">
            <channel rdf:about="http://x/"><title>t</title><sy:updatePeriod>hourly</sy:updatePeriod>
            <sy:updateFrequency>2</sy:updateFrequency></channel>
            <item rdf:about="http://x/1"><title>i</title></item></rdf:RDF>"#,
        );
        assert_eq!(f.format, Format::Rss10);
        assert_eq!(f.feed.ttl, Some(30));
        assert_eq!(
            (f.items[0].id.as_str(), f.items[0].id_source),
            ("http://x/1", IdSource::Guid)
        );
        let f = p(
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><author><name>Feed Author</name></author>
            <entry><id>a</id></entry><entry><id>b</id><author><name>Own</name></author></entry></feed>"#,
        );
        assert_eq!(f.items[0].author.as_deref(), Some("Feed Author"));
        assert_eq!(f.items[1].author.as_deref(), Some("Own"));
    }

    #[test]
    fn json_with_the_wrong_media_type() {
        let f = parse(FeedInput {
            body: br#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[]}"#,
            content_type: Some("application/rss+xml"),
            ..FeedInput::default()
        });
        assert_eq!(f.format, Format::JsonFeed);
        assert!(f.bozo);
        let f = parse(FeedInput {
            body: b"<rss version=\"2.0\"><channel><title>x</title></channel></rss>",
            content_type: Some("application/json"),
            ..FeedInput::default()
        });
        assert_eq!(f.format, Format::Rss20);
        assert_eq!(f.feed.title.as_deref(), Some("x"));
    }

    #[test]
    fn charset_from_header_and_declaration() {
        let body = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><rss version=\"2.0\"><channel><title>caf\xe9</title></channel></rss>";
        let f = parse(FeedInput {
            body,
            ..FeedInput::default()
        });
        assert_eq!(f.encoding, "iso-8859-1");
        assert_eq!(f.feed.title.as_deref(), Some("caf\u{e9}"));
        assert!(!f.bozo);
        let f = parse(FeedInput {
            body,
            content_type: Some("text/xml; charset=windows-1252"),
            ..FeedInput::default()
        });
        assert_eq!(f.encoding, "windows-1252");
        assert_eq!(f.feed.title.as_deref(), Some("caf\u{e9}"));
    }
}
