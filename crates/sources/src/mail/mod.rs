//! mail: a received message turned into the fields of a notification, without I/O.
//!
//! [`parse_mail`] reads the raw RFC 5322 message with `mail-parser` (MIME structure,
//! RFC 2047 encoded words, charsets, quoted-printable and base64) and returns the subject
//! (→ title), the sender as `Name <addr>` (→ author), the Message-ID (→ dedupe key), the
//! text (the text/plain part, else the HTML part turned to plain text, else empty) and the
//! attachments by name, size and type. Malformed mail is never refused here: whatever can be
//! recovered is returned, and what was wrong is listed in `warnings`.
//!
//! It does not: store attachments, render HTML, verify signatures or DKIM, follow links,
//! or decide which user or source the mail is for (the SMTP edge's recipients say that).

mod html;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use mail_parser::{Address, HeaderName, Message, MessageParser, MimeHeaders, PartType};

/// The notification fields of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMail {
    /// The decoded Subject.
    pub subject: Option<String>,
    /// The first From address as `Name <addr>`, or just the address (or name).
    pub from: Option<String>,
    /// Where a reply goes: the Reply-To address, else the From address (bare `a@b`).
    pub reply_address: Option<String>,
    /// The Message-ID without its angle brackets.
    pub message_id: Option<String>,
    /// The message text with LF line ends, trimmed.
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// What was malformed and how it was recovered, for the operator and the curious.
    pub warnings: Vec<String>,
}

/// A part that is not the message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name given by the sender, or "unnamed" (a forwarded message: its subject).
    pub name: String,
    /// Decoded size in bytes.
    pub size: usize,
    /// "type/subtype", lowercased.
    pub mime: String,
}

static PARSER: LazyLock<MessageParser> = LazyLock::new(MessageParser::default);

/// Reads a raw message (as received by SMTP: headers, blank line, body). Never fails.
pub fn parse_mail(raw: &[u8]) -> ParsedMail {
    let mut warnings = Vec::new();
    if !has_header_body_separator(raw) {
        warnings.push("no blank line between header and body".to_owned());
    }
    // mail-parser is written to survive hostile input, and this is a belt over those
    // braces: a message that would panic it still becomes a notification.
    let parsed = std::panic::catch_unwind(|| PARSER.parse(raw));
    let message = match parsed {
        Ok(Some(message)) if !message.parts.is_empty() => message,
        Ok(_) => {
            warnings.push("not a parsable message; the raw text is used".to_owned());
            return raw_fallback(raw, warnings);
        }
        Err(_) => {
            warnings.push("the MIME parser failed; the raw text is used".to_owned());
            return raw_fallback(raw, warnings);
        }
    };
    let (text, used) = text(&message, &mut warnings);
    let mut mail = ParsedMail {
        subject: subject(&message, &mut warnings),
        from: from(&message, &mut warnings),
        reply_address: reply_address(&message),
        message_id: message_id(&message, &mut warnings),
        text,
        attachments: attachments(&message, used),
        warnings: Vec::new(),
    };
    check_structure(&message, raw, &mut warnings);
    if mail.text.is_empty() && message.text_body.is_empty() && message.html_body.is_empty() {
        warnings.push("no text or HTML body".to_owned());
    }
    mail.warnings = warnings;
    mail
}

fn has_header_body_separator(raw: &[u8]) -> bool {
    raw.windows(2).any(|w| w == b"\n\n") || raw.windows(4).any(|w| w == b"\r\n\r\n")
}

/// When the parser gives up: the whole message as text, so nothing is silently lost.
fn raw_fallback(raw: &[u8], warnings: Vec<String>) -> ParsedMail {
    ParsedMail {
        text: normalize_text(&String::from_utf8_lossy(raw)),
        warnings,
        ..ParsedMail::default()
    }
}

fn subject(message: &Message<'_>, warnings: &mut Vec<String>) -> Option<String> {
    let subject = message.subject().map(|s| collapse_spaces(s.trim()));
    if let Some(s) = &subject
        && has_broken_encoded_word(s)
    {
        warnings.push("Subject has a malformed encoded word, kept as is".to_owned());
    }
    if subject.is_none()
        && let Some(raw) = message.header_raw(HeaderName::Subject)
    {
        warnings.push("Subject could not be decoded, kept raw".to_owned());
        return Some(collapse_spaces(raw.trim())).filter(|s| !s.is_empty());
    }
    subject.filter(|s| !s.is_empty())
}

fn from(message: &Message<'_>, warnings: &mut Vec<String>) -> Option<String> {
    let formatted = message.from().and_then(format_address);
    if let Some(f) = &formatted
        && has_broken_encoded_word(f)
    {
        warnings.push("From has a malformed encoded word, kept as is".to_owned());
    }
    if formatted.is_none()
        && let Some(raw) = message.header_raw(HeaderName::From)
    {
        let raw = collapse_spaces(raw.trim());
        if !raw.trim_matches(['<', '>', '"', ' ']).is_empty() {
            warnings.push("From is not a valid address, kept raw".to_owned());
            return Some(raw);
        }
    }
    formatted
}

fn reply_address(message: &Message<'_>) -> Option<String> {
    let first = |a: Option<&Address<'_>>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::trim)
            .filter(|a| a.contains('@') && a.len() <= 254 && !a.contains(char::is_whitespace))
            .map(str::to_owned)
    };
    first(message.reply_to()).or_else(|| first(message.from()))
}

/// The new text of a reply: what comes before the quoted original (`> ` lines, an
/// "On … wrote:" line, a `-----Original Message-----` block) and before a signature (`-- `).
pub fn reply_text(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_end();
        if t == "-- " || t == "--" {
            break;
        }
        if t.starts_with('>') {
            // Quoted: stop if the rest is all quote (bottom quoting); skip inline quotes.
            if lines[i..]
                .iter()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('>'))
            {
                break;
            }
            continue;
        }
        let lower = t.trim().to_ascii_lowercase();
        if lower.starts_with("-----original message-----")
            || (lower.starts_with("on ") && lower.ends_with("wrote:"))
            || (lower.ends_with("wrote:")
                && lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with('>') || n.trim().is_empty()))
        {
            break;
        }
        out.push(t);
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    while out.first().is_some_and(|l| l.trim().is_empty()) {
        out.remove(0);
    }
    out.join("\n")
}

fn format_address(address: &Address<'_>) -> Option<String> {
    let addr = address.first()?;
    let name = addr
        .name()
        .map(|n| collapse_spaces(n.trim()))
        .filter(|n| !n.is_empty());
    let email = addr.address().map(str::trim).filter(|a| !a.is_empty());
    match (name, email) {
        (Some(name), Some(email)) if !name.eq_ignore_ascii_case(email) => {
            Some(format!("{name} <{email}>"))
        }
        (_, Some(email)) => Some(email.to_owned()),
        (Some(name), None) => Some(name),
        (None, None) => None,
    }
}

fn message_id(message: &Message<'_>, warnings: &mut Vec<String>) -> Option<String> {
    if let Some(id) = message.message_id() {
        let id = id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim();
        if !id.is_empty() {
            return Some(id.to_owned());
        }
    }
    // mail-parser wants `<id>`; senders that forget the brackets still mean an id.
    let raw = message.header_raw(HeaderName::MessageId)?;
    let id = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    if id.is_empty() || id.contains(char::is_whitespace) {
        warnings.push("Message-ID is malformed, ignored".to_owned());
        return None;
    }
    warnings.push("Message-ID lacks angle brackets, used as is".to_owned());
    Some(id.to_owned())
}

/// The text bodies (mail-parser picks them: text/plain of an alternative, inline text
/// parts of a mixed message, or the HTML part when there is no plain one), joined; and the
/// attachment taken as the text, if it came to that.
fn text(message: &Message<'_>, warnings: &mut Vec<String>) -> (String, Option<u32>) {
    let as_text = |id: u32| match message.parts.get(id as usize).map(|p| &p.body) {
        Some(PartType::Text(text)) => normalize_text(text),
        Some(PartType::Html(html)) => normalize_text(&html::html_to_text(html)),
        _ => String::new(),
    };
    let mut pieces: Vec<String> = Vec::new();
    // No text body listed, then an HTML one (e.g. inside a related part).
    for list in [&message.text_body, &message.html_body] {
        pieces.extend(list.iter().map(|&id| as_text(id)).filter(|t| !t.is_empty()));
        if !pieces.is_empty() {
            return (pieces.join("\n\n"), None);
        }
    }
    // Broken structure (an unclosed multipart, say) leaves the text among the attachments:
    // take the first unnamed text part.
    for &id in &message.attachments {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        if matches!(part.body, PartType::Text(_) | PartType::Html(_))
            && part.attachment_name().is_none()
        {
            let text = as_text(id);
            if !text.is_empty() {
                warnings.push("no text body; an unnamed text part is used as the text".to_owned());
                return (text, Some(id));
            }
        }
    }
    (String::new(), None)
}

fn attachments(message: &Message<'_>, taken_as_text: Option<u32>) -> Vec<Attachment> {
    message
        .attachments
        .iter()
        .filter(|&&id| Some(id) != taken_as_text)
        .filter_map(|&id| message.parts.get(id as usize))
        .map(|part| {
            let mime = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| match &part.body {
                    PartType::Message(_) => "message/rfc822".to_owned(),
                    PartType::Text(_) => "text/plain".to_owned(),
                    PartType::Html(_) => "text/html".to_owned(),
                    _ => "application/octet-stream".to_owned(),
                })
                .to_ascii_lowercase();
            let name = part
                .attachment_name()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .or_else(|| match &part.body {
                    PartType::Message(inner) => inner
                        .subject()
                        .map(|s| format!("{}.eml", collapse_spaces(s.trim()))),
                    _ => None,
                })
                .unwrap_or_else(|| "unnamed".to_owned());
            Attachment {
                name,
                size: part.len(),
                mime,
            }
        })
        .collect()
}

/// Problems mail-parser recovered from silently: say what they were.
fn check_structure(message: &Message<'_>, raw: &[u8], warnings: &mut Vec<String>) {
    let closed = closing_boundaries(raw);
    let mut encoding_problems = 0;
    let mut unknown_charsets: Vec<String> = Vec::new();
    for part in &message.parts {
        if part.is_encoding_problem {
            encoding_problems += 1;
        }
        let Some(ct) = part.content_type() else {
            continue;
        };
        if ct.ctype().eq_ignore_ascii_case("multipart") {
            let kind = ct.subtype().unwrap_or("?");
            match ct.attribute("boundary") {
                None => warnings.push(format!(
                    "multipart/{kind} without a boundary, read as a single part"
                )),
                Some(boundary) => {
                    if !closed.contains(boundary.as_bytes()) {
                        warnings.push(format!(
                            "multipart/{kind} is not closed (truncated?), read up to the end"
                        ));
                    }
                }
            }
        }
        if matches!(part.body, PartType::Text(_) | PartType::Html(_))
            && let Some(charset) = ct.attribute("charset")
            && encoding_rs::Encoding::for_label(charset.trim().as_bytes()).is_none()
            && !unknown_charsets
                .iter()
                .any(|c| c.eq_ignore_ascii_case(charset))
        {
            unknown_charsets.push(charset.to_owned());
        }
    }
    if encoding_problems > 0 {
        warnings.push(format!(
            "{encoding_problems} part(s) could not be decoded as declared, kept as raw text"
        ));
    }
    for charset in unknown_charsets {
        warnings.push(format!(
            "unknown charset {:?}, decoded as UTF-8",
            collapse_spaces(&charset)
        ));
    }
}

/// The boundaries closed somewhere in the message (`--boundary--` lines), in one pass.
fn closing_boundaries(raw: &[u8]) -> HashSet<&[u8]> {
    raw.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.trim_ascii_end();
            line.strip_prefix(b"--")?.strip_suffix(b"--")
        })
        .collect()
}

/// An encoded word the parser could not decode is left as `=?charset?X?...?=`.
fn has_broken_encoded_word(s: &str) -> bool {
    let Some(start) = s.find("=?") else {
        return false;
    };
    let rest = &s[start + 2..];
    let mut parts = rest.splitn(3, '?');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(_), Some(enc), Some(tail))
            if (enc.eq_ignore_ascii_case("q") || enc.eq_ignore_ascii_case("b")) && tail.contains("?=")
    )
}

/// Headers: folded whitespace and stray controls become single spaces.
fn collapse_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Bodies: LF line ends, no trailing spaces, at most one blank line in a row, trimmed.
fn normalize_text(s: &str) -> String {
    let s: Cow<'_, str> = if s.contains('\r') {
        Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(s)
    };
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.split('\n') {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank_run > 0 {
                out.push('\n');
            }
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}
