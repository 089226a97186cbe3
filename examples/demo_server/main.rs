//! A property-management API with every tower-perf layer on, as one `PerfStack` built from a
//! configuration file.
//!
//! This is the kind of application the crate is made for: cheap reads that a cache would love, an
//! expensive dashboard, a multi-megabyte streamed export, and a call to a flaky payment provider.
//! Every route goes through the same stack, a [`PerfStack`](tower_perf::stack::PerfStack) read
//! from `examples/demo.toml` (every field commented there; see [`stack`]):
//!
//! - the slow-request tracker gives every response a `Server-Timing` header, keeps latency
//!   percentiles per route, logs slow requests with their phase breakdown (`db`, `aggregate`,
//!   `provider`, ...) and reports `http_server_request_duration_seconds` to Prometheus;
//! - the rate limiter, per client on `/api/*` (100 requests/s, burst 200): past the quota,
//!   `429` with `Retry-After` and the `RateLimit-Policy` / `RateLimit` headers, which also come
//!   on allowed responses;
//! - the response cache serves the list, items and dashboard from memory following their
//!   `Cache-Control` (see `Cache-Status` and `Age` on the responses), refreshes the dashboard in
//!   the background while serving it stale (`stale-while-revalidate`), answers `If-None-Match`
//!   with 304, and is purged by tag when a property is created;
//! - the priority queue, inside the cache: an adaptive limit (at least 8) that the runtime's
//!   lag cuts when the CPU is saturated, the class from `x-priority`
//!   (`critical|high|normal|low`), else by route (payments critical, the export low, reads
//!   normal); the CPU-bound export holds at most an eighth of the limit and its body yields to
//!   the payments; when full, the lowest class is shed first with `503` + `Retry-After`, and
//!   the cache serves a stale copy instead when it has one;
//! - adaptive compression, inside the cache (which stores each encoded variant, so a hit costs
//!   no compression): zstd, br, gzip or deflate by `Accept-Encoding`, levels that follow the
//!   load, and the CSV export compressed as it streams (`curl --compressed`);
//! - the circuit breakers, one per route: make the payment provider fail
//!   (`PUT /admin/payments/fault` with `{"failure_rate": 1.0}`) and after 10 calls its route
//!   answers `503` + `Retry-After` at once, while every other route is unaffected; it probes the
//!   provider again after 5 s (growing on repeated trips).
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
//! Environment (each variable overrides the configuration file):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DEMO_CONFIG` | `examples/demo.toml` | the stack's configuration file (a `PerfConfig` in TOML) |
//! | `HOST` | `127.0.0.1` | IP address to listen on |
//! | `PORT` | `3000` | TCP port to listen on |
//! | `SLOW_THRESHOLD_MS` | `slow.threshold_ms` (1000) | requests at or above this are slow (the export route: 60 s) |
//! | `CACHE_MAX_MB` | `cache.max_mb` (64) | memory budget of the response cache |
//! | `RATE_LIMIT_RPS`, `RATE_LIMIT_BURST` | `rate_limit.per_second`, `.burst` (100, 200) | per-client quota on `/api/*` |
//! | `REDIS_URL` | unset | `redis://host:port`, `redis-cluster://host:port?node=...` or `redis-sentinel://host:port?sentinelServiceName=...`: the cache's Redis tier and the quota on `/api/*` are shared by every instance (needs `--features redis`; `examples/fleet.sh` starts 3 on a Redis Cluster behind nginx) |
//! | `ADMIN_TOKEN` | unset | bearer token of every `/admin/*` route and the console; unset: loopback clients only |
//! | `DEMO_TOWER_LIMIT` | unset | `n`: tower's `ConcurrencyLimit` of `n` + `LoadShed` around the stack, the peer `examples/overload_flood.rs` compares with |
//! | `RUST_LOG` | `info,tower_http=info` | log filter |
//!
//! An invalid value stops the server with a message naming the variable (or the configuration
//! key) and exit code 2.
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
//! - `GET /admin/stats`: every layer's snapshot: latency per route, slow requests, cache,
//!   breakers, queue, rate limiter, compression
//! - `POST /admin/cache/purge` (`{"tags": [...]}`, `{"uri": "/..."}`, `{"prefix": "/..."}`,
//!   optional `"hard": false` to mark stale instead of removing)
//! - `GET /metrics`: Prometheus text, the process metrics (CPU, memory, open files, threads)
//!   included; `GET /health`, `/ready`, `/alive`. `examples/monitoring/` has the Prometheus
//!   scrape config, alert rules and Grafana dashboards for it.
//!
//! # Files
//!
//! `main.rs` (environment, start-up, shutdown), `stack.rs` (the `PerfStack` from
//! `demo.toml`), `routes.rs` (state, router, errors), `properties.rs`, `reports.rs`
//! (dashboard, export), `payments.rs` (the simulated provider), `admin.rs`, `data.rs` (the
//! generated data set).

mod admin;
mod data;
mod payments;
mod properties;
mod reports;
mod routes;
mod stack;

use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_perf::metrics::HISTOGRAM_BUCKETS;
use tracing_subscriber::EnvFilter;

use tower_perf::stack::PerfConfig;

use crate::routes::{AppState, EXPORT_ROUTE};

/// Exit code for a bad environment variable or configuration.
const EXIT_CONFIG: u8 = 2;

/// What the environment configures; the variables that override the configuration file are
/// `None` when unset.
struct Env {
    addr: SocketAddr,
    /// `DEMO_CONFIG`, else `examples/demo.toml` of this repository.
    config_path: PathBuf,
    slow_threshold_ms: Option<u64>,
    cache_max_mb: Option<u64>,
    rate_limit_rps: Option<u32>,
    rate_limit_burst: Option<u32>,
    /// `REDIS_URL`: the cache's Redis tier and the shared rate limit, when set.
    redis_url: Option<String>,
    /// `DEMO_TOWER_LIMIT`: tower's `ConcurrencyLimit` + `LoadShed` around the stack, for
    /// comparison (`examples/overload_flood.rs`).
    tower_limit: Option<usize>,
}

impl Env {
    /// Reads the variables; the error names the bad one.
    fn read() -> Result<Self, String> {
        let host: IpAddr = env_or("HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let port: u16 = env_or("PORT", 3000)?;
        let redis_url = env_opt::<String>("REDIS_URL")?.filter(|url| !url.is_empty());
        if redis_url.is_some() && cfg!(not(feature = "redis")) {
            return Err(
                "REDIS_URL is set, but this build has no Redis support: run \
                 `cargo run --release --example demo_server --features redis`"
                    .into(),
            );
        }
        let config_path = env_opt::<PathBuf>("DEMO_CONFIG")?.unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml"))
        });
        Ok(Self {
            addr: SocketAddr::new(host, port),
            config_path,
            slow_threshold_ms: nonzero("SLOW_THRESHOLD_MS", env_opt("SLOW_THRESHOLD_MS")?)?,
            cache_max_mb: nonzero("CACHE_MAX_MB", env_opt("CACHE_MAX_MB")?)?,
            rate_limit_rps: nonzero("RATE_LIMIT_RPS", env_opt("RATE_LIMIT_RPS")?)?,
            rate_limit_burst: nonzero("RATE_LIMIT_BURST", env_opt("RATE_LIMIT_BURST")?)?,
            redis_url,
            tower_limit: nonzero("DEMO_TOWER_LIMIT", env_opt("DEMO_TOWER_LIMIT")?)?,
        })
    }
}

/// The parsed value of environment variable `name`, `None` when it is not set.
fn env_opt<T>(name: &str) -> Result<Option<T>, String>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("invalid {name}={raw:?}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => {
            Err(format!("invalid {name}={raw:?}: not valid UTF-8"))
        }
    }
}

/// The parsed value of environment variable `name`, or `default` when it is not set.
fn env_or<T>(name: &str, default: T) -> Result<T, String>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    Ok(env_opt(name)?.unwrap_or(default))
}

/// `value` of variable `name`, refused when zero.
fn nonzero<T: Default + PartialEq>(name: &str, value: Option<T>) -> Result<Option<T>, String> {
    if value.as_ref() == Some(&T::default()) {
        return Err(format!("invalid {name}=0: must be at least 1"));
    }
    Ok(value)
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

    let env = match Env::read() {
        Ok(env) => env,
        Err(e) => return config_error(&e),
    };
    let config = match stack::config(&env) {
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
    let perf = match stack::build(&config, env.redis_url.as_deref()).await {
        Ok(stack) => stack,
        Err(e) => return config_error(&format!("{}: {e}", env.config_path.display())),
    };
    let auth = match admin::auth_from_env() {
        Ok(auth) => auth,
        Err(e) => return config_error(&e),
    };
    let handles = perf.handles();
    let state = AppState::new(metrics, handles.clone());
    let console = routes::console(&state);
    let router = stack::around(
        routes::app(state),
        console,
        perf,
        auth.clone(),
        env.tower_limit,
    );

    let listener = match tokio::net::TcpListener::bind(env.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", env.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(env.addr);
    print_banner(addr, &env, &config);
    println!("{}", admin::auth_notice(&auth));
    tokio::spawn(stack::warm_cache(handles.cache, router.clone(), addr));

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

/// The process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_threads`, ...) of the `metrics-process`
/// crate: described once at start-up, read from `/proc` on every scrape of `/metrics`.
pub(crate) static PROCESS_METRICS: LazyLock<metrics_process::Collector> =
    LazyLock::new(metrics_process::Collector::default);

/// Installs the global Prometheus recorder, with the buckets of every histogram of the crate
/// (`tower_perf::metrics::HISTOGRAM_BUCKETS`: without them the exporter renders summaries, which
/// cannot be aggregated across instances), describes the process metrics, and keeps the
/// recorder's upkeep running.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in HISTOGRAM_BUCKETS {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)?;
    }
    let handle = builder.install_recorder()?;
    PROCESS_METRICS.describe();
    PROCESS_METRICS.collect();
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

fn print_banner(addr: SocketAddr, env: &Env, config: &PerfConfig) {
    let base = format!("http://{addr}");
    println!("tower-perf demo server listening on {base}");
    println!("stack: {}", env.config_path.display());
    let export_ms = config.slow.route_threshold_ms.get(EXPORT_ROUTE);
    println!(
        "slow threshold: {} ms ({EXPORT_ROUTE}: {} ms); stop with Ctrl-C",
        config.slow.threshold_ms,
        export_ms.unwrap_or(&config.slow.threshold_ms)
    );
    match &env.redis_url {
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
