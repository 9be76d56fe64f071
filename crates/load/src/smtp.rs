//! `smtp`: messages accepted per second by the SMTP listener, with pipelining clients.
//!
//! `--connections` clients connect to the listener (loopback only, `TCP_NODELAY`), say
//! EHLO (and check that PIPELINING is offered), then send messages in a closed loop,
//! pipelined as RFC 2920 allows: `MAIL FROM`, `RCPT TO` and `DATA` go in one write; once
//! the 354 is in, the message text, its terminating `.` and the next transaction's `MAIL
//! FROM`/`RCPT TO`/`DATA` go in one write; then the replies (250 for the message, 250,
//! 250, 354) are read. So each message costs one round trip. A message counts as accepted
//! when the 250 after its DATA arrives (the server sends it only once the mail is durable
//! in its ingest queue); its latency is from the write of its text to that 250.
//!
//! Messages are `--message-bytes` (10 KiB) generated mails of three kinds in turn (plain;
//! multipart/alternative with HTML; multipart/mixed with a small attachment), each with
//! a unique Message-ID (the server dedupes on it), to `--to`.
//!
//! The first `--warmup` is not counted; the rate is over the `--duration` after it. With
//! `--data-dir`, the server's CPU over the window is read from `/proc`, and after the run
//! the tool waits (up to `--drain`) until every accepted mail is a history row (`inbox` in
//! the server's tidings.db, read with `sqlite3 -readonly`): the 250 means durable, not yet
//! delivered, so this shows whether delivery keeps up with acceptance.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::parse::{MAIL_KINDS, mail_message};
use crate::stats::{Errors, Summary, micros, round3};
use crate::sys::{CpuMark, server_pid, sqlite_rows};
use crate::{nonce, parse_duration, self_cpu_seconds};

const TARGET_PER_S: f64 = 2000.0;
const MAX_CONNECTIONS: usize = 4096;
/// A Message-ID placeholder of fixed length, overwritten in place for each message.
const MID_SLOT: &str = "MIDSLOT-0000000000000000000000000000000000000000";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SMTP listener, `127.0.0.1:PORT` (loopback only).
    #[arg(long)]
    smtp: String,
    /// Recipient of every message.
    #[arg(long, default_value = "bench@bench.test")]
    to: String,
    /// Concurrent SMTP connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured time (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time at the start.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Upper bound on messages sent in all.
    #[arg(long, default_value_t = 1_000_000)]
    max_messages: u64,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 10 * 1024)]
    message_bytes: usize,
    /// The server's data dir: its pid (CPU in the window) and tidings.db (delivery check).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// After the run, how long to wait for every accepted mail to be in the history.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    drain: Duration,
    /// Bound on waiting for any one reply.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    reply_timeout: Duration,
}

/// One SMTP reply: its code and the text of its last line.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
    timeout: Duration,
}

impl Conn {
    async fn reply(&mut self) -> Result<Reply> {
        let mut lines = Vec::new();
        loop {
            self.line.clear();
            let n = tokio::time::timeout(self.timeout, self.reader.read_line(&mut self.line))
                .await
                .map_err(|_| anyhow!("no reply within {:?}", self.timeout))?
                .context("reading a reply")?;
            if n == 0 {
                bail!("the server closed the connection (after {lines:?})");
            }
            let l = self.line.trim_end_matches(['\r', '\n']).to_owned();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| anyhow!("not an SMTP reply: {l:?}"))?;
            let last = l.len() == 3 || l.as_bytes()[3] == b' ';
            lines.push(l);
            if last {
                return Ok(Reply { code, lines });
            }
        }
    }

    async fn expect(&mut self, code: u16, what: &str) -> Result<Reply> {
        let r = self.reply().await?;
        if r.code != code {
            bail!("{what}: expected {code}, got {:?}", r.lines);
        }
        Ok(r)
    }
}

/// What one connection did.
#[derive(Default)]
struct ConnResult {
    /// (when the 250 arrived, microseconds from the write of the message text).
    accepted: Vec<(Instant, u64)>,
    errors: Errors,
    sent: u64,
    fatal: Option<String>,
}

struct Plan {
    to: String,
    templates: Vec<(Vec<u8>, usize)>,
    run: String,
    deadline: Instant,
    max_messages: u64,
    sent: AtomicU64,
    stop: AtomicBool,
}

async fn connect(addr: SocketAddr, reply_timeout: Duration) -> Result<Conn> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut c = Conn {
        reader: BufReader::with_capacity(64 * 1024, r),
        writer: w,
        line: String::new(),
        timeout: reply_timeout,
    };
    c.expect(220, "greeting").await?;
    c.writer.write_all(b"EHLO load.test\r\n").await?;
    let ehlo = c.expect(250, "EHLO").await?;
    if !ehlo.lines.iter().any(|l| {
        l.get(4..)
            .is_some_and(|x| x.eq_ignore_ascii_case("PIPELINING"))
    }) {
        bail!("the server does not offer PIPELINING: {:?}", ehlo.lines);
    }
    Ok(c)
}

async fn client(
    id: usize,
    p: Arc<Plan>,
    mut c: Conn,
    start: Arc<tokio::sync::Barrier>,
) -> ConnResult {
    let mut out = ConnResult::default();
    start.wait().await;
    let envelope = format!(
        "MAIL FROM:<load-{id}@client.test>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        p.to
    );
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(p.message_bytes_hint() + 256);
    let r: Result<()> = async {
        // The first transaction; later ones ride along with the previous message.
        if !p.take_one() {
            return Ok(());
        }
        c.writer.write_all(envelope.as_bytes()).await?;
        c.expect(250, "MAIL FROM").await?;
        c.expect(250, "RCPT TO").await?;
        c.expect(354, "DATA").await?;
        loop {
            let (tpl, slot) = &p.templates[(id + seq as usize) % p.templates.len()];
            buf.clear();
            buf.extend_from_slice(tpl);
            let mid = format!("{}.{id:05}.{seq:012}", p.run);
            let mid = format!("{mid:-<width$}", width = MID_SLOT.len());
            buf[*slot..*slot + MID_SLOT.len()].copy_from_slice(&mid.as_bytes()[..MID_SLOT.len()]);
            buf.extend_from_slice(b".\r\n");
            let more = Instant::now() < p.deadline && p.take_one();
            if more {
                buf.extend_from_slice(envelope.as_bytes());
            }
            let t0 = Instant::now();
            c.writer.write_all(&buf).await?;
            out.sent += 1;
            seq += 1;
            let r = c.reply().await?;
            if r.code == 250 {
                out.accepted.push((Instant::now(), micros(t0.elapsed())));
            } else {
                out.errors.add(format!("DATA {}", r.code));
                if r.code == 421 {
                    bail!("the server closed the session: {:?}", r.lines);
                }
            }
            if !more {
                break;
            }
            c.expect(250, "MAIL FROM").await?;
            c.expect(250, "RCPT TO").await?;
            c.expect(354, "DATA").await?;
        }
        c.writer.write_all(b"QUIT\r\n").await?;
        let _ = c.reply().await;
        Ok(())
    }
    .await;
    if let Err(e) = r {
        out.fatal = Some(e.to_string());
        out.errors.add("connection");
        p.stop.store(true, Ordering::Relaxed);
    }
    out
}

impl Plan {
    /// Claims one more message within `--max-messages` (and while no connection failed).
    fn take_one(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.sent.fetch_add(1, Ordering::Relaxed) < self.max_messages
    }

    fn message_bytes_hint(&self) -> usize {
        self.templates.iter().map(|t| t.0.len()).max().unwrap_or(0)
    }
}

fn loopback_addr(s: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = s.parse().with_context(|| {
        format!("--smtp {s:?}: give an IP address and port, e.g. 127.0.0.1:2525")
    })?;
    if !addr.ip().is_loopback() {
        bail!("--smtp {s:?}: only loopback addresses may be targeted");
    }
    Ok(addr)
}

pub async fn run(a: Args) -> Result<Value> {
    let addr = loopback_addr(&a.smtp)?;
    if a.connections == 0 || a.connections > MAX_CONNECTIONS {
        bail!("--connections must be 1-{MAX_CONNECTIONS}");
    }
    if !(1024..=10 * 1024 * 1024).contains(&a.message_bytes) {
        bail!("--message-bytes must be 1 KiB to 10 MiB");
    }
    let run = nonce();
    let templates: Vec<(Vec<u8>, usize)> = MAIL_KINDS
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let m = mail_message(kind, i, a.message_bytes, &a.to, MID_SLOT);
            let slot = m
                .windows(MID_SLOT.len())
                .position(|w| w == MID_SLOT.as_bytes())
                .unwrap_or(0);
            (m, slot)
        })
        .collect();
    let avg_bytes = templates.iter().map(|t| t.0.len()).sum::<usize>() / templates.len();
    let pid = match &a.data_dir {
        Some(d) => Some(server_pid(d)?),
        None => None,
    };

    // Connect everyone first, then start together.
    let mut conns = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        conns.push(connect(addr, a.reply_timeout).await?);
    }
    let start_at = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(Plan {
        to: a.to.clone(),
        templates,
        run: run.clone(),
        deadline: start_at + a.warmup + a.duration,
        max_messages: a.max_messages,
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    eprintln!(
        "smtp: {} connections to {addr}, {avg_bytes} B messages to {}, {:?} warm-up + {:?}",
        a.connections, a.to, a.warmup, a.duration
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(a.connections + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (id, c) in conns.into_iter().enumerate() {
        tasks.spawn(client(id, plan.clone(), c, barrier.clone()));
    }
    tokio::time::sleep_until(start_at.into()).await;
    barrier.wait().await;
    let t_start = Instant::now();
    let window_start = t_start + a.warmup;
    tokio::time::sleep_until(window_start.into()).await;
    let cpu0 = pid.map(CpuMark::take).transpose()?;
    let self0 = self_cpu_seconds();
    let window_end = window_start + a.duration;
    tokio::time::sleep_until(window_end.into()).await;
    let cpu1 = pid.map(CpuMark::take).transpose()?;
    let self_cpu = self_cpu_seconds() - self0;

    let mut accepted: Vec<(Instant, u64)> = Vec::new();
    let mut errors = Errors::default();
    let mut fatal = Vec::new();
    let mut sent = 0u64;
    let join_deadline = Instant::now() + a.reply_timeout + Duration::from_secs(5);
    while let Ok(Some(r)) = tokio::time::timeout_at(join_deadline.into(), tasks.join_next()).await {
        let r = r.context("an SMTP client panicked")?;
        accepted.extend(r.accepted);
        errors.merge(&r.errors);
        sent += r.sent;
        if let Some(f) = r.fatal {
            fatal.push(f);
        }
    }
    let unfinished = tasks.len();
    tasks.abort_all();
    let t_end = Instant::now();
    let total_accepted = accepted.len() as u64;
    let in_window: Vec<u64> = accepted
        .iter()
        .filter(|(at, _)| *at >= window_start && *at < window_end)
        .map(|(_, us)| *us)
        .collect();
    let window_s = a.duration.as_secs_f64();
    let per_s = in_window.len() as f64 / window_s;
    let latency = Summary::of(in_window.clone());
    let all_latency = Summary::of(accepted.iter().map(|(_, us)| *us).collect());
    let cpu = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) => Some((c0.pct_until(&c1), c1.cpu_s - c0.cpu_s)),
        _ => None,
    };

    // Delivery: is every accepted mail in the history, and when?
    let mut drain = json!(null);
    let mut drain_line = String::new();
    if let Some(dir) = &a.data_dir {
        let db = dir.join("tidings.db");
        let deadline = Instant::now() + a.drain;
        let mut count = 0u64;
        let mut err = None;
        loop {
            match sqlite_rows(
                &db,
                "SELECT count(*) FROM inbox WHERE source_id LIKE 'mail:%'",
            )
            .await
            {
                Ok(rows) => {
                    count = rows
                        .first()
                        .and_then(|r| r.first())
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                }
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            }
            if count >= total_accepted || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after_end = t_end.elapsed().as_secs_f64();
        let since_start = t_start.elapsed().as_secs_f64();
        drain = json!({
            "in_history": count,
            "all_in_history": count >= total_accepted,
            "s_after_last_250": round3(after_end),
            "delivered_per_s": round3(count as f64 / since_start.max(1e-9)),
            "error": err,
        });
        drain_line = match err {
            Some(e) => format!("not checked: {e}"),
            None if count >= total_accepted => format!(
                "all {count} in the history {after_end:.1} s after the last 250 ({:.0}/s delivered from the start)",
                count as f64 / since_start.max(1e-9)
            ),
            None => format!(
                "only {count} of {total_accepted} in the history after waiting {:?}",
                a.drain
            ),
        };
    }
    let met = per_s >= TARGET_PER_S && errors.total() == 0;

    println!(
        "== smtp: {} pipelining connections, {avg_bytes} B messages to {}, {:?} measured after {:?}",
        a.connections, a.to, a.duration, a.warmup
    );
    println!(
        "accepted (250)     {} in the window: {per_s:.1}/s ({:.2} MB/s of message text); {total_accepted} in all, {sent} sent",
        in_window.len(),
        per_s * avg_bytes as f64 / 1e6
    );
    println!("errors             {}", errors.line());
    for f in fatal.iter().take(3) {
        println!("  connection failed: {f}");
    }
    if unfinished > 0 {
        println!("  {unfinished} connections did not finish in time");
    }
    println!("DATA → 250         {}", latency.line());
    if let Some((pct, cpu_s)) = cpu {
        println!(
            "server CPU         {pct:.1} % of one core in the window ({:.0} µs per accepted mail)",
            cpu_s * 1e6 / in_window.len().max(1) as f64
        );
    }
    println!(
        "load tool CPU      {:.1} % of one core in the window",
        100.0 * self_cpu / window_s
    );
    if !drain_line.is_empty() {
        println!("delivery           {drain_line}");
    }
    println!(
        "target             >= {TARGET_PER_S}/s accepted: {}",
        if met { "MET" } else { "NOT MET" }
    );
    Ok(json!({
        "scenario": "smtp",
        "connections": a.connections,
        "message_bytes": avg_bytes,
        "duration_s": window_s,
        "warmup_s": a.warmup.as_secs_f64(),
        "accepted_in_window": in_window.len(),
        "per_second": round3(per_s),
        "accepted": total_accepted,
        "sent": sent,
        "errors": errors.json(),
        "fatal": fatal,
        "latency": latency.json(),
        "latency_all": all_latency.json(),
        "server_cpu_pct": cpu.map(|c| round3(c.0)),
        "server_cpu_us_per_mail": cpu.map(|c| round3(c.1 * 1e6 / in_window.len().max(1) as f64)),
        "tool_cpu_pct": round3(100.0 * self_cpu / window_s),
        "delivery": drain,
        "target_per_s": TARGET_PER_S,
        "met": met,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(loopback_addr("127.0.0.1:2525").is_ok());
        assert!(loopback_addr("[::1]:25").is_ok());
        assert!(loopback_addr("10.0.0.1:25").is_err());
        assert!(loopback_addr("localhost:25").is_err());
    }

    #[test]
    fn template_has_one_slot() {
        let m = mail_message("plain", 0, 10 * 1024, "a@b.test", MID_SLOT);
        let n = m
            .windows(MID_SLOT.len())
            .filter(|w| *w == MID_SLOT.as_bytes())
            .count();
        assert_eq!(n, 1);
        let id = format!(
            "{:-<width$}",
            "abcd.00001.000000000001",
            width = MID_SLOT.len()
        );
        assert_eq!(id.len(), MID_SLOT.len());
    }
}
