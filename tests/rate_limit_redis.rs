//! The shared mode of `RateLimitLayer`: real `redis-server`s from the test harness, real axum
//! servers on loopback, a real HTTP client.
//!
//! Real sockets mean real time (a paused clock would jump past the link's deadlines while a
//! socket is read), so nothing here asserts a speed: quotas refill slowly enough (one request
//! per hour, or per minute) that the time a test takes cannot change a figure, and the link's
//! deadline is a generous 500 ms. Each test identifies clients by an `x-client` header, so a
//! fresh client is a fresh bucket.

//!
//! The tests of sharing run on every topology (`single::`, `cluster::`, `sentinel::`); those
//! that kill and restart Redis run on one server.

#![cfg(feature = "redis")]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing;
use axum::Router;
use common::client;
use common::redis::RedisServer;
use common::topology::Topology;
use http::{HeaderName, StatusCode};
use tower_perf::rate_limit::{Quota, RateLimitHandle, RateLimitLayer, RedisFallback};
use tower_perf::redis::RedisLink;

/// Serves `layer` on a free loopback port with the peer address in `ConnectInfo`.
async fn serve(layer: RateLimitLayer) -> SocketAddr {
    let app = Router::new()
        .route("/items", routing::get(|| async { "items" }))
        .layer(layer);
    common::serve_with_peer(app).await
}

/// A link to `server` with a generous deadline, a breaker that opens after 2 failures and
/// probes again after 100 ms, and `prefix` for its keys. Connected before it is returned.
async fn link(url: String, prefix: &str) -> RedisLink {
    let link = RedisLink::builder()
        .url(url)
        .deadline(Duration::from_millis(500))
        .failure_threshold(2)
        .cool_down(Duration::from_millis(100), Duration::from_millis(200))
        .key_prefix(prefix)
        .build()
        .expect("link");
    assert!(link.connect(Duration::from_secs(5)).await, "connected");
    link
}

/// A shared layer on `link`, clients by `x-client`.
fn shared(quota: Quota, link: RedisLink, fallback: RedisFallback) -> RateLimitLayer {
    RateLimitLayer::builder(quota)
        .key_header(HeaderName::from_static("x-client"))
        .redis(link)
        .redis_fallback(fallback)
        .build()
        .expect("layer")
}

/// One response, its body read.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// GET /items as client `who`. Every request must be answered: a transport error fails the
/// test.
async fn get(addr: SocketAddr, who: &str) -> Answer {
    let res = client()
        .get(format!("http://{addr}/items"))
        .header("x-client", who)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("every request is answered");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.text().await.expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

async fn statuses(addr: SocketAddr, who: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(addr, who).await.status.as_u16());
    }
    out
}

/// The keys the limiter holds in `server` under `prefix`.
fn rate_limit_keys(server: &Topology, prefix: &str) -> Vec<String> {
    server.keys(&format!("{prefix}:rl:*"))
}

/// Waits (up to 10 s) until a request of a throwaway client is decided by Redis again.
async fn until_redis_decides(addr: SocketAddr, handle: &RateLimitHandle) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let before = handle.snapshot().redis_decisions;
        n += 1;
        get(addr, &format!("probe-{n}")).await;
        if handle.snapshot().redis_decisions > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Redis never decided again: {:?}", handle.snapshot());
}

/// One request per hour, bursts of 5: nothing refills while a test runs.
const HOURLY: Quota = Quota::per_hour(1).burst(5);

async fn two_instances_share_one_quota(server: Topology) {
    // Two instances: their own link, their own layer (whose in-process keys would be seeded
    // differently), their own server.
    let a = shared(
        HOURLY,
        link(server.url(), "app").await,
        RedisFallback::Local,
    );
    let b = shared(
        HOURLY,
        link(server.url(), "app").await,
        RedisFallback::Local,
    );
    let (ha, hb) = (a.handle(), b.handle());
    let (a, b) = (serve(a).await, serve(b).await);

    let mut remaining = Vec::new();
    for addr in [a, b, a, b, a] {
        let ans = get(addr, "alice").await;
        assert_eq!(ans.status, StatusCode::OK, "{ans:?}");
        remaining.push(ans.header("ratelimit").unwrap().to_owned());
    }
    assert_eq!(
        remaining,
        (0..5)
            .rev()
            .map(|r| format!("\"default\";r={r};t=3600"))
            .collect::<Vec<_>>()
    );
    // The quota is spent on both instances.
    assert_eq!(get(a, "alice").await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(b, "alice").await.status, StatusCode::TOO_MANY_REQUESTS);
    // Another client has its own budget.
    assert_eq!(get(b, "bob").await.status, StatusCode::OK);

    let (sa, sb) = (ha.snapshot(), hb.snapshot());
    assert_eq!((sa.allowed, sa.limited), (3, 1));
    assert_eq!((sb.allowed, sb.limited), (3, 1));
    assert_eq!(sa.redis_decisions + sb.redis_decisions, 8);
    assert_eq!(sa.fallback_decisions + sb.fallback_decisions, 0);
    assert_eq!(sa.redis_errors + sb.redis_errors, 0);
    // Nothing was decided in process.
    assert_eq!(sa.tracked_keys + sb.tracked_keys, 0);
}

async fn tier_quotas_share_one_budget_whatever_order_the_instances_met_them_in(server: Topology) {
    const GOLD: Quota = Quota::per_hour(1).burst(3).named("gold");
    const SILVER: Quota = Quota::per_hour(1).burst(2).named("silver");
    let layer = |link| {
        RateLimitLayer::builder(HOURLY)
            .key_header(HeaderName::from_static("x-client"))
            .tier_with(|req| match req.headers.get("x-plan")?.as_bytes() {
                b"gold" => Some(GOLD),
                b"silver" => Some(SILVER),
                _ => None,
            })
            .redis(link)
            .build()
            .unwrap()
    };
    let a = serve(layer(link(server.url(), "app").await)).await;
    let b = serve(layer(link(server.url(), "app").await)).await;
    let get_plan = |addr: SocketAddr, plan: &'static str| async move {
        client()
            .get(format!("http://{addr}/items"))
            .header("x-client", "carol")
            .header("x-plan", plan)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // Instance a meets gold first, b silver first: their in-process indices differ.
    assert_eq!(get_plan(a, "gold").await, 200);
    assert_eq!(get_plan(b, "silver").await, 200);
    assert_eq!(get_plan(b, "gold").await, 200);
    assert_eq!(get_plan(a, "silver").await, 200);
    assert_eq!(get_plan(a, "gold").await, 200);
    // Gold: 3 used (a, b, a); silver: 2 used (b, a). Both spent, on both instances.
    for addr in [a, b] {
        assert_eq!(get_plan(addr, "gold").await, 429);
        assert_eq!(get_plan(addr, "silver").await, 429);
    }
    assert_eq!(rate_limit_keys(&server, "app").len(), 2);
}

async fn headers_in_shared_mode_are_those_of_the_in_process_mode(server: Topology) {
    // One request every 6 s, bursts of 3: `t` is 6, whatever milliseconds the test takes.
    let quota = Quota::per_minute(10).burst(3).named("api");
    let redis = serve(shared(
        quota,
        link(server.url(), "app").await,
        RedisFallback::Local,
    ))
    .await;
    let local = serve(
        RateLimitLayer::builder(quota)
            .key_header(HeaderName::from_static("x-client"))
            .build()
            .unwrap(),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = get(redis, "dave").await;
        let l = get(local, "dave").await;
        for name in [
            "ratelimit-policy",
            "ratelimit",
            "retry-after",
            "content-type",
        ] {
            assert_eq!(r.header(name), l.header(name), "{name}");
        }
        assert_eq!((r.status, &r.body), (l.status, &l.body));
        seen.push((
            r.status.as_u16(),
            r.header("ratelimit").unwrap().to_owned(),
            r.header("retry-after").map(str::to_owned),
        ));
    }
    let allowed = |r: u32| (200, format!("\"api\";r={r};t=6"), None);
    let limited = (429, "\"api\";r=0;t=6".to_owned(), Some("6".to_owned()));
    assert_eq!(
        seen,
        [allowed(2), allowed(1), allowed(0), limited.clone(), limited]
    );
    let r = get(redis, "dave").await;
    assert_eq!(r.header("ratelimit-policy"), Some("\"api\";q=10;w=60"));
    assert_eq!(r.body, r#"{"error":"rate limited","retry_after_secs":6}"#);
}

async fn keys_carry_the_prefix_and_expire_when_the_bucket_is_full_again(server: Topology) {
    let addr = serve(shared(
        Quota::per_minute(1).burst(2),
        link(server.url(), "shop-eu").await,
        RedisFallback::Local,
    ))
    .await;
    assert_eq!(get(addr, "erin").await.status, StatusCode::OK);
    let keys = rate_limit_keys(&server, "shop-eu");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    let hex = key.strip_prefix("shop-eu:rl:").expect("the link's prefix");
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    // The bucket is full again one interval (60 s) after one request: the key's TTL.
    // In a cluster, the master of the key's slot.
    let server = server.master_of(key).expect("the key's master");
    let pttl = |server: &RedisServer| -> i64 {
        let reply = server.command(&["PTTL", key]).unwrap();
        reply.trim_start_matches(':').trim().parse().unwrap()
    };
    let ttl = pttl(server);
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    // A second request pushes it to two intervals.
    assert_eq!(get(addr, "erin").await.status, StatusCode::OK);
    let ttl = pttl(server);
    assert!(ttl > 110_000 && ttl <= 120_000, "{ttl}");
    // The script was sent once (EVAL, after EVALSHA's NOSCRIPT), then called by its SHA.
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    let calls = |cmd: &str| -> u64 {
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .unwrap_or_else(|| panic!("no {cmd} in {stats}"));
        let n = line
            .split("calls=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        n.parse().unwrap()
    };
    assert_eq!(calls("eval"), 1, "{stats}");
    assert!(calls("evalsha") >= 2, "{stats}");
    // The value is the TAT in microseconds on the Redis clock.
    let tat: u64 = server
        .command(&["GET", key])
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let time = server.command(&["TIME"]).unwrap();
    let secs: u64 = time.lines().nth(2).unwrap().parse().unwrap();
    let now_us = secs * 1_000_000;
    assert!(
        tat > now_us + 100_000_000 && tat <= now_us + 121_000_000,
        "{tat} {now_us}"
    );
}

on_every_topology!(
    two_instances_share_one_quota,
    tier_quotas_share_one_budget_whatever_order_the_instances_met_them_in,
    headers_in_shared_mode_are_those_of_the_in_process_mode,
    keys_carry_the_prefix_and_expire_when_the_bucket_is_full_again,
    malformed_values_at_the_key_never_panic_and_are_replaced,
);

#[tokio::test]
async fn redis_killed_falls_back_to_the_local_limiter() {
    let mut server = RedisServer::start();
    let layer = shared(
        Quota::per_hour(1).burst(3),
        link(server.url(), "app").await,
        RedisFallback::Local,
    );
    let handle = layer.handle();
    let addr = serve(layer).await;
    assert_eq!(statuses(addr, "frank", 3).await, [200, 200, 200]);
    assert_eq!(statuses(addr, "frank", 1).await, [429]);
    assert_eq!(handle.snapshot().redis_decisions, 4);

    server.kill();
    // Without Redis, this instance decides alone with the same quota: a fresh local bucket.
    let a = get(addr, "frank").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("ratelimit"), Some("\"default\";r=2;t=3600"));
    assert_eq!(statuses(addr, "frank", 3).await, [200, 200, 429]);
    let a = get(addr, "frank").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("3600"));
    let stats = handle.snapshot();
    assert_eq!(stats.redis_decisions, 4);
    assert_eq!(stats.fallback_decisions, 5);
    assert!(stats.redis_errors >= 1, "{stats:?}");
    assert_eq!(stats.tracked_keys, 1);
    assert_eq!((stats.allowed, stats.limited), (6, 3));
}

#[tokio::test]
async fn redis_killed_fails_open_when_configured() {
    let mut server = RedisServer::start();
    let layer = shared(
        Quota::per_hour(1).burst(1),
        link(server.url(), "app").await,
        RedisFallback::FailOpen,
    );
    let handle = layer.handle();
    let addr = serve(layer).await;
    assert_eq!(statuses(addr, "grace", 2).await, [200, 429]);

    server.kill();
    for _ in 0..5 {
        let a = get(addr, "grace").await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        assert_eq!(a.body, "items");
        // No budget to report.
        assert_eq!(a.header("ratelimit"), None);
    }
    let stats = handle.snapshot();
    assert_eq!(stats.fallback_decisions, 5);
    assert_eq!((stats.allowed, stats.limited), (6, 1));
    assert_eq!(stats.tracked_keys, 0, "nothing decided in process");
}

#[tokio::test]
async fn redis_killed_fails_closed_when_configured() {
    let mut server = RedisServer::start();
    let layer = shared(
        Quota::per_hour(1).burst(5),
        link(server.url(), "app").await,
        RedisFallback::FailClosed,
    );
    let handle = layer.handle();
    let addr = serve(layer).await;
    assert_eq!(statuses(addr, "heidi", 1).await, [200]);

    server.kill();
    for _ in 0..4 {
        let a = get(addr, "heidi").await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{a:?}");
        assert_eq!(a.header("retry-after"), Some("1"));
        assert_eq!(a.header("ratelimit"), None);
        assert_eq!(
            a.body,
            r#"{"error":"rate limiter unavailable","retry_after_secs":1}"#
        );
    }
    let stats = handle.snapshot();
    assert_eq!(stats.fallback_decisions, 4);
    assert_eq!((stats.allowed, stats.limited), (1, 4));
}

#[tokio::test]
async fn restarting_redis_restores_sharing() {
    let mut server = RedisServer::start();
    let a = shared(
        HOURLY,
        link(server.url(), "app").await,
        RedisFallback::Local,
    );
    let b = shared(
        HOURLY,
        link(server.url(), "app").await,
        RedisFallback::Local,
    );
    let (ha, hb) = (a.handle(), b.handle());
    let (a, b) = (serve(a).await, serve(b).await);
    assert_eq!(statuses(a, "ivan", 1).await, [200]);

    server.kill();
    // Each instance on its own: ivan gets a local burst of 5 on each.
    assert_eq!(statuses(a, "ivan", 6).await, [200, 200, 200, 200, 200, 429]);
    assert_eq!(statuses(b, "ivan", 6).await, [200, 200, 200, 200, 200, 429]);
    assert!(ha.snapshot().fallback_decisions >= 6);

    server.restart();
    until_redis_decides(a, &ha).await;
    until_redis_decides(b, &hb).await;
    // Shared again (the restarted Redis is empty: judy starts with a full burst of 5).
    let mut seen = Vec::new();
    for addr in [a, b, a, b, a, b, a] {
        seen.push(get(addr, "judy").await.status.as_u16());
    }
    assert_eq!(seen, [200, 200, 200, 200, 200, 429, 429]);
}

async fn malformed_values_at_the_key_never_panic_and_are_replaced(server: Topology) {
    let layer = shared(
        HOURLY,
        link(server.url(), "app").await,
        RedisFallback::FailClosed,
    );
    let handle = layer.handle();
    let addr = serve(layer).await;
    assert_eq!(get(addr, "mallory").await.status, StatusCode::OK);
    let keys = rate_limit_keys(&server, "app");
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_str();

    let plants: [&[&str]; 10] = [
        &["SET", key, "garbage"],
        &["SET", key, ""],
        &["SET", key, "-5"],
        &["SET", key, "1e300"],
        &["SET", key, "nan"],
        &["SET", key, "12.5"],
        &["SET", key, "99999999999999999999999999"],
        // A TAT far in the future (past now + τ): not something the script writes.
        &["SET", key, "9000000000000000"],
        &["HSET", key, "field", "value"],
        &["RPUSH", key, "a", "b"],
    ];
    for plant in plants {
        server.command(&["DEL", key]).unwrap();
        let reply = server.command(plant).unwrap();
        assert!(!reply.starts_with('-'), "{plant:?}: {reply}");
        let before = handle.snapshot();
        // Treated as absent: a full bucket, decided by Redis (FailClosed would answer 503).
        let a = get(addr, "mallory").await;
        assert_eq!(a.status, StatusCode::OK, "{plant:?}: {a:?}");
        assert_eq!(
            a.header("ratelimit"),
            Some("\"default\";r=4;t=3600"),
            "{plant:?}"
        );
        let after = handle.snapshot();
        assert_eq!(
            after.redis_decisions,
            before.redis_decisions + 1,
            "{plant:?}"
        );
        assert_eq!(after.redis_errors, 0, "{plant:?}");
        // Replaced by a TAT that expires.
        let value = server.command(&["GET", key]).unwrap();
        let tat = value.lines().nth(1).unwrap_or("");
        assert!(
            tat.bytes().all(|b| b.is_ascii_digit()) && !tat.is_empty(),
            "{plant:?}: {value}"
        );
        let pttl = server.command(&["PTTL", key]).unwrap();
        assert!(!pttl.starts_with(":-"), "{plant:?}: no TTL ({pttl})");
    }
}

#[tokio::test]
async fn an_outage_costs_one_deadline_per_cool_down_not_one_per_request() {
    let mut server = RedisServer::start();
    // A cool-down far longer than the test: after the breaker opens, no call reaches Redis.
    let link = RedisLink::builder()
        .url(server.url())
        .deadline(Duration::from_millis(500))
        .failure_threshold(2)
        .cool_down(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .unwrap();
    assert!(link.connect(Duration::from_secs(5)).await);
    let layer = shared(HOURLY, link.clone(), RedisFallback::FailOpen);
    let addr = serve(layer).await;
    server.kill();
    for _ in 0..20 {
        assert_eq!(get(addr, "oscar").await.status, StatusCode::OK);
    }
    // The breaker opened after 2 failures: the other 18 requests did not ask Redis at all.
    let stats = link.snapshot();
    assert_eq!(stats.opened, 1, "{stats:?}");
    assert_eq!(stats.errors + stats.timeouts, 2, "{stats:?}");
    assert_eq!(stats.skipped, 18, "{stats:?}");
}

#[test]
fn bad_configuration_names_the_field() {
    let err = RateLimitLayer::builder(HOURLY)
        .redis_seed(7)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "redis_seed");
}

#[test]
fn shared_decisions_are_counted_in_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The recorder is this thread's while the runtime (a current-thread one) runs the test.
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let mut server = RedisServer::start();
            let addr = serve(shared(
                HOURLY,
                link(server.url(), "app").await,
                RedisFallback::Local,
            ))
            .await;
            assert_eq!(statuses(addr, "peggy", 2).await, [200, 200]);
            server.kill();
            assert_eq!(statuses(addr, "peggy", 3).await, [200, 200, 200]);
        })
    });
    let mut counts: Vec<(String, String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name().starts_with("tower_perf_rate_limit_"))
        .map(|(k, _, _, v)| {
            let label = k.key().labels().next().unwrap();
            let n = match v {
                DebugValue::Counter(n) => n,
                other => panic!("not a counter: {other:?}"),
            };
            (
                k.key().name().to_owned(),
                format!("{}={}", label.key(), label.value()),
                n,
            )
        })
        .collect();
    counts.sort();
    let row = |name: &str, label: &str, n| (name.to_owned(), label.to_owned(), n);
    assert_eq!(
        counts,
        [
            row(
                "tower_perf_rate_limit_decisions_total",
                "decision=allowed",
                5
            ),
            row(
                "tower_perf_rate_limit_shared_decisions_total",
                "decided_by=fallback",
                3
            ),
            row(
                "tower_perf_rate_limit_shared_decisions_total",
                "decided_by=redis",
                2
            ),
        ]
    );
}
