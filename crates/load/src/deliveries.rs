//! `deliveries`: webhook deliveries per second across many destinations.
//!
//! Setup (not timed in the result): an owner claims a topic; `--users` users are created,
//! granted subscribe, subscribed to it, and each adds `--destinations-per-user` webhook
//! destinations (`json://127.0.0.1:<receiver>/d/<k>`, k = 0..users·per-user) pointing at
//! the tool's own receiver (see [`crate::receiver`]; its own runtime and threads). One
//! unmeasured warm-up publish must reach every destination before the run.
//!
//! Then the owner publishes `--notifications` messages (`--publish-clients` at a time),
//! and the run lasts from the instant before the first publish was sent until the receiver
//! has every (destination path, `Idempotency-Key`) pair: deliveries per second is
//! notifications × destinations over that time. Afterwards every pair is checked (none
//! missing; a pair that arrived more than once is a duplicate), and with `--data-dir` the
//! server's CPU time over the run is read from `/proc/<pid>/stat` (by thread too) and the
//! outbox and delivery records are read from its `tidings.db`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::fanout::{User, call, create_user, phase};
use crate::receiver::Receiver;
use crate::stats::{Errors, Summary, micros, round3};
use crate::sys::{process_cpu_seconds, server_pid, sqlite_rows, thread_cpu_seconds};
use crate::{endpoint, error_kind, http_client, loopback_url, nonce, parse_duration};

/// Deliveries per second the issue asks for (on 2 cores).
const TARGET_PER_SEC: f64 = 5_000.0;
/// The server's limit of destinations per user.
const MAX_PER_USER: usize = 50;
const MAX_DELIVERIES: usize = 10_000_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL (loopback only); the server needs
    /// `TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS=true`.
    #[arg(long)]
    url: String,
    /// An administrator's API token (creates the users).
    #[arg(long, env = "TIDINGS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Users subscribed to the topic.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Webhook destinations of each user (the server allows 50).
    #[arg(long, default_value_t = 50)]
    destinations_per_user: usize,
    /// Notifications published in the measured run; each goes to every destination.
    #[arg(long, default_value_t = 50)]
    notifications: usize,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 4)]
    publish_clients: usize,
    /// Topic the owner publishes to.
    #[arg(long, default_value = "dlv")]
    topic: String,
    /// Worker threads of the receiver's own runtime.
    #[arg(long, default_value_t = 1)]
    receiver_threads: usize,
    /// Port of the receiver on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    receiver_port: u16,
    /// Setup requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The server's data dir: its pid (CPU time) and tidings.db (outbox, records).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Bound on waiting for every delivery.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    /// Wait after the last delivery, for late duplicates.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Bound on the whole setup.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    setup_timeout: Duration,
    /// Prefix of the user names [default: `d` + a run tag].
    #[arg(long)]
    prefix: Option<String>,
}

/// One acknowledged publish: notification id, when it was sent, when it was answered.
pub(crate) struct Published {
    pub id: String,
    pub sent: Instant,
    pub answered: Instant,
}

/// One publish; the error is a short kind (an HTTP status, `io:timeout`, ...).
pub(crate) async fn publish_one(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: &str,
    body: String,
) -> Result<Published, String> {
    let sent = Instant::now();
    let resp = client
        .post(url.clone())
        .bearer_auth(token)
        .header("Title", "deliveries")
        .body(body)
        .send()
        .await
        .map_err(|e| error_kind(&e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| error_kind(&e))?;
    let answered = Instant::now();
    if !status.is_success() {
        return Err(status.as_u16().to_string());
    }
    let v: Value = serde_json::from_str(&text).map_err(|_| "bad answer".to_owned())?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| "answer without id".to_owned())?;
    Ok(Published {
        id: id.to_owned(),
        sent,
        answered,
    })
}

fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

pub async fn run(a: Args) -> Result<Value> {
    if a.users == 0 || a.destinations_per_user == 0 || a.notifications == 0 {
        bail!("--users, --destinations-per-user and --notifications must be positive");
    }
    if a.destinations_per_user > MAX_PER_USER {
        bail!("--destinations-per-user: the server allows at most {MAX_PER_USER} per user");
    }
    let dests = a.users * a.destinations_per_user;
    let expected = dests
        .checked_mul(a.notifications)
        .filter(|&n| n <= MAX_DELIVERIES)
        .ok_or_else(|| anyhow!("at most {MAX_DELIVERIES} deliveries per run"))?;
    let base = loopback_url(&a.url)?;
    let run = nonce();
    let prefix = a.prefix.clone().unwrap_or_else(|| format!("d{run}"));
    let pid = a.data_dir.as_deref().map(server_pid).transpose()?;
    let rx = Receiver::start(a.receiver_port, a.receiver_threads)?;
    let tally = rx.tally.clone();
    let client = http_client(a.concurrency * 2 + 8, Duration::from_secs(60))?;
    let admin = a.admin_token.as_str();
    let setup_start = Instant::now();
    let deadline = setup_start + a.setup_timeout;
    eprintln!(
        "deliveries: {} users × {} webhook destinations on {} (names {prefix}-*)",
        a.users, a.destinations_per_user, rx.addr
    );

    // Setup: owner and topic, users, grants, subscriptions, destinations.
    let owner = create_user(&client, &base, admin, format!("{prefix}-owner")).await?;
    let topic_url = endpoint(&base, &a.topic)?;
    publish_one(
        &client,
        &topic_url,
        &owner.token,
        format!("deliveries {run} claim"),
    )
    .await
    .map_err(|e| anyhow!("the owner's first publish failed: {e}"))?;
    let (users, _) = phase("create users", a.users, a.concurrency, deadline, |i| {
        create_user(&client, &base, admin, format!("{prefix}-{i}"))
    })
    .await?;
    let users: Vec<User> = users;
    phase("grant subscribe", a.users, a.concurrency, deadline, |i| {
        let url = endpoint(
            &base,
            &format!("api/v1/topics/{}/grants/{}", a.topic, users[i].name),
        );
        let (client, owner) = (&client, &owner);
        async move {
            let body = json!({"subscribe": true});
            call(client, Method::PUT, url?, &owner.token, Some(&body)).await
        }
    })
    .await?;
    let sub_body = json!({"source": {"kind": "topic", "topic": a.topic}});
    phase("subscribe", a.users, a.concurrency, deadline, |i| {
        let url = endpoint(&base, "api/v1/subscriptions");
        let (client, users, body) = (&client, &users, &sub_body);
        async move { call(client, Method::POST, url?, &users[i].token, Some(body)).await }
    })
    .await?;
    let addr = rx.addr;
    let (_, t_dest) = phase("create destinations", dests, a.concurrency, deadline, |k| {
        let url = endpoint(&base, "api/v1/destinations");
        let user = &users[k / a.destinations_per_user];
        let client = &client;
        async move {
            let body = json!({"name": format!("d{k}"), "url": format!("json://{addr}/d/{k}")});
            let v = call(client, Method::POST, url?, &user.token, Some(&body)).await?;
            if v["verified"] != json!(true) {
                bail!("destination d{k} is not usable without verification: {v}");
            }
            Ok(())
        }
    })
    .await?;
    let setup = setup_start.elapsed();

    // Warm-up: one notification to every destination (connections, workers, caches).
    let t_warm = Instant::now();
    publish_one(
        &client,
        &topic_url,
        &owner.token,
        format!("deliveries {run} warm-up"),
    )
    .await
    .map_err(|e| anyhow!("the warm-up publish failed: {e}"))?;
    while tally.unique() < dests as u64 {
        if t_warm.elapsed() > Duration::from_secs(120) {
            bail!(
                "the warm-up reached {}/{dests} destinations in 120 s (is TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS=true?)",
                tally.unique()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let warm = t_warm.elapsed();
    eprintln!(
        "  warm-up: {dests} deliveries in {:.0} ms; setup {:.1} s",
        warm.as_secs_f64() * 1000.0,
        setup.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The measured run.
    eprintln!(
        "deliveries: publishing {} notifications ({expected} deliveries)",
        a.notifications
    );
    let unique0 = tally.unique();
    let posts0 = tally.posts();
    let dups0 = tally.duplicates();
    let (no_key0, bytes0) = (tally.no_key(), tally.bytes());
    let cpu0 = pid.map(process_cpu_seconds).transpose()?;
    let threads0 = pid.map(thread_cpu_seconds).transpose()?;
    let self0 = crate::self_cpu_seconds();
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let publisher = {
        let (client, url, token) = (client.clone(), topic_url.clone(), owner.token.clone());
        let (acked, done, run) = (acked.clone(), done.clone(), run.clone());
        let (n, conc) = (a.notifications, a.publish_clients.max(1));
        tokio::spawn(async move {
            let results: Vec<Result<Published, String>> = futures_util::stream::iter(0..n)
                .map(|i| {
                    let (client, url, token, acked) = (&client, &url, &token, &acked);
                    let body = format!("deliveries {run} {i}");
                    async move {
                        let r = publish_one(client, url, token, body).await;
                        if r.is_ok() {
                            acked.fetch_add(1, Ordering::Release);
                        }
                        r
                    }
                })
                .buffer_unordered(conc)
                .collect()
                .await;
            done.store(true, Ordering::Release);
            results
        })
    };
    let end = t0 + a.timeout;
    let mut last_report = Instant::now();
    loop {
        let all_published = done.load(Ordering::Acquire);
        let want = unique0 + (acked.load(Ordering::Acquire) * dests) as u64;
        if all_published && tally.unique() >= want {
            break;
        }
        if Instant::now() >= end {
            eprintln!("  timed out after {:?}", a.timeout);
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {}/{expected} delivered after {:.1} s",
                tally.unique() - unique0,
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu1 = pid.map(process_cpu_seconds).transpose()?;
    let threads1 = pid.map(thread_cpu_seconds).transpose()?;
    let self1 = crate::self_cpu_seconds();
    let t_seen_all = Instant::now();
    let results = publisher.await.context("the publisher panicked")?;

    // Every (destination, notification) pair.
    let mut errors = Errors::default();
    let mut published = Vec::new();
    for r in results {
        match r {
            Ok(p) => published.push(p),
            Err(e) => errors.add(e),
        }
    }
    let mut arrivals: Vec<u64> = Vec::with_capacity(published.len() * dests);
    let mut latencies = Vec::with_capacity(published.len() * dests);
    let (mut missing, mut dup_expected) = (0u64, 0u64);
    let mut dup_examples: Vec<Value> = Vec::new();
    let paths: Vec<String> = (0..dests).map(|k| format!("/d/{k}")).collect();
    for p in &published {
        for path in &paths {
            match tally.get(path, &p.id) {
                None => missing += 1,
                Some(s) => {
                    dup_expected += u64::from(s.count - 1);
                    if s.count > 1 && dup_examples.len() < 5 {
                        dup_examples.push(json!({"path": path, "id": p.id, "posts": s.count}));
                    }
                    let at = tally.at(s.first_ns);
                    arrivals.push(micros(at.saturating_duration_since(t0)));
                    latencies.push(micros(at.saturating_duration_since(p.sent)));
                }
            }
        }
    }
    arrivals.sort_unstable();
    let delivered = arrivals.len();
    let unexpected = (tally.unique() - unique0).saturating_sub(delivered as u64);
    let last_us = arrivals.last().copied().unwrap_or(0);
    let elapsed_s = last_us as f64 / 1e6;
    let per_second = if elapsed_s > 0.0 {
        delivered as f64 / elapsed_s
    } else {
        0.0
    };
    // The middle 80 % of arrivals, without the start and the tail.
    let steady = if delivered >= 10 {
        let (lo, hi) = (arrivals[delivered / 10], arrivals[delivered * 9 / 10]);
        (hi > lo).then(|| (delivered * 8 / 10) as f64 / ((hi - lo) as f64 / 1e6))
    } else {
        None
    };
    let mut per_sec_timeline: Vec<u64> = Vec::new();
    for &us in &arrivals {
        let s = (us / 1_000_000) as usize;
        if per_sec_timeline.len() <= s {
            per_sec_timeline.resize(s + 1, 0);
        }
        per_sec_timeline[s] += 1;
    }
    let publish_all = published
        .iter()
        .map(|p| p.answered.saturating_duration_since(t0))
        .max()
        .unwrap_or_default();
    let latency = Summary::of(latencies);
    let cpu_s = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let cpu_per_1000_ms = cpu_s
        .filter(|_| delivered > 0)
        .map(|c| c * 1e6 / delivered as f64);
    let threads: BTreeMap<String, f64> = match (&threads0, &threads1) {
        (Some(a), Some(b)) => b
            .iter()
            .map(|(k, v)| (k.clone(), round3(v - a.get(k).copied().unwrap_or(0.0))))
            .filter(|(_, v)| *v > 0.0)
            .collect(),
        _ => BTreeMap::new(),
    };

    // The server's side: outbox drained, delivery records, the API's view.
    let mut outbox_drained_s = None;
    let mut records: BTreeMap<String, u64> = BTreeMap::new();
    let mut db_error = None;
    if let Some(dir) = &a.data_dir {
        let db = dir.join("tidings.db");
        let drain_end = Instant::now() + Duration::from_secs(60);
        loop {
            match sqlite_rows(&db, "SELECT count(*) FROM outbox").await {
                Ok(rows)
                    if rows.first().and_then(|r| r.first()).map(String::as_str) == Some("0") =>
                {
                    outbox_drained_s = Some(secs(t0.elapsed()));
                    break;
                }
                Ok(_) if Instant::now() < drain_end => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(_) => break,
                Err(e) => {
                    db_error = Some(e.to_string());
                    break;
                }
            }
        }
        match sqlite_rows(
            &db,
            "SELECT status, count(*) FROM deliveries GROUP BY status",
        )
        .await
        {
            Ok(rows) => {
                for r in rows {
                    if let (Some(s), Some(n)) = (r.first(), r.get(1).and_then(|n| n.parse().ok())) {
                        records.insert(s.clone(), n);
                    }
                }
            }
            Err(e) => db_error = Some(e.to_string()),
        }
    }
    // Late duplicates.
    tokio::time::sleep(a.settle.saturating_sub(t_seen_all.elapsed())).await;
    let view = call(
        &client,
        Method::GET,
        endpoint(&base, "api/v1/destinations")?,
        &users[0].token,
        None,
    )
    .await?;
    let mut api_pending = 0i64;
    let mut api_health: BTreeMap<String, u64> = BTreeMap::new();
    for d in view["destinations"].as_array().into_iter().flatten() {
        api_pending += d["pending"].as_i64().unwrap_or(0);
        *api_health
            .entry(d["health"]["state"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let sample_records = match published.first() {
        Some(p) => {
            let v = call(
                &client,
                Method::GET,
                endpoint(&base, &format!("api/v1/notifications/{}", p.id))?,
                &users[0].token,
                None,
            )
            .await?;
            v["deliveries"].as_array().map_or(0, |d| {
                d.iter().filter(|r| r["status"] == "delivered").count()
            })
        }
        None => 0,
    };

    let posts = tally.posts() - posts0;
    let duplicates = tally.duplicates() - dups0;
    let no_key = tally.no_key() - no_key0;
    let body_bytes = (tally.bytes() - bytes0) / posts.max(1);
    let met = missing == 0 && no_key == 0 && errors.total() == 0 && per_second >= TARGET_PER_SEC;
    println!(
        "== deliveries: {} notifications to {} users × {} webhook destinations = {expected} deliveries",
        a.notifications, a.users, a.destinations_per_user
    );
    println!(
        "setup              {:.1} s ({dests} destinations in {:.1} s); warm-up {dests} deliveries in {:.0} ms",
        setup.as_secs_f64(),
        t_dest.as_secs_f64(),
        warm.as_secs_f64() * 1000.0
    );
    println!(
        "published          {}/{} acknowledged, all within {:.3} s ({} at a time); errors: {}",
        published.len(),
        a.notifications,
        publish_all.as_secs_f64(),
        a.publish_clients,
        errors.line()
    );
    println!(
        "delivered          {delivered}/{} in {elapsed_s:.3} s: {per_second:.0}/s (middle 80 %: {}/s); missing {missing}, duplicates {duplicates} ({dup_expected} of this run's pairs), unexpected {unexpected}, POSTs {posts} ({no_key} without Idempotency-Key, {body_bytes} B bodies)",
        published.len() * dests,
        steady.map_or("-".into(), |s| format!("{s:.0}"))
    );
    println!("per second         {per_sec_timeline:?}");
    println!("publish → webhook  {}", latency.line());
    if let Some(c) = cpu_s {
        println!(
            "server CPU         {c:.2} s over the run ({:.0} % of a core): {:.0} ms per 1,000 deliveries; tool {:.2} s",
            100.0 * c / elapsed_s.max(1e-9),
            cpu_per_1000_ms.unwrap_or(0.0),
            self1 - self0
        );
        let by: Vec<String> = threads.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        println!("  by thread        {}", by.join(", "));
    }
    if a.data_dir.is_some() {
        println!(
            "server records     outbox empty {} s after the first publish; delivery records by status {records:?}{}",
            outbox_drained_s.map_or("NOT".into(), |s| format!("{s:.3}")),
            db_error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
    }
    println!(
        "API (user 0)       {} destinations, pending {api_pending}, health {api_health:?}; one notification shows {sample_records} delivered records",
        view["destinations"].as_array().map_or(0, Vec::len)
    );
    println!(
        "target             >= {TARGET_PER_SEC} deliveries/s, none missing: {}",
        if met { "MET" } else { "NOT MET" }
    );
    Ok(json!({
        "scenario": "deliveries",
        "users": a.users,
        "destinations_per_user": a.destinations_per_user,
        "destinations": dests,
        "notifications": a.notifications,
        "publish_clients": a.publish_clients,
        "receiver_threads": a.receiver_threads,
        "expected": expected,
        "published": published.len(),
        "publish_errors": errors.json(),
        "publish_all_s": secs(publish_all),
        "delivered": delivered,
        "missing": missing,
        "duplicates": duplicates,
        "duplicate_pairs_of_run": dup_expected,
        "duplicate_examples": dup_examples,
        "unexpected": unexpected,
        "posts": posts,
        "posts_without_key": no_key,
        "body_bytes": body_bytes,
        "elapsed_s": round3(elapsed_s),
        "per_second": round3(per_second),
        "steady_per_second": steady.map(round3),
        "per_second_timeline": per_sec_timeline,
        "latency": latency.json(),
        "server_cpu_run_s": cpu_s.map(round3),
        "server_cpu_ms_per_1000": cpu_per_1000_ms.map(round3),
        "server_threads_cpu_s": threads,
        "tool_cpu_run_s": round3(self1 - self0),
        "outbox_drained_s": outbox_drained_s,
        "records": records,
        "db_error": db_error,
        "api_pending_user0": api_pending,
        "api_health_user0": api_health,
        "sample_delivered_records": sample_records,
        "setup_s": secs(setup),
        "warmup_ms": round3(warm.as_secs_f64() * 1000.0),
        "target_per_second": TARGET_PER_SEC,
        "met": met,
    }))
}
