//! End to end against a real Prosody (Debian's package, started by `scripts/prosody` with a
//! fresh directory and free ports per test): tidings as a component and as an ordinary
//! account, and users logged in with this crate's client mode (two resources for alice),
//! which Prosody treats like any other client. Prosody is restarted under connected
//! sessions with messages queued. No timing assertions: every wait is a poll with a
//! deadline.
//!
//! TLS uses tests/fixtures/: a test CA (ca-cert.pem, given to the client as an extra root;
//! its key was thrown away) and a certificate it signed for localhost and tidings.localhost
//! (server-{cert,key}.pem), made once with openssl (P-256, 36500 days; `req -x509` with
//! basicConstraints CA:TRUE for the CA, then `req -newkey` signed by `x509 -req -CA` with
//! subjectAltName DNS:localhost,DNS:tidings.localhost). A self-signed leaf would not do:
//! webpki refuses a CA certificate as an end entity.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tidings_xmpp::{
    BareJid, CertificateDer, ClientTls, Inbound, Jid, Mode, Outbound, Show, XmppConfig, XmppHandle,
    start,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::pem::PemObject;

const DOMAIN: &str = "localhost";
const COMPONENT: &str = "tidings.localhost";
const SECRET: &str = "component-secret";
const WAIT: Duration = Duration::from_secs(30);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Prosody in a temp dir; stopped when dropped.
struct Prosody {
    dir: tempfile::TempDir,
    c2s: u16,
    component: u16,
}

impl Prosody {
    async fn start(tls: bool) -> Prosody {
        let dir = tempfile::tempdir().expect("temp dir");
        if tls {
            let tls_dir = dir.path().join("tls");
            std::fs::create_dir_all(&tls_dir).unwrap();
            let fixtures = manifest_dir().join("tests/fixtures");
            std::fs::copy(fixtures.join("server-cert.pem"), tls_dir.join("cert.pem")).unwrap();
            std::fs::copy(fixtures.join("server-key.pem"), tls_dir.join("key.pem")).unwrap();
        }
        let p = Prosody {
            dir,
            c2s: free_port(),
            component: free_port(),
        };
        p.up().await;
        p
    }

    async fn script(args: Vec<String>) {
        let script = manifest_dir().join("../../scripts/prosody");
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script)
                .args(&args)
                .output()
                .expect("run scripts/prosody")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "scripts/prosody failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    async fn up(&self) {
        Prosody::script(vec![
            "start".into(),
            self.dir(),
            self.c2s.to_string(),
            self.component.to_string(),
            DOMAIN.into(),
            COMPONENT.into(),
            SECRET.into(),
        ])
        .await;
    }

    async fn down(&self) {
        Prosody::script(vec!["stop".into(), self.dir()]).await;
    }

    async fn add_user(&self, user: &str, password: &str) {
        Prosody::script(vec![
            "adduser".into(),
            self.dir(),
            user.into(),
            password.into(),
        ])
        .await;
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn component_config(&self, secret: &str) -> XmppConfig {
        fast(XmppConfig::new(Mode::Component {
            host: "127.0.0.1".into(),
            port: self.component,
            domain: BareJid::parse(COMPONENT).unwrap(),
            secret: secret.into(),
        }))
    }

    fn client_config(&self, jid: &str, password: &str, tls: ClientTls) -> XmppConfig {
        let ca = CertificateDer::from_pem_file(manifest_dir().join("tests/fixtures/ca-cert.pem"))
            .expect("CA fixture");
        fast(XmppConfig::new(Mode::Client {
            jid: Jid::parse(jid).unwrap(),
            password: password.into(),
            host: Some("127.0.0.1".into()),
            port: Some(self.c2s),
            tls,
            extra_root_certs: vec![ca],
        }))
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let script = manifest_dir().join("../../scripts/prosody");
        let _ = Command::new("bash")
            .arg(script)
            .args(["stop", &self.dir()])
            .output();
    }
}

/// Reconnects quickly (the tests restart the server).
fn fast(mut cfg: XmppConfig) -> XmppConfig {
    cfg.reconnect_min = Duration::from_millis(100);
    cfg.reconnect_max = Duration::from_secs(1);
    cfg
}

/// One running connection and its events.
struct Peer {
    name: &'static str,
    handle: XmppHandle,
    events: mpsc::Receiver<Inbound>,
    stop: watch::Sender<bool>,
    /// Everything seen, for failure messages.
    seen: Vec<Inbound>,
}

impl Peer {
    fn start(name: &'static str, cfg: XmppConfig, known: Vec<BareJid>) -> Peer {
        let (stop, stop_rx) = watch::channel(false);
        let (handle, events) = start(cfg, known, stop_rx);
        Peer {
            name,
            handle,
            events,
            stop,
            seen: Vec::new(),
        }
    }

    /// The first event (from now on) that matches; panics at the deadline.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Inbound) -> bool) -> Inbound {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return ev;
                    }
                }
                Ok(None) => panic!("{}: events ended waiting for {what}", self.name),
                Err(_) => panic!(
                    "{}: no {what} within {WAIT:?}; seen: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    async fn connected(&mut self) {
        self.expect("Connected", |e| matches!(e, Inbound::Connected))
            .await;
    }

    async fn presence(&mut self, jid: &BareJid, resource: &str, show: Show) -> Inbound {
        let what = format!("presence {jid}/{resource} {show:?}");
        self.expect(&what, |e| {
            matches!(e, Inbound::Presence { jid: j, resource: Some(r), show: s, .. }
                if j == jid && r == resource && *s == show)
        })
        .await
    }

    async fn send(&self, to: &str, id: &str, body: &str) {
        self.handle
            .send(Outbound {
                to: Jid::parse(to).unwrap(),
                body: body.into(),
                id: id.into(),
                request_receipt: true,
                markable: true,
                from_node: None,
            })
            .await
            .expect("queued");
    }

    /// The bodies of the messages received until (and with) the one with `last_id`.
    async fn messages_until(&mut self, last_id: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        loop {
            let ev = self
                .expect(&format!("message {last_id}"), |e| {
                    matches!(e, Inbound::Message { .. })
                })
                .await;
            let Inbound::Message { id, body, .. } = ev else {
                unreachable!()
            };
            let id = id.unwrap_or_default();
            got.push((id.clone(), body));
            if id == last_id {
                return got;
            }
        }
    }

    fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn bare(s: &str) -> BareJid {
    BareJid::parse(s).unwrap()
}

/// The whole component story: subscription, per-resource presence, messages both ways
/// with receipts, a bounce, and a server restart with messages queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_against_prosody() {
    let prosody = Prosody::start(false).await;
    prosody.add_user("alice", "alice-pw").await;
    let alice = bare("alice@localhost");
    let tidings = bare(COMPONENT);

    let mut bot = Peer::start("component", prosody.component_config(SECRET), vec![]);
    bot.connected().await;
    let mut phone = Peer::start(
        "alice/phone",
        prosody.client_config("alice@localhost/phone", "alice-pw", ClientTls::Optional),
        vec![],
    );
    phone.connected().await;

    // tidings asks; alice's client sees the request (and approves it: this crate's client
    // approves every request and asks back).
    bot.handle.subscribe(alice.clone()).await.unwrap();
    phone
        .expect(
            "the subscription request",
            |e| matches!(e, Inbound::SubscribeRequest { jid } if *jid == tidings),
        )
        .await;
    bot.expect(
        "alice's approval",
        |e| matches!(e, Inbound::SubscriptionApproved { jid } if *jid == alice),
    )
    .await;
    bot.presence(&alice, "phone", Show::Available).await;
    // alice asked back; the component approved, so alice gets tidings' presence.
    phone
        .expect(
            "tidings' approval",
            |e| matches!(e, Inbound::SubscriptionApproved { jid } if *jid == tidings),
        )
        .await;
    phone
        .expect("tidings' presence", |e| {
            matches!(e, Inbound::Presence { jid, resource: None, show: Show::Available, .. }
                if *jid == tidings)
        })
        .await;

    // Presence changes, per resource.
    phone
        .handle
        .set_presence(Show::Away, Some("lunch".into()))
        .await
        .unwrap();
    let ev = bot.presence(&alice, "phone", Show::Away).await;
    assert!(
        matches!(&ev, Inbound::Presence { status: Some(s), .. } if s == "lunch"),
        "{ev:?}"
    );
    let mut laptop = Peer::start(
        "alice/laptop",
        prosody.client_config("alice@localhost/laptop", "alice-pw", ClientTls::Optional),
        vec![],
    );
    laptop.connected().await;
    bot.presence(&alice, "laptop", Show::Available).await;
    laptop.handle.set_presence(Show::Dnd, None).await.unwrap();
    bot.presence(&alice, "laptop", Show::Dnd).await;
    phone.handle.set_presence(Show::Xa, None).await.unwrap();
    bot.presence(&alice, "phone", Show::Xa).await;
    laptop.stop();
    bot.presence(&alice, "laptop", Show::Unavailable).await;
    phone
        .handle
        .set_presence(Show::Available, None)
        .await
        .unwrap();
    bot.presence(&alice, "phone", Show::Available).await;

    // A message with a receipt request reaches alice; her client's receipt comes back.
    bot.send("alice@localhost", "n-1", "*Disk* full on db1")
        .await;
    let ev = phone
        .expect("the notification", |e| matches!(e, Inbound::Message { .. }))
        .await;
    let Inbound::Message { from, body, id, .. } = ev else {
        unreachable!()
    };
    assert_eq!(from.to_string(), COMPONENT);
    assert_eq!(body, "*Disk* full on db1");
    assert_eq!(id.as_deref(), Some("n-1"));
    let ev = bot
        .expect("the receipt", |e| matches!(e, Inbound::Receipt { .. }))
        .await;
    assert_eq!(
        ev,
        Inbound::Receipt {
            from: Jid::parse("alice@localhost/phone").unwrap(),
            id: "n-1".into()
        }
    );

    // alice writes to a name at the component.
    phone.send("ops@tidings.localhost", "a-1", "ack 1").await;
    let ev = bot
        .expect("alice's message", |e| matches!(e, Inbound::Message { .. }))
        .await;
    let Inbound::Message {
        from, to, body, id, ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(from.to_string(), "alice@localhost/phone");
    assert_eq!(to.to_string(), "ops@tidings.localhost");
    assert_eq!((body.as_str(), id.as_deref()), ("ack 1", Some("a-1")));
    phone
        .expect(
            "tidings' receipt",
            |e| matches!(e, Inbound::Receipt { id, .. } if id == "a-1"),
        )
        .await;

    // A message to nobody bounces.
    bot.send("nobody@localhost", "n-2", "hello?").await;
    let ev = bot
        .expect("the bounce", |e| matches!(e, Inbound::Error { .. }))
        .await;
    assert!(
        matches!(&ev, Inbound::Error { to, id: Some(id), .. }
            if to.to_string() == "nobody@localhost" && id == "n-2"),
        "{ev:?}"
    );

    // The server goes away; what is queued meanwhile arrives after the reconnect, in
    // order, once each.
    prosody.down().await;
    bot.expect("Disconnected", |e| {
        matches!(e, Inbound::Disconnected { .. })
    })
    .await;
    for i in 10..15 {
        bot.send("alice@localhost", &format!("n-{i}"), &format!("queued {i}"))
            .await;
    }
    prosody.up().await;
    bot.connected().await;
    phone.connected().await;
    // The reconnect probes alice again.
    bot.presence(&alice, "phone", Show::Available).await;
    bot.send("alice@localhost", "n-15", "after").await;
    let got = phone.messages_until("n-15").await;
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["n-10", "n-11", "n-12", "n-13", "n-14", "n-15"],
        "{got:?}\n{}",
        prosody.log_tail()
    );

    // Shut down, tidings says goodbye: alice sees it go.
    bot.stop();
    phone
        .expect("tidings' goodbye", |e| {
            matches!(e, Inbound::Presence { jid, show: Show::Unavailable, .. } if *jid == tidings)
        })
        .await;
    phone.stop();
}

/// Client mode over STARTTLS: the bot is an ordinary account, subscribes to alice through
/// its roster, follows her presence, and messages go both ways, also across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_against_prosody() {
    let prosody = Prosody::start(true).await;
    prosody.add_user("bot", "bot-pw").await;
    prosody.add_user("alice", "alice-pw").await;
    let alice = bare("alice@localhost");
    let bot_jid = bare("bot@localhost");

    let mut bot = Peer::start(
        "bot",
        prosody.client_config("bot@localhost", "bot-pw", ClientTls::Required),
        vec![],
    );
    bot.connected().await;
    let mut phone = Peer::start(
        "alice/phone",
        prosody.client_config("alice@localhost/phone", "alice-pw", ClientTls::Required),
        vec![],
    );
    phone.connected().await;

    bot.handle.subscribe(alice.clone()).await.unwrap();
    phone
        .expect(
            "the subscription request",
            |e| matches!(e, Inbound::SubscribeRequest { jid } if *jid == bot_jid),
        )
        .await;
    bot.expect(
        "alice's approval",
        |e| matches!(e, Inbound::SubscriptionApproved { jid } if *jid == alice),
    )
    .await;
    bot.presence(&alice, "phone", Show::Available).await;
    phone.handle.set_presence(Show::Away, None).await.unwrap();
    bot.presence(&alice, "phone", Show::Away).await;
    let mut laptop = Peer::start(
        "alice/laptop",
        prosody.client_config("alice@localhost/laptop", "alice-pw", ClientTls::Required),
        vec![],
    );
    laptop.connected().await;
    bot.presence(&alice, "laptop", Show::Available).await;
    laptop.stop();
    bot.presence(&alice, "laptop", Show::Unavailable).await;

    bot.send("alice@localhost/phone", "c-1", "hello from the bot")
        .await;
    let ev = phone
        .expect("the bot's message", |e| {
            matches!(e, Inbound::Message { .. })
        })
        .await;
    assert!(
        matches!(&ev, Inbound::Message { from, body, id: Some(id), .. }
            if from.bare() == &bot_jid && body == "hello from the bot" && id == "c-1"),
        "{ev:?}"
    );
    bot.expect(
        "the receipt",
        |e| matches!(e, Inbound::Receipt { id, .. } if id == "c-1"),
    )
    .await;
    phone.send("bot@localhost", "a-1", "help").await;
    let ev = bot
        .expect("alice's message", |e| matches!(e, Inbound::Message { .. }))
        .await;
    assert!(
        matches!(&ev, Inbound::Message { from, body, .. }
            if from.to_string() == "alice@localhost/phone" && body == "help"),
        "{ev:?}"
    );

    prosody.down().await;
    bot.expect("Disconnected", |e| {
        matches!(e, Inbound::Disconnected { .. })
    })
    .await;
    for i in 10..13 {
        bot.send("alice@localhost", &format!("c-{i}"), &format!("queued {i}"))
            .await;
    }
    prosody.up().await;
    bot.connected().await;
    // The roster is the bot's memory of who approved it.
    bot.expect(
        "the roster's approval",
        |e| matches!(e, Inbound::SubscriptionApproved { jid } if *jid == alice),
    )
    .await;
    bot.send("alice@localhost", "c-13", "after").await;
    let got = phone.messages_until("c-13").await;
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["c-10", "c-11", "c-12", "c-13"],
        "{got:?}\n{}",
        prosody.log_tail()
    );
    bot.stop();
    phone.stop();
}

/// Wrong component secret, and TLS required where the server offers none: refused, and
/// said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported() {
    let prosody = Prosody::start(false).await;
    prosody.add_user("bot", "bot-pw").await;

    let mut wrong = Peer::start("component", prosody.component_config("wrong"), vec![]);
    let ev = wrong
        .expect("Disconnected", |e| {
            matches!(e, Inbound::Disconnected { .. })
        })
        .await;
    assert!(
        matches!(&ev, Inbound::Disconnected { reason } if reason.contains("not-authorized")),
        "{ev:?}"
    );
    wrong.stop();

    let mut plain = Peer::start(
        "bot",
        prosody.client_config("bot@localhost", "bot-pw", ClientTls::Required),
        vec![],
    );
    let ev = plain
        .expect("Disconnected", |e| {
            matches!(e, Inbound::Disconnected { .. })
        })
        .await;
    assert!(
        matches!(&ev, Inbound::Disconnected { reason } if reason.contains("STARTTLS")),
        "{ev:?}"
    );
    plain.stop();

    let mut bad_password = Peer::start(
        "bot",
        prosody.client_config("bot@localhost", "nope", ClientTls::Optional),
        vec![],
    );
    let ev = bad_password
        .expect("Disconnected", |e| {
            matches!(e, Inbound::Disconnected { .. })
        })
        .await;
    assert!(
        matches!(&ev, Inbound::Disconnected { reason } if reason.contains("not-authorized")),
        "{ev:?}"
    );
    bad_password.stop();
}
