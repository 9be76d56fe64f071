//! The directory: users, API tokens, web sessions, topics and grants.
//!
//! Every authentication and authorization check on a request path reads this in-memory
//! copy, never the store; changes are written through to the store. Tokens, sign-in codes
//! and session ids are stored as SHA-256 hashes and compared in constant time; passwords
//! are argon2 hashes.
//!
//! In cluster mode this cache is per node and needs invalidation over the bus; that is the
//! seam `reload` exists for.

use std::collections::HashMap;
use std::sync::RwLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Serialize;
use tidings_core::TopicName;
use tidings_core::secret::{constant_time_eq, hash_secret, random_secret};
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{Store, now_ms, rusqlite};

use crate::{Error, Result};

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub created_at: i64,
    pub has_password: bool,
}

/// An API token as listed (never the secret itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    pub label: String,
    pub created_at: i64,
}

/// What a user may do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub publish: bool,
    pub subscribe: bool,
}

/// A user's relation to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAccess {
    /// Nobody owns it yet.
    Unclaimed,
    Owner,
    Granted(Grant),
    /// It exists and this user has no rights on it.
    None,
}

impl TopicAccess {
    pub fn can_publish(self) -> bool {
        matches!(
            self,
            TopicAccess::Owner | TopicAccess::Granted(Grant { publish: true, .. })
        )
    }
    pub fn can_subscribe(self) -> bool {
        matches!(
            self,
            TopicAccess::Owner
                | TopicAccess::Granted(Grant {
                    subscribe: true,
                    ..
                })
        )
    }
}

/// A topic as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub owner: String,
    pub created_at: i64,
    pub grants: Vec<GrantInfo>,
}

/// A topic someone else owns, as a grantee sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GrantedTopic {
    pub name: String,
    pub owner: String,
    pub publish: bool,
    pub subscribe: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrantInfo {
    pub user: String,
    pub publish: bool,
    pub subscribe: bool,
}

#[derive(Debug, Clone)]
struct Topic {
    owner: i64,
    created_at: i64,
    grants: HashMap<i64, Grant>,
}

#[derive(Default)]
struct State {
    users: HashMap<i64, User>,
    by_name: HashMap<String, i64>,
    /// token hash -> (token id, user id)
    tokens: HashMap<String, (i64, i64)>,
    token_meta: HashMap<i64, (i64, String, i64)>,
    /// session id hash -> (user id, expires_at)
    sessions: HashMap<String, (i64, i64)>,
    topics: HashMap<String, Topic>,
}

/// How long a web session lasts.
const SESSION_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long a one-time sign-in link is valid.
pub const SIGNIN_CODE_MS: i64 = 24 * 3600 * 1000;

pub struct Directory {
    store: Store,
    state: RwLock<State>,
}

/// Names no user may have: mail to them means something else (`reply+<token>@` is a
/// reply to a delivered notification; the rest are addresses RFC 2142 reserves).
pub const RESERVED_USER_NAMES: &[&str] = &["reply", "postmaster", "abuse", "mailer-daemon"];

/// Checks a user name: 1-32 of lowercase letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit.
pub fn valid_user_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

impl Directory {
    /// Loads the directory from the store.
    pub async fn load(store: Store) -> Result<Directory> {
        let state = store
            .read(|c| {
                let mut st = State::default();
                let mut q = c.prepare(
                    "SELECT id, name, is_admin, created_at, password_hash IS NOT NULL FROM users",
                )?;
                for u in q.query_map([], |r| {
                    Ok(User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        is_admin: r.get(2)?,
                        created_at: r.get(3)?,
                        has_password: r.get(4)?,
                    })
                })? {
                    let u = u?;
                    st.by_name.insert(u.name.clone(), u.id);
                    st.users.insert(u.id, u);
                }
                let mut q =
                    c.prepare("SELECT id, user_id, token_hash, label, created_at FROM tokens")?;
                let rows = q.query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })?;
                for row in rows {
                    let (id, user, hash, label, created) = row?;
                    st.tokens.insert(hash, (id, user));
                    st.token_meta.insert(id, (user, label, created));
                }
                let now = now_ms();
                let mut q = c.prepare("SELECT id_hash, user_id, expires_at FROM sessions")?;
                for row in q.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })? {
                    let (h, u, exp) = row?;
                    if exp > now {
                        st.sessions.insert(h, (u, exp));
                    }
                }
                let mut q = c.prepare("SELECT name, owner_id, created_at FROM topics")?;
                for row in q.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })? {
                    let (name, owner, created_at) = row?;
                    st.topics.insert(
                        name,
                        Topic {
                            owner,
                            created_at,
                            grants: HashMap::new(),
                        },
                    );
                }
                let mut q = c.prepare(
                    "SELECT topic, user_id, can_publish, can_subscribe FROM topic_grants",
                )?;
                for row in q.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                })? {
                    let (topic, user, publish, subscribe) = row?;
                    if let Some(t) = st.topics.get_mut(&topic) {
                        t.grants.insert(user, Grant { publish, subscribe });
                    }
                }
                Ok(st)
            })
            .await?;
        Ok(Directory {
            store,
            state: RwLock::new(state),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    // ---- users -------------------------------------------------------------------------

    pub fn user_count(&self) -> usize {
        self.read().users.len()
    }

    pub fn user(&self, id: i64) -> Option<User> {
        self.read().users.get(&id).cloned()
    }

    pub fn user_by_name(&self, name: &str) -> Option<User> {
        let st = self.read();
        st.by_name
            .get(name)
            .and_then(|id| st.users.get(id))
            .cloned()
    }

    pub fn users(&self) -> Vec<User> {
        let mut v: Vec<User> = self.read().users.values().cloned().collect();
        v.sort_by_key(|u| u.id);
        v
    }

    /// Creates a user (with an argon2-hashed password if given).
    pub async fn create_user(
        &self,
        name: &str,
        password: Option<String>,
        is_admin: bool,
    ) -> Result<User> {
        if !valid_user_name(name) {
            return Err(Error::Invalid(format!(
                "user name {name:?}: use 1-32 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
            )));
        }
        if RESERVED_USER_NAMES.contains(&name) {
            return Err(Error::Invalid(format!(
                "user name {name:?} is reserved (it is a mail address tidings uses itself)"
            )));
        }
        if self.read().by_name.contains_key(name) {
            return Err(Error::Conflict(format!("user {name:?}")));
        }
        let hash = match password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        let created_at = now_ms();
        let name2 = name.to_owned();
        let has_password = hash.is_some();
        let id = self
            .store
            .write(move |c| {
                c.execute(
                    "INSERT INTO users(name, password_hash, is_admin, created_at) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![name2, hash, is_admin, created_at],
                )?;
                let id = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO events(time, kind, user_id, data) VALUES (?1, 'user_created', ?2, json_object('name', ?3))",
                    rusqlite::params![created_at, id, name2],
                )?;
                Ok(id)
            })
            .await
            .map_err(|e| match e {
                tidings_store::Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Error::Conflict(format!("user {name:?}"))
                }
                e => Error::Store(e),
            })?;
        let user = User {
            id,
            name: name.to_owned(),
            is_admin,
            created_at,
            has_password,
        };
        let mut st = self.write();
        st.by_name.insert(user.name.clone(), id);
        st.users.insert(id, user.clone());
        Ok(user)
    }

    /// Removes a user with their tokens, sessions, topics, grants, subscriptions and history.
    pub async fn remove_user(&self, name: &str) -> Result<User> {
        let user = self
            .user_by_name(name)
            .ok_or_else(|| Error::NotFound(format!("user {name:?}")))?;
        let id = user.id;
        self.store
            .write(move |c| {
                c.execute("DELETE FROM users WHERE id = ?1", [id])?;
                c.execute("DELETE FROM tokens WHERE user_id = ?1", [id])?;
                c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
                c.execute("DELETE FROM topic_grants WHERE user_id = ?1", [id])?;
                c.execute(
                    "DELETE FROM topic_grants WHERE topic IN (SELECT name FROM topics WHERE owner_id = ?1)",
                    [id],
                )?;
                c.execute("DELETE FROM topics WHERE owner_id = ?1", [id])?;
                // A user's mailbox passwords go with their subscriptions.
                c.execute(
                    "DELETE FROM source_secrets WHERE source_id IN
                        (SELECT source_id FROM subscriptions WHERE user_id = ?1 AND source_id LIKE 'imap:%')",
                    [id],
                )?;
                c.execute("DELETE FROM subscriptions WHERE user_id = ?1", [id])?;
                c.execute("DELETE FROM inbox WHERE user_id = ?1", [id])?;
                // Ids can be reused after the highest one is removed: nothing of this user
                // may be left for a later one to inherit.
                for table in [
                    "destinations",
                    "outbox",
                    "reply_tokens",
                    "private_feeds",
                    "held",
                    "digest_items",
                    "user_settings",
                ] {
                    c.execute(&format!("DELETE FROM {table} WHERE user_id = ?1"), [id])?;
                }
                c.execute(
                    "INSERT INTO events(time, kind, user_id) VALUES (?1, 'user_removed', ?2)",
                    rusqlite::params![now_ms(), id],
                )?;
                Ok(())
            })
            .await?;
        let mut st = self.write();
        st.users.remove(&id);
        st.by_name.remove(name);
        st.tokens.retain(|_, (_, u)| *u != id);
        st.token_meta.retain(|_, (u, _, _)| *u != id);
        st.sessions.retain(|_, (u, _)| *u != id);
        st.topics.retain(|_, t| t.owner != id);
        for t in st.topics.values_mut() {
            t.grants.remove(&id);
        }
        Ok(user)
    }

    /// Sets (or replaces) a user's password for web sign-in (argon2). Their web sessions end:
    /// whoever knew the old password is signed out.
    pub async fn set_password(&self, name: &str, password: String) -> Result<User> {
        let user = self
            .user_by_name(name)
            .ok_or_else(|| Error::NotFound(format!("user {name:?}")))?;
        let hash = hash_password(password).await?;
        let id = user.id;
        self.store
            .write(move |c| {
                c.execute(
                    "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                    rusqlite::params![id, hash],
                )?;
                c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
                c.execute(
                    "INSERT INTO events(time, kind, user_id) VALUES (?1, 'password_changed', ?2)",
                    rusqlite::params![now_ms(), id],
                )?;
                Ok(())
            })
            .await?;
        let mut st = self.write();
        st.sessions.retain(|_, (u, _)| *u != id);
        let updated = st.users.get_mut(&id).map(|u| {
            u.has_password = true;
            u.clone()
        });
        Ok(updated.unwrap_or(User {
            has_password: true,
            ..user
        }))
    }

    /// Checks a user's password (argon2, off the async threads).
    pub async fn verify_password(&self, name: &str, password: String) -> Result<Option<User>> {
        let Some(user) = self.user_by_name(name) else {
            // Spend the same work as a real check so timing does not reveal user names.
            let _ = hash_password(password).await;
            return Ok(None);
        };
        let id = user.id;
        let stored: Option<String> = self
            .store
            .read(move |c| {
                c.query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
            })
            .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        Ok(ok.then_some(user))
    }

    // ---- tokens ------------------------------------------------------------------------

    /// Creates an API token; the secret is returned once and only its hash is kept.
    pub async fn create_token(&self, user_id: i64, label: &str) -> Result<(TokenInfo, String)> {
        let user = self
            .user(user_id)
            .ok_or_else(|| Error::NotFound(format!("user {user_id}")))?;
        if label.chars().count() > 100 {
            return Err(Error::Invalid(
                "token labels are at most 100 characters".into(),
            ));
        }
        let secret = random_secret("tk_");
        let hash = hash_secret(&secret);
        let created_at = now_ms();
        let (h2, l2) = (hash.clone(), label.to_owned());
        let id = self
            .store
            .write(move |c| {
                c.execute(
                    "INSERT INTO tokens(user_id, token_hash, label, created_at) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![user_id, h2, l2, created_at],
                )?;
                let id = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO events(time, kind, user_id, data) VALUES (?1, 'token_created', ?2, json_object('token_id', ?3))",
                    rusqlite::params![created_at, user_id, id],
                )?;
                Ok(id)
            })
            .await?;
        let mut st = self.write();
        st.tokens.insert(hash, (id, user_id));
        st.token_meta
            .insert(id, (user_id, label.to_owned(), created_at));
        Ok((
            TokenInfo {
                id,
                user: user.name,
                label: label.to_owned(),
                created_at,
            },
            secret,
        ))
    }

    /// Tokens of one user, or of everyone when `user_id` is `None`.
    pub fn tokens(&self, user_id: Option<i64>) -> Vec<TokenInfo> {
        let st = self.read();
        let mut v: Vec<TokenInfo> = st
            .token_meta
            .iter()
            .filter(|(_, (u, _, _))| user_id.is_none_or(|id| id == *u))
            .map(|(id, (u, label, created))| TokenInfo {
                id: *id,
                user: st.users.get(u).map(|u| u.name.clone()).unwrap_or_default(),
                label: label.clone(),
                created_at: *created,
            })
            .collect();
        v.sort_by_key(|t| t.id);
        v
    }

    /// Revokes a token. With `owner`, only that user's token can be revoked.
    pub async fn revoke_token(&self, token_id: i64, owner: Option<i64>) -> Result<()> {
        let user_id = {
            let st = self.read();
            match st.token_meta.get(&token_id) {
                Some((u, _, _)) if owner.is_none_or(|o| o == *u) => *u,
                _ => return Err(Error::NotFound(format!("token {token_id}"))),
            }
        };
        self.store
            .write(move |c| {
                c.execute("DELETE FROM tokens WHERE id = ?1", [token_id])?;
                c.execute(
                    "INSERT INTO events(time, kind, user_id, data) VALUES (?1, 'token_revoked', ?2, json_object('token_id', ?3))",
                    rusqlite::params![now_ms(), user_id, token_id],
                )?;
                Ok(())
            })
            .await?;
        let mut st = self.write();
        st.tokens.retain(|_, (id, _)| *id != token_id);
        st.token_meta.remove(&token_id);
        Ok(())
    }

    /// The user a bearer token belongs to.
    pub fn authenticate_token(&self, token: &str) -> Option<User> {
        let hash = hash_secret(token);
        let st = self.read();
        // The map lookup is keyed by the hash, which leaks nothing about the token; the
        // final comparison is constant-time all the same.
        let (key, (_, user_id)) = st.tokens.get_key_value(&hash)?;
        if !constant_time_eq(key.as_bytes(), hash.as_bytes()) {
            return None;
        }
        st.users.get(user_id).cloned()
    }

    // ---- sign-in links and sessions ------------------------------------------------------

    /// A one-time code for a sign-in link.
    pub async fn create_signin_code(&self, user_id: i64) -> Result<String> {
        let code = random_secret("");
        let hash = hash_secret(&code);
        let expires = now_ms() + SIGNIN_CODE_MS;
        self.store
            .write(move |c| {
                c.execute(
                    "INSERT INTO signin_codes(code_hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
                    rusqlite::params![hash, user_id, expires],
                )
            })
            .await?;
        Ok(code)
    }

    /// Consumes a sign-in code and opens a session; returns the session id.
    pub async fn redeem_signin_code(&self, code: &str) -> Result<Option<(User, String)>> {
        let hash = hash_secret(code);
        let now = now_ms();
        let user_id: Option<i64> = self
            .store
            .write(move |c| {
                let row: Option<(i64, i64)> = c
                    .query_row(
                        "SELECT user_id, expires_at FROM signin_codes WHERE code_hash = ?1",
                        [&hash],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                c.execute(
                    "DELETE FROM signin_codes WHERE code_hash = ?1 OR expires_at < ?2",
                    rusqlite::params![hash, now],
                )?;
                Ok(row.filter(|(_, exp)| *exp > now).map(|(u, _)| u))
            })
            .await?;
        let Some(user) = user_id.and_then(|id| self.user(id)) else {
            return Ok(None);
        };
        let session = self.create_session(user.id).await?;
        Ok(Some((user, session)))
    }

    /// Opens a web session for a user; returns its id (the cookie value).
    pub async fn create_session(&self, user_id: i64) -> Result<String> {
        let sid = random_secret("s_");
        let hash = hash_secret(&sid);
        let expires = now_ms() + SESSION_MS;
        let h2 = hash.clone();
        self.store
            .write(move |c| {
                c.execute(
                    "INSERT INTO sessions(id_hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
                    rusqlite::params![h2, user_id, expires],
                )
            })
            .await?;
        self.write().sessions.insert(hash, (user_id, expires));
        Ok(sid)
    }

    pub fn authenticate_session(&self, sid: &str) -> Option<User> {
        let hash = hash_secret(sid);
        let st = self.read();
        let (key, (user_id, expires)) = st.sessions.get_key_value(&hash)?;
        if !constant_time_eq(key.as_bytes(), hash.as_bytes()) || *expires <= now_ms() {
            return None;
        }
        st.users.get(user_id).cloned()
    }

    pub async fn end_session(&self, sid: &str) -> Result<()> {
        let hash = hash_secret(sid);
        self.write().sessions.remove(&hash);
        self.store
            .write(move |c| c.execute("DELETE FROM sessions WHERE id_hash = ?1", [hash]))
            .await?;
        Ok(())
    }

    // ---- topics --------------------------------------------------------------------------

    pub fn topic_access(&self, topic: &str, user_id: i64) -> TopicAccess {
        let st = self.read();
        match st.topics.get(topic) {
            None => TopicAccess::Unclaimed,
            Some(t) if t.owner == user_id => TopicAccess::Owner,
            Some(t) => t
                .grants
                .get(&user_id)
                .map_or(TopicAccess::None, |g| TopicAccess::Granted(*g)),
        }
    }

    /// Claims an unowned topic for `user_id`. Returns `true` if this call created it. The row
    /// is queued for the next group commit without waiting: anything the caller appends to
    /// the ingest queue afterwards commits in the same or a later transaction.
    pub async fn claim_topic(&self, topic: &TopicName, user_id: i64) -> Result<bool> {
        let created_at = now_ms();
        {
            let mut st = self.write();
            if st.topics.contains_key(topic.as_str()) {
                return Ok(false);
            }
            st.topics.insert(
                topic.as_str().to_owned(),
                Topic {
                    owner: user_id,
                    created_at,
                    grants: HashMap::new(),
                },
            );
        }
        let name = topic.as_str().to_owned();
        self.store
            .submit(
                move |c| {
                    c.execute(
                        "INSERT OR IGNORE INTO topics(name, owner_id, created_at) VALUES (?1, ?2, ?3)",
                        rusqlite::params![name, user_id, created_at],
                    )?;
                    c.execute(
                        "INSERT INTO events(time, kind, user_id, source_id) VALUES (?1, 'topic_created', ?2, 'topic:' || ?3)",
                        rusqlite::params![created_at, user_id, name],
                    )
                },
                |r| {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "topic row not written");
                    }
                },
            )
            .await?;
        Ok(true)
    }

    /// Topics a user owns, with their grants.
    pub fn owned_topics(&self, user_id: i64) -> Vec<TopicInfo> {
        let st = self.read();
        let mut v: Vec<TopicInfo> = st
            .topics
            .iter()
            .filter(|(_, t)| t.owner == user_id)
            .map(|(name, t)| topic_info(&st, name, t))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Topics other users granted this user rights on.
    pub fn granted_topics(&self, user_id: i64) -> Vec<GrantedTopic> {
        let st = self.read();
        let mut v: Vec<GrantedTopic> = st
            .topics
            .iter()
            .filter_map(|(name, t)| {
                t.grants.get(&user_id).map(|g| GrantedTopic {
                    name: name.clone(),
                    owner: st
                        .users
                        .get(&t.owner)
                        .map(|u| u.name.clone())
                        .unwrap_or_default(),
                    publish: g.publish,
                    subscribe: g.subscribe,
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn topic_info(&self, topic: &str) -> Option<TopicInfo> {
        let st = self.read();
        st.topics.get(topic).map(|t| topic_info(&st, topic, t))
    }

    /// Sets (or with both false, removes) a user's grant on a topic. Returns the previous one.
    pub async fn set_grant(
        &self,
        topic: &str,
        owner: i64,
        grantee: &str,
        grant: Grant,
    ) -> Result<Option<Grant>> {
        let grantee_user = self
            .user_by_name(grantee)
            .ok_or_else(|| Error::NotFound(format!("user {grantee:?}")))?;
        let gid = grantee_user.id;
        let previous = {
            let st = self.read();
            let t = st
                .topics
                .get(topic)
                .filter(|t| t.owner == owner)
                .ok_or_else(|| Error::NotFound(format!("topic {topic:?}")))?;
            if gid == owner {
                return Err(Error::Invalid("the owner already has every right".into()));
            }
            t.grants.get(&gid).copied()
        };
        let t2 = topic.to_owned();
        self.store
            .write(move |c| {
                if grant.publish || grant.subscribe {
                    c.execute(
                        "INSERT INTO topic_grants(topic, user_id, can_publish, can_subscribe) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(topic, user_id) DO UPDATE SET can_publish = excluded.can_publish, can_subscribe = excluded.can_subscribe",
                        rusqlite::params![t2, gid, grant.publish, grant.subscribe],
                    )?;
                } else {
                    c.execute(
                        "DELETE FROM topic_grants WHERE topic = ?1 AND user_id = ?2",
                        rusqlite::params![t2, gid],
                    )?;
                }
                c.execute(
                    "INSERT INTO events(time, kind, user_id, source_id, data) VALUES (?1, 'grant_changed', ?2, 'topic:' || ?3, json_object('publish', ?4, 'subscribe', ?5))",
                    rusqlite::params![now_ms(), gid, t2, grant.publish, grant.subscribe],
                )?;
                Ok(())
            })
            .await?;
        let mut st = self.write();
        if let Some(t) = st.topics.get_mut(topic) {
            if grant.publish || grant.subscribe {
                t.grants.insert(gid, grant);
            } else {
                t.grants.remove(&gid);
            }
        }
        Ok(previous)
    }
}

fn topic_info(st: &State, name: &str, t: &Topic) -> TopicInfo {
    let user_name = |id: &i64| st.users.get(id).map(|u| u.name.clone()).unwrap_or_default();
    let mut grants: Vec<GrantInfo> = t
        .grants
        .iter()
        .map(|(u, g)| GrantInfo {
            user: user_name(u),
            publish: g.publish,
            subscribe: g.subscribe,
        })
        .collect();
    grants.sort_by(|a, b| a.user.cmp(&b.user));
    TopicInfo {
        name: name.to_owned(),
        owner: user_name(&t.owner),
        created_at: t.created_at,
        grants,
    }
}

async fn hash_password(password: String) -> Result<String> {
    if password.len() < 8 || password.len() > 1024 {
        return Err(Error::Invalid("passwords are 8-1024 bytes".into()));
    }
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Invalid(format!("cannot hash password: {e}")))
    })
    .await
    .map_err(|e| Error::Invalid(format!("password hashing failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_store::StoreOptions;

    async fn dir() -> (tempfile::TempDir, Directory) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("t.db"), StoreOptions::default()).unwrap();
        let dir = Directory::load(s).await.unwrap();
        (d, dir)
    }

    #[tokio::test]
    async fn tokens_authenticate_until_revoked_and_survive_reload() {
        let (_d, dir) = dir().await;
        let alice = dir.create_user("alice", None, false).await.unwrap();
        assert!(matches!(
            dir.create_user("alice", None, false).await,
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            dir.create_user("Bad Name", None, false).await,
            Err(Error::Invalid(_))
        ));
        let (info, secret) = dir.create_token(alice.id, "laptop").await.unwrap();
        assert_eq!(dir.authenticate_token(&secret).unwrap().name, "alice");
        assert!(dir.authenticate_token("tk_wrong").is_none());
        let reloaded = Directory::load(dir.store.clone()).await.unwrap();
        assert_eq!(reloaded.authenticate_token(&secret).unwrap().id, alice.id);
        dir.revoke_token(info.id, None).await.unwrap();
        assert!(dir.authenticate_token(&secret).is_none());
        let stored: String = dir
            .store
            .read(|c| {
                c.query_row("SELECT group_concat(token_hash) FROM tokens", [], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .map(|v| v.unwrap_or_default())
            })
            .await
            .unwrap();
        assert!(!stored.contains(&secret));
    }

    #[tokio::test]
    async fn passwords_are_argon2() {
        let (_d, dir) = dir().await;
        dir.create_user("bob", Some("correct horse".into()), false)
            .await
            .unwrap();
        let h: String = dir
            .store
            .read(|c| c.query_row("SELECT password_hash FROM users", [], |r| r.get(0)))
            .await
            .unwrap();
        assert!(h.starts_with("$argon2"));
        assert!(
            dir.verify_password("bob", "correct horse".into())
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            dir.verify_password("bob", "wrong horse".into())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            dir.verify_password("nobody", "whatever1".into())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn topics_are_claimed_once_and_granted() {
        let (_d, dir) = dir().await;
        let a = dir.create_user("alice", None, false).await.unwrap();
        let b = dir.create_user("bob", None, false).await.unwrap();
        let t = TopicName::parse("backups").unwrap();
        assert!(dir.claim_topic(&t, a.id).await.unwrap());
        assert!(!dir.claim_topic(&t, b.id).await.unwrap());
        assert_eq!(dir.topic_access("backups", a.id), TopicAccess::Owner);
        assert_eq!(dir.topic_access("backups", b.id), TopicAccess::None);
        assert!(!dir.topic_access("backups", b.id).can_publish());
        dir.set_grant(
            "backups",
            a.id,
            "bob",
            Grant {
                publish: true,
                subscribe: false,
            },
        )
        .await
        .unwrap();
        assert!(dir.topic_access("backups", b.id).can_publish());
        assert!(!dir.topic_access("backups", b.id).can_subscribe());
        assert!(
            dir.set_grant(
                "backups",
                b.id,
                "bob",
                Grant {
                    publish: true,
                    subscribe: true
                }
            )
            .await
            .is_err()
        );
        let reloaded = Directory::load(dir.store.clone()).await.unwrap();
        assert!(reloaded.topic_access("backups", b.id).can_publish());
        assert_eq!(reloaded.owned_topics(a.id)[0].grants[0].user, "bob");
    }

    #[tokio::test]
    async fn signin_codes_are_single_use() {
        let (_d, dir) = dir().await;
        let a = dir.create_user("admin", None, true).await.unwrap();
        let code = dir.create_signin_code(a.id).await.unwrap();
        let (u, sid) = dir.redeem_signin_code(&code).await.unwrap().unwrap();
        assert_eq!(u.id, a.id);
        assert_eq!(dir.authenticate_session(&sid).unwrap().id, a.id);
        assert!(dir.redeem_signin_code(&code).await.unwrap().is_none());
        dir.end_session(&sid).await.unwrap();
        assert!(dir.authenticate_session(&sid).is_none());
    }
}
