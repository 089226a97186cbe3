//! Operations: who is an administrator (`ADMIN_TOKEN`), `/admin/stats` (every layer's
//! snapshot), `/admin/cache/purge`, `/metrics` and the health checks.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tower_perf::breaker::State as BreakerState;
use tower_perf::console::AdminAuthLayer;

use crate::routes::{ApiError, AppState};

/// Every `/admin/*` route (the console included) needs `Authorization: Bearer $ADMIN_TOKEN`
/// (or the token as the Basic password, for a browser); without `ADMIN_TOKEN`, loopback clients
/// only. The error names the variable.
pub(crate) fn auth_from_env() -> Result<AdminAuthLayer, String> {
    let token = match std::env::var("ADMIN_TOKEN") {
        Ok(token) => Some(token),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("invalid ADMIN_TOKEN: not valid UTF-8".into())
        }
    };
    AdminAuthLayer::from_option(token).map_err(|e| format!("invalid ADMIN_TOKEN: {e}"))
}

/// The start-up line about who may use the admin routes.
pub(crate) fn auth_notice(auth: &AdminAuthLayer) -> &'static str {
    if auth.has_token() {
        "admin: /admin/* (console at /admin/console) needs `Authorization: Bearer $ADMIN_TOKEN`"
    } else {
        "admin: ADMIN_TOKEN is not set, so /admin/* (console at /admin/console) answers \
         loopback clients only; set ADMIN_TOKEN before listening on another address"
    }
}

/// Body of `POST /admin/cache/purge`: tags, a URI (path and query) and/or a path prefix.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
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

pub(crate) async fn purge_cache(
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

pub(crate) async fn admin_stats(State(state): State<AppState>) -> Response {
    let layers = &state.layers;
    Json(json!({
        // Per-route latency percentiles (sliding window and since start).
        "latency": layers.slow.snapshot(),
        // The most recent slow requests, newest first, with their phases and request ids.
        "slow_requests": layers.slow.slow_requests(),
        // Hits, misses, stale, entries, bytes, hit ratio, evictions.
        "cache": layers.cache.snapshot(),
        // Every circuit breaker (one per route) with its state and window figures.
        "breakers": layers.breaker.snapshot(),
        // Concurrency limit, in flight, queue lengths, waits and outcomes per priority class.
        "queue": layers.queue.snapshot(),
        // Allowed, limited and bypassed requests; clients tracked.
        "rate_limiter": layers.rate_limit.snapshot(),
        // Load tier, level and reason per coding, bytes in/out, measured ns per byte.
        "compression": layers.compression.snapshot(),
    }))
    .into_response()
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Each layer's state: breakers not closed, the Redis link (when there is one), queue
/// saturation. `degraded` when any of them is in trouble; always `200`, since the server still
/// answers (`/ready` is the can-serve signal).
pub(crate) async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let layers = &state.layers;
    let breakers = layers.breaker.snapshot().breakers;
    let keys = |s: BreakerState| -> Vec<&str> {
        breakers
            .iter()
            .filter(|b| b.state == s)
            .map(|b| b.key.as_str())
            .collect()
    };
    let (open, half_open) = (keys(BreakerState::Open), keys(BreakerState::HalfOpen));
    #[cfg(feature = "redis")]
    let redis =
        layers.cache.snapshot().redis.map(
            |r| json!({ "link_open": r.link.open, "listening": r.listening, "errors": r.errors }),
        );
    #[cfg(not(feature = "redis"))]
    let redis: Option<serde_json::Value> = None;
    let redis_down = redis.as_ref().is_some_and(|r| r["link_open"] == true);
    let q = layers.queue.snapshot();
    let saturated = q.in_flight >= q.limit;
    let degraded = !open.is_empty() || redis_down || q.overloaded;
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "uptime_s": state.started.elapsed().as_secs(),
        "breakers": { "open": open, "half_open": half_open, "tracked": breakers.len() },
        "redis": redis,
        "queue": {
            "limit": q.limit,
            "in_flight": q.in_flight,
            "waiting": q.queued,
            "saturated": saturated,
            "overloaded": q.overloaded,
        },
    }))
}

pub(crate) async fn ready(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "ready": true,
        "properties": state.read().properties.len(),
    }))
}

pub(crate) async fn alive() -> Json<serde_json::Value> {
    Json(json!({ "alive": true }))
}
