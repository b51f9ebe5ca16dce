//! Ends connections whose token expires: one task and one ordered map for
//! all of them, rather than a timer per connection (an idle connection
//! holds an entry here and a guard, no task of its own).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::token::now_secs;

/// What to do when a connection's token expires: close it.
pub type OnExpiry = Box<dyn FnOnce() + Send>;

/// Every connection's expiry, soonest first.
#[derive(Default)]
pub struct Expiries {
    schedule: Mutex<Schedule>,
    /// Told when an entry goes in before the one the task sleeps for.
    sooner: Notify,
}

#[derive(Default)]
struct Schedule {
    /// (expiry in seconds since the epoch, entry number).
    due: BTreeMap<(u64, u64), OnExpiry>,
    next_entry: u64,
}

impl Expiries {
    /// A schedule with its task, which runs as long as the runtime.
    pub fn start() -> Arc<Expiries> {
        let expiries = Arc::new(Expiries::default());
        tokio::spawn(run(expiries.clone()));
        expiries
    }

    /// Calls `on_expiry` once `exp` has passed, unless the guard is
    /// dropped (the connection ended) first.
    pub fn watch(self: &Arc<Self>, exp: u64, on_expiry: OnExpiry) -> ExpiryGuard {
        let slot = {
            let mut schedule = self.schedule.lock();
            let entry = schedule.next_entry;
            schedule.next_entry += 1;
            schedule.due.insert((exp, entry), on_expiry);
            (exp, entry)
        };
        self.sooner.notify_one();
        ExpiryGuard {
            expiries: self.clone(),
            slot,
        }
    }

    /// Entries waiting: connections with a token.
    pub fn len(&self) -> usize {
        self.schedule.lock().due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every entry due by `now`, and says when the next one is.
    fn take_due(&self, now: u64) -> (Vec<OnExpiry>, Option<u64>) {
        let mut schedule = self.schedule.lock();
        let later = schedule.due.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut schedule.due, later);
        let next = schedule.due.first_key_value().map(|((exp, _), _)| *exp);
        (due.into_values().collect(), next)
    }
}

/// A connection's place in the schedule; dropping it forgets the entry.
pub struct ExpiryGuard {
    expiries: Arc<Expiries>,
    slot: (u64, u64),
}

impl std::fmt::Debug for ExpiryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiryGuard")
            .field("exp", &self.slot.0)
            .finish()
    }
}

impl ExpiryGuard {
    /// Moves the connection's expiry to `exp` (a refreshed token). False
    /// if it had expired already.
    pub fn reschedule(&mut self, exp: u64) -> bool {
        let moved = {
            let mut schedule = self.expiries.schedule.lock();
            match schedule.due.remove(&self.slot) {
                Some(on_expiry) => {
                    self.slot.0 = exp;
                    schedule.due.insert(self.slot, on_expiry);
                    true
                }
                None => false,
            }
        };
        self.expiries.sooner.notify_one();
        moved
    }
}

impl Drop for ExpiryGuard {
    fn drop(&mut self) {
        let on_expiry = self.expiries.schedule.lock().due.remove(&self.slot);
        // Dropped outside the lock: it may hold the connection's last handles.
        drop(on_expiry);
    }
}

/// Longest sleep between looks at the schedule: the clock may jump.
const MAX_SLEEP: Duration = Duration::from_secs(60);

async fn run(schedule: Arc<Expiries>) {
    loop {
        let (due, next) = schedule.take_due(now_secs());
        for on_expiry in due {
            on_expiry();
        }
        let sleep = next.map_or(MAX_SLEEP, |exp| until(exp).min(MAX_SLEEP));
        let sooner = schedule.sooner.notified();
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = sooner => {}
        }
    }
}

/// How long until the second `exp` begins.
fn until(exp: u64) -> Duration {
    let at = UNIX_EPOCH + Duration::from_secs(exp);
    at.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> OnExpiry) {
        let fired = Arc::new(AtomicUsize::new(0));
        let count = fired.clone();
        (fired, move || {
            let count = count.clone();
            Box::new(move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[tokio::test]
    async fn an_entry_fires_once_its_second_has_passed_and_a_dropped_one_never() {
        let expiries = Expiries::start();
        let (fired, on_expiry) = counter();
        let now = now_secs();
        let _soon = expiries.watch(now + 1, on_expiry());
        let dropped = expiries.watch(now + 1, on_expiry());
        let _later = expiries.watch(now + 3600, on_expiry());
        drop(dropped);
        assert_eq!(expiries.len(), 2);
        tokio::time::timeout(Duration::from_secs(5), async {
            while fired.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("fires within its second");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert_eq!(expiries.len(), 1);
    }

    #[tokio::test]
    async fn a_rescheduled_entry_fires_at_its_new_time() {
        let expiries = Expiries::start();
        let (fired, on_expiry) = counter();
        let mut guard = expiries.watch(now_secs() + 3600, on_expiry());
        assert!(guard.reschedule(now_secs()));
        tokio::time::timeout(Duration::from_secs(5), async {
            while fired.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("fires once moved to now");
        assert!(!guard.reschedule(now_secs() + 10), "gone once fired");
    }
}
