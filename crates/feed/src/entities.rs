//! Character and entity references: the XML predefined five, numeric references, the HTML
//! named-entity set (HTML5's table, with XHTML 1.0's values where the two disagree) and the
//! Windows-1252 repair of C1 control characters that feeds routinely contain.
//!
//! Nothing here expands a DTD-declared entity: a name is either predefined, an HTML entity, or
//! left in the text as written.

use std::borrow::Cow;

/// The XML predefined entities.
pub(crate) fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// An HTML named entity (without `&` and `;`), as a string because a few expand to two code
/// points. XHTML 1.0 (the entity sets feeds were written against) and HTML5 disagree only on
/// `lang`/`rang`; the XHTML values win, which is also what every other feed parser returns.
pub(crate) fn html_named(name: &str) -> Option<&'static str> {
    match name {
        "lang" => return Some("\u{2329}"),
        "rang" => return Some("\u{232A}"),
        _ => {}
    }
    let table = &html_escape::NAMED_ENTITIES;
    table
        .binary_search_by(|(n, _)| (*n).cmp(name.as_bytes()))
        .ok()
        .map(|i| table[i].1)
}

/// Whether `name` is one of the 252 HTML 4 entities (the set that HTML-in-feeds guessing trusts).
pub(crate) fn is_html4_name(name: &str) -> bool {
    HTML4_NAMES.binary_search(&name).is_ok()
}

/// Windows-1252's meaning of the C1 range, which feeds produced by "latin-1" software put there.
pub(crate) fn cp1252_c1(c: char) -> Option<char> {
    Some(match c as u32 {
        0x80 => '\u{20AC}',
        0x82 => '\u{201A}',
        0x83 => '\u{0192}',
        0x84 => '\u{201E}',
        0x85 => '\u{2026}',
        0x86 => '\u{2020}',
        0x87 => '\u{2021}',
        0x88 => '\u{02C6}',
        0x89 => '\u{2030}',
        0x8A => '\u{0160}',
        0x8B => '\u{2039}',
        0x8C => '\u{0152}',
        0x8E => '\u{017D}',
        0x91 => '\u{2018}',
        0x92 => '\u{2019}',
        0x93 => '\u{201C}',
        0x94 => '\u{201D}',
        0x95 => '\u{2022}',
        0x96 => '\u{2013}',
        0x97 => '\u{2014}',
        0x98 => '\u{02DC}',
        0x99 => '\u{2122}',
        0x9A => '\u{0161}',
        0x9B => '\u{203A}',
        0x9C => '\u{0153}',
        0x9E => '\u{017E}',
        0x9F => '\u{0178}',
        _ => return None,
    })
}

/// Replace C1 controls that have a Windows-1252 meaning ("demoronize").
pub(crate) fn fix_cp1252(s: String) -> String {
    if !s.chars().any(|c| cp1252_c1(c).is_some()) {
        return s;
    }
    s.chars().map(|c| cp1252_c1(c).unwrap_or(c)).collect()
}

/// The character a numeric reference stands for, HTML-style: C1 values mean Windows-1252,
/// and what cannot be a character becomes U+FFFD.
pub(crate) fn numeric_char(v: u32) -> char {
    match char::from_u32(v) {
        Some('\0') | None => '\u{FFFD}',
        Some(c) => cp1252_c1(c).unwrap_or(c),
    }
}

/// Parse the body of a numeric reference (`#123` or `#x7B`, without `&`/`;`).
pub(crate) fn parse_numeric(body: &str) -> Option<u32> {
    let digits = body.strip_prefix('#')?;
    let (radix, digits) = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => (16, hex),
        None => (10, digits),
    };
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Decode every HTML character reference in `s` (named, decimal, hex); anything that is not a
/// reference is left as written. This is text-level decoding, the way a browser decodes the
/// text of an HTML document (a `;` is required for named references).
pub fn decode_html_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match reference_at(after) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// If `s` (the text right after an `&`) starts with a complete reference, its value and the
/// number of bytes it used (including the `;`).
pub(crate) fn reference_at(s: &str) -> Option<(Cow<'static, str>, usize)> {
    let semi = s.bytes().take(40).position(|b| b == b';')?;
    let body = &s[..semi];
    if body.starts_with('#') {
        let v = parse_numeric(body)?;
        return Some((Cow::Owned(numeric_char(v).to_string()), semi + 1));
    }
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let value = predefined(body)
        .map(|c| Cow::Owned(c.to_string()))
        .or_else(|| html_named(body).map(Cow::Borrowed))?;
    Some((value, semi + 1))
}

/// Escape text for inclusion in HTML/XML character data.
pub(crate) fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escape an attribute value for a double-quoted attribute.
pub(crate) fn escape_attr(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub(crate) const HTML4_NAMES: [&str; 252] = [
    "AElig", "Aacute", "Acirc", "Agrave", "Alpha", "Aring", "Atilde", "Auml", "Beta", "Ccedil",
    "Chi", "Dagger", "Delta", "ETH", "Eacute", "Ecirc", "Egrave", "Epsilon", "Eta", "Euml",
    "Gamma", "Iacute", "Icirc", "Igrave", "Iota", "Iuml", "Kappa", "Lambda", "Mu", "Ntilde", "Nu",
    "OElig", "Oacute", "Ocirc", "Ograve", "Omega", "Omicron", "Oslash", "Otilde", "Ouml", "Phi",
    "Pi", "Prime", "Psi", "Rho", "Scaron", "Sigma", "THORN", "Tau", "Theta", "Uacute", "Ucirc",
    "Ugrave", "Upsilon", "Uuml", "Xi", "Yacute", "Yuml", "Zeta", "aacute", "acirc", "acute",
    "aelig", "agrave", "alefsym", "alpha", "amp", "and", "ang", "aring", "asymp", "atilde", "auml",
    "bdquo", "beta", "brvbar", "bull", "cap", "ccedil", "cedil", "cent", "chi", "circ", "clubs",
    "cong", "copy", "crarr", "cup", "curren", "dArr", "dagger", "darr", "deg", "delta", "diams",
    "divide", "eacute", "ecirc", "egrave", "empty", "emsp", "ensp", "epsilon", "equiv", "eta",
    "eth", "euml", "euro", "exist", "fnof", "forall", "frac12", "frac14", "frac34", "frasl",
    "gamma", "ge", "gt", "hArr", "harr", "hearts", "hellip", "iacute", "icirc", "iexcl", "igrave",
    "image", "infin", "int", "iota", "iquest", "isin", "iuml", "kappa", "lArr", "lambda", "lang",
    "laquo", "larr", "lceil", "ldquo", "le", "lfloor", "lowast", "loz", "lrm", "lsaquo", "lsquo",
    "lt", "macr", "mdash", "micro", "middot", "minus", "mu", "nabla", "nbsp", "ndash", "ne", "ni",
    "not", "notin", "nsub", "ntilde", "nu", "oacute", "ocirc", "oelig", "ograve", "oline", "omega",
    "omicron", "oplus", "or", "ordf", "ordm", "oslash", "otilde", "otimes", "ouml", "para", "part",
    "permil", "perp", "phi", "pi", "piv", "plusmn", "pound", "prime", "prod", "prop", "psi",
    "quot", "rArr", "radic", "rang", "raquo", "rarr", "rceil", "rdquo", "real", "reg", "rfloor",
    "rho", "rlm", "rsaquo", "rsquo", "sbquo", "scaron", "sdot", "sect", "shy", "sigma", "sigmaf",
    "sim", "spades", "sub", "sube", "sum", "sup", "sup1", "sup2", "sup3", "supe", "szlig", "tau",
    "there4", "theta", "thetasym", "thinsp", "thorn", "tilde", "times", "trade", "uArr", "uacute",
    "uarr", "ucirc", "ugrave", "uml", "upsih", "upsilon", "uuml", "weierp", "xi", "yacute", "yen",
    "yuml", "zeta", "zwj", "zwnj",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html4_table_is_sorted_and_known_to_html5() {
        assert!(HTML4_NAMES.windows(2).all(|w| w[0] < w[1]));
        for name in HTML4_NAMES {
            assert!(html_named(name).is_some(), "{name}");
        }
    }

    #[test]
    fn named_numeric_and_unknown() {
        assert_eq!(decode_html_entities("a &amp; b"), "a & b");
        assert_eq!(
            decode_html_entities("&rArr;&hellip;&check;"),
            "\u{21D2}\u{2026}\u{2713}"
        );
        assert_eq!(
            decode_html_entities("&#8217;&#x2019;&#X2019;"),
            "\u{2019}\u{2019}\u{2019}"
        );
        // C1 references mean Windows-1252, as in browsers.
        assert_eq!(decode_html_entities("don&#146;t"), "don\u{2019}t");
        assert_eq!(decode_html_entities("&bogus; & &; &#;"), "&bogus; & &; &#;");
        assert_eq!(decode_html_entities("&rang;"), "\u{232A}");
        assert_eq!(decode_html_entities("&#0;&#x110000;"), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_text("1 < 2 & 3"), "1 &lt; 2 &amp; 3");
        assert_eq!(escape_attr("\"x\""), "&quot;x&quot;");
        assert_eq!(fix_cp1252("a\u{92}b".to_string()), "a\u{2019}b");
    }
}
