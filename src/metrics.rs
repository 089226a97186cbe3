//! Names, labels and bucket boundaries of the metrics the layers emit.
//!
//! Every layer reports through the [`metrics`](https://docs.rs/metrics) facade; the application
//! installs the exporter it likes (Prometheus, OpenTelemetry, StatsD, ...). Install it **before**
//! building the layers: each layer describes its metrics once when it is built, and a description
//! sent while no recorder is installed is lost.
//!
//! With `metrics-exporter-prometheus` installed through `install_recorder` (no HTTP listener of
//! its own), call `PrometheusHandle::run_upkeep` every few seconds, for example from a tokio
//! interval task: it drains the histograms' buffers, which otherwise grow until the next render.
//!
//! Names carry their unit and `_total` themselves. They are part of the public interface of the
//! crate and are kept stable by a snapshot test of the rendered Prometheus text.
//!
//! # Example
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use tower_perf::metrics::HISTOGRAM_BUCKETS;
//!
//! // Every duration metric as a histogram (a Prometheus exporter renders a summary, which
//! // cannot be aggregated across instances, for a histogram without buckets).
//! let mut builder = PrometheusBuilder::new();
//! for (name, buckets) in HISTOGRAM_BUCKETS {
//!     builder = builder
//!         .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
//!         .unwrap();
//! }
//! let recorder = builder.build_recorder();
//! let handle = recorder.handle();
//! // metrics::set_global_recorder(recorder).unwrap();
//! # let _ = handle;
//! ```
//!
//! # The metrics
//!
//! Every name is a constant of [`names`] (all of them in [`names::ALL`]), every label name one
//! of [`labels`]; each constant's documentation says what is counted and the label values.
//!
//! | metric | type | labels | layer |
//! |---|---|---|---|
//! | `http_server_request_duration_seconds` | histogram | `http_request_method`, `http_route`, `http_response_status_code` (or `error_type`) | slow |
//! | `http_server_active_requests` | gauge | `http_request_method` | slow |
//! | `tower_perf_slow_requests_total` | counter | `http_request_method`, `http_route` | slow |
//! | `tower_perf_cache_requests_total` | counter | `cache_tier`, `cache_result` (`hit`, `miss`, `stale`, `bypass`, `uncacheable`, `error`) | cache |
//! | `tower_perf_cache_size_bytes`, `tower_perf_cache_entries` | gauge | `cache_tier` | cache |
//! | `tower_perf_cache_purges_total` | counter | `purge_target` | cache |
//! | `tower_perf_cache_evictions_total` | counter | `cause` | cache |
//! | `tower_perf_compression_responses_total` | counter | `encoding`, `decision` | compression |
//! | `tower_perf_compression_input_bytes_total`, `tower_perf_compression_output_bytes_total` | counter | `encoding` | compression |
//! | `tower_perf_compression_level` | gauge | `encoding` | compression |
//! | `tower_perf_queue_size` | gauge | `priority` | queue |
//! | `tower_perf_queue_wait_duration_seconds` | histogram | `priority`, `queue_result` | queue |
//! | `tower_perf_queue_requests_total` | counter | `priority`, `queue_result` | queue |
//! | `tower_perf_queue_in_flight`, `tower_perf_concurrency_limit`, `tower_perf_queue_runtime_lag_seconds` | gauge | | queue |
//! | `tower_perf_circuit_breaker_state` | gauge (1 for the current state) | `breaker`, `state` | breaker |
//! | `tower_perf_circuit_breaker_transitions_total` | counter | `breaker`, `state` | breaker |
//! | `tower_perf_circuit_breaker_calls_total` | counter | `breaker`, `result` | breaker |
//! | `tower_perf_rate_limit_decisions_total` | counter | `decision` | rate limit |
//! | `tower_perf_rate_limit_shared_decisions_total` | counter | `decided_by` | rate limit (Redis) |
//! | `tower_perf_redis_calls_total` | counter | `result` | Redis link |
//! | `tower_perf_redis_link_open` | gauge | | Redis link |
//!
//! The cache's hit ratio over cacheable requests is `(hit + stale) / (hit + stale + miss)`:
//! `bypass` (not handled) and `uncacheable` (a response that may not be stored) are not cache
//! candidates, and [`CacheSnapshot::hit_ratio`](crate::cache::CacheSnapshot::hit_ratio) is the
//! same figure.
//!
//! # Histograms
//!
//! Every duration is a histogram: configure the buckets of [`HISTOGRAM_BUCKETS`] in the
//! exporter, as the example does. Without them a Prometheus exporter renders a summary, whose
//! quantiles cannot be aggregated across instances.
//!
//! # Process metrics
//!
//! The layers record none; the demo server adds them with the
//! [`metrics-process`](https://docs.rs/metrics-process) crate (`Collector::describe` once after
//! installing the recorder, `Collector::collect` before each render of `/metrics`):
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_threads`,
//! `process_start_time_seconds`. The alert rules and dashboards of `examples/monitoring/` read
//! them.

/// The bucket boundaries, in seconds, that OpenTelemetry recommends for HTTP durations.
///
/// Pass them to your exporter for [`names::HTTP_SERVER_REQUEST_DURATION_SECONDS`] (for example
/// `PrometheusBuilder::set_buckets_for_metric`); without them a Prometheus exporter renders a
/// summary instead of a histogram.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The bucket boundaries, in seconds, of the priority queue's wait histogram
/// ([`names::QUEUE_WAIT_DURATION_SECONDS`]).
///
/// Finer than [`DURATION_BUCKETS`] at the low end: most admitted requests wait 0 (they land in
/// the first bucket), a queue that works waits a few milliseconds, and a wait is bounded by the
/// class's `max_wait` (1 s by default), so nothing is gained past 5 s.
pub const QUEUE_WAIT_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every histogram the layers record, with its bucket boundaries: configure all of them in
/// the exporter (for example `PrometheusBuilder::set_buckets_for_metric`, see the module
/// example). Every duration the crate records is in this list.
///
/// | metric | buckets |
/// |---|---|
/// | [`names::HTTP_SERVER_REQUEST_DURATION_SECONDS`] | [`DURATION_BUCKETS`]: 5 ms to 10 s |
/// | [`names::QUEUE_WAIT_DURATION_SECONDS`] | [`QUEUE_WAIT_BUCKETS`]: 0.5 ms to 5 s |
pub const HISTOGRAM_BUCKETS: [(&str, &[f64]); 2] = [
    (
        names::HTTP_SERVER_REQUEST_DURATION_SECONDS,
        &DURATION_BUCKETS,
    ),
    (names::QUEUE_WAIT_DURATION_SECONDS, &QUEUE_WAIT_BUCKETS),
];

/// Metric names.
pub mod names {
    /// Every metric name below, for tools that check dashboards and alert rules against the
    /// crate (a histogram's series add `_bucket`, `_sum` and `_count` to its name).
    pub const ALL: [&str; 25] = [
        HTTP_SERVER_REQUEST_DURATION_SECONDS,
        HTTP_SERVER_ACTIVE_REQUESTS,
        SLOW_REQUESTS_TOTAL,
        CACHE_REQUESTS_TOTAL,
        CACHE_SIZE_BYTES,
        CACHE_ENTRIES,
        CACHE_PURGES_TOTAL,
        CACHE_EVICTIONS_TOTAL,
        COMPRESSION_RESPONSES_TOTAL,
        COMPRESSION_INPUT_BYTES_TOTAL,
        COMPRESSION_OUTPUT_BYTES_TOTAL,
        COMPRESSION_LEVEL,
        CIRCUIT_BREAKER_STATE,
        CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
        CIRCUIT_BREAKER_CALLS_TOTAL,
        QUEUE_SIZE,
        QUEUE_WAIT_DURATION_SECONDS,
        QUEUE_REQUESTS_TOTAL,
        QUEUE_IN_FLIGHT,
        QUEUE_RUNTIME_LAG_SECONDS,
        CONCURRENCY_LIMIT,
        RATE_LIMIT_DECISIONS_TOTAL,
        RATE_LIMIT_SHARED_DECISIONS_TOTAL,
        REDIS_CALLS_TOTAL,
        REDIS_LINK_OPEN,
    ];

    /// Histogram: time from receiving a request to the end of its response body, in seconds.
    /// Labels: [`HTTP_REQUEST_METHOD`](super::labels::HTTP_REQUEST_METHOD),
    /// [`HTTP_ROUTE`](super::labels::HTTP_ROUTE),
    /// [`HTTP_RESPONSE_STATUS_CODE`](super::labels::HTTP_RESPONSE_STATUS_CODE); when the inner
    /// service failed without a response, `error_type="service_error"` instead of the status.
    pub const HTTP_SERVER_REQUEST_DURATION_SECONDS: &str = "http_server_request_duration_seconds";
    /// Gauge: requests whose response has not ended yet. Label: `http_request_method`.
    pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http_server_active_requests";
    /// Counter: requests slower than their route's threshold. Labels: `http_request_method`,
    /// `http_route`.
    pub const SLOW_REQUESTS_TOTAL: &str = "tower_perf_slow_requests_total";
    /// Counter: requests the response cache handled, by tier and result. Labels: `cache_tier`
    /// (`memory`, or `redis` with the Redis tier), `cache_result` (`hit`, `miss`, `stale`,
    /// `bypass`, `uncacheable`, `error`).
    ///
    /// `miss` counts only cache candidates: a request that went to the origin for a response
    /// that may not be stored (`no-store`, `private`, a streamed body past the entry limit, ...)
    /// is `uncacheable`, and one the cache did not handle at all (method, `no-store` request) is
    /// `bypass`. The hit ratio over cacheable requests is therefore
    /// `(hit + stale) / (hit + stale + miss)` of the memory tier.
    pub const CACHE_REQUESTS_TOTAL: &str = "tower_perf_cache_requests_total";
    /// Gauge: bytes held by a cache tier (body, headers and bookkeeping). Label: `cache_tier`.
    pub const CACHE_SIZE_BYTES: &str = "tower_perf_cache_size_bytes";
    /// Gauge: entries held by a cache tier. Label: `cache_tier`.
    pub const CACHE_ENTRIES: &str = "tower_perf_cache_entries";
    /// Counter: purges asked of this instance (`CacheHandle::purge_*`, a `PURGE` request) and
    /// invalidations by an unsafe method's response, whether or not they removed anything.
    /// Label: `purge_target` (`tag`, `uri`, `prefix`, `all`).
    pub const CACHE_PURGES_TOTAL: &str = "tower_perf_cache_purges_total";
    /// Counter: entries removed from the memory tier. Label: `cause` (`expired`, `size`,
    /// `explicit`, `replaced`).
    pub const CACHE_EVICTIONS_TOTAL: &str = "tower_perf_cache_evictions_total";
    /// Counter: responses seen by the compression layer. Labels: `encoding` (`zstd`, `br`,
    /// `gzip`, `deflate`, `identity`: the coding sent), `decision` (why: `idle`, `normal`,
    /// `busy`, `large_body` for compressed ones; `saturated`, `identity`, `too_small`,
    /// `content_type`, `already_encoded`, `partial`, `no_transform`, `head`, `status`,
    /// `event_stream`, `not_acceptable` for the others).
    pub const COMPRESSION_RESPONSES_TOTAL: &str = "tower_perf_compression_responses_total";
    /// Counter: body bytes given to an encoder. Label: `encoding`.
    pub const COMPRESSION_INPUT_BYTES_TOTAL: &str = "tower_perf_compression_input_bytes_total";
    /// Counter: compressed body bytes produced. Label: `encoding`.
    pub const COMPRESSION_OUTPUT_BYTES_TOTAL: &str = "tower_perf_compression_output_bytes_total";
    /// Gauge: the level the compression layer chose for the latest response in a coding (it
    /// follows the load when adaptive). Label: `encoding` (`zstd`, `br`, `gzip`, `deflate`).
    pub const COMPRESSION_LEVEL: &str = "tower_perf_compression_level";
    /// Gauge: 1 for the state a circuit breaker is in, 0 for the others. Labels: `breaker`,
    /// `state` (`closed`, `open`, `half_open`).
    pub const CIRCUIT_BREAKER_STATE: &str = "tower_perf_circuit_breaker_state";
    /// Counter: state changes of a circuit breaker, by the state entered. Labels: `breaker`,
    /// `state`.
    pub const CIRCUIT_BREAKER_TRANSITIONS_TOTAL: &str =
        "tower_perf_circuit_breaker_transitions_total";
    /// Counter: calls seen by a circuit breaker. Labels: `breaker`, `result` (`success`,
    /// `failure`, `slow`, `rejected`).
    pub const CIRCUIT_BREAKER_CALLS_TOTAL: &str = "tower_perf_circuit_breaker_calls_total";
    /// Gauge: requests waiting in the priority queue. Label: `priority`.
    pub const QUEUE_SIZE: &str = "tower_perf_queue_size";
    /// Histogram: time a request waited in the priority queue, in seconds (0 when admitted at
    /// once). Labels: `priority`, `queue_result`.
    pub const QUEUE_WAIT_DURATION_SECONDS: &str = "tower_perf_queue_wait_duration_seconds";
    /// Counter: requests seen by the priority queue. Labels: `priority`, `queue_result`
    /// (`admitted`, `rejected`, `timeout`, `canceled`).
    pub const QUEUE_REQUESTS_TOTAL: &str = "tower_perf_queue_requests_total";
    /// Gauge: requests holding a permit of the priority queue (running, or streaming their
    /// response body).
    pub const QUEUE_IN_FLIGHT: &str = "tower_perf_queue_in_flight";
    /// Gauge: how late the priority queue's periodic tick runs, smoothed, in seconds: its
    /// saturation signal (set while `PriorityQueueBuilder::saturation` is on).
    pub const QUEUE_RUNTIME_LAG_SECONDS: &str = "tower_perf_queue_runtime_lag_seconds";
    /// Gauge: the priority queue's concurrency limit (fixed, or where the adaptive limit
    /// stands).
    pub const CONCURRENCY_LIMIT: &str = "tower_perf_concurrency_limit";
    /// Counter: decisions of the rate limiter. Label: `decision` (`allowed`, `limited`,
    /// `bypassed`).
    pub const RATE_LIMIT_DECISIONS_TOTAL: &str = "tower_perf_rate_limit_decisions_total";
    /// Counter: decisions of the rate limiter's shared (Redis) mode, by who made them. Label:
    /// `decided_by` (`redis`, `fallback`).
    pub const RATE_LIMIT_SHARED_DECISIONS_TOTAL: &str =
        "tower_perf_rate_limit_shared_decisions_total";
    /// Counter: calls of a Redis link (the cache's Redis tier, the rate limiter's shared mode),
    /// by result. Label: `result` (`ok`, `timeout`, `error`, `skipped`: not made because the
    /// link's breaker was open).
    pub const REDIS_CALLS_TOTAL: &str = "tower_perf_redis_calls_total";
    /// Gauge: 1 while a Redis link's breaker is open (Redis skipped, every caller on its
    /// fallback), else 0. Several links in one process report into the same series.
    pub const REDIS_LINK_OPEN: &str = "tower_perf_redis_link_open";
}

/// Label names.
pub mod labels {
    /// The request method: one of the nine standard methods, or `_OTHER`.
    pub const HTTP_REQUEST_METHOD: &str = "http_request_method";
    /// The route template (axum's `MatchedPath`), never the raw path.
    pub const HTTP_ROUTE: &str = "http_route";
    /// The response status code; `499` when the client went away before the response head.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http_response_status_code";
    /// The kind of error when the inner service failed instead of answering.
    pub const ERROR_TYPE: &str = "error_type";
    /// The cache tier: `memory` (and `redis` with the Redis tier).
    pub const CACHE_TIER: &str = "cache_tier";
    /// What the cache did: `hit`, `miss`, `stale`, `bypass`, `uncacheable`, `error`.
    pub const CACHE_RESULT: &str = "cache_result";
    /// What a cache purge covered: `tag`, `uri`, `prefix`, `all`.
    pub const PURGE_TARGET: &str = "purge_target";
    /// Why an entry was evicted.
    pub const CAUSE: &str = "cause";
    /// The key of a circuit breaker (a route template, or what the key function returned).
    pub const BREAKER: &str = "breaker";
    /// The state of a circuit breaker: `closed`, `open`, `half_open`.
    pub const STATE: &str = "state";
    /// What became of a call through a circuit breaker: `success`, `failure`, `slow`, `rejected`;
    /// of a Redis call: `ok`, `timeout`, `error`, `skipped`.
    pub const RESULT: &str = "result";
    /// A request's priority class: `critical`, `high`, `normal`, `low`.
    pub const PRIORITY: &str = "priority";
    /// What the priority queue did with a request: `admitted`, `rejected`, `timeout`,
    /// `canceled`.
    pub const QUEUE_RESULT: &str = "queue_result";
    /// What the rate limiter decided: `allowed`, `limited`, `bypassed`; what the compression
    /// layer decided for a response (see
    /// [`COMPRESSION_RESPONSES_TOTAL`](super::names::COMPRESSION_RESPONSES_TOTAL)).
    pub const DECISION: &str = "decision";
    /// Who made a decision of the rate limiter's shared mode: `redis`, or the `fallback`.
    pub const DECIDED_BY: &str = "decided_by";
    /// The content coding of a compressed response, or `identity`.
    pub const ENCODING: &str = "encoding";
}
