//! `fanout`: one publish to a topic with N subscribed users.
//!
//! Setup (timed separately): an owner and N users are created through the admin API,
//! the owner claims the topic with a first publish, grants every user subscribe, and every
//! user subscribes. With `--streams true` each user then opens their SSE stream and we wait
//! for all `open` events. Then the owner publishes ONE message and we measure, from the
//! instant before that request was sent:
//! - when each stream received it (all N: the max);
//! - when a sample of histories (`GET /api/v1/notifications`) first shows it (an upper
//!   bound: the poll's answer time);
//! - with `--db`, when `inbox` in the server's SQLite file holds a row for every user
//!   (read with the `sqlite3` command, read-only; again the poll's answer time).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::sse;
use crate::stats::{Summary, micros, ms, round3};
use crate::{endpoint, http_client, loopback_url, nonce, parse_duration, raise_nofile};

/// All streams and all histories within this long, per the issue.
const TARGET_MS: f64 = 1000.0;
const MAX_USERS: usize = 100_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL (loopback only).
    #[arg(long)]
    url: String,
    /// An administrator's API token (creates the users).
    #[arg(long, env = "TIDINGS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Subscribed users to create.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Topic the owner publishes to.
    #[arg(long, default_value = "fan")]
    topic: String,
    /// Open one SSE stream per user before the publish.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    streams: bool,
    /// Setup requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Streams being opened at once (until their open event).
    #[arg(long, default_value_t = 128)]
    open_concurrency: usize,
    /// Histories polled over HTTP after the publish.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// The server's database (`<data dir>/tidings.db`): count the deliveries in `inbox`.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Prefix of the user names [default: `f` + a run tag].
    #[arg(long)]
    prefix: Option<String>,
    /// How long to wait for the message to reach every stream and history.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// Bound on the whole setup (users, grants, subscriptions, streams).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    setup_timeout: Duration,
    /// Per-request timeout during setup.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub name: String,
    pub id: i64,
    pub token: Arc<str>,
}

/// One API call with up to 3 attempts on transport errors, 429 and 5xx; returns the JSON
/// answer (Null when empty).
pub(crate) async fn call(
    client: &reqwest::Client,
    method: Method,
    url: reqwest::Url,
    token: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        let mut req = client
            .request(method.clone(), url.clone())
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                last = format!("{e}");
                continue;
            }
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                last = format!("reading the answer: {e}");
                continue;
            }
        };
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .with_context(|| format!("{method} {url}: answer is not JSON: {text}"));
        }
        last = format!("{status}: {text}");
        if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
            break;
        }
    }
    Err(anyhow!("{method} {url} failed: {last}"))
}

/// Runs `f(0..n)` with `conc` in flight, in order of index, failing on the first error or
/// at `deadline`.
pub(crate) async fn phase<T, F, Fut>(
    name: &str,
    n: usize,
    conc: usize,
    deadline: Instant,
    f: F,
) -> Result<(Vec<T>, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let t0 = Instant::now();
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut s = futures_util::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move { (i, fut.await) }
        })
        .buffer_unordered(conc.max(1));
    let mut done = 0usize;
    let mut last_report = Instant::now();
    loop {
        match tokio::time::timeout_at(deadline.into(), s.next()).await {
            Err(_) => bail!("{name}: setup timed out after {done}/{n}"),
            Ok(None) => break,
            Ok(Some((i, r))) => {
                out[i] = Some(r.with_context(|| format!("{name} #{i}"))?);
                done += 1;
                if last_report.elapsed() >= Duration::from_secs(5) {
                    last_report = Instant::now();
                    eprintln!(
                        "  {name}: {done}/{n} ({:.0}/s)",
                        done as f64 / t0.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    eprintln!(
        "  {name}: {n} in {:.2} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let out = out
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.ok_or_else(|| anyhow!("{name} #{i} has no result")))
        .collect::<Result<Vec<T>>>()?;
    Ok((out, elapsed))
}

pub(crate) async fn create_user(
    client: &reqwest::Client,
    base: &reqwest::Url,
    admin: &str,
    name: String,
) -> Result<User> {
    let v = call(
        client,
        Method::POST,
        endpoint(base, "api/v1/admin/users")?,
        admin,
        Some(&json!({ "name": name })),
    )
    .await?;
    let id = v
        .pointer("/user/id")
        .and_then(Value::as_i64)
        .ok_or_else(|| anyhow!("user creation answer has no user.id: {v}"))?;
    let token = v
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("user creation answer has no token: {v}"))?;
    Ok(User {
        name,
        id,
        token: token.into(),
    })
}

/// Shared by the stream tasks. Times are nanoseconds since `base` plus one (0 = not yet).
struct Streams {
    base: Instant,
    marker: String,
    opened: AtomicUsize,
    failed: AtomicUsize,
    received: Vec<AtomicU64>,
    received_count: AtomicUsize,
    resyncs: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Streams {
    fn stamp(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }
    /// Records the first arrival of the marker on stream `i`.
    fn record(&self, i: usize, at: Instant) {
        let first = self.received[i]
            .compare_exchange(0, self.stamp(at), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.received_count.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock()
            && f.is_none()
        {
            *f = Some(format!("{e:#}"));
        }
    }
}

/// What every stream task shares.
#[derive(Clone)]
struct StreamCtx {
    client: reqwest::Client,
    url: reqwest::Url,
    open_sem: Arc<Semaphore>,
    open_timeout: Duration,
    st: Arc<Streams>,
    stop: watch::Receiver<bool>,
}

/// One user's stream: open it, wait for `open`, then record when the marker arrives;
/// runs until `stop`.
async fn stream_task(i: usize, token: Arc<str>, ctx: StreamCtx) {
    let StreamCtx {
        client,
        url,
        open_sem,
        open_timeout,
        st,
        mut stop,
    } = ctx;
    let opened = async {
        let _permit = open_sem.acquire().await.context("semaphore closed")?;
        let resp = client
            .get(url)
            .bearer_auth(&*token)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .context("opening the stream")?;
        if !resp.status().is_success() {
            bail!("the stream answered {}", resp.status());
        }
        let mut reader = sse::Reader::new(resp);
        while let Some((ev, _)) = reader.next().await? {
            if ev.event == "open" {
                return Ok(reader);
            }
        }
        bail!("the stream ended before its open event")
    };
    let mut reader = match tokio::time::timeout(open_timeout, opened).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return st.fail(&e.context(format!("stream #{i}"))),
        Err(_) => {
            return st.fail(&anyhow!(
                "stream #{i}: no open event within {open_timeout:?}"
            ));
        }
    };
    st.opened.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            ev = reader.next() => match ev {
                Ok(Some((ev, at))) => match ev.event.as_str() {
                    "message" if ev.data.contains(&st.marker) => st.record(i, at),
                    "resync" => {
                        st.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                },
                Ok(None) => return st.fail(&anyhow!("stream #{i} ended early")),
                Err(e) => return st.fail(&e.context(format!("stream #{i}"))),
            }
        }
    }
}

/// Polls a sample of histories until each shows `id`; the delay per sampled user.
async fn poll_histories(
    client: reqwest::Client,
    url: reqwest::Url,
    tokens: Vec<Arc<str>>,
    id: String,
    t_pub: Instant,
    deadline: Instant,
) -> (Vec<Option<Duration>>, u64) {
    let mut found: Vec<Option<Duration>> = vec![None; tokens.len()];
    let mut requests = 0u64;
    while Instant::now() < deadline && found.iter().any(Option::is_none) {
        let pending: Vec<usize> = (0..tokens.len()).filter(|&k| found[k].is_none()).collect();
        let results: Vec<(usize, bool, Instant)> = futures_util::stream::iter(pending)
            .map(|k| {
                let (client, url, token, id) = (&client, &url, &tokens[k], &id);
                async move {
                    let r = client.get(url.clone()).bearer_auth(&**token).send().await;
                    let ok = match r {
                        Ok(resp) if resp.status().is_success() => resp
                            .text()
                            .await
                            .map(|t| t.contains(id.as_str()))
                            .unwrap_or(false),
                        _ => false,
                    };
                    (k, ok, Instant::now())
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for (k, ok, at) in results {
            requests += 1;
            if ok {
                found[k] = Some(at.saturating_duration_since(t_pub));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (found, requests)
}

/// Result of counting deliveries in the database.
struct DbCount {
    count: u64,
    all_after: Option<Duration>,
    polls: u64,
    error: Option<String>,
}

async fn poll_db(
    db: PathBuf,
    id: String,
    owner: i64,
    n: u64,
    t_pub: Instant,
    deadline: Instant,
) -> DbCount {
    let mut out = DbCount {
        count: 0,
        all_after: None,
        polls: 0,
        error: None,
    };
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        out.error = Some(format!("unexpected notification id {id:?}"));
        return out;
    }
    let sql = format!(
        "SELECT count(*) FROM inbox WHERE notification_id = '{id}' AND user_id <> {owner};"
    );
    while Instant::now() < deadline {
        let res = tokio::process::Command::new("sqlite3")
            .arg("-readonly")
            .arg(&db)
            .arg(&sql)
            .kill_on_drop(true)
            .output();
        let left = deadline.saturating_duration_since(Instant::now());
        let o = match tokio::time::timeout(left, res).await {
            Err(_) => break,
            Ok(Err(e)) => {
                out.error = Some(format!("cannot run sqlite3: {e}"));
                return out;
            }
            Ok(Ok(o)) => o,
        };
        let at = Instant::now();
        out.polls += 1;
        let stdout = String::from_utf8_lossy(&o.stdout);
        match (o.status.success(), stdout.trim().parse::<u64>()) {
            (true, Ok(c)) => {
                out.count = c;
                if c >= n {
                    out.all_after = Some(at.saturating_duration_since(t_pub));
                    return out;
                }
            }
            _ => {
                let err = String::from_utf8_lossy(&o.stderr);
                // A busy/locked read is retried; anything else ends the polling.
                if !(err.contains("locked") || err.contains("busy")) {
                    out.error = Some(format!("sqlite3 failed: {} {}", stdout.trim(), err.trim()));
                    return out;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

fn opt_ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(round3(d.as_secs_f64() * 1000.0)))
}

pub async fn run(a: Args) -> Result<Value> {
    if a.users == 0 || a.users > MAX_USERS {
        bail!("--users must be 1-{MAX_USERS}");
    }
    let base = loopback_url(&a.url)?;
    let run = nonce();
    let prefix = a.prefix.clone().unwrap_or_else(|| format!("f{run}"));
    let n = a.users;
    if a.streams {
        let want = n as u64 + 1024;
        let got = raise_nofile(want)?;
        if got < want {
            bail!(
                "{n} streams need about {want} open files, but the limit is {got}: run `ulimit -n {want}` (or higher) first"
            );
        }
    }
    let client = http_client(a.concurrency * 2 + 8, a.request_timeout)?;
    let admin = a.admin_token.as_str();
    let setup_start = Instant::now();
    let deadline = setup_start + a.setup_timeout;
    eprintln!(
        "fanout: setting up {n} users subscribed to {:?} (names {prefix}-*)",
        a.topic
    );

    let owner = create_user(&client, &base, admin, format!("{prefix}-owner")).await?;
    let topic_url = endpoint(&base, &a.topic)?;
    let claim = client
        .post(topic_url.clone())
        .bearer_auth(&*owner.token)
        .body(format!("fanout {run} setup"))
        .send()
        .await
        .context("the owner's first publish")?;
    if !claim.status().is_success() {
        let st = claim.status();
        bail!(
            "the owner's first publish answered {st}: {}",
            claim.text().await.unwrap_or_default()
        );
    }
    let _ = claim.bytes().await;

    let (users, t_create) = phase("create users", n, a.concurrency, deadline, |i| {
        create_user(&client, &base, admin, format!("{prefix}-{i}"))
    })
    .await?;
    let (_, t_grant) = phase("grant subscribe", n, a.concurrency, deadline, |i| {
        let url = endpoint(
            &base,
            &format!("api/v1/topics/{}/grants/{}", a.topic, users[i].name),
        );
        let (client, owner) = (&client, &owner);
        async move {
            call(
                client,
                Method::PUT,
                url?,
                &owner.token,
                Some(&json!({"subscribe": true})),
            )
            .await
        }
    })
    .await?;
    let sub_body = json!({"source": {"kind": "topic", "topic": a.topic}});
    let (_, t_sub) = phase("subscribe", n, a.concurrency, deadline, |i| {
        let url = endpoint(&base, "api/v1/subscriptions");
        let (client, users, body) = (&client, &users, &sub_body);
        async move { call(client, Method::POST, url?, &users[i].token, Some(body)).await }
    })
    .await?;

    // Streams.
    let marker = format!("fanout {run} go");
    let streams = Arc::new(Streams {
        base: Instant::now(),
        marker: marker.clone(),
        opened: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        received: (0..n).map(|_| AtomicU64::new(0)).collect(),
        received_count: AtomicUsize::new(0),
        resyncs: AtomicUsize::new(0),
        first_error: Mutex::new(None),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stream_tasks = tokio::task::JoinSet::new();
    let mut t_open = Duration::ZERO;
    if a.streams {
        let t0 = Instant::now();
        let stream_client = http_client(0, Duration::from_secs(24 * 3600))?;
        let stream_url = endpoint(&base, "api/v1/stream")?;
        let ctx = StreamCtx {
            client: stream_client,
            url: stream_url,
            open_sem: Arc::new(Semaphore::new(a.open_concurrency.max(1))),
            open_timeout: deadline.saturating_duration_since(t0),
            st: streams.clone(),
            stop: stop_rx.clone(),
        };
        for (i, u) in users.iter().enumerate() {
            stream_tasks.spawn(stream_task(i, u.token.clone(), ctx.clone()));
        }
        let mut last_report = Instant::now();
        loop {
            let (o, f) = (
                streams.opened.load(Ordering::Relaxed),
                streams.failed.load(Ordering::Relaxed),
            );
            if o + f >= n {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("  open streams: setup time is up with {o} open, {f} failed");
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("  open streams: {o}/{n} open, {f} failed");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t_open = t0.elapsed();
        eprintln!(
            "  open streams: {} open, {} failed in {:.2} s",
            streams.opened.load(Ordering::Relaxed),
            streams.failed.load(Ordering::Relaxed),
            t_open.as_secs_f64()
        );
        // Let the server settle after the connection storm before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let setup = setup_start.elapsed();
    let opened = streams.opened.load(Ordering::Relaxed);
    let open_failed = streams.failed.load(Ordering::Relaxed);

    // The one publish.
    eprintln!("fanout: publishing one message");
    let t_pub = Instant::now();
    let resp = client
        .post(topic_url.clone())
        .bearer_auth(&*owner.token)
        .header("Title", "fanout")
        .body(marker.clone())
        .send()
        .await
        .context("the measured publish")?;
    let status = resp.status();
    let text = resp.text().await.context("reading the publish answer")?;
    let publish_rtt = t_pub.elapsed();
    if !status.is_success() {
        stop_tx.send_replace(true);
        bail!("the measured publish answered {status}: {text}");
    }
    let v: Value = serde_json::from_str(&text).context("the publish answer is not JSON")?;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the publish answer has no id: {text}"))?
        .to_owned();
    let measure_deadline = t_pub + a.timeout;

    let sample_n = a.sample.min(n);
    let sample_tokens: Vec<Arc<str>> = (0..sample_n)
        .map(|k| users[k * n / sample_n.max(1)].token.clone())
        .collect();
    let hist_url = endpoint(&base, "api/v1/notifications?limit=20")?;
    let hist_task = tokio::spawn(poll_histories(
        client.clone(),
        hist_url,
        sample_tokens,
        id.clone(),
        t_pub,
        measure_deadline,
    ));
    let db_task = a.db.clone().map(|db| {
        tokio::spawn(poll_db(
            db,
            id.clone(),
            owner.id,
            n as u64,
            t_pub,
            measure_deadline,
        ))
    });
    if a.streams {
        while streams.received_count.load(Ordering::Relaxed) < opened
            && Instant::now() < measure_deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (hist_found, hist_requests) = hist_task.await.context("the history poller panicked")?;
    let db = match db_task {
        Some(t) => Some(t.await.context("the database poller panicked")?),
        None => None,
    };
    stop_tx.send_replace(true);
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(Some(_)) =
        tokio::time::timeout_at(stop_deadline.into(), stream_tasks.join_next()).await
    {}
    stream_tasks.abort_all();

    // Figures.
    let t_pub_ns = streams.stamp(t_pub);
    let stream_us: Vec<u64> = streams
        .received
        .iter()
        .map(|r| r.load(Ordering::Acquire))
        .filter(|&r| r != 0)
        .map(|r| r.saturating_sub(t_pub_ns) / 1000)
        .collect();
    let stream_received = stream_us.len();
    let stream_lat = Summary::of(stream_us);
    let all_streams = (a.streams && opened == n && stream_received == n)
        .then(|| Duration::from_micros(stream_lat.max));
    let hist_lat = Summary::of(hist_found.iter().flatten().map(|d| micros(*d)).collect());
    let hist_found_n = hist_found.iter().flatten().count();
    let all_histories = match &db {
        Some(d) => d.all_after,
        None => (hist_found_n == sample_n).then(|| Duration::from_micros(hist_lat.max)),
    };
    let within = |d: Option<Duration>| d.is_some_and(|d| d.as_secs_f64() * 1000.0 <= TARGET_MS);
    let met = within(all_histories) && (!a.streams || within(all_streams));

    let first_error = streams.first_error.lock().ok().and_then(|e| e.clone());
    println!(
        "== fanout: 1 publish to {:?} with {n} subscribed users, streams: {}",
        a.topic, a.streams
    );
    println!(
        "setup              {:.2} s total: users {:.2} s, grants {:.2} s, subscriptions {:.2} s, streams {:.2} s",
        setup.as_secs_f64(),
        t_create.as_secs_f64(),
        t_grant.as_secs_f64(),
        t_sub.as_secs_f64(),
        t_open.as_secs_f64()
    );
    if a.streams {
        println!("streams open       {opened}/{n} ({open_failed} failed)");
        if let Some(e) = &first_error {
            println!("first stream error {e}");
        }
    }
    println!(
        "publish round trip {:.3} ms (id {id})",
        publish_rtt.as_secs_f64() * 1000.0
    );
    if a.streams {
        println!(
            "streams received   {stream_received}/{n}; all after: {}",
            all_streams.map_or("NOT ALL".into(), |d| format!(
                "{:.3} ms",
                d.as_secs_f64() * 1000.0
            ))
        );
        println!("  per stream       {}", stream_lat.line());
        println!(
            "  resync events    {}",
            streams.resyncs.load(Ordering::Relaxed)
        );
    }
    println!(
        "history sample     {hist_found_n}/{sample_n} found ({hist_requests} polls); {}",
        hist_lat.line()
    );
    if let Some(d) = &db {
        println!(
            "inbox rows (db)    {}/{n}; all after: {} ({} polls){}",
            d.count,
            d.all_after.map_or("NOT ALL".into(), |t| format!(
                "{:.3} ms",
                t.as_secs_f64() * 1000.0
            )),
            d.polls,
            d.error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
    }
    println!(
        "target             all {n} histories{} within {TARGET_MS} ms: {}",
        if a.streams { " and streams" } else { "" },
        if met { "MET" } else { "NOT MET" }
    );

    Ok(json!({
        "scenario": "fanout",
        "users": n,
        "streams": a.streams,
        "setup": {
            "total_s": round3(setup.as_secs_f64()),
            "create_users_s": round3(t_create.as_secs_f64()),
            "grants_s": round3(t_grant.as_secs_f64()),
            "subscriptions_s": round3(t_sub.as_secs_f64()),
            "open_streams_s": round3(t_open.as_secs_f64()),
            "concurrency": a.concurrency,
        },
        "streams_open": opened,
        "stream_open_failures": open_failed,
        "first_stream_error": first_error,
        "publish_rtt_ms": round3(publish_rtt.as_secs_f64() * 1000.0),
        "notification_id": id,
        "streams_received": stream_received,
        "all_streams_ms": opt_ms(all_streams),
        "stream_latency": stream_lat.json(),
        "resyncs": streams.resyncs.load(Ordering::Relaxed),
        "history_sample": {
            "size": sample_n,
            "found": hist_found_n,
            "polls": hist_requests,
            "latency": hist_lat.json(),
            "all_ms": (hist_found_n == sample_n && sample_n > 0).then(|| ms(hist_lat.max)),
        },
        "db_inbox": db.as_ref().map(|d| json!({
            "count": d.count,
            "all_ms": opt_ms(d.all_after),
            "polls": d.polls,
            "error": d.error,
        })),
        "all_histories_ms": opt_ms(all_histories),
        "target_ms": TARGET_MS,
        "met": met,
    }))
}
