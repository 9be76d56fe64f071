//! Every HTTP kind against a local axum server playing the service on 127.0.0.1: the
//! method, path, auth, content type and body shape it checks are the real service's; then
//! failure injection (5xx, 429 with Retry-After, 404, a server that never answers) and the
//! SSRF refusal with the default fetch rules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, Uri};
use base64::Engine as _;
use serde_json::{Value, json};
use tidings_core::{Action, Notification, NotificationId, Priority};
use tidings_sinks::{DestinationConfig, Error, Message, Outcome, Sinks, SinksConfig, webhook};
use tidings_sources::fetch::FetchConfig;

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    /// Path and query exactly as sent (percent-encoding kept).
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: body.into(),
    }
}

/// A local server that records every request and answers with `respond`.
struct Peer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Peer {
    async fn start(respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Peer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let recorded = Arc::clone(&seen);
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let recorded = Arc::clone(&recorded);
                let respond = Arc::clone(&respond);
                async move {
                    let request = Recorded {
                        method: method.to_string(),
                        target: uri
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect(),
                        body: body.to_vec(),
                    };
                    let r = respond(&request);
                    recorded.lock().unwrap().push(request);
                    let mut builder = Response::builder().status(r.status);
                    for (k, v) in r.headers {
                        builder = builder.header(k, v);
                    }
                    builder.body(Body::from(r.body)).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Peer { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

fn sinks_with(total_timeout: Duration) -> Sinks {
    Sinks::new(SinksConfig {
        fetch: FetchConfig {
            allow_private_networks: true,
            connect_timeout: Duration::from_secs(2),
            total_timeout,
            per_host_concurrency: 64,
            ..FetchConfig::default()
        },
        relay: None,
    })
    .unwrap()
}

fn sinks() -> Sinks {
    sinks_with(Duration::from_secs(10))
}

fn message() -> Message {
    Message {
        notification: Notification {
            id: NotificationId("01hf3abcdefghjkmnpqr".into()),
            time: 1_700_000_000,
            event: "message".into(),
            source: "topic:backups".into(),
            topic: Some("backups".into()),
            title: Some("nightly".into()),
            message: "Backup finished <ok> & done".into(),
            priority: Priority::Urgent,
            tags: vec!["backup".into(), "ok".into()],
            click: Some("https://grafana.example/d/1".into()),
            actions: vec![Action {
                action: "view".into(),
                label: "Open".into(),
                url: Some("https://ops.example/".into()),
                method: None,
                body: None,
                clear: false,
            }],
            author: Some("alice".into()),
        },
        source_name: "backups".into(),
        web_url: Some("https://tidings.example/n/01hf3abcdefghjkmnpqr".into()),
        reply_to: None,
        list_id: None,
    }
}

fn config(value: Value) -> DestinationConfig {
    serde_json::from_value::<DestinationConfig>(value)
        .unwrap()
        .prepare()
        .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn webhook_posts_the_signed_documented_body() {
    let peer = Peer::start(|_| reply(200, "ok")).await;
    let url = format!(
        "json://hook:pa%3Ass@127.0.0.1:{}/hooks/in?token=abc&+X-Team=ops",
        peer.addr.port()
    );
    let cfg = DestinationConfig::parse_url(&url)
        .unwrap()
        .prepare()
        .unwrap();
    let secret = cfg.webhook_secret().unwrap().to_owned();
    let sinks = sinks();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(
        sinks.send(&cfg, &message()).await,
        Outcome::Delivered { status: Some(200) }
    );
    sinks.check(&cfg).await.unwrap();

    let requests = peer.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/hooks/in?token=abc");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("idempotency-key"), "01hf3abcdefghjkmnpqr");
    assert_eq!(r.header("x-team"), "ops");
    assert_eq!(r.header("authorization"), basic("hook", "pa:ss"));
    let timestamp: i64 = r.header("x-tidings-timestamp").parse().unwrap();
    assert!((before..before + 60).contains(&timestamp));
    // What a receiver does: recompute the HMAC over "<timestamp>.<raw body>".
    assert_eq!(
        r.header("x-tidings-signature"),
        webhook::sign(&secret, timestamp, &r.body)
    );
    assert!(r.header("x-tidings-signature").starts_with("sha256="));
    assert_eq!(
        r.json(),
        json!({
            "id": "01hf3abcdefghjkmnpqr",
            "time": 1_700_000_000,
            "source": "topic:backups",
            "source_name": "backups",
            "title": "nightly",
            "message": "Backup finished <ok> & done",
            "priority": 5,
            "priority_name": "urgent",
            "tags": ["backup", "ok"],
            "click": "https://grafana.example/d/1",
            "actions": [{"action": "view", "label": "Open", "url": "https://ops.example/"}],
            "author": "alice",
            "web_url": "https://tidings.example/n/01hf3abcdefghjkmnpqr",
        })
    );
}

#[tokio::test]
async fn twilio_posts_the_messages_form_with_basic_auth() {
    let peer = Peer::start(|_| reply(201, r#"{"sid":"SM123","status":"queued"}"#)).await;
    let cfg = config(json!({
        "kind": "twilio",
        "account_sid": "AC0123456789abcdef",
        "auth_token": "twilio-token",
        "from": "+15550001111",
        "to": "+1 555 000 2222",
        "base_url": peer.url("/"),
    }));
    assert_eq!(cfg.address(), "+15550002222");
    let mut msg = message();
    msg.notification.message = "Grüße ✓ ".repeat(60);
    assert_eq!(
        sinks().send(&cfg, &msg).await,
        Outcome::Delivered { status: Some(201) }
    );
    let r = &peer.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.target,
        "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    );
    assert_eq!(
        r.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        r.header("authorization"),
        basic("AC0123456789abcdef", "twilio-token")
    );
    let form = r.form();
    assert_eq!(form["To"], "+15550002222");
    assert_eq!(form["From"], "+15550001111");
    let body = &form["Body"];
    assert_eq!(tidings_sinks::twilio::segments(body), 3);
    assert!(
        body.starts_with("nightly\nGrüße ✓")
            && body.ends_with("… https://tidings.example/n/01hf3abcdefghjkmnpqr"),
        "{body}"
    );
}

#[tokio::test]
async fn twilio_error_answers_fail_with_the_services_words() {
    let peer = Peer::start(|_| {
        reply(
            400,
            r#"{"code":21211,"message":"The 'To' number +15550002222 is not a valid phone number."}"#,
        )
    })
    .await;
    let cfg = config(json!({
        "kind": "twilio", "account_sid": "AC1", "auth_token": "t",
        "from": "+15550001111", "to": "+15550002222", "base_url": peer.url(""),
    }));
    match sinks().send(&cfg, &message()).await {
        Outcome::Failed {
            status: Some(400),
            error,
        } => assert!(error.contains("21211") && error.contains("not a valid phone number")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn ntfy_publishes_json_to_the_root_with_a_token_or_basic_auth() {
    let peer = Peer::start(|_| reply(200, r#"{"id":"x","event":"message"}"#)).await;
    let sinks = sinks();
    let with_token = DestinationConfig::parse_url(&format!(
        "ntfy://tk_ntfytoken@127.0.0.1:{}/alerts",
        peer.addr.port()
    ))
    .unwrap()
    .prepare()
    .unwrap();
    assert_eq!(
        sinks.send(&with_token, &message()).await,
        Outcome::Delivered { status: Some(200) }
    );
    let with_password = config(json!({
        "kind": "ntfy", "url": peer.url("/"), "topic": "alerts",
        "username": "bob", "password": "hunter2",
    }));
    assert_eq!(
        sinks.send(&with_password, &message()).await,
        Outcome::Delivered { status: Some(200) }
    );
    let requests = peer.requests();
    for r in &requests {
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/"));
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(
            r.json(),
            json!({
                "topic": "alerts",
                "title": "nightly",
                "message": "Backup finished <ok> & done",
                "priority": 5,
                "tags": ["backup", "ok"],
                "click": "https://grafana.example/d/1",
                "actions": [{"action": "view", "label": "Open", "url": "https://ops.example/"}],
            })
        );
    }
    assert_eq!(requests[0].header("authorization"), "Bearer tk_ntfytoken");
    assert_eq!(requests[1].header("authorization"), basic("bob", "hunter2"));
}

#[tokio::test]
async fn slack_posts_an_incoming_webhook_payload() {
    let peer = Peer::start(|_| Reply {
        status: 200,
        headers: vec![("Content-Type", "text/plain".into())],
        body: "ok".into(),
    })
    .await;
    let cfg = config(json!({
        "kind": "slack",
        "webhook_url": peer.url("/services/T1ABC/B2DEF/slacksecret"),
        "username": "tidings",
    }));
    assert_eq!(
        cfg.address(),
        format!(
            "http://127.0.0.1:{}/services/T1ABC/B2DEF/…",
            peer.addr.port()
        )
    );
    assert_eq!(
        sinks().send(&cfg, &message()).await,
        Outcome::Delivered { status: Some(200) }
    );
    let r = &peer.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/services/T1ABC/B2DEF/slacksecret");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({
            "text": "nightly: Backup finished &lt;ok&gt; &amp; done",
            "username": "tidings",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": "*nightly*\nBackup finished &lt;ok&gt; &amp; done"}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": "backups · priority urgent · <https://grafana.example/d/1|Open link> · <https://tidings.example/n/01hf3abcdefghjkmnpqr|View in tidings>"}]},
            ],
        })
    );
}

#[tokio::test]
async fn discord_posts_one_embed() {
    let peer = Peer::start(|_| Reply {
        status: 204,
        headers: vec![],
        body: String::new(),
    })
    .await;
    let cfg = config(json!({
        "kind": "discord", "webhook_url": peer.url("/api/webhooks/123456/discordtoken"),
    }));
    assert_eq!(
        sinks().send(&cfg, &message()).await,
        Outcome::Delivered { status: Some(204) }
    );
    let r = &peer.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/api/webhooks/123456/discordtoken");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({
            "embeds": [{
                "title": "nightly",
                "description": "Backup finished <ok> & done",
                "url": "https://tidings.example/n/01hf3abcdefghjkmnpqr",
                "timestamp": "2023-11-14T22:13:20Z",
                "color": 0xED4245,
                "footer": {"text": "backups"},
                "author": {"name": "alice"},
            }],
            "allowed_mentions": {"parse": []},
        })
    );
}

#[tokio::test]
async fn discord_rate_limit_is_retried_after_its_hint() {
    let peer = Peer::start(|_| {
        reply(
            429,
            r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
        )
    })
    .await;
    let cfg = config(json!({
        "kind": "discord", "webhook_url": peer.url("/api/webhooks/1/t"),
    }));
    match sinks().send(&cfg, &message()).await {
        Outcome::Retry {
            status: Some(429),
            retry_after,
            ..
        } => assert_eq!(retry_after, Some(Duration::from_millis(1500))),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn matrix_resolves_the_alias_once_and_retries_with_the_same_txn_id() {
    let puts = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&puts);
    let peer = Peer::start(move |r| {
        if r.header("authorization") != "Bearer syt_matrix_token" {
            return reply(
                401,
                r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid token"}"#,
            );
        }
        if r.method == "GET" && r.target == "/_matrix/client/v3/directory/room/%23ops%3Alocalhost" {
            return reply(
                200,
                r#"{"room_id":"!room1:localhost","servers":["localhost"]}"#,
            );
        }
        if r.method == "PUT"
            && r.target
                .starts_with("/_matrix/client/v3/rooms/%21room1%3Alocalhost/send/m.room.message/")
        {
            let mut n = counter.lock().unwrap();
            *n += 1;
            // The first send fails as a homeserver under load does; the retry succeeds.
            return if *n == 1 {
                reply(502, "bad gateway")
            } else {
                reply(200, r#"{"event_id":"$ev1"}"#)
            };
        }
        reply(
            404,
            r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
        )
    })
    .await;
    let cfg = DestinationConfig::parse_url(&format!(
        "matrix://syt_matrix_token@127.0.0.1:{}/%23ops",
        peer.addr.port()
    ))
    .unwrap()
    .prepare()
    .unwrap();
    // `#ops` alone is an alias on the homeserver's own name.
    let DestinationConfig::Matrix(m) = &cfg else {
        panic!("{cfg:?}")
    };
    assert_eq!(m.room, "#ops:127.0.0.1");
    let cfg = config(json!({
        "kind": "matrix", "homeserver": peer.url(""), "access_token": "syt_matrix_token",
        "room": "#ops:localhost",
    }));
    let sinks = sinks();
    let first = sinks.send(&cfg, &message()).await;
    assert!(
        matches!(
            first,
            Outcome::Retry {
                status: Some(502),
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(
        sinks.send(&cfg, &message()).await,
        Outcome::Delivered { status: Some(200) }
    );

    let requests = peer.requests();
    let gets: Vec<&Recorded> = requests.iter().filter(|r| r.method == "GET").collect();
    let puts: Vec<&Recorded> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(gets.len(), 1, "the alias is resolved once and cached");
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[0].target, puts[1].target, "a retry reuses the txnId");
    assert!(
        puts[0]
            .target
            .contains("/send/m.room.message/tidings.01hf3abcdefghjkmnpqr."),
        "{}",
        puts[0].target
    );
    assert_eq!(puts[0].header("content-type"), "application/json");
    let event = puts[0].json();
    assert_eq!(event["msgtype"], "m.text");
    assert_eq!(event["format"], "org.matrix.custom.html");
    assert_eq!(
        event["body"],
        "nightly\nBackup finished <ok> & done\nhttps://grafana.example/d/1\nView in tidings: https://tidings.example/n/01hf3abcdefghjkmnpqr"
    );
    let html = event["formatted_body"].as_str().unwrap();
    assert!(
        html.starts_with("<strong>nightly</strong><br>\nBackup finished &lt;ok&gt; &amp; done"),
        "{html}"
    );

    // Another notification: a new txnId, the alias still cached.
    let mut other = message();
    other.notification.id = NotificationId("01hf3abcdefghjkmnpqs".into());
    assert_eq!(
        sinks.send(&cfg, &other).await,
        Outcome::Delivered { status: Some(200) }
    );
    let requests = peer.requests();
    let puts: Vec<&Recorded> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_ne!(puts[2].target, puts[1].target);
    assert_eq!(requests.iter().filter(|r| r.method == "GET").count(), 1);
}

#[tokio::test]
async fn matrix_room_ids_skip_resolution_and_bad_aliases_fail() {
    let peer = Peer::start(|r| {
        if r.method == "GET" {
            reply(
                404,
                r#"{"errcode":"M_NOT_FOUND","error":"Room alias not found"}"#,
            )
        } else if r.header("authorization") == "Bearer good" {
            reply(200, r#"{"event_id":"$e"}"#)
        } else {
            reply(
                401,
                r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed."}"#,
            )
        }
    })
    .await;
    let sinks = sinks();
    let by_id = config(json!({
        "kind": "matrix", "homeserver": peer.url(""), "access_token": "good", "room": "!abc:localhost",
    }));
    assert_eq!(
        sinks.send(&by_id, &message()).await,
        Outcome::Delivered { status: Some(200) }
    );
    assert!(
        peer.requests()[0]
            .target
            .starts_with("/_matrix/client/v3/rooms/%21abc%3Alocalhost/send/")
    );
    let missing = config(json!({
        "kind": "matrix", "homeserver": peer.url(""), "access_token": "good", "room": "#nope:localhost",
    }));
    match sinks.send(&missing, &message()).await {
        Outcome::Failed {
            status: Some(404),
            error,
        } => assert!(error.contains("#nope:localhost"), "{error}"),
        other => panic!("{other:?}"),
    }
    let bad_token = config(json!({
        "kind": "matrix", "homeserver": peer.url(""), "access_token": "bad", "room": "!abc:localhost",
    }));
    match sinks.send(&bad_token, &message()).await {
        Outcome::Failed {
            status: Some(401),
            error,
        } => assert!(error.contains("M_UNKNOWN_TOKEN"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn statuses_become_retry_or_failed() {
    let peer = Peer::start(|r| match r.target.as_str() {
        "/500" => reply(500, "internal error"),
        "/503" => Reply {
            status: 503,
            headers: vec![(
                "Retry-After",
                httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120)),
            )],
            body: String::new(),
        },
        "/429" => Reply {
            status: 429,
            headers: vec![("Retry-After", "7".into())],
            body: "slow down".into(),
        },
        "/408" => reply(408, ""),
        "/404" => reply(404, "no such hook"),
        "/401" => reply(401, "bad credentials"),
        "/301" => Reply {
            status: 301,
            headers: vec![("Location", "/elsewhere".into())],
            body: String::new(),
        },
        _ => reply(200, ""),
    })
    .await;
    let sinks = sinks();
    let hook = |path: &str| config(json!({"kind": "webhook", "url": peer.url(path)}));
    let msg = message();

    assert_eq!(
        sinks.send(&hook("/500"), &msg).await,
        Outcome::Retry {
            status: Some(500),
            error: "HTTP 500: internal error".into(),
            retry_after: None
        }
    );
    match sinks.send(&hook("/503"), &msg).await {
        Outcome::Retry {
            status: Some(503),
            retry_after: Some(after),
            ..
        } => assert!(
            after > Duration::from_secs(100) && after <= Duration::from_secs(120),
            "{after:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sinks.send(&hook("/429"), &msg).await,
        Outcome::Retry {
            status: Some(429),
            error: "HTTP 429: slow down".into(),
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(matches!(
        sinks.send(&hook("/408"), &msg).await,
        Outcome::Retry {
            status: Some(408),
            ..
        }
    ));
    assert_eq!(
        sinks.send(&hook("/404"), &msg).await,
        Outcome::Failed {
            status: Some(404),
            error: "HTTP 404: no such hook".into()
        }
    );
    assert!(matches!(
        sinks.send(&hook("/401"), &msg).await,
        Outcome::Failed {
            status: Some(401),
            ..
        }
    ));
    // Redirects are not followed: the receiver must be configured with its real URL.
    assert!(matches!(
        sinks.send(&hook("/301"), &msg).await,
        Outcome::Failed {
            status: Some(301),
            ..
        }
    ));
    assert!(!peer.requests().iter().any(|r| r.target == "/elsewhere"));
}

#[tokio::test]
async fn a_server_that_never_answers_is_retried_after_the_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let sinks = sinks_with(Duration::from_secs(1));
    let cfgs = [
        config(json!({"kind": "webhook", "url": format!("http://{addr}/hook")})),
        config(json!({
            "kind": "matrix", "homeserver": format!("http://{addr}"), "access_token": "t",
            "room": "#ops:localhost",
        })),
        config(json!({"kind": "ntfy", "url": format!("http://{addr}"), "topic": "t"})),
    ];
    for cfg in &cfgs {
        let started = Instant::now();
        let outcome = sinks.send(cfg, &message()).await;
        let took = started.elapsed();
        assert!(
            matches!(&outcome, Outcome::Retry { status: None, error, .. } if error.contains("timed out")),
            "{}: {outcome:?}",
            cfg.kind()
        );
        assert!(
            took < Duration::from_secs(6),
            "{}: took {took:?}",
            cfg.kind()
        );
    }
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(json!({"kind": "webhook", "url": format!("http://127.0.0.1:{port}/")}));
    assert!(matches!(
        sinks().send(&cfg, &message()).await,
        Outcome::Retry { status: None, .. }
    ));
}

#[tokio::test]
async fn default_rules_refuse_loopback_destinations() {
    let peer = Peer::start(|_| reply(200, "")).await;
    let strict = Sinks::new(SinksConfig {
        fetch: FetchConfig::default(),
        relay: None,
    })
    .unwrap();
    let cfgs = [
        config(json!({"kind": "webhook", "url": peer.url("/hook")})),
        config(json!({"kind": "slack", "webhook_url": peer.url("/services/A/B/C")})),
        config(json!({
            "kind": "twilio", "account_sid": "AC1", "auth_token": "t",
            "from": "+15550001111", "to": "+15550002222", "base_url": peer.url(""),
        })),
        config(json!({
            "kind": "matrix", "homeserver": peer.url(""), "access_token": "t", "room": "#a:b",
        })),
    ];
    for cfg in &cfgs {
        match strict.send(cfg, &message()).await {
            Outcome::Failed {
                status: None,
                error,
            } => assert!(
                error.starts_with("refused: 127.0.0.1 is a loopback address"),
                "{error}"
            ),
            other => panic!("{}: {other:?}", cfg.kind()),
        }
        match strict.check(cfg).await {
            Err(Error::Forbidden(text)) => assert!(text.starts_with("refused:"), "{text}"),
            other => panic!("{}: {other:?}", cfg.kind()),
        }
    }
    assert!(peer.requests().is_empty());
    // The open rules used by the other tests accept it.
    sinks().check(&cfgs[0]).await.unwrap();
}

#[tokio::test]
async fn mail_without_a_relay_is_not_available() {
    let cfg = config(json!({"kind": "mailto", "to": "alice@example.org"}));
    let sinks = sinks();
    match sinks.check(&cfg).await {
        Err(Error::NotAvailable(text)) => assert!(text.contains("SMTP relay"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sinks.send(&cfg, &message()).await,
        Outcome::Failed { status: None, .. }
    ));
}
