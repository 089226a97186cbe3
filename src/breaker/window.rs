//! The sliding windows of recent calls: the last N calls, or the last N seconds in 1 s buckets.
//!
//! Both keep running totals, so reading the figures costs no walk over the window; the time
//! window clears the buckets that time has left behind as it advances (each bucket at most once
//! per lap), so an idle breaker shows an empty window without a timer.

/// Calls, failures and slow calls inside a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Totals {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn sub(&mut self, other: &Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// Failures over calls, 0 when there were no calls.
    pub(crate) fn failure_rate(&self) -> f64 {
        rate(self.failures, self.calls)
    }

    /// Slow calls over calls, 0 when there were no calls.
    pub(crate) fn slow_rate(&self) -> f64 {
        rate(self.slow, self.calls)
    }
}

fn rate(n: u32, of: u32) -> f64 {
    if of == 0 {
        0.0
    } else {
        f64::from(n) / f64::from(of)
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// The outcomes of the last `capacity` calls, as a ring of flags.
#[derive(Debug)]
pub(crate) struct CountWindow {
    // One byte per call: `FAILED | SLOW` flags.
    ring: Box<[u8]>,
    // Where the next outcome goes.
    next: usize,
    // How many slots hold an outcome (grows to the capacity, then stays).
    len: usize,
    totals: Totals,
}

impl CountWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            ring: vec![0; capacity.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
            totals: Totals::default(),
        }
    }

    pub(crate) fn record(&mut self, failed: bool, slow: bool) {
        if self.len == self.ring.len() {
            let old = self.ring[self.next];
            self.totals.sub(&Totals {
                calls: 1,
                failures: u32::from(old & FAILED != 0),
                slow: u32::from(old & SLOW != 0),
            });
        } else {
            self.len += 1;
        }
        self.ring[self.next] = (u8::from(failed) * FAILED) | (u8::from(slow) * SLOW);
        self.next = (self.next + 1) % self.ring.len();
        self.totals.add(failed, slow);
    }

    pub(crate) fn totals(&self) -> Totals {
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.totals = Totals::default();
    }
}

/// The outcomes of the last `seconds` seconds, one bucket per second.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    // Bucket `s % len` holds second `s`, for `s` in `head - len + 1 ..= head`.
    buckets: Box<[Totals]>,
    // The latest second the window has advanced to.
    head: u64,
    totals: Totals,
}

impl TimeWindow {
    pub(crate) fn new(seconds: usize) -> Self {
        Self {
            buckets: vec![Totals::default(); seconds.max(1)].into_boxed_slice(),
            head: 0,
            totals: Totals::default(),
        }
    }

    fn advance(&mut self, sec: u64) {
        if sec <= self.head {
            return;
        }
        let n = self.buckets.len() as u64;
        if sec - self.head >= n {
            self.buckets.fill(Totals::default());
            self.totals = Totals::default();
        } else {
            for s in self.head + 1..=sec {
                let b = &mut self.buckets[(s % n) as usize];
                self.totals.sub(b);
                *b = Totals::default();
            }
        }
        self.head = sec;
    }

    /// Records a call that ended in second `sec` (seconds since the layer was built). A second
    /// older than the window's head (calls end out of order by a few nanoseconds under
    /// contention) counts in the head's bucket.
    pub(crate) fn record(&mut self, sec: u64, failed: bool, slow: bool) {
        self.advance(sec);
        let n = self.buckets.len() as u64;
        self.buckets[(self.head % n) as usize].add(failed, slow);
        self.totals.add(failed, slow);
    }

    /// The totals of the window that ends in second `sec`.
    pub(crate) fn totals(&mut self, sec: u64) -> Totals {
        self.advance(sec);
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.fill(Totals::default());
        self.totals = Totals::default();
    }
}

/// Either window.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn record(&mut self, sec: u64, failed: bool, slow: bool) {
        match self {
            Window::Count(w) => w.record(failed, slow),
            Window::Time(w) => w.record(sec, failed, slow),
        }
    }

    pub(crate) fn totals(&mut self, sec: u64) -> Totals {
        match self {
            Window::Count(w) => w.totals(),
            Window::Time(w) => w.totals(sec),
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model(events: &[(u64, bool, bool)]) -> Totals {
        let mut t = Totals::default();
        for &(_, f, s) in events {
            t.add(f, s);
        }
        t
    }

    proptest! {
        #[test]
        fn count_window_matches_last_n(
            cap in 1usize..20,
            calls in prop::collection::vec((any::<bool>(), any::<bool>()), 0..100),
        ) {
            let mut w = CountWindow::new(cap);
            let mut all = Vec::new();
            for (i, &(f, s)) in calls.iter().enumerate() {
                w.record(f, s);
                all.push((i as u64, f, s));
                let start = all.len().saturating_sub(cap);
                prop_assert_eq!(w.totals(), model(&all[start..]));
            }
        }

        #[test]
        fn time_window_matches_last_n_seconds(
            secs in 1usize..10,
            steps in prop::collection::vec((0u64..4, any::<bool>(), any::<bool>(), any::<bool>()), 0..150),
        ) {
            let mut w = TimeWindow::new(secs);
            let mut all: Vec<(u64, bool, bool)> = Vec::new();
            let mut now = 0u64;
            for &(dt, record, f, s) in &steps {
                // Occasionally a long jump, past the whole window.
                now += if dt == 3 { 7 } else { dt };
                if record {
                    w.record(now, f, s);
                    all.push((now, f, s));
                }
                let inside: Vec<_> = all
                    .iter()
                    .copied()
                    .filter(|&(t, _, _)| t + secs as u64 > now)
                    .collect();
                prop_assert_eq!(w.totals(now), model(&inside));
            }
        }
    }

    #[test]
    fn rates() {
        let mut w = CountWindow::new(4);
        assert_eq!(w.totals().failure_rate(), 0.0);
        w.record(true, false);
        w.record(false, true);
        w.record(false, false);
        w.record(true, true);
        assert_eq!(w.totals().failure_rate(), 0.5);
        assert_eq!(w.totals().slow_rate(), 0.5);
        w.clear();
        assert_eq!(w.totals(), Totals::default());
    }
}
