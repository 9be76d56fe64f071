//! The source avatar: one per source (a topic now; feeds, pages and mailboxes later). It owns
//! the source's subscribers and their filters, writes each notification's content once, and
//! sends one delivery per matching subscriber to that user's avatar.
//!
//! It answers the ingest item's ack through shares: its own (the notification row is
//! durable) and one per subscriber (that user's agents made the delivery durable). The item
//! leaves the queue only when all of them are answered.

use std::collections::HashMap;
use std::sync::Arc;

use tidings_bus::ack::Ack;
use tidings_bus::avatars::{Avatar, BoxError, Context};
use tidings_core::ids::user_avatar;
use tidings_core::{Filter, Notification};
use tidings_store::{now_ms, rusqlite};
use tokio::sync::oneshot;

use crate::ingest::Ingest;
use crate::services::Services;
use crate::user::UserMsg;

#[derive(Debug, Clone)]
struct Subscriber {
    subscription: String,
    filter: Filter,
}

/// Messages to a source avatar.
#[derive(Debug)]
pub enum SourceMsg {
    Ingest {
        ingest: Ingest,
        ack: Ack,
    },
    /// Adds or replaces a user's subscription (idempotent).
    Subscribe {
        user_id: i64,
        subscription: String,
        filter: Filter,
    },
    Unsubscribe {
        user_id: i64,
    },
    /// How many users are subscribed (status pages, tests).
    CountSubscribers {
        reply: oneshot::Sender<usize>,
    },
}

pub struct SourceAvatar {
    source_id: String,
    topic: Option<String>,
    subscribers: HashMap<i64, Subscriber>,
}

impl Avatar for SourceAvatar {
    type Msg = SourceMsg;
    type Env = Services;
    const KIND: &'static str = "source";

    async fn activate(id: &str, cx: &Context<Self>) -> Result<Self, BoxError> {
        let source_id = id
            .strip_prefix("source:")
            .ok_or_else(|| format!("{id:?} is not a source avatar id"))?
            .to_owned();
        let topic = source_id.strip_prefix("topic:").map(str::to_owned);
        let sid = source_id.clone();
        let rows: Vec<(i64, String, String)> = cx
            .env()
            .store
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT user_id, id, filter FROM subscriptions WHERE source_id = ?1",
                )?;
                st.query_map([sid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .await?;
        let mut subscribers = HashMap::with_capacity(rows.len());
        for (user_id, subscription, filter) in rows {
            let filter = serde_json::from_str(&filter).unwrap_or_else(|e| {
                tracing::error!(%subscription, error = %e, "unreadable filter; delivering unfiltered");
                Filter::default()
            });
            subscribers.insert(
                user_id,
                Subscriber {
                    subscription,
                    filter,
                },
            );
        }
        Ok(SourceAvatar {
            source_id,
            topic,
            subscribers,
        })
    }

    async fn handle(&mut self, msg: SourceMsg, cx: &Context<Self>) {
        match msg {
            SourceMsg::Ingest { ingest, ack } => match ingest {
                Ingest::Publish { notification } => self.publish(notification, ack, cx).await,
            },
            SourceMsg::Subscribe {
                user_id,
                subscription,
                filter,
            } => {
                self.subscribers.insert(
                    user_id,
                    Subscriber {
                        subscription,
                        filter,
                    },
                );
            }
            SourceMsg::Unsubscribe { user_id } => {
                self.subscribers.remove(&user_id);
            }
            SourceMsg::CountSubscribers { reply } => {
                let _ = reply.send(self.subscribers.len());
            }
        }
    }

    async fn on_reminder(&mut self, name: String, _payload: String, _cx: &Context<Self>) {
        tracing::debug!(source = %self.source_id, %name, "source reminder with no use yet");
    }

    async fn passivate(&mut self, _cx: &Context<Self>) {
        // Every change is written through as it happens; nothing is held back.
    }
}

impl SourceAvatar {
    async fn publish(&mut self, n: Notification, ack: Ack, cx: &Context<Self>) {
        let env = cx.env();
        let n = Arc::new(n);
        let recipients: Vec<(i64, String)> = self
            .subscribers
            .iter()
            .filter(|(_, s)| s.filter.matches(&n))
            .map(|(u, s)| (*u, s.subscription.clone()))
            .collect();

        // The content, once, and the events of publishing and routing it.
        let own = ack.share();
        let row = n.clone();
        let count = recipients.len();
        let body = match serde_json::to_string(&*n) {
            Ok(b) => b,
            Err(e) => {
                own.nack(format!("cannot encode notification: {e}"));
                return;
            }
        };
        let queued = env
            .store
            .submit(
                move |c| {
                    let new = c
                        .prepare_cached(
                            "INSERT OR IGNORE INTO notifications(id, source_id, time, priority, body)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(rusqlite::params![
                            row.id.as_str(),
                            row.source,
                            row.time * 1000,
                            row.priority.as_number(),
                            body
                        ])?;
                    if new == 1 {
                        let mut ev = c.prepare_cached(
                            "INSERT INTO events(time, kind, source_id, notification_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?;
                        let now = now_ms();
                        ev.execute(rusqlite::params![
                            now,
                            "published",
                            row.source,
                            row.id.as_str(),
                            serde_json::json!({"author": row.author, "priority": row.priority}).to_string()
                        ])?;
                        ev.execute(rusqlite::params![
                            now,
                            "routed",
                            row.source,
                            row.id.as_str(),
                            serde_json::json!({"recipients": count}).to_string()
                        ])?;
                    }
                    Ok(())
                },
                move |r| own.settle(r),
            )
            .await;
        if let Err(e) = queued {
            tracing::error!(source = %self.source_id, error = %e, "notification not stored");
        }

        if let Some(topic) = &self.topic {
            env.live.push_topic(topic, &n);
        }
        metrics::counter!("tidings_routed_total").increment(recipients.len() as u64);
        for (user_id, subscription) in recipients {
            let msg = UserMsg::Deliver {
                notification: n.clone(),
                subscription: Some(subscription),
                ack: ack.share(),
            };
            if let Err(e) = env.users().tell(&user_avatar(user_id), msg).await {
                // The share went down with the message: the item will be redelivered.
                tracing::warn!(user_id, error = %e, "delivery not handed to the user avatar");
            }
        }
        ack.ack();
    }
}
