//! The async side: accept connections, drive a [`Session`] per connection over TCP (and
//! TLS after STARTTLS), call the [`MailSink`], enforce idle time and connection count, and
//! shut down gracefully.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::{Event, MailSink, Refusal, Session, SmtpConfig};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// After shutdown, how long a session in the middle of a transaction may take to finish it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Beyond the grace, how long [`run`] waits for sessions stuck in the sink before it drops
/// them (their clients retry: nothing was acknowledged).
const SHUTDOWN_HARD_LIMIT: Duration = Duration::from_secs(35);

/// Serves SMTP on `listener` until `shutdown` turns true (or its sender is dropped).
///
/// Then it stops accepting, lets sessions in the middle of a transaction finish it (for up
/// to 30 s), says 421 to the others, and returns once all sessions are done. It fails only
/// when the configured TLS certificate or key cannot be loaded.
pub async fn run(
    cfg: SmtpConfig,
    sink: Arc<dyn MailSink>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(load_tls(cert, key)?),
        None => None,
    };
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Semaphore::new(
        cfg.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            () = wait_for_shutdown(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        // Not awaited: a client that does not read must not hold up the
                        // accept loop. A fresh socket's send buffer takes the one line.
                        let _ = stream.try_write(&Session::busy_reply(&cfg.hostname));
                        tracing::debug!(%peer, "smtp connection refused: too many connections");
                        continue;
                    };
                    let conn = Conn {
                        cfg: cfg.clone(),
                        sink: sink.clone(),
                        tls: tls.clone(),
                    };
                    let shutdown = shutdown.clone();
                    sessions.spawn(async move {
                        let _permit = permit;
                        conn.serve(stream, peer, shutdown).await;
                    });
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "smtp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(joined) = sessions.join_next(), if !sessions.is_empty() => log_join(joined),
        }
    }
    drop(listener);
    let deadline = Instant::now() + SHUTDOWN_HARD_LIMIT;
    while !sessions.is_empty() {
        match timeout_at(deadline, sessions.join_next()).await {
            Ok(Some(joined)) => log_join(joined),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    left = sessions.len(),
                    "smtp sessions still busy after the shutdown grace, dropping them"
                );
                sessions.abort_all();
                while sessions.join_next().await.is_some() {}
            }
        }
    }
    Ok(())
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined
        && err.is_panic()
    {
        tracing::error!(%err, "smtp session panicked");
    }
}

/// Resolves when shutdown is asked for, or when nobody can ask for it any more.
async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|&stop| stop).await;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn load_tls(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let bad = |path: &Path, err: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("smtp tls: {}: {err}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| bad(cert, &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What one connection's task needs.
struct Conn {
    cfg: Arc<SmtpConfig>,
    sink: Arc<dyn MailSink>,
    tls: Option<TlsAcceptor>,
}

impl Conn {
    async fn serve(self, stream: TcpStream, peer: SocketAddr, mut shutdown: watch::Receiver<bool>) {
        // Replies are written one batch at a time already; don't let Nagle delay them.
        let _ = stream.set_nodelay(true);
        let mut session = Session::new(self.cfg.clone(), peer);
        let mut draining = None;
        let result = match self
            .drive(&mut session, stream, &mut shutdown, &mut draining)
            .await
        {
            Ok(Some(tcp)) => {
                self.upgrade(&mut session, tcp, &mut shutdown, &mut draining)
                    .await
            }
            Ok(None) => Ok(()),
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::debug!(%peer, %err, "smtp session ended on an error");
        }
    }

    async fn upgrade(
        &self,
        session: &mut Session,
        tcp: TcpStream,
        shutdown: &mut watch::Receiver<bool>,
        draining: &mut Option<Instant>,
    ) -> io::Result<()> {
        let Some(acceptor) = &self.tls else {
            return Ok(());
        };
        let tls = timeout(self.cfg.idle_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))??;
        session.tls_started();
        // The session refuses a second STARTTLS, so this never asks to upgrade again.
        self.drive(session, tls, shutdown, draining).await?;
        Ok(())
    }

    /// Runs the session over `stream` until it closes (`None`) or asks for TLS (the stream
    /// back, the 220 written).
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut Session,
        mut stream: S,
        shutdown: &mut watch::Receiver<bool>,
        draining: &mut Option<Instant>,
    ) -> io::Result<Option<S>> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match session.next_event(now_ms()) {
                Event::NeedInput => {
                    self.flush(session, &mut stream).await?;
                    if draining.is_some() && !session.in_transaction() {
                        session.shutdown();
                        continue;
                    }
                    let idle_deadline = Instant::now() + self.cfg.idle_timeout;
                    let deadline = draining.map_or(idle_deadline, |d| d.min(idle_deadline));
                    tokio::select! {
                        read = timeout_at(deadline, stream.read(&mut buf)) => match read {
                            Ok(Ok(0)) => return Ok(None),
                            Ok(Ok(n)) => session.receive(&buf[..n]),
                            Ok(Err(err)) => return Err(err),
                            Err(_) if draining.is_some_and(|d| d <= Instant::now()) => {
                                session.shutdown();
                            }
                            Err(_) => session.idle_timeout(),
                        },
                        () = wait_for_shutdown(shutdown), if draining.is_none() => {
                            // Finish the transaction under way, if any; then 421.
                            *draining = Some(Instant::now() + SHUTDOWN_GRACE);
                        }
                    }
                }
                // The sink is bounded like the client: a lookup or a store that hangs gets
                // a temporary failure, and the client retries later.
                Event::CheckRecipient(rcpt) => {
                    let from = session.mail_from().to_owned();
                    let lookup =
                        self.sink
                            .check_recipient(&rcpt.local, rcpt.label.as_deref(), &from);
                    let result = timeout(self.cfg.idle_timeout, lookup)
                        .await
                        .unwrap_or_else(|_| Err(Refusal::Temporary(String::new())));
                    session.recipient_checked(result);
                }
                Event::Deliver(mail) => {
                    let peer = mail.peer;
                    let result = timeout(self.cfg.idle_timeout, self.sink.deliver(mail))
                        .await
                        .unwrap_or_else(|_| Err("the ingest queue did not answer in time".into()));
                    if let Err(err) = &result {
                        tracing::warn!(%peer, %err, "smtp delivery to the ingest queue failed");
                    }
                    session.delivered(result);
                }
                Event::StartTls => {
                    self.flush(session, &mut stream).await?;
                    return Ok(Some(stream));
                }
                Event::Close => {
                    self.flush(session, &mut stream).await?;
                    let _ = timeout(Duration::from_secs(5), stream.shutdown()).await;
                    return Ok(None);
                }
            }
        }
    }

    /// Writes the pending replies; a client that does not read them within the idle time
    /// is dropped.
    async fn flush<S: AsyncWrite + Unpin>(
        &self,
        session: &mut Session,
        stream: &mut S,
    ) -> io::Result<()> {
        if !session.has_output() {
            return Ok(());
        }
        let out = session.take_output();
        timeout(self.cfg.idle_timeout, async {
            stream.write_all(&out).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "smtp client not reading"))?
    }
}
