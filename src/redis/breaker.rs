//! The breaker on the link: consecutive failures open it, and after a cool-down one call
//! probes Redis.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
/// Open, and one caller is probing.
const PROBING: u8 = 2;

/// Consecutive failures open the link; after the cool-down one call probes it.
pub(super) struct LinkBreaker {
    epoch: Instant,
    failures: AtomicU32,
    state: AtomicU8,
    open_until_ms: AtomicU64,
    cool_down_ms: AtomicU64,
    first_cool_down_ms: u64,
    max_cool_down_ms: u64,
    threshold: u32,
}

impl LinkBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures, for `first`, then
    /// twice as long after each failed probe, up to `max`.
    pub(super) fn new(threshold: u32, first: Duration, max: Duration) -> Self {
        let first_ms = first.as_millis() as u64;
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            state: AtomicU8::new(CLOSED),
            open_until_ms: AtomicU64::new(0),
            cool_down_ms: AtomicU64::new(first_ms),
            first_cool_down_ms: first_ms,
            max_cool_down_ms: max.as_millis() as u64,
            threshold,
        }
    }

    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// Whether a call may go to Redis now.
    pub(super) fn admit(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => {
                self.now_ms() >= self.open_until_ms.load(Ordering::Acquire)
                    && self
                        .state
                        .compare_exchange(OPEN, PROBING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            }
            _ => false,
        }
    }

    pub(super) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.state.store(CLOSED, Ordering::Release);
            self.cool_down_ms
                .store(self.first_cool_down_ms, Ordering::Relaxed);
        }
    }

    /// `true` when this failure opened the link.
    pub(super) fn failure(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            PROBING => {
                let next =
                    (self.cool_down_ms.load(Ordering::Relaxed) * 2).min(self.max_cool_down_ms);
                self.cool_down_ms.store(next, Ordering::Relaxed);
                self.open_until_ms
                    .store(self.now_ms() + next, Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
                false
            }
            CLOSED => {
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= self.threshold
                    && self
                        .state
                        .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    let cool = self.cool_down_ms.load(Ordering::Relaxed);
                    self.open_until_ms
                        .store(self.now_ms() + cool, Ordering::Release);
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }

    /// The cool-down of the next opening (or of the current one), in milliseconds.
    pub(super) fn cool_down_ms(&self) -> u64 {
        self.cool_down_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> LinkBreaker {
        LinkBreaker::new(
            threshold,
            Duration::from_millis(100),
            Duration::from_millis(400),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_probes_after_the_cool_down() {
        let b = breaker(3);
        assert!(b.admit());
        assert!(!b.failure());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "third consecutive failure opens");
        assert!(!b.admit());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.admit(), "one probe after the cool-down");
        assert!(!b.admit(), "only one probe at a time");
        b.failure();
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(!b.admit(), "the cool-down doubled to 200 ms");
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(b.admit());
        b.success();
        assert!(b.admit() && b.admit(), "closed again");
        assert_eq!(b.cool_down_ms(), 100);
    }
}
