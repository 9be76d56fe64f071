//! IMAP mailboxes as a source, end to end: the real binary against a real Dovecot on
//! 127.0.0.1, started per test by `scripts/dovecot` in a temporary directory (installed
//! with apt-get when missing; if it cannot be, these tests fail, they do not skip). Mail
//! is put into the folder the way a mail server would, with IMAP APPEND from Python's
//! imaplib on a connection of its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const USER: &str = "tester";
/// A space makes it a quoted string on the wire; the distinctive part is looked for in
/// every answer, the database files and the log.
const PASSWORD: &str = "zebra-Quokka-7731 pw";
const SECRET_PART: &str = "zebra-Quokka-7731";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dovecot")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Dovecot of our own; stopped when dropped.
struct Dovecot {
    dir: tempfile::TempDir,
    port: u16,
}

impl Dovecot {
    fn start() -> Dovecot {
        let d = Dovecot {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
        };
        d.start_again();
        d
    }

    /// A Dovecot that does not announce IDLE: sources poll it.
    fn start_without_idle() -> Dovecot {
        let d = Dovecot::start();
        d.stop();
        let conf = d.dir.path().join("dovecot.conf");
        let mut text = std::fs::read_to_string(&conf).expect("dovecot.conf");
        text.push_str("imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+\n");
        std::fs::write(&conf, text).expect("write dovecot.conf");
        let bin = ["/usr/sbin/dovecot", "/usr/bin/dovecot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dovecot binary");
        let mut child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot");
        // `scripts/dovecot stop` (and Drop) stop it through this file.
        std::fs::write(d.dir.path().join("dovecot.pid"), child.id().to_string()).unwrap();
        // Reaped once `scripts/dovecot stop` (run by Drop) ends it.
        std::thread::spawn(move || child.wait());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !greets(d.port) {
            assert!(
                Instant::now() < deadline,
                "dovecot without IDLE did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// Starts (again) on the same directory and port: the mail stays.
    fn start_again(&self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .arg(USER)
            .arg(PASSWORD)
            .output()
            .expect("run scripts/dovecot");
        assert!(
            out.status.success(),
            "Dovecot could not be started by scripts/dovecot (these tests need \
             dovecot-imapd from Debian):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Runs imaplib against this server: `ops` is Python using a logged-in `m`.
    fn python(&self, ops: &str, stdin: &[u8]) {
        let program = format!(
            "import imaplib, os, sys\n\
             m = imaplib.IMAP4('127.0.0.1', int(os.environ['PORT']))\n\
             m.login(os.environ['IMAP_USER'], os.environ['IMAP_PASS'])\n\
             def ok(r):\n    assert r[0] == 'OK', r\n    return r\n\
             {ops}\n\
             m.logout()\n"
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(program)
            .env("PORT", self.port.to_string())
            .env("IMAP_USER", USER)
            .env("IMAP_PASS", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the IMAP tests");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "imaplib failed: {}\n--- dovecot.log\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Delivers a mail into `folder` (IMAP APPEND).
    fn append(&self, folder: &str, subject: &str, body: &str, message_id: &str) {
        let raw = format!(
            "From: Alerts <alerts@example.org>\r\nTo: {USER}@example.org\r\n\
             Subject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
             Date: Mon, 6 May 2024 10:00:00 +0000\r\n\r\n{body}\r\n"
        );
        self.python(
            &format!("ok(m.append('{folder}', None, None, sys.stdin.buffer.read()))"),
            raw.as_bytes(),
        );
    }

    /// IMAP connections of the test user (doveadm who).
    fn connections(&self) -> usize {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .arg("who")
            .output()
            .expect("doveadm");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(USER)).then(|| f.next()?.parse::<usize>().ok())?
            })
            .sum()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether 127.0.0.1:port greets like an IMAP server.
fn greets(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"* OK"))
}

fn start_server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("TIDINGS_SOURCES_ALLOW_PRIVATE_NETWORKS", "true")];
    env.extend_from_slice(extra);
    Server::start_with(&env)
}

fn mailbox(d: &Dovecot, folder: &str, password: &str) -> Value {
    json!({"source": {
        "kind": "imap", "host": "127.0.0.1", "port": d.port, "tls": "plain",
        "username": USER, "password": password, "folder": folder,
    }})
}

async fn subscribe(s: &Server, token: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/api/v1/subscriptions", s.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn subscribe_ok(s: &Server, token: &str, body: &Value) -> Value {
    let (status, v) = subscribe(s, token, body).await;
    assert_eq!(status, 201, "subscribe: {v}\n{}", s.output());
    v
}

async fn sub_view(s: &Server, token: &str, id: &str) -> Value {
    let (status, v) = get_json(&format!("{}/api/v1/subscriptions/{id}", s.url), token).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the subscription's status satisfies `pred`.
async fn wait_status(
    s: &Server,
    token: &str,
    id: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = sub_view(s, token, id).await;
        if pred(&v["status"]) {
            return v["status"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "status not reached within {secs} s: {}",
            v["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Titles in the user's history, newest first.
async fn titles(s: &Server, token: &str) -> Vec<String> {
    history(&s.url, token)
        .await
        .iter()
        .map(|n| n["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until a notification titled `title` is in the history; returns it.
async fn arrives(s: &Server, token: &str, title: &str, secs: u64) -> Value {
    eventually(secs, || async {
        history(&s.url, token)
            .await
            .into_iter()
            .find(|n| n["title"] == title)
    })
    .await
}

fn count(s: &Server, sql: &str) -> i64 {
    sqlite_count(&s.db_path(), sql)
}

/// Every byte the store has on disk: the database, its WAL and shared memory.
fn db_bytes(s: &Server) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&s.dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("tidings.db") {
            all.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn subscribing_checks_the_login_and_the_password_stays_sealed() {
    let d = Dovecot::start();
    let s = start_server(&[]);
    let alice = s.user("alice").await;

    // Refused before anything is saved, each with a clear 400.
    let (st, v) = subscribe(&s, &alice, &mailbox(&d, "INBOX", "wrong password")).await;
    assert_eq!(
        (st, error_code(&v).as_str()),
        (400, "imap_login_failed"),
        "{v}"
    );
    let closed = free_port();
    let mut body = mailbox(&d, "INBOX", PASSWORD);
    body["source"]["port"] = json!(closed);
    let (st, v) = subscribe(&s, &alice, &body).await;
    assert_eq!(
        (st, error_code(&v).as_str()),
        (400, "imap_connect_failed"),
        "{v}"
    );
    let mut body = mailbox(&d, "INBOX", PASSWORD);
    body["source"]["tls"] = json!("implicit");
    let (st, v) = subscribe(&s, &alice, &body).await;
    assert_eq!(
        (st, error_code(&v).as_str()),
        (400, "imap_connect_failed"),
        "{v}"
    );
    let (st, v) = subscribe(&s, &alice, &mailbox(&d, "No Such Folder", PASSWORD)).await;
    assert_eq!(
        (st, error_code(&v).as_str()),
        (400, "imap_no_folder"),
        "{v}"
    );
    let mut body = mailbox(&d, "INBOX", PASSWORD);
    body["source"].as_object_mut().unwrap().remove("password");
    let (st, v) = subscribe(&s, &alice, &body).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("password"),
        "{v}"
    );
    let mut body = mailbox(&d, "INBOX", PASSWORD);
    body["source"]["tls"] = json!("ssl");
    let (st, v) = subscribe(&s, &alice, &body).await;
    assert_eq!((st, error_code(&v).as_str()), (400, "invalid_json"), "{v}");
    let (_, list) = get_json(&format!("{}/api/v1/subscriptions", s.url), &alice).await;
    assert_eq!(list["subscriptions"], json!([]), "{list}");
    assert_eq!(count(&s, "SELECT count(*) FROM subscriptions"), 0);
    assert_eq!(count(&s, "SELECT count(*) FROM source_secrets"), 0);

    // The right password: saved, without the password anywhere it can be read back.
    let sub = subscribe_ok(&s, &alice, &mailbox(&d, "inbox", PASSWORD)).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let source_id = sub["source_id"].as_str().unwrap().to_owned();
    assert!(source_id.starts_with("imap:"), "{sub}");
    assert_eq!(
        sub["source"],
        json!({"kind": "imap", "host": "127.0.0.1", "port": d.port, "tls": "plain",
               "username": USER, "folder": "INBOX"}),
        "{sub}"
    );
    assert!(!sub.to_string().contains(SECRET_PART), "{sub}");
    let (_, list) = get_json(&format!("{}/api/v1/subscriptions", s.url), &alice).await;
    assert!(!list.to_string().contains(SECRET_PART), "{list}");
    assert!(!list.to_string().contains("password"), "{list}");
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);

    // Connected with IDLE, and the mail arrives within seconds.
    let st = wait_status(&s, &alice, &id, 20, |st| {
        st["mode"] == "idle" && st["connected"] == true
    })
    .await;
    assert_eq!(st["status"], "ok", "{st}");
    assert_eq!(st["url"], format!("imap://127.0.0.1:{}/INBOX", d.port));
    assert!(!st.to_string().contains(SECRET_PART));
    // One session for the source (the login check's own has ended).
    eventually(10, || async { (d.connections() == 1).then_some(()) }).await;
    d.append(
        "INBOX",
        "Disk almost full",
        "/var is 95% full",
        "m1@example.org",
    );
    let n = arrives(&s, &alice, "Disk almost full", 20).await;
    assert_eq!(n["message"], "/var is 95% full", "{n}");
    assert_eq!(n["author"], "Alerts <alerts@example.org>", "{n}");
    assert_eq!(n["source"], source_id.as_str(), "{n}");
    assert_eq!(n["tags"], json!(["mail"]), "{n}");
    let st = wait_status(&s, &alice, &id, 10, |st| st["items_notified"] == 1).await;
    assert!(st["last_uid"].as_u64().unwrap() >= 1, "{st}");

    // Sealed at rest: one row in source_secrets, no plaintext in any database file.
    assert_eq!(count(&s, "SELECT count(*) FROM source_secrets"), 1);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM subscriptions WHERE source LIKE '%password%'"
        ),
        0
    );
    let bytes = db_bytes(&s);
    assert!(bytes.len() > 4096, "the database files were read");
    assert!(
        !contains(&bytes, SECRET_PART),
        "the password is in a database file"
    );
    assert!(
        !s.output().contains(SECRET_PART),
        "the password is in the log"
    );

    // Subscribing again is the same subscription (the filter changes), still one session.
    let again = {
        let mut b = mailbox(&d, "INBOX", PASSWORD);
        b["filter"] = json!({"exclude": ["spam"]});
        subscribe_ok(&s, &alice, &b).await
    };
    assert_eq!(again["id"], id.as_str());
    assert_eq!(count(&s, "SELECT count(*) FROM source_secrets"), 1);
    d.append("INBOX", "Second alert", "still full", "m2@example.org");
    arrives(&s, &alice, "Second alert", 20).await;
    d.append("INBOX", "Buy now", "cheap spam", "m3@example.org");
    d.append("INBOX", "Third alert", "now 99%", "m4@example.org");
    arrives(&s, &alice, "Third alert", 20).await;
    assert!(!titles(&s, &alice).await.contains(&"Buy now".to_owned()));
    eventually(10, || async { (d.connections() == 1).then_some(()) }).await;

    // Unsubscribing ends the session and deletes the sealed password and the reminder.
    let r = client()
        .delete(format!("{}/api/v1/subscriptions/{id}", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let avatar = format!("source:{source_id}");
    eventually(20, || async {
        (count(&s, "SELECT count(*) FROM source_secrets") == 0
            && count(
                &s,
                &format!("SELECT count(*) FROM reminders WHERE avatar_id = '{avatar}'"),
            ) == 0
            && d.connections() == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(
            &s,
            &format!("SELECT count(*) FROM avatar_state WHERE avatar_id = '{avatar}'")
        ),
        0
    );
}

#[tokio::test]
async fn a_restart_resumes_the_mailbox_without_duplicates() {
    let d = Dovecot::start();
    let mut s = start_server(&[]);
    let alice = s.user("alice").await;
    // Mail already there is not notified.
    d.append("INBOX", "Old news", "from before", "old@example.org");
    let sub = subscribe_ok(&s, &alice, &mailbox(&d, "INBOX", PASSWORD)).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    // Right after the subscription is answered: notified even if the session is not up yet.
    d.append("INBOX", "First", "one", "r1@example.org");
    arrives(&s, &alice, "First", 20).await;
    wait_status(&s, &alice, &id, 20, |st| st["connected"] == true).await;

    assert!(s.terminate().success(), "{}", s.output());
    d.append("INBOX", "While down", "two", "r2@example.org");
    s.spawn();
    arrives(&s, &alice, "While down", 30).await;
    wait_status(&s, &alice, &id, 20, |st| st["connected"] == true).await;
    d.append("INBOX", "After restart", "three", "r3@example.org");
    arrives(&s, &alice, "After restart", 20).await;

    let t = titles(&s, &alice).await;
    assert_eq!(t, ["After restart", "While down", "First"], "{t:?}");
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM notifications WHERE source_id LIKE 'imap:%'"
        ),
        3
    );
}

#[tokio::test]
async fn a_failing_mailbox_shows_its_error_and_recovers() {
    let d = Dovecot::start();
    let s = start_server(&[("TIDINGS_SOURCES_FAILING_AFTER", "1")]);
    let alice = s.user("alice").await;
    let sub = subscribe_ok(&s, &alice, &mailbox(&d, "INBOX", PASSWORD)).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    wait_status(&s, &alice, &id, 20, |st| st["connected"] == true).await;

    d.stop();
    let st = wait_status(&s, &alice, &id, 30, |st| st["status"] == "error").await;
    assert!(
        st["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{st}"
    );
    assert!(st["consecutive_errors"].as_u64().unwrap() >= 1, "{st}");
    assert!(
        st["next_poll"].as_i64().is_some(),
        "a retry is scheduled: {st}"
    );
    assert_eq!(st["connected"], false, "{st}");
    let name = format!("{USER}@127.0.0.1/INBOX");
    let failing = arrives(&s, &alice, &format!("Mailbox failing: {name}"), 20).await;
    assert_eq!(failing["priority"], 4, "{failing}");

    d.start_again();
    d.append("INBOX", "Back", "the server is back", "b1@example.org");
    arrives(&s, &alice, "Back", 90).await;
    let st = wait_status(&s, &alice, &id, 30, |st| st["status"] == "ok").await;
    assert_eq!(st["consecutive_errors"], 0, "{st}");
    assert_eq!(st["last_error"], Value::Null, "{st}");
    arrives(&s, &alice, &format!("Mailbox working again: {name}"), 20).await;
    let t = titles(&s, &alice).await;
    assert_eq!(
        t.iter()
            .filter(|t| t.starts_with("Mailbox failing"))
            .count(),
        1,
        "one notice however many retries fail: {t:?}"
    );
}

#[tokio::test]
async fn a_recreated_folder_is_rebaselined_without_its_old_mail() {
    let d = Dovecot::start();
    d.python("ok(m.create('Alerts'))", b"");
    let mut s = start_server(&[]);
    let alice = s.user("alice").await;
    let sub = subscribe_ok(&s, &alice, &mailbox(&d, "Alerts", PASSWORD)).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    d.append("Alerts", "Before", "first folder", "u1@example.org");
    arrives(&s, &alice, "Before", 20).await;
    let before = wait_status(&s, &alice, &id, 10, |st| st["last_uid"].as_u64() >= Some(1)).await;

    // The folder is deleted and made anew (a new UIDVALIDITY) while tidings is down,
    // with mail in it: that mail is not notified.
    assert!(s.terminate().success());
    d.python("ok(m.delete('Alerts')); ok(m.create('Alerts'))", b"");
    d.append(
        "Alerts",
        "In the new folder",
        "old by now",
        "u2@example.org",
    );
    s.spawn();
    let st = wait_status(&s, &alice, &id, 30, |st| {
        st["uid_validity"] != before["uid_validity"] && st["connected"] == true
    })
    .await;
    let warnings = st["warnings"].to_string();
    assert!(warnings.contains("UIDVALIDITY"), "{st}");
    d.append("Alerts", "After", "new mail", "u3@example.org");
    arrives(&s, &alice, "After", 20).await;
    let t = titles(&s, &alice).await;
    assert_eq!(t, ["After", "Before"], "{t:?}");
}

#[tokio::test]
async fn a_server_without_idle_is_polled() {
    let d = Dovecot::start_without_idle();
    let s = start_server(&[("TIDINGS_SOURCES_MIN_INTERVAL", "1s")]);
    let alice = s.user("alice").await;
    let sub = subscribe_ok(&s, &alice, &mailbox(&d, "INBOX", PASSWORD)).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let st = wait_status(&s, &alice, &id, 20, |st| st["mode"] == "poll").await;
    assert_eq!(st["status"], "ok", "{st}");
    d.append("INBOX", "Polled", "found by a poll", "p1@example.org");
    arrives(&s, &alice, "Polled", 30).await;
    let st = wait_status(&s, &alice, &id, 10, |st| st["next_poll"].is_i64()).await;
    assert_eq!(st["connected"], false, "{st}");
}
