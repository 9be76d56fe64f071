//! A pool of read-only connections. Readers never block the writer (WAL) and run on the
//! blocking thread pool so an expensive query never stalls an async worker.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::{Error, Result};

pub(crate) struct ReadPool {
    conns: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn open(path: &Path, n: usize) -> Result<ReadPool> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.pragma_update(None, "query_only", true)?;
            conns.push(c);
        }
        Ok(ReadPool {
            conns: Arc::new(Mutex::new(conns)),
            permits: Arc::new(Semaphore::new(n)),
        })
    }

    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let conns = self.conns.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .ok_or(Error::Closed)?;
            // Return the connection even if `f` panics, so the pool never shrinks.
            struct Back(Option<Connection>, Arc<Mutex<Vec<Connection>>>);
            impl Drop for Back {
                fn drop(&mut self) {
                    if let Some(c) = self.0.take() {
                        self.1.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                    }
                }
            }
            let back = Back(Some(conn), conns);
            let r = f(back.0.as_ref().expect("connection present"));
            drop(back);
            drop(permit);
            r.map_err(Error::from)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))?
    }
}
