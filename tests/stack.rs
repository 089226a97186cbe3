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
                .route_priority("/slow", Priority::Low)
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
    // Not said `stored`: the compressed body's length is unknown when the header goes out, and
    // the cache says it only when it cannot fail (the next request's hit shows it was).
    assert!(first.header("cache-status").contains("fwd=uri-miss"));
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
    assert_eq!(handles.rate_limit.snapshot().allowed, 2);
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
fn bad_configuration_names_the_configuration_key() {
    let key = |json: &str| {
        let config: PerfConfig = serde_json::from_str(json).expect("valid JSON");
        let err = PerfStack::from_config(&config).expect_err("refused");
        assert!(err.to_string().contains(err.field()), "{err}");
        err.field()
    };
    assert_eq!(key(r#"{"slow": {"threshold_ms": 0}}"#), "slow.threshold_ms");
    assert_eq!(
        key(r#"{"rate_limit": {"per_second": 0}}"#),
        "rate_limit.per_second"
    );
    assert_eq!(
        key(r#"{"rate_limit": {"per_second": 5, "burst": 0}}"#),
        "rate_limit.burst"
    );
    assert_eq!(key(r#"{"cache": {"max_mb": 0}}"#), "cache.max_mb");
    assert_eq!(
        key(r#"{"cache": {"max_mb": 1, "max_entry_kb": 1024}}"#),
        "cache.max_entry_kb"
    );
    assert_eq!(key(r#"{"queue": {"limit": 0}}"#), "queue.limit");
    assert_eq!(
        key(r#"{"queue": {"class_share": {"low": 1.5}}}"#),
        "queue.class_share"
    );
    assert_eq!(
        key(r#"{"queue": {"saturation": {"enter_ms": 2, "exit_ms": 3}}}"#),
        "queue.saturation"
    );
    assert_eq!(
        key(r#"{"compression": {"cpu_budget": 7.0}}"#),
        "compression.cpu_budget"
    );
    assert_eq!(
        key(r#"{"breaker": {"failure_rate": 2.0}}"#),
        "breaker.failure_rate"
    );
    // Unknown fields are refused by serde, with their name.
    let err = serde_json::from_str::<PerfConfig>(r#"{"cache": {"max_megabytes": 1}}"#)
        .expect_err("unknown field");
    assert!(err.to_string().contains("max_megabytes"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn route_priorities_and_limited_paths_come_from_the_configuration() {
    let config: PerfConfig = toml::from_str(
        r#"
        [rate_limit]
        per_second = 1
        path_prefixes = ["/api/"]
        [queue]
        limit = 1
        route_priority = { "/api/*" = "critical", "/data" = "low" }
        "#,
    )
    .expect("valid TOML");
    let stack = PerfStack::from_config(&config).expect("valid configuration");
    let handles = stack.handles();
    let routes = data_router().route("/api/ping", get(|| async { "pong" }));
    let base = format!("http://{}", serve(routes.layer(stack)).await);

    // `/data` is outside the limited paths: never limited, never counted.
    for _ in 0..3 {
        let r = get_gzip(format!("{base}/data")).await;
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit").is_empty());
    }
    assert_eq!(get_gzip(format!("{base}/api/ping")).await.status, 200);
    assert_eq!(get_gzip(format!("{base}/api/ping")).await.status, 429);

    let queue = handles.queue.snapshot();
    assert_eq!(queue.class(Priority::Low).admitted, 1, "one miss of /data");
    assert_eq!(queue.class(Priority::Critical).admitted, 1, "/api/ping");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn one_redis_link_gives_the_cache_its_tier_and_the_rate_limit_its_shared_quotas() {
    use common::redis::RedisServer;
    use tower_perf::redis::RedisLink;

    let redis = RedisServer::start();
    // Two instances on two ports: one origin for the cache.
    let config: PerfConfig =
        toml::from_str("[rate_limit]\nper_second = 1\nburst = 2\n[cache]\nignore_host = true\n")
            .expect("valid TOML");
    let mut instances = Vec::new();
    for _ in 0..2 {
        let link = RedisLink::builder()
            .url(redis.url())
            .key_prefix("stack-test")
            .build()
            .expect("link");
        assert!(link.connect(Duration::from_secs(5)).await, "connected");
        let stack = PerfStack::builder()
            .config(config.clone())
            .redis(link)
            .build()
            .expect("valid configuration");
        let handles = stack.handles();
        let addr = common::serve_with_peer(data_router().layer(stack)).await;
        instances.push((format!("http://{addr}"), handles));
    }
    let (a, ha) = &instances[0];
    let (b, _) = &instances[1];

    assert_eq!(get_gzip(format!("{a}/data")).await.status, 200);
    let stored = async {
        while ha.cache.snapshot().redis.expect("a Redis tier").stores == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), stored)
        .await
        .expect("stored in Redis");
    // The second instance: the entry from Redis, and the second of the burst of 2 shared
    // with the first instance; the third request of the client is over the quota.
    let from_redis = get_gzip(format!("{b}/data")).await;
    assert_eq!(from_redis.status, 200);
    assert_eq!(gunzip(&from_redis.body), document());
    assert!(
        from_redis.header("cache-status").contains("hit"),
        "{}",
        from_redis.header("cache-status")
    );
    assert_eq!(get_gzip(format!("{b}/data")).await.status, 429);
}

/// `queue.class_share`, `queue.pacing` and `queue.saturation` reach the queue: low holds at most
/// its share of the limit, and the snapshot reports the signal.
#[test]
fn queue_shares_and_the_saturation_signal_come_from_the_configuration() {
    let config: PerfConfig = toml::from_str(
        r#"
        [queue]
        limit = 8
        pacing = true
        class_share = { low = 0.25 }
        saturation = { interval_ms = 20 }
        "#,
    )
    .expect("valid TOML");
    let queue = PerfStack::from_config(&config)
        .expect("valid configuration")
        .handles()
        .queue
        .snapshot();
    assert_eq!(queue.class(Priority::Low).max_in_flight, 2);
    assert_eq!(queue.class(Priority::Normal).max_in_flight, 8);
    assert!(!queue.saturated);
}

/// The configuration files of the examples build a stack (the demo's and the minimal one).
#[test]
fn the_example_configurations_build() {
    for file in ["examples/demo.toml", "examples/minimal.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("the file");
        let config: PerfConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        PerfStack::from_config(&config).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
