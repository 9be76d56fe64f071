//! XML for XMPP streams, I/O-free: a [`Framer`] that cuts the bytes of a stream into its
//! header, its top-level elements (stanzas and nonzas) and its end, a small [`Element`] tree
//! with namespaces resolved, and the writer.
//!
//! XMPP uses a restricted XML (RFC 6120 §11): no DTD, no entity declarations, only the
//! five predefined entities and character references. That is all this parser accepts;
//! anything else is an error that ends the stream. Everything is bounded: a top-level
//! element larger than the framer's limit, or nested deeper than [`MAX_DEPTH`], is an error
//! rather than a growing buffer.

use std::fmt::Write as _;

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_COMPONENT: &str = "jabber:component:accept";

/// The deepest nesting accepted inside a stanza.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("XML element larger than {0} bytes")]
    TooLarge(usize),
    #[error("XML nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("malformed XML: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> XmlError {
    XmlError::Malformed(what.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An element with its namespace resolved. `attrs` keeps qualified names as written
/// (`xml:lang`), without the namespace declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_owned(),
            ns: ns.to_owned(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Sets an attribute (replacing one of the same name).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_owned(), value)),
        }
    }

    pub fn child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn find(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// The first child element in this namespace, whatever its name.
    pub fn find_ns(&self, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.ns == ns)
    }

    /// The concatenated text children (not of descendants).
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Serializes, declaring the namespace only where it differs from the parent's.
    /// Top-level stanzas are written with `parent_ns` = [`NS_CLIENT`] so that they take the
    /// stream's default namespace (`jabber:client` or `jabber:component:accept`).
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_into(out, &self.ns, true);
            out.push('\'');
        }
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}='");
            escape_into(out, v, true);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// As a top-level element of a stream.
    pub fn to_stanza_xml(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out, NS_CLIENT);
        out
    }
}

/// Whether XML 1.0 allows this character at all. Others (most C0 controls, U+FFFE,
/// U+FFFF) would make the server close the stream, so the writer drops them.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

pub fn escape_into(out: &mut String, text: &str, attr: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' if attr => out.push_str("&apos;"),
            '"' if attr => out.push_str("&quot;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text, true);
    out
}

/// What the framer cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The stream header, as an element without children (its attributes: `id`, `from`,
    /// `version`...).
    Open(Element),
    /// A complete top-level element.
    Element(Element),
    /// `</stream:stream>`.
    Close,
}

/// Cuts a stream into [`Frame`]s. Feed it bytes with [`Framer::push`], take frames with
/// [`Framer::next_frame`] until it answers `None` (more bytes needed).
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where scanning resumes.
    pos: usize,
    /// 0 before the header, 1 inside the stream, more inside an element.
    depth: usize,
    /// Where the current top-level element starts.
    start: usize,
    max: usize,
    /// Namespace prefixes the header declared (`stream` and others).
    prefixes: Vec<(String, String)>,
    closed: bool,
}

impl Framer {
    /// `max` bounds one top-level element (and whatever waits in the buffer).
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            pos: 0,
            depth: 0,
            start: 0,
            max,
            prefixes: Vec::new(),
            closed: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, XmlError> {
        if self.closed {
            return Ok(None);
        }
        loop {
            if self.buf.len() - self.start > self.max {
                return Err(XmlError::TooLarge(self.max));
            }
            if self.pos >= self.buf.len() {
                self.compact();
                return Ok(None);
            }
            if self.buf[self.pos] != b'<' {
                // Text: up to the next tag. Between top-level elements only whitespace
                // (keepalives) is allowed.
                let end = match self.buf[self.pos..].iter().position(|&b| b == b'<') {
                    Some(i) => self.pos + i,
                    None => self.buf.len(),
                };
                if self.depth <= 1
                    && !self.buf[self.pos..end]
                        .iter()
                        .all(|b| b.is_ascii_whitespace())
                {
                    return Err(malformed("text outside a stanza"));
                }
                self.pos = end;
                continue;
            }
            let Some((kind, end)) = scan_token(&self.buf[self.pos..])? else {
                self.compact();
                return Ok(None);
            };
            let tok_start = self.pos;
            let end = tok_start + end;
            self.pos = end;
            match kind {
                Token::Skip => {}
                Token::Start { empty } => {
                    if self.depth == 0 {
                        if empty {
                            return Err(malformed("empty stream header"));
                        }
                        let (header, prefixes) = parse_header(&self.buf[tok_start..end])?;
                        self.prefixes = prefixes;
                        self.depth = 1;
                        self.drain(end);
                        return Ok(Some(Frame::Open(header)));
                    }
                    if self.depth == 1 {
                        self.start = tok_start;
                    }
                    if empty {
                        if self.depth == 1 {
                            return self.complete(end).map(Some);
                        }
                    } else {
                        self.depth += 1;
                        if self.depth > MAX_DEPTH + 1 {
                            return Err(XmlError::TooDeep);
                        }
                    }
                }
                Token::End => match self.depth {
                    0 => return Err(malformed("end tag before the stream header")),
                    1 => {
                        self.closed = true;
                        self.drain(end);
                        return Ok(Some(Frame::Close));
                    }
                    _ => {
                        self.depth -= 1;
                        if self.depth == 1 {
                            return self.complete(end).map(Some);
                        }
                    }
                },
            }
        }
    }

    fn complete(&mut self, end: usize) -> Result<Frame, XmlError> {
        let element = parse_element(&self.buf[self.start..end], &self.prefixes)?;
        self.drain(end);
        Ok(Frame::Element(element))
    }

    fn drain(&mut self, end: usize) {
        self.buf.drain(..end);
        self.pos = 0;
        self.start = 0;
    }

    /// Drops what is already scanned and not part of an element in progress.
    fn compact(&mut self) {
        if self.depth <= 1 {
            let keep_from = self.pos.min(self.buf.len());
            // Only whitespace or skipped tokens lie before `pos` at this depth.
            self.buf.drain(..keep_from);
            self.pos = 0;
            self.start = 0;
        }
    }
}

/// The stream header's element and the namespace prefixes it declares.
fn parse_header(tag: &[u8]) -> Result<(Element, Vec<(String, String)>), XmlError> {
    {
        let text = std::str::from_utf8(tag).map_err(|_| malformed("invalid UTF-8"))?;
        let (qname, attrs) = parse_start_tag(text)?;
        let mut prefixes = vec![("xml".to_owned(), XML_NS.to_owned())];
        let mut plain = Vec::new();
        for (k, v) in attrs {
            if let Some(p) = k.strip_prefix("xmlns:") {
                prefixes.push((p.to_owned(), v));
            } else if k != "xmlns" {
                plain.push((k, v));
            }
        }
        let (prefix, local) = split_qname(&qname);
        let ns = match prefix {
            Some(p) => lookup(&prefixes, p)
                .ok_or_else(|| malformed(format!("unknown prefix {p}")))?
                .to_owned(),
            None => String::new(),
        };
        if local != "stream" || ns != NS_STREAM {
            return Err(malformed(format!(
                "expected a stream header, got <{qname}>"
            )));
        }
        let header = Element {
            name: "stream".into(),
            ns,
            attrs: plain,
            children: Vec::new(),
        };
        Ok((header, prefixes))
    }
}

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

enum Token {
    Start {
        empty: bool,
    },
    End,
    /// Comments, processing instructions (the XML declaration), CDATA at top level.
    Skip,
}

/// The kind and length of the markup token at the start of `buf` (which starts with `<`),
/// or `None` if it is not complete yet.
fn scan_token(buf: &[u8]) -> Result<Option<(Token, usize)>, XmlError> {
    fn find(buf: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
        buf.get(from..)?
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|i| from + i + pat.len())
    }
    if buf.len() < 2 {
        return Ok(None);
    }
    match buf[1] {
        b'?' => Ok(find(buf, 2, b"?>").map(|e| (Token::Skip, e))),
        b'!' => {
            if buf.len() < 4 {
                return Ok(None);
            }
            if buf.starts_with(b"<!--") {
                return Ok(find(buf, 4, b"-->").map(|e| (Token::Skip, e)));
            }
            if buf.len() < 9 {
                return if b"<![CDATA[".starts_with(buf) {
                    Ok(None)
                } else {
                    Err(malformed("DTDs are not allowed in XMPP"))
                };
            }
            if buf.starts_with(b"<![CDATA[") {
                return Ok(find(buf, 9, b"]]>").map(|e| (Token::Skip, e)));
            }
            Err(malformed("DTDs are not allowed in XMPP"))
        }
        b'/' => Ok(buf
            .iter()
            .position(|&b| b == b'>')
            .map(|i| (Token::End, i + 1))),
        _ => {
            let mut quote = None;
            for (i, &b) in buf.iter().enumerate().skip(1) {
                match (quote, b) {
                    (None, b'"' | b'\'') => quote = Some(b),
                    (Some(q), b) if b == q => quote = None,
                    (None, b'<') => return Err(malformed("'<' inside a tag")),
                    (None, b'>') => {
                        let empty = buf[i - 1] == b'/';
                        return Ok(Some((Token::Start { empty }, i + 1)));
                    }
                    _ => {}
                }
            }
            Ok(None)
        }
    }
}

fn split_qname(q: &str) -> (Option<&str>, &str) {
    match q.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, q),
    }
}

fn lookup<'a>(scope: &'a [(String, String)], prefix: &str) -> Option<&'a str> {
    scope
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, ns)| ns.as_str())
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') || (c as u32) > 0x7f
}

fn check_name(name: &str) -> Result<(), XmlError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        && name.chars().all(is_name_char);
    if ok {
        Ok(())
    } else {
        Err(malformed(format!("bad name {name:?}")))
    }
}

/// `<name a='1' b="2">` or `<name/>` → the qualified name and the attributes, unescaped.
fn parse_start_tag(tag: &str) -> Result<(String, Vec<(String, String)>), XmlError> {
    let inner = tag
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .ok_or_else(|| malformed("bad tag"))?;
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let name_end = inner
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    check_name(name)?;
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut rest = inner[name_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| malformed("attribute without a value"))?;
        let key = rest[..eq].trim_end();
        check_name(key)?;
        let after = rest[eq + 1..].trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| malformed("unquoted attribute value"))?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| malformed("unterminated attribute value"))?;
        let raw = &after[1..1 + close];
        if raw.contains('<') {
            return Err(malformed("'<' in an attribute value"));
        }
        if attrs.iter().any(|(k, _)| k == key) {
            return Err(malformed(format!("duplicate attribute {key}")));
        }
        attrs.push((key.to_owned(), unescape(raw)?));
        let next = &after[close + 2..];
        if !next.is_empty() && !next.starts_with(|c: char| c.is_ascii_whitespace()) {
            return Err(malformed("attributes must be separated by whitespace"));
        }
        rest = next.trim_start();
    }
    Ok((name.to_owned(), attrs))
}

/// Resolves the five predefined entities and character references.
pub fn unescape(raw: &str) -> Result<String, XmlError> {
    if !raw.contains('&') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..]
            .find(';')
            .filter(|&i| i <= 12)
            .ok_or_else(|| malformed("unterminated entity"))?;
        let entity = &rest[amp + 1..amp + semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .filter(|c| is_xml_char(*c))
                    .ok_or_else(|| malformed(format!("unknown entity &{entity};")))?
            }
        };
        out.push(c);
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses one complete element (the bytes of a top-level element the framer cut), with
/// the prefixes the stream header declared in scope.
pub fn parse_element(bytes: &[u8], prefixes: &[(String, String)]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("invalid UTF-8"))?;
    // Each open element: itself, its qualified name, and how many scope entries it added.
    let mut stack: Vec<(Element, String, usize)> = Vec::new();
    let mut scope: Vec<(String, String)> = prefixes.to_vec();
    // The default namespace of a top-level stanza is the stream's content namespace,
    // taken as jabber:client whatever the stream (see Element::write_to).
    scope.push((String::new(), NS_CLIENT.to_owned()));
    let mut rest = text;
    let mut done: Option<Element> = None;
    while !rest.is_empty() {
        if done.is_some() {
            if rest.trim().is_empty() {
                break;
            }
            return Err(malformed("content after the element"));
        }
        if !rest.starts_with('<') {
            let end = rest.find('<').unwrap_or(rest.len());
            let t = unescape(&rest[..end])?;
            if let Some((top, _, _)) = stack.last_mut() {
                push_text(top, t);
            }
            rest = &rest[end..];
            continue;
        }
        let Some((tok, len)) = scan_token(rest.as_bytes())? else {
            return Err(malformed("truncated element"));
        };
        let raw = &rest[..len];
        rest = &rest[len..];
        match tok {
            Token::Skip => {
                if let Some(data) = raw
                    .strip_prefix("<![CDATA[")
                    .and_then(|r| r.strip_suffix("]]>"))
                    && let Some((top, _, _)) = stack.last_mut()
                {
                    push_text(top, data.to_owned());
                }
            }
            Token::Start { empty } => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let (qname, attrs) = parse_start_tag(raw)?;
                let mut added = 0;
                let mut plain = Vec::new();
                for (k, v) in attrs {
                    if k == "xmlns" {
                        scope.push((String::new(), v));
                        added += 1;
                    } else if let Some(p) = k.strip_prefix("xmlns:") {
                        scope.push((p.to_owned(), v));
                        added += 1;
                    } else {
                        plain.push((k, v));
                    }
                }
                let (prefix, local) = split_qname(&qname);
                let ns = lookup(&scope, prefix.unwrap_or(""))
                    .ok_or_else(|| malformed(format!("unknown prefix in <{qname}>")))?
                    .to_owned();
                let el = Element {
                    name: local.to_owned(),
                    ns,
                    attrs: plain,
                    children: Vec::new(),
                };
                if empty {
                    scope.truncate(scope.len() - added);
                    match stack.last_mut() {
                        Some((parent, _, _)) => parent.children.push(Node::Element(el)),
                        None => done = Some(el),
                    }
                } else {
                    stack.push((el, qname, added));
                }
            }
            Token::End => {
                let name = raw[2..raw.len() - 1].trim_end();
                let (el, qname, added) =
                    stack.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
                if name != qname {
                    return Err(malformed(format!("</{name}> closes <{qname}>")));
                }
                scope.truncate(scope.len() - added);
                match stack.last_mut() {
                    Some((parent, _, _)) => parent.children.push(Node::Element(el)),
                    None => done = Some(el),
                }
            }
        }
    }
    done.ok_or_else(|| malformed("truncated element"))
}

fn push_text(el: &mut Element, t: String) {
    if t.is_empty() {
        return;
    }
    if let Some(Node::Text(prev)) = el.children.last_mut() {
        prev.push_str(&t);
    } else {
        el.children.push(Node::Text(t));
    }
}

/// The opening of a stream we initiate.
pub fn stream_header(ns: &str, to: &str, version: bool) -> String {
    let mut out = String::from("<?xml version='1.0'?><stream:stream xmlns='");
    out.push_str(ns);
    out.push_str("' xmlns:stream='http://etherx.jabber.org/streams' to='");
    escape_into(&mut out, to, true);
    out.push('\'');
    if version {
        out.push_str(" version='1.0'");
    }
    out.push('>');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream version='1.0' xmlns:stream='http://etherx.jabber.org/streams' id='abc' xmlns='jabber:component:accept' from='tidings.localhost'>";

    fn frames(input: &[u8], chunk: usize) -> Vec<Frame> {
        let mut f = Framer::new(4096);
        let mut out = Vec::new();
        for part in input.chunks(chunk) {
            f.push(part);
            while let Some(frame) = f.next_frame().expect("frame") {
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn frames_a_stream_in_any_chunking() {
        let input = format!(
            "{HEADER}<handshake/> \n<message from='a@b/c' to='x' id='1'><body>hi &amp; &lt;3 &#x1F600;</body><request xmlns='urn:xmpp:receipts'/></message><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features><!-- c --><iq type='result' id='p'><![CDATA[x<y]]></iq></stream:stream>"
        );
        let whole = frames(input.as_bytes(), input.len());
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(frames(input.as_bytes(), chunk), whole, "chunk {chunk}");
        }
        assert_eq!(whole.len(), 6);
        let Frame::Open(h) = &whole[0] else { panic!() };
        assert_eq!(h.get_attr("id"), Some("abc"));
        assert_eq!(
            whole[1],
            Frame::Element(Element::new("handshake", NS_CLIENT))
        );
        let Frame::Element(m) = &whole[2] else {
            panic!()
        };
        assert!(m.is("message", NS_CLIENT));
        assert_eq!(m.get_attr("from"), Some("a@b/c"));
        assert_eq!(
            m.find("body", NS_CLIENT).unwrap().text_content(),
            "hi & <3 😀"
        );
        assert!(m.find("request", "urn:xmpp:receipts").is_some());
        let Frame::Element(f) = &whole[3] else {
            panic!()
        };
        assert!(f.is("features", NS_STREAM));
        assert!(f.find("bind", "urn:ietf:params:xml:ns:xmpp-bind").is_some());
        let Frame::Element(iq) = &whole[4] else {
            panic!()
        };
        assert_eq!(iq.text_content(), "x<y");
        assert_eq!(whole[5], Frame::Close);
    }

    #[test]
    fn prefixed_namespaces_and_quotes_with_gt() {
        let input = format!(
            "{HEADER}<x:message xmlns:x='jabber:client' to=\"a>b\"><x:body>1</x:body><y xmlns='urn:y'><z/></y></x:message>"
        );
        let fr = frames(input.as_bytes(), 5);
        let Frame::Element(m) = &fr[1] else { panic!() };
        assert!(m.is("message", NS_CLIENT));
        assert_eq!(m.get_attr("to"), Some("a>b"));
        let y = m.find("y", "urn:y").unwrap();
        assert!(y.find("z", "urn:y").is_some());
    }

    #[test]
    fn rejects_what_xmpp_forbids() {
        for bad in [
            format!("{HEADER}<!DOCTYPE x>"),
            format!("{HEADER}text"),
            format!("{HEADER}<a></b>"),
            format!("{HEADER}<a>&nbsp;</a>"),
            format!("{HEADER}<a b='1' b='2'/>"),
            format!("{HEADER}<p:a/>"),
            "<notstream>".to_owned(),
        ] {
            let mut f = Framer::new(4096);
            f.push(bad.as_bytes());
            let mut result = Ok(None);
            for _ in 0..4 {
                result = f.next_frame();
                if result.is_err() {
                    break;
                }
            }
            assert!(result.is_err(), "{bad}: {result:?}");
        }
    }

    #[test]
    fn bounds_size_and_depth() {
        let mut f = Framer::new(300);
        f.push(HEADER.as_bytes());
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Open(_)))));
        f.push(b"<message>");
        f.push(&[b'x'; 400]);
        assert_eq!(f.next_frame(), Err(XmlError::TooLarge(300)));

        let mut f = Framer::new(100_000);
        f.push(HEADER.as_bytes());
        f.next_frame().unwrap();
        f.push("<a>".repeat(MAX_DEPTH + 5).as_bytes());
        assert_eq!(f.next_frame(), Err(XmlError::TooDeep));
    }

    #[test]
    fn whitespace_keepalives_do_not_accumulate() {
        let mut f = Framer::new(300);
        f.push(HEADER.as_bytes());
        f.next_frame().unwrap();
        for _ in 0..1000 {
            f.push(b" ");
            assert_eq!(f.next_frame(), Ok(None));
        }
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn writes_and_reads_back() {
        let el = Element::new("message", NS_CLIENT)
            .attr("to", "a'b@c")
            .attr("id", "x&y")
            .child(Element::new("body", NS_CLIENT).text("1 < 2 & \u{1} *bold*"))
            .child(Element::new("request", "urn:xmpp:receipts"));
        let xml = el.to_stanza_xml();
        assert_eq!(
            xml,
            "<message to='a&apos;b@c' id='x&amp;y'><body>1 &lt; 2 &amp;  *bold*</body><request xmlns='urn:xmpp:receipts'/></message>"
        );
        let back = parse_element(xml.as_bytes(), &[]).unwrap();
        assert_eq!(back.get_attr("to"), Some("a'b@c"));
        assert_eq!(
            back.find("body", NS_CLIENT).unwrap().text_content(),
            "1 < 2 &  *bold*"
        );
    }
}
