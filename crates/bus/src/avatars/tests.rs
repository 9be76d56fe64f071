//! Tests of the avatar runtime against a real store in a temporary directory.
//!
//! The test avatar keeps a counter in memory and "stores" it in the shared [`Env`] on
//! passivation, so a test can tell a restart from stored state from a live activation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_store::{Store, StoreOptions, Synchronous, now_ms};
use tokio::sync::{Notify, mpsc, oneshot};

use super::*;

#[derive(Default)]
struct Env {
    /// Successful activations per id.
    activations: Mutex<HashMap<String, u32>>,
    /// Live in-memory states per id (a state counts until it is dropped).
    live: Mutex<HashMap<String, i32>>,
    /// Times a second live state of one id appeared.
    violations: AtomicUsize,
    /// The "stored" counter per id, written by `passivate`.
    stored: Mutex<HashMap<String, u64>>,
    /// Every `Seq` handled: id → (sender, n) in handling order.
    handled: Mutex<HashMap<String, Vec<(u32, u64)>>>,
    /// Ids in the order they passivated.
    passivated: Mutex<Vec<String>>,
    /// Activations still to fail.
    fail_activations: AtomicUsize,
    /// Make `passivate` tell itself and record the result here.
    tell_self_in_passivate: AtomicBool,
    self_tell_results: Mutex<Vec<String>>,
    /// (id, name, payload) of every reminder handled.
    reminders: Mutex<Option<mpsc::UnboundedSender<(String, String, String)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

impl Env {
    fn new() -> (Arc<Env>, Fired) {
        let (tx, rx) = mpsc::unbounded_channel();
        let env = Env::default();
        *lock(&env.reminders) = Some(tx);
        (Arc::new(env), rx)
    }

    fn activations_of(&self, id: &str) -> u32 {
        lock(&self.activations).get(id).copied().unwrap_or(0)
    }
}

/// Counts a live state; a second live state of the same id is a violation.
struct Live {
    env: Arc<Env>,
    id: String,
}

impl Drop for Live {
    fn drop(&mut self) {
        *lock(&self.env.live).entry(self.id.clone()).or_default() -= 1;
    }
}

struct TestAvatar {
    count: u64,
    _live: Live,
}

enum Msg {
    Seq(u32, u64),
    Incr,
    Count(oneshot::Sender<u64>),
    Panic(Option<oneshot::Sender<()>>),
    /// Reports that it started, then waits for the notify.
    Block(oneshot::Sender<()>, Arc<Notify>),
    SetReminder {
        name: String,
        due_at: i64,
        payload: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Tells itself `Incr` this many times, reporting each result.
    TellSelf(usize, oneshot::Sender<Vec<Result<(), String>>>),
    AskSelf(oneshot::Sender<Result<u64, String>>),
}

impl Avatar for TestAvatar {
    type Msg = Msg;
    type Env = Env;
    const KIND: &'static str = "test";

    async fn activate(id: &str, cx: &Context<Self>) -> Result<Self, BoxError> {
        let env = cx.env();
        let failing = env
            .fail_activations
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err("store unavailable".into());
        }
        *lock(&env.activations).entry(id.to_owned()).or_default() += 1;
        {
            let mut live = lock(&env.live);
            let n = live.entry(id.to_owned()).or_default();
            *n += 1;
            if *n > 1 {
                env.violations.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = lock(&env.stored).get(id).copied().unwrap_or(0);
        Ok(TestAvatar {
            count,
            _live: Live {
                env: env.clone(),
                id: id.to_owned(),
            },
        })
    }

    async fn handle(&mut self, msg: Msg, cx: &Context<Self>) {
        match msg {
            Msg::Seq(sender, n) => {
                // Yield so that concurrent activations of one id, if any existed, would
                // interleave visibly.
                tokio::task::yield_now().await;
                lock(&cx.env().handled)
                    .entry(cx.id().to_owned())
                    .or_default()
                    .push((sender, n));
            }
            Msg::Incr => self.count += 1,
            Msg::Count(reply) => {
                let _ = reply.send(self.count);
            }
            Msg::Panic(_reply) => panic!("test panic in handle"),
            Msg::Block(started, release) => {
                let _ = started.send(());
                release.notified().await;
            }
            Msg::SetReminder {
                name,
                due_at,
                payload,
                reply,
            } => {
                let r = cx.set_reminder(&name, due_at, payload).await;
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            Msg::TellSelf(n, reply) => {
                let mut results = Vec::new();
                for _ in 0..n {
                    let r = cx.runtime().tell(cx.id(), Msg::Incr).await;
                    results.push(r.map_err(|e| e.to_string()));
                }
                let _ = reply.send(results);
            }
            Msg::AskSelf(reply) => {
                let r = cx
                    .runtime()
                    .ask(cx.id(), Msg::Count, Duration::from_secs(1))
                    .await;
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
        }
    }

    async fn on_reminder(&mut self, name: String, payload: String, cx: &Context<Self>) {
        if let Some(tx) = lock(&cx.env().reminders).as_ref() {
            let _ = tx.send((cx.id().to_owned(), name.clone(), payload.clone()));
        }
        if payload == "panic" {
            panic!("test panic in on_reminder");
        }
        // "again:N" reschedules itself under the same name N more times.
        if let Some(n) = payload
            .strip_prefix("again:")
            .and_then(|n| n.parse::<u32>().ok())
            && n > 0
        {
            let next = format!("again:{}", n - 1);
            if let Err(e) = cx.set_reminder(&name, now_ms() + 10, next).await {
                panic!("set_reminder failed: {e}");
            }
        }
    }

    async fn passivate(&mut self, cx: &Context<Self>) {
        // A flush takes time: keeps the passivating window open for racing tells.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let env = cx.env();
        lock(&env.stored).insert(cx.id().to_owned(), self.count);
        lock(&env.passivated).push(cx.id().to_owned());
        if env.tell_self_in_passivate.load(Ordering::SeqCst) {
            let r = cx.runtime().tell(cx.id(), Msg::Incr).await;
            lock(&env.self_tell_results).push(match r {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{e:?}"),
            });
        }
    }
}

fn open_store(dir: &tempfile::TempDir) -> Store {
    let opts = StoreOptions {
        synchronous: Synchronous::Normal,
        ..StoreOptions::default()
    };
    Store::open(&dir.path().join("tidings.db"), opts).unwrap()
}

fn config(idle: Duration) -> RuntimeConfig {
    RuntimeConfig {
        idle_timeout: idle,
        activate_backoff_min: Duration::from_millis(5),
        activate_backoff_max: Duration::from_millis(50),
        ..RuntimeConfig::default()
    }
}

/// (id, name, payload) of each reminder handled, in order.
type Fired = mpsc::UnboundedReceiver<(String, String, String)>;

fn setup(
    cfg: RuntimeConfig,
) -> (
    tempfile::TempDir,
    Store,
    Arc<Env>,
    Fired,
    Runtime<TestAvatar>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let (env, reminders) = Env::new();
    let rt = Runtime::new(env.clone(), store.clone(), cfg);
    (dir, store, env, reminders, rt)
}

/// Polls `cond` until it holds or `within` passes.
async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

async fn count(rt: &Runtime<TestAvatar>, id: &str) -> Result<u64, Error> {
    rt.ask(id, Msg::Count, Duration::from_secs(2)).await
}

async fn reminder_rows(store: &Store) -> i64 {
    store
        .read(|c| c.query_row("SELECT COUNT(*) FROM reminders", [], |r| r.get(0)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_activation_per_id_under_concurrent_tells_and_passivation() {
    // An idle timeout of 1 ms makes passivation race with nearly every tell.
    let (_dir, _store, env, _r, rt) = setup(config(Duration::from_millis(1)));
    const SENDERS: u32 = 12;
    const PER_SENDER: u64 = 150;
    let ids: Vec<String> = (0..4).map(|i| format!("user:{i}")).collect();
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let rt = rt.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let id = &ids[(n as usize + sender as usize) % ids.len()];
                rt.tell(id, Msg::Seq(sender, n)).await.unwrap();
                if n % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rt.shutdown().await;

    assert_eq!(env.violations.load(Ordering::SeqCst), 0);
    let handled = lock(&env.handled);
    let total: usize = handled.values().map(Vec::len).sum();
    assert_eq!(
        total as u64,
        u64::from(SENDERS) * PER_SENDER,
        "a message was lost"
    );
    // Per sender and avatar, send order is kept.
    for (id, seen) in handled.iter() {
        for sender in 0..SENDERS {
            let ns: Vec<u64> = seen
                .iter()
                .filter(|(s, _)| *s == sender)
                .map(|(_, n)| *n)
                .collect();
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "{id} sender {sender}: {ns:?}"
            );
        }
    }
    let stats = rt.stats();
    // The test only means something if passivation really raced with the tells.
    assert!(stats.passivations > ids.len() as u64, "{stats:?}");
    assert_eq!(stats.activations, stats.passivations, "{stats:?}");
    assert_eq!(stats.active, 0);
    assert_eq!(stats.mailbox_depth, 0);
    assert_eq!(rt.active_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_send_order_across_passivations() {
    let (_dir, _store, env, _r, rt) = setup(config(Duration::from_millis(5)));
    for n in 0..300u64 {
        rt.tell("a", Msg::Seq(0, n)).await.unwrap();
        if n % 60 == 59 {
            // Long enough for the avatar to passivate before the next message.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    rt.shutdown().await;
    let seen: Vec<u64> = lock(&env.handled)["a"].iter().map(|(_, n)| *n).collect();
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    assert!(env.activations_of("a") >= 4, "{}", env.activations_of("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_avatars_run_concurrently() {
    let (_dir, _store, _env, _r, rt) = setup(config(Duration::from_secs(60)));
    let release = Arc::new(Notify::new());
    let (started_tx, started) = oneshot::channel();
    rt.tell("slow", Msg::Block(started_tx, release.clone()))
        .await
        .unwrap();
    started.await.unwrap();
    // "slow" is stuck in its handler; "fast" answers anyway.
    rt.tell("fast", Msg::Incr).await.unwrap();
    assert_eq!(
        rt.ask("fast", Msg::Count, Duration::from_millis(500))
            .await
            .unwrap(),
        1
    );
    // And "slow" itself does not answer until released.
    assert!(matches!(
        rt.ask("slow", Msg::Count, Duration::from_millis(50)).await,
        Err(Error::Timeout)
    ));
    release.notify_one();
    assert_eq!(count(&rt, "slow").await.unwrap(), 0);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_restarts_from_stored_state_and_spares_others() {
    let (_dir, _store, env, _r, rt) = setup(config(Duration::from_secs(60)));
    lock(&env.stored).insert("p".into(), 10);
    for _ in 0..3 {
        rt.tell("p", Msg::Incr).await.unwrap();
    }
    rt.tell("other", Msg::Incr).await.unwrap();
    assert_eq!(count(&rt, "p").await.unwrap(), 13);

    // The reply sender inside the panicking message is dropped: the asker learns at once.
    let r = rt
        .ask("p", |tx| Msg::Panic(Some(tx)), Duration::from_secs(2))
        .await;
    assert!(matches!(r, Err(Error::Dropped)), "{r:?}");

    // Restarted from the stored 10: the unflushed increments went with the panic.
    assert_eq!(count(&rt, "p").await.unwrap(), 10);
    assert_eq!(env.activations_of("p"), 2);
    assert_eq!(count(&rt, "other").await.unwrap(), 1);
    assert_eq!(env.activations_of("other"), 1);
    assert_eq!(env.violations.load(Ordering::SeqCst), 0);
    let stats = rt.stats();
    assert_eq!(stats.panics, 1);
    assert_eq!(stats.activations, 3);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_activation_is_retried_while_messages_wait() {
    let (_dir, _store, env, _r, rt) = setup(config(Duration::from_secs(60)));
    env.fail_activations.store(3, Ordering::SeqCst);
    rt.tell("a", Msg::Incr).await.unwrap();
    rt.tell("a", Msg::Incr).await.unwrap();
    assert_eq!(count(&rt, "a").await.unwrap(), 2);
    let stats = rt.stats();
    assert_eq!(stats.activation_failures, 3);
    assert_eq!(stats.activations, 1);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_avatar_passivates_and_reactivates() {
    let (_dir, _store, env, _r, rt) = setup(config(Duration::from_millis(50)));
    rt.tell("a", Msg::Incr).await.unwrap();
    assert_eq!(count(&rt, "a").await.unwrap(), 1);
    assert_eq!(rt.active_count(), 1);
    assert!(eventually(Duration::from_secs(2), || rt.active_count() == 0).await);
    assert_eq!(*lock(&env.passivated), vec!["a".to_owned()]);
    assert_eq!(lock(&env.stored).get("a"), Some(&1));
    assert_eq!(rt.stats().passivations, 1);

    // The next message activates it again, from what passivate stored.
    assert_eq!(count(&rt, "a").await.unwrap(), 1);
    assert_eq!(env.activations_of("a"), 2);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_avatar_is_not_passivated() {
    let (_dir, _store, env, _r, rt) = setup(config(Duration::from_millis(40)));
    // Messages every 10 ms for 200 ms: never idle for 40 ms.
    for _ in 0..20 {
        rt.tell("a", Msg::Incr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.activations_of("a"), 1);
    assert_eq!(rt.stats().passivations, 0);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_mailboxes_and_passivates_everyone() {
    let (_dir, _store, env, _r, rt) = setup(config(Duration::from_secs(60)));
    let release = Arc::new(Notify::new());
    let (started_tx, started) = oneshot::channel();
    rt.tell("a", Msg::Block(started_tx, release.clone()))
        .await
        .unwrap();
    started.await.unwrap();
    for id in ["a", "b", "c"] {
        for _ in 0..50 {
            rt.tell(id, Msg::Incr).await.unwrap();
        }
    }
    let shutdown = tokio::spawn({
        let rt = rt.clone();
        async move { rt.shutdown().await }
    });
    // New messages are refused as soon as shutdown starts, while "a" is still busy.
    assert!(eventually(Duration::from_secs(1), || rt.is_shut_down()).await);
    assert!(matches!(
        rt.tell("b", Msg::Incr).await,
        Err(Error::ShutDown)
    ));
    assert!(matches!(count(&rt, "new").await, Err(Error::ShutDown)));
    assert!(!shutdown.is_finished());
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .unwrap()
        .unwrap();

    let stored = lock(&env.stored).clone();
    for id in ["a", "b", "c"] {
        assert_eq!(stored.get(id), Some(&50), "{id}");
    }
    assert_eq!(lock(&env.passivated).len(), 3);
    assert_eq!(rt.active_count(), 0);
    assert_eq!(rt.stats().mailbox_depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_makes_tell_wait() {
    let cfg = RuntimeConfig {
        mailbox: 2,
        ..config(Duration::from_secs(60))
    };
    let (_dir, _store, _env, _r, rt) = setup(cfg);
    let release = Arc::new(Notify::new());
    let (started_tx, started) = oneshot::channel();
    rt.tell("a", Msg::Block(started_tx, release.clone()))
        .await
        .unwrap();
    started.await.unwrap();
    rt.tell("a", Msg::Incr).await.unwrap();
    rt.tell("a", Msg::Incr).await.unwrap();
    assert_eq!(rt.stats().mailbox_depth, 2);
    // The mailbox is full: the next tell waits...
    let blocked = tokio::time::timeout(Duration::from_millis(100), rt.tell("a", Msg::Incr)).await;
    assert!(blocked.is_err(), "tell did not wait for mailbox space");
    // ...while another avatar is not affected.
    rt.tell("b", Msg::Incr).await.unwrap();
    assert_eq!(count(&rt, "b").await.unwrap(), 1);
    // Once the avatar moves on, it goes through. (The timed-out tell above was dropped
    // before it got in, so it is not counted.)
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(2), rt.tell("a", Msg::Incr))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count(&rt, "a").await.unwrap(), 3);
    rt.shutdown().await;
    assert_eq!(rt.stats().mailbox_depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avatar_waiting_on_itself_is_refused() {
    let cfg = RuntimeConfig {
        mailbox: 1,
        ..config(Duration::from_millis(30))
    };
    let (_dir, _store, env, _r, rt) = setup(cfg);
    // One self-tell fits in the mailbox; the second would wait for itself forever.
    let results = rt
        .ask("a", |tx| Msg::TellSelf(2, tx), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(results[1].is_err());
    assert_eq!(count(&rt, "a").await.unwrap(), 1);

    let asked = rt
        .ask("a", Msg::AskSelf, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(asked.is_err(), "{asked:?}");

    // Telling itself while passivating (its mailbox is already closed) is refused too,
    // instead of waiting for its own passivation to end.
    env.tell_self_in_passivate.store(true, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(2), || rt.active_count() == 0).await);
    assert_eq!(
        *lock(&env.self_tell_results),
        vec!["WouldDeadlock".to_owned()]
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminder_survives_a_restart() {
    let (dir, store, _env, _r, rt) = setup(config(Duration::from_secs(60)));
    let due_at = now_ms() + 200;
    let set = rt
        .ask(
            "a",
            |reply| Msg::SetReminder {
                name: "escalate".into(),
                due_at,
                payload: "item-1".into(),
                reply,
            },
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(set, Ok(()));
    rt.shutdown().await;
    drop(rt);
    store.close().await;
    drop(store);

    let store = open_store(&dir);
    assert_eq!(reminder_rows(&store).await, 1);
    let (env, mut fired) = Env::new();
    let rt =
        Runtime::<TestAvatar>::new(env.clone(), store.clone(), config(Duration::from_secs(60)));
    rt.start_reminders();
    let got = tokio::time::timeout(Duration::from_secs(3), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("a".into(), "escalate".into(), "item-1".into()));
    assert!(now_ms() >= due_at, "fired early");
    assert_eq!(env.activations_of("a"), 1);
    // Handled reminders are deleted.
    let mut rows = 1;
    for _ in 0..200 {
        rows = reminder_rows(&store).await;
        if rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rows, 0);
    assert!(
        eventually(Duration::from_secs(2), || rt
            .inner
            .reminders
            .in_flight_len()
            == 0)
        .await
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_reminder_again_replaces_it() {
    let (_dir, store, _env, mut fired, rt) = setup(config(Duration::from_secs(60)));
    rt.set_reminder("a", "r", now_ms() + 100_000, "old".into())
        .await
        .unwrap();
    rt.set_reminder("a", "r", now_ms() + 50, "new".into())
        .await
        .unwrap();
    assert_eq!(reminder_rows(&store).await, 1);
    rt.start_reminders();
    let got = tokio::time::timeout(Duration::from_secs(2), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.2, "new");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fired.recv())
            .await
            .is_err(),
        "fired twice"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_reminder_does_not_fire() {
    let (_dir, store, _env, mut fired, rt) = setup(config(Duration::from_secs(60)));
    rt.set_reminder("a", "r", now_ms() + 50, "x".into())
        .await
        .unwrap();
    rt.set_reminder("b", "r", now_ms() + 60, "y".into())
        .await
        .unwrap();
    rt.cancel_reminder("a", "r").await.unwrap();
    rt.start_reminders();
    let got = tokio::time::timeout(Duration::from_secs(2), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.0, "b");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fired.recv())
            .await
            .is_err()
    );
    assert!(
        eventually(Duration::from_secs(2), || rt
            .inner
            .reminders
            .in_flight_len()
            == 0)
        .await
    );
    assert_eq!(reminder_rows(&store).await, 0);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_reminder_wakes_the_sleeping_loop() {
    let (_dir, _store, _env, mut fired, rt) = setup(config(Duration::from_secs(60)));
    // One far in the future, so the loop goes to sleep for its longest nap.
    rt.set_reminder("a", "later", now_ms() + 3_600_000, String::new())
        .await
        .unwrap();
    rt.start_reminders();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = now_ms();
    rt.set_reminder("b", "soon", t0 + 30, "p".into())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("b".into(), "soon".into(), "p".into()));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_reminder_can_set_itself_again() {
    let (_dir, store, _env, mut fired, rt) = setup(config(Duration::from_secs(60)));
    rt.start_reminders();
    rt.set_reminder("a", "tick", now_ms() + 10, "again:2".into())
        .await
        .unwrap();
    let mut payloads = Vec::new();
    for _ in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(2), fired.recv())
            .await
            .unwrap()
            .unwrap();
        payloads.push(got.2);
    }
    assert_eq!(payloads, ["again:2", "again:1", "again:0"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), fired.recv())
            .await
            .is_err()
    );
    assert_eq!(reminder_rows(&store).await, 0);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_due_reminders_fire_exactly_once_each() {
    let (_dir, store, _env, mut fired, rt) = setup(config(Duration::from_secs(60)));
    // More than one scan's batch, over few avatars, so that deletes commit while later
    // scans run.
    let now = now_ms();
    let writes = (0..300).map(|i| {
        let rt = rt.clone();
        async move {
            rt.set_reminder(
                &format!("a{}", i % 30),
                &format!("r{i}"),
                now,
                String::new(),
            )
            .await
        }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    rt.start_reminders();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..300 {
        let (id, name, _) = tokio::time::timeout(Duration::from_secs(3), fired.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            seen.insert((id.clone(), name.clone())),
            "{id}/{name} fired twice"
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fired.recv())
            .await
            .is_err(),
        "a reminder fired twice"
    );
    assert_eq!(reminder_rows(&store).await, 0);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_reminder_is_contained_and_removed() {
    let (_dir, store, env, mut fired, rt) = setup(config(Duration::from_secs(60)));
    lock(&env.stored).insert("a".into(), 7);
    rt.tell("a", Msg::Incr).await.unwrap();
    rt.start_reminders();
    rt.set_reminder("a", "bad", now_ms(), "panic".into())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.2, "panic");
    // Restarted from stored state, and the reminder does not fire again.
    assert_eq!(count(&rt, "a").await.unwrap(), 7);
    assert_eq!(rt.stats().panics, 1);
    assert!(
        eventually(Duration::from_secs(2), || rt
            .inner
            .reminders
            .in_flight_len()
            == 0)
        .await
    );
    assert_eq!(reminder_rows(&store).await, 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), fired.recv())
            .await
            .is_err()
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn silo_is_a_stable_hash_of_the_id() {
    // FNV-1a test vectors: the silo of an id must never change between releases.
    assert_eq!(super::registry::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(super::registry::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    let (_dir, _store, _env, _r, rt) = setup(config(Duration::from_secs(60)));
    let other = Runtime::<TestAvatar>::new(
        Arc::new(Env::default()),
        rt.store().clone(),
        RuntimeConfig {
            silos: 16,
            ..RuntimeConfig::default()
        },
    );
    let mut used = std::collections::HashSet::new();
    for i in 0..200 {
        let id = format!("user:{i}");
        let silo = rt.silo_of(&id);
        assert!(silo < 16);
        assert_eq!(silo, other.silo_of(&id));
        used.insert(silo);
    }
    assert_eq!(used.len(), 16, "ids do not spread over the silos");
    let zero = Runtime::<TestAvatar>::new(
        Arc::new(Env::default()),
        rt.store().clone(),
        RuntimeConfig {
            silos: 0,
            ..RuntimeConfig::default()
        },
    );
    assert_eq!(zero.silo_of("anything"), 0);
}

#[tokio::test]
async fn context_reports_id_and_silo() {
    struct Probe;
    impl Avatar for Probe {
        type Msg = oneshot::Sender<(String, usize)>;
        type Env = ();
        const KIND: &'static str = "probe";
        async fn activate(_id: &str, _cx: &Context<Self>) -> Result<Self, BoxError> {
            Ok(Probe)
        }
        async fn handle(&mut self, reply: Self::Msg, cx: &Context<Self>) {
            let _ = reply.send((cx.id().to_owned(), cx.silo()));
        }
        async fn on_reminder(&mut self, _: String, _: String, _: &Context<Self>) {}
        async fn passivate(&mut self, _: &Context<Self>) {}
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::<Probe>::new(Arc::new(()), open_store(&dir), RuntimeConfig::default());
    let (id, silo) = rt
        .ask("user:bob", |tx| tx, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(id, "user:bob");
    assert_eq!(silo, rt.silo_of("user:bob"));
    rt.shutdown().await;
    assert!(matches!(
        rt.ask("user:bob", |tx| tx, Duration::from_secs(2)).await,
        Err(Error::ShutDown)
    ));
}
