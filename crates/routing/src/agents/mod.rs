//! Delivery agents: each takes a delivery from a user avatar and gets it to one channel.
//!
//! An agent must not block the avatar: it queues its own work and answers the [`Ack`] once
//! the delivery is durable on its side (written to history, queued in its own outbox) or,
//! for best-effort channels like the live stream, at once. The durable ingest item is
//! deleted only when every agent has answered, so a crash never loses a delivery.
//!
//! To add a channel: a module here with a type implementing [`Agent`], and one line in
//! [`default_agents`].

pub mod history;
pub mod live;
pub mod outbox;

use std::sync::Arc;

use tidings_bus::ack::Ack;
use tidings_bus::queue::BoxFuture;
use tidings_core::Notification;

use crate::services::Services;

/// One notification for one user.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub user_id: i64,
    pub notification: Arc<Notification>,
    /// The subscription that matched, if it came through one.
    pub subscription: Option<String>,
    /// The user's destinations chosen for it, each with the reason (for the outbox agent).
    pub targets: Vec<crate::destinations::Target>,
}

/// A delivery channel.
pub trait Agent: Send + Sync + 'static {
    /// Short name, used in delivery records, events and metrics.
    fn name(&self) -> &'static str;
    /// Takes a delivery. Returns once the agent has accepted it (waiting only on the agent's
    /// own bounded queue); answers `ack` when the delivery is durable on its side.
    fn deliver<'a>(&'a self, d: &'a Delivery, ack: Ack) -> BoxFuture<'a, ()>;
}

/// The agents every user's deliveries go through.
pub fn default_agents(services: &Services) -> Vec<Arc<dyn Agent>> {
    vec![
        Arc::new(history::HistoryAgent::new(services.store.clone())),
        Arc::new(live::LiveAgent::new(services.live.clone())),
        Arc::new(outbox::OutboxAgent::new(services.outbox.clone())),
    ]
}
