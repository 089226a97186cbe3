//! [`PerfStackBuilder`]: a [`PerfConfig`], and any layer given ready-made.

use crate::breaker::CircuitBreakerLayer;
use crate::cache::ResponseCacheLayer;
use crate::error::ConfigError;
use crate::queue::{DefaultClassifier, PriorityQueueLayer};
use crate::rate_limit::RateLimitLayer;
use crate::slow::SlowRequestLayer;

use super::compression::CompressionLayer;
use super::config::PerfConfig;
use super::layers::{rate_limit_layer, Bypass, Redis};
use super::PerfStack;

/// Configures a [`PerfStack`]: a [`PerfConfig`], and any layer given ready-made (which then
/// replaces its section of the configuration). Made by [`PerfStack::builder`].
#[derive(Default)]
#[must_use]
pub struct PerfStackBuilder {
    config: PerfConfig,
    slow: Option<SlowRequestLayer>,
    rate_limit: Option<RateLimitLayer>,
    cache: Option<ResponseCacheLayer>,
    queue: Option<PriorityQueueLayer<DefaultClassifier>>,
    compression: Option<CompressionLayer>,
    breaker: Option<CircuitBreakerLayer>,
    // Given to the cache's Redis tier and the shared rate limit, when they come from the
    // configuration.
    redis: Redis,
    // Exempts more requests from the rate limiter built from the configuration.
    bypass: Option<Bypass>,
}

impl std::fmt::Debug for PerfStackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfStackBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PerfStackBuilder {
    /// The configuration of the layers not given ready-made.
    pub fn config(mut self, config: PerfConfig) -> Self {
        self.config = config;
        self
    }

    /// A ready-made slow-request tracker.
    pub fn slow(mut self, layer: SlowRequestLayer) -> Self {
        self.slow = Some(layer);
        self
    }

    /// A ready-made rate limiter (for example with trusted proxies).
    pub fn rate_limit(mut self, layer: RateLimitLayer) -> Self {
        self.rate_limit = Some(layer);
        self
    }

    /// Exempts the requests for which `f` returns `true` from the rate limiter built from the
    /// configuration, on top of those its `path_prefixes` leave out: for example
    /// administrators, with `tower_perf::console::is_admin` (feature `console`) and the
    /// authentication layer outside the stack. Ignored when the rate limiter is given
    /// ready-made (give it its own
    /// [`bypass_with`](crate::rate_limit::RateLimitBuilder::bypass_with)).
    pub fn rate_limit_bypass_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.bypass = Some(std::sync::Arc::new(f));
        self
    }

    /// A ready-made response cache.
    pub fn cache(mut self, layer: ResponseCacheLayer) -> Self {
        self.cache = Some(layer);
        self
    }

    /// A ready-made priority queue.
    pub fn queue(mut self, layer: PriorityQueueLayer<DefaultClassifier>) -> Self {
        self.queue = Some(layer);
        self
    }

    /// A ready-made compression layer.
    #[cfg(any(
        feature = "compression-zstd",
        feature = "compression-br",
        feature = "compression-gzip",
        feature = "compression-deflate"
    ))]
    pub fn compression(mut self, layer: crate::compression::AdaptiveCompressionLayer) -> Self {
        self.compression = Some(layer);
        self
    }

    /// One Redis link for the layers built from the configuration: the response cache gets
    /// its Redis tier, and the rate limiter (when configured) shares its quotas through it
    /// with every instance. Layers given ready-made keep their own.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, link: crate::redis::RedisLink) -> Self {
        self.redis = Some(link);
        self
    }

    /// A ready-made circuit breaker.
    pub fn breaker(mut self, layer: CircuitBreakerLayer) -> Self {
        self.breaker = Some(layer);
        self
    }

    /// Builds the layers not given from the configuration. An error names the configuration
    /// key at fault (`cache.max_entry_kb`, `queue.limit`), or the section when no one key is.
    pub fn build(self) -> Result<PerfStack, ConfigError> {
        let c = &self.config;
        Ok(PerfStack {
            slow: given_or(self.slow, || c.slow.layer())?,
            rate_limit: given_or(self.rate_limit, || {
                rate_limit_layer(c.rate_limit.as_ref(), &self.redis, self.bypass.clone())
            })?,
            cache: given_or(self.cache, || c.cache.layer(&self.redis))?,
            queue: given_or(self.queue, || c.queue.layer())?,
            compression: given_or(self.compression, || c.compression.layer())?,
            breaker: given_or(self.breaker, || c.breaker.layer())?,
        })
    }
}

/// The layer given ready-made, else the one its configuration section builds.
fn given_or<L>(
    given: Option<L>,
    build: impl FnOnce() -> Result<L, ConfigError>,
) -> Result<L, ConfigError> {
    match given {
        Some(layer) => Ok(layer),
        None => build(),
    }
}
