//! `publish`: closed-loop publish throughput. Each of `--clients` workers owns one
//! keep-alive HTTP/1.1 connection and publishes back to back until the time is up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::stats::{Errors, Summary, micros, round3};
use crate::{endpoint, error_kind, http_client, loopback_url, parse_duration};

/// Acknowledged publishes per second the issue asks for.
const TARGET_PER_SEC: f64 = 20_000.0;
/// A worker never sends more than this many requests (a bound on the loop).
const MAX_REQUESTS_PER_WORKER: u64 = 50_000_000;
/// A worker gives up after this many transport errors in a row.
const MAX_CONSECUTIVE_IO_ERRORS: u32 = 100;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL (loopback only).
    #[arg(long)]
    url: String,
    /// API token of the publishing user.
    #[arg(long, env = "TIDINGS_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured duration.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before the measured duration.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Topic to publish to.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Size of each message body in bytes.
    #[arg(long, default_value_t = 100)]
    message_bytes: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
}

#[derive(Default)]
struct WorkerResult {
    ok: u64,
    latencies_us: Vec<u64>,
    errors: Errors,
    /// Requests done during the warm-up (not counted).
    warmup_requests: u64,
    last_done: Option<Instant>,
}

fn body(worker: usize, size: usize) -> String {
    let mut b = format!("bench w{worker} ");
    if b.len() < size {
        b.push_str(&"x".repeat(size - b.len()));
    } else {
        b.truncate(size.max(1));
    }
    b
}

async fn worker(
    w: usize,
    client: reqwest::Client,
    url: reqwest::Url,
    token: Arc<str>,
    message_bytes: usize,
    measure_from: Instant,
    end: Instant,
) -> WorkerResult {
    let mut r = WorkerResult {
        latencies_us: Vec::with_capacity(64 * 1024),
        ..Default::default()
    };
    let body = body(w, message_bytes);
    let mut consecutive_io = 0u32;
    for _ in 0..MAX_REQUESTS_PER_WORKER {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let res = client
            .post(url.clone())
            .bearer_auth(&*token)
            .header("Title", "bench")
            .header("Priority", "3")
            .body(body.clone())
            .send()
            .await;
        let outcome = match res {
            Ok(resp) => {
                let status = resp.status();
                // Read the whole answer so the connection is reused.
                match resp.bytes().await {
                    Ok(_) => Ok(status),
                    Err(e) => Err(error_kind(&e)),
                }
            }
            Err(e) => Err(error_kind(&e)),
        };
        let done = Instant::now();
        let measured = t0 >= measure_from;
        if !measured {
            r.warmup_requests += 1;
        }
        match outcome {
            Ok(status) => {
                consecutive_io = 0;
                if measured {
                    r.last_done = Some(done);
                    if status.is_success() {
                        r.ok += 1;
                        r.latencies_us.push(micros(done - t0));
                    } else {
                        r.errors.add(status.as_u16().to_string());
                    }
                }
            }
            Err(kind) => {
                if measured {
                    r.last_done = Some(done);
                    r.errors.add(kind);
                }
                consecutive_io += 1;
                if consecutive_io >= MAX_CONSECUTIVE_IO_ERRORS {
                    eprintln!("worker {w}: {consecutive_io} transport errors in a row, stopping");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    r
}

pub async fn run(a: Args) -> Result<Value> {
    if a.clients == 0 || a.clients > 10_000 {
        bail!("--clients must be 1-10000");
    }
    if a.duration.is_zero() {
        bail!("--duration must be positive");
    }
    let base = loopback_url(&a.url)?;
    let url = endpoint(&base, &a.topic)?;
    let token: Arc<str> = a.token.clone().into();

    // One publish first: it claims the topic, which is not what we measure.
    let probe = http_client(1, a.request_timeout)?;
    let resp = probe
        .post(url.clone())
        .bearer_auth(&*token)
        .body("bench: claim topic")
        .send()
        .await
        .with_context(|| format!("first publish to {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .context("reading the first publish's answer")?;
    if !status.is_success() {
        bail!("first publish to {url} answered {status}: {text}");
    }
    let v: Value = serde_json::from_str(&text).context("the publish answer is not JSON")?;
    if v.get("id").and_then(Value::as_str).is_none() {
        bail!("the publish answer has no id: {text}");
    }

    eprintln!(
        "publish: {} clients, {:?} warm-up + {:?} measured, {} B messages to {url}",
        a.clients, a.warmup, a.duration, a.message_bytes
    );
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..a.clients {
        // A client per worker: one keep-alive connection each.
        let client = http_client(1, a.request_timeout)?;
        tasks.spawn(worker(
            w,
            client,
            url.clone(),
            token.clone(),
            a.message_bytes,
            measure_from,
            end,
        ));
    }
    let mut total = WorkerResult::default();
    let mut workers_done = 0usize;
    let join_deadline = end + a.request_timeout + Duration::from_secs(5);
    while let Ok(Some(joined)) =
        tokio::time::timeout_at(join_deadline.into(), tasks.join_next()).await
    {
        let r = joined.context("a publishing worker panicked")?;
        workers_done += 1;
        total.ok += r.ok;
        total.latencies_us.extend(r.latencies_us);
        total.errors.merge(&r.errors);
        total.warmup_requests += r.warmup_requests;
        total.last_done = total.last_done.max(r.last_done);
    }
    tasks.abort_all();
    let elapsed = total
        .last_done
        .map(|t| t.saturating_duration_since(measure_from))
        .unwrap_or(a.duration)
        .max(a.duration);
    let secs = elapsed.as_secs_f64();
    let rate = total.ok as f64 / secs;
    let lat = Summary::of(total.latencies_us);
    let met = rate >= TARGET_PER_SEC && total.errors.total() == 0;

    println!(
        "== publish: {} clients, {} B messages, topic {:?}",
        a.clients, a.message_bytes, a.topic
    );
    println!(
        "measured window    {secs:.3} s (after {:?} warm-up)",
        a.warmup
    );
    println!("acknowledged       {} ({rate:.0}/s)", total.ok);
    println!("errors             {}", total.errors.line());
    println!("latency            {}", lat.line());
    println!(
        "target             >= {TARGET_PER_SEC:.0} acknowledged publishes/s: {}",
        if met { "MET" } else { "NOT MET" }
    );
    if workers_done < a.clients {
        println!(
            "warning            {} workers did not finish in time",
            a.clients - workers_done
        );
    }
    Ok(json!({
        "scenario": "publish",
        "clients": a.clients,
        "duration_s": round3(secs),
        "warmup_s": a.warmup.as_secs_f64(),
        "message_bytes": a.message_bytes,
        "acknowledged": total.ok,
        "per_second": round3(rate),
        "errors": total.errors.json(),
        "latency": lat.json(),
        "target_per_second": TARGET_PER_SEC,
        "met": met,
    }))
}

#[cfg(test)]
mod tests {
    use super::body;

    #[test]
    fn body_sizes() {
        assert_eq!(body(3, 100).len(), 100);
        assert_eq!(body(3, 1).len(), 1);
        assert!(body(12, 100).starts_with("bench w12 "));
    }
}
