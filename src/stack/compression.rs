//! The compression layer of the stack, built from [`CompressionConfig`] (a `compression-*`
//! feature is on; `no_compression.rs` otherwise).

use crate::compression::{AdaptiveCompression, AdaptiveCompressionLayer, Algorithm};
use crate::error::ConfigError;

use super::config::CompressionConfig;
use super::layers::{keyed, Keys};
use super::SlowRequest;
use super::{CircuitBreaker, DefaultClassifier, PriorityQueue, RateLimit, ResponseCache};

/// The service of a [`PerfStack`](super::PerfStack) around `S`.
pub type PerfService<S> = SlowRequest<
    RateLimit<
        ResponseCache<PriorityQueue<AdaptiveCompression<CircuitBreaker<S>>, DefaultClassifier>>,
    >,
>;

/// The compression layer of the stack.
pub(super) type CompressionLayer = AdaptiveCompressionLayer;

const COMPRESSION_KEYS: Keys = &[
    ("min_size", "compression.min_size"),
    ("cpu_budget", "compression.cpu_budget"),
    ("prefer", "compression.prefer"),
];

impl CompressionConfig {
    pub(super) fn layer(&self) -> Result<CompressionLayer, ConfigError> {
        let mut b = CompressionLayer::builder()
            .min_size(self.min_size)
            .cpu_budget(self.cpu_budget)
            .adaptive(self.adaptive)
            .step_down_low(self.step_down_low);
        if let Some(names) = &self.prefer {
            b = b.prefer(&algorithms(names)?);
        }
        b.build().map_err(keyed("compression", COMPRESSION_KEYS))
    }
}

/// The algorithms of `compression.prefer`, by content-coding name.
fn algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    names
        .iter()
        .map(|name| {
            Algorithm::ALL
                .into_iter()
                .find(|a| a.as_str() == name.trim())
                .ok_or_else(|| {
                    ConfigError::new(
                        "compression.prefer",
                        format!("{name:?}: the codings are zstd, br, gzip and deflate"),
                    )
                })
        })
        .collect()
}
