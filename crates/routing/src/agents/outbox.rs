//! The outbox agent: deliveries to a user's destinations (webhooks, mail, SMS, chat
//! services), queued durably per destination and sent by one worker per destination.
//!
//! Taking a delivery writes one `outbox` row and one `deliveries` record per chosen
//! destination in a single group commit, and answers the ack once that is durable; the
//! ingest item can then go. Sending happens afterwards, away from every avatar:
//! - one worker task per destination with something queued, sending in order (`seq`), a
//!   small batch in memory at a time: a dead destination's backlog waits on disk;
//! - a destination that hangs or fails only holds up its own worker; all workers share a
//!   bound on concurrent sends;
//! - retries with exponential backoff and jitter on timeouts, connection errors, 5xx, 408,
//!   429 (honouring `Retry-After`) and SMTP 4xx; no retry on other errors; after the last
//!   attempt the item is dead-lettered on its delivery record;
//! - a circuit breaker per destination: after `breaker_threshold` failures in a row the
//!   worker pauses (doubling up to `breaker_cooldown_max`) instead of spending every queued
//!   item's attempts on a destination that is down;
//! - every attempt (time, status, error) is appended to the delivery record, which the API
//!   shows with the notification and the destination.
//!
//! Not here: which destinations a delivery goes to (the user avatar decides), the wire
//! format of each kind (`tidings_sinks`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tidings_bus::ack::Ack;
use tidings_bus::queue::BoxFuture;
use tidings_core::Notification;
use tidings_core::secret::hash_secret;
use tidings_sinks::{DestinationConfig, Message, Outcome, Sinks};
use tidings_store::{SecretBox, Store, now_ms, rusqlite};
use tokio::sync::{Semaphore, mpsc, watch};

use super::{Agent, Delivery};
use crate::destinations::{self, Destination};

/// Tuning of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Attempts per item before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with ±25 % jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Failures in a row that open a destination's circuit.
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub breaker_cooldown_max: Duration,
    /// Sends in flight across all destinations.
    pub concurrency: usize,
    /// Items a worker reads from disk at a time.
    pub batch: usize,
    /// Public URL of the server, for links to the full item.
    pub base_url: String,
    /// Domain of per-notification reply addresses and of `List-Id`s; `None`: mail is sent
    /// without a reply address.
    pub mail_domain: Option<String>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            breaker_cooldown_max: Duration::from_secs(1800),
            concurrency: 256,
            batch: 64,
            base_url: String::new(),
            mail_domain: None,
        }
    }
}

/// Why an outbox item exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Delivery,
    /// "Send test" on a destination.
    Test,
    /// A verification code for a new destination.
    Verification,
    /// Several items in one message (a digest, or what quiet hours held).
    Digest,
}

/// What an outbox row holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxPayload {
    pub notification: Notification,
    pub purpose: Purpose,
    /// Mail only: the per-notification reply address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// The health of one destination, as the API shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Health {
    /// `ok`, `retrying` (the head item is being retried) or `open` (circuit open: paused).
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<i64>,
    pub last_success_at: Option<i64>,
    /// While the circuit is open: when the next attempt is made.
    pub paused_until: Option<i64>,
}

#[derive(Default)]
struct DestState {
    running: bool,
    rewake: bool,
    /// Removed by its user: the worker stops before its next attempt.
    removed: bool,
    /// The last row sent (delivered or dead) since this process started. A worker starts
    /// after it: the row's delete may not have committed yet, and reading from the start
    /// would send it again.
    done_seq: i64,
    health: Health,
    cooldown: Duration,
}

/// The outbox: the agent side (enqueue) and the workers (send). Cheap to share.
pub struct Outbox {
    store: Store,
    secrets: SecretBox,
    sinks: Sinks,
    cfg: OutboxConfig,
    dests: Mutex<HashMap<String, DestState>>,
    permits: Arc<Semaphore>,
    wake_tx: mpsc::UnboundedSender<String>,
    stop: watch::Sender<bool>,
}

impl Outbox {
    /// Builds the outbox and starts its scheduler, which also resumes every destination
    /// that has items queued from before a restart.
    pub fn start(store: Store, secrets: SecretBox, sinks: Sinks, cfg: OutboxConfig) -> Arc<Outbox> {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<String>();
        let (stop, _) = watch::channel(false);
        let outbox = Arc::new(Outbox {
            store,
            secrets,
            sinks,
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            dests: Mutex::new(HashMap::new()),
            wake_tx,
            stop,
        });
        let me = outbox.clone();
        tokio::spawn(async move {
            match me
                .store
                .read(|c| {
                    let mut s = c.prepare("SELECT DISTINCT destination_id FROM outbox")?;
                    let ids = s.query_map([], |r| r.get::<_, String>(0))?;
                    ids.collect::<rusqlite::Result<Vec<_>>>()
                })
                .await
            {
                Ok(ids) => ids.into_iter().for_each(|id| me.wake(id)),
                Err(e) => tracing::error!(error = %e, "queued deliveries not resumed"),
            }
            while let Some(id) = wake_rx.recv().await {
                me.clone().schedule(id);
            }
        });
        outbox
    }

    /// The wire side, for callers that send outside the outbox (relayed mail replies).
    pub fn sinks(&self) -> &Sinks {
        &self.sinks
    }

    pub fn config(&self) -> &OutboxConfig {
        &self.cfg
    }

    /// Stops the workers at their next step (what is queued stays queued).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Tells the scheduler that `destination` has new items.
    pub fn wake(&self, destination: String) {
        let _ = self.wake_tx.send(destination);
    }

    /// The health of a destination (`ok` when nothing was tried since start).
    pub fn health(&self, destination: &str) -> Health {
        let dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = dests
            .get(destination)
            .map(|d| d.health.clone())
            .unwrap_or_default();
        if h.state.is_empty() {
            h.state = "ok";
        }
        h
    }

    fn schedule(self: Arc<Self>, id: String) {
        {
            let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
            let st = dests.entry(id.clone()).or_default();
            if st.running {
                st.rewake = true;
                return;
            }
            st.running = true;
            st.rewake = false;
        }
        tokio::spawn(async move {
            let me = self.clone();
            let id2 = id.clone();
            // A panic in a worker must not leave the destination marked running forever.
            let r = tokio::spawn(async move { me.run_worker(id2).await }).await;
            if let Err(e) = r {
                tracing::error!(destination = %id, error = %e, "delivery worker failed");
                let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(st) = dests.get_mut(&id) {
                    st.running = false;
                }
            }
        });
    }

    /// Queues a test message or a verification code for one destination, outside routing.
    pub async fn enqueue_direct(
        &self,
        d: &Destination,
        notification: Notification,
        purpose: Purpose,
    ) -> crate::Result<()> {
        let reason = match purpose {
            Purpose::Test => "test requested",
            Purpose::Verification => "verification code",
            Purpose::Delivery => "delivery",
            Purpose::Digest => "digest",
        };
        let item = self.item(d, notification, purpose, reason.into());
        let user_id = d.user_id;
        self.store
            .write(move |c| insert_items(c, user_id, &[item]).map(|_| ()))
            .await?;
        self.wake(d.id.clone());
        Ok(())
    }

    /// One outbox item for `d` (with a fresh reply address for mail).
    pub fn item(
        &self,
        d: &Destination,
        notification: Notification,
        purpose: Purpose,
        reason: String,
    ) -> Item {
        let (reply_to, reply_token) = match (&d.config, &self.cfg.mail_domain, purpose) {
            (Ok(DestinationConfig::Mailto(_)), Some(domain), Purpose::Delivery) => {
                let token = reply_token();
                (Some(format!("reply+{token}@{domain}")), Some(token))
            }
            _ => (None, None),
        };
        Item {
            destination_id: d.id.clone(),
            kind: d.kind.clone(),
            reason,
            payload: OutboxPayload {
                notification,
                purpose,
                reply_to,
            },
            reply_token,
        }
    }

    fn items_for(&self, d: &Delivery) -> Vec<Item> {
        d.targets
            .iter()
            .map(|t| {
                self.item(
                    &t.destination,
                    (*d.notification).clone(),
                    Purpose::Delivery,
                    t.reason.clone(),
                )
            })
            .collect()
    }

    async fn run_worker(self: Arc<Self>, id: String) {
        let mut stop = self.stop.subscribe();
        let mut cursor = {
            let dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
            dests.get(&id).map_or(0, |d| d.done_seq)
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = self.read_batch(&id, cursor).await;
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(destination = %id, error = %e, "outbox not readable");
                    if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
                let st = dests.entry(id.clone()).or_default();
                if st.rewake {
                    st.rewake = false;
                    continue;
                }
                st.running = false;
                return;
            }
            // The destination is read once per batch, so an edit or removal takes effect
            // at the next batch.
            let dest = match self.load_destination(&id).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    // Removed: its queue went with it; the records say so.
                    let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
                    dests.remove(&id);
                    return;
                }
                Err(e) => {
                    tracing::error!(destination = %id, error = %e, "destination not readable");
                    if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            for row in batch {
                let seq = row.seq;
                if self.send_one(&dest, row, &mut stop).await.is_err() {
                    if self.is_removed(&id) {
                        let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
                        dests.remove(&id);
                    }
                    return;
                }
                cursor = seq;
                let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
                dests.entry(id.clone()).or_default().done_seq = seq;
            }
        }
    }

    /// Sends one item until delivered, failed for good, or out of attempts. `Err` means
    /// shutdown.
    async fn send_one(
        &self,
        dest: &Destination,
        row: Row,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ()> {
        let payload: OutboxPayload = match serde_json::from_str(&row.payload) {
            Ok(p) => p,
            Err(e) => {
                self.record(
                    dest,
                    &row,
                    Step::Dead,
                    attempt_json(None, Some(&format!("unreadable outbox item: {e}")), None),
                );
                return Ok(());
            }
        };
        let config = match &dest.config {
            Ok(c) => c,
            Err(e) => {
                self.record(dest, &row, Step::Dead, attempt_json(None, Some(e), None));
                return Ok(());
            }
        };
        let msg = self.message(&payload);
        let mut attempts = row.attempts;
        loop {
            if let Some(wait) = self.paused_for(&dest.id)
                && sleep_or_stop(wait, stop).await
            {
                return Err(());
            }
            if self.is_removed(&dest.id) {
                // Its queue and records went with it; nothing more is sent there.
                return Err(());
            }
            let outcome = {
                let _permit = self.permits.acquire().await;
                tokio::select! {
                    o = self.sinks.send(config, &msg) => o,
                    _ = stop.changed() => return Err(()),
                }
            };
            attempts += 1;
            match outcome {
                Outcome::Delivered { status } => {
                    self.note_success(&dest.id);
                    self.record(
                        dest,
                        &row,
                        Step::Delivered,
                        attempt_json(status, None, None),
                    );
                    return Ok(());
                }
                Outcome::Failed { status, error } => {
                    self.note_failure(&dest.id, &error);
                    self.record(
                        dest,
                        &row,
                        Step::Dead,
                        attempt_json(status, Some(&error), None),
                    );
                    return Ok(());
                }
                Outcome::Retry {
                    status,
                    error,
                    retry_after,
                } => {
                    self.note_failure(&dest.id, &error);
                    if attempts >= self.cfg.max_attempts as i64 {
                        let error = format!("{error} (gave up after {attempts} attempts)");
                        self.record(
                            dest,
                            &row,
                            Step::Dead,
                            attempt_json(status, Some(&error), None),
                        );
                        return Ok(());
                    }
                    let delay = self.backoff(attempts, retry_after);
                    self.record(
                        dest,
                        &row,
                        Step::Retrying(attempts),
                        attempt_json(status, Some(&error), Some(delay)),
                    );
                    if sleep_or_stop(delay, stop).await {
                        return Err(());
                    }
                }
            }
        }
    }

    fn message(&self, p: &OutboxPayload) -> Message {
        let n = &p.notification;
        let base = self.cfg.base_url.trim_end_matches('/');
        let domain = self
            .cfg
            .mail_domain
            .clone()
            .unwrap_or_else(|| "tidings.invalid".into());
        Message {
            notification: n.clone(),
            source_name: source_name(n),
            web_url: (p.purpose == Purpose::Delivery && !base.is_empty())
                .then(|| format!("{base}/api/v1/notifications/{}", n.id)),
            reply_to: p.reply_to.clone(),
            list_id: Some(list_id(&n.source, &domain)),
        }
    }

    /// Delay before attempt `attempts + 1`: base·2^(attempts-1) with ±25 % jitter, capped,
    /// and never shorter than the server's `Retry-After` (itself capped by `retry_max`).
    fn backoff(&self, attempts: i64, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .cfg
            .retry_base
            .saturating_mul(1u32 << (attempts.clamp(1, 20) - 1) as u32)
            .min(self.cfg.retry_max);
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        let d = exp.mul_f64(jitter).min(self.cfg.retry_max);
        match retry_after {
            Some(r) => d.max(r.min(self.cfg.retry_max)),
            None => d,
        }
    }

    /// Stops sending to a destination its user removed (the store rows go with it).
    pub fn forget(&self, destination: &str) {
        let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        dests.entry(destination.to_owned()).or_default().removed = true;
    }

    fn is_removed(&self, id: &str) -> bool {
        let dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        dests.get(id).is_some_and(|d| d.removed)
    }

    fn paused_for(&self, id: &str) -> Option<Duration> {
        let dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        let until = dests.get(id)?.health.paused_until?;
        let now = now_ms();
        (until > now).then(|| Duration::from_millis((until - now) as u64))
    }

    fn note_success(&self, id: &str) {
        let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        let st = dests.entry(id.to_owned()).or_default();
        let now = now_ms();
        st.health = Health {
            state: "ok",
            consecutive_failures: 0,
            last_error: st.health.last_error.take(),
            last_attempt_at: Some(now),
            last_success_at: Some(now),
            paused_until: None,
        };
        st.cooldown = Duration::ZERO;
    }

    fn note_failure(&self, id: &str, error: &str) {
        let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        let st = dests.entry(id.to_owned()).or_default();
        let now = now_ms();
        let h = &mut st.health;
        h.consecutive_failures += 1;
        h.last_error = Some(error.to_owned());
        h.last_attempt_at = Some(now);
        h.state = "retrying";
        h.paused_until = None;
        if h.consecutive_failures >= self.cfg.breaker_threshold {
            st.cooldown = if st.cooldown.is_zero() {
                self.cfg.breaker_cooldown
            } else {
                (st.cooldown * 2).min(self.cfg.breaker_cooldown_max)
            };
            h.state = "open";
            h.paused_until = Some(now + st.cooldown.as_millis() as i64);
            metrics::counter!("tidings_delivery_circuit_opened_total").increment(1);
        }
    }

    /// Appends an attempt to the delivery record and moves the item on. Queued for the next
    /// group commit without waiting: a crash before it lands sends the item again, which
    /// receivers drop by its idempotency key.
    fn record(&self, dest: &Destination, row: &Row, step: Step, attempt: serde_json::Value) {
        let (status, done) = match step {
            Step::Delivered => ("delivered", true),
            Step::Dead => ("dead", true),
            Step::Retrying(_) => ("retrying", false),
        };
        metrics::counter!("tidings_deliveries_total", "kind" => dest.kind.clone(), "status" => status)
            .increment(1);
        let seq = row.seq;
        let user_id = row.user_id;
        let nid = row.notification_id.clone();
        let dest_id = dest.id.clone();
        let kind = dest.kind.clone();
        let attempt = attempt.to_string();
        let store = self.store.clone();
        let write = move |c: &rusqlite::Connection| -> rusqlite::Result<()> {
            let now = now_ms();
            c.prepare_cached(
                "UPDATE deliveries SET status = ?4, updated_at = ?5,
                        attempts = json_insert(attempts, '$[#]', json(?6))
                 WHERE notification_id = ?1 AND user_id = ?2 AND destination_id = ?3
                   AND status IN ('queued', 'retrying')",
            )?
            .execute(rusqlite::params![
                nid, user_id, dest_id, status, now, attempt
            ])?;
            match step {
                Step::Retrying(n) => {
                    c.prepare_cached("UPDATE outbox SET attempts = ?2 WHERE seq = ?1")?
                        .execute(rusqlite::params![seq, n])?;
                }
                Step::Delivered | Step::Dead => {
                    c.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?
                        .execute([seq])?;
                    c.prepare_cached(
                        "INSERT INTO events(time, kind, user_id, notification_id, data)
                         VALUES (?1, ?2, ?3, ?4, json_object('channel', ?5, 'destination', ?6, 'attempt', json(?7)))",
                    )?
                    .execute(rusqlite::params![
                        now,
                        if status == "delivered" { "delivered" } else { "failed" },
                        user_id,
                        nid,
                        kind,
                        dest_id,
                        attempt
                    ])?;
                }
            }
            Ok(())
        };
        let _ = done;
        tokio::spawn(async move {
            if let Err(e) = store
                .submit(write, |r| {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "delivery record not written");
                    }
                })
                .await
            {
                tracing::error!(error = %e, "delivery record not queued");
            }
        });
    }

    async fn read_batch(&self, id: &str, after: i64) -> tidings_store::Result<Vec<Row>> {
        let id = id.to_owned();
        let limit = self.cfg.batch.max(1) as i64;
        self.store
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT seq, user_id, notification_id, payload, attempts FROM outbox
                     WHERE destination_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = s.query_map(rusqlite::params![id, after, limit], |r| {
                    Ok(Row {
                        seq: r.get(0)?,
                        user_id: r.get(1)?,
                        notification_id: r.get(2)?,
                        payload: r.get(3)?,
                        attempts: r.get(4)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn load_destination(&self, id: &str) -> tidings_store::Result<Option<Destination>> {
        let id = id.to_owned();
        let secrets = self.secrets.clone();
        self.store
            .read(move |c| destinations::load(c, &secrets, &id))
            .await
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Delivered,
    Dead,
    Retrying(i64),
}

struct Row {
    seq: i64,
    user_id: i64,
    notification_id: String,
    payload: String,
    attempts: i64,
}

/// One outbox row to write (see [`Outbox::item`]).
pub struct Item {
    destination_id: String,
    kind: String,
    reason: String,
    payload: OutboxPayload,
    reply_token: Option<String>,
}

/// Writes items (and their delivery records); an item whose record exists already (a
/// redelivery after a crash) is skipped, so nothing is sent twice from here, unless the
/// record says `held` (quiet hours, a digest): then it is queued now. Returns the
/// destinations that got something; wake them with [`Outbox::wake`] after the commit.
pub fn insert_items(
    c: &rusqlite::Connection,
    user_id: i64,
    items: &[Item],
) -> rusqlite::Result<Vec<String>> {
    let now = now_ms();
    let mut woken = Vec::new();
    for it in items {
        let nid = it.payload.notification.id.as_str();
        let fresh = c
            .prepare_cached(
                "INSERT INTO deliveries(notification_id, user_id, destination_id, kind, status, reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6)
                 ON CONFLICT(notification_id, user_id, destination_id) DO UPDATE
                 SET status = 'queued', reason = excluded.reason, updated_at = excluded.updated_at
                 WHERE deliveries.status = 'held'",
            )?
            .execute(rusqlite::params![nid, user_id, it.destination_id, it.kind, it.reason, now])?;
        if fresh == 0 {
            continue;
        }
        let payload = serde_json::to_string(&it.payload)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        c.prepare_cached(
            "INSERT OR IGNORE INTO outbox(destination_id, user_id, notification_id, payload, enqueued_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(rusqlite::params![it.destination_id, user_id, nid, payload, now])?;
        if let Some(token) = &it.reply_token {
            c.prepare_cached(
                "INSERT OR IGNORE INTO reply_tokens(token_hash, user_id, notification_id, destination_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(rusqlite::params![hash_secret(token), user_id, nid, it.destination_id, now])?;
        }
        c.prepare_cached(
            "INSERT INTO events(time, kind, user_id, source_id, notification_id, data)
             VALUES (?1, 'routed', ?2, ?3, ?4, json_object('destination', ?5, 'kind', ?6, 'reason', ?7))",
        )?
        .execute(rusqlite::params![
            now,
            user_id,
            it.payload.notification.source,
            nid,
            it.destination_id,
            it.kind,
            it.reason
        ])?;
        woken.push(it.destination_id.clone());
    }
    Ok(woken)
}

fn attempt_json(
    status: Option<u16>,
    error: Option<&str>,
    retry_in: Option<Duration>,
) -> serde_json::Value {
    let mut v = json!({"at": now_ms(), "ok": error.is_none()});
    if let Some(s) = status {
        v["status"] = json!(s);
    }
    if let Some(e) = error {
        v["error"] = json!(tidings_core::notification::truncate_chars(e, 500));
    }
    if let Some(d) = retry_in {
        v["retry_in_ms"] = json!(d.as_millis() as u64);
    }
    v
}

/// 128 random bits as 32 lowercase hex digits: safe in a mail local part however an MTA
/// folds case.
fn reply_token() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill(&mut b);
    hex::encode(b)
}

/// A human name of a notification's source.
pub fn source_name(n: &Notification) -> String {
    if let Some(t) = &n.topic {
        return t.clone();
    }
    if let Some(a) = &n.author
        && !n.source.starts_with("mail:")
    {
        return a.clone();
    }
    if n.source.starts_with("mail:") {
        return "mail".into();
    }
    n.source.clone()
}

/// `List-Id` of a source: `<topic-backups.example.org>` (RFC 2919: a dot-atom).
pub fn list_id(source: &str, domain: &str) -> String {
    let label: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    format!("<{}.{domain}>", label.trim_matches('-'))
}

/// Sleeps, or returns `true` at once when shutdown is signalled.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

/// The agent face of the outbox.
pub struct OutboxAgent {
    outbox: Arc<Outbox>,
}

impl OutboxAgent {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Self { outbox }
    }
}

impl Agent for OutboxAgent {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn deliver<'a>(&'a self, d: &'a Delivery, ack: Ack) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if d.targets.is_empty() {
                ack.ack();
                return;
            }
            let items = self.outbox.items_for(d);
            let user_id = d.user_id;
            let wake = self.outbox.wake_tx.clone();
            let r = self
                .outbox
                .store
                .submit(
                    move |c| insert_items(c, user_id, &items),
                    move |r| match r {
                        Ok(ids) => {
                            for id in ids {
                                let _ = wake.send(id);
                            }
                            ack.ack();
                        }
                        Err(e) => ack.nack(e.to_string()),
                    },
                )
                .await;
            if let Err(e) = r {
                tracing::error!(user_id, error = %e, "outbox write not queued");
            }
        })
    }
}

/// A delivery record as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub notification_id: String,
    pub destination_id: String,
    pub destination: Option<String>,
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub attempts: serde_json::Value,
    pub updated_at: i64,
}

/// The delivery records of one notification for one user.
pub async fn records_for_notification(
    store: &Store,
    user_id: i64,
    notification_id: &str,
) -> tidings_store::Result<Vec<DeliveryRecord>> {
    let nid = notification_id.to_owned();
    store
        .read(move |c| {
            query_records(
                c,
                "WHERE d.user_id = ?1 AND d.notification_id = ?2 ORDER BY d.updated_at",
                rusqlite::params![user_id, nid],
            )
        })
        .await
}

/// The newest delivery records of one destination.
pub async fn records_for_destination(
    store: &Store,
    user_id: i64,
    destination_id: &str,
    limit: usize,
) -> tidings_store::Result<Vec<DeliveryRecord>> {
    let did = destination_id.to_owned();
    store
        .read(move |c| {
            query_records(
                c,
                "WHERE d.user_id = ?1 AND d.destination_id = ?2 ORDER BY d.updated_at DESC LIMIT ?3",
                rusqlite::params![user_id, did, limit as i64],
            )
        })
        .await
}

/// How many items wait for a destination.
pub async fn pending(store: &Store, destination_id: &str) -> tidings_store::Result<i64> {
    let did = destination_id.to_owned();
    store
        .read(move |c| {
            c.query_row(
                "SELECT count(*) FROM outbox WHERE destination_id = ?1",
                [did],
                |r| r.get(0),
            )
        })
        .await
}

fn query_records(
    c: &rusqlite::Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<DeliveryRecord>> {
    let sql = format!(
        "SELECT d.notification_id, d.destination_id, x.name, d.kind, d.status, d.reason, d.attempts, d.updated_at
         FROM deliveries d LEFT JOIN destinations x ON x.id = d.destination_id {tail}"
    );
    let mut s = c.prepare_cached(&sql)?;
    let rows = s.query_map(params, |r| {
        let attempts: String = r.get(6)?;
        Ok(DeliveryRecord {
            notification_id: r.get(0)?,
            destination_id: r.get(1)?,
            destination: r.get(2)?,
            kind: r.get(3)?,
            status: r.get(4)?,
            reason: r.get(5)?,
            attempts: serde_json::from_str(&attempts).unwrap_or_else(|_| json!([])),
            updated_at: r.get(7)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_ids_are_dot_atoms() {
        assert_eq!(
            list_id("topic:backups", "example.org"),
            "<topic-backups.example.org>"
        );
        assert_eq!(list_id("mail:3:Bank", "x.org"), "<mail-3-bank.x.org>");
    }

    #[test]
    fn reply_tokens_are_long_lowercase_and_distinct() {
        let a = reply_token();
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, reply_token());
    }
}
