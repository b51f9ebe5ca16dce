//! Where a published message spends its time on the way to subscribers:
//! histograms of each hop of the publish path, recorded once per message
//! or per batch (never per delivery), read by `GET /api/pipeline`.
//!
//! - `publish_to_commit`: a publish accepted → its batch stored (queueing
//!   for the writer, plus the commit, fsync included by default);
//! - `commit`: one group commit (the store's append);
//! - `commit_to_first_write`: a batch stored → the first subscriber's socket
//!   written with it;
//! - `first_to_last_write`: the first → the last subscriber's socket written
//!   (or its connection task woken, when the socket had no room);
//! - `batch_size`: messages per group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::NodeMetrics;

/// The hop histograms of one node.
pub struct PipelineStats {
    histograms: Mutex<Histograms>,
    /// The node's counters: group commits are observed there too.
    pub metrics: Arc<NodeMetrics>,
}

struct Histograms {
    since: Instant,
    publish_to_commit: Histogram<u64>,
    commit: Histogram<u64>,
    commit_to_first_write: Histogram<u64>,
    first_to_last_write: Histogram<u64>,
    batch_size: Histogram<u64>,
}

impl Histograms {
    fn new() -> Histograms {
        // Microseconds from 1 µs to 10 minutes; batch sizes up to a million.
        let micros = || Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid bounds");
        Histograms {
            since: Instant::now(),
            publish_to_commit: micros(),
            commit: micros(),
            commit_to_first_write: micros(),
            first_to_last_write: micros(),
            batch_size: Histogram::new_with_bounds(1, 1_000_000, 2).expect("valid bounds"),
        }
    }
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats::with_metrics(Arc::default())
    }
}

impl PipelineStats {
    /// Histograms that also report to the node's `metrics`.
    pub fn with_metrics(metrics: Arc<NodeMetrics>) -> Self {
        PipelineStats {
            histograms: Mutex::new(Histograms::new()),
            metrics,
        }
    }
}

/// A histogram's summary, in microseconds (messages for `batch_size`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Summary {
    fn of(h: &Histogram<u64>) -> Summary {
        Summary {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// What `GET /api/pipeline` answers.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSnapshot {
    /// Seconds covered: since the node started or the last reset.
    pub seconds: f64,
    pub publish_to_commit_us: Summary,
    pub commit_us: Summary,
    pub commit_to_first_write_us: Summary,
    pub first_to_last_write_us: Summary,
    pub batch_size: Summary,
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

impl PipelineStats {
    pub fn snapshot(&self) -> PipelineSnapshot {
        let h = self.histograms.lock();
        PipelineSnapshot {
            seconds: h.since.elapsed().as_secs_f64(),
            publish_to_commit_us: Summary::of(&h.publish_to_commit),
            commit_us: Summary::of(&h.commit),
            commit_to_first_write_us: Summary::of(&h.commit_to_first_write),
            first_to_last_write_us: Summary::of(&h.first_to_last_write),
            batch_size: Summary::of(&h.batch_size),
        }
    }

    /// Starts over (a benchmark's window begins).
    pub fn reset(&self) {
        *self.histograms.lock() = Histograms::new();
    }

    /// A group commit of messages accepted at `accepted`, begun at `began`
    /// and stored at `stored`.
    pub(crate) fn record_commit(&self, accepted: &[Instant], began: Instant, stored: Instant) {
        self.metrics
            .commit_seconds
            .observe((stored - began).as_secs_f64());
        self.metrics
            .batch_size
            .observe(accepted.len().max(1) as f64);
        let mut h = self.histograms.lock();
        let _ = h.commit.record(micros(stored - began));
        let _ = h.batch_size.record(accepted.len().max(1) as u64);
        for &at in accepted {
            let _ = h
                .publish_to_commit
                .record(micros(stored.saturating_duration_since(at)));
        }
    }

    /// Follows the writes of a batch stored at `stored`, spread over
    /// `shares` passes that each report with [`FanOut::share_done`].
    pub(crate) fn fan_out(self: &Arc<Self>, stored: Instant, shares: usize) -> Arc<FanOut> {
        Arc::new(FanOut {
            stats: self.clone(),
            stored,
            first: AtomicU64::new(u64::MAX),
            last: AtomicU64::new(0),
            remaining: AtomicUsize::new(shares),
        })
    }
}

/// One batch's writes, done in shares on several threads.
pub(crate) struct FanOut {
    stats: Arc<PipelineStats>,
    stored: Instant,
    /// Nanoseconds after `stored` of the first and the last write.
    first: AtomicU64,
    last: AtomicU64,
    remaining: AtomicUsize,
}

impl FanOut {
    /// One share wrote its first socket at `first` and its last at `last`;
    /// the last share to report records the batch.
    pub(crate) fn share_done(&self, first: Instant, last: Instant) {
        let nanos = |t: Instant| t.saturating_duration_since(self.stored).as_nanos() as u64;
        self.first.fetch_min(nanos(first), Ordering::Relaxed);
        self.last.fetch_max(nanos(last), Ordering::Relaxed);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let first = Duration::from_nanos(self.first.load(Ordering::Relaxed));
            let last = Duration::from_nanos(self.last.load(Ordering::Relaxed));
            let mut h = self.stats.histograms.lock();
            let _ = h.commit_to_first_write.record(micros(first));
            let _ = h
                .first_to_last_write
                .record(micros(last.saturating_sub(first)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_recorded_once_its_last_share_reports() {
        let stats = Arc::new(PipelineStats::default());
        let stored = Instant::now();
        let began = stored - Duration::from_millis(2);
        let accepted = [began - Duration::from_millis(1), began];
        stats.record_commit(&accepted, began, stored);
        let fan_out = stats.fan_out(stored, 2);
        let ms = Duration::from_millis;
        fan_out.share_done(stored + ms(1), stored + ms(3));
        assert_eq!(stats.snapshot().commit_to_first_write_us.count, 0);
        fan_out.share_done(stored + ms(2), stored + ms(5));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.batch_size.max, 2);
        assert_eq!(snapshot.publish_to_commit_us.count, 2);
        assert!(snapshot.publish_to_commit_us.max >= 2_990);
        assert!((1_990..=2_010).contains(&snapshot.commit_us.p50));
        assert_eq!(snapshot.commit_to_first_write_us.count, 1);
        assert!((990..=1_010).contains(&snapshot.commit_to_first_write_us.max));
        assert!((3_970..=4_030).contains(&snapshot.first_to_last_write_us.max));
        stats.reset();
        assert_eq!(stats.snapshot().batch_size.count, 0);
    }
}
