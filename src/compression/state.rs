//! The state shared by the layer, its services, bodies and handles: configuration, counters,
//! and the level choice (on top of the load measurement in `adapt.rs`).

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use super::adapt::{Decision, Ladder, Load, Rung, Tier};
use super::policy::{EventStreams, Predicate};
use super::Algorithm;
use crate::metrics::{labels, names};
use crate::util::accept_encoding::Encoding;

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
    /// The level gauge, made on first use.
    pub(crate) level_gauge: OnceLock<::metrics::Gauge>,
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
    /// Low-priority responses take the next cheaper tier.
    pub(crate) step_down_low: bool,
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
        let choice = &self.choices[algorithm.index()];
        if choice.level.swap(level, Ordering::Relaxed) != level
            || choice.level_gauge.get().is_none()
        {
            choice
                .level_gauge
                .get_or_init(|| {
                    ::metrics::gauge!(names::COMPRESSION_LEVEL,
                        labels::ENCODING => algorithm.as_str())
                })
                .set(f64::from(level));
        }
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
        low: bool,
    ) -> (Option<Rung>, Decision) {
        if !self.adaptive {
            return (Some(Rung::Normal), Decision::Normal);
        }
        let tier = self.load.tier();
        let tier = if low && self.step_down_low {
            tier.cheaper()
        } else {
            tier
        };
        match tier {
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

/// Says whether a request is essential: see
/// [`AdaptiveCompressionBuilder::essential_with`](super::AdaptiveCompressionBuilder::essential_with).
pub(crate) type EssentialFn = dyn Fn(&http::request::Parts) -> bool + Send + Sync;

/// The names of the counters' encodings, in `encoding_index` order.
pub(crate) const ENCODING_NAMES: [&str; 5] = ["zstd", "br", "gzip", "deflate", "identity"];

pub(crate) fn encoding_index(e: Encoding) -> usize {
    match e {
        Encoding::Zstd => 0,
        Encoding::Br => 1,
        Encoding::Gzip => 2,
        Encoding::Deflate => 3,
        Encoding::Identity => 4,
    }
}

pub(crate) fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        names::COMPRESSION_LEVEL,
        "The level chosen for the latest response in a content coding."
    );
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
