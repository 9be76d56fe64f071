//! `tidings-load`: a load generator and benchmark tool for a tidings server.
//!
//! It drives a running server (on a loopback address only) over its public HTTP API and
//! measures what the service promises:
//!
//! - `publish`: N concurrent keep-alive HTTP/1.1 clients publish in a closed loop to one
//!   topic; reports acknowledged (2xx, i.e. durable) publishes per second, errors by status
//!   and the publish latency distribution.
//! - `latency`: opens the caller's SSE stream (`/api/v1/stream`), publishes open-loop at a
//!   fixed rate (every publish is its own task, so a slow answer does not delay the
//!   schedule), and measures publish-send → SSE-receipt latency per message (matched by a
//!   sequence number embedded in the message), plus publish round trips.
//! - `fanout`: creates an owner and N users through the admin API, grants and subscribes
//!   them to one topic, opens one SSE stream per user, then publishes ONE message and
//!   measures how long until every stream received it and every history holds it (a sample
//!   polled over HTTP, plus an exact count in the SQLite `inbox` table with `--db`).
//! - `parse`: no server; the feed parser over the feedparser corpus and the MIME parser
//!   over generated 10 KiB mails, in-process on one thread: MB/s and documents/s.
//! - `feeds`: serves N RSS feeds itself (ETag, 304) on 127.0.0.1, subscribes one user to
//!   all of them and measures the server's CPU while it polls them, and for new items the
//!   time from the poll that saw them to the user's history.
//! - `websub`: acts as a WebSub hub and publisher; after the server subscribed (and
//!   answered the challenge), pushes signed feed documents and measures push → live
//!   stream and push → history.
//! - `smtp`: pipelining SMTP clients send 10 KiB mails to one user; reports 250s (durable
//!   acceptances) per second and how fast the accepted mail reaches the history.
//! - `deliveries`: users with webhook destinations (1,000 by default) pointing at the
//!   tool's own receiver; N publishes, and deliveries per second until the receiver has
//!   every (destination, notification) pair, checked by `Idempotency-Key`; the server's
//!   CPU per 1,000 deliveries.
//! - `dead-destination`: one user with a dead destination (hanging or refusing) and a
//!   healthy one; queues 100,000 items and samples the server's RSS before, during and
//!   after, while the dead one keeps failing; checks the healthy one got every item.
//! - `xmpp`: N online XMPP clients (a private Prosody) get every notification through
//!   tidings' component: messages/s and publish → client latency; in the same run the XMPP
//!   server's own client-to-client routing rate (Prosody, and ejabberd when given) and
//!   the avatar bus's tell rate.
//! - `avatars`: tells per second between avatars of the in-process avatar runtime.
//!
//! Every scenario prints a human-readable summary followed by exactly one line of JSON (an
//! object with a `scenario` key, last on stdout) so scripts can collect results (see
//! `scripts/bench`). Progress goes to stderr.
//! All loops are bounded by count and time. The tool refuses non-loopback URLs and binds
//! its own servers (feeds, hub, webhook receiver) to 127.0.0.1 only.

mod avatars;
mod dead;
mod deliveries;
mod fanout;
mod feeds;
mod latency;
mod parse;
mod publish;
mod receiver;
mod smtp;
mod sse;
mod stats;
mod sys;
mod websub;
mod xmpp;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tidings-load",
    version,
    about = "Load generator and benchmarks for tidings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed-loop publish throughput with N concurrent keep-alive clients.
    Publish(publish::Args),
    /// Publish-to-live-stream latency at a fixed publish rate (open loop).
    Latency(latency::Args),
    /// One publish to a topic with N subscribed users: time to all streams and histories.
    Fanout(fanout::Args),
    /// In-process feed and MIME parser throughput (no server).
    Parse(parse::Args),
    /// Many local feeds polled by the server: its CPU, and new item → poll → history.
    Feeds(feeds::Args),
    /// WebSub push (the tool is the hub) → stream and history latency.
    Websub(websub::Args),
    /// Messages accepted per second by the SMTP listener, pipelining clients.
    Smtp(smtp::Args),
    /// Webhook deliveries per second across many destinations (a local receiver).
    Deliveries(deliveries::Args),
    /// Server memory while a dead destination has a large backlog; a healthy one beside it.
    DeadDestination(dead::Args),
    /// Notifications as instant messages to N online XMPP clients through the component,
    /// with the XMPP server's routing rate and the avatar bus's tell rate beside it.
    Xmpp(Box<xmpp::Args>),
    /// Tells per second between avatars (the in-process avatar runtime, no server).
    Avatars(avatars::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let json = rt.block_on(async {
        match cli.command {
            Command::Publish(a) => publish::run(a).await,
            Command::Latency(a) => latency::run(a).await,
            Command::Fanout(a) => fanout::run(a).await,
            Command::Parse(a) => parse::run(a).await,
            Command::Feeds(a) => feeds::run(a).await,
            Command::Websub(a) => websub::run(a).await,
            Command::Smtp(a) => smtp::run(a).await,
            Command::Deliveries(a) => deliveries::run(a).await,
            Command::DeadDestination(a) => dead::run(a).await,
            Command::Xmpp(a) => xmpp::run(*a).await,
            Command::Avatars(a) => avatars::run(a).await,
        }
    })?;
    let mut json = json;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "load_cpu_s".into(),
            serde_json::json!(stats::round3(self_cpu_seconds())),
        );
    }
    // Exactly one JSON line, last on stdout, for scripts.
    println!("{json}");
    Ok(())
}

/// CPU time (user + system) this process has used, in seconds.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Parses a duration like `10s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the server URL and refuses anything but a loopback address: this tool only
/// ever loads a server on this machine.
pub fn loopback_url(url: &str) -> Result<reqwest::Url> {
    let mut u = reqwest::Url::parse(url).with_context(|| format!("invalid --url {url:?}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        bail!("--url {url:?}: only http:// and https:// are supported");
    }
    let host = u.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ok = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    if !ok {
        bail!(
            "--url {url:?}: only loopback addresses (127.0.0.0/8, ::1, localhost) may be targeted"
        );
    }
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

/// Joins a relative path onto the base URL.
pub fn endpoint(base: &reqwest::Url, path: &str) -> Result<reqwest::Url> {
    base.join(path)
        .with_context(|| format!("cannot build a URL from {base} and {path:?}"))
}

/// An HTTP/1.1-only client that never goes through a proxy, keeping up to `pool` idle
/// keep-alive connections.
pub fn http_client(pool: usize, timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .context("cannot build the HTTP client")
}

/// A short run-unique tag (hex), used to recognize this run's messages and users.
pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = (t as u64) ^ ((t >> 64) as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{:08x}", (mix ^ (mix >> 29)) & 0xffff_ffff)
}

/// A short description of a transport error, for the error-by-kind tallies.
pub fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "io:timeout".into()
    } else if e.is_connect() {
        "io:connect".into()
    } else if e.is_body() || e.is_decode() {
        "io:body".into()
    } else if e.is_request() {
        "io:request".into()
    } else {
        "io:other".into()
    }
}

/// Raises the open-files soft limit to at least `wanted` (up to the hard limit, or beyond
/// it when the process may raise the hard limit). Returns the soft limit in force.
pub fn raise_nofile(wanted: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= wanted {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(wanted);
        }
    }
    let target = libc::rlimit {
        rlim_cur: wanted.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &target) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(target.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn only_loopback() {
        assert!(loopback_url("http://127.0.0.1:8080").is_ok());
        assert!(loopback_url("http://localhost:1/").is_ok());
        assert!(loopback_url("http://[::1]:9/").is_ok());
        assert!(loopback_url("http://10.0.0.1:8080").is_err());
        assert!(loopback_url("http://example.com").is_err());
        let u = loopback_url("http://127.0.0.1:8080/base").unwrap();
        assert_eq!(
            endpoint(&u, "t").unwrap().as_str(),
            "http://127.0.0.1:8080/base/t"
        );
    }
}
