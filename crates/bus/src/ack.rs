//! Shared acknowledgements.
//!
//! An [`Ack`] is one share of an acknowledgement group. The group completes when its last
//! share is gone: successfully if every share was acked, as failed if any share was nacked
//! or dropped without an answer (a panic unwinding through a handler drops its share, so a
//! lost message always turns into a redelivery, never a silent success).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type OnDone = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Group {
    remaining: AtomicUsize,
    failure: Mutex<Option<String>>,
    on_done: Mutex<Option<OnDone>>,
}

/// One share of an acknowledgement. Ack it, nack it, or drop it (which nacks).
pub struct Ack {
    group: Arc<Group>,
    answered: bool,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("remaining", &self.group.remaining.load(Ordering::Relaxed))
            .finish()
    }
}

impl Ack {
    /// A new group with one share; `on_done` runs exactly once, when the group completes.
    pub fn new(on_done: impl FnOnce(Result<(), String>) + Send + 'static) -> Ack {
        Ack {
            group: Arc::new(Group {
                remaining: AtomicUsize::new(1),
                failure: Mutex::new(None),
                on_done: Mutex::new(Some(Box::new(on_done))),
            }),
            answered: false,
        }
    }

    /// A share that completes nothing: for messages that did not come from a durable queue.
    pub fn none() -> Ack {
        Ack::new(|_| {})
    }

    /// One more share of the same group.
    pub fn share(&self) -> Ack {
        self.group.remaining.fetch_add(1, Ordering::AcqRel);
        Ack {
            group: self.group.clone(),
            answered: false,
        }
    }

    /// This share's work is durable.
    pub fn ack(mut self) {
        self.answered = true;
        self.finish(None);
    }

    /// This share failed; the whole item will be redelivered.
    pub fn nack(mut self, reason: impl Into<String>) {
        self.answered = true;
        self.finish(Some(reason.into()));
    }

    /// Acks on `Ok`, nacks with the error's text on `Err`.
    pub fn settle<E: std::fmt::Display>(self, r: Result<(), E>) {
        match r {
            Ok(()) => self.ack(),
            Err(e) => self.nack(e.to_string()),
        }
    }

    fn finish(&mut self, failure: Option<String>) {
        if let Some(f) = failure {
            let mut slot = self.group.failure.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(f);
        }
        if self.group.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let failure = self
                .group
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let done = self
                .group
                .on_done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(done) = done {
                done(failure.map_or(Ok(()), Err));
            }
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.answered {
            self.answered = true;
            self.finish(Some("dropped without an answer".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn group() -> (Ack, mpsc::Receiver<Result<(), String>>) {
        let (tx, rx) = mpsc::channel();
        (
            Ack::new(move |r| {
                tx.send(r).unwrap();
            }),
            rx,
        )
    }

    #[test]
    fn completes_once_when_all_shares_ack() {
        let (a, rx) = group();
        let b = a.share();
        let c = a.share();
        a.ack();
        b.ack();
        assert!(rx.try_recv().is_err());
        c.ack();
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_dropped_share_fails_the_group() {
        let (a, rx) = group();
        let b = a.share();
        drop(b);
        a.ack();
        assert!(rx.try_recv().unwrap().is_err());
    }

    #[test]
    fn a_panic_drops_the_share() {
        let (a, rx) = group();
        let b = a.share();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = b;
            panic!("boom");
        }));
        assert!(r.is_err());
        a.ack();
        assert_eq!(
            rx.try_recv().unwrap(),
            Err("dropped without an answer".to_string())
        );
    }
}
