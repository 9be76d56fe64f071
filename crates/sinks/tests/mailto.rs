//! Mail through a real SMTP server: tests/smtp_sink.py runs aiosmtpd on 127.0.0.1 and
//! writes what it accepts to a directory, which these tests parse with mail-parser. Needs
//! `python3` with aiosmtpd (`python3 -m pip install aiosmtpd`); without it they fail and
//! say so. The TLS fixture (tests/fixtures/smtp-relay-{cert,key}.pem) is a self-signed
//! P-256 certificate for localhost/127.0.0.1, made once with `openssl req -x509 -newkey ec
//! -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 -subj /CN=localhost`; the
//! relay config accepts it with `accept_invalid_certs` (tests only).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use serde_json::{Value, json};
use tidings_core::{Notification, NotificationId, Priority};
use tidings_sinks::mailto::{PlainMail, RelayConfig, RelayTls};
use tidings_sinks::{DestinationConfig, Message, Outcome, Sinks, SinksConfig};
use tidings_sources::fetch::FetchConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_aiosmtpd() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "\n\nThe mailto tests need python3 with aiosmtpd, a real SMTP server to send to.\n\
         Install it with:  python3 -m pip install aiosmtpd\n\n"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One aiosmtpd server; it exits when dropped (its stdin closes, and it is killed).
struct SmtpSink {
    _child: Child,
    _stdin: ChildStdin,
    dir: tempfile::TempDir,
    port: u16,
}

impl SmtpSink {
    async fn start(extra: &[&str]) -> SmtpSink {
        require_aiosmtpd();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = manifest_dir().join("tests/smtp_sink.py");
        let fixtures = manifest_dir().join("tests/fixtures");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .arg("--cert")
            .arg(fixtures.join("smtp-relay-cert.pem"))
            .arg("--key")
            .arg(fixtures.join("smtp-relay-key.pem"))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("smtp_sink.py did not start within 30 s");
        match ready {
            Ok(Some(line)) if line.starts_with("READY") => {}
            other => panic!("smtp_sink.py did not start: {other:?} (see its stderr above)"),
        }
        SmtpSink {
            _child: child,
            _stdin: stdin,
            dir,
            port,
        }
    }

    /// Waits for message number `n` (1-based): its envelope and its parsed form's raw bytes.
    async fn message(&self, n: usize) -> (Value, Vec<u8>) {
        let base = self.dir.path().join(n.to_string());
        let json_path = base.with_extension("json");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !json_path.exists() {
            assert!(Instant::now() < deadline, "message {n} never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let envelope = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        let raw = std::fs::read(base.with_extension("eml")).unwrap();
        (envelope, raw)
    }

    fn count(&self) -> usize {
        count_eml(self.dir.path())
    }
}

fn count_eml(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count()
}

fn relay(port: u16, tls: RelayTls, auth: Option<(&str, &str)>, timeout: Duration) -> RelayConfig {
    RelayConfig {
        host: "127.0.0.1".into(),
        port,
        tls,
        username: auth.map(|(u, _)| u.to_owned()),
        password: auth.map(|(_, p)| p.to_owned()),
        from: "tidings <tidings@example.org>".into(),
        timeout,
        accept_invalid_certs: true,
    }
}

fn sinks(relay: RelayConfig) -> Sinks {
    Sinks::new(SinksConfig {
        fetch: FetchConfig::default(),
        relay: Some(relay),
    })
    .unwrap()
}

fn message() -> Message {
    Message {
        notification: Notification {
            id: NotificationId("01hf3abcdefghjkmnpqr".into()),
            time: 1_700_000_000,
            event: "message".into(),
            source: "topic:backups".into(),
            topic: Some("backups".into()),
            title: Some("Nächtliches Backup <fertig>".into()),
            message: "Backup finished\n<script>alert(1)</script> & done".into(),
            priority: Priority::High,
            tags: vec!["backup".into()],
            click: Some("https://grafana.example/d/1?a=1&b=2".into()),
            actions: vec![],
            author: Some("alice".into()),
        },
        source_name: "backups".into(),
        web_url: Some("https://tidings.example/n/01hf3abcdefghjkmnpqr".into()),
        reply_to: Some("reply+abc123@tidings.example.org".into()),
        list_id: Some("<topic-backups.tidings.example>".into()),
    }
}

fn mailto(to: &str) -> DestinationConfig {
    serde_json::from_value::<DestinationConfig>(json!({"kind": "mailto", "to": to}))
        .unwrap()
        .prepare()
        .unwrap()
}

#[tokio::test]
async fn notification_mail_has_the_headers_and_both_parts() {
    let server = SmtpSink::start(&[]).await;
    let sinks = sinks(relay(
        server.port,
        RelayTls::None,
        None,
        Duration::from_secs(10),
    ));
    let cfg = mailto("alice@example.net");
    sinks.check(&cfg).await.unwrap();
    assert_eq!(
        sinks.send(&cfg, &message()).await,
        Outcome::Delivered { status: Some(250) }
    );

    let (envelope, raw) = server.message(1).await;
    assert_eq!(envelope["mail_from"], "tidings@example.org");
    assert_eq!(envelope["rcpt_tos"], json!(["alice@example.net"]));
    let mail = MessageParser::default()
        .parse(&raw)
        .expect("a parseable mail");
    let from = mail.from().unwrap().first().unwrap();
    assert_eq!(
        (from.name(), from.address()),
        (Some("tidings"), Some("tidings@example.org"))
    );
    assert_eq!(
        mail.to().unwrap().first().unwrap().address(),
        Some("alice@example.net")
    );
    assert_eq!(mail.subject(), Some("Nächtliches Backup <fertig>"));
    let message_id = mail.message_id().unwrap().to_owned();
    assert!(
        message_id.starts_with("01hf3abcdefghjkmnpqr.") && message_id.ends_with("@example.org"),
        "{message_id}"
    );
    assert!(mail.date().is_some());
    assert_eq!(
        mail.header_raw("List-Id").map(str::trim),
        Some("<topic-backups.tidings.example>")
    );
    assert_eq!(
        mail.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    assert_eq!(
        mail.header_raw("X-Auto-Response-Suppress").map(str::trim),
        Some("All")
    );
    assert_eq!(
        mail.reply_to().unwrap().first().unwrap().address(),
        Some("reply+abc123@tidings.example.org")
    );

    assert_eq!((mail.text_body_count(), mail.html_body_count()), (1, 1));
    let text = mail.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(
        text.starts_with(
            "Nächtliches Backup <fertig>\n\nBackup finished\n<script>alert(1)</script> & done\n"
        ),
        "{text}"
    );
    assert!(text.contains("Link: https://grafana.example/d/1?a=1&b=2\n"));
    assert!(text.contains("View in tidings: https://tidings.example/n/01hf3abcdefghjkmnpqr\n"));
    assert!(text.contains("backups · priority high · #backup"));
    let html = mail.body_html(0).unwrap().replace("\r\n", "\n");
    assert!(
        html.contains("<h2>Nächtliches Backup &lt;fertig&gt;</h2>"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; done"));
    assert!(!html.contains("<script>"));
    assert!(html.contains(
        "<a href=\"https://grafana.example/d/1?a=1&amp;b=2\">https://grafana.example/d/1?a=1&amp;b=2</a>"
    ));
    assert!(html.contains(
        "<a href=\"https://tidings.example/n/01hf3abcdefghjkmnpqr\">View in tidings</a>"
    ));

    // A retry of the same notification carries the same Message-ID; another recipient or
    // notification does not.
    sinks.send(&cfg, &message()).await;
    let (_, raw) = server.message(2).await;
    let again = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(again.message_id(), Some(message_id.as_str()));
    sinks.send(&mailto("bob@example.net"), &message()).await;
    let (_, raw) = server.message(3).await;
    let other = MessageParser::default().parse(&raw).unwrap();
    assert_ne!(other.message_id(), Some(message_id.as_str()));
}

#[tokio::test]
async fn minimal_notification_without_optional_headers() {
    let server = SmtpSink::start(&[]).await;
    let sinks = sinks(relay(
        server.port,
        RelayTls::None,
        None,
        Duration::from_secs(10),
    ));
    let mut msg = message();
    msg.notification.title = None;
    msg.notification.message = "first line\nsecond line".into();
    msg.notification.click = None;
    msg.web_url = None;
    msg.reply_to = None;
    msg.list_id = None;
    assert!(matches!(
        sinks.send(&mailto("alice@example.net"), &msg).await,
        Outcome::Delivered { .. }
    ));
    let (_, raw) = server.message(1).await;
    let mail = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(mail.subject(), Some("first line"));
    assert!(mail.reply_to().is_none());
    assert!(mail.header_raw("List-Id").is_none());
    assert!(!mail.body_html(0).unwrap().contains("<a "));
}

#[tokio::test]
async fn starttls_with_auth() {
    let server = SmtpSink::start(&["--tls", "starttls", "--auth"]).await;
    let good = sinks(relay(
        server.port,
        RelayTls::StartTls,
        Some(("test", "secret")),
        Duration::from_secs(10),
    ));
    assert!(matches!(
        good.send(&mailto("alice@example.net"), &message()).await,
        Outcome::Delivered { status: Some(250) }
    ));
    let (envelope, _) = server.message(1).await;
    assert_eq!(envelope["tls"], true);
    assert_eq!(envelope["auth_login"], "test");

    // A wrong password is the relay's 535: permanent.
    let bad = sinks(relay(
        server.port,
        RelayTls::StartTls,
        Some(("test", "wrong")),
        Duration::from_secs(10),
    ));
    match bad.send(&mailto("alice@example.net"), &message()).await {
        Outcome::Failed {
            status: Some(535),
            error,
        } => assert!(error.starts_with("SMTP relay:"), "{error}"),
        other => panic!("{other:?}"),
    }
    // Without TLS the server refuses MAIL (530, permanent); nothing was accepted.
    let plain = sinks(relay(
        server.port,
        RelayTls::None,
        None,
        Duration::from_secs(10),
    ));
    assert!(matches!(
        plain.send(&mailto("alice@example.net"), &message()).await,
        Outcome::Failed {
            status: Some(530),
            ..
        }
    ));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn implicit_tls_with_auth_sends_plain_mail() {
    let server = SmtpSink::start(&["--tls", "implicit", "--auth"]).await;
    let sinks = sinks(relay(
        server.port,
        RelayTls::Implicit,
        Some(("test", "secret")),
        Duration::from_secs(10),
    ));
    let mail = PlainMail {
        from: "Alice via tidings <alice@tidings.example.org>".into(),
        to: "Bob <bob@example.net>".into(),
        subject: "Re: your report\r\nBcc: evil@example.org".into(),
        text: "Thanks, looks good.\n\n> quoted".into(),
        in_reply_to: Some("<orig-1@mail.example.net>".into()),
        references: vec![
            "<root@mail.example.net>".into(),
            "<orig-1@mail.example.net>".into(),
            "not a message id".into(),
        ],
        reply_to: Some("reply+xyz@tidings.example.org".into()),
    };
    assert!(matches!(
        sinks.send_mail(&mail).await,
        Outcome::Delivered { status: Some(250) }
    ));
    let (envelope, raw) = server.message(1).await;
    assert_eq!(envelope["tls"], true);
    assert_eq!(envelope["mail_from"], "tidings@example.org");
    assert_eq!(envelope["rcpt_tos"], json!(["bob@example.net"]));
    let parsed = MessageParser::default().parse(&raw).unwrap();
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(
        (from.name(), from.address()),
        (Some("Alice via tidings"), Some("alice@tidings.example.org"))
    );
    assert_eq!(
        parsed.sender().unwrap().first().unwrap().address(),
        Some("tidings@example.org")
    );
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("bob@example.net")
    );
    assert_eq!(
        parsed.subject(),
        Some("Re: your report Bcc: evil@example.org")
    );
    assert!(parsed.header_raw("Bcc").is_none());
    assert_eq!(
        parsed.in_reply_to().as_text(),
        Some("orig-1@mail.example.net")
    );
    let references: Vec<String> = parsed
        .references()
        .as_text_list()
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        references,
        ["root@mail.example.net", "orig-1@mail.example.net"]
    );
    assert_eq!(
        parsed.reply_to().unwrap().first().unwrap().address(),
        Some("reply+xyz@tidings.example.org")
    );
    assert!(parsed.message_id().unwrap().ends_with("@example.org"));
    assert!(parsed.header_raw("Auto-Submitted").is_none());
    let content_type = parsed.header_raw("Content-Type").unwrap();
    assert!(
        content_type.trim().starts_with("text/plain"),
        "{content_type}"
    );
    assert_eq!(
        parsed
            .body_text(0)
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "Thanks, looks good.\n\n> quoted"
    );
}

#[tokio::test]
async fn smtp_4xx_is_retried_and_5xx_fails() {
    let busy = SmtpSink::start(&["--fail-data", "451 4.3.0 try later"]).await;
    let sinks_busy = sinks(relay(
        busy.port,
        RelayTls::None,
        None,
        Duration::from_secs(10),
    ));
    match sinks_busy
        .send(&mailto("alice@example.net"), &message())
        .await
    {
        Outcome::Retry {
            status: Some(451),
            error,
            ..
        } => assert!(error.contains("try later"), "{error}"),
        other => panic!("{other:?}"),
    }

    let refusing = SmtpSink::start(&["--fail-rcpt", "550 5.1.1 no such user"]).await;
    let sinks_refusing = sinks(relay(
        refusing.port,
        RelayTls::None,
        None,
        Duration::from_secs(10),
    ));
    match sinks_refusing
        .send(&mailto("nobody@example.net"), &message())
        .await
    {
        Outcome::Failed {
            status: Some(550),
            error,
        } => assert!(error.contains("no such user"), "{error}"),
        other => panic!("{other:?}"),
    }
    let plain = PlainMail {
        from: "tidings@example.org".into(),
        to: "nobody@example.net".into(),
        subject: "x".into(),
        text: "y".into(),
        in_reply_to: None,
        references: vec![],
        reply_to: None,
    };
    assert!(matches!(
        sinks_refusing.send_mail(&plain).await,
        Outcome::Failed {
            status: Some(550),
            ..
        }
    ));
    assert_eq!(busy.count() + refusing.count(), 0);
}

#[tokio::test]
async fn relay_down_or_silent_is_retried() {
    let down = sinks(relay(
        free_port(),
        RelayTls::None,
        None,
        Duration::from_secs(5),
    ));
    match down.send(&mailto("alice@example.net"), &message()).await {
        Outcome::Retry {
            status: None,
            error,
            ..
        } => {
            assert!(error.starts_with("SMTP relay:"), "{error}")
        }
        other => panic!("{other:?}"),
    }

    // Accepts the connection, never greets.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let sinks = sinks(relay(port, RelayTls::None, None, Duration::from_secs(1)));
    let started = Instant::now();
    let outcome = sinks.send(&mailto("alice@example.net"), &message()).await;
    assert!(
        matches!(outcome, Outcome::Retry { status: None, .. }),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_plain_mail_fails_without_sending() {
    let server = SmtpSink::start(&[]).await;
    let sinks = sinks(relay(
        server.port,
        RelayTls::None,
        None,
        Duration::from_secs(10),
    ));
    let mail = PlainMail {
        from: "not an address".into(),
        to: "bob@example.net".into(),
        subject: "x".into(),
        text: "y".into(),
        in_reply_to: None,
        references: vec![],
        reply_to: None,
    };
    match sinks.send_mail(&mail).await {
        Outcome::Failed {
            status: None,
            error,
        } => assert!(error.starts_with("from"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.count(), 0);
}
