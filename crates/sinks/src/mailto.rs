//! Email through the operator's SMTP relay (lettre): one multipart/alternative mail per
//! notification, with a text part and an HTML part built from the same fields, every field
//! HTML-escaped (safe by construction: no HTML from a notification is ever passed through)
//! and links made only for http(s) URLs. Headers: From is the relay's address, a
//! `Message-ID` derived from the notification and the recipient (a retry sends the same
//! id, so mail systems can drop the duplicate), `Date`, `List-Id` per source,
//! `Auto-Submitted: auto-generated` and `X-Auto-Response-Suppress: All` (no vacation
//! replies), and `Reply-To` when replies go somewhere. [`PlainMail`] is a text-only mail
//! through the same relay (a reply relayed to a mail source's sender).
//!
//! SMTP 4xx, connection trouble and timeouts are retried; 5xx fails. It does not queue
//! (the caller's outbox does), sign (DKIM is the relay's job) or read bounces.
//!
//! Apprise URLs: `mailto:alice@example.org`, `mailto://alice@example.org` (`mailtos://`
//! too: the relay decides the transport security), `mailto://example.org?to=alice@example.org`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncTransport, Tokio1Executor};
use serde_json::json;

use crate::text::{
    click_link, cut_bytes, cut_chars, html_escape, html_text, one_line, short_hash, web_link,
};
use crate::{Error, Message, Outcome};

pub(crate) const NO_RELAY: &str =
    "email delivery is not available: the operator has not configured an SMTP relay";
/// The largest message text put in a mail.
const MAX_TEXT_BYTES: usize = 64 * 1024;
const MAX_SUBJECT: usize = 200;

/// `{"kind": "mailto", "to": "alice@example.org"}`
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub to: String,
}

/// A bare address (`alice@example.org`, no display name), checked.
pub(crate) fn address_field(field: &str, value: &str) -> Result<Address, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::Invalid(format!("{field} is missing")));
    }
    if value.len() > 254 {
        return Err(Error::Invalid(format!(
            "{field} is too long: at most 254 characters"
        )));
    }
    Address::from_str(value).map_err(|_| {
        Error::Invalid(format!(
            "{field} must be an email address like alice@example.org"
        ))
    })
}

impl Config {
    pub(crate) fn prepare(self) -> Result<Config, Error> {
        let to = address_field("to", &self.to)?;
        Ok(Config { to: to.to_string() })
    }

    pub(crate) fn redacted(&self) -> serde_json::Value {
        json!({ "to": self.to })
    }

    pub(crate) fn address(&self) -> String {
        self.to.clone()
    }
}

/// How the relay connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum RelayTls {
    /// Plain text (a relay on localhost).
    #[serde(rename = "none")]
    None,
    /// A plain connection upgraded with STARTTLS (port 587); refused if the relay cannot.
    #[default]
    #[serde(rename = "starttls", alias = "start_tls")]
    StartTls,
    /// TLS from the first byte (port 465).
    #[serde(rename = "implicit", alias = "tls")]
    Implicit,
}

/// The operator's SMTP relay.
#[derive(Clone)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The From of every notification mail, e.g. `tidings <tidings@example.org>`; its
    /// address is the envelope sender of every mail.
    pub from: String,
    /// For each step of an SMTP conversation, and the whole of it.
    pub timeout: Duration,
    /// Tests only: accept the relay's certificate whatever it is.
    pub accept_invalid_certs: bool,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_set", &self.password.is_some())
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

/// A text-only mail (a reply relayed back to a mail source's sender).
#[derive(Debug, Clone, PartialEq)]
pub struct PlainMail {
    /// `Name <address>` or a bare address.
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    /// A Message-ID (`<id@host>`) this mail answers.
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub reply_to: Option<String>,
}

/// The relay client: one SMTP connection per mail (no pool to go stale).
#[derive(Clone)]
pub(crate) struct Relay {
    cfg: Arc<RelayConfig>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
}

impl Relay {
    pub(crate) fn new(cfg: RelayConfig) -> Result<Relay, Error> {
        let from = Mailbox::from_str(cfg.from.trim()).map_err(|e| {
            Error::Config(format!(
                "relay from {:?} is not a mailbox like \"tidings <tidings@example.org>\": {e}",
                cfg.from
            ))
        })?;
        let host = cfg.host.trim().to_owned();
        if host.is_empty() {
            return Err(Error::Config("relay host is missing".into()));
        }
        if cfg.timeout.is_zero() {
            return Err(Error::Config("relay timeout must be above zero".into()));
        }
        let domain = from.email.domain().to_owned();
        let tls_parameters = || {
            TlsParameters::builder(host.clone())
                .dangerous_accept_invalid_certs(cfg.accept_invalid_certs)
                .dangerous_accept_invalid_hostnames(cfg.accept_invalid_certs)
                .build_rustls()
                .map_err(|e| Error::Config(format!("relay TLS: {e}")))
        };
        let tls = match cfg.tls {
            RelayTls::None => Tls::None,
            RelayTls::StartTls => Tls::Required(tls_parameters()?),
            RelayTls::Implicit => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout))
            .hello_name(ClientId::Domain(domain.clone()));
        if let Some(user) = &cfg.username {
            builder = builder
                .credentials(Credentials::new(
                    user.clone(),
                    cfg.password.clone().unwrap_or_default(),
                ))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Relay {
            transport: builder.build(),
            cfg: Arc::new(cfg),
            from,
            domain,
        })
    }

    pub(crate) fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    pub(crate) async fn send_notification(&self, cfg: &Config, msg: &Message) -> Outcome {
        let to = match address_field("to", &cfg.to) {
            Ok(to) => to,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let mail = match notification_mail(&self.from, &self.domain, &to, msg) {
            Ok(mail) => mail,
            Err(e) => return Outcome::failed(e),
        };
        self.deliver(mail).await
    }

    pub(crate) async fn send_plain(&self, mail: &PlainMail) -> Outcome {
        match plain_mail(&self.from, &self.domain, mail) {
            Ok(m) => self.deliver(m).await,
            Err(e) => Outcome::failed(e),
        }
    }

    async fn deliver(&self, mail: lettre::Message) -> Outcome {
        // lettre's timeout is per step; the conversation as a whole gets a bound too.
        let whole = self.cfg.timeout.saturating_mul(2);
        match tokio::time::timeout(whole, self.transport.send(mail)).await {
            Err(_) => Outcome::retry("the SMTP relay did not answer in time (timed out)"),
            Ok(Ok(response)) => Outcome::Delivered {
                status: response.code().to_string().parse().ok(),
            },
            Ok(Err(e)) => classify_smtp_error(&e),
        }
    }
}

/// SMTP 4xx, timeouts and connection trouble are worth retrying; 5xx and mails the relay
/// cannot take as they are (e.g. a non-ASCII address without SMTPUTF8) are not.
fn classify_smtp_error(e: &lettre::transport::smtp::Error) -> Outcome {
    let status = e.status().and_then(|c| c.to_string().parse::<u16>().ok());
    let error = format!("SMTP relay: {}", error_chain(e));
    if e.is_permanent() || e.is_client() {
        Outcome::Failed { status, error }
    } else {
        Outcome::Retry {
            status,
            error,
            retry_after: None,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    // lettre's Display already includes its direct source; add the deeper causes.
    let mut text = e.to_string();
    let mut source = e.source().and_then(|s| s.source());
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    cut_chars(&one_line(&text), 500)
}

fn header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_owned())
}

/// `<a@b>`: one message id, nothing that could end the header.
fn valid_msg_id(id: &str) -> bool {
    id.len() <= 250
        && id.starts_with('<')
        && id.ends_with('>')
        && id.contains('@')
        && id[1..id.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// The notification's Message-ID: the same for a notification and recipient on every
/// attempt.
pub fn message_id(notification_id: &str, to: &str, domain: &str) -> String {
    let id: String = notification_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    format!(
        "<{id}.{}@{domain}>",
        short_hash(&to.to_ascii_lowercase(), 16)
    )
}

/// The subject: the title, else the message's first line, else the source.
pub fn subject(msg: &Message) -> String {
    let n = &msg.notification;
    let title = n.title.as_deref().map(one_line).filter(|t| !t.is_empty());
    let first_line = n.message.lines().map(one_line).find(|l| !l.is_empty());
    let s = title
        .or(first_line)
        .unwrap_or_else(|| format!("Notification from {}", one_line(&msg.source_name)));
    cut_chars(&s, MAX_SUBJECT)
}

/// The footer line: source, priority (unless default), tags.
fn footer(msg: &Message) -> String {
    let n = &msg.notification;
    let mut parts = vec![one_line(&msg.source_name)];
    if n.priority != tidings_core::Priority::Default {
        parts.push(format!("priority {}", n.priority.name()));
    }
    if !n.tags.is_empty() {
        let tags: Vec<String> = n
            .tags
            .iter()
            .take(20)
            .map(|t| format!("#{}", one_line(t)))
            .collect();
        parts.push(cut_chars(&tags.join(" "), 500));
    }
    cut_chars(&parts.join(" · "), 1000)
}

/// The text part.
pub fn text_body(msg: &Message) -> String {
    let n = &msg.notification;
    let mut out = String::new();
    if let Some(title) = n.title.as_deref().map(one_line).filter(|t| !t.is_empty()) {
        out.push_str(&cut_chars(&title, 1024));
        out.push_str("\n\n");
    }
    let message = cut_bytes(n.message.trim(), MAX_TEXT_BYTES);
    if !message.is_empty() {
        out.push_str(&message);
        out.push_str("\n\n");
    }
    if let Some(click) = n.click.as_deref().filter(|c| c.len() <= 2048) {
        out.push_str(&format!("Link: {}\n", one_line(click)));
    }
    if let Some(web) = web_link(msg) {
        out.push_str(&format!("View in tidings: {web}\n"));
    }
    out.push_str("\n-- \n");
    out.push_str(&footer(msg));
    out.push('\n');
    out
}

/// The HTML part: the same fields as the text part, each escaped; links only for http(s).
pub fn html_body(msg: &Message) -> String {
    let n = &msg.notification;
    let title = n.title.as_deref().map(one_line).filter(|t| !t.is_empty());
    let mut out = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    out.push_str(&format!(
        "<title>{}</title></head>\n<body style=\"font-family: sans-serif\">\n",
        html_escape(&subject(msg))
    ));
    if let Some(t) = &title {
        out.push_str(&format!("<h2>{}</h2>\n", html_escape(&cut_chars(t, 1024))));
    }
    let message = cut_bytes(n.message.trim(), MAX_TEXT_BYTES);
    if !message.is_empty() {
        out.push_str(&format!("<p>{}</p>\n", html_text(&message)));
    }
    if let Some(click) = click_link(msg) {
        let c = html_escape(click);
        out.push_str(&format!("<p><a href=\"{c}\">{c}</a></p>\n"));
    } else if let Some(click) = n.click.as_deref().filter(|c| c.len() <= 2048) {
        out.push_str(&format!("<p>{}</p>\n", html_escape(&one_line(click))));
    }
    if let Some(web) = web_link(msg) {
        out.push_str(&format!(
            "<p><a href=\"{}\">View in tidings</a></p>\n",
            html_escape(web)
        ));
    }
    out.push_str(&format!(
        "<hr>\n<p style=\"color: #666; font-size: small\">{}</p>\n</body></html>\n",
        html_escape(&footer(msg))
    ));
    out
}

fn notification_mail(
    from: &Mailbox,
    domain: &str,
    to: &Address,
    msg: &Message,
) -> Result<lettre::Message, String> {
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to.clone()))
        .subject(subject(msg))
        .message_id(Some(message_id(
            &msg.notification.id.0,
            to.as_ref(),
            domain,
        )))
        .date(SystemTime::now())
        .raw_header(header("Auto-Submitted", "auto-generated"))
        .raw_header(header("X-Auto-Response-Suppress", "All"))
        .envelope(
            lettre::address::Envelope::new(Some(from.email.clone()), vec![to.clone()])
                .map_err(|e| e.to_string())?,
        );
    if let Some(list_id) =
        msg.list_id.as_deref().map(str::trim).filter(|l| {
            !l.is_empty() && l.len() <= 255 && l.bytes().all(|b| (32..127).contains(&b))
        })
    {
        builder = builder.raw_header(header("List-Id", list_id));
    }
    if let Some(reply_to) = msg
        .reply_to
        .as_deref()
        .and_then(|r| Mailbox::from_str(r.trim()).ok())
    {
        builder = builder.reply_to(reply_to);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            text_body(msg),
            html_body(msg),
        ))
        .map_err(|e| format!("the mail could not be built: {e}"))
}

fn plain_mail(
    relay_from: &Mailbox,
    domain: &str,
    mail: &PlainMail,
) -> Result<lettre::Message, String> {
    let from = Mailbox::from_str(mail.from.trim()).map_err(|_| {
        format!(
            "from {:?} is not a valid mailbox",
            cut_chars(&mail.from, 100)
        )
    })?;
    let to = Mailbox::from_str(mail.to.trim())
        .map_err(|_| format!("to {:?} is not a valid mailbox", cut_chars(&mail.to, 100)))?;
    let random = tidings_core::secret::random_secret("");
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .to(to.clone())
        .subject(cut_chars(&one_line(&mail.subject), MAX_SUBJECT))
        .message_id(Some(format!("<{random}@{domain}>")))
        .date(SystemTime::now())
        .envelope(
            lettre::address::Envelope::new(Some(relay_from.email.clone()), vec![to.email.clone()])
                .map_err(|e| e.to_string())?,
        );
    if from.email != relay_from.email {
        // The relay's address sends on the From's behalf.
        builder = builder.sender(relay_from.clone());
    }
    if let Some(id) = mail
        .in_reply_to
        .as_deref()
        .map(str::trim)
        .filter(|i| valid_msg_id(i))
    {
        builder = builder.in_reply_to(id.to_owned());
    }
    let references: Vec<&str> = mail
        .references
        .iter()
        .map(|r| r.trim())
        .filter(|r| valid_msg_id(r))
        .collect();
    // The last ones matter for threading; a chain can grow without end.
    let start = references.len().saturating_sub(20);
    if !references.is_empty() {
        builder = builder.references(references[start..].join(" "));
    }
    if let Some(reply_to) = mail
        .reply_to
        .as_deref()
        .and_then(|r| Mailbox::from_str(r.trim()).ok())
    {
        builder = builder.reply_to(reply_to);
    }
    builder
        .singlepart(SinglePart::plain(cut_bytes(&mail.text, MAX_TEXT_BYTES)))
        .map_err(|e| format!("the mail could not be built: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::message;

    #[test]
    fn message_ids_are_derived() {
        let a = message_id("01hf3zzzzzzzzzzzzzzz", "Alice@Example.org", "example.org");
        assert_eq!(
            a,
            message_id("01hf3zzzzzzzzzzzzzzz", "alice@example.org", "example.org")
        );
        assert_ne!(
            a,
            message_id("01hf3zzzzzzzzzzzzzzz", "bob@example.org", "example.org")
        );
        assert!(a.starts_with("<01hf3zzzzzzzzzzzzzzz.") && a.ends_with("@example.org>"));
        assert!(valid_msg_id(&a));
    }

    #[test]
    fn subjects() {
        let mut msg = message();
        assert_eq!(subject(&msg), "nightly");
        msg.notification.title = None;
        msg.notification.message = "\n\n  first line \nsecond".into();
        assert_eq!(subject(&msg), "first line");
        msg.notification.message = String::new();
        assert_eq!(subject(&msg), "Notification from backups");
        msg.notification.title = Some("a\r\nBcc: evil@example.org".into());
        assert_eq!(subject(&msg), "a Bcc: evil@example.org");
    }

    #[test]
    fn text_part() {
        assert_eq!(
            text_body(&message()),
            "nightly\n\nBackup finished\nall good\n\nLink: https://grafana.example/d/1\nView in tidings: https://tidings.example/n/01hf3zzzzzzzzzzzzzzz\n\n-- \nbackups · priority high · #backup\n"
        );
    }

    #[test]
    fn html_part_is_escaped_and_links_only_http() {
        let mut msg = message();
        msg.notification.title = Some("<b>bold</b>".into());
        msg.notification.message = "<script>alert('x')</script>\n& more".into();
        msg.notification.click = Some("javascript:alert(1)".into());
        let html = html_body(&msg);
        assert!(html.contains("<h2>&lt;b&gt;bold&lt;/b&gt;</h2>"), "{html}");
        assert!(
            html.contains("<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;<br>\n&amp; more</p>"),
            "{html}"
        );
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("<p>javascript:alert(1)</p>"));
        assert!(html.contains(
            "<a href=\"https://tidings.example/n/01hf3zzzzzzzzzzzzzzz\">View in tidings</a>"
        ));
        msg.notification.click = Some("https://x.example/?a=1&b=\"2\"".into());
        let html = html_body(&msg);
        assert!(
            html.contains("<a href=\"https://x.example/?a=1&amp;b=&quot;2&quot;\">"),
            "{html}"
        );
    }

    #[test]
    fn addresses() {
        assert!(
            Config {
                to: " alice@example.org ".into()
            }
            .prepare()
            .is_ok()
        );
        for bad in [
            "",
            "alice",
            "Alice <alice@example.org>",
            "a@b@c",
            "alice@example.org\r\nBcc: x@y",
        ] {
            let err = Config { to: bad.into() }.prepare().unwrap_err().to_string();
            assert!(err.starts_with("to"), "{bad}: {err}");
        }
    }

    #[test]
    fn relay_config_is_checked() {
        let cfg = RelayConfig {
            host: "127.0.0.1".into(),
            port: 25,
            tls: RelayTls::None,
            username: None,
            password: Some("hunter2".into()),
            from: "not a mailbox".into(),
            timeout: Duration::from_secs(5),
            accept_invalid_certs: false,
        };
        assert!(matches!(Relay::new(cfg.clone()), Err(Error::Config(_))));
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let ok = RelayConfig {
            from: "tidings <tidings@example.org>".into(),
            ..cfg
        };
        assert_eq!(Relay::new(ok).unwrap().domain, "example.org");
    }
}
