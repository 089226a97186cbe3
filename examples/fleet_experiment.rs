//! The fleet experiments, on loopback, with the tests' Redis topology harness (`tests/common/`).
//!
//! `failover [rate] [steady_secs]`: what a Redis Cluster failover costs the requests. A Redis
//! Cluster (3 masters, 1 replica each), two instances (an axum app with the shared rate limiter
//! and the response cache's Redis tier on one `RedisLink`, default 20 ms deadline), and an
//! open-loop load (a fixed rate, whatever the servers do) alternating between them. After a
//! warm-up and a steady phase (`steady_secs` each), the master of the cache's purge records is
//! killed (SIGKILL); its replica takes over after the cluster's node timeout. Prints the requests failed (goal: 0); p50/p99 in the
//! steady state, during the failover window (kill to promotion) and after it, next to the
//! link's deadline; and the time from the promotion until the Redis tier serves hits again (a
//! fresh URL stored through one instance is a Redis hit through the other).
//!
//! `effectiveness [urls] [rounds]`: what sharing saves the origin. Three instances behind nginx
//! (Debian's, round robin, started here), each URL requested `rounds` times; once with the
//! Redis tier on a Redis Cluster, once with three independent memory caches. Prints origin
//! requests per unique URL (goal: 1 for the fleet) and the share of requests served from
//! another instance's response (Redis hits).
//!
//! ```text
//! cargo run --release --example fleet_experiment --features redis,axum -- failover 400 5
//! cargo run --release --example fleet_experiment --features redis,axum -- effectiveness 600 6
//! ```
//!
//! Loopback only, bounded: the failover load stops 5 s after the promotion (at most 60 s of
//! failover); every process started is stopped by PID.

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

use axum::extract::{Path, State};
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
const URLS: u64 = 500;

/// The origin: 5 ms of work per response, so origin requests are visible in the latencies;
/// counted per instance.
async fn item(State(calls): State<Arc<AtomicU64>>, Path(id): Path<u64>) -> impl IntoResponse {
    calls.fetch_add(1, Relaxed);
    tokio::time::sleep(Duration::from_millis(5)).await;
    (
        [(header::CACHE_CONTROL, "public, max-age=30")],
        format!("item {id}"),
    )
}

struct Instance {
    base: String,
    port: u16,
    cache: CacheHandle,
    /// `None`: memory only.
    link: Option<RedisLink>,
    origin: Arc<AtomicU64>,
}

/// One instance: the cache (with a Redis tier when `url` is given) and the rate limiter
/// (shared through the same link then).
async fn instance(url: Option<&str>) -> Instance {
    let link = url.map(|url| RedisLink::builder().url(url).build().expect("link"));
    let mut cache = ResponseCacheLayer::builder().ignore_host(true);
    let mut limit = RateLimitLayer::builder(Quota::per_second(1_000_000).burst(1_000_000));
    if let Some(link) = &link {
        assert!(link.connect(Duration::from_secs(10)).await, "connected");
        cache = cache.redis(link.clone());
        limit = limit.redis(link.clone());
    }
    let cache = cache.build().expect("cache");
    let limit = limit.build().expect("rate limit");
    let handle = cache.handle();
    let origin = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/items/{id}", get(item))
        .with_state(origin.clone())
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
        port: addr.port(),
        cache: handle,
        link,
        origin,
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

/// 0: warm-up (cold URLs), 1: steady, 2: failover window (kill to promotion), 3: after.
static PHASE: AtomicU64 = AtomicU64::new(0);

/// Sends `rate` requests per second until `stop` is set, each on its own task (at most 2,000
/// in flight), latency counted from its scheduled departure.
async fn load(bases: [String; 2], rate: u64, phases: Arc<Mutex<[Phase; 4]>>, stop: Arc<AtomicU64>) {
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
    match args.next().as_deref() {
        Some("failover") => failover(args).await,
        Some("effectiveness") => effectiveness(args).await,
        _ => eprintln!(
            "usage: fleet_experiment failover [rate] [steady_secs] | effectiveness [urls] [rounds]"
        ),
    }
}

async fn failover(mut args: impl Iterator<Item = String>) {
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let steady: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let topology = tokio::task::spawn_blocking(|| Topology::start(Kind::Cluster))
        .await
        .expect("cluster");
    println!("cluster: {}", topology.url());
    let url = topology.url();
    let (a, b) = (instance(Some(&url)).await, instance(Some(&url)).await);
    let phases = Arc::new(Mutex::new([
        Phase::new("warm-up"),
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
    tokio::time::sleep(Duration::from_secs(steady)).await;
    PHASE.store(2, Relaxed);
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
    PHASE.store(3, Relaxed);
    let redis_back = until_redis_hits(&a, &b).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(1, Relaxed);
    let _ = generator.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(topology);

    let link = |i: &Instance| i.link.clone().expect("link");
    println!(
        "rate {rate}/s over 2 instances, {URLS} URLs, Redis deadline {:?}",
        link(&a).deadline()
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
            link(i).snapshot()
        );
    }
}

/// nginx (Debian's) on a free loopback port, round robin over `ports`; stopped by PID on drop.
struct Nginx {
    port: u16,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(ports: &[u16]) -> Self {
        let port = redis::free_port();
        let dir =
            std::env::temp_dir().join(format!("tower-perf-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let d = dir.display();
        let upstreams: String = ports
            .iter()
            .map(|p| format!("server 127.0.0.1:{p}; "))
            .collect();
        let conf = format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p;\n\
             fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
             upstream fleet {{ {upstreams} keepalive 32; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://fleet;\n\
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("nginx");
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, by PID: the master stops its workers (SIGKILL would orphan them).
        let pid = self.child.id().to_string();
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Each of `urls` URLs requested `rounds` times through nginx over three instances (Redis tier
/// on `redis` when given); prints origin requests per URL and where requests were served.
async fn fleet_run(redis: Option<&str>, urls: u64, rounds: u64) {
    let fleet = [
        instance(redis).await,
        instance(redis).await,
        instance(redis).await,
    ];
    let ports: Vec<u16> = fleet.iter().map(|i| i.port).collect();
    let nginx = tokio::task::spawn_blocking(move || Nginx::start(&ports))
        .await
        .expect("nginx");
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut failed = 0;
    for round in 0..rounds {
        // 8 at a time, in URL order.
        for chunk in (0..urls).collect::<Vec<_>>().chunks(8) {
            let replies = chunk
                .iter()
                .map(|id| client.get(format!("{base}/items/{id}")).send());
            for r in futures_util::future::join_all(replies).await {
                if !r.is_ok_and(|r| r.status().is_success()) {
                    failed += 1;
                }
            }
        }
        if round == 0 {
            // Let the stores of the first round reach Redis.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let origin: u64 = fleet.iter().map(|i| i.origin.load(Relaxed)).sum();
    let redis_hits: u64 = fleet
        .iter()
        .filter_map(|i| i.cache.snapshot().redis.map(|r| r.hits))
        .sum();
    let requests = urls * rounds;
    println!(
        "{:<26} {:>8} {:>7} {:>14.2} {:>15.1}%",
        if redis.is_some() {
            "3 instances + Redis Cluster"
        } else {
            "3 independent caches"
        },
        requests,
        failed,
        origin as f64 / urls as f64,
        100.0 * redis_hits as f64 / requests as f64,
    );
    drop(nginx);
}

async fn effectiveness(mut args: impl Iterator<Item = String>) {
    let urls: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(600);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(6);
    let topology = tokio::task::spawn_blocking(|| Topology::start(Kind::Cluster))
        .await
        .expect("cluster");
    println!("{urls} URLs x {rounds} requests each, through nginx round robin");
    println!(
        "{:<26} {:>8} {:>7} {:>14} {:>16}",
        "fleet", "requests", "failed", "origin per URL", "from another"
    );
    fleet_run(Some(&topology.url()), urls, rounds).await;
    fleet_run(None, urls, rounds).await;
}
