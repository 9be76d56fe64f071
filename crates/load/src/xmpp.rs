//! `xmpp`: notifications delivered as instant messages through tidings' XMPP component,
//! and, in the same run, the reference rates the 2008 design worried about: the XMPP
//! server's own client-to-client routing (Prosody; ejabberd when one is given) and
//! tidings' internal avatar bus (see [`crate::avatars`]).
//!
//! Expects (scripts/bench sets it all up): a Prosody with `--users` accounts
//! `<user-prefix><i>@<domain>` and `2 × --pairs` accounts `<pair-prefix><i>@<domain>`, all
//! with `--password`; a tidings server connected to it as the component `--component`.
//!
//! Phases, one after another:
//! 1. **tidings**: `--users` XMPP clients log in (`tidings_xmpp` in client mode, no TLS on
//!    loopback; they approve every subscription request and send XEP-0184 receipts, as
//!    ordinary clients do). For each, a tidings user is created, granted and subscribed to
//!    one topic, and adds `xmpp://<its JID>` as a destination; tidings asks for a presence
//!    subscription, the client approves. Setup waits until every destination is
//!    `verified` and the account API shows the address `available`, then one warm-up
//!    publish must reach every client. Then `--notifications` publishes (`--publish-clients`
//!    in flight), each going to every user as a chat message whose stanza id is the
//!    notification id. Measured: messages per second received by all clients (from the
//!    instant before the first publish to the last message), publish → receipt latency
//!    (from the publish's answer, and from its sending), missing and duplicate messages,
//!    and the CPU of the server, Prosody and this tool over the run.
//! 2. **prosody** routing: the tidings clients log out; `--pairs` pairs of clients log in
//!    and each client sends `--pair-messages` chat messages (no receipt requested) to its
//!    partner as fast as its connection takes them (`tidings_xmpp`'s send queue, at most
//!    `--max-unconfirmed` stanzas unconfirmed per connection). Messages per second
//!    delivered over all pairs, and Prosody's CPU (it runs on one thread).
//! 3. **ejabberd** routing, the same, when `--ejabberd-port` is given.
//! 4. **avatars**: tells per second between avatars in this process.
//!
//! The JSON has one object per phase and `ratio_avatars_to_prosody` (and to ejabberd).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tidings_xmpp::{ClientTls, Inbound, Jid, Mode, Outbound, XmppConfig, XmppHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::deliveries::{Published, publish_one};
use crate::fanout::{User, call, create_user, phase};
use crate::stats::{Errors, Summary, micros, round3};
use crate::sys::{process_cpu_seconds, server_pid, sqlite_rows, thread_cpu_seconds};
use crate::{endpoint, http_client, loopback_url, nonce, parse_duration};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// tidings' base URL (loopback only).
    #[arg(long)]
    url: String,
    /// An administrator's API token (creates the users).
    #[arg(long, env = "TIDINGS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// The server's data dir: its pid (CPU time) and tidings.db (delivery records).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the XMPP server takes clients (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    xmpp_host: String,
    /// Prosody's client port.
    #[arg(long)]
    c2s_port: u16,
    /// Prosody's pid (its CPU time), or a file holding it.
    #[arg(long)]
    prosody_pid: Option<String>,
    /// The accounts' domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// tidings' component domain (messages from it are notifications).
    #[arg(long, default_value = "tidings.localhost")]
    component: String,
    /// Password of every account.
    #[arg(long, default_value = "bench-pw")]
    password: String,
    /// Online clients (and tidings users), accounts `<user-prefix>0..`.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value = "u")]
    user_prefix: String,
    /// Notifications published in the measured run; each goes to every user.
    #[arg(long, default_value_t = 20)]
    notifications: usize,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 4)]
    publish_clients: usize,
    /// Publishes per second (0: as fast as `--publish-clients` allows, a burst).
    #[arg(long, default_value_t = 0.0)]
    publish_rate: f64,
    /// Topic the owner publishes to.
    #[arg(long, default_value = "im")]
    topic: String,
    /// Client logins in progress at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Setup requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Routing reference: client pairs, accounts `<pair-prefix>0..<2 × pairs>`.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    #[arg(long, default_value = "r")]
    pair_prefix: String,
    /// Messages each routing client sends to its partner.
    #[arg(long, default_value_t = 2000)]
    pair_messages: usize,
    /// Unconfirmed stanzas per routing connection (tidings_xmpp's `max_unconfirmed`).
    #[arg(long, default_value_t = 64)]
    max_unconfirmed: usize,
    /// An ejabberd's client port: measure its routing too (same accounts and password).
    #[arg(long)]
    ejabberd_port: Option<u16>,
    /// ejabberd's pid (its CPU time), or a file holding it.
    #[arg(long)]
    ejabberd_pid: Option<String>,
    /// Avatar bus reference: sender → receiver pairs, tells each, rounds.
    #[arg(long, default_value_t = 50)]
    avatar_pairs: usize,
    #[arg(long, default_value_t = 100_000)]
    avatar_messages: u64,
    #[arg(long, default_value_t = 3)]
    avatar_rounds: usize,
    /// Phases to run (comma-separated): tidings, prosody, ejabberd, avatars.
    #[arg(long, default_value = "tidings,prosody,ejabberd,avatars")]
    phases: String,
    /// Bound on waiting for all messages of a phase.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    /// Wait after the last message, for late duplicates.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Bound on each setup step (logins, users, verification).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    setup_timeout: Duration,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Log {
    /// (stanza id, arrival) of every counted message.
    msgs: Vec<(String, Instant)>,
    disconnects: u32,
    subscribe_requests: u32,
}

#[derive(Debug, Default)]
struct Shared {
    connected: AtomicUsize,
    received: AtomicU64,
    disconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct Client {
    handle: XmppHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<Log>,
}

/// Starts one client; its events are drained by a task of its own. Messages are counted
/// when they come from `count_from` (a bare JID), or from anyone when it is None.
fn spawn_client(
    host: &str,
    port: u16,
    jid: Jid,
    password: &str,
    max_unconfirmed: usize,
    count_from: Option<String>,
    shared: Arc<Shared>,
) -> Client {
    let mut cfg = XmppConfig::new(Mode::Client {
        jid,
        password: password.to_owned(),
        host: Some(host.to_owned()),
        port: Some(port),
        tls: ClientTls::Optional,
        extra_root_certs: Vec::new(),
    });
    cfg.max_unconfirmed = max_unconfirmed.max(1);
    cfg.reconnect_min = Duration::from_millis(200);
    cfg.reconnect_max = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_secs(30);
    let (stop, stop_rx) = watch::channel(false);
    let (handle, mut inbound) = tidings_xmpp::start(cfg, Vec::new(), stop_rx);
    let task = tokio::spawn(async move {
        let mut log = Log::default();
        let mut connected = false;
        while let Some(ev) = inbound.recv().await {
            match ev {
                Inbound::Message { from, id, .. } => {
                    let counted = count_from
                        .as_deref()
                        .is_none_or(|f| from.bare().to_string() == f);
                    if counted {
                        log.msgs.push((id.unwrap_or_default(), Instant::now()));
                        shared.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Inbound::Connected if !connected => {
                    connected = true;
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                }
                Inbound::Disconnected { reason } => {
                    log.disconnects += 1;
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                }
                Inbound::SubscribeRequest { .. } => log.subscribe_requests += 1,
                _ => {}
            }
        }
        log
    });
    Client { handle, stop, task }
}

/// Logs in one client per JID, at most `conc` logging in at once; returns once all are
/// connected (or fails at `deadline`, naming the last connection error).
/// Where clients log in.
struct Server<'a> {
    host: &'a str,
    port: u16,
    password: &'a str,
}

async fn connect_all(
    server: &Server<'_>,
    jids: &[Jid],
    max_unconfirmed: usize,
    count_from: Option<&str>,
    conc: usize,
    deadline: Instant,
) -> Result<(Vec<Client>, Arc<Shared>, Duration)> {
    let shared = Arc::new(Shared::default());
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(jids.len());
    let wait = |want: usize| {
        let shared = shared.clone();
        async move {
            let mut last_report = Instant::now();
            while shared.connected.load(Ordering::Relaxed) < want {
                if Instant::now() > deadline {
                    bail!(
                        "{} of {want} clients logged in before the deadline; last connection error: {:?}",
                        shared.connected.load(Ordering::Relaxed),
                        shared.last_error.lock().unwrap_or_else(|p| p.into_inner())
                    );
                }
                if last_report.elapsed() >= Duration::from_secs(5) {
                    last_report = Instant::now();
                    eprintln!(
                        "  logins: {}/{}",
                        shared.connected.load(Ordering::Relaxed),
                        jids.len()
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        }
    };
    for (i, jid) in jids.iter().enumerate() {
        wait((i + 1).saturating_sub(conc.max(1))).await?;
        clients.push(spawn_client(
            server.host,
            server.port,
            jid.clone(),
            server.password,
            max_unconfirmed,
            count_from.map(str::to_owned),
            shared.clone(),
        ));
    }
    wait(jids.len()).await?;
    let took = t0.elapsed();
    eprintln!(
        "  logins: {} in {:.2} s ({:.0}/s)",
        jids.len(),
        took.as_secs_f64(),
        jids.len() as f64 / took.as_secs_f64().max(1e-9)
    );
    Ok((clients, shared, took))
}

/// Logs every client out and collects what each saw.
async fn disconnect_all(clients: Vec<Client>) -> Vec<Log> {
    for c in &clients {
        let _ = c.stop.send(true);
    }
    let mut logs = Vec::with_capacity(clients.len());
    for c in clients {
        drop(c.handle);
        logs.push(c.task.await.unwrap_or_default());
    }
    logs
}

/// A pid given as a number or as a file holding one.
fn read_pid(spec: &Option<String>) -> Option<u32> {
    let s = spec.as_deref()?;
    s.trim().parse().ok().or_else(|| {
        std::fs::read_to_string(s)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|p| process_cpu_seconds(p).ok())
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(round3(b? - a?))
}

fn jid(s: &str) -> Result<Jid> {
    Jid::parse(s).map_err(|e| anyhow!("{s:?} is not a JID: {e}"))
}

/// Rate over the arrivals (relative to `t0`): overall and between the 10th and 90th
/// percentile arrival; the per-second counts.
fn rates(t0: Instant, arrivals: &mut [Instant]) -> (f64, f64, Vec<u64>, f64) {
    arrivals.sort_unstable();
    let n = arrivals.len();
    if n == 0 {
        return (0.0, 0.0, Vec::new(), 0.0);
    }
    let last = arrivals[n - 1].saturating_duration_since(t0).as_secs_f64();
    let overall = n as f64 / last.max(1e-9);
    let (lo, hi) = (arrivals[n / 10], arrivals[(n * 9 / 10).min(n - 1)]);
    let span = hi.saturating_duration_since(lo).as_secs_f64();
    let middle = if span > 0.0 {
        (n * 8 / 10) as f64 / span
    } else {
        overall
    };
    let mut per_sec = vec![0u64; last.ceil().max(1.0) as usize];
    for a in arrivals.iter() {
        let s = a.saturating_duration_since(t0).as_secs_f64() as usize;
        if let Some(b) = per_sec.get_mut(s) {
            *b += 1;
        } else if let Some(b) = per_sec.last_mut() {
            *b += 1;
        }
    }
    (overall, middle, per_sec, last)
}

/// Phase 1: tidings → component → Prosody → clients.
async fn tidings_phase(a: &Args, prosody: Option<u32>) -> Result<Value> {
    let base = loopback_url(&a.url)?;
    let run = nonce();
    let server = a.data_dir.as_deref().map(server_pid).transpose()?;
    let client = http_client(a.concurrency * 2 + 8, Duration::from_secs(60))?;
    let admin = a.admin_token.as_str();
    let deadline = Instant::now() + a.setup_timeout;
    let n = a.users;
    eprintln!(
        "xmpp: {n} clients {}0..{}{} @{} on {}:{}, tidings component {}",
        a.user_prefix,
        a.user_prefix,
        n - 1,
        a.domain,
        a.xmpp_host,
        a.c2s_port,
        a.component
    );
    let jids: Vec<Jid> = (0..n)
        .map(|i| jid(&format!("{}{i}@{}/bench", a.user_prefix, a.domain)))
        .collect::<Result<_>>()?;
    let target = Server {
        host: &a.xmpp_host,
        port: a.c2s_port,
        password: &a.password,
    };
    let (clients, shared, login) = connect_all(
        &target,
        &jids,
        64,
        Some(&a.component),
        a.connect_concurrency,
        deadline,
    )
    .await?;

    // tidings users, one topic, one xmpp destination each.
    let t_setup = Instant::now();
    let owner = create_user(&client, &base, admin, format!("x{run}-owner")).await?;
    let topic_url = endpoint(&base, &a.topic)?;
    publish_one(
        &client,
        &topic_url,
        &owner.token,
        format!("xmpp {run} claim"),
    )
    .await
    .map_err(|e| anyhow!("the owner's first publish failed: {e}"))?;
    let (users, _) = phase("create users", n, a.concurrency, deadline, |i| {
        create_user(&client, &base, admin, format!("x{run}-{i}"))
    })
    .await?;
    let users: Vec<User> = users;
    phase("grant subscribe", n, a.concurrency, deadline, |i| {
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
    phase("subscribe", n, a.concurrency, deadline, |i| {
        let url = endpoint(&base, "api/v1/subscriptions");
        let (client, users, body) = (&client, &users, &sub_body);
        async move { call(client, Method::POST, url?, &users[i].token, Some(body)).await }
    })
    .await?;
    let (dest_ids, t_dest) = phase("add xmpp destinations", n, a.concurrency, deadline, |i| {
        let url = endpoint(&base, "api/v1/destinations");
        let (client, user) = (&client, &users[i]);
        let bare = format!("{}{i}@{}", a.user_prefix, a.domain);
        async move {
            let body = json!({"name": "im", "url": format!("xmpp://{bare}")});
            let v = call(client, Method::POST, url?, &user.token, Some(&body)).await?;
            v["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("destination answer without id: {v}"))
        }
    })
    .await?;
    let dest_ids: Vec<String> = dest_ids;

    // Consent (the clients approve) and presence, as the API sees them.
    let t_verify = Instant::now();
    let mut pending: Vec<usize> = (0..n).collect();
    let mut last_report = Instant::now();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "{} of {n} destinations not verified and available before the deadline (e.g. user {})",
                pending.len(),
                pending[0]
            );
        }
        let checks: Vec<(usize, bool)> = futures_util::stream::iter(pending.clone())
            .map(|i| {
                let (client, base, user, dest) = (&client, &base, &users[i], &dest_ids[i]);
                let bare = format!("{}{i}@{}", a.user_prefix, a.domain);
                async move {
                    let ok = async {
                        let d = call(
                            client,
                            Method::GET,
                            endpoint(base, &format!("api/v1/destinations/{dest}"))?,
                            &user.token,
                            None,
                        )
                        .await?;
                        if d["verified"] != json!(true) {
                            return Ok::<bool, anyhow::Error>(false);
                        }
                        let acct = call(
                            client,
                            Method::GET,
                            endpoint(base, "api/v1/account")?,
                            &user.token,
                            None,
                        )
                        .await?;
                        Ok(acct["presence"]["xmpp"][&bare] == json!("available"))
                    }
                    .await
                    .unwrap_or(false);
                    (i, ok)
                }
            })
            .buffer_unordered(a.concurrency.max(1))
            .collect()
            .await;
        pending = checks
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(i, _)| i)
            .collect();
        pending.sort_unstable();
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("  verified and available: {}/{n}", n - pending.len());
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let verify = t_verify.elapsed();
    eprintln!(
        "  verified and available: {n} in {:.2} s",
        verify.as_secs_f64()
    );
    let setup = t_setup.elapsed();

    // Warm-up: one notification to every client.
    let t_warm = Instant::now();
    let r0 = shared.received.load(Ordering::Relaxed);
    let warm_pub = publish_one(
        &client,
        &topic_url,
        &owner.token,
        format!("xmpp {run} warm-up"),
    )
    .await
    .map_err(|e| anyhow!("the warm-up publish failed: {e}"))?;
    while shared.received.load(Ordering::Relaxed) < r0 + n as u64 {
        if t_warm.elapsed() > Duration::from_secs(120) {
            bail!(
                "the warm-up reached {}/{n} clients in 120 s",
                shared.received.load(Ordering::Relaxed) - r0
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let warm = t_warm.elapsed();
    eprintln!(
        "  warm-up: {n} messages in {:.0} ms; setup {:.1} s (+ logins {:.1} s)",
        warm.as_secs_f64() * 1000.0,
        setup.as_secs_f64(),
        login.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The measured run.
    let expected = n * a.notifications;
    eprintln!(
        "xmpp: publishing {} notifications ({expected} messages)",
        a.notifications
    );
    let received0 = shared.received.load(Ordering::Relaxed);
    let disc0 = shared.disconnects.load(Ordering::Relaxed);
    let (s_cpu0, p_cpu0, t_cpu0) = (cpu(server), cpu(prosody), crate::self_cpu_seconds());
    let threads0 = server.and_then(|p| thread_cpu_seconds(p).ok());
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let publisher = {
        let (client, url, token) = (client.clone(), topic_url.clone(), owner.token.clone());
        let (acked, done, run) = (acked.clone(), done.clone(), run.clone());
        let (count, conc) = (a.notifications, a.publish_clients.max(1));
        let rate = a.publish_rate;
        tokio::spawn(async move {
            let results: Vec<Result<Published, String>> = futures_util::stream::iter(0..count)
                .map(|i| {
                    let (client, url, token, acked) = (&client, &url, &token, &acked);
                    let body = format!("xmpp {run} {i}: something happened");
                    async move {
                        if rate > 0.0 {
                            let at = t0 + Duration::from_secs_f64(i as f64 / rate);
                            tokio::time::sleep_until(at.into()).await;
                        }
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
    let mut timed_out = false;
    loop {
        let all_published = done.load(Ordering::Acquire);
        let want = received0 + (acked.load(Ordering::Acquire) * n) as u64;
        if all_published && shared.received.load(Ordering::Relaxed) >= want {
            break;
        }
        if Instant::now() >= end {
            eprintln!("  timed out after {:?}", a.timeout);
            timed_out = true;
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {}/{expected} received after {:.1} s",
                shared.received.load(Ordering::Relaxed) - received0,
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let t_all = t0.elapsed();
    let (s_cpu1, p_cpu1, t_cpu1) = (cpu(server), cpu(prosody), crate::self_cpu_seconds());
    let threads1 = server.and_then(|p| thread_cpu_seconds(p).ok());
    let by_thread: std::collections::BTreeMap<String, f64> = match (threads0, threads1) {
        (Some(t0), Some(t1)) => t1
            .iter()
            .map(|(k, v)| (k.clone(), round3(v - t0.get(k).copied().unwrap_or(0.0))))
            .filter(|(_, v)| *v > 0.0)
            .collect(),
        _ => Default::default(),
    };
    tokio::time::sleep(a.settle).await;
    let results = publisher.await.context("the publisher panicked")?;
    let disconnects = shared.disconnects.load(Ordering::Relaxed) - disc0;
    let logs = disconnect_all(clients).await;

    // Every (client, notification) pair.
    let mut errors = Errors::default();
    let mut published: HashMap<String, (Instant, Instant)> = HashMap::new();
    for r in results {
        match r {
            Ok(p) => {
                published.insert(p.id, (p.sent, p.answered));
            }
            Err(e) => errors.add(e),
        }
    }
    let (mut missing, mut dups, mut unexpected) = (0u64, 0u64, 0u64);
    let mut from_answer = Vec::with_capacity(expected);
    let mut from_send = Vec::with_capacity(expected);
    let mut arrivals = Vec::with_capacity(expected);
    let mut before_answer = 0u64;
    for log in &logs {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for (id, at) in &log.msgs {
            let Some((sent, answered)) = published.get(id) else {
                if *at >= t0 {
                    unexpected += 1;
                }
                continue;
            };
            let c = seen.entry(id.as_str()).or_default();
            *c += 1;
            if *c > 1 {
                dups += 1;
                continue;
            }
            if at < answered {
                before_answer += 1;
            }
            from_answer.push(micros(at.saturating_duration_since(*answered)));
            from_send.push(micros(at.saturating_duration_since(*sent)));
            arrivals.push(*at);
        }
        missing += (published.len() - seen.len()) as u64;
    }
    let got = arrivals.len();
    let (overall, middle, per_sec, _) = rates(t0, &mut arrivals);
    // The warm-up: one publish to every client, nothing else queued.
    let warm_lat = Summary::of(
        logs.iter()
            .filter_map(|l| l.msgs.iter().find(|(id, _)| *id == warm_pub.id))
            .map(|(_, at)| micros(at.saturating_duration_since(warm_pub.answered)))
            .collect(),
    );
    let lat = Summary::of(from_answer);
    let lat_send = Summary::of(from_send);
    let server_cpu = diff(s_cpu0, s_cpu1);
    let prosody_cpu = diff(p_cpu0, p_cpu1);
    let tool_cpu = round3(t_cpu1 - t_cpu0);
    let run_s = t_all.as_secs_f64();
    let records = match a.data_dir.as_ref() {
        Some(d) => sqlite_rows(
            &d.join("tidings.db"),
            "SELECT status, count(*) FROM deliveries GROUP BY status",
        )
        .await
        .map(|rows| {
            rows.into_iter()
                .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.parse::<u64>().ok()?)))
                .collect::<std::collections::BTreeMap<String, u64>>()
        })
        .map(|m| json!(m))
        .unwrap_or_else(|e| json!(format!("{e:#}"))),
        None => Value::Null,
    };
    let subscribe_requests: u32 = logs.iter().map(|l| l.subscribe_requests).sum();

    println!(
        "== xmpp (tidings): {} notifications to {n} online clients through the component = {expected} messages",
        a.notifications
    );
    println!(
        "setup              logins {:.1} s, users and destinations {:.1} s (destinations {:.1} s), verified and available {:.1} s; warm-up {:.0} ms",
        login.as_secs_f64(),
        setup.as_secs_f64() - verify.as_secs_f64(),
        t_dest.as_secs_f64(),
        verify.as_secs_f64(),
        warm.as_secs_f64() * 1000.0
    );
    println!(
        "published          {}/{} acknowledged; errors: {}",
        published.len(),
        a.notifications,
        errors.line()
    );
    println!(
        "received           {got}/{expected} in {run_s:.3} s: {overall:.0}/s (middle 80 %: {middle:.0}/s); missing {missing}, duplicates {dups}, unexpected {unexpected}; client disconnects {disconnects}{}",
        if timed_out { " (TIMED OUT)" } else { "" }
    );
    println!("per second         {per_sec:?}");
    println!("warm-up (1 publish) answered → client  {}", warm_lat.line());
    println!("publish answered → client  {}", lat.line());
    println!("publish sent → client      {}", lat_send.line());
    println!(
        "CPU over the run   server {} s, Prosody {} s, tool {tool_cpu} s ({:.0} % / {:.0} % / {:.0} % of a core)",
        server_cpu.map_or("n/a".into(), |v| format!("{v:.2}")),
        prosody_cpu.map_or("n/a".into(), |v| format!("{v:.2}")),
        server_cpu.unwrap_or(0.0) * 100.0 / run_s,
        prosody_cpu.unwrap_or(0.0) * 100.0 / run_s,
        tool_cpu * 100.0 / run_s
    );
    println!("  server by thread {by_thread:?}");
    println!("server records     delivery records by status {records}");

    Ok(json!({
        "users": n,
        "notifications": a.notifications,
        "published": published.len(),
        "publish_errors": errors.json(),
        "expected": expected,
        "received": got,
        "missing": missing,
        "duplicates": dups,
        "unexpected": unexpected,
        "timed_out": timed_out,
        "client_disconnects": disconnects,
        "subscribe_requests": subscribe_requests,
        "elapsed_s": round3(run_s),
        "per_second": round3(overall),
        "steady_per_second": round3(middle),
        "per_second_buckets": per_sec,
        "publish_rate": a.publish_rate,
        "warmup_latency_from_answer": warm_lat.json(),
        "latency_from_answer": lat.json(),
        "latency_from_send": lat_send.json(),
        "arrived_before_answer": before_answer,
        "server_cpu_run_s": server_cpu,
        "prosody_cpu_run_s": prosody_cpu,
        "tool_cpu_run_s": tool_cpu,
        "server_threads_cpu_s": by_thread,
        "server_cpu_us_per_message": server_cpu.map(|c| round3(c * 1e6 / got.max(1) as f64)),
        "prosody_cpu_us_per_message": prosody_cpu.map(|c| round3(c * 1e6 / got.max(1) as f64)),
        "records": records,
        "setup": {
            "logins_s": round3(login.as_secs_f64()),
            "users_destinations_s": round3(setup.as_secs_f64() - verify.as_secs_f64()),
            "verified_available_s": round3(verify.as_secs_f64()),
            "warmup_ms": round3(warm.as_secs_f64() * 1000.0),
        },
    }))
}

/// Phases 2 and 3: client-to-client routing through one XMPP server.
async fn routing_phase(a: &Args, server: &str, port: u16, pid: Option<u32>) -> Result<Value> {
    let k = a.pairs;
    let per = a.pair_messages;
    let deadline = Instant::now() + a.setup_timeout;
    let jids: Vec<Jid> = (0..2 * k)
        .map(|i| jid(&format!("{}{i}@{}/bench", a.pair_prefix, a.domain)))
        .collect::<Result<_>>()?;
    eprintln!(
        "xmpp: {server} routing: {k} pairs ({}0..{}{}), {per} messages each way",
        a.pair_prefix,
        a.pair_prefix,
        2 * k - 1
    );
    let target = Server {
        host: &a.xmpp_host,
        port,
        password: &a.password,
    };
    let (clients, shared, login) = connect_all(
        &target,
        &jids,
        a.max_unconfirmed,
        None,
        a.connect_concurrency,
        deadline,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A body about the size of a notification's IM.
    let body = "*Disk almost full on db-3*\nThe volume /var/lib/postgresql is at 91 % (threshold 90 %).\n_alerts_";
    let expected = 2 * k * per;
    let received0 = shared.received.load(Ordering::Relaxed);
    let disc0 = shared.disconnects.load(Ordering::Relaxed);
    let (p_cpu0, t_cpu0) = (cpu(pid), crate::self_cpu_seconds());
    let t0 = Instant::now();
    let mut senders = Vec::with_capacity(2 * k);
    for (i, c) in clients.iter().enumerate() {
        let handle = c.handle.clone();
        let to = jid(&format!("{}{}@{}", a.pair_prefix, i ^ 1, a.domain))?;
        senders.push(tokio::spawn(async move {
            for s in 0..per {
                let m = Outbound {
                    to: to.clone(),
                    body: body.to_owned(),
                    id: format!("{i}-{s}"),
                    request_receipt: false,
                    markable: false,
                    from_node: None,
                };
                if handle.send(m).await.is_err() {
                    return s;
                }
            }
            per
        }));
    }
    let end = t0 + a.timeout;
    let mut last_report = Instant::now();
    let mut timed_out = false;
    while shared.received.load(Ordering::Relaxed) < received0 + expected as u64 {
        if Instant::now() >= end {
            timed_out = true;
            eprintln!("  timed out after {:?}", a.timeout);
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {}/{expected} routed after {:.1} s",
                shared.received.load(Ordering::Relaxed) - received0,
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let t_all = t0.elapsed();
    let (p_cpu1, t_cpu1) = (cpu(pid), crate::self_cpu_seconds());
    let mut sent = 0usize;
    for s in senders {
        sent += s.await.unwrap_or(0);
    }
    tokio::time::sleep(a.settle).await;
    let disconnects = shared.disconnects.load(Ordering::Relaxed) - disc0;
    let logs = disconnect_all(clients).await;
    let (mut missing, mut dups) = (0u64, 0u64);
    let mut arrivals = Vec::with_capacity(expected);
    for (i, log) in logs.iter().enumerate() {
        let mut seen = vec![0u32; per];
        let prefix = format!("{}-", i ^ 1);
        for (id, at) in &log.msgs {
            let Some(s) = id
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&s| s < per)
            else {
                continue;
            };
            seen[s] += 1;
            if seen[s] == 1 {
                arrivals.push(*at);
            } else {
                dups += 1;
            }
        }
        missing += seen.iter().filter(|&&c| c == 0).count() as u64;
    }
    let got = arrivals.len();
    let (overall, middle, per_sec, _) = rates(t0, &mut arrivals);
    let run_s = t_all.as_secs_f64();
    let server_cpu = diff(p_cpu0, p_cpu1);
    let tool_cpu = round3(t_cpu1 - t_cpu0);
    println!(
        "== xmpp ({server} routing): {k} client pairs, {per} messages each way = {expected} messages"
    );
    println!(
        "routed             {got}/{expected} (sent {sent}) in {run_s:.3} s: {overall:.0}/s (middle 80 %: {middle:.0}/s); missing {missing}, duplicates {dups}; disconnects {disconnects}{}; logins {:.1} s",
        if timed_out { " (TIMED OUT)" } else { "" },
        login.as_secs_f64()
    );
    println!("per second         {per_sec:?}");
    println!(
        "CPU over the run   {server} {} s ({:.0} % of a core), tool {tool_cpu} s ({:.0} %)",
        server_cpu.map_or("n/a".into(), |v| format!("{v:.2}")),
        server_cpu.unwrap_or(0.0) * 100.0 / run_s,
        tool_cpu * 100.0 / run_s
    );
    Ok(json!({
        "pairs": k,
        "messages_per_client": per,
        "max_unconfirmed": a.max_unconfirmed,
        "expected": expected,
        "sent": sent,
        "received": got,
        "missing": missing,
        "duplicates": dups,
        "timed_out": timed_out,
        "disconnects": disconnects,
        "elapsed_s": round3(run_s),
        "per_second": round3(overall),
        "steady_per_second": round3(middle),
        "per_second_buckets": per_sec,
        "server_cpu_run_s": server_cpu,
        "server_cpu_pct": server_cpu.map(|c| round3(c * 100.0 / run_s)),
        "server_cpu_us_per_message": server_cpu.map(|c| round3(c * 1e6 / got.max(1) as f64)),
        "tool_cpu_run_s": tool_cpu,
        "logins_s": round3(login.as_secs_f64()),
    }))
}

pub async fn run(a: Args) -> Result<Value> {
    if a.users == 0 || a.notifications == 0 || a.pairs == 0 || a.pair_messages == 0 {
        bail!("--users, --notifications, --pairs and --pair-messages must be positive");
    }
    let host_ip: std::net::IpAddr = a
        .xmpp_host
        .parse()
        .map_err(|_| anyhow!("--xmpp-host must be an IP address"))?;
    if !host_ip.is_loopback() {
        bail!("--xmpp-host: only loopback addresses may be targeted");
    }
    crate::raise_nofile(8 * 1024 + 2 * a.users as u64)?;
    let phases: Vec<&str> = a.phases.split(',').map(str::trim).collect();
    for p in &phases {
        if !["tidings", "prosody", "ejabberd", "avatars"].contains(p) {
            bail!("--phases: unknown phase {p:?}");
        }
    }
    let prosody = read_pid(&a.prosody_pid);
    let mut out = json!({"scenario": "xmpp", "prosody_pid_known": prosody.is_some()});
    if phases.contains(&"tidings") {
        out["tidings"] = tidings_phase(&a, prosody).await?;
    }
    if phases.contains(&"prosody") {
        out["prosody"] = routing_phase(&a, "Prosody", a.c2s_port, prosody).await?;
    }
    if phases.contains(&"ejabberd")
        && let Some(port) = a.ejabberd_port
    {
        let pid = read_pid(&a.ejabberd_pid);
        out["ejabberd"] = routing_phase(&a, "ejabberd", port, pid).await?;
    }
    if phases.contains(&"avatars") {
        let args = crate::avatars::Args {
            pairs: a.avatar_pairs,
            messages: a.avatar_messages,
            rounds: a.avatar_rounds,
            timeout: a.timeout,
        };
        let v = crate::avatars::measure(&args).await?;
        println!(
            "== xmpp (avatar bus, in-process): {} pairs × {} tells: {:.0} tells/s (median of {} rounds; min {:.0}, max {:.0}), {:.2} µs CPU per tell",
            args.pairs,
            args.messages,
            v["per_second"].as_f64().unwrap_or(0.0),
            args.rounds,
            v["per_second_min"].as_f64().unwrap_or(0.0),
            v["per_second_max"].as_f64().unwrap_or(0.0),
            v["cpu_us_per_tell"].as_f64().unwrap_or(0.0),
        );
        out["avatars"] = v;
    }
    let bus = out["avatars"]["per_second"].as_f64();
    for (name, key) in [
        ("prosody", "ratio_avatars_to_prosody"),
        ("ejabberd", "ratio_avatars_to_ejabberd"),
    ] {
        if let (Some(b), Some(r)) = (bus, out[name]["per_second"].as_f64())
            && r > 0.0
        {
            out[key] = json!(round3(b / r));
            println!(
                "ratio              avatar bus / {name} routing = {:.1}",
                b / r
            );
        }
    }
    if let (Some(t), Some(r)) = (
        out["tidings"]["per_second"].as_f64(),
        out["prosody"]["per_second"].as_f64(),
    ) && r > 0.0
    {
        out["ratio_tidings_im_to_prosody"] = json!(round3(t / r));
        println!(
            "ratio              tidings IM deliveries / Prosody routing = {:.2}",
            t / r
        );
    }
    Ok(out)
}
