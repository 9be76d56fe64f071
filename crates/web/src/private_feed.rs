//! Private Atom feeds: `GET /feeds/<secret>.atom` for feed readers, and their management under
//! `/api/v1/feeds` (list with URLs, create or rotate, delete).
//!
//! The feed URL is the credential: anyone holding it reads that history, which is what a feed
//! reader needs. It is looked up by its SHA-256 (see `tidings_routing::private_feed`); every
//! kind of miss is the same 404. Answers carry an `ETag` (from the newest history position,
//! the item count, the scope and the limit) and a `Last-Modified`, so a reader that polls
//! every few minutes gets a 304 and costs one indexed aggregate query.
//!
//! The Atom writer ([`render`]) is I/O-free. Everything in a notification is text: it is
//! written as `type="text"` and XML-escaped, and the characters XML 1.0 cannot carry (C0
//! controls other than tab, LF and CR; U+FFFE, U+FFFF) are dropped, so no input can break
//! the document or smuggle markup into a reader.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tidings_core::Notification;
use tidings_core::notification::truncate_chars;
use tidings_routing::history::{self, HistoryQuery};
use tidings_routing::private_feed::{self as store, FeedTarget, PrivateFeed};

use crate::AppState;
use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};

/// Entries in a feed unless `?limit=` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// Most entries `?limit=` may ask for.
pub const MAX_LIMIT: usize = 200;
/// Longest entry title made from a message's first line.
const TITLE_FROM_MESSAGE: usize = 120;
/// Bumped when the document's shape changes, so cached copies are not reused.
const FORMAT_VERSION: &str = "atom-1";

/// A private feed as the API shows it: with its URL.
#[derive(Debug, Serialize)]
pub struct FeedView {
    #[serde(flatten)]
    pub feed: PrivateFeed,
    /// `<base_url>/feeds/<secret>.atom`; `null` if the secret cannot be unsealed.
    pub url: Option<String>,
}

fn feed_url(state: &AppState, secret: &str) -> String {
    format!(
        "{}/feeds/{secret}.atom",
        state.cfg().base_url.trim_end_matches('/')
    )
}

fn view(state: &AppState, feed: PrivateFeed) -> FeedView {
    let url = feed.secret.as_deref().map(|s| feed_url(state, s));
    FeedView { feed, url }
}

/// `GET /api/v1/feeds`: the caller's private feeds and their URLs.
pub async fn list_feeds(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<Value>> {
    let s = state.services();
    let feeds = store::list(&s.store, &s.secrets, auth.user.id).await?;
    let feeds: Vec<FeedView> = feeds.into_iter().map(|f| view(&state, f)).collect();
    Ok(Json(json!({ "feeds": feeds })))
}

/// Body of `POST /api/v1/feeds`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFeed {
    /// Scope the feed to one of the caller's subscriptions; absent: the whole history.
    #[serde(default)]
    pub subscription: Option<String>,
}

/// `POST /api/v1/feeds`: creates the feed of the whole history or of one subscription, or
/// rotates its secret if it exists (the old URL answers 404 from now on). 201 when created,
/// 200 when rotated.
pub async fn create_feed(
    State(state): State<AppState>,
    auth: Authed,
    body: Result<Json<NewFeed>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = match body {
        Ok(Json(b)) => b,
        // No JSON body at all: the whole-history feed.
        Err(JsonRejection::MissingJsonContentType(_)) => NewFeed::default(),
        Err(e) => return Err(e.into()),
    };
    let s = state.services();
    let (feed, rotated) =
        store::create_or_rotate(&s.store, &s.secrets, auth.user.id, body.subscription).await?;
    let status = if rotated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({"feed": view(&state, feed), "rotated": rotated})),
    ))
}

/// `DELETE /api/v1/feeds/{id}`: `id` is `all` or the subscription id.
pub async fn delete_feed(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    store::delete(&state.services().store, auth.user.id, &id).await?;
    Ok(Json(json!({ "deleted": id })))
}

fn feed_not_found() -> ApiError {
    ApiError::not_found("feed not found")
}

/// `GET /feeds/{secret}.atom` (routed as `/feeds/{file}`: the router cannot match a suffix).
pub async fn atom(
    State(state): State<AppState>,
    Path(file): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    // Unauthenticated: limited per address, like sign-in links.
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    state.limiter().check(&format!("feed:{peer}"))?;

    let Some(secret) = file.strip_suffix(".atom") else {
        return Err(feed_not_found());
    };
    let limit = match Query::<HashMap<String, String>>::try_from_uri(req.uri())?
        .0
        .get("limit")
    {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("limit is 1-{MAX_LIMIT}"),
                ));
            }
        },
    };

    let services = state.services();
    let Some(target) = store::resolve(&services.store, secret).await? else {
        return Err(feed_not_found());
    };
    let Some(user) = services.directory.user(target.user_id) else {
        return Err(feed_not_found());
    };
    let fs = store::state(&services.store, &target).await?;
    let base = state.cfg().base_url.trim_end_matches('/').to_owned();
    let etag = etag(&[
        FORMAT_VERSION,
        &base,
        &user.name,
        target.id(),
        &target.created_at.to_string(),
        &fs.newest_seq.unwrap_or(0).to_string(),
        &fs.count.to_string(),
        &limit.to_string(),
    ]);
    // The newest item's time. An item that arrives late with an older time changes the ETag
    // but not this; readers send If-None-Match, which takes precedence.
    let updated = fs.newest_time.unwrap_or(target.created_at).div_euclid(1000);

    let mut headers = HeaderMap::new();
    let put = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(&mut headers, header::ETAG, &etag);
    put(&mut headers, header::LAST_MODIFIED, &http_date(updated));
    // Private: the URL is a credential, no shared cache may keep it; no-cache: revalidate
    // every time (a 304 is cheap).
    put(&mut headers, header::CACHE_CONTROL, "private, no-cache");
    put(
        &mut headers,
        header::HeaderName::from_static("x-robots-tag"),
        "noindex, nofollow",
    );

    if not_modified(req.headers(), &etag, updated) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }

    let (items, _) = history::list(
        &services.store,
        HistoryQuery {
            user_id: target.user_id,
            source: target.source_id().map(str::to_owned),
            limit,
            ..Default::default()
        },
    )
    .await?;
    let feed = AtomFeed {
        id: urn_uuid(&format!(
            "tidings private feed\0{}\0{}\0{}",
            user.id,
            user.name,
            target.id()
        )),
        title: title_of(&user.name, &target),
        subtitle: match &target.subscription {
            Some(s) => format!(
                "{}'s notifications from {}",
                user.name,
                store::source_label(s)
            ),
            None => format!("{}'s notifications", user.name),
        },
        self_url: feed_url(&state, secret),
        alternate_url: format!("{base}/"),
        author: user.name.clone(),
        updated,
    };
    let notifications: Vec<&Notification> = items.iter().map(|i| &i.notification).collect();
    put(
        &mut headers,
        header::CONTENT_TYPE,
        "application/atom+xml; charset=utf-8",
    );
    Ok((headers, render(&feed, &notifications)).into_response())
}

fn title_of(user: &str, target: &FeedTarget) -> String {
    match &target.subscription {
        Some(s) => format!("tidings: {user}: {}", store::source_label(s)),
        None => format!("tidings: {user}"),
    }
}

/// A strong validator over everything the document depends on.
fn etag(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    format!("\"{}\"", &hex::encode(h.finalize())[..32])
}

/// RFC 9110 §13.1: If-None-Match decides when present; If-Modified-Since only without it.
fn not_modified(h: &HeaderMap, etag: &str, last_modified: i64) -> bool {
    if let Some(inm) = h.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        // Weak comparison: a W/ prefix (added by some proxies) still matches.
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
    }
    if let Some(ims) = h.get(header::IF_MODIFIED_SINCE)
        && let Ok(ims) = ims.to_str()
        && let Some(since) = tidings_feed::parse_date(ims)
    {
        return last_modified <= since;
    }
    false
}

/// The feed-level fields of a document.
#[derive(Debug, Clone)]
pub struct AtomFeed {
    /// An IRI, stable for the feed (not its URL: that changes on rotation).
    pub id: String,
    pub title: String,
    pub subtitle: String,
    /// The feed's own URL.
    pub self_url: String,
    /// A web page of the service.
    pub alternate_url: String,
    pub author: String,
    /// Unix seconds.
    pub updated: i64,
}

/// Writes an Atom 1.0 (RFC 4287) document: the feed, then one entry per notification in the
/// order given (newest first).
pub fn render(feed: &AtomFeed, items: &[&Notification]) -> String {
    let mut o = String::with_capacity(1024 + items.len() * 768);
    o.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    o.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    elem(&mut o, 1, "id", &feed.id);
    text_elem(&mut o, 1, "title", &feed.title);
    text_elem(&mut o, 1, "subtitle", &feed.subtitle);
    elem(&mut o, 1, "updated", &rfc3339(feed.updated));
    link(
        &mut o,
        1,
        "self",
        "application/atom+xml",
        &feed.self_url,
        None,
    );
    link(
        &mut o,
        1,
        "alternate",
        "text/html",
        &feed.alternate_url,
        None,
    );
    person(&mut o, 1, "author", &feed.author);
    o.push_str("  <generator version=\"");
    attr(&mut o, env!("CARGO_PKG_VERSION"));
    o.push_str("\">tidings</generator>\n");
    for n in items {
        entry(&mut o, n);
    }
    o.push_str("</feed>\n");
    o
}

fn entry(o: &mut String, n: &Notification) {
    o.push_str("  <entry>\n");
    elem(
        o,
        2,
        "id",
        &urn_uuid(&format!("tidings notification\0{}", n.id)),
    );
    text_elem(o, 2, "title", &entry_title(n));
    let t = rfc3339(n.time);
    elem(o, 2, "updated", &t);
    elem(o, 2, "published", &t);
    if let Some(a) = n.author.as_deref().filter(|a| !a.trim().is_empty()) {
        person(o, 2, "author", a);
    }
    if let Some(c) = n.click.as_deref().filter(|c| !c.is_empty()) {
        link(o, 2, "alternate", "", c, None);
    }
    // `view` actions open a URL: a related link. Other actions (http, broadcast) are not
    // something a reader can do.
    for a in &n.actions {
        if a.action == "view"
            && let Some(u) = a.url.as_deref().filter(|u| !u.is_empty())
        {
            link(o, 2, "related", "", u, Some(&a.label));
        }
    }
    for tag in &n.tags {
        o.push_str("    <category term=\"");
        attr(o, tag);
        o.push_str("\"/>\n");
    }
    // Content is required without an alternate link, and is where the message lives.
    text_elem(o, 2, "content", &n.message);
    o.push_str("  </entry>\n");
}

/// The title, else the first non-empty line of the message, else the topic.
fn entry_title(n: &Notification) -> String {
    if let Some(t) = n.title.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        return t.to_owned();
    }
    if let Some(line) = n.message.lines().map(str::trim).find(|l| !l.is_empty()) {
        return truncate_chars(line, TITLE_FROM_MESSAGE);
    }
    match &n.topic {
        Some(t) => format!("{t} (triggered)"),
        None => "triggered".to_owned(),
    }
}

fn indent(o: &mut String, depth: usize) {
    for _ in 0..depth {
        o.push_str("  ");
    }
}

/// `<name>text</name>` without a type (ids, dates).
fn elem(o: &mut String, depth: usize, name: &str, value: &str) {
    indent(o, depth);
    let _ = write!(o, "<{name}>");
    text(o, value);
    let _ = writeln!(o, "</{name}>");
}

/// `<name type="text">text</name>`: an Atom text construct holding plain text.
fn text_elem(o: &mut String, depth: usize, name: &str, value: &str) {
    indent(o, depth);
    let _ = write!(o, "<{name} type=\"text\">");
    text(o, value);
    let _ = writeln!(o, "</{name}>");
}

fn link(o: &mut String, depth: usize, rel: &str, ty: &str, href: &str, title: Option<&str>) {
    indent(o, depth);
    o.push_str("<link rel=\"");
    attr(o, rel);
    o.push('"');
    if !ty.is_empty() {
        o.push_str(" type=\"");
        attr(o, ty);
        o.push('"');
    }
    o.push_str(" href=\"");
    attr(o, href);
    o.push('"');
    if let Some(t) = title {
        o.push_str(" title=\"");
        attr(o, t);
        o.push('"');
    }
    o.push_str("/>\n");
}

fn person(o: &mut String, depth: usize, kind: &str, name: &str) {
    indent(o, depth);
    let _ = writeln!(o, "<{kind}>");
    elem(o, depth + 1, "name", name);
    indent(o, depth);
    let _ = writeln!(o, "</{kind}>");
}

/// Whether XML 1.0 can carry `c` at all (its `Char` production; Rust chars are never
/// surrogates).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// Character data: `&`, `<` and `>` escaped (`>` because of `]]>`), CR kept as a reference
/// (a parser would turn a literal one into LF), characters XML cannot carry dropped.
fn text(o: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '\r' => o.push_str("&#xD;"),
            c if xml_char(c) => o.push(c),
            _ => {}
        }
    }
}

/// An attribute value in double quotes: also both quotes, and whitespace other than space
/// as references (attribute-value normalization would turn them into spaces).
fn attr(o: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' => o.push_str("&#x9;"),
            '\n' => o.push_str("&#xA;"),
            '\r' => o.push_str("&#xD;"),
            c if xml_char(c) => o.push(c),
            _ => {}
        }
    }
}

/// A name-based UUID (RFC 9562 version 8, from SHA-256) as a URN: a valid, permanent Atom id
/// that does not depend on the server's URL.
fn urn_uuid(name: &str) -> String {
    let d = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn split_time(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    // Atom dates need four-digit years.
    let secs = secs.clamp(0, 253_402_300_799);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// `2025-03-01T12:00:00Z` (RFC 3339, as Atom's date constructs require).
fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = split_time(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `Sat, 01 Mar 2025 12:00:00 GMT` (HTTP's IMF-fixdate).
fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = secs.clamp(0, 253_402_300_799);
    let (y, mo, d, h, mi, s) = split_time(secs);
    let wd = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{wd}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        MONTHS[(mo - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::{Action, NotificationId, Priority};

    fn note(id: &str, title: Option<&str>, message: &str) -> Notification {
        Notification {
            id: NotificationId(id.into()),
            time: 1_740_830_400, // 2025-03-01T12:00:00Z
            event: "message".into(),
            source: "topic:alerts".into(),
            topic: Some("alerts".into()),
            title: title.map(str::to_owned),
            message: message.into(),
            priority: Priority::default(),
            tags: vec![],
            click: None,
            actions: vec![],
            author: None,
        }
    }

    fn feed() -> AtomFeed {
        AtomFeed {
            id: urn_uuid("f"),
            title: "tidings: alice".into(),
            subtitle: "alice's notifications".into(),
            self_url: "http://h.example/feeds/pf_x.atom".into(),
            alternate_url: "http://h.example/".into(),
            author: "alice".into(),
            updated: 1_740_830_400,
        }
    }

    fn parse(doc: &str) -> tidings_feed::ParsedFeed {
        tidings_feed::parse(tidings_feed::FeedInput {
            body: doc.as_bytes(),
            content_type: Some("application/atom+xml; charset=utf-8"),
            ..Default::default()
        })
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_740_830_400), "2025-03-01T12:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(1_740_830_400), "Sat, 01 Mar 2025 12:00:00 GMT");
        assert_eq!(
            tidings_feed::parse_date(&http_date(1_740_830_400)),
            Some(1_740_830_400)
        );
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = urn_uuid("tidings notification\0abc");
        assert_eq!(a, urn_uuid("tidings notification\0abc"));
        assert_ne!(a, urn_uuid("tidings notification\0abd"));
        let u = a.strip_prefix("urn:uuid:").unwrap();
        let parts: Vec<usize> = u.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&u[14..15], "8", "version 8");
        assert!("89ab".contains(&u[19..20]), "RFC variant");
    }

    #[test]
    fn escaping_of_markup_quotes_and_control_characters() {
        let mut o = String::new();
        text(
            &mut o,
            "a<b>&\"'c]]>\u{0}\u{1}\u{8}\u{b}\u{c}\u{1b}\u{1f}\t\n\r\u{7f}é\u{fffe}\u{ffff}\u{1f600}",
        );
        assert_eq!(o, "a&lt;b&gt;&amp;\"'c]]&gt;\t\n&#xD;\u{7f}é\u{1f600}");
        let mut o = String::new();
        attr(&mut o, "x\"y'z<&>\u{0}\t\n");
        assert_eq!(o, "x&quot;y&apos;z&lt;&amp;&gt;&#x9;&#xA;");
    }

    #[test]
    fn titles_fall_back_to_the_message() {
        assert_eq!(entry_title(&note("n", Some(" T "), "m")), "T");
        assert_eq!(
            entry_title(&note("n", None, "\n  first  \nsecond")),
            "first"
        );
        assert_eq!(entry_title(&note("n", Some(""), "")), "alerts (triggered)");
        let long = "x".repeat(500);
        assert_eq!(
            entry_title(&note("n", None, &long)).chars().count(),
            TITLE_FROM_MESSAGE
        );
    }

    #[test]
    fn hostile_text_stays_text_and_parses() {
        let mut evil = note(
            "0123456789abcdefghjk",
            Some("<script>alert(1)</script> & \"quotes\" 'apos'\u{1}"),
            "body <b>bold</b> &amp; ]]> \u{0}\u{7}\r\nline2",
        );
        evil.tags = vec!["a&b".into(), "<c>".into(), "\"q\"".into()];
        evil.click = Some("https://x.example/?a=1&b=\"2\"<".into());
        evil.author = Some("Eve <eve@x.example>".into());
        evil.actions = vec![Action {
            action: "view".into(),
            label: "Open \"it\"".into(),
            url: Some("https://x.example/open?x=1&y=2".into()),
            method: None,
            body: None,
            clear: false,
        }];
        let plain = note("0123456789abcdefghjm", None, "Backup done\nall fine");
        let doc = render(&feed(), &[&evil, &plain]);
        assert!(!doc.contains("<script"), "{doc}");
        assert!(!doc.contains('\u{0}') && !doc.contains('\u{1}') && !doc.contains('\u{7}'));

        let p = parse(&doc);
        assert!(!p.bozo, "{:?}\n{doc}", p.warnings);
        assert_eq!(p.format, tidings_feed::Format::Atom10);
        assert_eq!(p.feed.title.as_deref(), Some("tidings: alice"));
        assert_eq!(p.feed.id.as_deref(), Some(feed().id.as_str()));
        assert_eq!(
            p.feed.self_url.as_deref(),
            Some("http://h.example/feeds/pf_x.atom")
        );
        assert_eq!(p.feed.link.as_deref(), Some("http://h.example/"));
        assert_eq!(p.feed.author.as_deref(), Some("alice"));
        assert_eq!(p.feed.updated, Some(1_740_830_400));
        assert_eq!(p.items.len(), 2);

        let e = &p.items[0];
        // The parser's text fields are HTML: plain text comes back escaped, never as markup.
        assert_eq!(
            e.title.as_deref(),
            Some("&lt;script&gt;alert(1)&lt;/script&gt; &amp; \"quotes\" 'apos'")
        );
        // Markup in the message is text (escaped once more as the parser's HTML), and CR
        // survives the trip.
        assert_eq!(
            e.content.as_deref(),
            Some("body &lt;b&gt;bold&lt;/b&gt; &amp;amp; ]]&gt; \r\nline2")
        );
        assert_eq!(e.link.as_deref(), Some("https://x.example/?a=1&b=\"2\"<"));
        assert_eq!(e.categories, ["a&b", "<c>", "\"q\""]);
        assert_eq!(e.author.as_deref(), Some("Eve <eve@x.example>"));
        assert_eq!(e.published, Some(1_740_830_400));
        assert_eq!(e.updated, Some(1_740_830_400));
        assert_eq!(
            e.id,
            urn_uuid("tidings notification\x000123456789abcdefghjk")
        );

        let e = &p.items[1];
        assert_eq!(e.title.as_deref(), Some("Backup done"));
        assert_eq!(e.link, None);
        // Without an author of its own, an entry has the feed's.
        assert_eq!(e.author.as_deref(), Some("alice"));
    }

    #[test]
    fn an_empty_feed_is_valid() {
        let doc = render(&feed(), &[]);
        let p = parse(&doc);
        assert!(!p.bozo, "{:?}", p.warnings);
        assert!(p.items.is_empty());
    }

    #[test]
    fn conditional_requests() {
        let etag = etag(&["a", "b"]);
        assert_eq!(etag.len(), 34);
        let h = |pairs: &[(header::HeaderName, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(k.clone(), HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let lm = 1_740_830_400;
        assert!(!not_modified(&h(&[]), &etag, lm));
        assert!(not_modified(
            &h(&[(header::IF_NONE_MATCH, &etag)]),
            &etag,
            lm
        ));
        assert!(not_modified(
            &h(&[(header::IF_NONE_MATCH, &format!("\"x\", W/{etag}"))]),
            &etag,
            lm
        ));
        assert!(not_modified(&h(&[(header::IF_NONE_MATCH, "*")]), &etag, lm));
        // If-None-Match wins over a matching If-Modified-Since.
        assert!(!not_modified(
            &h(&[
                (header::IF_NONE_MATCH, "\"other\""),
                (header::IF_MODIFIED_SINCE, &http_date(lm)),
            ]),
            &etag,
            lm
        ));
        assert!(not_modified(
            &h(&[(header::IF_MODIFIED_SINCE, &http_date(lm))]),
            &etag,
            lm
        ));
        assert!(!not_modified(
            &h(&[(header::IF_MODIFIED_SINCE, &http_date(lm - 1))]),
            &etag,
            lm
        ));
        assert!(!not_modified(
            &h(&[(header::IF_MODIFIED_SINCE, "garbage")]),
            &etag,
            lm
        ));
    }
}
