//! The live agent: pushes deliveries to the user's open streams (SSE, WebSocket) and to the
//! topic streams of ntfy-style subscribers. Best effort by nature: a stream that is not open
//! misses nothing, because it resumes from history (`Last-Event-ID`, `since=`).
//!
//! The hub also turns open streams into presence: the first stream a user opens reports
//! "online (web)" to their avatar, closing the last reports "offline".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tidings_bus::ack::Ack;
use tidings_bus::queue::BoxFuture;
use tidings_core::Notification;
use tokio::sync::{broadcast, mpsc};

use super::{Agent, Delivery};

/// Per-stream buffer; a stream that falls further behind is told to resume from history.
const STREAM_BUFFER: usize = 1024;

/// A presence change caused by streams opening and closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPresence {
    pub user_id: i64,
    pub online: bool,
}

struct UserStreams {
    tx: broadcast::Sender<Arc<Notification>>,
    open: usize,
}

/// Fan-out point for live streams.
pub struct LiveHub {
    users: Mutex<HashMap<i64, UserStreams>>,
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<Notification>>>>,
    presence: mpsc::UnboundedSender<WebPresence>,
}

/// Held by an open user stream; dropping it closes the stream's presence.
pub struct StreamGuard {
    hub: Arc<LiveHub>,
    user_id: i64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut users = self.hub.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = users.get_mut(&self.user_id) {
            s.open = s.open.saturating_sub(1);
            if s.open == 0 {
                users.remove(&self.user_id);
                let _ = self.hub.presence.send(WebPresence {
                    user_id: self.user_id,
                    online: false,
                });
            }
        }
        metrics::gauge!("tidings_live_streams").decrement(1.0);
    }
}

impl LiveHub {
    /// A hub and the receiving end of its presence changes.
    pub fn new() -> (Arc<LiveHub>, mpsc::UnboundedReceiver<WebPresence>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(LiveHub {
                users: Mutex::new(HashMap::new()),
                topics: Mutex::new(HashMap::new()),
                presence: tx,
            }),
            rx,
        )
    }

    /// Opens a stream of `user_id`'s deliveries.
    pub fn open_user(
        self: &Arc<Self>,
        user_id: i64,
    ) -> (broadcast::Receiver<Arc<Notification>>, StreamGuard) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let entry = users.entry(user_id).or_insert_with(|| UserStreams {
            tx: broadcast::channel(STREAM_BUFFER).0,
            open: 0,
        });
        entry.open += 1;
        if entry.open == 1 {
            let _ = self.presence.send(WebPresence {
                user_id,
                online: true,
            });
        }
        metrics::gauge!("tidings_live_streams").increment(1.0);
        (
            entry.tx.subscribe(),
            StreamGuard {
                hub: self.clone(),
                user_id,
            },
        )
    }

    /// Opens a stream of a topic's messages (ntfy's `/<topic>/sse`).
    pub fn open_topic(&self, topic: &str) -> broadcast::Receiver<Arc<Notification>> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(STREAM_BUFFER).0)
            .subscribe()
    }

    /// Number of open streams of a user.
    pub fn open_streams(&self, user_id: i64) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(&user_id).map_or(0, |s| s.open)
    }

    /// Sends to a user's open streams; returns how many received it.
    pub fn push_user(&self, user_id: i64, n: &Arc<Notification>) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .get(&user_id)
            .map_or(0, |s| s.tx.send(n.clone()).unwrap_or(0))
    }

    /// Sends to a topic's open streams, dropping the channel when nobody listens.
    pub fn push_topic(&self, topic: &str, n: &Arc<Notification>) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = topics.get(topic)
            && tx.send(n.clone()).is_err()
        {
            topics.remove(topic);
        }
    }
}

/// The agent side of the hub.
pub struct LiveAgent {
    hub: Arc<LiveHub>,
}

impl LiveAgent {
    pub fn new(hub: Arc<LiveHub>) -> Self {
        Self { hub }
    }
}

impl Agent for LiveAgent {
    fn name(&self) -> &'static str {
        "live"
    }

    fn deliver<'a>(&'a self, d: &'a Delivery, ack: Ack) -> BoxFuture<'a, ()> {
        let n = self.hub.push_user(d.user_id, &d.notification);
        if n > 0 {
            metrics::counter!("tidings_live_pushed_total").increment(n as u64);
        }
        ack.ack();
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::{NotificationId, Priority};

    fn note() -> Arc<Notification> {
        Arc::new(Notification {
            id: NotificationId::new(0),
            time: 0,
            event: "message".into(),
            source: "topic:t".into(),
            topic: Some("t".into()),
            title: None,
            message: "m".into(),
            priority: Priority::Default,
            tags: vec![],
            click: None,
            actions: vec![],
            author: None,
        })
    }

    #[tokio::test]
    async fn streams_report_presence_and_receive_only_their_users_items() {
        let (hub, mut presence) = LiveHub::new();
        let (mut rx1, g1) = hub.open_user(1);
        let (_rx1b, g1b) = hub.open_user(1);
        let (mut rx2, _g2) = hub.open_user(2);
        assert_eq!(
            presence.recv().await.unwrap(),
            WebPresence {
                user_id: 1,
                online: true
            }
        );
        assert_eq!(
            presence.recv().await.unwrap(),
            WebPresence {
                user_id: 2,
                online: true
            }
        );
        assert_eq!(hub.push_user(1, &note()), 2);
        assert!(rx1.recv().await.is_ok());
        assert!(rx2.try_recv().is_err());
        drop(g1);
        assert!(presence.try_recv().is_err(), "one stream is still open");
        drop(g1b);
        assert_eq!(
            presence.recv().await.unwrap(),
            WebPresence {
                user_id: 1,
                online: false
            }
        );
        assert_eq!(hub.open_streams(1), 0);
    }
}
