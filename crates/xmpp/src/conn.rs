//! The connection task: connect (TCP, STARTTLS in client mode), negotiate, then one select
//! loop over the shutdown signal, the server's frames, the request queue, the inbound
//! events waiting for the receiver, and the ping timer; reconnect with exponential backoff
//! and jitter when anything goes wrong. The protocol decisions are [`Negotiator`]'s and
//! [`Core`]'s; this module only moves bytes and keeps the delivery bookkeeping (which sent
//! requests the server has confirmed, see the crate docs).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::Rng as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
use tracing::{debug, info, warn};

use crate::negotiate::{Negotiator, Step, stream_error_text};
use crate::sasl::Scram;
use crate::stanzas::{Cmd, Core};
use crate::xml::{Element, Frame, Framer, NS_STREAM};
use crate::{BareJid, Error, Inbound, Jid, Mode, XmppConfig};

/// Events produced but not yet taken by the receiver; reading pauses at this many.
const MAX_PENDING_IN: usize = 256;
const READ_BUF: usize = 16 * 1024;

enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while STARTTLS swaps the stream.
    Gone,
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// The stream and its framer.
struct Wire {
    io: Io,
    framer: Framer,
    buf: Box<[u8]>,
    max_stanza: usize,
    write_timeout: Duration,
}

impl Wire {
    fn new(io: Io, max_stanza: usize, write_timeout: Duration) -> Wire {
        Wire {
            io,
            framer: Framer::new(max_stanza),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            max_stanza,
            write_timeout,
        }
    }

    /// The next frame, reading as needed. Cancel-safe: bytes read are in the framer.
    async fn next_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if let Some(frame) = self.framer.next_frame()? {
                return Ok(frame);
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                return Err(Error::Stream("the server closed the connection".into()));
            }
            self.framer.push(&self.buf[..n]);
        }
    }

    async fn write(&mut self, data: &str) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let io = &mut self.io;
        timeout(self.write_timeout, async {
            io.write_all(data.as_bytes()).await?;
            io.flush().await
        })
        .await
        .map_err(|_| Error::Timeout("writing to the server"))??;
        Ok(())
    }

    async fn write_elements(&mut self, els: &[Element]) -> Result<(), Error> {
        let mut out = String::new();
        for el in els {
            el.write_to(&mut out, crate::xml::NS_CLIENT);
        }
        self.write(&out).await
    }

    /// A fresh framer for a restarted stream.
    fn restart(&mut self) {
        self.framer = Framer::new(self.max_stanza);
    }

    async fn start_tls(
        &mut self,
        connector: TlsConnector,
        name: ServerName<'static>,
        limit: Duration,
    ) -> Result<(), Error> {
        let Io::Tcp(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            return Err(Error::Tls(
                "STARTTLS on a stream that is not plain TCP".into(),
            ));
        };
        let tls = timeout(limit, connector.connect(name, tcp))
            .await
            .map_err(|_| Error::Timeout("the TLS handshake"))?
            .map_err(|e| Error::Tls(e.to_string()))?;
        self.io = Io::Tls(Box::new(tls));
        Ok(())
    }
}

fn tls_connector(extra_roots: &[crate::CertificateDer<'static>]) -> Result<TlsConnector, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| Error::Tls(format!("an extra root certificate is unusable: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

enum End {
    /// Shut down as asked, or nobody listens any more.
    Stop,
    Failed {
        error: Error,
        was_ready: bool,
    },
}

enum Ev<'a> {
    Shutdown,
    Deliver(Result<mpsc::Permit<'a, Inbound>, mpsc::error::SendError<()>>),
    Frame(Result<Frame, Error>),
    Cmd(Option<Cmd>),
    Timer,
}

pub(crate) struct Connection {
    cfg: XmppConfig,
    core: Core,
    cmd_rx: mpsc::Receiver<Cmd>,
    cmd_open: bool,
    inbound_tx: mpsc::Sender<Inbound>,
    pending_in: VecDeque<Inbound>,
    /// Requests to send before any new one: the unconfirmed ones of a dead connection.
    retry: VecDeque<Cmd>,
    /// Sent, not yet confirmed, with their sequence numbers.
    inflight: VecDeque<(u64, Cmd)>,
    seq: u64,
}

impl Connection {
    pub(crate) fn new(
        cfg: XmppConfig,
        known: Vec<BareJid>,
        cmd_rx: mpsc::Receiver<Cmd>,
        inbound_tx: mpsc::Sender<Inbound>,
    ) -> Connection {
        let (component, me): (bool, Jid) = match &cfg.mode {
            Mode::Component { domain, .. } => (true, domain.clone().into()),
            Mode::Client { jid, .. } => (false, jid.clone()),
        };
        let mut core = Core::new(component, me, known);
        if let Some(status) = &cfg.status {
            core.command(&Cmd::SetPresence(
                crate::Show::Available,
                Some(status.clone()),
            ));
        }
        Connection {
            cfg,
            core,
            cmd_rx,
            cmd_open: true,
            inbound_tx,
            pending_in: VecDeque::new(),
            retry: VecDeque::new(),
            inflight: VecDeque::new(),
            seq: 0,
        }
    }

    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut delay = self.cfg.reconnect_min;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let end = self.session(&mut shutdown).await;
            // Whatever the server did not confirm goes out first next time, in order.
            while let Some((_, cmd)) = self.inflight.pop_back() {
                self.retry.push_front(cmd);
            }
            let (error, was_ready) = match end {
                End::Stop => break,
                End::Failed { error, was_ready } => (error, was_ready),
            };
            if was_ready {
                delay = self.cfg.reconnect_min;
            }
            let wait = delay.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
            warn!(error = %error, retry_in = ?wait, queued = self.retry.len(), "XMPP connection lost");
            self.pending_in.push_back(Inbound::Disconnected {
                reason: error.to_string(),
            });
            delay = (delay * 2).min(self.cfg.reconnect_max.max(self.cfg.reconnect_min));
            if !self.idle(wait, &mut shutdown).await {
                break;
            }
        }
        // Best effort for what is left: the receiver may still be reading.
        while let Some(ev) = self.pending_in.pop_front() {
            if self.inbound_tx.try_send(ev).is_err() {
                break;
            }
        }
        info!("XMPP connection shut down");
    }

    /// Waits between attempts, handing over events meanwhile. False when it is time to stop.
    async fn idle(&mut self, wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let ev = tokio::select! {
                biased;
                _ = shutdown.wait_for(|v| *v) => Ev::Shutdown,
                p = self.inbound_tx.reserve(), if !self.pending_in.is_empty() => Ev::Deliver(p),
                _ = sleep_until(deadline) => Ev::Timer,
            };
            match ev {
                Ev::Shutdown => return false,
                Ev::Deliver(Ok(permit)) => {
                    permit.send(self.pending_in.pop_front().expect("not empty"));
                }
                Ev::Deliver(Err(_)) => return false,
                _ => return true,
            }
        }
    }

    async fn session(&mut self, shutdown: &mut watch::Receiver<bool>) -> End {
        let limit = self.cfg.connect_timeout * 3;
        let negotiated = tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return End::Stop,
            r = timeout(limit, self.connect()) => r,
        };
        let (mut wire, jid) = match negotiated {
            Ok(Ok(x)) => x,
            Ok(Err(error)) => {
                return End::Failed {
                    error,
                    was_ready: false,
                };
            }
            Err(_) => {
                return End::Failed {
                    error: Error::Timeout("connecting and logging in"),
                    was_ready: false,
                };
            }
        };
        info!(jid = %jid, "XMPP session ready");
        self.core.set_me(jid);
        self.pending_in.push_back(Inbound::Connected);
        match self.serve(&mut wire, shutdown).await {
            Ok(()) => End::Stop,
            Err(error) => End::Failed {
                error,
                was_ready: true,
            },
        }
    }

    async fn connect(&self) -> Result<(Wire, Jid), Error> {
        let cfg = &self.cfg;
        let (host, port, mut negotiator, tls) = match &cfg.mode {
            Mode::Component {
                host,
                port,
                domain,
                secret,
            } => (
                host.clone(),
                *port,
                Negotiator::component(domain.clone(), secret.clone()),
                None,
            ),
            Mode::Client {
                jid,
                password,
                host,
                port,
                tls,
                extra_root_certs,
            } => {
                let mut jid = jid.clone();
                if jid.resource().is_none() {
                    jid = jid.bare().with_resource("tidings")?;
                }
                let domain = jid.bare().domain().to_owned();
                let name = ServerName::try_from(domain.clone())
                    .map_err(|_| Error::Tls(format!("{domain:?} is not a TLS server name")))?;
                (
                    host.clone().unwrap_or_else(|| domain.clone()),
                    port.unwrap_or(5222),
                    Negotiator::client(jid, password.clone(), *tls, Scram::random_nonce()),
                    Some((tls_connector(extra_root_certs)?, name)),
                )
            }
        };
        debug!(host = %host, port, "connecting to the XMPP server");
        let tcp = timeout(
            cfg.connect_timeout,
            TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| Error::Timeout("connecting"))??;
        tcp.set_nodelay(true)?;
        let mut wire = Wire::new(Io::Tcp(tcp), cfg.max_stanza_bytes, cfg.ping_timeout);
        wire.write(&negotiator.header()).await?;
        loop {
            let frame = wire.next_frame().await?;
            for step in negotiator.on_frame(frame)? {
                match step {
                    Step::Send(data) => wire.write(&data).await?,
                    Step::StartTls => {
                        let (connector, name) = tls
                            .clone()
                            .ok_or_else(|| Error::Tls("no TLS for a component".into()))?;
                        wire.start_tls(connector, name, cfg.connect_timeout).await?;
                        negotiator.tls_established();
                        wire.restart();
                        wire.write(&negotiator.header()).await?;
                    }
                    Step::Restart => {
                        wire.restart();
                        wire.write(&negotiator.header()).await?;
                    }
                    Step::Ready(jid) => return Ok((wire, jid)),
                }
            }
        }
    }

    /// Sends one queued request, keeping it unconfirmed.
    async fn send_cmd(&mut self, wire: &mut Wire, cmd: Cmd) -> Result<(), Error> {
        let els = self.core.command(&cmd);
        self.seq += 1;
        self.inflight.push_back((self.seq, cmd));
        wire.write_elements(&els).await
    }

    /// The ready session, until shutdown (`Ok`) or failure.
    async fn serve(
        &mut self,
        wire: &mut Wire,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let start = self.core.on_ready();
        wire.write_elements(&start).await?;
        // The outstanding ping: its id, the last sequence number it confirms, when it went.
        let mut ping: Option<(String, u64, Instant)> = None;
        let mut last_ping = Instant::now();
        let max_unconfirmed = self.cfg.max_unconfirmed.max(1);
        loop {
            while self.inflight.len() < max_unconfirmed
                && let Some(cmd) = self.retry.pop_front()
            {
                self.send_cmd(wire, cmd).await?;
            }
            if ping.is_none() && !self.inflight.is_empty() {
                let (id, iq) = self.core.ping();
                wire.write_elements(&[iq]).await?;
                ping = Some((id, self.seq, Instant::now()));
            }
            let deadline = match &ping {
                Some((_, _, at)) => *at + self.cfg.ping_timeout,
                None => last_ping + self.cfg.keepalive,
            };
            let can_take =
                self.cmd_open && self.retry.is_empty() && self.inflight.len() < max_unconfirmed;
            let ev = tokio::select! {
                biased;
                _ = shutdown.wait_for(|v| *v) => Ev::Shutdown,
                p = self.inbound_tx.reserve(), if !self.pending_in.is_empty() => Ev::Deliver(p),
                f = wire.next_frame(), if self.pending_in.len() < MAX_PENDING_IN => Ev::Frame(f),
                c = self.cmd_rx.recv(), if can_take => Ev::Cmd(c),
                _ = sleep_until(deadline) => Ev::Timer,
            };
            match ev {
                Ev::Shutdown => {
                    let bye = self.core.goodbye();
                    let mut out = String::new();
                    for el in &bye {
                        el.write_to(&mut out, crate::xml::NS_CLIENT);
                    }
                    out.push_str("</stream:stream>");
                    let _ = wire.write(&out).await;
                    let _ = timeout(Duration::from_secs(1), wire.io.shutdown()).await;
                    return Ok(());
                }
                Ev::Deliver(Ok(permit)) => {
                    permit.send(self.pending_in.pop_front().expect("not empty"));
                }
                Ev::Deliver(Err(_)) => {
                    // Nobody reads the events any more: stop.
                    return Ok(());
                }
                Ev::Frame(frame) => match frame? {
                    Frame::Element(el) => {
                        if el.is("error", NS_STREAM) {
                            return Err(Error::Stream(stream_error_text(&el)));
                        }
                        let handled = self.core.handle(&el);
                        if let Some(id) = handled.pong
                            && let Some((pid, upto, _)) = &ping
                            && *pid == id
                        {
                            let upto = *upto;
                            while self.inflight.front().is_some_and(|(s, _)| *s <= upto) {
                                self.inflight.pop_front();
                            }
                            ping = None;
                            last_ping = Instant::now();
                        }
                        self.pending_in.extend(handled.events);
                        wire.write_elements(&handled.send).await?;
                    }
                    Frame::Close => {
                        return Err(Error::Stream("the server closed the stream".into()));
                    }
                    Frame::Open(_) => {
                        return Err(Error::Protocol("a second stream header".into()));
                    }
                },
                Ev::Cmd(Some(cmd)) => {
                    // send_cmd, inlined: `ev` still borrows the inbound sender.
                    let els = self.core.command(&cmd);
                    self.seq += 1;
                    self.inflight.push_back((self.seq, cmd));
                    wire.write_elements(&els).await?;
                }
                Ev::Cmd(None) => self.cmd_open = false,
                Ev::Timer => {
                    if let Some((_, _, sent)) = &mut ping {
                        if self.pending_in.len() >= MAX_PENDING_IN {
                            // We stopped reading (the receiver is slow), so the answer may
                            // well be there, unread: not the server's fault.
                            *sent = Instant::now();
                            continue;
                        }
                        return Err(Error::Timeout("the server did not answer a ping"));
                    }
                    let (id, iq) = self.core.ping();
                    wire.write_elements(&[iq]).await?;
                    ping = Some((id, self.seq, Instant::now()));
                }
            }
        }
    }
}
