//! [`PerfConfig`]: the serde configuration of a whole stack, one section per layer.
//!
//! Every field has a default and unknown fields are refused, so a typo fails when the file is
//! read. Durations are in the unit their name says. Per-route settings are maps from a route
//! (the route template, axum's `MatchedPath`, as `/api/v1/properties/{id}`, else the path) to
//! a value; a key ending in `*` is a prefix (`"/api/v1/payments/*"`: every route under it).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::queue::Priority;

/// The configuration of a whole [`PerfStack`](super::PerfStack), one section per layer; every
/// field has a default, unknown fields are refused.
///
/// In TOML:
///
/// ```
/// # use tower_perf::stack::PerfConfig;
/// let config: PerfConfig = toml::from_str(r#"
///     [slow]
///     threshold_ms = 500
///     route_threshold_ms = { "/api/v1/reports/export" = 60000 }
///
///     [rate_limit]
///     per_second = 100
///     burst = 200
///     path_prefixes = ["/api/"]
///
///     [queue]
///     limit = 64
///     route_priority = { "/api/v1/payments/*" = "critical" }
///     max_wait_ms = { low = 500 }
/// "#).unwrap();
/// assert_eq!(config.queue.limit, Some(64));
/// ```
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
    /// Adaptive compression (without a `compression-*` feature: must stay at its defaults).
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
    /// Thresholds of routes slow by nature (a streamed export), replacing `threshold_ms`; a
    /// key ending in `*` is a prefix. Default: none.
    pub route_threshold_ms: BTreeMap<String, u64>,
    /// Send `Server-Timing`. Default: true.
    pub server_timing: bool,
    /// Entries kept in the slow-request log. Default: 100.
    pub slow_log_capacity: usize,
}

impl Default for SlowConfig {
    fn default() -> Self {
        Self {
            threshold_ms: 1000,
            route_threshold_ms: BTreeMap::new(),
            server_timing: true,
            slow_log_capacity: 100,
        }
    }
}

/// [`PerfConfig::rate_limit`]: one quota per client (the peer address, or the forwarded one
/// from a trusted proxy), shared by every instance when the stack has a Redis link
/// ([`PerfStackBuilder::redis`](super::PerfStackBuilder)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second per client. Required.
    pub per_second: u32,
    /// How many may come at once. Default: `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// The policy name in the `RateLimit-Policy` and `RateLimit` headers, an HTTP token.
    /// Default: `default`.
    #[serde(default)]
    pub name: Option<String>,
    /// Limit only requests whose path starts with one of these (`"/api/"`); the others are
    /// neither limited nor counted. Default: empty, every request is limited.
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// Reverse proxies (IP addresses or CIDR networks) whose `X-Forwarded-For` is believed.
    /// Default: none, the peer address is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Clients tracked at most (idle ones are dropped first). Default: 100 000.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Send the `RateLimit-*` headers on allowed responses too, not only on `429`s.
    /// Default: true.
    #[serde(default = "yes")]
    pub headers_on_allowed: bool,
}

/// [`PerfConfig::cache`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory budget in MiB. Default: 64.
    pub max_mb: u64,
    /// Largest stored body in KiB, at most half of `max_mb`. Default: 1024.
    pub max_entry_kb: usize,
    /// Stored bodies of 16 KiB and more in pages of their own, so that RSS follows `max_mb`
    /// ([`ResponseCacheBuilder::large_bodies_in_pages`](crate::cache::ResponseCacheBuilder::large_bodies_in_pages)).
    /// Default: true.
    pub large_bodies_in_pages: bool,
    /// Freshness for responses that carry none; absent: only what responses say.
    pub default_ttl_secs: Option<u64>,
    /// Freshness of the responses of a route that carry none, replacing `default_ttl_secs`;
    /// a key ending in `*` is a prefix. Default: none.
    pub route_ttl_secs: BTreeMap<String, u64>,
    /// Stale-while-revalidate / stale-if-error for responses that set none. Default: 0.
    pub grace_secs: u64,
    /// One origin under several host names: the host is not part of the key. Default: false.
    pub ignore_host: bool,
    /// Recompress a `br` / `zstd` entry at the best level after this many hits; absent: never.
    pub recompress_hot: Option<u32>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_mb: 64,
            max_entry_kb: 1024,
            large_bodies_in_pages: true,
            default_ttl_secs: None,
            route_ttl_secs: BTreeMap::new(),
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
    /// A fixed concurrency limit; absent: the adaptive limit of `adaptive`.
    pub limit: Option<usize>,
    /// The adaptive concurrency limit, used when `limit` is absent.
    pub adaptive: AdaptiveConfig,
    /// Waiting requests, all classes together. Default: 1024.
    pub queue_capacity: usize,
    /// Trust the `x-priority` request header. Default: false (clients can lie).
    pub trust_priority_header: bool,
    /// The class of a route (`critical`, `high`, `normal`, `low`); the longest matching
    /// prefix wins. Default: none.
    #[serde(deserialize_with = "priority_map")]
    pub route_priority: BTreeMap<String, Priority>,
    /// The class of requests no route and no trusted header classify. Default: `normal`.
    #[serde(deserialize_with = "priority")]
    pub default_priority: Priority,
    /// How long a request of each class may wait before it is answered `503`.
    pub max_wait_ms: ClassWaits,
    /// The share of the limit each class may hold, in (0, 1] (at least one permit). Default:
    /// 1 for each (no cap).
    pub class_share: ClassShares,
    /// Admitted bodies of the lower classes yield before each chunk while a higher class
    /// waits or has not answered, or while the runtime is saturated. Default: false.
    pub pacing: bool,
    /// The runtime-lag saturation signal; absent: none.
    pub saturation: Option<SaturationConfig>,
}

/// [`QueueConfig::class_share`]: per class, the share of the limit it may hold. Default: 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassShares {
    /// `critical` requests.
    pub critical: f64,
    /// `high` requests.
    pub high: f64,
    /// `normal` requests.
    pub normal: f64,
    /// `low` requests.
    pub low: f64,
}

impl Default for ClassShares {
    fn default() -> Self {
        Self {
            critical: 1.0,
            high: 1.0,
            normal: 1.0,
            low: 1.0,
        }
    }
}

impl ClassShares {
    /// The share of class `p`.
    pub fn of(&self, p: Priority) -> f64 {
        match p {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

/// [`QueueConfig::saturation`]: the runtime-lag signal
/// ([`SaturationSignal`](crate::queue::SaturationSignal)), in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaturationConfig {
    /// How often the tick runs. Default: 10.
    pub interval_ms: u64,
    /// Smoothed lag from which the runtime is saturated. Default: 5.
    pub enter_ms: u64,
    /// Smoothed lag below which it no longer is. Default: 2.
    pub exit_ms: u64,
}

impl Default for SaturationConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10,
            enter_ms: 5,
            exit_ms: 2,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            limit: None,
            adaptive: AdaptiveConfig::default(),
            queue_capacity: 1024,
            trust_priority_header: false,
            route_priority: BTreeMap::new(),
            default_priority: Priority::Normal,
            max_wait_ms: ClassWaits::default(),
            class_share: ClassShares::default(),
            pacing: false,
            saturation: None,
        }
    }
}

/// [`QueueConfig::adaptive`]: a concurrency limit that follows the latency it observes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// `gradient` (no-load latency against current latency) or `aimd` (additive increase,
    /// multiplicative decrease past `latency_threshold_ms`). Default: `gradient`.
    pub algorithm: AdaptiveAlgorithm,
    /// The lowest limit. Default: 1.
    pub min: usize,
    /// The highest limit. Default: 1000.
    pub max: usize,
    /// The limit at start. Default: 20.
    pub initial: usize,
    /// `aimd` only: a request slower than this shrinks the limit. Default: 100.
    pub latency_threshold_ms: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            algorithm: AdaptiveAlgorithm::Gradient,
            min: 1,
            max: 1000,
            initial: 20,
            latency_threshold_ms: 100,
        }
    }
}

/// [`AdaptiveConfig::algorithm`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptiveAlgorithm {
    /// After Netflix's concurrency-limits gradient.
    #[default]
    Gradient,
    /// Additive increase, multiplicative decrease.
    Aimd,
}

/// [`QueueConfig::max_wait_ms`]: milliseconds per class. Default: 1000 for each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassWaits {
    /// `critical` requests.
    pub critical: u64,
    /// `high` requests.
    pub high: u64,
    /// `normal` requests.
    pub normal: u64,
    /// `low` requests.
    pub low: u64,
}

impl Default for ClassWaits {
    fn default() -> Self {
        Self {
            critical: 1000,
            high: 1000,
            normal: 1000,
            low: 1000,
        }
    }
}

impl ClassWaits {
    /// The wait of class `p`, in milliseconds.
    pub fn of(&self, p: Priority) -> u64 {
        match p {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
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
    /// Levels follow the load (off: always the normal level). Default: true.
    pub adaptive: bool,
    /// The codings by preference, among `zstd`, `br`, `gzip`, `deflate` (each needs its
    /// feature); a coding left out is never used. Default: every coding compiled in, in that
    /// order.
    pub prefer: Option<Vec<String>>,
    /// Responses to low-priority requests step down one tier first (fast level, then none).
    /// Default: true.
    pub step_down_low: bool,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            min_size: 512,
            cpu_budget: 0.5,
            adaptive: true,
            prefer: None,
            step_down_low: true,
        }
    }
}

/// [`PerfConfig::breaker`]: one breaker per route, judged over its last calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Calls in the window each breaker is judged over. Default: 100.
    pub window_calls: usize,
    /// Calls in the window before the rates count. Default: 20.
    pub minimum_calls: u32,
    /// Failure rate (0-1) over the window that opens a breaker. Default: 0.5.
    pub failure_rate: f64,
    /// A call this slow counts as slow; absent: no call is slow.
    pub slow_call_ms: Option<u64>,
    /// Slow-call rate (0-1) over the window that opens a breaker, with `slow_call_ms`.
    /// Default: 1.0.
    pub slow_call_rate: f64,
    /// A call that takes longer is cut short and counts as a failure; absent: no limit.
    pub call_timeout_ms: Option<u64>,
    /// First wait while open, in seconds; it doubles on repeated trips. Default: 5.
    pub open_wait_secs: u64,
    /// The longest wait while open. Default: 60.
    pub max_open_wait_secs: u64,
    /// Probe calls let through while half-open. Default: 5.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window_calls: 100,
            minimum_calls: 20,
            failure_rate: 0.5,
            slow_call_ms: None,
            slow_call_rate: 1.0,
            call_timeout_ms: None,
            open_wait_secs: 5,
            max_open_wait_secs: 60,
            half_open_calls: 5,
        }
    }
}

fn yes() -> bool {
    true
}

fn parse_priority<E: serde::de::Error>(raw: &str) -> Result<Priority, E> {
    raw.parse().map_err(|_| {
        E::custom(format!(
            "a priority is critical, high, normal or low, got {raw:?}"
        ))
    })
}

fn priority<'de, D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
    parse_priority(&String::deserialize(d)?)
}

fn priority_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Priority>, D::Error> {
    BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .map(|(route, p)| Ok((route, parse_priority(&p)?)))
        .collect()
}
