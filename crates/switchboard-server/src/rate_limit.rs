//! Token buckets: the publish rate of one connection, and of HTTP
//! publishers by API key or client address.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket: `rate` per second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Publishes refused since the last one taken.
    refused_in_row: u32,
}

/// A publish the bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRefusal {
    /// Until the bucket holds a token again.
    pub retry_after: Duration,
    /// More refused in a row than a second's worth at the rate (or a
    /// burst's worth, if more): the client does not wait as told.
    pub persistent: bool,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimit {
            rate,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: Instant::now(),
            refused_in_row: 0,
        }
    }

    /// Takes one token if there is one; says when there will be otherwise.
    pub fn try_take(&mut self) -> Result<(), RateRefusal> {
        self.try_take_at(Instant::now())
    }

    /// Whether the bucket has refilled to its burst by `now`: as good as new.
    fn is_full_at(&self, now: Instant) -> bool {
        self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate >= self.burst
    }

    fn try_take_at(&mut self, now: Instant) -> Result<(), RateRefusal> {
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_row = 0;
            return Ok(());
        }
        self.refused_in_row = self.refused_in_row.saturating_add(1);
        let missing = 1.0 - self.tokens;
        Err(RateRefusal {
            retry_after: Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX),
            persistent: f64::from(self.refused_in_row) > self.rate.max(self.burst),
        })
    }
}

/// One bucket per key (an API key, a client address), made on first use.
/// Buckets that have filled up again are dropped once there are many, so
/// the set holds only the keys publishing lately.
#[derive(Debug)]
pub struct KeyedRateLimits<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, RateLimit>>,
}

/// Keys held before full buckets are swept out.
const SWEEP_AT: usize = 10_000;

impl<K: Hash + Eq> KeyedRateLimits<K> {
    pub fn new(rate: f64, burst: f64) -> Self {
        KeyedRateLimits {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket.
    pub fn try_take(&self, key: K) -> Result<(), RateRefusal> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| !bucket.is_full_at(now));
        }
        buckets
            .entry(key)
            .or_insert_with(|| RateLimit::new(self.rate, self.burst))
            .try_take_at(now)
    }

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_the_burst_then_refuses_then_cuts_off_a_streak() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10.0, 3.0);
        for _ in 0..3 {
            assert_eq!(limit.try_take_at(start), Ok(()));
        }
        let refused = limit.try_take_at(start).unwrap_err();
        assert!(!refused.persistent);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        // Back as told: taken, and the streak is over.
        assert_eq!(
            limit.try_take_at(start + Duration::from_millis(100)),
            Ok(())
        );
        // Refused more than a second's worth (10) in a row: cut off.
        let at = start + Duration::from_millis(100);
        for _ in 0..10 {
            assert!(!limit.try_take_at(at).unwrap_err().persistent);
        }
        assert!(limit.try_take_at(at).unwrap_err().persistent);
    }

    #[test]
    fn keyed_buckets_are_separate_and_full_ones_are_swept() {
        let limits = KeyedRateLimits::new(1.0, 2.0);
        assert!(limits.try_take("a").is_ok());
        assert!(limits.try_take("a").is_ok());
        assert!(limits.try_take("a").is_err());
        assert!(limits.try_take("b").is_ok());
        let many = KeyedRateLimits::new(1000.0, 1.0);
        for key in 0..SWEEP_AT {
            let _ = many.try_take(key);
        }
        std::thread::sleep(Duration::from_millis(5));
        // Every bucket has filled up again: the next new key sweeps them.
        assert!(many.try_take(SWEEP_AT).is_ok());
        assert_eq!(many.len(), 1);
    }
}
