//! From bytes to text: which character encoding a fetched feed is in.
//!
//! Three sources can name an encoding: the byte order mark (or the way `<?xml` looks in
//! UTF-16/32), the XML declaration, and the `charset` of the HTTP `Content-Type`. Their
//! precedence follows RFC 3023 the way feedparser applies it:
//!
//! - `application/xml`, `application/*+xml` and friends: HTTP charset, else the XML
//!   declaration, else UTF-8;
//! - `text/xml`, `text/*+xml`: HTTP charset, else US-ASCII (the declaration is ignored);
//! - JSON types (or no type and a body that starts with `{`): HTTP charset, else UTF-8;
//! - any other `text/*`: HTTP charset, else US-ASCII, and the document is flagged bozo
//!   (it is not served as a feed);
//! - no Content-Type at all (a local file): the XML declaration, else UTF-8.
//!
//! The chosen encoding is tried first; when the bytes are not valid in it, the declaration,
//! the BOM, UTF-8, Windows-1252 and ISO-8859-2 are tried in turn and the document is marked
//! bozo ("declared as X, parsed as Y"). The last one always succeeds, so text always comes out.

use encoding_rs::Encoding;

/// The outcome of charset detection.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub text: String,
    /// The encoding used, as feeds and feedparser name it (`utf-8`, `us-ascii`, `gb18030`).
    pub encoding: String,
    pub is_json: bool,
    /// Problems worth a bozo flag.
    pub errors: Vec<String>,
}

/// Split a Content-Type header into its lowercased MIME type and its charset parameter.
pub(crate) fn parse_content_type(header: &str) -> (String, String) {
    let mut parts = header.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut charset = String::new();
    for part in parts {
        if let Some((k, v)) = part.split_once('=')
            && k.trim().eq_ignore_ascii_case("charset")
        {
            charset = v
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_ascii_lowercase();
        }
    }
    (mime, charset)
}

/// The encoding implied by the first bytes, and how many bytes of BOM to skip.
fn sniff_bom(data: &[u8]) -> (Option<&'static str>, usize) {
    match data {
        [0x00, 0x00, 0xFE, 0xFF, ..] => (Some("utf-32be"), 4),
        [0xFF, 0xFE, 0x00, 0x00, ..] => (Some("utf-32le"), 4),
        [0xFE, 0xFF, a, b, ..] if !(*a == 0 && *b == 0) => (Some("utf-16be"), 2),
        [0xFF, 0xFE, a, b, ..] if !(*a == 0 && *b == 0) => (Some("utf-16le"), 2),
        [0xFE, 0xFF] => (Some("utf-16be"), 2),
        [0xFF, 0xFE] => (Some("utf-16le"), 2),
        [0xEF, 0xBB, 0xBF, ..] => (Some("utf-8"), 3),
        [0x00, 0x3C, 0x00, 0x3F, ..] => (Some("utf-16be"), 0),
        [0x3C, 0x00, 0x3F, 0x00, ..] => (Some("utf-16le"), 0),
        [0x00, 0x00, 0x00, 0x3C, ..] => (Some("utf-32be"), 0),
        [0x3C, 0x00, 0x00, 0x00, ..] => (Some("utf-32le"), 0),
        _ => (None, 0),
    }
}

/// The `encoding="..."` of an XML declaration at the very start of `text`.
fn declared_encoding(text: &str) -> Option<String> {
    let head = text.get(..text.len().min(512)).unwrap_or(text);
    let rest = head.strip_prefix("<?")?;
    let line_end = rest.find('\n').unwrap_or(rest.len());
    let decl = &rest[..line_end];
    decl.find("?>")?;
    let at = decl.find("encoding=")?;
    let after = &decl[at + "encoding=".len()..];
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    let end = value.find(quote)?;
    Some(value[..end].trim().to_ascii_lowercase())
}

/// Decode `data` strictly in `label`; `None` if the label is unknown or the bytes are invalid.
pub(crate) fn decode_strict(data: &[u8], label: &str) -> Option<String> {
    match label {
        "us-ascii" | "ascii" | "ansi_x3.4-1968" | "646" | "iso646-us" => data
            .is_ascii()
            .then(|| String::from_utf8_lossy(data).into_owned()),
        "iso-8859-1" | "iso8859-1" | "latin-1" | "latin1" | "l1" | "iso_8859-1" | "8859" => {
            Some(data.iter().map(|&b| b as char).collect())
        }
        "windows-1252" | "cp1252" => {
            // Python (and so every feed test suite) treats these five as undefined.
            if data
                .iter()
                .any(|b| matches!(b, 0x81 | 0x8D | 0x8F | 0x90 | 0x9D))
            {
                return None;
            }
            decode_with(encoding_rs::WINDOWS_1252, data)
        }
        "utf-32" | "utf32" | "utf_32" | "u32" | "ucs-4" | "utf-32le" | "utf-32be" => {
            let big = label == "utf-32be";
            decode_utf32(data, big)
        }
        "utf-16" | "utf16" | "utf_16" | "u16" | "ucs-2" => {
            let (enc, skip) = match data {
                [0xFE, 0xFF, ..] => (encoding_rs::UTF_16BE, 2),
                [0xFF, 0xFE, ..] => (encoding_rs::UTF_16LE, 2),
                _ => (encoding_rs::UTF_16LE, 0),
            };
            decode_with(enc, &data[skip..])
        }
        "utf-16be" => decode_with(encoding_rs::UTF_16BE, data),
        "utf-16le" => decode_with(encoding_rs::UTF_16LE, data),
        "utf-8" | "utf8" | "u8" | "utf_8" => std::str::from_utf8(data).ok().map(str::to_string),
        other => {
            let label = match other {
                // Supersets that decode everything the narrower label can.
                "gb2312" => "gb18030",
                "tis-620" | "tis620" => "windows-874",
                "shift_jis" | "sjis" => "shift_jis",
                "euc_kr" | "euckr" => "euc-kr",
                "euc_jp" | "eucjp" => "euc-jp",
                "koi8_r" | "koi8r" => "koi8-r",
                o => o,
            };
            let enc = Encoding::for_label(label.as_bytes())?;
            if enc == encoding_rs::REPLACEMENT {
                return None;
            }
            decode_with(enc, data)
        }
    }
}

fn decode_with(enc: &'static Encoding, data: &[u8]) -> Option<String> {
    enc.decode_without_bom_handling_and_without_replacement(data)
        .map(|c| c.into_owned())
}

fn decode_utf32(data: &[u8], big_endian: bool) -> Option<String> {
    if !data.len().is_multiple_of(4) {
        return None;
    }
    let mut out = String::with_capacity(data.len() / 4);
    for chunk in data.chunks_exact(4) {
        let bytes = [chunk[0], chunk[1], chunk[2], chunk[3]];
        let v = if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        };
        out.push(char::from_u32(v)?);
    }
    Some(out)
}

/// Guess an undeclared legacy encoding from the bytes (the detector Firefox uses).
fn detect(data: &[u8]) -> Option<String> {
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(data, true);
    let guess = detector.guess(None, chardetng::Utf8Detection::Deny);
    (guess != encoding_rs::WINDOWS_1252).then(|| guess.name().to_ascii_lowercase())
}

fn is_generic_unicode(label: &str) -> bool {
    matches!(
        label,
        "u16"
            | "utf-16"
            | "utf16"
            | "utf_16"
            | "u32"
            | "utf-32"
            | "utf32"
            | "utf_32"
            | "iso-10646-ucs-2"
            | "iso-10646-ucs-4"
            | "csucs4"
            | "csunicode"
            | "ucs-2"
            | "ucs-4"
    )
}

/// Decode a fetched document. `content_type` is the HTTP header, `None` when the document
/// did not come over HTTP.
pub(crate) fn decode(data: &[u8], content_type: Option<&str>) -> Decoded {
    let mut errors = Vec::new();
    let (bom, skip) = sniff_bom(data);
    let body = &data[skip..];

    // Read the declaration in an ASCII-compatible form.
    let xml_encoding = {
        let probe = &body[..body.len().min(1024)];
        let head = match bom {
            Some(enc) if enc != "utf-8" => decode_strict(probe, enc)
                .or_else(|| decode_strict(&probe[..probe.len() & !3], enc))
                .unwrap_or_default(),
            _ => String::from_utf8_lossy(probe).into_owned(),
        };
        match declared_encoding(&head) {
            Some(e) if bom.is_some() && is_generic_unicode(&e) => bom.map(str::to_string),
            other => other,
        }
    };

    let (mime, http_charset) = content_type.map(parse_content_type).unwrap_or_default();
    let trimmed_start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &body[i..])
        .unwrap_or(&[]);
    let xml_app = [
        "application/xml",
        "application/xml-dtd",
        "application/xml-external-parsed-entity",
    ];
    let xml_text = ["text/xml", "text/xml-external-parsed-entity"];
    let json_types = ["application/feed+json", "application/json"];
    let mut is_json = false;
    // Without a declaration, what the first bytes show (UTF-16/32) is the declaration.
    let declared_or = |default: &str| {
        xml_encoding
            .clone()
            .or_else(|| bom.map(str::to_string))
            .unwrap_or_else(|| default.to_string())
    };
    let chosen = if content_type.is_none() {
        if trimmed_start.first() == Some(&b'{') {
            is_json = true;
            "utf-8".to_string()
        } else {
            declared_or("utf-8")
        }
    } else if xml_app.contains(&mime.as_str())
        || (mime.starts_with("application/") && mime.ends_with("+xml"))
    {
        if http_charset.is_empty() {
            declared_or("utf-8")
        } else {
            http_charset.clone()
        }
    } else if xml_text.contains(&mime.as_str())
        || (mime.starts_with("text/") && mime.ends_with("+xml"))
    {
        if http_charset.is_empty() {
            "us-ascii".into()
        } else {
            http_charset.clone()
        }
    } else if json_types.contains(&mime.as_str())
        || (mime.is_empty() && trimmed_start.first() == Some(&b'{'))
    {
        is_json = true;
        if http_charset.is_empty() {
            "utf-8".into()
        } else {
            http_charset.clone()
        }
    } else if mime.starts_with("text/") {
        errors.push(format!("{mime} is not an XML or JSON media type"));
        if http_charset.is_empty() {
            "us-ascii".into()
        } else {
            http_charset.clone()
        }
    } else {
        if !mime.is_empty() {
            errors.push(format!("{mime} is not an XML or JSON media type"));
        }
        declared_or("utf-8")
    };
    let chosen = if chosen == "gb2312" {
        "gb18030".to_string()
    } else {
        chosen
    };
    let xml_encoding = xml_encoding.map(|e| {
        if e == "gb2312" {
            "gb18030".to_string()
        } else {
            e
        }
    });

    let mut tried: Vec<String> = Vec::new();
    let candidates = [
        Some(chosen.clone()),
        xml_encoding.clone(),
        bom.map(str::to_string),
        None, // statistical detection, only if all of the above failed
        Some("utf-8".to_string()),
        Some("windows-1252".to_string()),
    ];
    for (i, candidate) in candidates.into_iter().enumerate() {
        let candidate = match candidate {
            Some(c) => c,
            None if i == 3 => match detect(body) {
                Some(c) => c,
                None => continue,
            },
            None => continue,
        };
        if candidate.is_empty() || tried.contains(&candidate) {
            continue;
        }
        tried.push(candidate.clone());
        if let Some(text) = decode_strict(body, &candidate) {
            if candidate != chosen {
                errors.push(format!(
                    "document declared as {chosen}, but parsed as {candidate}"
                ));
            }
            return Decoded {
                text,
                encoding: candidate,
                is_json,
                errors,
            };
        }
    }
    // ISO-8859-2 (like ISO-8859-1) maps every byte, so this is the end of the line.
    errors.push(format!(
        "document declared as {chosen}, but parsed as iso-8859-2 (nothing else fit)"
    ));
    let text = decode_with(encoding_rs::ISO_8859_2, body)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Decoded {
        text,
        encoding: "iso-8859-2".into(),
        is_json,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(data: &[u8], ct: Option<&str>) -> (String, bool) {
        let d = decode(data, ct);
        (d.encoding, !d.errors.is_empty())
    }

    #[test]
    fn precedence() {
        let decl_latin = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><rss/>";
        // No HTTP: the declaration rules.
        assert_eq!(enc(decl_latin, None), ("iso-8859-1".into(), false));
        assert_eq!(enc(b"<rss/>", None), ("utf-8".into(), false));
        // application/xml: charset, else declaration, else utf-8.
        assert_eq!(
            enc(decl_latin, Some("application/xml")),
            ("iso-8859-1".into(), false)
        );
        assert_eq!(
            enc(decl_latin, Some("application/rss+xml; charset='us-ascii'")),
            ("us-ascii".into(), false)
        );
        assert_eq!(
            enc(b"<rss/>", Some("application/atom+xml")),
            ("utf-8".into(), false)
        );
        // text/xml: charset, else us-ascii, declaration ignored.
        assert_eq!(
            enc(decl_latin, Some("text/xml")),
            ("us-ascii".into(), false)
        );
        assert_eq!(
            enc(decl_latin, Some("text/xml;charset = windows-1252")),
            ("windows-1252".into(), false)
        );
        // A bogus parameter is not a charset.
        assert_eq!(
            enc(b"<rss/>", Some("text/xml; charset:iso-8859-1")),
            ("us-ascii".into(), false)
        );
        // gb2312 is read as its superset.
        assert_eq!(
            enc(b"<rss/>", Some("application/xml; charset=gb2312")).0,
            "gb18030"
        );
    }

    #[test]
    fn fallbacks_are_bozo() {
        // text/xml without charset is ASCII; a non-ASCII byte forces a fallback.
        let d = decode("<rss><title>é</title></rss>".as_bytes(), Some("text/xml"));
        assert_eq!(d.encoding, "utf-8");
        assert!(!d.errors.is_empty());
        assert!(d.text.contains('é'));
        // Not a feed media type at all.
        assert!(enc(b"<rss/>", Some("text/plain")).1);
        // Undeclared Cyrillic in KOI8-R is recognized.
        let koi8: &[u8] = b"<rss><title>\xf0\xd2\xc9\xd7\xc5\xd4, \xcd\xc9\xd2! \xfc\xd4\xcf \xd4\xc5\xd3\xd4\xcf\xd7\xd9\xca \xd4\xc5\xcb\xd3\xd4 \xce\xc1 \xd2\xd5\xd3\xd3\xcb\xcf\xcd \xd1\xda\xd9\xcb\xc5.</title></rss>";
        let d = decode(koi8, None);
        assert!(d.encoding.starts_with("koi8"), "{}", d.encoding);
        assert!(
            d.text
                .contains("\u{41f}\u{440}\u{438}\u{432}\u{435}\u{442}"),
            "{}",
            d.text
        );
        // Undecodable as declared: windows-1252 wins.
        let d = decode(
            b"<?xml version='1.0' encoding='utf-8'?><rss>\xe9</rss>",
            None,
        );
        assert_eq!(d.encoding, "windows-1252");
        assert!(d.text.contains('é'));
        // An unknown label.
        assert!(enc(b"<?xml version='1.0' encoding='bogus'?><rss/>", None).1);
    }

    #[test]
    fn boms_and_wide_encodings() {
        let mut utf16 = vec![0xFF, 0xFE];
        for u in "<?xml version=\"1.0\" encoding=\"utf-16\"?><rss/>".encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        let d = decode(&utf16, None);
        assert_eq!(d.encoding, "utf-16le");
        assert!(d.text.ends_with("<rss/>"));
        let mut utf32 = Vec::new();
        for c in "<?xml version=\"1.0\"?><rss/>".chars() {
            utf32.extend_from_slice(&(c as u32).to_be_bytes());
        }
        let d = decode(&utf32, None);
        assert_eq!(d.encoding, "utf-32be");
        assert!(d.text.ends_with("<rss/>"));
        let d = decode(b"\xef\xbb\xbf<rss/>", None);
        assert_eq!(d.text, "<rss/>");
        let d = decode(
            b"<?xml version='1.0' encoding='euc-kr'?><t>\xb3\xe2</t>",
            None,
        );
        assert!(d.text.contains('\u{b144}'), "{}", d.text);
    }

    #[test]
    fn json_sniffing() {
        let d = decode(b"  {\"version\": 1}", None);
        assert!(d.is_json);
        let d = decode(b"{}", Some("application/feed+json"));
        assert!(d.is_json);
    }
}
