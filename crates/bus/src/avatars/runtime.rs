//! The runtime handle and the activation task.
//!
//! Life of an activation (one tokio task per active avatar):
//! 1. `deliver` finds no slot for the id, inserts an `Active` slot with a fresh mailbox
//!    under the shard lock, and spawns the task after releasing the lock.
//! 2. The task calls `activate` (retrying with backoff while messages wait), then handles
//!    messages one at a time until it has been idle for `idle_timeout` or shutdown starts.
//! 3. To passivate it takes the shard lock, gives up if a message arrived meanwhile, else
//!    marks the slot `Passivating` and closes the mailbox. Senders that already hold the
//!    mailbox either got their message in before the close (it is handled in step 4) or get
//!    it back and wait for the slot to go, then start a new activation: no message accepted
//!    by `tell` is lost and no second activation starts while this one flushes.
//! 4. It handles what is still buffered, calls `passivate`, and (in a drop guard, so even an
//!    unexpected panic or a dropped task cleans up) removes the slot and signals `done`.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tidings_store::Store;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::registry::{Registry, Slot, fnv1a};
use super::{Avatar, Context, Error, RuntimeConfig, RuntimeStats, reminders};

/// What travels through a mailbox.
pub(crate) enum Envelope<A: Avatar> {
    Msg(A::Msg),
    Reminder {
        name: String,
        payload: String,
        due_at: i64,
    },
}

tokio::task_local! {
    /// The activation the current task runs, so that an avatar waiting on its own mailbox
    /// is refused with `WouldDeadlock` instead of hanging forever.
    static CURRENT: Current;
}

struct Current {
    /// Address of the runtime's `Inner`: tells runtimes (and kinds) apart.
    runtime: usize,
    generation: u64,
    id: String,
}

/// Serves one kind of avatar. Cheap to clone; every clone is the same runtime.
pub struct Runtime<A: Avatar> {
    pub(crate) inner: Arc<Inner<A>>,
}

impl<A: Avatar> Clone for Runtime<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Avatar> std::fmt::Debug for Runtime<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("kind", &A::KIND)
            .field("stats", &self.stats())
            .finish()
    }
}

pub(crate) struct Inner<A: Avatar> {
    env: Arc<A::Env>,
    store: Store,
    cfg: RuntimeConfig,
    registry: Registry<Envelope<A>>,
    /// Set once by `shutdown`; read under the shard lock by `deliver`, so no activation is
    /// registered after `shutdown` has looked at a shard.
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    next_generation: AtomicU64,
    counters: Counters,
    pub(crate) reminders: Arc<reminders::Shared>,
    reminder_task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    active: AtomicUsize,
    mailbox_depth: AtomicI64,
    activations: AtomicU64,
    activation_failures: AtomicU64,
    passivations: AtomicU64,
    panics: AtomicU64,
}

impl<A: Avatar> Inner<A> {
    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    fn mailbox_add(&self, delta: i64) {
        let depth = self
            .counters
            .mailbox_depth
            .fetch_add(delta, Ordering::Relaxed)
            + delta;
        metrics::gauge!("tidings_avatar_mailbox_depth", "kind" => A::KIND).set(depth as f64);
    }

    fn active_inc(&self) {
        let active = self.counters.active.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("tidings_avatars_active", "kind" => A::KIND).set(active as f64);
    }

    fn active_dec(&self) {
        let active = self
            .counters
            .active
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!("tidings_avatars_active", "kind" => A::KIND).set(active as f64);
    }

    fn count_activation(&self) {
        self.counters.activations.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tidings_avatar_activations_total", "kind" => A::KIND).increment(1);
    }

    fn count_activation_failure(&self) {
        self.counters
            .activation_failures
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tidings_avatar_activation_failures_total", "kind" => A::KIND)
            .increment(1);
    }

    fn count_passivation(&self) {
        self.counters.passivations.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tidings_avatar_passivations_total", "kind" => A::KIND).increment(1);
    }

    fn count_panic(&self, id: &str, during: &'static str, payload: &(dyn Any + Send)) {
        self.counters.panics.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tidings_avatar_panics_total", "kind" => A::KIND).increment(1);
        tracing::error!(
            kind = A::KIND,
            id,
            during,
            panic = panic_message(payload),
            "avatar panicked; its in-memory state is discarded"
        );
    }
}

enum Route<A: Avatar> {
    /// Send to this mailbox; `to_self` if it is the caller's own.
    Send {
        tx: mpsc::Sender<Envelope<A>>,
        to_self: bool,
        spawn: Option<Activation<A>>,
    },
    /// The avatar is passivating: wait until it is gone, then try again.
    Wait(watch::Receiver<bool>),
}

impl<A: Avatar> Runtime<A> {
    /// A runtime for avatars of kind `A`. Nothing runs until the first message (and
    /// [`Runtime::start_reminders`] for reminders).
    pub fn new(env: Arc<A::Env>, store: Store, cfg: RuntimeConfig) -> Self {
        let cfg = RuntimeConfig {
            silos: cfg.silos.max(1),
            mailbox: cfg.mailbox.max(1),
            ..cfg
        };
        let (shutdown, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                env,
                store,
                registry: Registry::new(cfg.silos),
                cfg,
                closed: AtomicBool::new(false),
                shutdown,
                next_generation: AtomicU64::new(1),
                counters: Counters::default(),
                reminders: Arc::new(reminders::Shared::new()),
                reminder_task: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn from_inner(inner: Arc<Inner<A>>) -> Self {
        Self { inner }
    }

    /// The services shared by every avatar.
    pub fn env(&self) -> &Arc<A::Env> {
        &self.inner.env
    }

    /// The store reminders are kept in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration in effect (with `silos` and `mailbox` at least 1).
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    /// Fire-and-forget. Activates the avatar if needed. Waits only while its mailbox is full
    /// (bounded mailbox = backpressure). Errors with [`Error::ShutDown`] once the runtime is
    /// shut down, and with [`Error::WouldDeadlock`] if an avatar tells itself while its own
    /// mailbox is full or while it passivates.
    pub async fn tell(&self, id: &str, msg: A::Msg) -> Result<(), Error> {
        self.deliver(id, Envelope::Msg(msg)).await
    }

    /// Request/response: `make` builds the message around the reply sender. Errors with
    /// [`Error::Timeout`] if no reply came within `timeout` (counting any wait for mailbox
    /// space), [`Error::Dropped`] if the avatar dropped the sender (e.g. it panicked), and
    /// [`Error::WouldDeadlock`] if an avatar asks itself.
    pub async fn ask<R: Send + 'static>(
        &self,
        id: &str,
        make: impl FnOnce(oneshot::Sender<R>) -> A::Msg,
        timeout: Duration,
    ) -> Result<R, Error> {
        let me = self.inner.addr();
        let asks_itself = CURRENT
            .try_with(|c| c.runtime == me && c.id == id)
            .unwrap_or(false);
        if asks_itself {
            return Err(Error::WouldDeadlock);
        }
        let (tx, rx) = oneshot::channel();
        let msg = make(tx);
        let exchange = async {
            self.tell(id, msg).await?;
            rx.await.map_err(|_| Error::Dropped)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        }
    }

    /// The silo of `id`: FNV-1a of the id modulo `silos`, the same on every node.
    pub fn silo_of(&self, id: &str) -> usize {
        (fnv1a(id.as_bytes()) % self.inner.cfg.silos as u64) as usize
    }

    /// Activations currently registered (activating, active or passivating).
    pub fn active_count(&self) -> usize {
        self.inner.counters.active.load(Ordering::Relaxed)
    }

    /// True once [`Runtime::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Counters since the runtime was created.
    pub fn stats(&self) -> RuntimeStats {
        let c = &self.inner.counters;
        RuntimeStats {
            activations: c.activations.load(Ordering::Relaxed),
            activation_failures: c.activation_failures.load(Ordering::Relaxed),
            passivations: c.passivations.load(Ordering::Relaxed),
            panics: c.panics.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            mailbox_depth: c.mailbox_depth.load(Ordering::Relaxed),
        }
    }

    /// Sets (or replaces) the durable reminder `name` of avatar `id` without activating it.
    /// Returns once durable. Works after shutdown too (an avatar may schedule work while it
    /// flushes); it fires on the next runtime that runs `start_reminders`.
    pub async fn set_reminder(
        &self,
        id: &str,
        name: &str,
        due_at_ms: i64,
        payload: String,
    ) -> Result<(), Error> {
        reminders::upsert(&self.inner.store, A::KIND, id, name, due_at_ms, payload).await?;
        self.inner.reminders.wake_if_earlier(due_at_ms);
        Ok(())
    }

    /// Removes the reminder `name` of avatar `id`, if any. Returns once durable.
    pub async fn cancel_reminder(&self, id: &str, name: &str) -> Result<(), Error> {
        reminders::delete(&self.inner.store, A::KIND, id, name).await?;
        Ok(())
    }

    /// Starts the reminder loop of this kind (once; later calls do nothing). Due reminders
    /// are delivered to [`Avatar::on_reminder`], activating their avatar. Must be called
    /// inside a tokio runtime. The loop ends at [`Runtime::shutdown`] or when every handle of
    /// the runtime is gone.
    pub fn start_reminders(&self) {
        let mut task = self
            .inner
            .reminder_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if task.is_some() || self.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                kind = A::KIND,
                "start_reminders called outside a tokio runtime"
            );
            return;
        };
        *task = Some(handle.spawn(reminders::run(
            Arc::downgrade(&self.inner),
            self.inner.reminders.clone(),
            self.inner.shutdown.subscribe(),
        )));
    }

    /// Stops accepting messages (`tell` and `ask` return [`Error::ShutDown`]), stops the
    /// reminder loop, lets every active avatar handle what is in its mailbox and passivate,
    /// and waits for all of them. Do not call it from inside an avatar of this runtime: it
    /// would wait for itself.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.shutdown.send_replace(true);
        let task = self
            .inner
            .reminder_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(kind = A::KIND, error = %e, "the reminder loop failed");
        }
        for mut done in self.inner.registry.all_done() {
            // Err means the activation's guard is gone, which also means it is done.
            let _ = done.wait_for(|done| *done).await;
        }
    }

    /// Hands `env` to the activation of `id`, creating it if needed. The common path of
    /// `tell` and reminder delivery.
    pub(crate) async fn deliver(&self, id: &str, mut env: Envelope<A>) -> Result<(), Error> {
        let silo = self.silo_of(id);
        let me = self.inner.addr();
        let my_generation = CURRENT
            .try_with(|c| (c.runtime == me).then_some(c.generation))
            .ok()
            .flatten();
        loop {
            let route = {
                let mut shard = self.inner.registry.lock(silo);
                if self.inner.closed.load(Ordering::SeqCst) {
                    return Err(Error::ShutDown);
                }
                match shard.get(id) {
                    Some(Slot::Active { tx, generation, .. }) => Route::Send {
                        tx: tx.clone(),
                        to_self: my_generation == Some(*generation),
                        spawn: None,
                    },
                    Some(Slot::Passivating { generation, done }) => {
                        if my_generation == Some(*generation) {
                            return Err(Error::WouldDeadlock);
                        }
                        Route::Wait(done.clone())
                    }
                    None => {
                        if tokio::runtime::Handle::try_current().is_err() {
                            return Err(Error::NoRuntime);
                        }
                        let (tx, activation) = self.register(&mut shard, id, silo);
                        Route::Send {
                            tx,
                            to_self: false,
                            spawn: Some(activation),
                        }
                    }
                }
            };
            match route {
                Route::Send { tx, to_self, spawn } => {
                    if let Some(activation) = spawn {
                        // Spawned outside the lock: if the tokio runtime is shutting down
                        // the task is dropped at once, and its guard takes the lock.
                        let current = Current {
                            runtime: me,
                            generation: activation.guard.generation,
                            id: id.to_owned(),
                        };
                        tokio::spawn(CURRENT.scope(current, activation.run()));
                    }
                    let sent = if to_self {
                        // Waiting for room in our own mailbox would never end.
                        match tx.try_send(env) {
                            Ok(()) => Ok(()),
                            Err(TrySendError::Full(_)) => return Err(Error::WouldDeadlock),
                            Err(TrySendError::Closed(back)) => Err(back),
                        }
                    } else {
                        tx.send(env).await.map_err(|e| e.0)
                    };
                    match sent {
                        Ok(()) => {
                            // Counted after the send, not before, so that a caller giving
                            // up while it waits for space (an `ask` timeout) leaves no
                            // phantom message behind. The receiver may count it off first;
                            // the sum is right once both have run.
                            self.inner.mailbox_add(1);
                            return Ok(());
                        }
                        // The mailbox closed for passivation before we got in: the slot is
                        // Passivating (or gone) now; go round again.
                        Err(back) => env = back,
                    }
                }
                Route::Wait(mut done) => {
                    let _ = done.wait_for(|done| *done).await;
                }
            }
        }
    }

    /// Inserts a new slot for `id`; the caller spawns the returned activation after
    /// releasing the lock.
    fn register(
        &self,
        shard: &mut super::registry::Shard<Envelope<A>>,
        id: &str,
        silo: usize,
    ) -> (mpsc::Sender<Envelope<A>>, Activation<A>) {
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.cfg.mailbox);
        let (done_tx, done_rx) = watch::channel(false);
        shard.insert(
            id.to_owned(),
            Slot::Active {
                tx: tx.clone(),
                generation,
                done: done_rx,
            },
        );
        self.inner.active_inc();
        let activation = Activation {
            rt: self.clone(),
            rx,
            guard: SlotGuard {
                inner: self.inner.clone(),
                id: id.to_owned(),
                silo,
                generation,
                done: done_tx,
            },
        };
        (tx, activation)
    }
}

/// Removes the slot and signals `done` when the activation ends, however it ends.
struct SlotGuard<A: Avatar> {
    inner: Arc<Inner<A>>,
    id: String,
    silo: usize,
    generation: u64,
    done: watch::Sender<bool>,
}

impl<A: Avatar> Drop for SlotGuard<A> {
    fn drop(&mut self) {
        if self
            .inner
            .registry
            .remove_if(self.silo, &self.id, self.generation)
        {
            self.inner.active_dec();
        }
        self.done.send_replace(true);
    }
}

/// One activation: the task body.
struct Activation<A: Avatar> {
    rt: Runtime<A>,
    rx: mpsc::Receiver<Envelope<A>>,
    guard: SlotGuard<A>,
}

impl<A: Avatar> Activation<A> {
    async fn run(mut self) {
        let inner = self.rt.inner.clone();
        let cx = Context::new(self.guard.id.clone(), self.guard.silo, self.rt.clone());
        let mut shutdown = inner.shutdown.subscribe();
        let Some(mut state) = self.activate(&cx).await else {
            self.abandon();
            return;
        };

        let idle = inner.cfg.idle_timeout;
        let sleep = tokio::time::sleep_until(deadline(idle));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                // Shutdown first: start refusing new messages promptly; whatever is already
                // in the mailbox is still handled below. Then messages before the timer, so
                // a message that is ready is never passivated over.
                biased;
                () = stopped(&mut shutdown) => {
                    self.close_mailbox(true);
                    break;
                }
                msg = self.rx.recv() => {
                    let Some(env) = msg else {
                        // Cannot happen while the slot holds a sender; if it does, make sure
                        // nothing is sent into a mailbox nobody reads.
                        self.close_mailbox(true);
                        break;
                    };
                    inner.mailbox_add(-1);
                    if !self.dispatch(&mut state, env, &cx).await {
                        drop(state);
                        let Some(fresh) = self.activate(&cx).await else {
                            self.abandon();
                            return;
                        };
                        state = fresh;
                    }
                    sleep.as_mut().reset(deadline(idle));
                }
                () = &mut sleep => {
                    if self.close_mailbox(false) {
                        break;
                    }
                    sleep.as_mut().reset(deadline(idle));
                }
            }
        }

        // The mailbox is closed: handle what got in before, then flush.
        while let Some(env) = self.rx.recv().await {
            inner.mailbox_add(-1);
            if !self.dispatch(&mut state, env, &cx).await {
                drop(state);
                let Some(fresh) = self.activate(&cx).await else {
                    self.abandon();
                    return;
                };
                state = fresh;
            }
        }
        let flushed = AssertUnwindSafe(state.passivate(&cx)).catch_unwind().await;
        if let Err(payload) = flushed {
            inner.count_panic(&self.guard.id, "passivate", &*payload);
        }
        drop(state);
        inner.count_passivation();
        // The guard, dropped with `self`, removes the slot and wakes waiting senders.
    }

    /// Calls `activate` until it succeeds, backing off between failures. `None` if shutdown
    /// started while it kept failing: then nothing can be done with the waiting messages.
    async fn activate(&self, cx: &Context<A>) -> Option<A> {
        let inner = &self.rt.inner;
        let mut shutdown = inner.shutdown.subscribe();
        let id = &self.guard.id;
        // At least 1 ms: a zero backoff would spin on a store that is down.
        let mut delay = inner.cfg.activate_backoff_min.max(Duration::from_millis(1));
        loop {
            let error = match AssertUnwindSafe(A::activate(id, cx)).catch_unwind().await {
                Ok(Ok(state)) => {
                    inner.count_activation();
                    return Some(state);
                }
                Ok(Err(e)) => e.to_string(),
                Err(payload) => format!("panicked: {}", panic_message(&*payload)),
            };
            inner.count_activation_failure();
            tracing::error!(
                kind = A::KIND,
                id,
                error,
                retry_in_ms = delay.as_millis() as u64,
                waiting = self.rx.len(),
                "avatar activation failed"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut shutdown) => return None,
            }
            delay = delay
                .saturating_mul(2)
                .min(inner.cfg.activate_backoff_max.max(delay));
        }
    }

    /// Runs one message or reminder. False if it panicked: the state must be discarded.
    async fn dispatch(&self, state: &mut A, env: Envelope<A>, cx: &Context<A>) -> bool {
        let inner = &self.rt.inner;
        match env {
            Envelope::Msg(msg) => {
                // The message (and any reply sender in it) is dropped with the panic, so an
                // `ask` gets `Dropped` and a durable input is redelivered by its queue.
                match AssertUnwindSafe(state.handle(msg, cx)).catch_unwind().await {
                    Ok(()) => true,
                    Err(payload) => {
                        inner.count_panic(&self.guard.id, "handle", &*payload);
                        false
                    }
                }
            }
            Envelope::Reminder {
                name,
                payload,
                due_at,
            } => {
                let result = AssertUnwindSafe(state.on_reminder(name.clone(), payload.clone(), cx))
                    .catch_unwind()
                    .await;
                reminders::complete(
                    &inner.store,
                    &inner.reminders,
                    A::KIND,
                    &self.guard.id,
                    &name,
                    due_at,
                    payload,
                )
                .await;
                match result {
                    Ok(()) => true,
                    Err(panic) => {
                        inner.count_panic(&self.guard.id, "on_reminder", &*panic);
                        false
                    }
                }
            }
        }
    }

    /// Marks the slot `Passivating` and closes the mailbox, unless (when not `force`d) a
    /// message is waiting. Under the shard lock, so no sender can pick up the mailbox
    /// between the check and the close.
    fn close_mailbox(&mut self, force: bool) -> bool {
        let mut shard = self.rt.inner.registry.lock(self.guard.silo);
        if !force && !self.rx.is_empty() {
            return false;
        }
        if let Some(slot) = shard.get_mut(&self.guard.id)
            && let Slot::Active {
                generation, done, ..
            } = slot
            && *generation == self.guard.generation
        {
            *slot = Slot::Passivating {
                generation: *generation,
                done: done.clone(),
            };
        }
        self.rx.close();
        true
    }

    /// Gives up on an avatar that cannot be activated while the runtime shuts down.
    fn abandon(&mut self) {
        self.close_mailbox(true);
        let mut lost = 0i64;
        while self.rx.try_recv().is_ok() {
            lost += 1;
        }
        self.rt.inner.mailbox_add(-lost);
        tracing::error!(
            kind = A::KIND,
            id = self.guard.id,
            lost,
            "avatar could not be activated before shutdown; its queued messages are dropped"
        );
    }
}

/// Resolves once shutdown has started (or the runtime is gone). Returns `()` so that no
/// borrow of the watch value (which is not `Send`) lives on in a `select!`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `now + d`, saturating far in the future instead of overflowing.
fn deadline(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}
