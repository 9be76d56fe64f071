//! Decoding an HTML page to text the way a browser picks its encoding, in short: a byte
//! order mark, else the HTTP `charset`, else a `<meta>` declaration near the top, else
//! UTF-8. Undecodable bytes become U+FFFD rather than an error.

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};

/// How far into the document a `<meta charset>` is looked for. Browsers look at 1024
/// bytes; real pages put long `<title>`s and scripts first, so be a little generous.
const PRESCAN_BYTES: usize = 4096;

pub(crate) fn decode(html: &[u8], content_type: Option<&str>) -> String {
    if let Some((encoding, bom_len)) = Encoding::for_bom(html) {
        let rest = html.get(bom_len..).unwrap_or_default();
        return encoding.decode_without_bom_handling(rest).0.into_owned();
    }
    let encoding = content_type
        .and_then(charset_param)
        .and_then(|label| Encoding::for_label(label.as_bytes()))
        .or_else(|| meta_charset(html))
        .unwrap_or(UTF_8);
    encoding.decode_without_bom_handling(html).0.into_owned()
}

/// The `charset` parameter of a `Content-Type` value.
pub(crate) fn charset_param(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
            (!value.is_empty()).then_some(value)
        } else {
            None
        }
    })
}

/// `<meta charset="…">` or `<meta http-equiv="Content-Type" content="…; charset=…">` in
/// the first bytes of the document.
fn meta_charset(html: &[u8]) -> Option<&'static Encoding> {
    let head = html.get(..PRESCAN_BYTES).unwrap_or(html);
    let lower = head.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = find(&lower[from..], b"<meta") {
        let tag_start = from + pos + b"<meta".len();
        let tag_end = find(&lower[tag_start..], b">").map_or(lower.len(), |e| tag_start + e);
        let tag = &lower[tag_start..tag_end];
        if let Some(label) = charset_in_tag(tag)
            && let Some(encoding) = Encoding::for_label(label)
        {
            // HTML spec: a UTF-16 declaration in the document itself cannot be right
            // (the document was readable as ASCII), and x-user-defined means windows-1252.
            return Some(match encoding.name() {
                "UTF-16LE" | "UTF-16BE" => UTF_8,
                "x-user-defined" => WINDOWS_1252,
                _ => encoding,
            });
        }
        from = tag_end;
    }
    None
}

fn charset_in_tag(tag: &[u8]) -> Option<&[u8]> {
    let at = find(tag, b"charset")?;
    let mut rest = &tag[at + b"charset".len()..];
    rest = trim_start(rest);
    rest = rest.strip_prefix(b"=")?;
    rest = trim_start(rest);
    rest = rest
        .strip_prefix(b"\"")
        .or_else(|| rest.strip_prefix(b"'"))
        .unwrap_or(rest);
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'"' | b'\'' | b';' | b'/' | b'>') || b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let label = &rest[..end];
    (!label.is_empty()).then_some(label)
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset_param_forms() {
        assert_eq!(
            charset_param("text/html; charset=ISO-8859-1"),
            Some("ISO-8859-1")
        );
        assert_eq!(charset_param("text/html;Charset=\"utf-8\""), Some("utf-8"));
        assert_eq!(charset_param("text/html"), None);
        assert_eq!(charset_param("text/html; charset="), None);
    }

    #[test]
    fn http_charset_is_used() {
        // "café" in Latin-1.
        let bytes = b"<p>caf\xe9</p>";
        assert_eq!(
            decode(bytes, Some("text/html; charset=iso-8859-1")),
            "<p>café</p>"
        );
    }

    #[test]
    fn meta_charset_is_used_without_http_charset() {
        let bytes = b"<html><head><meta charset=\"windows-1252\"><title>x</title></head><p>\x93quoted\x94</p>";
        assert!(decode(bytes, Some("text/html")).contains("\u{201c}quoted\u{201d}"));
        let bytes = b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=koi8-r\"><p>\xf0\xd2\xc9\xd7\xc5\xd4</p>";
        assert!(decode(bytes, None).contains("Привет"));
    }

    #[test]
    fn http_charset_beats_meta_and_bom_beats_both() {
        let bytes = b"<meta charset=koi8-r><p>caf\xe9</p>";
        assert!(decode(bytes, Some("text/html; charset=latin1")).contains("café"));
        let bytes = b"\xef\xbb\xbf<meta charset=koi8-r><p>caf\xc3\xa9</p>";
        assert!(decode(bytes, Some("text/html; charset=latin1")).contains("café"));
    }

    #[test]
    fn defaults_to_utf8_and_replaces_bad_bytes() {
        assert_eq!(decode("<p>naïve</p>".as_bytes(), None), "<p>naïve</p>");
        assert_eq!(decode(b"<p>\xff</p>", None), "<p>\u{fffd}</p>");
        // A UTF-16 declaration inside an ASCII-readable document means UTF-8.
        assert!(decode("<meta charset=utf-16><p>é</p>".as_bytes(), None).contains('é'));
    }
}
