use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tower_layer::Layer;

use super::adapt::{Decision, Ladder, Load, Rung, Tier};
use super::policy::{DefaultPredicate, Predicate};
use super::service::AdaptiveCompression;
use super::Algorithm;
use crate::error::ConfigError;
use crate::metrics::{labels, names};
use crate::util::accept_encoding::Encoding;

/// What happens to server-sent events (`text/event-stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventStreams {
    /// Compress, and flush the encoder after each frame the service sends (one event), so the
    /// client decodes every event as it arrives. The default.
    #[default]
    FlushEachEvent,
    /// Send them uncompressed.
    Exclude,
}

/// Counters of one encoding (`identity` included), by decision.
#[derive(Debug, Default)]
pub(crate) struct EncodingCounters {
    pub(crate) decisions: [AtomicU64; Decision::COUNT],
    pub(crate) input_bytes: AtomicU64,
    pub(crate) output_bytes: AtomicU64,
    // Metric handles, made on first use so that a recorder installed after the layer was built
    // still gets them; no label string is built per response.
    responses_metric: [OnceLock<::metrics::Counter>; Decision::COUNT],
    input_metric: OnceLock<::metrics::Counter>,
    output_metric: OnceLock<::metrics::Counter>,
}

/// Per-algorithm state the stats show: the level last chosen and why.
#[derive(Debug)]
pub(crate) struct Choice {
    pub(crate) level: AtomicI32,
    pub(crate) decision: AtomicU8,
}

/// State shared by every clone of the layer, its services, bodies and handles.
pub(crate) struct Shared {
    /// Server preference order, as the negotiator's encodings.
    pub(crate) prefer: Box<[Encoding]>,
    /// Levels by `Algorithm::index`.
    pub(crate) ladders: [Ladder; 4],
    pub(crate) min_size: u64,
    /// A body whose estimated cost at the normal level exceeds this gets the fast level.
    pub(crate) large_body_ns: f64,
    pub(crate) adaptive: bool,
    pub(crate) reuse: bool,
    pub(crate) event_streams: EventStreams,
    pub(crate) predicate: Box<dyn Predicate>,
    /// Requests that keep compression (at the fast level) when saturated.
    pub(crate) essential: Option<Box<EssentialFn>>,
    pub(crate) load: Load,
    /// By `Encoding` order: zstd, br, gzip, deflate, identity.
    pub(crate) counters: [EncodingCounters; 5],
    pub(crate) choices: [Choice; 4],
}

impl Shared {
    /// Counts one response.
    pub(crate) fn count(&self, encoding: Encoding, decision: Decision) {
        let i = encoding_index(encoding);
        let c = &self.counters[i];
        let d = decision.index();
        c.decisions[d].fetch_add(1, Ordering::Relaxed);
        c.responses_metric[d]
            .get_or_init(|| {
                ::metrics::counter!(names::COMPRESSION_RESPONSES_TOTAL,
                    labels::ENCODING => encoding.as_str(),
                    labels::DECISION => decision.as_str())
            })
            .increment(1);
        if let Some(a) = Algorithm::from_encoding(encoding) {
            let choice = &self.choices[a.index()];
            choice.decision.store(d as u8, Ordering::Relaxed);
        }
    }

    /// Records the level chosen for an algorithm.
    pub(crate) fn chose(&self, algorithm: Algorithm, level: i32) {
        self.choices[algorithm.index()]
            .level
            .store(level, Ordering::Relaxed);
    }

    /// Adds the bytes of a finished (or abandoned) compressed body.
    pub(crate) fn bytes(&self, encoding: Encoding, input: u64, output: u64) {
        let c = &self.counters[encoding_index(encoding)];
        c.input_bytes.fetch_add(input, Ordering::Relaxed);
        c.output_bytes.fetch_add(output, Ordering::Relaxed);
        c.input_metric
            .get_or_init(|| {
                ::metrics::counter!(names::COMPRESSION_INPUT_BYTES_TOTAL,
                    labels::ENCODING => encoding.as_str())
            })
            .increment(input);
        c.output_metric
            .get_or_init(|| {
                ::metrics::counter!(names::COMPRESSION_OUTPUT_BYTES_TOTAL,
                    labels::ENCODING => encoding.as_str())
            })
            .increment(output);
    }

    /// The rung and decision for a compressible response of `size` bytes (when known):
    /// `None` when the load says to send it uncompressed.
    pub(crate) fn choose(
        &self,
        algorithm: Algorithm,
        size: Option<u64>,
        essential: bool,
    ) -> (Option<Rung>, Decision) {
        if !self.adaptive {
            return (Some(Rung::Normal), Decision::Normal);
        }
        match self.load.tier() {
            Tier::Saturated => {
                if essential || self.load.within_budget() {
                    // Up to the budget, compression goes on at the fast level.
                    (Some(Rung::Fast), Decision::Busy)
                } else {
                    let bytes = size.unwrap_or(64 * 1024) as f64;
                    self.load
                        .add_shed((bytes * self.load.cost(algorithm, Rung::Fast)) as u64);
                    (None, Decision::Saturated)
                }
            }
            Tier::Busy => (Some(Rung::Fast), Decision::Busy),
            tier => {
                // Streams of unknown length are costed as one large chunk: they flow through
                // in bounded pieces, so the cap is about the whole body's CPU time.
                let est = |rung| self.load.cost(algorithm, rung) * size.unwrap_or(u64::MAX) as f64;
                if tier == Tier::Idle && size.is_some() && est(Rung::Best) <= self.large_body_ns {
                    (Some(Rung::Best), Decision::Idle)
                } else if size.is_some() && est(Rung::Normal) > self.large_body_ns {
                    (Some(Rung::Fast), Decision::LargeBody)
                } else {
                    (Some(Rung::Normal), Decision::Normal)
                }
            }
        }
    }
}

/// Says whether a request is essential: see [`AdaptiveCompressionBuilder::essential`].
pub(crate) type EssentialFn = dyn Fn(&http::request::Parts) -> bool + Send + Sync;

fn encoding_index(e: Encoding) -> usize {
    match e {
        Encoding::Zstd => 0,
        Encoding::Br => 1,
        Encoding::Gzip => 2,
        Encoding::Deflate => 3,
        Encoding::Identity => 4,
    }
}

fn describe_metrics() {
    use ::metrics::{describe_counter, Unit};
    describe_counter!(
        names::COMPRESSION_RESPONSES_TOTAL,
        Unit::Count,
        "Responses seen by the compression layer, by content coding sent and decision."
    );
    describe_counter!(
        names::COMPRESSION_INPUT_BYTES_TOTAL,
        Unit::Bytes,
        "Body bytes given to an encoder, by content coding."
    );
    describe_counter!(
        names::COMPRESSION_OUTPUT_BYTES_TOTAL,
        Unit::Bytes,
        "Compressed body bytes sent, by content coding."
    );
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
    /// high-priority traffic: `.essential(|req| req.headers.get("x-priority").is_some_and(|p| p == "critical"))`.
    pub fn essential<F>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.essential = Some(Box::new(f));
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
            load: Load::new(
                self.load_interval,
                cores as f64 * self.cpu_budget,
                self.max_in_flight.unwrap_or(cores * 4),
            ),
            counters: Default::default(),
            choices: self.ladders.map(|l| Choice {
                level: AtomicI32::new(l.normal),
                decision: AtomicU8::new(Decision::Normal.index() as u8),
            }),
        };
        Ok(AdaptiveCompressionLayer {
            shared: Arc::new(shared),
        })
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

/// Compresses response bodies, choosing the coding from `Accept-Encoding` and the level from
/// the body size and the load. See the [module docs](super).
///
/// Clones share one state (load measurement, encoder costs, stats).
#[derive(Clone)]
pub struct AdaptiveCompressionLayer {
    shared: Arc<Shared>,
}

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

    /// A handle to read the layer's stats at run time.
    pub fn handle(&self) -> CompressionHandle {
        CompressionHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Default for AdaptiveCompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for AdaptiveCompressionLayer {
    type Service = AdaptiveCompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveCompression::new(inner, self.shared.clone())
    }
}

impl std::fmt::Debug for AdaptiveCompressionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveCompressionLayer")
            .finish_non_exhaustive()
    }
}

/// Reads the stats of an [`AdaptiveCompressionLayer`]. Cheap to clone.
#[derive(Clone)]
pub struct CompressionHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CompressionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionHandle").finish_non_exhaustive()
    }
}

impl CompressionHandle {
    /// The current load tier.
    pub fn tier(&self) -> Tier {
        self.shared.load.current_tier()
    }

    /// Responses counted with this encoding and decision.
    pub fn responses(&self, encoding: &str, decision: Decision) -> u64 {
        let i = match encoding {
            "zstd" => 0,
            "br" => 1,
            "gzip" => 2,
            "deflate" => 3,
            "identity" => 4,
            _ => return 0,
        };
        self.shared.counters[i].decisions[decision.index()].load(Ordering::Relaxed)
    }

    /// Everything the layer counts, for an admin endpoint (serde).
    pub fn snapshot(&self) -> CompressionSnapshot {
        let s = &self.shared;
        let mut encodings = Vec::new();
        for (i, name) in ["zstd", "br", "gzip", "deflate", "identity"]
            .into_iter()
            .enumerate()
        {
            let c = &s.counters[i];
            let decisions: Vec<DecisionCount> = Decision::ALL
                .into_iter()
                .map(|d| DecisionCount {
                    decision: d,
                    responses: c.decisions[d.index()].load(Ordering::Relaxed),
                })
                .filter(|d| d.responses > 0)
                .collect();
            let algorithm = Algorithm::ALL.get(i).copied();
            if decisions.is_empty() && !algorithm.is_some_and(|a| s.prefer.contains(&a.encoding()))
            {
                continue;
            }
            let input_bytes = c.input_bytes.load(Ordering::Relaxed);
            let output_bytes = c.output_bytes.load(Ordering::Relaxed);
            let (level, last_decision, ns_per_byte) = match algorithm {
                Some(a) => {
                    let choice = &s.choices[a.index()];
                    let ladder = s.ladders[a.index()];
                    (
                        Some(choice.level.load(Ordering::Relaxed)),
                        Some(
                            Decision::ALL[usize::from(choice.decision.load(Ordering::Relaxed))
                                % Decision::COUNT],
                        ),
                        Some(NsPerByte {
                            fast: (ladder.fast, s.load.cost(a, Rung::Fast)),
                            normal: (ladder.normal, s.load.cost(a, Rung::Normal)),
                            best: (ladder.best, s.load.cost(a, Rung::Best)),
                        }),
                    )
                }
                None => (None, None, None),
            };
            encodings.push(EncodingSnapshot {
                encoding: name,
                level,
                last_decision,
                responses: decisions.iter().map(|d| d.responses).sum(),
                decisions,
                input_bytes,
                output_bytes,
                ratio: if output_bytes > 0 {
                    input_bytes as f64 / output_bytes as f64
                } else {
                    0.0
                },
                ns_per_byte,
            });
        }
        CompressionSnapshot {
            tier: s.load.current_tier(),
            utilization: s.load.utilization(),
            in_flight: s.load.in_flight(),
            encodings,
        }
    }
}

/// What a [`CompressionHandle`] reports (serde).
#[derive(Debug, Clone, Serialize)]
pub struct CompressionSnapshot {
    /// The load tier, which sets the levels of new responses.
    pub tier: Tier,
    /// CPU time spent compressing over the last measured interval, as a share of the budget.
    pub utilization: f64,
    /// Bodies being compressed now (server-sent events not counted).
    pub in_flight: usize,
    /// Per content coding (`identity` included), those offered or seen.
    pub encodings: Vec<EncodingSnapshot>,
}

/// Stats of one content coding.
#[derive(Debug, Clone, Serialize)]
pub struct EncodingSnapshot {
    /// `zstd`, `br`, `gzip`, `deflate` or `identity`.
    pub encoding: &'static str,
    /// The level of the latest response negotiated to this coding (`None` for `identity`).
    pub level: Option<i32>,
    /// Why: the decision on the latest response negotiated to this coding.
    pub last_decision: Option<Decision>,
    /// Responses sent with this coding (for `identity`: sent uncompressed, whatever the reason).
    pub responses: u64,
    /// `responses` by decision (only those seen).
    pub decisions: Vec<DecisionCount>,
    /// Body bytes given to the encoder.
    pub input_bytes: u64,
    /// Compressed bytes produced.
    pub output_bytes: u64,
    /// `input_bytes / output_bytes`.
    pub ratio: f64,
    /// Moving averages of the encoder's CPU cost, ns per input byte, per rung as `(level, ns)`.
    pub ns_per_byte: Option<NsPerByte>,
}

/// A count of responses with one decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionCount {
    /// The decision.
    pub decision: Decision,
    /// How many responses.
    pub responses: u64,
}

/// Measured cost of the three levels of an algorithm, `(level, ns per input byte)`.
#[derive(Debug, Clone, Serialize)]
pub struct NsPerByte {
    /// The level used when busy or for large bodies.
    pub fast: (i32, f64),
    /// The level used under normal load.
    pub normal: (i32, f64),
    /// The level used when idle.
    pub best: (i32, f64),
}
