//! Relative reference resolution (RFC 3986 section 5.2), string-based on purpose.
//!
//! A URL parser such as the `url` crate normalizes what it parses (case of the host,
//! percent-encoding, IDNA). Feed identity must not change that way (an Atom id is compared
//! character by character), and links are handed on, not fetched here, so resolution only
//! joins strings. The behaviour follows what feed consumers expect from Python's `urljoin`
//! (which feedparser uses): a reference with a different scheme, or one whose scheme does not
//! use relative references (`tag:`, `urn:`, `mailto:`), is returned unchanged.

/// Schemes that relative references may be resolved against.
const RELATIVE_SCHEMES: &[&str] = &[
    "", "ftp", "http", "gopher", "nntp", "imap", "wais", "file", "https", "shttp", "mms",
    "prospero", "rtsp", "rtspu", "sftp", "svn", "svn+ssh", "ws", "wss",
];

/// Schemes a base URI or a link inside feed HTML may use; anything else (`javascript:`,
/// `data:`, `vbscript:`) is dropped where it could become a base or a clickable link.
const SAFE_SCHEMES: &[&str] = &[
    "file", "ftp", "gopher", "h323", "hdl", "http", "https", "imap", "magnet", "mailto", "mms",
    "news", "nntp", "prospero", "rsync", "rtsp", "rtspu", "sftp", "shttp", "sip", "sips", "snews",
    "svn", "svn+ssh", "telnet", "wais", "aim", "callto", "cvs", "facetime", "feed", "git", "gtalk",
    "irc", "ircs", "irc6", "itms", "msnim", "skype", "ssh", "smb", "ymsg",
];

/// The scheme of `s` (lowercased), if it starts with one.
pub(crate) fn scheme_of(s: &str) -> Option<String> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    if !first.is_ascii_alphabetic()
        || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    Some(scheme.to_ascii_lowercase())
}

struct Parts<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn split(s: &str) -> Parts<'_> {
    let (rest, fragment) = match s.find('#') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (rest, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (scheme, rest) = match scheme_of(rest) {
        Some(sc) => (Some(&rest[..sc.len()]), &rest[sc.len() + 1..]),
        None => (None, rest),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    Parts {
        scheme,
        authority,
        path,
        query,
        fragment,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        if i == 0 && absolute {
            continue;
        }
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    if absolute {
        s.push('/');
    }
    s.push_str(&out.join("/"));
    if trailing_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Collapse extra slashes after `scheme://` (`http:////example.com` is a common typo).
fn fix_slashes(uri: &str) -> std::borrow::Cow<'_, str> {
    if let Some(sc) = scheme_of(uri) {
        let after = &uri[sc.len() + 1..];
        if let Some(rest) = after.strip_prefix("//") {
            let trimmed = rest.trim_start_matches('/');
            if trimmed.len() != rest.len() {
                return format!("{}://{}", &uri[..sc.len()], trimmed).into();
            }
        }
    }
    uri.into()
}

/// Resolve `reference` against `base`. An empty base returns the reference as written.
pub fn resolve(base: &str, reference: &str) -> String {
    let reference = fix_slashes(reference);
    let reference = reference.as_ref();
    if base.is_empty() {
        return reference.to_string();
    }
    if reference.is_empty() {
        return base.to_string();
    }
    let b = split(base);
    let r = split(reference);
    let base_scheme = b.scheme.map(str::to_ascii_lowercase).unwrap_or_default();
    let ref_scheme = r.scheme.map(str::to_ascii_lowercase);
    if let Some(rs) = &ref_scheme
        && (rs != &base_scheme || !RELATIVE_SCHEMES.contains(&rs.as_str()))
    {
        return reference.to_string();
    }
    if !RELATIVE_SCHEMES.contains(&base_scheme.as_str()) {
        return reference.to_string();
    }
    let (authority, path, query) = if r.authority.is_some() {
        (r.authority, remove_dot_segments(r.path), r.query)
    } else if r.path.is_empty() {
        (b.authority, b.path.to_string(), r.query.or(b.query))
    } else if r.path.starts_with('/') {
        (b.authority, remove_dot_segments(r.path), r.query)
    } else {
        let merged = if b.authority.is_some() && b.path.is_empty() {
            format!("/{}", r.path)
        } else {
            match b.path.rfind('/') {
                Some(i) => format!("{}{}", &b.path[..=i], r.path),
                None => r.path.to_string(),
            }
        };
        (b.authority, remove_dot_segments(&merged), r.query)
    };
    let mut out = String::with_capacity(base.len() + reference.len());
    if !base_scheme.is_empty() {
        out.push_str(&base_scheme);
        out.push(':');
    }
    if let Some(a) = authority {
        out.push_str("//");
        out.push_str(a);
    }
    out.push_str(&path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = r.fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Whether a URI's scheme is one a link or a base may safely use. A URI without a scheme
/// (relative) is not judged here.
pub(crate) fn is_safe_scheme(uri: &str) -> bool {
    match scheme_of(uri.trim()) {
        Some(s) => SAFE_SCHEMES.contains(&s.as_str()),
        None => false,
    }
}

/// Resolve `reference` against `base` and accept the result only if it uses a safe scheme.
/// With an empty base the reference is returned as written; with an empty reference, the
/// base itself if it is safe (or relative).
pub(crate) fn safe_absolute(base: &str, reference: &str) -> Option<String> {
    if base.is_empty() {
        return Some(reference.to_string());
    }
    if reference.is_empty() {
        return match scheme_of(base) {
            None => Some(base.to_string()),
            Some(s) if SAFE_SCHEMES.contains(&s.as_str()) => Some(base.to_string()),
            Some(_) => None,
        };
    }
    let joined = resolve(base, reference);
    is_safe_scheme(&joined).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3986_examples() {
        let base = "http://a/b/c/d;p?q";
        for (r, want) in [
            ("g:h", "g:h"),
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q#s"),
            ("g#s", "http://a/b/c/g#s"),
            (";x", "http://a/b/c/;x"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            ("g..", "http://a/b/c/g.."),
            ("./../g", "http://a/b/g"),
            ("g/./h", "http://a/b/c/g/h"),
            ("g/../h", "http://a/b/c/h"),
        ] {
            assert_eq!(resolve(base, r), want, "{r}");
        }
    }

    #[test]
    fn feed_cases() {
        assert_eq!(
            resolve("", "HTTP://www.example.org/thing"),
            "HTTP://www.example.org/thing"
        );
        assert_eq!(
            resolve("http://127.0.0.1:8097/tests/x.xml", "/relative/uri"),
            "http://127.0.0.1:8097/relative/uri"
        );
        assert_eq!(
            resolve("http://a/b", "tag:example.com,2004:x"),
            "tag:example.com,2004:x"
        );
        assert_eq!(resolve("tag:x", "y"), "y");
        assert_eq!(
            resolve("http://any.test/", "\u{c0}"),
            "http://any.test/\u{c0}"
        );
        assert_eq!(resolve("", "http:////example.com/"), "http://example.com/");
        assert_eq!(resolve("http://example.com", "a"), "http://example.com/a");
    }

    #[test]
    fn safety() {
        assert_eq!(safe_absolute("http://a/", "javascript:alert(1)"), None);
        assert_eq!(
            safe_absolute("http://a/", "/x").as_deref(),
            Some("http://a/x")
        );
        assert_eq!(safe_absolute("javascript:alert(1)", ""), None);
        assert_eq!(
            safe_absolute("/feed/pg.cgi", "").as_deref(),
            Some("/feed/pg.cgi")
        );
    }
}
