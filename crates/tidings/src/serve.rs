//! `tidings serve`: wires the store, the buses, the avatars and the HTTP edge together,
//! runs them until the shutdown future resolves, then drains and flushes in order.
//!
//! Start-up: open the store (migrations), load the directory, on an empty data dir create
//! the administrator (token and one-time sign-in link printed to stdout), make sure the
//! CLI's admin credential file exists, start the avatar runtimes and the ingest dispatcher,
//! bind the listener and write `server.json` so the CLI finds the server.
//!
//! Shutdown: stop accepting connections and let requests finish (streams end themselves),
//! let the dispatcher drain what is in flight, passivate every avatar, flush the store.
//! Anything not finished stays in the durable queue for the next start.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tidings_bus::avatars::RuntimeConfig;
use tidings_bus::queue::{DispatcherConfig, EmbeddedQueue, IngestQueue};
use tidings_routing::agents::outbox::OutboxConfig;
use tidings_routing::{Directory, Services, ServicesConfig, WebSubConfig};
use tidings_sources::feed::SchedulePolicy;
use tidings_sources::fetch::FetchConfig;
use tidings_store::{Store, StoreOptions};
use tidings_web::{AppState, WebConfig};
use tokio::sync::watch;

use crate::config::Config;

/// File in the data dir holding the administrator token the CLI uses.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// File in the data dir telling the CLI where the running server listens.
pub const SERVER_FILE: &str = "server.json";

pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = cfg.data_dir.clone();
    create_private_dir(&data_dir)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
        .ok();

    let store = Store::open(
        &data_dir.join("tidings.db"),
        StoreOptions {
            synchronous: cfg.store.synchronous,
            ..StoreOptions::default()
        },
    )
    .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let directory = Arc::new(Directory::load(store.clone()).await?);
    let secrets = tidings_store::SecretBox::load_or_create(&data_dir)?;

    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
    let local = listener.local_addr()?;
    let base_url = if cfg.base_url.is_empty() {
        format!("http://{local}")
    } else {
        cfg.base_url.trim_end_matches('/').to_owned()
    };

    first_start(&directory, &data_dir, &base_url).await?;

    let runtime = |kind_mailbox: usize| RuntimeConfig {
        silos: cfg.avatars.silos,
        idle_timeout: cfg.avatars.idle_timeout,
        mailbox: kind_mailbox,
        ..RuntimeConfig::default()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let queue = EmbeddedQueue::new(store.clone());
    let queue_dyn: Arc<dyn IngestQueue> = Arc::new(queue.clone());
    let services = Services::start(
        store.clone(),
        directory,
        queue_dyn.clone(),
        ServicesConfig {
            users: runtime(cfg.avatars.mailbox),
            sources: runtime(cfg.avatars.mailbox),
            fetch: fetch_config(&cfg)?,
            schedule: SchedulePolicy {
                default_interval: cfg.sources.default_interval,
                min_interval: cfg.sources.min_interval,
                max_interval: cfg.sources.max_interval,
                max_backoff: cfg.sources.max_backoff,
                failing_after: cfg.sources.failing_after,
                memory: cfg.sources.memory,
                ..SchedulePolicy::default()
            },
            // Hubs must be able to call us back: only with an explicitly configured URL.
            websub: (cfg.sources.websub && !cfg.base_url.is_empty()).then(|| WebSubConfig {
                callback_base: cfg.base_url.trim_end_matches('/').to_owned(),
                lease: cfg.sources.websub_lease,
                allow_sha1: cfg.sources.websub_allow_sha1,
            }),
            secrets: Some(secrets),
            sinks: Some(sinks_config(&cfg)?),
            outbox: OutboxConfig {
                max_attempts: cfg.delivery.max_attempts,
                retry_base: cfg.delivery.retry_base,
                retry_max: cfg.delivery.retry_max,
                breaker_threshold: cfg.delivery.breaker_threshold,
                breaker_cooldown: cfg.delivery.breaker_cooldown,
                breaker_cooldown_max: cfg.delivery.breaker_cooldown_max,
                concurrency: cfg.delivery.concurrency,
                base_url: base_url.clone(),
                mail_domain: (!cfg.smtp.mail_domain.is_empty())
                    .then(|| cfg.smtp.mail_domain.clone()),
                ..OutboxConfig::default()
            },
        },
    )
    .context("cannot set up the fetcher for feeds and pages")?;

    if let Some(xcfg) = xmpp_config(&cfg)? {
        let (agent, inbound) = tidings_routing::xmpp::XmppAgent::start(
            xcfg,
            &store,
            &services.secrets,
            stop_rx.clone(),
        )
        .await
        .context("cannot load the XMPP contacts")?;
        tracing::info!(jid = %agent.our_jid(), "XMPP connection starting");
        services.attach_xmpp(agent, inbound);
    }

    let dispatcher = tokio::spawn(queue.clone().run_dispatcher(
        tidings_routing::ingest::handler(services.clone()),
        DispatcherConfig {
            max_in_flight: cfg.queue.max_in_flight,
            max_attempts: cfg.queue.max_attempts,
            retry_base: cfg.queue.retry_base,
            retry_max: cfg.queue.retry_max,
            drain_timeout: cfg.shutdown.drain_timeout,
            ..DispatcherConfig::default()
        },
        stop_rx.clone(),
    ));

    let web_cfg = WebConfig {
        max_message_bytes: cfg.http.max_message_bytes,
        max_request_bytes: cfg.http.max_request_bytes,
        rate_limit_per_second: cfg.http.rate_limit_per_second,
        rate_limit_burst: cfg.http.rate_limit_burst,
        metrics_public: cfg.http.metrics_public,
        header_timeout: cfg.http.header_timeout,
        base_url: base_url.clone(),
        max_push_bytes: cfg.sources.max_body_bytes,
        ..WebConfig::default()
    };
    let state = AppState::new(
        services.clone(),
        queue_dyn,
        web_cfg,
        metrics,
        stop_rx.clone(),
    );

    let smtp_task = if cfg.smtp.mail_domain.is_empty() {
        None
    } else {
        let smtp = &cfg.smtp;
        let listener = tokio::net::TcpListener::bind(smtp.listen)
            .await
            .with_context(|| format!("cannot listen for SMTP on {}", smtp.listen))?;
        tracing::info!(addr = %listener.local_addr()?, domain = %smtp.mail_domain, "SMTP listener ready");
        let smtp_cfg = tidings_sources::smtp::SmtpConfig {
            listen: smtp.listen,
            hostname: if smtp.hostname.is_empty() {
                smtp.mail_domain.clone()
            } else {
                smtp.hostname.clone()
            },
            mail_domain: smtp.mail_domain.clone(),
            max_message_bytes: smtp.max_message_bytes,
            max_recipients: smtp.max_recipients,
            idle_timeout: smtp.idle_timeout,
            max_connections: smtp.max_connections,
            max_commands_per_minute: smtp.max_commands_per_minute,
            tls: (!smtp.tls_cert.is_empty())
                .then(|| (smtp.tls_cert.clone().into(), smtp.tls_key.clone().into())),
            ..tidings_sources::smtp::SmtpConfig::default()
        };
        let sink: Arc<dyn tidings_sources::smtp::MailSink> = Arc::new(
            tidings_routing::source::mail::MailEdge::new(services.clone()),
        );
        Some(tokio::spawn(tidings_sources::smtp::run(
            smtp_cfg,
            sink,
            listener,
            stop_rx.clone(),
        )))
    };

    write_server_file(&data_dir, &base_url)?;
    tracing::info!(url = %base_url, data_dir = %data_dir.display(), "tidings is serving");

    // The shutdown future flips the watch; the HTTP server, streams and dispatcher all
    // follow the watch.
    let mut http_stop = stop_rx.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining");
        let _ = stop_tx.send(true);
    });
    let served = tidings_web::serve(listener, state, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    })
    .await;

    if let Some(t) = smtp_task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "SMTP listener failed"),
            Err(e) => tracing::error!(error = %e, "SMTP task failed"),
        }
    }
    match dispatcher.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "dispatcher stopped with an error"),
        Err(e) => tracing::error!(error = %e, "dispatcher task failed"),
    }
    services.shutdown().await;
    store.close().await;
    let _ = std::fs::remove_file(data_dir.join(SERVER_FILE));
    served.context("the HTTP server failed")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The fetcher settings of feeds and pages.
fn fetch_config(cfg: &Config) -> anyhow::Result<FetchConfig> {
    let mut allowlist = Vec::new();
    for net in &cfg.sources.allowlist {
        allowlist.push(
            net.parse()
                .with_context(|| format!("sources.allowlist: {net:?} is not a CIDR network"))?,
        );
    }
    Ok(FetchConfig {
        allow_private_networks: cfg.sources.allow_private_networks,
        allowlist,
        max_body_bytes: cfg.sources.max_body_bytes,
        connect_timeout: cfg.sources.connect_timeout,
        total_timeout: cfg.sources.fetch_timeout,
        max_redirects: cfg.sources.max_redirects,
        per_host_concurrency: cfg.sources.per_host_concurrency,
        ..FetchConfig::default()
    })
}

/// The XMPP connection's settings, when one is configured.
fn xmpp_config(cfg: &Config) -> anyhow::Result<Option<tidings_xmpp::XmppConfig>> {
    use tidings_xmpp::{BareJid, ClientTls, Jid, Mode};
    let x = &cfg.xmpp;
    let mode = match x.mode.as_str() {
        "" => return Ok(None),
        "component" => Mode::Component {
            host: x.host.clone(),
            port: if x.port == 0 { 5347 } else { x.port },
            domain: BareJid::parse(&x.domain)
                .map_err(|e| anyhow::anyhow!("xmpp.domain {:?}: {e}", x.domain))?,
            secret: x.secret.clone(),
        },
        _ => Mode::Client {
            jid: Jid::parse(&x.jid).map_err(|e| anyhow::anyhow!("xmpp.jid {:?}: {e}", x.jid))?,
            password: x.password.clone(),
            host: (!x.host.is_empty()).then(|| x.host.clone()),
            port: (x.port != 0).then_some(x.port),
            tls: if x.tls == "optional" {
                ClientTls::Optional
            } else {
                ClientTls::Required
            },
            extra_root_certs: if x.ca_file.is_empty() {
                Vec::new()
            } else {
                tidings_xmpp::load_pem_certs(std::path::Path::new(&x.ca_file))
                    .map_err(|e| anyhow::anyhow!("xmpp.ca_file: {e}"))?
            },
        },
    };
    let mut c = tidings_xmpp::XmppConfig::new(mode);
    c.reconnect_max = x.reconnect_max;
    Ok(Some(c))
}

/// The wire side of destinations: their own address rules and timeouts, and the relay.
fn sinks_config(cfg: &Config) -> anyhow::Result<tidings_sinks::SinksConfig> {
    let d = &cfg.delivery;
    let mut allowlist = Vec::new();
    for net in &d.allowlist {
        allowlist.push(
            net.parse()
                .with_context(|| format!("delivery.allowlist: {net:?} is not a CIDR network"))?,
        );
    }
    let fetch = FetchConfig {
        allow_private_networks: d.allow_private_networks,
        allowlist,
        max_body_bytes: 1024 * 1024,
        connect_timeout: d.timeout.min(std::time::Duration::from_secs(10)),
        total_timeout: d.timeout,
        max_redirects: 0,
        per_host_concurrency: d.per_host_concurrency,
        ..FetchConfig::default()
    };
    let r = &cfg.relay;
    let relay = (!r.host.is_empty()).then(|| tidings_sinks::mailto::RelayConfig {
        host: r.host.clone(),
        port: r.port,
        tls: match r.tls.as_str() {
            "none" => tidings_sinks::mailto::RelayTls::None,
            "implicit" => tidings_sinks::mailto::RelayTls::Implicit,
            _ => tidings_sinks::mailto::RelayTls::StartTls,
        },
        username: (!r.username.is_empty()).then(|| r.username.clone()),
        password: (!r.password.is_empty()).then(|| r.password.clone()),
        from: if r.from.is_empty() {
            format!("tidings <tidings@{}>", cfg.smtp.mail_domain)
        } else {
            r.from.clone()
        },
        timeout: r.timeout,
        accept_invalid_certs: r.accept_invalid_certs,
    });
    Ok(tidings_sinks::SinksConfig { fetch, relay })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict the data dir {}", dir.display()))?;
    }
    Ok(())
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn write_server_file(data_dir: &Path, url: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({"url": url, "pid": std::process::id()}).to_string();
    write_private(&data_dir.join(SERVER_FILE), &body)
}

/// On an empty data dir: creates the administrator and prints their token and a one-time
/// sign-in link. On every start: makes sure the CLI's admin credential file works.
async fn first_start(dir: &Directory, data_dir: &Path, base_url: &str) -> anyhow::Result<()> {
    let token_path = data_dir.join(ADMIN_TOKEN_FILE);
    if dir.user_count() == 0 {
        let admin = dir.create_user("admin", None, true).await?;
        let (_, token) = dir
            .create_token(admin.id, "admin (created at first start)")
            .await?;
        write_private(&token_path, &token)?;
        let code = dir.create_signin_code(admin.id).await?;
        // stdout, not the log: this is the one thing a new user must see.
        println!("tidings: first start in {}", data_dir.display());
        println!("  administrator: admin");
        println!("  API token:     {token}");
        println!("  sign in:       {base_url}/signin/{code}   (one-time link, valid 24 h)");
        println!("  the CLI reads the token from {}", token_path.display());
        return Ok(());
    }
    let works = std::fs::read_to_string(&token_path)
        .ok()
        .and_then(|t| dir.authenticate_token(t.trim()))
        .is_some_and(|u| u.is_admin);
    if !works {
        let Some(admin) = dir.users().into_iter().find(|u| u.is_admin) else {
            tracing::warn!("no administrator exists; the CLI cannot manage users");
            return Ok(());
        };
        let (_, token) = dir.create_token(admin.id, "admin CLI credential").await?;
        write_private(&token_path, &token)?;
        tracing::info!(path = %token_path.display(), user = %admin.name, "wrote a new admin credential for the CLI");
    }
    Ok(())
}
