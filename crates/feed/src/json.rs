//! JSON Feed 1.0 and 1.1 (<https://jsonfeed.org/version/1.1>).
//!
//! Lenient the way the XML side is: fields of the wrong type are ignored, 1.0's `author`
//! and 1.1's `authors` are both read, an item without an id still becomes an item (its
//! identity falls back to its URL or content hash like any other).

use serde_json::Value;

use crate::builder::{Ctx, Link, Person, Tag};
use crate::entities::escape_text;
use crate::html;
use crate::url;

/// A JSON Feed as the builder's raw contexts, or why it is not one.
pub(crate) struct JsonRaw {
    pub feed: Ctx,
    pub entries: Vec<Ctx>,
    pub errors: Vec<String>,
    pub is_json_feed: bool,
}

fn string(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn author_of(v: &Value) -> Option<String> {
    let one = |a: &Value| string(a, "name").or_else(|| string(a, "url"));
    if let Some(Value::Array(list)) = v.get("authors") {
        let names: Vec<String> = list.iter().filter_map(one).collect();
        if !names.is_empty() {
            return Some(names.join(", "));
        }
    }
    v.get("author").and_then(one)
}

fn resolve(base: &str, u: Option<String>) -> Option<String> {
    u.map(|u| url::resolve(base, &u))
}

pub(crate) fn parse(text: &str, base: &str) -> JsonRaw {
    let mut raw = JsonRaw {
        feed: Ctx::default(),
        entries: Vec::new(),
        errors: Vec::new(),
        is_json_feed: false,
    };
    let doc: Value = match serde_json::from_str(text.trim_start_matches('\u{FEFF}')) {
        Ok(v) => v,
        Err(e) => {
            raw.errors.push(format!("malformed JSON: {e}"));
            return raw;
        }
    };
    if !doc.is_object() {
        raw.errors.push("JSON document is not an object".into());
        return raw;
    }
    let version = string(&doc, "version").unwrap_or_default();
    raw.is_json_feed = version.starts_with("https://jsonfeed.org/version/")
        || doc.get("items").is_some_and(Value::is_array);
    if !raw.is_json_feed {
        raw.errors.push("JSON document is not a JSON Feed".into());
        return raw;
    }
    if !version.starts_with("https://jsonfeed.org/version/") {
        raw.errors.push("JSON Feed without a version".into());
    }
    let base = resolve(base, string(&doc, "feed_url")).unwrap_or_else(|| base.to_string());
    let f = &mut raw.feed;
    f.title = string(&doc, "title").map(|t| escape_text(&t).into_owned());
    f.link = resolve(&base, string(&doc, "home_page_url"));
    f.subtitle = string(&doc, "description").map(|t| escape_text(&t).into_owned());
    f.author = author_of(&doc);
    f.language = string(&doc, "language");
    f.logo = resolve(&base, string(&doc, "icon"));
    f.icon = resolve(&base, string(&doc, "favicon"));
    if let Some(self_url) = string(&doc, "feed_url") {
        f.links.push(Link {
            rel: "self".into(),
            href: Some(url::resolve(&base, &self_url)),
            ..Link::default()
        });
    }
    if let Some(Value::Array(hubs)) = doc.get("hubs") {
        for hub in hubs {
            let kind = string(hub, "type").unwrap_or_default().to_ascii_lowercase();
            if let Some(u) = string(hub, "url")
                && (kind.is_empty() || kind == "websub" || kind == "pubsubhubbub")
            {
                f.links.push(Link {
                    rel: "hub".into(),
                    href: Some(url::resolve(&base, &u)),
                    ..Link::default()
                });
            }
        }
    }
    let Some(Value::Array(items)) = doc.get("items") else {
        raw.errors.push("JSON Feed without an items array".into());
        return raw;
    };
    for item in items.iter().filter(|i| i.is_object()) {
        let mut e = Ctx::default();
        e.id = string(item, "id");
        e.link = resolve(
            &base,
            string(item, "url").or_else(|| string(item, "external_url")),
        );
        e.title = string(item, "title").map(|t| escape_text(&t).into_owned());
        e.summary = string(item, "summary").map(|t| escape_text(&t).into_owned());
        let content = match string(item, "content_html") {
            Some(h) => Some(html::normalize(&h, &base, false)),
            None => string(item, "content_text").map(|t| escape_text(&t).into_owned()),
        };
        e.content.extend(content);
        e.author = author_of(item).or_else(|| raw.feed.author.clone());
        e.authors.push(Person::default());
        e.published = string(item, "date_published").and_then(|d| crate::date::parse_date(&d));
        e.updated = string(item, "date_modified").and_then(|d| crate::date::parse_date(&d));
        e.language = string(item, "language");
        if let Some(Value::Array(tags)) = item.get("tags") {
            for t in tags.iter().filter_map(Value::as_str) {
                e.tags.push(Tag {
                    term: Some(t.to_string()),
                    label: None,
                });
            }
        }
        if let Some(Value::Array(atts)) = item.get("attachments") {
            for a in atts {
                if let Some(u) = string(a, "url") {
                    e.links.push(Link {
                        rel: "enclosure".into(),
                        href: Some(url::resolve(&base, &u)),
                        mime: string(a, "mime_type"),
                        length: string(a, "size_in_bytes"),
                    });
                }
            }
        }
        raw.entries.push(e);
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_json_feed() {
        let doc = r#"{
            "version": "https://jsonfeed.org/version/1.1",
            "title": "My <Feed>",
            "home_page_url": "https://example.org/",
            "feed_url": "https://example.org/feed.json",
            "hubs": [{"type": "WebSub", "url": "https://hub.example/"}],
            "authors": [{"name": "Ann"}],
            "items": [
                {"id": 1, "url": "/a", "content_html": "<p>Hi <a href='/x'>x</a></p>",
                 "date_published": "2020-01-02T03:04:05Z", "tags": ["t"],
                 "attachments": [{"url": "/a.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 5}]},
                {"id": "two", "content_text": "1 < 2"}
            ]
        }"#;
        let r = parse(doc, "");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.feed.title.as_deref(), Some("My &lt;Feed&gt;"));
        assert_eq!(r.entries.len(), 2);
        let e = &r.entries[0];
        assert_eq!(e.id.as_deref(), Some("1"));
        assert_eq!(e.link.as_deref(), Some("https://example.org/a"));
        assert_eq!(
            e.content[0],
            "<p>Hi <a href=\"https://example.org/x\">x</a></p>"
        );
        assert_eq!(e.published, Some(1_577_934_245));
        assert_eq!(e.author.as_deref(), Some("Ann"));
        assert_eq!(r.entries[1].content[0], "1 &lt; 2");
    }

    #[test]
    fn rejects_other_json() {
        assert!(!parse("[1,2]", "").is_json_feed);
        assert!(!parse("{\"a\": 1}", "").is_json_feed);
        assert!(!parse("{", "").errors.is_empty());
    }
}
