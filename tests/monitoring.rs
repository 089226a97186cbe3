//! The monitoring kit of `examples/monitoring/`, checked against the real tools.
//!
//! - `dashboards_are_well_formed`: the Grafana dashboards' structure (unique panel ids, the
//!   datasource variable on every panel and query, the instance variable in every expression)
//!   and that every metric name the dashboards and the alert rules reference is one the crate
//!   records ([`names::ALL`]) or one the demo records through `metrics-process`.
//! - `every_panel_has_data_and_the_breaker_alert_fires`: the demo server (the real binary,
//!   built by `cargo build --example demo_server` with this test's features) and a real
//!   Prometheus scraping it (Debian's `prometheus`; `scripts/test.sh` installs it), both on
//!   free loopback ports and stopped by PID. Traffic exercises every layer (checked through
//!   Prometheus: hits, misses, a purge, every coding, queue waits, ...); then every PromQL
//!   expression of every dashboard panel is evaluated through Prometheus's HTTP API and must
//!   return series, and the circuit-breaker alert must fire.
//!
//! The demo runs as its own process rather than as a router built in this test: the demo is an
//! example binary (its modules are no library), and running it whole checks what users run,
//! its metrics wiring (histogram buckets, process metrics, `/metrics`) included.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::demo::{eventually, free_port, start_demo, Proc};

use serde_json::Value;
use tower_perf::metrics::names;

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/monitoring");

/// The process metrics the demo records through `metrics-process` (its names, unprefixed).
const PROCESS_METRICS: [&str; 8] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// The shipped dashboards, as (file name, JSON).
fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(MONITORING).join("grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("examples/monitoring/grafana/dashboards")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("dashboard file");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "an overview and a per-layer dashboard");
    out
}

/// A panel that draws data (rows only group them).
struct Panel {
    dashboard: String,
    row: String,
    title: String,
    exprs: Vec<String>,
}

/// Every data panel of every dashboard, with the row it sits under.
fn panels() -> Vec<Panel> {
    let mut out = Vec::new();
    for (file, dash) in dashboards() {
        let mut row = String::new();
        for p in dash["panels"].as_array().expect("panels") {
            if p["type"] == "row" {
                row = p["title"].as_str().unwrap_or_default().to_owned();
                continue;
            }
            let exprs = p["targets"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| t["expr"].as_str().expect("expr").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            out.push(Panel {
                dashboard: file.clone(),
                row: row.clone(),
                title: p["title"].as_str().unwrap_or_default().to_owned(),
                exprs,
            });
        }
    }
    out
}

/// The metric names a PromQL expression selects: every identifier right before a `{`.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'{' {
            continue;
        }
        let start = bytes[..i]
            .iter()
            .rposition(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b':'))
            .map_or(0, |p| p + 1);
        if start < i {
            out.push(expr[start..i].to_owned());
        }
    }
    out
}

/// Whether `name` is a series of a metric the crate or the demo records (`up` is Prometheus's).
fn known_metric(name: &str) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    name == "up"
        || names::ALL.contains(&name)
        || names::ALL.contains(&base)
        || PROCESS_METRICS.contains(&name)
}

#[test]
fn dashboards_are_well_formed() {
    let ds_ref = |v: &Value| v["type"] == "prometheus" && v["uid"] == "${datasource}";
    for (file, dash) in dashboards() {
        let vars = dash["templating"]["list"].as_array().expect("templating");
        let var = |name: &str| vars.iter().find(|v| v["name"] == name);
        let ds = var("datasource").unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");
        let instance = var("instance").unwrap_or_else(|| panic!("{file}: no instance variable"));
        assert!(ds_ref(&instance["datasource"]), "{file}: instance variable");

        let mut ids = HashSet::new();
        for p in dash["panels"].as_array().expect("panels") {
            let id = p["id"].as_u64().expect("numeric panel id");
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            if p["type"] == "row" {
                continue;
            }
            let title = &p["title"];
            assert!(
                ds_ref(&p["datasource"]),
                "{file}: {title}: panel datasource"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title}: no query");
            for t in targets {
                assert!(
                    ds_ref(&t["datasource"]),
                    "{file}: {title}: query datasource"
                );
                let expr = t["expr"].as_str().expect("expr");
                assert!(
                    expr.contains("instance=~\"$instance\""),
                    "{file}: {title}: {expr} ignores the instance variable"
                );
                let metrics = metric_names(expr);
                assert!(!metrics.is_empty(), "{file}: {title}: no metric in {expr}");
                for m in metrics {
                    assert!(known_metric(&m), "{file}: {title}: unknown metric {m}");
                }
            }
        }
    }
    let rules = std::fs::read_to_string(Path::new(MONITORING).join("prometheus/alerts.yml"))
        .expect("alerts.yml");
    let referenced: BTreeSet<String> = metric_names(&rules).into_iter().collect();
    assert!(
        referenced.len() >= 8,
        "alert rules reference {referenced:?}"
    );
    for m in referenced {
        assert!(known_metric(&m), "alerts.yml: unknown metric {m}");
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(r#"sum(rate(a_total{x="1"}[1m])) / max(b{y=~"$i"}) > 0.5"#),
        ["a_total", "b"]
    );
    assert!(known_metric("http_server_request_duration_seconds_bucket"));
    assert!(!known_metric("tower_perf_no_such_metric_total"));
}

/// `names::ALL` holds every name of `names`, and the table of the `metrics` module docs lists
/// each of them (the docs users read to wire their own dashboards).
#[test]
fn every_metric_name_is_listed_and_documented() {
    let source = include_str!("../src/metrics.rs");
    let names_mod = &source[source.find("pub mod names").expect("mod names")..];
    let names_mod = &names_mod[..names_mod.find("pub mod labels").expect("mod labels")];
    let declared: Vec<&str> = names_mod
        .split("pub const ")
        .skip(1)
        .filter(|decl| !decl.starts_with("ALL"))
        .filter_map(|decl| decl.split('"').nth(1))
        .collect();
    assert_eq!(
        declared.len(),
        names::ALL.len(),
        "names::ALL misses one of {declared:?}"
    );
    let table: Vec<&str> = source
        .lines()
        .filter(|l| l.starts_with("//! | `"))
        .collect();
    for name in names::ALL {
        assert!(declared.contains(&name), "{name}");
        let quoted = format!("`{name}`");
        assert!(
            table
                .iter()
                .any(|row| row.split('|').nth(1).is_some_and(|c| c.contains(&quoted))),
            "{name} missing from the table of the metrics module docs"
        );
    }
}

/// The cache's hit ratio is over cacheable requests: a response that may not be stored
/// (`no-store`, `private`) is `uncacheable`, a request the cache does not handle is a bypass,
/// and neither is a miss (before, the demo's ratio read 0.0008 after a load).
#[tokio::test]
async fn cache_hit_ratio_counts_cacheable_requests_only() {
    use axum::routing::get;
    use tower_perf::cache::ResponseCacheLayer;

    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = axum::Router::new()
        .route(
            "/cached",
            get(|| async { ([("cache-control", "public, max-age=60")], "cached") })
                .post(|| async { "posted" }),
        )
        .route(
            "/no-store",
            get(|| async { ([("cache-control", "no-store")], "fresh every time") }),
        )
        .route(
            "/private",
            get(|| async { ([("cache-control", "private, max-age=60")], "yours") }),
        )
        .layer(cache);
    let addr = common::serve(app).await;
    let client = common::client();
    for path in [
        "/cached",
        "/cached",
        "/no-store",
        "/no-store",
        "/no-store",
        "/private",
    ] {
        common::get_text(&client, format!("http://{addr}{path}")).await;
    }
    let posted = client
        .post(format!("http://{addr}/cached"))
        .send()
        .await
        .expect("post");
    assert!(posted.status().is_success());
    handle.purge_tags(["nothing-tagged"], true);

    let stats = handle.snapshot();
    assert_eq!((stats.hits, stats.misses), (1, 1), "{stats:?}");
    assert_eq!((stats.uncacheable, stats.bypass), (4, 1), "{stats:?}");
    // The purge, and the POST's invalidation of /cached (RFC 9111 4.4).
    assert_eq!(stats.purges, 2, "{stats:?}");
    assert!((stats.hit_ratio - 0.5).abs() < 1e-9, "{stats:?}");
}

/// Starts Prometheus on a free port, scraping `target` every second, with the shipped alert
/// rules evaluated every second and their `for:` durations cut to 0s (so an alert is active at
/// its first evaluation).
async fn start_prometheus(client: &reqwest::Client, dir: &Path, target: &str) -> (Proc, String) {
    let rules = std::fs::read_to_string(Path::new(MONITORING).join("prometheus/alerts.yml"))
        .expect("alerts.yml");
    let rules: String = rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 0s\n", &l[..l.len() - l.trim_start().len()]),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(dir.join("alerts.yml"), rules).expect("write rules");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
         scrape_configs:\n  - job_name: tower-perf\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus on PATH (scripts/test.sh installs Debian's package)");
    let mut prom = Proc {
        name: "prometheus",
        child,
    };
    let base = format!("http://127.0.0.1:{port}");
    prom.wait_until_ok(client, &format!("{base}/-/ready")).await;
    (prom, base)
}

/// Sends `n` requests at once and reads their bodies; the statuses they got.
async fn burst(
    client: &reqwest::Client,
    n: usize,
    url: &str,
    headers: &[(&str, &str)],
) -> Vec<u16> {
    let reqs = (0..n).map(|_| {
        let mut req = client.get(url).timeout(Duration::from_secs(30));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let res = req.send().await.expect("request");
            let status = res.status().as_u16();
            res.bytes().await.expect("body");
            status
        }
    });
    futures_util::future::join_all(reqs).await
}

/// Traffic through every layer: cache hits and misses, uncacheable responses, a purge,
/// compression in every coding, slow requests, queue waits, a breaker opening, rate-limit
/// rejections.
async fn drive_traffic(client: &reqwest::Client, base: &str) {
    let page = format!("{base}/api/v1/properties?page=7");
    for coding in ["zstd", "br", "gzip", "deflate", "identity"] {
        burst(client, 2, &page, &[("accept-encoding", coding)]).await;
        burst(
            client,
            2,
            &format!("{base}/api/v1/properties/42"),
            &[("accept-encoding", coding)],
        )
        .await;
    }
    let export = burst(
        client,
        1,
        &format!("{base}/api/v1/reports/export"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(export, [200]);
    let purge = client
        .post(format!("{base}/admin/cache/purge"))
        .json(&serde_json::json!({ "tags": ["properties"] }))
        .send()
        .await
        .expect("purge");
    assert!(purge.status().is_success(), "purge: {}", purge.status());
    burst(client, 2, &page, &[]).await;

    // Slow requests: the 50 ms dashboard past the cache (the demo's slow threshold is 10 ms).
    let dashboards = burst(
        client,
        20,
        &format!("{base}/api/v1/dashboard"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert!(dashboards.iter().all(|s| *s == 200), "{dashboards:?}");
    make_queue_waits(client, base).await;
    open_payments_breaker(client, base).await;

    // Past the quota (100/s, burst 200): 429s.
    let limited = burst(client, 400, &format!("{base}/api/v1/properties/1"), &[]).await;
    assert!(limited.contains(&429), "no rate-limit rejection");
}

/// Sets how the demo's payment provider misbehaves.
async fn set_fault(client: &reqwest::Client, base: &str, failure_rate: f64, latency_ms: u64) {
    let fault = client
        .put(format!("{base}/admin/payments/fault"))
        .json(&serde_json::json!({ "failure_rate": failure_rate, "latency_ms": latency_ms }))
        .send()
        .await
        .expect("fault");
    assert!(fault.status().is_success(), "fault: {}", fault.status());
}

/// Queue waits: more payment calls at once (30) than the demo's adaptive limit admits (it starts
/// at 20 and never goes below 8), each holding its permit for 100 ms: the calls past the limit
/// wait for a permit, at most four rounds (400 ms), well inside the critical class's queue
/// deadline (1 s) and the breaker's slow-call threshold (800 ms), so none is shed.
async fn make_queue_waits(client: &reqwest::Client, base: &str) {
    set_fault(client, base, 0.0, 100).await;
    let statuses = burst(client, 30, &format!("{base}/api/v1/payments/1/status"), &[]).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// The payment provider fails: the route's breaker opens once failures are half its window
/// (503 at once from then on).
async fn open_payments_breaker(client: &reqwest::Client, base: &str) {
    set_fault(client, base, 1.0, 0).await;
    let url = format!("{base}/api/v1/payments/2/status");
    let mut statuses = Vec::new();
    while statuses.last() != Some(&503) && statuses.len() < 60 {
        statuses.extend(burst(client, 1, &url, &[]).await);
    }
    assert_eq!(statuses.last(), Some(&503), "breaker open: {statuses:?}");
}

/// What `drive_traffic` must have made every layer do, as seen by Prometheus: (what, a query
/// that returns a series only if it happened). A panel with data may still show only zeros;
/// these say the traffic did what the dashboards are there to show.
const EXERCISED: [(&str, &str); 9] = [
    (
        "cache hits",
        r#"tower_perf_cache_requests_total{cache_tier="memory", cache_result="hit"} > 0"#,
    ),
    (
        "cache misses",
        r#"tower_perf_cache_requests_total{cache_tier="memory", cache_result="miss"} > 0"#,
    ),
    (
        "uncacheable responses",
        r#"tower_perf_cache_requests_total{cache_result="uncacheable"} > 0"#,
    ),
    (
        "purges by tag",
        r#"tower_perf_cache_purges_total{purge_target="tag"} > 0"#,
    ),
    (
        "compression in every coding",
        r#"count(tower_perf_compression_output_bytes_total{encoding=~"zstd|br|gzip|deflate"} > 0) == 4"#,
    ),
    ("slow requests", "tower_perf_slow_requests_total > 0"),
    (
        "queue waits over 5 ms",
        r#"sum(tower_perf_queue_wait_duration_seconds_count) - sum(tower_perf_queue_wait_duration_seconds_bucket{le="0.005"}) > 0"#,
    ),
    (
        "opening of the payments breaker",
        r#"tower_perf_circuit_breaker_transitions_total{breaker="/api/v1/payments/{id}/status", state="open"} > 0"#,
    ),
    (
        "rate-limit rejections",
        r#"tower_perf_rate_limit_decisions_total{decision="limited"} > 0"#,
    ),
];

/// Fails unless every query of [`EXERCISED`] returns a series (10 s at most each).
async fn assert_traffic_reached_every_layer(client: &reqwest::Client, prom: &str) {
    for (what, expr) in EXERCISED {
        let seen = eventually(Duration::from_secs(10), async || {
            matches!(query(client, prom, expr).await, Ok(n) if n > 0).then_some(())
        })
        .await;
        assert!(seen.is_some(), "the traffic showed no {what}: {expr}");
    }
}

/// Runs an instant query; `Err` on a query error, else the number of series.
async fn query(client: &reqwest::Client, prom: &str, expr: &str) -> Result<usize, String> {
    let res: Value = client
        .get(format!("{prom}/api/v1/query?query={}", url_encode(expr)))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if res["status"] != "success" {
        return Err(format!("{}: {}", res["errorType"], res["error"]));
    }
    Ok(res["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Percent-encodes a query parameter's value.
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A dashboard expression as Grafana sends it: every instance, a one-minute rate window.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$instance", ".+")
        .replace("$__rate_interval", "1m")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_has_data_and_the_breaker_alert_fires() {
    let client = common::client();
    #[cfg(feature = "redis")]
    let redis = common::redis::RedisServer::start();
    #[cfg(feature = "redis")]
    let url = redis.url();
    #[cfg(feature = "redis")]
    let env = [("REDIS_URL", url.as_str())];
    #[cfg(not(feature = "redis"))]
    let env = [];
    let (_demo, demo) = start_demo(&client, &env).await;
    let dir = std::env::temp_dir().join(format!("tower-perf-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let target = demo.trim_start_matches("http://").to_owned();
    let (_prom, prom) = start_prometheus(&client, &dir, &target).await;

    drive_traffic(&client, &demo).await;

    // Without the Redis feature the demo has no Redis link: the Redis row has nothing to show.
    let panels: Vec<Panel> = panels()
        .into_iter()
        .filter(|p| cfg!(feature = "redis") || p.row != "Redis")
        .collect();
    assert!(panels.len() >= 20, "{} panels", panels.len());
    // Every lazily made series needs two scrapes before rate() sees it: retry for a while.
    let mut failures = Vec::new();
    let all_have_data = eventually(Duration::from_secs(60), async || {
        failures.clear();
        for p in &panels {
            for expr in &p.exprs {
                match query(&client, &prom, &as_grafana_sends(expr)).await {
                    Ok(0) => {
                        failures.push(format!("{} / {}: no series: {expr}", p.dashboard, p.title))
                    }
                    Ok(_) => {}
                    Err(e) => failures.push(format!("{} / {}: {e}: {expr}", p.dashboard, p.title)),
                }
            }
        }
        failures.is_empty().then_some(())
    })
    .await;
    assert!(
        all_have_data.is_some(),
        "dead panels:\n{}",
        failures.join("\n")
    );
    assert_traffic_reached_every_layer(&client, &prom).await;

    let breaker = "/api/v1/payments/{id}/status";
    let firing = eventually(Duration::from_secs(60), async || {
        let alerts: Value = client
            .get(format!("{prom}/api/v1/alerts"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        alerts["data"]["alerts"].as_array()?.iter().find_map(|a| {
            (a["labels"]["alertname"] == "TowerPerfCircuitBreakerOpen"
                && a["labels"]["breaker"] == breaker
                && a["state"] == "firing")
                .then(|| a.clone())
        })
    })
    .await;
    let alert = firing.expect("TowerPerfCircuitBreakerOpen firing for the payments breaker");
    assert!(
        alert["annotations"]["runbook"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{alert}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
