//! The XMPP wire side of tidings: one long-lived connection to an XMPP server, either as an
//! external component (XEP-0114: tidings is `tidings.example.org` on the operator's server)
//! or, for operators who cannot add a component, as an ordinary account (client mode: a
//! bot JID and password, its roster on the server). Users add tidings as a contact from
//! any standard client; tidings sends them messages and follows their presence, per
//! resource.
//!
//! [`start`] spawns the connection task and returns an [`XmppHandle`] (send messages,
//! subscribe, probe; cheap to clone) and the receiver of [`Inbound`] events (presence,
//! subscriptions, messages, receipts, bounces, connection changes), in the order the
//! server sent them. What to do with them (presence aggregation, routing, commands) is
//! the routing side's.
//!
//! Layout:
//! - [`xml`]: the stream framer and a small element tree (I/O-free, bounded).
//! - [`jid`]: JID parsing and checks.
//! - [`negotiate`]: stream negotiation (component handshake; STARTTLS, SASL and binding for
//!   a client), I/O-free; [`sasl`]: SCRAM-SHA-256/SHA-1 and PLAIN.
//! - [`stanzas`]: what a ready session answers and reports, I/O-free.
//! - `conn`: the connection task (TCP, TLS, the select loop, reconnects).
//! - [`commands`]: the IM command parser (`help`, `sub URL`, `pause 2h`, ...).
//! - [`presence`]: per-resource presence folded into one availability per contact.
//!
//! **Why no tokio-xmpp.** tokio-xmpp 6 / xmpp-parsers 0.23 build on Rust 1.95, but bring
//! 46 crates this workspace does not have (a DNS resolver with its cache, which STARTTLS
//! pulls in, a second generation of the RustCrypto hashes, chrono, sha3, blake2, ...), and
//! their client reconnects and queues internally, which would split the "queued messages
//! survive a reconnect, in order" guarantee between two queues. The protocol needed here is
//! small (one handshake, STARTTLS, SASL, bind, and a handful of stanzas), so it is written
//! here over tokio, tokio-rustls (ring) and the hashes already in the tree, and tested
//! without sockets.
//!
//! **Delivery.** Requests go through one bounded queue ([`XmppConfig::send_queue`]; `send`
//! waits when it is full) and out in order. A sent stanza stays pending until the server
//! has answered a ping sent after it (the server processes a stream's stanzas in order, so
//! the answer confirms everything before it); when the connection drops, the unconfirmed
//! ones go out again first after the reconnect. So nothing queued is lost while the server
//! is away, and a stanza is sent twice only if the connection dies between the server
//! taking it and the ping's answer. The queue lives in memory: what must survive a crash of
//! tidings is the caller's durable outbox's business. After [`Inbound::Disconnected`], every
//! presence reported so far is stale; after the next [`Inbound::Connected`] fresh presence
//! arrives (component: tidings probes every known contact; client: the server does).
//!
//! **Operators.** Component mode, Prosody:
//! ```lua
//! Component "tidings.example.org"
//!     component_secret = "a long random secret"
//! ```
//! (ejabberd: a `ejabberd_service` listener with `hosts: {"tidings.example.org": {password: ...}}`),
//! then `Mode::Component { host: "127.0.0.1", port: 5347, domain: "tidings.example.org",
//! secret }`. The component connection is plain TCP (XEP-0114 has no TLS): keep it on
//! loopback or a private network. Client mode needs an ordinary account; TLS (STARTTLS) is
//! required unless [`ClientTls::Optional`] is chosen, and the server's certificate must be
//! valid for the JID's domain (Mozilla's roots, plus the `extra_root_certs` of [`Mode::Client`]).

pub mod commands;
mod conn;
pub mod jid;
pub mod negotiate;
pub mod presence;
pub mod sasl;
pub mod stanzas;
pub mod xml;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
pub use tokio_rustls::rustls::pki_types::CertificateDer;

/// Reads the certificates of a PEM file (a private CA for client mode's
/// `extra_root_certs`). An unreadable file, or one with no certificate, is an error that
/// names it.
pub fn load_pem_certs(
    path: &std::path::Path,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

pub use jid::{BareJid, Jid, JidError};
pub use presence::Presences;
use stanzas::Cmd;

/// How tidings connects.
#[derive(Clone)]
pub enum Mode {
    /// An external component (XEP-0114) of the server at `host:port`, named `domain`.
    Component {
        host: String,
        port: u16,
        domain: BareJid,
        secret: String,
    },
    /// An ordinary account. `jid` may carry a resource (default `tidings`); `host` defaults
    /// to the JID's domain (no SRV lookup), `port` to 5222.
    Client {
        jid: Jid,
        password: String,
        host: Option<String>,
        port: Option<u16>,
        tls: ClientTls,
        /// Roots trusted besides Mozilla's (a private CA, a self-signed server).
        extra_root_certs: Vec<CertificateDer<'static>>,
    },
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Component {
                host, port, domain, ..
            } => f
                .debug_struct("Component")
                .field("host", host)
                .field("port", port)
                .field("domain", domain)
                .field("secret", &"<redacted>")
                .finish(),
            Mode::Client {
                jid,
                host,
                port,
                tls,
                extra_root_certs,
                ..
            } => f
                .debug_struct("Client")
                .field("jid", jid)
                .field("password", &"<redacted>")
                .field("host", host)
                .field("port", port)
                .field("tls", tls)
                .field("extra_root_certs", &extra_root_certs.len())
                .finish(),
        }
    }
}

/// TLS in client mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTls {
    /// STARTTLS, or no connection (the default).
    #[default]
    Required,
    /// STARTTLS when the server offers it, plain otherwise (then even PLAIN
    /// authentication is used): for a server on loopback only.
    Optional,
}

#[derive(Debug, Clone)]
pub struct XmppConfig {
    pub mode: Mode,
    /// The first reconnect waits this long (with jitter), each next one twice as long...
    pub reconnect_min: Duration,
    /// ...up to this.
    pub reconnect_max: Duration,
    /// Requests (messages, subscriptions) waiting to go out; `send` waits when it is full.
    pub send_queue: usize,
    /// Inbound events not yet taken by the receiver; reading from the server pauses when
    /// it is full.
    pub inbound_queue: usize,
    /// Sent stanzas not yet confirmed by the server (see the crate docs); more wait.
    pub max_unconfirmed: usize,
    pub connect_timeout: Duration,
    /// A ping goes to the server after this long without one...
    pub keepalive: Duration,
    /// ...and the connection is taken for dead when a ping or a write takes longer.
    pub ping_timeout: Duration,
    /// The largest stanza accepted from the server (a roster, say).
    pub max_stanza_bytes: usize,
    /// The status text of our presence.
    pub status: Option<String>,
}

impl XmppConfig {
    pub fn new(mode: Mode) -> XmppConfig {
        XmppConfig {
            mode,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
            send_queue: 1024,
            inbound_queue: 1024,
            max_unconfirmed: 64,
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(30),
            max_stanza_bytes: 1 << 20,
            status: None,
        }
    }

    /// Our bare JID: the component's domain, or the account's JID.
    pub fn our_jid(&self) -> BareJid {
        match &self.mode {
            Mode::Component { domain, .. } => domain.clone(),
            Mode::Client { jid, .. } => jid.bare().clone(),
        }
    }
}

/// Presence availability, most available first (`Chat < Available < ... < Unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Show {
    Chat,
    Available,
    Away,
    Xa,
    Dnd,
    Unavailable,
}

impl Show {
    /// From a `<show/>` text; unknown values count as available (RFC 6121 4.7.2.1).
    pub fn from_xml(s: &str) -> Show {
        match s {
            "chat" => Show::Chat,
            "away" => Show::Away,
            "xa" => Show::Xa,
            "dnd" => Show::Dnd,
            _ => Show::Available,
        }
    }

    /// The `<show/>` text, if any.
    pub fn as_xml(self) -> Option<&'static str> {
        match self {
            Show::Chat => Some("chat"),
            Show::Away => Some("away"),
            Show::Xa => Some("xa"),
            Show::Dnd => Some("dnd"),
            Show::Available | Show::Unavailable => None,
        }
    }
}

/// What the connection reports, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A session is up (first connect or reconnect).
    Connected,
    /// The session ended, or a connection attempt failed; a reconnect follows.
    Disconnected { reason: String },
    /// A contact's presence, for one resource (`resource: None`: for the whole account,
    /// typically unavailable).
    Presence {
        jid: BareJid,
        resource: Option<String>,
        show: Show,
        status: Option<String>,
    },
    /// The contact approved our subscription: we get their presence (remember it: a
    /// component has no server-side roster; pass it to [`start`] next time).
    SubscriptionApproved { jid: BareJid },
    /// The contact refused or revoked our subscription.
    SubscriptionRefused { jid: BareJid },
    /// The contact asked to follow our presence: approved already (and asked back).
    SubscribeRequest { jid: BareJid },
    /// A message with a body. `to` is our JID as addressed (for a component its local part
    /// may name something).
    Message {
        from: Jid,
        to: Jid,
        body: String,
        id: Option<String>,
        /// XEP-0461: the id of the message this one replies to.
        reply_to_id: Option<String>,
    },
    /// XEP-0184 (or a XEP-0333 `received` marker): our message `id` reached a client.
    Receipt { from: Jid, id: String },
    /// XEP-0333: our message `id` was displayed (or acknowledged).
    Displayed { from: Jid, id: String },
    /// A stanza of ours bounced: `to` is where it was going, `condition` the RFC 6120
    /// condition (`item-not-found`, `service-unavailable`, ...).
    Error {
        to: Jid,
        id: Option<String>,
        condition: String,
        text: Option<String>,
    },
}

/// A message to send (type chat; XEP-0393 styling in the body is fine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub to: Jid,
    pub body: String,
    /// The stanza id (the notification id, say): receipts and bounces carry it back.
    pub id: String,
    pub request_receipt: bool,
    pub markable: bool,
    /// Component mode: send from `node@<component domain>` instead of the bare domain.
    pub from_node: Option<String>,
}

/// Outbound bodies longer than this are refused.
pub const MAX_OUTBOUND_BODY: usize = 64 * 1024;
/// Stanza ids longer than this are refused.
pub const MAX_ID: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the XMPP connection is shut down")]
    Shutdown,
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("XML: {0}")]
    Xml(#[from] xml::XmlError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("SASL: {0}")]
    Sasl(#[from] sasl::SaslError),
    #[error("stream error: {0}")]
    Stream(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error(transparent)]
    Jid(#[from] JidError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Sends through the connection task. Clones share the queue.
#[derive(Debug, Clone)]
pub struct XmppHandle {
    tx: mpsc::Sender<Cmd>,
    our_jid: Arc<str>,
}

impl XmppHandle {
    /// Queues a message (waits while the queue is full). Kept across reconnects; an error
    /// only for a message that cannot be sent (empty id, oversized body) or once the
    /// connection is shut down.
    pub async fn send(&self, m: Outbound) -> Result<()> {
        if m.id.is_empty() || m.id.len() > MAX_ID {
            return Err(Error::InvalidMessage("the id must be 1 to 256 bytes"));
        }
        if m.body.len() > MAX_OUTBOUND_BODY {
            return Err(Error::InvalidMessage("the body is larger than 64 KiB"));
        }
        if let Some(node) = &m.from_node
            && Jid::parse(&format!("{node}@x")).is_err()
        {
            return Err(Error::InvalidMessage("from_node is not a JID local part"));
        }
        self.cmd(Cmd::Send(m)).await
    }

    /// Asks `jid` to let us follow their presence ([`Inbound::SubscriptionApproved`] when
    /// they agree).
    pub async fn subscribe(&self, jid: BareJid) -> Result<()> {
        self.cmd(Cmd::Subscribe(jid)).await
    }

    /// Stops following `jid` (and stops sharing ours).
    pub async fn unsubscribe(&self, jid: BareJid) -> Result<()> {
        self.cmd(Cmd::Unsubscribe(jid)).await
    }

    /// Asks for `jid`'s current presence (answered by their server).
    pub async fn probe(&self, jid: BareJid) -> Result<()> {
        self.cmd(Cmd::Probe(jid)).await
    }

    /// Changes our own presence (to every contact).
    pub async fn set_presence(&self, show: Show, status: Option<String>) -> Result<()> {
        self.cmd(Cmd::SetPresence(show, status)).await
    }

    /// Our bare JID (the component's domain, or the account).
    pub fn our_jid(&self) -> String {
        self.our_jid.to_string()
    }

    async fn cmd(&self, cmd: Cmd) -> Result<()> {
        self.tx.send(cmd).await.map_err(|_| Error::Shutdown)
    }
}

/// Spawns the connection task (on the current tokio runtime): connects, and on every
/// (re)connect announces our presence and probes `known_contacts` (component mode) or
/// fetches the roster (client mode, where `known_contacts` missing from the roster are
/// asked to subscribe); reconnects with exponential backoff up to
/// [`XmppConfig::reconnect_max`]; stops when `shutdown` turns true (or its sender is
/// dropped), saying goodbye to the server.
pub fn start(
    cfg: XmppConfig,
    known_contacts: Vec<BareJid>,
    shutdown: watch::Receiver<bool>,
) -> (XmppHandle, mpsc::Receiver<Inbound>) {
    let (tx, cmd_rx) = mpsc::channel(cfg.send_queue.max(1));
    let (inbound_tx, inbound_rx) = mpsc::channel(cfg.inbound_queue.max(1));
    let handle = XmppHandle {
        tx,
        our_jid: cfg.our_jid().to_string().into(),
    };
    let connection = conn::Connection::new(cfg, known_contacts, cmd_rx, inbound_tx);
    tokio::spawn(connection.run(shutdown));
    (handle, inbound_rx)
}

#[cfg(test)]
mod pem_tests {
    use std::path::PathBuf;

    #[test]
    fn pem_files_give_their_certificates_or_a_named_error() {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let ca = super::load_pem_certs(&fixtures.join("ca-cert.pem")).unwrap();
        assert_eq!(ca.len(), 1);
        let missing = super::load_pem_certs(&fixtures.join("nope.pem")).unwrap_err();
        assert!(missing.contains("nope.pem"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = super::load_pem_certs(&empty).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
    }
}
