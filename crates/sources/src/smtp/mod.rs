//! smtp: the inbound SMTP edge, where mail to `<user>[+<label>]@<mail_domain>` comes in.
//!
//! It speaks RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 and,
//! when a certificate is configured, STARTTLS (RFC 3207). The protocol lives in
//! [`Session`], an I/O-free state machine (bytes in; replies, recipient checks, deliveries
//! out) tested without sockets; [`run`] is the thin async listener around it. Commands are
//! parsed by `smtp-proto`; line framing, the DATA reader (dot-unstuffing, size, header
//! and line limits) and every refusal are ours, so that only CRLF ends a line and only
//! CRLF.CRLF ends a message: bare CR or LF, the stuff of SMTP smuggling, is refused.
//! A message is answered 250 only once [`MailSink::deliver`] says it is durable.
//!
//! It does not: relay (only the configured domain is accepted), authenticate senders,
//! check SPF/DKIM/DMARC, add a `Received:` header, support BDAT/CHUNKING, or decide who a
//! user is and where the mail goes: the [`MailSink`] (directory and ingest queue) does.
//! Turning a message into notification fields is [`crate::mail`]'s job.

mod listener;
mod session;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use futures_util::future::BoxFuture;
pub use listener::run;
pub use session::{Event, Session};

/// Settings of the SMTP listener. [`Default`] has the documented defaults.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Where the server binds; [`run`] is handed the bound listener.
    pub listen: SocketAddr,
    /// This host's name, in the greeting and the EHLO reply.
    pub hostname: String,
    /// The domain whose addresses are accepted (compared case-insensitively).
    pub mail_domain: String,
    /// Largest message (the DATA content after dot-unstuffing). Default 10 MiB.
    pub max_message_bytes: usize,
    /// Most recipients in one transaction. Default 50.
    pub max_recipients: usize,
    /// Longest command line, CRLF included. Default 4096. Lines of message text may be up
    /// to [`MAX_DATA_LINE_BYTES`] (RFC 5321 asks for at least 1000).
    pub max_line_bytes: usize,
    /// Largest header section of a message. Default 256 KiB.
    pub max_header_bytes: usize,
    /// How long a client may stay silent (or not read our replies). Default 5 minutes,
    /// the least RFC 5321 §4.5.3.2 allows.
    pub idle_timeout: Duration,
    /// Most simultaneous connections; more are told 421 at once. Default 500.
    pub max_connections: usize,
    /// Most commands per minute on one connection; more close it with 421. Default 600.
    pub max_commands_per_minute: u32,
    /// PEM certificate chain and private key; offers STARTTLS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Longest line of message text accepted inside DATA, CRLF excluded.
pub const MAX_DATA_LINE_BYTES: usize = 64 * 1024;

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            hostname: "localhost".to_owned(),
            mail_domain: "localhost".to_owned(),
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 50,
            max_line_bytes: 4096,
            max_header_bytes: 256 * 1024,
            idle_timeout: Duration::from_secs(300),
            max_connections: 500,
            max_commands_per_minute: 600,
            tls: None,
        }
    }
}

/// Why a recipient is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such user: answered 550 5.1.1, the sender should not retry.
    #[error("unknown user")]
    UnknownUser,
    /// Cannot tell right now (directory unavailable...): 451 4.3.0, the sender retries.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The address exists but this sender may not use it (a reply address used by someone
    /// other than the notification's recipient): 550 5.7.1 with the text.
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

/// Who the listener hands recipients and messages to. Implemented by the server
/// (directory + durable ingest queue); tests implement it in memory.
pub trait MailSink: Send + Sync + 'static {
    /// A RCPT TO address at `mail_domain`: `local` is the user name, `label` the part after
    /// '+' (both lowercased); `mail_from` the envelope sender. `Ok(())` accepts;
    /// `Err(Refusal::UnknownUser)` → 550 5.1.1; `Err(Refusal::NotAllowed(text))` → 550 5.7.1;
    /// `Err(Refusal::Temporary(text))` → 451 4.3.0.
    fn check_recipient<'a>(
        &'a self,
        local: &'a str,
        label: Option<&'a str>,
        mail_from: &'a str,
    ) -> BoxFuture<'a, Result<(), Refusal>>;

    /// The whole message for its accepted recipients. Must return only once it is durable
    /// (then the session answers 250), or an error (→ 451 4.3.0, the client retries).
    fn deliver(&self, msg: AcceptedMail) -> BoxFuture<'_, Result<(), String>>;
}

/// One accepted recipient: `local[+label]@mail_domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    /// The user name, lowercased.
    pub local: String,
    /// The part after the first '+', lowercased; `None` when absent or empty.
    pub label: Option<String>,
}

/// A message the client finished sending, for the recipients that were accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedMail {
    /// The envelope sender (MAIL FROM); empty for the null reverse-path `<>`.
    pub mail_from: String,
    pub recipients: Vec<Recipient>,
    /// Exactly the DATA content, dot-unstuffed, with CRLF line endings (no terminator).
    pub raw: Vec<u8>,
    /// When the end of DATA was read, unix ms.
    pub received_at: i64,
    pub peer: SocketAddr,
    /// What the client said in EHLO/HELO.
    pub helo: String,
}
