//! imap: an IMAP mailbox as a source, for users who cannot forward their mail.
//!
//! [`ImapClient`] is a small IMAP4rev1 client (RFC 3501, with IDLE of RFC 2177 and
//! LITERAL+ of RFC 7888 when offered) over TCP, implicit TLS or STARTTLS (rustls with the
//! webpki roots, plus any the operator adds). It logs in (LOGIN, or AUTHENTICATE PLAIN where
//! LOGIN is disabled), opens one folder read-only (EXAMINE, so nothing is marked seen) and
//! answers two questions: what mail arrived after an [`ImapCursor`] ([`ImapClient::fetch_new`])
//! and, where IDLE is offered, when to ask again ([`ImapClient::idle`]). The cursor is the
//! folder's UIDVALIDITY and the last UID handed out; the caller persists it once the mail
//! is durably queued, and since `fetch_new` is a pure function of the cursor and the
//! mailbox, a crash before that just returns the same mail again: nothing is missed and,
//! with the caller's dedupe by Message-ID, nothing is notified twice. A first look, or a
//! changed UIDVALIDITY, only sets the cursor at the current end (no flood of old mail).
//! Each call is bounded in messages and bytes; oversized messages are skipped with a
//! warning, never read. The server's address is judged like any fetch
//! ([`crate::fetch::forbidden_reason`]) unless private networks are allowed. The wire
//! format lives in `proto` (I/O-free, tested without sockets), the session in `client`.
//!
//! It does not: change the mailbox (no flags, no moves, no deletes), watch more than one
//! folder per connection, use CONDSTORE/QRESYNC, NOTIFY or OAuth (XOAUTH2), reconnect by
//! itself (after any error the caller drops the client and connects again, with backoff),
//! or turn a message into a notification ([`crate::mail::parse_mail`] does). Storing the
//! password encrypted is the server's job.

mod client;
mod proto;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::ImapClient;
/// An address range for [`ImapConfig::allowlist`], e.g. `"10.0.0.0/8".parse()`.
pub use ipnet::IpNet;
/// A DER certificate, for [`ImapConfig::extra_root_certs`].
pub use tokio_rustls::rustls::pki_types::CertificateDer;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS, port 993). The default.
    Implicit,
    /// Plain IMAP upgraded with STARTTLS before login (port 143); refused if not offered.
    #[serde(rename = "starttls")]
    StartTls,
    /// No TLS at all: the password crosses the network in clear. Only to loopback
    /// addresses, unless [`ImapConfig::allow_plaintext`] says otherwise.
    Plain,
}

impl TlsMode {
    /// The usual port for the mode: 993 for implicit TLS, 143 otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::Implicit => 993,
            TlsMode::StartTls | TlsMode::Plain => 143,
        }
    }
}

fn default_tls() -> TlsMode {
    TlsMode::Implicit
}

fn default_folder() -> String {
    "INBOX".to_owned()
}

/// One mailbox to watch, as the user configured it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImapAccount {
    pub host: String,
    pub port: u16,
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    pub username: String,
    pub password: String,
    /// The folder to watch, as the user sees it (non-ASCII is fine). Default `INBOX`.
    #[serde(default = "default_folder")]
    pub folder: String,
}

// The password stays out of logs and error reports.
impl fmt::Debug for ImapAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapAccount")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("folder", &self.folder)
            .finish()
    }
}

/// Where the source stands in the folder: mail with a UID above `last_uid` is new, as
/// long as the folder's UIDVALIDITY is still `uid_validity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImapCursor {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// A message found after the cursor: its UID and its bytes exactly as the server has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub uid: u32,
    pub raw: Vec<u8>,
}

/// What went wrong. After any error the session is finished: drop it and connect again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImapError {
    /// The server could not be reached, or its address is refused by policy.
    #[error("cannot connect to the IMAP server: {0}")]
    Connect(String),
    #[error("TLS with the IMAP server failed: {0}")]
    Tls(String),
    /// The server refused the login; the text is meant for the user.
    #[error("{0}")]
    Auth(String),
    /// The server said NO or BAD to something it should accept, or spoke something else
    /// than IMAP, or closed the connection.
    #[error("IMAP protocol error: {0}")]
    Protocol(String),
    /// The server did not answer within the configured time.
    #[error("the IMAP server did not answer in time")]
    Timeout,
    /// The folder does not exist or cannot be opened (the name as configured).
    #[error("the folder \"{0}\" does not exist on the IMAP server or cannot be opened")]
    NoFolder(String),
    /// A server response exceeded the size limit.
    #[error("a response of the IMAP server exceeded the size limit")]
    TooLarge,
}

/// Operator settings for IMAP sources. [`Default`] has the documented defaults.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// For resolving the host, connecting and the TLS handshake. Default 20 s.
    pub connect_timeout: Duration,
    /// For every read of an answer (and every write). Default 60 s.
    pub read_timeout: Duration,
    /// Largest message fetched; larger ones are skipped with a warning. Default 10 MiB.
    pub max_message_bytes: usize,
    /// Most messages returned by one [`ImapClient::fetch_new`]. Default 50.
    pub max_messages_per_fetch: usize,
    /// Most message bytes read by one [`ImapClient::fetch_new`] (at least one message is
    /// always read). Default 32 MiB.
    pub max_fetch_bytes: usize,
    /// How long one IDLE command lasts before it is renewed; RFC 2177 asks for less than
    /// 29 minutes: longer values are cut to 28 minutes, shorter ones raised to a second.
    /// Default 25 minutes.
    pub idle_refresh: Duration,
    /// Allow every address, private or not (a home server reading its own LAN mailbox).
    pub allow_private_networks: bool,
    /// Ranges allowed even though they are not public.
    pub allowlist: Vec<IpNet>,
    /// Why an address is refused (`None`: allowed). Default [`crate::fetch::forbidden_reason`],
    /// so IMAP and HTTP sources share one rule.
    pub address_check: fn(IpAddr) -> Option<&'static str>,
    /// Allow [`TlsMode::Plain`] to addresses other than loopback. Default false.
    pub allow_plaintext: bool,
    /// Trust anchors besides the webpki roots (a self-hosted server's own CA).
    pub extra_root_certs: Vec<CertificateDer<'static>>,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            max_message_bytes: 10 * 1024 * 1024,
            max_messages_per_fetch: 50,
            max_fetch_bytes: 32 * 1024 * 1024,
            idle_refresh: Duration::from_secs(25 * 60),
            allow_private_networks: false,
            allowlist: Vec::new(),
            address_check: crate::fetch::forbidden_reason,
            allow_plaintext: false,
            extra_root_certs: Vec::new(),
        }
    }
}

impl ImapConfig {
    /// `Err(reason)` when connecting to `ip` is refused; the reason completes "… is …".
    fn check_address(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow_private_networks {
            return Ok(());
        }
        let canonical = ip.to_canonical();
        if self
            .allowlist
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return Ok(());
        }
        match (self.address_check)(ip) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}
