//! The state every clone of the layer shares: permits, the per-class queues, the limiter.
//!
//! One `Mutex` guards it. Each admission takes it once and each release once; the critical
//! sections are a few comparisons and, on the queued path, a `VecDeque` push or pop. A lock-free
//! fast path would have to agree with the queues about who goes first, which is exactly what
//! the lock makes simple; the bench (`benches/queue.rs`) measures the cost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use metrics::{Counter, Gauge, Histogram as MetricHistogram};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::limit::Limiter;
use super::pressure::Pressure;
use super::priority::{Priority, CLASSES};
use super::saturation::{OnTick, SaturationSignal, Signal, Tick};
use super::snapshot::{ClassSnapshot, PriorityQueueSnapshot};
use crate::metrics::{labels, names};

/// Why a queued or arriving request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The queue (or the class's share of it) was full.
    Full,
    /// A request of a higher class took its place.
    Displaced,
    /// It waited longer than its class's maximum wait.
    Timeout,
    /// The queue stood above its target delay for an interval, and it had waited too long.
    Overloaded,
}

impl Reason {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Reason::Full => "queue full",
            Reason::Displaced => "displaced by a request of higher priority",
            Reason::Timeout => "queue wait too long",
            Reason::Overloaded => "overloaded",
        }
    }

    fn result(self) -> QueueResult {
        match self {
            Reason::Full | Reason::Displaced => QueueResult::Rejected,
            Reason::Timeout | Reason::Overloaded => QueueResult::Timeout,
        }
    }
}

/// The `queue_result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueResult {
    Admitted = 0,
    Rejected = 1,
    Timeout = 2,
    Canceled = 3,
}

const RESULTS: [&str; 4] = ["admitted", "rejected", "timeout", "canceled"];

/// The word a waiting request receives.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Run: a permit was taken for it at this instant.
    Admitted(Instant),
    /// Answer 503 with `Retry-After` of this many seconds.
    Rejected(Reason, u64),
}

/// A queued request, as the queue holds it.
struct Waiter {
    id: u64,
    enqueued: Instant,
    tx: oneshot::Sender<Verdict>,
}

/// The configuration, fixed when the layer is built.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) capacity: usize,
    pub(crate) class_capacity: [usize; CLASSES],
    pub(crate) max_wait: [Duration; CLASSES],
    pub(crate) codel: Option<(Duration, Duration)>,
    // Serve a waiting class at least once every this many dispatches; 0: never forced.
    pub(crate) share_every: u32,
    pub(crate) trust_header: bool,
    pub(crate) wait_window: Duration,
    // Whether the limit learns from latency: only then does a release read the clock.
    pub(crate) adaptive: bool,
    // The share of the limit each class may hold at most (1.0: all of it).
    pub(crate) class_share: [f64; CLASSES],
    // Whether admitted bodies of the lower classes yield before each chunk under pressure.
    pub(crate) pacing: bool,
    pub(crate) saturation: Option<SaturationSignal>,
}

impl Settings {
    /// The permits class `c` may hold under `limit`: its share, rounded down, at least one (the
    /// starvation guarantee: a capped class always makes progress).
    pub(crate) fn cap(&self, c: usize, limit: usize) -> usize {
        let share = self.class_share[c];
        if share >= 1.0 {
            return limit;
        }
        ((limit as f64 * share) as usize).clamp(1, limit.max(1))
    }
}

/// Wait times of one class over a sliding window: the current half and the one before.
struct WaitWindow {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated: Instant,
}

/// Waits are recorded in microseconds, up to an hour: this bounds each histogram's size.
const MAX_MICROS: u64 = 3_600_000_000;

impl WaitWindow {
    fn new(now: Instant) -> Self {
        let h = || Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid bounds");
        Self {
            current: h(),
            previous: h(),
            rotated: now,
        }
    }

    fn rotate(&mut self, now: Instant, half: Duration) {
        let since = now.saturating_duration_since(self.rotated);
        if since >= half {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            if since >= half * 2 {
                self.previous.reset();
            }
            self.rotated = now;
        }
    }

    fn record(&mut self, wait: Duration, now: Instant, half: Duration) {
        self.rotate(now, half);
        let micros = u64::try_from(wait.as_micros()).unwrap_or(MAX_MICROS);
        self.current.saturating_record(micros.min(MAX_MICROS));
    }
}

/// Completions per second, smoothed: what `Retry-After` is estimated from.
struct Drain {
    completed: u32,
    since: Instant,
    rate: f64,
}

impl Drain {
    /// Folds the completions counted since the last update into the rate, at most every
    /// 100 ms. Called on arrivals, which read the clock anyway; releases only count.
    fn tick(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= Duration::from_millis(100) {
            let rate = f64::from(self.completed) / elapsed.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                rate
            } else {
                self.rate * 0.7 + rate * 0.3
            };
            self.completed = 0;
            self.since = now;
        }
    }
}

/// Metric handles, made once when the layer is built: no label is formatted per request.
pub(crate) struct Metrics {
    size: [Gauge; CLASSES],
    requests: [[Counter; 4]; CLASSES],
    wait: [[MetricHistogram; 4]; CLASSES],
    limit: Gauge,
    in_flight: Gauge,
    lag: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let p = |c: usize| Priority::ALL[c].as_str();
        Self {
            size: std::array::from_fn(
                |c| metrics::gauge!(names::QUEUE_SIZE, labels::PRIORITY => p(c)),
            ),
            requests: std::array::from_fn(|c| {
                std::array::from_fn(|r| {
                    metrics::counter!(names::QUEUE_REQUESTS_TOTAL,
                        labels::PRIORITY => p(c), labels::QUEUE_RESULT => RESULTS[r])
                })
            }),
            wait: std::array::from_fn(|c| {
                std::array::from_fn(|r| {
                    metrics::histogram!(names::QUEUE_WAIT_DURATION_SECONDS,
                        labels::PRIORITY => p(c), labels::QUEUE_RESULT => RESULTS[r])
                })
            }),
            limit: metrics::gauge!(names::CONCURRENCY_LIMIT),
            in_flight: metrics::gauge!(names::QUEUE_IN_FLIGHT),
            lag: metrics::gauge!(names::QUEUE_RUNTIME_LAG_SECONDS),
        }
    }
}

/// Everything behind the lock.
struct Inner {
    in_flight: usize,
    // Permits held per class: a class stops at its share of the limit.
    running: [usize; CLASSES],
    limiter: Limiter,
    queues: [VecDeque<Waiter>; CLASSES],
    queued: usize,
    next_id: u64,
    // Dispatches since each class, while it had waiters, was last served (starvation guard).
    skipped: [u32; CLASSES],
    // CoDel: since when the oldest waiter has been above the target delay; and whether the
    // queue is in its overloaded mode (newest first, long waiters dropped).
    above_since: Option<Instant>,
    overloaded: bool,
    drain: Drain,
    waits: [WaitWindow; CLASSES],
    counts: [[u64; 4]; CLASSES],
}

/// The state shared by the layer, its services, their futures and bodies, and the handle.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    inner: Mutex<Inner>,
    metrics: Metrics,
    pub(crate) pressure: Pressure,
    pub(crate) signal: Option<Signal>,
}

/// What [`Shared::admit`] decided.
pub(crate) enum Admit {
    /// Run now.
    Now(Permit),
    /// Wait for a verdict.
    Queued(Ticket),
    /// Answer 503.
    Rejected(Reason, u64),
}

impl Shared {
    pub(crate) fn new(settings: Settings, limiter: Limiter, metrics: Metrics) -> Self {
        let now = Instant::now();
        metrics.limit.set(limiter.current() as f64);
        let capacity = settings.capacity;
        let signal = settings.saturation.map(Signal::new);
        Self {
            settings,
            pressure: Pressure::default(),
            signal,
            inner: Mutex::new(Inner {
                in_flight: 0,
                running: [0; CLASSES],
                limiter,
                queues: std::array::from_fn(|_| VecDeque::with_capacity(capacity.min(1024))),
                queued: 0,
                next_id: 0,
                skipped: [0; CLASSES],
                above_since: None,
                overloaded: false,
                drain: Drain {
                    completed: 0,
                    since: now,
                    rate: 0.0,
                },
                waits: std::array::from_fn(|_| WaitWindow::new(now)),
                counts: [[0; 4]; CLASSES],
            }),
            metrics,
        }
    }

    /// Starts the saturation tick on the runtime of the first request (once).
    fn start_signal(self: &Arc<Self>) {
        let Some(signal) = &self.signal else { return };
        if signal.claim_start() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let every = self
                    .settings
                    .saturation
                    .map_or(Duration::ZERO, |s| s.tick());
                rt.spawn(super::saturation::run(Arc::downgrade(self), every));
            }
        }
    }

    /// How many times an admitted body of class `c` yields before its next chunk: none for
    /// `critical` or without pacing; [`PACE_YIELDS`](super::body::PACE_YIELDS) while a more
    /// important class waits or has not answered yet, or while the runtime is saturated; else
    /// one, so that one poll of a stream never produces more than one chunk.
    pub(crate) fn pace(&self, c: usize) -> u8 {
        if !self.settings.pacing || c == 0 {
            return 0;
        }
        if self.pressure.above(c) || self.signal.as_ref().is_some_and(Signal::saturated) {
            super::body::PACE_YIELDS
        } else {
            1
        }
    }

    /// Whether class `c` may take a permit now.
    fn can_run(&self, inner: &Inner, c: usize) -> bool {
        let limit = inner.limiter.current();
        inner.in_flight < limit && inner.running[c] < self.settings.cap(c, limit)
    }

    /// Whether the limit is in use: half of it held, or a class at its share. Only then does
    /// the load say something about the limit.
    fn limit_in_use(&self, inner: &Inner) -> bool {
        let limit = inner.limiter.current();
        inner.in_flight * 2 >= limit
            || (0..CLASSES).any(|c| inner.running[c] >= self.settings.cap(c, limit))
    }

    /// A permit taken for class `c`.
    fn take(&self, inner: &mut Inner, c: usize) {
        inner.in_flight += 1;
        inner.running[c] += 1;
    }

    /// The queue length of class `c` changed: the gauge and the pacing counts follow.
    fn sized(&self, inner: &Inner, c: usize) {
        let n = inner.queues[c].len();
        self.metrics.size[c].set(n as f64);
        self.pressure.set_waiting(c, n);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request of class `p` arriving at `now`: a permit at once, a place in the queue,
    /// or a rejection.
    pub(crate) fn admit(self: &Arc<Self>, p: Priority, now: Instant) -> Admit {
        let c = p.index();
        self.start_signal();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.drain.tick(now);
        // Free permits go to waiters as soon as they free up, so waiters mean none is free,
        // except for classes held back by their share: those do not stop another class.
        if inner.queues[c].is_empty() && self.can_run(inner, c) {
            self.take(inner, c);
            self.metrics.in_flight.set(inner.in_flight as f64);
            self.count(inner, c, QueueResult::Admitted, Duration::ZERO, now);
            return Admit::Now(Permit::new(self.clone(), c, now));
        }
        self.expire(inner, now);
        let s = &self.settings;
        if inner.queues[c].len() >= s.class_capacity[c] {
            return self.reject_arrival(inner, c, Reason::Full, now);
        }
        if inner.queued >= s.capacity {
            // Make room by displacing the newest waiter of the lowest class below this one.
            let victim = (c + 1..CLASSES)
                .rev()
                .find(|&l| !inner.queues[l].is_empty());
            let Some(l) = victim else {
                return self.reject_arrival(inner, c, Reason::Full, now);
            };
            let w = inner.queues[l].pop_back().expect("non-empty");
            inner.queued -= 1;
            self.reject_waiter(inner, l, w, Reason::Displaced, now);
            self.sized(inner, l);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (tx, rx) = oneshot::channel();
        inner.queues[c].push_back(Waiter {
            id,
            enqueued: now,
            tx,
        });
        inner.queued += 1;
        self.sized(inner, c);
        self.dispatch(inner, now);
        Admit::Queued(Ticket {
            shared: self.clone(),
            id,
            class: c,
            enqueued: now,
            rx,
            done: false,
        })
    }

    fn reject_arrival(&self, inner: &mut Inner, c: usize, reason: Reason, now: Instant) -> Admit {
        self.count(inner, c, reason.result(), Duration::ZERO, now);
        Admit::Rejected(reason, retry_after(inner))
    }

    fn reject_waiter(&self, inner: &mut Inner, c: usize, w: Waiter, reason: Reason, now: Instant) {
        let waited = now.saturating_duration_since(w.enqueued);
        let result = if w
            .tx
            .send(Verdict::Rejected(reason, retry_after(inner)))
            .is_ok()
        {
            reason.result()
        } else {
            QueueResult::Canceled
        };
        self.count(inner, c, result, waited, now);
    }

    fn count(&self, inner: &mut Inner, c: usize, r: QueueResult, wait: Duration, now: Instant) {
        inner.counts[c][r as usize] += 1;
        self.metrics.requests[c][r as usize].increment(1);
        self.metrics.wait[c][r as usize].record(wait.as_secs_f64());
        if r == QueueResult::Admitted {
            let half = self.settings.wait_window / 2;
            inner.waits[c].record(wait, now, half);
        }
    }

    /// CoDel: the queue is overloaded once its oldest waiter has been above the target delay
    /// for a whole interval; it recovers as soon as the oldest waiter is below the target.
    fn update_codel(&self, inner: &mut Inner, now: Instant) {
        let Some((target, interval)) = self.settings.codel else {
            return;
        };
        let oldest = inner
            .queues
            .iter()
            .filter_map(|q| q.front())
            .map(|w| w.enqueued)
            .min();
        match oldest {
            Some(t) if now.saturating_duration_since(t) > target => {
                let since = *inner.above_since.get_or_insert(now);
                inner.overloaded = now.saturating_duration_since(since) >= interval;
            }
            _ => {
                inner.above_since = None;
                inner.overloaded = false;
            }
        }
    }

    /// Answers the waiters that waited too long: past their class's maximum wait, or, while
    /// overloaded, past the CoDel interval. Each queue is in arrival order, so only fronts are
    /// looked at.
    fn expire(&self, inner: &mut Inner, now: Instant) {
        if inner.queued == 0 {
            self.update_codel(inner, now);
            return;
        }
        self.update_codel(inner, now);
        let codel_limit = match self.settings.codel {
            Some((_, interval)) if inner.overloaded => Some(interval),
            _ => None,
        };
        for c in 0..CLASSES {
            let max_wait = self.settings.max_wait[c];
            let mut changed = false;
            while let Some(w) = inner.queues[c].front() {
                let waited = now.saturating_duration_since(w.enqueued);
                let reason = if waited >= max_wait {
                    Reason::Timeout
                } else if codel_limit.is_some_and(|l| waited >= l) {
                    Reason::Overloaded
                } else {
                    break;
                };
                let w = inner.queues[c].pop_front().expect("front exists");
                inner.queued -= 1;
                self.reject_waiter(inner, c, w, reason, now);
                changed = true;
            }
            if changed {
                self.sized(inner, c);
            }
        }
        // No reset when these drops empty the queue: the request being admitted or enqueued
        // right after them still meets the standing delay they stood for.
    }

    /// The class to serve next: the most important class with waiters (and below its share of
    /// the limit), unless such a class has been passed over `share_every` times in a row.
    fn pick(&self, inner: &mut Inner) -> Option<usize> {
        let limit = inner.limiter.current();
        let ready = |c: usize| {
            !inner.queues[c].is_empty() && inner.running[c] < self.settings.cap(c, limit)
        };
        let first = (0..CLASSES).find(|&c| ready(c))?;
        let every = self.settings.share_every;
        let starved = (first + 1..CLASSES)
            .filter(|&c| every > 0 && ready(c) && inner.skipped[c] + 1 >= every)
            .max_by_key(|&c| inner.skipped[c]);
        let chosen = starved.unwrap_or(first);
        for c in 0..CLASSES {
            if c == chosen || !ready(c) {
                inner.skipped[c] = 0;
            } else {
                inner.skipped[c] = inner.skipped[c].saturating_add(1);
            }
        }
        Some(chosen)
    }

    /// Hands out the free permits to waiters.
    fn dispatch(&self, inner: &mut Inner, now: Instant) {
        while inner.in_flight < inner.limiter.current() {
            // `pick` skips the classes at their share.
            let Some(c) = self.pick(inner) else { break };
            let w = if inner.overloaded {
                inner.queues[c].pop_back()
            } else {
                inner.queues[c].pop_front()
            };
            let w = w.expect("pick returns a class with waiters");
            inner.queued -= 1;
            self.sized(inner, c);
            let waited = now.saturating_duration_since(w.enqueued);
            if w.tx.send(Verdict::Admitted(now)).is_ok() {
                self.take(inner, c);
                self.count(inner, c, QueueResult::Admitted, waited, now);
            } else {
                self.count(inner, c, QueueResult::Canceled, waited, now);
            }
        }
        self.metrics.in_flight.set(inner.in_flight as f64);
        reset_if_empty(inner);
    }

    /// A permit comes back; `sample` is (latency, end) when the request ran to its end under
    /// an adaptive limit. Reads the clock only when it has to (adaptive limit, or waiters).
    fn release(&self, c: usize, sample: Option<(Duration, Instant)>) {
        let mut g = self.lock();
        let inner = &mut *g;
        let in_use = self.limit_in_use(inner);
        let in_flight = inner.in_flight;
        inner.in_flight = in_flight.saturating_sub(1);
        self.metrics.in_flight.set(inner.in_flight as f64);
        inner.running[c] = inner.running[c].saturating_sub(1);
        inner.drain.completed = inner.drain.completed.saturating_add(1);
        if let Some((rtt, end)) = sample {
            if inner.limiter.update(rtt, in_flight, in_use, end) {
                self.metrics.limit.set(inner.limiter.current() as f64);
            }
        }
        if inner.queued > 0 {
            let now = sample.map_or_else(Instant::now, |(_, end)| end);
            self.expire(inner, now);
            self.dispatch(inner, now);
        }
    }

    /// A queued request gives up: its own maximum wait passed (`timeout`), or its future was
    /// dropped. Returns `true` if it was still queued (and is now removed); `false` if a verdict
    /// was already sent to it.
    fn leave(&self, inner: &mut Inner, t: &Ticket, result: QueueResult, now: Instant) -> bool {
        let q = &mut inner.queues[t.class];
        // Ids grow in arrival order and removals keep the order: a binary search finds it.
        let Ok(pos) = q.binary_search_by_key(&t.id, |w| w.id) else {
            return false;
        };
        q.remove(pos);
        inner.queued -= 1;
        reset_if_empty(inner);
        self.sized(inner, t.class);
        let waited = now.saturating_duration_since(t.enqueued);
        self.count(inner, t.class, result, waited, now);
        true
    }

    pub(crate) fn snapshot(&self) -> PriorityQueueSnapshot {
        let now = Instant::now();
        let half = self.settings.wait_window / 2;
        let mut g = self.lock();
        let inner = &mut *g;
        let classes = Priority::ALL
            .iter()
            .enumerate()
            .map(|(c, &priority)| {
                let w = &mut inner.waits[c];
                w.rotate(now, half);
                let mut h = w.current.clone();
                let _ = h.add(&w.previous);
                let q = |q: f64| Duration::from_micros(h.value_at_quantile(q));
                let counts = inner.counts[c];
                ClassSnapshot {
                    priority,
                    queued: inner.queues[c].len(),
                    in_flight: inner.running[c],
                    max_in_flight: self.settings.cap(c, inner.limiter.current()),
                    admitted: counts[0],
                    rejected: counts[1],
                    timed_out: counts[2],
                    canceled: counts[3],
                    wait_samples: h.len(),
                    wait_p50: q(0.5),
                    wait_p90: q(0.9),
                    wait_p99: q(0.99),
                    wait_max: Duration::from_micros(h.max()),
                }
            })
            .collect();
        PriorityQueueSnapshot {
            limit: inner.limiter.current(),
            in_flight: inner.in_flight,
            queued: inner.queued,
            overloaded: inner.overloaded && inner.queued > 0,
            drain_rate: inner.drain.rate,
            saturated: self.signal.as_ref().is_some_and(Signal::saturated),
            runtime_lag: self.signal.as_ref().map_or(Duration::ZERO, Signal::lag),
            classes,
        }
    }
}

impl OnTick for Shared {
    fn signal(&self) -> &Signal {
        self.signal
            .as_ref()
            .expect("the tick runs only with a signal")
    }

    /// Saturated: the limit stops growing and, while in use, is cut once per drain. Any change
    /// of limit or state lets the waiters the new limit allows in.
    fn on_tick(&self, tick: Tick, now: Instant) {
        self.metrics.lag.set(self.signal().lag().as_secs_f64());
        if !tick.saturated && !tick.changed {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.limiter.set_saturated(tick.saturated);
        if tick.saturated && self.limit_in_use(inner) && inner.limiter.cut(inner.in_flight, now) {
            self.metrics.limit.set(inner.limiter.current() as f64);
        }
        if inner.queued > 0 {
            self.expire(inner, now);
            self.dispatch(inner, now);
        }
    }
}

/// An empty queue has no standing delay: CoDel's overloaded mode ends with it.
fn reset_if_empty(inner: &mut Inner) {
    if inner.queued == 0 {
        inner.above_since = None;
        inner.overloaded = false;
    }
}

/// `Retry-After` for a request turned away now: the time to drain the queue at the recent
/// completion rate, in whole seconds, between 1 and 60.
fn retry_after(inner: &Inner) -> u64 {
    if inner.drain.rate <= 0.0 {
        return 1;
    }
    let secs = (inner.queued as f64 + 1.0) / inner.drain.rate;
    (secs.ceil() as u64).clamp(1, 60)
}

/// A held concurrency permit. Dropped before [`Permit::finish`] (the client went away, the
/// service failed to become ready), it comes back without teaching the limiter anything.
pub(crate) struct Permit {
    shared: Arc<Shared>,
    /// The request's class (an index into `Priority::ALL`).
    class: usize,
    start: Instant,
    /// When the service answered with the response head.
    head: Option<Instant>,
    /// The head is out: the request no longer counts as waiting for the CPU (pacing).
    headed: bool,
    done: bool,
}

impl Permit {
    fn new(shared: Arc<Shared>, class: usize, start: Instant) -> Self {
        shared.pressure.head_started(class);
        Self {
            shared,
            class,
            start,
            head: None,
            headed: false,
            done: false,
        }
    }

    /// The service answered: the latency the adaptive limit learns from ends here. The rest,
    /// the body's transfer, is paced by the client as much as by the service: measured to the
    /// end of the body, one slow reader per interval would hold the limit at its minimum.
    pub(crate) fn head(&mut self) {
        self.headed();
        if self.shared.settings.adaptive {
            self.head = Some(Instant::now());
        }
    }

    fn headed(&mut self) {
        if !self.headed {
            self.headed = true;
            self.shared.pressure.head_done(self.class);
        }
    }

    /// How many times the body yields before its next chunk (see [`Shared::pace`]).
    pub(crate) fn pace(&self) -> u8 {
        self.shared.pace(self.class)
    }

    /// The request ran to its end: give the permit back, with its latency (to the response
    /// head) for the limiter.
    pub(crate) fn finish(mut self) {
        self.done = true;
        self.headed();
        let sample = self.shared.settings.adaptive.then(|| {
            let end = Instant::now();
            let head = self.head.unwrap_or(end);
            (head.saturating_duration_since(self.start), end)
        });
        self.shared.release(self.class, sample);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.headed();
            self.shared.release(self.class, None);
        }
    }
}

/// A queued request's place in line. Dropped before a verdict (the client went away), it
/// leaves the queue; if a permit had already been sent to it, the permit goes back.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    id: u64,
    class: usize,
    enqueued: Instant,
    rx: oneshot::Receiver<Verdict>,
    done: bool,
}

impl Ticket {
    /// When the request joined the queue.
    pub(crate) fn enqueued(&self) -> Instant {
        self.enqueued
    }

    /// The instant at which this request's class stops waiting.
    pub(crate) fn deadline(&self) -> Instant {
        self.enqueued + self.shared.settings.max_wait[self.class]
    }

    /// Polls for the verdict.
    pub(crate) fn poll_verdict(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Verdict> {
        use std::future::Future;
        let v = std::task::ready!(std::pin::Pin::new(&mut self.rx).poll(cx));
        self.done = true;
        // The sender is only dropped with a verdict sent; treat anything else as overload.
        std::task::Poll::Ready(v.unwrap_or(Verdict::Rejected(Reason::Overloaded, 1)))
    }

    /// The request's own maximum wait passed: leave the queue and return the rejection, or the
    /// verdict that was sent meanwhile.
    pub(crate) fn time_out(&mut self) -> Verdict {
        let now = Instant::now();
        let mut g = self.shared.lock();
        let inner = &mut *g;
        self.done = true;
        if self.shared.leave(inner, self, QueueResult::Timeout, now) {
            return Verdict::Rejected(Reason::Timeout, retry_after(inner));
        }
        self.rx
            .try_recv()
            .unwrap_or(Verdict::Rejected(Reason::Overloaded, 1))
    }

    /// Turns an admission verdict into the permit it stands for.
    pub(crate) fn permit(&self, start: Instant) -> Permit {
        Permit::new(self.shared.clone(), self.class, start)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let now = Instant::now();
        let mut g = self.shared.lock();
        let inner = &mut *g;
        if self.shared.leave(inner, self, QueueResult::Canceled, now) {
            return;
        }
        // A verdict is on its way to nobody: if it was a permit, hand it to the next waiter.
        if let Ok(Verdict::Admitted(_)) = self.rx.try_recv() {
            inner.in_flight = inner.in_flight.saturating_sub(1);
            self.shared.metrics.in_flight.set(inner.in_flight as f64);
            inner.running[self.class] = inner.running[self.class].saturating_sub(1);
            self.shared.expire(inner, now);
            self.shared.dispatch(inner, now);
        }
    }
}

pub(crate) fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        names::QUEUE_SIZE,
        Unit::Count,
        "Requests waiting in the priority queue, by class."
    );
    describe_histogram!(
        names::QUEUE_WAIT_DURATION_SECONDS,
        Unit::Seconds,
        "Time requests waited in the priority queue, by class and result."
    );
    describe_counter!(
        names::QUEUE_REQUESTS_TOTAL,
        Unit::Count,
        "Requests seen by the priority queue, by class and result."
    );
    describe_gauge!(
        names::QUEUE_IN_FLIGHT,
        Unit::Count,
        "Requests holding a permit of the priority queue."
    );
    describe_gauge!(
        names::CONCURRENCY_LIMIT,
        Unit::Count,
        "The concurrency limit of the priority queue."
    );
    describe_gauge!(
        names::QUEUE_RUNTIME_LAG_SECONDS,
        Unit::Seconds,
        "How late the priority queue's periodic tick runs, smoothed: its saturation signal."
    );
}
