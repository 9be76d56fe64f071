//! Read-only queries over users' histories and topics' messages, for the API. These read the
//! store directly: history is written by the user avatars and only read here.

use serde::Serialize;
use tidings_core::Notification;
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{Store, rusqlite};

use crate::Result;

/// A notification as it stands in a user's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    #[serde(flatten)]
    pub notification: Notification,
    /// Position in the user's history; also the pagination cursor.
    pub seq: i64,
    pub acked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<i64>,
}

/// Filters and paging of a history listing. Newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub user_id: i64,
    /// Only items older than this cursor (a `seq`).
    pub before: Option<i64>,
    /// Only items newer than this `seq` (listing then runs oldest first).
    pub after: Option<i64>,
    pub limit: usize,
    pub source: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Any of these priorities (1-5).
    pub priorities: Vec<u8>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, inclusive.
    pub until: Option<i64>,
}

const ITEM_COLUMNS: &str = "i.seq, i.acked_at, n.body";

fn item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryItem> {
    let body: String = r.get(2)?;
    let notification: Notification = serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let acked_at: Option<i64> = r.get(1)?;
    Ok(HistoryItem {
        notification,
        seq: r.get(0)?,
        acked: acked_at.is_some(),
        acked_at,
    })
}

/// Lists a user's history. Returns the page and, if there may be more, the cursor for the
/// next page.
pub async fn list(store: &Store, q: HistoryQuery) -> Result<(Vec<HistoryItem>, Option<i64>)> {
    let limit = q.limit.clamp(1, 1000);
    let ascending = q.after.is_some();
    let items = store
        .read(move |c| {
            let mut sql = format!(
                "SELECT {ITEM_COLUMNS} FROM inbox i JOIN notifications n ON n.id = i.notification_id
                 WHERE i.user_id = ?"
            );
            let mut params: Vec<rusqlite::types::Value> = vec![q.user_id.into()];
            if let Some(b) = q.before {
                sql.push_str(" AND i.seq < ?");
                params.push(b.into());
            }
            if let Some(a) = q.after {
                sql.push_str(" AND i.seq > ?");
                params.push(a.into());
            }
            if let Some(s) = q.source {
                sql.push_str(" AND i.source_id = ?");
                params.push(s.into());
            }
            if let Some(s) = q.since {
                sql.push_str(" AND i.time >= ?");
                params.push((s.saturating_mul(1000)).into());
            }
            if let Some(u) = q.until {
                sql.push_str(" AND i.time <= ?");
                params.push((u.saturating_mul(1000).saturating_add(999)).into());
            }
            if !q.priorities.is_empty() {
                sql.push_str(" AND i.priority IN (");
                for (k, p) in q.priorities.iter().enumerate() {
                    sql.push_str(if k == 0 { "?" } else { ",?" });
                    params.push((*p as i64).into());
                }
                sql.push(')');
            }
            for t in q.tags {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM json_each(n.body, '$.tags') WHERE value = ?)",
                );
                params.push(t.into());
            }
            sql.push_str(if ascending {
                " ORDER BY i.seq ASC LIMIT ?"
            } else {
                " ORDER BY i.seq DESC LIMIT ?"
            });
            params.push((limit as i64 + 1).into());
            let mut st = c.prepare(&sql)?;
            st.query_map(rusqlite::params_from_iter(params), item_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .await?;
    let mut items = items;
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|i| i.seq)
    } else {
        None
    };
    Ok((items, next))
}

/// One notification of a user's history.
pub async fn get(store: &Store, user_id: i64, id: &str) -> Result<Option<HistoryItem>> {
    let id = id.to_owned();
    Ok(store
        .read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM inbox i JOIN notifications n ON n.id = i.notification_id
                     WHERE i.user_id = ?1 AND i.notification_id = ?2"
                ),
                rusqlite::params![user_id, id],
                item_from_row,
            )
            .optional()
        })
        .await?)
}

/// The history position of a notification (for resuming a stream after `Last-Event-ID`).
pub async fn seq_of(store: &Store, user_id: i64, id: &str) -> Result<Option<i64>> {
    Ok(get(store, user_id, id).await?.map(|i| i.seq))
}

/// Messages of a topic (any user's view of it), oldest first, for ntfy-style `since=` and
/// `poll=1`. `after_id` excludes everything up to and including that message.
pub async fn topic_messages(
    store: &Store,
    source_id: &str,
    since_s: i64,
    after_id: Option<String>,
    limit: usize,
) -> Result<Vec<Notification>> {
    let source_id = source_id.to_owned();
    let limit = limit.clamp(1, 10_000) as i64;
    let bodies: Vec<String> = store
        .read(move |c| {
            let after_time: Option<i64> = match &after_id {
                Some(id) => c
                    .query_row(
                        "SELECT time FROM notifications WHERE id = ?1 AND source_id = ?2",
                        rusqlite::params![id, source_id],
                        |r| r.get(0),
                    )
                    .optional()?,
                None => None,
            };
            // Ordered by (time, id): ids sort by creation time too, so "after this id" is
            // "a later second, or the same second and a greater id".
            let (from, after) = match after_time {
                Some(t) => (t, after_id.unwrap_or_default()),
                // "~" sorts after every id, so the same-time clause never matches here.
                None => (
                    since_s.saturating_mul(1000).saturating_sub(1),
                    "~".to_owned(),
                ),
            };
            let mut st = c.prepare_cached(
                "SELECT body FROM notifications WHERE source_id = ?1
                 AND (time > ?2 OR (time = ?2 AND id > ?3))
                 ORDER BY time ASC, id ASC LIMIT ?4",
            )?;
            let out = st
                .query_map(rusqlite::params![source_id, from, after, limit], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(out)
        })
        .await?;
    Ok(bodies
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect())
}

/// A user's subscriptions.
pub async fn subscriptions(store: &Store, user_id: i64) -> Result<Vec<crate::user::Subscription>> {
    Ok(store
        .read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, source_id, source, filter, created_at FROM subscriptions
                 WHERE user_id = ?1 ORDER BY created_at, id",
            )?;
            st.query_map([user_id], crate::user::subscription_from_row)?
                .collect()
        })
        .await?)
}
