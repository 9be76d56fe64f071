//! The embedded store: SQLite in WAL mode in the data directory.
//!
//! Layout:
//! - [`writer`]: the single writer thread. Every write in the process is a closure sent to it;
//!   it runs all pending closures in one transaction (each in its own savepoint, so one
//!   failing write does not undo the others) and commits once: many writes, one fsync.
//! - [`read`]: a small pool of read-only connections used from `spawn_blocking`.
//! - [`migrations`]: the schema, applied in order by `PRAGMA user_version`.
//! - [`secretbox`]: sealing secrets at rest with a key kept in the data dir.
//! - `checkpoint`: WAL checkpoints on a thread of their own, so they never stall a commit.
//!
//! Nothing else in the process opens the database for writing. Domain queries live with the
//! crate that owns the data; they call [`Store::write`] / [`Store::read`] with plain SQL.

mod checkpoint;
mod error;
mod migrations;
mod read;
pub mod secretbox;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Error, Result};
pub use rusqlite;
pub use secretbox::{SecretBox, SecretError};
pub use writer::WriteStats;

/// How hard SQLite syncs on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync the WAL on every commit: a commit survives power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: a commit survives a process crash, not power loss.
    Normal,
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub synchronous: Synchronous,
    /// Upper bound on writes grouped into one transaction.
    pub max_batch: usize,
    /// Capacity of the writer's queue; callers wait when it is full.
    pub queue_capacity: usize,
    /// Number of read-only connections.
    pub readers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            max_batch: 4096,
            queue_capacity: 65_536,
            readers: 4,
        }
    }
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: writer::WriterHandle,
    readers: read::ReadPool,
    checkpointer: checkpoint::Checkpointer,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the
    /// writer thread.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store> {
        let conn = writer::open_writer_connection(path, opts.synchronous)?;
        migrations::apply(&conn)?;
        let writer = writer::WriterHandle::spawn(conn, opts.max_batch, opts.queue_capacity)?;
        let readers = read::ReadPool::open(path, opts.readers.max(1))?;
        let checkpointer = checkpoint::Checkpointer::spawn(path)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer,
                readers,
                checkpointer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` inside the next group-commit transaction and waits until that transaction is
    /// durable. An error from `f` rolls back only `f`'s own changes.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Queues `f` for the next group commit and returns as soon as it is queued (waiting only
    /// while the writer's queue is full). `on_commit` runs on the writer thread once the
    /// transaction is durable (or failed): keep it short and non-blocking.
    pub async fn submit<R, F, C>(&self, f: F, on_commit: C) -> Result<()>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
        C: FnOnce(Result<R>) + Send + 'static,
    {
        self.inner.writer.submit(f, on_commit).await
    }

    /// Runs `f` on a read-only connection from the pool, off the async threads.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        self.inner.readers.read(f).await
    }

    /// Counters of the writer (batches, writes), for metrics and tests.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.writer.stats()
    }

    /// Waits until every write queued before this call is committed, then stops the writer.
    /// Later writes fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.inner.checkpointer.stop();
        self.inner.writer.close().await;
    }
}

/// Milliseconds since the Unix epoch: the one time format stored in the database.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
