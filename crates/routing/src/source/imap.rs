//! IMAP mailboxes inside the source avatar: `imap:<hash>`, one source per user and mailbox
//! folder (the hash covers the owner's id, host, port, user name and folder), whose only
//! subscriber is that owner. For users who cannot forward their mail to tidings' SMTP
//! address: tidings logs in to their mailbox and notices new mail itself.
//!
//! The avatar owns the account and the cursor (UIDVALIDITY and last UID). A connection task
//! of its own ([`Session`]) logs in, fetches the mail after the cursor and, where the server
//! offers IDLE, stays connected and waits for news (IDLE is re-issued at least every
//! `idle_timeout / 3` of the avatar runtime, far under RFC 2177's 29 minutes, which also
//! keeps the avatar active). It never waits on the avatar and the avatar never waits on
//! it: the task tells the avatar what it found, and the avatar appends each message to the
//! durable ingest queue as an [`Ingest::Mail`] to this source, exactly what the SMTP edge
//! does, so [`super::mail::notification`] builds the notification (Message-ID dedupe key)
//! and delivery is at least once. The cursor is saved only after those appends are
//! durable: a crash in between fetches the same mail again, and its ids dedupe it.
//! Without IDLE, each check is one short session, and the next one is a durable reminder
//! (`sources.min_interval`, jittered).
//!
//! A durable reminder named [`REMINDER`] always exists while the source has a subscriber:
//! the next poll, the retry after an error (exponential backoff, at least five minutes
//! after a refused login so that no account gets locked), or, while a session is live, a
//! watchdog re-armed every two minutes. So after a restart every IMAP source comes back
//! by itself: at once after a clean shutdown (passivation sets the reminder to now), within
//! two minutes after a crash.
//!
//! A changed UIDVALIDITY (the folder was recreated or renumbered) re-baselines the cursor at
//! the folder's current end without notifying the mail in it: UIDs from before mean
//! nothing any more, and notifying a whole folder again would be a flood of old mail. The
//! warning (visible in the status) says mail that arrived since the last check may have
//! been missed.
//!
//! Stored: the subscription's `source` JSON without the password; the whole account,
//! password included, sealed with the data dir's key in `source_secrets` (written in the
//! subscription's own transaction, deleted when the last subscription goes); the cursor
//! and the status in `avatar_state`. The password is never serialized anywhere else:
//! [`Password`] has no `Serialize` and a redacted `Debug`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidings_bus::avatars::{Context, Runtime};
use tidings_core::ids::source_avatar;
use tidings_core::{Notification, NotificationId, Priority};
use tidings_sources::imap::{
    ImapAccount, ImapClient, ImapConfig, ImapCursor, ImapError, NewMail, TlsMode,
};
use tidings_store::rusqlite::OptionalExtension as _;
use tidings_store::{SecretBox, Store, now_ms, rusqlite};
use tokio::sync::{oneshot, watch};

use super::{SourceAvatar, SourceMsg};
use crate::ingest::Ingest;
use crate::services::Services;
use crate::user::SourceSpec;
use crate::{Error, Result};

/// The reminder that (re)starts the connection task: next poll, retry, or watchdog.
pub const REMINDER: &str = "imap";

/// While a session is live, the watchdog reminder is re-armed this far ahead: the most an
/// IMAP source stays silent after a crash.
const WATCHDOG: Duration = Duration::from_secs(120);
/// First retry after an error, doubled per consecutive error.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
/// First retry after a refused login: a wrong password does not fix itself, and servers
/// lock accounts that fail too often.
const BACKOFF_AUTH_MIN: Duration = Duration::from_secs(5 * 60);
/// Longest retry delay (also bounded by `sources.max_backoff`).
const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// The whole login check at subscribe time.
const CHECK_TIMEOUT: Duration = Duration::from_secs(25);
/// Warnings kept in the status.
const MAX_WARNINGS: usize = 10;

const MAX_HOST_LEN: usize = 253;
const MAX_USERNAME_LEN: usize = 256;
const MAX_PASSWORD_LEN: usize = 1024;
const MAX_FOLDER_LEN: usize = 255;

/// Run ids are unique in the process, so a task left over from an earlier activation is
/// never mistaken for the current one.
static RUNS: AtomicU64 = AtomicU64::new(1);

/// An IMAP password as the API receives it. It has no `Serialize`, so it cannot end up in
/// stored JSON or an answer, and its `Debug` is redacted.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(s: impl Into<String>) -> Password {
        Password(s.into())
    }

    /// The password itself, for the login and for sealing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `tls` when the subscription does not say: implicit TLS (port 993).
pub fn default_tls() -> TlsMode {
    TlsMode::Implicit
}

/// `folder` when the subscription does not say.
pub fn default_folder() -> String {
    "INBOX".to_owned()
}

/// The account of a subscription, normalized: host trimmed and lowercased, the port filled
/// in from the TLS mode, `INBOX` in its canonical case, the password checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub folder: String,
}

/// Validates and normalizes an IMAP subscription's fields.
pub fn normalize(
    host: &str,
    port: Option<u16>,
    tls: TlsMode,
    username: &str,
    password: &Password,
    folder: &str,
) -> Result<Normalized> {
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() {
        return Err(Error::Invalid("host is required".into()));
    }
    if host.len() > MAX_HOST_LEN
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
    {
        return Err(Error::Invalid(format!(
            "host {host:?} is not a host name or an IP address (use the ASCII form of \
             international names)"
        )));
    }
    let port = port.unwrap_or_else(|| tls.default_port());
    if port == 0 {
        return Err(Error::Invalid("port 0 is not a port".into()));
    }
    let username = username.trim();
    if username.is_empty() {
        return Err(Error::Invalid("username is required".into()));
    }
    if username.len() > MAX_USERNAME_LEN || username.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "username is at most {MAX_USERNAME_LEN} bytes without control characters"
        )));
    }
    let pw = password.expose();
    if pw.is_empty() {
        return Err(Error::Invalid("password is required".into()));
    }
    if pw.len() > MAX_PASSWORD_LEN || pw.contains(['\0', '\r', '\n']) {
        return Err(Error::Invalid(format!(
            "password is at most {MAX_PASSWORD_LEN} bytes without NUL or line breaks"
        )));
    }
    let folder = folder.trim();
    let folder = if folder.is_empty() || folder.eq_ignore_ascii_case("INBOX") {
        default_folder()
    } else {
        folder.to_owned()
    };
    if folder.len() > MAX_FOLDER_LEN || folder.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "folder is at most {MAX_FOLDER_LEN} bytes without control characters"
        )));
    }
    Ok(Normalized {
        host,
        port,
        username: username.to_owned(),
        folder,
    })
}

/// The source id of a user's mailbox folder: `imap:<first 16 hex of sha256>` over the
/// owner's id, host, port, user name and folder (already normalized). The TLS mode and the
/// password are not part of it: changing them is the same mailbox.
pub fn source_id(user_id: i64, host: &str, port: u16, username: &str, folder: &str) -> String {
    let d = Sha256::new()
        .chain_update(user_id.to_string().as_bytes())
        .chain_update([0])
        .chain_update(host.as_bytes())
        .chain_update([0])
        .chain_update(port.to_string().as_bytes())
        .chain_update([0])
        .chain_update(username.as_bytes())
        .chain_update([0])
        .chain_update(folder.as_bytes())
        .finalize();
    format!("imap:{}", &hex::encode(d)[..16])
}

/// The account of a normalized IMAP spec (`None` for other kinds).
pub fn account_of(spec: &SourceSpec) -> Option<ImapAccount> {
    match spec {
        SourceSpec::Imap {
            host,
            port,
            tls,
            username,
            password,
            folder,
        } => Some(ImapAccount {
            host: host.clone(),
            port: port.unwrap_or_else(|| tls.default_port()),
            tls: *tls,
            username: username.clone(),
            password: password.expose().to_owned(),
            folder: folder.clone(),
        }),
        _ => None,
    }
}

/// What `source_secrets.secret` holds, sealed: the account, bound to its source id.
#[derive(Serialize, Deserialize)]
struct SealedAccount {
    source_id: String,
    account: ImapAccount,
}

/// The sealed account of an IMAP spec, for [`store_sealed`] (`None` for other kinds).
pub fn seal(secrets: &SecretBox, source_id: &str, spec: &SourceSpec) -> Option<Vec<u8>> {
    let account = account_of(spec)?;
    let json = serde_json::to_vec(&SealedAccount {
        source_id: source_id.to_owned(),
        account,
    })
    .ok()?;
    Some(secrets.seal(&json))
}

fn open(secrets: &SecretBox, source_id: &str, sealed: &[u8]) -> Result<ImapAccount, String> {
    let plain = secrets.open(sealed).map_err(|e| e.to_string())?;
    let s: SealedAccount =
        serde_json::from_slice(&plain).map_err(|e| format!("unreadable account: {e}"))?;
    if s.source_id != source_id {
        return Err("the sealed account belongs to another source".into());
    }
    Ok(s.account)
}

/// Part of the subscription's transaction: stores the sealed account and keeps the
/// subscription's `source` (without password) in step with it, since subscribing again
/// may change the TLS mode.
pub fn store_sealed(
    c: &rusqlite::Connection,
    user_id: i64,
    source_id: &str,
    source_json: &str,
    sealed: &[u8],
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO source_secrets(source_id, secret, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(source_id) DO UPDATE SET secret = excluded.secret, updated_at = excluded.updated_at",
    )?
    .execute(rusqlite::params![source_id, sealed, now_ms()])?;
    c.prepare_cached("UPDATE subscriptions SET source = ?1 WHERE user_id = ?2 AND source_id = ?3")?
        .execute(rusqlite::params![source_json, user_id, source_id])?;
    Ok(())
}

/// Operator settings for IMAP connections, from the web sources' address policy: private
/// networks and the allowlist as for feeds. Plain IMAP (no TLS) goes to loopback always,
/// elsewhere only when the operator allows private networks (a home server reading its
/// LAN mailbox).
pub fn config(env: &Services) -> ImapConfig {
    let fetch = env.fetcher.config();
    ImapConfig {
        allow_private_networks: fetch.allow_private_networks,
        allowlist: fetch.allowlist.clone(),
        allow_plaintext: fetch.allow_private_networks,
        ..ImapConfig::default()
    }
}

/// Why a subscription to a mailbox was refused.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Invalid(#[from] Error),
    /// The login check failed; the text is meant for the user.
    #[error(transparent)]
    Login(#[from] ImapError),
    #[error(transparent)]
    Avatar(#[from] tidings_bus::avatars::Error),
}

/// The subscribe-time check, before anything is saved: logs in (bounded in time), opens
/// the folder and takes its current end as the starting point, which the source avatar
/// keeps if the mailbox is not watched yet, so mail arriving right after the subscription
/// is answered is notified. `spec` is normalized.
pub async fn prepare(
    env: &Services,
    source_id: &str,
    spec: &SourceSpec,
    ask_timeout: Duration,
) -> Result<(), PrepareError> {
    let account = account_of(spec)
        .ok_or_else(|| Error::Invalid("not an IMAP source".into()))
        .map_err(PrepareError::Invalid)?;
    let cfg = ImapConfig {
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(15),
        ..config(env)
    };
    let check = async {
        let mut client = ImapClient::connect(&account, &cfg).await?;
        let fetched = client.fetch_new(None).await;
        client.logout().await;
        fetched.map(|(_, cursor, _)| cursor)
    };
    let cursor = tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .map_err(|_| ImapError::Timeout)??;
    env.sources()
        .ask(
            &source_avatar(source_id),
            |reply| SourceMsg::Imap(ImapMsg::Baseline { cursor, reply }),
            ask_timeout,
        )
        .await?;
    Ok(())
}

/// Messages of the IMAP part of a source avatar.
#[derive(Debug)]
pub enum ImapMsg {
    /// The subscribe-time check found the folder's current end.
    Baseline {
        cursor: ImapCursor,
        reply: oneshot::Sender<()>,
    },
    /// The task found mail after its cursor (or a new cursor: first look, UIDVALIDITY
    /// change). Answered `true` once the mail is durably queued and the cursor taken.
    Fetched {
        run: u64,
        mails: Vec<NewMail>,
        cursor: ImapCursor,
        warnings: Vec<String>,
        reply: oneshot::Sender<bool>,
    },
    /// The task is up to date with the folder (and, with `idle`, waits for news).
    Checked { run: u64, idle: bool },
    /// The task ended: a poll done (`Ok`), or a failure.
    Ended {
        run: u64,
        result: Result<(), Failure>,
    },
}

/// Why a session ended badly.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    /// The server refused the login: retry slowly.
    pub auth: bool,
}

impl From<ImapError> for Failure {
    fn from(e: ImapError) -> Self {
        Failure {
            auth: matches!(e, ImapError::Auth(_)),
            message: e.to_string(),
        }
    }
}

/// The status of an IMAP source in `GET /api/v1/subscriptions/{id}`: the fields of a feed's
/// poll status (so clients read both alike) and the mailbox's own.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImapStatus {
    /// `imaps://host:port/folder` (implicit TLS) or `imap://...`; never the password.
    pub url: String,
    pub title: Option<String>,
    /// `new` (not checked yet), `ok` or `error`.
    pub status: String,
    /// Last successful check (ms).
    pub last_fetch: Option<i64>,
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
    /// Next poll or retry (ms); `null` while connected with IDLE.
    pub next_poll: Option<i64>,
    pub consecutive_errors: u32,
    /// Messages found since the subscription (all of them are notified: filters apply later).
    pub items_seen: u64,
    pub items_notified: u64,
    pub websub: bool,
    /// `idle` (connected, the server pushes news) or `poll`; `null` before the first check.
    pub mode: Option<String>,
    pub connected: bool,
    pub username: Option<String>,
    pub uid_validity: Option<u32>,
    pub last_uid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Idle,
    Poll,
}

/// What is stored in `avatar_state` for an IMAP source (no credentials).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ImapState {
    cursor: Option<ImapCursor>,
    /// `new`, `ok` or `error`.
    status: String,
    mode: Option<Mode>,
    last_check: Option<i64>,
    last_error: Option<String>,
    warnings: Vec<String>,
    next_poll: Option<i64>,
    consecutive_errors: u32,
    /// Subscribers were told the mailbox is failing (and get one notice when it recovers).
    failing: bool,
    messages: u64,
}

impl ImapState {
    fn fresh(cursor: Option<ImapCursor>) -> ImapState {
        ImapState {
            cursor,
            status: "new".into(),
            ..ImapState::default()
        }
    }

    fn warn(&mut self, w: String) {
        self.warnings.push(w);
        if self.warnings.len() > MAX_WARNINGS {
            let extra = self.warnings.len() - MAX_WARNINGS;
            self.warnings.drain(..extra);
        }
    }
}

/// The live connection task, as the avatar sees it.
struct Run {
    id: u64,
    stop: watch::Sender<bool>,
    /// Connected with IDLE (the watchdog is armed).
    idle: bool,
    last_heard: i64,
}

/// The IMAP part of a source avatar.
pub struct ImapSource {
    account: Option<ImapAccount>,
    /// Why the stored account could not be used (shown as the error).
    account_error: Option<String>,
    state: ImapState,
    run: Option<Run>,
}

/// What to tell subscribers about the mailbox itself.
enum Notice {
    Failing(String),
    Recovered,
}

impl ImapSource {
    /// Loads the cursor and status, and opens the sealed account.
    pub async fn load(env: &Services, source_id: &str) -> tidings_store::Result<ImapSource> {
        let id = source_id.to_owned();
        let (stored, sealed): (Option<String>, Option<Vec<u8>>) = env
            .store
            .read(move |c| {
                let stored = c
                    .query_row(
                        "SELECT state FROM avatar_state WHERE avatar_id = ?1",
                        [format!("source:{id}")],
                        |r| r.get(0),
                    )
                    .optional()?;
                let sealed = c
                    .query_row(
                        "SELECT secret FROM source_secrets WHERE source_id = ?1",
                        [&id],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok((stored, sealed))
            })
            .await?;
        let state = stored
            .and_then(|s| serde_json::from_str::<ImapState>(&s).ok())
            .unwrap_or_else(|| ImapState::fresh(None));
        let (account, account_error) = match sealed.map(|s| open(&env.secrets, source_id, &s)) {
            None => (None, None),
            Some(Ok(a)) => (Some(a), None),
            Some(Err(e)) => {
                tracing::error!(source = %source_id, error = %e, "sealed IMAP account unusable");
                (
                    None,
                    Some(format!(
                        "the stored IMAP password cannot be read ({e}); subscribe again with \
                         the password"
                    )),
                )
            }
        };
        Ok(ImapSource {
            account,
            account_error,
            state,
            run: None,
        })
    }

    /// The status for the API.
    pub fn status(&self) -> ImapStatus {
        let a = self.account.as_ref();
        let url = a.map(|a| {
            let scheme = if a.tls == TlsMode::Implicit {
                "imaps"
            } else {
                "imap"
            };
            format!("{scheme}://{}:{}/{}", a.host, a.port, a.folder)
        });
        let s = &self.state;
        let (status, last_error) = match (&self.account_error, a) {
            (Some(e), _) => ("error".to_owned(), Some(e.clone())),
            (None, _) => (
                if s.status.is_empty() {
                    "new".to_owned()
                } else {
                    s.status.clone()
                },
                s.last_error.clone(),
            ),
        };
        ImapStatus {
            url: url.unwrap_or_default(),
            title: a.map(|a| a.folder.clone()),
            status,
            last_fetch: s.last_check,
            last_error,
            warnings: s.warnings.clone(),
            next_poll: s.next_poll,
            consecutive_errors: s.consecutive_errors,
            items_seen: s.messages,
            items_notified: s.messages,
            websub: false,
            mode: s.mode.map(|m| match m {
                Mode::Idle => "idle".to_owned(),
                Mode::Poll => "poll".to_owned(),
            }),
            connected: self.run.as_ref().is_some_and(|r| r.idle),
            username: a.map(|a| a.username.clone()),
            uid_validity: s.cursor.map(|c| c.uid_validity),
            last_uid: s.cursor.map(|c| c.last_uid),
        }
    }

    /// A subscription arrived (new, or the owner subscribing again, maybe with another
    /// password or TLS mode): use its account and check the mailbox now.
    pub async fn subscribed(
        &mut self,
        source_id: &str,
        spec: Option<&SourceSpec>,
        cx: &Context<SourceAvatar>,
    ) {
        if let Some(account) = spec.and_then(account_of) {
            if self.account.as_ref() != Some(&account) {
                self.stop_run();
            }
            self.account = Some(account);
            self.account_error = None;
        }
        // Someone is waiting for this mailbox now: no backoff.
        if self.run.is_none() {
            self.start(source_id, cx).await;
        }
    }

    /// The last subscriber left: stop, forget the state, delete the sealed account (unless
    /// a new subscription has stored one meanwhile).
    pub async fn unsubscribed(&mut self, source_id: &str, cx: &Context<SourceAvatar>) {
        self.stop_run();
        self.account = None;
        self.account_error = None;
        self.state = ImapState::fresh(None);
        if let Err(e) = cx.cancel_reminder(REMINDER).await {
            tracing::warn!(source = %source_id, error = %e, "imap reminder not cancelled");
        }
        let id = source_id.to_owned();
        let r = cx
            .env()
            .store
            .write(move |c| {
                c.execute(
                    "DELETE FROM source_secrets WHERE source_id = ?1
                     AND NOT EXISTS (SELECT 1 FROM subscriptions WHERE source_id = ?1)",
                    [&id],
                )?;
                c.execute(
                    "DELETE FROM avatar_state WHERE avatar_id = ?1",
                    [format!("source:{id}")],
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(source = %source_id, error = %e, "sealed IMAP account not deleted");
        }
    }

    /// The subscribe-time check's starting point. Kept only when nobody watches the mailbox
    /// yet: a running source keeps its own cursor (no gap, no repeat).
    pub async fn baseline(
        &mut self,
        source_id: &str,
        cursor: ImapCursor,
        watched: bool,
        cx: &Context<SourceAvatar>,
    ) {
        if watched && self.state.cursor.is_some() {
            return;
        }
        self.stop_run();
        self.state = ImapState::fresh(Some(cursor));
        // Durable before the subscription is saved, so the first session starts here.
        if let Err(e) = save_now(&cx.env().store, source_id, &self.state).await {
            tracing::warn!(source = %source_id, error = %e, "imap baseline not saved");
        }
    }

    /// The reminder: next poll, retry, or the watchdog of a live session.
    pub async fn on_reminder(
        &mut self,
        source_id: &str,
        watched: bool,
        cx: &Context<SourceAvatar>,
    ) {
        if !watched || !subscribed_in_store(&cx.env().store, source_id).await {
            // The user was removed (their subscriptions with them) or nobody subscribes.
            self.unsubscribed(source_id, cx).await;
            return;
        }
        let stale_after = stale_after(cx);
        match &self.run {
            Some(run) if now_ms() - run.last_heard < stale_after => {
                let due = now_ms() + watchdog_after(run.idle, cx);
                if let Err(e) = cx.set_reminder(REMINDER, due, String::new()).await {
                    tracing::warn!(source = %source_id, error = %e, "imap watchdog not re-armed");
                }
            }
            Some(_) => {
                tracing::warn!(source = %source_id, "imap session silent for too long; restarting it");
                self.stop_run();
                self.start(source_id, cx).await;
            }
            None => self.start(source_id, cx).await,
        }
    }

    /// Passivation or shutdown: stop the session and have the reminder start it again at
    /// once (on the next start of the server, or right away after an idle passivation).
    pub async fn passivate(&mut self, source_id: &str, cx: &Context<SourceAvatar>) {
        if self.run.is_some() {
            self.stop_run();
            if let Err(e) = cx.set_reminder(REMINDER, now_ms(), String::new()).await {
                tracing::warn!(source = %source_id, error = %e, "imap resume reminder not set");
            }
        }
    }

    /// A message of the connection task (or the subscribe-time check).
    pub async fn handle(
        &mut self,
        source_id: &str,
        msg: ImapMsg,
        watched: bool,
        cx: &Context<SourceAvatar>,
    ) {
        match msg {
            ImapMsg::Baseline { cursor, reply } => {
                self.baseline(source_id, cursor, watched, cx).await;
                let _ = reply.send(());
            }
            ImapMsg::Fetched {
                run,
                mails,
                cursor,
                warnings,
                reply,
            } => {
                let ok = self.is_current(run)
                    && self.fetched(source_id, mails, cursor, warnings, cx).await;
                let _ = reply.send(ok);
            }
            ImapMsg::Checked { run, idle } => {
                if self.is_current(run) {
                    self.checked(source_id, idle, cx).await;
                }
            }
            ImapMsg::Ended { run, result } => {
                if self.is_current(run) {
                    self.run = None;
                    self.ended(source_id, result, watched, cx).await;
                }
            }
        }
    }

    fn is_current(&mut self, run: u64) -> bool {
        match &mut self.run {
            Some(r) if r.id == run => {
                r.last_heard = now_ms();
                true
            }
            _ => false,
        }
    }

    fn stop_run(&mut self) {
        if let Some(run) = self.run.take() {
            let _ = run.stop.send(true);
        }
    }

    /// Starts the connection task, with a watchdog reminder in case it never reports.
    async fn start(&mut self, source_id: &str, cx: &Context<SourceAvatar>) {
        let Some(account) = self.account.clone() else {
            // Nothing to log in with (the sealed account is missing or unreadable): say so
            // in the status; subscribing again with the password starts the source.
            tracing::warn!(source = %source_id, "imap source without a usable account; not started");
            self.state.status = "error".into();
            self.state.last_error = Some(self.account_error.clone().unwrap_or_else(|| {
                "the mailbox's password is not stored; subscribe again with it".into()
            }));
            save(&cx.env().store, source_id, &self.state).await;
            return;
        };
        let env = cx.env();
        let cfg = config(env);
        let chunk = idle_chunk(cx.runtime().config().idle_timeout);
        let session_watchdog = cfg.connect_timeout + cfg.read_timeout * 4 + Duration::from_secs(60);
        if let Err(e) = cx
            .set_reminder(
                REMINDER,
                now_ms() + session_watchdog.as_millis() as i64,
                String::new(),
            )
            .await
        {
            tracing::warn!(source = %source_id, error = %e, "imap watchdog not set");
        }
        let id = RUNS.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        self.run = Some(Run {
            id,
            stop,
            idle: false,
            last_heard: now_ms(),
        });
        self.state.next_poll = None;
        let session = Session {
            runtime: cx.runtime(),
            avatar: cx.id().to_owned(),
            run: id,
            account,
            cfg,
            cursor: self.state.cursor,
            chunk,
            stop: stopped,
        };
        tokio::spawn(session.run());
    }

    /// Appends each message to the durable ingest queue, then takes the cursor.
    async fn fetched(
        &mut self,
        source_id: &str,
        mails: Vec<NewMail>,
        cursor: ImapCursor,
        warnings: Vec<String>,
        cx: &Context<SourceAvatar>,
    ) -> bool {
        let env = cx.env();
        let target = source_avatar(source_id);
        let n = mails.len() as u64;
        for mail in mails {
            let payload = match serde_json::to_string(&Ingest::Mail {
                raw_b64: base64::engine::general_purpose::STANDARD.encode(&mail.raw),
                label: None,
                mail_from: String::new(),
                received_at: now_ms(),
            }) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(source = %source_id, error = %e, "cannot encode mail");
                    return false;
                }
            };
            if let Err(e) = env.queue().append(target.clone(), payload).await {
                // The cursor stays: the session fetches the same mail again after a retry.
                tracing::error!(source = %source_id, error = %e, "new mail not queued");
                return false;
            }
        }
        metrics::counter!("tidings_imap_messages_total").increment(n);
        for w in warnings {
            tracing::warn!(source = %source_id, warning = %w, "imap");
            self.state.warn(w);
        }
        self.state.cursor = Some(cursor);
        self.state.messages += n;
        save(&env.store, source_id, &self.state).await;
        true
    }

    async fn checked(&mut self, source_id: &str, idle: bool, cx: &Context<SourceAvatar>) {
        let recovered = self.state.failing;
        let changed = self.state.status != "ok"
            || self.state.consecutive_errors > 0
            || self.state.mode != Some(if idle { Mode::Idle } else { Mode::Poll });
        self.state.status = "ok".into();
        self.state.last_check = Some(now_ms());
        self.state.last_error = None;
        self.state.consecutive_errors = 0;
        self.state.failing = false;
        self.state.mode = Some(if idle { Mode::Idle } else { Mode::Poll });
        if idle
            && let Some(run) = &mut self.run
            && !run.idle
        {
            run.idle = true;
            let due = now_ms() + watchdog_after(true, cx);
            if let Err(e) = cx.set_reminder(REMINDER, due, String::new()).await {
                tracing::warn!(source = %source_id, error = %e, "imap watchdog not set");
            }
        }
        if recovered {
            self.notify(source_id, Notice::Recovered, cx).await;
        }
        if changed || recovered {
            save(&cx.env().store, source_id, &self.state).await;
        }
    }

    async fn ended(
        &mut self,
        source_id: &str,
        result: Result<(), Failure>,
        watched: bool,
        cx: &Context<SourceAvatar>,
    ) {
        let env = cx.env();
        let now = now_ms();
        let jitter: f64 = rand::random();
        let next = match result {
            Ok(()) => now + poll_interval(env.schedule.min_interval, env.schedule.jitter, jitter),
            Err(f) => {
                tracing::info!(source = %source_id, error = %f.message, "imap session failed");
                self.state.status = "error".into();
                self.state.last_error = Some(f.message.clone());
                self.state.consecutive_errors = self.state.consecutive_errors.saturating_add(1);
                let delay = backoff(
                    self.state.consecutive_errors,
                    f.auth,
                    env.schedule.max_backoff,
                    jitter,
                );
                if self.state.consecutive_errors >= env.schedule.failing_after.max(1)
                    && !self.state.failing
                {
                    self.state.failing = true;
                    self.notify(source_id, Notice::Failing(f.message), cx).await;
                }
                now + delay.as_millis() as i64
            }
        };
        self.state.next_poll = Some(next);
        save(&env.store, source_id, &self.state).await;
        if watched && let Err(e) = cx.set_reminder(REMINDER, next, String::new()).await {
            tracing::warn!(source = %source_id, error = %e, "next imap check not scheduled");
        }
    }

    /// Tells every subscriber about the mailbox itself, through the durable queue.
    async fn notify(&self, source_id: &str, notice: Notice, cx: &Context<SourceAvatar>) {
        let name = match &self.account {
            Some(a) => format!("{}@{}/{}", a.username, a.host, a.folder),
            None => source_id.to_owned(),
        };
        let n = notice_notification(source_id, &name, &notice, now_ms());
        let payload = match serde_json::to_string(&Ingest::Publish {
            notification: n,
            bypass_filters: true,
            reply_url: None,
        }) {
            Ok(p) => p,
            Err(_) => return,
        };
        if let Err(e) = cx
            .env()
            .queue()
            .append(source_avatar(source_id), payload)
            .await
        {
            tracing::warn!(source = %source_id, error = %e, "imap notice not queued");
        }
    }
}

/// The notification about the mailbox itself (failing, working again).
fn notice_notification(source_id: &str, name: &str, notice: &Notice, now: i64) -> Notification {
    let (title, message, priority, tag) = match notice {
        Notice::Failing(reason) => (
            format!("Mailbox failing: {name}"),
            format!(
                "tidings cannot check {name}: {reason}. It keeps trying and will tell you when \
                 it works again; if the password changed, subscribe again with the new one."
            ),
            Priority::High,
            "warning",
        ),
        Notice::Recovered => (
            format!("Mailbox working again: {name}"),
            format!("tidings can check {name} again."),
            Priority::Default,
            "ok",
        ),
    };
    Notification {
        id: NotificationId::new(now),
        time: now / 1000,
        event: "message".into(),
        source: source_id.to_owned(),
        topic: None,
        title: Some(title),
        message,
        priority,
        tags: vec![tag.to_owned(), "mail".to_owned()],
        click: None,
        actions: Vec::new(),
        author: Some("tidings".into()),
    }
}

/// IDLE lasts at most this long before the session re-issues it (and reports, which keeps
/// the avatar active): a third of the runtime's idle timeout, between 1 s and 25 minutes.
fn idle_chunk(idle_timeout: Duration) -> Duration {
    (idle_timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(25 * 60))
}

/// How far ahead the watchdog is set while a session runs.
fn watchdog_after(idle: bool, cx: &Context<SourceAvatar>) -> i64 {
    if idle {
        WATCHDOG.as_millis() as i64
    } else {
        stale_after(cx)
    }
}

/// A live session that has not reported for this long is presumed stuck.
fn stale_after(cx: &Context<SourceAvatar>) -> i64 {
    let cfg = config(cx.env());
    let chunk = idle_chunk(cx.runtime().config().idle_timeout);
    (chunk + cfg.connect_timeout + cfg.read_timeout * 4 + Duration::from_secs(60)).as_millis()
        as i64
}

/// Delay before the next attempt after `errors` consecutive failures: from 5 s (5 min
/// after a refused login), doubling, at most an hour and `max`, ±10 % (`jitter` in 0..1).
fn backoff(errors: u32, auth: bool, max: Duration, jitter: f64) -> Duration {
    let base = if auth { BACKOFF_AUTH_MIN } else { BACKOFF_MIN };
    let cap = BACKOFF_MAX.min(max).max(base);
    let doublings = errors.saturating_sub(1).min(20);
    let d = base.saturating_mul(1 << doublings).min(cap);
    d.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// Delay between polls of a server without IDLE: `sources.min_interval`, jittered.
fn poll_interval(interval: Duration, spread: f64, jitter: f64) -> i64 {
    let spread = spread.clamp(0.0, 0.5);
    let factor = 1.0 - spread + 2.0 * spread * jitter.clamp(0.0, 1.0);
    (interval.mul_f64(factor).as_millis() as i64).max(1000)
}

async fn subscribed_in_store(store: &Store, source_id: &str) -> bool {
    let id = source_id.to_owned();
    store
        .read(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE source_id = ?1)",
                [id],
                |r| r.get::<_, bool>(0),
            )
        })
        .await
        // When in doubt, keep watching.
        .unwrap_or(true)
}

const UPSERT_STATE: &str =
    "INSERT INTO avatar_state(avatar_id, state, updated_at) VALUES (?1, ?2, ?3)
     ON CONFLICT(avatar_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";

/// Writes the state behind: a lost write only means mail is fetched again and deduplicated.
async fn save(store: &Store, source_id: &str, state: &ImapState) {
    let Ok(json) = serde_json::to_string(state) else {
        return;
    };
    let id = format!("source:{source_id}");
    let r = store
        .submit(
            move |c| {
                c.prepare_cached(UPSERT_STATE)?
                    .execute(rusqlite::params![id, json, now_ms()])
            },
            |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "imap state not saved");
                }
            },
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "imap state not queued for saving");
    }
}

/// Writes the state and waits until it is durable.
async fn save_now(store: &Store, source_id: &str, state: &ImapState) -> tidings_store::Result<()> {
    let json = serde_json::to_string(state).unwrap_or_default();
    let id = format!("source:{source_id}");
    store
        .write(move |c| {
            c.prepare_cached(UPSERT_STATE)?
                .execute(rusqlite::params![id, json, now_ms()])
        })
        .await?;
    Ok(())
}

/// How a session ended, when it was not a failure.
enum End {
    /// Told to stop (or the avatar runtime is gone): nothing to report.
    Stopped,
    /// A server without IDLE was checked: the avatar schedules the next poll.
    PollDone,
}

/// The connection task of one IMAP source: connect, fetch what is new (each batch durably
/// queued by the avatar before the next), then IDLE and repeat, or end after one check on
/// a server without IDLE. Reports to the avatar; never waits on anything it does not own
/// except the avatar's answer to `Fetched`.
struct Session {
    runtime: Runtime<SourceAvatar>,
    avatar: String,
    run: u64,
    account: ImapAccount,
    cfg: ImapConfig,
    cursor: Option<ImapCursor>,
    chunk: Duration,
    stop: watch::Receiver<bool>,
}

impl Session {
    async fn run(mut self) {
        let result = match self.work().await {
            Ok(End::Stopped) => return,
            Ok(End::PollDone) => Ok(()),
            Err(f) => Err(f),
        };
        let run = self.run;
        self.tell(ImapMsg::Ended { run, result }).await;
    }

    /// False when the avatar cannot be reached (the runtime shut down).
    async fn tell(&self, msg: ImapMsg) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        self.runtime
            .tell(&self.avatar, SourceMsg::Imap(msg))
            .await
            .is_ok()
    }

    async fn work(&mut self) -> Result<End, Failure> {
        let mut stop = self.stop.clone();
        let mut client = tokio::select! {
            r = ImapClient::connect(&self.account, &self.cfg) => r?,
            () = stopped(&mut stop) => return Ok(End::Stopped),
        };
        let end = self.serve(&mut client).await;
        client.logout().await;
        end
    }

    async fn serve(&mut self, client: &mut ImapClient) -> Result<End, Failure> {
        let idle = client.supports_idle();
        let mut stop = self.stop.clone();
        loop {
            // Everything new, in bounded batches, each durable before the next is fetched.
            loop {
                let (mails, cursor, warnings) = tokio::select! {
                    r = client.fetch_new(self.cursor) => r?,
                    () = stopped(&mut stop) => return Ok(End::Stopped),
                };
                if mails.is_empty() && warnings.is_empty() && Some(cursor) == self.cursor {
                    break;
                }
                let more = !mails.is_empty();
                let (reply, applied) = oneshot::channel();
                let run = self.run;
                let msg = ImapMsg::Fetched {
                    run,
                    mails,
                    cursor,
                    warnings,
                    reply,
                };
                if !self.tell(msg).await {
                    return Ok(End::Stopped);
                }
                let applied = tokio::select! {
                    r = applied => r.unwrap_or(false),
                    () = stopped(&mut stop) => return Ok(End::Stopped),
                };
                if !applied {
                    return Err(Failure {
                        message: "new mail could not be queued; it is fetched again".into(),
                        auth: false,
                    });
                }
                self.cursor = Some(cursor);
                if !more {
                    break;
                }
            }
            let run = self.run;
            if !self.tell(ImapMsg::Checked { run, idle }).await {
                return Ok(End::Stopped);
            }
            if !idle {
                return Ok(End::PollDone);
            }
            // Whether news came or the chunk ran out, look again: a cheap safety net too.
            tokio::select! {
                r = client.idle(self.chunk) => { r?; }
                () = stopped(&mut stop) => return Ok(End::Stopped),
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::new(s)
    }

    #[test]
    fn normalize_fills_defaults_and_canonical_forms() {
        let n = normalize(
            " Mail.Example.ORG ",
            None,
            TlsMode::Implicit,
            " alice ",
            &pw("x"),
            "inbox",
        )
        .unwrap();
        assert_eq!(
            n,
            Normalized {
                host: "mail.example.org".into(),
                port: 993,
                username: "alice".into(),
                folder: "INBOX".into(),
            }
        );
        let n = normalize("h", None, TlsMode::StartTls, "a", &pw("x"), "").unwrap();
        assert_eq!((n.port, n.folder.as_str()), (143, "INBOX"));
        let n = normalize("h", Some(1143), TlsMode::Plain, "a", &pw("x"), "Lists/Rust").unwrap();
        assert_eq!((n.port, n.folder.as_str()), (1143, "Lists/Rust"));
        // Folders other than INBOX keep their case.
        let n = normalize("h", None, TlsMode::Implicit, "a", &pw("x"), "Alerts").unwrap();
        assert_eq!(n.folder, "Alerts");
    }

    #[test]
    fn normalize_refuses_bad_fields() {
        let ok = |h: &str, p: Option<u16>, u: &str, pass: &str, f: &str| {
            normalize(h, p, TlsMode::Implicit, u, &pw(pass), f).is_ok()
        };
        assert!(ok("imap.example.org", None, "a", "p", "INBOX"));
        assert!(ok("[::1]", None, "a", "p", "INBOX"));
        assert!(!ok("", None, "a", "p", "INBOX"));
        assert!(!ok("a b", None, "a", "p", "INBOX"));
        assert!(!ok("host/path", None, "a", "p", "INBOX"));
        assert!(!ok("exämple.org", None, "a", "p", "INBOX"));
        assert!(!ok("h", Some(0), "a", "p", "INBOX"));
        assert!(!ok("h", None, " ", "p", "INBOX"));
        assert!(!ok("h", None, "a\r\nb", "p", "INBOX"));
        assert!(!ok("h", None, "a", "", "INBOX"));
        assert!(!ok("h", None, "a", "p\0q", "INBOX"));
        assert!(!ok("h", None, "a", "p\r\nq", "INBOX"));
        assert!(!ok("h", None, "a", &"p".repeat(2000), "INBOX"));
        assert!(!ok("h", None, "a", "p", "bad\u{7}folder"));
        // A space and non-ASCII are fine in a password.
        assert!(ok("h", None, "a", "s3cret pässword", "INBOX"));
    }

    #[test]
    fn source_id_is_stable_and_per_owner_and_mailbox() {
        let id = source_id(7, "mail.example.org", 993, "alice", "INBOX");
        assert!(id.starts_with("imap:"));
        assert_eq!(id.len(), "imap:".len() + 16);
        assert_eq!(id, source_id(7, "mail.example.org", 993, "alice", "INBOX"));
        for other in [
            source_id(8, "mail.example.org", 993, "alice", "INBOX"),
            source_id(7, "mail.example.net", 993, "alice", "INBOX"),
            source_id(7, "mail.example.org", 143, "alice", "INBOX"),
            source_id(7, "mail.example.org", 993, "bob", "INBOX"),
            source_id(7, "mail.example.org", 993, "alice", "Alerts"),
            // Field boundaries matter: no concatenation collisions.
            source_id(7, "mail.example.org", 993, "alic", "eINBOX"),
        ] {
            assert_ne!(id, other);
        }
    }

    fn spec(password: &str) -> SourceSpec {
        SourceSpec::Imap {
            host: "imap.example.org".into(),
            port: Some(993),
            tls: TlsMode::Implicit,
            username: "alice".into(),
            password: pw(password),
            folder: "INBOX".into(),
        }
    }

    #[test]
    fn the_password_is_never_serialized_nor_debug_printed() {
        let s = spec("hunter2-secret");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!json.contains("password"), "{json}");
        assert!(!format!("{s:?}").contains("hunter2"));
        // It reads back (without the password) from what is stored.
        let back: SourceSpec = serde_json::from_str(&json).unwrap();
        match back {
            SourceSpec::Imap { password, tls, .. } => {
                assert_eq!(password, Password::default());
                assert_eq!(tls, TlsMode::Implicit);
            }
            other => panic!("{other:?}"),
        }
        // The API's form: defaults for tls and folder, the password accepted.
        let api: SourceSpec =
            serde_json::from_str(r#"{"kind":"imap","host":"h","username":"u","password":"p w"}"#)
                .unwrap();
        let a = account_of(&api).unwrap();
        assert_eq!(
            (a.port, a.tls, a.folder.as_str(), a.password.as_str()),
            (993, TlsMode::Implicit, "INBOX", "p w")
        );
        let plain: SourceSpec = serde_json::from_str(
            r#"{"kind":"imap","host":"h","username":"u","password":"p","tls":"plain","port":1143}"#,
        )
        .unwrap();
        assert_eq!(account_of(&plain).unwrap().tls, TlsMode::Plain);
        assert!(
            serde_json::from_str::<SourceSpec>(
                r#"{"kind":"imap","host":"h","username":"u","password":"p","tls":"ssl"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn sealed_account_opens_only_with_its_key_and_source() {
        let key = SecretBox::ephemeral();
        let sealed = seal(&key, "imap:abc", &spec("hunter2-secret")).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let a = open(&key, "imap:abc", &sealed).unwrap();
        assert_eq!(a.password, "hunter2-secret");
        assert!(open(&key, "imap:other", &sealed).is_err());
        assert!(open(&SecretBox::ephemeral(), "imap:abc", &sealed).is_err());
        assert!(seal(&key, "topic:x", &SourceSpec::Topic { topic: "x".into() }).is_none());
    }

    #[test]
    fn backoff_doubles_from_its_floor_up_to_its_cap() {
        let max = Duration::from_secs(6 * 3600);
        let mid = 0.5; // no jitter
        assert_eq!(backoff(1, false, max, mid), Duration::from_secs(5));
        assert_eq!(backoff(2, false, max, mid), Duration::from_secs(10));
        assert_eq!(backoff(4, false, max, mid), Duration::from_secs(40));
        assert_eq!(backoff(100, false, max, mid), Duration::from_secs(3600));
        assert_eq!(backoff(1, true, max, mid), Duration::from_secs(300));
        assert_eq!(backoff(2, true, max, mid), Duration::from_secs(600));
        // The operator's cap wins when lower, but never under the floor.
        assert_eq!(
            backoff(10, false, Duration::from_secs(60), mid),
            Duration::from_secs(60)
        );
        assert_eq!(
            backoff(10, true, Duration::from_secs(60), mid),
            Duration::from_secs(300)
        );
        // ±10 %.
        assert_eq!(backoff(1, false, max, 0.0), Duration::from_millis(4500));
        assert_eq!(backoff(1, false, max, 1.0), Duration::from_millis(5500));
    }

    #[test]
    fn poll_interval_and_idle_chunk_stay_in_bounds() {
        let min = Duration::from_secs(60);
        assert_eq!(poll_interval(min, 0.1, 0.5), 60_000);
        assert_eq!(poll_interval(min, 0.1, 0.0), 54_000);
        assert_eq!(poll_interval(min, 0.1, 1.0), 66_000);
        assert_eq!(poll_interval(Duration::ZERO, 0.1, 0.5), 1000);
        assert_eq!(
            idle_chunk(Duration::from_secs(300)),
            Duration::from_secs(100)
        );
        assert_eq!(
            idle_chunk(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
        // Far under RFC 2177's 29 minutes whatever the idle timeout.
        assert_eq!(
            idle_chunk(Duration::from_secs(24 * 3600)),
            Duration::from_secs(25 * 60)
        );
    }

    #[test]
    fn state_keeps_the_last_warnings_and_reads_back() {
        let mut s = ImapState::fresh(Some(ImapCursor {
            uid_validity: 3,
            last_uid: 9,
        }));
        for i in 0..15 {
            s.warn(format!("w{i}"));
        }
        assert_eq!(s.warnings.len(), MAX_WARNINGS);
        assert_eq!(s.warnings[0], "w5");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ImapState>(&json).unwrap(), s);
    }

    #[test]
    fn status_has_the_feed_status_fields_and_no_password() {
        let src = ImapSource {
            account: account_of(&spec("hunter2-secret")),
            account_error: None,
            state: ImapState::fresh(Some(ImapCursor {
                uid_validity: 3,
                last_uid: 9,
            })),
            run: None,
        };
        let v = serde_json::to_value(src.status()).unwrap();
        for field in [
            "url",
            "title",
            "status",
            "last_fetch",
            "last_error",
            "warnings",
            "next_poll",
            "consecutive_errors",
            "items_seen",
            "items_notified",
            "websub",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
        assert_eq!(v["url"], "imaps://imap.example.org:993/INBOX");
        assert_eq!(v["status"], "new");
        assert_eq!(v["last_uid"], 9);
        assert!(!v.to_string().contains("hunter2"));
    }

    #[test]
    fn failures_tell_refused_logins_apart() {
        let f = Failure::from(ImapError::Auth("refused".into()));
        assert!(f.auth);
        let f = Failure::from(ImapError::Timeout);
        assert!(!f.auth);
        assert!(f.message.contains("did not answer"));
    }
}
