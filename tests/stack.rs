//! Every layer together, in the order of the design (tracker, rate limit, cache, queue,
//! compression, breaker), as one `ServiceBuilder` inside an axum `Router`, against a real server
//! on loopback with a real client (no decompression in the client: bodies are decoded here with
//! flate2). Checks the contracts between the layers: the cache stores compressed variants so a
//! hit costs no compression, the rate limit answers before the cache, a queue or breaker
//! rejection becomes a stale hit, and the tracker's `Server-Timing` carries the inner layers'
//! phases (queue wait, compression). Paused clock.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{client, serve, settle};
use tower::ServiceBuilder;
use tower_perf::breaker::CircuitBreakerLayer;
use tower_perf::cache::{CacheHandle, ResponseCacheLayer};
use tower_perf::compression::{AdaptiveCompressionLayer, CompressionHandle};
use tower_perf::queue::PriorityQueueLayer;
use tower_perf::rate_limit::{Quota, RateLimitLayer};
use tower_perf::slow::SlowRequestLayer;
use tower_perf::Priority;

fn document() -> String {
    let mut s = String::from("[");
    for i in 0..300 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{i},\"city\":\"Lisbon\",\"rent\":{}}}",
            900 + i
        ));
    }
    s.push(']');
    s
}

struct App {
    base: String,
    cache: CacheHandle,
    compression: CompressionHandle,
    /// Calls of `/data` that reached the handler.
    data_calls: Arc<AtomicUsize>,
    /// Make `/data` fail with 500.
    failing: Arc<AtomicUsize>,
}

async fn app(rate_per_second: u32) -> App {
    let data_calls = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicUsize::new(0));
    let doc = document();
    let (calls, fail) = (data_calls.clone(), failing.clone());
    let routes = Router::new()
        .route(
            "/data",
            get(move || {
                let (calls, fail, doc) = (calls.clone(), fail.clone(), doc.clone());
                async move {
                    calls.fetch_add(1, SeqCst);
                    let status = if fail.load(SeqCst) > 0 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    };
                    (
                        status,
                        [
                            ("content-type", "application/json"),
                            ("cache-control", "public, max-age=10, stale-if-error=600"),
                        ],
                        doc,
                    )
                }
            }),
        )
        .route(
            "/wait",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "done"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "slow"
            }),
        );
    let cache = ResponseCacheLayer::builder().build().unwrap();
    let compression = AdaptiveCompressionLayer::builder()
        .adaptive(false)
        .build()
        .unwrap();
    let (cache_handle, compression_handle) = (cache.handle(), compression.handle());
    let stack = ServiceBuilder::new()
        .layer(SlowRequestLayer::new())
        .layer(
            RateLimitLayer::new(Quota::per_second(rate_per_second).burst(rate_per_second)).unwrap(),
        )
        .layer(cache)
        .layer(
            PriorityQueueLayer::builder()
                .limit(1)
                .route("/slow", Priority::Low)
                .max_wait(Priority::Normal, Duration::from_millis(100))
                .build()
                .unwrap(),
        )
        .layer(compression)
        .layer(
            CircuitBreakerLayer::builder()
                .count_window(4)
                .minimum_calls(2)
                .failure_rate(0.5)
                .build()
                .unwrap(),
        )
        .into_inner();
    let addr = serve(routes.layer(stack)).await;
    App {
        base: format!("http://{addr}"),
        cache: cache_handle,
        compression: compression_handle,
        data_calls,
        failing,
    }
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn get_gzip(url: String) -> Reply {
    let res = client()
        .get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    Reply {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.bytes().await.expect("body").to_vec(),
    }
}

fn gunzip(data: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut out)
        .expect("gzip");
    out
}

/// Responses the compression layer has handled with gzip (compressed at some level).
fn compressions(h: &CompressionHandle) -> u64 {
    h.snapshot()
        .encodings
        .iter()
        .find(|e| e.encoding == "gzip")
        .map_or(0, |e| e.responses)
}

#[tokio::test(start_paused = true)]
async fn the_cache_stores_the_compressed_variant_and_a_hit_costs_no_compression() {
    let app = app(1000).await;
    let first = get_gzip(format!("{}/data", app.base)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&first.body), document());
    assert!(first.header("cache-status").contains("stored"));
    assert!(
        first.header("ratelimit").contains("r="),
        "rate-limit headers on allowed responses"
    );
    // The cache's lookup is a phase of the tracker outside (the queue adds one when a request
    // waits; compression time is known only at the end of the body, after the header went).
    let timing = first.header("server-timing");
    assert!(timing.contains("cache;dur="), "{timing}");
    assert!(timing.contains("total;dur="), "{timing}");
    let compressed = compressions(&app.compression);
    assert_eq!(compressed, 1);

    let second = get_gzip(format!("{}/data", app.base)).await;
    assert!(second.header("cache-status").contains("hit"));
    assert_eq!(second.body, first.body, "the stored gzip bytes");
    assert_eq!(
        compressions(&app.compression),
        compressed,
        "no compression on a hit"
    );
    assert_eq!(app.data_calls.load(SeqCst), 1);
    assert_eq!(app.cache.snapshot().hits, 1);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_answers_before_the_cache() {
    let app = app(2).await;
    for _ in 0..2 {
        assert_eq!(get_gzip(format!("{}/data", app.base)).await.status, 200);
    }
    let limited = get_gzip(format!("{}/data", app.base)).await;
    assert_eq!(limited.status, 429);
    assert!(!limited.header("retry-after").is_empty());
    assert_eq!(
        app.cache.snapshot().hits,
        1,
        "the third request never reached the cache"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queue_rejection_becomes_a_stale_hit() {
    let app = app(1000).await;
    get_gzip(format!("{}/data", app.base)).await;
    tokio::time::advance(Duration::from_secs(11)).await; // stale now
                                                         // The only permit is taken by a slow request.
    let slow = tokio::spawn(get_gzip(format!("{}/slow", app.base)));
    settle().await;
    let stale = get_gzip(format!("{}/data", app.base)).await;
    assert_eq!(stale.status, 200, "served stale instead of the queue's 503");
    assert!(
        stale.header("cache-status").contains("stale-if-error")
            || stale.header("cache-status").contains("fwd-status=503"),
        "{}",
        stale.header("cache-status")
    );
    assert_eq!(gunzip(&stale.body), document());
    assert_eq!(
        app.data_calls.load(SeqCst),
        1,
        "the handler was not reached"
    );
    slow.abort();
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_becomes_a_stale_hit() {
    let app = app(1000).await;
    get_gzip(format!("{}/data", app.base)).await;
    app.failing.store(1, SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await; // stale now
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = get_gzip(format!("{}/data", app.base)).await;
        statuses.push((r.status, r.header("cache-status").to_owned()));
        assert_eq!(
            gunzip(&r.body),
            document(),
            "every answer is the stored document"
        );
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    // One good call, one failure: 50% of 2 calls opens the breaker, whose 503s never reach
    // the handler and become stale hits.
    let calls = app.data_calls.load(SeqCst);
    assert_eq!(
        calls, 2,
        "the open breaker kept later requests from the handler ({calls} calls): {statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_queue_wait_shows_in_server_timing() {
    let app = app(1000).await;
    // Two URLs, so the cache does not coalesce them: both reach the queue, whose one permit
    // makes the second wait for the first.
    let first = tokio::spawn(get_gzip(format!("{}/wait?n=1", app.base)));
    settle().await;
    let second = get_gzip(format!("{}/wait?n=2", app.base)).await;
    assert_eq!(second.status, 200);
    let timing = second.header("server-timing");
    let queue_ms: f64 = timing
        .split(", ")
        .find_map(|m| m.strip_prefix("queue;dur="))
        .unwrap_or_else(|| panic!("a queue phase: {timing}"))
        .parse()
        .expect("a number");
    assert!(
        (49.0..=51.0).contains(&queue_ms),
        "waited for the first request's 50 ms: {timing}"
    );
    assert_eq!(first.await.unwrap().status, 200);
}

// ---------------------------------------------------------------------------------------------
// PerfStack: the same stack from one configuration
// ---------------------------------------------------------------------------------------------

use tower_perf::stack::{PerfConfig, PerfStack};

fn data_router() -> Router {
    let doc = document();
    Router::new().route(
        "/data",
        get(move || {
            let doc = doc.clone();
            async move {
                (
                    [
                        ("content-type", "application/json"),
                        ("cache-control", "public, max-age=10"),
                    ],
                    doc,
                )
            }
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn a_stack_from_configuration_serves_compressed_hits() {
    let config: PerfConfig = serde_json::from_str(
        r#"{
            "slow": { "threshold_ms": 250 },
            "rate_limit": { "per_second": 100 },
            "cache": { "max_mb": 16, "grace_secs": 30 },
            "queue": { "limit": 8 },
            "breaker": { "minimum_calls": 5 }
        }"#,
    )
    .expect("valid JSON");
    let stack = PerfStack::from_config(&config).expect("valid configuration");
    let handles = stack.handles();
    let base = format!("http://{}", serve(data_router().layer(stack)).await);

    let first = get_gzip(format!("{base}/data")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&first.body), document());
    assert!(
        first.header("ratelimit-policy").contains("q=100"),
        "{:?}",
        first.headers
    );
    assert!(first.header("server-timing").contains("total;dur="));
    let second = get_gzip(format!("{base}/data")).await;
    assert!(second.header("cache-status").contains("hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(handles.cache.snapshot().hits, 1);
    assert_eq!(compressions(&handles.compression), 1);
    assert_eq!(handles.queue.snapshot().limit, 8);
    assert_eq!(handles.rate_limit.stats().allowed, 2);
    assert_eq!(handles.slow.snapshot().routes.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_rate_limit_section_nothing_is_limited() {
    let stack = PerfStack::builder().build().expect("defaults");
    let base = format!("http://{}", serve(data_router().layer(stack)).await);
    for _ in 0..50 {
        let r = get_gzip(format!("{base}/data")).await;
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit").is_empty(), "no quota, no headers");
    }
}

#[test]
fn bad_configuration_names_the_section_and_the_field() {
    let section = |json: &str| {
        let config: PerfConfig = serde_json::from_str(json).expect("valid JSON");
        let err = PerfStack::from_config(&config).expect_err("refused");
        (err.field(), err.reason().to_owned())
    };
    assert_eq!(section(r#"{"slow": {"threshold_ms": 0}}"#).0, "slow");
    assert_eq!(
        section(r#"{"rate_limit": {"per_second": 0}}"#).0,
        "rate_limit"
    );
    let (field, reason) = section(r#"{"cache": {"max_mb": 0}}"#);
    assert_eq!(field, "cache");
    assert!(reason.contains("max_bytes"), "{reason}");
    assert_eq!(section(r#"{"queue": {"limit": 0}}"#).0, "queue");
    assert_eq!(
        section(r#"{"compression": {"cpu_budget": 7.0}}"#).0,
        "compression"
    );
    assert_eq!(
        section(r#"{"breaker": {"failure_rate": 2.0}}"#).0,
        "breaker"
    );
    // Unknown fields are refused by serde, with their name.
    let err = serde_json::from_str::<PerfConfig>(r#"{"cache": {"max_megabytes": 1}}"#)
        .expect_err("unknown field");
    assert!(err.to_string().contains("max_megabytes"), "{err}");
}
