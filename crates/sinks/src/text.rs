//! Small I/O-free helpers the payload builders share: bounded truncation, escaping, dates,
//! URL checks and redaction.

use tidings_core::notification::MAX_URL;

use crate::{Error, Message};

/// `s` cut to at most `max` characters, ending in '…' when cut.
pub(crate) fn cut_chars(s: &str, max: usize) -> String {
    tidings_core::notification::truncate_chars(s, max)
}

/// `s` cut to at most `max` bytes (on a character boundary), ending in '…' when cut.
pub(crate) fn cut_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let budget = max.saturating_sub('…'.len_utf8());
    let mut end = budget.min(s.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    if max >= '…'.len_utf8() {
        out.push('…');
    }
    out
}

/// One line: control characters (newlines included) become spaces, runs of spaces one.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// Multi-line text without control characters other than line feeds and tabs.
pub(crate) fn strip_controls(s: &str) -> String {
    s.replace("\r\n", "\n")
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// HTML for plain text: escaped, line breaks kept as `<br>`.
pub(crate) fn html_text(s: &str) -> String {
    html_escape(s).replace("\r\n", "\n").replace('\n', "<br>\n")
}

/// An http(s) URL with a host, short enough to pass on. Only these become links.
pub(crate) fn is_http_url(s: &str) -> bool {
    if s.len() > MAX_URL || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    match url::Url::parse(s) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        }
        Err(_) => false,
    }
}

/// The link a short form (SMS, chat) points to: the web UI's page, else the click URL.
pub(crate) fn best_link(msg: &Message) -> Option<&str> {
    msg.web_url.as_deref().filter(|u| is_http_url(u)).or(msg
        .notification
        .click
        .as_deref()
        .filter(|u| is_http_url(u)))
}

/// The click URL when it is an http(s) link.
pub(crate) fn click_link(msg: &Message) -> Option<&str> {
    msg.notification.click.as_deref().filter(|u| is_http_url(u))
}

/// The web UI link when it is an http(s) link.
pub(crate) fn web_link(msg: &Message) -> Option<&str> {
    msg.web_url.as_deref().filter(|u| is_http_url(u))
}

/// RFC 3339 UTC (`2024-05-01T12:00:00Z`) for Unix seconds; out-of-range values clamp.
pub(crate) fn rfc3339(secs: i64) -> String {
    // 0000-01-01 .. 9999-12-31, so the year always has four digits.
    let secs = secs.clamp(-62_167_219_200, 253_402_300_799);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Checks a user-given http(s) URL field; returns it parsed.
pub(crate) fn http_url_field(field: &str, value: &str) -> Result<url::Url, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::Invalid(format!("{field} is missing")));
    }
    if value.len() > MAX_URL {
        return Err(Error::Invalid(format!(
            "{field} is too long: at most {MAX_URL} characters"
        )));
    }
    let url = url::Url::parse(value)
        .map_err(|e| Error::Invalid(format!("{field} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Invalid(format!(
            "{field} must be an http or https URL, not {}:",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::Invalid(format!("{field} has no host")));
    }
    if url.fragment().is_some() {
        return Err(Error::Invalid(format!("{field} must not have a #fragment")));
    }
    Ok(url)
}

/// A URL as it may be shown: no user or password, query values replaced by '…'.
pub(crate) fn redact_url(value: &str) -> String {
    let Ok(url) = url::Url::parse(value) else {
        return "(invalid URL)".into();
    };
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=…")).collect();
        out.push('?');
        out.push_str(&keys.join("&"));
    }
    out
}

/// Shows a secret-bearing URL path with its last `hidden` segments replaced by '…'.
pub(crate) fn redact_path_tail(value: &str, hidden: usize) -> String {
    let Ok(url) = url::Url::parse(value) else {
        return "(invalid URL)".into();
    };
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    let keep = segments.len().saturating_sub(hidden);
    for (i, seg) in segments.iter().enumerate() {
        out.push('/');
        out.push_str(if i < keep { seg } else { "…" });
    }
    out
}

/// A credential field: present, one token of printable characters, bounded.
pub(crate) fn credential(field: &str, value: &str, max: usize) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::Invalid(format!("{field} is missing")));
    }
    if value.len() > max {
        return Err(Error::Invalid(format!(
            "{field} is too long: at most {max} characters"
        )));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::Invalid(format!(
            "{field} must not contain spaces or control characters"
        )));
    }
    Ok(value.to_owned())
}

/// A short sha256-based tag of `s` (hex), for derived identifiers.
pub(crate) fn short_hash(s: &str, hex_chars: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = hex::encode(Sha256::digest(s.as_bytes()));
    h.truncate(hex_chars);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_never_split_characters() {
        assert_eq!(cut_bytes("héllo", 100), "héllo");
        let cut = cut_bytes("ééééé", 6);
        assert!(cut.len() <= 6 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut_bytes("abc", 0), "");
        assert_eq!(cut_bytes("abcdef", 2), "");
        assert_eq!(cut_chars("abcdef", 4), "abc…");
    }

    #[test]
    fn one_line_and_escaping() {
        assert_eq!(one_line(" a\r\n b\t\tc \u{7}"), "a b c");
        assert_eq!(
            html_escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(html_text("a\n<b>"), "a<br>\n&lt;b&gt;");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn http_urls() {
        assert!(is_http_url("https://example.org/x?y=1"));
        assert!(!is_http_url("javascript:alert(1)"));
        assert!(!is_http_url("mailto:a@b.c"));
        assert!(!is_http_url("https://exa mple.org/"));
        assert!(http_url_field("url", "ftp://x/").is_err());
        assert!(http_url_field("url", "https://x/#frag").is_err());
        assert_eq!(
            redact_url("https://u:p@h.example:8443/a/b?token=s3cr3t&x=1"),
            "https://h.example:8443/a/b?token=…&x=…"
        );
        assert_eq!(
            redact_path_tail("https://hooks.slack.com/services/T1/B2/sekrit", 1),
            "https://hooks.slack.com/services/T1/B2/…"
        );
    }
}
