//! The acceptance experiment of the priority queue: a server of known capacity driven at 1x, 2x
//! and 4x its capacity with 10% critical, 30% high and 60% low requests, behind four setups in
//! one run: `PriorityQueueLayer` with a fixed limit, with an adaptive (gradient) limit, tower's
//! `ConcurrencyLimit` + `LoadShed`, and no limit at all.
//!
//! The handler stands for a database call: it takes one of `--pool` connections (default 4) and
//! holds it 5 ms, so the capacity is about `pool / 5 ms`; the run measures it first. The server
//! runs on its own thread and runtime, the open-loop generator (`examples/support/load.rs`) on
//! the main thread: one core each on a two-core machine.
//!
//! ```text
//! cargo run --release --example queue_experiment -- --secs 5 --pool 4
//! ```
//!
//! Prints a Markdown table: per setup and load, goodput (successful responses per second, and
//! as a share of the capacity), then per class the share of requests that succeeded and their
//! p99 latency, and the process's resident memory (server and generator together) at the start
//! and the end of the step. `QX_ONLY=<part of a setup name>` runs only matching setups;
//! `QX_LOADS=4,4,4` picks the load factors (a long flat run: `QX_LOADS=4,4,4,4`);
//! `QX_VERBOSE=1` prints the queue's own view (limit, queue length, waits) every second.

#[path = "support/load.rs"]
mod load;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_perf::queue::{AdaptiveLimit, PriorityQueueLayer};
use tower_perf::Priority;

#[derive(Clone)]
struct Backend {
    pool: Arc<Semaphore>,
    done: Arc<AtomicU64>,
}

/// One "query": a pool connection held 5 ms.
async fn work(State(b): State<Backend>) -> &'static str {
    let _conn = b.pool.acquire().await.expect("pool open");
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.done.fetch_add(1, Ordering::Relaxed);
    "ok"
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Setup {
    QueueFixed,
    QueueAdaptive,
    TowerLimitShed,
    NoLimit,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::QueueFixed => "PriorityQueueLayer, fixed limit",
            Setup::QueueAdaptive => "PriorityQueueLayer, gradient limit",
            Setup::TowerLimitShed => "tower ConcurrencyLimit + LoadShed",
            Setup::NoLimit => "no limit",
        }
    }
}

fn queue_builder() -> tower_perf::queue::PriorityQueueBuilder {
    PriorityQueueLayer::builder()
        .trust_priority_header(true)
        .queue_capacity(256)
        .max_wait(Priority::Critical, Duration::from_millis(500))
        .max_wait(Priority::High, Duration::from_millis(200))
        .max_wait(Priority::Normal, Duration::from_millis(200))
        .max_wait(Priority::Low, Duration::from_millis(100))
        .codel(Duration::from_millis(5), Duration::from_millis(100))
}

fn app(setup: Setup, b: Backend, pool: usize) -> Router {
    let r = Router::new().route("/work", get(work)).with_state(b);
    let queue = |layer: PriorityQueueLayer| {
        let h = layer.handle();
        // The layer's own view: queue waits per class and the limit, once a second.
        if std::env::var_os("QX_VERBOSE").is_some() {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let s = h.snapshot();
                    let w: Vec<String> = s
                        .classes
                        .iter()
                        .map(|c| format!("{} p99 {:?}", c.priority, c.wait_p99))
                        .collect();
                    eprintln!(
                        "limit {} in flight {} queued {} overloaded {} | {}",
                        s.limit,
                        s.in_flight,
                        s.queued,
                        s.overloaded,
                        w.join(", ")
                    );
                }
            });
        }
        r.clone().layer(layer)
    };
    match setup {
        Setup::QueueFixed => queue(queue_builder().limit(pool).build().unwrap()),
        Setup::QueueAdaptive => queue(
            queue_builder()
                .adaptive_limit(AdaptiveLimit::gradient().min(1).max(256).initial(pool * 4))
                .build()
                .unwrap(),
        ),
        Setup::TowerLimitShed => r.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .layer(LoadShedLayer::new())
                .layer(ConcurrencyLimitLayer::new(pool)),
        ),
        Setup::NoLimit => r,
    }
}

/// Starts a server for `setup` on its own thread and runtime; returns its address and the
/// backend's completion counter.
fn start(setup: Setup, pool: usize) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let b = Backend {
        pool: Arc::new(Semaphore::new(pool)),
        done: Arc::default(),
    };
    let done = b.done.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app(setup, b, pool)).await.unwrap();
        });
    });
    (addr, done)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn drive(addr: std::net::SocketAddr, rate: f64, secs: u64) -> load::Report {
    let cfg = load::Config {
        url: format!("http://{addr}/work").parse().unwrap(),
        rate,
        duration: Duration::from_secs(secs),
        mix: [10, 30, 0, 60],
        timeout: Duration::from_secs(1),
        max_in_flight: 8192,
        progress: false,
    };
    load::run(&cfg).await.expect("load run")
}

/// Completions per second with `clients` clients each sending one request after the other.
async fn closed_loop(
    addr: std::net::SocketAddr,
    clients: usize,
    d: Duration,
    done: &AtomicU64,
) -> f64 {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let url: http::Uri = format!("http://{addr}/work").parse().unwrap();
    let end = tokio::time::Instant::now() + d;
    let before = done.load(Ordering::Relaxed);
    let start = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.clone());
        set.spawn(async move {
            while tokio::time::Instant::now() < end {
                let res = client.get(url.clone()).await.unwrap();
                res.into_body().collect().await.unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
    (done.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut secs = 5u64;
    let mut pool = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).expect("--secs N"),
            "--pool" => pool = args.next().and_then(|v| v.parse().ok()).expect("--pool N"),
            other => panic!("unknown argument {other:?} (--secs N, --pool N)"),
        }
    }
    assert!((1..=60).contains(&secs) && (1..=64).contains(&pool));

    // Capacity: completions per second of the backend kept just saturated by a closed loop of
    // twice as many clients as connections (no timeouts, no pile-up).
    let nominal = pool as f64 / 0.005;
    let (addr, done) = start(Setup::NoLimit, pool);
    drive(addr, nominal / 4.0, 1).await; // warm-up
    let capacity = closed_loop(addr, pool * 2, Duration::from_secs(3), &done).await;
    // Unloaded: a fifth of the capacity, no limit.
    let unloaded = drive(addr, capacity / 5.0, secs).await;
    let crit_unloaded = unloaded.classes[0].p99_ms;
    println!(
        "pool {pool} x 5 ms: nominal {nominal:.0}/s, measured capacity {capacity:.0}/s; \
         unloaded (0.2x) critical p99 {crit_unloaded:.1} ms; {secs} s per step; \
         client timeout 1 s; RSS at start {:.1} MiB\n",
        rss_mib()
    );
    println!("| setup | load | goodput/s (of capacity) | critical ok | critical p99 | high ok | high p99 | low ok | low p99 | RSS MiB, step start → end |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for setup in [
        Setup::QueueFixed,
        Setup::QueueAdaptive,
        Setup::TowerLimitShed,
        Setup::NoLimit,
    ] {
        if let Ok(only) = std::env::var("QX_ONLY") {
            if !setup.name().contains(&only) {
                continue;
            }
        }
        let (addr, _) = start(setup, pool);
        drive(addr, capacity / 5.0, 1).await; // warm-up (and the adaptive limit's no-load latency)
        let factors: Vec<f64> = std::env::var("QX_LOADS")
            .ok()
            .map(|v| v.split(',').filter_map(|f| f.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1.0, 2.0, 4.0]);
        for &factor in &factors {
            let rss_before = rss_mib();
            let r = drive(addr, capacity * factor, secs).await;
            let c = &r.classes;
            let cell = |i: usize| format!("{:.1}% | {:.1} ms", c[i].success() * 100.0, c[i].p99_ms);
            println!(
                "| {} | {factor:.0}x | {:.0} ({:.0}%) | {} | {} | {} | {:.1} → {:.1} |",
                setup.name(),
                r.goodput,
                r.goodput / capacity * 100.0,
                cell(0),
                cell(1),
                cell(3),
                rss_before,
                rss_mib()
            );
            if factor == 4.0 && setup == Setup::QueueFixed {
                eprintln!(
                    "goal at 4x: critical ok {:.2}% (>= 99.9%), p99 {:.1} ms (<= {:.1} ms), goodput {:.0}% (>= 90%)",
                    c[0].success() * 100.0,
                    c[0].p99_ms,
                    3.0 * crit_unloaded,
                    r.goodput / capacity * 100.0
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
