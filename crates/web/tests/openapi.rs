//! Keeps `openapi.json` and the router in sync, in both directions:
//!
//! - every documented (method, path) reaches a real route of `router()` (not the 404 / 405
//!   fallbacks), and answers without credentials the way its `security` says;
//! - every `.route(...)` in `src/lib.rs` is documented with exactly the same methods, since
//!   `/{topic}` style routes would otherwise swallow a typo in the document.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tidings_bus::queue::{EmbeddedQueue, IngestQueue};
use tidings_routing::{Directory, Services};
use tidings_store::{Store, StoreOptions};
use tidings_web::{AppState, WebConfig, router};
use tokio::sync::watch;
use tower::ServiceExt;

const DOC: &str = include_str!("../openapi.json");
const LIB_RS: &str = include_str!("../src/lib.rs");

/// Method keys of an OpenAPI path item.
const DOC_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// Method routers of `axum::routing` that `router()` may chain.
const ROUTE_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// (METHOD, path) pairs.
type Pairs = BTreeSet<(String, String)>;

fn doc() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is not valid JSON")
}

/// Every (METHOD, path) of the document, with its operation object.
fn documented(doc: &Value) -> BTreeMap<(String, String), Value> {
    let version = doc["openapi"]
        .as_str()
        .expect("openapi.json has no `openapi` string");
    assert!(
        version.starts_with("3.1"),
        "openapi is {version:?}, expected 3.1.x"
    );
    let paths = doc["paths"]
        .as_object()
        .expect("openapi.json has no `paths` object");
    let mut ops = BTreeMap::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("path item {path} is not an object"));
        for (key, op) in item {
            if DOC_METHODS.contains(&key.as_str()) {
                ops.insert((key.to_ascii_uppercase(), path.clone()), op.clone());
            }
        }
    }
    assert!(
        ops.len() > 30,
        "only {} documented operations: is openapi.json complete?",
        ops.len()
    );
    ops
}

/// The slice of `s` up to (not including) the `)` that closes an already opened `(`,
/// skipping string and char literals.
fn until_close(s: &str) -> &str {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth > 0 => depth -= 1,
            b')' => return &s[..i],
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced parentheses in a .route(...) call of src/lib.rs");
}

/// Identifiers in `s` directly followed by `(` (outside string literals).
fn called_identifiers(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if ident(b[i]) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < b.len() && b[j] == b'(' {
                out.push(&s[start..i]);
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every (METHOD, path) that `router()` in `src/lib.rs` registers with `.route(...)`.
fn routed_in_source() -> Pairs {
    let pairs = routes_in(LIB_RS);
    assert!(
        pairs.len() > 30,
        "found only {} routed pairs in router(): is the parser broken?",
        pairs.len()
    );
    pairs
}

/// Every (METHOD, path) registered with `.route(...)` in the `router()` function of `src`.
fn routes_in(src: &str) -> Pairs {
    let start = src
        .find("pub fn router(")
        .expect("src/lib.rs has no `pub fn router(`");
    let rest = &src[start..];
    let end = rest
        .find("\n}\n")
        .expect("cannot find the end of `router()` in src/lib.rs");
    // Commented-out routes do not count.
    let body: String = rest[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for unsupported in ["nest", "nest_service", "route_service", "any", "on"] {
        assert!(
            !called_identifiers(&body).contains(&unsupported),
            "router() calls `{unsupported}(`: teach tests/openapi.rs to read it"
        );
    }
    let mut pairs = Pairs::new();
    let mut calls = 0;
    let mut rest = body.as_str();
    while let Some(i) = rest.find(".route(") {
        let args_start = &rest[i + ".route(".len()..];
        let args = until_close(args_start);
        rest = &args_start[args.len()..];
        calls += 1;
        let open = args
            .find('"')
            .unwrap_or_else(|| panic!("a .route( without a path literal: {args}"));
        let len = args[open + 1..]
            .find('"')
            .expect("unterminated path literal");
        let path = &args[open + 1..open + 1 + len];
        let after_path = &args[open + 1 + len + 1..];
        let methods: Vec<&str> = called_identifiers(after_path)
            .into_iter()
            .filter(|m| ROUTE_METHODS.contains(m))
            .collect();
        assert!(
            !methods.is_empty(),
            "found no method for .route(\"{path}\", ...) in src/lib.rs"
        );
        for m in methods {
            let new = pairs.insert((m.to_ascii_uppercase(), path.to_owned()));
            assert!(
                new,
                "{} {path} is routed twice in src/lib.rs",
                m.to_ascii_uppercase()
            );
        }
    }
    assert!(
        calls > 0,
        "found no .route( calls in router(): is the parser broken?"
    );
    pairs
}

/// `path` with each `{param}` replaced by a sample value.
fn sample_uri(path: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some("topic") => "sometopic",
                Some("id") => "1",
                Some("user" | "name") => "someuser",
                Some("code") => "somecode",
                Some(_) => "x",
                None => seg,
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// `Some(why)` if the answer came from the router's fallbacks rather than a route.
fn fallback(status: StatusCode, body: &[u8]) -> Option<String> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let code = json
        .as_ref()
        .and_then(|v| v["error"]["code"].as_str())
        .unwrap_or("");
    let message = json.as_ref().and_then(|v| v["error"]["message"].as_str());
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return Some(format!(
            "405 ({code}): the path exists but not with this method"
        ));
    }
    if status == StatusCode::NOT_FOUND {
        return match message {
            Some("no such route") | None => Some("404 no such route".into()),
            Some(_) => None,
        };
    }
    None
}

/// Whether an operation needs a credential: it has `security` and none of its alternatives
/// is the empty (anonymous) requirement.
fn needs_auth(op: &Value) -> bool {
    match op["security"].as_array() {
        None => false,
        Some(alternatives) => {
            !alternatives.is_empty()
                && alternatives
                    .iter()
                    .all(|r| r.as_object().is_some_and(|o| !o.is_empty()))
        }
    }
}

/// Names of the path parameters an operation declares (resolving `$ref`s).
fn path_params(doc: &Value, path_item: &Value, op: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let lists = [
        path_item["parameters"].as_array(),
        op["parameters"].as_array(),
    ];
    for p in lists.into_iter().flatten().flatten() {
        let p = match p["$ref"].as_str() {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("only local $refs");
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"))
            }
            None => p,
        };
        if p["in"] == "path" {
            names.insert(p["name"].as_str().expect("parameter name").to_owned());
        }
    }
    names
}

async fn build_router(dir: &std::path::Path) -> (Router, watch::Sender<bool>) {
    let store = Store::open(&dir.join("t.db"), StoreOptions::default()).expect("open store");
    let directory = Arc::new(
        Directory::load(store.clone())
            .await
            .expect("load directory"),
    );
    let queue: Arc<dyn IngestQueue> = Arc::new(EmbeddedQueue::new(store.clone()));
    let services = Services::start(store.clone(), directory, queue.clone(), Default::default())
        .expect("services");
    let (tx, rx) = watch::channel(false);
    let state = AppState::new(services, queue, WebConfig::default(), None, rx);
    (router(state), tx)
}

async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 4 << 20)
        .await
        .expect("read body");
    (status, body.to_vec())
}

#[test]
fn the_route_parser_reads_chained_methods_and_skips_comments() {
    let src = r#"
pub fn router(state: AppState) -> Router {
    let a = Router::new()
        .route("/{topic}", put(publish::publish_topic).post(publish::publish_topic))
        // .route("/old", get(old))
        .route(
            "/api/v1/topics/{topic}/grants/{user}",
            put(api::put_grant).delete(api::delete_grant),
        )
        .route("/x", get(api::get_topic).layer(f(")")))
        .layer(DefaultBodyLimit::max(limit));
    a.merge(b).fallback(error::not_found)
}
"#;
    let got = routes_in(src);
    let want: Pairs = [
        ("PUT", "/{topic}"),
        ("POST", "/{topic}"),
        ("PUT", "/api/v1/topics/{topic}/grants/{user}"),
        ("DELETE", "/api/v1/topics/{topic}/grants/{user}"),
        ("GET", "/x"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn every_route_in_router_is_documented_with_the_same_methods() {
    let doc = doc();
    let documented: Pairs = documented(&doc).into_keys().collect();
    let routed = routed_in_source();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "openapi.json and router() disagree.\n  routed but not documented: {undocumented:?}\n  \
         documented but not routed: {unrouted:?}"
    );
}

#[test]
fn documented_path_parameters_match_the_templates() {
    let doc = doc();
    let mut problems = Vec::new();
    for ((method, path), op) in documented(&doc) {
        let template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let declared = path_params(&doc, &doc["paths"][&path], &op);
        if template != declared {
            problems.push(format!(
                "{method} {path}: template {template:?}, declared {declared:?}"
            ));
        }
        for key in ["summary", "description"] {
            if op[key].as_str().is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!("{method} {path}: no {key}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn every_documented_operation_reaches_a_route() {
    let doc = doc();
    let ops = documented(&doc);
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _shutdown) = build_router(dir.path()).await;

    // The fallback detection itself must work, or every check below would pass vacuously.
    let (s, b) = call(&app, "GET", "/api/v1/no/such/route/here").await;
    assert!(
        fallback(s, &b).is_some(),
        "unknown path not detected as fallback: {s}"
    );
    let (s, b) = call(&app, "DELETE", "/healthz").await;
    assert!(
        fallback(s, &b).is_some(),
        "wrong method not detected as fallback: {s}"
    );
    // `/{topic}` takes only PUT and POST: a GET on a one-segment typo is a 405, not a route.
    let (s, b) = call(&app, "GET", "/healthzz").await;
    assert!(
        fallback(s, &b).is_some(),
        "typo swallowed by /{{topic}}: {s}"
    );

    let mut problems = Vec::new();
    for ((method, path), op) in &ops {
        let uri = sample_uri(path);
        let (status, body) = call(&app, method, &uri).await;
        let text = String::from_utf8_lossy(&body);
        let text = text.chars().take(200).collect::<String>();
        if let Some(why) = fallback(status, &body) {
            problems.push(format!(
                "{method} {path} ({uri}): fell through to the router's fallback: {why}: {text}"
            ));
            continue;
        }
        let auth = needs_auth(op);
        if auth && status != StatusCode::UNAUTHORIZED {
            problems.push(format!(
                "{method} {path}: documented as needing a credential, but without one it answered {status}: {text}"
            ));
        }
        if !auth && status == StatusCode::UNAUTHORIZED {
            problems.push(format!(
                "{method} {path}: documented as public, but without a credential it answered 401: {text}"
            ));
        }
        if op["responses"].get(status.as_str()).is_none()
            && op["responses"].get("default").is_none()
        {
            problems.push(format!(
                "{method} {path}: answered {status}, which is not documented"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The served document is this file.
    let (s, b) = call(&app, "GET", "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let served: Value = serde_json::from_slice(&b).expect("served document is JSON");
    assert_eq!(
        served, doc,
        "/api/v1/openapi.json does not serve crates/web/openapi.json"
    );
}
