//! Bad input gets a clear JSON error with the right status; one user can see nothing of
//! another's through any endpoint; grants open exactly what they say.

mod common;

use common::*;
use serde_json::{Value, json};

async fn status_code(r: reqwest::Response) -> (u16, String) {
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (st, error_code(&v))
}

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let s = Server::start_with(&[("TIDINGS_HTTP_MAX_MESSAGE_BYTES", "1024")]);
    let t = s.user("alice").await;
    let c = client();
    let u = &s.url;

    // 400s
    let r = c
        .post(format!("{u}/t1"))
        .bearer_auth(&t)
        .header("Priority", "loud")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (400, "invalid_priority".into()));
    let r = c
        .post(format!("{u}/t1"))
        .bearer_auth(&t)
        .header("Actions", "fly, away")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (400, "invalid_actions".into()));
    let r = c
        .post(format!("{u}/t1"))
        .bearer_auth(&t)
        .header("Click", "javascript:alert(1)")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (400, "invalid_click".into()));
    let r = c
        .post(format!("{u}/bad%20topic"))
        .bearer_auth(&t)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (400, "invalid_topic".into()));
    let r = c
        .post(format!("{u}/api/v1/publish"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (400, "invalid_json".into()));
    let r = c
        .post(format!("{u}/api/v1/publish"))
        .bearer_auth(&t)
        .json(&json!({"topic": "t1", "mesage": "typo"}))
        .send()
        .await
        .unwrap();
    let (st, code) = status_code(r).await;
    assert_eq!((st, code.as_str()), (400, "invalid_json"));
    let r = c
        .post(format!("{u}/t1"))
        .bearer_auth(&t)
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (400, "invalid_message".into()));
    let r = c
        .get(format!("{u}/api/v1/notifications?limit=0"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (400, "invalid_query".into()));
    let r = c
        .post(format!("{u}/api/v1/subscriptions"))
        .bearer_auth(&t)
        .json(&json!({"source": {"kind": "carrier-pigeon"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await.0, 400);

    // 401s
    let r = c.post(format!("{u}/t1")).body("x").send().await.unwrap();
    assert_eq!(
        r.headers().get("www-authenticate").unwrap(),
        "Bearer realm=\"tidings\""
    );
    assert_eq!(status_code(r).await, (401, "unauthorized".into()));
    let r = c
        .get(format!("{u}/api/v1/notifications"))
        .bearer_auth("tk_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (401, "unauthorized".into()));

    // 413 over the (configured) message limit
    let r = c
        .post(format!("{u}/t1"))
        .bearer_auth(&t)
        .body("x".repeat(2048))
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (413, "too_large".into()));

    // 404 / 405 from the router are JSON too
    let r = c
        .get(format!("{u}/api/v1/nothing-here"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (404, "not_found".into()));
    let r = c
        .delete(format!("{u}/api/v1/notifications"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (405, "method_not_allowed".into()));
    let r = c
        .get(format!("{u}/api/v1/notifications/not-an-id"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(status_code(r).await, (404, "not_found".into()));

    // Nothing was stored by any of the rejected publishes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(history(u, &t).await.is_empty());
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let s = Server::start_with(&[
        ("TIDINGS_HTTP_RATE_LIMIT_PER_SECOND", "1"),
        ("TIDINGS_HTTP_RATE_LIMIT_BURST", "5"),
    ]);
    let t = s.user("alice").await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let r = publish(&s.url, &t, "rl", &format!("m{i}")).await;
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
        }
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 3, "{codes:?}");
    // Another credential has its own bucket.
    let other = client()
        .post(format!("{}/api/v1/tokens", s.url))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
}

#[tokio::test]
async fn users_are_isolated_and_grants_open_exactly_what_they_say() {
    let s = Server::start();
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let c = client();
    let u = &s.url;

    let n: Value = publish(u, &alice, "private", "secret stuff")
        .await
        .json()
        .await
        .unwrap();
    let id = n["id"].as_str().unwrap().to_owned();
    eventually(10, || async {
        (history(u, &alice).await.len() == 1).then_some(())
    })
    .await;

    // Bob sees nothing of it anywhere.
    assert!(history(u, &bob).await.is_empty());
    let (st, _) = get_json(&format!("{u}/api/v1/notifications/{id}"), &bob).await;
    assert_eq!(st, 404);
    let r = c
        .post(format!("{u}/api/v1/notifications/{id}/ack"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (st, _) = get_json(&format!("{u}/api/v1/topics/private"), &bob).await;
    assert_eq!(st, 404);
    for path in ["json?poll=1&since=all", "sse?poll=1&since=all"] {
        let r = c
            .get(format!("{u}/private/{path}"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = publish(u, &bob, "private", "intrusion").await;
    assert_eq!(status_code(r).await, (403, "forbidden".into()));
    let r = c
        .post(format!("{u}/api/v1/subscriptions"))
        .bearer_auth(&bob)
        .json(&json!({"source": {"kind": "topic", "topic": "private"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Bob's live stream gets none of Alice's messages.
    let stream = c
        .get(format!("{u}/api/v1/stream"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    publish(u, &alice, "private", "more secret").await;
    assert!(sse_messages(stream, 1, 1).await.is_empty());
    // Bob cannot administer.
    let r = c
        .get(format!("{u}/api/v1/admin/users"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("{u}/metrics"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Nor touch Alice's grants.
    let r = c
        .put(format!("{u}/api/v1/topics/private/grants/bob"))
        .bearer_auth(&bob)
        .json(&json!({"publish": true, "subscribe": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Publish grant: Bob may publish, still not read.
    let r = c
        .put(format!("{u}/api/v1/topics/private/grants/bob"))
        .bearer_auth(&alice)
        .json(&json!({"publish": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(publish(u, &bob, "private", "from bob").await.status(), 200);
    let r = c
        .get(format!("{u}/private/json?poll=1&since=all"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    eventually(10, || async {
        (history(u, &alice).await.len() == 3).then_some(())
    })
    .await;
    assert!(history(u, &bob).await.is_empty());

    // Subscribe grant: Bob can read the topic and subscribe.
    let r = c
        .put(format!("{u}/api/v1/topics/private/grants/bob"))
        .bearer_auth(&alice)
        .json(&json!({"publish": true, "subscribe": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = c
        .get(format!("{u}/private/json?poll=1&since=all"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let msgs: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["event"] == "message")
        .collect();
    assert_eq!(msgs.len(), 3, "{body}");
    let r = c
        .post(format!("{u}/api/v1/subscriptions"))
        .bearer_auth(&bob)
        .json(&json!({"source": {"kind": "topic", "topic": "private"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    publish(u, &alice, "private", "for both").await;
    let h = eventually(10, || async {
        let h = history(u, &bob).await;
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(h[0]["message"], "for both");
    let (_, topic) = get_json(&format!("{u}/api/v1/topics/private"), &alice).await;
    assert_eq!(topic["grants"][0]["user"], "bob");

    // Revoking subscribe ends Bob's subscription.
    let r = c
        .delete(format!("{u}/api/v1/topics/private/grants/bob"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, subs) = get_json(&format!("{u}/api/v1/subscriptions"), &bob).await;
    assert!(
        subs["subscriptions"].as_array().unwrap().is_empty(),
        "{subs}"
    );
    assert_eq!(publish(u, &bob, "private", "revoked").await.status(), 403);
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = Server::start_with(&[("TIDINGS_HTTP_HEADER_TIMEOUT", "1s")]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // It never finishes its headers: the server closes the connection (0 bytes read, or an
    // answer like 408 followed by the close), well before the test's own deadline.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        slow.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection was still open after 20 s");
    // A client that finishes its request in time is served as before.
    let r = client()
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
