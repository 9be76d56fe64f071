//! Page watching, I/O-free: decode a fetched HTML page, select elements with the user's
//! CSS selector and turn each into a [`PageItem`] (its collapsed text, its first http(s)
//! link made absolute, its outer HTML, and an id hashed from text and link so the same
//! listing keeps its id across polls). It does not fetch (see `fetch`), remember which
//! items were seen, filter by keywords, or sanitize the HTML: the caller does those, and
//! must sanitize `html` before rendering it.

mod charset;
mod nesting;

use std::collections::HashSet;
use std::io;

use ego_tree::iter::Edge;
use html5ever::serialize::{SerializeOpts, TraversalScope};
use scraper::{ElementRef, Html, Node, Selector};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

/// Items taken from one page; matches past this are ignored (a selector matching every
/// `<div>` is a mistake, not 10,000 listings).
pub const MAX_ITEMS: usize = 500;
/// Characters of text kept per item.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Bytes of outer HTML kept per item. Bounds the work when matches nest (a selector like
/// `div` on a deep page would otherwise serialize the page once per ancestor).
pub const MAX_HTML_BYTES: usize = 32 * 1024;
/// Matches looked at per page, counting the duplicates and empty ones that are skipped:
/// without it, a page of thousands of nested identical elements would be walked in full
/// once per element.
pub const MAX_MATCHES: usize = 4 * MAX_ITEMS;
/// Nodes visited per item when collecting its text or looking for its link.
const MAX_NODES_PER_ITEM: usize = 5_000;
/// Longest selector accepted.
pub const MAX_SELECTOR_CHARS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageItem {
    /// Hex SHA-256 of the text and link: stable while the listing is unchanged.
    pub id: String,
    /// Visible text, whitespace collapsed, trimmed, at most [`MAX_TEXT_CHARS`] characters.
    pub text: String,
    /// The first http(s) `<a href>` in the element (or the element itself), absolute.
    pub link: Option<String>,
    /// The element's outer HTML, unsanitized, at most [`MAX_HTML_BYTES`] (cut at a
    /// character boundary, so possibly unbalanced; the sanitizer repairs that).
    pub html: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("invalid CSS selector \"{selector}\": {reason}")]
    InvalidSelector { selector: String, reason: String },
    #[error("invalid page URL \"{url}\": {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    /// The HTML nests so deeply that building its tree would take too long (see
    /// `nesting`); no real page comes near.
    #[error("the page's HTML is nested too deeply to be watched")]
    TooComplex,
}

/// Checks a selector a user gave, with a message fit to show them.
pub fn validate_selector(s: &str) -> Result<(), PageError> {
    parse_selector(s).map(|_| ())
}

/// The items of `html` matched by `selector`, in document order, duplicates (same text and
/// link) and empty elements (no text, no link) left out, at most [`MAX_ITEMS`].
pub fn extract(
    html: &[u8],
    content_type: Option<&str>,
    base_url: &str,
    selector: &str,
) -> Result<Vec<PageItem>, PageError> {
    let selector = parse_selector(selector)?;
    let page_url = Url::parse(base_url.trim()).map_err(|e| PageError::InvalidBaseUrl {
        url: base_url.to_string(),
        reason: e.to_string(),
    })?;
    let text = charset::decode(html, content_type);
    if nesting::too_complex(&text) {
        return Err(PageError::TooComplex);
    }
    let doc = Html::parse_document(&text);
    let base = document_base(&doc, page_url);

    let mut seen = HashSet::new();
    let mut items = Vec::new();
    for element in doc.select(&selector).take(MAX_MATCHES) {
        if items.len() >= MAX_ITEMS {
            tracing::debug!(
                base_url,
                "page has more than {MAX_ITEMS} matches; rest ignored"
            );
            break;
        }
        let text = element_text(element);
        let link = first_link(element, &base);
        if text.is_empty() && link.is_none() {
            continue;
        }
        let id = item_id(&text, link.as_deref());
        if !seen.insert(id.clone()) {
            continue;
        }
        items.push(PageItem {
            id,
            text,
            link,
            html: outer_html(element),
        });
    }
    Ok(items)
}

fn parse_selector(s: &str) -> Result<Selector, PageError> {
    let invalid = |reason: String| PageError::InvalidSelector {
        selector: s.to_string(),
        reason,
    };
    if s.trim().is_empty() {
        return Err(invalid("the selector is empty".into()));
    }
    if s.chars().count() > MAX_SELECTOR_CHARS {
        return Err(invalid(format!(
            "the selector is longer than {MAX_SELECTOR_CHARS} characters"
        )));
    }
    Selector::parse(s).map_err(|e| invalid(selector_error_text(&e)))
}

/// scraper's own texts are terse and one asks users to "report this to the developer";
/// these say what is wrong in the user's terms.
fn selector_error_text(e: &scraper::error::SelectorErrorKind<'_>) -> String {
    use cssparser::ToCss;
    use scraper::error::SelectorErrorKind as K;
    use selectors::parser::SelectorParseErrorKind as S;
    match e {
        K::UnexpectedToken(t) => format!("unexpected \"{}\"", t.to_css_string()),
        K::EndOfLine => "the selector ends too early".into(),
        K::InvalidAtRule(_) | K::InvalidAtRuleBody => "@-rules are not selectors".into(),
        K::QualRuleInvalid => "this is not a valid selector".into(),
        K::ExpectedColonOnPseudoElement(t) | K::ExpectedIdentityOnPseudoElement(t) => {
            format!("malformed pseudo-element near \"{}\"", t.to_css_string())
        }
        K::UnexpectedSelectorParseError(kind) => match kind {
            // The whole selector being empty is caught earlier; here one part of a list is.
            S::EmptySelector => "a part of the selector list is empty (a stray comma?)".into(),
            S::DanglingCombinator => {
                "a combinator (>, +, ~ or a space) has nothing after it".into()
            }
            S::UnsupportedPseudoClassOrElement(name) => {
                format!("unsupported pseudo-class or pseudo-element \":{name}\"")
            }
            S::NoIdentForPseudo(t) => format!(
                "a pseudo-class name is expected after \":\", not \"{}\"",
                t.to_css_string()
            ),
            S::ClassNeedsIdent(t) => format!(
                "a class name is expected after \".\", not \"{}\"",
                t.to_css_string()
            ),
            S::UnexpectedIdent(name) => format!("unexpected \"{name}\""),
            S::ExpectedNamespace(ns) => format!("unknown namespace prefix \"{ns}\""),
            S::NoQualifiedNameInAttributeSelector(t)
            | S::UnexpectedTokenInAttributeSelector(t)
            | S::ExpectedBarInAttr(t)
            | S::BadValueInAttr(t)
            | S::InvalidQualNameInAttr(t)
            | S::ExplicitNamespaceUnexpectedToken(t) => format!(
                "malformed attribute selector near \"{}\"",
                t.to_css_string()
            ),
            _ => "this selector is not supported".into(),
        },
    }
}

/// The URL relative links resolve against: the page's, or its `<base href>`.
fn document_base(doc: &Html, page_url: Url) -> Url {
    let base_href = doc
        .root_element()
        .descendent_elements()
        .find(|e| e.value().name() == "base" && e.value().attr("href").is_some())
        .and_then(|e| e.value().attr("href"));
    match base_href.and_then(|href| page_url.join(href).ok()) {
        Some(base) if matches!(base.scheme(), "http" | "https") => base,
        _ => page_url,
    }
}

/// Elements whose content is not visible text.
fn is_hidden(name: &str) -> bool {
    matches!(name, "script" | "style" | "template" | "noscript" | "head")
}

/// Elements that separate words visually even with no whitespace in the source, so
/// `<h3>2br</h3><p>Nice</p>` reads "2br Nice", not "2brNice".
fn breaks_words(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "br"
            | "dd"
            | "div"
            | "dl"
            | "dt"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hr"
            | "img"
            | "li"
            | "main"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "table"
            | "td"
            | "th"
            | "tr"
            | "ul"
    )
}

/// Visible text with whitespace collapsed, stopping once [`MAX_TEXT_CHARS`] are collected
/// or [`MAX_NODES_PER_ITEM`] nodes visited (bounded work however large the element). Iterative, so deep nesting cannot overflow
/// the stack.
fn element_text(element: ElementRef<'_>) -> String {
    let mut text = Collapsed::default();
    let mut hidden_depth = 0usize;
    for edge in element.traverse().take(2 * MAX_NODES_PER_ITEM) {
        if text.chars >= MAX_TEXT_CHARS {
            break;
        }
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(e) => {
                    if is_hidden(e.name()) {
                        hidden_depth += 1;
                    } else if hidden_depth == 0 && breaks_words(e.name()) {
                        text.push(' ');
                    }
                }
                Node::Text(t) if hidden_depth == 0 => {
                    // Stop inside a long text node too, not only between nodes.
                    for c in t.chars() {
                        if text.chars >= MAX_TEXT_CHARS {
                            break;
                        }
                        text.push(c);
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(e) = node.value() {
                    if is_hidden(e.name()) {
                        hidden_depth = hidden_depth.saturating_sub(1);
                    } else if hidden_depth == 0 && breaks_words(e.name()) {
                        text.push(' ');
                    }
                }
            }
        }
    }
    let mut out = text.out;
    truncate_chars(&mut out, MAX_TEXT_CHARS);
    out
}

/// Text with runs of whitespace collapsed to one space and none at the start; a trailing
/// space is only written when more text follows.
#[derive(Default)]
struct Collapsed {
    out: String,
    chars: usize,
    pending_space: bool,
}

impl Collapsed {
    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.pending_space = !self.out.is_empty();
            return;
        }
        if self.pending_space {
            self.out.push(' ');
            self.chars += 1;
            self.pending_space = false;
        }
        self.out.push(c);
        self.chars += 1;
    }
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((byte, _)) = s.char_indices().nth(max) {
        s.truncate(byte);
    }
    // Cutting may leave the space between two words last.
    let trimmed = s.trim_end().len();
    s.truncate(trimmed);
}

/// The first `<a href>` (the element itself first) whose target is an http(s) URL.
fn first_link(element: ElementRef<'_>, base: &Url) -> Option<String> {
    std::iter::once(element)
        .chain(element.descendent_elements().take(MAX_NODES_PER_ITEM))
        .filter(|e| e.value().name() == "a")
        .filter_map(|e| e.value().attr("href"))
        .filter_map(|href| base.join(href).ok())
        .find(|url| matches!(url.scheme(), "http" | "https"))
        .map(String::from)
}

fn item_id(text: &str, link: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    // A separator that cannot occur in the collapsed text, so ("a b", None) and
    // ("a", "b") differ.
    hasher.update(b"\n");
    hasher.update(link.unwrap_or_default().as_bytes());
    hex::encode(hasher.finalize())
}

/// Outer HTML, serialized into a writer that refuses bytes past [`MAX_HTML_BYTES`] so a
/// huge element costs no more than a small one.
fn outer_html(element: ElementRef<'_>) -> String {
    struct Capped(Vec<u8>);
    impl io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = MAX_HTML_BYTES - self.0.len();
            if buf.len() > room {
                self.0.extend_from_slice(&buf[..room]);
                return Err(io::Error::other("item HTML limit reached"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    let mut out = Capped(Vec::new());
    let opts = SerializeOpts {
        scripting_enabled: false,
        traversal_scope: TraversalScope::IncludeNode,
        create_missing_parent: false,
    };
    // An error here is the cap being reached: keep what was written.
    let _ = html5ever::serialize::serialize(&mut out, &element, opts);
    let mut bytes = out.0;
    if let Err(e) = std::str::from_utf8(&bytes) {
        bytes.truncate(e.valid_up_to());
    }
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests;
