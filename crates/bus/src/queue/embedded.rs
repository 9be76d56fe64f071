//! The ingest queue in the embedded SQLite store, and its dispatcher.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tidings_store::{Store, now_ms, rusqlite};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::{BoxFuture, Error, Handler, IngestQueue, Item, Result};
use crate::ack::Ack;

/// Tuning of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Items handed out and not yet answered, at most. Bounds memory.
    pub max_in_flight: usize,
    /// Items read from the store per read.
    pub batch: usize,
    /// Deliveries before an item goes to the dead-letter table.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long shutdown waits for in-flight items before leaving them for the next start.
    pub drain_timeout: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 8192,
            batch: 512,
            max_attempts: 10,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The ingest queue over the embedded store.
#[derive(Clone)]
pub struct EmbeddedQueue {
    store: Store,
    appended: Arc<Notify>,
}

impl EmbeddedQueue {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            appended: Arc::new(Notify::new()),
        }
    }

    /// Number of items waiting or in flight (for readiness and metrics).
    pub async fn depth(&self) -> Result<i64> {
        Ok(self
            .store
            .read(|c| c.query_row("SELECT count(*) FROM ingest_queue", [], |r| r.get(0)))
            .await?)
    }

    /// Runs the dispatcher until `shutdown` turns true, then drains in-flight items for at
    /// most `drain_timeout`. Unanswered items stay queued for the next start.
    pub async fn run_dispatcher(
        self,
        handler: Handler,
        cfg: DispatcherConfig,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let (answers_tx, mut answers) = mpsc::unbounded_channel::<(Item, Result<(), String>)>();
        let mut last_seq: i64 = 0;
        let mut in_flight: HashSet<i64> = HashSet::new();
        // Items waiting for a retry, by due time (then seq, to keep the key unique).
        let mut retries: BTreeMap<(Instant, i64), Item> = BTreeMap::new();
        let mut more_in_store = true;

        loop {
            if *shutdown.borrow() {
                break;
            }
            // Hand out due retries first, then new items while there is room.
            let now = Instant::now();
            while let Some(entry) = retries.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let item = entry.remove();
                dispatch(&handler, item, &answers_tx, &mut in_flight).await;
            }
            if more_in_store && in_flight.len() < cfg.max_in_flight {
                let room = (cfg.max_in_flight - in_flight.len()).min(cfg.batch);
                let items = self.read_after(last_seq, room).await?;
                more_in_store = items.len() == room;
                for item in items {
                    last_seq = item.seq;
                    dispatch(&handler, item, &answers_tx, &mut in_flight).await;
                }
                if more_in_store && in_flight.len() < cfg.max_in_flight {
                    continue;
                }
            }
            let next_retry = retries.keys().next().map(|k| k.0);
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.appended.notified() => more_in_store = true,
                Some((item, outcome)) = answers.recv() => {
                    self.settle(item, outcome, &cfg, &mut in_flight, &mut retries).await;
                    // Settle everything else already answered in one go.
                    while let Ok((item, outcome)) = answers.try_recv() {
                        self.settle(item, outcome, &cfg, &mut in_flight, &mut retries).await;
                    }
                    more_in_store = true;
                }
                _ = sleep_until_opt(next_retry) => {}
            }
        }

        // Drain: wait for answers to what is in flight; what is not answered stays queued.
        let deadline = Instant::now() + cfg.drain_timeout;
        while !in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some((item, outcome))) => {
                    // No retries during shutdown: a failed item is retried after restart.
                    let outcome = outcome.map_err(|e| format!("{e} (at shutdown)"));
                    let mut no_retries = BTreeMap::new();
                    self.settle(item, outcome, &cfg, &mut in_flight, &mut no_retries)
                        .await;
                }
                _ => break,
            }
        }
        if !in_flight.is_empty() {
            tracing::warn!(
                items = in_flight.len(),
                "shutdown left items unanswered; they will be redelivered at the next start"
            );
        }
        Ok(())
    }

    async fn read_after(&self, after: i64, limit: usize) -> Result<Vec<Item>> {
        Ok(self
            .store
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT seq, target, payload, attempts FROM ingest_queue
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                st.query_map(rusqlite::params![after, limit as i64], |r| {
                    Ok(Item {
                        seq: r.get(0)?,
                        target: r.get(1)?,
                        payload: r.get(2)?,
                        attempts: r.get::<_, i64>(3)? as u32,
                    })
                })?
                .collect()
            })
            .await?)
    }

    async fn settle(
        &self,
        mut item: Item,
        outcome: Result<(), String>,
        cfg: &DispatcherConfig,
        in_flight: &mut HashSet<i64>,
        retries: &mut BTreeMap<(Instant, i64), Item>,
    ) {
        in_flight.remove(&item.seq);
        let seq = item.seq;
        match outcome {
            Ok(()) => {
                metrics::counter!("tidings_queue_acked_total").increment(1);
                let r = self
                    .store
                    .submit(
                        move |c| {
                            c.prepare_cached("DELETE FROM ingest_queue WHERE seq = ?1")?
                                .execute([seq])
                        },
                        move |r| {
                            if let Err(e) = r {
                                tracing::error!(seq, error = %e, "cannot delete acked item; it will be redelivered");
                            }
                        },
                    )
                    .await;
                if let Err(e) = r {
                    tracing::error!(seq, error = %e, "cannot delete acked item");
                }
            }
            Err(reason) => {
                metrics::counter!("tidings_queue_nacked_total").increment(1);
                item.attempts += 1;
                let attempts = item.attempts;
                if attempts >= cfg.max_attempts {
                    tracing::error!(seq, target = %item.target, attempts, %reason, "item dead-lettered");
                    metrics::counter!("tidings_queue_dead_lettered_total").increment(1);
                    let (target, payload) = (item.target.clone(), item.payload.clone());
                    let r = self
                        .store
                        .write(move |c| {
                            c.execute(
                                "INSERT OR REPLACE INTO dead_letters(seq, target, payload, error, attempts, at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                rusqlite::params![seq, target, payload, reason, attempts, now_ms()],
                            )?;
                            c.execute("DELETE FROM ingest_queue WHERE seq = ?1", [seq])?;
                            c.execute(
                                "INSERT INTO events(time, kind, source_id, data) VALUES (?1, 'dead_lettered', ?2, json_object('seq', ?3, 'error', ?4))",
                                rusqlite::params![now_ms(), target, seq, reason],
                            )?;
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::error!(seq, error = %e, "cannot dead-letter item");
                    }
                    return;
                }
                tracing::warn!(seq, target = %item.target, attempts, %reason, "item will be redelivered");
                let r = self
                    .store
                    .submit(
                        move |c| {
                            c.prepare_cached(
                                "UPDATE ingest_queue SET attempts = ?2 WHERE seq = ?1",
                            )?
                            .execute([seq, attempts as i64])
                        },
                        |_| {},
                    )
                    .await;
                if let Err(e) = r {
                    tracing::error!(seq, error = %e, "cannot count delivery attempt");
                }
                let delay = backoff(cfg, attempts);
                retries.insert((Instant::now() + delay, seq), item);
            }
        }
    }
}

fn backoff(cfg: &DispatcherConfig, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    cfg.retry_base.saturating_mul(factor).min(cfg.retry_max)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn dispatch(
    handler: &Handler,
    item: Item,
    answers: &mpsc::UnboundedSender<(Item, Result<(), String>)>,
    in_flight: &mut HashSet<i64>,
) {
    in_flight.insert(item.seq);
    metrics::counter!("tidings_queue_dispatched_total").increment(1);
    let answers = answers.clone();
    let copy = item.clone();
    let ack = Ack::new(move |outcome| {
        let _ = answers.send((copy, outcome));
    });
    handler(item, ack).await;
}

impl IngestQueue for EmbeddedQueue {
    fn append(&self, target: String, payload: String) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move {
            let seq = self
                .store
                .write(move |c| {
                    c.prepare_cached(
                        "INSERT INTO ingest_queue(target, payload, enqueued_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(rusqlite::params![target, payload, now_ms()])?;
                    Ok(c.last_insert_rowid())
                })
                .await
                .map_err(|e| match e {
                    tidings_store::Error::Closed => Error::Closed,
                    e => Error::Store(e),
                })?;
            metrics::counter!("tidings_queue_appended_total").increment(1);
            self.appended.notify_one();
            Ok(seq)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tidings_store::StoreOptions;

    fn open(dir: &std::path::Path) -> (Store, EmbeddedQueue) {
        let s = Store::open(&dir.join("q.db"), StoreOptions::default()).unwrap();
        let q = EmbeddedQueue::new(s.clone());
        (s, q)
    }

    fn fast() -> DispatcherConfig {
        DispatcherConfig {
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(40),
            max_attempts: 3,
            drain_timeout: Duration::from_millis(500),
            ..Default::default()
        }
    }

    async fn wait_for(mut f: impl FnMut() -> bool) {
        for _ in 0..400 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 4 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_in_order_and_deletes_acked_items() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, q) = open(dir.path());
        for i in 0..100 {
            q.append("a".into(), format!("{i}")).await.unwrap();
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let handler: Handler = Arc::new(move |item: Item, ack: Ack| {
            s2.lock()
                .unwrap()
                .push(item.payload.parse::<i32>().unwrap());
            Box::pin(async move { ack.ack() })
        });
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(q.clone().run_dispatcher(handler, fast(), stop));
        q.append("a".into(), "100".into()).await.unwrap();
        wait_for(|| seen.lock().unwrap().len() == 101).await;
        assert_eq!(*seen.lock().unwrap(), (0..=100).collect::<Vec<_>>());
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        // Deletes are queued behind the acks; one more write waits for them (FIFO writer).
        _s.write(|_| Ok(())).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nacked_items_are_redelivered_then_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let (s, q) = open(dir.path());
        q.append("a".into(), "flaky".into()).await.unwrap();
        q.append("a".into(), "poison".into()).await.unwrap();
        let tries = Arc::new(Mutex::new(Vec::new()));
        let t2 = tries.clone();
        let handler: Handler = Arc::new(move |item: Item, ack: Ack| {
            t2.lock()
                .unwrap()
                .push((item.payload.clone(), item.attempts));
            Box::pin(async move {
                if item.payload == "flaky" && item.attempts == 0 {
                    drop(ack); // as a panicking handler would
                } else if item.payload == "poison" {
                    ack.nack("always fails");
                } else {
                    ack.ack();
                }
            })
        });
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(q.clone().run_dispatcher(handler, fast(), stop));
        let q2 = q.clone();
        for _ in 0..400 {
            if q2.depth().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        let tries = tries.lock().unwrap().clone();
        assert_eq!(
            tries.iter().filter(|t| t.0 == "flaky").count(),
            2,
            "{tries:?}"
        );
        assert_eq!(tries.iter().filter(|t| t.0 == "poison").count(), 3);
        let dead: (String, i64) = s
            .read(|c| {
                c.query_row("SELECT payload, attempts FROM dead_letters", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .await
            .unwrap();
        assert_eq!(dead, ("poison".to_string(), 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_items_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, q) = open(dir.path());
            q.append("a".into(), "kept".into()).await.unwrap();
            let handler: Handler = Arc::new(|_item: Item, ack: Ack| {
                // Hold the ack forever, as a process killed mid-work would.
                std::mem::forget(ack);
                Box::pin(async {})
            });
            let (stop_tx, stop) = watch::channel(false);
            let mut cfg = fast();
            cfg.drain_timeout = Duration::from_millis(50);
            let task = tokio::spawn(q.clone().run_dispatcher(handler, cfg, stop));
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop_tx.send(true).unwrap();
            task.await.unwrap().unwrap();
            s.close().await;
        }
        let (_s, q) = open(dir.path());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = got.clone();
        let handler: Handler = Arc::new(move |item: Item, ack: Ack| {
            g2.lock().unwrap().push(item.payload);
            Box::pin(async move { ack.ack() })
        });
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(q.clone().run_dispatcher(handler, fast(), stop));
        wait_for(|| got.lock().unwrap().len() == 1).await;
        assert_eq!(got.lock().unwrap()[0], "kept");
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }
}
