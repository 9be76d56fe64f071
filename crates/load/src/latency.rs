//! `latency`: publish-to-live-stream latency at a fixed rate.
//!
//! The caller's SSE stream is opened first. A scheduler then starts one publishing task per
//! message at `start + seq / rate` (open loop: a slow answer delays only its own task, up to
//! `--max-in-flight` at once). Each message carries `lat <run> <seq>`; the stream reader
//! records when each sequence number arrives. Latency = SSE receipt − the instant just
//! before the publish request was sent (both clocks are this process's monotonic clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::sse;
use crate::stats::{Errors, Summary, micros, round3};
use crate::{endpoint, error_kind, http_client, loopback_url, nonce, parse_duration};

/// Publish-to-stream p99 the issue asks for, in milliseconds.
const TARGET_P99_MS: f64 = 10.0;
/// Upper bound on messages in one run.
const MAX_MESSAGES: u64 = 10_000_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL (loopback only).
    #[arg(long)]
    url: String,
    /// API token of the user that publishes and listens.
    #[arg(long, env = "TIDINGS_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    /// Publishes per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Topic to publish to (the caller must own it or be able to claim it).
    #[arg(long, default_value = "latency")]
    topic: String,
    /// Size of each message body in bytes (at least the sequence header).
    #[arg(long, default_value_t = 100)]
    message_bytes: usize,
    /// Most publishes in flight at once; beyond it the schedule slips (reported as lag).
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// How long to wait for stragglers on the stream after the last publish was answered.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Which live stream to listen on: `user` (the caller's deliveries, `/api/v1/stream`)
    /// or `topic` (ntfy-style `/<topic>/sse`, fed before per-user routing).
    #[arg(long, default_value = "user", value_parser = ["user", "topic"])]
    stream: String,
    /// Also write one CSV line per message (seq, send offset, publish→stream, round trip,
    /// all in ms) to this file, to see how latency moves over the run.
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
}

/// Shared between the scheduler, the publishing tasks and the stream reader. Times are
/// nanoseconds since `base` plus one (0 = not yet).
struct Shared {
    base: Instant,
    sent: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    received_count: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    resyncs: AtomicU64,
    probe_seen: AtomicU64,
}

impl Shared {
    fn stamp(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }
}

/// Pulls `<seq>` out of a message `lat <run> <seq> ...` of this run.
fn parse_seq(message: &str, prefix: &str) -> Option<u64> {
    let rest = message.strip_prefix(prefix)?;
    rest.split(' ').next()?.parse().ok()
}

fn message(prefix: &str, seq: u64, size: usize) -> String {
    let mut m = format!("{prefix}{seq} ");
    if m.len() < size {
        m.push_str(&"x".repeat(size - m.len()));
    }
    m
}

/// Reads the stream until it ends or the task is aborted, recording receipts.
async fn read_stream(
    mut reader: sse::Reader,
    shared: Arc<Shared>,
    prefix: String,
    probe: String,
) -> Result<()> {
    while let Some((ev, at)) = reader.next().await? {
        match ev.event.as_str() {
            "message" => {}
            "resync" => {
                shared.resyncs.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ => continue,
        }
        let v: Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            Err(_) => {
                shared.foreign.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
        if msg == probe {
            shared.probe_seen.store(shared.stamp(at), Ordering::Release);
            continue;
        }
        match parse_seq(msg, &prefix) {
            Some(seq) if (seq as usize) < shared.received.len() => {
                let slot = &shared.received[seq as usize];
                if slot
                    .compare_exchange(0, shared.stamp(at), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    shared.received_count.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                shared.foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Outcomes of the publishing tasks.
struct Tally {
    rtt: Vec<u64>,
    rtt_by_seq: Vec<u64>,
    acked: Vec<bool>,
    acked_count: u64,
    errors: Errors,
}

impl Tally {
    fn new(total: usize) -> Self {
        Tally {
            rtt: Vec::with_capacity(total),
            rtt_by_seq: vec![0; total],
            acked: vec![false; total],
            acked_count: 0,
            errors: Errors::default(),
        }
    }

    fn take(&mut self, (seq, r, us): (u64, Result<reqwest::StatusCode, String>, u64)) {
        match r {
            Ok(st) if st.is_success() => {
                self.acked[seq as usize] = true;
                self.acked_count += 1;
                self.rtt.push(us);
                self.rtt_by_seq[seq as usize] = us;
            }
            Ok(st) => self.errors.add(st.as_u16().to_string()),
            Err(kind) => self.errors.add(kind),
        }
    }
}

async fn publish_one(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: &str,
    body: String,
) -> Result<reqwest::StatusCode, String> {
    let resp = client
        .post(url.clone())
        .bearer_auth(token)
        .header("Title", "latency")
        .header("Priority", "3")
        .body(body)
        .send()
        .await
        .map_err(|e| error_kind(&e))?;
    let status = resp.status();
    resp.bytes().await.map_err(|e| error_kind(&e))?;
    Ok(status)
}

pub async fn run(a: Args) -> Result<Value> {
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 1_000_000.0) {
        bail!("--rate must be in (0, 1000000]");
    }
    if a.max_in_flight == 0 {
        bail!("--max-in-flight must be positive");
    }
    let total = (a.rate * a.duration.as_secs_f64()).round() as u64;
    if total == 0 || total > MAX_MESSAGES {
        bail!("rate × duration must be 1-{MAX_MESSAGES} messages, not {total}");
    }
    let base = loopback_url(&a.url)?;
    let url = endpoint(&base, &a.topic)?;
    let stream_url = match a.stream.as_str() {
        "topic" => endpoint(&base, &format!("{}/sse", a.topic))?,
        _ => endpoint(&base, "api/v1/stream")?,
    };
    let token: Arc<str> = a.token.clone().into();
    let run = nonce();
    let prefix = format!("lat {run} ");
    let probe = format!("lat {run} probe");
    let client = http_client(a.max_in_flight, a.request_timeout)?;

    // Claim the topic (which subscribes its owner) before the stream opens.
    let st = publish_one(&client, &url, &token, format!("lat {run} claim"))
        .await
        .map_err(|e| anyhow::anyhow!("first publish to {url} failed: {e}"))?;
    if !st.is_success() {
        bail!("first publish to {url} answered {st}");
    }

    // Open the caller's stream; a separate client so it never shares a pool slot.
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
        let text = resp.text().await.unwrap_or_default();
        bail!("{stream_url} answered {st}: {text}");
    }
    let mut reader = sse::Reader::new(resp);
    let opened = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((ev, _)) = reader.next().await? {
            if ev.event == "open" {
                return Ok(());
            }
        }
        bail!("the stream ended before its open event")
    })
    .await
    .context("no open event on the stream within 10 s")?;
    opened?;

    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        received: (0..total).map(|_| AtomicU64::new(0)).collect(),
        received_count: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
        probe_seen: AtomicU64::new(0),
    });
    let reader_task = tokio::spawn(read_stream(
        reader,
        shared.clone(),
        prefix.clone(),
        probe.clone(),
    ));

    // A probe proves the path works and warms it up.
    let st = publish_one(&client, &url, &token, probe.clone())
        .await
        .map_err(|e| anyhow::anyhow!("probe publish failed: {e}"))?;
    if !st.is_success() {
        bail!("probe publish answered {st}");
    }
    let probe_deadline = Instant::now() + Duration::from_secs(10);
    while shared.probe_seen.load(Ordering::Acquire) == 0 {
        if Instant::now() >= probe_deadline || reader_task.is_finished() {
            reader_task.abort();
            bail!("the probe message did not arrive on the stream within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    eprintln!(
        "latency: {total} messages at {}/s over {:?} to {url}, stream {stream_url}",
        a.rate, a.duration
    );
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let sem = Arc::new(Semaphore::new(a.max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now() + Duration::from_millis(20);
    let mut max_lag = Duration::ZERO;
    let mut tally = Tally::new(total as usize);
    for seq in 0..total {
        let due = start + period.mul_f64(seq as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let (client, url, token, shared) =
            (client.clone(), url.clone(), token.clone(), shared.clone());
        let body = message(&prefix, seq, a.message_bytes);
        tasks.spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            shared.sent[seq as usize].store(shared.stamp(t0), Ordering::Release);
            let r = publish_one(&client, &url, &token, body).await;
            (seq, r, micros(t0.elapsed()))
        });
        // Reap finished tasks as we go so the set stays small.
        while let Some(done) = tasks.try_join_next() {
            tally.take(done.context("a publishing task panicked")?);
        }
    }
    let sched_elapsed = start.elapsed();

    // Wait for every answer (bounded), then for stragglers on the stream.
    let join_deadline = Instant::now() + a.request_timeout + Duration::from_secs(5);
    while let Ok(Some(joined)) =
        tokio::time::timeout_at(join_deadline.into(), tasks.join_next()).await
    {
        tally.take(joined.context("a publishing task panicked")?);
    }
    let unanswered = tasks.len();
    tasks.abort_all();
    let drain_deadline = Instant::now() + a.drain;
    let Tally {
        rtt,
        rtt_by_seq,
        acked,
        acked_count,
        errors,
    } = tally;
    while shared.received_count.load(Ordering::Relaxed) < acked_count
        && Instant::now() < drain_deadline
        && !reader_task.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reader_task.abort();

    let mut e2e = Vec::with_capacity(total as usize);
    let mut e2e_sched = Vec::with_capacity(total as usize);
    let mut missing = 0u64;
    for (seq, &was_acked) in acked.iter().enumerate() {
        let sent = shared.sent[seq].load(Ordering::Acquire);
        let recv = shared.received[seq].load(Ordering::Acquire);
        if recv == 0 {
            if was_acked {
                missing += 1;
            }
            continue;
        }
        if sent != 0 {
            e2e.push(recv.saturating_sub(sent) / 1000);
        }
        let due = start + period.mul_f64(seq as f64);
        let due_ns = shared.stamp(due);
        e2e_sched.push(recv.saturating_sub(due_ns) / 1000);
    }
    let received = e2e_sched.len() as u64;
    if let Some(path) = &a.timeline {
        // Wall-clock time of `base`, to line the timeline up with server-side traces.
        let base_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
            - shared.base.elapsed().as_secs_f64() * 1000.0;
        let mut csv =
            String::from("seq,sent_ms,sent_unix_ms,publish_to_stream_ms,publish_rtt_ms\n");
        for seq in 0..total as usize {
            let sent = shared.sent[seq].load(Ordering::Acquire);
            let recv = shared.received[seq].load(Ordering::Acquire);
            let e2e = if sent != 0 && recv != 0 {
                format!("{:.3}", recv.saturating_sub(sent) as f64 / 1e6)
            } else {
                String::new()
            };
            let rtt = if acked[seq] {
                format!("{:.3}", rtt_by_seq[seq] as f64 / 1000.0)
            } else {
                String::new()
            };
            let sent_ms = sent.saturating_sub(1) as f64 / 1e6;
            csv.push_str(&format!(
                "{seq},{sent_ms:.3},{:.3},{e2e},{rtt}\n",
                base_unix_ms + sent_ms
            ));
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    let e2e = Summary::of(e2e);
    let e2e_sched = Summary::of(e2e_sched);
    let rtt = Summary::of(rtt);
    let achieved = total as f64 / sched_elapsed.as_secs_f64().max(1e-9);
    let met = e2e.count > 0 && crate::stats::ms(e2e.p99) <= TARGET_P99_MS && missing == 0;

    println!(
        "== latency: {} publishes/s for {:?}, {} B messages, topic {:?}",
        a.rate, a.duration, a.message_bytes, a.topic
    );
    println!(
        "scheduled          {total} (achieved send rate {achieved:.1}/s, max schedule lag {:.3} ms)",
        max_lag.as_secs_f64() * 1000.0
    );
    println!("acknowledged       {acked_count}");
    println!(
        "publish errors     {}{}",
        errors.line(),
        if unanswered > 0 {
            format!(" ({unanswered} unanswered)")
        } else {
            String::new()
        }
    );
    println!(
        "received on stream {received} (missing {missing} acknowledged, duplicates {}, resync events {})",
        shared.duplicates.load(Ordering::Relaxed),
        shared.resyncs.load(Ordering::Relaxed)
    );
    println!("publish → stream   {}", e2e.line());
    println!("  from schedule    {}", e2e_sched.line());
    println!("publish round trip {}", rtt.line());
    println!(
        "target             publish→stream p99 <= {TARGET_P99_MS} ms at {} /s: {}",
        a.rate,
        if met { "MET" } else { "NOT MET" }
    );
    Ok(json!({
        "scenario": "latency",
        "rate": a.rate,
        "stream": a.stream,
        "duration_s": a.duration.as_secs_f64(),
        "message_bytes": a.message_bytes,
        "scheduled": total,
        "achieved_rate": round3(achieved),
        "max_schedule_lag_ms": round3(max_lag.as_secs_f64() * 1000.0),
        "acknowledged": acked_count,
        "errors": errors.json(),
        "unanswered": unanswered,
        "received": received,
        "missing": missing,
        "duplicates": shared.duplicates.load(Ordering::Relaxed),
        "resyncs": shared.resyncs.load(Ordering::Relaxed),
        "publish_to_stream": e2e.json(),
        "schedule_to_stream": e2e_sched.json(),
        "publish_rtt": rtt.json(),
        "target_p99_ms": TARGET_P99_MS,
        "met": met,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers() {
        let m = message("lat abc ", 42, 100);
        assert_eq!(m.len(), 100);
        assert_eq!(parse_seq(&m, "lat abc "), Some(42));
        assert_eq!(parse_seq(&m, "lat abd "), None);
        assert_eq!(parse_seq("lat abc probe", "lat abc "), None);
        assert_eq!(parse_seq(&message("lat abc ", 7, 1), "lat abc "), Some(7));
    }
}
