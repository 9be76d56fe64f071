//! What an avatar sees of the runtime while it runs: its id, its silo, the shared services,
//! and the way to set durable reminders and to reach other avatars.

use std::sync::Arc;

use tidings_store::Store;

use super::{Avatar, Error, Runtime};

/// Handed to every [`Avatar`] method of one activation.
pub struct Context<A: Avatar> {
    id: String,
    silo: usize,
    runtime: Runtime<A>,
}

impl<A: Avatar> std::fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("kind", &A::KIND)
            .field("id", &self.id)
            .field("silo", &self.silo)
            .finish()
    }
}

impl<A: Avatar> Context<A> {
    pub(crate) fn new(id: String, silo: usize, runtime: Runtime<A>) -> Self {
        Self { id, silo, runtime }
    }

    /// The avatar's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The avatar's silo, `hash(id) mod silos`.
    pub fn silo(&self) -> usize {
        self.silo
    }

    /// The services shared by every avatar of the runtime.
    pub fn env(&self) -> &Arc<A::Env> {
        self.runtime.env()
    }

    /// The store the runtime keeps reminders in; avatars load and flush their state here.
    pub fn store(&self) -> &Store {
        self.runtime.store()
    }

    /// A handle to the runtime, to tell other avatars of the same kind (and to keep).
    pub fn runtime(&self) -> Runtime<A> {
        self.runtime.clone()
    }

    /// Sets (or replaces: one reminder per name) a durable reminder of this avatar, due at
    /// `due_at_ms` (milliseconds since the Unix epoch). Returns once it is durable.
    pub async fn set_reminder(
        &self,
        name: &str,
        due_at_ms: i64,
        payload: String,
    ) -> Result<(), Error> {
        self.runtime
            .set_reminder(&self.id, name, due_at_ms, payload)
            .await
    }

    /// Removes the reminder `name` of this avatar, if it exists. Returns once durable.
    pub async fn cancel_reminder(&self, name: &str) -> Result<(), Error> {
        self.runtime.cancel_reminder(&self.id, name).await
    }
}
