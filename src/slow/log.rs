//! The bounded log of recent slow requests, and the rate limit on their `tracing` events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::snapshot::SlowRequestEntry;

/// A ring buffer of the most recent slow requests.
pub(crate) struct SlowLog {
    // Locked only when a request turned out slow, never on the fast path; the ring is bounded by
    // `capacity`, oldest entries go first.
    entries: Mutex<VecDeque<SlowRequestEntry>>,
    capacity: usize,
}

impl SlowLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
        }
    }

    pub(crate) fn push(&self, entry: SlowRequestEntry) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Newest first.
    pub(crate) fn recent(&self) -> Vec<SlowRequestEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().rev().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Lets at most `burst` events through per `interval` and counts the ones it holds back, so a
/// flood of slow requests produces a handful of log lines and a count, not a log storm.
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
    use std::time::SystemTime;

    fn entry(n: u64) -> SlowRequestEntry {
        SlowRequestEntry {
            at: SystemTime::UNIX_EPOCH,
            method: "GET".into(),
            route: "/r".into(),
            path: format!("/r/{n}"),
            status: Some(200),
            outcome: super::super::stats::Outcome::Completed,
            duration: Duration::from_millis(n),
            head: None,
            request_id: None,
            phases: Vec::new(),
        }
    }

    #[test]
    fn ring_keeps_the_newest() {
        let log = SlowLog::new(3);
        for n in 0..5 {
            log.push(entry(n));
        }
        let paths: Vec<_> = log.recent().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["/r/4", "/r/3", "/r/2"]);
        let off = SlowLog::new(0);
        off.push(entry(1));
        assert!(off.recent().is_empty());
    }

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
