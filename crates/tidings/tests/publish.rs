//! Publishing and history over real HTTP: the quick start, ntfy headers and query forms,
//! JSON publishing, history filters and paging, acks.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn quick_start_publish_then_history() {
    let s = Server::start();
    // The example, via the CLI: the token is on the last line.
    let out = s.cli(&["user", "add", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("tk_"), "{stdout}");

    let r = client()
        .post(format!("{}/backups", s.url))
        .bearer_auth(&token)
        .header("Title", "nightly")
        .header("Priority", "high")
        .body("Backup finished")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["message"], "Backup finished");
    assert_eq!(stored["title"], "nightly");
    assert_eq!(stored["priority"], 4);
    assert_eq!(stored["topic"], "backups");
    assert_eq!(stored["event"], "message");
    let id = stored["id"].as_str().unwrap().to_owned();

    let items = eventually(10, || async {
        let h = history(&s.url, &token).await;
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["message"], "Backup finished");
    assert_eq!(items[0]["acked"], false);

    let (st, one) = get_json(&format!("{}/api/v1/notifications/{id}", s.url), &token).await;
    assert_eq!(st, 200);
    assert_eq!(one["title"], "nightly");

    // Ack, then ack again.
    let r = client()
        .post(format!("{}/api/v1/notifications/{id}/ack", s.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["already_acked"], false);
    let v: Value = client()
        .post(format!("{}/api/v1/notifications/{id}/ack", s.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["already_acked"], true);
    let (_, one) = get_json(&format!("{}/api/v1/notifications/{id}", s.url), &token).await;
    assert_eq!(one["acked"], true);

    // The events were appended where they happened.
    let kinds = |k: &str| {
        sqlite_count(
            &s.db_path(),
            &format!("SELECT count(*) FROM events WHERE kind = '{k}'"),
        )
    };
    for k in [
        "published",
        "routed",
        "delivered",
        "acked",
        "subscribed",
        "user_created",
    ] {
        assert!(kinds(k) >= 1, "no {k} event");
    }
    assert_eq!(kinds("acked"), 1);
}

#[tokio::test]
async fn ntfy_headers_query_forms_and_json_publish() {
    let s = Server::start();
    let t = s.user("alice").await;
    let c = client();

    // X- headers, tags, click, actions (simple form).
    let v: Value = c
        .put(format!("{}/alerts", s.url))
        .bearer_auth(&t)
        .header("X-Title", "Disk")
        .header("X-Priority", "5")
        .header("Tags", "warning,disk")
        .header("Click", "https://example.org/disk")
        .header(
            "Actions",
            "view, Open, https://example.org/; http, Clean, https://example.org/clean, method=POST",
        )
        .body("90% full")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["priority"], 5);
    assert_eq!(v["tags"], json!(["warning", "disk"]));
    assert_eq!(v["click"], "https://example.org/disk");
    assert_eq!(v["actions"][1]["method"], "POST");

    // Query-parameter forms and the GET publish form.
    let v: Value = c
        .get(format!(
            "{}/alerts/publish?message=hi&t=Q&p=min&ta=a,b",
            s.url
        ))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            v["message"].as_str(),
            v["title"].as_str(),
            v["priority"].as_i64()
        ),
        (Some("hi"), Some("Q"), Some(1))
    );

    // An empty body is ntfy's "triggered".
    let v: Value = c
        .post(format!("{}/alerts", s.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["message"], "triggered");

    // JSON publishing, both routes.
    for path in ["/api/v1/publish", "/"] {
        let r = c
            .post(format!("{}{path}", s.url))
            .bearer_auth(&t)
            .json(&json!({"topic": "alerts", "message": "json", "priority": "high", "tags": ["x"],
                          "actions": [{"action": "view", "label": "Go", "url": "https://example.org"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["priority"], 4);
        assert_eq!(v["actions"][0]["label"], "Go");
    }

    let items = eventually(10, || async {
        let h = history(&s.url, &t).await;
        (h.len() == 5).then_some(h)
    })
    .await;
    // Filters: tag, priority, topic/source; paging with a cursor.
    let (_, v) = get_json(&format!("{}/api/v1/notifications?tag=disk", s.url), &t).await;
    assert_eq!(v["notifications"].as_array().unwrap().len(), 1);
    let (_, v) = get_json(
        &format!("{}/api/v1/notifications?priority=high,urgent", s.url),
        &t,
    )
    .await;
    assert_eq!(v["notifications"].as_array().unwrap().len(), 3);
    let (_, v) = get_json(
        &format!("{}/api/v1/notifications?topic=alerts&since=1h", s.url),
        &t,
    )
    .await;
    assert_eq!(v["notifications"].as_array().unwrap().len(), 5);
    let (_, p1) = get_json(&format!("{}/api/v1/notifications?limit=2", s.url), &t).await;
    assert_eq!(p1["notifications"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = get_json(
        &format!("{}/api/v1/notifications?limit=10&cursor={cursor}", s.url),
        &t,
    )
    .await;
    assert_eq!(p2["notifications"].as_array().unwrap().len(), 3);
    assert!(p2["next_cursor"].is_null());
    let mut ids: Vec<&str> = p1["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["notifications"].as_array().unwrap())
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert_eq!(items[0]["id"], p1["notifications"][0]["id"], "newest first");
}

#[tokio::test]
async fn subscription_filters_apply_per_subscriber() {
    let s = Server::start();
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let c = client();
    assert_eq!(
        publish(&s.url, &alice, "flats", "first").await.status(),
        200
    );
    let r = c
        .put(format!("{}/api/v1/topics/flats/grants/bob", s.url))
        .bearer_auth(&alice)
        .json(&json!({"subscribe": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{}/api/v1/subscriptions", s.url))
        .bearer_auth(&bob)
        .json(&json!({"source": {"kind": "topic", "topic": "flats"},
                      "filter": {"include": ["2br"], "exclude": ["sold"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sub: Value = r.json().await.unwrap();
    for m in ["Sunny 2BR in town", "12br castle", "2br SOLD", "studio"] {
        assert_eq!(publish(&s.url, &alice, "flats", m).await.status(), 200);
    }
    eventually(10, || async {
        (history(&s.url, &alice).await.len() == 5).then_some(())
    })
    .await;
    let bobs = eventually(10, || async {
        let h = history(&s.url, &bob).await;
        (!h.is_empty()).then_some(h)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let bobs_after = history(&s.url, &bob).await;
    assert_eq!(bobs_after.len(), 1, "{bobs:?}");
    assert_eq!(bobs_after[0]["message"], "Sunny 2BR in town");

    let (st, list) = get_json(&format!("{}/api/v1/subscriptions", s.url), &bob).await;
    assert_eq!(st, 200);
    assert_eq!(
        list["subscriptions"][0]["filter"]["include"],
        json!(["2br"])
    );
    // Unsubscribe: nothing more arrives.
    let r = c
        .delete(format!(
            "{}/api/v1/subscriptions/{}",
            s.url,
            sub["id"].as_str().unwrap()
        ))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    publish(&s.url, &alice, "flats", "another 2br").await;
    eventually(10, || async {
        (history(&s.url, &alice).await.len() == 6).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(history(&s.url, &bob).await.len(), 1);
}
