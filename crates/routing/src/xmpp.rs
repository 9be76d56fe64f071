//! The XMPP agent: tidings' one XMPP connection (a component or a client account, see
//! `tidings_xmpp`), shared by every user with an `xmpp` destination. It is an edge and a
//! delivery channel at once:
//! - out: the outbox sends IM deliveries through it (it is the sinks' `ImTransport`);
//! - in: presence (folded per contact, most available resource wins) goes to the owning
//!   user avatars, which hold IM deliveries while the user is away and release them when
//!   they return; subscription approvals verify destinations; receipts (XEP-0184) and
//!   displayed markers (XEP-0333) land on delivery records; messages are IM commands, or
//!   replies (XEP-0461) to a notification.
//!
//! The JID index (which user and destination a contact belongs to) is loaded from the store
//! at start and kept current by the user avatars.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tidings_core::ids::user_avatar;
use tidings_sinks::{BoxFuture, DestinationConfig, Outcome};
use tidings_store::{SecretBox, Store, rusqlite};
use tidings_xmpp::{BareJid, Inbound, Jid, Outbound, Presences, Show, XmppConfig, XmppHandle};
use tokio::sync::{mpsc, watch};

use crate::ingest::Ingest;
use crate::services::Services;
use crate::user::UserMsg;

/// One user's destination for a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    user_id: i64,
    destination_id: String,
    verified: bool,
}

/// The connection and what routing knows about its contacts.
pub struct XmppAgent {
    handle: XmppHandle,
    index: Mutex<HashMap<BareJid, Vec<Owner>>>,
    presences: Mutex<Presences>,
}

impl std::fmt::Debug for XmppAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppAgent")
            .field("jid", &self.handle.our_jid())
            .finish_non_exhaustive()
    }
}

/// Reads every xmpp destination (their configs are sealed): `(jid, owner)`.
fn load_index(
    c: &rusqlite::Connection,
    secrets: &SecretBox,
) -> rusqlite::Result<Vec<(BareJid, Owner)>> {
    let mut s = c.prepare("SELECT id FROM destinations WHERE kind = 'xmpp'")?;
    let ids = s
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for id in ids {
        let Some(d) = crate::destinations::load(c, secrets, &id)? else {
            continue;
        };
        if let Ok(DestinationConfig::Xmpp(x)) = &d.config
            && let Ok(jid) = BareJid::parse(&x.jid)
        {
            out.push((
                jid,
                Owner {
                    user_id: d.user_id,
                    destination_id: d.id.clone(),
                    verified: d.verified_at.is_some(),
                },
            ));
        }
    }
    Ok(out)
}

impl XmppAgent {
    /// Connects (in the background) and returns the agent and its inbound events; the
    /// caller runs [`XmppAgent::run`] with them once the services exist.
    pub async fn start(
        cfg: XmppConfig,
        store: &Store,
        secrets: &SecretBox,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<XmppAgent>, mpsc::Receiver<Inbound>), tidings_store::Error> {
        let secrets = secrets.clone();
        let entries = store.read(move |c| load_index(c, &secrets)).await?;
        let mut index: HashMap<BareJid, Vec<Owner>> = HashMap::new();
        for (jid, owner) in entries {
            index.entry(jid).or_default().push(owner);
        }
        // Approved contacts are probed at every (re)connect: a component has no roster.
        let known: Vec<BareJid> = index
            .iter()
            .filter(|(_, o)| o.iter().any(|o| o.verified))
            .map(|(j, _)| j.clone())
            .collect();
        let (handle, inbound) = tidings_xmpp::start(cfg, known, shutdown);
        Ok((
            Arc::new(XmppAgent {
                handle,
                index: Mutex::new(index),
                presences: Mutex::new(Presences::new()),
            }),
            inbound,
        ))
    }

    /// Our address (what users approve and chat with).
    pub fn our_jid(&self) -> String {
        self.handle.our_jid()
    }

    /// The availability of a contact right now (unknown counts as unavailable).
    pub fn show(&self, jid: &str) -> Show {
        match BareJid::parse(jid) {
            Ok(j) => self
                .presences
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .show(&j),
            Err(_) => Show::Unavailable,
        }
    }

    /// A new xmpp destination: remembered, and asked for a presence subscription.
    pub async fn watch(&self, jid: &str, user_id: i64, destination_id: &str) {
        let Ok(j) = BareJid::parse(jid) else {
            return;
        };
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(j.clone())
            .or_default()
            .push(Owner {
                user_id,
                destination_id: destination_id.to_owned(),
                verified: false,
            });
        if let Err(e) = self.handle.subscribe(j).await {
            tracing::warn!(%jid, error = %e, "presence subscription not sent");
        }
    }

    /// Asks again for the subscription (the user lost the first request).
    pub async fn resubscribe(&self, jid: &str) {
        if let Ok(j) = BareJid::parse(jid)
            && let Err(e) = self.handle.subscribe(j).await
        {
            tracing::warn!(%jid, error = %e, "presence subscription not sent");
        }
    }

    /// A removed xmpp destination: forgotten; the subscription is dropped when no other
    /// destination uses the address.
    pub async fn unwatch(&self, jid: &str, destination_id: &str) {
        let Ok(j) = BareJid::parse(jid) else {
            return;
        };
        let last = {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            let owners = index.entry(j.clone()).or_default();
            owners.retain(|o| o.destination_id != destination_id);
            let empty = owners.is_empty();
            if empty {
                index.remove(&j);
            }
            empty
        };
        if last && let Err(e) = self.handle.unsubscribe(j).await {
            tracing::warn!(%jid, error = %e, "presence unsubscription not sent");
        }
    }

    fn owners(&self, jid: &BareJid) -> Vec<Owner> {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(jid)
            .cloned()
            .unwrap_or_default()
    }

    fn mark_verified(&self, jid: &BareJid) {
        if let Some(owners) = self
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(jid)
        {
            owners.iter_mut().for_each(|o| o.verified = true);
        }
    }

    async fn say(&self, to: Jid, body: String) {
        let msg = Outbound {
            to,
            body,
            id: format!(
                "cmd-{}",
                tidings_core::NotificationId::new(tidings_store::now_ms())
            ),
            request_receipt: false,
            markable: false,
            from_node: None,
        };
        if let Err(e) = self.handle.send(msg).await {
            tracing::warn!(error = %e, "IM answer not sent");
        }
    }

    /// Handles the connection's events until it stops.
    pub async fn run(
        self: Arc<Self>,
        services: Arc<Services>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        while let Some(event) = inbound.recv().await {
            let changed = self
                .presences
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&event);
            if let Some((jid, show)) = changed {
                for o in self.owners(&jid) {
                    let msg = UserMsg::ImPresence {
                        destination_id: o.destination_id.clone(),
                        show,
                    };
                    let _ = services.users().tell(&user_avatar(o.user_id), msg).await;
                }
            }
            match event {
                Inbound::Connected => {
                    tracing::info!(jid = %self.handle.our_jid(), "XMPP connected");
                    metrics::gauge!("tidings_xmpp_connected").set(1.0);
                }
                Inbound::Disconnected { reason } => {
                    tracing::warn!(%reason, "XMPP disconnected; reconnecting");
                    metrics::gauge!("tidings_xmpp_connected").set(0.0);
                }
                Inbound::SubscriptionApproved { jid } => {
                    self.mark_verified(&jid);
                    for o in self.owners(&jid) {
                        let msg = UserMsg::ImApproved {
                            destination_id: o.destination_id.clone(),
                        };
                        let _ = services.users().tell(&user_avatar(o.user_id), msg).await;
                    }
                }
                Inbound::Message {
                    from,
                    body,
                    reply_to_id,
                    ..
                } => self.message(&services, from, body, reply_to_id).await,
                Inbound::Receipt { from, id } => {
                    self.mark(&services, from.bare(), id, "received").await;
                }
                Inbound::Displayed { from, id } => {
                    self.mark(&services, from.bare(), id, "displayed").await;
                }
                Inbound::Error {
                    to,
                    id: Some(id),
                    condition,
                    text,
                } => {
                    let why = match text {
                        Some(t) => format!("{condition}: {t}"),
                        None => condition,
                    };
                    self.mark(&services, to.bare(), id, &format!("bounced ({why})"))
                        .await;
                }
                _ => {}
            }
        }
    }

    async fn mark(&self, services: &Services, jid: &BareJid, id: String, what: &str) {
        for o in self.owners(jid) {
            let msg = UserMsg::ImMark {
                destination_id: o.destination_id.clone(),
                notification_id: id.clone(),
                what: what.to_owned(),
            };
            let _ = services.users().tell(&user_avatar(o.user_id), msg).await;
        }
    }

    /// A message from a contact: a reply to a notification (XEP-0461, or `reply N text`),
    /// or a command. Only an address its user approved may command.
    async fn message(
        &self,
        services: &Arc<Services>,
        from: Jid,
        body: String,
        reply_to_id: Option<String>,
    ) {
        let Some(owner) = self.owners(from.bare()).into_iter().find(|o| o.verified) else {
            self.say(
                from,
                format!(
                    "This address is not linked to a tidings account. Add it as an XMPP destination (xmpp://{}) in tidings, then approve the request from {}.",
                    "you@example.org",
                    self.handle.our_jid()
                ),
            )
            .await;
            return;
        };
        if let Some(id) = reply_to_id.filter(|i| tidings_core::NotificationId::parse(i).is_some()) {
            let payload = serde_json::to_string(&Ingest::TextReply {
                notification_id: id,
                via: "xmpp".into(),
                text: body,
            })
            .unwrap_or_default();
            let answer = match services
                .queue()
                .append(user_avatar(owner.user_id), payload)
                .await
            {
                Ok(_) => "Reply sent (and acknowledged).".to_owned(),
                Err(e) => format!("Your reply could not be taken, try again: {e}"),
            };
            self.say(from, answer).await;
            return;
        }
        let answer = crate::im::execute(services, owner.user_id, &body).await;
        self.say(from, answer).await;
    }
}

/// The agent as the sinks' transport for xmpp destinations.
pub struct Transport(pub Arc<XmppAgent>);

impl tidings_sinks::xmpp::ImTransport for Transport {
    fn send<'a>(&'a self, jid: &'a str, body: String, id: String) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let to = match Jid::parse(jid) {
                Ok(j) => j,
                Err(e) => return Outcome::failed(format!("invalid JID {jid:?}: {e}")),
            };
            let msg = Outbound {
                to,
                body,
                id,
                request_receipt: true,
                markable: true,
                from_node: None,
            };
            match self.0.handle.send(msg).await {
                Ok(()) => Outcome::Delivered { status: None },
                Err(tidings_xmpp::Error::Shutdown) => Outcome::Retry {
                    status: None,
                    error: "the XMPP connection is shut down".into(),
                    retry_after: None,
                },
                Err(e) => Outcome::failed(e.to_string()),
            }
        })
    }
}

/// Whether a contact can receive IM now (chat or available).
pub fn is_available(show: Show) -> bool {
    matches!(show, Show::Chat | Show::Available)
}
