//! XMPP end to end: a real Prosody (`scripts/prosody`, fresh directory and ports per test),
//! the real server connected to it as a component, and alice logged in with an ordinary XMPP
//! client (tidings_xmpp's client mode, which Prosody treats like any other client): consent
//! by subscription approval, immediate delivery while available, held while away and
//! released on return, IM commands, an IM reply, escalation stopped by an ack over IM, and
//! Prosody restarted under everyone with nothing lost.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tidings_xmpp::{ClientTls, Inbound, Jid, Mode, Outbound, Show, XmppConfig, XmppHandle};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const DOMAIN: &str = "localhost";
const COMPONENT: &str = "tidings.localhost";
const SECRET: &str = "component-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prosody {
    dir: tempfile::TempDir,
    c2s: u16,
    component: u16,
}

impl Prosody {
    fn script(args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/prosody");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .output()
            .expect("run scripts/prosody");
        assert!(
            out.status.success(),
            "scripts/prosody {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Prosody {
        let p = Prosody {
            dir: tempfile::tempdir().unwrap(),
            c2s: free_port(),
            component: free_port(),
        };
        p.up();
        Prosody::script(&["adduser", &p.path(), "alice", "alice-pw"]);
        p
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn up(&self) {
        Prosody::script(&[
            "start",
            &self.path(),
            &self.c2s.to_string(),
            &self.component.to_string(),
            DOMAIN,
            COMPONENT,
            SECRET,
        ]);
    }

    fn down(&self) {
        Prosody::script(&["stop", &self.path()]);
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/prosody"))
            .args(["stop", &self.path()])
            .output();
    }
}

/// Alice's XMPP client.
struct Alice {
    handle: XmppHandle,
    inbound: mpsc::Receiver<Inbound>,
    _stop: watch::Sender<bool>,
}

impl Alice {
    fn connect(p: &Prosody) -> Alice {
        let mut cfg = XmppConfig::new(Mode::Client {
            jid: Jid::parse("alice@localhost/phone").unwrap(),
            password: "alice-pw".into(),
            host: Some("127.0.0.1".into()),
            port: Some(p.c2s),
            tls: ClientTls::Optional,
            extra_root_certs: Vec::new(),
        });
        cfg.reconnect_min = Duration::from_millis(100);
        cfg.reconnect_max = Duration::from_millis(500);
        let (stop, rx) = watch::channel(false);
        let (handle, inbound) = tidings_xmpp::start(cfg, Vec::new(), rx);
        Alice {
            handle,
            inbound,
            _stop: stop,
        }
    }

    /// Waits for an event `f` accepts (others are dropped).
    async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Inbound) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.inbound.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                }
                Ok(None) => panic!("alice's connection ended while waiting for {what}"),
                Err(_) => panic!("alice never got {what}"),
            }
        }
    }

    /// The next message from tidings: (body, id).
    async fn message(&mut self, what: &str) -> (String, Option<String>) {
        self.expect(what, |ev| match ev {
            Inbound::Message { from, body, id, .. } if from.bare().to_string() == COMPONENT => {
                Some((body.clone(), id.clone()))
            }
            _ => None,
        })
        .await
    }

    /// Sends `body` to tidings and returns its answer.
    async fn ask(&mut self, body: &str) -> String {
        self.say(body).await;
        self.message(&format!("an answer to {body:?}")).await.0
    }

    async fn say(&self, body: &str) {
        self.handle
            .send(Outbound {
                to: Jid::parse(COMPONENT).unwrap(),
                body: body.into(),
                id: format!("a-{}", rand_id()),
                request_receipt: false,
                markable: false,
                from_node: None,
            })
            .await
            .unwrap();
    }
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn publish_titled(url: &str, token: &str, title: &str, priority: &str) -> String {
    let r = client()
        .post(format!("{url}/alerts"))
        .bearer_auth(token)
        .header("Title", title)
        .header("Priority", priority)
        .body(format!("{title}: details"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn record(url: &str, token: &str, id: &str, status: &str) -> Value {
    eventually(30, || async {
        let (_, v) = get_json(&format!("{url}/api/v1/notifications/{id}"), token).await;
        v["deliveries"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["kind"] == "xmpp").cloned())
            .filter(|d| d["status"] == status)
    })
    .await
}

fn start_server(p: &Prosody) -> Server {
    start_server_as(p, "component")
}

/// tidings as a component, or (`client`) logged in as the ordinary account `bot`.
fn start_server_as(p: &Prosody, mode: &str) -> Server {
    let port = if mode == "client" { p.c2s } else { p.component };
    Server::start_with(&[
        ("TIDINGS_XMPP_MODE", mode),
        ("TIDINGS_XMPP_HOST", "127.0.0.1"),
        ("TIDINGS_XMPP_PORT", &port.to_string()),
        ("TIDINGS_XMPP_DOMAIN", COMPONENT),
        ("TIDINGS_XMPP_SECRET", SECRET),
        ("TIDINGS_XMPP_JID", "bot@localhost/tidings"),
        ("TIDINGS_XMPP_PASSWORD", "bot-pw"),
        ("TIDINGS_XMPP_TLS", "optional"),
        ("TIDINGS_XMPP_RECONNECT_MAX", "500ms"),
        ("TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS", "true"),
        ("TIDINGS_DELIVERY_RETRY_BASE", "200ms"),
    ])
}

/// Alice's tidings account with an approved xmpp destination; returns (token, dest id).
async fn linked(s: &Server, alice: &mut Alice) -> (String, String) {
    alice
        .expect("alice's session", |ev| {
            matches!(ev, Inbound::Connected).then_some(())
        })
        .await;
    let token = s.user("alice").await;
    let (st, _) = post(
        &format!("{}/api/v1/subscriptions", s.url),
        &token,
        json!({"source": {"kind": "topic", "topic": "alerts"}}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, d) = post(
        &format!("{}/api/v1/destinations", s.url),
        &token,
        json!({"name": "im", "url": "xmpp://alice@localhost"}),
    )
    .await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(d["verified"], false, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    // Consent: tidings asks for alice's presence; her client approves (it approves every
    // request), and the destination is verified.
    alice
        .expect("tidings' subscription request", |ev| match ev {
            Inbound::SubscribeRequest { jid } if jid.to_string() == COMPONENT => Some(()),
            _ => None,
        })
        .await;
    eventually(30, || async {
        let (_, v) = get_json(&format!("{}/api/v1/destinations/{id}", s.url), &token).await;
        (v["verified"] == true).then_some(())
    })
    .await;
    (token, id)
}

#[tokio::test]
async fn im_goes_out_while_available_waits_while_away_and_answers_commands() {
    let p = Prosody::start();
    let s = start_server(&p);
    let mut alice = Alice::connect(&p);
    let (token, _) = linked(&s, &mut alice).await;

    // Available: delivered at once, formatted, with the notification id as stanza id.
    let first = publish_titled(&s.url, &token, "Disk full", "high").await;
    let (body, id) = alice.message("the first notification").await;
    assert!(
        body.starts_with("*Disk full*\nDisk full: details"),
        "{body}"
    );
    assert!(body.ends_with("_alerts_"), "{body}");
    assert_eq!(id.as_deref(), Some(first.as_str()));
    record(&s.url, &token, &first, "delivered").await;

    // Away: held (on disk, with the reason), then released when she is back.
    alice
        .handle
        .set_presence(Show::Away, Some("lunch".into()))
        .await
        .unwrap();
    let db = s.db_path();
    eventually(30, || async {
        (sqlite_count(
            &db,
            "SELECT count(*) FROM events WHERE kind = 'presence_changed' AND json_extract(data, '$.status') = 'away'",
        ) >= 1)
            .then_some(())
    })
    .await;
    let (_, me) = get_json(&format!("{}/api/v1/account", s.url), &token).await;
    assert_eq!(me["presence"]["xmpp"]["alice@localhost"], "away", "{me}");
    assert_eq!(me["presence"]["overall"], "away", "{me}");
    let second = publish_titled(&s.url, &token, "CPU hot", "default").await;
    let held = record(&s.url, &token, &second, "held").await;
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("until you are available on XMPP"),
        "{held}"
    );
    // An urgent item breaks through.
    publish_titled(&s.url, &token, "Site down", "urgent").await;
    let (body, _) = alice.message("the urgent notification").await;
    assert!(body.contains("Site down"), "{body}");
    alice
        .handle
        .set_presence(Show::Available, None)
        .await
        .unwrap();
    let (body, _) = alice.message("the released notification").await;
    assert!(body.contains("CPU hot"), "{body}");
    record(&s.url, &token, &second, "delivered").await;

    // Commands.
    assert!(alice.ask("help").await.contains("tidings commands"));
    let list = alice.ask("list").await;
    assert!(list.contains("1. topic alerts"), "{list}");
    let history = alice.ask("history 3").await;
    assert!(history.contains("1. Site down"), "{history}");
    assert!(alice.ask("frobnicate").await.contains("I don't know"));
    assert!(
        alice
            .ask("ack 2")
            .await
            .starts_with("Acknowledged: CPU hot")
    );
    let (_, v) = get_json(&format!("{}/api/v1/notifications/{second}", s.url), &token).await;
    assert_eq!(v["acked"], true, "{v}");

    // A stranger gets an explanation, not silence, and commands nothing.
    Prosody::script(&["adduser", &p.path(), "mallory", "m-pw"]);
    let mut cfg = XmppConfig::new(Mode::Client {
        jid: Jid::parse("mallory@localhost/x").unwrap(),
        password: "m-pw".into(),
        host: Some("127.0.0.1".into()),
        port: Some(p.c2s),
        tls: ClientTls::Optional,
        extra_root_certs: Vec::new(),
    });
    cfg.reconnect_max = Duration::from_millis(500);
    let (_stop, rx) = watch::channel(false);
    let (handle, inbound) = tidings_xmpp::start(cfg, Vec::new(), rx);
    let mut mallory = Alice {
        handle,
        inbound,
        _stop,
    };
    mallory
        .expect("mallory's session", |ev| {
            matches!(ev, Inbound::Connected).then_some(())
        })
        .await;
    let answer = mallory.ask("list").await;
    assert!(
        answer.contains("not linked to a tidings account"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_im_ack_stops_escalation_and_a_prosody_restart_loses_nothing() {
    let p = Prosody::start();
    let s = start_server(&p);
    let mut alice = Alice::connect(&p);
    let (token, _) = linked(&s, &mut alice).await;
    let (hook_rx, hook) = {
        let hits: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let h = h.clone();
                async move {
                    h.lock().unwrap().push(body);
                    "ok"
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (hits, addr)
    };
    let (st, v) = post(
        &format!("{}/api/v1/destinations", s.url),
        &token,
        json!({"name": "pager", "url": format!("json://{hook}/hook")}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let r = client()
        .put(format!("{}/api/v1/rules", s.url))
        .bearer_auth(&token)
        .json(&json!({"rules": [{"name": "im first", "steps": [
            {"to": "im"}, {"to": "pager", "after": "3s"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Acked over IM in time: the pager is never called.
    let acked = publish_titled(&s.url, &token, "Backup failed", "high").await;
    alice.message("the notification").await;
    assert!(
        alice
            .ask("ack")
            .await
            .starts_with("Acknowledged: Backup failed")
    );
    let (_, v) = get_json(&format!("{}/api/v1/notifications/{acked}", s.url), &token).await;
    let pager = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "pager")
        .cloned()
        .unwrap();
    eventually(10, || async {
        let (_, v) = get_json(&format!("{}/api/v1/notifications/{acked}", s.url), &token).await;
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["destination"] == "pager" && d["status"] == "cancelled")
            .then_some(())
    })
    .await;
    assert_eq!(pager["kind"], "webhook");

    // A reply over IM goes to the item's source: here the publisher's Reply-To-Url.
    let r = client()
        .post(format!("{}/alerts", s.url))
        .bearer_auth(&token)
        .header("Title", "Deploy 7 waiting")
        .header("Reply-To-Url", format!("http://{hook}/hook"))
        .body("approve?")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    alice.message("the deploy notification").await;
    assert!(
        alice
            .ask("reply 1 ship it")
            .await
            .starts_with("Reply sent for: Deploy 7 waiting")
    );
    eventually(20, || async {
        hook_rx
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("\"text\":\"ship it\"") && b.contains("\"type\":\"reply\""))
            .then_some(())
    })
    .await;

    // Prosody goes away and comes back: what was published meanwhile waits (tidings cannot
    // see alice) and arrives after both reconnect; nothing is lost or doubled.
    p.down();
    let during = publish_titled(&s.url, &token, "During the outage", "default").await;
    p.up();
    let (body, id) = alice.message("the item from the outage").await;
    assert!(body.contains("During the outage"), "{body}");
    assert_eq!(id.as_deref(), Some(during.as_str()));
    record(&s.url, &token, &during, "delivered").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                if let Some(Inbound::Message { body, .. }) = alice.inbound.recv().await
                    && body.contains("During the outage")
                {
                    return;
                }
            }
        })
        .await
        .is_err(),
        "the item came twice"
    );
    // The pager was not escalated for the acked item; the outage item escalated (not acked).
    let hooks = hook_rx.lock().unwrap().clone();
    assert!(
        !hooks.iter().any(|b| b.contains("Backup failed")),
        "{hooks:?}"
    );
}

#[tokio::test]
async fn client_mode_does_the_same_over_an_ordinary_account() {
    let p = Prosody::start();
    Prosody::script(&["adduser", &p.path(), "bot", "bot-pw"]);
    let s = start_server_as(&p, "client");
    let mut alice = Alice::connect(&p);
    alice
        .expect("alice's session", |ev| {
            matches!(ev, Inbound::Connected).then_some(())
        })
        .await;
    let token = s.user("alice").await;
    let (st, _) = post(
        &format!("{}/api/v1/subscriptions", s.url),
        &token,
        json!({"source": {"kind": "topic", "topic": "alerts"}}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, d) = post(
        &format!("{}/api/v1/destinations", s.url),
        &token,
        json!({"name": "im", "url": "xmpp://alice@localhost"}),
    )
    .await;
    assert_eq!(st, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    eventually(30, || async {
        let (_, v) = get_json(&format!("{}/api/v1/destinations/{id}", s.url), &token).await;
        (v["verified"] == true).then_some(())
    })
    .await;
    let n = publish_titled(&s.url, &token, "From the bot", "default").await;
    let (body, mid) = alice
        .expect("the bot's message", |ev| match ev {
            Inbound::Message { from, body, id, .. }
                if from.bare().to_string() == "bot@localhost" =>
            {
                Some((body.clone(), id.clone()))
            }
            _ => None,
        })
        .await;
    assert!(body.contains("From the bot"), "{body}");
    assert_eq!(mid.as_deref(), Some(n.as_str()));
    record(&s.url, &token, &n, "delivered").await;
}

/// Alice on slixmpp (Python, an independent XMPP client library): `tests/support/xmpp_user.py`.
struct SlixUser {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
}

impl SlixUser {
    fn start(p: &Prosody) -> SlixUser {
        use std::io::BufRead as _;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/xmpp_user.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "alice@localhost",
                "alice-pw",
                "127.0.0.1",
                &p.c2s.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for this test");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        SlixUser {
            child,
            stdin,
            events,
        }
    }

    async fn expect(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(v)) if f(&v) => return v,
                Ok(Some(_)) => {}
                _ => {
                    use std::io::Read as _;
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(e) = self.child.stderr.as_mut() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "slixmpp alice never got {what} (is slixmpp installed? pip install slixmpp): {err}"
                    );
                }
            }
        }
    }

    fn send(&mut self, cmd: Value) {
        use std::io::Write as _;
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    async fn message(&mut self, what: &str) -> Value {
        self.expect(what, |v| v["event"] == "message" && v["from"] == COMPONENT)
            .await
    }
}

impl Drop for SlixUser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_independent_client_approves_gets_messages_with_receipts_and_chats() {
    let p = Prosody::start();
    let s = start_server(&p);
    let mut alice = SlixUser::start(&p);
    alice.expect("the session", |v| v["event"] == "ready").await;
    let token = s.user("alice").await;
    let (st, _) = post(
        &format!("{}/api/v1/subscriptions", s.url),
        &token,
        json!({"source": {"kind": "topic", "topic": "alerts"}}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, d) = post(
        &format!("{}/api/v1/destinations", s.url),
        &token,
        json!({"name": "im", "url": "xmpp://alice@localhost"}),
    )
    .await;
    assert_eq!(st, 201, "{d}");
    let dest = d["id"].as_str().unwrap().to_owned();
    alice
        .expect("tidings' subscription request", |v| {
            v["event"] == "subscribe" && v["from"] == COMPONENT
        })
        .await;
    eventually(30, || async {
        let (_, v) = get_json(&format!("{}/api/v1/destinations/{dest}", s.url), &token).await;
        (v["verified"] == true).then_some(())
    })
    .await;

    let id = publish_titled(&s.url, &token, "Queue backed up", "high").await;
    let m = alice.message("the notification").await;
    assert_eq!(m["id"], id.as_str(), "{m}");
    assert_eq!(m["receipt_requested"], true, "{m}");
    assert!(
        m["body"].as_str().unwrap().starts_with("*Queue backed up*"),
        "{m}"
    );
    // slixmpp answers the receipt request (XEP-0184); it lands on the delivery record.
    eventually(30, || async {
        let (_, v) = get_json(&format!("{}/api/v1/notifications/{id}", s.url), &token).await;
        v["deliveries"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["receipt"] == "received"))
            .then_some(())
    })
    .await;

    // Away: held; back: released.
    alice.send(json!({"op": "show", "show": "xa"}));
    let db = s.db_path();
    eventually(30, || async {
        (sqlite_count(
            &db,
            "SELECT count(*) FROM events WHERE kind = 'presence_changed' AND json_extract(data, '$.status') = 'xa'",
        ) >= 1)
            .then_some(())
    })
    .await;
    let later = publish_titled(&s.url, &token, "While away", "default").await;
    record(&s.url, &token, &later, "held").await;
    alice.send(json!({"op": "show", "show": "available"}));
    let m = alice.message("the released notification").await;
    assert_eq!(m["id"], later.as_str(), "{m}");

    // Chat: a command and its answer.
    alice.send(json!({"op": "say", "to": COMPONENT, "body": "history 2"}));
    let m = alice.message("the answer to history").await;
    let body = m["body"].as_str().unwrap();
    assert!(
        body.contains("1. While away") && body.contains("2. Queue backed up"),
        "{body}"
    );
}
