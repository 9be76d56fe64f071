//! HTML found inside feeds: a lenient tokenizer and what is built on it.
//!
//! - [`normalize`]: re-serializes an item's HTML the way feed readers have for twenty years
//!   (lowercase tags, sorted double-quoted attributes, `<br />`), resolving relative URLs
//!   against the element's base and blanking `javascript:`-style link targets on the way. It
//!   removes nothing else: rendering code must still run [`sanitize_html`].
//! - [`sanitize_html`]: the allowlist sanitizer (ammonia) for anything that renders feed HTML.
//! - [`to_plain_text`]: text for IM and SMS.
//! - [`looks_like_html`]: whether RSS "plain text" is really HTML, conservatively.
//!
//! The tokenizer never fails: what is not markup is text.

use std::borrow::Cow;
use std::sync::LazyLock;

use crate::entities::{self, escape_attr};
use crate::url;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HtmlToken<'a> {
    /// Raw text, references not decoded.
    Text(&'a str),
    Start {
        name: &'a str,
        /// Attribute names as written; values raw (references not decoded), `None` when absent.
        attrs: Vec<(&'a str, Option<&'a str>)>,
        self_closing: bool,
    },
    End {
        name: &'a str,
    },
    Comment(&'a str),
    /// `<!DOCTYPE ...>`, `<?...>`: dropped by every consumer.
    Declaration,
    /// The `<![CDATA[` opener of a CDATA section inside HTML, which HTML does not have. What
    /// follows it is tokenized as HTML again (so markup cannot hide in it), and the opener is
    /// kept as text.
    CDataOpen,
}

pub(crate) struct HtmlTokenizer<'a> {
    src: &'a str,
    pos: usize,
    /// Inside `<script>`/`<style>`: everything up to the matching end tag is text.
    raw_text_until: Option<&'static str>,
}

impl<'a> HtmlTokenizer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        HtmlTokenizer {
            src,
            pos: 0,
            raw_text_until: None,
        }
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn tag(&mut self) -> Option<HtmlToken<'a>> {
        let s = self.rest();
        let b = s.as_bytes();
        if let Some(body) = s.strip_prefix("<!--") {
            let end = body.find("-->")? + 4 + 3;
            self.pos += end;
            return Some(HtmlToken::Comment(&s[..end]));
        }
        if s.starts_with("<![CDATA[") {
            self.pos += "<![CDATA[".len();
            return Some(HtmlToken::CDataOpen);
        }
        if (s.starts_with("<!") && b.get(2).is_some_and(u8::is_ascii_alphabetic))
            || s.starts_with("<?")
        {
            let end = s.find('>')? + 1;
            self.pos += end;
            return Some(HtmlToken::Declaration);
        }
        let (is_end, name_start) = if s.starts_with("</") {
            (true, 2)
        } else {
            (false, 1)
        };
        if !b.get(name_start).is_some_and(u8::is_ascii_alphabetic) {
            return None;
        }
        let name_len = b[name_start..]
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':')))
            .unwrap_or(b.len() - name_start);
        let name = &s[name_start..name_start + name_len];
        let mut i = name_start + name_len;
        let mut attrs = Vec::new();
        let mut self_closing = false;
        loop {
            while b.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            match b.get(i)? {
                b'>' => {
                    i += 1;
                    break;
                }
                b'/' if b.get(i + 1) == Some(&b'>') => {
                    self_closing = true;
                    i += 2;
                    break;
                }
                b'/' => {
                    i += 1;
                    continue;
                }
                b'<' => return None,
                _ => {}
            }
            let an_start = i;
            while let Some(&c) = b.get(i) {
                if c.is_ascii_whitespace() || matches!(c, b'=' | b'>' | b'<') {
                    break;
                }
                if c == b'/' && b.get(i + 1) == Some(&b'>') {
                    break;
                }
                i += 1;
            }
            if i == an_start {
                // A stray '=' or similar: skip it.
                i += 1;
                continue;
            }
            let attr_name = &s[an_start..i];
            let mut j = i;
            while b.get(j).is_some_and(u8::is_ascii_whitespace) {
                j += 1;
            }
            let mut value = None;
            if b.get(j) == Some(&b'=') {
                j += 1;
                while b.get(j).is_some_and(u8::is_ascii_whitespace) {
                    j += 1;
                }
                match b.get(j) {
                    Some(&q @ (b'"' | b'\'')) => {
                        let vend = j + 1 + b[j + 1..].iter().position(|&c| c == q)?;
                        value = Some(&s[j + 1..vend]);
                        j = vend + 1;
                    }
                    Some(_) => {
                        let vstart = j;
                        while let Some(&c) = b.get(j) {
                            if c.is_ascii_whitespace() || c == b'>' {
                                break;
                            }
                            j += 1;
                        }
                        value = Some(&s[vstart..j]);
                    }
                    None => return None,
                }
                i = j;
            }
            if attrs.len() < MAX_ATTRS {
                attrs.push((attr_name, value));
            }
        }
        self.pos += i;
        if is_end {
            return Some(HtmlToken::End { name });
        }
        if !self_closing {
            if name.eq_ignore_ascii_case("script") {
                self.raw_text_until = Some("</script");
            } else if name.eq_ignore_ascii_case("style") {
                self.raw_text_until = Some("</style");
            }
        }
        Some(HtmlToken::Start {
            name,
            attrs,
            self_closing,
        })
    }
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

impl<'a> Iterator for HtmlTokenizer<'a> {
    type Item = HtmlToken<'a>;

    fn next(&mut self) -> Option<HtmlToken<'a>> {
        let s = self.rest();
        if s.is_empty() {
            return None;
        }
        if let Some(until) = self.raw_text_until.take() {
            let end = find_ascii_ci(s, until).unwrap_or(s.len());
            if end > 0 {
                self.pos += end;
                return Some(HtmlToken::Text(&s[..end]));
            }
        }
        if s.starts_with('<') {
            if let Some(t) = self.tag() {
                return Some(t);
            }
            // Not markup: a literal '<'.
            self.pos += 1;
            return Some(HtmlToken::Text(&s[..1]));
        }
        let first = s.chars().next().map_or(1, char::len_utf8);
        let end = s[first..].find('<').map_or(s.len(), |e| e + first);
        self.pos += end;
        Some(HtmlToken::Text(&s[..end]))
    }
}

/// Attributes beyond this many on one tag are dropped.
const MAX_ATTRS: usize = 256;

/// Elements that never have an end tag.
const VOID: &[&str] = &[
    "area", "base", "basefont", "br", "col", "command", "embed", "frame", "hr", "img", "input",
    "isindex", "keygen", "link", "meta", "param", "source", "track", "wbr",
];

/// Attributes that hold a URL, per element.
const URL_ATTRS: &[(&str, &str)] = &[
    ("a", "href"),
    ("applet", "codebase"),
    ("area", "href"),
    ("audio", "src"),
    ("blockquote", "cite"),
    ("body", "background"),
    ("del", "cite"),
    ("form", "action"),
    ("frame", "longdesc"),
    ("frame", "src"),
    ("iframe", "longdesc"),
    ("iframe", "src"),
    ("head", "profile"),
    ("img", "longdesc"),
    ("img", "src"),
    ("img", "usemap"),
    ("input", "src"),
    ("input", "usemap"),
    ("ins", "cite"),
    ("link", "href"),
    ("object", "classid"),
    ("object", "codebase"),
    ("object", "data"),
    ("object", "usemap"),
    ("q", "cite"),
    ("script", "src"),
    ("source", "src"),
    ("video", "poster"),
    ("video", "src"),
];

/// The HTML elements that RSS "plain text" may contain and still be taken for HTML.
const HTML_ELEMENTS: &[&str] = &[
    "a",
    "abbr",
    "acronym",
    "address",
    "area",
    "article",
    "aside",
    "audio",
    "b",
    "big",
    "blockquote",
    "br",
    "button",
    "canvas",
    "caption",
    "center",
    "cite",
    "code",
    "col",
    "colgroup",
    "command",
    "datagrid",
    "datalist",
    "dd",
    "del",
    "details",
    "dfn",
    "dialog",
    "dir",
    "div",
    "dl",
    "dt",
    "em",
    "event-source",
    "fieldset",
    "figcaption",
    "figure",
    "font",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "i",
    "img",
    "input",
    "ins",
    "kbd",
    "keygen",
    "label",
    "legend",
    "li",
    "m",
    "map",
    "menu",
    "meter",
    "multicol",
    "nav",
    "nextid",
    "noscript",
    "ol",
    "optgroup",
    "option",
    "output",
    "p",
    "pre",
    "progress",
    "q",
    "rp",
    "rt",
    "ruby",
    "s",
    "samp",
    "section",
    "select",
    "small",
    "sound",
    "source",
    "spacer",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "textarea",
    "tfoot",
    "th",
    "thead",
    "time",
    "tr",
    "tt",
    "u",
    "ul",
    "var",
    "video",
];

const SVG_NS: &str = "http://www.w3.org/2000/svg";
const MATHML_NS: &str = "http://www.w3.org/1998/Math/MathML";
const XLINK_NS: &str = "http://www.w3.org/1999/xlink";

/// Re-serialize text, keeping known references and escaping stray `&`.
fn push_text(out: &mut String, text: &str) {
    let escaped_lt;
    let mut rest = text;
    if text.contains('<') {
        escaped_lt = text.replace('<', "&lt;");
        rest = &escaped_lt;
    }
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let semi = after.bytes().take(40).position(|b| b == b';');
        let body = semi.map(|s| &after[..s]).unwrap_or("");
        if body.starts_with('#') {
            if let Some(v) = entities::parse_numeric(body) {
                let c = entities::numeric_char(v);
                if (0x80..=0x9F).contains(&v) || c == '\u{FFFD}' {
                    out.push_str(&format!("&#x{:x};", c as u32));
                } else {
                    out.push('&');
                    out.push_str(&body.to_ascii_lowercase());
                    out.push(';');
                }
                rest = &after[body.len() + 1..];
                continue;
            }
        } else if !body.is_empty()
            && body.bytes().all(|b| b.is_ascii_alphanumeric())
            && (entities::predefined(body).is_some() || entities::html_named(body).is_some())
        {
            out.push('&');
            out.push_str(body);
            out.push(';');
            rest = &after[body.len() + 1..];
            continue;
        }
        out.push_str("&amp;");
        rest = after;
    }
    out.push_str(rest);
}

/// Re-serialize an HTML fragment (see the module docs). `base` resolves relative URLs;
/// `xhtml` says the fragment came from XML, where `<x/>` closes `x`.
pub(crate) fn normalize(html: &str, base: &str, xhtml: bool) -> String {
    let mut out = String::with_capacity(html.len() + html.len() / 8);
    let mut foreign = 0usize;
    for token in HtmlTokenizer::new(html) {
        match token {
            HtmlToken::Text(t) => push_text(&mut out, t),
            HtmlToken::Comment(c) => out.push_str(c),
            HtmlToken::Declaration => {}
            HtmlToken::CDataOpen => out.push_str("&lt;![CDATA["),
            HtmlToken::Start {
                name,
                attrs,
                self_closing,
            } => {
                let lower = name.to_ascii_lowercase();
                let opens_foreign = lower == "svg" || lower == "math";
                if opens_foreign {
                    foreign += 1;
                }
                let tag: Cow<'_, str> = if foreign > 0 {
                    Cow::Borrowed(name)
                } else {
                    Cow::Owned(lower.clone())
                };
                let mut list: Vec<(String, String)> = Vec::with_capacity(attrs.len() + 1);
                for (k, v) in &attrs {
                    let key = if foreign > 0 {
                        k.to_string()
                    } else {
                        k.to_ascii_lowercase()
                    };
                    let lkey = key.to_ascii_lowercase();
                    let mut value = match v {
                        Some(v) => entities::decode_html_entities(v).into_owned(),
                        None => key.clone(),
                    };
                    if lkey == "rel" || lkey == "type" {
                        value = value.to_lowercase();
                    }
                    if URL_ATTRS.contains(&(lower.as_str(), lkey.as_str())) {
                        value = url::safe_absolute(base, value.trim()).unwrap_or_default();
                    }
                    list.push((key, value));
                }
                // A repeated attribute: the last one wins (stable sort, then keep the last of
                // each run of equal names).
                list.reverse();
                list.sort_by_key(|(k, _)| k.to_ascii_lowercase());
                list.dedup_by(|later, earlier| later.0.eq_ignore_ascii_case(&earlier.0));
                if !xhtml && opens_foreign && !list.iter().any(|(k, _)| k == "xmlns") {
                    let ns = if lower == "svg" { SVG_NS } else { MATHML_NS };
                    list.push(("xmlns".into(), ns.into()));
                }
                if foreign > 0
                    && list.iter().any(|(k, _)| k.starts_with("xlink:"))
                    && !list
                        .iter()
                        .any(|(k, v)| k == "xmlns:xlink" && v == XLINK_NS)
                {
                    list.push(("xmlns:xlink".into(), XLINK_NS.into()));
                }
                list.sort_by_key(|(k, _)| k.to_ascii_lowercase());
                out.push('<');
                out.push_str(&tag);
                for (k, v) in &list {
                    out.push(' ');
                    out.push_str(k);
                    out.push_str("=\"");
                    out.push_str(&escape_attr(v));
                    out.push('"');
                }
                let void = VOID.contains(&lower.as_str());
                if void {
                    out.push_str(" />");
                } else {
                    out.push('>');
                    if self_closing && (xhtml || attrs.is_empty()) {
                        out.push_str("</");
                        out.push_str(&tag);
                        out.push('>');
                        if opens_foreign {
                            foreign = foreign.saturating_sub(1);
                        }
                    }
                }
            }
            HtmlToken::End { name } => {
                let lower = name.to_ascii_lowercase();
                if VOID.contains(&lower.as_str()) {
                    continue;
                }
                out.push_str("</");
                if foreign > 0 {
                    out.push_str(name);
                } else {
                    out.push_str(&lower);
                }
                out.push('>');
                if lower == "svg" || lower == "math" {
                    foreign = foreign.saturating_sub(1);
                }
            }
        }
    }
    out.trim().to_string()
}

/// Whether text that claims to be plain is in fact HTML: it must contain an end tag or an
/// entity reference, and every tag and entity in it must be ordinary HTML.
pub(crate) fn looks_like_html(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut has_end_tag = false;
    let mut has_reference = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' => {
                let mut j = i + 1;
                let closing = b.get(j) == Some(&b'/');
                if closing {
                    j += 1;
                }
                let name: String = s[j..].chars().take_while(|c| word(*c)).collect();
                if !name.is_empty() {
                    if closing && s[j + name.len()..].starts_with('>') {
                        has_end_tag = true;
                    }
                    if !HTML_ELEMENTS.contains(&name.to_lowercase().as_str()) {
                        return false;
                    }
                }
                i = j;
            }
            b'&' => {
                let rest = &s[i + 1..];
                let (numeric, body) = match rest.strip_prefix('#') {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let name: String = body.chars().take_while(|c| word(*c)).collect();
                if !name.is_empty() && body[name.len()..].starts_with(';') {
                    has_reference = true;
                    if !numeric && !entities::is_html4_name(&name) {
                        return false;
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    has_end_tag || has_reference
}

const BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// Plain text from HTML for IM and SMS: tags dropped (script and style with their content),
/// references decoded, block boundaries and runs of whitespace turned into single spaces.
/// Text that is not HTML comes through unchanged except for whitespace.
pub fn to_plain_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut skip_depth = 0usize;
    for token in HtmlTokenizer::new(html) {
        match token {
            HtmlToken::Text(t) if skip_depth == 0 => {
                text.push_str(&entities::decode_html_entities(t))
            }
            HtmlToken::Start {
                name,
                attrs,
                self_closing,
            } => {
                let lower = name.to_ascii_lowercase();
                if matches!(lower.as_str(), "script" | "style") && !self_closing {
                    skip_depth += 1;
                } else if lower == "img" {
                    if let Some((_, Some(alt))) =
                        attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case("alt"))
                    {
                        text.push(' ');
                        text.push_str(&entities::decode_html_entities(alt));
                        text.push(' ');
                    }
                } else if BLOCK.contains(&lower.as_str()) {
                    text.push(' ');
                }
            }
            HtmlToken::End { name } => {
                let lower = name.to_ascii_lowercase();
                if matches!(lower.as_str(), "script" | "style") {
                    skip_depth = skip_depth.saturating_sub(1);
                } else if BLOCK.contains(&lower.as_str()) {
                    text.push(' ');
                }
            }
            _ => {}
        }
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split(|c: char| c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(ammonia::Builder::default);

/// Make feed HTML safe to render: an allowlist of elements and attributes (ammonia's
/// defaults), no script, no event handlers, no `javascript:`/`data:` URLs, links with
/// `rel="noopener noreferrer"`.
pub fn sanitize_html(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_feed_readers() {
        assert_eq!(
            normalize("article title<br /><br/> byline<BR>", "", false),
            "article title<br /><br /> byline<br />"
        );
        assert_eq!(
            normalize("<P CLASS=x>a</P>", "", false),
            "<p class=\"x\">a</p>"
        );
        assert_eq!(
            normalize("<a title='t' href=\"/x\">y</a>", "http://h.test/a/b", false),
            "<a href=\"http://h.test/x\" title=\"t\">y</a>"
        );
        assert_eq!(
            normalize("<a href=\" /u \">x</a>", "http://h.test/", false),
            "<a href=\"http://h.test/u\">x</a>"
        );
        assert_eq!(
            normalize("<a href=\"javascript:x()\">x</a>", "http://h.test/", false),
            "<a href=\"\">x</a>"
        );
        assert_eq!(
            normalize("a & b &amp; c &bogus; &#146;", "", false),
            "a &amp; b &amp; c &amp;bogus; &#x2019;"
        );
        assert_eq!(
            normalize("<code>&lt;br /></code>", "", false),
            "<code>&lt;br /></code>"
        );
        assert_eq!(normalize("<p/>", "", false), "<p></p>");
        assert_eq!(normalize("1 < 2", "", false), "1 &lt; 2");
    }

    #[test]
    fn svg_keeps_its_case_and_namespace() {
        let html = "<svg version=\"1.1\" baseProfile=\"full\"><circle cx=\"1\" /></svg>";
        assert_eq!(
            normalize(html, "", false),
            "<svg baseProfile=\"full\" version=\"1.1\" xmlns=\"http://www.w3.org/2000/svg\"><circle cx=\"1\"></svg>"
        );
        let xhtml = "<svg xmlns=\"http://www.w3.org/2000/svg\"><a xlink:href=\"x\"><circle cx=\"1\"/></a></svg>";
        assert_eq!(
            normalize(xhtml, "", true),
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><a xlink:href=\"x\" xmlns:xlink=\"http://www.w3.org/1999/xlink\"><circle cx=\"1\"></circle></a></svg>"
        );
    }

    #[test]
    fn html_guessing() {
        assert!(looks_like_html("<b>x</b>"));
        assert!(looks_like_html("AT&amp;T"));
        assert!(!looks_like_html("1 < 2"));
        assert!(!looks_like_html("History of the <blink> tag</blink>"));
        assert!(!looks_like_html("plain"));
        assert!(!looks_like_html("&check;"));
    }

    #[test]
    fn plain_text() {
        assert_eq!(
            to_plain_text(
                "<p>Hello&nbsp;<b>world</b></p><p>again &amp; again</p><script>x()</script>"
            ),
            "Hello world again & again"
        );
        assert_eq!(to_plain_text("a<br>b"), "a b");
        assert_eq!(to_plain_text("  1 < 2  "), "1 < 2");
        assert_eq!(to_plain_text("<img alt=\"cat\" src=x>"), "cat");
    }

    #[test]
    fn sanitizer_removes_active_content() {
        let dirty = "<a href=\"javascript:alert(1)\" onclick=\"x()\">a</a><script>alert(1)</script><img src=x onerror=alert(1)>";
        let clean = sanitize_html(dirty);
        let lower = clean.to_lowercase();
        assert!(!lower.contains("<script"));
        assert!(!lower.contains("javascript:"));
        assert!(!lower.contains("onclick"));
        assert!(!lower.contains("onerror"));
    }
}
