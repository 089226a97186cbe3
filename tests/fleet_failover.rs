//! Redis fails over while two instances are under load: a Redis Cluster master is killed (its
//! replica takes over), or the master behind Sentinel is killed (the sentinels promote the
//! replica). Each instance is an axum server with the shared rate limiter
//! and the response cache's Redis tier on one `RedisLink`; a load generator drives both over
//! loopback with a real HTTP client, and purges are issued while Redis is failing over.
//!
//! What must hold, counted rather than timed: every request is answered `200` (from memory, the
//! origin or Redis); no purged entry is served from a cache once the instance has the purge
//! (at once for the instance that issued it); the link comes back by itself: Redis hits and
//! shared rate-limit decisions resume. Waits are bounded; nothing asserts how long a step took.

#![cfg(feature = "redis")]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::topology::Topology;
use http::HeaderName;
use tower_perf::cache::{CacheHandle, ResponseCacheLayer};
use tower_perf::rate_limit::{Quota, RateLimitHandle, RateLimitLayer};
use tower_perf::redis::RedisLink;

/// The origin: numbers every response it makes, so a body tells when it was made.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicU64>,
}

async fn item(State(o): State<Origin>, Path(id): Path<String>) -> impl IntoResponse {
    let n = o.calls.fetch_add(1, SeqCst) + 1;
    let tag = if id.starts_with("victim") {
        "victim"
    } else {
        "items"
    };
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60".to_owned()),
            (HeaderName::from_static("cache-tag"), tag.to_owned()),
        ],
        format!("{id} {n}"),
    )
}

/// One application instance.
struct Instance {
    base: String,
    cache: CacheHandle,
    limit: RateLimitHandle,
    link: RedisLink,
}

async fn instance(url: &str, origin: Origin) -> Instance {
    let link = RedisLink::builder()
        .url(url)
        // Generous for a loaded test machine; the experiment in examples/ uses the default.
        .deadline(Duration::from_millis(250))
        .failure_threshold(3)
        .cool_down(Duration::from_millis(100), Duration::from_millis(800))
        .build()
        .expect("link");
    assert!(link.connect(Duration::from_secs(10)).await, "connected");
    let cache = ResponseCacheLayer::builder()
        .ignore_host(true)
        .redis(link.clone())
        .build()
        .expect("cache");
    // A quota nobody reaches: the limiter decides every request, through Redis when it can.
    let limit = RateLimitLayer::builder(Quota::per_second(1_000_000).burst(1_000_000))
        .key_header(HeaderName::from_static("x-client"))
        .redis(link.clone())
        .build()
        .expect("rate limit");
    let (cache_handle, limit_handle) = (cache.handle(), limit.handle());
    let app = Router::new()
        .route("/items/{id}", get(item))
        .with_state(origin)
        .layer(cache)
        .layer(limit);
    let addr: SocketAddr = common::serve_with_peer(app).await;
    Instance {
        base: format!("http://{addr}"),
        cache: cache_handle,
        limit: limit_handle,
        link,
    }
}

/// The URLs the load cycles over: hot ones, ones purged by tag (hard), ones purged by prefix
/// (soft).
fn paths() -> Vec<String> {
    let hot = (0..32).map(|i| format!("/items/hot-{i}"));
    let victims = (0..8).map(|i| format!("/items/victim-{i}"));
    let soft = (0..8).map(|i| format!("/items/soft-{i}"));
    hot.chain(victims).chain(soft).collect()
}

/// One answered (or failed) request of the load.
#[derive(Debug, Clone)]
struct Record {
    instance: usize,
    path: usize,
    started: Instant,
    /// 0: no HTTP answer at all.
    status: u16,
    /// The origin's number in the body.
    made: u64,
    /// Served from a cache (memory or Redis), not by the origin for this request.
    hit: bool,
}

/// Sends one request; the record of it.
async fn request(client: &reqwest::Client, base: &str, instance: usize, path: usize) -> Record {
    let paths = paths();
    let started = Instant::now();
    let mut rec = Record {
        instance,
        path,
        started,
        status: 0,
        made: 0,
        hit: false,
    };
    let Ok(res) = client
        .get(format!("{base}{}", paths[path]))
        .header("x-client", format!("c{}", path % 4))
        .send()
        .await
    else {
        return rec;
    };
    rec.status = res.status().as_u16();
    rec.hit = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("; hit"));
    let body = res.text().await.unwrap_or_default();
    rec.made = body
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    rec
}

/// The load: `tasks` loops over every URL, alternating instances, until `stop`.
fn start_load(
    bases: [String; 2],
    tasks: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Record>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let n = paths().len();
    (0..tasks)
        .map(|t| {
            let (bases, stop, log) = (bases.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut i = t * 7;
                while !stop.load(SeqCst) {
                    let which = i % 2;
                    let rec = request(&client, &bases[which], which, (i / 2) % n).await;
                    {
                        let mut log = log.lock().unwrap();
                        // Bounded: the test stops the load long before.
                        if log.len() < 1_000_000 {
                            log.push(rec);
                        }
                    }
                    i += 1;
                    // Paced: the test machine is shared.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

/// Polls `cond` every 20 ms for up to `limit`; `true` when it held.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Waits until `n` more requests of the load were answered.
async fn more_requests(log: &Mutex<Vec<Record>>, n: usize) {
    let target = log.lock().unwrap().len() + n;
    assert!(
        until(Duration::from_secs(60), || log.lock().unwrap().len()
            >= target)
        .await,
        "the load runs"
    );
}

/// A fresh URL stored through `a` is a Redis hit through `b`: the tier works (bounded).
async fn redis_serves_again(a: &Instance, b: &Instance, tag: &str) -> bool {
    let client = common::client();
    for n in 0..300 {
        let path = format!("/items/{tag}-{n}");
        let stores = a.cache.snapshot().redis.unwrap().stores;
        let _ = client.get(format!("{}{path}", a.base)).send().await;
        let stored = until(Duration::from_millis(500), || {
            a.cache.snapshot().redis.unwrap().stores > stores
        })
        .await;
        if !stored {
            continue;
        }
        let Ok(res) = client.get(format!("{}{path}", b.base)).send().await else {
            continue;
        };
        let status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status.contains("detail=redis") {
            return true;
        }
    }
    false
}

/// Kills the master that holds the purge records (cluster: of their slot; Sentinel: the
/// master), issues the purges while no master serves them, and returns the topology once a
/// replica took over.
async fn fail_over(topology: Topology, purge_now: impl FnOnce()) -> Topology {
    // Purges cannot be recorded until a replica has taken over.
    let topology = tokio::task::spawn_blocking(move || {
        let mut topology = topology;
        topology.kill_master_of("{tower-perf:cache:tower-perf}:gen");
        topology
    })
    .await
    .expect("kill");
    tokio::time::sleep(Duration::from_millis(200)).await;
    purge_now();
    tokio::task::spawn_blocking(move || {
        topology.wait_failed_over();
        topology
    })
    .await
    .expect("failover")
}

async fn every_request_is_answered_and_no_purge_is_lost_during_a_failover(topology: Topology) {
    let url = topology.url();
    let origin = Origin::default();
    let a = instance(&url, origin.clone()).await;
    let b = instance(&url, origin.clone()).await;
    let all = paths();
    // Every URL in Redis and in both memory tiers.
    let client = common::client();
    for path in &all {
        client
            .get(format!("{}{path}", a.base))
            .send()
            .await
            .unwrap();
    }
    let n = all.len() as u64;
    assert!(
        until(Duration::from_secs(20), || a
            .cache
            .snapshot()
            .redis
            .unwrap()
            .stores
            >= n)
        .await
    );
    for path in &all {
        client
            .get(format!("{}{path}", b.base))
            .send()
            .await
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let load = start_load(
        [a.base.clone(), b.base.clone()],
        6,
        stop.clone(),
        log.clone(),
    );
    more_requests(&log, 300).await;

    // Redis fails over; the purges are issued through A meanwhile.
    let failover_started = Instant::now();
    let mark = Arc::new(AtomicU64::new(0));
    let purged_at = Arc::new(Mutex::new(None));
    let topology = fail_over(topology, {
        let (a_cache, mark, purged_at) = (a.cache.clone(), mark.clone(), purged_at.clone());
        move || {
            mark.store(origin.calls.load(SeqCst), SeqCst);
            *purged_at.lock().unwrap() = Some(Instant::now());
            a_cache.purge_tags(["victim"], true);
            a_cache.purge_prefix("/items/soft-", false);
        }
    })
    .await;
    let failed_over = Instant::now();
    let mark = mark.load(SeqCst);
    let purged_at = purged_at.lock().unwrap().expect("purged");

    // The purges reach Redis (A's outbox retries until they do), then B: by message, or by
    // reloading the records when its counter poll sees it missed them.
    assert!(
        until(Duration::from_secs(60), || {
            a.cache.snapshot().redis.unwrap().purges_sent >= 2
        })
        .await,
        "A recorded its purges: {:?}",
        a.cache.snapshot().redis
    );
    let resyncs = b.cache.snapshot().redis.unwrap().resyncs;
    assert!(
        until(Duration::from_secs(30), || {
            let r = b.cache.snapshot().redis.unwrap();
            r.purges_received >= 2 || r.resyncs > resyncs
        })
        .await,
        "B has the purges: {:?}",
        b.cache.snapshot().redis
    );
    let b_has_purges = Instant::now();

    // The link comes back by itself: Redis hits and shared decisions resume.
    assert!(
        redis_serves_again(&a, &b, "after-a").await,
        "A to B through Redis"
    );
    assert!(
        redis_serves_again(&b, &a, "after-b").await,
        "B to A through Redis"
    );
    let decided = [
        a.limit.snapshot().redis_decisions,
        b.limit.snapshot().redis_decisions,
    ];
    more_requests(&log, 300).await;
    stop.store(true, SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let after = [
        a.limit.snapshot().redis_decisions,
        b.limit.snapshot().redis_decisions,
    ];
    assert!(
        after[0] > decided[0] && after[1] > decided[1],
        "{decided:?} {after:?}"
    );

    let log = std::mem::take(&mut *log.lock().unwrap());
    let failed: Vec<&Record> = log.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        log.len(),
        &failed[..failed.len().min(5)]
    );
    let during = log
        .iter()
        .filter(|r| r.started >= failover_started && r.started < failed_over)
        .count();
    assert!(during > 0, "requests were made during the failover");

    // No purged response came back from a cache: A has its purges at once, B from the point
    // checked above.
    let purged = |path: usize| all[path].contains("victim") || all[path].contains("soft");
    let since = [purged_at, b_has_purges];
    let stale: Vec<&Record> = log
        .iter()
        .filter(|r| purged(r.path) && r.hit && r.started > since[r.instance] && r.made <= mark)
        .collect();
    assert!(
        stale.is_empty(),
        "purged responses served again (made <= {mark}): {stale:?}"
    );
    for inst in [&a, &b] {
        for (i, path) in all.iter().enumerate().filter(|(i, _)| purged(*i)) {
            let body = common::get_text(&client, format!("{}{path}", inst.base)).await;
            let made: u64 = body.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(made > mark, "{path} ({i}) after the failover: {body}");
        }
    }
    // The failover was felt (Redis calls failed), and went unnoticed by clients.
    let felt = |l: &RedisLink| {
        let s = l.snapshot();
        s.errors + s.timeouts + s.skipped
    };
    assert!(felt(&a.link) + felt(&b.link) > 0);
    assert!(!a.link.snapshot().open && !b.link.snapshot().open);
    drop(topology);
}

on_topology!(
    cluster,
    Cluster,
    every_request_is_answered_and_no_purge_is_lost_during_a_failover
);
on_topology!(
    sentinel,
    Sentinel,
    every_request_is_answered_and_no_purge_is_lost_during_a_failover
);
