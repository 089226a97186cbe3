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

/// A configuration key and the builder field that holds its value; the key names the value in
/// errors, so a message points at the line of the configuration file to fix.
type Keys = &'static [(&'static str, &'static str)];

const SLOW_KEYS: Keys = &[
    ("threshold", "slow.threshold_ms"),
    ("slow_log_capacity", "slow.slow_log_capacity"),
];
const RATE_LIMIT_KEYS: Keys = &[("quota", "rate_limit.per_second")];
const CACHE_KEYS: Keys = &[
    ("max_bytes", "cache.max_mb"),
    ("max_entry_bytes", "cache.max_entry_kb"),
    ("default_ttl", "cache.default_ttl_secs"),
    ("grace", "cache.grace_secs"),
    ("recompress_hot", "cache.recompress_hot"),
];
pub(super) const QUEUE_KEYS: Keys = &[
    ("limit", "queue.limit"),
    ("queue_capacity", "queue.queue_capacity"),
];
#[cfg(any(
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
))]
const COMPRESSION_KEYS: Keys = &[
    ("min_size", "compression.min_size"),
    ("cpu_budget", "compression.cpu_budget"),
];
const BREAKER_KEYS: Keys = &[
    ("failure_rate", "breaker.failure_rate"),
    ("minimum_calls", "breaker.minimum_calls"),
    ("open_wait", "breaker.open_wait_secs"),
];

/// A layer builder's error renamed after the configuration key of its field (`max_entry_bytes`
/// becomes `cache.max_entry_kb`); a field no key sets is named after the `section`.
pub(super) fn keyed(section: &'static str, keys: Keys) -> impl Fn(ConfigError) -> ConfigError {
    move |e| {
        let key = keys
            .iter()
            .find(|(field, _)| *field == e.field())
            .map_or(section, |(_, key)| *key);
        ConfigError::new(key, e.reason().to_owned())
    }
}

impl SlowConfig {
    pub(super) fn layer(&self) -> Result<SlowRequestLayer, ConfigError> {
        if self.threshold_ms == 0 {
            return Err(ConfigError::new("slow.threshold_ms", "must be at least 1"));
        }
        SlowRequestLayer::builder()
            .threshold(Duration::from_millis(self.threshold_ms))
            .server_timing(self.server_timing)
            .slow_log_capacity(self.slow_log_capacity)
            .build()
            .map_err(keyed("slow", SLOW_KEYS))
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
                .map_err(keyed("rate_limit", RATE_LIMIT_KEYS));
        };
        if c.per_second == 0 {
            return Err(ConfigError::new(
                "rate_limit.per_second",
                "must be at least 1",
            ));
        }
        if c.burst == Some(0) {
            return Err(ConfigError::new("rate_limit.burst", "must be at least 1"));
        }
        RateLimitLayer::builder(
            Quota::per_second(c.per_second).burst(c.burst.unwrap_or(c.per_second)),
        )
        .build()
        .map_err(keyed("rate_limit", RATE_LIMIT_KEYS))
    }
}

impl CacheConfig {
    pub(super) fn layer(&self) -> Result<ResponseCacheLayer, ConfigError> {
        // In the units of the keys: the builder counts bytes.
        if self.max_mb == 0 {
            return Err(ConfigError::new("cache.max_mb", "must be at least 1"));
        }
        if self.max_entry_kb == 0 || self.max_entry_kb as u64 > self.max_mb.saturating_mul(512) {
            return Err(ConfigError::new(
                "cache.max_entry_kb",
                format!(
                    "must be between 1 and half of cache.max_mb ({} KiB), got {}",
                    self.max_mb.saturating_mul(512),
                    self.max_entry_kb
                ),
            ));
        }
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
                "cache.recompress_hot",
                "needs the compression-br or compression-zstd feature",
            ));
        }
        b.build().map_err(keyed("cache", CACHE_KEYS))
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
        b.build().map_err(keyed("queue", QUEUE_KEYS))
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
            .map_err(keyed("compression", COMPRESSION_KEYS))
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
            .map_err(keyed("breaker", BREAKER_KEYS))
    }
}
