//! [`PerfConfig`]: the serde configuration of a whole stack, one section per layer.

use serde::{Deserialize, Serialize};

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
