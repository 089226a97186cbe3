//! Each configuration section made into its layer. Every call into the layers' builders is
//! here, and so is the map from their field names to the configuration keys.

use std::time::Duration;

use crate::breaker::CircuitBreakerLayer;
use crate::cache::ResponseCacheLayer;
use crate::error::ConfigError;
use crate::queue::{
    AdaptiveLimit, DefaultClassifier, Priority, PriorityQueueLayer, SaturationSignal,
};
use crate::rate_limit::{Quota, RateLimitLayer};
use crate::route::Route;
use crate::slow::SlowRequestLayer;

#[cfg(feature = "redis")]
use crate::redis::RedisLink;

use super::config::{
    AdaptiveAlgorithm, AdaptiveConfig, BreakerConfig, CacheConfig, QueueConfig, RateLimitConfig,
    SlowConfig,
};

/// The Redis link given to the stack, if any (a unit without the `redis` feature).
#[cfg(feature = "redis")]
pub(super) type Redis = Option<RedisLink>;
/// The Redis link given to the stack, if any (a unit without the `redis` feature).
#[cfg(not(feature = "redis"))]
pub(super) type Redis = ();

/// An extra rate-limit exemption given to the stack's builder.
pub(super) type Bypass = std::sync::Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>;

/// A builder field and the configuration key that sets it; the key names the value in errors,
/// so a message points at the line of the configuration file to fix.
pub(super) type Keys = &'static [(&'static str, &'static str)];

const SLOW_KEYS: Keys = &[
    ("threshold", "slow.threshold_ms"),
    ("route_threshold", "slow.route_threshold_ms"),
    ("slow_log_capacity", "slow.slow_log_capacity"),
];
const RATE_LIMIT_KEYS: Keys = &[
    ("quota", "rate_limit.per_second"),
    ("trusted_proxies", "rate_limit.trusted_proxies"),
    ("max_keys", "rate_limit.max_keys"),
];
const CACHE_KEYS: Keys = &[
    ("max_bytes", "cache.max_mb"),
    ("max_entry_bytes", "cache.max_entry_kb"),
    ("default_ttl", "cache.default_ttl_secs"),
    ("route_ttl", "cache.route_ttl_secs"),
    ("grace", "cache.grace_secs"),
    ("recompress_hot", "cache.recompress_hot"),
];
pub(super) const QUEUE_KEYS: Keys = &[
    ("limit", "queue.limit"),
    ("adaptive_limit", "queue.adaptive"),
    ("queue_capacity", "queue.queue_capacity"),
    ("max_wait", "queue.max_wait_ms"),
    ("class_share", "queue.class_share"),
    ("saturation", "queue.saturation"),
];
const BREAKER_KEYS: Keys = &[
    ("count_window", "breaker.window_calls"),
    ("minimum_calls", "breaker.minimum_calls"),
    ("failure_rate", "breaker.failure_rate"),
    ("slow_calls", "breaker.slow_call_rate"),
    ("call_timeout", "breaker.call_timeout_ms"),
    ("open_wait", "breaker.max_open_wait_secs"),
    ("half_open_calls", "breaker.half_open_calls"),
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

/// The route of a per-route key: a trailing `*` makes it a prefix.
pub(super) fn route_of_key(key: &str) -> Route {
    match key.strip_suffix('*') {
        Some(prefix) => Route::prefix(prefix),
        None => Route::exact(key),
    }
}

/// Refuses a zero `value` of `key`.
fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be at least 1"));
    }
    Ok(())
}

impl SlowConfig {
    pub(super) fn layer(&self) -> Result<SlowRequestLayer, ConfigError> {
        positive("slow.threshold_ms", self.threshold_ms)?;
        let mut b = SlowRequestLayer::builder()
            .threshold(Duration::from_millis(self.threshold_ms))
            .server_timing(self.server_timing)
            .slow_log_capacity(self.slow_log_capacity);
        for (key, ms) in &self.route_threshold_ms {
            b = b.route_threshold(route_of_key(key), Duration::from_millis(*ms));
        }
        b.build().map_err(keyed("slow", SLOW_KEYS))
    }
}

/// The rate limiter of the stack: from its section, or one that never limits.
#[cfg_attr(not(feature = "redis"), allow(unused_variables))]
pub(super) fn rate_limit_layer(
    config: Option<&RateLimitConfig>,
    redis: &Redis,
    bypass: Option<Bypass>,
) -> Result<RateLimitLayer, ConfigError> {
    let Some(c) = config else {
        // In the stack, but never limiting: a bypass is one predicate call.
        return RateLimitLayer::builder(Quota::per_second(1))
            .bypass_with(|_| true)
            .headers_on_allowed(false)
            .build()
            .map_err(keyed("rate_limit", RATE_LIMIT_KEYS));
    };
    let mut b = RateLimitLayer::builder(c.quota()?)
        .trusted_proxies(&c.trusted_proxies)
        .headers_on_allowed(c.headers_on_allowed);
    if let Some(max) = c.max_keys {
        b = b.max_keys(max);
    }
    let prefixes: Box<[Box<str>]> = c.path_prefixes.iter().map(|p| p.as_str().into()).collect();
    if !prefixes.is_empty() || bypass.is_some() {
        b = b.bypass_with(move |req| {
            let path = req.uri.path();
            let outside = !prefixes.is_empty() && !prefixes.iter().any(|p| path.starts_with(&**p));
            outside || bypass.as_ref().is_some_and(|f| f(req))
        });
    }
    // With a Redis link, one quota per client for every instance.
    #[cfg(feature = "redis")]
    if let Some(link) = redis {
        b = b.redis(link.clone());
    }
    b.build().map_err(keyed("rate_limit", RATE_LIMIT_KEYS))
}

impl RateLimitConfig {
    fn quota(&self) -> Result<Quota, ConfigError> {
        positive("rate_limit.per_second", self.per_second.into())?;
        if self.burst == Some(0) {
            return Err(ConfigError::new("rate_limit.burst", "must be at least 1"));
        }
        let quota = Quota::per_second(self.per_second).burst(self.burst.unwrap_or(self.per_second));
        let Some(name) = &self.name else {
            return Ok(quota);
        };
        // A quota's name is `&'static str`; the stack is built once, so this leaks one short
        // string per build. Checked alone (the rest of this quota is valid).
        let name: &'static str = Box::leak(name.clone().into_boxed_str());
        Quota::per_second(1)
            .named(name)
            .validate()
            .map_err(|r| ConfigError::new("rate_limit.name", r))?;
        Ok(quota.named(name))
    }
}

impl CacheConfig {
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(super) fn layer(&self, redis: &Redis) -> Result<ResponseCacheLayer, ConfigError> {
        self.check_sizes()?;
        let mut b = ResponseCacheLayer::builder()
            .max_bytes(self.max_mb.saturating_mul(1024 * 1024))
            .max_entry_bytes(self.max_entry_kb.saturating_mul(1024))
            .large_bodies_in_pages(self.large_bodies_in_pages)
            .grace(Duration::from_secs(self.grace_secs))
            .ignore_host(self.ignore_host);
        if let Some(ttl) = self.default_ttl_secs {
            b = b.default_ttl(Duration::from_secs(ttl));
        }
        for (key, secs) in &self.route_ttl_secs {
            b = b.route_ttl(route_of_key(key), Duration::from_secs(*secs));
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
        // With a Redis link, a tier shared by every instance.
        #[cfg(feature = "redis")]
        if let Some(link) = redis {
            b = b.redis(link.clone());
        }
        b.build().map_err(keyed("cache", CACHE_KEYS))
    }

    /// The sizes, in the units of their keys (the builder counts bytes).
    fn check_sizes(&self) -> Result<(), ConfigError> {
        positive("cache.max_mb", self.max_mb)?;
        let half_kb = self.max_mb.saturating_mul(512);
        if self.max_entry_kb == 0 || self.max_entry_kb as u64 > half_kb {
            return Err(ConfigError::new(
                "cache.max_entry_kb",
                format!(
                    "must be between 1 and half of cache.max_mb ({half_kb} KiB), got {}",
                    self.max_entry_kb
                ),
            ));
        }
        Ok(())
    }
}

impl QueueConfig {
    pub(super) fn layer(&self) -> Result<PriorityQueueLayer<DefaultClassifier>, ConfigError> {
        let mut b = PriorityQueueLayer::builder()
            .queue_capacity(self.queue_capacity)
            .trust_priority_header(self.trust_priority_header)
            .default_priority(self.default_priority);
        for (key, priority) in &self.route_priority {
            b = b.route_priority(route_of_key(key), *priority);
        }
        for p in Priority::ALL {
            let ms = self.max_wait_ms.of(p);
            positive("queue.max_wait_ms", ms)?;
            b = b.max_wait(p, Duration::from_millis(ms));
            b = b.class_share(p, self.class_share.of(p));
        }
        b = b.pacing(self.pacing);
        if let Some(s) = &self.saturation {
            b = b.saturation(
                SaturationSignal::runtime_lag()
                    .interval(Duration::from_millis(s.interval_ms))
                    .enter(Duration::from_millis(s.enter_ms))
                    .exit(Duration::from_millis(s.exit_ms)),
            );
        }
        let b = match self.limit {
            Some(limit) => b.limit(limit),
            None => b.adaptive_limit(self.adaptive.limit()?),
        };
        b.build().map_err(keyed("queue", QUEUE_KEYS))
    }
}

impl AdaptiveConfig {
    fn limit(&self) -> Result<AdaptiveLimit, ConfigError> {
        let limit = match self.algorithm {
            AdaptiveAlgorithm::Gradient => AdaptiveLimit::gradient(),
            AdaptiveAlgorithm::Aimd => {
                positive(
                    "queue.adaptive.latency_threshold_ms",
                    self.latency_threshold_ms,
                )?;
                AdaptiveLimit::aimd(Duration::from_millis(self.latency_threshold_ms))
            }
        };
        Ok(limit.min(self.min).max(self.max).initial(self.initial))
    }
}

impl BreakerConfig {
    pub(super) fn layer(&self) -> Result<CircuitBreakerLayer, ConfigError> {
        positive("breaker.open_wait_secs", self.open_wait_secs)?;
        let mut b = CircuitBreakerLayer::builder()
            .count_window(self.window_calls)
            .minimum_calls(self.minimum_calls)
            .failure_rate(self.failure_rate)
            .half_open_calls(self.half_open_calls)
            .open_wait(
                Duration::from_secs(self.open_wait_secs),
                Duration::from_secs(self.max_open_wait_secs),
            );
        if let Some(ms) = self.slow_call_ms {
            positive("breaker.slow_call_ms", ms)?;
            b = b.slow_calls(Duration::from_millis(ms), self.slow_call_rate);
        }
        if let Some(ms) = self.call_timeout_ms {
            b = b.call_timeout(Duration::from_millis(ms));
        }
        b.build().map_err(keyed("breaker", BREAKER_KEYS))
    }
}
