//! `dead-destination`: the server's memory while one destination is dead and a large
//! backlog for it waits, and whether the user's other destination is held up by it.
//!
//! One user subscribes to a topic and adds two webhook destinations: `healthy` (the tool's
//! receiver, see [`crate::receiver`], answering 200 at once) and `dead`, which by `--mode`
//! is
//! - `hang` (default): a listener that accepts the connection, reads the request and never
//!   answers, so every attempt lasts the server's whole delivery timeout (15 s by default)
//!   while holding a connection and a send permit: a hung receiver or a black-holed host,
//!   the harsher case, since the failure is only known after the timeout;
//! - `refused`: a loopback port nothing listens on (every attempt fails at once, so the
//!   retry backoff and the circuit breaker do the pacing);
//! - `none`: a second healthy path, the control run: what the same queueing costs when
//!   nothing is dead.
//!
//! After one warm-up publish, the server's memory (`/proc/<pid>/status`: VmRSS, RssAnon)
//! is sampled every `--sample` through phases: `baseline` (idle, `--baseline` long),
//! `queueing` (`--items` durable publishes, `--clients` connections), `draining` (until
//! the healthy destination has every item, so every item for the dead one is queued) and
//! `hold` (`--hold`: the dead worker keeps failing with the backlog on disk). The dead
//! destination's `pending` and `health` come from `GET /api/v1/destinations/{id}` once a
//! second. Reported: baseline, peak (and VmHWM) and final RSS, the extra over the
//! baseline, the growth during the hold, and for the healthy destination every item
//! checked by `Idempotency-Key`, its delivery rate and publish → webhook latency.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::deliveries::{Published, publish_one};
use crate::fanout::call;
use crate::receiver::{Memory, Receiver, memory, refused_addr};
use crate::stats::{Errors, Summary, micros, round3};
use crate::sys::{process_cpu_seconds, server_pid};
use crate::{endpoint, http_client, loopback_url, nonce, parse_duration};

/// Most extra memory the issue allows while the backlog waits.
const TARGET_EXTRA_MIB: f64 = 50.0;
/// Growth during the hold still called flat.
const FLAT_MIB: f64 = 5.0;
const MAX_ITEMS: usize = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Accepts the connection and never answers.
    Hang,
    /// Nothing listens: connection refused.
    Refused,
    /// Control: the second destination is healthy too.
    None,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Hang => "hang",
            Mode::Refused => "refused",
            Mode::None => "none",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL (loopback only); the server needs
    /// `TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS=true`.
    #[arg(long)]
    url: String,
    /// API token of the user (subscribes, adds the destinations, publishes).
    #[arg(long, env = "TIDINGS_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    /// The server's data dir (its pid is in server.json; tidings.db's size is reported).
    #[arg(long)]
    data_dir: PathBuf,
    /// Items queued for the dead destination (durable publishes).
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Publishing connections.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// What the dead destination does.
    #[arg(long, value_enum, default_value_t = Mode::Hang)]
    mode: Mode,
    /// Topic published to.
    #[arg(long, default_value = "dead")]
    topic: String,
    /// Idle sampling before queueing.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    baseline: Duration,
    /// Sampling after everything is queued, while the dead destination keeps failing.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    hold: Duration,
    /// Sampling interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    sample: Duration,
    /// Bound on queueing plus draining.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    timeout: Duration,
    /// Worker threads of the receiver's own runtime.
    #[arg(long, default_value_t = 1)]
    receiver_threads: usize,
}

const PHASES: [&str; 5] = ["setup", "baseline", "queueing", "draining", "hold"];

/// What the API poller last saw of the dead destination.
struct DeadView {
    pending: AtomicI64,
    failures: AtomicU64,
    state: Mutex<String>,
    last_error: Mutex<Option<String>>,
    latencies_us: Mutex<Vec<u64>>,
    poll_errors: AtomicU64,
}

#[derive(Debug, Clone)]
struct Sample {
    t_s: f64,
    phase: u8,
    mem: Memory,
    cpu_s: f64,
    pending: i64,
    healthy: u64,
    state: String,
}

async fn poll_dead(
    client: reqwest::Client,
    url: reqwest::Url,
    token: Arc<str>,
    view: Arc<DeadView>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let t = Instant::now();
        match call(&client, Method::GET, url.clone(), &token, None).await {
            Ok(v) => {
                view.latencies_us
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(micros(t.elapsed()));
                view.pending
                    .store(v["pending"].as_i64().unwrap_or(-1), Ordering::Relaxed);
                view.failures.store(
                    v["health"]["consecutive_failures"].as_u64().unwrap_or(0),
                    Ordering::Relaxed,
                );
                *view.state.lock().unwrap_or_else(|p| p.into_inner()) =
                    v["health"]["state"].as_str().unwrap_or("?").to_owned();
                *view.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                    v["health"]["last_error"].as_str().map(str::to_owned);
            }
            Err(_) => {
                view.poll_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wait = every.saturating_sub(t.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

fn mib(kib: u64) -> f64 {
    round3(kib as f64 / 1024.0)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

async fn add_destination(
    client: &reqwest::Client,
    base: &reqwest::Url,
    token: &str,
    name: &str,
    url: String,
) -> Result<String> {
    let v = call(
        client,
        Method::POST,
        endpoint(base, "api/v1/destinations")?,
        token,
        Some(&json!({"name": name, "url": url})),
    )
    .await
    .with_context(|| format!("adding the {name} destination"))?;
    if v["verified"] != json!(true) {
        bail!("the {name} destination needs verification: {v}");
    }
    v["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no id in {v}"))
}

pub async fn run(a: Args) -> Result<Value> {
    if a.items == 0 || a.items > MAX_ITEMS {
        bail!("--items must be 1-{MAX_ITEMS}");
    }
    if a.sample.is_zero() {
        bail!("--sample must be positive");
    }
    let base = loopback_url(&a.url)?;
    let token: Arc<str> = a.token.clone().into();
    let pid = server_pid(&a.data_dir)?;
    let run = nonce();
    let rx = Receiver::start(0, a.receiver_threads)?;
    let tally = rx.tally.clone();
    let (dead_url, dead_path) = match a.mode {
        Mode::Hang => (format!("json://{}/dead", rx.hang()?), None),
        Mode::Refused => (format!("json://{}/dead", refused_addr()?), None),
        Mode::None => (format!("json://{}/ok2", rx.addr), Some("/ok2")),
    };
    let client = http_client(a.clients + 8, Duration::from_secs(60))?;

    call(
        &client,
        Method::POST,
        endpoint(&base, "api/v1/subscriptions")?,
        &token,
        Some(&json!({"source": {"kind": "topic", "topic": a.topic}})),
    )
    .await
    .context("subscribing to the topic")?;
    let healthy_id = add_destination(
        &client,
        &base,
        &token,
        "healthy",
        format!("json://{}/ok", rx.addr),
    )
    .await?;
    let dead_id = add_destination(&client, &base, &token, "dead", dead_url.clone()).await?;
    let topic_url = endpoint(&base, &a.topic)?;
    publish_one(&client, &topic_url, &token, format!("dead {run} warm-up"))
        .await
        .map_err(|e| anyhow!("the warm-up publish failed: {e}"))?;
    let t_warm = Instant::now();
    while tally.unique_at("/ok") < 1 {
        if t_warm.elapsed() > Duration::from_secs(60) {
            bail!(
                "the warm-up item did not reach the healthy destination in 60 s (is TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS=true?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "dead-destination: mode {}, dead destination {dead_url}; baseline for {:?}",
        a.mode.name(),
        a.baseline
    );

    // Samplers: memory (never blocks), and the dead destination through the API.
    let phase = Arc::new(AtomicU8::new(1));
    let view = Arc::new(DeadView {
        pending: AtomicI64::new(-1),
        failures: AtomicU64::new(0),
        state: Mutex::new(String::new()),
        last_error: Mutex::new(None),
        latencies_us: Mutex::new(Vec::new()),
        poll_errors: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(poll_dead(
        http_client(2, Duration::from_secs(30))?,
        endpoint(&base, &format!("api/v1/destinations/{dead_id}"))?,
        token.clone(),
        view.clone(),
        Duration::from_secs(1),
        stop_rx.clone(),
    ));
    let t_start = Instant::now();
    let sampler = {
        let (phase, view, tally, every) = (phase.clone(), view.clone(), tally.clone(), a.sample);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut out: Vec<Sample> = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => {}
                }
                let Ok(mem) = memory(pid) else { break };
                out.push(Sample {
                    t_s: round3(t_start.elapsed().as_secs_f64()),
                    phase: phase.load(Ordering::Relaxed),
                    mem,
                    cpu_s: process_cpu_seconds(pid).unwrap_or(0.0),
                    pending: view.pending.load(Ordering::Relaxed),
                    healthy: tally.unique_at("/ok"),
                    state: view.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                });
                if *stop.borrow() {
                    break;
                }
            }
            out
        })
    };
    tokio::time::sleep(a.baseline).await;

    // Queueing: `--items` durable publishes over `--clients` connections.
    phase.store(2, Ordering::Relaxed);
    eprintln!(
        "dead-destination: publishing {} items over {} connections",
        a.items, a.clients
    );
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..a.clients.max(1) {
        let (client, url, token, next, run) = (
            client.clone(),
            topic_url.clone(),
            token.clone(),
            next.clone(),
            run.clone(),
        );
        let items = a.items;
        workers.spawn(async move {
            let mut ok: Vec<Published> = Vec::new();
            let mut errors = Errors::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items {
                    break;
                }
                // A few attempts, so that the backlog is complete.
                for attempt in 0..4u64 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    match publish_one(&client, &url, &token, format!("dead {run} {i}")).await {
                        Ok(p) => {
                            ok.push(p);
                            break;
                        }
                        Err(e) => errors.add(e),
                    }
                }
            }
            (ok, errors)
        });
    }
    let mut published: Vec<Published> = Vec::with_capacity(a.items);
    let mut errors = Errors::default();
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            r = workers.join_next() => match r {
                None => break,
                Some(r) => {
                    let (ok, e) = r.context("a publishing worker panicked")?;
                    published.extend(ok);
                    errors.merge(&e);
                }
            },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {:.0} s: ~{} published, healthy has {}, dead pending {}",
                t0.elapsed().as_secs_f64(),
                next.load(Ordering::Relaxed).min(a.items),
                tally.unique_at("/ok"),
                view.pending.load(Ordering::Relaxed)
            );
        }
        if t0.elapsed() > a.timeout {
            workers.abort_all();
            bail!("publishing took longer than {:?}", a.timeout);
        }
    }
    let publish_s = published
        .iter()
        .map(|p| p.answered.saturating_duration_since(t0))
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let acked = published.len() as u64;

    // Draining: until the healthy destination (and in the control run the second one)
    // has every item; both rows of an item are written in one commit, so by then every
    // item for the dead destination is queued.
    phase.store(3, Ordering::Relaxed);
    let want = acked + 1;
    let done = |tally: &crate::receiver::Tally| {
        tally.unique_at("/ok") >= want && dead_path.is_none_or(|p| tally.unique_at(p) >= want)
    };
    while !done(&tally) && t0.elapsed() < a.timeout {
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {:.0} s: healthy has {}/{want}, dead pending {}",
                t0.elapsed().as_secs_f64(),
                tally.unique_at("/ok"),
                view.pending.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained_s = t0.elapsed().as_secs_f64();

    // Hold: the backlog waits while the dead destination keeps failing.
    phase.store(4, Ordering::Relaxed);
    eprintln!(
        "dead-destination: all queued after {drained_s:.1} s; holding for {:?}",
        a.hold
    );
    tokio::time::sleep(a.hold).await;
    stop_tx.send_replace(true);
    let samples = sampler.await.context("the sampler panicked")?;
    let _ = poller.await;
    let end_mem = memory(pid)?;
    let dead_view = call(
        &client,
        Method::GET,
        endpoint(&base, &format!("api/v1/destinations/{dead_id}"))?,
        &token,
        None,
    )
    .await?;
    let healthy_view = call(
        &client,
        Method::GET,
        endpoint(&base, &format!("api/v1/destinations/{healthy_id}"))?,
        &token,
        None,
    )
    .await?;

    // The healthy destination: every item, by key.
    let (mut missing, mut dups) = (0u64, 0u64);
    let mut lat = Vec::with_capacity(published.len());
    let mut last_arrival = Duration::ZERO;
    for p in &published {
        match tally.get("/ok", &p.id) {
            None => missing += 1,
            Some(s) => {
                dups += u64::from(s.count - 1);
                let at = tally.at(s.first_ns);
                lat.push(micros(at.saturating_duration_since(p.sent)));
                last_arrival = last_arrival.max(at.saturating_duration_since(t0));
            }
        }
    }
    let healthy_lat = Summary::of(lat);
    let healthy_rate = acked as f64 / last_arrival.as_secs_f64().max(1e-9);
    let publish_rate = acked as f64 / publish_s.max(1e-9);

    // Memory.
    let of_phase = |ph: u8| samples.iter().filter(move |s| s.phase == ph);
    let mut base_rss: Vec<u64> = of_phase(1).map(|s| s.mem.rss_kib).collect();
    base_rss.sort_unstable();
    let mut base_anon: Vec<u64> = of_phase(1).map(|s| s.mem.anon_kib).collect();
    base_anon.sort_unstable();
    let median = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0);
    let baseline = median(&base_rss);
    let baseline_anon = median(&base_anon);
    let after = || samples.iter().filter(|s| s.phase >= 2);
    let peak = after().map(|s| s.mem.rss_kib).max().unwrap_or(0);
    let peak_anon = after().map(|s| s.mem.anon_kib).max().unwrap_or(0);
    let hold_start = of_phase(4).next().map_or(0, |s| s.mem.rss_kib);
    let final_rss = samples.last().map_or(0, |s| s.mem.rss_kib);
    let final_anon = samples.last().map_or(0, |s| s.mem.anon_kib);
    let extra_peak = mib(peak.max(end_mem.hwm_kib).saturating_sub(baseline));
    let extra_final = mib(final_rss.saturating_sub(baseline));
    let hold_growth = (final_rss as f64 - hold_start as f64) / 1024.0;
    let cpu_hold = {
        let h: Vec<&Sample> = of_phase(4).collect();
        match (h.first(), h.last()) {
            (Some(a), Some(b)) if b.t_s > a.t_s => {
                Some(round3(100.0 * (b.cpu_s - a.cpu_s) / (b.t_s - a.t_s)))
            }
            _ => None,
        }
    };
    let met = missing == 0 && extra_peak < TARGET_EXTRA_MIB && hold_growth <= FLAT_MIB;
    let db = a.data_dir.join("tidings.db");
    let wal = a.data_dir.join("tidings.db-wal");
    let api_lat = Summary::of(
        view.latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    );

    println!(
        "== dead-destination: {} items for a dead destination (mode {}) and a healthy one, {} publishing connections",
        a.items,
        a.mode.name(),
        a.clients
    );
    println!(
        "queued             {acked}/{} acknowledged in {publish_s:.1} s ({publish_rate:.0}/s); errors: {}",
        a.items,
        errors.line()
    );
    println!(
        "healthy            {}/{acked} received ({missing} missing, {dups} duplicates), the last {:.1} s after the first publish: {healthy_rate:.0}/s; publish → webhook {}",
        acked - missing,
        last_arrival.as_secs_f64(),
        healthy_lat.line()
    );
    println!(
        "dead               pending {}, health {}; hanging listener: {} connections ({} still open), {} requests",
        dead_view["pending"],
        dead_view["health"],
        rx.hang.connections.load(Ordering::Relaxed),
        rx.hang.open.load(Ordering::Relaxed),
        rx.hang.requests.load(Ordering::Relaxed)
    );
    println!(
        "server RSS         baseline {:.1} MiB, peak {:.1} MiB (VmHWM {:.1}), at hold start {:.1}, final {:.1} MiB: extra {extra_peak:.1} MiB at peak, {extra_final:.1} MiB at the end; growth during the {:?} hold {hold_growth:+.1} MiB",
        mib(baseline),
        mib(peak),
        mib(end_mem.hwm_kib),
        mib(hold_start),
        mib(final_rss),
        a.hold
    );
    println!(
        "  RssAnon          baseline {:.1} MiB, peak {:.1}, final {:.1} MiB; server CPU during the hold {}",
        mib(baseline_anon),
        mib(peak_anon),
        mib(final_anon),
        cpu_hold.map_or("-".into(), |c| format!("{c:.1} % of a core"))
    );
    println!("  t s   phase      RSS MiB  anon MiB  dead pending  healthy  dead health");
    let step = (samples.len() / 30).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i + 1 == samples.len() {
            println!(
                "  {:>5.0} {:<10} {:>7.1} {:>9.1} {:>13} {:>8} {}",
                s.t_s,
                PHASES[usize::from(s.phase).min(4)],
                mib(s.mem.rss_kib),
                mib(s.mem.anon_kib),
                s.pending,
                s.healthy,
                s.state
            );
        }
    }
    println!(
        "API                GET /api/v1/destinations/{{dead}} once a second: {} ({} failed)",
        api_lat.line(),
        view.poll_errors.load(Ordering::Relaxed)
    );
    println!(
        "database           tidings.db {:.1} MiB, WAL {:.1} MiB",
        file_len(&db) as f64 / 1048576.0,
        file_len(&wal) as f64 / 1048576.0
    );
    println!(
        "target             extra RSS < {TARGET_EXTRA_MIB} MiB and flat (hold growth <= {FLAT_MIB} MiB), healthy gets all: {}",
        if met { "MET" } else { "NOT MET" }
    );
    let sample_json: Vec<Value> = samples
        .iter()
        .map(|s| {
            json!([
                s.t_s,
                PHASES[usize::from(s.phase).min(4)],
                s.mem.rss_kib,
                s.mem.anon_kib,
                s.pending,
                s.healthy,
                round3(s.cpu_s)
            ])
        })
        .collect();
    Ok(json!({
        "scenario": "dead-destination",
        "mode": a.mode.name(),
        "items": a.items,
        "clients": a.clients,
        "acknowledged": acked,
        "publish_errors": errors.json(),
        "publish_s": round3(publish_s),
        "publish_per_second": round3(publish_rate),
        "drained_s": round3(drained_s),
        "hold_s": round3(a.hold.as_secs_f64()),
        "healthy": {
            "received": acked - missing,
            "missing": missing,
            "duplicates": dups,
            "last_arrival_s": round3(last_arrival.as_secs_f64()),
            "per_second": round3(healthy_rate),
            "latency": healthy_lat.json(),
            "pending_end": healthy_view["pending"],
            "health_end": healthy_view["health"],
        },
        "dead": {
            "pending_end": dead_view["pending"],
            "health_end": dead_view["health"],
            "hang_connections": rx.hang.connections.load(Ordering::Relaxed),
            "hang_requests": rx.hang.requests.load(Ordering::Relaxed),
            "api_latency": api_lat.json(),
            "api_poll_errors": view.poll_errors.load(Ordering::Relaxed),
        },
        "rss_mib": {
            "baseline": mib(baseline),
            "peak": mib(peak),
            "hwm_end": mib(end_mem.hwm_kib),
            "hold_start": mib(hold_start),
            "final": mib(final_rss),
            "extra_peak": extra_peak,
            "extra_final": extra_final,
            "hold_growth": round3(hold_growth),
        },
        "anon_mib": {
            "baseline": mib(baseline_anon),
            "peak": mib(peak_anon),
            "final": mib(final_anon),
        },
        "server_cpu_hold_pct": cpu_hold,
        "db_mib": round3(file_len(&db) as f64 / 1048576.0),
        "wal_mib": round3(file_len(&wal) as f64 / 1048576.0),
        "samples": ["t_s", "phase", "rss_kib", "anon_kib", "dead_pending", "healthy", "server_cpu_s"],
        "timeline": sample_json,
        "target_extra_mib": TARGET_EXTRA_MIB,
        "flat_mib": FLAT_MIB,
        "met": met,
    }))
}
