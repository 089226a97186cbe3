//! The stack without compression: no `compression-*` feature is on (`compression.rs`
//! otherwise).

use crate::error::ConfigError;

use super::config::CompressionConfig;
use super::SlowRequest;
use super::{CircuitBreaker, DefaultClassifier, PriorityQueue, RateLimit, ResponseCache};

/// The service of a [`PerfStack`](super::PerfStack) around `S` (no compression: no
/// `compression-*` feature).
pub type PerfService<S> =
    SlowRequest<RateLimit<ResponseCache<PriorityQueue<CircuitBreaker<S>, DefaultClassifier>>>>;

/// No compression layer: the same `layer` call passes the service through.
pub(super) type CompressionLayer = tower_layer::Identity;

impl CompressionConfig {
    /// Without a codec there is nothing to compress with: the section must stay as it is.
    pub(super) fn layer(&self) -> Result<CompressionLayer, ConfigError> {
        if *self != Self::default() {
            return Err(ConfigError::new(
                "compression",
                "set, but this build has no compression: it needs a compression-* feature",
            ));
        }
        Ok(CompressionLayer::new())
    }
}
