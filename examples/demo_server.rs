//! A property-management API with every tower-perf layer that exists so far.
//!
//! This is the kind of application the crate is made for: cheap reads that a cache would love, an
//! expensive dashboard, a multi-megabyte streamed export, and a call to a flaky payment provider.
//! Every route goes through the same stack (see [`build_stack`]); today that stack holds:
//!
//! - the [`SlowRequestLayer`], which gives every response a `Server-Timing` header, keeps latency
//!   percentiles per route, logs slow requests with their phase breakdown (`db`, `aggregate`,
//!   `provider`, ...) and reports `http_server_request_duration_seconds` to Prometheus;
//! - the [`ResponseCacheLayer`], which serves the list, items and dashboard from memory following
//!   their `Cache-Control` (see `Cache-Status` and `Age` on the responses), refreshes the
//!   dashboard in the background while serving it stale (`stale-while-revalidate`), answers
//!   `If-None-Match` with 304, and is purged by tag when a property is created;
//! - the [`RateLimitLayer`], per client on `/api/*` (100 requests/s, burst 200): past the quota,
//!   `429` with `Retry-After` and the `RateLimit-Policy` / `RateLimit` headers, which also come
//!   on allowed responses;
//! - the [`AdaptiveCompressionLayer`], inside the cache (which stores each encoded variant, so
//!   a hit costs no compression): zstd, br, gzip or deflate by `Accept-Encoding`, levels that
//!   follow the load, and the CSV export compressed as it streams (`curl --compressed`);
//! - the [`CircuitBreakerLayer`], one breaker per route: make the payment provider fail
//!   (`PUT /admin/payments/fault` with `{"failure_rate": 1.0}`) and after 10 calls its route
//!   answers `503` + `Retry-After` at once, while every other route is unaffected; it probes the
//!   provider again after 5 s (growing on repeated trips);
//! - the [`PriorityQueueLayer`], inside the cache: at most 64 requests at once, the class from
//!   `x-priority` (`critical|high|normal|low`), else by route (payments critical, the export
//!   low, reads normal); when full, the lowest class is shed first with `503` + `Retry-After`,
//!   and the cache serves a stale copy instead when it has one.
//!
//! # Run it
//!
//! ```text
//! cargo run --release --example demo_server
//!
//! # Make the 50 ms dashboard count as slow (past the cache, which was warmed at start-up),
//! # then look at the slow log:
//! SLOW_THRESHOLD_MS=10 cargo run --release --example demo_server
//! curl -i -H 'cache-control: no-cache' http://127.0.0.1:3000/api/v1/dashboard
//! curl -s http://127.0.0.1:3000/admin/stats
//!
//! # The cache: pages 1-5 are warmed at start-up, so page 7 is a miss, then a hit (compare
//! # Cache-Status, Age and Server-Timing)
//! curl -si http://127.0.0.1:3000/api/v1/properties?page=7 | grep -iE 'cache-status|age|server-timing'
//! curl -si http://127.0.0.1:3000/api/v1/properties?page=7 | grep -iE 'cache-status|age|server-timing'
//! curl -s -X POST http://127.0.0.1:3000/admin/cache/purge -d '{"tags":["properties"]}' \
//!      -H 'content-type: application/json'
//! ```
//!
//! Environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HOST` | `127.0.0.1` | IP address to listen on |
//! | `PORT` | `3000` | TCP port to listen on |
//! | `SLOW_THRESHOLD_MS` | `1000` | requests at or above this are slow (the export route: 60 s) |
//! | `CACHE_MAX_MB` | `64` | memory budget of the response cache |
//! | `RATE_LIMIT_RPS`, `RATE_LIMIT_BURST` | `100`, `200` | per-client quota on `/api/*` |
//! | `REDIS_URL` | unset | `redis://host:port`: the cache's Redis tier and the quota on `/api/*` are shared by every instance (needs `--features redis`) |
//! | `RUST_LOG` | `info,tower_http=info` | log filter |
//!
//! An invalid value stops the server with a message naming the variable and exit code 2.
//!
//! # Routes
//!
//! - `GET /api/v1/properties?page=&per_page=&status=`: paginated list (about 20 KB per page)
//! - `GET /api/v1/properties/{id}`: one property, with a strong `ETag` and `If-None-Match` support
//! - `POST /api/v1/properties` (`{"name", "city", "status", "monthly_rent"}`): 201 + `Location`
//! - `GET /api/v1/dashboard`: aggregate over every property behind a simulated 50 ms query
//! - `GET /api/v1/reports/export`: streamed CSV ledger of about 3 MB, generated lazily
//! - `GET /api/v1/payments/{id}/status`: calls a simulated payment provider
//! - `GET|PUT /admin/payments/fault` (`{"failure_rate": 0.0-1.0, "latency_ms": n}`): make the
//!   provider fail or slow down
//! - `GET /admin/stats`: latency percentiles per route, the recent slow requests, cache stats
//! - `POST /admin/cache/purge` (`{"tags": [...]}`, `{"uri": "/..."}`, `{"prefix": "/..."}`,
//!   optional `"hard": false` to mark stale instead of removing)
//! - `GET /metrics`: Prometheus text; `GET /health`, `/ready`, `/alive`

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_perf::breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use tower_perf::cache::{CacheHandle, ResponseCacheLayer};
use tower_perf::compression::{AdaptiveCompressionLayer, CompressionHandle};
use tower_perf::metrics::{names, DURATION_BUCKETS};
use tower_perf::queue::{PriorityQueueHandle, PriorityQueueLayer};
use tower_perf::rate_limit::{Quota, RateLimitHandle, RateLimitLayer};
use tower_perf::slow::{SlowRequestHandle, SlowRequestLayer};
use tower_perf::{PhaseGuard, Priority, Timings};
use tracing::{Level, Span};
use tracing_subscriber::EnvFilter;

// ------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------

/// Route of the CSV export; named once so the router and its slow threshold cannot drift apart.
const EXPORT_ROUTE: &str = "/api/v1/reports/export";
/// Exports stream for seconds on a slow client: only a minute is slow.
const EXPORT_SLOW_THRESHOLD: Duration = Duration::from_secs(60);
/// How many recent slow requests `/admin/stats` can show.
const SLOW_LOG_CAPACITY: usize = 200;

/// How long a stale cache entry may still be served, while it is refreshed in the background or
/// while the origin fails, when the response does not say.
const CACHE_GRACE: Duration = Duration::from_secs(30);

/// The cache tag of everything derived from the property list; a write purges it.
const PROPERTIES_TAG: &str = "properties";

/// The response header handlers use to tag what the cache stores (read and removed by the cache).
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Exit code for a bad environment variable.
const EXIT_CONFIG: u8 = 2;

/// What the environment configures.
struct Config {
    addr: SocketAddr,
    slow_threshold: Duration,
    cache_max_bytes: u64,
    rate_limit_rps: u32,
    rate_limit_burst: u32,
    /// `REDIS_URL`: the cache's Redis tier and the shared rate limit, when set.
    redis_url: Option<String>,
}

impl Config {
    /// Reads `HOST`, `PORT` and `SLOW_THRESHOLD_MS`; the error names the bad variable.
    fn from_env() -> Result<Self, String> {
        let host: IpAddr = env_or("HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let port: u16 = env_or("PORT", 3000)?;
        let slow_ms: u64 = env_or("SLOW_THRESHOLD_MS", 1000)?;
        let cache_mb: u64 = env_or("CACHE_MAX_MB", 64)?;
        let rate_limit_rps: u32 = env_or("RATE_LIMIT_RPS", 100)?;
        let rate_limit_burst: u32 = env_or("RATE_LIMIT_BURST", 200)?;
        if rate_limit_rps == 0 || rate_limit_burst == 0 {
            return Err("invalid RATE_LIMIT_RPS / RATE_LIMIT_BURST: must be at least 1".into());
        }
        if cache_mb == 0 {
            return Err("invalid CACHE_MAX_MB=0: must be at least 1 (MiB)".into());
        }
        if slow_ms == 0 {
            return Err("invalid SLOW_THRESHOLD_MS=0: must be at least 1 (milliseconds)".into());
        }
        let redis_url = match std::env::var("REDIS_URL") {
            Ok(url) if url.trim().is_empty() => None,
            Ok(url) => Some(url.trim().to_owned()),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(raw)) => {
                return Err(format!("invalid REDIS_URL={raw:?}: not valid UTF-8"))
            }
        };
        if redis_url.is_some() && cfg!(not(feature = "redis")) {
            return Err(
                "REDIS_URL is set, but this build has no Redis support: run \
                 `cargo run --release --example demo_server --features redis`"
                    .into(),
            );
        }
        Ok(Self {
            addr: SocketAddr::new(host, port),
            slow_threshold: Duration::from_millis(slow_ms),
            cache_max_bytes: cache_mb.saturating_mul(1024 * 1024),
            rate_limit_rps,
            rate_limit_burst,
            redis_url,
        })
    }
}

/// The parsed value of environment variable `name`, or `default` when it is not set.
fn env_or<T>(name: &str, default: T) -> Result<T, String>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|e| format!("invalid {name}={raw:?}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(raw)) => {
            Err(format!("invalid {name}={raw:?}: not valid UTF-8"))
        }
    }
}

/// The log filter: `RUST_LOG` when set, else `info,tower_http=info`.
fn log_filter() -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(raw) => EnvFilter::try_new(&raw).map_err(|e| format!("invalid RUST_LOG={raw:?}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(EnvFilter::new("info,tower_http=info")),
        Err(std::env::VarError::NotUnicode(raw)) => {
            Err(format!("invalid RUST_LOG={raw:?}: not valid UTF-8"))
        }
    }
}

// ------------------------------------------------------------------------------------------------
// main
// ------------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> ExitCode {
    let filter = match log_filter() {
        Ok(f) => f,
        Err(e) => return config_error(&e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };

    // The recorder goes in before the layers are built: each layer describes its metrics once,
    // when it is built, and a description sent while no recorder is installed is lost.
    let metrics = match install_metrics() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot install the Prometheus recorder: {e}");
            return ExitCode::FAILURE;
        }
    };

    #[cfg(feature = "redis")]
    let redis = match redis_link(&config) {
        Ok(link) => link,
        Err(e) => return config_error(&e),
    };
    #[cfg(feature = "redis")]
    if let Some(link) = &redis {
        // Not required (the layers go on without Redis until it answers), but the warm-up
        // below then fills the shared tier too.
        if !link.connect(Duration::from_secs(2)).await {
            tracing::warn!("Redis is not answering yet; serving from memory until it does");
        }
    }
    let layers = match Layers::build(
        &config,
        #[cfg(feature = "redis")]
        redis,
    ) {
        Ok(l) => l,
        Err(e) => return config_error(&e),
    };

    let handles = layers.handles();
    let state = AppState::new(metrics, handles.clone());
    let router = build_stack(app(state), layers);

    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(config.addr);
    print_banner(addr, &config);
    tokio::spawn(warm_cache(handles.cache, router.clone(), addr));

    // `ConnectInfo<SocketAddr>` gives per-client layers (the rate limiter) the peer address.
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        eprintln!("error: server failed: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("server stopped");
    ExitCode::SUCCESS
}

fn config_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_CONFIG)
}

/// Installs the global Prometheus recorder, with the OpenTelemetry buckets for the request
/// duration histogram, and keeps its upkeep running.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::HTTP_SERVER_REQUEST_DURATION_SECONDS.to_owned()),
            &DURATION_BUCKETS,
        )?
        .install_recorder()?;
    // Without the HTTP listener feature the exporter leaves upkeep (draining histogram samples)
    // to us.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn print_banner(addr: SocketAddr, config: &Config) {
    let base = format!("http://{addr}");
    println!("tower-perf demo server listening on {base}");
    println!(
        "slow threshold: {} ms ({EXPORT_ROUTE}: {} s); stop with Ctrl-C",
        config.slow_threshold.as_millis(),
        EXPORT_SLOW_THRESHOLD.as_secs()
    );
    match &config.redis_url {
        Some(url) => {
            println!("Redis at {url}: cache tier and /api/* quota shared by every instance")
        }
        None => println!("cache: memory only (set REDIS_URL for the shared Redis tier)"),
    }
    println!("try:");
    println!("  curl -i '{base}/api/v1/properties?page=2&per_page=5&status=leased'");
    println!("  curl -i {base}/api/v1/properties/42");
    println!("  curl -i {base}/api/v1/properties/42 -H 'If-None-Match: \"42-1\"'");
    println!(
        "  curl -i {base}/api/v1/properties -H 'content-type: application/json' \\\n       \
         -d '{{\"name\":\"Dock House\",\"city\":\"Lisbon\",\"status\":\"available\",\"monthly_rent\":1450}}'"
    );
    println!("  curl -i {base}/api/v1/dashboard");
    println!("  curl -s {base}{EXPORT_ROUTE} | wc -c");
    println!("  curl -i -X PUT {base}/admin/payments/fault -H 'content-type: application/json' \\\n       -d '{{\"failure_rate\":0.5,\"latency_ms\":200}}'");
    println!("  curl -i {base}/api/v1/payments/7/status");
    println!("  curl -s {base}/admin/stats");
    println!("  curl -s {base}/metrics");
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

// ------------------------------------------------------------------------------------------------
// The tower-perf stack
// ------------------------------------------------------------------------------------------------

/// The Redis link shared by the layers that use Redis, from `REDIS_URL`. It connects in the
/// background; until Redis answers, the layers go on without it.
#[cfg(feature = "redis")]
fn redis_link(config: &Config) -> Result<Option<tower_perf::redis::RedisLink>, String> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    tower_perf::redis::RedisLink::builder()
        .url(url.as_str())
        .key_prefix("tower-perf-demo")
        .build()
        .map(Some)
        .map_err(|e| format!("REDIS_URL: {e}"))
}

/// Every tower-perf layer of the stack, built once from the configuration. A new layer is a field
/// here, its construction in [`Layers::build`], its handle in [`Handles`] and one line in
/// [`build_stack`].
struct Layers {
    slow: SlowRequestLayer,
    rate_limit: RateLimitLayer, // per client on /api/*: 100 req/s, burst 200
    cache: ResponseCacheLayer,  // memory tier, and the Redis tier when REDIS_URL is set
    queue: PriorityQueueLayer,  // x-priority header, else by route
    compression: AdaptiveCompressionLayer, // zstd/br/gzip/deflate, levels follow the load
    breaker: CircuitBreakerLayer, // keyed per route; guards the payment provider
}

impl Layers {
    fn build(
        config: &Config,
        #[cfg(feature = "redis")] redis: Option<tower_perf::redis::RedisLink>,
    ) -> Result<Self, String> {
        let slow = SlowRequestLayer::builder()
            .threshold(config.slow_threshold)
            .route_threshold(EXPORT_ROUTE, EXPORT_SLOW_THRESHOLD)
            .slow_log_capacity(SLOW_LOG_CAPACITY)
            .build()
            .map_err(|e| format!("slow request tracker: {e}"))?;
        // Freshness comes from each handler's Cache-Control; the grace lets a stale entry be
        // served for 30 s while it is refreshed, or while the origin fails.
        let cache = ResponseCacheLayer::builder()
            .max_bytes(config.cache_max_bytes)
            .grace(CACHE_GRACE)
            // One origin, reached as localhost, 127.0.0.1 or a LAN address: one set of entries.
            .ignore_host(true)
            // A br / zstd entry hit 50 times is encoded again at the best level in the
            // background: the hottest responses leave at the best ratio.
            .recompress_hot(50);
        #[cfg(feature = "redis")]
        let cache = match &redis {
            Some(link) => cache.redis(link.clone()),
            None => cache,
        };
        let cache = cache.build().map_err(|e| format!("response cache: {e}"))?;
        // One breaker per route: the payment provider failing (PUT /admin/payments/fault) opens
        // the payments route's breaker and nothing else. Calls over 2 s count as failures.
        let breaker = CircuitBreakerLayer::builder()
            .count_window(50)
            .minimum_calls(10)
            .failure_rate(0.5)
            .slow_calls(Duration::from_millis(800), 0.8)
            .call_timeout(Duration::from_secs(2))
            .open_wait(Duration::from_secs(5), Duration::from_secs(60))
            .half_open_calls(3)
            .build()
            .map_err(|e| format!("circuit breaker: {e}"))?;
        // Per client (the peer address; `X-Forwarded-For` only from trusted proxies, none here)
        // on the API; health, metrics and admin routes are never limited.
        // Admission control: at most 64 requests at once (a permit lasts until the response
        // body ends, so the streamed export holds one while it streams). `x-priority` first,
        // else by route: payments critical, exports low, everything else (reads) normal.
        let queue = PriorityQueueLayer::builder()
            .limit(64)
            .trust_priority_header(true)
            .route("/api/v1/payments", Priority::Critical)
            .route(EXPORT_ROUTE, Priority::Low)
            .queue_capacity(512)
            .max_wait(Priority::Low, Duration::from_millis(500))
            .build()
            .map_err(|e| format!("priority queue: {e}"))?;
        let rate_limit = RateLimitLayer::builder(
            Quota::per_second(config.rate_limit_rps)
                .burst(config.rate_limit_burst)
                .named("api"),
        )
        .bypass(|req| !req.uri.path().starts_with("/api/"));
        // With REDIS_URL, one quota per client for every instance of the demo.
        #[cfg(feature = "redis")]
        let rate_limit = match redis {
            Some(link) => rate_limit.redis(link),
            None => rate_limit,
        };
        let rate_limit = rate_limit
            .build()
            .map_err(|e| format!("rate limiter: {e}"))?;
        // Defaults: zstd, br, gzip, deflate by preference; levels adapt to the CPU time spent
        // compressing (budget: half the cores); the export streams compressed.
        let compression = AdaptiveCompressionLayer::new();
        Ok(Self {
            slow,
            rate_limit,
            cache,
            queue,
            compression,
            breaker,
        })
    }

    /// What the admin endpoints read while the layers serve requests.
    fn handles(&self) -> Handles {
        Handles {
            slow: self.slow.handle(),
            cache: self.cache.handle(),
            breakers: self.breaker.handle(),
            rate_limit: self.rate_limit.handle(),
            queue: self.queue.handle(),
            compression: self.compression.handle(),
        }
    }
}

/// Read handles of the layers, for `/admin/stats`.
#[derive(Clone)]
struct Handles {
    slow: SlowRequestHandle,
    cache: CacheHandle,
    breakers: CircuitBreakerHandle,
    rate_limit: RateLimitHandle,
    compression: CompressionHandle,
    queue: PriorityQueueHandle,
}

/// Wraps every route in the stack, outermost first.
///
/// `Router::layer` puts the layers *after* routing, so they see axum's `MatchedPath` and report
/// per route template (`/api/v1/properties/{id}`), never per raw path.
fn build_stack(router: Router, layers: Layers) -> Router {
    let Layers {
        slow,
        rate_limit,
        cache,
        queue,
        compression,
        breaker,
    } = layers;
    router.layer(
        ServiceBuilder::new()
            // Request ids first, so every layer below (and the tracker's slow log) sees one.
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
            // 1. Slow-request tracker: sees the whole life of a request, queue wait included.
            .layer(slow)
            // 2. Rate limit: the cheapest rejection comes first.
            .layer(rate_limit)
            // 3. Response cache: a hit skips the queue, compression and the handler.
            .layer(cache)
            // 4. Priority queue: admission control over the work that costs something.
            .layer(queue)
            // 5. Adaptive compression: inside admission, inside the cache.
            .layer(compression)
            // 6. Circuit breaker: guards the handlers and the payment provider; an open breaker's
            //    503 carries `Rejected`, which the cache above turns into a stale hit if it can.
            .layer(breaker)
            // 7. The application (`app`).
            .into_inner(),
    )
}

/// Fills the cache with the first list pages and the dashboard, through the whole stack, so the
/// first visitors get hits. (The cache ignores the host here; the requests carry one anyway, as
/// real ones do.)
async fn warm_cache(cache: CacheHandle, router: Router, addr: SocketAddr) {
    let host = addr.to_string();
    let paths = (1..=5)
        .map(|page| format!("/api/v1/properties?page={page}"))
        .chain(["/api/v1/dashboard".to_owned()]);
    let requests = paths.filter_map(|path| {
        let mut req = Request::get(path)
            .header(axum::http::header::HOST, host.as_str())
            .body(Body::empty())
            .ok()?;
        // Like a connection from the server itself, so per-client layers (the rate limiter) see
        // a peer address, as they do for real requests.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        Some(req)
    });
    let report = cache.warm(router, requests, 4).await;
    tracing::info!(
        requested = report.requested,
        stored = report.stored,
        already_cached = report.already_cached,
        not_stored = report.not_stored,
        failed = report.failed,
        "cache warmed"
    );
}

/// The tracing span of one request, with its request id.
fn request_span(req: &Request<Body>) -> Span {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        uri = %req.uri(),
        request_id = %request_id,
    )
}

// ------------------------------------------------------------------------------------------------
// Application state and router
// ------------------------------------------------------------------------------------------------

#[derive(Clone)]
struct AppState {
    properties: Arc<RwLock<Store>>,
    payments: Arc<PaymentProvider>,
    metrics: PrometheusHandle,
    layers: Handles,
    started: Instant,
}

impl AppState {
    fn new(metrics: PrometheusHandle, layers: Handles) -> Self {
        Self {
            properties: Arc::new(RwLock::new(Store::generate(DATA_SET_SIZE, DATA_SEED))),
            payments: Arc::new(PaymentProvider::new(PAYMENTS_SEED)),
            metrics,
            layers,
            started: Instant::now(),
        }
    }

    // A panic while holding the lock cannot leave the store half-written (every write is one
    // push), so a poisoned lock is still good to use.
    fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.properties
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.properties
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The routes of the application, without the tower-perf stack (see [`build_stack`]).
fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/properties",
            get(list_properties).post(create_property),
        )
        .route("/api/v1/properties/{id}", get(get_property))
        .route("/api/v1/dashboard", get(dashboard))
        .route(EXPORT_ROUTE, get(export_ledger))
        .route("/api/v1/payments/{id}/status", get(payment_status))
        .route("/admin/payments/fault", get(get_fault).put(put_fault))
        .route("/admin/stats", get(admin_stats))
        .route("/admin/cache/purge", post(purge_cache))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/alive", get(alive))
        .fallback(not_found)
        .with_state(state)
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/// An error answered as `{"error": "..."}` (plus `errors` for validation failures).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    errors: Vec<FieldError>,
}

#[derive(Debug, Serialize)]
struct FieldError {
    field: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "validation failed".into(),
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.errors.is_empty() {
            json!({ "error": self.message })
        } else {
            json!({ "error": self.message, "errors": self.errors })
        };
        (self.status, Json(body)).into_response()
    }
}

/// axum's JSON rejections keep their status (400 malformed, 415 wrong content type, 422 wrong
/// shape) but get a JSON body.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

// ------------------------------------------------------------------------------------------------
// Deterministic randomness
// ------------------------------------------------------------------------------------------------

/// The SplitMix64 finaliser: a good 64-bit mix of `z`.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A uniform float in `[0, 1)` from 64 random bits.
fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: tiny, fast, and the same sequence for the same seed on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// A number in `lo..=hi` (the modulo bias is negligible for these small ranges).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// SplitMix64 over an atomic counter, for randomness shared by concurrent requests.
struct AtomicRng(AtomicU64);

impl AtomicRng {
    fn unit(&self) -> f64 {
        let state = self
            .0
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        unit_f64(mix64(state))
    }
}

// ------------------------------------------------------------------------------------------------
// Data set
// ------------------------------------------------------------------------------------------------

const DATA_SET_SIZE: u64 = 1_000;
const DATA_SEED: u64 = 0x5EED_0F7E;
/// 2024-01-01T00:00:00Z: `updated_at` of the generated properties is within 90 days of it.
const BASE_UNIX_SECS: u64 = 1_704_067_200;

const CITIES: [&str; 12] = [
    "Lisbon",
    "Porto",
    "Madrid",
    "Barcelona",
    "Paris",
    "Lyon",
    "Berlin",
    "Hamburg",
    "Amsterdam",
    "Rotterdam",
    "Vienna",
    "Prague",
];
/// Rent multiplier per city, in percent, same order as [`CITIES`].
const CITY_RENT_PCT: [u64; 12] = [90, 75, 105, 110, 160, 85, 115, 100, 150, 95, 100, 70];
const NAME_FIRST: [&str; 10] = [
    "Maple",
    "Cedar",
    "Harbor",
    "Riverside",
    "Oak",
    "Willow",
    "Summit",
    "Garden",
    "Lakeside",
    "Station",
];
const NAME_SECOND: [&str; 8] = [
    "Court",
    "Heights",
    "Residences",
    "Lofts",
    "House",
    "Terrace",
    "Apartments",
    "Place",
];
const STREETS: [&str; 10] = [
    "Main Street",
    "Park Avenue",
    "Canal Road",
    "Market Square",
    "Church Lane",
    "Station Road",
    "Mill Street",
    "Harbour Way",
    "Elm Grove",
    "King's Road",
];
const AMENITIES: [&str; 10] = [
    "balcony",
    "elevator",
    "parking",
    "dishwasher",
    "washing_machine",
    "air_conditioning",
    "storage_room",
    "bike_storage",
    "garden",
    "concierge",
];
const MANAGERS: [&str; 6] = ["ana", "bruno", "chloe", "dmitri", "elena", "farid"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Available,
    Leased,
    Maintenance,
}

impl Status {
    const ALL: [Status; 3] = [Status::Available, Status::Leased, Status::Maintenance];

    fn as_str(self) -> &'static str {
        match self {
            Status::Available => "available",
            Status::Leased => "leased",
            Status::Maintenance => "maintenance",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize)]
struct Property {
    id: u64,
    name: String,
    address: String,
    postal_code: String,
    city: String,
    status: Status,
    monthly_rent: u32,
    bedrooms: u8,
    bathrooms: u8,
    square_meters: u32,
    year_built: u16,
    amenities: Vec<&'static str>,
    manager_email: String,
    description: String,
    /// Unix seconds.
    updated_at: u64,
    /// Bumped on every change; part of the `ETag`.
    version: u64,
}

impl Property {
    fn etag(&self) -> String {
        format!("\"{}-{}\"", self.id, self.version)
    }

    /// One generated property; the same `id` and `seed` always give the same property.
    fn generate(id: u64, seed: u64) -> Self {
        let mut rng = SplitMix64::new(mix64(seed ^ id.wrapping_mul(GOLDEN_GAMMA)));
        let city_idx = rng.next_u64() as usize % CITIES.len();
        let city = CITIES[city_idx];
        let bedrooms = rng.range(0, 5) as u8;
        let bathrooms = 1 + u8::from(bedrooms >= 3) + u8::from(rng.unit() < 0.2);
        let square_meters = 28 + u64::from(bedrooms) * 22 + rng.range(0, 25);
        let base_rent = 450 + u64::from(bedrooms) * 320 + rng.range(0, 400);
        let monthly_rent = (base_rent * CITY_RENT_PCT[city_idx] / 100 / 5 * 5) as u32;
        let status = match rng.unit() {
            x if x < 0.62 => Status::Leased,
            x if x < 0.90 => Status::Available,
            _ => Status::Maintenance,
        };
        let mut amenities: Vec<&'static str> = AMENITIES
            .iter()
            .copied()
            .filter(|_| rng.unit() < 0.35)
            .collect();
        amenities.truncate(5);
        let name = format!(
            "{} {} {}",
            rng.pick(&NAME_FIRST),
            rng.pick(&NAME_SECOND),
            id
        );
        let address = format!("{} {}", rng.range(1, 240), rng.pick(&STREETS));
        let year_built = rng.range(1890, 2023) as u16;
        let description = format!(
            "{} of {} m² in {}, built in {}, {} bathroom{}; {}.",
            if bedrooms == 0 {
                "Studio".to_owned()
            } else {
                format!("{bedrooms}-bedroom home")
            },
            square_meters,
            city,
            year_built,
            bathrooms,
            if bathrooms == 1 { "" } else { "s" },
            if amenities.is_empty() {
                "no extras".to_owned()
            } else {
                format!("with {}", amenities.join(", ").replace('_', " "))
            }
        );
        Self {
            id,
            name,
            address,
            postal_code: format!("{:05}", rng.range(1000, 99_999)),
            city: city.to_owned(),
            status,
            monthly_rent,
            bedrooms,
            bathrooms,
            square_meters: square_meters as u32,
            year_built,
            amenities,
            manager_email: format!("{}@example-estates.com", rng.pick(&MANAGERS)),
            description,
            updated_at: BASE_UNIX_SECS + rng.range(0, 90 * 86_400),
            version: 1,
        }
    }
}

/// Every property, ordered by id (ids only grow, so lookups are binary searches).
struct Store {
    properties: Vec<Property>,
    next_id: u64,
}

impl Store {
    fn generate(count: u64, seed: u64) -> Self {
        Self {
            properties: (1..=count).map(|id| Property::generate(id, seed)).collect(),
            next_id: count + 1,
        }
    }

    fn get(&self, id: u64) -> Option<&Property> {
        self.properties
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.properties[i])
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(BASE_UNIX_SECS)
}

/// Starts timing phase `name` of the request, if a layer put a [`Timings`] record on it.
fn phase(timings: Option<&Timings>, name: &'static str) -> Option<PhaseGuard> {
    timings.map(|t| t.start(name))
}

// ------------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------------

const DEFAULT_PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 200;

/// Query parameters as raw strings, parsed by hand so bad input gets our own 400.
#[derive(Debug, Deserialize)]
struct ListParams {
    page: Option<String>,
    per_page: Option<String>,
    status: Option<String>,
}

#[derive(Serialize)]
struct PropertyPage {
    page: usize,
    per_page: usize,
    total: usize,
    total_pages: usize,
    status: Option<Status>,
    items: Vec<Property>,
}

/// A positive integer query parameter no larger than `max`.
fn parse_positive(
    name: &str,
    raw: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err(ApiError::bad_request(format!(
            "`{name}` must be at least 1, got 0"
        ))),
        Ok(n) => Err(ApiError::bad_request(format!(
            "`{name}` must be at most {max}, got {n}"
        ))),
        Err(_) => Err(ApiError::bad_request(format!(
            "`{name}` must be a positive integer, got {raw:?}"
        ))),
    }
}

async fn list_properties(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let page = parse_positive("page", params.page.as_deref(), 1, usize::MAX)?;
    let per_page = parse_positive(
        "per_page",
        params.per_page.as_deref(),
        DEFAULT_PER_PAGE,
        MAX_PER_PAGE,
    )?;
    let status = match params.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`status` must be one of available, leased, maintenance; got {s:?}"
            ))
        })?),
    };

    let (total, items) = {
        let store = state.read();
        let matching = || {
            store
                .properties
                .iter()
                .filter(|p| status.is_none() || status == Some(p.status))
        };
        let total = matching().count();
        let skip = (page - 1).saturating_mul(per_page);
        let items: Vec<Property> = matching().skip(skip).take(per_page).cloned().collect();
        (total, items)
    };
    let body = PropertyPage {
        page,
        per_page,
        total,
        total_pages: total.div_ceil(per_page),
        status,
        items,
    };
    Ok((
        [
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            ),
            (CACHE_TAG, HeaderValue::from_static(PROPERTIES_TAG)),
        ],
        Json(body),
    )
        .into_response())
}

fn parse_id(raw: &str, what: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "{what} id must be a non-negative integer, got {raw:?}"
        ))
    })
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 §13.1.2 asks).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

async fn get_property(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "property")?;
    let property = state
        .read()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("property {id} not found")))?;
    let etag = HeaderValue::from_str(&property.etag()).expect("an ETag is digits, '-' and quotes");
    let cache_control = HeaderValue::from_static("public, max-age=30");
    if if_none_match(&headers, &property.etag()) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(ETAG, etag), (CACHE_CONTROL, cache_control)],
        )
            .into_response());
    }
    Ok((
        [
            (ETAG, etag),
            (CACHE_CONTROL, cache_control),
            (CACHE_TAG, HeaderValue::from_static(PROPERTIES_TAG)),
        ],
        Json(property),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct NewProperty {
    name: String,
    city: String,
    status: String,
    monthly_rent: i64,
}

const MAX_TEXT_CHARS: usize = 200;
const MAX_RENT: i64 = 1_000_000;

/// Checks a new property; every problem is reported, not only the first.
fn validate(input: &NewProperty) -> Result<(String, String, Status, u32), ApiError> {
    let mut errors = Vec::new();
    let mut text = |field: &'static str, value: &str| {
        let value = value.trim();
        if value.is_empty() {
            errors.push(FieldError {
                field,
                message: "must not be empty".into(),
            });
        } else if value.chars().count() > MAX_TEXT_CHARS {
            errors.push(FieldError {
                field,
                message: format!("must be at most {MAX_TEXT_CHARS} characters"),
            });
        }
        value.to_owned()
    };
    let name = text("name", &input.name);
    let city = text("city", &input.city);
    let status = Status::parse(input.status.trim());
    if status.is_none() {
        errors.push(FieldError {
            field: "status",
            message: format!(
                "must be one of available, leased, maintenance; got {:?}",
                input.status
            ),
        });
    }
    if !(0..=MAX_RENT).contains(&input.monthly_rent) {
        errors.push(FieldError {
            field: "monthly_rent",
            message: format!("must be between 0 and {MAX_RENT}"),
        });
    }
    match (status, u32::try_from(input.monthly_rent)) {
        (Some(status), Ok(rent)) if errors.is_empty() => Ok((name, city, status, rent)),
        _ => Err(ApiError::validation(errors)),
    }
}

async fn create_property(
    State(state): State<AppState>,
    payload: Result<Json<NewProperty>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(input) = payload?;
    let (name, city, status, monthly_rent) = validate(&input)?;
    let property = {
        let mut store = state.write();
        let id = store.next_id;
        store.next_id += 1;
        let property = Property {
            id,
            description: format!("{name} in {city}, added through the API."),
            name,
            address: String::new(),
            postal_code: String::new(),
            city,
            status,
            monthly_rent,
            bedrooms: 0,
            bathrooms: 1,
            square_meters: 0,
            year_built: 0,
            amenities: Vec::new(),
            manager_email: "leasing@example-estates.com".into(),
            updated_at: unix_now(),
            version: 1,
        };
        store.properties.push(property.clone());
        property
    };
    tracing::info!(id = property.id, "property created");
    // Every cached list page (and item) derived from the data set is now out of date. The cache
    // already invalidated `POST`'s own URI and `Location` (RFC 9111 4.4); the tag covers the
    // rest: `?page=2`, `?status=leased`, ...
    state.layers.cache.purge_tags([PROPERTIES_TAG], true);
    let location = HeaderValue::from_str(&format!("/api/v1/properties/{}", property.id))
        .expect("a path of ASCII digits is a valid header value");
    let etag = HeaderValue::from_str(&property.etag()).expect("an ETag is digits, '-' and quotes");
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location), (ETAG, etag)],
        Json(property),
    )
        .into_response())
}

// ------------------------------------------------------------------------------------------------
// Dashboard
// ------------------------------------------------------------------------------------------------

/// How long the simulated dashboard query takes in the "database".
const DASHBOARD_QUERY_TIME: Duration = Duration::from_millis(50);

#[derive(Serialize)]
struct Dashboard {
    total_properties: usize,
    by_status: BTreeMap<&'static str, usize>,
    /// Leased / all properties.
    occupancy_rate: f64,
    average_rent_by_city: BTreeMap<String, f64>,
    top_cities_by_rent: Vec<CityRent>,
    generated_at: u64,
}

#[derive(Serialize)]
struct CityRent {
    city: String,
    average_rent: f64,
    properties: usize,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn aggregate(properties: &[Property]) -> Dashboard {
    let mut by_status: BTreeMap<&'static str, usize> =
        Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut rent_by_city: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for p in properties {
        *by_status.entry(p.status.as_str()).or_default() += 1;
        let city = rent_by_city.entry(p.city.as_str()).or_default();
        city.0 += u64::from(p.monthly_rent);
        city.1 += 1;
    }
    let mut cities: Vec<CityRent> = rent_by_city
        .into_iter()
        .map(|(city, (sum, n))| CityRent {
            city: city.to_owned(),
            average_rent: round2(sum as f64 / n as f64),
            properties: n,
        })
        .collect();
    let average_rent_by_city = cities
        .iter()
        .map(|c| (c.city.clone(), c.average_rent))
        .collect();
    cities.sort_by(|a, b| b.average_rent.total_cmp(&a.average_rent));
    cities.truncate(5);
    let total = properties.len();
    let leased = by_status.get("leased").copied().unwrap_or(0);
    Dashboard {
        total_properties: total,
        by_status,
        occupancy_rate: if total == 0 {
            0.0
        } else {
            round2(leased as f64 / total as f64 * 100.0) / 100.0
        },
        average_rent_by_city,
        top_cities_by_rent: cities,
        generated_at: unix_now(),
    }
}

async fn dashboard(State(state): State<AppState>, timings: Option<Extension<Timings>>) -> Response {
    let timings = timings.map(|Extension(t)| t);

    // The expensive part: a reporting query in a real database.
    let db = phase(timings.as_ref(), "db");
    tokio::time::sleep(DASHBOARD_QUERY_TIME).await;
    drop(db);

    let agg = phase(timings.as_ref(), "aggregate");
    let body = aggregate(&state.read().properties);
    drop(agg);

    (
        [
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=5, stale-while-revalidate=30"),
            ),
            // Derived from the property list: a write purges it with the list.
            (CACHE_TAG, HeaderValue::from_static(PROPERTIES_TAG)),
        ],
        Json(body),
    )
        .into_response()
}

// ------------------------------------------------------------------------------------------------
// CSV export
// ------------------------------------------------------------------------------------------------

const LEDGER_MONTHS: u64 = 24;
const LEDGER_HEADER: &str = "invoice_id,property_id,property_name,city,tenant_id,period,due_date,\
rent_due,late_fee,amount_paid,balance,currency,payment_method,payment_status,paid_on\n";
const PAYMENT_METHODS: [&str; 3] = ["bank_transfer", "direct_debit", "card"];

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn cents(out: &mut String, cents: u64) {
    let _ = write!(out, "{}.{:02}", cents / 100, cents % 100);
}

/// The 24 monthly ledger rows (January 2023 to December 2024) of one property.
fn ledger_rows(p: &Property) -> String {
    let mut out = String::with_capacity(LEDGER_MONTHS as usize * 180);
    for month in 0..LEDGER_MONTHS {
        let mut rng = SplitMix64::new(mix64(DATA_SEED ^ (p.id << 8) ^ month));
        let (year, mon) = (2023 + month / 12, month % 12 + 1);
        let tenant = p.id * 10 + month / 12;
        let vacant = p.status == Status::Available && month >= LEDGER_MONTHS - 4;
        let due = if vacant {
            0
        } else {
            u64::from(p.monthly_rent) * 100
        };
        let roll = rng.unit();
        let (late_fee, paid, status, paid_day) = if vacant {
            (0, 0, "vacant", None)
        } else if roll < 0.80 {
            (0, due, "paid", Some(rng.range(1, 5)))
        } else if roll < 0.92 {
            let fee = due / 20;
            (fee, due + fee, "paid_late", Some(rng.range(6, 28)))
        } else if roll < 0.97 {
            (
                0,
                due * rng.range(50, 90) / 100,
                "partial",
                Some(rng.range(1, 28)),
            )
        } else {
            (0, 0, "unpaid", None)
        };
        let _ = write!(out, "INV-{:06}-{year}{mon:02},{},", p.id, p.id);
        csv_field(&mut out, &p.name);
        out.push(',');
        csv_field(&mut out, &p.city);
        let _ = write!(out, ",T-{tenant:07},{year}-{mon:02},{year}-{mon:02}-01,");
        cents(&mut out, due);
        out.push(',');
        cents(&mut out, late_fee);
        out.push(',');
        cents(&mut out, paid);
        out.push(',');
        cents(&mut out, (due + late_fee).saturating_sub(paid));
        let method = if paid > 0 {
            *rng.pick(&PAYMENT_METHODS)
        } else {
            ""
        };
        let _ = write!(out, ",EUR,{method},{status},");
        if let Some(day) = paid_day {
            let _ = write!(out, "{year}-{mon:02}-{day:02}");
        }
        out.push('\n');
    }
    out
}

/// Streams the ledger one property (24 rows, a few KB) at a time: the whole file, about 4 MB, is
/// never in memory, and the read lock is held only while one chunk is formatted.
async fn export_ledger(State(state): State<AppState>) -> Response {
    let header =
        stream::once(async { Ok::<_, Infallible>(Bytes::from_static(LEDGER_HEADER.as_bytes())) });
    let rows = stream::unfold(0usize, move |index| {
        let state = state.clone();
        async move {
            let chunk = state.read().properties.get(index).map(ledger_rows)?;
            Some((Ok(Bytes::from(chunk)), index + 1))
        }
    });
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"ledger.csv\""),
            ),
        ],
        Body::from_stream(header.chain(rows)),
    )
        .into_response()
}

// ------------------------------------------------------------------------------------------------
// Payments: a simulated provider with adjustable faults
// ------------------------------------------------------------------------------------------------

const PAYMENTS_SEED: u64 = 0xFA_u64 << 40;
const MAX_FAULT_LATENCY_MS: u64 = 60_000;

/// How the payment provider misbehaves.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct FaultConfig {
    /// Share of calls that fail, 0.0 to 1.0.
    failure_rate: f64,
    /// Latency added to every call.
    latency_ms: u64,
}

struct PaymentProvider {
    fault: RwLock<FaultConfig>,
    rng: AtomicRng,
}

#[derive(Debug)]
enum ProviderError {
    Unavailable,
}

#[derive(Serialize)]
struct PaymentStatus {
    payment_id: u64,
    status: &'static str,
    amount: String,
    currency: &'static str,
    provider_latency_ms: f64,
}

impl PaymentProvider {
    fn new(seed: u64) -> Self {
        Self {
            fault: RwLock::new(FaultConfig::default()),
            rng: AtomicRng(AtomicU64::new(seed)),
        }
    }

    fn fault(&self) -> FaultConfig {
        *self.fault.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_fault(&self, fault: FaultConfig) {
        *self.fault.write().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// One call to the provider: a few milliseconds of network, plus the configured latency, and
    /// the configured share of failures. The payment's own status depends on its id only.
    async fn status(&self, payment_id: u64) -> Result<PaymentStatus, ProviderError> {
        let fault = self.fault();
        let start = Instant::now();
        let network = 2 + (self.rng.unit() * 8.0) as u64;
        tokio::time::sleep(Duration::from_millis(network + fault.latency_ms)).await;
        if self.rng.unit() < fault.failure_rate {
            return Err(ProviderError::Unavailable);
        }
        let bits = mix64(payment_id ^ PAYMENTS_SEED);
        let status = match bits % 10 {
            0..=6 => "settled",
            7 | 8 => "pending",
            _ => "declined",
        };
        let amount_cents = 50_000 + (bits >> 8) % 250_000;
        Ok(PaymentStatus {
            payment_id,
            status,
            amount: format!("{}.{:02}", amount_cents / 100, amount_cents % 100),
            currency: "EUR",
            provider_latency_ms: start.elapsed().as_micros() as f64 / 1e3,
        })
    }
}

async fn payment_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    timings: Option<Extension<Timings>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "payment")?;
    let timings = timings.map(|Extension(t)| t);
    let call = phase(timings.as_ref(), "provider");
    let result = state.payments.status(id).await;
    drop(call);
    match result {
        Ok(status) => Ok(Json(status).into_response()),
        Err(ProviderError::Unavailable) => {
            tracing::warn!(payment_id = id, "payment provider failed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "payment provider unavailable",
            ))
        }
    }
}

async fn get_fault(State(state): State<AppState>) -> Json<FaultConfig> {
    Json(state.payments.fault())
}

async fn put_fault(
    State(state): State<AppState>,
    payload: Result<Json<FaultConfig>, JsonRejection>,
) -> Result<Json<FaultConfig>, ApiError> {
    let Json(fault) = payload?;
    let mut errors = Vec::new();
    if !(0.0..=1.0).contains(&fault.failure_rate) {
        errors.push(FieldError {
            field: "failure_rate",
            message: "must be between 0.0 and 1.0".into(),
        });
    }
    if fault.latency_ms > MAX_FAULT_LATENCY_MS {
        errors.push(FieldError {
            field: "latency_ms",
            message: format!("must be at most {MAX_FAULT_LATENCY_MS}"),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    state.payments.set_fault(fault);
    tracing::info!(
        failure_rate = fault.failure_rate,
        latency_ms = fault.latency_ms,
        "payment provider fault changed"
    );
    Ok(Json(fault))
}

// ------------------------------------------------------------------------------------------------
// Operations: stats, metrics, health
// ------------------------------------------------------------------------------------------------

/// Body of `POST /admin/cache/purge`: tags, a URI (path and query) and/or a path prefix.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    tags: Vec<String>,
    uri: Option<String>,
    prefix: Option<String>,
    /// `false`: mark stale (served stale while refreshed) instead of removing. Default: true.
    #[serde(default = "yes")]
    hard: bool,
}

fn yes() -> bool {
    true
}

async fn purge_cache(
    State(state): State<AppState>,
    payload: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = payload?;
    if req.tags.is_empty() && req.uri.is_none() && req.prefix.is_none() {
        return Err(ApiError::bad_request(
            "give at least one of `tags`, `uri` or `prefix`",
        ));
    }
    for value in req.uri.iter().chain(req.prefix.iter()) {
        if !value.starts_with('/') || value.len() > 2048 {
            return Err(ApiError::bad_request(format!(
                "`uri` and `prefix` are paths starting with '/', got {value:?}"
            )));
        }
    }
    if req.tags.len() > 100 || req.tags.iter().any(|t| t.is_empty() || t.len() > 200) {
        return Err(ApiError::bad_request(
            "`tags`: 1 to 100 tags of 1 to 200 characters",
        ));
    }
    let cache = &state.layers.cache;
    if !req.tags.is_empty() {
        cache.purge_tags(&req.tags, req.hard);
    }
    if let Some(uri) = &req.uri {
        cache.purge_uri(uri, req.hard);
    }
    if let Some(prefix) = &req.prefix {
        cache.purge_prefix(prefix, req.hard);
    }
    tracing::info!(tags = ?req.tags, uri = ?req.uri, prefix = ?req.prefix, hard = req.hard, "cache purged");
    Ok(Json(json!({
        "purged": { "tags": req.tags, "uri": req.uri, "prefix": req.prefix, "hard": req.hard },
        "cache": cache.snapshot(),
    }))
    .into_response())
}

async fn admin_stats(State(state): State<AppState>) -> Response {
    let layers = &state.layers;
    Json(json!({
        // Per-route latency percentiles (sliding window and since start).
        "latency": layers.slow.snapshot(),
        // The most recent slow requests, newest first, with their phases and request ids.
        "slow_requests": layers.slow.slow_requests(),
        // Hits, misses, stale, entries, bytes, hit ratio, evictions.
        "cache": layers.cache.snapshot(),
        // Every circuit breaker (one per route) with its state and window figures.
        "breakers": layers.breakers.snapshot(),
        // Concurrency limit, in flight, queue lengths, waits and outcomes per priority class.
        "queue": layers.queue.snapshot(),
        // Allowed, limited and bypassed requests; clients tracked.
        "rate_limiter": layers.rate_limit.stats(),
        // Load tier, level and reason per coding, bytes in/out, measured ns per byte.
        "compression": layers.compression.snapshot(),
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

async fn ready(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "ready": true,
        "properties": state.read().properties.len(),
    }))
}

async fn alive() -> Json<serde_json::Value> {
    Json(json!({ "alive": true }))
}
