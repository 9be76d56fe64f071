//! Mail out and replies, end to end: a real SMTP server (aiosmtpd) plays the operator's
//! relay, Python's smtplib sends replies to the server's own SMTP listener, and Python's
//! `email` package reads what the relay received (a parser that is not ours).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The relay: `tests/support/smtp_relay.py` on a free port, writing mail to a temp dir.
struct Relay {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Relay {
    fn start() -> Relay {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_relay.py");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the mail tests");
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the SMTP relay did not start (is aiosmtpd installed? `pip install aiosmtpd`): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Relay { child, port, dir }
    }

    /// Mails received so far, oldest first: (envelope, path of the .eml).
    fn mails(&self) -> Vec<(Value, PathBuf)> {
        let mut n = 1;
        let mut out = Vec::new();
        loop {
            let json = self.dir.path().join(format!("{n}.json"));
            let Ok(text) = std::fs::read_to_string(&json) else {
                return out;
            };
            out.push((
                serde_json::from_str(&text).unwrap(),
                self.dir.path().join(format!("{n}.eml")),
            ));
            n += 1;
        }
    }

    /// Waits for a mail to `to` that `pred` accepts; returns it parsed.
    async fn wait_for(&self, to: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(30, || async {
            self.mails()
                .into_iter()
                .filter(|(env, _)| env["rcpt_tos"].as_array().unwrap().iter().any(|r| r == to))
                .map(|(env, path)| {
                    let mut m = parse_with_python(&path);
                    m["envelope"] = env;
                    m
                })
                .find(|m| pred(m))
        })
        .await
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headers and parts of a mail, read by Python's `email` package.
fn parse_with_python(path: &Path) -> Value {
    let script = r#"
import email, json, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.default)
parts = []
for p in m.walk():
    if p.get_content_maintype() == "multipart":
        continue
    parts.append({"type": p.get_content_type(), "body": p.get_content()})
print(json.dumps({"headers": {k.lower(): str(v) for k, v in m.items()},
                  "type": m.get_content_type(), "parts": parts}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sends a mail with smtplib; returns the SMTP code of each RCPT and of DATA (`-` if not
/// reached) as "rcpt,data".
fn smtp_send(port: u16, mail_from: &str, to: &str, headers: &str, body: &str) -> String {
    let script = r#"
import os, smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=10)
s.ehlo("client.test")
s.mail(os.environ["FROM"])
code, _ = s.rcpt(os.environ["TO"])
data = "-"
if code == 250:
    msg = os.environ["HEADERS"].replace("\n", "\r\n") + "\r\n\r\n" + os.environ["BODY"].replace("\n", "\r\n")
    data = s.data(msg.encode())[0]
s.quit()
print(f"{code},{data}")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PORT", port.to_string())
        .env("FROM", mail_from)
        .env("TO", to)
        .env("HEADERS", headers)
        .env("BODY", body)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Setup {
    relay: Relay,
    server: Server,
    smtp_port: u16,
}

fn setup() -> Setup {
    let relay = Relay::start();
    let smtp_port = free_port();
    let server = Server::start_with(&[
        ("TIDINGS_SMTP_MAIL_DOMAIN", "tidings.test"),
        ("TIDINGS_SMTP_LISTEN", &format!("127.0.0.1:{smtp_port}")),
        ("TIDINGS_RELAY_HOST", "127.0.0.1"),
        ("TIDINGS_RELAY_PORT", &relay.port.to_string()),
        ("TIDINGS_RELAY_TLS", "none"),
        ("TIDINGS_DELIVERY_RETRY_BASE", "200ms"),
        ("TIDINGS_DELIVERY_RETRY_MAX", "1s"),
    ]);
    Setup {
        relay,
        server,
        smtp_port,
    }
}

fn six_digits(text: &str) -> String {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(5))
        .find(|&i| {
            b[i..i + 6].iter().all(u8::is_ascii_digit)
                && (i == 0 || !b[i - 1].is_ascii_digit())
                && b.get(i + 6).is_none_or(|c| !c.is_ascii_digit())
        })
        .map(|i| text[i..i + 6].to_owned())
        .unwrap_or_else(|| panic!("no code in {text:?}"))
}

fn text_part(m: &Value) -> String {
    m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "text/plain")
        .map(|p| p["body"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no text part: {m}"))
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

/// Adds a mailto destination and enters the code the relay received; returns its id.
async fn verified_mail_destination(s: &Setup, token: &str, address: &str) -> String {
    let url = &s.server.url;
    let (st, d) = post(
        &format!("{url}/api/v1/destinations"),
        token,
        json!({"name": "mail", "url": format!("mailto:{address}")}),
    )
    .await;
    assert_eq!(st, 201, "{d}");
    assert_eq!(d["verified"], false, "{d}");
    assert_eq!(d["verification"]["sent_to"], address, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let code_mail = s
        .relay
        .wait_for(address, |m| {
            m["headers"]["subject"]
                .as_str()
                .is_some_and(|t| t.contains("verification code"))
        })
        .await;
    let code = six_digits(&text_part(&code_mail));
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (st, v) = post(
        &format!("{url}/api/v1/destinations/{id}/verify"),
        token,
        json!({"code": wrong}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrong code"),
        "{v}"
    );
    let (st, v) = post(
        &format!("{url}/api/v1/destinations/{id}/verify"),
        token,
        json!({"code": code}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["verified"], true, "{v}");
    id
}

#[tokio::test]
async fn mail_is_verified_then_delivered_with_proper_headers_and_a_reply_acks_it() {
    let s = setup();
    let url = s.server.url.clone();
    let alice = s.server.user("alice").await;
    let (st, _) = post(
        &format!("{url}/api/v1/subscriptions"),
        &alice,
        json!({"source": {"kind": "topic", "topic": "alerts"}}),
    )
    .await;
    assert_eq!(st, 201);

    // Before verification nothing but the code goes to the address.
    let (st, d) = post(
        &format!("{url}/api/v1/destinations"),
        &alice,
        json!({"name": "early", "url": "mailto:early@example.org"}),
    )
    .await;
    assert_eq!(st, 201, "{d}");
    let r = publish(&url, &alice, "alerts", "not for unverified addresses").await;
    let early_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.relay.wait_for("early@example.org", |_| true).await;
    let (_, v) = get_json(&format!("{url}/api/v1/notifications/{early_id}"), &alice).await;
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 0, "{v}");

    verified_mail_destination(&s, &alice, "alice@example.org").await;

    let r = client()
        .post(format!("{url}/alerts"))
        .bearer_auth(&alice)
        .header("Title", "Disk alert")
        .body("disk 97% full <script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = s
        .relay
        .wait_for("alice@example.org", |m| {
            m["headers"]["subject"] == "Disk alert"
        })
        .await;
    let h = &m["headers"];
    assert!(
        h["from"].as_str().unwrap().contains("tidings@tidings.test"),
        "{h}"
    );
    assert_eq!(h["to"], "alice@example.org");
    assert!(h["message-id"].as_str().unwrap().contains(&id), "{h}");
    assert_eq!(h["list-id"], "<topic-alerts.tidings.test>");
    assert_eq!(h["auto-submitted"], "auto-generated");
    assert!(h["date"].is_string(), "{h}");
    let reply_to = h["reply-to"].as_str().unwrap().to_owned();
    assert!(
        reply_to.starts_with("reply+") && reply_to.ends_with("@tidings.test"),
        "{reply_to}"
    );
    assert_eq!(m["type"], "multipart/alternative");
    let types: Vec<&str> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    assert!(text_part(&m).contains("disk 97% full"));
    let html = m["parts"][1]["body"].as_str().unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    let (_, v) = get_json(&format!("{url}/api/v1/notifications/{id}"), &alice).await;
    assert_eq!(v["acked"], false);

    // Only the address it was sent to may reply; an unknown token is no address at all.
    let token_addr = reply_to.clone();
    assert_eq!(
        smtp_send(
            s.smtp_port,
            "mallory@example.org",
            &token_addr,
            "Subject: hi",
            "ack"
        ),
        "550,-"
    );
    assert_eq!(
        smtp_send(
            s.smtp_port,
            "alice@example.org",
            "reply+00000000000000000000000000000000@tidings.test",
            "Subject: hi",
            "ack"
        ),
        "550,-"
    );
    let sent = smtp_send(
        s.smtp_port,
        "alice@example.org",
        &token_addr,
        "From: alice@example.org\nSubject: Re: Disk alert",
        "Cleaned up /var/log.\n\nOn Mon, tidings wrote:\n> disk 97% full\n",
    );
    assert_eq!(sent, "250,250");

    // The reply is an ack, with its text in the event archive; a topic has no reply path,
    // and the user is told so in their history.
    let v = eventually(20, || async {
        let (_, v) = get_json(&format!("{url}/api/v1/notifications/{id}"), &alice).await;
        (v["acked"] == true).then_some(v)
    })
    .await;
    assert!(v["acked_at"].is_i64(), "{v}");
    let db = s.server.db_path();
    assert_eq!(
        sqlite_count(
            &db,
            "SELECT count(*) FROM events WHERE kind = 'replied' AND json_extract(data, '$.text') = 'Cleaned up /var/log.'"
        ),
        1
    );
    eventually(20, || async {
        history(&url, &alice)
            .await
            .into_iter()
            .find(|n| n["title"] == "Your reply was not forwarded")
    })
    .await;
}

#[tokio::test]
async fn a_reply_to_a_forwarded_mail_goes_back_to_its_sender() {
    let s = setup();
    let url = s.server.url.clone();
    let alice = s.server.user("alice").await;
    verified_mail_destination(&s, &alice, "alice@example.org").await;

    // Bob writes to alice's tidings address; tidings mails it on to alice@example.org.
    let sent = smtp_send(
        s.smtp_port,
        "bob@example.net",
        "alice@tidings.test",
        "From: Bob <bob@example.net>\nReply-To: Bob Desk <desk@example.net>\nSubject: Lunch?\nMessage-ID: <m1@example.net>",
        "Lunch at noon?",
    );
    assert_eq!(sent, "250,250");
    let m = s
        .relay
        .wait_for("alice@example.org", |m| m["headers"]["subject"] == "Lunch?")
        .await;
    let reply_to = m["headers"]["reply-to"].as_str().unwrap().to_owned();
    assert_eq!(m["headers"]["list-id"], "<mail-2.tidings.test>");

    let sent = smtp_send(
        s.smtp_port,
        "alice@example.org",
        &reply_to,
        "From: alice@example.org\nSubject: Re: Lunch?",
        "Yes, 12:30.\n\n> Lunch at noon?\n",
    );
    assert_eq!(sent, "250,250");
    let relayed = s.relay.wait_for("desk@example.net", |_| true).await;
    let h = &relayed["headers"];
    assert_eq!(h["from"], "alice@tidings.test");
    assert_eq!(h["subject"], "Re: Lunch?");
    assert_eq!(h["in-reply-to"], "<m1@example.net>");
    assert_eq!(text_part(&relayed).trim(), "Yes, 12:30.");
    assert_eq!(relayed["envelope"]["rcpt_tos"], json!(["desk@example.net"]));

    // The mail notification is acked by the reply.
    let items = history(&url, &alice).await;
    let lunch = items.iter().find(|n| n["title"] == "Lunch?").unwrap();
    assert_eq!(lunch["acked"], true, "{lunch}");
    let db = s.server.db_path();
    eventually(10, || async {
        (sqlite_count(
            &db,
            "SELECT count(*) FROM events WHERE kind = 'reply_relayed'",
        ) == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn relay_answers_decide_between_retry_and_dead_letter() {
    let s = setup();
    let url = s.server.url.clone();
    let alice = s.server.user("alice").await;
    let mut ids = Vec::new();
    for addr in ["tempfail@example.org", "reject@example.org"] {
        let (st, d) = post(
            &format!("{url}/api/v1/destinations"),
            &alice,
            json!({"name": addr, "url": format!("mailto:{addr}")}),
        )
        .await;
        assert_eq!(st, 201, "{d}");
        ids.push(d["id"].as_str().unwrap().to_owned());
    }
    let record = |id: String, status: &'static str| {
        let (url, alice) = (url.clone(), alice.clone());
        async move {
            eventually(30, || async {
                let (_, v) = get_json(
                    &format!("{url}/api/v1/destinations/{id}/deliveries"),
                    &alice,
                )
                .await;
                v["deliveries"]
                    .as_array()
                    .and_then(|a| a.first().cloned())
                    .filter(|d| d["status"] == status)
            })
            .await
        }
    };
    // 451: the code is retried; 550: dead at once, with the relay's answer.
    let temp = record(ids[0].clone(), "retrying").await;
    assert_eq!(temp["reason"], "verification code", "{temp}");
    assert_eq!(temp["attempts"][0]["status"], 451, "{temp}");
    let dead = record(ids[1].clone(), "dead").await;
    assert_eq!(dead["attempts"].as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead["attempts"][0]["status"], 550, "{dead}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
