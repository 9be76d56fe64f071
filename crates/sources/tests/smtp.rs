//! The SMTP listener on 127.0.0.1 against real clients: Python's smtplib, swaks, and raw
//! sockets for what a polite client never does (bare LF smuggling, floods, silence).
//!
//! The TLS fixture (tests/fixtures/smtp-test-{cert,key}.pem) is a self-signed P-256
//! certificate for localhost and 127.0.0.1, made once with:
//! `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500
//!  -keyout smtp-test-key.pem -out smtp-test-cert.pem -subj /CN=localhost
//!  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"`

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_sources::mail::parse_mail;
use tidings_sources::smtp::{
    self, AcceptedMail, BoxFuture, MailSink, Recipient, Refusal, SmtpConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The directory and ingest queue, in memory. `faulty` is a user whose mail cannot be
/// stored, `hung` one whose store never answers, `flaky` one the directory cannot look up
/// right now.
struct MemorySink {
    users: HashSet<&'static str>,
    mails: Mutex<Vec<AcceptedMail>>,
}

impl MemorySink {
    fn new() -> MemorySink {
        MemorySink {
            users: ["alice", "bob", "faulty", "hung", "private"]
                .into_iter()
                .collect(),
            mails: Mutex::new(Vec::new()),
        }
    }

    fn mails(&self) -> Vec<AcceptedMail> {
        self.mails.lock().expect("sink lock").clone()
    }
}

impl MailSink for MemorySink {
    fn check_recipient<'a>(
        &'a self,
        local: &'a str,
        _label: Option<&'a str>,
        mail_from: &'a str,
    ) -> BoxFuture<'a, Result<(), Refusal>> {
        let result = if local == "private" && mail_from != "friend@example.org" {
            Err(Refusal::NotAllowed("Only my friend may write here".into()))
        } else if local == "flaky" {
            Err(Refusal::Temporary(
                "Directory unavailable, try later".into(),
            ))
        } else if self.users.contains(local) {
            Ok(())
        } else {
            Err(Refusal::UnknownUser)
        };
        Box::pin(async move { result })
    }

    fn deliver(&self, msg: AcceptedMail) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if msg.recipients.iter().any(|r| r.local == "faulty") {
                return Err("ingest queue unavailable".to_owned());
            }
            if msg.recipients.iter().any(|r| r.local == "hung") {
                std::future::pending::<()>().await;
            }
            self.mails.lock().expect("sink lock").push(msg);
            Ok(())
        })
    }
}

struct Server {
    addr: SocketAddr,
    sink: Arc<MemorySink>,
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

impl Server {
    async fn stop(self) -> io::Result<()> {
        let _ = self.stop.send(true);
        timeout(Duration::from_secs(40), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic")
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn config() -> SmtpConfig {
    SmtpConfig {
        hostname: "mx.tidings.test".to_owned(),
        mail_domain: "tidings.test".to_owned(),
        max_message_bytes: 64 * 1024,
        idle_timeout: Duration::from_secs(20),
        ..SmtpConfig::default()
    }
}

fn tls_config() -> SmtpConfig {
    SmtpConfig {
        tls: Some((fixture("smtp-test-cert.pem"), fixture("smtp-test-key.pem"))),
        ..config()
    }
}

async fn start(cfg: SmtpConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let sink = Arc::new(MemorySink::new());
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(smtp::run(cfg, sink.clone(), listener, shutdown));
    Server {
        addr,
        sink,
        stop,
        task,
    }
}

/// A client that writes exactly what it is told.
struct Raw {
    stream: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> (Raw, String) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut raw = Raw {
            stream: BufReader::new(stream),
        };
        let greeting = raw.reply().await;
        (raw, greeting)
    }

    /// One whole reply (all lines of a multi-line one).
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = timeout(Duration::from_secs(10), self.stream.read_line(&mut line))
                .await
                .expect("a reply in time")
                .expect("read");
            assert!(n > 0, "connection closed; got so far: {all:?}");
            assert!(
                line.ends_with("\r\n"),
                "reply line ends with CRLF: {line:?}"
            );
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// The server closed the connection (after whatever it said last).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        ) && rest.is_empty()
    }
}

/// "250 2.1.0" of "250 2.1.0 Sender OK\r\n".
fn code(reply: &str) -> String {
    reply.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

async fn python(script: &str, args: &[String]) -> serde_json::Value {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn swaks(args: &[&str]) -> Output {
    match tokio::process::Command::new("swaks")
        .args(args)
        .output()
        .await
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("swaks not installed: run apt-get install swaks")
        }
        Err(e) => panic!("swaks failed to start: {e}"),
    }
}

fn transcript(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const SMTPLIB_SESSION: &str = r#"
import json, smtplib, sys
from email.message import EmailMessage

port = int(sys.argv[1])
out = {}
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10)
s.ehlo()
out["features"] = sorted(s.esmtp_features.keys())
out["size"] = s.esmtp_features.get("size")

msg = EmailMessage()
msg["Subject"] = "Backup done"
msg["From"] = "Cron Daemon <cron@host.example>"
msg["To"] = "alice@tidings.test"
msg["Message-ID"] = "<py-1@host.example>"
msg.set_content("All good.\n.\n..two dots\n")
out["refused"] = s.send_message(msg, from_addr="cron@host.example",
                                to_addrs=["alice@tidings.test", "bob+Alerts@Tidings.Test"])

def refused(to):
    try:
        s.sendmail("x@example.org", [to], "Subject: x\r\n\r\nx\r\n")
        return None
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients[to]
        return [code, text.decode()]

out["unknown"] = refused("nobody@tidings.test")
out["relay"] = refused("someone@elsewhere.example")
out["flaky"] = refused("flaky@tidings.test")

big = "Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 2000
try:
    # smtplib announces SIZE=, so this is refused at MAIL.
    s.sendmail("x@example.org", ["alice@tidings.test"], big)
    out["oversize_mail"] = None
except smtplib.SMTPSenderRefused as e:
    out["oversize_mail"] = [e.smtp_code, e.smtp_error.decode()]

# Without SIZE=, the limit is found while reading DATA.
s.mail("x@example.org")
s.rcpt("alice@tidings.test")
try:
    code, text = s.data(big)
    out["oversize_data"] = [code, text.decode()]
except smtplib.SMTPDataError as e:
    out["oversize_data"] = [e.smtp_code, e.smtp_error.decode()]

broken = (b"Subject: broken\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
          b"--zz\r\nContent-Type: text/plain\r\n\r\nStill readable.\r\n")
out["malformed"] = s.sendmail("x@example.org", ["alice+broken@tidings.test"], broken)

try:
    s.sendmail("x@example.org", ["faulty@tidings.test"], "Subject: f\r\n\r\nf\r\n")
    out["faulty"] = None
except smtplib.SMTPDataError as e:
    out["faulty"] = [e.smtp_code, e.smtp_error.decode()]

out["noop"] = list(s.noop())
out["noop"][1] = out["noop"][1].decode()
out["quit"] = s.quit()[0]
print(json.dumps(out))
"#;

#[tokio::test]
async fn smtplib_delivers_refuses_and_survives_malformed_mail() {
    let server = start(config()).await;
    let out = python(SMTPLIB_SESSION, &[server.addr.port().to_string()]).await;

    let features: Vec<&str> = out["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for f in ["pipelining", "size", "8bitmime", "enhancedstatuscodes"] {
        assert!(features.contains(&f), "{f} advertised: {features:?}");
    }
    assert!(
        !features.contains(&"starttls"),
        "no STARTTLS without a cert"
    );
    assert_eq!(out["size"], "65536");
    assert_eq!(out["refused"], serde_json::json!({}));
    assert_eq!(out["unknown"][0], 550);
    assert!(
        out["unknown"][1]
            .as_str()
            .is_some_and(|t| t.starts_with("5.1.1"))
    );
    assert_eq!(out["relay"][0], 550);
    assert!(
        out["relay"][1]
            .as_str()
            .is_some_and(|t| t.starts_with("5.7.1"))
    );
    assert_eq!(out["flaky"][0], 451);
    assert!(
        out["flaky"][1]
            .as_str()
            .is_some_and(|t| t.starts_with("4.3.0"))
    );
    assert_eq!(out["oversize_mail"][0], 552);
    assert!(
        out["oversize_mail"][1]
            .as_str()
            .is_some_and(|t| t.starts_with("5.3.4"))
    );
    assert_eq!(out["oversize_data"][0], 552);
    assert_eq!(out["malformed"], serde_json::json!({}));
    assert_eq!(out["faulty"][0], 451);
    assert!(
        out["faulty"][1]
            .as_str()
            .is_some_and(|t| t.starts_with("4.3.0"))
    );
    assert_eq!(out["noop"][0], 250);
    assert_eq!(out["quit"], 221);

    let mails = server.sink.mails();
    assert_eq!(mails.len(), 2, "the two accepted messages, nothing else");
    let first = &mails[0];
    assert_eq!(first.mail_from, "cron@host.example");
    assert_eq!(first.helo, "client.test");
    assert_eq!(
        first.recipients,
        [
            Recipient {
                local: "alice".into(),
                label: None
            },
            Recipient {
                local: "bob".into(),
                label: Some("alerts".into())
            }
        ]
    );
    assert!(!first.raw.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    let parsed = parse_mail(&first.raw);
    assert_eq!(parsed.subject.as_deref(), Some("Backup done"));
    assert_eq!(
        parsed.from.as_deref(),
        Some("Cron Daemon <cron@host.example>")
    );
    assert_eq!(parsed.message_id.as_deref(), Some("py-1@host.example"));
    // Dot-stuffed by smtplib, unstuffed by us: the text comes through as written.
    assert_eq!(parsed.text, "All good.\n.\n..two dots");

    let broken = &mails[1];
    assert_eq!(broken.recipients[0].label.as_deref(), Some("broken"));
    let parsed = parse_mail(&broken.raw);
    assert_eq!(parsed.text, "Still readable.");
    assert!(!parsed.warnings.is_empty());

    server.stop().await.expect("clean stop");
}

const SMTPLIB_STARTTLS: &str = r#"
import json, smtplib, ssl, sys

port, ca = int(sys.argv[1]), sys.argv[2]
out = {}
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10)
s.ehlo()
out["before"] = s.has_extn("starttls")
ctx = ssl.create_default_context(cafile=ca)
out["starttls"] = s.starttls(context=ctx)[0]
out["cipher"] = s.sock.cipher()[0]
s.ehlo()
out["after"] = s.has_extn("starttls")
out["refused"] = s.sendmail("tls@example.org", ["bob@tidings.test"], "Subject: over tls\r\n\r\nsecret\r\n")
s.quit()
print(json.dumps(out))
"#;

#[tokio::test]
async fn smtplib_starttls_with_a_verified_certificate() {
    let server = start(tls_config()).await;
    let ca = fixture("smtp-test-cert.pem").display().to_string();
    let out = python(SMTPLIB_STARTTLS, &[server.addr.port().to_string(), ca]).await;
    assert_eq!(out["before"], true);
    assert_eq!(out["starttls"], 220);
    assert_eq!(out["after"], false, "STARTTLS not offered once TLS is on");
    assert_eq!(out["refused"], serde_json::json!({}));
    let mails = server.sink.mails();
    assert_eq!(mails.len(), 1);
    assert!(String::from_utf8_lossy(&mails[0].raw).contains("secret"));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn swaks_pipelines_and_sees_refusals() {
    let server = start(config()).await;
    let port = server.addr.port().to_string();
    let base = [
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--helo",
        "swaks.test",
        "--from",
        "sender@example.org",
    ];

    let ok = swaks(
        &[
            &base[..],
            &[
                "--to",
                "alice@tidings.test,bob+GitHub@tidings.test",
                "--pipeline",
                "--header",
                "Subject: via swaks",
                "--body",
                "hello from swaks",
            ],
        ]
        .concat(),
    )
    .await;
    let t = transcript(&ok);
    assert!(ok.status.success(), "{t}");
    assert!(t.contains("PIPELINING"), "{t}");
    assert!(t.contains("250 2.0.0"), "{t}");

    let unknown = swaks(&[&base[..], &["--to", "nobody@tidings.test"]].concat()).await;
    let t = transcript(&unknown);
    assert!(!unknown.status.success(), "{t}");
    assert!(t.contains("550 5.1.1"), "{t}");

    let relay = swaks(&[&base[..], &["--to", "victim@elsewhere.example"]].concat()).await;
    let t = transcript(&relay);
    assert!(!relay.status.success(), "{t}");
    assert!(t.contains("550 5.7.1"), "{t}");

    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.eml");
    let mut data = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..2000 {
        data.extend_from_slice(&[b'y'; 70]);
        data.extend_from_slice(b"\r\n");
    }
    std::fs::write(&big, &data).expect("write big mail");
    let big = big.display().to_string();
    let oversize = swaks(
        &[
            &base[..],
            &["--to", "alice@tidings.test", "--data", big.as_str()],
        ]
        .concat(),
    )
    .await;
    let t = transcript(&oversize);
    assert!(!oversize.status.success(), "{t}");
    assert!(t.contains("552 5.3.4"), "{t}");

    let mails = server.sink.mails();
    assert_eq!(mails.len(), 1, "only the first message was accepted");
    assert_eq!(mails[0].helo, "swaks.test");
    assert_eq!(mails[0].recipients.len(), 2);
    assert_eq!(mails[0].recipients[1].label.as_deref(), Some("github"));
    let parsed = parse_mail(&mails[0].raw);
    assert_eq!(parsed.subject.as_deref(), Some("via swaks"));
    assert_eq!(parsed.text, "hello from swaks");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn swaks_starttls() {
    let server = start(tls_config()).await;
    let port = server.addr.port().to_string();
    let ca = fixture("smtp-test-cert.pem").display().to_string();
    let out = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "s@example.org",
        "--to",
        "alice@tidings.test",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        &ca,
        "--body",
        "over tls",
    ])
    .await;
    let t = transcript(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("220 2.0.0"), "{t}");
    assert_eq!(server.sink.mails().len(), 1);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn raw_pipelining_is_answered_in_order() {
    let server = start(config()).await;
    let (mut c, greeting) = Raw::connect(server.addr).await;
    assert!(greeting.starts_with("220 mx.tidings.test "), "{greeting}");
    // Everything up to DATA in one write, as RFC 2920 clients do.
    c.send(
        b"EHLO raw.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@tidings.test>\r\n\
          RCPT TO:<nobody@tidings.test>\r\nRCPT TO:<bob+x@tidings.test>\r\nDATA\r\n",
    )
    .await;
    let ehlo = c.reply().await;
    assert!(ehlo.starts_with("250-mx.tidings.test"), "{ehlo}");
    assert!(ehlo.contains("250-PIPELINING\r\n"), "{ehlo}");
    assert_eq!(code(&c.reply().await), "250 2.1.0");
    assert_eq!(code(&c.reply().await), "250 2.1.5");
    assert_eq!(code(&c.reply().await), "550 5.1.1");
    assert_eq!(code(&c.reply().await), "250 2.1.5");
    assert!(c.reply().await.starts_with("354 "));
    // The message, its end, and the next commands, in one write too.
    c.send(b"Subject: p\r\n\r\npipelined\r\n.\r\nNOOP\r\nQUIT\r\n")
        .await;
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    assert_eq!(code(&c.reply().await), "221 2.0.0");
    assert!(c.closed().await);
    let mails = server.sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].raw, b"Subject: p\r\n\r\npipelined\r\n");
    assert_eq!(mails[0].recipients.len(), 2);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_recipient_can_refuse_a_sender_with_5_7_1() {
    let server = start(config()).await;
    let (mut c, _) = Raw::connect(server.addr).await;
    c.send(b"EHLO raw.test\r\nMAIL FROM:<stranger@example.org>\r\nRCPT TO:<private@tidings.test>\r\nRSET\r\nMAIL FROM:<friend@example.org>\r\nRCPT TO:<private@tidings.test>\r\nQUIT\r\n")
        .await;
    assert!(c.reply().await.starts_with("250-"));
    assert_eq!(code(&c.reply().await), "250 2.1.0");
    let refused = c.reply().await;
    assert_eq!(code(&refused), "550 5.7.1");
    assert!(refused.contains("Only my friend"), "{refused}");
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    assert_eq!(code(&c.reply().await), "250 2.1.0");
    assert_eq!(code(&c.reply().await), "250 2.1.5");
    assert_eq!(code(&c.reply().await), "221 2.0.0");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bare_lf_smuggling_is_refused() {
    let server = start(config()).await;
    let (mut c, _) = Raw::connect(server.addr).await;
    c.cmd("EHLO raw.test").await;
    // A bare LF ends no command.
    c.send(b"MAIL FROM:<a@example.org>\n").await;
    assert_eq!(code(&c.reply().await), "500 5.5.2");
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.org>").await), "250 2.1.0");
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@tidings.test>").await),
        "250 2.1.5"
    );
    assert!(c.cmd("DATA").await.starts_with("354 "));
    // The 2023 smuggling payload: a fake end of data with bare LFs, then a second,
    // forged message that a lenient server would take as new commands.
    c.send(
        b"From: alice@tidings.test\r\nSubject: legit\r\n\r\nhello\n.\n\
          MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@tidings.test>\r\nDATA\r\n\
          From: ceo@bank.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n",
    )
    .await;
    let reply = c.reply().await;
    assert_eq!(code(&reply), "550 5.6.11", "{reply}");
    // Exactly one reply: the next one answers our NOOP, nothing smuggled ran.
    assert_eq!(code(&c.cmd("NOOP").await), "250 2.0.0");
    assert!(server.sink.mails().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn rset_mid_transaction_and_sequence_errors() {
    let server = start(config()).await;
    let (mut c, _) = Raw::connect(server.addr).await;
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.org>").await), "503 5.5.1");
    c.cmd("HELO raw.test").await;
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.org>").await), "250 2.1.0");
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@tidings.test>").await),
        "250 2.1.5"
    );
    assert_eq!(code(&c.cmd("RSET").await), "250 2.0.0");
    assert_eq!(code(&c.cmd("DATA").await), "503 5.5.1");
    assert_eq!(code(&c.cmd("VRFY alice").await), "252 2.5.0");
    assert_eq!(code(&c.cmd("WHAT is this").await), "500 5.5.2");
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.org>").await), "250 2.1.0");
    assert_eq!(
        code(&c.cmd("RCPT TO:<bob@tidings.test>").await),
        "250 2.1.5"
    );
    assert!(c.cmd("DATA").await.starts_with("354 "));
    assert_eq!(
        code(&c.cmd("Subject: after rset\r\n\r\nx\r\n.").await),
        "250 2.0.0"
    );
    let mails = server.sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].recipients[0].local, "bob", "alice was reset away");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_failed_or_hung_store_gets_451_and_nothing_is_recorded() {
    let server = start(SmtpConfig {
        idle_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let (mut c, _) = Raw::connect(server.addr).await;
    c.send(
        b"EHLO raw.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<faulty@tidings.test>\r\nDATA\r\n",
    )
    .await;
    for _ in 0..3 {
        c.reply().await;
    }
    assert!(c.reply().await.starts_with("354 "));
    let reply = c.cmd("Subject: lost?\r\n\r\nx\r\n.").await;
    assert_eq!(code(&reply), "451 4.3.0", "{reply}");
    assert!(
        !reply.contains("ingest queue"),
        "internals are not shown: {reply}"
    );

    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<hung@tidings.test>\r\nDATA\r\n")
        .await;
    for _ in 0..2 {
        c.reply().await;
    }
    assert!(c.reply().await.starts_with("354 "));
    assert_eq!(
        code(&c.cmd("Subject: stuck\r\n\r\nx\r\n.").await),
        "451 4.3.0"
    );
    assert_eq!(code(&c.cmd("NOOP").await), "250 2.0.0");
    assert!(server.sink.mails().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn command_rate_limit_closes_the_connection() {
    let server = start(SmtpConfig {
        max_commands_per_minute: 10,
        ..config()
    })
    .await;
    let (mut c, _) = Raw::connect(server.addr).await;
    c.send(&b"NOOP\r\n".repeat(15)).await;
    for _ in 0..10 {
        assert_eq!(code(&c.reply().await), "250 2.0.0");
    }
    assert_eq!(code(&c.reply().await), "421 4.7.0");
    assert!(c.closed().await);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn idle_clients_are_dropped() {
    let server = start(SmtpConfig {
        idle_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let (mut c, _) = Raw::connect(server.addr).await;
    assert_eq!(code(&c.reply().await), "421 4.4.2");
    assert!(c.closed().await);

    // Silence in the middle of a message too.
    let (mut c, _) = Raw::connect(server.addr).await;
    c.cmd("EHLO raw.test").await;
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<alice@tidings.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: half\r\n").await;
    assert_eq!(code(&c.reply().await), "421 4.4.2");
    assert!(c.closed().await);
    assert!(server.sink.mails().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn connections_over_the_limit_get_421() {
    let server = start(SmtpConfig {
        max_connections: 2,
        ..config()
    })
    .await;
    let (a, ga) = Raw::connect(server.addr).await;
    let (_b, gb) = Raw::connect(server.addr).await;
    assert!(ga.starts_with("220 ") && gb.starts_with("220 "));
    let (mut c, gc) = Raw::connect(server.addr).await;
    assert_eq!(code(&gc), "421 4.3.2");
    assert!(c.closed().await);
    // A slot freed is a slot for the next client.
    drop(a);
    let mut greeted = false;
    for _ in 0..50 {
        let (_d, gd) = Raw::connect(server.addr).await;
        if gd.starts_with("220 ") {
            greeted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(greeted, "a freed slot is reused");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_lets_a_transaction_finish_and_closes_the_rest() {
    let server = start(config()).await;
    let (mut idle, _) = Raw::connect(server.addr).await;
    idle.cmd("EHLO idle.test").await;
    let (mut busy, _) = Raw::connect(server.addr).await;
    busy.cmd("EHLO busy.test").await;
    busy.cmd("MAIL FROM:<a@example.org>").await;
    busy.cmd("RCPT TO:<alice@tidings.test>").await;

    let _ = server.stop.send(true);
    assert_eq!(code(&idle.reply().await), "421 4.3.2");
    assert!(idle.closed().await);

    assert!(busy.cmd("DATA").await.starts_with("354 "));
    assert_eq!(
        code(&busy.cmd("Subject: last\r\n\r\nx\r\n.").await),
        "250 2.0.0"
    );
    assert_eq!(code(&busy.reply().await), "421 4.3.2");
    assert!(busy.closed().await);
    assert_eq!(server.sink.mails().len(), 1);

    let addr = server.addr;
    timeout(Duration::from_secs(10), server.task)
        .await
        .expect("run returns")
        .expect("no panic")
        .expect("clean stop");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_missing_certificate_fails_at_start() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (_stop, shutdown) = watch::channel(false);
    let cfg = SmtpConfig {
        tls: Some((fixture("missing-cert.pem"), fixture("smtp-test-key.pem"))),
        ..config()
    };
    let result = timeout(
        Duration::from_secs(5),
        smtp::run(cfg, Arc::new(MemorySink::new()), listener, shutdown),
    )
    .await
    .expect("fails fast");
    let err = result.expect_err("no certificate, no server");
    assert!(err.to_string().contains("missing-cert.pem"), "{err}");
}
