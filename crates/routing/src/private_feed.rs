//! Private Atom feeds: `/feeds/<secret>.atom`, one per user for the whole history and one
//! per subscription at most. This module holds their store queries; the HTTP edge renders
//! the Atom document.
//!
//! A feed is a row of `private_feeds`. Its secret is looked up by SHA-256 (a random 190-bit
//! secret needs nothing slower) and also kept sealed with the data dir's key, because the
//! owner may ask for the URL again. Creating a feed that exists rotates its secret in place:
//! the old URL stops resolving in the same commit. A feed's public id is its scope (`all`, or
//! the subscription id), which is stable across rotations and reveals nothing.

use serde::Serialize;
use tidings_core::secret::{hash_secret, random_secret};
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{SecretBox, Store, now_ms, rusqlite};

use crate::user::{Subscription, subscription_from_row};
use crate::{Error, Result};

/// Public id of the feed over a user's whole history.
pub const ALL: &str = "all";
/// Prefix of feed secrets (helps secret scanners recognize a leaked URL).
pub const SECRET_PREFIX: &str = "pf_";

/// A private feed as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PrivateFeed {
    /// `all`, or the subscription id the feed is scoped to.
    pub id: String,
    /// The subscription the feed is scoped to (`None`: the whole history).
    pub subscription: Option<String>,
    /// The scoped subscription's source id; `None` for the whole history, or when the
    /// subscription no longer exists (the feed then answers 404 until deleted or re-created).
    pub source: Option<String>,
    /// The secret of the URL; `None` if it cannot be unsealed (the data dir's key changed):
    /// rotating gives a new one.
    #[serde(skip)]
    pub secret: Option<String>,
    /// When the current secret was made (ms).
    pub created_at: i64,
}

/// What a secret resolves to.
#[derive(Debug, Clone)]
pub struct FeedTarget {
    pub user_id: i64,
    /// `None`: the whole history.
    pub subscription: Option<Subscription>,
    /// When the current secret was made (ms): the feed's `updated` while it has no entries.
    pub created_at: i64,
}

impl FeedTarget {
    /// The public id (`all` or the subscription id).
    pub fn id(&self) -> &str {
        self.subscription.as_ref().map_or(ALL, |s| s.id.as_str())
    }

    /// Inbox rows of this feed come from this source only (`None`: any).
    pub fn source_id(&self) -> Option<&str> {
        self.subscription.as_ref().map(|s| s.source_id.as_str())
    }
}

/// A short human name of a subscription's source, for feed titles: the topic or the URL.
/// (Read through serde so a new kind of source needs no change here.)
pub fn source_label(sub: &Subscription) -> String {
    let v = serde_json::to_value(&sub.source).unwrap_or_default();
    ["topic", "url", "address", "name"]
        .iter()
        .find_map(|k| v[*k].as_str().map(str::to_owned))
        .unwrap_or_else(|| sub.source_id.clone())
}

fn scope_of(id: &str) -> &str {
    if id == ALL { "" } else { id }
}

/// Creates the user's feed for `subscription` (`None`: the whole history) or, if it exists,
/// gives it a new secret; the old URL stops working with this commit. Only the user's own
/// subscriptions can be scoped: any other id is "not found". Returns the feed (with its new
/// secret) and whether an existing one was rotated.
pub async fn create_or_rotate(
    store: &Store,
    secrets: &SecretBox,
    user_id: i64,
    subscription: Option<String>,
) -> Result<(PrivateFeed, bool)> {
    let secret = random_secret(SECRET_PREFIX);
    let hash = hash_secret(&secret);
    let sealed = secrets.seal_str(&secret);
    let scope = subscription.clone().unwrap_or_default();
    let created_at = now_ms();
    let out = store
        .write(move |c| {
            let source: Option<String> = if scope.is_empty() {
                None
            } else {
                match c
                    .query_row(
                        "SELECT source_id FROM subscriptions WHERE id = ?1 AND user_id = ?2",
                        rusqlite::params![scope, user_id],
                        |r| r.get(0),
                    )
                    .optional()?
                {
                    Some(s) => Some(s),
                    None => return Ok(None),
                }
            };
            let existed = c
                .query_row(
                    "SELECT 1 FROM private_feeds WHERE user_id = ?1 AND scope = ?2",
                    rusqlite::params![user_id, scope],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            c.execute(
                "INSERT INTO private_feeds(secret_hash, user_id, scope, secret, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(user_id, scope) DO UPDATE SET
                   secret_hash = excluded.secret_hash,
                   secret = excluded.secret,
                   created_at = excluded.created_at",
                rusqlite::params![hash, user_id, scope, sealed, created_at],
            )?;
            c.execute(
                "INSERT INTO events(time, kind, user_id, source_id, data)
                 VALUES (?1, ?2, ?3, ?4, json_object('feed', ?5))",
                rusqlite::params![
                    created_at,
                    if existed {
                        "private_feed_rotated"
                    } else {
                        "private_feed_created"
                    },
                    user_id,
                    source,
                    if scope.is_empty() {
                        ALL
                    } else {
                        scope.as_str()
                    },
                ],
            )?;
            Ok(Some((source, existed)))
        })
        .await?;
    let Some((source, rotated)) = out else {
        return Err(Error::NotFound("subscription".into()));
    };
    let feed = PrivateFeed {
        id: subscription.clone().unwrap_or_else(|| ALL.to_owned()),
        subscription,
        source,
        secret: Some(secret),
        created_at,
    };
    Ok((feed, rotated))
}

/// The user's private feeds, the whole-history one first, with their secrets unsealed.
pub async fn list(store: &Store, secrets: &SecretBox, user_id: i64) -> Result<Vec<PrivateFeed>> {
    let rows: Vec<(String, Vec<u8>, i64, Option<String>)> = store
        .read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.scope, p.secret, p.created_at, s.source_id
                 FROM private_feeds p
                 LEFT JOIN subscriptions s ON s.id = p.scope AND s.user_id = p.user_id
                 WHERE p.user_id = ?1 ORDER BY p.scope <> '', p.created_at, p.scope",
            )?;
            st.query_map([user_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(scope, sealed, created_at, source)| {
            let secret = secrets.open_str(&sealed).ok();
            if secret.is_none() {
                tracing::warn!(user_id, feed = %scope, "private feed secret cannot be unsealed");
            }
            let subscription = (!scope.is_empty()).then(|| scope.clone());
            PrivateFeed {
                id: subscription.clone().unwrap_or_else(|| ALL.to_owned()),
                subscription,
                source,
                secret,
                created_at,
            }
        })
        .collect())
}

/// Deletes one of the user's feeds by public id; its URL stops working with this commit.
pub async fn delete(store: &Store, user_id: i64, id: &str) -> Result<()> {
    let scope = scope_of(id).to_owned();
    let feed = id.to_owned();
    let deleted = store
        .write(move |c| {
            let n = c.execute(
                "DELETE FROM private_feeds WHERE user_id = ?1 AND scope = ?2",
                rusqlite::params![user_id, scope],
            )?;
            if n > 0 {
                c.execute(
                    "INSERT INTO events(time, kind, user_id, data)
                     VALUES (?1, 'private_feed_deleted', ?2, json_object('feed', ?3))",
                    rusqlite::params![now_ms(), user_id, feed],
                )?;
            }
            Ok(n > 0)
        })
        .await?;
    if deleted {
        Ok(())
    } else {
        Err(Error::NotFound("feed".into()))
    }
}

/// What a feed secret stands for, or `None` for every kind of miss alike: unknown secret,
/// a scoped subscription that is gone, a user that is gone.
///
/// Users' ids can be reused after a removal (the table has no AUTOINCREMENT), so a feed is
/// only honoured if its user existed when the secret was made: a removed user's URL never
/// shows a later user's history.
pub async fn resolve(store: &Store, secret: &str) -> Result<Option<FeedTarget>> {
    // Anything that is not shaped like a secret cannot match one; skip the store.
    if !secret.starts_with(SECRET_PREFIX)
        || secret.len() > 64
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Ok(None);
    }
    let hash = hash_secret(secret);
    Ok(store
        .read(move |c| {
            let row: Option<(i64, String, i64)> = c
                .query_row(
                    "SELECT p.user_id, p.scope, p.created_at FROM private_feeds p
                     JOIN users u ON u.id = p.user_id
                     WHERE p.secret_hash = ?1 AND u.created_at <= p.created_at",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((user_id, scope, created_at)) = row else {
                return Ok(None);
            };
            let subscription = if scope.is_empty() {
                None
            } else {
                match c
                    .query_row(
                        "SELECT id, source_id, source, filter, created_at FROM subscriptions
                         WHERE id = ?1 AND user_id = ?2",
                        rusqlite::params![scope, user_id],
                        subscription_from_row,
                    )
                    .optional()?
                {
                    Some(s) => Some(s),
                    None => return Ok(None),
                }
            };
            Ok(Some(FeedTarget {
                user_id,
                subscription,
                created_at,
            }))
        })
        .await?)
}

/// What a feed's validators are computed from, without reading any entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedState {
    /// The newest history position in the feed's scope.
    pub newest_seq: Option<i64>,
    /// Items in the feed's scope (changes when history is pruned or an item removed).
    pub count: i64,
    /// Time of the newest item (ms).
    pub newest_time: Option<i64>,
}

/// The validators' inputs of `target`'s feed: one indexed aggregate over the user's inbox.
pub async fn state(store: &Store, target: &FeedTarget) -> Result<FeedState> {
    let user_id = target.user_id;
    let source = target.source_id().map(str::to_owned);
    Ok(store
        .read(move |c| {
            c.query_row(
                "SELECT max(seq), count(*), max(time) FROM inbox
                 WHERE user_id = ?1 AND (?2 IS NULL OR source_id = ?2)",
                rusqlite::params![user_id, source],
                |r| {
                    Ok(FeedState {
                        newest_seq: r.get(0)?,
                        count: r.get(1)?,
                        newest_time: r.get(2)?,
                    })
                },
            )
        })
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_store::StoreOptions;

    async fn setup() -> (tempfile::TempDir, Store, SecretBox) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        store
            .write(|c| {
                c.execute(
                    "INSERT INTO users(id, name, created_at) VALUES (1, 'alice', 0), (2, 'bob', 0)",
                    [],
                )?;
                c.execute(
                    "INSERT INTO subscriptions(id, user_id, source_id, source, filter, created_at)
                     VALUES ('sub_a', 1, 'topic:a', '{\"kind\":\"topic\",\"topic\":\"a\"}', '{}', 0),
                            ('sub_b', 2, 'topic:b', '{\"kind\":\"topic\",\"topic\":\"b\"}', '{}', 0)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        (dir, store, SecretBox::ephemeral())
    }

    #[tokio::test]
    async fn create_rotate_resolve_delete() {
        let (_d, store, sb) = setup().await;
        let (all, rotated) = create_or_rotate(&store, &sb, 1, None).await.unwrap();
        assert!(!rotated);
        assert_eq!(all.id, ALL);
        let s1 = all.secret.clone().unwrap();
        assert!(s1.starts_with(SECRET_PREFIX));
        let t = resolve(&store, &s1).await.unwrap().unwrap();
        assert_eq!((t.user_id, t.id(), t.source_id()), (1, ALL, None));

        let (again, rotated) = create_or_rotate(&store, &sb, 1, None).await.unwrap();
        assert!(rotated);
        let s2 = again.secret.unwrap();
        assert_ne!(s1, s2);
        assert!(resolve(&store, &s1).await.unwrap().is_none(), "old secret");
        assert!(resolve(&store, &s2).await.unwrap().is_some());

        let (scoped, _) = create_or_rotate(&store, &sb, 1, Some("sub_a".into()))
            .await
            .unwrap();
        assert_eq!(scoped.source.as_deref(), Some("topic:a"));
        let t = resolve(&store, scoped.secret.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((t.id(), t.source_id()), ("sub_a", Some("topic:a")));

        // Someone else's subscription is not found, and nothing is written.
        let e = create_or_rotate(&store, &sb, 1, Some("sub_b".into())).await;
        assert!(matches!(e, Err(Error::NotFound(_))), "{e:?}");

        let listed = list(&store, &sb, 1).await.unwrap();
        let ids: Vec<_> = listed.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, [ALL, "sub_a"]);
        assert_eq!(listed[0].secret.as_deref(), Some(s2.as_str()));
        assert!(list(&store, &sb, 2).await.unwrap().is_empty());

        assert!(matches!(
            delete(&store, 2, ALL).await,
            Err(Error::NotFound(_))
        ));
        delete(&store, 1, ALL).await.unwrap();
        assert!(resolve(&store, &s2).await.unwrap().is_none());
        assert!(resolve(&store, "junk").await.unwrap().is_none());
        assert!(resolve(&store, "pf_<script>").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_gone_subscription_or_user_resolves_to_nothing() {
        let (_d, store, sb) = setup().await;
        let (f, _) = create_or_rotate(&store, &sb, 1, Some("sub_a".into()))
            .await
            .unwrap();
        let (all, _) = create_or_rotate(&store, &sb, 1, None).await.unwrap();
        store
            .write(|c| c.execute("DELETE FROM subscriptions WHERE id = 'sub_a'", []))
            .await
            .unwrap();
        assert!(
            resolve(&store, f.secret.as_deref().unwrap())
                .await
                .unwrap()
                .is_none()
        );
        let listed = list(&store, &sb, 1).await.unwrap();
        assert_eq!(listed[1].id, "sub_a");
        assert_eq!(listed[1].source, None);

        // The user is removed and the id reused by a newer user: the old URL stays dead.
        store
            .write(|c| {
                c.execute("DELETE FROM users WHERE id = 1", [])?;
                c.execute(
                    "INSERT INTO users(id, name, created_at) VALUES (1, 'carol', ?1)",
                    [now_ms() + 1],
                )
            })
            .await
            .unwrap();
        assert!(
            resolve(&store, all.secret.as_deref().unwrap())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn state_counts_the_scope() {
        let (_d, store, sb) = setup().await;
        let (f, _) = create_or_rotate(&store, &sb, 1, Some("sub_a".into()))
            .await
            .unwrap();
        let t = resolve(&store, f.secret.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state(&store, &t).await.unwrap(), FeedState::default());
        store
            .write(|c| {
                c.execute(
                    "INSERT INTO inbox(user_id, notification_id, source_id, time, priority)
                     VALUES (1, 'n1', 'topic:a', 1000, 3), (1, 'n2', 'topic:x', 5000, 3),
                            (2, 'n3', 'topic:a', 9000, 3)",
                    [],
                )
            })
            .await
            .unwrap();
        let s = state(&store, &t).await.unwrap();
        assert_eq!((s.count, s.newest_time), (1, Some(1000)));
        let all = FeedTarget {
            user_id: 1,
            subscription: None,
            created_at: 0,
        };
        let s = state(&store, &all).await.unwrap();
        assert_eq!(
            (s.count, s.newest_time, s.newest_seq),
            (2, Some(5000), Some(2))
        );
    }
}
