//! The fetcher against real HTTP servers on 127.0.0.1 (and 127.0.0.2, which Linux routes
//! to the loopback interface too).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Response};
use axum::routing::get;
use tidings_sources::fetch::{ACCEPT_FEED, FetchConfig, FetchError, FetchRequest, Fetcher, IpNet};

async fn serve_on(addr: &str, router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    local
}

async fn serve(router: Router) -> SocketAddr {
    serve_on("127.0.0.1:0", router).await
}

/// Tests talk to 127.0.0.1, so they allow private networks unless testing the refusal.
fn open_config() -> FetchConfig {
    FetchConfig {
        allow_private_networks: true,
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(5),
        ..FetchConfig::default()
    }
}

fn open() -> Fetcher {
    Fetcher::new(open_config()).unwrap()
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body.into()).unwrap()
}

fn counting(hits: &Arc<AtomicUsize>) -> Router {
    let hits = Arc::clone(hits);
    Router::new().fallback(move || {
        let hits = Arc::clone(&hits);
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "hello"
        }
    })
}

fn forbidden_text(result: Result<impl std::fmt::Debug, FetchError>) -> String {
    match result {
        Err(FetchError::Forbidden(text)) => text,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn default_config_refuses_loopback_with_clear_messages() {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(counting(&hits)).await;
    let port = addr.port();
    let strict = Fetcher::new(FetchConfig::default()).unwrap();

    let url = format!("http://127.0.0.1:{port}/feed");
    let text = forbidden_text(strict.check_url(&url).await);
    assert_eq!(
        text,
        "refused: 127.0.0.1 is a loopback address; the operator can allow private networks \
         (allow_private_networks) or allowlist the address"
    );
    assert_eq!(
        forbidden_text(strict.fetch(FetchRequest::feed(&url)).await),
        text
    );

    let url = format!("http://[::1]:{port}/");
    assert!(
        forbidden_text(strict.check_url(&url).await)
            .starts_with("refused: ::1 is a loopback address;")
    );
    assert!(
        forbidden_text(strict.fetch(FetchRequest::feed(&url)).await)
            .starts_with("refused: ::1 is a loopback address;")
    );

    // A name is judged by what it resolves to, at check time and again at connect time.
    let url = format!("http://localhost:{port}/feed");
    let text = forbidden_text(strict.check_url(&url).await);
    assert!(
        text.starts_with("refused: localhost resolves to ")
            && text.contains(", a loopback address; the operator can"),
        "{text}"
    );
    let text = forbidden_text(strict.fetch(FetchRequest::feed(&url)).await);
    assert!(
        text.starts_with("refused: localhost resolves to "),
        "{text}"
    );

    // Other spellings of loopback and private addresses (checked without connecting).
    for (url, want) in [
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "is a loopback address",
        ),
        (
            "http://2130706433/".to_string(),
            "127.0.0.1 is a loopback address",
        ),
        (
            "http://10.1.2.3/".to_string(),
            "10.1.2.3 is a private address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "is a link-local address",
        ),
        (
            "http://100.64.1.1/".to_string(),
            "is a shared (carrier-grade NAT) address",
        ),
        (
            "http://0.0.0.0/".to_string(),
            "0.0.0.0 is an unspecified address",
        ),
        (
            "http://[fd00::1]/".to_string(),
            "is a private (unique local) address",
        ),
    ] {
        let text = forbidden_text(strict.check_url(&url).await);
        assert!(text.contains(want), "{url}: {text}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused fetch reached the server"
    );

    // Explicitly allowed, the same URLs work.
    let fetcher = open();
    let url = format!("http://127.0.0.1:{port}/feed");
    assert_eq!(fetcher.check_url(&url).await.unwrap().as_str(), url);
    let response = fetcher.fetch(FetchRequest::feed(&url)).await.unwrap();
    assert_eq!(response.body, b"hello");
    let response = fetcher
        .fetch(FetchRequest::feed(format!("http://localhost:{port}/feed")))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn check_url_rejects_bad_urls() {
    let fetcher = open();
    for (url, want) in [
        (
            "ftp://example.com/feed",
            "invalid URL: only http and https URLs can be fetched, not ftp:",
        ),
        (
            "file:///etc/passwd",
            "invalid URL: only http and https URLs can be fetched, not file:",
        ),
        (
            "example.com/feed",
            "invalid URL: \"example.com/feed\" is not a valid URL: relative URL without a base",
        ),
        ("", "invalid URL: the URL is empty"),
    ] {
        let err = fetcher.check_url(url).await.unwrap_err();
        assert!(matches!(err, FetchError::InvalidUrl(_)), "{url}: {err:?}");
        assert_eq!(err.to_string(), want);
    }
}

fn redirector(hops: &[(&'static str, u16, &'static str)]) -> Router {
    let mut router = Router::new().route("/final", get(|| async { "arrived" }));
    for &(path, status, to) in hops {
        router = router.route(
            path,
            get(move || async move { respond(status, &[("location", to)], Body::empty()) }),
        );
    }
    router
}

#[tokio::test]
async fn follows_and_records_a_redirect_chain() {
    let addr = serve(redirector(&[
        ("/r1", 301, "/r2"),
        ("/r2", 302, "r3"),
        ("/r3", 308, "/final"),
    ]))
    .await;
    let base = format!("http://{addr}");
    let response = open()
        .fetch(FetchRequest::feed(format!("{base}/r1")))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"arrived");
    assert_eq!(response.final_url, format!("{base}/final"));
    assert_eq!(
        response.redirects,
        vec![
            (301, format!("{base}/r2")),
            (302, format!("{base}/r3")),
            (308, format!("{base}/final")),
        ]
    );
    // Only the leading permanent hop may update the stored URL.
    assert_eq!(
        response.permanent_redirect(),
        Some(format!("{base}/r2").as_str())
    );
}

#[tokio::test]
async fn stops_after_max_redirects() {
    let hops = [
        ("/h0", 302, "/h1"),
        ("/h1", 302, "/h2"),
        ("/h2", 302, "/h3"),
        ("/h3", 302, "/h4"),
        ("/h4", 302, "/h5"),
        ("/h5", 302, "/final"),
    ];
    let addr = serve(redirector(&hops)).await;
    // Six redirects: one too many.
    let err = open()
        .fetch(FetchRequest::feed(format!("http://{addr}/h0")))
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::TooManyRedirects);
    assert_eq!(err.to_string(), "too many redirects");
    // Five is the limit and still fine.
    let response = open()
        .fetch(FetchRequest::feed(format!("http://{addr}/h1")))
        .await
        .unwrap();
    assert_eq!(response.redirects.len(), 5);
    assert_eq!(response.body, b"arrived");
}

#[tokio::test]
async fn redirect_to_a_private_address_is_refused() {
    let private_hits = Arc::new(AtomicUsize::new(0));
    let private = serve_on("127.0.0.2:0", counting(&private_hits)).await;
    let target = format!("http://{private}/internal");
    let target_for_handler = target.clone();
    let public = serve(
        Router::new()
            .route("/ok", get(|| async { "public content" }))
            .route(
                "/go",
                get(move || {
                    let target = target_for_handler.clone();
                    async move { respond(302, &[("location", target.as_str())], Body::empty()) }
                }),
            ),
    )
    .await;

    // 127.0.0.1 stands in for a public server: exempted by the allowlist, private
    // networks otherwise refused.
    let fetcher = Fetcher::new(FetchConfig {
        allow_private_networks: false,
        allowlist: vec!["127.0.0.1/32".parse::<IpNet>().unwrap()],
        ..open_config()
    })
    .unwrap();
    let ok = fetcher
        .fetch(FetchRequest::feed(format!("http://{public}/ok")))
        .await
        .unwrap();
    assert_eq!(ok.body, b"public content");

    let text = forbidden_text(
        fetcher
            .fetch(FetchRequest::feed(format!("http://{public}/go")))
            .await,
    );
    assert_eq!(
        text,
        format!(
            "refused: http://{public}/go redirected to {target}, but 127.0.0.2 is a loopback \
             address; the operator can allow private networks (allow_private_networks) or \
             allowlist the address"
        )
    );
    assert!(
        forbidden_text(fetcher.check_url(&target).await)
            .contains("127.0.0.2 is a loopback address")
    );
    assert_eq!(
        private_hits.load(Ordering::SeqCst),
        0,
        "the private server was reached"
    );

    // Control: with private networks allowed the hop is followed, so the refusal above
    // came from the policy and not from a broken test server.
    let followed = open()
        .fetch(FetchRequest::feed(format!("http://{public}/go")))
        .await
        .unwrap();
    assert_eq!(followed.body, b"hello");
    assert_eq!(private_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn conditional_get_and_304() {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen_ims = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let router = {
        let hits = Arc::clone(&hits);
        let seen_ims = Arc::clone(&seen_ims);
        Router::new().route(
            "/feed.xml",
            get(move |headers: HeaderMap| {
                let hits = Arc::clone(&hits);
                let seen_ims = Arc::clone(&seen_ims);
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if let Some(ims) = headers.get("if-modified-since") {
                        seen_ims
                            .lock()
                            .unwrap()
                            .push(ims.to_str().unwrap().to_string());
                    }
                    let validators = [
                        ("etag", "\"v1\""),
                        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ];
                    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v1\"")
                    {
                        respond(304, &validators, Body::empty())
                    } else {
                        respond(200, &validators, "<rss/>")
                    }
                }
            }),
        )
    };
    let addr = serve(router).await;
    let fetcher = open();
    let url = format!("http://{addr}/feed.xml");

    let first = fetcher.fetch(FetchRequest::feed(&url)).await.unwrap();
    assert_eq!(first.status, 200);
    assert!(!first.not_modified);
    assert_eq!(first.body, b"<rss/>");
    assert_eq!(first.etag.as_deref(), Some("\"v1\""));
    assert_eq!(
        first.last_modified.as_deref(),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );

    let second = fetcher
        .fetch(FetchRequest {
            etag: first.etag.clone(),
            last_modified: first.last_modified.clone(),
            ..FetchRequest::feed(&url)
        })
        .await
        .unwrap();
    assert_eq!(second.status, 304);
    assert!(second.not_modified);
    assert!(second.body.is_empty());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        *seen_ims.lock().unwrap(),
        vec!["Sun, 06 Nov 1994 08:49:37 GMT".to_string()]
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        writer.write_all(data).unwrap();
    }
    out
}

/// Serves `body` encoded as the client allows, recording the request headers it saw.
fn encoding_server(body: &'static [u8], seen: Arc<std::sync::Mutex<Vec<HeaderMap>>>) -> Router {
    Router::new().route(
        "/{encoding}",
        get(
            move |axum::extract::Path(encoding): axum::extract::Path<String>,
                  headers: HeaderMap| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push(headers);
                    let encoded = match encoding.as_str() {
                        "gzip" => gzip(body),
                        "br" => brotli(body),
                        "deflate" => zlib(body),
                        _ => body.to_vec(),
                    };
                    respond(
                        200,
                        &[
                            ("content-encoding", encoding.as_str()),
                            ("content-type", "application/rss+xml"),
                        ],
                        encoded,
                    )
                }
            },
        ),
    )
}

#[tokio::test]
async fn decodes_gzip_brotli_and_deflate() {
    const BODY: &[u8] =
        b"<?xml version=\"1.0\"?><rss><channel><title>compressed \xc3\xa9</title></channel></rss>";
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = serve(encoding_server(BODY, Arc::clone(&seen))).await;
    let fetcher = open();
    for encoding in ["gzip", "br", "deflate"] {
        let response = fetcher
            .fetch(FetchRequest::feed(format!("http://{addr}/{encoding}")))
            .await
            .unwrap();
        assert_eq!(response.body, BODY, "{encoding}");
        assert_eq!(
            response.content_type.as_deref(),
            Some("application/rss+xml")
        );
    }
    let seen = seen.lock().unwrap();
    let headers = &seen[0];
    let accept_encoding = headers["accept-encoding"].to_str().unwrap();
    for encoding in ["gzip", "br", "deflate"] {
        assert!(accept_encoding.contains(encoding), "{accept_encoding}");
    }
    assert_eq!(headers["accept"].to_str().unwrap(), ACCEPT_FEED);
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("tidings/")
    );
}

#[tokio::test]
async fn body_limit_applies_after_decompression() {
    // 20 MiB of zeros gzip to about 20 KiB: small on the wire, large in memory.
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bomb = BOMB.get_or_init(|| gzip(&vec![0u8; 20 * 1024 * 1024]));
    assert!(bomb.len() < 100 * 1024);
    let limit = 1024 * 1024;
    let router = Router::new()
        .route(
            "/bomb",
            get(move || async move { respond(200, &[("content-encoding", "gzip")], bomb.clone()) }),
        )
        .route("/big", get(move || async move { vec![b'x'; limit + 1] }))
        .route("/exact", get(move || async move { vec![b'x'; limit] }))
        .route(
            "/exact-gzip",
            get(move || async move {
                respond(
                    200,
                    &[("content-encoding", "gzip")],
                    gzip(&vec![b'y'; limit]),
                )
            }),
        );
    let addr = serve(router).await;
    let fetcher = Fetcher::new(FetchConfig {
        max_body_bytes: limit,
        ..open_config()
    })
    .unwrap();

    let err = fetcher
        .fetch(FetchRequest::feed(format!("http://{addr}/bomb")))
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::TooLarge(limit));
    assert_eq!(
        err.to_string(),
        "the response is larger than the limit of 1048576 bytes"
    );
    let err = fetcher
        .fetch(FetchRequest::feed(format!("http://{addr}/big")))
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::TooLarge(limit));

    for path in ["exact", "exact-gzip"] {
        let ok = fetcher
            .fetch(FetchRequest::feed(format!("http://{addr}/{path}")))
            .await
            .unwrap();
        assert_eq!(ok.body.len(), limit, "{path}");
    }
}

#[tokio::test]
async fn slow_servers_time_out_within_total_timeout() {
    let router = Router::new()
        .route(
            "/slow-headers",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/slow-body",
            get(|| async {
                let stream = futures_util::stream::unfold(0u8, |step| async move {
                    if step == 0 {
                        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"<rss>")), 1))
                    } else {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        None
                    }
                });
                Body::from_stream(stream)
            }),
        );
    let addr = serve(router).await;
    let fetcher = Fetcher::new(FetchConfig {
        total_timeout: Duration::from_millis(500),
        ..open_config()
    })
    .unwrap();
    for path in ["slow-headers", "slow-body"] {
        let started = Instant::now();
        let err = fetcher
            .fetch(FetchRequest::feed(format!("http://{addr}/{path}")))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err, FetchError::Timeout, "{path}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "{path} took {took:?}"
        );
    }
    assert_eq!(
        FetchError::Timeout.to_string(),
        "the server took too long to answer (timed out)"
    );
}

#[tokio::test]
async fn statuses_are_returned_not_errors_and_headers_are_parsed() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let date_for_handler = date.clone();
    let router = Router::new()
        .route(
            "/busy",
            get(|| async { respond(429, &[("retry-after", "120")], "slow down") }),
        )
        .route(
            "/maintenance",
            get(move || {
                let date = date_for_handler.clone();
                async move { respond(503, &[("retry-after", date.as_str())], Body::empty()) }
            }),
        )
        .route("/gone", get(|| async { respond(410, &[], "gone") }))
        .route("/broken", get(|| async { respond(500, &[], "oops") }))
        .route(
            "/feed",
            get(|| async {
                respond(
                    200,
                    &[
                        ("link", "<https://hub.example.com/>; rel=\"hub\""),
                        (
                            "link",
                            "</feed>; rel=\"self\", <https://hub2.example.com/websub>; rel=hub",
                        ),
                        ("cache-control", "public, max-age=600"),
                        ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                        ("content-location", "/feed.rss"),
                    ],
                    "<rss/>",
                )
            }),
        );
    let addr = serve(router).await;
    let fetcher = open();
    let get = |path: &'static str| {
        let fetcher = fetcher.clone();
        async move {
            fetcher
                .fetch(FetchRequest::feed(format!("http://{addr}{path}")))
                .await
                .unwrap()
        }
    };

    let busy = get("/busy").await;
    assert_eq!(busy.status, 429);
    assert_eq!(busy.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(busy.body, b"slow down");

    let maintenance = get("/maintenance").await;
    assert_eq!(maintenance.status, 503);
    let wait = maintenance
        .retry_after
        .expect("HTTP-date Retry-After parsed");
    assert!(
        wait > Duration::from_secs(3590) && wait <= Duration::from_secs(3600),
        "{wait:?} from {date}"
    );

    assert_eq!(get("/gone").await.status, 410);
    assert_eq!(get("/broken").await.status, 500);

    let feed = get("/feed").await;
    assert_eq!(feed.status, 200);
    assert_eq!(
        feed.link_hub,
        vec![
            "https://hub.example.com/".to_string(),
            "https://hub2.example.com/websub".to_string()
        ]
    );
    assert_eq!(feed.link_self, Some(format!("http://{addr}/feed")));
    assert_eq!(feed.cache_control_max_age, Some(600));
    assert_eq!(
        feed.expires,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800))
    );
    assert_eq!(feed.content_location.as_deref(), Some("/feed.rss"));
    assert_eq!(feed.retry_after, None);
}

/// Counts requests in flight, remembering the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

fn slow_counting(in_flight: Arc<InFlight>, hold: Duration) -> Router {
    Router::new().fallback(move || {
        let in_flight = Arc::clone(&in_flight);
        async move {
            let now = in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
            in_flight.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            in_flight.now.fetch_sub(1, Ordering::SeqCst);
            "done"
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_concurrency_is_limited() {
    let in_flight = Arc::new(InFlight::default());
    let addr = serve(slow_counting(
        Arc::clone(&in_flight),
        Duration::from_millis(200),
    ))
    .await;
    let fetcher = open();
    let started = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let fetcher = fetcher.clone();
            tokio::spawn(async move {
                fetcher
                    .fetch(FetchRequest::feed(format!("http://{addr}/item/{i}")))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().body, b"done");
    }
    assert_eq!(in_flight.max.load(Ordering::SeqCst), 2);
    // Six requests, two at a time, 200 ms each: three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(590),
        "{:?}",
        started.elapsed()
    );

    // Another host name for the same server has its own slots.
    let other = Arc::new(InFlight::default());
    let addr = serve(slow_counting(
        Arc::clone(&other),
        Duration::from_millis(300),
    ))
    .await;
    let port = addr.port();
    let tasks: Vec<_> = ["127.0.0.1", "127.0.0.1", "localhost", "localhost"]
        .into_iter()
        .map(|host| {
            let fetcher = fetcher.clone();
            tokio::spawn(async move {
                fetcher
                    .fetch(FetchRequest::feed(format!("http://{host}:{port}/")))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(other.max.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn waiting_for_a_host_slot_counts_toward_the_timeout() {
    let in_flight = Arc::new(InFlight::default());
    let addr = serve(slow_counting(
        Arc::clone(&in_flight),
        Duration::from_millis(400),
    ))
    .await;
    let fetcher = Fetcher::new(FetchConfig {
        per_host_concurrency: 1,
        total_timeout: Duration::from_millis(600),
        ..open_config()
    })
    .unwrap();
    let url = format!("http://{addr}/");
    let (a, b) = tokio::join!(
        fetcher.fetch(FetchRequest::feed(&url)),
        fetcher.fetch(FetchRequest::feed(&url))
    );
    let mut outcomes = [a.map(|r| r.status), b.map(|r| r.status)];
    outcomes.sort_by_key(|o| o.is_err());
    assert_eq!(outcomes, [Ok(200), Err(FetchError::Timeout)]);
    assert_eq!(in_flight.max.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_refused_is_a_clear_connect_error() {
    // Bind and drop to get a port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = open()
        .fetch(FetchRequest::feed(format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    match &err {
        FetchError::Connect(text) => {
            assert!(text.to_lowercase().contains("connection refused"), "{text}")
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(err.to_string().starts_with("could not connect: "));
}

#[tokio::test]
async fn request_sends_any_method_with_headers_body_and_basic_auth() {
    use axum::http::{Method, Uri};
    use tidings_sources::fetch::REPLY_BODY_LIMIT;

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let router = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = Arc::clone(&recorded);
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                recorded.lock().unwrap().push((
                    method.to_string(),
                    uri.to_string(),
                    header("x-one"),
                    header("authorization"),
                    body.to_vec(),
                ));
                match uri.path() {
                    "/busy" => respond(429, &[("Retry-After", "7")], "slow down"),
                    "/moved" => respond(302, &[("Location", "/elsewhere")], ""),
                    "/big" => respond(200, &[], vec![b'x'; REPLY_BODY_LIMIT + 5000]),
                    _ => respond(201, &[], "created"),
                }
            }
        },
    );
    let addr = serve(router).await;
    let fetcher = open();

    let reply = fetcher
        .request(
            "PUT",
            &format!("http://{addr}/rooms/x?y=1"),
            &[("X-One".into(), "1".into())],
            b"{\"a\":1}".to_vec(),
            Some(("user".into(), "p@ss".into())),
        )
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (201, &b"created"[..])
    );
    assert_eq!(reply.retry_after, None);
    {
        let seen = seen.lock().unwrap();
        let (method, uri, one, auth, body) = &seen[0];
        assert_eq!((method.as_str(), uri.as_str()), ("PUT", "/rooms/x?y=1"));
        assert_eq!(one, "1");
        // base64("user:p@ss")
        assert_eq!(auth, "Basic dXNlcjpwQHNz");
        assert_eq!(body, b"{\"a\":1}");
    }

    let busy = fetcher
        .request(
            "POST",
            &format!("http://{addr}/busy"),
            &[],
            Vec::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(busy.status, 429);
    assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(busy.body, b"slow down");

    // Redirects come back as they are.
    let moved = fetcher
        .request(
            "POST",
            &format!("http://{addr}/moved"),
            &[],
            Vec::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(moved.status, 302);
    assert_eq!(seen.lock().unwrap().len(), 3);

    // A long reply is cut, not refused.
    let big = fetcher
        .request("GET", &format!("http://{addr}/big"), &[], Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(big.body.len(), REPLY_BODY_LIMIT);

    // Bad input is a clear error, not a panic.
    let bad_header = fetcher
        .request(
            "POST",
            &format!("http://{addr}/"),
            &[("X-Bad".into(), "a\r\nb".into())],
            Vec::new(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad_header, FetchError::Config(_)),
        "{bad_header:?}"
    );
    let bad_method = fetcher
        .request(
            "NOT A METHOD",
            &format!("http://{addr}/"),
            &[],
            Vec::new(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad_method, FetchError::Config(_)),
        "{bad_method:?}"
    );
}

#[tokio::test]
async fn request_follows_the_address_rules_and_the_timeout() {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(counting(&hits)).await;
    let strict = Fetcher::new(FetchConfig::default()).unwrap();
    let text = forbidden_text(
        strict
            .request(
                "POST",
                &format!("http://{addr}/hook"),
                &[],
                b"x".to_vec(),
                None,
            )
            .await,
    );
    assert!(
        text.starts_with("refused: 127.0.0.1 is a loopback address"),
        "{text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // A server that accepts the connection and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let fetcher = Fetcher::new(FetchConfig {
        total_timeout: Duration::from_millis(500),
        ..open_config()
    })
    .unwrap();
    let started = Instant::now();
    let err = fetcher
        .request(
            "POST",
            &format!("http://{silent_addr}/"),
            &[],
            Vec::new(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}
