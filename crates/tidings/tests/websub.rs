//! WebSub end to end: a local hub advertised by a feed, tidings subscribing with a secret,
//! answering the verification challenge, and taking signed pushes at once (the feed is
//! polled only hourly here, so anything that arrives fast came by push).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::*;
use serde_json::{Value, json};

#[derive(Default)]
struct Hub {
    base: String,
    entries: Vec<(String, String)>,
    /// (callback, secret, topic) once tidings subscribed.
    subscription: Option<(String, String, String)>,
    verified: bool,
    verify_answer: Option<String>,
}

type Shared = Arc<Mutex<Hub>>;

fn atom(h: &Hub) -> String {
    let mut s = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Hubbed</title><id>urn:hubbed</id><updated>2026-11-26T00:00:00Z</updated>
  <link rel="self" href="{0}/feed.xml"/>
  <link rel="hub" href="{0}/hub"/>
"#,
        h.base
    );
    for (id, title) in h.entries.iter().rev() {
        s.push_str(&format!(
            "  <entry><id>{id}</id><title>{title}</title><updated>2026-11-26T00:00:00Z</updated><link href=\"{}/e/{id}\"/></entry>\n",
            h.base
        ));
    }
    s.push_str("</feed>\n");
    s
}

async fn feed(State(h): State<Shared>) -> impl IntoResponse {
    let body = atom(&h.lock().unwrap());
    ([(header::CONTENT_TYPE, "application/atom+xml")], body)
}

async fn hub(
    State(h): State<Shared>,
    Form(form): Form<Vec<(String, String)>>,
) -> impl IntoResponse {
    let get = |k: &str| {
        form.iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("hub.mode"), "subscribe");
    let (callback, secret, topic) = (get("hub.callback"), get("hub.secret"), get("hub.topic"));
    assert!(secret.len() >= 16, "a real secret is sent");
    h.lock().unwrap().subscription = Some((callback.clone(), secret, topic.clone()));
    // Verify intent asynchronously, as hubs do.
    let h2 = h.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let url = format!(
            "{callback}?hub.mode=subscribe&hub.topic={}&hub.challenge=c4allenge&hub.lease_seconds=600",
            urlencode(&topic)
        );
        let r = reqwest::get(&url).await.unwrap();
        let ok = r.status() == 200;
        let body = r.text().await.unwrap();
        let mut h = h2.lock().unwrap();
        h.verified = ok && body == "c4allenge";
        h.verify_answer = Some(body);
    });
    axum::http::StatusCode::ACCEPTED
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sign(secret: &str, body: &[u8]) -> String {
    tidings_sources::websub::sign_sha256(secret, body)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn websub_subscribe_verify_and_signed_push() {
    let shared: Shared = Arc::new(Mutex::new(Hub::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    {
        let mut h = shared.lock().unwrap();
        h.base = base.clone();
        h.entries.push(("e1".into(), "Old one".into()));
    }
    let app = Router::new()
        .route("/feed.xml", get(feed))
        .route("/hub", post(hub))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = free_port();
    let s = Server::start_with(&[
        ("TIDINGS_HTTP_LISTEN", &format!("127.0.0.1:{port}")),
        ("TIDINGS_BASE_URL", &format!("http://127.0.0.1:{port}")),
        ("TIDINGS_SOURCES_ALLOW_PRIVATE_NETWORKS", "true"),
        // Polling is hourly: only a push can deliver within the test.
        ("TIDINGS_SOURCES_DEFAULT_INTERVAL", "1h"),
        ("TIDINGS_SOURCES_MIN_INTERVAL", "1h"),
    ]);
    let t = s.user("alice").await;
    let r = client()
        .post(format!("{}/api/v1/subscriptions", s.url))
        .bearer_auth(&t)
        .json(&json!({"source": {"kind": "feed", "url": format!("{base}/feed.xml")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sub: Value = r.json().await.unwrap();

    // tidings subscribes at the hub after its first poll, and answers the challenge.
    for _ in 0..200 {
        if shared.lock().unwrap().verified {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, status) = get_json(
        &format!(
            "{}/api/v1/subscriptions/{}",
            s.url,
            sub["id"].as_str().unwrap()
        ),
        &t,
    )
    .await;
    {
        let h = shared.lock().unwrap();
        assert!(
            h.verified,
            "hub not verified: status {status}, subscription {:?}, answer {:?}\n{}",
            h.subscription,
            h.verify_answer,
            s.output()
        );
    }
    let (callback, secret, topic) = shared.lock().unwrap().subscription.clone().unwrap();
    assert_eq!(topic, format!("{base}/feed.xml"));
    assert!(
        callback.starts_with(&format!("http://127.0.0.1:{port}/websub/feed:")),
        "{callback}"
    );
    let (_, v) = get_json(
        &format!(
            "{}/api/v1/subscriptions/{}",
            s.url,
            sub["id"].as_str().unwrap()
        ),
        &t,
    )
    .await;
    assert_eq!(v["status"]["websub"], true, "{v}");

    // A verification for another topic is refused.
    let r = reqwest::get(format!(
        "{callback}?hub.mode=subscribe&hub.topic=http%3A%2F%2Fevil%2F&hub.challenge=x"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    // A signed push is delivered at once.
    let body = {
        let mut h = shared.lock().unwrap();
        h.entries.push(("e2".into(), "Pushed fresh".into()));
        atom(&h)
    };
    let started = Instant::now();
    let r = client()
        .post(&callback)
        .header("content-type", "application/atom+xml")
        .header("x-hub-signature", sign(&secret, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let h = eventually(5, || async {
        let h = history(&s.url, &t).await;
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(h.len(), 1, "only the pushed item, not the baseline: {h:?}");
    assert_eq!(h[0]["title"], "Pushed fresh");

    // A push with a wrong signature is acknowledged but ignored.
    let body = {
        let mut h = shared.lock().unwrap();
        h.entries.push(("e3".into(), "Forged".into()));
        atom(&h)
    };
    let r = client()
        .post(&callback)
        .header("x-hub-signature", sign("not-the-secret", body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = client().post(&callback).body(body).send().await.unwrap();
    assert_eq!(r.status(), 202, "unsigned: acknowledged, ignored");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        history(&s.url, &t).await.len(),
        1,
        "forged pushes must not notify"
    );

    // A push for a source that never subscribed is told to stop.
    let r = client()
        .post(format!(
            "http://127.0.0.1:{port}/websub/feed:0000000000000000"
        ))
        .header("x-hub-signature", "sha256=00")
        .body("<feed/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
}
