//! Middleware that stacks every layer of the crate in the order of the design, from one builder
//! or one serde configuration.
//!
//! Outer to inner: [`SlowRequestLayer`] (sees the whole life of a request, queue wait
//! included), [`RateLimitLayer`] (the cheapest rejection first), [`ResponseCacheLayer`] (a hit
//! skips everything below), [`PriorityQueueLayer`] (admission control over the work that costs
//! something), `AdaptiveCompressionLayer` (CPU work, inside admission; inside the cache, so
//! the cache stores encoded variants), [`CircuitBreakerLayer`] (guards the handler; its `503`
//! becomes a stale hit in the cache above). Each layer can be given ready-made, or is built from
//! the [`PerfConfig`] section of the same name (errors name the key: `cache.max_entry_kb`);
//! with the `redis` feature, `PerfStackBuilder::redis` gives one Redis link to the cache (its
//! shared tier) and the rate limiter (quotas shared by every instance). [`PerfStack::handles`]
//! reads every layer at run time. For another order, or a subset, stack the layers yourself:
//! each one works alone.
//!
//! Without any `compression-*` feature (all are on by default) the stack has no compression
//! layer: [`PerfConfig::compression`] is still read, and refused unless left at its defaults.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_perf::stack::{PerfConfig, PerfStack};
//!
//! // Defaults everywhere (no rate limit unless configured).
//! let stack = PerfStack::builder().build().expect("valid configuration");
//!
//! // Or from a configuration file (any serde format; JSON here).
//! let config: PerfConfig = serde_json::from_str(r#"{
//!     "slow": { "threshold_ms": 500 },
//!     "rate_limit": { "per_second": 100, "burst": 200 },
//!     "cache": { "max_mb": 256, "grace_secs": 30 },
//!     "queue": { "limit": 64, "trust_priority_header": true }
//! }"#).expect("valid JSON");
//! let stack = PerfStack::from_config(&config).expect("valid configuration");
//! let handles = stack.handles();
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(stack);
//! # let _ = (app, handles);
//! ```

mod builder;
// Everything that depends on the compression features: the compression layer (or none) and the
// type of the service.
#[cfg(any(
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
))]
mod compression;
#[cfg(not(any(
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
)))]
#[path = "no_compression.rs"]
mod compression;
mod config;
mod layers;
#[cfg(test)]
mod tests;

use tower_layer::Layer;

use crate::breaker::{CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer};
use crate::cache::{CacheHandle, ResponseCache, ResponseCacheLayer};
use crate::error::ConfigError;
use crate::queue::{DefaultClassifier, PriorityQueue, PriorityQueueHandle, PriorityQueueLayer};
use crate::rate_limit::{RateLimit, RateLimitHandle, RateLimitLayer};
use crate::slow::{SlowRequest, SlowRequestHandle, SlowRequestLayer};

pub use builder::PerfStackBuilder;
use compression::CompressionLayer;
pub use compression::PerfService;
pub use config::{
    AdaptiveAlgorithm, AdaptiveConfig, BreakerConfig, CacheConfig, ClassShares, ClassWaits,
    CompressionConfig, PerfConfig, QueueConfig, RateLimitConfig, SaturationConfig, SlowConfig,
};

/// Every layer of the crate, in the order of the design. Made by [`PerfStack::builder`] or
/// [`PerfStack::from_config`]; a [`Layer`] like any other.
#[derive(Clone, Debug)]
pub struct PerfStack {
    slow: SlowRequestLayer,
    rate_limit: RateLimitLayer,
    cache: ResponseCacheLayer,
    queue: PriorityQueueLayer<DefaultClassifier>,
    // `tower_layer::Identity` without a compression feature: the same `layer` call either way.
    compression: CompressionLayer,
    breaker: CircuitBreakerLayer,
}

impl<S> Layer<S> for PerfStack {
    type Service = PerfService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let s = self.breaker.layer(inner);
        let s = self.compression.layer(s);
        let s = self.queue.layer(s);
        let s = self.cache.layer(s);
        let s = self.rate_limit.layer(s);
        self.slow.layer(s)
    }
}

/// The run-time handles of every layer of a [`PerfStack`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PerfHandles {
    /// Per-route latency and the slow-request log.
    pub slow: SlowRequestHandle,
    /// Rate-limit decisions.
    pub rate_limit: RateLimitHandle,
    /// Cache statistics and purges.
    pub cache: CacheHandle,
    /// Queue lengths, limit and waits per class.
    pub queue: PriorityQueueHandle,
    /// Compression choices and bytes.
    #[cfg(any(
        feature = "compression-zstd",
        feature = "compression-br",
        feature = "compression-gzip",
        feature = "compression-deflate"
    ))]
    pub compression: crate::compression::CompressionHandle,
    /// Every circuit breaker.
    pub breaker: CircuitBreakerHandle,
}

impl PerfStack {
    /// A builder: every layer from [`PerfConfig::default`] unless given.
    pub fn builder() -> PerfStackBuilder {
        PerfStackBuilder::default()
    }

    /// Every layer built from `config`. An error names the configuration key
    /// (`cache.max_entry_kb`), or the section when no one key is at fault.
    pub fn from_config(config: &PerfConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config.clone()).build()
    }

    /// The handles of the layers.
    pub fn handles(&self) -> PerfHandles {
        PerfHandles {
            slow: self.slow.handle(),
            rate_limit: self.rate_limit.handle(),
            cache: self.cache.handle(),
            queue: self.queue.handle(),
            #[cfg(any(
                feature = "compression-zstd",
                feature = "compression-br",
                feature = "compression-gzip",
                feature = "compression-deflate"
            ))]
            compression: self.compression.handle(),
            breaker: self.breaker.handle(),
        }
    }
}
