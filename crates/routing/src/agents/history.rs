//! The history agent: every delivery is written to the user's history (the `inbox` table),
//! exactly once per (user, notification) however often it is redelivered. It answers the
//! ack when the row is durable.

use tidings_bus::ack::Ack;
use tidings_bus::queue::BoxFuture;
use tidings_store::{Store, now_ms, rusqlite};

use super::{Agent, Delivery};

pub struct HistoryAgent {
    store: Store,
}

impl HistoryAgent {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Agent for HistoryAgent {
    fn name(&self) -> &'static str {
        "history"
    }

    fn deliver<'a>(&'a self, d: &'a Delivery, ack: Ack) -> BoxFuture<'a, ()> {
        let user_id = d.user_id;
        let n = d.notification.clone();
        let subscription = d.subscription.clone();
        Box::pin(async move {
            let r = self
                .store
                .submit(
                    move |c| {
                        let inserted = c
                            .prepare_cached(
                                "INSERT OR IGNORE INTO inbox(user_id, notification_id, source_id, time, priority)
                                 VALUES (?1, ?2, ?3, ?4, ?5)",
                            )?
                            .execute(rusqlite::params![
                                user_id,
                                n.id.as_str(),
                                n.source,
                                n.time * 1000,
                                n.priority.as_number()
                            ])?;
                        if inserted == 1 {
                            c.prepare_cached(
                                "INSERT INTO events(time, kind, user_id, source_id, notification_id, data)
                                 VALUES (?1, 'delivered', ?2, ?3, ?4, json_object('channel', 'history', 'subscription', ?5))",
                            )?
                            .execute(rusqlite::params![
                                now_ms(),
                                user_id,
                                n.source,
                                n.id.as_str(),
                                subscription
                            ])?;
                        }
                        Ok(())
                    },
                    move |r| ack.settle(r),
                )
                .await;
            if let Err(e) = r {
                tracing::error!(user_id, error = %e, "history write not queued");
            }
        })
    }
}
