//! The tower-perf stack of the demo: a [`PerfStack`] from `examples/demo.toml` (or
//! `DEMO_CONFIG`), the environment's overrides applied, with the Redis link of `REDIS_URL`.

use std::net::SocketAddr;
#[cfg(feature = "redis")]
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_perf::cache::CacheHandle;
use tower_perf::console::{is_admin, AdminAuthLayer};
use tower_perf::stack::{PerfConfig, PerfStack, RateLimitConfig};
use tracing::{Level, Span};

use crate::Env;

/// The configuration file, with `SLOW_THRESHOLD_MS`, `CACHE_MAX_MB`, `RATE_LIMIT_RPS` and
/// `RATE_LIMIT_BURST` applied over it. Errors name the file.
pub(crate) fn config(env: &Env) -> Result<PerfConfig, String> {
    let path = env.config_path.display();
    let text = std::fs::read_to_string(&env.config_path)
        .map_err(|e| format!("cannot read {path} (set DEMO_CONFIG to another file): {e}"))?;
    let mut config: PerfConfig = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    if let Some(ms) = env.slow_threshold_ms {
        config.slow.threshold_ms = ms;
    }
    if let Some(mb) = env.cache_max_mb {
        config.cache.max_mb = mb;
    }
    if env.rate_limit_rps.is_some() || env.rate_limit_burst.is_some() {
        // The variables alone make a quota when the file has none.
        let quota = config.rate_limit.get_or_insert_with(|| RateLimitConfig {
            per_second: 100,
            burst: None,
            name: None,
            path_prefixes: vec!["/api/".to_owned()],
            trusted_proxies: Vec::new(),
            max_keys: None,
            headers_on_allowed: true,
        });
        if let Some(rps) = env.rate_limit_rps {
            quota.per_second = rps;
        }
        if let Some(burst) = env.rate_limit_burst {
            quota.burst = Some(burst);
        }
    }
    Ok(config)
}

/// The stack from `config`; with `redis_url`, one Redis link gives the cache its shared tier and
/// the rate limiter its shared quotas. The link connects in the background: until Redis
/// answers, the layers go on without it.
pub(crate) async fn build(
    config: &PerfConfig,
    redis_url: Option<&str>,
) -> Result<PerfStack, String> {
    // Administrators (authenticated by `AdminAuthLayer` in `around`) are not rate-limited.
    let builder = PerfStack::builder()
        .config(config.clone())
        .rate_limit_bypass_with(is_admin);
    #[cfg(feature = "redis")]
    let builder = match redis_url {
        Some(url) => {
            let link = tower_perf::redis::RedisLink::builder()
                .url(url)
                .key_prefix("tower-perf-demo")
                .build()
                .map_err(|e| format!("REDIS_URL: {e}"))?;
            // Not required, but the warm-up then fills the shared tier too.
            if !link.connect(Duration::from_secs(2)).await {
                tracing::warn!("Redis is not answering yet; serving from memory until it does");
            }
            builder.redis(link)
        }
        None => builder,
    };
    #[cfg(not(feature = "redis"))]
    let _ = redis_url; // refused in `Env::read`
    builder.build().map_err(|e| e.to_string())
}

/// `router` inside the stack, and outside it the request ids and the request log; then
/// `console` beside it, and `auth` around both (outermost, so every `/admin/*` route is
/// protected and administrators are marked before the rate limiter looks).
///
/// `Router::layer` puts the layers *after* routing, so they see axum's `MatchedPath` and report
/// per route template (`/api/v1/properties/{id}`), never per raw path.
///
/// With `tower_limit` (`DEMO_TOWER_LIMIT`), tower's `ConcurrencyLimit` of that many requests
/// and `LoadShed` (`503` + `Retry-After` when it is full) go around the stack, as a user of
/// tower alone would admit requests: the peer `examples/overload_flood` compares with.
pub(crate) fn around(
    router: Router,
    console: Router,
    stack: PerfStack,
    auth: AdminAuthLayer,
    tower_limit: Option<usize>,
) -> Router {
    let router = router.layer(stack);
    let router = match tower_limit {
        Some(limit) => router.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "1")],
                    )
                }))
                .layer(LoadShedLayer::new())
                .layer(ConcurrencyLimitLayer::new(limit)),
        ),
        None => router,
    };
    // Inside them, the slow-request tracker, rate limit, cache, priority queue, compression,
    // circuit breaker, outermost first (see `tower_perf::stack`).
    let app = router.layer(
        ServiceBuilder::new()
            // Request ids first, so every layer below (and the tracker's slow log) sees one.
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
            .into_inner(),
    );
    app.merge(console).layer(auth)
}

/// Fills the cache with the first list pages and the dashboard, through the whole stack, so the
/// first visitors get hits. (The cache ignores the host here; the requests carry one anyway, as
/// real ones do.)
pub(crate) async fn warm_cache(cache: CacheHandle, router: Router, addr: SocketAddr) {
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
