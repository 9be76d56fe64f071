//! Feed and web-page sources end to end: a real `tidings serve` polls a local HTTP server
//! whose answers each test controls (items, statuses, validators, redirects, delays,
//! encodings) and whose request log the test reads. Everything observable goes through the
//! HTTP API (history, subscription status) and the test server's counters.
//!
//! WebSub is not implemented by the server yet, so it is not tested here.

mod common;

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Response, Uri};
use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The test site
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Item {
    /// The RSS guid / Atom id.
    guid: String,
    title: String,
    /// HTML of the description (escaped into the feed).
    text: String,
    /// Path on the site, e.g. "/items/1"; feeds make it absolute.
    link: String,
}

#[derive(Clone, Debug)]
enum Route {
    /// RSS 2.0 of the site's items.
    Rss,
    /// Atom 1.0 of the site's items.
    Atom,
    /// An HTML listing page: one `<li class="listing">` per item.
    Listing,
    /// A fixed HTML page.
    Html(String),
    /// A bare status with extra headers.
    Status(u16, Vec<(String, String)>),
    /// A redirect with this status to this Location.
    Redirect(u16, String),
    /// An RSS document of about this many bytes.
    Big(usize),
    /// A gzip body that inflates to this many bytes (an RSS document padded with spaces).
    GzipBomb(usize),
}

#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    path: String,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    accept_encoding: Option<String>,
    status: u16,
}

#[derive(Default)]
struct SiteState {
    base: String,
    title: String,
    /// Newest first.
    items: Vec<Item>,
    routes: HashMap<String, Route>,
    /// Answers used once each (per path) before `routes`.
    once: HashMap<String, VecDeque<Route>>,
    /// Send an ETag and answer 304 to a matching If-None-Match.
    etag: bool,
    /// Send a Last-Modified and answer 304 to a matching If-Modified-Since.
    last_modified: bool,
    /// Gzip every 200 body.
    gzip: bool,
    /// Wait this long before answering.
    delay: Option<Duration>,
    hits: Vec<Hit>,
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body).unwrap();
    enc.finish().unwrap()
}

fn hash_tag(body: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

impl SiteState {
    fn rss(&self) -> String {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel>\
             <title>{}</title><link>{}/</link><description>test feed</description>\n",
            xml_escape(&self.title),
            self.base
        );
        for i in &self.items {
            out.push_str(&format!(
                "<item><title>{}</title><link>{}{}</link><guid isPermaLink=\"false\">{}</guid>\
                 <description>{}</description></item>\n",
                xml_escape(&i.title),
                self.base,
                i.link,
                xml_escape(&i.guid),
                xml_escape(&i.text)
            ));
        }
        out.push_str("</channel></rss>\n");
        out
    }

    fn atom(&self) -> String {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
             <title>{}</title><id>urn:test:feed</id><updated>2024-01-01T00:00:00Z</updated>\n",
            xml_escape(&self.title)
        );
        for i in &self.items {
            out.push_str(&format!(
                "<entry><title>{}</title><id>urn:test:{}</id><link href=\"{}{}\"/>\
                 <updated>2024-01-01T00:00:00Z</updated><summary type=\"html\">{}</summary></entry>\n",
                xml_escape(&i.title),
                xml_escape(&i.guid),
                self.base,
                i.link,
                xml_escape(&i.text)
            ));
        }
        out.push_str("</feed>\n");
        out
    }

    fn listing(&self) -> String {
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Listings</title></head>\
             <body><nav><ul><li class=\"nav\"><a href=\"/guide\">Our 2br guide</a></li></ul></nav>\
             <ul id=\"results\">\n",
        );
        for i in &self.items {
            out.push_str(&format!(
                "<li class=\"listing\"><a href=\"{}\">{}</a></li>\n",
                xml_escape(&i.link),
                xml_escape(&i.title)
            ));
        }
        out.push_str("</ul><ul><li class=\"ad\"><a href=\"/ad\">Sponsored 2br deal</a></li></ul></body></html>\n");
        out
    }

    fn answer(&mut self, path: &str, inm: Option<&str>, ims: Option<&str>) -> Answer {
        let route = match self.once.get_mut(path).and_then(VecDeque::pop_front) {
            Some(r) => r,
            None => match self.routes.get(path) {
                Some(r) => r.clone(),
                None => return (404, Vec::new(), b"not found".to_vec()),
            },
        };
        let (ctype, body) = match route {
            Route::Rss => ("application/rss+xml", self.rss().into_bytes()),
            Route::Atom => ("application/atom+xml", self.atom().into_bytes()),
            Route::Listing => ("text/html; charset=utf-8", self.listing().into_bytes()),
            Route::Html(h) => ("text/html; charset=utf-8", h.into_bytes()),
            Route::Status(code, headers) => return (code, headers, b"try later".to_vec()),
            Route::Redirect(code, to) => {
                return (code, vec![("location".into(), to)], Vec::new());
            }
            Route::Big(n) => {
                let mut doc = self.rss();
                let pad = n.saturating_sub(doc.len());
                doc.insert_str(doc.len() - "</channel></rss>\n".len(), &" ".repeat(pad));
                return (
                    200,
                    vec![("content-type".into(), "application/rss+xml".into())],
                    doc.into_bytes(),
                );
            }
            Route::GzipBomb(n) => {
                let mut doc = self.rss();
                let pad = n.saturating_sub(doc.len());
                doc.insert_str(doc.len() - "</channel></rss>\n".len(), &" ".repeat(pad));
                return (
                    200,
                    vec![
                        ("content-type".into(), "application/rss+xml".into()),
                        ("content-encoding".into(), "gzip".into()),
                    ],
                    gzip(doc.as_bytes()),
                );
            }
        };
        let mut headers = vec![("content-type".to_string(), ctype.to_string())];
        let mut fresh = false;
        if self.etag {
            let tag = hash_tag(&body);
            fresh = inm == Some(tag.as_str());
            headers.push(("etag".into(), tag));
        }
        if self.last_modified {
            // One second per item: changes whenever the items do.
            let lm = format!(
                "Mon, 01 Jan 2024 00:{:02}:{:02} GMT",
                self.items.len() / 60,
                self.items.len() % 60
            );
            fresh = fresh || (!self.etag && ims == Some(lm.as_str()));
            headers.push(("last-modified".into(), lm));
        }
        if fresh {
            headers.retain(|(k, _)| k != "content-type");
            return (304, headers, Vec::new());
        }
        if self.gzip {
            headers.push(("content-encoding".into(), "gzip".into()));
            return (200, headers, gzip(&body));
        }
        (200, headers, body)
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A local HTTP server whose answers the test controls.
#[derive(Clone)]
struct Site {
    base: String,
    state: Arc<Mutex<SiteState>>,
}

impl Site {
    async fn start() -> Site {
        Site::start_on("127.0.0.1").await
    }

    async fn start_on(ip: &str) -> Site {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(SiteState {
            base: base.clone(),
            title: "Test Feed".into(),
            ..Default::default()
        }));
        let st = Arc::clone(&state);
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let st = Arc::clone(&st);
            async move {
                let path = uri.path().to_owned();
                let inm = header(&headers, "if-none-match");
                let ims = header(&headers, "if-modified-since");
                let ((status, hdrs, body), delay) = {
                    let mut s = st.lock().unwrap();
                    let answer = s.answer(&path, inm.as_deref(), ims.as_deref());
                    s.hits.push(Hit {
                        at: Instant::now(),
                        path,
                        if_none_match: inm,
                        if_modified_since: ims,
                        accept_encoding: header(&headers, "accept-encoding"),
                        status: answer.0,
                    });
                    (answer, s.delay)
                };
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let mut b = Response::builder().status(status);
                for (k, v) in hdrs {
                    b = b.header(k, v);
                }
                b.body(Body::from(body)).unwrap()
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Site { base, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn with<T>(&self, f: impl FnOnce(&mut SiteState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn route(&self, path: &str, r: Route) {
        self.with(|s| s.routes.insert(path.to_owned(), r));
    }

    fn once(&self, path: &str, r: Route) {
        self.with(|s| s.once.entry(path.to_owned()).or_default().push_back(r));
    }

    /// Adds an item at the top (newest).
    fn add(&self, id: &str, title: &str, text: &str) {
        let link = format!("/items/{id}");
        self.add_linked(id, title, text, &link);
    }

    fn add_linked(&self, id: &str, title: &str, text: &str, link: &str) {
        self.with(|s| {
            s.items.insert(
                0,
                Item {
                    guid: id.into(),
                    title: title.into(),
                    text: text.into(),
                    link: link.into(),
                },
            )
        });
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.with(|s| s.hits.iter().filter(|h| h.path == path).cloned().collect())
    }

    fn count(&self, path: &str) -> usize {
        self.hits(path).len()
    }

    fn total(&self) -> usize {
        self.with(|s| s.hits.len())
    }

    /// Waits until `path` has been requested at least `n` times.
    async fn wait_count(&self, path: &str, n: usize, secs: u64) {
        eventually(secs, || async { (self.count(path) >= n).then_some(()) }).await;
    }
}

// ---------------------------------------------------------------------------------------
// tidings helpers
// ---------------------------------------------------------------------------------------

/// Short poll intervals so that tests see many polls in a few seconds.
const FAST: &[(&str, &str)] = &[
    ("TIDINGS_SOURCES_DEFAULT_INTERVAL", "300ms"),
    ("TIDINGS_SOURCES_MIN_INTERVAL", "200ms"),
    ("TIDINGS_SOURCES_MAX_INTERVAL", "1s"),
    ("TIDINGS_SOURCES_MAX_BACKOFF", "1s"),
    ("TIDINGS_SOURCES_FAILING_AFTER", "3"),
    ("TIDINGS_SOURCES_CONNECT_TIMEOUT", "2s"),
    ("TIDINGS_SOURCES_FETCH_TIMEOUT", "5s"),
];

/// A server with fast polling and private networks allowed; `extra` overrides.
fn start(extra: &[(&str, &str)]) -> Server {
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.push(("TIDINGS_SOURCES_ALLOW_PRIVATE_NETWORKS", "true"));
    for (k, v) in extra {
        env.retain(|(k2, _)| k2 != k);
        env.push((k, v));
    }
    Server::start_with(&env)
}

async fn subscribe(s: &Server, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/api/v1/subscriptions", s.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Subscribes and returns the subscription (asserting 201).
async fn subscribe_ok(s: &Server, token: &str, body: Value) -> Value {
    let (st, v) = subscribe(s, token, body.clone()).await;
    assert_eq!(st, 201, "subscribe {body}: {v}");
    v
}

async fn feed_sub(s: &Server, token: &str, url: &str) -> Value {
    subscribe_ok(s, token, json!({"source": {"kind": "feed", "url": url}})).await
}

async fn unsubscribe(s: &Server, token: &str, id: &str) {
    let r = client()
        .delete(format!("{}/api/v1/subscriptions/{id}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "unsubscribe {id}");
}

/// The subscription as `GET /api/v1/subscriptions/{id}` shows it.
async fn sub_view(s: &Server, token: &str, id: &str) -> Value {
    let (st, v) = get_json(&format!("{}/api/v1/subscriptions/{id}", s.url), token).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Waits until the subscription's poll status satisfies `pred`; returns the status.
async fn wait_status(
    s: &Server,
    token: &str,
    sub: &Value,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let id = sub["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = sub_view(s, token, id).await;
        if pred(&v["status"]) {
            return v["status"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "status condition not met within {secs} s; last status: {}",
            v["status"]
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits for the first successful poll (the baseline).
async fn wait_baseline(s: &Server, token: &str, sub: &Value) -> Value {
    wait_status(s, token, sub, 10, |st| {
        st["status"] == "ok" || st["status"] == "not_modified"
    })
    .await
}

fn titles(h: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = h
        .iter()
        .map(|n| n["title"].as_str().unwrap_or("").to_owned())
        .collect();
    t.sort();
    t
}

/// Waits until the history holds at least `n` notifications; returns it.
async fn wait_history(s: &Server, token: &str, n: usize, secs: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = history(&s.url, token).await;
        if h.len() >= n {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "history did not reach {n} within {secs} s: {:?}",
            titles(&h)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Notifications whose title starts with `prefix`.
fn with_prefix<'a>(h: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    h.iter()
        .filter(|n| n["title"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .collect()
}

fn err_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Baseline items are remembered, not notified; a new item is notified once and stays once
/// over later polls (also when the feed reorders or re-sends items); `backfill: 2`
/// notifies the newest two at the baseline.
#[tokio::test]
async fn new_item_is_notified_once_and_baseline_is_not() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.route("/feed2", Route::Rss);
    site.add("a", "Item A", "first");
    site.add("b", "Item B", "second");
    site.add("c", "Item C", "third");

    let s = start(&[]);
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    assert_eq!(sub["source"]["kind"], "feed");
    assert_eq!(
        sub["source"]["url"],
        site.url("/feed"),
        "the stored URL keeps its port: {sub}"
    );
    let source_id = sub["source_id"].as_str().unwrap().to_owned();
    assert!(source_id.starts_with("feed:"), "{sub}");
    let bsub = subscribe_ok(
        &s,
        &bob,
        json!({"source": {"kind": "feed", "url": site.url("/feed2"), "backfill": 2}}),
    )
    .await;

    wait_baseline(&s, &alice, &sub).await;
    // Several polls after the baseline: still nothing for alice.
    let n = site.count("/feed");
    site.wait_count("/feed", n + 3, 10).await;
    assert!(
        history(&s.url, &alice).await.is_empty(),
        "baseline items must not be notified"
    );

    // Backfill: the newest two, and only them.
    wait_baseline(&s, &bob, &bsub).await;
    let h = wait_history(&s, &bob, 2, 10).await;
    let n = site.count("/feed2");
    site.wait_count("/feed2", n + 3, 10).await;
    let h2 = history(&s.url, &bob).await;
    assert_eq!(titles(&h), vec!["Item B", "Item C"], "backfill 2");
    assert_eq!(
        titles(&h2),
        vec!["Item B", "Item C"],
        "backfill is not repeated"
    );

    // A new item: notified once, with the item's fields.
    site.add("d", "Item D", "<p>Hello &amp; <b>welcome</b></p>");
    let h = wait_history(&s, &alice, 1, 10).await;
    assert_eq!(h.len(), 1, "{:?}", titles(&h));
    let n0 = &h[0];
    assert_eq!(n0["title"], "Item D");
    assert_eq!(
        n0["message"].as_str().unwrap().trim(),
        "Hello & welcome",
        "message is the plain text of the summary: {n0}"
    );
    assert_eq!(n0["click"], site.url("/items/d"));
    assert_eq!(n0["source"], source_id.as_str());

    // Several more polls, then a reordering and a re-send: still exactly one.
    let n = site.count("/feed");
    site.wait_count("/feed", n + 3, 10).await;
    site.with(|st| st.items.reverse());
    let n = site.count("/feed");
    site.wait_count("/feed", n + 3, 10).await;
    let h = history(&s.url, &alice).await;
    assert_eq!(titles(&h), vec!["Item D"], "notified exactly once");

    let st = sub_view(&s, &alice, sub["id"].as_str().unwrap()).await;
    assert_eq!(st["status"]["items_notified"], 1, "{st}");
    assert_eq!(st["status"]["items_seen"], 4, "{st}");
}

/// A feed whose items all carry the same guid (a known breakage): items are told apart by
/// their links, so a new item at the top is the one notified, and none of the old ones.
#[tokio::test]
async fn duplicated_guids_do_not_shift_item_identity() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Item A", "first");
    site.add("b", "Item B", "second");
    site.add("c", "Item C", "third");
    site.with(|st| {
        st.items
            .iter_mut()
            .for_each(|i| i.guid = "same-guid".into())
    });
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    wait_baseline(&s, &alice, &sub).await;

    site.add("n", "Item N", "the new one");
    site.with(|st| st.items[0].guid = "same-guid".into());
    wait_history(&s, &alice, 1, 10).await;
    let n = site.count("/feed");
    site.wait_count("/feed", n + 3, 10).await;
    let h = history(&s.url, &alice).await;
    assert_eq!(
        titles(&h),
        vec!["Item N"],
        "the new item, and only it, is notified when guids are not unique"
    );
}

/// The same entry twice in one document (same guid, link and content) is one item: the
/// second copy is not notified as new.
#[tokio::test]
async fn duplicate_entry_in_a_document_is_not_notified() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Item A", "first");
    site.add("b", "Item B", "second");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    wait_baseline(&s, &alice, &sub).await;

    // Re-sent: item B appears a second time at the end of the feed.
    site.with(|st| {
        let b = st.items[0].clone();
        st.items.push(b);
    });
    let n = site.count("/feed");
    site.wait_count("/feed", n + 4, 10).await;
    let h = history(&s.url, &alice).await;
    assert!(
        h.is_empty(),
        "a duplicated entry is not new: {:?}",
        titles(&h)
    );
}

/// Conditional GET: once the feed answered with an ETag (or Last-Modified), later polls send
/// it and get 304s; a change is notified once; nothing is notified twice.
#[tokio::test]
async fn conditional_get_gets_304s() {
    let site = Site::start().await;
    site.route("/etag", Route::Rss);
    site.with(|st| st.etag = true);
    site.add("a", "Item A", "first");
    let lm_site = Site::start().await;
    lm_site.route("/lm", Route::Rss);
    lm_site.with(|st| st.last_modified = true);
    lm_site.add("a", "Item A", "first");

    let s = start(&[]);
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let sub = feed_sub(&s, &alice, &site.url("/etag")).await;
    let bsub = feed_sub(&s, &bob, &lm_site.url("/lm")).await;
    wait_baseline(&s, &alice, &sub).await;
    wait_baseline(&s, &bob, &bsub).await;

    let base = site.count("/etag");
    site.wait_count("/etag", base + 6, 10).await;
    let later: Vec<Hit> = site.hits("/etag").into_iter().skip(base).collect();
    let tag = site.with(|st| hash_tag(st.rss().as_bytes()));
    let conditional = later
        .iter()
        .filter(|h| h.if_none_match.as_deref() == Some(tag.as_str()) && h.status == 304)
        .count();
    assert!(
        conditional + 1 >= later.len(),
        "most polls after the baseline must be conditional and answered 304: {later:?}"
    );
    wait_status(&s, &alice, &sub, 5, |st| st["status"] == "not_modified").await;

    // A change: a 200 with a new tag, one notification, then 304s on the new tag.
    site.add("b", "Item B", "second");
    let h = wait_history(&s, &alice, 1, 10).await;
    assert_eq!(titles(&h), vec!["Item B"]);
    let base = site.count("/etag");
    site.wait_count("/etag", base + 4, 10).await;
    let tag = site.with(|st| hash_tag(st.rss().as_bytes()));
    let later: Vec<Hit> = site.hits("/etag").into_iter().skip(base).collect();
    let conditional = later
        .iter()
        .filter(|h| h.if_none_match.as_deref() == Some(tag.as_str()) && h.status == 304)
        .count();
    assert!(conditional + 1 >= later.len(), "{later:?}");
    assert_eq!(
        titles(&history(&s.url, &alice).await),
        vec!["Item B"],
        "nothing notified twice"
    );

    // Last-Modified alone works the same way.
    let base = lm_site.count("/lm");
    lm_site.wait_count("/lm", base + 5, 10).await;
    let later: Vec<Hit> = lm_site.hits("/lm").into_iter().skip(base).collect();
    let conditional = later
        .iter()
        .filter(|h| h.if_modified_since.is_some() && h.status == 304)
        .count();
    assert!(conditional + 1 >= later.len(), "{later:?}");
    assert!(history(&s.url, &bob).await.is_empty());
}

/// 429 and 503 with `Retry-After: 2`: the next request comes no sooner than ~2 s later
/// (a little jitter allowed), and polling resumes afterwards.
#[tokio::test]
async fn retry_after_is_honoured() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Item A", "first");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    wait_baseline(&s, &alice, &sub).await;

    for code in [429u16, 503] {
        site.once(
            "/feed",
            Route::Status(code, vec![("retry-after".into(), "2".into())]),
        );
        let limited = eventually(10, || async {
            let hits = site.hits("/feed");
            hits.iter()
                .position(|h| h.status == code)
                .map(|i| (i, hits[i].at))
        })
        .await;
        let (i, at) = limited;
        let st = wait_status(&s, &alice, &sub, 5, |st| st["status"] == "error").await;
        assert!(
            st["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&code.to_string())),
            "{st}"
        );
        site.wait_count("/feed", i + 2, 10).await;
        let next = site.hits("/feed")[i + 1].at;
        let gap = next - at;
        assert!(
            gap >= Duration::from_millis(1800),
            "after {code} with Retry-After: 2 the next request came after {gap:?}"
        );
        assert!(gap < Duration::from_secs(5), "{code}: gap {gap:?}");
        wait_status(&s, &alice, &sub, 5, |st| st["status"] == "ok").await;
        // Forget this round's hits for the next round's `position`.
        site.with(|st| st.hits.clear());
    }
    assert!(history(&s.url, &alice).await.is_empty());
}

/// 500s: the status shows the streak and the error; after `failing_after` failures exactly
/// one "Source failing" notification (high priority), and exactly one "Source working
/// again" on recovery; items added after recovery are notified.
#[tokio::test]
async fn failing_source_notifies_once_and_recovers() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Item A", "first");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    wait_baseline(&s, &alice, &sub).await;

    site.route("/feed", Route::Status(500, Vec::new()));
    let st = wait_status(&s, &alice, &sub, 10, |st| {
        st["consecutive_errors"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(st["status"], "error", "{st}");
    assert!(
        st["last_error"].as_str().is_some_and(|e| e.contains("500")),
        "{st}"
    );
    // Past the threshold, and a few polls more.
    wait_status(&s, &alice, &sub, 15, |st| {
        st["consecutive_errors"].as_u64().unwrap_or(0) >= 5
    })
    .await;
    let h = history(&s.url, &alice).await;
    let failing = with_prefix(&h, "Source failing");
    assert_eq!(failing.len(), 1, "{:?}", titles(&h));
    assert_eq!(failing[0]["priority"], 4, "{}", failing[0]);
    assert!(
        failing[0]["title"].as_str().unwrap().contains("Test Feed"),
        "{}",
        failing[0]
    );
    assert!(with_prefix(&h, "Source working again").is_empty());

    // Recovery.
    site.route("/feed", Route::Rss);
    let st = wait_status(&s, &alice, &sub, 10, |st| st["status"] == "ok").await;
    assert_eq!(st["consecutive_errors"], 0, "{st}");
    assert!(st["last_error"].is_null(), "{st}");
    let h = wait_history(&s, &alice, 2, 10).await;
    assert_eq!(with_prefix(&h, "Source working again").len(), 1);

    site.add("b", "Item B", "second");
    let h = wait_history(&s, &alice, 3, 10).await;
    let n = site.count("/feed");
    site.wait_count("/feed", n + 3, 10).await;
    let h2 = history(&s.url, &alice).await;
    assert_eq!(h.len(), 3, "{:?}", titles(&h));
    assert_eq!(titles(&h), titles(&h2));
    assert_eq!(with_prefix(&h2, "Source failing").len(), 1);
    assert_eq!(with_prefix(&h2, "Source working again").len(), 1);
    assert_eq!(with_prefix(&h2, "Item B").len(), 1);
}

/// A server slower than the fetch timeout: subscribing says so; a feed that becomes slow
/// shows an error status with a timeout message.
#[tokio::test]
async fn slow_server_times_out() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Item A", "first");
    let s = start(&[("TIDINGS_SOURCES_FETCH_TIMEOUT", "1s")]);
    let alice = s.user("alice").await;

    site.with(|st| st.delay = Some(Duration::from_secs(3)));
    let t0 = Instant::now();
    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": site.url("/feed")}}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(error_code(&v), "fetch_failed");
    assert!(err_message(&v).contains("timed out"), "{v}");
    assert!(
        t0.elapsed() < Duration::from_millis(2900),
        "{:?}",
        t0.elapsed()
    );

    site.with(|st| st.delay = None);
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    wait_baseline(&s, &alice, &sub).await;
    site.with(|st| st.delay = Some(Duration::from_secs(3)));
    let st = wait_status(&s, &alice, &sub, 10, |st| st["status"] == "error").await;
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{st}"
    );
}

/// Bodies are capped (after decompression): subscribing to a too-large feed says so; a feed
/// that grows past the cap shows an error status naming the limit.
#[tokio::test]
async fn oversized_body_is_refused() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.route("/big", Route::Big(100 * 1024));
    site.route("/bomb", Route::GzipBomb(100 * 1024));
    site.add("a", "Item A", "first");
    let s = start(&[("TIDINGS_SOURCES_MAX_BODY_BYTES", "2048")]);
    let alice = s.user("alice").await;

    for path in ["/big", "/bomb"] {
        let (code, v) = subscribe(
            &s,
            &alice,
            json!({"source": {"kind": "feed", "url": site.url(path)}}),
        )
        .await;
        assert_eq!(code, 400, "{path}: {v}");
        assert_eq!(error_code(&v), "fetch_failed", "{path}");
        assert!(err_message(&v).contains("2048"), "{path}: {v}");
    }

    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    wait_baseline(&s, &alice, &sub).await;
    site.route("/feed", Route::Big(100 * 1024));
    let st = wait_status(&s, &alice, &sub, 10, |st| st["status"] == "error").await;
    let e = st["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("larger") && e.contains("2048"), "{st}");
    // Compressed small, large once inflated: the same.
    site.route("/feed", Route::Rss);
    wait_status(&s, &alice, &sub, 10, |st| st["status"] == "ok").await;
    site.route("/feed", Route::GzipBomb(100 * 1024));
    let st = wait_status(&s, &alice, &sub, 10, |st| st["status"] == "error").await;
    let e = st["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("larger") && e.contains("2048"), "{st}");
}

/// The default configuration refuses loopback addresses with a clear message (and never
/// connects); with only 127.0.0.1 allowlisted, a redirect to 127.0.0.2 is refused, at
/// subscribe time and at poll time, and 127.0.0.2 is never contacted. Chains of allowed
/// redirects work; redirect loops end.
#[tokio::test]
async fn private_addresses_are_refused() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Item A", "first");
    let other = Site::start_on("127.0.0.2").await;
    other.route("/feed", Route::Rss);

    // Default configuration.
    let s = Server::start_with(FAST);
    let alice = s.user("alice").await;
    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": site.url("/feed")}}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(error_code(&v), "url_refused");
    let m = err_message(&v);
    assert!(m.contains("127.0.0.1") && m.contains("loopback"), "{m}");
    let port = site.base.rsplit(':').next().unwrap();
    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": format!("http://localhost:{port}/feed")}}),
    )
    .await;
    assert_eq!((code, error_code(&v)), (400, "url_refused".into()), "{v}");
    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "page", "url": site.url("/feed"), "selector": "li"}}),
    )
    .await;
    assert_eq!((code, error_code(&v)), (400, "url_refused".into()), "{v}");
    assert_eq!(site.total(), 0, "a refused address is never contacted");
    drop(s);

    // Only 127.0.0.1 allowlisted.
    let mut env = FAST.to_vec();
    env.push(("TIDINGS_SOURCES_ALLOWLIST", "[\"127.0.0.1/32\"]"));
    let s = Server::start_with(&env);
    let alice = s.user("alice").await;
    site.route("/to2", Route::Redirect(302, other.url("/feed")));
    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": site.url("/to2")}}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(error_code(&v), "url_refused", "{v}");
    assert!(err_message(&v).contains("127.0.0.2"), "{v}");
    // Through an allowed hop first.
    site.route("/hop", Route::Redirect(307, "/to2".into()));
    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": site.url("/hop")}}),
    )
    .await;
    assert_eq!((code, error_code(&v)), (400, "url_refused".into()), "{v}");

    // A chain of allowed redirects is followed.
    site.route("/c1", Route::Redirect(302, "/c2".into()));
    site.route("/c2", Route::Redirect(307, site.url("/feed")));
    let sub = feed_sub(&s, &alice, &site.url("/c1")).await;
    wait_baseline(&s, &alice, &sub).await;
    // A loop ends.
    site.route("/loop", Route::Redirect(302, "/loop".into()));
    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": site.url("/loop")}}),
    )
    .await;
    assert_eq!((code, error_code(&v)), (400, "fetch_failed".into()), "{v}");
    assert!(err_message(&v).contains("redirect"), "{v}");
    assert!(site.count("/loop") <= 6, "at most 5 redirects followed");

    // A redirect that appears later: the poll is refused.
    site.route("/later", Route::Rss);
    let sub = feed_sub(&s, &alice, &site.url("/later")).await;
    wait_baseline(&s, &alice, &sub).await;
    site.route("/later", Route::Redirect(302, other.url("/feed")));
    let st = wait_status(&s, &alice, &sub, 10, |st| st["status"] == "error").await;
    let e = st["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("refused") && e.contains("127.0.0.2"), "{st}");
    let n = site.count("/later");
    site.wait_count("/later", n + 2, 10).await;
    assert_eq!(other.total(), 0, "127.0.0.2 must never be contacted");
    assert!(history(&s.url, &alice).await.iter().all(|n| {
        n["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Source failing"))
    }));
}

/// A gzip-encoded feed is decoded, parsed, and its new items notified.
#[tokio::test]
async fn gzip_feed_is_decoded() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.with(|st| st.gzip = true);
    site.add("a", "Item A", "first");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    let st = wait_baseline(&s, &alice, &sub).await;
    assert_eq!(st["title"], "Test Feed", "{st}");
    assert_eq!(st["items_seen"], 1, "{st}");
    assert!(
        site.hits("/feed").iter().all(|h| h
            .accept_encoding
            .as_deref()
            .is_some_and(|a| a.contains("gzip"))),
        "the fetcher asks for gzip"
    );
    site.add("b", "Item B", "gzipped news");
    let h = wait_history(&s, &alice, 1, 10).await;
    assert_eq!(titles(&h), vec!["Item B"]);
    assert_eq!(h[0]["message"], "gzipped news");
}

/// Two users on one feed share one source: one fetch per interval, not two; each user's
/// keyword filter applies to them alone (case-insensitive, word-aware).
#[tokio::test]
async fn one_fetch_per_interval_and_per_user_filters() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Old 2br", "already there");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let asub = subscribe_ok(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": site.url("/feed")}, "filter": {"include": ["2br"]}}),
    )
    .await;
    let bsub = subscribe_ok(
        &s,
        &bob,
        json!({"source": {"kind": "feed", "url": site.url("/feed")}, "filter": {"exclude": ["2br"]}}),
    )
    .await;
    assert_eq!(asub["source_id"], bsub["source_id"], "one source");
    wait_baseline(&s, &alice, &asub).await;
    wait_baseline(&s, &bob, &bsub).await;

    // The default interval is 300 ms ±10 %: about 10 polls in 3 s for the one source,
    // about 20 if each subscriber polled on its own.
    let before = site.count("/feed");
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = site.count("/feed") - before;
    let elapsed = t0.elapsed().as_secs_f64();
    let expected = elapsed / 0.3;
    assert!(
        (polls as f64) <= expected * 1.3 + 1.0,
        "{polls} fetches in {elapsed:.1} s with two subscribers (one source, ~{expected:.0} expected)"
    );
    assert!(
        polls >= 3,
        "polling goes on: {polls} fetches in {elapsed:.1} s"
    );

    site.add("b", "Sunny 2BR flat $1900", "near the park");
    site.add("c", "Cozy studio $1200", "quiet street");
    site.add("d", "Huge 12br mansion", "for a big family");
    let ha = wait_history(&s, &alice, 1, 10).await;
    let hb = wait_history(&s, &bob, 2, 10).await;
    let n = site.count("/feed");
    site.wait_count("/feed", n + 3, 10).await;
    let ha2 = history(&s.url, &alice).await;
    let hb2 = history(&s.url, &bob).await;
    assert_eq!(titles(&ha), vec!["Sunny 2BR flat $1900"]);
    assert_eq!(titles(&ha2), titles(&ha));
    assert_eq!(
        titles(&hb2),
        vec!["Cozy studio $1200", "Huge 12br mansion"],
        "bob excludes the word 2br (and 12br is another word)"
    );
    assert_eq!(titles(&hb), titles(&hb2));
    assert!(
        ha2.iter()
            .chain(&hb2)
            .all(|n| n["source"] == asub["source_id"])
    );
}

/// Page watching: the elements matching the selector are the items; only new ones that
/// match the filter are notified, with their first link made absolute.
#[tokio::test]
async fn page_watching_notifies_new_matching_listings() {
    let site = Site::start().await;
    site.route("/search", Route::Listing);
    site.add_linked("1", "2br flat $1900", "", "/l/1");
    site.add_linked("2", "Studio $1200", "", "/l/2");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = subscribe_ok(
        &s,
        &alice,
        json!({
            "source": {"kind": "page", "url": site.url("/search"), "selector": "li.listing"},
            "filter": {"include": ["2br"]}
        }),
    )
    .await;
    assert_eq!(sub["source"]["kind"], "page");
    assert!(
        sub["source_id"].as_str().unwrap().starts_with("page:"),
        "{sub}"
    );
    let st = wait_baseline(&s, &alice, &sub).await;
    assert_eq!(
        st["items_seen"], 2,
        "two listings (nav and ad are not selected): {st}"
    );
    let n = site.count("/search");
    site.wait_count("/search", n + 2, 10).await;
    assert!(history(&s.url, &alice).await.is_empty());

    site.add_linked("3", "2br loft $2100", "", "/l/3");
    site.add_linked("4", "1br flat $1500", "", "/l/4");
    let h = wait_history(&s, &alice, 1, 10).await;
    let n = site.count("/search");
    site.wait_count("/search", n + 3, 10).await;
    let h2 = history(&s.url, &alice).await;
    assert_eq!(h2.len(), 1, "{:?}", titles(&h2));
    assert_eq!(h[0]["message"], "2br loft $2100", "{}", h[0]);
    assert_eq!(h[0]["click"], site.url("/l/3"));
    assert_eq!(h[0]["source"], sub["source_id"]);

    // Listings moving around on the page are not new.
    site.with(|st| st.items.reverse());
    let n = site.count("/search");
    site.wait_count("/search", n + 3, 10).await;
    assert_eq!(history(&s.url, &alice).await.len(), 1);
    let st = sub_view(&s, &alice, sub["id"].as_str().unwrap()).await;
    assert_eq!(st["status"]["items_seen"], 4, "{st}");
}

/// Subscribing to a web page finds the feed it advertises; a page without one is
/// `not_a_feed`.
#[tokio::test]
async fn feed_discovery_from_a_web_page() {
    let site = Site::start().await;
    site.route(
        "/blog",
        Route::Html(
            "<!doctype html><html><head><title>My blog</title>\
             <link rel=\"alternate\" type=\"application/atom+xml\" title=\"Atom\" href=\"/atom.xml\">\
             </head><body><p>Hello</p></body></html>"
                .into(),
        ),
    );
    site.route("/atom.xml", Route::Atom);
    site.route(
        "/plain",
        Route::Html(
            "<!doctype html><html><head><title>Nothing</title></head><body>no feed</body></html>"
                .into(),
        ),
    );
    site.with(|st| st.title = "Example Atom".into());
    site.add("a", "Entry A", "first");
    let s = start(&[]);
    let alice = s.user("alice").await;

    let sub = feed_sub(&s, &alice, &site.url("/blog")).await;
    assert!(
        sub["source"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/atom.xml")),
        "{sub}"
    );
    let st = wait_baseline(&s, &alice, &sub).await;
    assert!(
        st["url"].as_str().is_some_and(|u| u.ends_with("/atom.xml")),
        "{st}"
    );
    assert_eq!(st["title"], "Example Atom", "{st}");
    let blog_hits = site.count("/blog");
    site.add("b", "Entry B", "second");
    let h = wait_history(&s, &alice, 1, 10).await;
    assert_eq!(titles(&h), vec!["Entry B"]);
    assert_eq!(h[0]["click"], site.url("/items/b"));
    assert_eq!(site.count("/blog"), blog_hits, "polls go to the feed");

    let (code, v) = subscribe(
        &s,
        &alice,
        json!({"source": {"kind": "feed", "url": site.url("/plain")}}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(error_code(&v), "not_a_feed");
}

/// 410 Gone: subscribers are told once and polling stops.
#[tokio::test]
async fn gone_feed_stops_polling() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.add("a", "Item A", "first");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    wait_baseline(&s, &alice, &sub).await;

    site.route("/feed", Route::Status(410, Vec::new()));
    let h = wait_history(&s, &alice, 1, 10).await;
    let gone = with_prefix(&h, "Source gone");
    assert_eq!(gone.len(), 1, "{:?}", titles(&h));
    assert!(gone[0]["title"].as_str().unwrap().contains("Test Feed"));
    let st = wait_status(&s, &alice, &sub, 5, |st| st["status"] == "gone").await;
    assert!(st["next_poll"].is_null(), "{st}");
    let n = site.count("/feed");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(site.count("/feed"), n, "no request after 410");
    assert_eq!(
        site.hits("/feed")
            .iter()
            .filter(|h| h.status == 410)
            .count(),
        1
    );
    assert_eq!(history(&s.url, &alice).await.len(), 1);
}

/// 301: subscribers are told the source moved; later polls go to the new address; items
/// already seen are not notified again, new ones are.
#[tokio::test]
async fn moved_feed_is_followed() {
    let site = Site::start().await;
    site.route("/old", Route::Rss);
    site.route("/new", Route::Rss);
    site.add("a", "Item A", "first");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/old")).await;
    wait_baseline(&s, &alice, &sub).await;

    site.route("/old", Route::Redirect(301, "/new".into()));
    let h = wait_history(&s, &alice, 1, 10).await;
    let moved = with_prefix(&h, "Source moved");
    assert_eq!(moved.len(), 1, "{:?}", titles(&h));
    assert!(
        moved[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&site.url("/new"))),
        "{}",
        moved[0]
    );
    let st = wait_status(&s, &alice, &sub, 5, |st| {
        st["url"].as_str().is_some_and(|u| u.ends_with("/new"))
    })
    .await;
    assert_eq!(st["status"], "ok", "{st}");
    let old = site.count("/old");
    let new = site.count("/new");
    site.wait_count("/new", new + 3, 10).await;
    assert_eq!(site.count("/old"), old, "polls go to the new address");
    site.add("b", "Item B", "second");
    let h = wait_history(&s, &alice, 2, 10).await;
    let n = site.count("/new");
    site.wait_count("/new", n + 2, 10).await;
    let h2 = history(&s.url, &alice).await;
    assert_eq!(h.len(), 2, "{:?}", titles(&h));
    assert_eq!(titles(&h2), titles(&h));
    assert_eq!(with_prefix(&h2, "Item B").len(), 1);
}

/// A permanent redirect followed by a temporary one: the stored address is the target of
/// the permanent hop (the temporary one says nothing permanent about its own target).
#[tokio::test]
async fn permanent_then_temporary_redirect_stores_the_permanent_hop() {
    let site = Site::start().await;
    site.route("/old", Route::Rss);
    site.route("/mid", Route::Redirect(302, "/today".into()));
    site.route("/today", Route::Rss);
    site.add("a", "Item A", "first");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let sub = feed_sub(&s, &alice, &site.url("/old")).await;
    wait_baseline(&s, &alice, &sub).await;

    site.route("/old", Route::Redirect(301, "/mid".into()));
    wait_history(&s, &alice, 1, 10).await;
    let st = sub_view(&s, &alice, sub["id"].as_str().unwrap()).await;
    assert_eq!(
        st["status"]["url"],
        site.url("/mid"),
        "the stored URL is where the 301 pointed, not the temporary target: {st}"
    );
}

/// The poll status in `GET /api/v1/subscriptions/{id}`; unsubscribing the last subscriber
/// stops polling (another subscriber keeps it going until then).
#[tokio::test]
async fn status_and_unsubscribe_stops_polling() {
    let site = Site::start().await;
    site.route("/feed", Route::Rss);
    site.with(|st| st.title = "Status & Co".into());
    site.add("a", "Item A", "first");
    site.add("b", "Item B", "second");
    site.add("c", "Item C", "third");
    let s = start(&[]);
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let before = tidings_now_ms();
    let sub = feed_sub(&s, &alice, &site.url("/feed")).await;
    let bsub = feed_sub(&s, &bob, &site.url("/feed")).await;

    let st = wait_baseline(&s, &alice, &sub).await;
    assert_eq!(st["url"], site.url("/feed"), "{st}");
    assert_eq!(st["title"], "Status & Co", "{st}");
    assert_eq!(st["items_seen"], 3, "{st}");
    assert_eq!(st["items_notified"], 0, "{st}");
    assert_eq!(st["consecutive_errors"], 0, "{st}");
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["websub"], false, "{st}");
    let last_fetch = st["last_fetch"].as_i64().expect("last_fetch");
    assert!(
        last_fetch >= before - 1000 && last_fetch <= tidings_now_ms() + 1000,
        "last_fetch {last_fetch} is unix ms of the poll: {st}"
    );
    let next_poll = st["next_poll"].as_i64().expect("next_poll");
    assert!(next_poll > last_fetch, "{st}");
    let (code, list) = get_json(&format!("{}/api/v1/subscriptions", s.url), &alice).await;
    assert_eq!(code, 200);
    assert!(
        list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == sub["id"]),
        "{list}"
    );

    // Alice leaves: bob keeps the source polling.
    unsubscribe(&s, &alice, sub["id"].as_str().unwrap()).await;
    let n = site.count("/feed");
    site.wait_count("/feed", n + 3, 10).await;
    // Bob leaves: polling stops (a fetch in flight may still land).
    unsubscribe(&s, &bob, bsub["id"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = site.count("/feed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(site.count("/feed"), n, "no subscriber, no polling");
}

fn tidings_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
