//! `websub`: push latency through WebSub, with the tool as the hub and the publisher.
//!
//! The tool serves an Atom feed at `http://127.0.0.1:<port>/feed.xml` that advertises
//! `<link rel="hub" href=".../hub"/>` and `<link rel="self" .../>`, and a hub at `/hub`
//! that takes the subscription request (a form with `hub.callback`, `hub.secret`,
//! `hub.topic`, ...), answers 202 and verifies intent the way hubs do: `GET
//! <callback>?hub.mode=subscribe&hub.topic=...&hub.challenge=...&hub.lease_seconds=600`,
//! expecting the challenge echoed. The user subscribes to the feed (the server needs
//! `TIDINGS_BASE_URL` to be its own loopback address, so the hub can call it back).
//!
//! Then, one after another (`--gap` apart), it adds an entry and pushes the whole feed
//! document to the callback with `X-Hub-Signature: sha256=<HMAC of the body with the
//! secret>`, and measures from the instant before the push was sent:
//! - push → the entry on the user's live stream (`GET /api/v1/stream`, open throughout);
//! - push → the entry listed by `GET /api/v1/notifications` (polled every
//!   `--history-poll` from the push on: an upper bound by up to one poll);
//! - with `--data-dir`, push → the `delivered` event the history agent writes with the
//!   inbox row (server clock; the database is read with `sqlite3 -readonly` at the end);
//! - the push round trip (the server answers 202 once the new items are durable).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use reqwest::Method;
use serde_json::{Value, json};

use crate::fanout::call;
use crate::sse;
use crate::stats::{Errors, Summary, micros, ms, round3};
use crate::sys::{Clock, sqlite_rows};
use crate::{endpoint, error_kind, http_client, loopback_url, nonce, parse_duration};

const TARGET_P99_MS: f64 = 100.0;
const MAX_PUSHES: usize = 100_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL (loopback only); its `base_url` must be the same address.
    #[arg(long)]
    url: String,
    /// API token of the user who subscribes.
    #[arg(long, env = "TIDINGS_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    /// Pushes to measure (one new entry each).
    #[arg(long, default_value_t = 200)]
    pushes: usize,
    /// Pause between one push being in the history and the next push.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    gap: Duration,
    /// How often the history is polled while waiting for a pushed entry.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    history_poll: Duration,
    /// Bound on waiting for one entry to reach the stream and the history.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Bound on the subscription: subscribe, hub request, verification of intent.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    verify_timeout: Duration,
    /// Entries kept in the feed document (the newest).
    #[arg(long, default_value_t = 20)]
    entries: usize,
    /// The server's data dir: read the `delivered` events from its tidings.db.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Port of the feed and hub on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    hub_port: u16,
}

#[derive(Default)]
struct Hub {
    base: String,
    entries: Vec<(String, String)>,
    keep: usize,
    /// (callback, secret, topic) from the last subscribe request.
    subscription: Option<(String, String, String)>,
    requests: u32,
    verified: bool,
    verify_answer: Option<String>,
    feed_fetches: u32,
}

type SharedHub = Arc<Mutex<Hub>>;

fn atom(h: &Hub) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <feed xmlns=\"http://www.w3.org/2005/Atom\">\n\
         <title>Pushed</title><id>urn:tidings-load:websub</id><updated>2026-11-26T00:00:00Z</updated>\n\
         <link rel=\"self\" href=\"{0}/feed.xml\"/>\n\
         <link rel=\"hub\" href=\"{0}/hub\"/>\n",
        h.base
    );
    let skip = h.entries.len().saturating_sub(h.keep);
    for (id, title) in h.entries.iter().skip(skip).rev() {
        s.push_str(&format!(
            "<entry><id>{id}</id><title>{title}</title><updated>2026-11-26T00:00:00Z</updated>\
             <link href=\"{}/e/{id}\"/><summary>Pushed entry {title}.</summary></entry>\n",
            h.base
        ));
    }
    s.push_str("</feed>\n");
    s
}

async fn feed(State(h): State<SharedHub>) -> impl IntoResponse {
    let body = {
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        h.feed_fetches += 1;
        atom(&h)
    };
    ([(header::CONTENT_TYPE, "application/atom+xml")], body)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn hub(State(h): State<SharedHub>, Form(form): Form<Vec<(String, String)>>) -> StatusCode {
    let get = |k: &str| {
        form.iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mode = get("hub.mode");
    let (callback, secret, topic) = (get("hub.callback"), get("hub.secret"), get("hub.topic"));
    if callback.is_empty() || topic.is_empty() {
        return StatusCode::BAD_REQUEST;
    }
    {
        let mut g = h.lock().unwrap_or_else(|e| e.into_inner());
        g.requests += 1;
        if mode == "subscribe" {
            g.subscription = Some((callback.clone(), secret, topic.clone()));
            g.verified = false;
        }
    }
    // Verify intent asynchronously, as hubs do.
    let h2 = h.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let challenge = format!("ch{}", nonce());
        let sep = if callback.contains('?') { '&' } else { '?' };
        let url = format!(
            "{callback}{sep}hub.mode={}&hub.topic={}&hub.challenge={challenge}&hub.lease_seconds=600",
            urlencode(&mode),
            urlencode(&topic)
        );
        let answer = match http_client(1, Duration::from_secs(10)) {
            Ok(c) => match c.get(&url).send().await {
                Ok(r) => {
                    let st = r.status();
                    let body = r.text().await.unwrap_or_default();
                    Ok((st, body))
                }
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let mut g = h2.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok((st, body)) => {
                g.verified = mode == "subscribe" && st.is_success() && body == challenge;
                g.verify_answer = Some(format!("{st}: {body}"));
            }
            Err(e) => g.verify_answer = Some(e),
        }
    });
    StatusCode::ACCEPTED
}

/// Stream arrivals by entry number: nanoseconds since `base` plus one (0 = not yet).
struct Arrivals {
    base: Instant,
    at: Vec<AtomicU64>,
    duplicates: AtomicU64,
}

impl Arrivals {
    fn get(&self, i: usize) -> Option<Instant> {
        let v = self.at[i].load(Ordering::Acquire);
        (v != 0).then(|| self.base + Duration::from_nanos(v - 1))
    }
}

fn parse_entry(title: &str, prefix: &str) -> Option<usize> {
    title.strip_prefix(prefix)?.parse().ok()
}

async fn read_stream(mut reader: sse::Reader, arr: Arc<Arrivals>, prefix: String) -> Result<()> {
    while let Some((ev, at)) = reader.next().await? {
        if ev.event != "message" {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            continue;
        };
        let title = v["title"].as_str().unwrap_or("");
        if let Some(i) = parse_entry(title, &prefix)
            && i < arr.at.len()
        {
            let stamp =
                u64::try_from(at.saturating_duration_since(arr.base).as_nanos()).unwrap_or(0) + 1;
            if arr.at[i]
                .compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                arr.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

pub async fn run(a: Args) -> Result<Value> {
    if a.pushes == 0 || a.pushes > MAX_PUSHES {
        bail!("--pushes must be 1-{MAX_PUSHES}");
    }
    if a.entries == 0 {
        bail!("--entries must be positive");
    }
    let base = loopback_url(&a.url)?;
    let token: Arc<str> = a.token.clone().into();
    let run = nonce();
    let prefix = format!("ws {run} ");
    let clock = Clock::new();

    // Feed and hub.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.hub_port))
        .await
        .context("binding the hub on 127.0.0.1")?;
    let hub_base = format!("http://{}", listener.local_addr()?);
    let shared: SharedHub = Arc::new(Mutex::new(Hub {
        base: hub_base.clone(),
        keep: a.entries,
        entries: (0..3)
            .map(|i| (format!("urn:ws:{run}:old{i}"), format!("Old entry {i}")))
            .collect(),
        ..Hub::default()
    }));
    let app = Router::new()
        .route("/feed.xml", get(feed))
        .route("/hub", post(hub))
        .with_state(shared.clone());
    let hub_task = tokio::spawn(async move { axum::serve(listener, app).await });

    // The user's live stream, open before anything is pushed.
    let stream_url = endpoint(&base, "api/v1/stream")?;
    let stream_client = http_client(1, Duration::from_secs(24 * 3600))?;
    let resp = stream_client
        .get(stream_url.clone())
        .bearer_auth(&*token)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("opening {stream_url}"))?;
    if !resp.status().is_success() {
        let st = resp.status();
        bail!(
            "{stream_url} answered {st}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let mut reader = sse::Reader::new(resp);
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((ev, _)) = reader.next().await? {
            if ev.event == "open" {
                return Ok(());
            }
        }
        bail!("the stream ended before its open event")
    })
    .await
    .context("no open event on the stream within 10 s")??;
    let arrivals = Arc::new(Arrivals {
        base: Instant::now(),
        at: (0..a.pushes).map(|_| AtomicU64::new(0)).collect(),
        duplicates: AtomicU64::new(0),
    });
    let reader_task = tokio::spawn(read_stream(reader, arrivals.clone(), prefix.clone()));

    // Subscribe; the server polls the feed, finds the hub and subscribes there.
    let client = http_client(8, Duration::from_secs(30))?;
    let sub_start = Instant::now();
    let sub = call(
        &client,
        Method::POST,
        endpoint(&base, "api/v1/subscriptions")?,
        &token,
        Some(&json!({"source": {"kind": "feed", "url": format!("{hub_base}/feed.xml")}})),
    )
    .await
    .context("subscribing to the pushed feed")?;
    let sub_id = sub["id"].as_str().unwrap_or_default().to_owned();
    let verify_deadline = sub_start + a.verify_timeout;
    let (callback, secret, topic) = loop {
        {
            let h = shared.lock().unwrap_or_else(|e| e.into_inner());
            if h.verified
                && let Some(s) = &h.subscription
            {
                break s.clone();
            }
            if Instant::now() >= verify_deadline {
                bail!(
                    "the server's WebSub subscription was not verified within {:?}: {} hub requests, subscription {:?}, verification answer {:?}, {} feed fetches (is TIDINGS_BASE_URL the server's own address, and TIDINGS_SOURCES_ALLOW_PRIVATE_NETWORKS=true?)",
                    a.verify_timeout,
                    h.requests,
                    h.subscription.as_ref().map(|s| (&s.0, &s.2)),
                    h.verify_answer,
                    h.feed_fetches
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let verified_after = sub_start.elapsed();
    // The source records the verification just before it answers the challenge; let the
    // status say so before the first push (bounded).
    let status_url = endpoint(&base, &format!("api/v1/subscriptions/{sub_id}"))?;
    let mut websub_status = Value::Null;
    for _ in 0..100 {
        if let Ok(v) = call(&client, Method::GET, status_url.clone(), &token, None).await {
            websub_status = v["status"]["websub"].clone();
            if websub_status == json!(true) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "websub: subscribed and verified in {:.0} ms (callback {callback}, topic {topic}); {} pushes",
        verified_after.as_secs_f64() * 1000.0,
        a.pushes
    );

    // Where the history stands before the first push.
    let mut after: i64 = {
        let v = call(
            &client,
            Method::GET,
            endpoint(&base, "api/v1/notifications?limit=1")?,
            &token,
            None,
        )
        .await?;
        v["notifications"][0]["seq"].as_i64().unwrap_or(0)
    };
    let poll_client = http_client(2, Duration::from_secs(30))?;
    let push_client = http_client(2, Duration::from_secs(30))?;
    let mut push_rtt = Vec::with_capacity(a.pushes);
    let mut to_stream = Vec::with_capacity(a.pushes);
    let mut to_history = Vec::with_capacity(a.pushes);
    let mut sent_unix_ms: Vec<Option<f64>> = Vec::with_capacity(a.pushes);
    let mut push_errors = Errors::default();
    let mut history_polls = 0u64;
    let (mut missing_stream, mut missing_history) = (0u64, 0u64);
    let run_start = Instant::now();
    for i in 0..a.pushes {
        let body = {
            let mut h = shared.lock().unwrap_or_else(|e| e.into_inner());
            h.entries
                .push((format!("urn:ws:{run}:{i}"), format!("{prefix}{i}")));
            atom(&h)
        };
        let signature = tidings_sources::websub::sign_sha256(&secret, body.as_bytes());
        let t0 = Instant::now();
        sent_unix_ms.push(Some(clock.unix_ms(t0)));
        let r = push_client
            .post(&callback)
            .header(header::CONTENT_TYPE, "application/atom+xml")
            .header("X-Hub-Signature", signature)
            .body(body)
            .send()
            .await;
        match r {
            Ok(resp) => {
                let st = resp.status();
                let _ = resp.bytes().await;
                if st == StatusCode::ACCEPTED {
                    push_rtt.push(micros(t0.elapsed()));
                } else {
                    push_errors.add(st.as_u16().to_string());
                }
            }
            Err(e) => push_errors.add(error_kind(&e)),
        }
        // Wait for the history (polled) and the stream (read by its own task).
        let deadline = t0 + a.timeout;
        let mut in_history = None;
        while in_history.is_none() && Instant::now() < deadline {
            let url = endpoint(
                &base,
                &format!("api/v1/notifications?after={after}&limit=100"),
            )?;
            let r = poll_client.get(url).bearer_auth(&*token).send().await;
            let at = Instant::now();
            history_polls += 1;
            if let Ok(resp) = r
                && resp.status().is_success()
                && let Ok(v) = resp.json::<Value>().await
            {
                for it in v["notifications"].as_array().into_iter().flatten() {
                    after = after.max(it["seq"].as_i64().unwrap_or(0));
                    if parse_entry(it["title"].as_str().unwrap_or(""), &prefix) == Some(i) {
                        in_history = Some(at);
                    }
                }
            }
            if in_history.is_none() {
                tokio::time::sleep(a.history_poll).await;
            }
        }
        match in_history {
            Some(at) => to_history.push(micros(at.saturating_duration_since(t0))),
            None => missing_history += 1,
        }
        while arrivals.get(i).is_none() && Instant::now() < deadline && !reader_task.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match arrivals.get(i) {
            Some(at) => to_stream.push(micros(at.saturating_duration_since(t0))),
            None => missing_stream += 1,
        }
        tokio::time::sleep(a.gap).await;
    }
    let run_s = run_start.elapsed().as_secs_f64();
    reader_task.abort();
    hub_task.abort();

    // The server's own stamp of each history row.
    let mut to_delivered = Vec::new();
    let mut db_error = None;
    if let Some(dir) = &a.data_dir {
        let sql = format!(
            "SELECT json_extract(n.body, '$.title'), e.time FROM events e JOIN notifications n ON n.id = e.notification_id \
             WHERE e.kind = 'delivered' AND json_extract(n.body, '$.title') LIKE 'ws {run} %'"
        );
        match sqlite_rows(&dir.join("tidings.db"), &sql).await {
            Ok(rows) => {
                for r in rows {
                    if let (Some(t), Some(at)) = (r.first(), r.get(1))
                        && let (Some(i), Ok(at)) = (parse_entry(t, &prefix), at.parse::<f64>())
                        && let Some(Some(sent)) = sent_unix_ms.get(i)
                    {
                        to_delivered.push(((at - sent).max(0.0) * 1000.0) as u64);
                    }
                }
            }
            Err(e) => db_error = Some(e.to_string()),
        }
    }
    let to_stream = Summary::of(to_stream);
    let to_history = Summary::of(to_history);
    let to_delivered = Summary::of(to_delivered);
    let push_rtt = Summary::of(push_rtt);
    let met = to_stream.count == a.pushes
        && to_history.count == a.pushes
        && ms(to_stream.p99) < TARGET_P99_MS
        && ms(to_history.p99) < TARGET_P99_MS;

    println!(
        "== websub: {} signed pushes of a {}-entry Atom document, one at a time ({:?} apart)",
        a.pushes, a.entries, a.gap
    );
    println!(
        "subscription       verified by the hub {:.0} ms after the subscribe request; status websub = {websub_status}",
        verified_after.as_secs_f64() * 1000.0
    );
    println!(
        "pushes             {} answered 202 in {run_s:.1} s; errors: {}; missing on stream {missing_stream}, in history {missing_history}; {} duplicates on stream",
        push_rtt.count,
        push_errors.line(),
        arrivals.duplicates.load(Ordering::Relaxed)
    );
    println!("push round trip    {}", push_rtt.line());
    println!("push → stream      {}", to_stream.line());
    println!(
        "push → history     {}  (API polled every {:?} after the push; {history_polls} polls)",
        to_history.line(),
        a.history_poll
    );
    if a.data_dir.is_some() {
        match &db_error {
            None => println!(
                "push → delivered   {}  (history row's delivered event, server clock)",
                to_delivered.line()
            ),
            Some(e) => println!("push → delivered   not read: {e}"),
        }
    }
    println!(
        "target             push → stream and → history p99 < {TARGET_P99_MS} ms: {}",
        if met { "MET" } else { "NOT MET" }
    );
    Ok(json!({
        "scenario": "websub",
        "pushes": a.pushes,
        "gap_ms": round3(a.gap.as_secs_f64() * 1000.0),
        "entries": a.entries,
        "verified_ms": round3(verified_after.as_secs_f64() * 1000.0),
        "websub_status": websub_status,
        "accepted": push_rtt.count,
        "push_errors": push_errors.json(),
        "missing_stream": missing_stream,
        "missing_history": missing_history,
        "duplicates": arrivals.duplicates.load(Ordering::Relaxed),
        "push_rtt": push_rtt.json(),
        "push_to_stream": to_stream.json(),
        "push_to_history": to_history.json(),
        "push_to_delivered": to_delivered.json(),
        "db_error": db_error,
        "history_poll_ms": round3(a.history_poll.as_secs_f64() * 1000.0),
        "history_polls": history_polls,
        "run_s": round3(run_s),
        "target_p99_ms": TARGET_P99_MS,
        "met": met,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom_keeps_newest_entries_and_parses() {
        let mut h = Hub {
            base: "http://127.0.0.1:1".into(),
            keep: 2,
            ..Hub::default()
        };
        for i in 0..5 {
            h.entries.push((format!("urn:x:{i}"), format!("ws r {i}")));
        }
        let doc = atom(&h);
        let p = tidings_feed::parse(tidings_feed::FeedInput {
            body: doc.as_bytes(),
            content_type: Some("application/atom+xml"),
            url: Some("http://127.0.0.1:1/feed.xml"),
            ..Default::default()
        });
        assert!(!p.bozo, "{:?}", p.warnings);
        let titles: Vec<_> = p.items.iter().filter_map(|i| i.title.clone()).collect();
        assert_eq!(titles, vec!["ws r 4", "ws r 3"]);
        assert_eq!(parse_entry("ws r 4", "ws r "), Some(4));
        assert_eq!(parse_entry("ws q 4", "ws r "), None);
        assert_eq!(urlencode("http://a/b?c"), "http%3A%2F%2Fa%2Fb%3Fc");
    }
}
