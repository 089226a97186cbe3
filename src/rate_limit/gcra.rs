//! The generic cell rate algorithm (GCRA): one timestamp per key, updated with a CAS loop.
//!
//! A quota of `count` requests per `period` with a burst of `burst` becomes two numbers:
//!
//! - the **emission interval** `T = period / count` (rounded up to the nanosecond, so the
//!   enforced rate is never above the configured one), the cost of one request;
//! - the **tolerance** `τ = burst × T`, how far ahead of the clock a client may run.
//!
//! Each key keeps a *theoretical arrival time* (TAT): the instant at which its bucket would be
//! full again. A request at `now` is allowed when `max(TAT, now) + T - now <= τ`, and then moves
//! TAT to `max(TAT, now) + T`; a rejected request changes nothing. So a client at rest may send
//! `burst` requests at once, then one every `T`, and over any window `[a, b]` it is allowed at
//! most `burst + (b - a) / T` requests (the property test below checks this).
//!
//! A TAT at or before `now` means a full bucket: it carries no information, which is why such a
//! key can be forgotten at any time (idle eviction) without changing any decision.
//!
//! Times are nanoseconds since the limiter's start instant, in a `u64` (584 years). The same
//! arithmetic is what a shared (Redis) backend runs in its script, so both agree to the
//! nanosecond.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest tolerance (`burst × T`) accepted: 100 years, far below `u64` nanoseconds, so
/// `TAT + T` can never overflow.
const MAX_TOLERANCE_NANOS: u64 = 100 * 365 * 24 * 3600 * 1_000_000_000;

/// The compiled parameters of one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    // T: the cost of one request, in nanoseconds (at least 1).
    interval: u64,
    // τ = burst × T: how far ahead of the clock a client may run.
    tolerance: u64,
}

/// What the algorithm decided for one request, with the figures the response headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The request may go on.
    pub(crate) allowed: bool,
    /// Requests the client could send right now (after this one, when it was allowed).
    pub(crate) remaining: u64,
    /// Nanoseconds until one more request becomes available: for a rejected request, when to
    /// retry; always greater than zero and at most `T` (the deficit never exceeds `τ`).
    pub(crate) wait: u64,
}

impl Gcra {
    /// `count` requests per `period`, bursts of up to `burst`. `None` when a value is zero or
    /// the tolerance would exceed 100 years.
    pub(crate) fn new(count: u32, period: Duration, burst: u32) -> Option<Self> {
        if count == 0 || burst == 0 {
            return None;
        }
        let period = u64::try_from(period.as_nanos()).ok()?;
        if period == 0 {
            return None;
        }
        let interval = period.div_ceil(u64::from(count));
        let tolerance = interval.checked_mul(u64::from(burst))?;
        (tolerance <= MAX_TOLERANCE_NANOS).then_some(Self {
            interval,
            tolerance,
        })
    }

    /// The emission interval `T`, in nanoseconds.
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    /// The tolerance `τ = burst × T`, in nanoseconds.
    #[cfg(feature = "redis")]
    pub(crate) fn tolerance(&self) -> u64 {
        self.tolerance
    }

    /// Decides a request at `now` against the key's TAT, updating it when the request is
    /// allowed. Lock-free: a CAS loop on the one atomic, retried only when another request for
    /// the same key won the race.
    pub(crate) fn check(&self, tat: &AtomicU64, now: u64) -> Decision {
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let (decision, next) = self.step(current, now);
            let Some(next) = next else {
                return decision;
            };
            // Relaxed is enough: the TAT is the only shared datum, and the CAS orders every
            // update of it.
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return decision,
                Err(actual) => current = actual,
            }
        }
    }

    /// The pure algorithm: the decision for a request at `now` with the key at `tat`, and the
    /// new TAT when the request is allowed.
    pub(crate) fn step(&self, tat: u64, now: u64) -> (Decision, Option<u64>) {
        let base = tat.max(now);
        // The bucket's deficit (time ahead of the clock) if this request were allowed.
        let after = base - now + self.interval;
        if after > self.tolerance {
            (self.decision(false, base - now), None)
        } else {
            (self.decision(true, after), Some(base + self.interval))
        }
    }

    /// The figures for a bucket `deficit` nanoseconds ahead of the clock.
    fn decision(&self, allowed: bool, deficit: u64) -> Decision {
        let remaining = self.tolerance.saturating_sub(deficit) / self.interval;
        // One more request fits once the deficit has fallen to τ - (remaining + 1) × T.
        let wait = (deficit + (remaining + 1) * self.interval).saturating_sub(self.tolerance);
        Decision {
            allowed,
            remaining,
            wait,
        }
    }
}

/// [`crate::util::time::ceil_secs`] of a wait in nanoseconds, the unit of the GCRA state.
pub(crate) fn ceil_secs(nanos: u64) -> u64 {
    crate::util::time::ceil_secs(std::time::Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    fn gcra(count: u32, period_secs: u64, burst: u32) -> Gcra {
        Gcra::new(count, Duration::from_secs(period_secs), burst).unwrap()
    }

    #[test]
    fn invalid_parameters() {
        assert!(Gcra::new(0, Duration::from_secs(1), 1).is_none());
        assert!(Gcra::new(1, Duration::ZERO, 1).is_none());
        assert!(Gcra::new(1, Duration::from_secs(1), 0).is_none());
        assert!(Gcra::new(1, Duration::from_secs(365 * 24 * 3600), 1000).is_none());
        assert!(Gcra::new(u32::MAX, Duration::from_nanos(1), u32::MAX).is_some());
    }

    #[test]
    fn interval_rounds_up() {
        assert_eq!(gcra(3, 1, 1).interval(), 333_333_334);
        assert_eq!(gcra(10, 1, 1).interval(), 100_000_000);
    }

    #[test]
    fn burst_then_one_per_interval() {
        let g = gcra(10, 1, 5);
        let tat = AtomicU64::new(0);
        let now = 42 * SEC;
        for left in (0..5).rev() {
            let d = g.check(&tat, now);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let d = g.check(&tat, now);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.wait, SEC / 10);
        // A rejection changes nothing.
        assert_eq!(tat.load(Ordering::Relaxed), now + SEC / 2);
        // 1 ns early: still rejected, 1 ns to wait.
        let d = g.check(&tat, now + SEC / 10 - 1);
        assert_eq!((d.allowed, d.wait), (false, 1));
        // After exactly one interval, exactly one more.
        assert!(g.check(&tat, now + SEC / 10).allowed);
        assert!(!g.check(&tat, now + SEC / 10).allowed);
    }

    #[test]
    fn figures_of_allowed_requests() {
        // 1 request per 10 s, burst 3.
        let g = gcra(1, 10, 3);
        let tat = AtomicU64::new(0);
        let d = g.check(&tat, 0);
        assert_eq!((d.allowed, d.remaining, d.wait), (true, 2, 10 * SEC));
        // 4 s later: still 2 (the used unit is 6 s from coming back).
        let d = g.check(&tat, 4 * SEC);
        assert_eq!((d.allowed, d.remaining, d.wait), (true, 1, 6 * SEC));
        let d = g.check(&tat, 4 * SEC);
        assert_eq!((d.allowed, d.remaining, d.wait), (true, 0, 6 * SEC));
        let d = g.check(&tat, 4 * SEC);
        assert_eq!((d.allowed, d.remaining, d.wait), (false, 0, 6 * SEC));
        assert_eq!(ceil_secs(d.wait), 6);
        // Long idle: full again.
        let d = g.check(&tat, 1000 * SEC);
        assert_eq!((d.allowed, d.remaining), (true, 2));
    }

    #[test]
    fn ceil_seconds() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(SEC), 1);
        assert_eq!(ceil_secs(SEC + 1), 2);
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let g = gcra(1, 3600, 1000);
        let tat = AtomicU64::new(0);
        let allowed = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if g.check(&tat, SEC).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 1000);
    }

    proptest! {
        /// Over any window of time, no more than `burst + elapsed / T` requests are allowed, and
        /// a client at rest always gets its whole burst.
        #[test]
        fn never_more_than_burst_plus_elapsed_rate(
            count in 1u32..1000,
            period_ms in 1u64..10_000,
            burst in 1u32..50,
            gaps in prop::collection::vec(0u64..50_000_000, 1..300),
        ) {
            let g = Gcra::new(count, Duration::from_millis(period_ms), burst).unwrap();
            let t = g.interval();
            let tat = AtomicU64::new(0);
            let mut now = 0;
            let mut allowed = Vec::new();
            for gap in gaps {
                now += gap;
                let d = g.check(&tat, now);
                prop_assert!(d.wait > 0 && d.wait <= t);
                prop_assert!(d.remaining < u64::from(burst) || !d.allowed);
                if d.allowed {
                    allowed.push(now);
                }
            }
            for i in 0..allowed.len() {
                for j in i..allowed.len() {
                    let n = (j - i + 1) as u64;
                    let bound = u64::from(burst) + (allowed[j] - allowed[i]) / t;
                    prop_assert!(n <= bound, "{n} allowed in {} ns", allowed[j] - allowed[i]);
                }
            }
            // At rest (one tolerance later), the full burst is there again.
            let rest = tat.load(Ordering::Relaxed).max(now);
            for _ in 0..burst {
                prop_assert!(g.check(&tat, rest).allowed);
            }
            prop_assert!(!g.check(&tat, rest).allowed);
        }
    }
}
