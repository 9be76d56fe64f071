//! What travels through the durable ingest queue, and the dispatcher's handler.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings_bus::ack::Ack;
use tidings_bus::queue::{Handler, Item};
use tidings_core::Notification;

use crate::services::Services;
use crate::source::SourceMsg;
use crate::user::UserMsg;

/// A queued input, addressed to a source avatar (a reply: to a user avatar).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Lives only between a queue row's JSON and its avatar's handler, one at a time: the size of
// the largest variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
pub enum Ingest {
    /// A fully formed notification from an edge (HTTP publish, a feed poll).
    Publish {
        notification: Notification,
        /// Deliver to every subscriber whatever their filters (notices about the source).
        #[serde(default)]
        bypass_filters: bool,
        /// The publisher's callback for replies (`Reply-To-Url`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_url: Option<String>,
    },
    /// A mail accepted by the SMTP edge for one recipient (raw, base64).
    Mail {
        raw_b64: String,
        label: Option<String>,
        mail_from: String,
        received_at: i64,
    },
    /// A reply by mail to a delivered notification (raw, base64), for the user avatar.
    Reply {
        raw_b64: String,
        /// Hash of the reply address' token.
        token_hash: String,
        mail_from: String,
        received_at: i64,
    },
    /// A user's text reply to one of their notifications (API, IM), for the user avatar.
    TextReply {
        notification_id: String,
        /// The channel it came through: `api`, `xmpp`.
        via: String,
        text: String,
    },
    /// An SMS to a user's phone destination (Twilio's inbound webhook), for the user avatar.
    SmsReply {
        destination_id: String,
        text: String,
        received_at: i64,
    },
}

/// The dispatcher's handler: parses each item and tells its source avatar. The avatar
/// answers the ack once everything the item caused is durable.
pub fn handler(services: Arc<Services>) -> Handler {
    Arc::new(move |item: Item, ack: Ack| {
        let services = services.clone();
        Box::pin(async move {
            let ingest: Ingest = match serde_json::from_str(&item.payload) {
                Ok(i) => i,
                Err(e) => {
                    ack.nack(format!("unreadable payload: {e}"));
                    return;
                }
            };
            // Replies go to the user avatar that owns the notification; the rest to sources.
            let ingest = match ingest {
                Ingest::Reply {
                    raw_b64,
                    token_hash,
                    ..
                } => {
                    let msg = |ack| UserMsg::MailReply {
                        raw_b64,
                        token_hash,
                        ack,
                    };
                    return to_user(&services, &item.target, msg, ack).await;
                }
                Ingest::SmsReply {
                    destination_id,
                    text,
                    ..
                } => {
                    let msg = |ack| UserMsg::SmsReply {
                        destination_id,
                        text,
                        ack,
                    };
                    return to_user(&services, &item.target, msg, ack).await;
                }
                Ingest::TextReply {
                    notification_id,
                    via,
                    text,
                } => {
                    let msg = |ack| UserMsg::TextReply {
                        notification_id,
                        via,
                        text,
                        ack,
                    };
                    return to_user(&services, &item.target, msg, ack).await;
                }
                other => other,
            };
            if !item.target.starts_with("source:") {
                ack.nack(format!("target {:?} is not a source avatar", item.target));
                return;
            }
            let msg = SourceMsg::Ingest { ingest, ack };
            if let Err(e) = services.sources().tell(&item.target, msg).await {
                // The message (and its ack) was dropped: the queue redelivers later.
                tracing::warn!(target = %item.target, error = %e, "cannot hand item to its source");
            }
        })
    })
}

async fn to_user(services: &Services, target: &str, msg: impl FnOnce(Ack) -> UserMsg, ack: Ack) {
    if !target.starts_with("user:") {
        ack.nack(format!("target {target:?} is not a user avatar"));
        return;
    }
    if let Err(e) = services.users().tell(target, msg(ack)).await {
        // The message (and its ack) was dropped: the queue redelivers later.
        tracing::warn!(%target, error = %e, "cannot hand reply to its user");
    }
}
