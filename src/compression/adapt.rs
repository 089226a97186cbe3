//! The adaptive part: how busy compression keeps the CPU, and what that means for each response.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::Algorithm;

/// How loaded compression is, as decided over the last interval (with hysteresis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Compression used under a quarter of its CPU budget: spare CPU goes to ratio (each
    /// algorithm's `best` level, for bodies small enough that it stays cheap).
    Idle,
    /// The configured (`normal`) levels.
    Normal,
    /// Over three quarters of the budget, or too many compressions in flight: `fast` levels.
    Busy,
    /// Over the budget: new responses are sent without compression until load falls.
    Saturated,
}

impl Tier {
    fn from_u8(v: u8) -> Tier {
        match v {
            0 => Tier::Idle,
            1 => Tier::Normal,
            2 => Tier::Busy,
            _ => Tier::Saturated,
        }
    }

    /// The next tier towards `Saturated` (itself at the end): where low-priority responses
    /// stand.
    pub(crate) fn cheaper(self) -> Tier {
        Tier::from_u8(self as u8 + 1)
    }

    /// The name used in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Idle => "idle",
            Tier::Normal => "normal",
            Tier::Busy => "busy",
            Tier::Saturated => "saturated",
        }
    }
}

/// What the layer did with a response, and why: the `decision` label of
/// `tower_perf_compression_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Compressed at the `best` level: the CPU was idle and the body small enough.
    Idle,
    /// Compressed at the `normal` level.
    Normal,
    /// Compressed at the `fast` level because compression is busy.
    Busy,
    /// Compressed at the `fast` level because the body is large: at the normal level its
    /// measured cost would exceed the per-response cost cap.
    LargeBody,
    /// Not compressed because compression is saturated.
    Saturated,
    /// Not compressed: the client asked for `identity` (or accepts no coding the layer offers).
    Identity,
    /// Not compressed: the body is shorter than the minimum size.
    TooSmall,
    /// Not compressed: the predicate refused the content type.
    ContentType,
    /// Not compressed: the response already has a `Content-Encoding`.
    AlreadyEncoded,
    /// Not compressed: a partial response (`206` or `Content-Range`).
    Partial,
    /// Not compressed: `Cache-Control: no-transform`.
    NoTransform,
    /// Not compressed: a response to `HEAD`.
    Head,
    /// Not compressed: a status without content (`1xx`, `204`, `304`).
    Status,
    /// Not compressed: server-sent events, excluded by configuration.
    EventStream,
    /// Answered `406 Not Acceptable`: the client accepts neither `identity` nor any coding the
    /// layer offers.
    NotAcceptable,
}

impl Decision {
    pub(crate) const COUNT: usize = 15;
    pub(crate) const ALL: [Decision; Decision::COUNT] = [
        Decision::Idle,
        Decision::Normal,
        Decision::Busy,
        Decision::LargeBody,
        Decision::Saturated,
        Decision::Identity,
        Decision::TooSmall,
        Decision::ContentType,
        Decision::AlreadyEncoded,
        Decision::Partial,
        Decision::NoTransform,
        Decision::Head,
        Decision::Status,
        Decision::EventStream,
        Decision::NotAcceptable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Idle => "idle",
            Decision::Normal => "normal",
            Decision::Busy => "busy",
            Decision::LargeBody => "large_body",
            Decision::Saturated => "saturated",
            Decision::Identity => "identity",
            Decision::TooSmall => "too_small",
            Decision::ContentType => "content_type",
            Decision::AlreadyEncoded => "already_encoded",
            Decision::Partial => "partial",
            Decision::NoTransform => "no_transform",
            Decision::Head => "head",
            Decision::Status => "status",
            Decision::EventStream => "event_stream",
            Decision::NotAcceptable => "not_acceptable",
        }
    }

    pub(crate) fn index(self) -> usize {
        Decision::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }

    /// Whether the representation could differ for another `Accept-Encoding`, so that the
    /// response needs `Vary: Accept-Encoding`.
    pub(crate) fn varies(self) -> bool {
        matches!(
            self,
            Decision::Idle
                | Decision::Normal
                | Decision::Busy
                | Decision::LargeBody
                | Decision::Saturated
                | Decision::Identity
                | Decision::Head
                | Decision::NotAcceptable
        )
    }
}

/// The three levels of one algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ladder {
    pub(crate) fast: i32,
    pub(crate) normal: i32,
    pub(crate) best: i32,
}

/// Which rung of a [`Ladder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rung {
    Fast = 0,
    Normal = 1,
    Best = 2,
}

impl Ladder {
    pub(crate) fn level(&self, rung: Rung) -> i32 {
        match rung {
            Rung::Fast => self.fast,
            Rung::Normal => self.normal,
            Rung::Best => self.best,
        }
    }
}

/// Load thresholds, as shares of the CPU budget used over the last interval: `(down, up)`.
/// Moving up a tier takes more than `up`; moving down one takes less than the lower tier's
/// `down`, so a load near a threshold does not flap between two tiers.
const IDLE_UP: f64 = 0.25;
const NORMAL_DOWN: f64 = 0.10;
const BUSY_UP: f64 = 0.75;
const BUSY_DOWN: f64 = 0.50;
const SATURATED_UP: f64 = 1.0;
const SATURATED_DOWN: f64 = 0.80;

/// Fixed-point scale of the cost averages: ns per byte × 1024.
const COST_SCALE: f64 = 1024.0;

/// The load controller and the cost of every setting.
#[derive(Debug)]
pub(crate) struct Load {
    /// Start of the clock used for `last_eval`.
    base: Instant,
    /// Length of a measurement interval.
    interval: Duration,
    /// CPU nanoseconds compression may use per nanosecond of wall time (cores × budget share).
    budget: f64,
    /// Compressing bodies beyond which the tier is at least `Busy`, whatever the interval said.
    max_in_flight: usize,
    /// Nanoseconds spent inside encoders since the layer was built (all threads).
    busy_ns: AtomicU64,
    /// `busy_ns` when the current interval started.
    busy_at_eval: AtomicU64,
    /// Estimated encoder nanoseconds of the responses sent uncompressed because of saturation
    /// (their length times the fast level's cost): the demand that shedding hides, so that a
    /// saturated layer does not read its own quiet as a fall in load.
    shed_ns: AtomicU64,
    /// `shed_ns` when the current interval started.
    shed_at_eval: AtomicU64,
    /// When the current interval started, in ns since `base`.
    last_eval: AtomicU64,
    /// The current tier (`Tier as u8`).
    tier: AtomicU8,
    /// Share of the budget used over the last complete interval, × 1000.
    utilization_milli: AtomicU64,
    /// Bodies being compressed now (server-sent events excluded: they mostly wait).
    in_flight: AtomicUsize,
    /// Moving average of ns per input byte, by `[algorithm][rung]`, × [`COST_SCALE`].
    cost: [[AtomicU64; 3]; 4],
}

impl Load {
    pub(crate) fn new(interval: Duration, budget: f64, max_in_flight: usize) -> Self {
        let cost = Algorithm::ALL.map(|a| {
            [Rung::Fast, Rung::Normal, Rung::Best]
                .map(|r| AtomicU64::new((initial_cost(a, r) * COST_SCALE) as u64))
        });
        Self {
            base: Instant::now(),
            interval,
            budget,
            max_in_flight,
            busy_ns: AtomicU64::new(0),
            busy_at_eval: AtomicU64::new(0),
            shed_ns: AtomicU64::new(0),
            shed_at_eval: AtomicU64::new(0),
            last_eval: AtomicU64::new(0),
            tier: AtomicU8::new(Tier::Normal as u8),
            utilization_milli: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            cost,
        }
    }

    /// The tier for a response starting now; ends the interval when it is over (one caller
    /// wins that, the others read the tier it set).
    pub(crate) fn tier(&self) -> Tier {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_eval.load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= interval
            && self
                .last_eval
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let busy = self.busy_ns.load(Ordering::Relaxed);
            let before = self.busy_at_eval.swap(busy, Ordering::Relaxed);
            let shed = self.shed_ns.load(Ordering::Relaxed);
            let shed_before = self.shed_at_eval.swap(shed, Ordering::Relaxed);
            let elapsed = (now - last) as f64;
            let used = busy.saturating_sub(before) as f64 / (elapsed * self.budget);
            let demand = used + shed.saturating_sub(shed_before) as f64 / (elapsed * self.budget);
            self.utilization_milli.store(
                (used * 1000.0).min(u64::MAX as f64) as u64,
                Ordering::Relaxed,
            );
            let cur = Tier::from_u8(self.tier.load(Ordering::Relaxed));
            let next = next_tier(cur, demand);
            self.tier.store(next as u8, Ordering::Relaxed);
        }
        let tier = Tier::from_u8(self.tier.load(Ordering::Relaxed));
        if tier < Tier::Busy && self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight {
            return Tier::Busy;
        }
        tier
    }

    /// The tier as last decided, without ending an interval.
    pub(crate) fn current_tier(&self) -> Tier {
        Tier::from_u8(self.tier.load(Ordering::Relaxed))
    }

    pub(crate) fn utilization(&self) -> f64 {
        self.utilization_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the encoder time of the current interval is still under the budget for the time
    /// elapsed in it: when saturated, compression goes on up to the budget, not beyond.
    pub(crate) fn within_budget(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let elapsed = now.saturating_sub(self.last_eval.load(Ordering::Relaxed)) as f64;
        let used = self
            .busy_ns
            .load(Ordering::Relaxed)
            .saturating_sub(self.busy_at_eval.load(Ordering::Relaxed)) as f64;
        used < elapsed * self.budget
    }

    /// Records the estimated encoder time of a response sent uncompressed for saturation.
    pub(crate) fn add_shed(&self, ns: u64) {
        self.shed_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records time spent inside an encoder.
    pub(crate) fn add_busy(&self, ns: u64) {
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Average ns per input byte of a setting.
    pub(crate) fn cost(&self, algorithm: Algorithm, rung: Rung) -> f64 {
        self.cost[algorithm.index()][rung as usize].load(Ordering::Relaxed) as f64 / COST_SCALE
    }

    /// Folds one finished body into the moving average (weight 1/8). Concurrent updates may
    /// lose one another's sample; an average does not mind.
    pub(crate) fn record_cost(&self, algorithm: Algorithm, rung: Rung, ns: u64, bytes: u64) {
        if bytes < 512 {
            // Fixed costs dominate tiny bodies; they would inflate the per-byte figure.
            return;
        }
        let sample = ns as f64 / bytes as f64 * COST_SCALE;
        let cell = &self.cost[algorithm.index()][rung as usize];
        let old = cell.load(Ordering::Relaxed) as f64;
        let new = old + (sample - old) / 8.0;
        cell.store(new.max(1.0) as u64, Ordering::Relaxed);
    }
}

fn next_tier(cur: Tier, used: f64) -> Tier {
    // Up as far as the load says at once; down one tier per interval.
    let up = if used > SATURATED_UP {
        Tier::Saturated
    } else if used > BUSY_UP {
        Tier::Busy
    } else if used > IDLE_UP {
        Tier::Normal
    } else {
        Tier::Idle
    };
    if up > cur {
        return up;
    }
    match cur {
        Tier::Saturated if used < SATURATED_DOWN => Tier::Busy,
        Tier::Busy if used < BUSY_DOWN => Tier::Normal,
        Tier::Normal if used < NORMAL_DOWN => Tier::Idle,
        _ => cur,
    }
}

/// Starting cost estimates (ns per input byte, the larger of the 10 KB JSON and 1 MB HTML
/// figures of the bench's level sweep, 2-core machine) for the default levels, before the
/// layer has measured its own.
fn initial_cost(algorithm: Algorithm, rung: Rung) -> f64 {
    match (algorithm, rung) {
        (Algorithm::Zstd, Rung::Fast) => 3.0,
        (Algorithm::Zstd, Rung::Normal) => 4.0,
        (Algorithm::Zstd, Rung::Best) => 16.0,
        // Google's C brotli (`compression-native`): quality 1 / 4 / 6 at 2.5 / 7.7 / 11.5.
        (Algorithm::Br, Rung::Fast) if cfg!(feature = "compression-native") => 3.0,
        (Algorithm::Br, Rung::Normal) if cfg!(feature = "compression-native") => 8.0,
        (Algorithm::Br, Rung::Best) if cfg!(feature = "compression-native") => 12.0,
        // The Rust port.
        (Algorithm::Br, Rung::Fast) => 9.0,
        (Algorithm::Br, Rung::Normal) => 18.0,
        (Algorithm::Br, Rung::Best) => 40.0,
        (_, Rung::Fast) => 3.5,
        (_, Rung::Normal) => 10.0,
        (_, Rung::Best) => 14.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_indices_follow_all() {
        for (i, d) in Decision::ALL.into_iter().enumerate() {
            assert_eq!(d.index(), i);
        }
    }

    #[test]
    fn hysteresis() {
        use Tier::*;
        assert_eq!(next_tier(Normal, 0.3), Normal);
        assert_eq!(next_tier(Normal, 0.05), Idle);
        assert_eq!(next_tier(Idle, 0.2), Idle);
        assert_eq!(next_tier(Idle, 0.3), Normal);
        assert_eq!(next_tier(Normal, 0.8), Busy);
        assert_eq!(next_tier(Busy, 0.6), Busy);
        assert_eq!(next_tier(Busy, 0.4), Normal);
        assert_eq!(next_tier(Normal, 1.5), Saturated);
        assert_eq!(next_tier(Idle, 1.5), Saturated);
        assert_eq!(next_tier(Saturated, 0.9), Saturated);
        assert_eq!(next_tier(Saturated, 0.0), Busy);
        assert_eq!(next_tier(Busy, 0.0), Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn intervals_and_in_flight() {
        let load = Load::new(Duration::from_millis(100), 1.0, 2);
        assert_eq!(load.tier(), Tier::Normal);
        // 90 ms of encoder time in a 100 ms interval with a 1-core budget: busy.
        load.add_busy(90_000_000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Busy);
        assert!((load.utilization() - 0.9).abs() < 0.01);
        // Not over yet: no change.
        load.add_busy(500_000_000);
        assert_eq!(load.tier(), Tier::Busy);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Saturated);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Busy);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Normal);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Idle);
        load.enter();
        load.enter();
        assert_eq!(load.tier(), Tier::Busy);
        load.leave();
        assert_eq!(load.tier(), Tier::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn shed_demand_keeps_saturation_and_the_budget_still_admits_some() {
        let load = Load::new(Duration::from_millis(100), 1.0, 100);
        load.add_busy(150_000_000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Saturated);
        // Saturated and nothing compressed, but the shed responses would have cost 90 ms:
        // demand 0.9, over the 0.8 needed to step down.
        load.add_shed(90_000_000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Saturated);
        assert_eq!(load.utilization(), 0.0);
        // Within the interval, compression is admitted while its time stays under the budget.
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(load.within_budget());
        load.add_busy(9_000_000);
        assert!(load.within_budget());
        load.add_busy(2_000_000);
        assert!(!load.within_budget());
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(load.within_budget());
        // Demand gone (11 ms used, nothing shed, over 115 ms): one tier down per interval.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Busy);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(load.tier(), Tier::Normal);
    }

    #[test]
    fn cost_average() {
        let load = Load::new(Duration::from_millis(100), 1.0, 2);
        let before = load.cost(Algorithm::Gzip, Rung::Normal);
        for _ in 0..64 {
            load.record_cost(Algorithm::Gzip, Rung::Normal, 100_000, 5_000);
        }
        let after = load.cost(Algorithm::Gzip, Rung::Normal);
        assert!(before != after);
        assert!((after - 20.0).abs() < 0.1, "{after}");
        load.record_cost(Algorithm::Gzip, Rung::Normal, 100_000_000, 10);
        assert_eq!(load.cost(Algorithm::Gzip, Rung::Normal), after);
    }
}
