//! From XML tokens to feed data: the element semantics of RSS 0.9x/1.0/2.0, Atom 0.3/1.0,
//! CDF and the common extension namespaces (Dublin Core, content, iTunes, Media RSS).
//!
//! All formats share one state machine, the design feedparser proved over two decades: every
//! element that carries text pushes a frame that collects its text, and its end handler pops
//! the frame and stores the value in the current context (the feed, the current item, an
//! image or text-input block, or an item's `source`, which is read and dropped). The rules
//! that decide between competing elements live in the pop: the first title wins over a media
//! title, a shallower element over a deeper one, a description becomes the content when a
//! summary came first, and so on. Text constructs are typed: plain text, escaped HTML,
//! base64, or inline XHTML, which is serialized back to markup here.
//!
//! It does not decide item identity or build the public types; `lib.rs` does.

use std::collections::HashMap;

use crate::entities;
use crate::html;
use crate::url;
use crate::xml::{Token, Tokenizer};

/// Namespace URIs (lowercased) and the prefix their elements are known by. Elements of the
/// core formats have no prefix.
const NAMESPACES: &[(&str, &str)] = &[
    ("", ""),
    ("http://backend.userland.com/rss", ""),
    ("http://blogs.law.harvard.edu/tech/rss", ""),
    ("http://purl.org/rss/1.0/", ""),
    ("http://my.netscape.com/rdf/simple/0.9/", ""),
    ("http://example.com/newformat#", ""),
    ("http://example.com/necho", ""),
    ("http://purl.org/echo/", ""),
    ("uri/of/echo/namespace#", ""),
    ("http://purl.org/pie/", ""),
    ("http://purl.org/atom/ns#", ""),
    ("http://www.w3.org/2005/atom", ""),
    ("http://purl.org/rss/1.0/modules/rss091#", ""),
    ("http://webns.net/mvcb/", "admin"),
    ("http://purl.org/rss/1.0/modules/aggregation/", "ag"),
    ("http://purl.org/rss/1.0/modules/annotate/", "annotate"),
    ("http://media.tangent.org/rss/1.0/", "audio"),
    (
        "http://backend.userland.com/blogchannelmodule",
        "blogchannel",
    ),
    ("http://creativecommons.org/ns#license", "cc"),
    ("http://web.resource.org/cc/", "cc"),
    (
        "http://cyber.law.harvard.edu/rss/creativecommonsrssmodule.html",
        "creativecommons",
    ),
    (
        "http://backend.userland.com/creativecommonsrssmodule",
        "creativecommons",
    ),
    ("http://purl.org/rss/1.0/modules/company", "co"),
    ("http://purl.org/rss/1.0/modules/content/", "content"),
    ("http://my.theinfo.org/changed/1.0/rss/", "cp"),
    ("http://purl.org/dc/elements/1.1/", "dc"),
    ("http://purl.org/dc/terms/", "dcterms"),
    ("http://purl.org/rss/1.0/modules/email/", "email"),
    ("http://purl.org/rss/1.0/modules/event/", "ev"),
    ("http://rssnamespace.org/feedburner/ext/1.0", "feedburner"),
    ("http://freshmeat.net/rss/fm/", "fm"),
    ("http://xmlns.com/foaf/0.1/", "foaf"),
    ("http://www.w3.org/2003/01/geo/wgs84_pos#", "geo"),
    ("http://www.georss.org/georss", "georss"),
    ("http://www.opengis.net/gml", "gml"),
    ("http://postneo.com/icbm/", "icbm"),
    ("http://purl.org/rss/1.0/modules/image/", "image"),
    ("http://www.itunes.com/dtds/podcast-1.0.dtd", "itunes"),
    ("http://example.com/dtds/podcast-1.0.dtd", "itunes"),
    ("http://purl.org/rss/1.0/modules/link/", "l"),
    ("http://search.yahoo.com/mrss", "media"),
    ("http://search.yahoo.com/mrss/", "media"),
    (
        "http://madskills.com/public/xml/rss/module/pingback/",
        "pingback",
    ),
    ("http://prismstandard.org/namespaces/1.2/basic/", "prism"),
    ("http://www.w3.org/1999/02/22-rdf-syntax-ns#", "rdf"),
    ("http://www.w3.org/2000/01/rdf-schema#", "rdfs"),
    ("http://purl.org/rss/1.0/modules/reference/", "ref"),
    ("http://purl.org/rss/1.0/modules/richequiv/", "reqv"),
    ("http://purl.org/rss/1.0/modules/search/", "search"),
    ("http://purl.org/rss/1.0/modules/slash/", "slash"),
    ("http://schemas.xmlsoap.org/soap/envelope/", "soap"),
    ("http://purl.org/rss/1.0/modules/servicestatus/", "ss"),
    ("http://hacks.benhammersley.com/rss/streaming/", "str"),
    ("http://purl.org/rss/1.0/modules/subscription/", "sub"),
    ("http://purl.org/rss/1.0/modules/syndication/", "sy"),
    ("http://schemas.pocketsoap.com/rss/mydescmodule/", "szf"),
    ("http://purl.org/rss/1.0/modules/taxonomy/", "taxo"),
    ("http://purl.org/rss/1.0/modules/threading/", "thr"),
    ("http://purl.org/rss/1.0/modules/textinput/", "ti"),
    (
        "http://madskills.com/public/xml/rss/module/trackback/",
        "trackback",
    ),
    ("http://wellformedweb.org/commentapi/", "wfw"),
    ("http://purl.org/rss/1.0/modules/wiki/", "wiki"),
    ("http://www.w3.org/1999/xhtml", "xhtml"),
    ("http://www.w3.org/1999/xlink", "xlink"),
    ("http://www.w3.org/xml/1998/namespace", "xml"),
    ("http://podlove.org/simple-chapters", "psc"),
];

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const XLINK_NS: &str = "http://www.w3.org/1999/xlink";
const SVG_NS: &str = "http://www.w3.org/2000/svg";
const MATHML_NS: &str = "http://www.w3.org/1998/Math/MathML";

fn known_prefix(uri: &str) -> Option<&'static str> {
    let lower = uri.to_ascii_lowercase();
    let lower = if lower.contains("backend.userland.com/rss") {
        "http://backend.userland.com/rss".to_string()
    } else {
        lower
    };
    NAMESPACES
        .iter()
        .find(|(u, _)| *u == lower)
        .map(|(_, p)| *p)
}

/// Elements whose value is a URL to resolve against the base.
const URL_ELEMENTS: &[&str] = &[
    "comments",
    "docs",
    "href",
    "icon",
    "id",
    "link",
    "logo",
    "url",
    "wfw:comment",
    "wfw:commentrss",
];

/// Elements whose value may be HTML with relative URLs in it.
const TEXT_CONSTRUCTS: &[&str] = &[
    "content",
    "copyright",
    "description",
    "info",
    "rights",
    "subtitle",
    "summary",
    "tagline",
    "title",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Version {
    #[default]
    None,
    Rss090,
    Rss091n,
    Rss091u,
    Rss092,
    Rss093,
    Rss094,
    Rss20,
    Rss,
    Rss10,
    Atom01,
    Atom02,
    Atom03,
    Atom10,
    Atom,
    Cdf,
}

impl Version {
    fn is_rss(self) -> bool {
        matches!(
            self,
            Version::Rss090
                | Version::Rss091n
                | Version::Rss091u
                | Version::Rss092
                | Version::Rss093
                | Version::Rss094
                | Version::Rss20
                | Version::Rss
                | Version::Rss10
        )
    }

    fn is_atom(self) -> bool {
        matches!(
            self,
            Version::Atom01 | Version::Atom02 | Version::Atom03 | Version::Atom10 | Version::Atom
        )
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Person {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Link {
    pub rel: String,
    pub href: Option<String>,
    pub mime: Option<String>,
    pub length: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Tag {
    pub term: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MediaContent {
    pub url: String,
    pub mime: Option<String>,
    pub length: Option<String>,
}

/// One context: the feed, an item, an image or text input block, or a `source`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ctx {
    pub title: Option<String>,
    pub link: Option<String>,
    pub id: Option<String>,
    pub summary: Option<String>,
    pub subtitle: Option<String>,
    pub content: Vec<String>,
    pub author: Option<String>,
    pub authors: Vec<Person>,
    pub language: Option<String>,
    pub published: Option<i64>,
    pub updated: Option<i64>,
    pub links: Vec<Link>,
    pub tags: Vec<Tag>,
    pub ttl: Option<String>,
    /// RSS 1.0 syndication module: `sy:updatePeriod` and `sy:updateFrequency`.
    pub update_period: Option<String>,
    pub update_frequency: Option<String>,
    pub icon: Option<String>,
    pub logo: Option<String>,
    pub href: Option<String>,
    pub itunes_image: Option<String>,
    pub media: Vec<MediaContent>,
    /// Depth at which each property was stored (items only): shallower wins.
    depths: HashMap<&'static str, usize>,
}

impl Ctx {
    fn field(&mut self, key: &str) -> Option<(&'static str, &mut Option<String>)> {
        Some(match key {
            "title" => ("title", &mut self.title),
            "link" => ("link", &mut self.link),
            "id" => ("id", &mut self.id),
            "summary" => ("summary", &mut self.summary),
            "subtitle" => ("subtitle", &mut self.subtitle),
            "author" => ("author", &mut self.author),
            "language" => ("language", &mut self.language),
            "ttl" => ("ttl", &mut self.ttl),
            "sy:updateperiod" => ("sy:updateperiod", &mut self.update_period),
            "sy:updatefrequency" => ("sy:updatefrequency", &mut self.update_frequency),
            "icon" => ("icon", &mut self.icon),
            "logo" => ("logo", &mut self.logo),
            "href" => ("href", &mut self.href),
            _ => return None,
        })
    }

    /// Overwrite a property.
    fn set(&mut self, key: &str, value: String) {
        if let Some((_, slot)) = self.field(key) {
            *slot = Some(value);
        }
    }

    /// Set a property unless it is already there.
    fn set_default(&mut self, key: &str, value: String) {
        if let Some((_, slot)) = self.field(key)
            && slot.is_none()
        {
            *slot = Some(value);
        }
    }

    fn add_tag(&mut self, term: Option<String>, label: Option<String>) {
        if term.is_none() && label.is_none() {
            return;
        }
        self.tags.push(Tag { term, label });
    }
}

/// Which context an element's data goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Feed,
    Entry,
    Image,
    TextInput,
    Source,
}

#[derive(Default, Clone)]
struct ContentParams {
    /// `None` outside a text construct.
    mime: Option<String>,
    base64: bool,
}

impl ContentParams {
    fn mime(&self) -> &str {
        self.mime.as_deref().unwrap_or("")
    }

    fn is_xhtml(&self) -> bool {
        self.mime() == "application/xhtml+xml"
    }

    fn is_xml(&self) -> bool {
        self.mime().ends_with("xml")
    }
}

struct Frame {
    name: String,
    expecting_text: bool,
    pieces: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SummaryKey {
    Summary,
    Content,
}

/// An attribute with its name lowercased (and, when its namespace is known, also under the
/// known prefix).
type Attrs = Vec<(String, String)>;

fn attr<'a>(attrs: &'a Attrs, name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn map_content_type(t: &str) -> String {
    let t = t.to_ascii_lowercase();
    match t.as_str() {
        "text" | "plain" => "text/plain".into(),
        "html" => "text/html".into(),
        "xhtml" => "application/xhtml+xml".into(),
        _ => t,
    }
}

fn is_html_type(t: &str) -> bool {
    t == "text/html" || t == "application/xhtml+xml"
}

/// Lenient base64 (whitespace and junk ignored) that must yield UTF-8.
fn decode_base64(s: &str) -> Option<String> {
    let mut bits: u32 = 0;
    let mut nbits = 0u32;
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut padding = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            _ => continue,
        };
        if padding > 0 {
            return None;
        }
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if nbits >= 6 {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Text that was UTF-8, read as Latin-1 and encoded to UTF-8 again ("Ã©" for "é").
fn repair_double_encoding(s: String) -> String {
    if s.is_ascii() || s.chars().any(|c| c as u32 > 0xFF) {
        return s;
    }
    let bytes: Vec<u8> = s.chars().map(|c| c as u8).collect();
    String::from_utf8(bytes).unwrap_or(s)
}

/// The raw result of the state machine.
#[derive(Default)]
pub(crate) struct Raw {
    pub version: Version,
    pub feed: Ctx,
    pub image: Option<Ctx>,
    pub entries: Vec<Ctx>,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    pub root: Option<String>,
}

struct Builder {
    raw: Raw,
    textinput: Ctx,
    source: Ctx,
    frames: Vec<Frame>,
    in_feed: bool,
    in_entry: bool,
    in_image: bool,
    in_textinput: bool,
    in_author: bool,
    in_contributor: bool,
    in_publisher: bool,
    in_source: bool,
    in_content: usize,
    /// Depth of the element whose content is being collected.
    content_depth: usize,
    /// Depth of a `<div>` skipped inside escaped content (its end tag is skipped too).
    skipped_divs: Vec<usize>,
    params: ContentParams,
    summary_key: Option<SummaryKey>,
    has_content: bool,
    guid_is_link: bool,
    is_entry_link: bool,
    title_depth: Option<usize>,
    depth: usize,
    base: String,
    lang: Option<String>,
    base_stack: Vec<String>,
    lang_stack: Vec<Option<String>>,
    /// Namespace declarations in scope: prefix to the URIs declared for it, innermost last.
    ns: HashMap<String, Vec<String>>,
    /// The prefixes each open element declared, to undo at its end.
    ns_declared: Vec<Vec<String>>,
    /// For each open element: the name it is known by and its name as written.
    element_keys: Vec<(String, String)>,
}

pub(crate) struct Options {
    pub base: String,
    pub lang: Option<String>,
}

pub(crate) fn build(text: &str, opts: Options) -> Raw {
    let mut b = Builder {
        raw: Raw::default(),
        textinput: Ctx::default(),
        source: Ctx::default(),
        frames: Vec::new(),
        in_feed: false,
        in_entry: false,
        in_image: false,
        in_textinput: false,
        in_author: false,
        in_contributor: false,
        in_publisher: false,
        in_source: false,
        in_content: 0,
        content_depth: 0,
        skipped_divs: Vec::new(),
        params: ContentParams::default(),
        summary_key: None,
        has_content: false,
        guid_is_link: false,
        is_entry_link: false,
        title_depth: None,
        depth: 0,
        base: opts.base,
        lang: None,
        base_stack: Vec::new(),
        lang_stack: Vec::new(),
        ns: HashMap::new(),
        ns_declared: Vec::new(),
        element_keys: Vec::new(),
    };
    if let Some(lang) = opts.lang.filter(|l| !l.is_empty()) {
        let lang = lang.replace('_', "-");
        b.raw.feed.language = Some(lang.clone());
        b.lang = Some(lang);
    }
    let mut tokens = Tokenizer::new(text);
    for token in tokens.by_ref() {
        match token {
            Token::Start { name, attrs } => b.start(name, attrs),
            // The tokenizer keeps tags balanced, so the stack of open elements says which.
            Token::End { .. } => b.end(),
            Token::Text(t) => b.text(&t),
        }
    }
    let mut raw = b.raw;
    let mut errors = tokens.errors;
    errors.append(&mut raw.errors);
    raw.errors = errors;
    raw.notes = tokens.notes;
    if let Some(doctype) = tokens.doctype
        && doctype.to_ascii_lowercase().contains("netscape")
        && raw.version.is_rss()
    {
        raw.version = Version::Rss091n;
    }
    raw
}

impl Builder {
    fn error(&mut self, msg: String) {
        if self.raw.errors.len() < 8 && !self.raw.errors.contains(&msg) {
            self.raw.errors.push(msg);
        }
    }

    // ---- namespaces -------------------------------------------------------------------

    fn lookup_ns(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NS);
        }
        self.ns
            .get(prefix)
            .and_then(|uris| uris.last())
            .map(String::as_str)
    }

    fn track_namespace(&mut self, prefix: &str, uri: &str) {
        let lower = uri.to_ascii_lowercase();
        if self.raw.version == Version::None {
            if prefix.is_empty() && lower == "http://my.netscape.com/rdf/simple/0.9/" {
                self.raw.version = Version::Rss090;
            } else if lower == "http://purl.org/rss/1.0/" {
                self.raw.version = Version::Rss10;
            } else if lower == "http://www.w3.org/2005/atom" {
                self.raw.version = Version::Atom10;
            }
        }
    }

    /// The name an element is known by (`title`, `dc:creator`, `itunes:author`) and its
    /// namespace URI.
    fn element_key(&mut self, qname: &str) -> (String, Option<String>) {
        let (given, local) = match qname.split_once(':') {
            Some((p, l)) if !p.is_empty() && !l.is_empty() => (Some(p), l),
            _ => (None, qname),
        };
        let uri = match given {
            Some(p) => {
                let u = self.lookup_ns(p).map(str::to_string);
                if u.is_none() {
                    self.error(format!("undeclared namespace prefix in <{qname}>"));
                }
                u
            }
            None => self
                .lookup_ns("")
                .filter(|u| !u.is_empty())
                .map(str::to_string),
        };
        let prefix = match uri.as_deref().and_then(known_prefix) {
            Some(p) => p.to_string(),
            None => given.unwrap_or("").to_ascii_lowercase(),
        };
        let local = local.to_ascii_lowercase();
        let key = if prefix.is_empty() {
            local
        } else {
            format!("{prefix}:{local}")
        };
        (key, uri)
    }

    fn attrs(&mut self, raw: &[(&str, std::borrow::Cow<'_, str>)]) -> Attrs {
        let mut out = Attrs::with_capacity(raw.len());
        for (name, value) in raw {
            if *name == "xmlns" || name.starts_with("xmlns:") {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            let value = if lower == "rel" || lower == "type" {
                value.to_lowercase()
            } else {
                value.to_string()
            };
            if let Some((p, l)) = name.split_once(':') {
                match self.lookup_ns(p).map(str::to_string) {
                    Some(uri) => {
                        if let Some(known) = known_prefix(&uri).filter(|k| !k.is_empty()) {
                            let canonical = format!("{known}:{}", l.to_ascii_lowercase());
                            if canonical != lower {
                                out.push((canonical, value.clone()));
                            }
                        }
                    }
                    None => self.error(format!("undeclared namespace prefix in attribute {name}")),
                }
            }
            out.push((lower, value));
        }
        out
    }

    // ---- frames -----------------------------------------------------------------------

    fn push(&mut self, name: &str, expecting_text: bool) {
        self.frames.push(Frame {
            name: name.to_string(),
            expecting_text,
            pieces: Vec::new(),
        });
    }

    fn which(&self) -> Which {
        if self.in_source {
            Which::Source
        } else if self.in_image && self.raw.image.is_some() {
            Which::Image
        } else if self.in_textinput {
            Which::TextInput
        } else if self.in_entry && !self.raw.entries.is_empty() {
            Which::Entry
        } else {
            Which::Feed
        }
    }

    fn ctx(&mut self, which: Which) -> &mut Ctx {
        match which {
            Which::Feed => &mut self.raw.feed,
            Which::Entry => match self.raw.entries.last_mut() {
                Some(e) => e,
                None => &mut self.raw.feed,
            },
            Which::Image => self.raw.image.get_or_insert_with(Ctx::default),
            Which::TextInput => &mut self.textinput,
            Which::Source => &mut self.source,
        }
    }

    fn context(&mut self) -> &mut Ctx {
        let w = self.which();
        self.ctx(w)
    }

    fn push_content(&mut self, tag: &str, attrs: &Attrs, default_type: &str, expecting_text: bool) {
        self.in_content += 1;
        self.content_depth = self.depth;
        let mime = map_content_type(attr(attrs, "type").unwrap_or(default_type));
        let base64 = attr(attrs, "mode") == Some("base64")
            || !(mime.starts_with("text/") || mime.ends_with("+xml") || mime.ends_with("/xml"));
        self.params = ContentParams {
            mime: Some(mime),
            base64,
        };
        self.push(tag, expecting_text);
    }

    fn pop_content(&mut self, tag: &str) -> Option<String> {
        let value = self.pop(tag);
        self.in_content = self.in_content.saturating_sub(1);
        self.params = ContentParams::default();
        value
    }

    /// Pop the frame for `element` (if it is on top), post-process its text and store it.
    fn pop(&mut self, element: &str) -> Option<String> {
        if self.frames.last().is_none_or(|f| f.name != element) {
            return None;
        }
        let frame = self.frames.pop()?;
        let mut pieces = frame.pieces;
        if self.raw.version == Version::Atom10 && self.params.is_xhtml() {
            strip_wrapping_div(&mut pieces);
        }
        let mut output = pieces.concat().trim().to_string();
        if !frame.expecting_text {
            return Some(output);
        }
        if self.params.base64
            && let Some(decoded) = decode_base64(&output)
        {
            output = decoded;
        }
        if URL_ELEMENTS.contains(&element)
            && !output.is_empty()
            && (element != "id" || self.guid_is_link)
        {
            output = url::resolve(&self.base, &output);
        }
        if !self.raw.version.is_atom()
            && self.params.mime() == "text/plain"
            && html::looks_like_html(&output)
        {
            self.params.mime = Some("text/html".into());
        }
        let text_construct = TEXT_CONSTRUCTS.contains(&element);
        let mime = self.params.mime.as_deref().unwrap_or("text/html");
        let htmlish = is_html_type(mime);
        output = entities::fix_cp1252(repair_double_encoding(output));
        if text_construct {
            output = if htmlish {
                html::normalize(&output, &self.base, mime == "application/xhtml+xml")
            } else {
                entities::escape_text(&output).into_owned()
            };
        }
        if matches!(
            element,
            "category" | "tags" | "itunes:keywords" | "media:keywords"
        ) {
            return Some(output);
        }
        if element == "title" && self.title_depth.is_some_and(|d| d <= self.depth) {
            return Some(output);
        }
        let depth = self.depth;
        if self.in_entry && !self.in_source && !self.raw.entries.is_empty() {
            let in_image = self.in_image;
            let entry = self.ctx(Which::Entry);
            match element {
                "content" => entry.content.push(output.clone()),
                "link" => {
                    if !in_image {
                        let fixed = output.replace("&amp;", "&");
                        if !fixed.is_empty()
                            && let Some(l) = entry.links.last_mut()
                        {
                            l.href = Some(fixed.clone());
                        }
                        entry.link = Some(fixed);
                    }
                }
                _ => {
                    let key = if element == "description" {
                        "summary"
                    } else {
                        element
                    };
                    let name = entry.field(key).map(|(name, _)| name);
                    if let Some(name) = name
                        && entry.depths.get(name).is_none_or(|d| depth <= *d)
                    {
                        entry.set(name, output.clone());
                        entry.depths.insert(name, depth);
                    }
                }
            }
        } else if self.in_feed || self.in_source {
            let ctx = self.context();
            let key = if element == "description" {
                "subtitle"
            } else {
                element
            };
            if key == "content" {
                ctx.content.push(output.clone());
            } else {
                ctx.set(key, output.clone());
            }
            if key == "link"
                && let Some(l) = ctx.links.last_mut()
            {
                l.href = Some(output.clone());
            }
        }
        Some(output)
    }

    // ---- events -----------------------------------------------------------------------

    fn text(&mut self, text: &str) {
        if let Some(frame) = self.frames.last_mut() {
            if self.in_content > 0 && self.params.is_xhtml() {
                frame.pieces.push(entities::escape_text(text).into_owned());
            } else {
                frame.pieces.push(text.to_string());
            }
        }
    }

    fn start(&mut self, qname: &str, raw_attrs: Vec<(&str, std::borrow::Cow<'_, str>)>) {
        self.depth += 1;
        // Namespace declarations first: they apply to the element itself.
        let mut declared = Vec::new();
        let mut xlink_decls = Vec::new();
        for (name, value) in &raw_attrs {
            if *name == "xmlns" {
                self.ns
                    .entry(String::new())
                    .or_default()
                    .push(value.to_string());
                declared.push(String::new());
                if !value.is_empty() {
                    self.track_namespace("", value);
                }
            } else if let Some(p) = name.strip_prefix("xmlns:") {
                self.ns
                    .entry(p.to_string())
                    .or_default()
                    .push(value.to_string());
                declared.push(p.to_string());
                self.track_namespace(p, value);
                if value.as_ref() == XLINK_NS {
                    xlink_decls.push((name.to_string(), value.to_string()));
                }
            }
        }
        self.ns_declared.push(declared);
        let attrs = self.attrs(&raw_attrs);
        let (key, uri) = self.element_key(qname);
        if self.raw.root.is_none() {
            self.raw.root = Some(key.clone());
        }

        // xml:base and xml:lang.
        if let Some(b) = attr(&attrs, "xml:base").or_else(|| attr(&attrs, "base")) {
            self.base = if self.base.is_empty() {
                url::resolve("", b)
            } else {
                url::safe_absolute(&self.base, b).unwrap_or_else(|| self.base.clone())
            };
        }
        let lang = match attr(&attrs, "xml:lang").or_else(|| attr(&attrs, "lang")) {
            Some("") => None,
            Some(l) => Some(l.to_string()),
            None => self.lang.clone(),
        };
        if let Some(l) = &lang
            && matches!(key.as_str(), "feed" | "rss" | "rdf:rdf")
        {
            self.raw.feed.language = Some(l.replace('_', "-"));
        }
        self.lang = lang.clone();
        self.base_stack.push(self.base.clone());
        self.lang_stack.push(lang);
        self.element_keys.push((key.clone(), qname.to_string()));

        // Inside a text construct, child elements are markup, not feed elements.
        if self.in_content > 0 && self.depth > self.content_depth {
            if !self.params.is_xml() {
                if key == "div" || key == "xhtml:div" {
                    self.skipped_divs.push(self.depth);
                    return;
                }
                self.params.mime = Some("application/xhtml+xml".into());
            }
            self.serialize_start(qname, &raw_attrs, uri.as_deref(), xlink_decls);
            return;
        }

        let (prefix, local) = match key.split_once(':') {
            Some((p, l)) => (p, l),
            None => ("", key.as_str()),
        };
        if prefix.is_empty() && !matches!(local, "title" | "link" | "description" | "name") {
            self.in_textinput = false;
        }
        if prefix.is_empty()
            && !matches!(
                local,
                "title" | "link" | "description" | "url" | "href" | "width" | "height"
            )
        {
            self.in_image = false;
        }
        self.dispatch_start(&key, &attrs);
    }

    fn serialize_start(
        &mut self,
        qname: &str,
        raw_attrs: &[(&str, std::borrow::Cow<'_, str>)],
        uri: Option<&str>,
        xlink_decls: Vec<(String, String)>,
    ) {
        let local = qname.rsplit(':').next().unwrap_or(qname);
        let mut s = String::with_capacity(32);
        s.push('<');
        s.push_str(local);
        for (name, value) in raw_attrs {
            if *name == "xmlns" || name.starts_with("xmlns:") {
                continue;
            }
            s.push(' ');
            s.push_str(name);
            s.push_str("=\"");
            s.push_str(&entities::escape_attr(value));
            s.push('"');
        }
        for (name, value) in xlink_decls {
            s.push_str(&format!(" {name}=\"{value}\""));
        }
        let lower = local.to_ascii_lowercase();
        if (lower == "svg" && uri == Some(SVG_NS)) || (lower == "math" && uri == Some(MATHML_NS)) {
            s.push_str(&format!(" xmlns=\"{}\"", uri.unwrap_or_default()));
        }
        s.push('>');
        if let Some(frame) = self.frames.last_mut() {
            frame.pieces.push(s);
        }
    }

    fn end(&mut self) {
        let Some((key, qname)) = self.element_keys.pop() else {
            return;
        };
        if self.in_content > 0 && self.depth > self.content_depth {
            if self.skipped_divs.last() == Some(&self.depth) {
                self.skipped_divs.pop();
            } else {
                let local = qname.rsplit(':').next().unwrap_or(&qname);
                if !self.params.is_xml() {
                    self.params.mime = Some("application/xhtml+xml".into());
                }
                if let Some(frame) = self.frames.last_mut() {
                    frame.pieces.push(format!("</{local}>"));
                }
            }
        } else {
            self.dispatch_end(&key);
        }
        self.base_stack.pop();
        if let Some(b) = self.base_stack.last()
            && !b.is_empty()
        {
            self.base = b.clone();
        }
        self.lang_stack.pop();
        if let Some(l) = self.lang_stack.last() {
            self.lang = l.clone();
        }
        for prefix in self.ns_declared.pop().unwrap_or_default() {
            if let Some(uris) = self.ns.get_mut(&prefix) {
                uris.pop();
            }
        }
        self.depth = self.depth.saturating_sub(1);
    }

    // ---- element handlers --------------------------------------------------------------

    fn dispatch_start(&mut self, key: &str, attrs: &Attrs) {
        let expecting = self.in_feed || self.in_entry || self.in_source;
        match key {
            "rss" => {
                if !self.raw.version.is_rss() {
                    let v = attr(attrs, "version").unwrap_or("");
                    self.raw.version = match v {
                        "0.91" => Version::Rss091u,
                        "0.92" => Version::Rss092,
                        "0.93" => Version::Rss093,
                        "0.94" => Version::Rss094,
                        v if v.starts_with("2.") => Version::Rss20,
                        _ => Version::Rss,
                    };
                }
            }
            "channel" => {
                self.in_feed = true;
                if self.raw.version == Version::None && self.depth == 1 {
                    self.raw.version = Version::Cdf;
                }
                self.cdf_common(attrs);
            }
            "feed" => {
                self.in_feed = true;
                if self.raw.version == Version::None {
                    self.raw.version = match attr(attrs, "version") {
                        Some("0.1") => Version::Atom01,
                        Some("0.2") => Version::Atom02,
                        Some("0.3") => Version::Atom03,
                        _ => Version::Atom,
                    };
                }
            }
            "image" => {
                if !self.in_entry && self.raw.image.is_none() {
                    self.raw.image = Some(Ctx::default());
                }
                self.in_image = true;
                self.title_depth = None;
                self.push("image", false);
            }
            "textinput" => {
                self.in_textinput = true;
                self.title_depth = None;
                self.push("textinput", false);
            }
            "author" | "managingeditor" | "dc:author" | "dc:creator" | "itunes:author" => {
                self.in_author = true;
                self.push("author", true);
                self.context().authors.push(Person::default());
            }
            "contributor" => {
                self.in_contributor = true;
                self.push("contributor", false);
            }
            "dc:contributor" => {
                self.in_contributor = true;
                self.push("name", false);
            }
            "name" | "itunes:name" => self.push("name", false),
            "email" | "itunes:email" => self.push("email", false),
            "url" | "homepage" | "uri" => self.push("href", true),
            "subtitle" | "tagline" | "itunes:subtitle" => {
                self.push_content("subtitle", attrs, "text/plain", true)
            }
            "rights" | "copyright" | "dc:rights" => {
                self.push_content("rights", attrs, "text/plain", true)
            }
            "item" | "entry" => {
                self.raw.entries.push(Ctx::default());
                self.push("item", false);
                self.in_entry = true;
                self.guid_is_link = false;
                self.title_depth = None;
                if let Some(about) = attr(attrs, "rdf:about") {
                    let about = about.to_string();
                    self.ctx(Which::Entry).id = Some(about);
                }
                self.cdf_common(attrs);
            }
            "language" | "dc:language" => self.push("language", true),
            "webmaster" | "dc:publisher" => self.push("publisher", true),
            "itunes:owner" => {
                self.in_publisher = true;
                self.push("publisher", false);
            }
            "published" | "issued" | "pubdate" | "dcterms:issued" => self.push("published", true),
            "updated" | "modified" | "lastbuilddate" | "dc:date" | "dcterms:modified" => {
                self.push("updated", true)
            }
            "category" | "keywords" | "dc:subject" | "media:category" => {
                let term = attr(attrs, "term").map(str::to_string);
                let label = attr(attrs, "label").map(str::to_string);
                self.context().add_tag(term, label);
                self.push("category", true);
            }
            "itunes:category" => {
                let term = attr(attrs, "text").map(str::to_string);
                self.context().add_tag(term, None);
                self.push("category", true);
            }
            "link" => self.start_link(attrs, expecting),
            "guid" | "id" => {
                self.guid_is_link =
                    attr(attrs, "ispermalink").is_none_or(|v| v.eq_ignore_ascii_case("true"));
                self.push("id", true);
            }
            "title" | "dc:title" | "media:title" => {
                self.push_content("title", attrs, "text/plain", expecting);
            }
            "description" | "dc:description" | "media:description" => {
                if self.context().summary.is_some() && !self.has_content {
                    self.summary_key = Some(SummaryKey::Content);
                    self.start_content(attrs);
                } else {
                    // Media RSS descriptions are plain text unless they say otherwise.
                    let default = if key == "media:description" {
                        "text/plain"
                    } else {
                        "text/html"
                    };
                    self.push_content("description", attrs, default, expecting);
                }
            }
            "abstract" => self.push_content("description", attrs, "text/plain", expecting),
            "info" | "feedburner:browserfriendly" => {
                self.push_content("info", attrs, "text/plain", true)
            }
            "summary" | "itunes:summary" => {
                if self.context().summary.is_some() && !self.has_content {
                    self.summary_key = Some(SummaryKey::Content);
                    self.start_content(attrs);
                } else {
                    self.summary_key = Some(SummaryKey::Summary);
                    self.push_content("summary", attrs, "text/plain", true);
                }
            }
            "enclosure" => {
                let href = attr(attrs, "url")
                    .or_else(|| attr(attrs, "href"))
                    .map(|h| url::resolve(&self.base, h.trim()));
                let link = Link {
                    rel: "enclosure".into(),
                    href,
                    mime: attr(attrs, "type").map(str::to_string),
                    length: attr(attrs, "length").map(str::to_string),
                };
                self.context().links.push(link);
            }
            "source" => {
                self.push("source", true);
                self.in_source = true;
                self.title_depth = None;
            }
            "content" => self.start_content(attrs),
            "body" | "xhtml:body" => {
                self.push_content("content", attrs, "application/xhtml+xml", true)
            }
            "content:encoded" | "fullitem" => {
                self.has_content = true;
                self.push_content("content", attrs, "text/html", true);
            }
            "itunes:image" | "itunes:link" => {
                self.push("itunes:image", false);
                if let Some(h) = attr(attrs, "href").or_else(|| attr(attrs, "url")) {
                    let h = url::resolve(&self.base, h);
                    self.context().itunes_image = Some(h);
                }
            }
            "media:content" => {
                if let Some(u) = attr(attrs, "url") {
                    let m = MediaContent {
                        url: url::resolve(&self.base, u.trim()),
                        mime: attr(attrs, "type").map(str::to_string),
                        length: attr(attrs, "filesize").map(str::to_string),
                    };
                    self.context().media.push(m);
                }
            }
            "media:group" | "cloud" => {}
            "media:thumbnail" => self.push("url", true),
            "width" | "height" => self.push(key, false),
            _ => self.push(key, true),
        }
    }

    fn dispatch_end(&mut self, key: &str) {
        match key {
            "channel" | "feed" => self.in_feed = false,
            "image" => {
                self.pop("image");
                self.in_image = false;
            }
            "textinput" => {
                self.pop("textinput");
                self.in_textinput = false;
            }
            "author" | "managingeditor" | "dc:author" | "dc:creator" | "itunes:author" => {
                self.pop("author");
                self.in_author = false;
                self.sync_author();
            }
            "contributor" => {
                self.pop("contributor");
                self.in_contributor = false;
            }
            "dc:contributor" => {
                self.pop("name");
                self.in_contributor = false;
            }
            "name" | "itunes:name" => {
                let v = self.pop("name");
                self.save_person(v, |p, v| p.name = Some(v));
            }
            "email" | "itunes:email" => {
                let v = self.pop("email");
                self.save_person(v, |p, v| p.email = Some(v));
            }
            "url" | "homepage" | "uri" => {
                self.pop("href");
            }
            "subtitle" | "tagline" | "itunes:subtitle" => {
                self.pop_content("subtitle");
            }
            "rights" | "copyright" | "dc:rights" => {
                self.pop_content("rights");
            }
            "item" | "entry" => {
                self.pop("item");
                self.in_entry = false;
                self.has_content = false;
            }
            "language" | "dc:language" => {
                if let Some(l) = self.pop("language") {
                    self.lang = Some(l);
                }
            }
            "webmaster" | "dc:publisher" => {
                self.pop("publisher");
            }
            "itunes:owner" => {
                self.pop("publisher");
                self.in_publisher = false;
            }
            "published" | "issued" | "pubdate" | "dcterms:issued" => {
                if let Some(v) = self.pop("published") {
                    self.context().published = crate::date::parse_date(&v);
                }
            }
            "updated" | "modified" | "lastbuilddate" | "dc:date" | "dcterms:modified" => {
                if let Some(v) = self.pop("updated") {
                    self.context().updated = crate::date::parse_date(&v);
                }
            }
            "category" | "keywords" | "dc:subject" | "media:category" | "itunes:category" => {
                let Some(value) = self.pop("category").filter(|v| !v.is_empty()) else {
                    return;
                };
                let value = entities::decode_html_entities(&value).into_owned();
                let ctx = self.context();
                match ctx.tags.last_mut() {
                    Some(t) if t.term.is_none() => t.term = Some(value),
                    _ => ctx.add_tag(Some(value), None),
                }
            }
            "itunes:keywords" | "media:keywords" => {
                if let Some(v) = self.pop(key) {
                    let ctx = self.context();
                    for term in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        ctx.add_tag(Some(term.to_string()), None);
                    }
                }
            }
            "link" => {
                self.pop("link");
                self.is_entry_link = false;
            }
            "guid" | "id" => {
                let value = self.pop("id");
                let is_link = self.guid_is_link;
                let is_guid = key == "guid";
                let ctx = self.context();
                // An RSS permalink guid is the item's link when it has none. (Atom ids are
                // often tag: URIs and never links.)
                if let Some(v) = value
                    && is_guid
                    && is_link
                    && matches!(url::scheme_of(&v).as_deref(), Some("http" | "https"))
                {
                    ctx.set_default("link", v);
                }
            }
            "title" | "dc:title" => self.end_title(),
            "media:title" => {
                let saved = self.title_depth;
                self.end_title();
                self.title_depth = saved;
            }
            "description" | "dc:description" | "media:description" | "abstract" => {
                if self.summary_key == Some(SummaryKey::Content) {
                    self.end_content();
                } else {
                    self.pop_content("description");
                }
                self.summary_key = None;
            }
            "info" | "feedburner:browserfriendly" => {
                self.pop_content("info");
            }
            "summary" | "itunes:summary" => {
                if self.summary_key == Some(SummaryKey::Content) {
                    self.end_content();
                } else {
                    self.pop_content("summary");
                }
                self.summary_key = None;
            }
            "source" => {
                self.in_source = false;
                self.pop("source");
                self.source = Ctx::default();
            }
            "content" | "body" | "xhtml:body" | "content:encoded" | "fullitem" => {
                self.end_content()
            }
            "itunes:image" | "itunes:link" => {
                self.pop("itunes:image");
            }
            "media:content" | "media:group" | "cloud" | "enclosure" => {}
            "media:thumbnail" => {
                self.pop("url");
            }
            _ => {
                self.pop(key);
            }
        }
    }

    fn cdf_common(&mut self, attrs: &Attrs) {
        if let Some(lastmod) = attr(attrs, "lastmod") {
            self.context().updated = crate::date::parse_date(lastmod);
        }
        if let Some(href) = attr(attrs, "href") {
            let href = href.to_string();
            self.start_link(&Vec::new(), self.in_feed || self.in_entry || self.in_source);
            if let Some(f) = self.frames.last_mut().filter(|f| f.name == "link") {
                f.pieces = vec![href];
            }
            self.pop("link");
            self.is_entry_link = false;
        }
    }

    fn start_link(&mut self, attrs: &Attrs, expecting: bool) {
        let rel = attr(attrs, "rel").unwrap_or("alternate").to_string();
        let mime = attr(attrs, "type").map(str::to_string).unwrap_or_else(|| {
            if rel == "self" {
                "application/atom+xml".into()
            } else {
                "text/html".into()
            }
        });
        let href = attr(attrs, "href")
            .or_else(|| attr(attrs, "url"))
            .or_else(|| attr(attrs, "uri"))
            .map(|h| url::resolve(&self.base, h));
        if rel == "alternate" && is_html_type(&map_content_type(&mime)) {
            self.is_entry_link = true;
        }
        let link = Link {
            rel,
            href: href.clone(),
            mime: Some(mime),
            length: attr(attrs, "length").map(str::to_string),
        };
        let skip = self.in_entry && self.in_image;
        let is_entry_link = self.is_entry_link;
        let ctx = self.context();
        if !skip {
            ctx.links.push(link);
        }
        match href {
            Some(h) => {
                if is_entry_link {
                    ctx.link = Some(h);
                }
            }
            None => self.push("link", expecting),
        }
    }

    fn start_content(&mut self, attrs: &Attrs) {
        self.has_content = true;
        self.push_content("content", attrs, "text/plain", true);
    }

    fn end_content(&mut self) {
        let mime = map_content_type(self.params.mime());
        let copy_to_summary = mime == "text/plain" || is_html_type(&mime);
        let value = self.pop_content("content");
        if copy_to_summary && let Some(v) = value {
            let w = self.which();
            if w != Which::Source {
                self.ctx(w).set_default("summary", v);
            }
        }
    }

    fn end_title(&mut self) {
        let value = self.pop_content("title");
        if value.is_some_and(|v| !v.is_empty()) {
            self.title_depth = Some(self.depth);
        }
    }

    fn save_person(&mut self, value: Option<String>, set: impl FnOnce(&mut Person, String)) {
        let Some(value) = value else { return };
        if self.in_publisher || !self.in_author {
            return;
        }
        let ctx = self.context();
        if ctx.authors.is_empty() {
            ctx.authors.push(Person::default());
        }
        if let Some(p) = ctx.authors.last_mut() {
            set(p, value);
        }
    }

    /// An author element with name/email children becomes "name (email)".
    fn sync_author(&mut self) {
        let ctx = self.context();
        let Some(p) = ctx.authors.last() else { return };
        let name = p.name.clone().filter(|n| !n.is_empty());
        let email = p.email.clone().filter(|e| !e.is_empty());
        let author = match (name, email) {
            (Some(n), Some(e)) => Some(format!("{n} ({e})")),
            (Some(n), None) => Some(n),
            (None, Some(e)) => Some(e),
            (None, None) => None,
        };
        if let Some(a) = author {
            ctx.author = Some(a);
        }
    }
}

/// Atom 1.0 XHTML content comes wrapped in one `<div>`; the wrapper is not content.
fn strip_wrapping_div(pieces: &mut Vec<String>) {
    while pieces.len() > 1 && pieces.last().is_some_and(|p| p.trim().is_empty()) {
        pieces.pop();
    }
    let leading = pieces.iter().take_while(|p| p.trim().is_empty()).count();
    let leading = leading.min(pieces.len().saturating_sub(1));
    pieces.drain(..leading);
    let first_is_div = pieces
        .first()
        .is_some_and(|p| p == "<div>" || p.starts_with("<div "));
    if !first_is_div || pieces.last().map(String::as_str) != Some("</div>") || pieces.len() < 2 {
        return;
    }
    let mut depth = 0i64;
    for piece in &pieces[..pieces.len() - 1] {
        if piece.starts_with("</") {
            depth -= 1;
            if depth == 0 {
                return;
            }
        } else if piece.starts_with('<') && !piece.ends_with("/>") {
            depth += 1;
        }
    }
    pieces.pop();
    pieces.remove(0);
}
