//! Per-route latency statistics: a sliding window of histogram slices and a since-start total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::snapshot::{LatencySummary, Outcome, RouteSnapshot};
use crate::metrics::{labels, names};
use crate::route::RouteTable;
use crate::util::method::{method_label, METHOD_CLASSES};

/// The route bucket for requests whose route is unknown (no `MatchedPath`, no route function).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The route bucket for routes beyond the configured maximum number of routes.
pub const OVERFLOW_ROUTE: &str = "overflow";

/// Latencies are recorded in microseconds and clamped to one hour, which bounds the size of a
/// histogram whatever a client or handler does.
const MAX_MICROS: u64 = 3_600_000_000;

/// Counts and a histogram over one period.
#[derive(Clone)]
pub(crate) struct Counts {
    // Latencies of the requests that finished (completed or error), in microseconds.
    hist: Histogram<u64>,
    // Exact sum, so the mean does not carry the histogram's rounding.
    sum_micros: u64,
    // Exact largest value: the histogram only knows it to its precision.
    max_micros: u64,
    errors: u64,
    canceled: u64,
    slow: u64,
}

impl Counts {
    fn new(precision: u8) -> Self {
        let mut hist = Histogram::new(precision).expect("precision validated by the builder");
        hist.auto(true);
        Self {
            hist,
            sum_micros: 0,
            max_micros: 0,
            errors: 0,
            canceled: 0,
            slow: 0,
        }
    }

    fn reset(&mut self) {
        self.hist.reset();
        self.sum_micros = 0;
        self.max_micros = 0;
        self.errors = 0;
        self.canceled = 0;
        self.slow = 0;
    }

    fn record(&mut self, micros: u64, outcome: Outcome, slow: bool) {
        match outcome {
            Outcome::Canceled => self.canceled += 1,
            Outcome::Error | Outcome::Completed => {
                // Auto-resize only fails on allocation failure; a lost sample beats a panic.
                let _ = self.hist.record(micros.max(1));
                self.sum_micros = self.sum_micros.saturating_add(micros);
                self.max_micros = self.max_micros.max(micros);
                if outcome == Outcome::Error {
                    self.errors += 1;
                }
            }
        }
        if slow {
            self.slow += 1;
        }
    }

    fn add(&mut self, other: &Counts) {
        let _ = self.hist.add(&other.hist);
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
        self.errors += other.errors;
        self.canceled += other.canceled;
        self.slow += other.slow;
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        let finished = h.len();
        // The middle of the histogram bucket holding the quantile: at most half a bucket (0.5% at
        // the default precision) from the exact value, and never above the exact max.
        let q = |q: f64| {
            if finished == 0 {
                Duration::ZERO
            } else {
                let v = h.median_equivalent(h.value_at_quantile(q));
                Duration::from_micros(v.min(self.max_micros))
            }
        };
        LatencySummary {
            count: finished + self.canceled,
            errors: self.errors,
            canceled: self.canceled,
            slow: self.slow,
            mean: Duration::from_micros(self.sum_micros.checked_div(finished).unwrap_or(0)),
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_micros(self.max_micros),
        }
    }
}

/// The histograms of one route, behind the route's own lock.
struct Histograms {
    // Ring of window slices; `epochs[i]` says which slice period `slices[i]` holds.
    slices: Box<[Counts]>,
    epochs: Box<[u64]>,
    // What the slices held when they were reused: the since-start total is this plus the
    // live slices, so a request is recorded in one histogram, not two.
    retired: Counts,
}

/// Everything recorded for one route.
pub(crate) struct RouteStats {
    pub(crate) name: Arc<str>,
    pub(crate) threshold: Duration,
    // One lock per route, never one for all: requests to different routes never contend, and the
    // critical section is two histogram increments.
    hist: Mutex<Histograms>,
    metrics: RouteMetrics,
}

/// Metric handles of one route, created on first use and then reused, so no label set is built
/// per request.
struct RouteMetrics {
    // Per method class: the duration histograms by status code (few per route and method, so a
    // linear scan of a copy-on-write list is cheaper than any map).
    durations: [ArcSwap<Vec<(u16, ::metrics::Histogram)>>; METHOD_CLASSES],
    slow: [OnceLock<::metrics::Counter>; METHOD_CLASSES],
}

/// Status label for requests canceled before a response head existed (nginx's convention).
pub(crate) const CLIENT_CLOSED_STATUS: u16 = 499;
/// Pseudo status for inner-service errors, which have no status code; rendered as
/// `error_type="service_error"` instead.
pub(crate) const SERVICE_ERROR_STATUS: u16 = 0;

impl RouteStats {
    fn new(name: Arc<str>, threshold: Duration, layout: &Layout) -> Self {
        Self {
            name,
            threshold,
            hist: Mutex::new(Histograms {
                slices: (0..layout.slices)
                    .map(|_| Counts::new(layout.precision))
                    .collect(),
                epochs: vec![u64::MAX; layout.slices].into_boxed_slice(),
                retired: Counts::new(layout.precision),
            }),
            metrics: RouteMetrics {
                durations: Default::default(),
                slow: Default::default(),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Histograms> {
        self.hist.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, layout: &Layout, now: Instant, total: Duration, outcome: Outcome) {
        let micros = u64::try_from(total.as_micros())
            .unwrap_or(MAX_MICROS)
            .min(MAX_MICROS);
        let slow = total >= self.threshold;
        let epoch = layout.epoch(now);
        let idx = (epoch % layout.slices as u64) as usize;
        let mut guard = self.lock();
        let h = &mut *guard;
        if h.epochs[idx] != epoch {
            if h.epochs[idx] != u64::MAX {
                h.retired.add(&h.slices[idx]);
            }
            h.slices[idx].reset();
            h.epochs[idx] = epoch;
        }
        h.slices[idx].record(micros, outcome, slow);
    }

    pub(crate) fn snapshot(&self, layout: &Layout, now: Instant) -> RouteSnapshot {
        let epoch = layout.epoch(now);
        let oldest = epoch.saturating_sub(layout.slices as u64 - 1);
        let h = self.lock();
        let mut window = Counts::new(layout.precision);
        let mut total = h.retired.clone();
        for (counts, &e) in h.slices.iter().zip(h.epochs.iter()) {
            if e == u64::MAX {
                continue;
            }
            total.add(counts);
            if e >= oldest && e <= epoch {
                window.add(counts);
            }
        }
        drop(h);
        RouteSnapshot {
            route: self.name.to_string(),
            slow_threshold: self.threshold,
            window: window.summary(),
            total: total.summary(),
        }
    }

    pub(crate) fn reset(&self) {
        let mut h = self.lock();
        for s in h.slices.iter_mut() {
            s.reset();
        }
        h.epochs.iter_mut().for_each(|e| *e = u64::MAX);
        h.retired.reset();
    }

    /// Records `seconds` in the duration histogram for this route, method class and status; the
    /// handle is created on first use and reused after.
    pub(crate) fn record_duration(&self, method: usize, status: u16, seconds: f64) {
        let slot = &self.metrics.durations[method];
        if let Some((_, h)) = slot.load().iter().find(|(s, _)| *s == status) {
            h.record(seconds);
            return;
        }
        self.new_duration_histogram(method, status).record(seconds);
    }

    #[cold]
    fn new_duration_histogram(&self, method: usize, status: u16) -> ::metrics::Histogram {
        let slot = &self.metrics.durations[method];
        let make = || {
            let method = method_label(method);
            let route = self.name.clone();
            if status == SERVICE_ERROR_STATUS {
                ::metrics::histogram!(names::HTTP_SERVER_REQUEST_DURATION_SECONDS,
                    labels::HTTP_REQUEST_METHOD => method,
                    labels::HTTP_ROUTE => route,
                    labels::ERROR_TYPE => "service_error")
            } else {
                let code = http::StatusCode::from_u16(status)
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|_| status.to_string());
                ::metrics::histogram!(names::HTTP_SERVER_REQUEST_DURATION_SECONDS,
                    labels::HTTP_REQUEST_METHOD => method,
                    labels::HTTP_ROUTE => route,
                    labels::HTTP_RESPONSE_STATUS_CODE => code)
            }
        };
        let mut made = None;
        slot.rcu(|list| {
            if list.iter().any(|(s, _)| *s == status) {
                return Arc::clone(list);
            }
            let mut list = Vec::clone(list);
            list.push((status, made.get_or_insert_with(make).clone()));
            Arc::new(list)
        });
        slot.load()
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, h)| h.clone())
            .unwrap_or_else(make)
    }

    pub(crate) fn slow_counter(&self, method: usize) -> &::metrics::Counter {
        self.metrics.slow[method].get_or_init(|| {
            ::metrics::counter!(names::SLOW_REQUESTS_TOTAL,
                labels::HTTP_REQUEST_METHOD => method_label(method),
                labels::HTTP_ROUTE => self.name.clone())
        })
    }
}

/// How time is cut into window slices, and the histogram precision.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) start: Instant,
    pub(crate) slice_nanos: u64,
    pub(crate) slices: usize,
    pub(crate) precision: u8,
}

impl Layout {
    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start);
        // u64 nanoseconds cover 584 years of uptime; a u128 division costs several times more.
        let nanos = since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()));
        (nanos / self.slice_nanos).min(u64::MAX - 1)
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(self.slice_nanos.saturating_mul(self.slices as u64))
    }
}

/// Route name to stats. foldhash: route names are chosen by the application, not by clients,
/// so a fast hash without flood resistance is safe here (and was 4% of the layer's cost with
/// SipHash).
type RouteMap = HashMap<Arc<str>, Arc<RouteStats>, foldhash::fast::RandomState>;

/// The set of routes, bounded.
pub(crate) struct Registry {
    // Read on every request, written only when a route is seen for the first time: a snapshot
    // map swapped atomically gives lock-free reads.
    routes: ArcSwap<RouteMap>,
    unmatched: Arc<RouteStats>,
    overflow: Arc<RouteStats>,
    max_routes: usize,
    default_threshold: Duration,
    thresholds: RouteTable<Duration>,
    pub(crate) layout: Layout,
}

impl Registry {
    pub(crate) fn new(
        layout: Layout,
        max_routes: usize,
        default_threshold: Duration,
        thresholds: RouteTable<Duration>,
    ) -> Self {
        let threshold_of = |name: &str| thresholds.get(name).copied().unwrap_or(default_threshold);
        let unmatched = Arc::new(RouteStats::new(
            UNMATCHED_ROUTE.into(),
            threshold_of(UNMATCHED_ROUTE),
            &layout,
        ));
        let overflow = Arc::new(RouteStats::new(
            OVERFLOW_ROUTE.into(),
            threshold_of(OVERFLOW_ROUTE),
            &layout,
        ));
        Self {
            routes: ArcSwap::from_pointee(RouteMap::default()),
            unmatched,
            overflow,
            max_routes,
            default_threshold,
            thresholds,
            layout,
        }
    }

    /// The stats of `route` (`None`: the unmatched bucket), created on first sight.
    pub(crate) fn get(&self, route: Option<&str>) -> Arc<RouteStats> {
        let Some(route) = route else {
            return self.unmatched.clone();
        };
        if let Some(stats) = self.routes.load().get(route) {
            return stats.clone();
        }
        self.insert(route)
    }

    #[cold]
    fn insert(&self, route: &str) -> Arc<RouteStats> {
        let mut created: Option<Arc<RouteStats>> = None;
        let mut result = None;
        self.routes.rcu(|map| {
            if let Some(stats) = map.get(route) {
                result = Some(stats.clone());
                return Arc::clone(map);
            }
            if map.len() >= self.max_routes {
                result = Some(self.overflow.clone());
                return Arc::clone(map);
            }
            let stats = created
                .get_or_insert_with(|| {
                    let threshold = self
                        .thresholds
                        .get(route)
                        .copied()
                        .unwrap_or(self.default_threshold);
                    Arc::new(RouteStats::new(route.into(), threshold, &self.layout))
                })
                .clone();
            let mut map = HashMap::clone(map);
            map.insert(stats.name.clone(), stats.clone());
            result = Some(stats);
            Arc::new(map)
        });
        result.unwrap_or_else(|| self.overflow.clone())
    }

    /// Every route with at least one request, plus the fixed buckets when they were used.
    pub(crate) fn all(&self) -> Vec<Arc<RouteStats>> {
        let mut all: Vec<_> = self.routes.load().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.push(self.unmatched.clone());
        all.push(self.overflow.clone());
        all
    }

    pub(crate) fn route(&self, name: &str) -> Option<Arc<RouteStats>> {
        match name {
            UNMATCHED_ROUTE => Some(self.unmatched.clone()),
            OVERFLOW_ROUTE => Some(self.overflow.clone()),
            _ => self.routes.load().get(name).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(slices: usize) -> Layout {
        Layout {
            start: Instant::now(),
            slice_nanos: Duration::from_secs(10).as_nanos() as u64,
            slices,
            precision: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn window_forgets_old_slices_and_total_keeps_them() {
        let l = layout(6);
        let r = RouteStats::new("/a".into(), Duration::from_secs(1), &l);
        r.record(
            &l,
            Instant::now(),
            Duration::from_millis(10),
            Outcome::Completed,
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        r.record(
            &l,
            Instant::now(),
            Duration::from_millis(20),
            Outcome::Error,
        );
        let s = r.snapshot(&l, Instant::now());
        assert_eq!(s.window.count, 2);
        assert_eq!(s.window.errors, 1);
        // 61 s after the first sample it has left the window but not the total.
        tokio::time::advance(Duration::from_secs(31)).await;
        let s = r.snapshot(&l, Instant::now());
        assert_eq!(s.window.count, 1);
        assert_eq!(s.window.max, Duration::from_millis(20));
        assert_eq!(s.total.count, 2);
        // Long idle: nothing left in the window, even though slices were never overwritten.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let s = r.snapshot(&l, Instant::now());
        assert_eq!(s.window.count, 0);
        assert_eq!(s.window.p99, Duration::ZERO);
        assert_eq!(s.total.count, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn canceled_and_slow_are_counted_apart() {
        let l = layout(2);
        let r = RouteStats::new("/a".into(), Duration::from_millis(100), &l);
        let now = Instant::now();
        r.record(&l, now, Duration::from_millis(150), Outcome::Completed);
        r.record(&l, now, Duration::from_millis(500), Outcome::Canceled);
        r.record(&l, now, Duration::from_millis(5), Outcome::Completed);
        let s = r.snapshot(&l, now).total;
        assert_eq!((s.count, s.canceled, s.slow, s.errors), (3, 1, 2, 0));
        // Canceled requests do not distort latency percentiles.
        assert_eq!(s.max, Duration::from_millis(150));
        assert_eq!(s.mean, Duration::from_micros(77_500));
    }

    #[test]
    fn registry_is_bounded() {
        let reg = Registry::new(layout(1), 2, Duration::from_secs(1), RouteTable::default());
        let a = reg.get(Some("/a"));
        assert_eq!(&*a.name, "/a");
        assert!(Arc::ptr_eq(&a, &reg.get(Some("/a"))));
        reg.get(Some("/b"));
        assert_eq!(&*reg.get(Some("/c")).name, OVERFLOW_ROUTE);
        assert_eq!(&*reg.get(None).name, UNMATCHED_ROUTE);
        assert_eq!(reg.all().len(), 4);
    }

    #[test]
    fn route_thresholds_are_exact_or_by_prefix() {
        let mut thresholds = RouteTable::default();
        thresholds.insert(crate::Route::prefix("/export/"), Duration::from_secs(30));
        thresholds.insert("/export/{id}/status".into(), Duration::from_millis(50));
        thresholds.insert(UNMATCHED_ROUTE.into(), Duration::from_secs(5));
        let reg = Registry::new(layout(1), 8, Duration::from_secs(1), thresholds);
        let t = |route| reg.get(route).threshold;
        assert_eq!(t(Some("/export/{id}")), Duration::from_secs(30));
        assert_eq!(t(Some("/export/{id}/status")), Duration::from_millis(50));
        assert_eq!(t(Some("/exports")), Duration::from_secs(1));
        assert_eq!(t(None), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn huge_latencies_are_clamped() {
        let l = layout(1);
        let r = RouteStats::new("/a".into(), Duration::from_secs(1), &l);
        r.record(
            &l,
            Instant::now(),
            Duration::from_secs(86_400 * 365),
            Outcome::Completed,
        );
        let s = r.snapshot(&l, Instant::now()).total;
        assert_eq!(s.max, Duration::from_micros(MAX_MICROS));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// For any arrival times, outcomes and latencies, the window holds exactly the
            /// requests of the last `slices` slice periods, and the total holds all of them.
            #[test]
            fn window_matches_a_model(
                slices in 1usize..8,
                slice_ms in 1u64..5_000,
                events in prop::collection::vec((0u64..20_000, 1u64..5_000_000, 0u8..3), 1..200),
                query_gap in 0u64..60_000,
            ) {
                let start = Instant::now();
                let l = Layout {
                    start,
                    slice_nanos: slice_ms * 1_000_000,
                    slices,
                    precision: 2,
                };
                let r = RouteStats::new("/p".into(), Duration::from_secs(1), &l);
                let mut t = 0u64;
                let mut model = Vec::new();
                for (gap, micros, kind) in &events {
                    t += gap;
                    let outcome = [Outcome::Completed, Outcome::Error, Outcome::Canceled][*kind as usize];
                    r.record(&l, start + Duration::from_millis(t), Duration::from_micros(*micros), outcome);
                    model.push((t / slice_ms, *micros, outcome));
                }
                let now_ms = t + query_gap;
                let snap = r.snapshot(&l, start + Duration::from_millis(now_ms));
                let current = now_ms / slice_ms;
                let in_window: Vec<_> = model
                    .iter()
                    .filter(|(e, _, _)| *e + slices as u64 > current)
                    .collect();
                prop_assert_eq!(snap.window.count, in_window.len() as u64);
                prop_assert_eq!(
                    snap.window.canceled,
                    in_window.iter().filter(|m| m.2 == Outcome::Canceled).count() as u64
                );
                prop_assert_eq!(
                    snap.window.errors,
                    in_window.iter().filter(|m| m.2 == Outcome::Error).count() as u64
                );
                let window_max = in_window
                    .iter()
                    .filter(|m| m.2 != Outcome::Canceled)
                    .map(|m| m.1)
                    .max()
                    .unwrap_or(0);
                prop_assert_eq!(snap.window.max, Duration::from_micros(window_max));
                prop_assert_eq!(snap.total.count, model.len() as u64);
                let total_max = model
                    .iter()
                    .filter(|m| m.2 != Outcome::Canceled)
                    .map(|m| m.1)
                    .max()
                    .unwrap_or(0);
                prop_assert_eq!(snap.total.max, Duration::from_micros(total_max));
                // Percentiles are ordered and bounded by the max.
                let w = snap.window;
                prop_assert!(w.p50 <= w.p90 && w.p90 <= w.p95 && w.p95 <= w.p99);
                prop_assert!(w.p99 <= w.p999 && w.p999 <= w.max);
            }
        }
    }
}
