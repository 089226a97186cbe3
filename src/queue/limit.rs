//! Concurrency limits: fixed, or adaptive (gradient or AIMD on observed latency).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

/// How an adaptive concurrency limit moves. Passed to
/// [`adaptive_limit`](super::PriorityQueueBuilder::adaptive_limit).
///
/// Both algorithms learn from the latency of each admitted request, measured from the moment it
/// got its permit to the end of its response body, and keep the limit between
/// [`min`](Self::min) and [`max`](Self::max).
///
/// - [`gradient`](Self::gradient) (after Netflix's concurrency-limits): the ratio of the
///   no-load latency (the lowest seen recently) to the current latency says how much of the
///   concurrency is queueing inside the service; the limit follows
///   `limit * clamp(tolerance * no_load / latency, 0.5, 1) + sqrt(limit)`, smoothed.
/// - [`aimd`](Self::aimd): grows by one per limit's worth of requests while latency stays below
///   a threshold and the limit is in use, and shrinks by [`backoff`](Self::backoff) (at most
///   once per threshold's worth of time) when a request is slower.
///
/// ```
/// use std::time::Duration;
/// use tower_perf::queue::{AdaptiveLimit, PriorityQueueLayer};
///
/// let layer = PriorityQueueLayer::builder()
///     .adaptive_limit(AdaptiveLimit::gradient().min(4).max(256).initial(16).smoothing(0.2))
///     .build()
///     .unwrap();
/// let aimd = PriorityQueueLayer::builder()
///     .adaptive_limit(AdaptiveLimit::aimd(Duration::from_millis(50)).backoff(0.9))
///     .build()
///     .unwrap();
/// # let _ = (layer, aimd);
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    algo: Algo,
    min: usize,
    max: usize,
    initial: usize,
    smoothing: f64,
}

#[derive(Debug, Clone, Copy)]
enum Algo {
    Gradient { tolerance: f64 },
    Aimd { threshold: Duration, backoff: f64 },
}

impl AdaptiveLimit {
    /// The gradient algorithm. Defaults: min 1, max 1000, initial 20, smoothing 0.2,
    /// tolerance 1.2.
    pub fn gradient() -> Self {
        Self {
            algo: Algo::Gradient { tolerance: 1.2 },
            min: 1,
            max: 1000,
            initial: 20,
            smoothing: 0.2,
        }
    }

    /// The AIMD algorithm: a request slower than `latency_threshold` shrinks the limit.
    /// Defaults: min 1, max 1000, initial 20, backoff 0.9.
    pub fn aimd(latency_threshold: Duration) -> Self {
        Self {
            algo: Algo::Aimd {
                threshold: latency_threshold,
                backoff: 0.9,
            },
            min: 1,
            max: 1000,
            initial: 20,
            smoothing: 0.2,
        }
    }

    /// The lowest the limit goes. At least 1.
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest the limit goes.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The limit before the first measurement.
    pub fn initial(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// Gradient only: how far each sample moves the limit towards its new estimate, in (0, 1].
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// Gradient only: latency up to `tolerance` times the no-load latency counts as no
    /// queueing, at least 1. Higher admits more concurrency (more throughput, more latency).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        if let Algo::Gradient { tolerance: t } = &mut self.algo {
            *t = tolerance;
        }
        self
    }

    /// AIMD only: the factor a slow request multiplies the limit by, in [0.5, 1).
    pub fn backoff(mut self, backoff: f64) -> Self {
        if let Algo::Aimd { backoff: b, .. } = &mut self.algo {
            *b = backoff;
        }
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let field = "adaptive_limit";
        if self.min == 0 || self.max < self.min || self.max > 1_000_000 {
            return Err(ConfigError::new(
                field,
                format!(
                    "min must be at least 1 and max between min and 1000000, got min {} max {}",
                    self.min, self.max
                ),
            ));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(ConfigError::new(
                field,
                format!("initial must be between min and max, got {}", self.initial),
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::new(field, "smoothing must be in (0, 1]"));
        }
        match self.algo {
            Algo::Gradient { tolerance } if !(1.0..=10.0).contains(&tolerance) => Err(
                ConfigError::new(field, "tolerance must be between 1 and 10"),
            ),
            Algo::Aimd { threshold, backoff }
                if threshold.is_zero() || !(0.5..1.0).contains(&backoff) =>
            {
                Err(ConfigError::new(
                    field,
                    "the latency threshold must be greater than zero and backoff in [0.5, 1)",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Light-load samples per no-load window of the gradient algorithm: the no-load latency is the
/// lowest of this window and the one before, so it can rise again when the service gets slower
/// for good (the limit then shrinks until requests stop queueing, and those samples teach it).
const NOLOAD_WINDOW: u32 = 500;

/// The limit in force, and what the adaptive algorithms remember. Lives under the queue's lock.
#[derive(Debug)]
pub(crate) struct Limiter {
    adaptive: Option<AdaptiveLimit>,
    limit: f64,
    // Gradient: the current batch of samples (sum of latencies in seconds, count, highest
    // in-flight count), the lowest latency ever, and the lowest light-load latency of this and
    // the previous window of samples.
    batch_sum: f64,
    batch_n: u32,
    batch_in_flight: usize,
    batch_in_use: bool,
    floor: f64,
    win_min: f64,
    prev_min: f64,
    win_samples: u32,
    // AIMD: when the limit last shrank, so one burst of slow requests shrinks it once.
    last_decrease: Option<Instant>,
    // The runtime is saturated (the saturation signal): the limit does not grow, and is cut
    // once per drain (`cut`); when the last cut was made.
    saturated: bool,
    last_cut: Option<Instant>,
}

/// What one saturation cut keeps of the limit.
const CUT: f64 = 0.8;
/// The shortest time between two saturation cuts: ten ticks of the default signal, so each cut
/// is judged on a smoothed lag that has seen its effect begin.
const CUT_EVERY: Duration = Duration::from_millis(100);

impl Limiter {
    pub(crate) fn fixed(limit: usize) -> Self {
        Self {
            adaptive: None,
            limit: limit as f64,
            batch_sum: 0.0,
            batch_n: 0,
            batch_in_flight: 0,
            batch_in_use: false,
            floor: f64::INFINITY,
            win_min: f64::INFINITY,
            prev_min: f64::INFINITY,
            win_samples: 0,
            last_decrease: None,
            saturated: false,
            last_cut: None,
        }
    }

    pub(crate) fn adaptive(config: AdaptiveLimit) -> Self {
        let mut l = Self::fixed(config.initial);
        l.adaptive = Some(config);
        l
    }

    /// The number of requests that may run at once.
    pub(crate) fn current(&self) -> usize {
        self.limit as usize
    }

    /// The saturation signal's state: while saturated the limit does not grow.
    pub(crate) fn set_saturated(&mut self, saturated: bool) {
        self.saturated = saturated;
    }

    /// The runtime is saturated and the limit in use: cut it to four fifths, not below `min`,
    /// once the requests admitted above the last cut have drained (`in_flight` at most the
    /// limit) and at most every 100 ms. One cut per drain is what keeps it from collapsing:
    /// streams admitted before a cut keep the runtime busy for a while, and cutting again for
    /// the lag they cause would overshoot. Returns whether the limit changed.
    pub(crate) fn cut(&mut self, in_flight: usize, now: Instant) -> bool {
        let Some(cfg) = &self.adaptive else {
            return false;
        };
        let due = self
            .last_cut
            .is_none_or(|t| now.saturating_duration_since(t) >= CUT_EVERY);
        if !due || in_flight > self.current() {
            return false;
        }
        let before = self.current();
        self.limit = (self.limit * CUT).max(cfg.min as f64);
        self.last_cut = Some(now);
        self.batch_sum = 0.0;
        self.batch_n = 0;
        self.batch_in_flight = 0;
        self.batch_in_use = false;
        self.current() != before
    }

    /// Learns from one request that held a permit for `rtt` while `in_flight` requests (itself
    /// included) held one; `in_use` says whether the limit was in use (half of it held, or a
    /// class at its share): only then may it grow. Returns whether the limit changed.
    pub(crate) fn update(
        &mut self,
        rtt: Duration,
        in_flight: usize,
        in_use: bool,
        now: Instant,
    ) -> bool {
        let Some(cfg) = &self.adaptive else {
            return false;
        };
        let grow = in_use && !self.saturated;
        let before = self.current();
        let (min, max) = (cfg.min as f64, cfg.max as f64);
        let rtt_s = rtt.as_secs_f64().max(1e-6);
        match cfg.algo {
            Algo::Gradient { tolerance } => {
                // The no-load latency is learned from requests that did not queue inside the
                // service (at most half the limit in flight): under saturation every sample is
                // inflated, and learning from them would ratchet the limit up for ever.
                self.floor = self.floor.min(rtt_s);
                if in_flight <= 1 || (in_flight as f64) * 2.0 <= self.limit {
                    self.win_min = self.win_min.min(rtt_s);
                    self.win_samples += 1;
                    if self.win_samples >= NOLOAD_WINDOW {
                        self.prev_min = self.win_min;
                        self.win_min = f64::INFINITY;
                        self.win_samples = 0;
                    }
                }
                let light = self.win_min.min(self.prev_min);
                let no_load = if light.is_finite() { light } else { self.floor };
                // One step per batch of about `limit` samples (one round trip's worth at
                // saturation): stepping on every sample would overreact to noise.
                self.batch_sum += rtt_s;
                self.batch_n += 1;
                self.batch_in_flight = self.batch_in_flight.max(in_flight);
                self.batch_in_use |= in_use;
                if f64::from(self.batch_n) < self.limit.max(1.0) {
                    return false;
                }
                let rtt_avg = self.batch_sum / f64::from(self.batch_n);
                let peak = self.batch_in_flight;
                let used = self.batch_in_use || (peak as f64) * 2.0 >= self.limit;
                self.batch_in_use = false;
                self.batch_sum = 0.0;
                self.batch_n = 0;
                self.batch_in_flight = 0;
                let gradient = (tolerance * no_load / rtt_avg).clamp(0.5, 1.0);
                let target = self.limit * gradient + self.limit.sqrt();
                let next = self.limit * (1.0 - cfg.smoothing) + target * cfg.smoothing;
                // A limit the traffic does not use says nothing about the service: it may
                // shrink, never grow, while at most half of it is in use. (Without this the
                // `sqrt` allowance grew an idle limit to 70 on a pool of 4 at 1x load, and the
                // next burst queued 50 deep inside the service.)
                if next > self.limit && (!used || self.saturated) {
                    return false;
                }
                self.limit = next.clamp(min, max);
            }
            Algo::Aimd { threshold, backoff } => {
                if rtt > threshold {
                    let due = self
                        .last_decrease
                        .is_none_or(|t| now.saturating_duration_since(t) >= threshold);
                    if due {
                        self.limit = (self.limit * backoff).clamp(min, max);
                        self.last_decrease = Some(now);
                    }
                } else if grow {
                    self.limit = (self.limit + 1.0 / self.limit).clamp(min, max);
                }
            }
        }
        self.current() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service with `capacity` workers of `base` each: beyond `capacity` requests in flight,
    /// the extra ones wait for a worker, so latency grows in proportion.
    fn latency(in_flight: usize, capacity: usize, base: Duration) -> Duration {
        base.mul_f64((in_flight as f64 / capacity as f64).max(1.0))
    }

    /// Drives `limiter` saturated (as many requests in flight as the limit allows, as under
    /// overload) for `rounds` samples; returns the limits seen over the last quarter.
    fn run(limiter: &mut Limiter, capacity: usize, rounds: usize) -> (usize, usize) {
        let base = Duration::from_millis(5);
        let mut now = Instant::now();
        // Traffic starts light: one request at a time, as when a server comes up.
        for _ in 0..100 {
            now += base;
            limiter.update(base, 1, 2 >= limiter.current(), now);
        }
        let (mut lo, mut hi) = (usize::MAX, 0);
        for i in 0..rounds {
            let in_flight = limiter.current();
            let rtt = latency(in_flight, capacity, base);
            now += rtt / in_flight as u32;
            limiter.update(rtt, in_flight, in_flight * 2 >= limiter.current(), now);
            if i >= rounds * 3 / 4 {
                lo = lo.min(limiter.current());
                hi = hi.max(limiter.current());
            }
        }
        (lo, hi)
    }

    #[test]
    fn gradient_converges_from_above_and_below() {
        for capacity in [4, 16, 64] {
            for initial in [1, 200] {
                let mut l = Limiter::adaptive(AdaptiveLimit::gradient().initial(initial));
                let (lo, hi) = run(&mut l, capacity, 20_000);
                // The equilibrium is tolerance * capacity + sqrt(limit): above the capacity
                // (the service is kept busy), well below where latency would blow up.
                assert!(
                    lo >= capacity && hi <= capacity * 2 + 8,
                    "capacity {capacity} from {initial}: settled in {lo}..={hi}"
                );
            }
        }
    }

    #[test]
    fn aimd_converges_into_a_band() {
        for capacity in [4, 16, 64] {
            // Slow means more than 1.5x the no-load latency: limit about 1.5x capacity.
            let mut l = Limiter::adaptive(
                AdaptiveLimit::aimd(Duration::from_micros(7_500))
                    .initial(1)
                    .max(10_000),
            );
            let (lo, hi) = run(&mut l, capacity, 200_000);
            assert!(
                lo >= capacity && hi <= capacity * 2,
                "capacity {capacity}: settled in {lo}..={hi}"
            );
        }
    }

    #[test]
    fn idle_traffic_does_not_inflate_the_limit() {
        let mut l = Limiter::adaptive(AdaptiveLimit::gradient().initial(10));
        let now = Instant::now();
        for _ in 0..10_000 {
            l.update(Duration::from_millis(5), 1, false, now);
        }
        assert_eq!(l.current(), 10);
    }

    #[test]
    fn an_unused_limit_does_not_grow_on_noisy_latency() {
        let mut l = Limiter::adaptive(AdaptiveLimit::gradient().initial(16));
        let now = Instant::now();
        for _ in 0..100 {
            l.update(Duration::from_millis(5), 1, false, now);
        }
        // A quarter of the limit in use, latency 10-30% above no-load (noise, no queueing).
        for i in 0..20_000u64 {
            let rtt = Duration::from_micros(5_500 + (i % 5) * 250);
            l.update(rtt, 4, false, now);
        }
        assert!(l.current() <= 16, "grew to {}", l.current());
    }

    #[test]
    fn saturation_cuts_once_per_drain_and_never_below_min() {
        let mut l = Limiter::adaptive(AdaptiveLimit::gradient().initial(100).min(8));
        let t0 = Instant::now();
        l.set_saturated(true);
        // 100 in flight, limit 100: cut to 80.
        assert!(l.cut(100, t0));
        assert_eq!(l.current(), 80);
        // Too soon, and then the 100 admitted before have not drained below 80: no cut.
        assert!(!l.cut(80, t0 + Duration::from_millis(50)));
        assert!(!l.cut(90, t0 + Duration::from_secs(1)));
        // Drained: the next cut.
        assert!(l.cut(80, t0 + Duration::from_secs(1)));
        assert_eq!(l.current(), 64);
        let mut t = t0 + Duration::from_secs(1);
        for _ in 0..100 {
            t += Duration::from_millis(100);
            l.cut(0, t);
        }
        assert_eq!(l.current(), 8);
        // A fixed limit is never cut.
        let mut f = Limiter::fixed(8);
        assert!(!f.cut(0, t));
    }

    #[test]
    fn a_saturated_limit_does_not_grow() {
        let mut l = Limiter::adaptive(AdaptiveLimit::gradient().initial(10));
        let now = Instant::now();
        l.set_saturated(true);
        // Heads come back fast, at no-load latency, and the limit is in use: the gradient
        // alone would grow it by its sqrt allowance.
        for _ in 0..10_000 {
            l.update(Duration::from_millis(1), 10, true, now);
        }
        assert_eq!(l.current(), 10);
        l.set_saturated(false);
        for _ in 0..1_000 {
            l.update(Duration::from_millis(1), 10, true, now);
        }
        assert!(l.current() > 10);
    }

    #[test]
    fn fixed_never_moves() {
        let mut l = Limiter::fixed(8);
        assert!(!l.update(Duration::from_secs(10), 8, true, Instant::now()));
        assert_eq!(l.current(), 8);
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(AdaptiveLimit::gradient().min(0).validate().is_err());
        assert!(AdaptiveLimit::gradient().min(10).max(5).validate().is_err());
        assert!(AdaptiveLimit::gradient().initial(5000).validate().is_err());
        assert!(AdaptiveLimit::gradient().smoothing(0.0).validate().is_err());
        assert!(AdaptiveLimit::gradient().tolerance(0.5).validate().is_err());
        assert!(AdaptiveLimit::aimd(Duration::ZERO).validate().is_err());
        assert!(AdaptiveLimit::aimd(Duration::from_millis(1))
            .backoff(1.0)
            .validate()
            .is_err());
        assert!(AdaptiveLimit::gradient().validate().is_ok());
    }
}
