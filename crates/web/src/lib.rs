//! The HTTP edge: publishing (ntfy-compatible and JSON), the REST API, live streams (SSE,
//! WebSocket, ntfy's topic streams), administration and operations endpoints.
//!
//! Layout:
//! - [`error`]: the JSON error shape every route answers with.
//! - [`auth`]: credentials (tokens, sessions, passwords) and per-credential rate limits.
//! - [`publish`]: `PUT|POST /<topic>` with ntfy's headers and `POST /api/v1/publish`.
//! - [`api`]: history, acks, subscriptions, topics and grants, tokens.
//! - [`admin`]: user and token administration for the CLI.
//! - [`destinations`]: a user's destinations, their verification, tests and delivery records.
//! - [`discover`]: what a feed subscription's URL really points at (autodiscovery).
//! - [`settings`]: a user's time zone, quiet hours and routing rules.
//! - [`sms`]: Twilio's inbound-message webhook (an SMS reply is an ack or a reply).
//! - [`stream`]: live delivery: `/api/v1/stream` (SSE), `/api/v1/ws`, `/<topic>/{json,sse,ws}`.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json`, sign-in links.
//! - [`private_feed`]: private Atom feeds (`/feeds/<secret>.atom`) and `/api/v1/feeds`.
//! - [`websub`]: callbacks of WebSub hubs (verification of intent, pushed content).
//! - [`ui`]: the web interface: sign-in, inbox, destinations, settings (HTML pages).
//!
//! An edge only accepts and answers: a publish is acknowledged once it is durable in the
//! ingest queue, and everything after that happens in the avatars.

pub mod admin;
pub mod api;
pub mod auth;
pub mod destinations;
pub mod discover;
pub mod error;
pub mod ops;
pub mod private_feed;
pub mod publish;
pub mod settings;
pub mod sms;
pub mod stream;
pub mod ui;
pub mod websub;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tidings_bus::queue::IngestQueue;
use tidings_routing::Services;
use tokio::sync::watch;

/// Settings of the HTTP edge.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Body limit of a publish.
    pub max_message_bytes: usize,
    /// Body limit of every other request.
    pub max_request_bytes: usize,
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: u32,
    /// Serve `/metrics` without an admin credential.
    pub metrics_public: bool,
    /// Public URL of the server, for links.
    pub base_url: String,
    /// How long a request waits for an avatar's answer.
    pub ask_timeout: Duration,
    /// Interval of keepalive events on open streams.
    pub keepalive: Duration,
    /// Body limit of a WebSub push (a whole feed document).
    pub max_push_bytes: usize,
    /// Time a client has to send a request's headers (slowloris guard).
    pub header_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_request_bytes: 1024 * 1024,
            rate_limit_per_second: 50.0,
            rate_limit_burst: 200,
            metrics_public: false,
            base_url: "http://127.0.0.1:8080".into(),
            ask_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(25),
            max_push_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(30),
        }
    }
}

struct Inner {
    services: Arc<Services>,
    queue: Arc<dyn IngestQueue>,
    cfg: WebConfig,
    limiter: auth::RateLimiter,
    metrics: Option<PrometheusHandle>,
    ready: AtomicBool,
    shutdown: watch::Receiver<bool>,
    /// Topics being claimed right now (claim, then the owner's subscription): a publish to
    /// one waits until the owner's subscription is in place, or it would reach nobody.
    claims: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(
        services: Arc<Services>,
        queue: Arc<dyn IngestQueue>,
        cfg: WebConfig,
        metrics: Option<PrometheusHandle>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let limiter = auth::RateLimiter::new(cfg.rate_limit_per_second, cfg.rate_limit_burst);
        AppState(Arc::new(Inner {
            services,
            queue,
            cfg,
            limiter,
            metrics,
            ready: AtomicBool::new(false),
            shutdown,
            claims: Default::default(),
        }))
    }

    /// The lock of a topic being claimed, if a claim is in progress.
    pub(crate) fn claim_in_progress(&self, topic: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.0
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()
    }

    /// Registers a claim in progress and returns its lock (held by the claimer).
    pub(crate) fn begin_claim(&self, topic: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn end_claim(&self, topic: &str) {
        self.0
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.0.services
    }
    pub fn queue(&self) -> &dyn IngestQueue {
        &*self.0.queue
    }
    pub fn cfg(&self) -> &WebConfig {
        &self.0.cfg
    }
    pub(crate) fn limiter(&self) -> &auth::RateLimiter {
        &self.0.limiter
    }
    pub(crate) fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }
    /// A receiver that turns true when the server begins to shut down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.clone()
    }
    /// Marks the server ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst) && !*self.0.shutdown.borrow()
    }
}

/// Every route of the edge.
pub fn router(state: AppState) -> Router {
    let message_limit = state.cfg().max_message_bytes;
    let request_limit = state.cfg().max_request_bytes;
    let publish_routes = Router::new()
        .route("/", post(publish::publish_json_root))
        .route("/api/v1/publish", post(publish::publish_json))
        .route(
            "/{topic}",
            put(publish::publish_topic).post(publish::publish_topic),
        )
        .route(
            "/{topic}/publish",
            get(publish::publish_topic)
                .put(publish::publish_topic)
                .post(publish::publish_topic),
        )
        .route(
            "/{topic}/send",
            get(publish::publish_topic)
                .put(publish::publish_topic)
                .post(publish::publish_topic),
        )
        .route(
            "/{topic}/trigger",
            get(publish::publish_topic)
                .put(publish::publish_topic)
                .post(publish::publish_topic),
        )
        // JSON publishes carry the message plus a little structure around it.
        .layer(DefaultBodyLimit::max(message_limit + 16 * 1024));

    let websub_routes = Router::new()
        .route("/websub/{source}", get(websub::verify).post(websub::push))
        .layer(DefaultBodyLimit::max(state.cfg().max_push_bytes));

    let api_routes = Router::new()
        // The web interface (crate::ui): `/` is the inbox.
        .route("/", get(ui::inbox::page_get))
        .route("/login", get(ui::login_form).post(ui::login_submit))
        .route("/logout", post(ui::logout))
        .route("/static/{file}", get(ui::static_file))
        .route("/app/ack/{id}", post(ui::inbox::ack))
        .route(
            "/app/destinations",
            get(ui::destinations::page_get).post(ui::destinations::add),
        )
        .route(
            "/app/destinations/{id}/delete",
            post(ui::destinations::remove),
        )
        .route(
            "/app/sources",
            get(ui::sources::page_get).post(ui::sources::add),
        )
        .route("/app/sources/topic", post(ui::sources::topic))
        .route("/app/sources/{id}/filter", post(ui::sources::filter))
        .route("/app/sources/{id}/delete", post(ui::sources::remove))
        .route("/settings", get(ui::settings::page_get))
        .route("/settings/tokens", post(ui::settings::create_token))
        .route(
            "/settings/tokens/{id}/revoke",
            post(ui::settings::revoke_token),
        )
        // End of the web interface.
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/signin/{code}", get(ops::signin_link))
        .route("/api/v1/login", post(ops::login))
        .route("/api/v1/logout", post(ops::logout))
        .route("/api/v1/account", get(api::account))
        .route("/api/v1/notifications", get(api::list_notifications))
        .route("/api/v1/notifications/{id}", get(api::get_notification))
        .route(
            "/api/v1/notifications/{id}/ack",
            post(api::ack_notification),
        )
        .route(
            "/api/v1/notifications/{id}/reply",
            post(api::reply_notification),
        )
        .route(
            "/api/v1/destinations",
            get(destinations::list).post(destinations::create),
        )
        .route(
            "/api/v1/destinations/{id}",
            get(destinations::get)
                .patch(destinations::update)
                .delete(destinations::remove),
        )
        .route(
            "/api/v1/destinations/{id}/verify",
            post(destinations::verify),
        )
        .route(
            "/api/v1/destinations/{id}/code",
            post(destinations::send_code),
        )
        .route("/api/v1/destinations/{id}/test", post(destinations::test))
        .route(
            "/api/v1/destinations/{id}/deliveries",
            get(destinations::deliveries),
        )
        .route("/api/v1/settings", get(settings::get).put(settings::put))
        .route(
            "/api/v1/rules",
            get(settings::get_rules).put(settings::put_rules),
        )
        .route("/sms/twilio/{destination}", post(sms::twilio))
        .route("/api/v1/stream", get(stream::user_sse))
        .route("/api/v1/ws", get(stream::user_ws))
        .route(
            "/api/v1/subscriptions",
            get(api::list_subscriptions).post(api::create_subscription),
        )
        .route(
            "/api/v1/subscriptions/{id}",
            get(api::get_subscription).delete(api::delete_subscription),
        )
        .route("/api/v1/topics", get(api::list_topics))
        .route("/api/v1/topics/{topic}", get(api::get_topic))
        .route(
            "/api/v1/topics/{topic}/grants/{user}",
            put(api::put_grant).delete(api::delete_grant),
        )
        .route(
            "/api/v1/tokens",
            get(api::list_tokens).post(api::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(api::revoke_token))
        .route(
            "/api/v1/feeds",
            get(private_feed::list_feeds).post(private_feed::create_feed),
        )
        .route("/api/v1/feeds/{id}", delete(private_feed::delete_feed))
        // `<secret>.atom`: the router matches whole segments only.
        .route("/feeds/{file}", get(private_feed::atom))
        .route(
            "/api/v1/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route("/api/v1/admin/users/{name}", delete(admin::remove_user))
        .route(
            "/api/v1/admin/users/{name}/password",
            put(admin::set_password),
        )
        .route(
            "/api/v1/admin/users/{name}/tokens",
            post(admin::create_token),
        )
        .route("/api/v1/admin/tokens", get(admin::list_tokens))
        .route("/api/v1/admin/tokens/{id}", delete(admin::revoke_token))
        .route("/{topic}/json", get(stream::topic_json))
        .route("/{topic}/sse", get(stream::topic_sse))
        .route("/{topic}/ws", get(stream::topic_ws))
        .layer(DefaultBodyLimit::max(request_limit));

    publish_routes
        .merge(websub_routes)
        .merge(api_routes)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(ops::request_timeout))
        .layer(axum::middleware::from_fn(ops::count_requests))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves; then stops accepting,
/// lets open requests finish (streams end on their own at shutdown) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let header_timeout = state.cfg().header_timeout;
    state.set_ready(true);
    // Our own accept loop rather than axum::serve, for hyper's header-read timeout (it needs
    // a timer, which axum::serve does not give hyper): a client that trickles its headers
    // (slowloris) is cut off instead of holding a connection.
    // Every connection task holds a clone of `open`; when the last is gone, all are done.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY a small stream event written while the previous one is not
        // yet acknowledged waits for the client's delayed ACK (up to 40 ms on Linux):
        // Nagle's algorithm against live delivery.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let (open, mut stop) = (open.clone(), stop.subscribe());
        tokio::spawn(async move {
            let _open = open;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    state.set_ready(false);
    let _ = stop.send(true);
    drop(open);
    // Requests in flight finish; open streams end themselves on the shutdown signal.
    if tokio::time::timeout(Duration::from_secs(30), all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown; leaving them");
    }
    Ok(())
}
