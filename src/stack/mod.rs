//! Middleware that stacks every layer of the crate in the order of the design, from one builder
//! or one serde configuration.
//!
//! Outer to inner: [`SlowRequestLayer`] (sees the whole life of a request, queue wait
//! included), [`RateLimitLayer`] (the cheapest rejection first), [`ResponseCacheLayer`] (a hit
//! skips everything below), [`PriorityQueueLayer`] (admission control over the work that costs
//! something), [`AdaptiveCompressionLayer`] (CPU work, inside admission; inside the cache, so
//! the cache stores encoded variants), [`CircuitBreakerLayer`] (guards the handler; its `503`
//! becomes a stale hit in the cache above). Each layer can be given ready-made, or is built from
//! the [`PerfConfig`] section of the same name; [`PerfStack::handles`] reads them all at run
//! time. For another order, or a subset, stack the layers yourself: each one works alone.
//!
//! Needs one of the `compression-*` features (all are on by default).
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

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower_layer::Layer;

use crate::breaker::{CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer};
use crate::cache::{CacheHandle, ResponseCache, ResponseCacheLayer};
use crate::compression::{AdaptiveCompression, AdaptiveCompressionLayer, CompressionHandle};
use crate::error::ConfigError;
use crate::queue::{
    AdaptiveLimit, DefaultClassifier, PriorityQueue, PriorityQueueHandle, PriorityQueueLayer,
};
use crate::rate_limit::{Quota, RateLimit, RateLimitHandle, RateLimitLayer};
use crate::slow::{SlowRequest, SlowRequestHandle, SlowRequestLayer};

/// Every layer of the crate, in the order of the design. Made by [`PerfStack::builder`] or
/// [`PerfStack::from_config`]; a [`Layer`] like any other.
#[derive(Clone, Debug)]
pub struct PerfStack {
    slow: SlowRequestLayer,
    rate_limit: RateLimitLayer,
    cache: ResponseCacheLayer,
    queue: PriorityQueueLayer<DefaultClassifier>,
    compression: AdaptiveCompressionLayer,
    breaker: CircuitBreakerLayer,
}

/// The service of a [`PerfStack`] around `S`.
pub type PerfService<S> = SlowRequest<
    RateLimit<
        ResponseCache<PriorityQueue<AdaptiveCompression<CircuitBreaker<S>>, DefaultClassifier>>,
    >,
>;

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
    pub compression: CompressionHandle,
    /// Every circuit breaker.
    pub breaker: CircuitBreakerHandle,
}

impl PerfStack {
    /// A builder: every layer from [`PerfConfig::default`] unless given.
    pub fn builder() -> PerfStackBuilder {
        PerfStackBuilder::default()
    }

    /// Every layer built from `config`. Errors name the section and the field.
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
            compression: self.compression.handle(),
            breaker: self.breaker.handle(),
        }
    }
}

/// Configures a [`PerfStack`]: a [`PerfConfig`], and any layer given ready-made (which then
/// replaces its section of the configuration).
#[derive(Default)]
#[must_use]
pub struct PerfStackBuilder {
    config: PerfConfig,
    slow: Option<SlowRequestLayer>,
    rate_limit: Option<RateLimitLayer>,
    cache: Option<ResponseCacheLayer>,
    queue: Option<PriorityQueueLayer<DefaultClassifier>>,
    compression: Option<AdaptiveCompressionLayer>,
    breaker: Option<CircuitBreakerLayer>,
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

    /// A ready-made rate limiter (for example shared through Redis, or with trusted proxies).
    pub fn rate_limit(mut self, layer: RateLimitLayer) -> Self {
        self.rate_limit = Some(layer);
        self
    }

    /// A ready-made response cache (for example with a Redis tier).
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
    pub fn compression(mut self, layer: AdaptiveCompressionLayer) -> Self {
        self.compression = Some(layer);
        self
    }

    /// A ready-made circuit breaker.
    pub fn breaker(mut self, layer: CircuitBreakerLayer) -> Self {
        self.breaker = Some(layer);
        self
    }

    /// Builds the layers not given from the configuration. An error names the section
    /// (`slow`, `rate_limit`, `cache`, `queue`, `compression`, `breaker`) and, in its reason,
    /// the field.
    pub fn build(self) -> Result<PerfStack, ConfigError> {
        let c = &self.config;
        Ok(PerfStack {
            slow: match self.slow {
                Some(l) => l,
                None => c.slow.layer()?,
            },
            rate_limit: match self.rate_limit {
                Some(l) => l,
                None => rate_limit_layer(c.rate_limit.as_ref())?,
            },
            cache: match self.cache {
                Some(l) => l,
                None => c.cache.layer()?,
            },
            queue: match self.queue {
                Some(l) => l,
                None => c.queue.layer()?,
            },
            compression: match self.compression {
                Some(l) => l,
                None => c.compression.layer()?,
            },
            breaker: match self.breaker {
                Some(l) => l,
                None => c.breaker.layer()?,
            },
        })
    }
}

/// The configuration of a whole [`PerfStack`], one section per layer; every field has a
/// default, unknown fields are refused. Durations are in the unit their name says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerfConfig {
    /// The slow-request tracker.
    pub slow: SlowConfig,
    /// The per-client rate limit; absent: no request is limited.
    pub rate_limit: Option<RateLimitConfig>,
    /// The response cache.
    pub cache: CacheConfig,
    /// The priority queue.
    pub queue: QueueConfig,
    /// Adaptive compression.
    pub compression: CompressionConfig,
    /// The circuit breakers (one per route).
    pub breaker: BreakerConfig,
}

/// [`PerfConfig::slow`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowConfig {
    /// Requests at or above this are slow. Default: 1000.
    pub threshold_ms: u64,
    /// Send `Server-Timing`. Default: true.
    pub server_timing: bool,
    /// Entries kept in the slow-request log. Default: 100.
    pub slow_log_capacity: usize,
}

impl Default for SlowConfig {
    fn default() -> Self {
        Self {
            threshold_ms: 1000,
            server_timing: true,
            slow_log_capacity: 100,
        }
    }
}

/// [`PerfConfig::rate_limit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second per client.
    pub per_second: u32,
    /// How many may come at once. Default: `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// [`PerfConfig::cache`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory budget in MiB. Default: 64.
    pub max_mb: u64,
    /// Largest stored body in KiB. Default: 1024.
    pub max_entry_kb: usize,
    /// Freshness for responses that carry none; absent: only what responses say.
    pub default_ttl_secs: Option<u64>,
    /// Stale-while-revalidate / stale-if-error for responses that set none. Default: 0.
    pub grace_secs: u64,
    /// One origin under several host names. Default: false.
    pub ignore_host: bool,
    /// Recompress a `br` / `zstd` entry at the best level after this many hits; absent: never.
    pub recompress_hot: Option<u32>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_mb: 64,
            max_entry_kb: 1024,
            default_ttl_secs: None,
            grace_secs: 0,
            ignore_host: false,
            recompress_hot: None,
        }
    }
}

/// [`PerfConfig::queue`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// A fixed concurrency limit; absent: the adaptive (gradient) limit.
    pub limit: Option<usize>,
    /// Waiting requests, all classes together. Default: 1024.
    pub queue_capacity: usize,
    /// Trust the `x-priority` request header. Default: false (clients can lie).
    pub trust_priority_header: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            limit: None,
            queue_capacity: 1024,
            trust_priority_header: false,
        }
    }
}

/// [`PerfConfig::compression`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Bodies under this many bytes stay as they are. Default: 512.
    pub min_size: u64,
    /// Share of all cores compression may use before it sheds to faster levels. Default: 0.5.
    pub cpu_budget: f64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            min_size: 512,
            cpu_budget: 0.5,
        }
    }
}

/// [`PerfConfig::breaker`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failure rate (0-1) over the window that opens a breaker. Default: 0.5.
    pub failure_rate: f64,
    /// Calls in the window before the rate counts. Default: 20.
    pub minimum_calls: u32,
    /// First wait while open, in seconds (it grows on repeated trips up to 60 s). Default: 5.
    pub open_wait_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            minimum_calls: 20,
            open_wait_secs: 5,
        }
    }
}

/// An error of a section's layer, named after the section; the reason names the field.
fn in_section(section: &'static str) -> impl Fn(ConfigError) -> ConfigError {
    move |e| ConfigError::new(section, format!("{}: {}", e.field(), e.reason()))
}

impl SlowConfig {
    fn layer(&self) -> Result<SlowRequestLayer, ConfigError> {
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

fn rate_limit_layer(config: Option<&RateLimitConfig>) -> Result<RateLimitLayer, ConfigError> {
    let Some(c) = config else {
        // In the stack, but never limiting: a bypass is one predicate call.
        return RateLimitLayer::builder(Quota::per_second(1))
            .bypass_with(|_| true)
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
    RateLimitLayer::builder(Quota::per_second(c.per_second).burst(c.burst.unwrap_or(c.per_second)))
        .build()
        .map_err(in_section("rate_limit"))
}

impl CacheConfig {
    fn layer(&self) -> Result<ResponseCacheLayer, ConfigError> {
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
    fn layer(&self) -> Result<PriorityQueueLayer<DefaultClassifier>, ConfigError> {
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
    fn layer(&self) -> Result<AdaptiveCompressionLayer, ConfigError> {
        AdaptiveCompressionLayer::builder()
            .min_size(self.min_size)
            .cpu_budget(self.cpu_budget)
            .build()
            .map_err(in_section("compression"))
    }
}

impl BreakerConfig {
    fn layer(&self) -> Result<CircuitBreakerLayer, ConfigError> {
        let wait = Duration::from_secs(self.open_wait_secs);
        CircuitBreakerLayer::builder()
            .failure_rate(self.failure_rate)
            .minimum_calls(self.minimum_calls)
            .open_wait(wait, wait.max(Duration::from_secs(60)))
            .build()
            .map_err(in_section("breaker"))
    }
}
