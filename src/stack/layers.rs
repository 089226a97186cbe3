//! Each configuration section made into its layer: every call into the layers' builders is
//! here.

use std::time::Duration;

use crate::breaker::CircuitBreakerLayer;
use crate::cache::ResponseCacheLayer;
use crate::error::ConfigError;
use crate::queue::{AdaptiveLimit, DefaultClassifier, PriorityQueueLayer};
use crate::rate_limit::{Quota, RateLimitLayer};
use crate::slow::SlowRequestLayer;

use super::config::{
    BreakerConfig, CacheConfig, CompressionConfig, PerfConfig, QueueConfig, SlowConfig,
};

/// The compression layer of the stack: none (`Identity`) without a `compression-*` feature.
#[cfg(any(
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
))]
pub(super) type CompressionLayer = crate::compression::AdaptiveCompressionLayer;
/// The compression layer of the stack: none (`Identity`) without a `compression-*` feature.
#[cfg(not(any(
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
)))]
pub(super) type CompressionLayer = tower_layer::Identity;

/// An error of a section's layer, named after the section; the reason names the field.
fn in_section(section: &'static str) -> impl Fn(ConfigError) -> ConfigError {
    move |e| ConfigError::new(section, format!("{}: {}", e.field(), e.reason()))
}

impl SlowConfig {
    pub(super) fn layer(&self) -> Result<SlowRequestLayer, ConfigError> {
        if self.threshold_ms == 0 {
            return Err(ConfigError::new("slow", "threshold_ms: must be at least 1"));
        }
        SlowRequestLayer::builder()
            .threshold(Duration::from_millis(self.threshold_ms))
            .server_timing(self.server_timing)
            .slow_log_capacity(self.slow_log_capacity)
            .build()
            .map_err(in_section("slow"))
    }
}

impl PerfConfig {
    pub(super) fn rate_limit_layer(&self) -> Result<RateLimitLayer, ConfigError> {
        let Some(c) = &self.rate_limit else {
            // In the stack, but never limiting: a bypass is one predicate call.
            return RateLimitLayer::builder(Quota::per_second(1))
                .bypass(|_| true)
                .headers_on_allowed(false)
                .build()
                .map_err(in_section("rate_limit"));
        };
        if c.per_second == 0 || c.burst == Some(0) {
            return Err(ConfigError::new(
                "rate_limit",
                "per_second and burst: must be at least 1",
            ));
        }
        RateLimitLayer::builder(
            Quota::per_second(c.per_second).burst(c.burst.unwrap_or(c.per_second)),
        )
        .build()
        .map_err(in_section("rate_limit"))
    }
}

impl CacheConfig {
    pub(super) fn layer(&self) -> Result<ResponseCacheLayer, ConfigError> {
        let mut b = ResponseCacheLayer::builder()
            .max_bytes(self.max_mb.saturating_mul(1024 * 1024))
            .max_entry_bytes(self.max_entry_kb.saturating_mul(1024))
            .grace(Duration::from_secs(self.grace_secs))
            .ignore_host(self.ignore_host);
        if let Some(ttl) = self.default_ttl_secs {
            b = b.default_ttl(Duration::from_secs(ttl));
        }
        if let Some(_hits) = self.recompress_hot {
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            {
                b = b.recompress_hot(_hits);
            }
            #[cfg(not(any(feature = "compression-br", feature = "compression-zstd")))]
            return Err(ConfigError::new(
                "cache",
                "recompress_hot: needs the compression-br or compression-zstd feature",
            ));
        }
        b.build().map_err(in_section("cache"))
    }
}

impl QueueConfig {
    pub(super) fn layer(&self) -> Result<PriorityQueueLayer<DefaultClassifier>, ConfigError> {
        let b = PriorityQueueLayer::builder()
            .queue_capacity(self.queue_capacity)
            .trust_priority_header(self.trust_priority_header);
        let b = match self.limit {
            Some(limit) => b.limit(limit),
            None => b.adaptive_limit(AdaptiveLimit::gradient()),
        };
        b.build().map_err(in_section("queue"))
    }
}

impl CompressionConfig {
    #[cfg(any(
        feature = "compression-zstd",
        feature = "compression-br",
        feature = "compression-gzip",
        feature = "compression-deflate"
    ))]
    pub(super) fn layer(&self) -> Result<CompressionLayer, ConfigError> {
        CompressionLayer::builder()
            .min_size(self.min_size)
            .cpu_budget(self.cpu_budget)
            .build()
            .map_err(in_section("compression"))
    }

    /// Without a codec there is nothing to compress with: the section must stay as it is.
    #[cfg(not(any(
        feature = "compression-zstd",
        feature = "compression-br",
        feature = "compression-gzip",
        feature = "compression-deflate"
    )))]
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

impl BreakerConfig {
    pub(super) fn layer(&self) -> Result<CircuitBreakerLayer, ConfigError> {
        let wait = Duration::from_secs(self.open_wait_secs);
        CircuitBreakerLayer::builder()
            .failure_rate(self.failure_rate)
            .minimum_calls(self.minimum_calls)
            .open_wait(wait, wait.max(Duration::from_secs(60)))
            .build()
            .map_err(in_section("breaker"))
    }
}
