//! The id → activation map. It is what makes "at most one activation per id" hold: a slot is
//! inserted (and its task spawned) under the shard lock, and removed under the same lock by
//! the task itself once it has fully passivated. While it passivates the slot says so, and
//! senders wait for it to finish instead of starting a second activation beside it.
//!
//! Sharded by silo so that tells to different avatars rarely contend on one lock. The locks
//! are `std` mutexes held only for a map operation, never across an await.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};

pub(crate) enum Slot<M> {
    /// Activating or active: messages go to `tx`.
    Active {
        tx: mpsc::Sender<M>,
        generation: u64,
        done: watch::Receiver<bool>,
    },
    /// The mailbox is closed and the activation is finishing; `done` turns true once the
    /// slot is gone and a new activation may start.
    Passivating {
        generation: u64,
        done: watch::Receiver<bool>,
    },
}

impl<M> Slot<M> {
    pub(crate) fn generation(&self) -> u64 {
        match self {
            Slot::Active { generation, .. } | Slot::Passivating { generation, .. } => *generation,
        }
    }

    pub(crate) fn done(&self) -> &watch::Receiver<bool> {
        match self {
            Slot::Active { done, .. } | Slot::Passivating { done, .. } => done,
        }
    }
}

pub(crate) type Shard<M> = HashMap<String, Slot<M>>;

pub(crate) struct Registry<M> {
    shards: Vec<Mutex<Shard<M>>>,
}

impl<M> Registry<M> {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    /// Locks the shard of `silo`. A poisoned lock is recovered: every critical section
    /// leaves the map consistent (single insert/replace/remove), so a panic elsewhere while
    /// holding it cannot have left it half-updated.
    pub(crate) fn lock(&self, silo: usize) -> MutexGuard<'_, Shard<M>> {
        let shard = &self.shards[silo % self.shards.len()];
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Completion signals of every registered activation.
    pub(crate) fn all_done(&self) -> Vec<watch::Receiver<bool>> {
        (0..self.shards.len())
            .flat_map(|i| {
                self.lock(i)
                    .values()
                    .map(|slot| slot.done().clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Removes the slot of `id` if it still belongs to activation `generation`.
    pub(crate) fn remove_if(&self, silo: usize, id: &str, generation: u64) -> bool {
        let mut shard = self.lock(silo);
        if shard.get(id).is_some_and(|s| s.generation() == generation) {
            shard.remove(id);
            true
        } else {
            false
        }
    }
}

/// FNV-1a, 64 bit: stable across processes, releases and platforms, which `silo_of` needs
/// (nodes of a cluster must agree on it), and good enough to spread ids.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
