use std::sync::atomic::{AtomicI32, AtomicU8};
use std::sync::Arc;
use std::time::Duration;

use super::adapt::{Decision, Ladder, Load};
use super::layer::AdaptiveCompressionLayer;
use super::policy::{DefaultPredicate, EventStreams, Predicate};
use super::state::{describe_metrics, Choice, EssentialFn, Shared};
use super::Algorithm;
use crate::error::ConfigError;
use crate::util::accept_encoding::Encoding;

impl AdaptiveCompressionLayer {
    /// The layer with the default configuration.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder to configure the layer.
    pub fn builder() -> AdaptiveCompressionBuilder {
        AdaptiveCompressionBuilder::default()
    }
}

impl Default for AdaptiveCompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// Configures an [`AdaptiveCompressionLayer`]. Made by [`AdaptiveCompressionLayer::builder`].
///
/// Every method takes `self` and returns it; [`build`](Self::build) checks the whole
/// configuration and fails with a [`ConfigError`] naming the first bad field.
#[must_use]
pub struct AdaptiveCompressionBuilder {
    prefer: Vec<Algorithm>,
    ladders: [Ladder; 4],
    bad_level: Option<(&'static str, String)>,
    min_size: u64,
    large_body: Duration,
    adaptive: bool,
    reuse: bool,
    event_streams: EventStreams,
    predicate: Box<dyn Predicate>,
    essential: Option<Box<EssentialFn>>,
    step_down_low: bool,
    cpu_budget: f64,
    load_interval: Duration,
    max_in_flight: Option<usize>,
    cores: Option<usize>,
}

/// Default levels: `(fast, normal, best)` per algorithm, chosen by the bench (see the module
/// docs for the figures).
pub(crate) const DEFAULT_LADDERS: [Ladder; 4] = [
    // zstd: level 1 was faster *and* smaller than 3 on both bench bodies (pledged size).
    Ladder {
        fast: -1,
        normal: 1,
        best: 6,
    },
    // br: 4 as the peers; 1 is 2x faster; 6 is 12-30% smaller than 4 at 2-3x the time.
    Ladder {
        fast: 1,
        normal: 4,
        best: 6,
    },
    // gzip: 5 costs what 4 does (zlib-rs) for 1-3% fewer bytes; 6 is 2x slower on large
    // bodies for 5% fewer bytes.
    Ladder {
        fast: 1,
        normal: 5,
        best: 6,
    },
    // deflate: as gzip.
    Ladder {
        fast: 1,
        normal: 5,
        best: 6,
    },
];

/// Bodies shorter than this are sent as they are (see the module docs for the measurement).
pub const DEFAULT_MIN_SIZE: u64 = 512;

impl Default for AdaptiveCompressionBuilder {
    fn default() -> Self {
        Self {
            prefer: Algorithm::ALL
                .into_iter()
                .filter(|a| a.is_enabled())
                .collect(),
            ladders: DEFAULT_LADDERS,
            bad_level: None,
            min_size: DEFAULT_MIN_SIZE,
            large_body: Duration::from_millis(5),
            adaptive: true,
            reuse: true,
            event_streams: EventStreams::FlushEachEvent,
            predicate: Box::new(DefaultPredicate::new()),
            essential: None,
            step_down_low: true,
            cpu_budget: 0.5,
            load_interval: Duration::from_millis(250),
            max_in_flight: None,
            cores: None,
        }
    }
}

impl AdaptiveCompressionBuilder {
    /// The server's order of preference among the codings the client weighs highest. Default:
    /// zstd, br, gzip, deflate (those compiled in). Listed algorithms must be compiled in (their
    /// `compression-*` feature); an algorithm left out is never used.
    pub fn prefer(mut self, order: &[Algorithm]) -> Self {
        self.prefer = order.to_vec();
        self
    }

    /// The level of `algorithm` under normal load. The `fast` level (used when busy or for
    /// large bodies) and the `best` level (used when idle) stay as they are, moved if needed so
    /// that `fast <= normal <= best`. Ranges: zstd -7..=22 (negative: zstd's fast levels), br 0..=11, gzip and deflate 1..=9.
    pub fn level(mut self, algorithm: Algorithm, level: i32) -> Self {
        let l = &mut self.ladders[algorithm.index()];
        l.normal = level;
        l.fast = l.fast.min(level);
        l.best = l.best.max(level);
        self.check_level(algorithm, "level", level);
        self
    }

    /// All three levels of `algorithm`: `fast` (busy, large bodies), `normal`, `best` (idle).
    pub fn levels(mut self, algorithm: Algorithm, fast: i32, normal: i32, best: i32) -> Self {
        self.ladders[algorithm.index()] = Ladder { fast, normal, best };
        for l in [fast, normal, best] {
            self.check_level(algorithm, "levels", l);
        }
        if !(fast <= normal && normal <= best) && self.bad_level.is_none() {
            self.bad_level = Some((
                "levels",
                format!("{algorithm}: need fast <= normal <= best"),
            ));
        }
        self
    }

    fn check_level(&mut self, algorithm: Algorithm, field: &'static str, level: i32) {
        if !algorithm.levels().contains(&level) && self.bad_level.is_none() {
            let r = algorithm.levels();
            self.bad_level = Some((
                field,
                format!(
                    "{algorithm} level {level} is outside {}..={}",
                    r.start(),
                    r.end()
                ),
            ));
        }
    }

    /// Bodies shorter than this many bytes (when their length is known) are not compressed.
    /// Default: [`DEFAULT_MIN_SIZE`].
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// Which content types may be compressed. Default: [`DefaultPredicate`]. The fixed rules
    /// (already encoded, partial, `no-transform`, `HEAD`, `1xx`/`204`/`304`, minimum size) apply
    /// whatever the predicate says.
    pub fn compress_when<P: Predicate>(mut self, predicate: P) -> Self {
        self.predicate = Box::new(predicate);
        self
    }

    /// Requests whose responses stay compressed, at the fast level, when compression is
    /// saturated; the others (by default all) go uncompressed then. For example the
    /// high-priority traffic: `.essential_with(|req| req.headers.get("x-priority").is_some_and(|p| p == "critical"))`.
    pub fn essential_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.essential = Some(Box::new(f));
        self
    }

    /// Whether responses to [`Priority::Low`](crate::Priority::Low) requests (the class a
    /// [`PriorityQueueLayer`](crate::queue::PriorityQueueLayer) outside put in the request
    /// extensions) step down first: one tier lower than the load says, so they get the fast
    /// level under normal load, and go uncompressed (past the budget) as soon as compression is
    /// busy, before any other response gives up its level. Default: `true`; requests without a
    /// class are not affected.
    pub fn step_down_low(mut self, on: bool) -> Self {
        self.step_down_low = on;
        self
    }

    /// Server-sent events: flushed per event (default) or excluded.
    pub fn event_streams(mut self, mode: EventStreams) -> Self {
        self.event_streams = mode;
        self
    }

    /// Whether levels adapt to the load and body size (default `true`). With `false`, every
    /// compressed response uses the `normal` level.
    pub fn adaptive(mut self, on: bool) -> Self {
        self.adaptive = on;
        self
    }

    /// The share of all cores compression may use, `0 < share <= 1`. Default: 0.5. Over three
    /// quarters of it new responses get the fast levels; over all of it, none is compressed.
    pub fn cpu_budget(mut self, share: f64) -> Self {
        self.cpu_budget = share;
        self
    }

    /// How often the load is measured (at most; measured on the next response after the
    /// interval). Default: 250 ms.
    pub fn load_interval(mut self, interval: Duration) -> Self {
        self.load_interval = interval;
        self
    }

    /// Compressions in flight at which new responses get the fast levels, whatever the CPU
    /// measurement says. Default: 4 per core.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// The cores the budget is a share of. Default: `std::thread::available_parallelism`.
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = Some(n);
        self
    }

    /// A body whose measured cost at the `normal` level would exceed this gets the `fast`
    /// level; when idle, a body gets the `best` level only if that stays under it. Default:
    /// 5 ms.
    pub fn large_body_cost(mut self, cost: Duration) -> Self {
        self.large_body = cost;
        self
    }

    /// Reuse encoder state across responses (default `true`). Off, every response allocates a
    /// fresh encoder, as the peers do: only useful to measure what reuse saves.
    pub fn reuse_encoders(mut self, on: bool) -> Self {
        self.reuse = on;
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<AdaptiveCompressionLayer, ConfigError> {
        if let Some((field, reason)) = self.bad_level {
            return Err(ConfigError::new(field, reason));
        }
        let mut prefer: Vec<Encoding> = Vec::with_capacity(self.prefer.len());
        for a in &self.prefer {
            if !a.is_enabled() {
                return Err(ConfigError::new(
                    "prefer",
                    format!("{a} needs the `compression-{}` feature", a.feature_suffix()),
                ));
            }
            if prefer.contains(&a.encoding()) {
                return Err(ConfigError::new("prefer", format!("{a} is listed twice")));
            }
            prefer.push(a.encoding());
        }
        if !(self.cpu_budget > 0.0 && self.cpu_budget <= 1.0) {
            return Err(ConfigError::new("cpu_budget", "must be in (0, 1]"));
        }
        if self.load_interval.is_zero() {
            return Err(ConfigError::new("load_interval", "must be above zero"));
        }
        if self.cores == Some(0) {
            return Err(ConfigError::new("cores", "must be at least 1"));
        }
        if self.max_in_flight == Some(0) {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        if self.large_body.is_zero() {
            return Err(ConfigError::new("large_body_cost", "must be above zero"));
        }
        let cores = self
            .cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        describe_metrics();
        let shared = Shared {
            prefer: prefer.into_boxed_slice(),
            ladders: self.ladders,
            min_size: self.min_size,
            large_body_ns: self.large_body.as_nanos() as f64,
            adaptive: self.adaptive,
            reuse: self.reuse,
            event_streams: self.event_streams,
            predicate: self.predicate,
            essential: self.essential,
            step_down_low: self.step_down_low,
            load: Load::new(
                self.load_interval,
                cores as f64 * self.cpu_budget,
                self.max_in_flight.unwrap_or(cores * 4),
            ),
            counters: Default::default(),
            choices: self.ladders.map(|l| Choice {
                level: AtomicI32::new(l.normal),
                decision: AtomicU8::new(Decision::Normal.index() as u8),
                level_gauge: std::sync::OnceLock::new(),
            }),
        };
        Ok(AdaptiveCompressionLayer::from_shared(Arc::new(shared)))
    }
}

impl std::fmt::Debug for AdaptiveCompressionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveCompressionBuilder")
            .field("prefer", &self.prefer)
            .field("min_size", &self.min_size)
            .field("adaptive", &self.adaptive)
            .field("cpu_budget", &self.cpu_budget)
            .finish_non_exhaustive()
    }
}
