//! A rate limit on log events: a flood of the same condition produces a handful of `tracing`
//! lines and a count of what was held back, not a log storm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Lets at most `burst` events through per `interval` and counts the ones it holds back, so a
/// flood of events (slow requests, Redis errors) produces a handful of log lines and a count.
pub(crate) struct EventLimiter {
    start: Instant,
    interval_nanos: u64,
    burst: u64,
    // The interval the counters below belong to.
    period: AtomicU64,
    // Events let through in `period`.
    emitted: AtomicU64,
    // Events held back since the last one let through.
    suppressed: AtomicU64,
}

impl EventLimiter {
    pub(crate) fn new(start: Instant, interval: Duration, burst: u64) -> Self {
        Self {
            start,
            interval_nanos: (interval.as_nanos() as u64).max(1),
            burst,
            period: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be emitted, `n` being how many were held back before it;
    /// `None` when it must be held back.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        if self.burst == 0 {
            return None;
        }
        let period =
            now.saturating_duration_since(self.start).as_nanos() as u64 / self.interval_nanos;
        let seen = self.period.load(Ordering::Relaxed);
        if period != seen
            && self
                .period
                .compare_exchange(seen, period, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.emitted.store(0, Ordering::Relaxed);
        }
        if self.emitted.fetch_add(1, Ordering::Relaxed) < self.burst {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_lets_a_burst_through_then_reports_what_it_held() {
        let lim = EventLimiter::new(Instant::now(), Duration::from_secs(1), 2);
        let now = Instant::now();
        assert_eq!(lim.allow(now), Some(0));
        assert_eq!(lim.allow(now), Some(0));
        assert_eq!(lim.allow(now), None);
        assert_eq!(lim.allow(now), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(lim.allow(Instant::now()), Some(2));
        assert_eq!(lim.allow(Instant::now()), Some(0));
        assert_eq!(lim.allow(Instant::now()), None);
    }
}
