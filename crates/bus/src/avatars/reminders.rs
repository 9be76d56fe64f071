//! Durable reminders: rows of the `reminders` table, one per (kind, avatar, name).
//!
//! The loop of a runtime finds due rows of its kind and delivers each to its avatar as an
//! [`Envelope::Reminder`]. The row is deleted only after `on_reminder` has returned, and
//! only if it was not set again meanwhile (same `due_at` and `payload`), so a crash between
//! delivery and handling fires the reminder again after restart instead of losing it:
//! at least once, like the rest of tidings. While a reminder is in flight its (id, name)
//! is remembered in memory so the loop does not deliver it twice; see [`Flights`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tidings_store::rusqlite::{Connection, params};
use tidings_store::{Store, now_ms};
use tokio::sync::{Notify, watch};

use super::runtime::{Envelope, Inner, stopped};
use super::{Avatar, Runtime};

/// Due rows read per scan. More are read on the next scan, right away.
const BATCH: usize = 256;
/// The loop re-reads the table at least this often, so a wall-clock jump or a row written
/// by another process (an operator with `sqlite3`) is noticed within a minute.
const MAX_SLEEP_MS: i64 = 60_000;
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(100);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// State shared between the loop, `set_reminder` and the activations completing reminders.
/// Kept apart from the runtime so the loop does not keep the runtime alive while it sleeps.
pub(crate) struct Shared {
    notify: Notify,
    /// When the loop will next look at the table (ms); `i64::MAX` while it is scanning, so
    /// that a reminder set during a scan always wakes it.
    next_wake: AtomicI64,
    flights: Mutex<Flights>,
}

/// Which reminders the loop has handed out. A reminder stays here from delivery until its
/// delete has committed, and then a little longer: a scan that began before that commit
/// may still return the row, and must not deliver it again. So a finished reminder keeps
/// the number of the latest scan begun at its commit, and only scans begun after that see
/// its (id, name) as free again.
#[derive(Default)]
struct Flights {
    /// `None`: in flight. `Some(n)`: deleted; scans up to number `n` may still see the row.
    map: HashMap<(String, String), Option<u64>>,
    /// Number of the latest scan begun.
    scans: u64,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            notify: Notify::new(),
            next_wake: AtomicI64::new(i64::MAX),
            flights: Mutex::new(Flights::default()),
        }
    }

    /// Wakes the loop if a reminder due at `due_at` would otherwise be noticed late.
    pub(crate) fn wake_if_earlier(&self, due_at: i64) {
        if due_at < self.next_wake.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, Flights> {
        // Every critical section is a single map operation: a poisoned lock still guards a
        // consistent map, so recover it.
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Numbers a scan about to begin, and forgets reminders that no scan from this one on
    /// can see any more.
    fn begin_scan(&self) -> u64 {
        let mut f = self.flights();
        f.scans += 1;
        let scan = f.scans;
        f.map
            .retain(|_, done| done.is_none_or(|seen_until| seen_until >= scan));
        scan
    }

    /// Marks a reminder read by scan `scan` in flight; false if it is in flight already,
    /// or if the row that scan read may already be handled and deleted.
    fn start(&self, id: &str, name: &str, scan: u64) -> bool {
        let mut f = self.flights();
        let key = (id.to_owned(), name.to_owned());
        match f.map.get(&key) {
            Some(None) => false,
            Some(Some(seen_until)) if scan <= *seen_until => false,
            _ => {
                f.map.insert(key, None);
                true
            }
        }
    }

    /// The reminder's delete has committed.
    fn finish(&self, id: &str, name: &str) {
        let mut f = self.flights();
        let scans = f.scans;
        if let Some(done) = f.map.get_mut(&(id.to_owned(), name.to_owned())) {
            *done = Some(scans);
        }
    }

    /// The reminder was not delivered; its row is untouched, so any scan may take it.
    fn forget(&self, id: &str, name: &str) {
        self.flights().map.remove(&(id.to_owned(), name.to_owned()));
    }

    #[cfg(test)]
    pub(crate) fn in_flight_len(&self) -> usize {
        self.flights().map.values().filter(|d| d.is_none()).count()
    }
}

/// Inserts or replaces a reminder; returns once durable.
pub(crate) async fn upsert(
    store: &Store,
    kind: &'static str,
    id: &str,
    name: &str,
    due_at: i64,
    payload: String,
) -> tidings_store::Result<()> {
    let (id, name) = (id.to_owned(), name.to_owned());
    store
        .write(move |c| {
            c.prepare_cached(
                "INSERT INTO reminders (kind, avatar_id, name, due_at, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (kind, avatar_id, name) \
                 DO UPDATE SET due_at = excluded.due_at, payload = excluded.payload",
            )?
            .execute(params![kind, id, name, due_at, payload])
            .map(|_| ())
        })
        .await
}

/// Deletes a reminder if it exists; returns once durable.
pub(crate) async fn delete(
    store: &Store,
    kind: &'static str,
    id: &str,
    name: &str,
) -> tidings_store::Result<()> {
    let (id, name) = (id.to_owned(), name.to_owned());
    store
        .write(move |c| {
            c.prepare_cached(
                "DELETE FROM reminders WHERE kind = ?1 AND avatar_id = ?2 AND name = ?3",
            )?
            .execute(params![kind, id, name])
            .map(|_| ())
        })
        .await
}

/// Called by the activation once `on_reminder` has returned (or panicked: a reminder that
/// panics every time must not fire forever). Queues the delete without waiting for the
/// commit, so the avatar goes on with its next message; the reminder leaves the in-flight
/// set once the delete is durable.
pub(crate) async fn complete(
    store: &Store,
    shared: &Arc<Shared>,
    kind: &'static str,
    id: &str,
    name: &str,
    due_at: i64,
    payload: String,
) {
    let (id, name) = (id.to_owned(), name.to_owned());
    let (id2, name2) = (id.clone(), name.clone());
    let shared = shared.clone();
    let queued = store
        .submit(
            move |c| {
                // Matching due_at and payload leaves alone a reminder that on_reminder (or
                // anyone) set again under the same name: that one is a new reminder.
                c.prepare_cached(
                    "DELETE FROM reminders WHERE kind = ?1 AND avatar_id = ?2 AND name = ?3 \
                     AND due_at = ?4 AND payload = ?5",
                )?
                .execute(params![kind, id2, name2, due_at, payload])
            },
            move |res| match res {
                Ok(_) => {
                    shared.finish(&id, &name);
                    // A newer reminder of the same name may be due and was skipped while
                    // this one was in flight.
                    shared.notify.notify_one();
                }
                // Left in flight on purpose: the row fires again after a restart rather
                // than in a tight loop against a failing store now.
                Err(e) => tracing::error!(kind, id, name, error = %e, "could not delete a handled reminder"),
            },
        )
        .await;
    if let Err(e) = queued {
        tracing::error!(kind, error = %e, "could not queue the delete of a handled reminder");
    }
}

struct Due {
    id: String,
    name: String,
    due_at: i64,
    payload: String,
}

/// Due reminders of `kind` (earliest first, at most `BATCH`) and the next due time after
/// `now`.
fn scan(
    c: &Connection,
    kind: &str,
    now: i64,
) -> tidings_store::rusqlite::Result<(Vec<Due>, Option<i64>)> {
    let due = c
        .prepare_cached(
            "SELECT avatar_id, name, due_at, payload FROM reminders \
             WHERE kind = ?1 AND due_at <= ?2 ORDER BY due_at LIMIT ?3",
        )?
        .query_map(params![kind, now, BATCH as i64], |r| {
            Ok(Due {
                id: r.get(0)?,
                name: r.get(1)?,
                due_at: r.get(2)?,
                payload: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let next = c
        .prepare_cached("SELECT MIN(due_at) FROM reminders WHERE kind = ?1 AND due_at > ?2")?
        .query_row(params![kind, now], |r| r.get::<_, Option<i64>>(0))?;
    Ok((due, next))
}

/// The reminder loop of one runtime. Holds the runtime only weakly between scans, so
/// dropping every handle of a runtime also ends its loop.
pub(crate) async fn run<A: Avatar>(
    runtime: Weak<Inner<A>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = ERROR_BACKOFF_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(inner) = runtime.upgrade() else {
            return;
        };
        let rt = Runtime::from_inner(inner);
        shared.next_wake.store(i64::MAX, Ordering::SeqCst);
        let scan_no = shared.begin_scan();
        let now = now_ms();
        let wake_at = match rt.store().read(move |c| scan(c, A::KIND, now)).await {
            Ok((due, next)) => {
                backoff = ERROR_BACKOFF_MIN;
                let full = due.len() >= BATCH;
                let mut delivered = 0usize;
                for d in due {
                    if shared.start(&d.id, &d.name, scan_no) {
                        delivered += 1;
                        // One task per reminder: a full mailbox delays its own avatar's
                        // reminder, not everyone's.
                        tokio::spawn(deliver(rt.clone(), shared.clone(), d));
                    }
                }
                if full && delivered > 0 {
                    now
                } else {
                    next.unwrap_or(i64::MAX)
                }
            }
            Err(e) => {
                tracing::error!(kind = A::KIND, error = %e, "reading due reminders failed");
                let at = now.saturating_add(backoff.as_millis() as i64);
                backoff = backoff.saturating_mul(2).min(ERROR_BACKOFF_MAX);
                at
            }
        };
        drop(rt);
        shared.next_wake.store(wake_at, Ordering::SeqCst);
        let delay = wake_at.saturating_sub(now_ms()).clamp(0, MAX_SLEEP_MS);
        if delay == 0 {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay as u64)) => {}
            _ = shared.notify.notified() => {}
            () = stopped(&mut shutdown) => return,
        }
    }
}

async fn deliver<A: Avatar>(rt: Runtime<A>, shared: Arc<Shared>, d: Due) {
    let env = Envelope::Reminder {
        name: d.name.clone(),
        payload: d.payload,
        due_at: d.due_at,
    };
    if let Err(e) = rt.deliver(&d.id, env).await {
        // Not handed over (the runtime is shutting down): the row is still in the table and
        // fires on the next scan or the next start.
        tracing::debug!(kind = A::KIND, id = d.id, name = d.name, error = %e, "reminder not delivered");
        shared.forget(&d.id, &d.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_begun_before_the_delete_cannot_redeliver() {
        let shared = Shared::new();
        let first = shared.begin_scan();
        assert!(shared.start("a", "r", first));
        assert!(
            !shared.start("a", "r", first),
            "delivered twice while in flight"
        );
        // The delete commits while the next scan is already reading: that scan may still
        // return the row and must skip it.
        let stale = shared.begin_scan();
        shared.finish("a", "r");
        assert!(!shared.start("a", "r", stale));
        assert_eq!(shared.in_flight_len(), 0);
        // A scan begun after the commit sees the table as it is: a row there now is a new
        // reminder of the same name.
        let fresh = shared.begin_scan();
        assert!(shared.start("a", "r", fresh));
        // A reminder that was never handed over is free at once.
        shared.forget("a", "r");
        assert!(shared.start("a", "r", fresh));
    }
}
