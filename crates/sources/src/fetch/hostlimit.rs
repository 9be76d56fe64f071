//! At most N requests in flight per host, so thousands of feeds on one site do not hammer
//! it (and do not get us banned).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One semaphore per host, created on first use and forgotten once nobody holds or waits
/// for it: the map holds `Weak`s, and a permit or a waiter keeps the `Arc` alive, so two
/// requests for one host always share the same semaphore.
pub(crate) struct HostLimiter {
    per_host: usize,
    hosts: Mutex<Hosts>,
}

struct Hosts {
    map: HashMap<String, Weak<Semaphore>>,
    /// Sweep dead entries when the map grows past this; doubling keeps sweeps amortized O(1).
    sweep_at: usize,
}

const MIN_SWEEP: usize = 64;

impl HostLimiter {
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            hosts: Mutex::new(Hosts {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Waits for a slot for `host`; the slot is released when the permit drops.
    pub async fn acquire(&self, host: &str) -> OwnedSemaphorePermit {
        loop {
            let semaphore = self.semaphore(host);
            // `acquire_owned` fails only on a closed semaphore, and these are never closed;
            // loop rather than unwrap all the same.
            if let Ok(permit) = semaphore.acquire_owned().await {
                return permit;
            }
        }
    }

    fn semaphore(&self, host: &str) -> Arc<Semaphore> {
        // A poisoned lock only means another request panicked mid-insert; the map is still
        // a valid cache.
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = hosts.map.get(host).and_then(Weak::upgrade) {
            return existing;
        }
        let semaphore = Arc::new(Semaphore::new(self.per_host));
        hosts
            .map
            .insert(host.to_string(), Arc::downgrade(&semaphore));
        if hosts.map.len() > hosts.sweep_at {
            hosts.map.retain(|_, weak| weak.strong_count() > 0);
            hosts.sweep_at = (hosts.map.len() * 2).max(MIN_SWEEP);
        }
        semaphore
    }

    #[cfg(test)]
    fn tracked_hosts(&self) -> usize {
        self.hosts.lock().map(|h| h.map.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_per_host_and_not_across_hosts() {
        let limiter = HostLimiter::new(2);
        let a1 = limiter.acquire("a.example").await;
        let _a2 = limiter.acquire("a.example").await;
        // A third slot for a.example must wait…
        let third = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            limiter.acquire("a.example"),
        )
        .await;
        assert!(third.is_err(), "third permit for one host was granted");
        // …while another host is unaffected.
        let _b = limiter.acquire("b.example").await;
        drop(a1);
        let _a3 = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            limiter.acquire("a.example"),
        )
        .await
        .expect("slot freed by drop");
    }

    #[tokio::test]
    async fn forgets_idle_hosts() {
        let limiter = HostLimiter::new(1);
        for i in 0..1000 {
            let _p = limiter.acquire(&format!("h{i}.example")).await;
        }
        assert!(
            limiter.tracked_hosts() <= 2 * MIN_SWEEP + 1,
            "map kept {} idle hosts",
            limiter.tracked_hosts()
        );
    }
}
