//! Live delivery over real connections: SSE and WebSocket streams of a user's deliveries,
//! resuming with Last-Event-ID / since=, ntfy-style topic streams, and presence.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn sse_stream_delivers_live_and_resumes_after_last_event_id() {
    let s = Server::start();
    let t = s.user("alice").await;
    let c = client();
    let stream = c
        .get(format!("{}/api/v1/stream", s.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // An open stream is presence "online (web)".
    let (_, acct) = get_json(&format!("{}/api/v1/account", s.url), &t).await;
    assert_eq!(acct["presence"]["web"], "online");

    for i in 0..3 {
        assert_eq!(
            publish(&s.url, &t, "live", &format!("m{i}")).await.status(),
            200
        );
    }
    let got = sse_messages(stream, 3, 10).await;
    let msgs: Vec<&str> = got.iter().map(|v| v["message"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["m0", "m1", "m2"]);
    let first_id = got[0]["id"].as_str().unwrap().to_owned();

    // The stream is closed; presence follows.
    eventually(10, || async {
        let (_, acct) = get_json(&format!("{}/api/v1/account", s.url), &t).await;
        (acct["presence"]["web"] == "offline").then_some(())
    })
    .await;

    // Reconnect with Last-Event-ID: the two after it are replayed, then live continues.
    eventually(10, || async {
        (history(&s.url, &t).await.len() == 3).then_some(())
    })
    .await;
    let stream = c
        .get(format!("{}/api/v1/stream", s.url))
        .bearer_auth(&t)
        .header("Last-Event-ID", &first_id)
        .send()
        .await
        .unwrap();
    publish(&s.url, &t, "live", "m3").await;
    let got = sse_messages(stream, 3, 10).await;
    let msgs: Vec<&str> = got.iter().map(|v| v["message"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["m1", "m2", "m3"]);

    // since=all replays everything.
    eventually(10, || async {
        (history(&s.url, &t).await.len() == 4).then_some(())
    })
    .await;
    let stream = c
        .get(format!("{}/api/v1/stream?since=all", s.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(sse_messages(stream, 4, 10).await.len(), 4);

    // The presence changes were recorded as events.
    let n = sqlite_count(
        &s.db_path(),
        "SELECT count(*) FROM events WHERE kind = 'presence_changed'",
    );
    assert!(n >= 2, "{n} presence events");
}

async fn ws_connect(
    url: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

async fn ws_messages(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    n: usize,
) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("websocket message in time")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["event"] == "message" {
                out.push(v);
            }
        }
    }
    out
}

#[tokio::test]
async fn websocket_stream_delivers_live() {
    let s = Server::start();
    let t = s.user("alice").await;
    let mut ws = ws_connect(&format!("{}/api/v1/ws", s.url), &t).await;
    publish(&s.url, &t, "wst", "over ws").await;
    let got = ws_messages(&mut ws, 1).await;
    assert_eq!(got[0]["message"], "over ws");
    assert_eq!(got[0]["topic"], "wst");
    // Without credentials the upgrade is refused.
    let ws_url = format!("{}/api/v1/ws", s.url).replacen("http://", "ws://", 1);
    assert!(tokio_tungstenite::connect_async(ws_url).await.is_err());
}

#[tokio::test]
async fn ntfy_topic_streams_json_sse_ws_and_poll() {
    let s = Server::start();
    let t = s.user("alice").await;
    let c = client();
    publish(&s.url, &t, "news", "stored before").await;
    // Stored asynchronously after the 200: wait until it is in history.
    eventually(10, || async {
        (history(&s.url, &t).await.len() == 1).then_some(())
    })
    .await;

    // poll=1 returns what is stored and closes.
    let body = c
        .get(format!("{}/news/json?poll=1", s.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "open");
    assert_eq!(
        lines.iter().filter(|l| l["event"] == "message").count(),
        1,
        "{body}"
    );

    // Live JSON stream with since=all.
    let resp = c
        .get(format!("{}/news/json?since=all", s.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-ndjson")
    );
    let mut body = resp.bytes_stream();
    publish(&s.url, &t, "news", "live one").await;
    let mut buf = String::new();
    let mut messages = Vec::new();
    while messages.len() < 2 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            let v: Value = serde_json::from_str(line.trim()).unwrap();
            if v["event"] == "message" {
                messages.push(v["message"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(messages, ["stored before", "live one"]);

    // SSE form.
    let sse = c
        .get(format!("{}/news/sse", s.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    publish(&s.url, &t, "news", "via sse").await;
    assert_eq!(sse_messages(sse, 1, 10).await[0]["message"], "via sse");

    // WebSocket form, since=<id>: replayed from storage, so wait until all three are stored.
    eventually(10, || async {
        (history(&s.url, &t).await.len() == 3).then_some(())
    })
    .await;
    let first: Value =
        serde_json::from_str(body_first_message(&c, &s.url, &t).await.as_str()).unwrap();
    let mut ws = ws_connect(
        &format!("{}/news/ws?since={}", s.url, first["id"].as_str().unwrap()),
        &t,
    )
    .await;
    let got = ws_messages(&mut ws, 2).await;
    assert_eq!(got[0]["message"], "live one");
    assert_eq!(got[1]["message"], "via sse");
}

async fn body_first_message(c: &reqwest::Client, url: &str, t: &str) -> String {
    let body = c
        .get(format!("{url}/news/json?poll=1&since=all"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find(|l| l.contains("\"message\"") && !l.contains("\"open\""))
        .unwrap()
        .to_owned()
}
