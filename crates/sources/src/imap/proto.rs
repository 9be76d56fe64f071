//! IMAP4rev1 wire format, I/O-free: where a server response ends (literals included), what
//! it says, and how a command is written (quoting, literals, mailbox names). Only the part
//! of RFC 3501 a mail watcher needs is understood in depth (status responses and their
//! codes, CAPABILITY, EXISTS/RECENT/EXPUNGE, FETCH); everything else is kept as text.

use std::fmt;

/// Why bytes from the server are not a response we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The response (its literals included) would exceed the limit.
    TooLarge,
    /// Not IMAP, or IMAP we cannot follow; the text says where.
    Malformed(String),
}

/// Length of the first complete response in `buf` (through its final CRLF, literals
/// included), `None` if more bytes are needed. A line (outside literals) longer than
/// `max_line`, or a response longer than `max_total`, is refused as soon as that is known,
/// without waiting for its bytes.
pub(crate) fn frame_len(
    buf: &[u8],
    max_line: usize,
    max_total: usize,
) -> Result<Option<usize>, FrameError> {
    let mut pos = 0;
    loop {
        let Some(rel) = find_crlf(&buf[pos..]) else {
            return if buf.len() - pos > max_line || buf.len() > max_total {
                Err(FrameError::TooLarge)
            } else {
                Ok(None)
            };
        };
        let line_end = pos + rel;
        if rel > max_line || line_end + 2 > max_total {
            return Err(FrameError::TooLarge);
        }
        match literal_suffix(&buf[pos..line_end])? {
            Some(n) => {
                let next = (line_end + 2)
                    .checked_add(n)
                    .filter(|&next| next <= max_total)
                    .ok_or(FrameError::TooLarge)?;
                if buf.len() < next {
                    return Ok(None);
                }
                pos = next;
            }
            None => return Ok(Some(line_end + 2)),
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// `Some(n)` when the line ends with a literal announcement `{n}` (or `{n+}`).
fn literal_suffix(line: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(body) = line.strip_suffix(b"}") else {
        return Ok(None);
    };
    let Some(open) = body.iter().rposition(|&b| b == b'{') else {
        return Ok(None);
    };
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    // Ten digits already exceed any limit we accept; refuse rather than overflow.
    if digits.len() > 10 {
        return Err(FrameError::TooLarge);
    }
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(FrameError::TooLarge)?;
    Ok(Some(n))
}

/// The status word of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

impl Status {
    fn from_word(word: &str) -> Option<Status> {
        Some(match word.to_ascii_uppercase().as_str() {
            "OK" => Status::Ok,
            "NO" => Status::No,
            "BAD" => Status::Bad,
            "PREAUTH" => Status::PreAuth,
            "BYE" => Status::Bye,
            _ => return None,
        })
    }
}

/// A response code, the bracketed part of a status response (`[UIDVALIDITY 7]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Code {
    /// Uppercased name, e.g. `UIDVALIDITY`.
    pub name: String,
    /// What follows the name inside the brackets, if anything.
    pub arg: Option<String>,
}

impl Code {
    /// The argument as a number (`UIDVALIDITY`, `UIDNEXT`).
    pub fn number(&self) -> Option<u32> {
        self.arg.as_deref()?.trim().parse().ok()
    }

    /// The argument as a capability list (`[CAPABILITY IMAP4rev1 IDLE]`).
    pub fn capabilities(&self) -> Vec<String> {
        self.arg
            .as_deref()
            .map(split_capabilities)
            .unwrap_or_default()
    }
}

/// A status response's code and human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RespText {
    pub code: Option<Code>,
    pub text: String,
}

impl fmt::Display for RespText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(Code {
                name,
                arg: Some(arg),
            }) => write!(f, "[{name} {arg}] {}", self.text),
            Some(Code { name, arg: None }) => write!(f, "[{name}] {}", self.text),
            None => f.write_str(&self.text),
        }
    }
}

/// The attributes of one message in a FETCH response that a watcher asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FetchData {
    pub uid: Option<u32>,
    pub size: Option<u32>,
    /// `BODY[]` (possibly partial, `BODY[]<0>`), `RFC822` likewise.
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Untagged {
    Status(Status, RespText),
    Capability(Vec<String>),
    Exists(u32),
    Recent(u32),
    Expunge(u32),
    Fetch(u32, FetchData),
    /// Anything else (FLAGS, LIST, SEARCH, STATUS, ...), as text.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// `+ text`: the server waits for the rest of the command (literal, IDLE, SASL).
    Continuation(String),
    Untagged(Untagged),
    Tagged {
        tag: String,
        status: Status,
        text: RespText,
    },
}

/// Parses one framed response (as delimited by [`frame_len`], CRLF included).
pub(crate) fn parse_response(bytes: &[u8]) -> Result<Response, FrameError> {
    let line = bytes.strip_suffix(b"\r\n").unwrap_or(bytes);
    let mut p = Parser { b: line, i: 0 };
    if p.eat(b'+') {
        p.eat(b' ');
        return Ok(Response::Continuation(p.rest_text()));
    }
    if p.eat(b'*') {
        p.expect(b' ')?;
        return p.untagged().map(Response::Untagged);
    }
    let tag = p.atom()?;
    p.expect(b' ')?;
    let word = p.atom()?;
    let status = match Status::from_word(&word) {
        Some(s @ (Status::Ok | Status::No | Status::Bad)) => s,
        _ => return Err(p.error("a tagged response that is not OK, NO or BAD")),
    };
    let text = p.resp_text();
    Ok(Response::Tagged { tag, status, text })
}

/// A cursor over one response; literals are read in place.
struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

/// Atom characters end at these (RFC 3501 atom-specials, minus the list wildcards and
/// `]`, which the server uses inside flags and codes; we handle brackets ourselves).
fn ends_atom(b: u8) -> bool {
    matches!(b, b' ' | b'(' | b')' | b'{' | b'"' | b'\r' | b'\n') || b < 0x20 || b == 0x7f
}

/// A value in a FETCH response or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Atom(String),
    Bytes(Vec<u8>),
    Nil,
    List(Vec<Value>),
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), FrameError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("'{}' expected", char::from(c))))
        }
    }

    fn error(&self, what: &str) -> FrameError {
        let start = self.i.saturating_sub(20);
        let end = (self.i + 40).min(self.b.len());
        FrameError::Malformed(format!(
            "{what} at byte {} of a server response (near \"{}\")",
            self.i,
            String::from_utf8_lossy(&self.b[start..end]).escape_debug()
        ))
    }

    fn rest_text(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.b[self.i..]).into_owned();
        self.i = self.b.len();
        text
    }

    /// An atom; brackets inside it (`BODY[HEADER.FIELDS (A B)]`) are kept whole.
    fn atom(&mut self) -> Result<String, FrameError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b'[' {
                let close = self.b[self.i..]
                    .iter()
                    .position(|&b| b == b']')
                    .ok_or_else(|| self.error("unclosed '['"))?;
                self.i += close + 1;
            } else if ends_atom(c) {
                break;
            } else {
                self.i += 1;
            }
        }
        if self.i == start {
            return Err(self.error("an atom expected"));
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }

    fn number(&mut self) -> Result<u32, FrameError> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.error("a number expected"))
    }

    fn quoted(&mut self) -> Result<Vec<u8>, FrameError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'\\' | b'"')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return Err(self.error("bad escape in quoted string")),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// `{n}\r\n` followed by n bytes (the framer guarantees they are there).
    fn literal(&mut self) -> Result<Vec<u8>, FrameError> {
        self.expect(b'{')?;
        let n = self.number()? as usize;
        self.eat(b'+');
        self.expect(b'}')?;
        self.expect(b'\r')?;
        self.expect(b'\n')?;
        let end = self
            .i
            .checked_add(n)
            .filter(|&end| end <= self.b.len())
            .ok_or_else(|| self.error("literal runs past the response"))?;
        let bytes = self.b[self.i..end].to_vec();
        self.i = end;
        Ok(bytes)
    }

    fn value(&mut self, depth: usize) -> Result<Value, FrameError> {
        if depth > 32 {
            return Err(self.error("lists nested too deep"));
        }
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    while self.eat(b' ') {}
                    if self.eat(b')') {
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            Some(b'"') => self.quoted().map(Value::Bytes),
            Some(b'{') => self.literal().map(Value::Bytes),
            _ => {
                let atom = self.atom()?;
                Ok(if atom.eq_ignore_ascii_case("NIL") {
                    Value::Nil
                } else {
                    Value::Atom(atom)
                })
            }
        }
    }

    /// `[CODE arg] text` or just `text`, to the end of the line.
    fn resp_text(&mut self) -> RespText {
        self.eat(b' ');
        let mut code = None;
        if self.peek() == Some(b'[')
            && let Some(close) = self.b[self.i..].iter().position(|&b| b == b']')
        {
            let inner = String::from_utf8_lossy(&self.b[self.i + 1..self.i + close]).into_owned();
            self.i += close + 1;
            self.eat(b' ');
            let (name, arg) = match inner.split_once(' ') {
                Some((name, arg)) => (name, Some(arg.to_owned())),
                None => (inner.as_str(), None),
            };
            code = Some(Code {
                name: name.to_ascii_uppercase(),
                arg,
            });
        }
        RespText {
            code,
            text: self.rest_text(),
        }
    }

    fn untagged(&mut self) -> Result<Untagged, FrameError> {
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            let n = self.number()?;
            self.expect(b' ')?;
            let word = self.atom()?.to_ascii_uppercase();
            return Ok(match word.as_str() {
                "EXISTS" => Untagged::Exists(n),
                "RECENT" => Untagged::Recent(n),
                "EXPUNGE" => Untagged::Expunge(n),
                "FETCH" => {
                    self.expect(b' ')?;
                    Untagged::Fetch(n, self.fetch_data()?)
                }
                _ => Untagged::Other(format!("{n} {word}{}", self.rest_text())),
            });
        }
        let word = self.atom()?;
        if let Some(status) = Status::from_word(&word) {
            return Ok(Untagged::Status(status, self.resp_text()));
        }
        if word.eq_ignore_ascii_case("CAPABILITY") {
            return Ok(Untagged::Capability(split_capabilities(&self.rest_text())));
        }
        Ok(Untagged::Other(format!("{word}{}", self.rest_text())))
    }

    fn fetch_data(&mut self) -> Result<FetchData, FrameError> {
        let Value::List(items) = self.value(0)? else {
            return Err(self.error("a FETCH attribute list expected"));
        };
        let mut data = FetchData::default();
        let mut items = items.into_iter();
        while let Some(name) = items.next() {
            let Value::Atom(name) = name else {
                return Err(self.error("a FETCH attribute name expected"));
            };
            let value = items
                .next()
                .ok_or_else(|| self.error("a FETCH attribute without a value"))?;
            let name = name.to_ascii_uppercase();
            match (name.as_str(), value) {
                ("UID", Value::Atom(n)) => data.uid = n.parse().ok(),
                ("RFC822.SIZE", Value::Atom(n)) => data.size = n.parse().ok(),
                ("RFC822", Value::Bytes(b)) => data.body = Some(b),
                (name, Value::Bytes(b)) if name == "BODY[]" || name.starts_with("BODY[]<") => {
                    data.body = Some(b);
                }
                // FLAGS and the rest: not ours to read (a flag change elsewhere is
                // reported this way too, with none of the fields above).
                _ => {}
            }
        }
        Ok(data)
    }
}

fn split_capabilities(text: &str) -> Vec<String> {
    text.split_ascii_whitespace()
        .map(str::to_ascii_uppercase)
        .collect()
}

/// A command, split where a synchronizing literal makes the client wait for `+`.
/// `parts[0]` follows the tag; every part but the last ends with a literal announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    pub parts: Vec<Vec<u8>>,
    /// The verb, for errors and logs (never the arguments: one may be a password).
    pub verb: &'static str,
}

impl Command {
    pub fn new(verb: &'static str) -> Command {
        Command {
            parts: vec![verb.as_bytes().to_vec()],
            verb,
        }
    }

    fn tail(&mut self) -> &mut Vec<u8> {
        if self.parts.is_empty() {
            self.parts.push(Vec::new());
        }
        let last = self.parts.len() - 1;
        &mut self.parts[last]
    }

    /// `verb args`, then (after the server's `+`) `then` on a line of its own: SASL
    /// without an initial response.
    pub fn continued(verb: &'static str, args: &str, then: Vec<u8>) -> Command {
        Command {
            parts: vec![format!("{verb} {args}\r\n").into_bytes(), then],
            verb,
        }
    }

    /// Appends ` raw` as is (atoms, sequence sets, fetch attributes we wrote ourselves).
    pub fn raw(mut self, raw: &str) -> Command {
        let tail = self.tail();
        tail.push(b' ');
        tail.extend_from_slice(raw.as_bytes());
        self
    }

    /// Appends an astring: an atom when it can be one, a quoted string when it can be
    /// one, a literal otherwise (`{n+}` with LITERAL+, else a synchronizing `{n}`).
    pub fn astring(mut self, value: &[u8], literal_plus: bool) -> Command {
        let tail = self.tail();
        tail.push(b' ');
        if !value.is_empty() && value.iter().all(|&c| is_astring_char(c)) {
            tail.extend_from_slice(value);
        } else if value.iter().all(|&c| is_quotable(c)) {
            tail.push(b'"');
            for &c in value {
                if c == b'"' || c == b'\\' {
                    tail.push(b'\\');
                }
                tail.push(c);
            }
            tail.push(b'"');
        } else if literal_plus {
            tail.extend_from_slice(format!("{{{}+}}\r\n", value.len()).as_bytes());
            tail.extend_from_slice(value);
        } else {
            tail.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
            self.parts.push(value.to_vec());
        }
        self
    }

    /// A mailbox name: INBOX as is, others in modified UTF-7 (RFC 3501 §5.1.3).
    pub fn mailbox(self, name: &str, literal_plus: bool) -> Command {
        let encoded = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX".to_owned()
        } else {
            encode_mailbox(name)
        };
        self.astring(encoded.as_bytes(), literal_plus)
    }

    /// The bytes to send for each part, the tag and final CRLF added.
    pub fn into_wire(self, tag: &str) -> Vec<Vec<u8>> {
        let mut parts = self.parts;
        if let Some(first) = parts.first_mut() {
            let mut with_tag = Vec::with_capacity(tag.len() + 1 + first.len());
            with_tag.extend_from_slice(tag.as_bytes());
            with_tag.push(b' ');
            with_tag.append(first);
            *first = with_tag;
        }
        if let Some(last) = parts.last_mut() {
            last.extend_from_slice(b"\r\n");
        }
        parts
    }
}

fn is_astring_char(c: u8) -> bool {
    // ATOM-CHAR plus ']' (resp-specials are allowed in astring).
    c > 0x20 && c < 0x7f && !matches!(c, b'(' | b')' | b'{' | b'"' | b'\\' | b'%' | b'*')
}

fn is_quotable(c: u8) -> bool {
    // TEXT-CHAR in a quoted string: 7-bit, no CR, LF or NUL.
    c != 0 && c != b'\r' && c != b'\n' && c < 0x80
}

/// Modified UTF-7 of RFC 3501 §5.1.3: printable ASCII as is (`&` as `&-`), other runs as
/// `&` + modified BASE64 of UTF-16BE + `-`.
pub(crate) fn encode_mailbox(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&base64(&bytes, b',', false));
        out.push('-');
        pending.clear();
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// BASE64 with `slash` as the 64th character (`/` normally, `,` in mailbox names).
pub(crate) fn base64(bytes: &[u8], slash: u8, pad: bool) -> String {
    const ALPHABET: &[u8; 63] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+";
    let sym = |i: u32| -> char {
        let i = (i & 63) as usize;
        char::from(if i == 63 { slash } else { ALPHABET[i] })
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (k, &b)| n | (u32::from(b) << (16 - 8 * k)));
        let symbols = chunk.len() + 1;
        for k in 0..4 {
            if k < symbols {
                out.push(sym(n >> (18 - 6 * k)));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// A UID set for a command, consecutive UIDs as ranges: `3:5,9`. `uids` ascending.
pub(crate) fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && end.checked_add(1) == Some(uids[i + 1]) {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}
