//! How much work one connection may have started and not finished: history
//! reads and subscriptions that replay. Each holds a permit until its
//! answer is queued; with every permit out, the connection stops reading,
//! so a client that floods requests without reading the answers holds a
//! bounded number of tasks and buffers, and TCP slows it down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// One connection's budget of requests in flight.
#[derive(Debug, Clone)]
pub struct WorkBudget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    in_flight: AtomicUsize,
    limit: usize,
    /// The connection task, waiting for a permit to come back.
    waiting: AtomicWaker,
}

/// Held by one request's task; returned when dropped.
#[derive(Debug)]
pub struct WorkPermit {
    shared: Arc<Shared>,
}

impl WorkBudget {
    /// At most `limit` requests in flight (at least one).
    pub fn new(limit: usize) -> WorkBudget {
        WorkBudget {
            shared: Arc::new(Shared {
                in_flight: AtomicUsize::new(0),
                limit: limit.max(1),
                waiting: AtomicWaker::new(),
            }),
        }
    }

    /// Ready when a permit is free; otherwise wakes `cx` once one is returned.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_room() {
            return Poll::Ready(());
        }
        self.shared.waiting.register(cx.waker());
        // A permit returned between the check and the registration.
        if self.has_room() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Takes a permit. Only the connection's own task takes them, after
    /// `poll_ready`, so the count goes past the limit by at most the
    /// requests of one message (one).
    pub fn start(&self) -> WorkPermit {
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        WorkPermit {
            shared: self.shared.clone(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        self.in_flight() < self.shared.limit
    }
}

impl Drop for WorkPermit {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.shared.waiting.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_full_budget_is_pending_until_a_permit_returns_and_wakes_the_connection() {
        let budget = WorkBudget::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(budget.poll_ready(&mut cx).is_ready());
        let first = budget.start();
        let _second = budget.start();
        assert!(budget.poll_ready(&mut cx).is_pending());
        assert!(!flag.0.load(Ordering::SeqCst));
        drop(first);
        assert!(flag.0.load(Ordering::SeqCst), "the connection is woken");
        assert!(budget.poll_ready(&mut cx).is_ready());
        assert_eq!(budget.in_flight(), 1);
    }
}
