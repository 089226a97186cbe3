//! The Redis tier of `ResponseCacheLayer` against real Redis (started by the test on free
//! loopback ports) and real axum servers on loopback with a real HTTP client.
//!
//! The multi-instance tests run on every topology (`single::`, `cluster::`, `sentinel::`: one
//! server, a Redis Cluster of 3 masters with a replica each, a master and a replica behind 3
//! sentinels); those that kill and restart Redis run on one server.
//!
//! Two layers with separate memory tiers stand for two instances of one application. These
//! tests run on the real clock: paused time would jump past the Redis deadlines while a reply
//! is on its way. They wait for background work (a store, a pub/sub message) by polling with a
//! bound, and assert what happened, never how fast.

#![cfg(feature = "redis")]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::redis::RedisServer;
use common::topology::{Kind, Topology};
use common::{client, serve};
use tower_perf::cache::{CacheHandle, ResponseCacheLayer};
use tower_perf::redis::RedisLink;

#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    /// When set, the handler answers only once the test adds a permit: an explicit signal
    /// instead of a delay that hopes to be long enough.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

async fn item(State(o): State<Origin>, Path(id): Path<String>) -> impl IntoResponse {
    let n = o.calls.fetch_add(1, SeqCst) + 1;
    if let Some(gate) = &o.gate {
        gate.acquire().await.expect("gate open").forget();
    }
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::HeaderName::from_static("cache-tag"), "items"),
            (header::VARY, "accept-encoding"),
        ],
        body(&id, n),
    )
}

/// `item {id} version {n}`, padded to 20,000 bytes when the id starts with `large`.
fn body(id: &str, n: usize) -> String {
    let mut body = format!("item {id} version {n}");
    if id.starts_with("large") {
        while body.len() < 20_000 {
            body.push_str(" padding");
        }
        body.truncate(20_000);
    }
    body
}

fn link(url: String) -> RedisLink {
    RedisLink::builder()
        .url(url)
        // Generous: a loaded test machine must not turn a slow reply into a failure.
        .deadline(Duration::from_secs(2))
        .failure_threshold(2)
        .cool_down(Duration::from_millis(100), Duration::from_millis(400))
        .build()
        .expect("link")
}

/// One application instance: its own memory tier, the shared Redis.
async fn instance(redis: &impl Url, origin: Origin) -> (String, CacheHandle) {
    let link = link(redis.url());
    assert!(link.connect(Duration::from_secs(10)).await, "connected");
    let layer = ResponseCacheLayer::builder()
        .ignore_host(true)
        .redis(link)
        .build()
        .expect("cache");
    let handle = layer.handle();
    let app = Router::new()
        .route("/items/{id}", get(item))
        .with_state(origin)
        .layer(layer);
    let addr = serve(app).await;
    (format!("http://{addr}"), handle)
}

/// What an instance connects to: one server, or a topology.
trait Url {
    fn url(&self) -> String;
}

impl Url for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
}

impl Url for Topology {
    fn url(&self) -> String {
        Topology::url(self)
    }
}

/// No Redis call of either instance failed: in a cluster, no `CROSSSLOT` (every multi-key
/// command and script stays in one slot) and no redirection that fred could not follow.
fn assert_no_redis_errors(handles: &[&CacheHandle]) {
    for h in handles {
        let redis = h.snapshot().redis.expect("redis tier");
        assert_eq!(
            (redis.errors, redis.link.errors, redis.link.timeouts),
            (0, 0, 0),
            "{redis:?}"
        );
    }
}

struct Reply {
    status: u16,
    cache_status: String,
    body: String,
}

async fn get_url(url: impl AsRef<str>) -> Reply {
    let url = url.as_ref();
    let res = client()
        .get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let cache_status = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Reply {
        status,
        cache_status,
        body: res.text().await.expect("body"),
    }
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; the time it took.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond().then(|| start.elapsed())
}

fn stores(h: &CacheHandle) -> u64 {
    h.snapshot().redis.expect("redis tier").stores
}

async fn a_response_stored_through_one_instance_is_a_redis_hit_through_the_other(redis: Topology) {
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;

    let first = get_url(&format!("{a}/items/1")).await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status.contains("stored"),
        "{}",
        first.cache_status
    );
    assert!(
        until(Duration::from_secs(5), || stores(&ha) == 1)
            .await
            .is_some(),
        "the entry reached Redis"
    );

    let second = get_url(&format!("{b}/items/1")).await;
    assert_eq!(second.body, "item 1 version 1", "B served A's response");
    assert!(
        second.cache_status.contains("hit") && second.cache_status.contains("detail=redis"),
        "{}",
        second.cache_status
    );
    assert_eq!(origin.calls.load(SeqCst), 1, "the origin was asked once");
    let stats = hb.snapshot();
    assert_eq!(stats.redis.unwrap().hits, 1);

    // The Redis hit filled B's memory tier: the next one does not need Redis.
    let third = get_url(&format!("{b}/items/1")).await;
    assert!(third.cache_status.contains("hit"), "{}", third.cache_status);
    assert!(
        !third.cache_status.contains("redis"),
        "{}",
        third.cache_status
    );
    assert_eq!(hb.snapshot().redis.unwrap().hits, 1);

    // Every key this tier wrote has a TTL.
    let keys = redis.keys("*");
    assert!(!keys.is_empty());
    for key in keys {
        let ttl = redis.command(&["PTTL", &key]).unwrap_or_default();
        let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap_or(-9);
        assert!(ttl > 0, "{key} has a TTL, got {ttl}");
    }
    assert_no_redis_errors(&[&ha, &hb]);
}

async fn a_tag_purge_through_one_instance_reaches_the_other_memory_tier(redis: Topology) {
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;

    get_url(&format!("{a}/items/7")).await;
    until(Duration::from_secs(5), || stores(&ha) == 1).await;
    get_url(&format!("{b}/items/7")).await; // Redis hit, now in B's memory
    let in_memory = get_url(&format!("{b}/items/7")).await;
    assert!(in_memory.cache_status.contains("hit"));
    assert_eq!(origin.calls.load(SeqCst), 1);
    // Both instances listen to the channel before the purge is sent.
    until(Duration::from_secs(5), || {
        ha.snapshot().redis.unwrap().listening && hb.snapshot().redis.unwrap().listening
    })
    .await
    .expect("both instances loaded the purge records");

    ha.purge_tags(["items"], false);
    // Counted when the channel's message is applied (a purge found by the counter poll
    // reloads the records instead, counted as a resync).
    until(Duration::from_secs(5), || {
        hb.snapshot().redis.unwrap().purges_received >= 1
    })
    .await
    .expect("B received the purge by message");

    let after = get_url(&format!("{b}/items/7")).await;
    assert_eq!(
        after.body, "item 7 version 2",
        "B did not serve the purged entry"
    );
    assert!(
        !after.cache_status.contains("; hit"),
        "{}",
        after.cache_status
    );
    assert_eq!(origin.calls.load(SeqCst), 2);

    // A hard purge also gives B's memory back at once.
    assert_eq!(hb.snapshot().entries, 1);
    ha.purge_tags(["items"], true);
    until(Duration::from_secs(5), || {
        hb.snapshot().redis.unwrap().purges_received >= 2
    })
    .await
    .expect("B received the hard purge");
    assert!(
        until(Duration::from_secs(2), || hb.snapshot().entries == 0)
            .await
            .is_some(),
        "B dropped the entry"
    );
    assert_no_redis_errors(&[&ha, &hb]);
}

/// Entries stored through A under `paths`, then read through B (Redis hits, now in B's
/// memory too); returns the bodies B served.
async fn shared_through_both(a: &str, b: &str, ha: &CacheHandle, paths: &[String]) -> Vec<String> {
    let before = stores(ha);
    for path in paths {
        assert_eq!(get_url(format!("{a}{path}")).await.status, 200);
    }
    let n = before + paths.len() as u64;
    until(Duration::from_secs(10), || stores(ha) == n)
        .await
        .expect("every entry reached Redis");
    let mut bodies = Vec::new();
    for path in paths {
        let r = get_url(format!("{b}{path}")).await;
        assert!(
            r.cache_status.contains("hit") && r.cache_status.contains("detail=redis"),
            "{path}: {}",
            r.cache_status
        );
        bodies.push(r.body);
    }
    bodies
}

async fn entries_on_every_slot_are_shared_and_each_url_keeps_one_slot(redis: Topology) {
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;
    let paths: Vec<String> = (0..48).map(|i| format!("/items/spread-{i}")).collect();
    let bodies = shared_through_both(&a, &b, &ha, &paths).await;
    for (i, body) in bodies.iter().enumerate() {
        assert!(
            body.starts_with(&format!("item spread-{i} version")),
            "{body}"
        );
    }
    assert_eq!(
        origin.calls.load(SeqCst),
        48,
        "B asked the origin for nothing"
    );
    let spread = redis.keys_per_master("*:e:*");
    if redis.kind() == Kind::Cluster {
        // Each URL's keys share a hash tag (one slot), and URLs spread over every master.
        assert_eq!(spread.len(), 3);
        assert!(
            spread.iter().all(|&n| n > 0),
            "entries on every master: {spread:?}"
        );
    }
    // Its `Vary` names and its entry: two keys per URL.
    assert_eq!(spread.iter().sum::<usize>(), 96, "{spread:?}");
    assert_no_redis_errors(&[&ha, &hb]);
}

async fn prefix_and_uri_purges_reach_the_other_instance_by_message(redis: Topology) {
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;
    let paths: Vec<String> = ["p-1", "p-2", "q-1", "q-2"]
        .iter()
        .map(|id| format!("/items/{id}"))
        .collect();
    let before = shared_through_both(&a, &b, &ha, &paths).await;
    // Both instances listen to the channel (from their first request on) before the purges.
    until(Duration::from_secs(5), || {
        ha.snapshot().redis.unwrap().listening && hb.snapshot().redis.unwrap().listening
    })
    .await
    .expect("both instances loaded the purge records");

    // Through A: a soft purge of a prefix, a hard purge of one URI.
    ha.purge_prefix("/items/p-", false);
    ha.purge_uri("/items/q-1", true);
    until(Duration::from_secs(5), || {
        hb.snapshot().redis.unwrap().purges_received >= 2
    })
    .await
    .expect("B received both purges by message");

    // B serves the purged ones from the origin again, the other one from its memory.
    for (path, old) in paths.iter().zip(&before) {
        let r = get_url(format!("{b}{path}")).await;
        assert_eq!(r.status, 200);
        if path.ends_with("q-2") {
            assert_eq!(&r.body, old, "{path} was not purged");
            assert!(r.cache_status.contains("hit"), "{}", r.cache_status);
        } else {
            assert_ne!(&r.body, old, "{path} was purged: {}", r.cache_status);
        }
    }
    // Nor does A serve them (its memory tier, or Redis) from before the purge.
    for (path, old) in paths.iter().zip(&before).take(3) {
        let r = get_url(format!("{a}{path}")).await;
        assert_ne!(&r.body, old, "{path} through A: {}", r.cache_status);
    }
    assert_no_redis_errors(&[&ha, &hb]);
}

/// A large body promoted from Redis into the memory tier is copied out of the reply into
/// pages of its own, as the bodies the instance stores itself.
#[tokio::test]
async fn a_large_body_promoted_from_redis_lives_in_pages() {
    let redis = RedisServer::start();
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;

    let first = get_url(format!("{a}/items/large-1")).await;
    assert_eq!(first.body, body("large-1", 1));
    assert_eq!(ha.snapshot().bytes_in_pages, 5 * 4096);
    assert!(until(Duration::from_secs(5), || stores(&ha) == 1)
        .await
        .is_some());
    assert_eq!(hb.snapshot().bytes_in_pages, 0);
    let second = get_url(format!("{b}/items/large-1")).await;
    assert!(
        second.cache_status.contains("detail=redis"),
        "{}",
        second.cache_status
    );
    assert_eq!(second.body, first.body);
    assert_eq!(
        hb.snapshot().bytes_in_pages,
        5 * 4096,
        "promoted into pages"
    );
    assert_eq!(origin.calls.load(SeqCst), 1);
    assert_no_redis_errors(&[&ha, &hb]);
}

#[tokio::test]
async fn requests_are_answered_while_redis_is_down_and_the_tier_comes_back() {
    let mut redis = RedisServer::start();
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;

    get_url(&format!("{a}/items/1")).await;
    until(Duration::from_secs(5), || stores(&ha) == 1).await;

    redis.kill();
    for i in 0..20 {
        for base in [&a, &b] {
            let r = get_url(&format!("{base}/items/{}", i % 4)).await;
            assert_eq!(r.status, 200, "answered from memory or the origin");
            assert!(r.body.starts_with(&format!("item {}", i % 4)), "{}", r.body);
        }
    }
    let link = hb.snapshot().redis.unwrap();
    assert!(link.errors > 0, "B counted Redis errors: {link:?}");
    assert!(link.link.opened > 0, "B's link breaker opened: {link:?}");

    redis.restart();
    // A new key stored through A becomes a Redis hit through B once the link is back.
    let served_from_redis = async {
        for n in 0..200 {
            let path = format!("/items/back-{n}");
            get_url(&format!("{a}{path}")).await;
            let stored = until(Duration::from_millis(500), || {
                ha.snapshot().redis.unwrap().stores > 1
            })
            .await;
            if stored.is_none() {
                continue;
            }
            let r = get_url(&format!("{b}{path}")).await;
            if r.cache_status.contains("detail=redis") {
                return true;
            }
        }
        false
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(30), served_from_redis)
            .await
            .unwrap_or(false),
        "the tier works again after Redis restarts"
    );
}

async fn a_corrupt_value_in_redis_is_a_miss_and_is_replaced(redis: Topology) {
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;

    get_url(&format!("{a}/items/9")).await;
    until(Duration::from_secs(5), || stores(&ha) == 1).await;
    let entry_keys: Vec<String> = redis
        .keys("*:e:*")
        .into_iter()
        .filter(|k| !k.ends_with(":v") && !k.ends_with(":lease"))
        .collect();
    assert_eq!(entry_keys.len(), 1, "{entry_keys:?}");
    for garbage in [&b"\x01garbage"[..], b"\xff\xff", b""] {
        redis
            .command_bytes(&[b"SET", entry_keys[0].as_bytes(), garbage, b"PX", b"60000"])
            .expect("SET");
    }

    let r = get_url(&format!("{b}/items/9")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body, "item 9 version 2",
        "the corrupt value was not served"
    );
    assert_eq!(hb.snapshot().redis.unwrap().corrupt, 1);
    // B's response replaced it in Redis.
    until(Duration::from_secs(5), || stores(&hb) == 1)
        .await
        .expect("B stored a good copy");
    let value = redis.command(&["GET", &entry_keys[0]]).unwrap_or_default();
    assert!(value.contains("item 9 version 2"), "{value:?}");
}

on_every_topology!(
    a_response_stored_through_one_instance_is_a_redis_hit_through_the_other,
    a_tag_purge_through_one_instance_reaches_the_other_memory_tier,
    entries_on_every_slot_are_shared_and_each_url_keeps_one_slot,
    prefix_and_uri_purges_reach_the_other_instance_by_message,
    a_corrupt_value_in_redis_is_a_miss_and_is_replaced,
    a_cold_key_requested_through_both_instances_at_once_reaches_the_origin_once,
    an_uncacheable_response_releases_the_lease_at_once,
);

async fn a_cold_key_requested_through_both_instances_at_once_reaches_the_origin_once(
    redis: Topology,
) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = Origin {
        gate: Some(gate.clone()),
        ..Origin::default()
    };
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;

    let ra = tokio::spawn(get_url(format!("{a}/items/cold")));
    let rb = tokio::spawn(get_url(format!("{b}/items/cold")));
    // The origin answers only once one instance holds the lease (inside the origin) and the
    // other waits on it.
    until(Duration::from_secs(10), || {
        origin.calls.load(SeqCst) == 1
            && ha.snapshot().redis.unwrap().lease_waits + hb.snapshot().redis.unwrap().lease_waits
                == 1
    })
    .await
    .expect("one instance at the origin, the other waiting on its lease");
    gate.add_permits(1);
    let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
    assert_eq!((ra.status, rb.status), (200, 200));
    assert_eq!(ra.body, "item cold version 1");
    assert_eq!(rb.body, "item cold version 1");
    assert_eq!(
        origin.calls.load(SeqCst),
        1,
        "one origin request for the fleet"
    );
    let waited =
        hb.snapshot().redis.unwrap().lease_waits + ha.snapshot().redis.unwrap().lease_waits;
    assert_eq!(waited, 1, "one instance waited on the other's lease");
    assert_no_redis_errors(&[&ha, &hb]);
}

/// `GET /private`: counted in `calls`, answers once `gate` has a permit, not storable.
fn private_gated(calls: Arc<AtomicUsize>, gate: Arc<tokio::sync::Semaphore>) -> Router {
    Router::new().route(
        "/private",
        get(move || {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                calls.fetch_add(1, SeqCst);
                gate.acquire().await.expect("gate open").forget();
                ([(header::CACHE_CONTROL, "private")], "mine")
            }
        }),
    )
}

async fn an_uncacheable_response_releases_the_lease_at_once(redis: Topology) {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    // Built lazily (the link connects on first use): the lease-free path of a fresh link.
    let make = |calls: Arc<AtomicUsize>, gate: Arc<tokio::sync::Semaphore>| {
        let layer = ResponseCacheLayer::builder()
            .ignore_host(true)
            .redis(link(redis.url()))
            .build()
            .expect("cache");
        let handle = layer.handle();
        let app = private_gated(calls, gate).layer(layer);
        (app, handle)
    };
    let (app_a, ha) = make(calls.clone(), gate.clone());
    let (app_b, hb) = make(calls.clone(), gate.clone());
    let a = serve(app_a).await;
    let b = serve(app_b).await;
    let ra = tokio::spawn(get_url(format!("http://{a}/private")));
    let rb = tokio::spawn(get_url(format!("http://{b}/private")));
    // One instance at the origin holding the lease, the other waiting on it; then the origin
    // answers with a response that is not stored.
    until(Duration::from_secs(10), || {
        calls.load(SeqCst) == 1
            && ha.snapshot().redis.unwrap().lease_waits + hb.snapshot().redis.unwrap().lease_waits
                == 1
    })
    .await
    .expect("one instance waits on the other's lease");
    let released = Instant::now();
    gate.add_permits(2);
    let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
    assert_eq!((ra.status, rb.status), (200, 200));
    assert_eq!(
        calls.load(SeqCst),
        2,
        "both asked the origin: nothing to share"
    );
    // The waiting instance did not sit out the lease's 5 s expiry.
    assert!(
        released.elapsed() < Duration::from_secs(4),
        "the lease was released when nothing was stored ({:?})",
        released.elapsed()
    );
}

#[tokio::test]
async fn a_redis_that_restarts_empty_does_not_bring_purged_entries_back() {
    let mut redis = RedisServer::start();
    let origin = Origin::default();
    let (a, ha) = instance(&redis, origin.clone()).await;
    let (b, hb) = instance(&redis, origin.clone()).await;
    get_url(format!("{a}/items/5")).await;
    until(Duration::from_secs(5), || stores(&ha) == 1).await;
    get_url(format!("{b}/items/5")).await; // now in B's memory
    until(Duration::from_secs(5), || {
        ha.snapshot().redis.unwrap().listening && hb.snapshot().redis.unwrap().listening
    })
    .await
    .expect("listening");

    // A soft purge: B's memory entry becomes stale and must be revalidated.
    ha.purge_tags(["items"], false);
    until(Duration::from_secs(5), || {
        hb.snapshot().redis.unwrap().purges_received >= 1
    })
    .await
    .expect("B received the purge");

    let resyncs = hb.snapshot().redis.unwrap().resyncs;
    redis.restart();
    until(Duration::from_secs(10), || {
        hb.snapshot().redis.unwrap().resyncs > resyncs
    })
    .await
    .expect("B reloaded the (now empty) purge records after reconnecting");

    let r = get_url(format!("{b}/items/5")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body, "item 5 version 2",
        "the purged entry was not served fresh"
    );
}

#[tokio::test]
async fn a_lease_whose_release_failed_is_released_once_redis_answers_again() {
    let redis = RedisServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    // A short deadline and a breaker that opens on one failure, for a second: the release is
    // not even sent while Redis is paused. A lease that lives 30 s.
    let link = RedisLink::builder()
        .url(redis.url())
        .deadline(Duration::from_millis(100))
        .failure_threshold(1)
        .cool_down(Duration::from_secs(1), Duration::from_secs(1))
        .build()
        .expect("link");
    assert!(link.connect(Duration::from_secs(10)).await);
    let layer = ResponseCacheLayer::builder()
        .ignore_host(true)
        .coalesce(true, Duration::from_secs(30))
        .redis(link.clone())
        .build()
        .expect("cache");
    let app = private_gated(calls.clone(), gate.clone()).layer(layer);
    let addr = serve(app).await;
    let leases = || redis.keys("*:lease");
    let r = tokio::spawn(get_url(format!("http://{addr}/private")));
    until(Duration::from_secs(10), || {
        calls.load(SeqCst) == 1 && leases().len() == 1
    })
    .await
    .expect("the instance holds the lease, at the origin");

    // Redis stops answering for 1.5 s: another request's lookup misses its deadline and
    // opens the link's breaker, so the release is skipped.
    let paused = redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]);
    assert!(paused.is_some_and(|r| r.starts_with("+OK")));
    let other = tokio::spawn(get_url(format!("http://{addr}/private?other")));
    until(Duration::from_secs(5), || link.snapshot().open)
        .await
        .expect("the breaker opened");
    gate.add_permits(2);
    assert_eq!(r.await.unwrap().status, 200);
    assert_eq!(other.await.unwrap().status, 200);
    assert!(link.snapshot().skipped > 0, "{:?}", link.snapshot());
    // Released once Redis takes writes again, long before the lease's own expiry (30 s).
    assert!(
        until(Duration::from_secs(10), || leases().is_empty())
            .await
            .is_some(),
        "the lease was released: {:?}",
        leases()
    );
}
