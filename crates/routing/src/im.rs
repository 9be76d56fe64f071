//! IM commands: what a user can do by chatting with tidings (`help`, `list`, `sub`, `unsub`,
//! `pause`, `resume`, `ack`, `history`, `reply`). Transport-agnostic: the XMPP agent hands
//! over the text of a message from a user's verified JSON and sends back the answer. State
//! changes go through the user avatar (subscriptions, acks, settings) or the durable ingest
//! queue (replies), exactly as the REST API does them; unknown commands get a helpful
//! answer, never silence.
//!
//! Numbers: `list` numbers subscriptions (oldest first); `history` numbers recent items
//! (1 = newest), and `ack N` / `reply N` use those numbers.

use std::sync::Arc;
use std::time::Duration;

use tidings_core::ids::user_avatar;
use tidings_core::notification::truncate_chars;
use tidings_core::{Filter, TopicName};
use tidings_xmpp::commands::{Command, help_text, parse};

use crate::directory::TopicAccess;
use crate::history::{self, HistoryItem, HistoryQuery};
use crate::ingest::Ingest;
use crate::services::Services;
use crate::user::{SourceSpec, UserMsg};

/// Items `history` lists without a number, and at most.
const HISTORY_DEFAULT: usize = 5;
const HISTORY_MAX: usize = 20;
/// How long a command may wait on the avatar.
const ASK: Duration = Duration::from_secs(10);

/// Runs one command for `user_id` and returns the answer (XEP-0393 styled text).
pub async fn execute(services: &Arc<Services>, user_id: i64, text: &str) -> String {
    match run(services, user_id, parse(text)).await {
        Ok(answer) => answer,
        Err(e) => format!("That did not work: {e}"),
    }
}

async fn run(s: &Arc<Services>, user_id: i64, cmd: Command) -> Result<String, String> {
    let me = user_avatar(user_id);
    match cmd {
        Command::Help => Ok(help_text().to_owned()),
        Command::Unknown(t) if t.is_empty() => Ok(help_text().to_owned()),
        Command::Unknown(t) => Ok(format!(
            "I don't know \"{t}\". Send *help* for the commands; to answer an item, *reply N text*."
        )),
        Command::List => {
            let subs = history::subscriptions(&s.store, user_id)
                .await
                .map_err(|e| e.to_string())?;
            if subs.is_empty() {
                return Ok("No subscriptions yet. *sub URL* subscribes to a feed or page, *sub topic* to a topic.".into());
            }
            let lines: Vec<String> = subs
                .iter()
                .enumerate()
                .map(|(i, sub)| format!("{}. {}", i + 1, describe(&sub.source, &sub.filter)))
                .collect();
            Ok(format!("*Your subscriptions*\n{}", lines.join("\n")))
        }
        Command::Sub { url, keywords } => {
            let source = if url.starts_with("http://") || url.starts_with("https://") {
                let feed = crate::discover::feed_url(&s.fetcher, &url)
                    .await
                    .map_err(|e| e.to_string())?;
                SourceSpec::Feed {
                    url: feed,
                    backfill: 0,
                }
            } else {
                let topic = TopicName::parse(&url).map_err(|e| e.to_string())?;
                let dir = &s.directory;
                if dir.topic_access(topic.as_str(), user_id) == TopicAccess::Unclaimed {
                    dir.claim_topic(&topic, user_id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if !dir.topic_access(topic.as_str(), user_id).can_subscribe() {
                    return Err(format!(
                        "topic {topic} belongs to someone who has not let you subscribe"
                    ));
                }
                SourceSpec::Topic {
                    topic: topic.as_str().to_owned(),
                }
            };
            let filter = Filter {
                include: keywords,
                ..Filter::default()
            };
            let sub = s
                .users()
                .ask(
                    &me,
                    |reply| UserMsg::Subscribe {
                        source,
                        filter,
                        reply,
                    },
                    ASK,
                )
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "Subscribed: {}",
                describe(&sub.source, &sub.filter)
            ))
        }
        Command::Unsub(n) => {
            let subs = history::subscriptions(&s.store, user_id)
                .await
                .map_err(|e| e.to_string())?;
            let sub = subs
                .get(n.wrapping_sub(1))
                .ok_or_else(|| format!("there is no subscription {n}; *list* shows them"))?;
            let id = sub.id.clone();
            let gone = s
                .users()
                .ask(&me, |reply| UserMsg::Unsubscribe { id, reply }, ASK)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "Unsubscribed: {}",
                describe(&gone.source, &gone.filter)
            ))
        }
        Command::Pause(d) => {
            let until = d.map_or(i64::MAX, |d| tidings_store::now_ms() + d.as_millis() as i64);
            let mut settings = s
                .users()
                .ask(&me, |reply| UserMsg::GetSettings { reply }, ASK)
                .await
                .map_err(|e| e.to_string())?;
            settings.paused_until = Some(until);
            let settings = put_settings(s, &me, settings).await?;
            Ok(if until == i64::MAX {
                "Paused: messages wait until you send *resume* (urgent ones still come through)."
                    .into()
            } else {
                format!(
                    "Paused until {} (urgent messages still come through). *resume* ends it now.",
                    settings.local(until)
                )
            })
        }
        Command::Resume => {
            let mut settings = s
                .users()
                .ask(&me, |reply| UserMsg::GetSettings { reply }, ASK)
                .await
                .map_err(|e| e.to_string())?;
            settings.paused_until = None;
            put_settings(s, &me, settings).await?;
            Ok("Resumed: anything held comes now.".into())
        }
        Command::History(n) => {
            let n = n.unwrap_or(HISTORY_DEFAULT).min(HISTORY_MAX);
            let items = recent(s, user_id, n).await?;
            if items.is_empty() {
                return Ok("Nothing in your history yet.".into());
            }
            let lines: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    format!(
                        "{}. {}{}",
                        i + 1,
                        headline(it),
                        if it.acked { " ✓" } else { "" }
                    )
                })
                .collect();
            Ok(format!("*Latest*\n{}", lines.join("\n")))
        }
        Command::Ack(n) => {
            let it = nth(s, user_id, n.unwrap_or(1)).await?;
            let id = it.notification.id.clone();
            let outcome = s
                .users()
                .ask(&me, |reply| UserMsg::Ack { id, reply }, ASK)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(if outcome.newly {
                format!("Acknowledged: {}", headline(&it))
            } else {
                format!("Already acknowledged: {}", headline(&it))
            })
        }
        Command::Reply { n, text } => {
            let it = nth(s, user_id, n).await?;
            let payload = serde_json::to_string(&Ingest::TextReply {
                notification_id: it.notification.id.as_str().to_owned(),
                via: "xmpp".into(),
                text,
            })
            .map_err(|e| e.to_string())?;
            s.queue()
                .append(me, payload)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "Reply sent for: {} (it also acknowledges it).",
                headline(&it)
            ))
        }
    }
}

async fn put_settings(
    s: &Arc<Services>,
    me: &str,
    settings: crate::schedule::UserSettings,
) -> Result<crate::schedule::UserSettings, String> {
    s.users()
        .ask(me, |reply| UserMsg::PutSettings { settings, reply }, ASK)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn recent(s: &Arc<Services>, user_id: i64, n: usize) -> Result<Vec<HistoryItem>, String> {
    let q = HistoryQuery {
        user_id,
        limit: n.max(1),
        ..Default::default()
    };
    history::list(&s.store, q)
        .await
        .map(|(items, _)| items)
        .map_err(|e| e.to_string())
}

/// Item `n` of `history` (1 = newest).
async fn nth(s: &Arc<Services>, user_id: i64, n: usize) -> Result<HistoryItem, String> {
    if n == 0 || n > HISTORY_MAX {
        return Err(format!(
            "pick an item from 1 to {HISTORY_MAX}; *history* shows them"
        ));
    }
    recent(s, user_id, n)
        .await?
        .into_iter()
        .nth(n - 1)
        .ok_or_else(|| format!("there is no item {n}; *history* shows them"))
}

fn headline(it: &HistoryItem) -> String {
    let n = &it.notification;
    let head = n
        .title
        .clone()
        .unwrap_or_else(|| n.message.lines().next().unwrap_or("").to_owned());
    truncate_chars(&head, 120)
}

fn describe(source: &SourceSpec, filter: &Filter) -> String {
    let what = match source {
        SourceSpec::Topic { topic } => format!("topic {topic}"),
        SourceSpec::Feed { url, .. } => format!("feed {url}"),
        SourceSpec::Page { url, selector, .. } => format!("page {url} ({selector})"),
        SourceSpec::Imap {
            host,
            username,
            folder,
            ..
        } => format!("mailbox {username}@{host}/{folder}"),
    };
    if filter.include.is_empty() {
        what
    } else {
        format!("{what} – only: {}", filter.include.join(", "))
    }
}

/// A notification as an instant message (XEP-0393 styling); see
/// [`tidings_sinks::xmpp::format_text`].
pub use tidings_sinks::xmpp::format_text as format_message;
