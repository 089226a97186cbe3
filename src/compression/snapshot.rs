//! What a [`CompressionHandle`](super::CompressionHandle) reports (serde).

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::adapt::{Decision, Rung, Tier};
use super::state::{EncodingCounters, Shared, ENCODING_NAMES};
use super::Algorithm;

/// What a [`CompressionHandle`](super::CompressionHandle) reports (serde).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
pub struct DecisionCount {
    /// The decision.
    pub decision: Decision,
    /// How many responses.
    pub responses: u64,
}

/// Measured cost of the three levels of an algorithm, `(level, ns per input byte)`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct NsPerByte {
    /// The level used when busy or for large bodies.
    pub fast: (i32, f64),
    /// The level used under normal load.
    pub normal: (i32, f64),
    /// The level used when idle.
    pub best: (i32, f64),
}

impl CompressionSnapshot {
    pub(crate) fn of(s: &Shared) -> Self {
        let encodings = ENCODING_NAMES
            .into_iter()
            .zip(&s.counters)
            .enumerate()
            .filter_map(|(i, (name, c))| {
                EncodingSnapshot::of(s, Algorithm::ALL.get(i).copied(), name, c)
            })
            .collect();
        CompressionSnapshot {
            tier: s.load.current_tier(),
            utilization: s.load.utilization(),
            in_flight: s.load.in_flight(),
            encodings,
        }
    }
}

impl EncodingSnapshot {
    /// The stats of one coding; `None` for a coding neither offered nor seen.
    fn of(
        s: &Shared,
        algorithm: Option<Algorithm>,
        name: &'static str,
        c: &EncodingCounters,
    ) -> Option<Self> {
        let decisions: Vec<DecisionCount> = Decision::ALL
            .into_iter()
            .map(|d| DecisionCount {
                decision: d,
                responses: c.decisions[d.index()].load(Ordering::Relaxed),
            })
            .filter(|d| d.responses > 0)
            .collect();
        if decisions.is_empty() && !algorithm.is_some_and(|a| s.prefer.contains(&a.encoding())) {
            return None;
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
        Some(EncodingSnapshot {
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
        })
    }
}
