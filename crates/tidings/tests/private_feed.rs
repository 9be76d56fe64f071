//! Private Atom feeds against the real binary, read by a real feed parser: Python's
//! feedparser (`tests/feedparser_check.py`; needs `pip install feedparser`). Covers the
//! document, conditional GET, rotation, deletion, per-subscription scope and that nobody can
//! scope a feed to someone else's subscription.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/feedparser_check.py");

/// What Python's feedparser makes of `doc` (see `feedparser_check.py`).
fn feedparser(doc: &str) -> Value {
    let mut child = Command::new("python3")
        .arg(CHECK)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the private feed test (with: pip install feedparser)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        panic!(
            "Python feedparser is not installed; this test needs it: pip install feedparser\n{stderr}"
        );
    }
    assert!(
        out.status.success(),
        "feedparser_check.py failed:\n{stderr}"
    );
    serde_json::from_slice(&out.stdout).expect("feedparser_check.py prints JSON")
}

async fn publish_with(s: &Server, token: &str, topic: &str, headers: &[(&str, &str)], body: &str) {
    let mut r = client()
        .post(format!("{}/{topic}", s.url))
        .bearer_auth(token)
        .body(body.to_owned());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn create_feed(s: &Server, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = client()
        .post(format!("{}/api/v1/feeds", s.url))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn fetch(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

async fn fetch_ok(url: &str) -> (reqwest::header::HeaderMap, String) {
    let r = fetch(url, &[]).await;
    assert_eq!(r.status(), 200, "GET {url}");
    let h = r.headers().clone();
    (h, r.text().await.unwrap())
}

async fn wait_for_history(s: &Server, token: &str, n: usize) {
    eventually(20, || async {
        (history(&s.url, token).await.len() >= n).then_some(())
    })
    .await;
}

fn titles(parsed: &Value) -> Vec<String> {
    parsed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn subscription_id(s: &Server, token: &str, topic: &str) -> String {
    let (st, v) = get_json(&format!("{}/api/v1/subscriptions", s.url), token).await;
    assert_eq!(st, 200);
    v["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["source_id"] == format!("topic:{topic}"))
        .unwrap_or_else(|| panic!("no subscription to {topic}: {v}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn private_feeds_read_by_feedparser() {
    // Fails at once, with the fix, if the parser is missing.
    feedparser("<feed xmlns=\"http://www.w3.org/2005/Atom\"/>");

    let s = Server::start();
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    // The first publish claims the topic and subscribes alice to it.
    publish_with(
        &s,
        &alice,
        "alerts",
        &[
            ("Title", "Disk almost full"),
            ("Tags", "warning,disk"),
            ("Click", "https://grafana.example/d/disk?a=1&b=2"),
        ],
        "/var is 95% full",
    )
    .await;
    publish_with(&s, &alice, "alerts", &[], "Backup done\nall 3 volumes").await;
    publish_with(
        &s,
        &alice,
        "alerts",
        &[(
            "Title",
            "Tom & Jerry <script>alert('x')</script> \"quoted\"",
        )],
        "a < b && c > d",
    )
    .await;
    publish_with(
        &s,
        &alice,
        "other",
        &[("Title", "elsewhere")],
        "other topic",
    )
    .await;
    wait_for_history(&s, &alice, 4).await;

    // No credential, no API.
    let r = client()
        .get(format!("{}/api/v1/feeds", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Create the whole-history feed (no body at all).
    let (st, v) = create_feed(&s, &alice, None).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["rotated"], false);
    assert_eq!(v["feed"]["id"], "all");
    let url = v["feed"]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/feeds/pf_", s.url)) && url.ends_with(".atom"),
        "{url}"
    );

    let (h, doc) = fetch_ok(&url).await;
    assert_eq!(
        h["content-type"].to_str().unwrap(),
        "application/atom+xml; charset=utf-8"
    );
    assert!(h["cache-control"].to_str().unwrap().starts_with("private"));
    let etag = h["etag"].to_str().unwrap().to_owned();
    let last_modified = h["last-modified"].to_str().unwrap().to_owned();
    assert!(!doc.contains("<script"), "{doc}");

    let p = feedparser(&doc);
    assert_eq!(p["bozo"], 0, "{p}");
    assert_eq!(p["version"], "atom10");
    assert_eq!(p["feed"]["title"], "tidings: alice");
    assert_eq!(p["feed"]["author"], "alice");
    let feed_id = p["feed"]["id"].clone();
    assert!(feed_id.as_str().unwrap().starts_with("urn:uuid:"), "{p}");
    let feed_links = p["feed"]["links"].as_array().unwrap();
    assert!(
        feed_links
            .iter()
            .any(|l| l["rel"] == "self" && l["href"] == url.as_str()),
        "{p}"
    );
    assert!(feed_links.iter().any(|l| l["rel"] == "alternate"), "{p}");
    assert_eq!(
        titles(&p),
        [
            "elsewhere",
            "Tom & Jerry <script>alert('x')</script> \"quoted\"",
            "Backup done",
            "Disk almost full",
        ],
        "newest first; a title-less message is titled by its first line"
    );
    let entries = p["entries"].as_array().unwrap();
    let disk = &entries[3];
    assert_eq!(disk["link"], "https://grafana.example/d/disk?a=1&b=2");
    assert_eq!(disk["tags"], json!(["warning", "disk"]));
    assert_eq!(disk["content"][0]["type"], "text/plain");
    assert_eq!(disk["content"][0]["value"], "/var is 95% full");
    assert_eq!(disk["title_type"], "text/plain");
    assert_eq!(entries[1]["content"][0]["value"], "a < b && c > d");
    assert_eq!(
        entries[2]["content"][0]["value"],
        "Backup done\nall 3 volumes"
    );
    // No click, no link element (feedparser then offers the id as `link`: its guidislink).
    assert_eq!(entries[2]["links"], json!([]), "{p}");
    let ids: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|i| i.starts_with("urn:uuid:")), "{ids:?}");
    for e in entries {
        assert!(
            e["published"].is_string() && e["updated"].is_string(),
            "{e}"
        );
    }

    // The same entries keep their ids from one fetch to the next.
    let (_, again) = fetch_ok(&url).await;
    assert_eq!(again, doc);

    // Conditional GET.
    let r = fetch(&url, &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.text().await.unwrap().is_empty());
    let r = fetch(&url, &[("If-Modified-Since", &last_modified)]).await;
    assert_eq!(r.status(), 304);
    let r = fetch(&url, &[("If-None-Match", "\"something-else\"")]).await;
    assert_eq!(r.status(), 200);

    // ?limit=
    let (_, two) = fetch_ok(&format!("{url}?limit=2")).await;
    assert_eq!(feedparser(&two)["entries"].as_array().unwrap().len(), 2);
    let r = fetch(&format!("{url}?limit=201"), &[]).await;
    assert_eq!(r.status(), 400);

    // A new item changes the validator: the old ETag gets the full feed.
    publish_with(&s, &alice, "alerts", &[("Title", "fifth")], "new").await;
    wait_for_history(&s, &alice, 5).await;
    let r = fetch(&url, &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    let p = feedparser(&r.text().await.unwrap());
    assert_eq!(p["bozo"], 0);
    assert_eq!(titles(&p)[0], "fifth");

    // A feed of one subscription holds only that subscription's items.
    let sub = subscription_id(&s, &alice, "alerts").await;
    let (st, v) = create_feed(&s, &alice, Some(json!({"subscription": sub}))).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["feed"]["id"], sub.as_str());
    assert_eq!(v["feed"]["source"], "topic:alerts");
    let scoped_url = v["feed"]["url"].as_str().unwrap().to_owned();
    assert_ne!(scoped_url, url);
    let (_, doc) = fetch_ok(&scoped_url).await;
    let p = feedparser(&doc);
    assert_eq!(p["bozo"], 0, "{p}");
    assert_eq!(p["feed"]["title"], "tidings: alice: alerts");
    assert_eq!(
        titles(&p),
        [
            "fifth",
            "Tom & Jerry <script>alert('x')</script> \"quoted\"",
            "Backup done",
            "Disk almost full",
        ]
    );

    // Nobody can scope a feed to someone else's subscription (or one that does not exist).
    publish_with(&s, &bob, "bobs", &[], "bob's own").await;
    let bobs_sub = subscription_id(&s, &bob, "bobs").await;
    let (st, v) = create_feed(&s, &alice, Some(json!({"subscription": bobs_sub}))).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(error_code(&v), "not_found");
    let (st, v) = create_feed(&s, &alice, Some(json!({"subscription": "sub_nope"}))).await;
    assert_eq!((st, error_code(&v)), (404, "not_found".into()));
    let (st, v) = create_feed(&s, &alice, Some(json!({"subscriptoin": sub}))).await;
    assert_eq!(st, 400, "unknown fields are refused: {v}");
    // Bob sees none of alice's feeds, and cannot delete them.
    let (st, v) = get_json(&format!("{}/api/v1/feeds", s.url), &bob).await;
    assert_eq!((st, v["feeds"].clone()), (200, json!([])));
    let r = client()
        .delete(format!("{}/api/v1/feeds/all", s.url))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    fetch_ok(&url).await;

    // Rotation: a new secret; the old URL is a 404 at once.
    let (st, v) = create_feed(&s, &alice, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rotated"], true);
    let new_url = v["feed"]["url"].as_str().unwrap().to_owned();
    assert_ne!(new_url, url);
    let r = fetch(&url, &[]).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "not_found");
    let (_, doc) = fetch_ok(&new_url).await;
    let p = feedparser(&doc);
    assert_eq!(p["bozo"], 0);
    assert_eq!(p["entries"].as_array().unwrap().len(), 5);
    // The feed's identity survives rotation, so a reader re-pointed at it keeps its entries.
    assert_eq!(p["feed"]["id"], feed_id);

    // The owner can see the URLs again.
    let (st, v) = get_json(&format!("{}/api/v1/feeds", s.url), &alice).await;
    assert_eq!(st, 200);
    let listed: Vec<(&str, &str)> = v["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["url"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("all", new_url.as_str()),
            (sub.as_str(), scoped_url.as_str())
        ]
    );

    // Unknown secrets and malformed names are the same 404.
    for bad in [
        format!("{}/feeds/pf_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.atom", s.url),
        format!("{}/feeds/nothing.atom", s.url),
        new_url.trim_end_matches(".atom").to_owned(),
    ] {
        let r = fetch(&bad, &[]).await;
        assert_eq!(r.status(), 404, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["message"], "feed not found", "{bad}");
    }

    // Deleting a feed ends its URL; the other feed is untouched.
    let r = client()
        .delete(format!("{}/api/v1/feeds/all", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fetch(&new_url, &[]).await.status(), 404);
    fetch_ok(&scoped_url).await;
    let r = client()
        .delete(format!("{}/api/v1/feeds/all", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Unsubscribing ends the scoped feed's URL too.
    let r = client()
        .delete(format!("{}/api/v1/subscriptions/{sub}", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fetch(&scoped_url, &[]).await.status(), 404);
}
