//! Mail in, end to end: real SMTP clients (Python's smtplib, swaks) against the listener of
//! a running server, and what arrives in the recipient's history.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_mail(port: u16) -> Server {
    Server::start_with(&[
        ("TIDINGS_SMTP_MAIL_DOMAIN", "tidings.test"),
        ("TIDINGS_SMTP_LISTEN", &format!("127.0.0.1:{port}")),
        // The burst test sends hundreds of mails on one connection.
        ("TIDINGS_SMTP_MAX_COMMANDS_PER_MINUTE", "100000"),
    ])
}

/// Runs a Python smtplib script with PORT set; returns (exit ok, stdout, stderr).
fn python(port: u16, script: &str) -> (bool, String, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PORT", port.to_string())
        .output()
        .expect("python3 is needed for the mail tests");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SEND: &str = r#"
import os, smtplib, sys
from email.message import EmailMessage
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=10)
def send(to, subject, body, mid, html=None, attach=None):
    m = EmailMessage()
    m["From"] = "Backup Bot <bot@example.org>"
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = mid
    m.set_content(body)
    if html:
        m.add_alternative(html, subtype="html")
    if attach:
        m.add_attachment(attach[1], maintype="application", subtype="octet-stream", filename=attach[0])
    try:
        s.send_message(m)
        print("sent", mid)
    except smtplib.SMTPRecipientsRefused as e:
        for rcpt, (code, msg) in e.recipients.items():
            print("refused", rcpt, code, msg.decode())
send("alice@tidings.test", "Backup report", "All 3 volumes backed up.", "<m1@example.org>")
send("alice+bank@tidings.test", "Card used", "A payment of 12 EUR.", "<m2@example.org>",
     attach=("statement.pdf", b"%PDF-1.4 " + b"x" * 3000))
send("alice@tidings.test", "Backup report", "All 3 volumes backed up.", "<m1@example.org>")
send("nobody@tidings.test", "Lost", "to nobody", "<m3@example.org>")
send("alice@TIDINGS.TEST", "Weekly", "plain fallback", "<m4@example.org>",
     html="<p>Only <b>HTML</b> &amp; more</p>")
s.quit()
"#;

#[tokio::test]
async fn smtplib_mail_becomes_notifications_once() {
    let port = free_port();
    let s = start_mail(port);
    let alice = s.user("alice").await;
    let (ok, out, err) = python(port, SEND);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("refused nobody@tidings.test 550 5.1.1"),
        "{out}"
    );
    assert_eq!(out.matches("sent").count(), 4, "{out}");

    eventually(10, || async {
        (history(&s.url, &alice).await.len() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let h = history(&s.url, &alice).await;
    assert_eq!(
        h.len(),
        3,
        "the duplicate Message-ID is one notification: {h:#?}"
    );
    let by_title: HashMap<&str, &Value> = h
        .iter()
        .map(|n| (n["title"].as_str().unwrap(), n))
        .collect();
    let backup = by_title["Backup report"];
    assert_eq!(backup["message"], "All 3 volumes backed up.");
    assert_eq!(backup["author"], "Backup Bot <bot@example.org>");
    assert!(backup["source"].as_str().unwrap().starts_with("mail:"));
    let card = by_title["Card used"];
    assert_eq!(card["tags"], serde_json::json!(["mail", "bank"]));
    assert!(
        card["message"].as_str().unwrap().contains("statement.pdf"),
        "{card}"
    );
    assert_ne!(
        card["source"], backup["source"],
        "a label is its own source"
    );
    // The plain part of the alternative is used.
    assert_eq!(by_title["Weekly"]["message"], "plain fallback");
}

#[tokio::test]
async fn swaks_pipelining_and_malformed_mime() {
    let port = free_port();
    let s = start_mail(port);
    let alice = s.user("alice").await;
    let swaks = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--pipeline"])
        .args(["--to", "alice@tidings.test", "--from", "ci@example.org"])
        .args(["--header", "Subject: from swaks", "--body", "pipelined"])
        .output()
        .expect("swaks not installed: run apt-get install swaks");
    assert!(
        swaks.status.success(),
        "{}",
        String::from_utf8_lossy(&swaks.stdout)
    );
    // A broken multipart (no closing boundary) still becomes a notification.
    let broken = "From: x@example.org\r\nSubject: broken\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nrecovered text\r\n";
    let script = format!(
        "import os, smtplib\ns = smtplib.SMTP('127.0.0.1', int(os.environ['PORT']))\ns.sendmail('x@example.org', ['alice@tidings.test'], {broken:?})\ns.quit()\n"
    );
    let (ok, out, err) = python(port, &script);
    assert!(ok, "{out}\n{err}");
    let h = eventually(10, || async {
        let h = history(&s.url, &alice).await;
        (h.len() == 2).then_some(h)
    })
    .await;
    let titles: Vec<&str> = h.iter().filter_map(|n| n["title"].as_str()).collect();
    assert!(
        titles.contains(&"from swaks") && titles.contains(&"broken"),
        "{h:?}"
    );
    let broken = h.iter().find(|n| n["title"] == "broken").unwrap();
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("recovered text")
    );
}

const BURST: &str = r#"
import os, smtplib, sys
port = int(os.environ["PORT"]); start = int(os.environ["START"]); end = int(os.environ["END"])
acked = []
try:
    s = smtplib.SMTP("127.0.0.1", port, timeout=5)
    for i in range(start, end):
        if os.environ.get("ONLY") and str(i) not in os.environ["ONLY"].split(","):
            continue
        msg = f"From: a@example.org\r\nSubject: burst {i}\r\nMessage-ID: <burst-{i}@example.org>\r\n\r\nnumber {i}\r\n"
        s.sendmail("a@example.org", ["alice@tidings.test"], msg)
        print("acked", i, flush=True)
except Exception as e:
    print("stopped", repr(e), flush=True)
"#;

/// `kill -9` while mails are being accepted; the client then retries what was not
/// acknowledged. Every mail is in history exactly once: nothing acknowledged is lost, and a
/// mail that was durable but not acknowledged is not doubled by the retry.
#[tokio::test]
async fn kill_9_during_smtp_then_retry_loses_and_doubles_nothing() {
    let port = free_port();
    let mut s = start_mail(port);
    let alice = s.user("alice").await;
    let total = 400;
    let child = Command::new("python3")
        .arg("-c")
        .arg(BURST)
        .env("PORT", port.to_string())
        .env("START", "0")
        .env("END", total.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let some go through, then kill the server under the client.
    eventually(20, || async {
        (sqlite_count(&s.db_path(), "SELECT count(*) FROM inbox") >= 20).then_some(())
    })
    .await;
    s.kill9();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let acked: Vec<usize> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("acked ")?.parse().ok())
        .collect();
    assert!(!acked.is_empty() && acked.len() < total, "{stdout}");

    // Restart and retry everything that was not acknowledged (as an MTA would).
    s.spawn();
    let missing: Vec<String> = (0..total)
        .filter(|i| !acked.contains(i))
        .map(|i| i.to_string())
        .collect();
    let retry = Command::new("python3")
        .arg("-c")
        .arg(BURST)
        .env("PORT", port.to_string())
        .env("START", "0")
        .env("END", total.to_string())
        .env("ONLY", missing.join(","))
        .output()
        .unwrap();
    let retried = String::from_utf8_lossy(&retry.stdout);
    assert_eq!(retried.matches("acked").count(), missing.len(), "{retried}");

    let all = eventually(30, || async {
        let mut all: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("{}/api/v1/notifications?limit=1000&cursor={c}", s.url),
                None => format!("{}/api/v1/notifications?limit=1000", s.url),
            };
            let (_, v) = get_json(&q, &alice).await;
            all.extend(v["notifications"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        (all.len() >= total).then_some(all)
    })
    .await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in &all {
        *counts
            .entry(n["title"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for i in 0..total {
        assert_eq!(counts.get(&format!("burst {i}")), Some(&1), "burst {i}");
    }
    assert_eq!(all.len(), total);
}
