//! The failover experiment: what a Redis Cluster failover costs the requests of a fleet.
//!
//! Starts a Redis Cluster (3 masters, 1 replica each) on loopback with the tests' harness, two
//! instances (an axum app with the shared rate limiter and the response cache's Redis tier on
//! one `RedisLink`, default 20 ms deadline), and sends an open-loop load (a fixed rate, whatever
//! the servers do) alternating between them. After a steady phase it kills (SIGKILL) the master
//! of the cache's purge records; the replica takes over after the cluster's node timeout.
//!
//! It prints: requests failed (goal: 0); p50/p99 latency in the steady state, during the
//! failover window (kill to promotion) and after it; the link's deadline, for comparison; and
//! the time from the promotion until the Redis tier serves hits again (a fresh URL stored
//! through one instance is a Redis hit through the other).
//!
//! ```text
//! cargo run --release --example fleet_failover --features redis,axum -- [rate] [steady_secs]
//! ```
//!
//! Loopback only, bounded: the load stops 5 s after the promotion (at most 60 s of failover).

// The tests' harness (`topology` uses `super::redis`).
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/redis.rs"]
mod redis;
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/topology.rs"]
mod topology;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use topology::{Kind, Topology};
use tower_perf::cache::{CacheHandle, ResponseCacheLayer};
use tower_perf::rate_limit::{Quota, RateLimitLayer};
use tower_perf::redis::RedisLink;

/// URLs the load cycles over (each instance's memory tier holds them all after a while, so
/// steady-state requests are mostly memory hits; Redis is asked for what one instance lacks).
const URLS: u64 = 2_000;

/// The origin: 5 ms of work per response, so origin requests are visible in the latencies.
async fn item(Path(id): Path<u64>) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(5)).await;
    (
        [(header::CACHE_CONTROL, "public, max-age=30")],
        format!("item {id}"),
    )
}

struct Instance {
    base: String,
    cache: CacheHandle,
    link: RedisLink,
}

async fn instance(url: &str) -> Instance {
    let link = RedisLink::builder().url(url).build().expect("link");
    assert!(link.connect(Duration::from_secs(10)).await, "connected");
    let cache = ResponseCacheLayer::builder()
        .ignore_host(true)
        .redis(link.clone())
        .build()
        .expect("cache");
    let limit = RateLimitLayer::builder(Quota::per_second(1_000_000).burst(1_000_000))
        .redis(link.clone())
        .build()
        .expect("rate limit");
    let handle = cache.handle();
    let app = Router::new()
        .route("/items/{id}", get(item))
        .layer(cache)
        .layer(limit);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.expect("serve");
    });
    Instance {
        base: format!("http://{addr}"),
        cache: handle,
        link,
    }
}

/// Latencies (microseconds) of one phase, and its failures.
struct Phase {
    name: &'static str,
    latency: Histogram<u64>,
    failed: u64,
}

impl Phase {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            failed: 0,
        }
    }

    fn print(&self) {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<10} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            self.name,
            self.latency.len(),
            self.failed,
            ms(0.5),
            ms(0.99),
            self.latency.max() as f64 / 1000.0
        );
    }
}

/// 0: steady, 1: failover window (kill to promotion), 2: after.
static PHASE: AtomicU64 = AtomicU64::new(0);

/// Sends `rate` requests per second until `stop` is set, each on its own task (at most 2,000
/// in flight), latency counted from its scheduled departure.
async fn load(bases: [String; 2], rate: u64, phases: Arc<Mutex<[Phase; 3]>>, stop: Arc<AtomicU64>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(2_000));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    while stop.load(Relaxed) == 0 {
        let scheduled = tick.tick().await;
        n += 1;
        let url = format!("{}/items/{}", bases[(n % 2) as usize], (n / 2) % URLS);
        let (client, phases) = (client.clone(), phases.clone());
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let phase = PHASE.load(Relaxed) as usize;
            phases.lock().unwrap()[phase].failed += 1;
            continue;
        };
        let phase = PHASE.load(Relaxed) as usize;
        tokio::spawn(async move {
            let ok = match client.get(url).send().await {
                Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                Err(_) => false,
            };
            let took = scheduled.elapsed().as_micros() as u64;
            let mut phases = phases.lock().unwrap();
            if ok {
                let _ = phases[phase].latency.record(took.max(1));
            } else {
                phases[phase].failed += 1;
            }
            drop(permit);
        });
    }
}

/// Time until a fresh URL stored through `a` is a Redis hit through `b`.
async fn until_redis_hits(a: &Instance, b: &Instance) -> Option<Duration> {
    let client = reqwest::Client::builder().no_proxy().build().ok()?;
    let start = Instant::now();
    for n in 0..10_000u64 {
        if start.elapsed() > Duration::from_secs(60) {
            return None;
        }
        let path = format!("/items/{}", 1_000_000 + n);
        let stores = a.cache.snapshot().redis?.stores;
        let _ = client.get(format!("{}{path}", a.base)).send().await;
        let wait = Instant::now();
        while a.cache.snapshot().redis?.stores == stores
            && wait.elapsed() < Duration::from_millis(200)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let Ok(res) = client.get(format!("{}{path}", b.base)).send().await else {
            continue;
        };
        let status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok());
        if status.is_some_and(|s| s.contains("detail=redis")) {
            return Some(start.elapsed());
        }
    }
    None
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let steady: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let topology = tokio::task::spawn_blocking(|| Topology::start(Kind::Cluster))
        .await
        .expect("cluster");
    println!("cluster: {}", topology.url());
    let url = topology.url();
    let (a, b) = (instance(&url).await, instance(&url).await);
    let phases = Arc::new(Mutex::new([
        Phase::new("steady"),
        Phase::new("failover"),
        Phase::new("after"),
    ]));
    let stop = Arc::new(AtomicU64::new(0));
    let generator = tokio::spawn(load(
        [a.base.clone(), b.base.clone()],
        rate,
        phases.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(steady)).await;

    PHASE.store(1, Relaxed);
    let killed = Instant::now();
    let topology = tokio::task::spawn_blocking(move || {
        let mut topology = topology;
        topology.kill_master_of("{tower-perf:cache:tower-perf}:gen");
        topology.wait_failed_over();
        topology
    })
    .await
    .expect("failover");
    let promoted = killed.elapsed();
    PHASE.store(2, Relaxed);
    let redis_back = until_redis_hits(&a, &b).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(1, Relaxed);
    let _ = generator.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(topology);

    println!(
        "rate {rate}/s over 2 instances, {URLS} URLs, Redis deadline {:?}",
        a.link.deadline()
    );
    println!(
        "master killed; replica promoted after {:.2} s",
        promoted.as_secs_f64()
    );
    match redis_back {
        Some(d) => println!(
            "Redis hits again {:.2} s after the promotion",
            d.as_secs_f64()
        ),
        None => println!("Redis hits did not resume within 60 s"),
    }
    println!(
        "{:<10} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "phase", "ok", "failed", "p50 ms", "p99 ms", "max ms"
    );
    for phase in phases.lock().unwrap().iter() {
        phase.print();
    }
    for (name, i) in [("A", &a), ("B", &b)] {
        let tier = i.cache.snapshot().redis.expect("redis tier");
        println!(
            "instance {name}: Redis hits {}, stores {}, lease waits {}, errors {}; link {:?}",
            tier.hits,
            tier.stores,
            tier.lease_waits,
            tier.errors,
            i.link.snapshot()
        );
    }
}
