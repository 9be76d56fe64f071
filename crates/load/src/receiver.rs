//! A local webhook receiver for the delivery scenarios (`deliveries`, `dead-destination`).
//!
//! It runs on a tokio runtime of its own (`--receiver-threads` worker threads named
//! `receiver`), so that the tool's publishing and polling do not delay its answers and its
//! CPU can be told apart. Every `POST` is answered `200` at once and counted by
//! (path, `Idempotency-Key`): the first arrival of each pair is stamped, later ones are
//! duplicates. Requests without the header are counted apart.
//!
//! It can also play a dead receiver on another port: [`Receiver::hang`] accepts TCP
//! connections and reads what is sent but never answers (the server's attempt ends at its
//! own timeout), and [`refused_addr`] is a loopback port nothing listens on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio::io::AsyncReadExt;

/// What the receiver knows of one (path, key) pair.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// First arrival, nanoseconds since [`Tally::base`].
    pub first_ns: u64,
    /// Requests with this pair (1 = no duplicate).
    pub count: u32,
}

#[derive(Default)]
struct Maps {
    seen: HashMap<(Box<str>, Box<str>), Seen>,
    unique_by_path: HashMap<Box<str>, u64>,
}

/// Counts of the webhook receiver, shared with its handler.
pub struct Tally {
    pub base: Instant,
    posts: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    no_key: AtomicU64,
    bytes: AtomicU64,
    maps: Mutex<Maps>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            base: Instant::now(),
            posts: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            no_key: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            maps: Mutex::new(Maps::default()),
        }
    }

    /// Records one request; `true` when the (path, key) pair is new.
    pub fn record(&self, path: &str, key: Option<&str>, bytes: usize, at: Instant) -> bool {
        self.posts.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let Some(key) = key else {
            self.no_key.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let ns = u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(0);
        let mut guard = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let m = &mut *guard;
        let fresh = match m.seen.entry((path.into(), key.into())) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.get_mut().count += 1;
                false
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Seen {
                    first_ns: ns,
                    count: 1,
                });
                *m.unique_by_path.entry(path.into()).or_insert(0) += 1;
                true
            }
        };
        drop(guard);
        if fresh {
            self.unique.fetch_add(1, Ordering::Release);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    /// Every POST so far.
    pub fn posts(&self) -> u64 {
        self.posts.load(Ordering::Relaxed)
    }
    /// Distinct (path, key) pairs so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Acquire)
    }
    /// Requests for a pair seen before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    /// Requests without an `Idempotency-Key`.
    pub fn no_key(&self) -> u64 {
        self.no_key.load(Ordering::Relaxed)
    }
    /// Body bytes received.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Distinct keys that reached `path`.
    pub fn unique_at(&self, path: &str) -> u64 {
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m.unique_by_path.get(path).copied().unwrap_or(0)
    }
    /// What arrived for (path, key).
    pub fn get(&self, path: &str, key: &str) -> Option<Seen> {
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m.seen.get(&(Box::from(path), Box::from(key))).copied()
    }
    /// The instant of a stamp.
    pub fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// Counts of the never-answering listener.
#[derive(Default)]
pub struct HangTally {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections the server has not closed yet.
    pub open: AtomicU64,
    /// Requests seen (`POST /` at the start of a read: a close estimate).
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

/// The receiver: its runtime, address and counts. Stops when dropped.
pub struct Receiver {
    rt: Option<tokio::runtime::Runtime>,
    pub addr: SocketAddr,
    pub tally: Arc<Tally>,
    pub hang: Arc<HangTally>,
}

async fn hook(
    State(t): State<Arc<Tally>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    t.record(uri.path(), key, body.len(), at);
    StatusCode::OK
}

impl Receiver {
    /// Starts the webhook receiver on 127.0.0.1:`port` (0: any free port) with `threads`
    /// worker threads of its own.
    pub fn start(port: u16, threads: usize) -> Result<Receiver> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("receiver")
            .enable_all()
            .build()
            .context("cannot start the receiver's runtime")?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .context("binding the webhook receiver on 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tally = Arc::new(Tally::new());
        let app = Router::new().fallback(hook).with_state(tally.clone());
        rt.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, app).await {
                        eprintln!("receiver: {e}");
                    }
                }
                Err(e) => eprintln!("receiver: {e}"),
            }
        });
        Ok(Receiver {
            rt: Some(rt),
            addr,
            tally,
            hang: Arc::new(HangTally::default()),
        })
    }

    /// Starts a listener (on the receiver's runtime) that accepts connections, reads and
    /// discards what comes, and never answers. Its counts are in [`Receiver::hang`].
    pub fn hang(&self) -> Result<SocketAddr> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .context("binding the hanging listener on 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let h = self.hang.clone();
        let rt = self.rt.as_ref().context("the receiver is stopped")?;
        rt.spawn(async move {
            let l = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return eprintln!("hanging listener: {e}"),
            };
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                h.connections.fetch_add(1, Ordering::Relaxed);
                h.open.fetch_add(1, Ordering::Relaxed);
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    // Until the server gives up and closes (bounded by its timeout).
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if buf[..n].starts_with(b"POST /") {
                            h.requests.fetch_add(1, Ordering::Relaxed);
                        }
                        h.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    h.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Ok(addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Allowed inside an async context, unlike dropping the runtime.
            rt.shutdown_background();
        }
    }
}

/// A loopback address nothing listens on (bound, then closed): connections are refused.
pub fn refused_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(addr)
}

/// A process's memory figures from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub hwm_kib: u64,
}

/// Reads `VmRSS`, `RssAnon`, `RssFile` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the server running?)"))?;
    Ok(parse_status(&text))
}

fn parse_status(text: &str) -> Memory {
    let mut m = Memory::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let kib = v
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        match k {
            "VmRSS" => m.rss_kib = kib,
            "RssAnon" => m.anon_kib = kib,
            "RssFile" => m.file_kib = kib,
            "VmHWM" => m.hwm_kib = kib,
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let m = parse_status(
            "Name:\ttidings\nVmHWM:\t  52000 kB\nVmRSS:\t   50000 kB\nRssAnon:\t   40000 kB\nRssFile:\t    9000 kB\n",
        );
        assert_eq!(
            m,
            Memory {
                rss_kib: 50_000,
                anon_kib: 40_000,
                file_kib: 9_000,
                hwm_kib: 52_000
            }
        );
        assert!(memory(std::process::id()).unwrap().rss_kib > 0);
    }

    #[test]
    fn tally_counts_pairs_and_duplicates() {
        let t = Tally::new();
        let now = Instant::now();
        assert!(t.record("/d/1", Some("a"), 10, now));
        assert!(t.record("/d/2", Some("a"), 10, now));
        assert!(!t.record("/d/1", Some("a"), 10, now));
        assert!(!t.record("/d/1", None, 10, now));
        assert_eq!(
            (t.posts(), t.unique(), t.duplicates(), t.no_key()),
            (4, 2, 1, 1)
        );
        assert_eq!(t.unique_at("/d/1"), 1);
        assert_eq!(t.get("/d/1", "a").unwrap().count, 2);
        assert!(t.get("/d/3", "a").is_none());
        assert_eq!(t.bytes(), 40);
    }

    /// The receiver over real HTTP: counts by path and key, answers 200; the hanging
    /// listener never answers; the refused address refuses.
    #[tokio::test]
    async fn receives_over_http_and_plays_dead() {
        let r = Receiver::start(0, 1).unwrap();
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        for (path, key) in [("/d/0", "n1"), ("/d/1", "n1"), ("/d/0", "n1")] {
            let resp = c
                .post(format!("http://{}{path}", r.addr))
                .header("Idempotency-Key", key)
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        assert_eq!(r.tally.unique(), 2);
        assert_eq!(r.tally.duplicates(), 1);
        assert_eq!(r.tally.unique_at("/d/0"), 1);

        let hang = r.hang().unwrap();
        let resp = c
            .post(format!("http://{hang}/dead"))
            .timeout(Duration::from_millis(300))
            .body("{}")
            .send()
            .await;
        assert!(resp.is_err_and(|e| e.is_timeout()));
        assert_eq!(r.hang.connections.load(Ordering::Relaxed), 1);
        assert_eq!(r.hang.requests.load(Ordering::Relaxed), 1);

        let refused = refused_addr().unwrap();
        let resp = c.post(format!("http://{refused}/x")).send().await;
        assert!(resp.is_err_and(|e| e.is_connect()));
    }
}
