//! `avatars`: tidings' internal avatar bus, in-process: tells per second from avatar to
//! avatar (`tidings_bus::avatars::Runtime`, the runtime the server's user and source
//! avatars run on, with its default configuration: 16 silos, mailboxes of 1,024).
//!
//! `--pairs` sender avatars each tell their own receiver avatar `--messages` times from
//! inside their handler (`cx.runtime().tell(...)`, the way one avatar reaches another in
//! the server); the receivers count. The run lasts from the instant before the senders
//! are started until the receivers have counted every message; the rate is
//! pairs × messages over that time. One direction only: two avatars telling each other
//! from their handlers would each wait for room in the other's full mailbox forever.
//! A warm-up round (a tenth of the messages) activates every avatar first. The avatars do
//! nothing but count, so this is the cost of the bus itself (mailbox, activation lookup,
//! task wake-ups), the best case for the server's avatars, whose handlers also write to
//! the store. The store is a throwaway SQLite file in a temporary directory; the runtime
//! needs one for reminders, which are not used here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tidings_bus::avatars::{Avatar, BoxError, Context, Runtime, RuntimeConfig};
use tidings_store::{Store, StoreOptions};

use crate::parse_duration;
use crate::stats::round3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sender → receiver avatar pairs.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Tells from each sender to its receiver.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Measured rounds; each is reported, the median is the result.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Bound on one round.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Default)]
struct Env {
    received: AtomicU64,
    sent: AtomicU64,
    tell_errors: AtomicU64,
}

enum Msg {
    /// Tell `to` `n` times.
    Go {
        to: String,
        n: u64,
    },
    Hit,
}

struct Relay;

impl Avatar for Relay {
    type Msg = Msg;
    type Env = Env;
    const KIND: &'static str = "bench";

    async fn activate(_id: &str, _cx: &Context<Self>) -> Result<Self, BoxError> {
        Ok(Relay)
    }

    async fn handle(&mut self, msg: Msg, cx: &Context<Self>) {
        match msg {
            Msg::Go { to, n } => {
                let rt = cx.runtime();
                for _ in 0..n {
                    if rt.tell(&to, Msg::Hit).await.is_err() {
                        cx.env().tell_errors.fetch_add(1, Ordering::Relaxed);
                    } else {
                        cx.env().sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Msg::Hit => {
                cx.env().received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn on_reminder(&mut self, _name: String, _payload: String, _cx: &Context<Self>) {}

    async fn passivate(&mut self, _cx: &Context<Self>) {}
}

/// One round: every sender tells its receiver `n` times; (seconds, tells/s).
async fn round(rt: &Runtime<Relay>, pairs: usize, n: u64, timeout: Duration) -> Result<(f64, f64)> {
    let env = rt.env().clone();
    let want = env.received.load(Ordering::Acquire) + pairs as u64 * n;
    let t0 = Instant::now();
    for i in 0..pairs {
        rt.tell(
            &format!("s{i}"),
            Msg::Go {
                to: format!("r{i}"),
                n,
            },
        )
        .await
        .context("telling a sender")?;
    }
    while env.received.load(Ordering::Acquire) < want {
        if t0.elapsed() > timeout {
            bail!(
                "avatar bus: {} of {} tells arrived within {timeout:?}",
                env.received.load(Ordering::Acquire) + pairs as u64 * n - want,
                pairs as u64 * n
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let s = t0.elapsed().as_secs_f64();
    Ok((s, (pairs as u64 * n) as f64 / s))
}

/// Runs the measurement; the JSON object (without `scenario`).
pub async fn measure(a: &Args) -> Result<Value> {
    if a.pairs == 0 || a.messages == 0 || a.rounds == 0 {
        bail!("--pairs, --messages and --rounds must be positive");
    }
    let dir = std::env::temp_dir().join(format!("tidings-load-avatars-{}", crate::nonce()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = async {
        let store = Store::open(&dir.join("bench.db"), StoreOptions::default())
            .context("opening the throwaway store")?;
        let cfg = RuntimeConfig::default();
        let (silos, mailbox) = (cfg.silos, cfg.mailbox);
        let rt: Runtime<Relay> = Runtime::new(Arc::new(Env::default()), store.clone(), cfg);
        let warm = (a.messages / 10).max(1);
        round(&rt, a.pairs, warm, a.timeout).await?;
        let mut rounds = Vec::new();
        let cpu1 = crate::self_cpu_seconds();
        for _ in 0..a.rounds {
            rounds.push(round(&rt, a.pairs, a.messages, a.timeout).await?);
        }
        let cpu2 = crate::self_cpu_seconds();
        let total_s: f64 = rounds.iter().map(|r| r.0).sum();
        let mut rates: Vec<f64> = rounds.iter().map(|r| r.1).collect();
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        let tells = a.pairs as f64 * a.messages as f64 * a.rounds as f64;
        let env = rt.env().clone();
        let stats = rt.stats();
        rt.shutdown().await;
        store.close().await;
        Ok::<Value, anyhow::Error>(json!({
            "pairs": a.pairs,
            "messages_per_pair": a.messages,
            "rounds": rounds.iter().map(|(s, r)| json!({"s": round3(*s), "per_second": round3(*r)})).collect::<Vec<_>>(),
            "per_second": round3(median),
            "per_second_min": round3(rates[0]),
            "per_second_max": round3(rates[rates.len() - 1]),
            "cpu_s": round3(cpu2 - cpu1),
            "cpu_us_per_tell": round3((cpu2 - cpu1) * 1e6 / tells),
            "cores_used": round3((cpu2 - cpu1) / total_s),
            "tell_errors": env.tell_errors.load(Ordering::Relaxed),
            "activations": stats.activations,
            "silos": silos,
            "mailbox": mailbox,
            "worker_threads": tokio::runtime::Handle::current().metrics().num_workers(),
        }))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub async fn run(a: Args) -> Result<Value> {
    let mut v = measure(&a).await?;
    println!(
        "avatar bus         {} pairs × {} tells: {:.0} tells/s median of {} rounds (min {:.0}, max {:.0}); {:.2} µs of CPU per tell (the whole process, {:.2} cores)",
        a.pairs,
        a.messages,
        v["per_second"].as_f64().unwrap_or(0.0),
        a.rounds,
        v["per_second_min"].as_f64().unwrap_or(0.0),
        v["per_second_max"].as_f64().unwrap_or(0.0),
        v["cpu_us_per_tell"].as_f64().unwrap_or(0.0),
        v["cores_used"].as_f64().unwrap_or(0.0),
    );
    v["scenario"] = json!("avatars");
    Ok(v)
}
