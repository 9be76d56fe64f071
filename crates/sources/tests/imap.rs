//! The IMAP client against a real Dovecot on 127.0.0.1, started per test by
//! `scripts/dovecot` in a temporary directory (installed with apt-get when missing; if it
//! cannot be, these tests fail, they do not skip). Mail is delivered the way a mail server
//! would put it in the folder, with IMAP APPEND from a second, raw connection.
//!
//! TLS uses tests/fixtures/imap/: a test CA (ca-cert.pem, given to the client as an extra
//! root; its key was thrown away) and a server certificate it signed for localhost and
//! 127.0.0.1 (server-{cert,key}.pem). A self-signed leaf would not do: webpki refuses a CA
//! certificate as an end entity. Made once with openssl (P-256, 36500 days):
//! `req -x509 -newkey ec ... -keyout ca-key.pem -out ca-cert.pem -subj "/CN=tidings IMAP
//! test CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign`,
//! then `req -newkey ec ... -subj /CN=localhost` signed by `x509 -req -CA ca-cert.pem` with
//! `basicConstraints=critical,CA:FALSE`, `extendedKeyUsage=serverAuth` and
//! `subjectAltName=DNS:localhost,IP:127.0.0.1`.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidings_sources::imap::{
    CertificateDer, ImapAccount, ImapClient, ImapConfig, ImapCursor, ImapError, NewMail, TlsMode,
};
use tidings_sources::mail::parse_mail;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

const USER: &str = "tester";
/// A space and non-ASCII: sent as a literal, not an atom.
const PASSWORD: &str = "s3cret pässword";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    manifest_dir().join("../../scripts/dovecot")
}

static START: Mutex<()> = Mutex::new(());

/// A Dovecot of our own; stopped when dropped.
struct Dovecot {
    dir: tempfile::TempDir,
    /// Plain IMAP (and STARTTLS when started with TLS); implicit TLS is `port + 1`.
    port: u16,
}

impl Dovecot {
    fn start() -> Dovecot {
        Dovecot::start_with(false)
    }

    fn start_with(tls: bool) -> Dovecot {
        let dir = tempfile::tempdir().expect("temp dir");
        if tls {
            let fixtures = manifest_dir().join("tests/fixtures/imap");
            let tls_dir = dir.path().join("tls");
            std::fs::create_dir_all(&tls_dir).expect("tls dir");
            std::fs::copy(fixtures.join("server-cert.pem"), tls_dir.join("cert.pem"))
                .expect("copy cert");
            std::fs::copy(fixtures.join("server-key.pem"), tls_dir.join("key.pem"))
                .expect("copy key");
        }
        // One start at a time: the first may install Dovecot, and apt-get runs alone.
        let _one_at_a_time = START
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let port = free_port_pair();
        let out = Process::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .arg(USER)
            .arg(PASSWORD)
            .output()
            .expect("run scripts/dovecot");
        if !out.status.success() {
            panic!(
                "Dovecot could not be started by scripts/dovecot, so the IMAP tests cannot run \
                 (they need dovecot-imapd from Debian; install it or let the script do so as \
                 root):\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Dovecot { dir, port }
    }

    fn account(&self) -> ImapAccount {
        ImapAccount {
            host: "127.0.0.1".into(),
            port: self.port,
            tls: TlsMode::Plain,
            username: USER.into(),
            password: PASSWORD.into(),
            folder: "INBOX".into(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    async fn raw(&self) -> Raw {
        Raw::login(self.port).await
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Process::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Two consecutive free ports (plain and implicit TLS). Another process may take them
/// before Dovecot binds; the script then fails loudly rather than flakily.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let first = StdListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port < u16::MAX && StdListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

fn config() -> ImapConfig {
    ImapConfig {
        allow_private_networks: true,
        read_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        ..ImapConfig::default()
    }
}

async fn connect(server: &Dovecot, acc: &ImapAccount, cfg: &ImapConfig) -> ImapClient {
    match ImapClient::connect(acc, cfg).await {
        Ok(client) => client,
        Err(e) => panic!("connect: {e}\n--- dovecot.log\n{}", server.log()),
    }
}

async fn fetch(
    client: &mut ImapClient,
    cursor: Option<ImapCursor>,
) -> (Vec<NewMail>, ImapCursor, Vec<String>) {
    match timeout(Duration::from_secs(30), client.fetch_new(cursor)).await {
        Ok(Ok(fetched)) => fetched,
        Ok(Err(e)) => panic!("fetch_new: {e}"),
        Err(_) => panic!("fetch_new hung"),
    }
}

/// A second client speaking raw IMAP, as a mail server's delivery would change the folder.
struct Raw {
    reader: BufReader<TcpStream>,
    tag: u32,
}

impl Raw {
    async fn login(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("raw connect");
        let mut raw = Raw {
            reader: BufReader::new(stream),
            tag: 0,
        };
        let greeting = raw.line().await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        let login = format!("LOGIN {USER} {{{}+}}\r\n{PASSWORD}", PASSWORD.len());
        raw.ok(&login).await;
        raw
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = timeout(Duration::from_secs(10), self.reader.read_line(&mut line)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "raw read: {read:?}");
        line
    }

    /// Sends `tag command` (literal data included, LITERAL+ style) and returns the lines
    /// up to the tagged reply, which must be OK.
    async fn send(&mut self, command: &[u8]) -> Vec<String> {
        self.tag += 1;
        let tag = format!("r{}", self.tag);
        let mut bytes = format!("{tag} ").into_bytes();
        bytes.extend_from_slice(command);
        bytes.extend_from_slice(b"\r\n");
        self.reader
            .get_mut()
            .write_all(&bytes)
            .await
            .expect("raw write");
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                break;
            }
        }
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            last.starts_with(&format!("{tag} OK")),
            "raw command failed: {lines:?}"
        );
        lines
    }

    async fn ok(&mut self, command: &str) -> Vec<String> {
        self.send(command.as_bytes()).await
    }

    /// APPENDs a message and returns its UID (from UIDPLUS' APPENDUID).
    async fn append(&mut self, folder: &str, message: &[u8]) -> u32 {
        let mut command = format!("APPEND {folder} {{{}+}}\r\n", message.len()).into_bytes();
        command.extend_from_slice(message);
        let lines = self.send(&command).await;
        let last = lines.last().cloned().unwrap_or_default();
        let uid = last
            .split("[APPENDUID ")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .and_then(|codes| codes.split(' ').nth(1))
            .and_then(|uid| uid.parse().ok());
        match uid {
            Some(uid) => uid,
            None => panic!("no APPENDUID in {last:?}"),
        }
    }
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alerts <alerts@example.org>\r\nTo: tester@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <{}@example.org>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_the_user_can_read() {
    let server = Dovecot::start();
    let acc = ImapAccount {
        password: "wrong".into(),
        ..server.account()
    };
    let err = ImapClient::connect(&acc, &config()).await.err();
    let Some(ImapError::Auth(text)) = &err else {
        panic!("expected an auth error, got {err:?}");
    };
    assert!(
        text.contains("refused the login of \"tester\"") && text.contains("Authentication failed"),
        "{text}"
    );
    let shown = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert_eq!(&shown, text, "the text is shown to the user as is");
}

#[tokio::test]
async fn new_mail_after_the_cursor_exactly_once_and_idempotent_per_cursor() {
    let server = Dovecot::start();
    let mut raw = server.raw().await;
    raw.append("INBOX", &message("old one", "already there"))
        .await;

    let mut client = connect(&server, &server.account(), &config()).await;
    // First look: no flood of what was already there.
    let (mails, start, warnings) = fetch(&mut client, None).await;
    assert!(mails.is_empty(), "{mails:?}");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(start.last_uid, 1);

    let first = message("disk full", "sda1 is at 97%");
    let second = message("backup done", "2 GiB in 3 min\r\nsecond line");
    let uid1 = raw.append("INBOX", &first).await;
    let uid2 = raw.append("INBOX", &second).await;

    let (mails, after, warnings) = fetch(&mut client, Some(start)).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(mails.len(), 2);
    assert_eq!((mails[0].uid, mails[1].uid), (uid1, uid2));
    assert_eq!(mails[0].raw, first);
    assert_eq!(mails[1].raw, second);
    assert_eq!(
        parse_mail(&mails[0].raw).subject.as_deref(),
        Some("disk full")
    );
    assert_eq!(
        after,
        ImapCursor {
            uid_validity: start.uid_validity,
            last_uid: uid2
        }
    );

    // The caller crashed before persisting `after`: the old cursor gives the same mail.
    let (again, again_cursor, _) = fetch(&mut client, Some(start)).await;
    assert_eq!(again, mails);
    assert_eq!(again_cursor, after);
    // With the new cursor: nothing.
    let (none, same, _) = fetch(&mut client, Some(after)).await;
    assert!(none.is_empty());
    assert_eq!(same, after);
    client.logout().await;

    // And after a restart (a new session), the same answers.
    let mut client = connect(&server, &server.account(), &config()).await;
    let (again, _, _) = fetch(&mut client, Some(start)).await;
    assert_eq!(again, mails);
    let (none, _, _) = fetch(&mut client, Some(after)).await;
    assert!(none.is_empty());

    // Read with BODY.PEEK on a folder opened read-only: the user's mail stays unread.
    raw.ok("EXAMINE INBOX").await;
    let flags = raw.ok("FETCH 1:* (FLAGS)").await;
    assert!(
        flags.iter().all(|l| !l.contains("\\Seen")),
        "mail was marked seen: {flags:?}"
    );
    client.logout().await;
}

#[tokio::test]
async fn a_backlog_comes_in_bounded_batches_and_oversized_mail_is_skipped() {
    let server = Dovecot::start();
    let cfg = ImapConfig {
        max_message_bytes: 2000,
        max_messages_per_fetch: 2,
        ..config()
    };
    let mut client = connect(&server, &server.account(), &cfg).await;
    let (_, start, _) = fetch(&mut client, None).await;

    let mut raw = server.raw().await;
    let small1 = message("one", "small");
    let big = message("huge attachment", &"x".repeat(5000));
    let small2 = message("two", "small too");
    let small3 = message("three", "and again");
    let uid1 = raw.append("INBOX", &small1).await;
    let uid_big = raw.append("INBOX", &big).await;
    let uid2 = raw.append("INBOX", &small2).await;
    let uid3 = raw.append("INBOX", &small3).await;

    let (mails, cursor, warnings) = fetch(&mut client, Some(start)).await;
    let uids: Vec<u32> = mails.iter().map(|m| m.uid).collect();
    assert_eq!(uids, [uid1, uid2]);
    assert_eq!(mails[1].raw, small2);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("UID {uid_big} is {} bytes", big.len()))
            && warnings[0].contains("skipped"),
        "{warnings:?}"
    );
    assert_eq!(cursor.last_uid, uid2);

    let (mails, cursor, warnings) = fetch(&mut client, Some(cursor)).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(mails.len(), 1);
    assert_eq!((mails[0].uid, &mails[0].raw), (uid3, &small3));
    assert_eq!(cursor.last_uid, uid3);
    client.logout().await;
}

#[tokio::test]
async fn idle_wakes_when_mail_arrives_through_another_connection() {
    let server = Dovecot::start();
    let mut client = connect(&server, &server.account(), &config()).await;
    assert!(client.supports_idle());
    let (_, cursor, _) = fetch(&mut client, None).await;

    // Nothing happens: IDLE ends when its time is up, and says so.
    let started = Instant::now();
    let changed = client.idle(Duration::from_millis(700)).await.expect("idle");
    assert!(!changed);
    assert!(started.elapsed() >= Duration::from_millis(700));

    let mut raw = server.raw().await;
    let mail = message("door bell", "someone is at the door");
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        raw.append("INBOX", &mail).await
    });
    let started = Instant::now();
    let changed = timeout(
        Duration::from_secs(20),
        client.idle(Duration::from_secs(15)),
    )
    .await
    .expect("idle did not return in time")
    .expect("idle");
    assert!(changed, "IDLE returned without news");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "IDLE woke only after {:?}",
        started.elapsed()
    );
    let uid = append.await.expect("append task");
    let (mails, _, _) = fetch(&mut client, Some(cursor)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].uid, uid);
    client.logout().await;
}

#[tokio::test]
async fn a_recreated_folder_with_a_new_uidvalidity_is_rebaselined() {
    let server = Dovecot::start();
    let mut raw = server.raw().await;
    raw.ok("CREATE Alerts").await;
    raw.append("Alerts", &message("first life", "1")).await;
    let acc = ImapAccount {
        folder: "Alerts".into(),
        ..server.account()
    };
    let mut client = connect(&server, &acc, &config()).await;
    let (_, cursor, _) = fetch(&mut client, None).await;
    client.logout().await;

    // While the source is stopped, the folder is deleted and made again; its UIDs start
    // over, so the old cursor's UID means nothing there.
    raw.ok("DELETE Alerts").await;
    raw.ok("CREATE Alerts").await;
    raw.append("Alerts", &message("second life", "2")).await;
    raw.append("Alerts", &message("second life too", "3")).await;

    let mut client = connect(&server, &acc, &config()).await;
    let (mails, rebased, warnings) = fetch(&mut client, Some(cursor)).await;
    assert!(mails.is_empty(), "{mails:?}");
    assert_ne!(rebased.uid_validity, cursor.uid_validity);
    assert_eq!(rebased.last_uid, 2);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("UIDVALIDITY"), "{warnings:?}");

    let uid = raw.append("Alerts", &message("after", "4")).await;
    let (mails, current, warnings) = fetch(&mut client, Some(rebased)).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(mails.iter().map(|m| m.uid).collect::<Vec<_>>(), [uid]);

    // The same while the source is connected, the folder open.
    raw.ok("DELETE Alerts").await;
    raw.ok("CREATE Alerts").await;
    raw.append("Alerts", &message("third life", "5")).await;
    let (mails, again, warnings) = fetch(&mut client, Some(current)).await;
    assert!(mails.is_empty(), "{mails:?}");
    assert_ne!(again.uid_validity, current.uid_validity);
    assert_eq!(again.last_uid, 1);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    client.logout().await;

    // A folder that is not there at all.
    let acc = ImapAccount {
        folder: "Nowhere".into(),
        ..server.account()
    };
    let err = ImapClient::connect(&acc, &config()).await.err();
    assert_eq!(err, Some(ImapError::NoFolder("Nowhere".into())));
}

#[tokio::test]
async fn non_ascii_folder_names_and_passwords_reach_the_server_intact() {
    let server = Dovecot::start();
    let mut raw = server.raw().await;
    // "Entwürfe" in modified UTF-7, as IMAP names it on the wire.
    raw.ok("CREATE \"Entw&APw-rfe\"").await;
    let uid = raw.append("\"Entw&APw-rfe\"", &message("draft", "x")).await;
    let acc = ImapAccount {
        folder: "Entwürfe".into(),
        ..server.account()
    };
    let mut client = connect(&server, &acc, &config()).await;
    let (_, start, _) = fetch(&mut client, None).await;
    assert_eq!(start.last_uid, uid);
    client.logout().await;
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let server = Dovecot::start();
    let cfg = ImapConfig {
        allow_private_networks: false,
        ..config()
    };
    let err = ImapClient::connect(&server.account(), &cfg).await.err();
    let Some(ImapError::Connect(text)) = &err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert!(
        text.contains("127.0.0.1")
            && text.contains("loopback")
            && text.contains("allow_private_networks"),
        "{text}"
    );
    // Plain IMAP sends the password in clear: only to loopback unless the operator says so
    // (refused before any packet leaves; 192.0.2.1 is a documentation address).
    let far = ImapAccount {
        host: "192.0.2.1".into(),
        ..server.account()
    };
    let allowed = ImapConfig {
        allow_private_networks: true,
        ..cfg.clone()
    };
    let err = ImapClient::connect(&far, &allowed).await.err();
    assert!(
        matches!(&err, Some(ImapError::Tls(text)) if text.contains("without TLS to 192.0.2.1")),
        "{err:?}"
    );
    // An allowlisted range is enough.
    let cfg = ImapConfig {
        allowlist: vec!["127.0.0.0/8".parse().expect("net")],
        ..cfg
    };
    connect(&server, &server.account(), &cfg)
        .await
        .logout()
        .await;
}

fn fixture_root() -> CertificateDer<'static> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let path: &Path = &manifest_dir().join("tests/fixtures/imap/ca-cert.pem");
    CertificateDer::from_pem_file(path).expect("fixture certificate")
}

#[tokio::test]
async fn implicit_tls_and_starttls_verify_the_server() {
    let server = Dovecot::start_with(true);
    let cfg = ImapConfig {
        extra_root_certs: vec![fixture_root()],
        ..config()
    };
    for (tls, port) in [
        (TlsMode::Implicit, server.port + 1),
        (TlsMode::StartTls, server.port),
    ] {
        for host in ["localhost", "127.0.0.1"] {
            let acc = ImapAccount {
                host: host.into(),
                port,
                tls,
                ..server.account()
            };
            let mut client = connect(&server, &acc, &cfg).await;
            let (mails, _, _) = fetch(&mut client, None).await;
            assert!(mails.is_empty());
            client.logout().await;
        }
    }
    // Without the operator's root, the self-signed certificate is not trusted.
    let acc = ImapAccount {
        host: "localhost".into(),
        port: server.port + 1,
        tls: TlsMode::Implicit,
        ..server.account()
    };
    let err = ImapClient::connect(&acc, &config()).await.err();
    assert!(
        matches!(&err, Some(ImapError::Tls(text)) if text.contains("certificate")),
        "{err:?}"
    );
}
