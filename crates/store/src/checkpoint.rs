//! WAL checkpoints off the write path.
//!
//! SQLite checkpoints automatically inside the commit that pushes the WAL over its limit,
//! which stalls that commit (and every write queued behind it) for the whole copy and its
//! fsyncs: tens of milliseconds in which no publish is acknowledged. Instead the writer's
//! automatic checkpoint is set far out as a safety net, and this thread runs PASSIVE
//! checkpoints on its own connection, which never block the writer or readers. The
//! connection writes no rows: it only moves committed pages from the WAL into the database.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::{Error, Result};

/// How often the checkpointer looks at the WAL.
const INTERVAL: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB) below which a checkpoint is not worth it.
const MIN_PAGES: i64 = 256;
/// The writer's own automatic checkpoint, a safety net if this thread falls behind.
pub(crate) const WRITER_AUTOCHECKPOINT: i64 = 16_384;

pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    pub(crate) fn spawn(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(1))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("tidings-store-checkpoint".into())
            .spawn(move || run(conn, flag))
            .map_err(|e| Error::Join(e.to_string()))?;
        Ok(Checkpointer { stop })
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: Connection, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(INTERVAL);
        // (busy, pages in the WAL, pages checkpointed)
        let r: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        match r {
            Ok((_, log, done)) => {
                if log >= MIN_PAGES {
                    metrics::counter!("tidings_store_checkpoints_total").increment(1);
                    metrics::gauge!("tidings_store_wal_pages").set(log as f64);
                    tracing::trace!(log, done, "checkpoint");
                }
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_pages_reach_the_database_file_without_a_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let s = Store::open(&path, StoreOptions::default()).unwrap();
        s.write(|c| c.execute_batch("CREATE TABLE t(x BLOB)"))
            .await
            .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        for _ in 0..200 {
            s.write(|c| c.execute("INSERT INTO t VALUES (zeroblob(16384))", []))
                .await
                .unwrap();
        }
        // 3 MiB went to the WAL; the checkpointer copies it into the database file.
        let mut grown = 0;
        for _ in 0..100 {
            grown = std::fs::metadata(&path).unwrap().len();
            if grown > before + 2 * 1024 * 1024 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(grown > before + 2 * 1024 * 1024, "{before} -> {grown}");
        s.close().await;
    }
}
