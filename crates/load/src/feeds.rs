//! `feeds`: many feeds on a local feed server, polled by the tidings server.
//!
//! The tool serves `--feeds` RSS feeds itself (`http://127.0.0.1:<port>/f/<n>.xml`, a few
//! items each, an `ETag` per version, 304 to a matching `If-None-Match`), subscribes one
//! user to all of them (bounded concurrency, and paced by default so that the subscribes,
//! and so the polls, are spread evenly over one interval; each subscribe makes the server
//! fetch the URL once before it answers, then the new source polls at once for its
//! baseline), and waits
//! until every subscribed feed has been fetched twice (the subscribe-time check and the
//! baseline). If subscribing takes longer than `--setup-timeout`, it goes on with the
//! feeds subscribed so far (and says so).
//!
//! After `--settle` (so the first burst of polls, one interval after a fast setup, is
//! behind us), for `--measure` it adds new items to random feeds at `--item-rate` per second
//! while it measures:
//! - the server's CPU time (`/proc/<pid>/stat`, pid from `<data dir>/server.json`) as a
//!   percent of one core over the window (and per 10 s), with the polls the feed server
//!   saw in the window, so the cost per poll and the projection to the full feed count at
//!   one poll per `--interval` follow;
//! - per new item: served → the first poll that got it (the feed server notes when it
//!   answered 200 with the item), and from that poll to the user's history: the
//!   `delivered` event the history agent writes in the same transaction as the inbox row
//!   (server clock, `--data-dir`/tidings.db read with `sqlite3 -readonly` after the run),
//!   and, as an outside upper bound, when `GET /api/v1/notifications` polled every
//!   `--history-poll` first listed it.
//!
//! After the window no items are added and the tool waits (up to `--drain`) for the last
//! ones to be polled and delivered; that time is not in the CPU figure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::fanout::call;
use crate::parse::Rng;
use crate::stats::{Errors, Summary, micros, ms, round3};
use crate::sys::{Clock, CpuMark, server_pid, sqlite_rows};
use crate::{endpoint, http_client, loopback_url, nonce, parse_duration, self_cpu_seconds};

const TARGET_CPU_PCT: f64 = 25.0;
const TARGET_POLL_TO_HISTORY_MS: f64 = 1000.0;
const MAX_FEEDS: usize = 100_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL (loopback only).
    #[arg(long)]
    url: String,
    /// API token of the user who subscribes to the feeds.
    #[arg(long, env = "TIDINGS_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    /// The server's data dir: its pid (`server.json`) and database (`tidings.db`).
    #[arg(long)]
    data_dir: PathBuf,
    /// Feeds to serve and subscribe to.
    #[arg(long, default_value_t = 10_000)]
    feeds: usize,
    /// Subscribe requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Subscribe requests started per second [default: the feed count over one
    /// --interval, which spreads the polls evenly over the interval, as they are after a
    /// server has run for a while]; 0: as fast as --concurrency allows (then the polls come
    /// in bursts, which group commit handles more cheaply than steady polling).
    #[arg(long)]
    subscribe_rate: Option<f64>,
    /// Bound on subscribing; past it, the run goes on with the feeds subscribed so far.
    #[arg(long, default_value = "8m", value_parser = parse_duration)]
    setup_timeout: Duration,
    /// Bound on waiting for every subscribed feed's baseline poll.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    baseline_timeout: Duration,
    /// Wait after the baselines before measuring [default: 1.2 × --interval]: the first
    /// polls after a fast setup come in a burst one interval later, and the window should
    /// see polling as it goes on, not the lull before that burst.
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
    /// Length of the measured window (a multiple of the poll interval evens out bursts).
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    measure: Duration,
    /// New items per second added to random feeds during the window.
    #[arg(long, default_value_t = 1.0)]
    item_rate: f64,
    /// The poll interval the server was configured with (for the projection and checks).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    interval: Duration,
    /// How often the history is polled over HTTP.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    history_poll: Duration,
    /// After the window, how long to wait for the last items to be polled and delivered.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    drain: Duration,
    /// Items in every feed document (the newest; unpolled new items are always included).
    #[arg(long, default_value_t = 3)]
    items_per_feed: u32,
    /// Port of the feed server on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    feed_port: u16,
    /// Per-request timeout of the tool's API calls (a subscribe waits on a fetch).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    request_timeout: Duration,
}

/// One item added during the window.
#[derive(Debug, Clone)]
struct Tracked {
    feed: u32,
    k: u32,
    added: Option<Instant>,
    /// When the feed server answered the first 200 that held the item.
    served: Option<Instant>,
}

#[derive(Default)]
struct Feed {
    /// Items are numbered 0.. in the order they were added; the next one gets `next_k`.
    next_k: u32,
    version: u64,
    /// Items added and not yet served in a 200: (k, index into `tracked`).
    unserved: Vec<(u32, usize)>,
    requests: u32,
    window_polls: u32,
    last_request: Option<Instant>,
}

/// The feed server's state.
struct FeedSrv {
    run: String,
    base: String,
    items_per_feed: u32,
    feeds: Vec<Mutex<Feed>>,
    tracked: Mutex<Vec<Tracked>>,
    measuring: AtomicBool,
    requests: AtomicU64,
    window_ok: AtomicU64,
    window_not_modified: AtomicU64,
    window_other: AtomicU64,
    /// Milliseconds between two requests for the same feed, both in the window.
    window_gaps: Mutex<Vec<u64>>,
}

impl FeedSrv {
    fn etag(n: usize, version: u64) -> String {
        format!("\"{n}-{version}\"")
    }

    fn title(&self, n: usize, k: u32) -> String {
        format!("fb {} f{n} i{k}", self.run)
    }

    fn document(&self, n: usize, f: &Feed) -> String {
        let shown = (self.items_per_feed + f.unserved.len() as u32).min(f.next_k);
        let mut s = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel>\
             <title>Bench feed {n}</title><link>{base}/f/{n}</link>\
             <description>tidings-load feed {n} of run {run}</description>\n",
            base = self.base,
            run = self.run
        );
        for k in (f.next_k - shown..f.next_k).rev() {
            s.push_str(&format!(
                "<item><title>{title}</title><link>{base}/f/{n}/{k}</link>\
                 <guid isPermaLink=\"false\">fb-{run}-{n}-{k}</guid>\
                 <description>Item {k} of feed {n}: something happened.</description></item>\n",
                title = self.title(n, k),
                base = self.base,
                run = self.run
            ));
        }
        s.push_str("</channel></rss>\n");
        s
    }

    /// Adds a new item to feed `n`; returns its index in `tracked`.
    fn add_item(&self, n: usize) -> usize {
        let idx = {
            let mut t = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            t.push(Tracked {
                feed: n as u32,
                k: 0,
                added: None,
                served: None,
            });
            t.len() - 1
        };
        let (k, at) = {
            let mut f = self.feeds[n].lock().unwrap_or_else(|e| e.into_inner());
            let k = f.next_k;
            f.next_k += 1;
            f.version += 1;
            f.unserved.push((k, idx));
            (k, Instant::now())
        };
        let mut t = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        t[idx].k = k;
        t[idx].added = Some(at);
        idx
    }
}

fn matches_etag(inm: &str, etag: &str) -> bool {
    inm.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

async fn serve_feed(
    State(s): State<Arc<FeedSrv>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(n) = file
        .strip_suffix(".xml")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n < s.feeds.len())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    s.requests.fetch_add(1, Ordering::Relaxed);
    let measuring = s.measuring.load(Ordering::Relaxed);
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (etag, body, served, gap) = {
        let mut f = s.feeds[n].lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        f.requests += 1;
        let gap = f.last_request.map(|l| now.saturating_duration_since(l));
        f.last_request = Some(now);
        if measuring {
            f.window_polls += 1;
        }
        let etag = FeedSrv::etag(n, f.version);
        if inm.as_deref().is_some_and(|i| matches_etag(i, &etag)) {
            (etag, None, Vec::new(), gap)
        } else {
            let body = s.document(n, &f);
            let served: Vec<usize> = f.unserved.drain(..).map(|(_, i)| i).collect();
            (etag, Some((body, now)), served, gap)
        }
    };
    if measuring {
        if let Some(g) = gap {
            s.window_gaps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
        }
        if body.is_some() {
            s.window_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            s.window_not_modified.fetch_add(1, Ordering::Relaxed);
        }
    }
    match body {
        None => (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response(),
        Some((body, at)) => {
            if !served.is_empty() {
                let mut t = s.tracked.lock().unwrap_or_else(|e| e.into_inner());
                for i in served {
                    t[i].served.get_or_insert(at);
                }
            }
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/rss+xml; charset=utf-8".to_owned(),
                    ),
                    (header::ETAG, etag),
                ],
                body,
            )
                .into_response()
        }
    }
}

async fn fallback(State(s): State<Arc<FeedSrv>>) -> StatusCode {
    if s.measuring.load(Ordering::Relaxed) {
        s.window_other.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::NOT_FOUND
}

/// Parses `fb <run> f<n> i<k>`.
fn parse_title(title: &str, run: &str) -> Option<(u32, u32)> {
    let rest = title
        .strip_prefix("fb ")?
        .strip_prefix(run)?
        .strip_prefix(" f")?;
    let (n, k) = rest.split_once(" i")?;
    Some((n.parse().ok()?, k.parse().ok()?))
}

/// What the history poller saw.
#[derive(Default)]
struct HistorySeen {
    at: HashMap<(u32, u32), Instant>,
    foreign: u64,
    foreign_titles: Vec<String>,
    polls: u64,
    errors: Errors,
}

async fn poll_history(
    client: reqwest::Client,
    base: reqwest::Url,
    token: Arc<str>,
    run: String,
    every: Duration,
    seen: Arc<Mutex<HistorySeen>>,
    stop: Arc<AtomicBool>,
) {
    let mut after: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let url = match endpoint(
            &base,
            &format!("api/v1/notifications?after={after}&limit=1000"),
        ) {
            Ok(u) => u,
            Err(_) => return,
        };
        let r = call(&client, Method::GET, url, &token, None).await;
        let at = Instant::now();
        let more = {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            s.polls += 1;
            match r {
                Err(e) => {
                    s.errors
                        .add(e.to_string().chars().take(80).collect::<String>());
                    false
                }
                Ok(v) => {
                    let items = v["notifications"].as_array().cloned().unwrap_or_default();
                    for it in &items {
                        after = after.max(it["seq"].as_i64().unwrap_or(0));
                        let title = it["title"].as_str().unwrap_or("");
                        match parse_title(title, &run) {
                            Some(key) => {
                                s.at.entry(key).or_insert(at);
                            }
                            None => {
                                s.foreign += 1;
                                if s.foreign_titles.len() < 5 {
                                    s.foreign_titles.push(title.to_owned());
                                }
                            }
                        }
                    }
                    items.len() >= 1000
                }
            }
        };
        if !more {
            tokio::time::sleep_until((t0 + every).into()).await;
        }
    }
}

fn pct(x: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * x as f64 / of as f64
    }
}

pub async fn run(a: Args) -> Result<Value> {
    if a.feeds == 0 || a.feeds > MAX_FEEDS {
        bail!("--feeds must be 1-{MAX_FEEDS}");
    }
    if !(a.item_rate.is_finite() && a.item_rate > 0.0 && a.item_rate <= 1000.0) {
        bail!("--item-rate must be in (0, 1000]");
    }
    if a.concurrency == 0 || a.items_per_feed == 0 || a.interval.is_zero() {
        bail!("--concurrency, --items-per-feed and --interval must be positive");
    }
    let base = loopback_url(&a.url)?;
    let token: Arc<str> = a.token.clone().into();
    let pid = server_pid(&a.data_dir)?;
    let db = a.data_dir.join("tidings.db");
    let run = nonce();
    let clock = Clock::new();

    // The feed server.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], a.feed_port)))
        .await
        .context("binding the feed server on 127.0.0.1")?;
    let feed_base = format!("http://{}", listener.local_addr()?);
    let srv = Arc::new(FeedSrv {
        run: run.clone(),
        base: feed_base.clone(),
        items_per_feed: a.items_per_feed,
        feeds: (0..a.feeds)
            .map(|_| {
                Mutex::new(Feed {
                    next_k: a.items_per_feed,
                    ..Feed::default()
                })
            })
            .collect(),
        tracked: Mutex::new(Vec::new()),
        measuring: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        window_ok: AtomicU64::new(0),
        window_not_modified: AtomicU64::new(0),
        window_other: AtomicU64::new(0),
        window_gaps: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/f/{file}", get(serve_feed))
        .fallback(fallback)
        .with_state(srv.clone());
    let server_task = tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!(
        "feeds: serving {} feeds at {feed_base}/f/<n>.xml; server pid {pid}",
        a.feeds
    );

    // Subscribe, with bounded concurrency, until done or the setup bound.
    let client = http_client(a.concurrency + 8, a.request_timeout)?;
    let sub_url = endpoint(&base, "api/v1/subscriptions")?;
    let setup_start = Instant::now();
    let deadline = setup_start + a.setup_timeout;
    let mut subscribed = vec![false; a.feeds];
    let mut sub_errors = Errors::default();
    let mut sub_rtt = Vec::with_capacity(a.feeds);
    let mut timed_out = false;
    let subscribe_rate = a
        .subscribe_rate
        .unwrap_or(a.feeds as f64 / a.interval.as_secs_f64());
    if !(subscribe_rate.is_finite() && subscribe_rate >= 0.0) {
        bail!("--subscribe-rate must be 0 or positive");
    }
    {
        let mut s = futures_util::stream::iter(0..a.feeds)
            .map(|n| {
                let (client, url, token) = (client.clone(), sub_url.clone(), token.clone());
                let body =
                    json!({"source": {"kind": "feed", "url": format!("{feed_base}/f/{n}.xml")}});
                let due = (subscribe_rate > 0.0)
                    .then(|| setup_start + Duration::from_secs_f64(n as f64 / subscribe_rate));
                async move {
                    if let Some(due) = due {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let t0 = Instant::now();
                    let r = call(&client, Method::POST, url, &token, Some(&body)).await;
                    (n, r, t0.elapsed())
                }
            })
            .buffer_unordered(a.concurrency);
        let mut done = 0usize;
        let mut last_report = Instant::now();
        loop {
            match tokio::time::timeout_at(deadline.into(), s.next()).await {
                Err(_) => {
                    timed_out = true;
                    break;
                }
                Ok(None) => break,
                Ok(Some((n, r, took))) => {
                    done += 1;
                    match r {
                        Ok(_) => {
                            subscribed[n] = true;
                            sub_rtt.push(micros(took));
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            let kind = msg
                                .split_once("failed: ")
                                .map_or(msg.as_str(), |(_, k)| k)
                                .chars()
                                .take(100)
                                .collect::<String>();
                            sub_errors.add(kind);
                        }
                    }
                    if last_report.elapsed() >= Duration::from_secs(10) {
                        last_report = Instant::now();
                        eprintln!(
                            "  subscribed {done}/{} ({:.0}/s, {} errors)",
                            a.feeds,
                            done as f64 / setup_start.elapsed().as_secs_f64(),
                            sub_errors.total()
                        );
                    }
                }
            }
        }
    }
    let subscribe_s = setup_start.elapsed().as_secs_f64();
    let live: Vec<usize> = (0..a.feeds).filter(|&n| subscribed[n]).collect();
    eprintln!(
        "  subscribed {} of {} feeds in {subscribe_s:.1} s ({:.0}/s){}; errors: {}",
        live.len(),
        a.feeds,
        live.len() as f64 / subscribe_s.max(1e-9),
        if timed_out {
            " -- stopped at --setup-timeout"
        } else {
            ""
        },
        sub_errors.line()
    );
    if live.is_empty() {
        bail!("no feed could be subscribed: {}", sub_errors.line());
    }

    // Every subscribed feed fetched twice: the subscribe-time check and the baseline.
    let baseline_start = Instant::now();
    let baseline_deadline = baseline_start + a.baseline_timeout;
    let baselined = loop {
        let done = live
            .iter()
            .filter(|&&n| {
                srv.feeds[n]
                    .lock()
                    .map(|f| f.requests >= 2)
                    .unwrap_or(false)
            })
            .count();
        if done == live.len() || Instant::now() >= baseline_deadline {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let baseline_s = baseline_start.elapsed().as_secs_f64();
    eprintln!(
        "  baselines: {baselined}/{} feeds fetched twice, {baseline_s:.1} s after the last subscribe",
        live.len()
    );

    // Let polling reach its rhythm.
    let settle = a.settle.unwrap_or(a.interval.mul_f64(1.2));
    eprintln!("  settling for {settle:?} before the window");
    tokio::time::sleep(settle).await;

    // The measured window.
    let history = Arc::new(Mutex::new(HistorySeen::default()));
    let stop_history = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_history(
        http_client(2, Duration::from_secs(30))?,
        base.clone(),
        token.clone(),
        run.clone(),
        a.history_poll,
        history.clone(),
        stop_history.clone(),
    ));
    let total_items = ((a.item_rate * a.measure.as_secs_f64()).round() as usize).max(1);
    eprintln!(
        "feeds: measuring for {:?} with {} feeds; {total_items} new items at {}/s",
        a.measure,
        live.len(),
        a.item_rate
    );
    srv.measuring.store(true, Ordering::Relaxed);
    let self0 = self_cpu_seconds();
    let requests0 = srv.requests.load(Ordering::Relaxed);
    let cpu0 = CpuMark::take(pid)?;
    let window_start = cpu0.at;
    let window_end = window_start + a.measure;
    let mut marks = vec![cpu0];
    let mut next_mark = window_start + Duration::from_secs(10);
    let mut rng = Rng::new(u64::from_str_radix(&run, 16).unwrap_or(7));
    let period = Duration::from_secs_f64(1.0 / a.item_rate);
    for i in 0..total_items {
        let due = window_start + period.mul_f64(i as f64 + 0.5);
        while next_mark <= due {
            tokio::time::sleep_until(next_mark.into()).await;
            marks.push(CpuMark::take(pid)?);
            next_mark += Duration::from_secs(10);
        }
        tokio::time::sleep_until(due.into()).await;
        let n = live[rng.below(live.len() as u64) as usize];
        srv.add_item(n);
    }
    while next_mark < window_end {
        tokio::time::sleep_until(next_mark.into()).await;
        marks.push(CpuMark::take(pid)?);
        next_mark += Duration::from_secs(10);
    }
    tokio::time::sleep_until(window_end.into()).await;
    let cpu1 = CpuMark::take(pid)?;
    marks.push(cpu1);
    srv.measuring.store(false, Ordering::Relaxed);
    let self_cpu = self_cpu_seconds() - self0;
    let window_s = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let window_requests = srv.requests.load(Ordering::Relaxed) - requests0;
    let window_ok = srv.window_ok.load(Ordering::Relaxed);
    let window_304 = srv.window_not_modified.load(Ordering::Relaxed);
    let window_other = srv.window_other.load(Ordering::Relaxed);
    let history_polls_in_window = history.lock().map(|h| h.polls).unwrap_or(0);

    // Drain: the last items are polled within about one interval, then delivered.
    eprintln!(
        "feeds: window over; waiting (up to {:?}) for the last items",
        a.drain
    );
    let drain_deadline = Instant::now() + a.drain;
    loop {
        let seen = history.lock().map(|h| h.at.len()).unwrap_or(0);
        if seen >= total_items || Instant::now() >= drain_deadline || poller.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // One more history poll's worth, so the last answers are in.
    tokio::time::sleep(a.history_poll * 2).await;
    stop_history.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(35), poller).await;
    server_task.abort();

    // The server's own timestamps of each item: notification row, history row.
    let titles = sqlite_rows(
        &db,
        "SELECT id, json_extract(body, '$.title') FROM notifications WHERE source_id LIKE 'feed:%'",
    )
    .await?;
    let mut by_id: HashMap<String, (u32, u32)> = HashMap::new();
    for r in &titles {
        if let (Some(id), Some(t)) = (r.first(), r.get(1))
            && let Some(key) = parse_title(t, &run)
        {
            by_id.insert(id.clone(), key);
        }
    }
    let events = sqlite_rows(
        &db,
        "SELECT kind, time, notification_id FROM events WHERE kind IN ('published', 'delivered') AND notification_id IS NOT NULL",
    )
    .await?;
    let mut published: HashMap<(u32, u32), f64> = HashMap::new();
    let mut delivered: HashMap<(u32, u32), f64> = HashMap::new();
    for r in &events {
        let (Some(kind), Some(t), Some(id)) = (r.first(), r.get(1), r.get(2)) else {
            continue;
        };
        let (Some(key), Ok(t)) = (by_id.get(id), t.parse::<f64>()) else {
            continue;
        };
        let map = if kind == "published" {
            &mut published
        } else {
            &mut delivered
        };
        map.entry(*key).or_insert(t);
    }

    // Per item.
    let tracked = srv.tracked.lock().map(|t| t.clone()).unwrap_or_default();
    let h = history.lock().unwrap_or_else(|e| e.into_inner());
    let (mut served_to_poll, mut poll_to_api, mut poll_to_delivered, mut poll_to_row) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut not_polled, mut not_in_api, mut not_delivered) = (0u64, 0u64, 0u64);
    for t in &tracked {
        let key = (t.feed, t.k);
        let (Some(added), Some(served)) = (t.added, t.served) else {
            not_polled += 1;
            continue;
        };
        served_to_poll.push(micros(served.saturating_duration_since(added)));
        match h.at.get(&key) {
            Some(seen) => poll_to_api.push(micros(seen.saturating_duration_since(served))),
            None => not_in_api += 1,
        }
        let served_ms = clock.unix_ms(served);
        match delivered.get(&key) {
            Some(d) => poll_to_delivered.push(((d - served_ms).max(0.0) * 1000.0) as u64),
            None => not_delivered += 1,
        }
        if let Some(p) = published.get(&key) {
            poll_to_row.push(((p - served_ms).max(0.0) * 1000.0) as u64);
        }
    }
    let served_to_poll = Summary::of(served_to_poll);
    let poll_to_api = Summary::of(poll_to_api);
    let poll_to_delivered = Summary::of(poll_to_delivered);
    let poll_to_row = Summary::of(poll_to_row);
    let mut gaps = srv
        .window_gaps
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    gaps.sort_unstable();
    let gap_pct = |p: f64| -> u64 {
        if gaps.is_empty() {
            return 0;
        }
        let idx = ((p / 100.0) * gaps.len() as f64 - 1e-9).ceil() as usize;
        gaps[idx.clamp(1, gaps.len()) - 1]
    };
    let late_after_ms = (a.interval.as_secs_f64() * 1.1 * 1000.0) as u64 + 2000;
    let late = gaps.iter().filter(|&&g| g > late_after_ms).count();
    let unpolled_feeds = live
        .iter()
        .filter(|&&n| {
            srv.feeds[n]
                .lock()
                .map(|f| f.window_polls == 0)
                .unwrap_or(true)
        })
        .count();

    // CPU.
    let cpu_s = cpu1.cpu_s - cpu0.cpu_s;
    let cpu_pct = cpu0.pct_until(&cpu1);
    let per_10s: Vec<f64> = marks
        .windows(2)
        .map(|w| round3(w[0].pct_until(&w[1])))
        .collect();
    let max_10s = per_10s.iter().copied().fold(0.0, f64::max);
    let polls_per_s = window_requests as f64 / window_s.max(1e-9);
    let cpu_ms_per_poll = if window_requests > 0 {
        cpu_s * 1000.0 / window_requests as f64
    } else {
        0.0
    };
    let expected_polls_per_s = live.len() as f64 / a.interval.as_secs_f64();
    let projected_pct =
        cpu_ms_per_poll / 1000.0 * a.feeds as f64 / a.interval.as_secs_f64() * 100.0;
    let full_scale = live.len() == a.feeds;
    let cpu_met = if full_scale {
        cpu_pct <= TARGET_CPU_PCT
    } else {
        projected_pct <= TARGET_CPU_PCT
    };
    let latency_met = poll_to_delivered.count > 0
        && ms(poll_to_delivered.p99) < TARGET_POLL_TO_HISTORY_MS
        && not_delivered == 0;

    println!(
        "== feeds: {} of {} feeds subscribed by one user, polled every {:?}; {}-s window",
        live.len(),
        a.feeds,
        a.interval,
        round3(window_s)
    );
    println!(
        "setup              subscribed in {subscribe_s:.1} s ({:.0}/s at concurrency {}, paced at {}; subscribe round trip {}), errors: {}{}",
        live.len() as f64 / subscribe_s.max(1e-9),
        a.concurrency,
        if subscribe_rate > 0.0 {
            format!("{subscribe_rate:.1}/s")
        } else {
            "no rate".to_owned()
        },
        Summary::of(sub_rtt.clone()).line(),
        sub_errors.line(),
        if timed_out {
            "; STOPPED at --setup-timeout"
        } else {
            ""
        }
    );
    println!(
        "baselines          {baselined}/{} feeds fetched twice, {baseline_s:.1} s after the last subscribe; then {:.0} s to settle",
        live.len(),
        settle.as_secs_f64()
    );
    println!(
        "polls in window    {window_requests} ({polls_per_s:.1}/s; {expected_polls_per_s:.1}/s expected): {window_ok} × 200, {window_304} × 304 ({:.1} %), {window_other} other requests; {unpolled_feeds} feeds not polled in the window",
        pct(window_304, window_requests)
    );
    println!(
        "poll gaps          p50 {:.1} s  p99 {:.1} s  max {:.1} s; {late} gaps over {:.0} s",
        gap_pct(50.0) as f64 / 1000.0,
        gap_pct(99.0) as f64 / 1000.0,
        gap_pct(100.0) as f64 / 1000.0,
        late_after_ms as f64 / 1000.0
    );
    println!(
        "server CPU         {cpu_pct:.2} % of one core ({cpu_s:.2} CPU-s in {window_s:.1} s; {cpu_ms_per_poll:.3} ms per poll; per 10 s max {max_10s:.1} %)"
    );
    if !full_scale {
        println!(
            "  projected        {projected_pct:.2} % of one core at {} feeds (same cost per poll)",
            a.feeds
        );
    }
    println!(
        "load tool CPU      {:.2} % of one core; history polled {history_polls_in_window} times in the window",
        100.0 * self_cpu / window_s.max(1e-9)
    );
    println!(
        "new items          {} added: {} not polled yet, {} not in history (API), {} without a delivered event",
        tracked.len(),
        not_polled,
        not_in_api,
        not_delivered
    );
    println!("served → poll      {}", served_to_poll.line());
    println!("poll → notification row {}", poll_to_row.line());
    println!(
        "poll → history     {}  (delivered event, server clock)",
        poll_to_delivered.line()
    );
    println!(
        "poll → API lists it {}  (upper bound: history polled every {:?})",
        poll_to_api.line(),
        a.history_poll
    );
    if h.foreign > 0 {
        println!(
            "other notifications {} (e.g. {:?})",
            h.foreign, h.foreign_titles
        );
    }
    if h.errors.total() > 0 {
        println!("history poll errors {}", h.errors.line());
    }
    println!(
        "target             server CPU <= {TARGET_CPU_PCT} % of one core{}: {}",
        if full_scale {
            String::new()
        } else {
            format!(" (projected to {} feeds)", a.feeds)
        },
        if cpu_met { "MET" } else { "NOT MET" }
    );
    println!(
        "target             poll → history p99 < {TARGET_POLL_TO_HISTORY_MS} ms: {}",
        if latency_met { "MET" } else { "NOT MET" }
    );
    let json = json!({
        "scenario": "feeds",
        "feeds_requested": a.feeds,
        "feeds": live.len(),
        "full_scale": full_scale,
        "interval_s": a.interval.as_secs_f64(),
        "setup": {
            "subscribe_s": round3(subscribe_s),
            "subscribe_per_s": round3(live.len() as f64 / subscribe_s.max(1e-9)),
            "concurrency": a.concurrency,
            "subscribe_rate": round3(subscribe_rate),
            "subscribe_rtt": Summary::of(sub_rtt).json(),
            "errors": sub_errors.json(),
            "timed_out": timed_out,
            "baselined": baselined,
            "baseline_wait_s": round3(baseline_s),
            "settle_s": round3(settle.as_secs_f64()),
        },
        "window_s": round3(window_s),
        "polls": window_requests,
        "polls_per_s": round3(polls_per_s),
        "expected_polls_per_s": round3(expected_polls_per_s),
        "ok_200": window_ok,
        "not_modified_304": window_304,
        "other_requests": window_other,
        "unpolled_feeds": unpolled_feeds,
        "poll_gap_s": {
            "p50": round3(gap_pct(50.0) as f64 / 1000.0),
            "p99": round3(gap_pct(99.0) as f64 / 1000.0),
            "max": round3(gap_pct(100.0) as f64 / 1000.0),
            "late": late,
        },
        "server_cpu_pct": round3(cpu_pct),
        "server_cpu_window_s": round3(cpu_s),
        "server_cpu_ms_per_poll": round3(cpu_ms_per_poll),
        "server_cpu_pct_per_10s": per_10s,
        "server_cpu_pct_max_10s": round3(max_10s),
        "projected_cpu_pct": round3(projected_pct),
        "tool_cpu_pct": round3(100.0 * self_cpu / window_s.max(1e-9)),
        "history_polls_in_window": history_polls_in_window,
        "items": {
            "added": tracked.len(),
            "not_polled": not_polled,
            "not_in_api": not_in_api,
            "not_delivered": not_delivered,
        },
        "served_to_poll": served_to_poll.json(),
        "poll_to_row": poll_to_row.json(),
        "poll_to_history": poll_to_delivered.json(),
        "poll_to_api": poll_to_api.json(),
        "history_poll_ms": round3(a.history_poll.as_secs_f64() * 1000.0),
        "other_notifications": h.foreign,
        "target_cpu_pct": TARGET_CPU_PCT,
        "target_poll_to_history_ms": TARGET_POLL_TO_HISTORY_MS,
        "cpu_met": cpu_met,
        "latency_met": latency_met,
        "met": cpu_met && latency_met,
    });
    drop(h);
    if tracked.is_empty() {
        return Err(anyhow!("no item was added"));
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_etags() {
        assert_eq!(parse_title("fb abc f12 i7", "abc"), Some((12, 7)));
        assert_eq!(parse_title("fb abd f12 i7", "abc"), None);
        assert_eq!(parse_title("Bench feed 3", "abc"), None);
        assert!(matches_etag("\"3-1\"", "\"3-1\""));
        assert!(matches_etag("W/\"3-1\", \"x\"", "\"3-1\""));
        assert!(!matches_etag("\"3-2\"", "\"3-1\""));
    }

    #[test]
    fn documents_hold_unpolled_items() {
        let srv = FeedSrv {
            run: "r".into(),
            base: "http://127.0.0.1:1".into(),
            items_per_feed: 2,
            feeds: (0..2)
                .map(|_| {
                    Mutex::new(Feed {
                        next_k: 2,
                        ..Feed::default()
                    })
                })
                .collect(),
            tracked: Mutex::new(Vec::new()),
            measuring: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            window_ok: AtomicU64::new(0),
            window_not_modified: AtomicU64::new(0),
            window_other: AtomicU64::new(0),
            window_gaps: Mutex::new(Vec::new()),
        };
        for _ in 0..3 {
            srv.add_item(1);
        }
        let f = srv.feeds[1].lock().unwrap();
        let doc = srv.document(1, &f);
        for k in 0..5 {
            assert!(doc.contains(&format!("fb r f1 i{k}<")), "{k}: {doc}");
        }
        let parsed = tidings_feed::parse(tidings_feed::FeedInput {
            body: doc.as_bytes(),
            content_type: Some("application/rss+xml"),
            url: Some("http://127.0.0.1:1/f/1.xml"),
            ..Default::default()
        });
        assert_eq!(parsed.items.len(), 5);
        assert!(!parsed.bozo, "{:?}", parsed.warnings);
        assert_eq!(parsed.items[0].title.as_deref(), Some("fb r f1 i4"));
    }
}
