//! A recovering XML tokenizer.
//!
//! It reports the first well-formedness problems it meets (which make a document "bozo") and
//! keeps going the way a browser or an SGML parser would: an unescaped `&` or `<` is text, an
//! HTML entity such as `&eacute;` is decoded, an end tag closes whatever it matches further up
//! (or is ignored), and everything still open at the end is closed. The token stream it
//! returns is therefore always balanced, whatever the input.
//!
//! It never expands an entity declared in a DTD: the internal subset is read only to learn
//! which names were declared (a reference to one is kept as written and noted), and external
//! DTDs are never looked at. There is no way to make it allocate more than a small multiple of
//! its input.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};

use crate::entities;

/// At most this many problems are recorded per document; the first ones explain the rest.
const MAX_ERRORS: usize = 8;

/// Attributes beyond this many on one tag are dropped (and the document is bozo): no real
/// feed comes close, and it bounds the work per tag.
const MAX_ATTRS: usize = 256;

/// An end tag closes an element at most this far up the stack; further is treated as a
/// stray end tag. Real mismatches are a few levels deep, and this keeps hostile nesting
/// linear.
const MAX_CLOSE_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token<'a> {
    /// A start tag with its attributes (names as written, values with references decoded).
    Start {
        name: &'a str,
        attrs: Vec<(&'a str, Cow<'a, str>)>,
    },
    /// An end tag; the tokenizer emits one for every start tag, explicit or not.
    End { name: &'a str },
    /// Character data with references decoded.
    Text(Cow<'a, str>),
}

pub(crate) struct Tokenizer<'a> {
    src: &'a str,
    pos: usize,
    doc_start: usize,
    stack: Vec<&'a str>,
    pending: VecDeque<Token<'a>>,
    root_seen: bool,
    root_closed: bool,
    finished: bool,
    declared_entities: HashSet<String>,
    /// The DOCTYPE declaration, if any (RSS 0.91 is told apart by it).
    pub doctype: Option<&'a str>,
    /// Well-formedness errors (bozo).
    pub errors: Vec<String>,
    /// Things worth telling that do not make the document ill-formed.
    pub notes: Vec<String>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (c as u32) >= 0x80
}

fn is_name_char(b: u8) -> bool {
    !matches!(
        b,
        b' ' | b'\t'
            | b'\n'
            | b'\r'
            | b'='
            | b'>'
            | b'<'
            | b'/'
            | b'"'
            | b'\''
            | b'&'
            | b'?'
            | b'!'
    )
}

fn is_xml_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

impl<'a> Tokenizer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        let doc_start = if src.starts_with('\u{FEFF}') { 3 } else { 0 };
        Tokenizer {
            src,
            pos: doc_start,
            doc_start,
            stack: Vec::new(),
            pending: VecDeque::new(),
            root_seen: false,
            root_closed: false,
            finished: false,
            declared_entities: HashSet::new(),
            doctype: None,
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn line_at(&self, pos: usize) -> usize {
        let end = pos.min(self.src.len());
        1 + self.src.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn error(&mut self, pos: usize, msg: impl Into<String>) {
        if self.errors.len() < MAX_ERRORS {
            let line = self.line_at(pos);
            self.errors.push(format!("line {line}: {}", msg.into()));
        }
    }

    fn note(&mut self, msg: String) {
        if self.notes.len() < MAX_ERRORS && !self.notes.contains(&msg) {
            self.notes.push(msg);
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn starts_with(&self, at: usize, s: &str) -> bool {
        self.bytes()
            .get(at..)
            .is_some_and(|b| b.starts_with(s.as_bytes()))
    }

    fn find_from(&self, at: usize, needle: &str) -> Option<usize> {
        self.src.get(at..)?.find(needle).map(|i| i + at)
    }

    /// Decode character and entity references in `raw` (text or an attribute value).
    fn decode(&mut self, raw: &'a str, at: usize, attribute: bool) -> Cow<'a, str> {
        let needs_check = raw
            .bytes()
            .any(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF);
        if needs_check && let Some(bad) = raw.chars().find(|c| !is_xml_char(*c)) {
            self.error(at, format!("invalid character U+{:04X}", bad as u32));
        }
        let normalize_ws = attribute && raw.contains(['\t', '\n', '\r']);
        if !raw.contains('&') && !normalize_ws {
            return Cow::Borrowed(raw);
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let semi = after.bytes().take(64).position(|b| b == b';');
            let body = semi.map(|s| &after[..s]);
            match body {
                Some(body) if body.starts_with('#') => {
                    if body.starts_with("#X") {
                        self.error(at, "character reference with uppercase X");
                    }
                    match entities::parse_numeric(body).map(char::from_u32) {
                        Some(Some(c)) if is_xml_char(c) => out.push(c),
                        Some(_) => {
                            self.error(at, format!("reference to invalid character &{body};"));
                            out.push('\u{FFFD}');
                        }
                        None => {
                            self.error(at, format!("malformed character reference &{body};"));
                            out.push('&');
                            rest = after;
                            continue;
                        }
                    }
                    rest = &after[body.len() + 1..];
                }
                Some(name)
                    if !name.is_empty()
                        && name.chars().next().is_some_and(is_name_start)
                        && name.bytes().all(is_name_char) =>
                {
                    if let Some(c) = entities::predefined(name) {
                        out.push(c);
                    } else if self.declared_entities.contains(name) {
                        match entities::html_named(name) {
                            Some(v) => out.push_str(v),
                            None => {
                                self.note(format!(
                                    "entity &{name}; is declared in the DTD and was left unexpanded"
                                ));
                                out.push('&');
                                out.push_str(name);
                                out.push(';');
                            }
                        }
                    } else if let Some(v) = entities::html_named(name) {
                        self.error(at, format!("undefined entity &{name}; (decoded as HTML)"));
                        out.push_str(v);
                    } else {
                        self.error(at, format!("undefined entity &{name};"));
                        out.push('&');
                        out.push_str(name);
                        out.push(';');
                    }
                    rest = &after[name.len() + 1..];
                }
                _ => {
                    self.error(at, "unescaped &");
                    out.push('&');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        if normalize_ws {
            out = out.replace(['\t', '\n', '\r'], " ");
        }
        Cow::Owned(out)
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.bytes().get(self.pos) {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn read_name(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(&b) = self.bytes().get(self.pos) {
            if is_name_char(b) {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.src[start..self.pos]
    }

    /// Skip a DOCTYPE declaration, noting the general entities its internal subset declares.
    fn doctype(&mut self, start: usize) {
        if self.root_seen {
            self.error(start, "DOCTYPE after the root element");
        }
        let b = self.bytes();
        let mut i = start + 2;
        let mut in_subset = false;
        while i < b.len() {
            match b[i] {
                q @ (b'"' | b'\'') => match b[i + 1..].iter().position(|&c| c == q) {
                    Some(p) => i += p + 2,
                    None => break,
                },
                b'[' if !in_subset => {
                    in_subset = true;
                    i += 1;
                }
                b']' if in_subset => {
                    in_subset = false;
                    i += 1;
                }
                b'<' if in_subset && b[i..].starts_with(b"<!--") => {
                    match self.find_from(i + 4, "-->") {
                        Some(e) => i = e + 3,
                        None => break,
                    }
                }
                b'<' if in_subset && b[i..].starts_with(b"<!ENTITY") => {
                    let rest = &self.src[i + 8..];
                    let rest = rest.trim_start();
                    if !rest.starts_with('%') {
                        let name: String =
                            rest.chars().take_while(|c| !c.is_whitespace()).collect();
                        if !name.is_empty() && self.declared_entities.len() < 1024 {
                            self.declared_entities.insert(name);
                        }
                    }
                    i += 8;
                }
                b'>' if !in_subset => {
                    self.pos = i + 1;
                    self.doctype = Some(&self.src[start..self.pos]);
                    return;
                }
                _ => i += 1,
            }
        }
        self.error(start, "unterminated DOCTYPE");
        self.pos = b.len();
    }

    fn start_tag(&mut self, start: usize) {
        self.pos = start + 1;
        let name = self.read_name();
        let mut attrs: Vec<(&'a str, Cow<'a, str>)> = Vec::new();
        let mut empty = false;
        loop {
            let before_ws = self.pos;
            self.skip_ws();
            let had_ws = self.pos > before_ws;
            match self.bytes().get(self.pos) {
                None => {
                    self.error(start, format!("unterminated start tag <{name}>"));
                    break;
                }
                Some(b'>') => {
                    self.pos += 1;
                    break;
                }
                Some(b'/') if self.bytes().get(self.pos + 1) == Some(&b'>') => {
                    self.pos += 2;
                    empty = true;
                    break;
                }
                Some(b'<') => {
                    self.error(start, format!("unterminated start tag <{name}>"));
                    break;
                }
                Some(_) => {}
            }
            let attr_start = self.pos;
            let attr_name = self.read_name();
            if attr_name.is_empty() {
                self.error(attr_start, format!("junk in start tag <{name}>"));
                self.pos += self.src[self.pos..]
                    .chars()
                    .next()
                    .map_or(1, char::len_utf8);
                continue;
            }
            if !had_ws {
                self.error(attr_start, format!("no space before attribute {attr_name}"));
            }
            self.skip_ws();
            let value: Cow<'a, str> = if self.bytes().get(self.pos) == Some(&b'=') {
                self.pos += 1;
                self.skip_ws();
                match self.bytes().get(self.pos) {
                    Some(&q @ (b'"' | b'\'')) => {
                        let vstart = self.pos + 1;
                        let rel_end = self.bytes()[vstart..].iter().position(|&c| c == q);
                        let vend = match rel_end {
                            Some(e) => vstart + e,
                            None => {
                                self.error(attr_start, "unterminated attribute value");
                                self.bytes()[vstart..]
                                    .iter()
                                    .position(|&c| c == b'>')
                                    .map_or(self.src.len(), |p| vstart + p)
                            }
                        };
                        let raw = &self.src[vstart..vend];
                        if raw.contains('<') {
                            self.error(attr_start, "< in attribute value");
                        }
                        self.pos = (vend + 1).min(self.src.len());
                        if rel_end.is_none() {
                            self.pos = vend;
                        }
                        self.decode(raw, attr_start, true)
                    }
                    _ => {
                        self.error(
                            attr_start,
                            format!("unquoted value for attribute {attr_name}"),
                        );
                        let vstart = self.pos;
                        while let Some(&b) = self.bytes().get(self.pos) {
                            if b.is_ascii_whitespace() || b == b'>' || b == b'<' {
                                break;
                            }
                            if b == b'/' && self.bytes().get(self.pos + 1) == Some(&b'>') {
                                break;
                            }
                            self.pos += 1;
                        }
                        let raw = &self.src[vstart..self.pos];
                        self.decode(raw, attr_start, true)
                    }
                }
            } else {
                self.error(attr_start, format!("attribute {attr_name} without a value"));
                Cow::Borrowed("")
            };
            if let Some(existing) = attrs.iter_mut().find(|(n, _)| *n == attr_name) {
                self.error(attr_start, format!("duplicate attribute {attr_name}"));
                existing.1 = value;
            } else if attrs.len() < MAX_ATTRS {
                attrs.push((attr_name, value));
            } else {
                self.error(attr_start, format!("too many attributes on <{name}>"));
            }
        }
        if self.stack.is_empty() {
            if self.root_closed {
                self.error(start, format!("junk after document element: <{name}>"));
            }
            self.root_seen = true;
        }
        self.pending.push_back(Token::Start { name, attrs });
        if empty {
            self.pending.push_back(Token::End { name });
            if self.stack.is_empty() {
                self.root_closed = true;
            }
        } else {
            self.stack.push(name);
        }
    }

    fn end_tag(&mut self, start: usize) {
        self.pos = start + 2;
        let name = self.read_name();
        self.skip_ws();
        if self.bytes().get(self.pos) == Some(&b'>') {
            self.pos += 1;
        } else {
            self.error(start, format!("unterminated end tag </{name}>"));
            // Resume at the next tag or the end; whatever is in between is junk.
            let next = self.bytes()[self.pos..]
                .iter()
                .position(|&b| b == b'<' || b == b'>')
                .map_or(self.src.len(), |p| self.pos + p);
            self.pos = if self.bytes().get(next) == Some(&b'>') {
                next + 1
            } else {
                next
            };
        }
        let floor = self.stack.len().saturating_sub(MAX_CLOSE_DEPTH);
        let window = &self.stack[floor..];
        let found = window
            .iter()
            .rposition(|n| *n == name)
            .or_else(|| window.iter().rposition(|n| n.eq_ignore_ascii_case(name)))
            .map(|i| i + floor);
        match found {
            Some(i) => {
                if i + 1 != self.stack.len() {
                    let open = self.stack[self.stack.len() - 1];
                    self.error(start, format!("mismatched tag: </{name}> closes <{open}>"));
                }
                while self.stack.len() > i {
                    if let Some(n) = self.stack.pop() {
                        self.pending.push_back(Token::End { name: n });
                    }
                }
                if self.stack.is_empty() {
                    self.root_closed = true;
                }
            }
            None => self.error(start, format!("end tag </{name}> matches no open element")),
        }
    }

    fn markup(&mut self, start: usize) {
        let b = self.bytes();
        let next = b.get(start + 1).copied();
        match next {
            Some(b'?') => {
                let end = self.find_from(start + 2, "?>");
                let target_end = b[start + 2..]
                    .iter()
                    .position(|c| c.is_ascii_whitespace() || *c == b'?')
                    .map_or(b.len(), |p| start + 2 + p);
                if self.src[start + 2..target_end].eq_ignore_ascii_case("xml")
                    && start != self.doc_start
                {
                    self.error(start, "XML declaration not at the start of the document");
                }
                match end {
                    Some(e) => self.pos = e + 2,
                    None => {
                        self.error(start, "unterminated processing instruction");
                        self.pos = b.len();
                    }
                }
            }
            Some(b'!') => {
                if self.starts_with(start, "<!--") {
                    match self.find_from(start + 4, "-->") {
                        Some(e) => self.pos = e + 3,
                        None => {
                            self.error(start, "unterminated comment");
                            self.pos = b.len();
                        }
                    }
                } else if self.starts_with(start, "<![CDATA[") {
                    let content_start = start + 9;
                    let (content_end, resume) = match self.find_from(content_start, "]]>") {
                        Some(e) => (e, e + 3),
                        None => {
                            self.error(start, "unterminated CDATA section");
                            (b.len(), b.len())
                        }
                    };
                    self.pos = resume;
                    let content = &self.src[content_start..content_end];
                    if self.stack.is_empty() {
                        self.error(start, "CDATA outside the root element");
                    } else if !content.is_empty() {
                        self.pending.push_back(Token::Text(Cow::Borrowed(content)));
                    }
                } else if b[start..].len() >= 9
                    && b[start + 2..start + 9].eq_ignore_ascii_case(b"DOCTYPE")
                {
                    self.doctype(start);
                } else {
                    self.error(start, "unknown markup declaration");
                    self.pos = self.find_from(start, ">").map_or(b.len(), |e| e + 1);
                }
            }
            Some(b'/') => self.end_tag(start),
            Some(_)
                if self.src[start + 1..]
                    .chars()
                    .next()
                    .is_some_and(is_name_start) =>
            {
                self.start_tag(start)
            }
            _ => {
                self.error(start, "unescaped <");
                self.pos = start + 1;
                if !self.stack.is_empty() {
                    self.pending.push_back(Token::Text(Cow::Borrowed("<")));
                }
            }
        }
    }

    fn text(&mut self, start: usize) {
        let end = self.find_from(start, "<").unwrap_or(self.src.len());
        self.pos = end;
        let raw = &self.src[start..end];
        if self.stack.is_empty() {
            if !raw.trim().is_empty() {
                self.error(start, "text outside the root element");
            }
            return;
        }
        let decoded = self.decode(raw, start, false);
        self.pending.push_back(Token::Text(decoded));
    }

    fn finish(&mut self) {
        self.finished = true;
        if !self.stack.is_empty() {
            let open = self.stack[self.stack.len() - 1];
            self.error(self.src.len(), format!("document ends inside <{open}>"));
        }
        while let Some(n) = self.stack.pop() {
            self.pending.push_back(Token::End { name: n });
        }
        if !self.root_seen {
            self.error(self.src.len(), "no root element");
        }
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            if let Some(t) = self.pending.pop_front() {
                return Some(t);
            }
            if self.finished {
                return None;
            }
            let start = self.pos;
            if start >= self.src.len() {
                self.finish();
                continue;
            }
            if self.bytes()[start] == b'<' {
                self.markup(start);
            } else {
                self.text(start);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str) -> (Vec<String>, Vec<String>) {
        let mut t = Tokenizer::new(src);
        let mut out = Vec::new();
        for tok in t.by_ref() {
            out.push(match tok {
                Token::Start { name, attrs } => {
                    let a: Vec<String> = attrs.iter().map(|(k, v)| format!(" {k}={v}")).collect();
                    format!("<{name}{}>", a.join(""))
                }
                Token::End { name } => format!("</{name}>"),
                Token::Text(s) => s.into_owned(),
            });
        }
        (out, t.errors)
    }

    #[test]
    fn well_formed() {
        let (toks, errs) = tokens(
            "<?xml version='1.0'?><!-- c --><a x='1' y=\"&lt;&#65;\"><b/>t&amp;x<![CDATA[<i>]]></a>",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(toks, ["<a x=1 y=<A>", "<b>", "</b>", "t&x", "<i>", "</a>"]);
    }

    #[test]
    fn recovers() {
        let (toks, errs) =
            tokens("<rss><channel><title>a &rArr; b &foo; & c</title><item></channel></rss");
        assert!(!errs.is_empty());
        assert_eq!(
            toks,
            [
                "<rss>",
                "<channel>",
                "<title>",
                "a \u{21D2} b &foo; & c",
                "</title>",
                "<item>",
                "</item>",
                "</channel>",
                "</rss>"
            ]
        );
    }

    #[test]
    fn declaration_must_come_first() {
        let (_, errs) = tokens("<!-- x --><?xml version='1.0'?><a/>");
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn dtd_entities_are_not_expanded() {
        let src = "<!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\"><!ENTITY nbsp \"&#160;\">]><r>&b;&nbsp;</r>";
        let mut t = Tokenizer::new(src);
        let toks: Vec<_> = t.by_ref().collect();
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(toks[1], Token::Text(Cow::Owned("&b;\u{a0}".into())));
        assert_eq!(t.notes.len(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        for src in [
            "<",
            "</",
            "<a",
            "<a b",
            "<a b=",
            "<a b='",
            "&",
            "<!",
            "<![CDATA[",
            "<?",
            "<a></b>",
            "<é/>",
            "<a\u{0}>",
        ] {
            let _ = tokens(src);
        }
    }
}
