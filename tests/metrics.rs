//! The rendered Prometheus text of the tracker's metrics, compared with a golden file.
//!
//! Metric names, labels and help texts are public interface: dashboards and alerts depend on
//! them. Under a paused clock every duration is exact, so the whole text, bucket counts and sums
//! included, is deterministic. After a deliberate change, regenerate the file with
//! `UPDATE_SNAPSHOTS=1 cargo test --test metrics` and review the diff.
//!
//! This file holds a single test because a metrics recorder is global to the process.

mod common;

use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use common::{client, serve, settle};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower_perf::breaker::CircuitBreakerLayer;
use tower_perf::cache::ResponseCacheLayer;
use tower_perf::compression::AdaptiveCompressionLayer;
use tower_perf::metrics::HISTOGRAM_BUCKETS;
use tower_perf::queue::PriorityQueueLayer;
use tower_perf::rate_limit::{Quota, RateLimitLayer};
use tower_perf::slow::SlowRequestLayer;
use tower_perf::Priority;

async fn sleep_ms(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "done"
}

#[tokio::test(start_paused = true)]
async fn prometheus_text_is_stable() {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .unwrap();
    }
    let handle = builder.install_recorder().unwrap();

    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_millis(100))
        .build()
        .unwrap();
    let cache = ResponseCacheLayer::new();
    let cache_handle = cache.handle();
    let app = Router::new()
        .route("/items/{ms}", get(sleep_ms).post(sleep_ms))
        .route(
            "/fail",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/cached",
            get(|| async { ([("cache-control", "public, max-age=60")], "cached body") }),
        )
        .route(
            "/doc",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    format!("[{}]", "{\"id\":1,\"city\":\"Lisbon\"},".repeat(100)),
                )
            }),
        )
        .layer(CircuitBreakerLayer::new())
        // Fixed levels: the byte counters must not depend on the machine's load.
        .layer(
            AdaptiveCompressionLayer::builder()
                .adaptive(false)
                .build()
                .unwrap(),
        )
        .layer(
            PriorityQueueLayer::builder()
                .limit(8)
                .route_priority("/fail", Priority::Low)
                .build()
                .unwrap(),
        )
        .layer(cache)
        .layer(RateLimitLayer::new(Quota::per_second(1000)).unwrap())
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    for (method, path) in [
        ("GET", "/items/3"),
        ("GET", "/items/30"),
        ("GET", "/items/30"),
        ("GET", "/items/700"),
        ("POST", "/items/120"),
        ("GET", "/fail"),
        ("GET", "/no/such/route"),
        ("DELETE", "/no/such/route"),
        ("PURGE", "/items/1"),
        ("GET", "/cached"),
        ("GET", "/cached"),
    ] {
        client
            .request(method.parse().unwrap(), format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    for accept in ["gzip", "br, zstd", ""] {
        client
            .get(format!("http://{addr}/doc"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    // A client that leaves before the response head: counted with status 499.
    let canceled = client.get(format!("http://{addr}/items/5000")).send();
    assert!(tokio::time::timeout(Duration::from_millis(250), canceled)
        .await
        .is_err());
    drop(client);
    let mut rendered = String::new();
    for _ in 0..100 {
        settle().await;
        // Brings the cache's size gauges up to date (moka applies writes in batches).
        cache_handle.snapshot();
        rendered = handle.render();
        if rendered.contains("http_response_status_code=\"499\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let rendered = canonical(&rendered);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/prometheus.txt"
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &rendered).unwrap();
    }
    let expected =
        std::fs::read_to_string(path).expect("snapshot file; run with UPDATE_SNAPSHOTS=1");
    assert!(
        rendered == expected,
        "rendered metrics differ from {path}:\n{}",
        diff(&expected, &rendered)
    );
}

/// The exporter orders families and series by hash: sort them, keeping each family's `# HELP` and
/// `# TYPE` lines on top of its samples.
fn canonical(text: &str) -> String {
    let mut families: Vec<Vec<&str>> = text
        .split("\n\n")
        .map(|block| {
            let (mut comments, mut samples): (Vec<&str>, Vec<&str>) = block
                .lines()
                .filter(|l| !l.is_empty())
                .partition(|l| l.starts_with('#'));
            samples.sort_unstable();
            comments.append(&mut samples);
            comments
        })
        .filter(|f| !f.is_empty())
        .collect();
    families.sort();
    families
        .iter()
        .map(|f| f.join("\n") + "\n")
        .collect::<Vec<_>>()
        .join("\n")
}

fn diff(expected: &str, got: &str) -> String {
    let mut out = String::new();
    for l in expected.lines().filter(|l| !got.lines().any(|g| g == *l)) {
        out += &format!("- {l}\n");
    }
    for l in got.lines().filter(|l| !expected.lines().any(|e| e == *l)) {
        out += &format!("+ {l}\n");
    }
    out
}
