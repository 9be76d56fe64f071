//! Destinations and the outbox, end to end: a running server delivers to local HTTP servers
//! playing webhook receivers (well-behaved, failing, rate-limiting, hanging), and the
//! delivery records say what happened.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use serde_json::{Value, json};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
    body: String,
    answered: u16,
}

/// A local HTTP server with a few behaviours by path:
/// - `/ok/...`: 200;
/// - `/flaky/...`: 500 for the first two requests, then 200;
/// - `/limited/...`: 429 with `Retry-After: 1` once, then 200;
/// - `/gone/...`: 404;
/// - `/hang/...`: never answers;
/// - `/down/...`: 503 while `down` is set, else 200.
#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    counts: Arc<Mutex<HashMap<String, u32>>>,
    down: Arc<Mutex<bool>>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/{kind}/{name}", axum::routing::post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, addr)
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    fn delivered(&self, path: &str) -> Vec<Hit> {
        self.hits(path)
            .into_iter()
            .filter(|h| h.answered == 200)
            .collect()
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let path = format!("/{kind}/{name}");
    let n = {
        let mut c = r.counts.lock().unwrap();
        let e = c.entry(path.clone()).or_default();
        *e += 1;
        *e
    };
    let (status, retry_after) = match kind.as_str() {
        "ok" => (200, None),
        "flaky" if n <= 2 => (500, None),
        "flaky" => (200, None),
        "limited" if n == 1 => (429, Some("1")),
        "limited" => (200, None),
        "gone" => (404, None),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (200, None)
        }
        "down" if *r.down.lock().unwrap() => (503, None),
        _ => (200, None),
    };
    r.hits.lock().unwrap().push(Hit {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
        answered: status,
    });
    let mut resp = (StatusCode::from_u16(status).unwrap(), "answer").into_response();
    if let Some(s) = retry_after {
        resp.headers_mut().insert("retry-after", s.parse().unwrap());
    }
    resp
}

fn start_delivering(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS", "true"),
        ("TIDINGS_DELIVERY_RETRY_BASE", "200ms"),
        ("TIDINGS_DELIVERY_RETRY_MAX", "2s"),
        ("TIDINGS_DELIVERY_TIMEOUT", "2s"),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&env)
}

async fn subscribe_topic(url: &str, token: &str, topic: &str) {
    let r = client()
        .post(format!("{url}/api/v1/subscriptions"))
        .bearer_auth(token)
        .json(&json!({"source": {"kind": "topic", "topic": topic}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn add_destination(url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{url}/api/v1/destinations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn publish_id(url: &str, token: &str, topic: &str, message: &str) -> String {
    let r = client()
        .post(format!("{url}/{topic}"))
        .bearer_auth(token)
        .header("Title", "Disk alert")
        .header("Priority", "high")
        .body(message.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// The delivery record of a notification for the destination named `name`, once it exists.
async fn record(url: &str, token: &str, id: &str, name: &str) -> Value {
    let (s, v) = get_json(&format!("{url}/api/v1/notifications/{id}"), token).await;
    if s != 200 {
        return Value::Null;
    }
    v["deliveries"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["destination"] == name).cloned())
        .unwrap_or(Value::Null)
}

async fn record_with_status(url: &str, token: &str, id: &str, name: &str, status: &str) -> Value {
    eventually(30, || async {
        let r = record(url, token, id, name).await;
        (r["status"] == status).then_some(r)
    })
    .await
}

/// Checks an X-Tidings-Signature with Python's hmac, independently of our code.
fn python_hmac_ok(secret: &str, timestamp: &str, body: &str, signature: &str) -> bool {
    let script = r#"
import hmac, hashlib, os, sys
mac = hmac.new(os.environ["SECRET"].encode(), (os.environ["TS"] + "." + os.environ["BODY"]).encode(), hashlib.sha256).hexdigest()
sys.exit(0 if hmac.compare_digest("sha256=" + mac, os.environ["SIG"]) else 1)
"#;
    std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("SECRET", secret)
        .env("TS", timestamp)
        .env("BODY", body)
        .env("SIG", signature)
        .status()
        .expect("python3 is needed for this test")
        .success()
}

#[tokio::test]
async fn a_webhook_gets_a_signed_idempotent_body_and_the_record_says_so() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;

    let (st, created) = add_destination(
        &s.url,
        &alice,
        json!({"name": "my hook", "url": format!("json://{addr}/ok/alice")}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["kind"], "webhook");
    assert_eq!(created["verified"], true, "webhooks need no code");
    let secret = created["secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    assert!(secret.len() >= 24, "{secret}");

    // The secret is never shown again.
    let (_, listed) = get_json(&format!("{}/api/v1/destinations", s.url), &alice).await;
    assert_eq!(listed["destinations"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&secret), "{listed}");

    let id = publish_id(&s.url, &alice, "alerts", "disk /dev/sda1 is 97% full").await;
    let hit = eventually(20, || async {
        rx.delivered("/ok/alice").into_iter().next()
    })
    .await;
    assert_eq!(hit.headers["content-type"], "application/json");
    assert_eq!(hit.headers["idempotency-key"], id);
    let ts = &hit.headers["x-tidings-timestamp"];
    let sig = &hit.headers["x-tidings-signature"];
    assert!(
        python_hmac_ok(&secret, ts, &hit.body, sig),
        "signature {sig} does not verify"
    );
    assert!(!python_hmac_ok("another secret", ts, &hit.body, sig));
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["title"], "Disk alert");
    assert_eq!(body["message"], "disk /dev/sda1 is 97% full");
    assert_eq!(body["priority"], 4);

    let rec = record_with_status(&s.url, &alice, &id, "my hook", "delivered").await;
    assert_eq!(rec["kind"], "webhook");
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{rec}");
    assert_eq!(attempts[0]["ok"], true);
    assert_eq!(attempts[0]["status"], 200);
    assert!(rec["reason"].as_str().unwrap().contains("my hook"), "{rec}");

    // "Send test" reaches it too, outside routing, and shows on the destination.
    let dest_id = created["id"].as_str().unwrap();
    let r = client()
        .post(format!("{}/api/v1/destinations/{dest_id}/test", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually(20, || async {
        rx.delivered("/ok/alice")
            .iter()
            .any(|h| h.body.contains("tidings test"))
            .then_some(())
    })
    .await;
    let recs = eventually(20, || async {
        let (_, v) = get_json(
            &format!("{}/api/v1/destinations/{dest_id}/deliveries", s.url),
            &alice,
        )
        .await;
        let a = v["deliveries"].as_array().cloned().unwrap_or_default();
        (a.len() == 2 && a.iter().all(|d| d["status"] == "delivered")).then_some(a)
    })
    .await;
    assert!(
        recs.iter().any(|d| d["reason"] == "test requested"),
        "{recs:?}"
    );

    // Another user sees none of it.
    let bob = s.user("bob").await;
    let (st, v) = get_json(&format!("{}/api/v1/destinations/{dest_id}", s.url), &bob).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(error_code(&v), "not_found");
}

#[tokio::test]
async fn failures_retry_or_dead_letter_and_never_delay_other_destinations() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    for (name, path) in [
        ("hang", "hang/a"),
        ("flaky", "flaky/a"),
        ("limited", "limited/a"),
        ("gone", "gone/a"),
        ("ok", "ok/a"),
    ] {
        let (st, v) = add_destination(
            &s.url,
            &alice,
            json!({"name": name, "url": format!("json://{addr}/{path}")}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    let id = publish_id(&s.url, &alice, "alerts", "one item, five destinations").await;

    // The healthy destination gets it while the hanging one is still waiting for its
    // first answer: a hang holds up only its own queue.
    eventually(20, || async {
        (!rx.delivered("/ok/a").is_empty()).then_some(())
    })
    .await;
    let hang = record(&s.url, &alice, &id, "hang").await;
    assert_eq!(hang["status"], "queued", "{hang}");
    assert_eq!(hang["attempts"].as_array().unwrap().len(), 0, "{hang}");

    // 500, 500, then 200: delivered on the third attempt, every attempt recorded.
    let flaky = record_with_status(&s.url, &alice, &id, "flaky", "delivered").await;
    let a = flaky["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 3, "{flaky}");
    assert_eq!(a[0]["status"], 500);
    assert_eq!(a[0]["ok"], false);
    assert!(a[0]["retry_in_ms"].as_u64().unwrap() > 0);
    assert_eq!(a[2]["ok"], true);
    assert_eq!(rx.delivered("/flaky/a").len(), 1);

    // 429 with Retry-After: 1 is honoured although the backoff base is 200ms.
    let limited = record_with_status(&s.url, &alice, &id, "limited", "delivered").await;
    let a = limited["attempts"].as_array().unwrap();
    assert_eq!(a[0]["status"], 429, "{limited}");
    assert!(a[0]["retry_in_ms"].as_u64().unwrap() >= 1000, "{limited}");

    // 404 is not retried: dead at once, with the reason.
    let gone = record_with_status(&s.url, &alice, &id, "gone", "dead").await;
    let a = gone["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 1, "{gone}");
    assert_eq!(a[0]["status"], 404);
    assert_eq!(rx.hits("/gone/a").len(), 1);

    // The hanging one times out (2s) and is retried.
    let hang = record_with_status(&s.url, &alice, &id, "hang", "retrying").await;
    let err = hang["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(err.contains("time"), "{hang}");

    // A dead letter is an event of kind `failed`; deliveries are `delivered` events.
    let db = s.db_path();
    eventually(10, || async {
        (sqlite_count(&db, "SELECT count(*) FROM events WHERE kind = 'failed'") >= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_dead_destination_is_given_up_on_and_its_circuit_opens() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[
        ("TIDINGS_DELIVERY_MAX_ATTEMPTS", "3"),
        ("TIDINGS_DELIVERY_BREAKER_THRESHOLD", "3"),
        ("TIDINGS_DELIVERY_BREAKER_COOLDOWN", "1h"),
        ("TIDINGS_DELIVERY_BREAKER_COOLDOWN_MAX", "1h"),
    ]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    *rx.down.lock().unwrap() = true;
    let (_, d) = add_destination(
        &s.url,
        &alice,
        json!({"name": "down", "url": format!("json://{addr}/down/a")}),
    )
    .await;
    let dest_id = d["id"].as_str().unwrap().to_owned();
    let first = publish_id(&s.url, &alice, "alerts", "first").await;
    let second = publish_id(&s.url, &alice, "alerts", "second").await;

    let dead = record_with_status(&s.url, &alice, &first, "down", "dead").await;
    let a = dead["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 3, "{dead}");
    assert!(
        a[2]["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{dead}"
    );

    // Three failures in a row opened the circuit: the second item waits, untried, on disk.
    let (_, v) = get_json(&format!("{}/api/v1/destinations/{dest_id}", s.url), &alice).await;
    assert_eq!(v["health"]["state"], "open", "{v}");
    assert!(v["health"]["paused_until"].as_i64().is_some(), "{v}");
    assert_eq!(v["pending"], 1, "{v}");
    let waiting = record(&s.url, &alice, &second, "down").await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(rx.hits("/down/a").len(), 3);
}

#[tokio::test]
async fn queued_deliveries_survive_a_crash_and_go_out_once() {
    let (rx, addr) = Receiver::start().await;
    let mut s = start_delivering(&[("TIDINGS_DELIVERY_RETRY_BASE", "1s")]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    *rx.down.lock().unwrap() = true;
    let (st, _) = add_destination(
        &s.url,
        &alice,
        json!({"name": "down", "url": format!("json://{addr}/down/b")}),
    )
    .await;
    assert_eq!(st, 201);
    let id = publish_id(&s.url, &alice, "alerts", "survive me").await;
    record_with_status(&s.url, &alice, &id, "down", "retrying").await;

    s.kill9();
    *rx.down.lock().unwrap() = false;
    s.spawn();

    let rec = record_with_status(&s.url, &alice, &id, "down", "delivered").await;
    assert!(rec["attempts"].as_array().unwrap().len() >= 2, "{rec}");
    // Give a duplicate every chance to show up, then count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ok = rx.delivered("/down/b");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].headers["idempotency-key"], id);
}

#[tokio::test]
async fn destinations_are_checked_before_they_are_stored() {
    let s = Server::start();
    let alice = s.user("alice").await;
    let cases = [
        // Private addresses are refused unless the operator allows them.
        (
            json!({"name": "a", "url": "json://127.0.0.1:9/x"}),
            "forbidden_address",
        ),
        (
            json!({"name": "b", "url": "gopher://example.org/x"}),
            "invalid_destination",
        ),
        (
            json!({"name": "c", "url": "xmpp://alice@example.org"}),
            "not_available",
        ),
        // No relay configured: mail cannot be sent, so it is refused now, not later.
        (
            json!({"name": "d", "url": "mailto:alice@example.org"}),
            "not_available",
        ),
        (json!({"name": "e"}), "invalid_destination"),
        (
            json!({"name": "f", "config": {"kind": "webhook"}}),
            "invalid_destination",
        ),
    ];
    for (body, code) in cases {
        let (st, v) = add_destination(&s.url, &alice, body.clone()).await;
        assert_eq!(st, 400, "{body} -> {v}");
        assert_eq!(error_code(&v), code, "{body} -> {v}");
    }
    let (_, v) = get_json(&format!("{}/api/v1/destinations", s.url), &alice).await;
    assert_eq!(v["destinations"].as_array().unwrap().len(), 0, "{v}");
}

/// `HH:MM:SS` in UTC, `offset` seconds from now.
fn utc_time(offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = (now + offset).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

async fn put_settings(url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .put(format!("{url}/api/v1/settings"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn publish_priority(url: &str, token: &str, title: &str, priority: &str) -> String {
    let r = client()
        .post(format!("{url}/alerts"))
        .bearer_auth(token)
        .header("Title", title)
        .header("Priority", priority)
        .body("body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn titles(hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| {
            serde_json::from_str::<Value>(&h.body).unwrap()["title"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn quiet_hours_hold_deliveries_until_they_end_and_urgent_breaks_through() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    let (st, _) = add_destination(
        &s.url,
        &alice,
        json!({"name": "hook", "url": format!("json://{addr}/ok/quiet")}),
    )
    .await;
    assert_eq!(st, 201);

    // Bad settings are refused with the reason.
    let (st, v) = put_settings(&s.url, &alice, json!({"time_zone": "Mars/Olympus"})).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("IANA"),
        "{v}"
    );

    let (st, v) = put_settings(
        &s.url,
        &alice,
        json!({"time_zone": "UTC", "summarize_over": 3,
               "quiet_hours": {"start": utc_time(-60), "end": utc_time(5)}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");

    let a = publish_priority(&s.url, &alice, "first", "default").await;
    publish_priority(&s.url, &alice, "second", "high").await;
    publish_priority(&s.url, &alice, "fire", "urgent").await;

    // Urgent breaks through at once; the others wait, on disk, with the reason recorded.
    eventually(20, || async {
        titles(&rx.delivered("/ok/quiet"))
            .contains(&"fire".to_owned())
            .then_some(())
    })
    .await;
    let held = record(&s.url, &alice, &a, "hook").await;
    assert_eq!(held["status"], "held", "{held}");
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("quiet hours until"),
        "{held}"
    );
    assert_eq!(titles(&rx.delivered("/ok/quiet")), ["fire"]);
    // History never waits.
    assert_eq!(history(&s.url, &alice).await.len(), 3);

    // At the end they are released one by one (two is not more than summarize_over).
    let released = record_with_status(&s.url, &alice, &a, "hook", "delivered").await;
    assert_eq!(
        released["reason"], "released at the end of quiet hours",
        "{released}"
    );
    eventually(20, || async {
        (rx.delivered("/ok/quiet").len() == 3).then_some(())
    })
    .await;
    let mut got = titles(&rx.delivered("/ok/quiet"));
    got.sort();
    assert_eq!(got, ["fire", "first", "second"]);
}

#[tokio::test]
async fn many_held_items_are_released_as_one_summary() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    add_destination(
        &s.url,
        &alice,
        json!({"name": "hook", "url": format!("json://{addr}/ok/sum")}),
    )
    .await;
    let (st, _) = put_settings(
        &s.url,
        &alice,
        json!({"summarize_over": 1, "quiet_hours": {"start": utc_time(-60), "end": utc_time(600)}}),
    )
    .await;
    assert_eq!(st, 200);
    let mut ids = Vec::new();
    for t in ["one", "two", "three"] {
        ids.push(publish_priority(&s.url, &alice, t, "default").await);
    }
    eventually(20, || async {
        let r = record(&s.url, &alice, &ids[2], "hook").await;
        (r["status"] == "held").then_some(())
    })
    .await;
    // Ending quiet hours early (new settings) releases what was held, now.
    let (st, _) = put_settings(&s.url, &alice, json!({"summarize_over": 1})).await;
    assert_eq!(st, 200);
    let hit = eventually(20, || async { rx.delivered("/ok/sum").into_iter().next() }).await;
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(
        body["title"], "3 notifications held during quiet hours",
        "{body}"
    );
    let text = body["message"].as_str().unwrap();
    assert!(
        text.contains("• one (alerts)") && text.contains("• three (alerts)"),
        "{text}"
    );
    for id in &ids {
        let r = record_with_status(&s.url, &alice, id, "hook", "digested").await;
        assert_eq!(r["attempts"][0]["digest"], body["id"], "{r}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.delivered("/ok/sum").len(), 1);
}

#[tokio::test]
async fn a_digest_destination_sends_low_priority_items_as_one_message_per_window() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    let (st, v) = add_destination(
        &s.url,
        &alice,
        json!({"name": "digest", "url": format!("json://{addr}/ok/digest"),
               "options": {"digest": {"every": "2s", "max_priority": "default"}}}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = add_destination(
        &s.url,
        &alice,
        json!({"name": "bad", "url": format!("json://{addr}/ok/x"),
               "options": {"digest": {"every": "an hour"}}}),
    )
    .await;
    assert_eq!(st, 400, "{v}");

    let low = publish_priority(&s.url, &alice, "low one", "low").await;
    publish_priority(&s.url, &alice, "default one", "default").await;
    publish_priority(&s.url, &alice, "high one", "high").await;
    eventually(20, || async {
        titles(&rx.delivered("/ok/digest"))
            .contains(&"high one".to_owned())
            .then_some(())
    })
    .await;
    let r = record(&s.url, &alice, &low, "digest").await;
    assert_eq!(r["status"], "held", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("every 2s"), "{r}");

    let digest = eventually(20, || async {
        rx.delivered("/ok/digest")
            .into_iter()
            .map(|h| serde_json::from_str::<Value>(&h.body).unwrap())
            .find(|b| b["title"] == "2 notifications (digest, every 2s)")
    })
    .await;
    assert_eq!(digest["priority"], 3, "{digest}");
    record_with_status(&s.url, &alice, &low, "digest", "digested").await;
    assert_eq!(rx.delivered("/ok/digest").len(), 2);
}

/// What a Twilio-compatible gateway received: the basic-auth header and the form.
type Sms = (String, Vec<(String, String)>);

/// A local server speaking Twilio's Messages API (`POST
/// /2010-04-01/Accounts/{sid}/Messages.json`, form fields, basic auth).
async fn twilio_gateway() -> (Arc<Mutex<Vec<Sms>>>, SocketAddr) {
    let got: Arc<Mutex<Vec<Sms>>> = Arc::default();
    let g = got.clone();
    let app = Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(
            move |Path(_sid): Path<String>,
                  headers: HeaderMap,
                  axum::Form(form): axum::Form<Vec<(String, String)>>| {
                let g = g.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    g.lock().unwrap().push((auth, form));
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"sid": "SM00000000000000000000000000000001", "status": "queued"})),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (got, addr)
}

fn form_field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Twilio's request signature, computed by Python (independently of our code).
fn python_twilio_signature(token: &str, url: &str, form: &[(&str, &str)]) -> String {
    let script = r#"
import base64, hashlib, hmac, json, os
fields = json.loads(os.environ["FORM"])
data = os.environ["URL"] + "".join(k + v for k, v in sorted(fields))
print(base64.b64encode(hmac.new(os.environ["TOKEN"].encode(), data.encode(), hashlib.sha1).digest()).decode())
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("TOKEN", token)
        .env("URL", url)
        .env("FORM", serde_json::to_string(form).unwrap())
        .output()
        .expect("python3 is needed for this test");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn sms_is_verified_delivered_through_twilio_and_answered_by_sms() {
    let (sms, gw) = twilio_gateway().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    let (st, d) = add_destination(
        &s.url,
        &alice,
        json!({"name": "phone", "config": {"kind": "twilio", "account_sid": "AC0123456789abcdef0123456789abcdef",
               "auth_token": "s3cr3t-token", "from": "+15550001111", "to": "+1 555 222 3333",
               "base_url": format!("http://{gw}")}}),
    )
    .await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(d["verified"], false, "{d}");
    assert!(!d.to_string().contains("s3cr3t-token"), "{d}");
    let id = d["id"].as_str().unwrap().to_owned();

    // The code arrives by SMS, through Twilio's API with basic auth.
    let (auth, form) = eventually(20, || async { sms.lock().unwrap().first().cloned() }).await;
    assert!(auth.starts_with("Basic "), "{auth}");
    assert_eq!(form_field(&form, "To"), "+15552223333");
    assert_eq!(form_field(&form, "From"), "+15550001111");
    let body = form_field(&form, "Body");
    let code: String = body
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {body:?}"))
        .to_owned();
    let r = client()
        .post(format!("{}/api/v1/destinations/{id}/verify", s.url))
        .bearer_auth(&alice)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let first = publish_id(&s.url, &alice, "alerts", "web01 is down").await;
    eventually(20, || async {
        sms.lock()
            .unwrap()
            .iter()
            .any(|(_, f)| form_field(f, "Body").contains("web01 is down"))
            .then_some(())
    })
    .await;
    record_with_status(&s.url, &alice, &first, "phone", "delivered").await;

    // The phone answers "ACK": Twilio calls our webhook, signed with the auth token.
    let hook = format!("{}/sms/twilio/{id}", s.url);
    let inbound = |from: &'static str, body: &'static str| {
        vec![
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", from),
            ("To", "+15550001111"),
            ("Body", body),
            ("MessageSid", "SM11111111111111111111111111111111"),
        ]
    };
    let post = |form: Vec<(&'static str, &'static str)>, signature: String| {
        let hook = hook.clone();
        async move {
            client()
                .post(hook)
                .header("X-Twilio-Signature", signature)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    let form = inbound("+15552223333", "ACK");
    let r = post(form.clone(), "bm90IGEgc2lnbmF0dXJl".into()).await;
    assert_eq!(r.status(), 403, "a forged request is refused");
    let stranger = inbound("+15559999999", "ACK");
    let sig = python_twilio_signature("s3cr3t-token", &hook, &stranger);
    assert_eq!(
        post(stranger, sig).await.status(),
        403,
        "only the destination's phone"
    );
    let sig = python_twilio_signature("s3cr3t-token", &hook, &form);
    let r = post(form, sig).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<Response/>"));
    eventually(20, || async {
        let (_, v) = get_json(&format!("{}/api/v1/notifications/{first}", s.url), &alice).await;
        (v["acked"] == true).then_some(())
    })
    .await;
    let db = s.db_path();
    assert_eq!(
        sqlite_count(
            &db,
            "SELECT count(*) FROM events WHERE kind = 'acked' AND json_extract(data, '$.via') = 'sms'"
        ),
        1
    );

    // Any other text is a reply to the newest item delivered there.
    let second = publish_id(&s.url, &alice, "alerts", "web02 is down").await;
    record_with_status(&s.url, &alice, &second, "phone", "delivered").await;
    let form = inbound("+15552223333", "on it");
    let sig = python_twilio_signature("s3cr3t-token", &hook, &form);
    assert_eq!(post(form, sig).await.status(), 200);
    eventually(20, || async {
        (sqlite_count(
            &db,
            "SELECT count(*) FROM events WHERE kind = 'replied' AND json_extract(data, '$.via') = 'sms' AND json_extract(data, '$.text') = 'on it'",
        ) == 1)
            .then_some(())
    })
    .await;
    let (_, v) = get_json(&format!("{}/api/v1/notifications/{second}", s.url), &alice).await;
    assert_eq!(v["acked"], true, "{v}");
}

#[tokio::test]
async fn a_removed_destination_is_sent_nothing_more() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    *rx.down.lock().unwrap() = true;
    let (_, d) = add_destination(
        &s.url,
        &alice,
        json!({"name": "down", "url": format!("json://{addr}/down/removed")}),
    )
    .await;
    let dest_id = d["id"].as_str().unwrap().to_owned();
    let id = publish_id(&s.url, &alice, "alerts", "retry me").await;
    record_with_status(&s.url, &alice, &id, "down", "retrying").await;

    let r = client()
        .delete(format!("{}/api/v1/destinations/{dest_id}", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = get_json(&format!("{}/api/v1/notifications/{id}", s.url), &alice).await;
    let rec = &v["deliveries"][0];
    assert_eq!(rec["status"], "dead", "{v}");
    let last = rec["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["error"], "destination removed", "{v}");
    // At most the attempt already in flight lands; then nothing, although it kept failing.
    let hits = rx.hits("/down/removed").len();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(rx.hits("/down/removed").len() <= hits + 1);
    let (st, _) = get_json(&format!("{}/api/v1/destinations/{dest_id}", s.url), &alice).await;
    assert_eq!(st, 404);
    assert_eq!(
        sqlite_count(&s.db_path(), "SELECT count(*) FROM outbox"),
        0,
        "its queue went with it"
    );
}

async fn put_rules(url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .put(format!("{url}/api/v1/rules"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rules_send_at_once_and_escalate_unless_acknowledged() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    for name in ["first", "second", "pager"] {
        let (st, v) = add_destination(
            &s.url,
            &alice,
            json!({"name": name, "url": format!("json://{addr}/ok/{name}")}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    // Rules are checked against the destinations, with where and why.
    let (st, v) = put_rules(
        &s.url,
        &alice,
        json!({"rules": [{"name": "oops", "steps": [{"to": "nowhere"}]}]}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rule 1 (\"oops\"), step 1: no destination named \"nowhere\""),
        "{v}"
    );
    let (st, v) = put_rules(
        &s.url,
        &alice,
        json!({"rules": [
            {"name": "important", "match": {"min_priority": "high"},
             "steps": [{"to": "first"}, {"to": "second", "after": "2s"},
                       {"to": "pager", "after": "2s", "min_priority": "urgent"}]},
            {"name": "rest", "steps": [{"to": "first"}]}]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (_, v) = get_json(&format!("{}/api/v1/rules", s.url), &alice).await;
    assert_eq!(v["rules"].as_array().unwrap().len(), 2, "{v}");

    // Not acknowledged: escalated to "second" after 2 s; "pager" is only for urgent.
    let unacked = publish_priority(&s.url, &alice, "disk full", "high").await;
    // Acknowledged in time: the escalation is cancelled, and the record says so.
    let acked = publish_priority(&s.url, &alice, "cpu hot", "high").await;
    // Low priority: the second rule, no escalation at all.
    let low = publish_priority(&s.url, &alice, "fyi", "low").await;

    let r = record_with_status(&s.url, &alice, &unacked, "first", "delivered").await;
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("rule \"important\", step 1"),
        "{r}"
    );
    let planned = record_with_status(&s.url, &alice, &acked, "second", "held").await;
    assert!(
        planned["reason"]
            .as_str()
            .unwrap()
            .contains("escalate to \"second\" after 2s unless acknowledged"),
        "{planned}"
    );
    let r = client()
        .post(format!("{}/api/v1/notifications/{acked}/ack", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let esc = record_with_status(&s.url, &alice, &unacked, "second", "delivered").await;
    assert!(
        esc["reason"].as_str().unwrap().contains("escalated"),
        "{esc}"
    );
    let cancelled = record_with_status(&s.url, &alice, &acked, "second", "cancelled").await;
    assert!(
        cancelled.to_string().contains("acknowledged before"),
        "{cancelled}"
    );
    // Give a wrongly kept escalation time to fire, then check what "second" got.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(titles(&rx.delivered("/ok/second")), ["disk full"]);
    assert!(rx.delivered("/ok/pager").is_empty());
    let mut firsts = titles(&rx.delivered("/ok/first"));
    firsts.sort();
    assert_eq!(firsts, ["cpu hot", "disk full", "fyi"]);
    let r = record_with_status(&s.url, &alice, &low, "first", "delivered").await;
    assert!(r["reason"].as_str().unwrap().contains("\"rest\""), "{r}");
}

#[tokio::test]
async fn a_reply_goes_to_the_publishers_reply_url_signed_with_the_topic_key() {
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;

    let r = client()
        .post(format!("{}/deploys", s.url))
        .bearer_auth(&alice)
        .header("Reply-To-Url", "ftp://example.org/x")
        .body("bad")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_reply_url");

    let r = client()
        .post(format!("{}/deploys", s.url))
        .bearer_auth(&alice)
        .header("Title", "deploy 42 done")
        .header("Reply-To-Url", format!("http://{addr}/ok/callback"))
        .body("v42 is live")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(20, || async {
        history(&s.url, &alice)
            .await
            .iter()
            .any(|n| n["id"] == id.as_str())
            .then_some(())
    })
    .await;
    let (st, v) = client()
        .post(format!("{}/api/v1/notifications/{id}/reply", s.url))
        .bearer_auth(&alice)
        .json(&json!({"text": "roll back please"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(st, 202, "{:?}", v.text().await);

    let hit = eventually(20, || async {
        rx.delivered("/ok/callback").into_iter().next()
    })
    .await;
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(body["type"], "reply");
    assert_eq!(body["notification_id"], id.as_str());
    assert_eq!(body["topic"], "deploys");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["text"], "roll back please");
    // Signed with the topic's reply key, which only its owner sees.
    let (_, topic) = get_json(&format!("{}/api/v1/topics/deploys", s.url), &alice).await;
    let key = topic["reply_secret"].as_str().expect("owner sees the key");
    assert!(python_hmac_ok(
        key,
        &hit.headers["x-tidings-timestamp"],
        &hit.body,
        &hit.headers["x-tidings-signature"]
    ));
    let (_, v) = get_json(&format!("{}/api/v1/notifications/{id}", s.url), &alice).await;
    assert_eq!(v["acked"], true, "{v}");

    // Without a Reply-To-Url the reply is an ack, and the history says it went nowhere.
    let other = publish_id(&s.url, &alice, "deploys", "no callback").await;
    eventually(20, || async {
        history(&s.url, &alice)
            .await
            .iter()
            .any(|n| n["id"] == other.as_str())
            .then_some(())
    })
    .await;
    let r = client()
        .post(format!("{}/api/v1/notifications/{other}/reply", s.url))
        .bearer_auth(&alice)
        .json(&json!({"text": "thanks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually(20, || async {
        history(&s.url, &alice)
            .await
            .into_iter()
            .find(|n| n["title"] == "Your reply was not forwarded")
    })
    .await;
    let r = client()
        .post(format!("{}/api/v1/notifications/{other}/reply", s.url))
        .bearer_auth(&alice)
        .json(&json!({"text": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(rx.delivered("/ok/callback").len(), 1);
}

#[tokio::test]
async fn items_published_one_by_one_are_each_sent_once() {
    // Each publish wakes the destination's worker anew; a worker must not re-send rows whose
    // delete has not committed yet.
    let (rx, addr) = Receiver::start().await;
    let s = start_delivering(&[]);
    let alice = s.user("alice").await;
    subscribe_topic(&s.url, &alice, "alerts").await;
    add_destination(
        &s.url,
        &alice,
        json!({"name": "hook", "url": format!("json://{addr}/ok/once")}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(publish_id(&s.url, &alice, "alerts", &format!("item {i}")).await);
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    eventually(30, || async {
        (rx.delivered("/ok/once").len() >= ids.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hits = rx.delivered("/ok/once");
    let mut keys: Vec<&str> = hits
        .iter()
        .map(|h| h.headers["idempotency-key"].as_str())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), ids.len());
    assert_eq!(hits.len(), ids.len(), "some items were sent twice");
}
