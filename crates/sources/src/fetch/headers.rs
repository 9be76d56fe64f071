//! Parsing of the response headers the poller acts on. I/O-free, tested without sockets.

use std::time::{Duration, SystemTime};

use url::Url;

/// `max-age` from `Cache-Control` values; `None` when absent or malformed.
pub(crate) fn cache_control_max_age(values: &[&str]) -> Option<u64> {
    let mut max_age = None;
    for directive in values.iter().flat_map(|v| v.split(',')) {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive, None),
        };
        // RFC 9111 §4.2.1: with duplicates, the first one counts.
        if name.eq_ignore_ascii_case("max-age")
            && let Some(secs) = value.and_then(|v| v.parse::<u64>().ok())
        {
            max_age.get_or_insert(secs);
        }
    }
    max_age
}

/// An `Expires` HTTP-date. Invalid values (RFC 9111 says "0" means already expired) yield
/// `None`: the caller then falls back to its own interval.
pub(crate) fn expires(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// `Retry-After` as delay-seconds or an HTTP-date, relative to `now`. A date in the past
/// means "retry now" (zero).
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// One `Link` header target with its relation types (lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub target: String,
    pub rels: Vec<String>,
}

/// Parses `Link` header values (RFC 8288): `<uri>; rel="hub self", <uri2>; rel=self`.
/// Targets are resolved against `base`; those that are not http(s) are dropped. Malformed
/// parts are skipped rather than failing the whole header.
pub(crate) fn links(values: &[&str], base: &Url) -> Vec<Link> {
    let mut out = Vec::new();
    for value in values {
        let mut rest = *value;
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
            if rest.is_empty() {
                break;
            }
            let Some(after_lt) = rest.strip_prefix('<') else {
                // Not a link-value: skip to the next top-level comma.
                rest = skip_to_comma(rest);
                continue;
            };
            let Some(end) = after_lt.find('>') else {
                break;
            };
            let target = &after_lt[..end];
            let (params, next) = split_params(&after_lt[end + 1..]);
            rest = next;
            let rels: Vec<String> = params
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("rel"))
                .take(1) // RFC 8288 §3.3: only the first rel parameter counts.
                .flat_map(|(_, v)| v.split_ascii_whitespace().map(str::to_ascii_lowercase))
                .collect();
            if rels.is_empty() {
                continue;
            }
            let Ok(url) = base.join(target.trim()) else {
                continue;
            };
            if matches!(url.scheme(), "http" | "https") {
                out.push(Link {
                    target: url.into(),
                    rels,
                });
            }
        }
    }
    out
}

/// Skips past the next comma that is not inside a quoted string.
fn skip_to_comma(s: &str) -> &str {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => return &s[i + 1..],
            _ => {}
        }
    }
    ""
}

/// Reads `; name=value; name="quoted, value"` up to the next top-level comma. Returns the
/// parameters and the rest after that comma.
fn split_params(s: &str) -> (Vec<(String, String)>, &str) {
    let mut params = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        match rest.chars().next() {
            Some(';') => rest = &rest[1..],
            Some(',') => return (params, &rest[1..]),
            None => return (params, ""),
            // Junk between parameters: drop the rest of this link-value.
            Some(_) => return (params, skip_to_comma(rest)),
        }
        rest = rest.trim_start();
        let name_end = rest
            .find(|c: char| c == '=' || c == ';' || c == ',' || c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_string();
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after_eq) = rest.strip_prefix('=') {
            rest = after_eq.trim_start();
            if let Some(quoted) = rest.strip_prefix('"') {
                let mut escaped = false;
                let mut end = quoted.len();
                for (i, c) in quoted.char_indices() {
                    if escaped {
                        value.push(c);
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = i + 1;
                        break;
                    } else {
                        value.push(c);
                    }
                }
                rest = &quoted[end.min(quoted.len())..];
            } else {
                let end = rest.find([';', ',']).unwrap_or(rest.len());
                value = rest[..end].trim().to_string();
                rest = &rest[end..];
            }
        }
        if !name.is_empty() {
            params.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_variants() {
        assert_eq!(cache_control_max_age(&["max-age=300"]), Some(300));
        assert_eq!(
            cache_control_max_age(&["public, Max-Age=\"60\", must-revalidate"]),
            Some(60)
        );
        assert_eq!(cache_control_max_age(&["public", "max-age=10"]), Some(10));
        assert_eq!(cache_control_max_age(&["max-age=5, max-age=9"]), Some(5));
        assert_eq!(cache_control_max_age(&["max-age=abc"]), None);
        assert_eq!(cache_control_max_age(&["public"]), None);
        assert_eq!(cache_control_max_age(&["no-cache, max-age=600"]), Some(600));
        assert_eq!(cache_control_max_age(&[]), None);
    }

    #[test]
    fn expires_dates() {
        let t = expires("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        assert_eq!(expires("0"), None);
        assert_eq!(expires("-1"), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_700);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(77))
        );
        // Past dates mean "now", not an error.
        let later = now + Duration::from_secs(1000);
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn link_headers() {
        let base = Url::parse("https://example.com/feeds/a.xml").unwrap();
        let got = links(
            &[
                r#"<https://hub.example/>; rel="hub", </feeds/a.xml>; rel="self""#,
                r#"<https://other.example/x,y>; title="a, b; c"; rel="Hub alternate""#,
                r#"<mailto:x@example.com>; rel=hub, <javascript:alert(1)>; rel=self"#,
                r#"garbage, <https://h2.example/>; rel=hub"#,
                r#"<https://norel.example/>; type="text/html""#,
            ],
            &base,
        );
        assert_eq!(
            got,
            vec![
                Link {
                    target: "https://hub.example/".into(),
                    rels: vec!["hub".into()]
                },
                Link {
                    target: "https://example.com/feeds/a.xml".into(),
                    rels: vec!["self".into()]
                },
                Link {
                    target: "https://other.example/x,y".into(),
                    rels: vec!["hub".into(), "alternate".into()]
                },
                Link {
                    target: "https://h2.example/".into(),
                    rels: vec!["hub".into()]
                },
            ]
        );
    }

    #[test]
    fn link_header_unterminated_does_not_loop() {
        let base = Url::parse("https://example.com/").unwrap();
        assert!(links(&["<https://a.example/; rel=hub"], &base).is_empty());
        assert!(links(&[r#"<https://a.example/>; rel="hub"#], &base).len() == 1);
        assert!(links(&[";;;,,,"], &base).is_empty());
    }
}
