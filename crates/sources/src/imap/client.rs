//! The IMAP session: connection (policy check, TLS, STARTTLS), login, the folder opened
//! read-only, and the two operations a source needs (`fetch_new`, `idle`). Every read and
//! write is bounded in time; every response in size.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

use super::proto::{
    Command, FetchData, FrameError, RespText, Response, Status, Untagged, base64, frame_len,
    parse_response, uid_set,
};
use super::{ImapAccount, ImapConfig, ImapCursor, ImapError, NewMail, TlsMode};

/// Longest response line outside literals; real ones are a few hundred bytes.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Room around a message literal in a FETCH response (the attribute names, UID...).
const FRAME_SLACK: usize = 64 * 1024;
/// RFC 2177: clients should re-issue IDLE at least every 29 minutes.
const MAX_IDLE_ROUND: Duration = Duration::from_secs(28 * 60);

/// Ends every address refusal, so the user learns it is a policy and who can change it.
const OPERATOR_HINT: &str =
    "the operator can allow private networks (allow_private_networks) or allowlist the address";

/// Anything the session can run over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A logged-in IMAP session with the folder opened read-only.
pub struct ImapClient {
    conn: Conn<Box<dyn Io>>,
    state: State,
    folder: String,
    cfg: ImapConfig,
    capabilities: Vec<String>,
    /// Set while an operation runs and cleared when it ends well: a session whose last
    /// operation failed, or whose future was dropped half-way, is not used again.
    broken: bool,
}

impl std::fmt::Debug for ImapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapClient")
            .field("folder", &self.folder)
            .field("capabilities", &self.capabilities)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// What the server told us about the open folder, from untagged responses.
#[derive(Debug, Default)]
struct State {
    exists: u32,
    uid_validity: Option<u32>,
    uid_next: Option<u32>,
    /// New mail may have arrived (EXISTS, or RECENT above 0) since the folder was last
    /// opened by `fetch_new`.
    changed: bool,
    /// The latest untagged CAPABILITY response.
    capabilities: Option<Vec<String>>,
}

impl State {
    fn observe(&mut self, response: Untagged) {
        match response {
            Untagged::Exists(n) => {
                self.exists = n;
                self.changed = true;
            }
            Untagged::Recent(n) if n > 0 => self.changed = true,
            Untagged::Expunge(_) => self.exists = self.exists.saturating_sub(1),
            Untagged::Status(
                Status::Ok,
                RespText {
                    code: Some(code), ..
                },
            ) => match code.name.as_str() {
                "UIDVALIDITY" => self.uid_validity = code.number(),
                "UIDNEXT" => self.uid_next = code.number(),
                _ => {}
            },
            Untagged::Status(_, text) if text.code.as_ref().is_some_and(|c| c.name == "ALERT") => {
                tracing::warn!(alert = %text.text, "imap server alert");
            }
            Untagged::Capability(caps) => self.capabilities = Some(caps),
            _ => {}
        }
    }
}

/// What one `fetch_new` call returns: the mail, the cursor after it, and warnings.
type Fetched = (Vec<NewMail>, ImapCursor, Vec<String>);

impl ImapClient {
    /// Resolves the host, refuses addresses the policy forbids, connects (TLS as the
    /// account says), logs in and opens the folder read-only.
    pub async fn connect(acc: &ImapAccount, cfg: &ImapConfig) -> Result<Self, ImapError> {
        let tcp = connect_tcp(acc, cfg).await?;
        let _ = tcp.set_nodelay(true);
        let frame_max = frame_limit(cfg);
        let (conn, greeting): (Conn<Box<dyn Io>>, Greeting) = match acc.tls {
            TlsMode::Plain => {
                let mut conn = Conn::new(Box::new(tcp) as Box<dyn Io>, cfg, frame_max);
                let greeting = within(cfg.connect_timeout, conn.greeting()).await?;
                (conn, greeting)
            }
            TlsMode::Implicit => {
                let tls = tls_handshake(tcp, &acc.host, cfg).await?;
                let mut conn = Conn::new(Box::new(tls) as Box<dyn Io>, cfg, frame_max);
                let greeting = within(cfg.connect_timeout, conn.greeting()).await?;
                (conn, greeting)
            }
            TlsMode::StartTls => {
                let plain = Conn::new(tcp, cfg, frame_max);
                let tcp = within(cfg.connect_timeout, plain.starttls()).await?;
                let tls = tls_handshake(tcp, &acc.host, cfg).await?;
                // Capabilities learnt before TLS are not to be trusted; ask again.
                let greeting = Greeting {
                    preauth: false,
                    capabilities: None,
                };
                (
                    Conn::new(Box::new(tls) as Box<dyn Io>, cfg, frame_max),
                    greeting,
                )
            }
        };
        ImapClient::start(conn, greeting, acc, cfg).await
    }

    /// Logs in and opens the folder, over a connection whose greeting was read.
    async fn start(
        conn: Conn<Box<dyn Io>>,
        greeting: Greeting,
        acc: &ImapAccount,
        cfg: &ImapConfig,
    ) -> Result<Self, ImapError> {
        let mut client = ImapClient {
            conn,
            state: State::default(),
            folder: acc.folder.clone(),
            cfg: cfg.clone(),
            capabilities: greeting.capabilities.unwrap_or_default(),
            broken: true,
        };
        if client.capabilities.is_empty() {
            client.refresh_capabilities().await?;
        }
        if !greeting.preauth {
            client.login(&acc.username, &acc.password).await?;
        }
        client.examine().await?;
        client.broken = false;
        Ok(client)
    }

    /// Whether the server offers IDLE; without it [`ImapClient::idle`] waits and polls.
    pub fn supports_idle(&self) -> bool {
        self.has_capability("IDLE")
    }

    /// Mail after the cursor, oldest first, and the cursor to persist once that mail is
    /// durably queued. Without a cursor (first use) no mail is returned and the cursor is
    /// set at the current end, so a new source does not flood its user with old mail.
    /// If the folder's UIDVALIDITY differs from the cursor's, its UIDs mean nothing any
    /// more: the cursor is set at the current end again, with a warning. At most
    /// `max_messages_per_fetch` messages and about `max_fetch_bytes` bytes are returned
    /// (call again while the cursor moves); a message over `max_message_bytes` is skipped
    /// with a warning and never downloaded. The same cursor gives the same mail as long
    /// as the folder keeps it, so a caller that crashes before persisting loses nothing.
    /// Nothing in the mailbox is changed: messages are read with BODY.PEEK.
    pub async fn fetch_new(&mut self, cursor: Option<ImapCursor>) -> Result<Fetched, ImapError> {
        self.usable()?;
        self.broken = true;
        let fetched = self.fetch_new_inner(cursor).await?;
        self.broken = false;
        Ok(fetched)
    }

    /// Waits until the server reports new mail in the folder (EXISTS or RECENT) or `max`
    /// elapses, and says whether something changed (true: call `fetch_new`). With IDLE,
    /// the command is renewed every `idle_refresh` (under 29 minutes, RFC 2177); without
    /// it, waits `max` and asks with NOOP. Returns at once if news came in earlier.
    /// Dropping the future leaves the session unusable (drop it too).
    pub async fn idle(&mut self, max: Duration) -> Result<bool, ImapError> {
        self.usable()?;
        self.broken = true;
        let changed = self.idle_inner(max).await?;
        self.broken = false;
        Ok(changed)
    }

    /// Says goodbye (briefly; errors are of no interest any more) and closes.
    pub async fn logout(mut self) {
        let wait = self.cfg.read_timeout.min(Duration::from_secs(5));
        if !self.broken {
            let state = &mut self.state;
            let _ = timeout(
                wait,
                self.conn.run(Command::new("LOGOUT"), |u| state.observe(u)),
            )
            .await;
        }
        let _ = timeout(wait, self.conn.stream.shutdown()).await;
    }

    fn usable(&self) -> Result<(), ImapError> {
        if self.broken {
            Err(ImapError::Protocol(
                "this session failed or was interrupted earlier; connect again".to_owned(),
            ))
        } else {
            Ok(())
        }
    }

    fn has_capability(&self, name: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
    }

    fn literal_plus(&self) -> bool {
        self.has_capability("LITERAL+")
    }

    /// Runs a command, feeding untagged responses to the folder state.
    async fn run(&mut self, cmd: Command) -> Result<(Status, RespText), ImapError> {
        let state = &mut self.state;
        self.conn.run(cmd, |u| state.observe(u)).await
    }

    /// Runs a command that must succeed; NO and BAD become protocol errors.
    async fn run_ok(&mut self, cmd: Command) -> Result<RespText, ImapError> {
        let verb = cmd.verb;
        match self.run(cmd).await? {
            (Status::Ok, text) => Ok(text),
            (status, text) => Err(refused(verb, status, &text)),
        }
    }

    async fn refresh_capabilities(&mut self) -> Result<(), ImapError> {
        self.state.capabilities = None;
        self.run_ok(Command::new("CAPABILITY")).await?;
        self.capabilities = self.state.capabilities.take().ok_or_else(|| {
            ImapError::Protocol("the server answered CAPABILITY without capabilities".into())
        })?;
        Ok(())
    }

    async fn login(&mut self, username: &str, password: &str) -> Result<(), ImapError> {
        let literal_plus = self.literal_plus();
        let cmd = if !self.has_capability("LOGINDISABLED") {
            Command::new("LOGIN")
                .astring(username.as_bytes(), literal_plus)
                .astring(password.as_bytes(), literal_plus)
        } else if self.has_capability("AUTH=PLAIN") {
            let mut token = Vec::with_capacity(username.len() + password.len() + 2);
            token.push(0);
            token.extend_from_slice(username.as_bytes());
            token.push(0);
            token.extend_from_slice(password.as_bytes());
            let token = base64(&token, b'/', true);
            if self.has_capability("SASL-IR") {
                Command::new("AUTHENTICATE").raw("PLAIN").raw(&token)
            } else {
                Command::continued("AUTHENTICATE", "PLAIN", token.into_bytes())
            }
        } else {
            return Err(ImapError::Auth(
                "the IMAP server does not accept a password login on this connection \
                 (it announces LOGINDISABLED and no AUTH=PLAIN); try TLS"
                    .to_owned(),
            ));
        };
        match self.run(cmd).await? {
            (Status::Ok, text) => {
                // The capabilities may change with the login; many servers say how here.
                match text.code.filter(|c| c.name == "CAPABILITY") {
                    Some(code) => self.capabilities = code.capabilities(),
                    None => self.refresh_capabilities().await?,
                }
                Ok(())
            }
            (Status::No, text) => Err(ImapError::Auth(format!(
                "the IMAP server refused the login of \"{username}\": {}",
                text.text.trim()
            ))),
            (status, text) => Err(refused("LOGIN", status, &text)),
        }
    }

    /// Opens the folder read-only and learns its UIDVALIDITY, UIDNEXT and size afresh.
    async fn examine(&mut self) -> Result<(), ImapError> {
        self.state.uid_validity = None;
        self.state.uid_next = None;
        self.state.exists = 0;
        let cmd = Command::new("EXAMINE").mailbox(&self.folder, self.literal_plus());
        match self.run(cmd).await? {
            (Status::Ok, _) => {}
            (Status::No, text) => {
                tracing::debug!(folder = %self.folder, %text, "imap folder refused");
                return Err(ImapError::NoFolder(self.folder.clone()));
            }
            (status, text) => return Err(refused("EXAMINE", status, &text)),
        }
        // What EXAMINE reported is the starting point, not news.
        self.state.changed = false;
        if self.state.uid_validity.is_none() {
            return Err(ImapError::Protocol(
                "the server did not tell the folder's UIDVALIDITY".to_owned(),
            ));
        }
        Ok(())
    }

    async fn fetch_new_inner(&mut self, cursor: Option<ImapCursor>) -> Result<Fetched, ImapError> {
        self.examine().await?;
        let uid_validity = self.state.uid_validity.unwrap_or_default();
        let mut warnings = Vec::new();
        let cursor = match cursor {
            Some(c) if c.uid_validity == uid_validity => c,
            previous => {
                let last_uid = self.current_end().await?;
                if let Some(old) = previous {
                    warnings.push(format!(
                        "the folder \"{}\" was recreated or renumbered by the server \
                         (UIDVALIDITY {} is now {uid_validity}): mail in it now is not \
                         notified, and mail that arrived since the last check may have \
                         been missed; watching from UID {} on",
                        self.folder,
                        old.uid_validity,
                        last_uid.saturating_add(1)
                    ));
                }
                let cursor = ImapCursor {
                    uid_validity,
                    last_uid,
                };
                return Ok((Vec::new(), cursor, warnings));
            }
        };
        let Some(first) = cursor.last_uid.checked_add(1) else {
            return Ok((Vec::new(), cursor, warnings));
        };
        if self.state.exists == 0 || self.state.uid_next.is_some_and(|next| next <= first) {
            return Ok((Vec::new(), cursor, warnings));
        }

        // Which messages are new, and how big. `first:*` also names the last message
        // when every UID is below `first`, hence the filter.
        let mut candidates: Vec<(u32, u32)> = Vec::new();
        let cmd = Command::new("UID FETCH").raw(&format!("{first}:* (UID RFC822.SIZE)"));
        let state = &mut self.state;
        let (status, text) = self
            .conn
            .run(cmd, |u| match u {
                Untagged::Fetch(
                    _,
                    FetchData {
                        uid: Some(uid),
                        size: Some(size),
                        ..
                    },
                ) if uid >= first => candidates.push((uid, size)),
                other => state.observe(other),
            })
            .await?;
        if status != Status::Ok {
            return Err(refused("UID FETCH", status, &text));
        }
        candidates.sort_unstable();
        candidates.dedup_by_key(|c| c.0);

        // Take them in UID order, within the limits; the cursor moves over the ones taken
        // and the ones skipped for size, and stops before the first left for next time.
        let max_bytes = self.cfg.max_message_bytes;
        let mut take = Vec::new();
        let mut total = 0usize;
        let mut last_uid = cursor.last_uid;
        for &(uid, size) in &candidates {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > max_bytes {
                warnings.push(too_large(uid, size, max_bytes));
                last_uid = uid;
                continue;
            }
            if take.len() >= self.cfg.max_messages_per_fetch.max(1)
                || (!take.is_empty() && total.saturating_add(size) > self.cfg.max_fetch_bytes)
            {
                break;
            }
            total = total.saturating_add(size);
            take.push(uid);
            last_uid = uid;
        }

        let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
        if !take.is_empty() {
            // A partial fetch one byte over the limit: a server that misstated the size
            // cannot make us read more than that.
            let limit = u32::try_from(max_bytes.saturating_add(1)).unwrap_or(u32::MAX);
            let cmd = Command::new("UID FETCH")
                .raw(&format!("{} (UID BODY.PEEK[]<0.{limit}>)", uid_set(&take)));
            let state = &mut self.state;
            let (status, text) = self
                .conn
                .run(cmd, |u| match u {
                    Untagged::Fetch(
                        _,
                        FetchData {
                            uid: Some(uid),
                            body: Some(body),
                            ..
                        },
                    ) => {
                        bodies.insert(uid, body);
                    }
                    other => state.observe(other),
                })
                .await?;
            if status != Status::Ok {
                return Err(refused("UID FETCH", status, &text));
            }
        }

        let mut mails = Vec::with_capacity(take.len());
        for uid in take {
            match bodies.remove(&uid) {
                Some(raw) if raw.len() > max_bytes => {
                    warnings.push(too_large(uid, raw.len(), max_bytes));
                }
                Some(raw) => mails.push(NewMail { uid, raw }),
                None => warnings.push(format!(
                    "message UID {uid} was deleted before it could be read: skipped"
                )),
            }
        }
        let cursor = ImapCursor {
            uid_validity,
            last_uid,
        };
        Ok((mails, cursor, warnings))
    }

    /// The highest UID in the open folder (0 when empty): where a new cursor starts.
    async fn current_end(&mut self) -> Result<u32, ImapError> {
        if let Some(next) = self.state.uid_next {
            return Ok(next.saturating_sub(1));
        }
        if self.state.exists == 0 {
            return Ok(0);
        }
        // No UIDNEXT (allowed before RFC 3501 servers): ask for the last message's UID.
        let mut highest = 0;
        let state = &mut self.state;
        let (status, text) = self
            .conn
            .run(Command::new("UID FETCH").raw("* (UID)"), |u| match u {
                Untagged::Fetch(_, FetchData { uid: Some(uid), .. }) => {
                    highest = highest.max(uid);
                }
                other => state.observe(other),
            })
            .await?;
        if status != Status::Ok {
            return Err(refused("UID FETCH", status, &text));
        }
        Ok(highest)
    }

    async fn idle_inner(&mut self, max: Duration) -> Result<bool, ImapError> {
        if std::mem::take(&mut self.state.changed) {
            return Ok(true);
        }
        let deadline = Instant::now() + max;
        if !self.supports_idle() {
            tokio::time::sleep_until(deadline).await;
            self.run_ok(Command::new("NOOP")).await?;
            return Ok(std::mem::take(&mut self.state.changed));
        }
        let round = self
            .cfg
            .idle_refresh
            .clamp(Duration::from_secs(1), MAX_IDLE_ROUND);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.idle_round(deadline.min(now + round)).await?;
            if std::mem::take(&mut self.state.changed) {
                return Ok(true);
            }
        }
    }

    /// One IDLE command: until news or `until`, then DONE.
    async fn idle_round(&mut self, until: Instant) -> Result<(), ImapError> {
        let tag = self.conn.next_tag();
        self.conn
            .write(format!("{tag} IDLE\r\n").as_bytes())
            .await?;
        loop {
            match self.conn.read_response().await? {
                Response::Continuation(_) => break,
                Response::Untagged(u) => self.state.observe(u),
                Response::Tagged {
                    tag: t,
                    status,
                    text,
                } if t == tag => return Err(refused("IDLE", status, &text)),
                other => return Err(unexpected(&other)),
            }
        }
        while !self.state.changed {
            match self.conn.read_response_by(until).await? {
                None => break,
                Some(Response::Untagged(u)) => self.state.observe(u),
                Some(other) => return Err(unexpected(&other)),
            }
        }
        self.conn.write(b"DONE\r\n").await?;
        loop {
            match self.conn.read_response().await? {
                Response::Untagged(u) => self.state.observe(u),
                Response::Tagged {
                    tag: t,
                    status: Status::Ok,
                    ..
                } if t == tag => return Ok(()),
                Response::Tagged {
                    tag: t,
                    status,
                    text,
                } if t == tag => return Err(refused("IDLE", status, &text)),
                other => return Err(unexpected(&other)),
            }
        }
    }
}

fn too_large(uid: u32, size: usize, max: usize) -> String {
    format!("message UID {uid} is {size} bytes, over the limit of {max} bytes: skipped")
}

fn refused(verb: &str, status: Status, text: &RespText) -> ImapError {
    let word = match status {
        Status::No => "refused",
        Status::Bad => "rejected as malformed",
        _ => "answered unexpectedly",
    };
    ImapError::Protocol(format!("the server {word} {verb}: {text}"))
}

fn unexpected(response: &Response) -> ImapError {
    let what = match response {
        Response::Continuation(_) => "a continuation request".to_owned(),
        Response::Untagged(u) => format!("{u:?}"),
        Response::Tagged { tag, .. } => format!("a reply to unknown tag {tag:?}"),
    };
    ImapError::Protocol(format!("unexpected {what} from the server"))
}

fn frame_limit(cfg: &ImapConfig) -> usize {
    cfg.max_message_bytes
        .saturating_add(1)
        .saturating_add(FRAME_SLACK)
}

async fn within<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, ImapError>>,
) -> Result<T, ImapError> {
    timeout(limit, fut).await.map_err(|_| ImapError::Timeout)?
}

/// Resolves the host and connects to the first address the policy allows and that
/// answers. Plain IMAP is refused to anything but loopback unless allowed.
async fn connect_tcp(acc: &ImapAccount, cfg: &ImapConfig) -> Result<TcpStream, ImapError> {
    let host = acc.host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ImapError::Connect("no host given".to_owned()));
    }
    let resolved: Vec<SocketAddr> = timeout(
        cfg.connect_timeout,
        tokio::net::lookup_host((host, acc.port)),
    )
    .await
    .map_err(|_| ImapError::Timeout)?
    .map_err(|e| ImapError::Connect(format!("cannot resolve \"{host}\": {e}")))?
    .collect();
    if resolved.is_empty() {
        return Err(ImapError::Connect(format!("\"{host}\" has no address")));
    }
    let mut refusal = None;
    let mut failures = Vec::new();
    for addr in resolved {
        let ip = addr.ip();
        if let Err(reason) = cfg.check_address(ip) {
            refusal.get_or_insert_with(|| {
                ImapError::Connect(format!(
                    "{ip} (the address of \"{host}\") is {reason}: refused; {OPERATOR_HINT}"
                ))
            });
            continue;
        }
        if acc.tls == TlsMode::Plain && !cfg.allow_plaintext && !is_loopback(ip) {
            refusal.get_or_insert_with(|| {
                ImapError::Tls(format!(
                    "refusing to send the password without TLS to {ip}: use implicit TLS \
                     or STARTTLS (plain IMAP is only for loopback)"
                ))
            });
            continue;
        }
        match timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
            Err(_) => failures.push(format!("{addr}: timed out")),
        }
    }
    match refusal {
        Some(err) if failures.is_empty() => Err(err),
        _ => Err(ImapError::Connect(failures.join("; "))),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn tls_connector(cfg: &ImapConfig) -> Result<TlsConnector, ImapError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in &cfg.extra_root_certs {
        roots
            .add(cert.clone())
            .map_err(|e| ImapError::Tls(format!("an extra root certificate is unusable: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn tls_handshake(
    tcp: TcpStream,
    host: &str,
    cfg: &ImapConfig,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ImapError::Tls(format!("\"{host}\" is not a valid TLS server name")))?;
    let connector = tls_connector(cfg)?;
    timeout(cfg.connect_timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| ImapError::Timeout)?
        .map_err(|e| ImapError::Tls(format!("handshake with {host}: {e}")))
}

/// What the server said first.
struct Greeting {
    preauth: bool,
    capabilities: Option<Vec<String>>,
}

/// A connection: the stream, the bytes read but not yet parsed, and tags.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    read_timeout: Duration,
    frame_max: usize,
    tag: u32,
    /// The text of a BYE, for the error when the server then closes.
    bye: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, cfg: &ImapConfig, frame_max: usize) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            read_timeout: cfg.read_timeout,
            frame_max,
            tag: 0,
            bye: None,
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("t{}", self.tag)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        timeout(self.read_timeout, io)
            .await
            .map_err(|_| ImapError::Timeout)?
            .map_err(|e| ImapError::Connect(format!("writing to the server: {e}")))
    }

    /// The next response, within the read timeout.
    async fn read_response(&mut self) -> Result<Response, ImapError> {
        let deadline = Instant::now() + self.read_timeout;
        self.read_response_by(deadline)
            .await?
            .ok_or(ImapError::Timeout)
    }

    /// The next response, or `None` if `deadline` comes first. Cancel-safe: bytes read
    /// stay in the buffer for the next call.
    async fn read_response_by(&mut self, deadline: Instant) -> Result<Option<Response>, ImapError> {
        loop {
            match frame_len(&self.buf, MAX_LINE_BYTES, self.frame_max) {
                Ok(Some(n)) => {
                    let rest = self.buf.split_off(n);
                    let bytes = std::mem::replace(&mut self.buf, rest);
                    let response = parse_response(&bytes).map_err(frame_error)?;
                    if let Response::Untagged(Untagged::Status(Status::Bye, text)) = &response {
                        self.bye = Some(text.text.clone());
                    }
                    return Ok(Some(response));
                }
                Ok(None) => {}
                Err(e) => return Err(frame_error(e)),
            }
            self.buf.reserve(16 * 1024);
            match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    return Err(ImapError::Connect(format!("reading from the server: {e}")));
                }
                Ok(Ok(0)) => {
                    return Err(ImapError::Protocol(match &self.bye {
                        Some(bye) => format!("the server closed the connection: {bye}"),
                        None => "the server closed the connection".to_owned(),
                    }));
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends a command and reads up to its tagged reply, handing untagged responses to
    /// `on_untagged`. Waits for `+` before each synchronizing literal; a tagged reply
    /// instead means the server refused the command there.
    async fn run(
        &mut self,
        cmd: Command,
        mut on_untagged: impl FnMut(Untagged),
    ) -> Result<(Status, RespText), ImapError> {
        let tag = self.next_tag();
        let verb = cmd.verb;
        tracing::trace!(%tag, verb, "imap command");
        let mut parts = cmd.into_wire(&tag).into_iter();
        if let Some(first) = parts.next() {
            self.write(&first).await?;
        }
        for part in parts {
            loop {
                match self.read_response().await? {
                    Response::Continuation(_) => break,
                    Response::Untagged(u) => on_untagged(u),
                    Response::Tagged {
                        tag: t,
                        status,
                        text,
                    } if t == tag => return Ok((status, text)),
                    other => return Err(unexpected(&other)),
                }
            }
            self.write(&part).await?;
        }
        loop {
            match self.read_response().await? {
                Response::Untagged(u) => on_untagged(u),
                Response::Tagged {
                    tag: t,
                    status,
                    text,
                } if t == tag => return Ok((status, text)),
                other => {
                    return Err(ImapError::Protocol(format!(
                        "during {verb}: {}",
                        unexpected(&other)
                    )));
                }
            }
        }
    }

    /// Reads the greeting: OK (log in next), PREAUTH (already in) or BYE (go away).
    async fn greeting(&mut self) -> Result<Greeting, ImapError> {
        match self.read_response().await? {
            Response::Untagged(Untagged::Status(status, text)) => {
                let capabilities = text
                    .code
                    .as_ref()
                    .filter(|c| c.name == "CAPABILITY")
                    .map(|c| c.capabilities());
                match status {
                    Status::Ok => Ok(Greeting {
                        preauth: false,
                        capabilities,
                    }),
                    Status::PreAuth => Ok(Greeting {
                        preauth: true,
                        capabilities,
                    }),
                    Status::Bye => Err(ImapError::Connect(format!(
                        "the server turned the connection away: {}",
                        text.text.trim()
                    ))),
                    _ => Err(ImapError::Protocol(format!(
                        "unexpected greeting from the server: {text}"
                    ))),
                }
            }
            other => Err(ImapError::Protocol(format!(
                "the server did not greet like an IMAP server ({})",
                unexpected(&other)
            ))),
        }
    }

    /// Greeting, capabilities and STARTTLS on a plain connection; gives the stream back
    /// ready for the TLS handshake.
    async fn starttls(mut self) -> Result<S, ImapError> {
        let greeting = self.greeting().await?;
        if greeting.preauth {
            // Nothing can be upgraded after PREAUTH; an attacker may have injected it.
            return Err(ImapError::Tls(
                "the server greeted with PREAUTH, so STARTTLS is impossible".to_owned(),
            ));
        }
        let capabilities = match greeting.capabilities {
            Some(caps) => caps,
            None => {
                let mut caps = None;
                let (status, text) = self
                    .run(Command::new("CAPABILITY"), |u| {
                        if let Untagged::Capability(c) = u {
                            caps = Some(c);
                        }
                    })
                    .await?;
                if status != Status::Ok {
                    return Err(refused("CAPABILITY", status, &text));
                }
                caps.unwrap_or_default()
            }
        };
        if !capabilities.iter().any(|c| c == "STARTTLS") {
            return Err(ImapError::Tls(
                "the server does not offer STARTTLS; use implicit TLS (port 993)".to_owned(),
            ));
        }
        match self.run(Command::new("STARTTLS"), |_| {}).await? {
            (Status::Ok, _) => {}
            (_, text) => return Err(ImapError::Tls(format!("STARTTLS refused: {text}"))),
        }
        // Bytes already here were sent before TLS and would be read as if protected
        // (the STARTTLS command injection of CVE-2011-0411 and kin).
        if !self.buf.is_empty() {
            return Err(ImapError::Tls(
                "the server sent data right after agreeing to STARTTLS; refusing".to_owned(),
            ));
        }
        Ok(self.stream)
    }
}

/// A session over any stream whose greeting is still to be read (tests use in-memory pipes).
#[cfg(test)]
pub(super) async fn over_stream<S>(
    stream: S,
    acc: &ImapAccount,
    cfg: &ImapConfig,
) -> Result<ImapClient, ImapError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Conn::new(Box::new(stream) as Box<dyn Io>, cfg, frame_limit(cfg));
    let greeting = conn.greeting().await?;
    ImapClient::start(conn, greeting, acc, cfg).await
}

fn frame_error(e: FrameError) -> ImapError {
    match e {
        FrameError::TooLarge => ImapError::TooLarge,
        FrameError::Malformed(what) => ImapError::Protocol(what),
    }
}
