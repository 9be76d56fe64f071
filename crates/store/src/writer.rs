//! The single writer: one thread owns the only read-write connection. Writes arrive as
//! closures over a bounded channel; the thread takes everything pending (up to a batch
//! limit), runs each closure in its own savepoint inside one transaction and commits once.
//! Under load this turns thousands of small writes into one fsync (group commit); when idle
//! a lone write commits at once, so latency stays low.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result, Synchronous};

/// Called after the commit, with the commit's error if it failed.
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// Runs inside the transaction (or, given `None`, reports that no transaction could be
/// begun); says whether it failed, so its savepoint is rolled back.
type Op = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;

enum Msg {
    Op(Op),
    Close(oneshot::Sender<()>),
}

/// Counters of the writer since start.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes (closures) run.
    pub writes: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
}

pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
}

pub(crate) fn open_writer_connection(path: &Path, sync: Synchronous) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite refused WAL mode");
    }
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", false)?;
    conn.pragma_update(None, "temp_store", "memory")?;
    // Checkpoints run on their own thread; this is only the safety net.
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        crate::checkpoint::WRITER_AUTOCHECKPOINT,
    )?;
    Ok(conn)
}

impl WriterHandle {
    pub(crate) fn spawn(conn: Connection, max_batch: usize, capacity: usize) -> Result<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("tidings-store-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1), c))
            .map_err(|e| Error::Join(e.to_string()))?;
        Ok(WriterHandle { tx, counters })
    }

    pub(crate) async fn submit<R, F, C>(&self, f: F, on_commit: C) -> Result<()>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        C: FnOnce(Result<R>) + Send + 'static,
    {
        let op: Op = Box::new(move |conn| {
            let r = match conn {
                Some(conn) => f(conn),
                None => Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("cannot begin a write transaction".into()),
                )),
            };
            let failed = r.is_err();
            let done: Completion = Box::new(move |commit_err| match (r, commit_err) {
                (Ok(v), None) => on_commit(Ok(v)),
                (Ok(_), Some(e)) => on_commit(Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some(format!("commit failed: {e}")),
                )))),
                (Err(e), _) => on_commit(Err(Error::Sqlite(e))),
            });
            (failed, done)
        });
        self.tx.send(Msg::Op(op)).await.map_err(|_| Error::Closed)
    }

    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Msg>, max_batch: usize, counters: Arc<Counters>) {
    let mut batch: Vec<Op> = Vec::with_capacity(max_batch);
    let mut closing: Option<oneshot::Sender<()>> = None;
    loop {
        match rx.blocking_recv() {
            Some(Msg::Op(op)) => batch.push(op),
            Some(Msg::Close(done)) => closing = Some(done),
            None => break,
        }
        while closing.is_none() && batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Op(op)) => batch.push(op),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &mut batch, &counters);
        }
        if let Some(done) = closing.take() {
            rx.close();
            // Anything that slipped in before close() is still committed.
            while let Ok(msg) = rx.try_recv() {
                if let Msg::Op(op) = msg {
                    batch.push(op);
                }
            }
            if !batch.is_empty() {
                commit_batch(&conn, &mut batch, &counters);
            }
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "checkpoint at close failed");
            }
            let _ = done.send(());
            return;
        }
    }
}

fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Op>, counters: &Counters) {
    let n = batch.len();
    let mut completions: Vec<Completion> = Vec::with_capacity(n);
    let began = conn.execute_batch("BEGIN IMMEDIATE");
    if let Err(e) = began {
        let msg = e.to_string();
        tracing::error!(error = %msg, "cannot begin write transaction");
        for op in batch.drain(..) {
            let (_, done) = op(None);
            done(Some(&msg));
        }
        return;
    }
    for op in batch.drain(..) {
        // Prepared once and cached: at tens of thousands of writes a second, parsing these
        // statements each time would cost more than the writes themselves.
        let sp = run_cached(conn, "SAVEPOINT w");
        let (failed, done) = op(Some(conn));
        if sp.is_ok() {
            if failed {
                let _ = run_cached(conn, "ROLLBACK TO w");
            }
            let _ = run_cached(conn, "RELEASE w");
        }
        completions.push(done);
    }
    let commit = conn.execute_batch("COMMIT");
    let err = match &commit {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(error = %e, "group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            Some(e.to_string())
        }
    };
    counters.commits.fetch_add(1, Ordering::Relaxed);
    counters.writes.fetch_add(n as u64, Ordering::Relaxed);
    metrics::counter!("tidings_store_commits_total").increment(1);
    metrics::counter!("tidings_store_writes_total").increment(n as u64);
    metrics::histogram!("tidings_store_batch_size").record(n as f64);
    for done in completions {
        done(err.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreOptions};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        (dir, s)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_writes_share_commits() {
        let (_d, s) = store().await;
        s.write(|c| c.execute_batch("CREATE TABLE t(x INTEGER)"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..2000 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.write(move |c| c.execute("INSERT INTO t VALUES (?1)", [i]))
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        let n: i64 = s
            .read(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 2000);
        let st = s.write_stats();
        assert!(st.commits < st.writes, "no grouping: {st:?}");
    }

    #[tokio::test]
    async fn a_failing_write_rolls_back_only_itself() {
        let (_d, s) = store().await;
        s.write(|c| c.execute_batch("CREATE TABLE t(x INTEGER UNIQUE)"))
            .await
            .unwrap();
        let a = s.write(|c| c.execute("INSERT INTO t VALUES (1)", []));
        let b = s.write(|c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            c.execute("INSERT INTO t VALUES (1)", []) // violates UNIQUE
        });
        let c2 = s.write(|c| c.execute("INSERT INTO t VALUES (3)", []));
        let (a, b, c2) = tokio::join!(a, b, c2);
        assert!(a.is_ok());
        assert!(b.is_err());
        assert!(c2.is_ok());
        let xs: Vec<i64> = s
            .read(|c| {
                let mut st = c.prepare("SELECT x FROM t ORDER BY x")?;
                st.query_map([], |r| r.get(0))?.collect()
            })
            .await
            .unwrap();
        assert_eq!(xs, vec![1, 3]);
    }

    #[tokio::test]
    async fn readers_cannot_write_and_close_flushes() {
        let (_d, s) = store().await;
        s.write(|c| c.execute_batch("CREATE TABLE t(x)"))
            .await
            .unwrap();
        let e = s.read(|c| c.execute("INSERT INTO t VALUES (1)", [])).await;
        assert!(e.is_err());
        let s2 = s.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        s2.submit(
            |c| c.execute("INSERT INTO t VALUES (7)", []),
            move |r| {
                let _ = tx.send(r.is_ok());
            },
        )
        .await
        .unwrap();
        s.close().await;
        assert!(rx.await.unwrap());
        assert!(
            s.write(|c| c.execute("INSERT INTO t VALUES (8)", []))
                .await
                .is_err()
        );
    }
}
