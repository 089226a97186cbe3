//! One breaker: its state machine, window, half-open slots and metric handles.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::snapshot::{BreakerSnapshot, State};
use super::window::{CountWindow, TimeWindow, Totals, Window};
use crate::metrics::{labels, names};
use crate::util::time::ceil_secs;

/// The slot of a state in per-state arrays (metric handles).
fn index(state: State) -> usize {
    state as usize
}

/// The state packed in the low two bits of a breaker's state word.
fn from_bits(bits: u64) -> State {
    match bits & 3 {
        0 => State::Closed,
        1 => State::Open,
        _ => State::HalfOpen,
    }
}

const STATES: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

/// Which window a breaker judges its calls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    Count(usize),
    Time(usize),
}

/// The callback run on every state change.
pub(crate) type OnStateChange = dyn Fn(&str, State, State) + Send + Sync;
/// The failure classifier of responses.
pub(crate) type Classifier = dyn Fn(StatusCode) -> bool + Send + Sync;

/// The configuration every breaker of a layer reads (built once, shared by `Arc`).
pub(crate) struct Settings {
    pub(crate) window: WindowKind,
    pub(crate) min_calls: u32,
    pub(crate) failure_rate: f64,
    // Calls at or over `slow_duration` are slow; `slow_rate` 1.0 with no slow call means off.
    pub(crate) slow_duration: Option<Duration>,
    pub(crate) slow_rate: f64,
    pub(crate) half_open_calls: u32,
    pub(crate) open_wait: Duration,
    pub(crate) max_open_wait: Duration,
    pub(crate) jitter: f64,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) classifier: Option<Arc<Classifier>>,
    pub(crate) on_state_change: Option<Arc<OnStateChange>>,
    // Read the clock when a call ends (slow calls or a time window are configured).
    pub(crate) clock_at_end: bool,
    // Origin of the time-window seconds and of `last_call`.
    pub(crate) start: Instant,
}

impl Settings {
    pub(crate) fn is_failure(&self, status: StatusCode) -> bool {
        match &self.classifier {
            Some(f) => f(status),
            None => status.is_server_error(),
        }
    }

    pub(crate) fn is_slow(&self, elapsed: Duration) -> bool {
        self.slow_duration.is_some_and(|d| elapsed >= d)
    }

    fn exceeds(&self, t: &Totals) -> bool {
        t.failure_rate() >= self.failure_rate
            || (self.slow_duration.is_some() && t.slow_rate() >= self.slow_rate)
    }

    fn sec(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A state change, reported after the breaker's lock is released.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transition {
    from: State,
    to: State,
}

/// What a breaker decided about a call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admission {
    /// Go through. `gen` is the state generation the call was admitted in; a probe holds one of
    /// the half-open slots.
    Pass { gen: u64, probe: bool },
    /// Answer at once: the breaker is open (or every half-open slot is taken).
    Reject { retry_after: Duration },
}

/// Cached metric handles of one breaker, so no label set is built per call.
struct Metrics {
    state: [::metrics::Gauge; 3],
    transitions: [::metrics::Counter; 3],
    success: ::metrics::Counter,
    failure: ::metrics::Counter,
    slow: ::metrics::Counter,
    rejected: ::metrics::Counter,
}

impl Metrics {
    fn new(key: &str) -> Self {
        let k = key.to_owned();
        let gauge = |s: State| {
            ::metrics::gauge!(names::CIRCUIT_BREAKER_STATE,
                labels::BREAKER => k.clone(), labels::STATE => s.as_str())
        };
        let trans = |s: State| {
            ::metrics::counter!(names::CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
                labels::BREAKER => k.clone(), labels::STATE => s.as_str())
        };
        let calls = |r: &'static str| {
            ::metrics::counter!(names::CIRCUIT_BREAKER_CALLS_TOTAL,
                labels::BREAKER => k.clone(), labels::RESULT => r)
        };
        let m = Self {
            state: STATES.map(gauge),
            transitions: STATES.map(trans),
            success: calls("success"),
            failure: calls("failure"),
            slow: calls("slow"),
            rejected: calls("rejected"),
        };
        m.show(State::Closed);
        m
    }

    fn show(&self, state: State) {
        for s in STATES {
            self.state[index(s)].set(if s == state { 1.0 } else { 0.0 });
        }
    }
}

/// The part of a breaker behind its mutex: touched on state changes, on the end of each call,
/// and on admission when not closed.
struct Inner {
    state: State,
    // Bumped on every transition: outcomes of calls admitted in an older generation are ignored.
    gen: u64,
    window: Window,
    // End of the open wait; `None` when forced open (until a manual close or reset).
    open_until: Option<Instant>,
    // Consecutive trips without a recovery: the open wait grows with them.
    trips: u32,
    // Half-open: slots handed out (in flight or done) and the probes' results.
    probes_admitted: u32,
    probes: Totals,
    // xorshift state for the jitter.
    rng: u64,
}

/// One circuit breaker (one key).
pub(crate) struct Breaker {
    pub(crate) key: Arc<str>,
    settings: Arc<Settings>,
    // `gen << 2 | state`: read without the lock on every call, so the closed path takes none.
    word: AtomicU64,
    // Nanoseconds since `settings.start` of the latest call: idle eviction.
    last_call: AtomicU64,
    inner: Mutex<Inner>,
    metrics: Metrics,
    // Set when evicted from the registry: services that cached it look it up again.
    retired: AtomicBool,
}

impl Breaker {
    pub(crate) fn new(key: Arc<str>, settings: Arc<Settings>, seed: u64) -> Self {
        let window = match settings.window {
            WindowKind::Count(n) => Window::Count(CountWindow::new(n)),
            WindowKind::Time(n) => Window::Time(TimeWindow::new(n)),
        };
        let metrics = Metrics::new(&key);
        Self {
            last_call: AtomicU64::new(settings.nanos(Instant::now())),
            key,
            settings,
            word: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: State::Closed,
                gen: 0,
                window,
                open_until: None,
                trips: 0,
                probes_admitted: 0,
                probes: Totals::default(),
                rng: seed | 1,
            }),
            metrics,
            retired: AtomicBool::new(false),
        }
    }

    /// Evicted from the registry.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counters; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current state, without the lock.
    pub(crate) fn state(&self) -> State {
        from_bits(self.word.load(Ordering::Acquire))
    }

    pub(crate) fn last_call(&self) -> u64 {
        self.last_call.load(Ordering::Relaxed)
    }

    /// Decides whether a call starting at `now` may go through.
    pub(crate) fn admit(&self, now: Instant) -> Admission {
        let nanos = self.settings.nanos(now);
        if self.last_call.load(Ordering::Relaxed) != nanos {
            self.last_call.store(nanos, Ordering::Relaxed);
        }
        let word = self.word.load(Ordering::Acquire);
        if word & 3 == 0 {
            return Admission::Pass {
                gen: word >> 2,
                probe: false,
            };
        }
        let mut g = self.lock();
        let mut tr = None;
        let res = loop {
            match g.state {
                State::Closed => {
                    break Admission::Pass {
                        gen: g.gen,
                        probe: false,
                    }
                }
                State::Open => match g.open_until {
                    Some(until) if now >= until => {
                        tr = Some(self.set_state(&mut g, State::HalfOpen));
                    }
                    Some(until) => {
                        break Admission::Reject {
                            retry_after: until - now,
                        }
                    }
                    None => {
                        break Admission::Reject {
                            retry_after: self.settings.open_wait,
                        }
                    }
                },
                State::HalfOpen => {
                    if g.probes_admitted < self.settings.half_open_calls {
                        g.probes_admitted += 1;
                        break Admission::Pass {
                            gen: g.gen,
                            probe: true,
                        };
                    }
                    break Admission::Reject {
                        retry_after: Duration::from_secs(1),
                    };
                }
            }
        };
        drop(g);
        if let Some(tr) = tr {
            self.emit(tr);
        }
        if let Admission::Reject { .. } = res {
            self.metrics.rejected.increment(1);
        }
        res
    }

    /// Records the outcome of a call admitted in generation `gen`.
    pub(crate) fn record(&self, gen: u64, probe: bool, failed: bool, slow: bool, now: Instant) {
        if failed {
            self.metrics.failure.increment(1);
        } else if slow {
            self.metrics.slow.increment(1);
        } else {
            self.metrics.success.increment(1);
        }
        let s = &self.settings;
        let mut g = self.lock();
        if g.gen != gen {
            return;
        }
        let tr = match g.state {
            State::Closed => {
                let sec = s.sec(now);
                g.window.record(sec, failed, slow);
                let t = g.window.totals(sec);
                (t.calls >= s.min_calls && s.exceeds(&t)).then(|| self.trip(&mut g, now))
            }
            State::HalfOpen if probe => {
                g.probes.calls += 1;
                g.probes.failures += u32::from(failed);
                g.probes.slow += u32::from(slow);
                if g.probes.calls >= s.half_open_calls {
                    let probes = g.probes;
                    Some(if s.exceeds(&probes) {
                        self.trip(&mut g, now)
                    } else {
                        g.trips = 0;
                        self.set_state(&mut g, State::Closed)
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        drop(g);
        if let Some(tr) = tr {
            self.emit(tr);
        }
    }

    /// A probe admitted in generation `gen` ended without an outcome (canceled): its slot is
    /// free again.
    pub(crate) fn release(&self, gen: u64) {
        let mut g = self.lock();
        if g.gen == gen && g.state == State::HalfOpen {
            g.probes_admitted = g.probes_admitted.saturating_sub(1);
        }
    }

    /// Opens the breaker for the next open wait: `open_wait * 2^(trips - 1)`, capped at
    /// `max_open_wait`, minus up to `jitter` of it.
    fn trip(&self, g: &mut Inner, now: Instant) -> Transition {
        g.trips = g.trips.saturating_add(1);
        let s = &self.settings;
        let factor = 2f64.powi(g.trips.saturating_sub(1).min(62) as i32);
        let mut wait = s
            .open_wait
            .mul_f64(factor.min(1e9))
            .min(s.max_open_wait)
            .max(s.open_wait.min(s.max_open_wait));
        if s.jitter > 0.0 {
            g.rng ^= g.rng << 13;
            g.rng ^= g.rng >> 7;
            g.rng ^= g.rng << 17;
            let unit = (g.rng >> 11) as f64 / (1u64 << 53) as f64;
            wait = wait.mul_f64(1.0 - s.jitter * unit);
        }
        g.open_until = Some(now + wait);
        self.set_state(g, State::Open)
    }

    fn set_state(&self, g: &mut Inner, to: State) -> Transition {
        let from = g.state;
        g.state = to;
        g.gen += 1;
        g.probes_admitted = 0;
        g.probes = Totals::default();
        g.window.clear();
        self.word
            .store((g.gen << 2) | index(to) as u64, Ordering::Release);
        Transition { from, to }
    }

    fn emit(&self, tr: Transition) {
        self.metrics.show(tr.to);
        self.metrics.transitions[index(tr.to)].increment(1);
        tracing::info!(
            breaker = %self.key,
            from = tr.from.as_str(),
            to = tr.to.as_str(),
            "circuit breaker state changed"
        );
        if let Some(f) = &self.settings.on_state_change {
            f(&self.key, tr.from, tr.to);
        }
    }

    /// Forces the breaker open until [`force_close`](Self::force_close) or
    /// [`reset`](Self::reset).
    /// Opened by hand: stays open until a manual close or reset, and is never evicted.
    pub(crate) fn forced_open(&self) -> bool {
        let g = self.lock();
        g.state == State::Open && g.open_until.is_none()
    }

    pub(crate) fn force_open(&self) {
        let mut g = self.lock();
        let tr = self.set_state(&mut g, State::Open);
        g.open_until = None;
        drop(g);
        self.emit(tr);
    }

    /// Closes the breaker with an empty window; the wait of the next trip stays grown.
    pub(crate) fn force_close(&self) {
        let mut g = self.lock();
        let tr = self.set_state(&mut g, State::Closed);
        drop(g);
        self.emit(tr);
    }

    /// Closes the breaker and forgets its history (window and trip count).
    pub(crate) fn reset(&self) {
        let mut g = self.lock();
        g.trips = 0;
        let tr = self.set_state(&mut g, State::Closed);
        drop(g);
        self.emit(tr);
    }

    /// Hides the breaker's state from the gauges (it was evicted).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for s in STATES {
            self.metrics.state[index(s)].set(0.0);
        }
    }

    pub(crate) fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let mut g = self.lock();
        let sec = self.settings.sec(now);
        let t = g.window.totals(sec);
        let retry_after = match (g.state, g.open_until) {
            (State::Open, Some(until)) => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        BreakerSnapshot {
            key: self.key.to_string(),
            state: g.state,
            calls: t.calls,
            failures: t.failures,
            slow_calls: t.slow,
            failure_rate: t.failure_rate(),
            slow_call_rate: t.slow_rate(),
            consecutive_trips: g.trips,
            forced_open: g.state == State::Open && g.open_until.is_none(),
            retry_after_secs: retry_after.map(ceil_secs),
            probes_in_flight: g.probes_admitted.saturating_sub(g.probes.calls),
            idle: now
                .saturating_duration_since(self.settings.start)
                .saturating_sub(Duration::from_nanos(self.last_call())),
        }
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("key", &self.key)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(jitter: f64) -> Arc<Settings> {
        Arc::new(Settings {
            window: WindowKind::Count(4),
            min_calls: 2,
            failure_rate: 0.5,
            slow_duration: None,
            slow_rate: 1.0,
            half_open_calls: 1,
            open_wait: Duration::from_secs(10),
            max_open_wait: Duration::from_secs(40),
            jitter,
            call_timeout: None,
            classifier: None,
            on_state_change: None,
            clock_at_end: false,
            start: Instant::now(),
        })
    }

    /// Trips the breaker (closed or half-open) and returns the open wait it chose.
    fn trip(b: &Breaker, now: Instant) -> Duration {
        loop {
            match b.admit(now) {
                Admission::Pass { gen, probe } => b.record(gen, probe, true, false, now),
                Admission::Reject { retry_after } => return retry_after,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_wait_doubles_up_to_the_cap_and_jitter_only_shortens_it() {
        for seed in 0..50u64 {
            let b = Breaker::new(Arc::from("k"), settings(0.5), seed.wrapping_mul(0x9E37));
            let mut now = Instant::now();
            for base in [10u64, 20, 40, 40, 40] {
                let wait = trip(&b, now);
                let full = Duration::from_secs(base);
                assert!(
                    wait <= full && wait >= full / 2,
                    "seed {seed}: {wait:?} vs {full:?}"
                );
                now += wait;
            }
        }
        let b = Breaker::new(Arc::from("k"), settings(0.0), 1);
        let now = Instant::now();
        assert_eq!(trip(&b, now), Duration::from_secs(10));
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.snapshot(now).consecutive_trips, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_of_an_older_generation_are_ignored() {
        let b = Breaker::new(Arc::from("k"), settings(0.0), 1);
        let now = Instant::now();
        let Admission::Pass { gen, .. } = b.admit(now) else {
            panic!("closed breaker rejected a call")
        };
        b.force_close();
        b.record(gen, false, true, false, now);
        b.record(gen, false, true, false, now);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot(now).calls, 0);
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
