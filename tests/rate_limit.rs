//! `RateLimitLayer` against a real axum server on loopback, with a real HTTP client.
//!
//! The server is served with `into_make_service_with_connect_info::<SocketAddr>()`, so the layer
//! sees the peer address (always 127.0.0.1 here); distinct clients come from forwarding headers
//! behind a trusted proxy, or from a key header. The clock is paused: refills happen only when a
//! test moves time with `tokio::time::advance`, so every header value is exact.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::alloc::allocations;
use common::{client, serve_with_peer as serve};
use http::StatusCode;
use tower::ServiceExt;
use tower_perf::rate_limit::{ClientKey, ForwardedHeader, Quota, RateLimitLayer};
use tower_perf::Rejected;

#[global_allocator]
static ALLOCATOR: common::alloc::CountingAllocator = common::alloc::CountingAllocator;

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/items", get(|| async { "items" }))
        .route("/export", get(|| async { "export" }))
        .route("/health", get(|| async { "ok" }))
        .layer(layer)
}

/// One response, its body read.
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

async fn get_with(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client.get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.text().await.expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

async fn status(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    get_with(client, addr, path, headers).await.status
}

/// One request every 10 s, bursts of 5.
const SLOW: Quota = Quota::new(1, Duration::from_secs(10)).burst(5);

#[tokio::test(start_paused = true)]
async fn burst_then_limit_with_exact_headers_and_body() {
    let layer = RateLimitLayer::new(SLOW).unwrap();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let client = client();

    for left in (0..5).rev() {
        let a = get_with(&client, addr, "/items", &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "items");
        assert_eq!(a.header("ratelimit-policy"), Some("\"default\";q=1;w=10"));
        let expected = format!("\"default\";r={left};t=10");
        assert_eq!(a.header("ratelimit"), Some(expected.as_str()));
        assert_eq!(a.header("retry-after"), None);
    }
    let a = get_with(&client, addr, "/items", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("10"));
    assert_eq!(a.header("ratelimit-policy"), Some("\"default\";q=1;w=10"));
    assert_eq!(a.header("ratelimit"), Some("\"default\";r=0;t=10"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.body, r#"{"error":"rate limited","retry_after_secs":10}"#);
    let json: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(json["retry_after_secs"], 10);

    let stats = handle.snapshot();
    assert_eq!((stats.allowed, stats.limited, stats.bypassed), (5, 1, 0));
    assert_eq!(stats.tracked_keys, 1);
}

#[tokio::test(start_paused = true)]
async fn refill_after_one_interval_exactly() {
    let layer = RateLimitLayer::new(SLOW).unwrap();
    let addr = serve(app(layer)).await;
    let client = client();
    for _ in 0..5 {
        assert_eq!(status(&client, addr, "/items", &[]).await, StatusCode::OK);
    }
    let a = get_with(&client, addr, "/items", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);

    // 1 ms short of one interval: still limited, and told to come back in (rounded up) 1 s.
    tokio::time::advance(Duration::from_millis(9_999)).await;
    let a = get_with(&client, addr, "/items", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("ratelimit"), Some("\"default\";r=0;t=1"));

    // At one interval: exactly one more.
    tokio::time::advance(Duration::from_millis(1)).await;
    let a = get_with(&client, addr, "/items", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("ratelimit"), Some("\"default\";r=0;t=10"));
    assert_eq!(
        status(&client, addr, "/items", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // After three intervals, three more; after a long rest, the whole burst.
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..3 {
        assert_eq!(status(&client, addr, "/items", &[]).await, StatusCode::OK);
    }
    assert_eq!(
        status(&client, addr, "/items", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_secs(3600)).await;
    let a = get_with(&client, addr, "/items", &[]).await;
    assert_eq!(a.header("ratelimit"), Some("\"default\";r=4;t=10"));
}

#[tokio::test(start_paused = true)]
async fn spoofed_forwarding_headers_are_ignored_without_a_trusted_proxy() {
    let layer = RateLimitLayer::new(Quota::per_hour(1).burst(2)).unwrap();
    let addr = serve(app(layer)).await;
    let client = client();
    // Two different claimed addresses from one peer: one budget.
    let a = [("x-forwarded-for", "198.51.100.1")];
    let b = [("x-forwarded-for", "198.51.100.2")];
    let f = [("forwarded", "for=198.51.100.3")];
    assert_eq!(status(&client, addr, "/items", &a).await, StatusCode::OK);
    assert_eq!(status(&client, addr, "/items", &b).await, StatusCode::OK);
    assert_eq!(
        status(&client, addr, "/items", &a).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status(&client, addr, "/items", &f).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status(&client, addr, "/items", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn x_forwarded_for_is_honoured_behind_a_trusted_proxy() {
    let layer = RateLimitLayer::builder(Quota::per_hour(1).burst(1))
        .trusted_proxies(["127.0.0.1", "10.0.0.0/8"])
        .build()
        .unwrap();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let client = client();
    let limited = StatusCode::TOO_MANY_REQUESTS;

    // Different clients, different budgets.
    let one = [("x-forwarded-for", "198.51.100.1")];
    let two = [("x-forwarded-for", "198.51.100.2")];
    assert_eq!(status(&client, addr, "/items", &one).await, StatusCode::OK);
    assert_eq!(status(&client, addr, "/items", &one).await, limited);
    assert_eq!(status(&client, addr, "/items", &two).await, StatusCode::OK);
    assert_eq!(status(&client, addr, "/items", &two).await, limited);

    // The right-most untrusted hop is the client: what the client prepends does not help,
    // and trusted proxies on the right are skipped.
    let spoofed = [("x-forwarded-for", "203.0.113.50, 198.51.100.1")];
    assert_eq!(status(&client, addr, "/items", &spoofed).await, limited);
    let chain = [("x-forwarded-for", "198.51.100.2, 10.1.2.3, 127.0.0.1")];
    assert_eq!(status(&client, addr, "/items", &chain).await, limited);
    let fresh = [("x-forwarded-for", "198.51.100.1, 198.51.100.3, 10.0.0.9")];
    assert_eq!(
        status(&client, addr, "/items", &fresh).await,
        StatusCode::OK
    );

    // Malformed: the peer's own budget (127.0.0.1), shared with requests without the header.
    let malformed = [("x-forwarded-for", "not an address")];
    assert_eq!(
        status(&client, addr, "/items", &malformed).await,
        StatusCode::OK
    );
    assert_eq!(status(&client, addr, "/items", &[]).await, limited);
    let unknown = [("x-forwarded-for", "198.51.100.9, unknown")];
    assert_eq!(status(&client, addr, "/items", &unknown).await, limited);

    // IPv6 clients by /64.
    let v6a = [("x-forwarded-for", "2001:db8:1:2::1")];
    let v6b = [("x-forwarded-for", "[2001:db8:1:2::ffff]:443")];
    assert_eq!(status(&client, addr, "/items", &v6a).await, StatusCode::OK);
    assert_eq!(status(&client, addr, "/items", &v6b).await, limited);

    // A client can be forgiven through the handle.
    assert!(handle.reset(ClientKey::ip("198.51.100.1".parse().unwrap())));
    assert_eq!(status(&client, addr, "/items", &one).await, StatusCode::OK);
    assert_eq!(handle.snapshot().tracked_keys, 5);
}

#[tokio::test(start_paused = true)]
async fn forwarded_header_with_ipv6_and_ports() {
    let layer = RateLimitLayer::builder(Quota::per_hour(1).burst(1))
        .trusted_proxies(["127.0.0.1"])
        .forwarded_header(ForwardedHeader::Forwarded)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let client = client();
    let limited = StatusCode::TOO_MANY_REQUESTS;

    let loopback6 = [("forwarded", "for=\"[::1]:4711\"")];
    assert_eq!(
        status(&client, addr, "/items", &loopback6).await,
        StatusCode::OK
    );
    assert_eq!(status(&client, addr, "/items", &loopback6).await, limited);

    let v6 = [(
        "forwarded",
        "for=\"[2001:db8:cafe::17]:4711\";proto=https;by=127.0.0.1",
    )];
    assert_eq!(status(&client, addr, "/items", &v6).await, StatusCode::OK);
    let v4 = [("forwarded", "For=192.0.2.60;proto=http, for=127.0.0.1")];
    assert_eq!(status(&client, addr, "/items", &v4).await, StatusCode::OK);
    let v4_port = [("forwarded", "for=\"192.0.2.60:8080\"")];
    assert_eq!(status(&client, addr, "/items", &v4_port).await, limited);

    // In this mode X-Forwarded-For means nothing: the peer's budget.
    let xff = [("x-forwarded-for", "198.51.100.1")];
    assert_eq!(status(&client, addr, "/items", &xff).await, StatusCode::OK);
    let obfuscated = [("forwarded", "for=_hidden")];
    assert_eq!(status(&client, addr, "/items", &obfuscated).await, limited);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_budget_across_connections() {
    let layer = RateLimitLayer::new(Quota::per_hour(1).burst(6)).unwrap();
    let handle = layer.handle();
    // A second server, with a clone of the layer.
    let other = serve(app(layer.clone())).await;
    let addr = serve(app(layer)).await;
    // Separate clients: separate connections, so axum clones the service for each.
    let clients: Vec<reqwest::Client> = (0..4).map(|_| client()).collect();
    for c in &clients[..3] {
        for _ in 0..2 {
            assert_eq!(status(c, addr, "/items", &[]).await, StatusCode::OK);
        }
    }
    assert_eq!(
        status(&clients[3], addr, "/items", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The clone's server shares the budget too.
    assert_eq!(
        status(&clients[0], other, "/items", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(handle.snapshot().allowed, 6);
    assert_eq!(handle.snapshot().limited, 2);
    assert_eq!(handle.tracked_keys(), 1);
}

#[tokio::test(start_paused = true)]
async fn route_quota_bypass_and_tier() {
    const PRO: Quota = Quota::per_hour(1).burst(3).named("pro");
    let layer = RateLimitLayer::builder(Quota::per_hour(1).burst(2))
        .route_quota(
            "/export",
            Quota::new(1, Duration::from_secs(60)).named("export"),
        )
        .bypass_with(|req| req.uri.path() == "/health")
        .tier_with(|req| (req.headers.get("x-plan")? == "pro").then_some(PRO))
        .key_header(http::HeaderName::from_static("x-api-key"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let client = client();
    let limited = StatusCode::TOO_MANY_REQUESTS;
    let alice = [("x-api-key", "alice")];

    // The route has its own budget and policy.
    let a = get_with(&client, addr, "/export", &alice).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("ratelimit-policy"), Some("\"export\";q=1;w=60"));
    assert_eq!(a.header("ratelimit"), Some("\"export\";r=0;t=60"));
    let a = get_with(&client, addr, "/export", &alice).await;
    assert_eq!(a.status, limited);
    assert_eq!(a.header("retry-after"), Some("60"));

    // ... apart from the default one.
    let a = get_with(&client, addr, "/items", &alice).await;
    assert_eq!(a.header("ratelimit"), Some("\"default\";r=1;t=3600"));
    assert_eq!(
        status(&client, addr, "/items", &alice).await,
        StatusCode::OK
    );
    assert_eq!(status(&client, addr, "/items", &alice).await, limited);

    // Another key, another budget.
    let bob = [("x-api-key", "bob")];
    assert_eq!(status(&client, addr, "/items", &bob).await, StatusCode::OK);

    // Bypassed: never limited, no headers.
    for _ in 0..10 {
        let a = get_with(&client, addr, "/health", &alice).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.header("ratelimit").is_none());
        assert!(a.header("ratelimit-policy").is_none());
    }

    // The tier wins over route and default, with its own budget.
    let carol_pro = [("x-api-key", "carol"), ("x-plan", "pro")];
    for left in (0..3).rev() {
        let a = get_with(&client, addr, "/export", &carol_pro).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("ratelimit-policy"), Some("\"pro\";q=1;w=3600"));
        let expected = format!("\"pro\";r={left};t=3600");
        assert_eq!(a.header("ratelimit"), Some(expected.as_str()));
    }
    let a = get_with(&client, addr, "/items", &carol_pro).await;
    assert_eq!(a.status, limited);
    assert_eq!(a.header("ratelimit"), Some("\"pro\";r=0;t=3600"));

    let stats = handle.snapshot();
    assert_eq!(stats.bypassed, 10);
    assert_eq!(stats.allowed, 7);
    assert_eq!(stats.limited, 3);
}

/// Route quotas take a `Route`: a prefix covers every route under it (one budget for all of
/// them), an exact route wins over it; outside a router the route is the path.
#[tokio::test(start_paused = true)]
async fn route_quota_by_prefix_and_by_path_outside_a_router() {
    use tower::{service_fn, ServiceBuilder};
    use tower_perf::Route;

    let layer = RateLimitLayer::builder(Quota::per_hour(1).burst(5))
        .route_quota(Route::prefix("/api/"), Quota::per_hour(1).named("api"))
        .route_quota("/api/health", Quota::per_hour(1).burst(3).named("health"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_req: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }));
    let call = |path: &'static str| {
        let svc = svc.clone();
        async move {
            let mut req = http::Request::get(path).body(()).unwrap();
            req.extensions_mut()
                .insert(SocketAddr::from(([192, 0, 2, 1], 9)));
            let res = svc.oneshot(req).await.unwrap();
            let policy = res.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            (res.status(), policy)
        }
    };
    let api = "\"api\";q=1;w=3600".to_owned();
    assert_eq!(call("/api/a").await, (StatusCode::OK, api.clone()));
    // `/api/b` shares the prefix's budget.
    assert_eq!(
        call("/api/b").await,
        (StatusCode::TOO_MANY_REQUESTS, api.clone())
    );
    // The exact route wins over the prefix.
    let health = "\"health\";q=1;w=3600".to_owned();
    assert_eq!(call("/api/health").await, (StatusCode::OK, health));
    // Elsewhere, the default quota.
    let (status, policy) = call("/other").await;
    assert_eq!(
        (status, policy.as_str()),
        (StatusCode::OK, "\"default\";q=1;w=3600")
    );
    assert_eq!(handle.snapshot().limited, 1);
}

#[tokio::test(start_paused = true)]
async fn keys_are_bounded_with_eviction() {
    let layer = RateLimitLayer::builder(Quota::per_hour(10))
        .key_header(http::HeaderName::from_static("x-api-key"))
        .max_keys(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let client = client();
    for i in 0..1000 {
        let key = format!("key-{i}");
        let s = status(&client, addr, "/items", &[("x-api-key", &key)]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(handle.tracked_keys() <= 100);
    }
    let stats = handle.snapshot();
    assert!(
        stats.tracked_keys <= 100 && stats.tracked_keys > 50,
        "{stats:?}"
    );
    assert_eq!(stats.max_keys, 100);
    assert!(stats.evicted >= 900, "{stats:?}");
    // Once idle, the buckets can be swept.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(handle.sweep() as u64, stats.tracked_keys);
    assert_eq!(handle.tracked_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_peer_address_everyone_shares_one_budget() {
    let layer = RateLimitLayer::new(Quota::per_hour(1).burst(2)).unwrap();
    // Served without `ConnectInfo`.
    let addr = common::serve(app(layer)).await;
    let a = client();
    let b = client();
    assert_eq!(status(&a, addr, "/items", &[]).await, StatusCode::OK);
    assert_eq!(status(&b, addr, "/items", &[]).await, StatusCode::OK);
    assert_eq!(
        status(&a, addr, "/items", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn headers_on_allowed_responses_can_be_turned_off() {
    let layer = RateLimitLayer::builder(Quota::per_hour(1))
        .headers_on_allowed(false)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let client = client();
    let a = get_with(&client, addr, "/items", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("ratelimit").is_none());
    let a = get_with(&client, addr, "/items", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("ratelimit"), Some("\"default\";r=0;t=3600"));
}

#[tokio::test(start_paused = true)]
async fn identify_with_a_function() {
    let layer = RateLimitLayer::builder(Quota::per_hour(1))
        .identify_with(|req| {
            let user = req.headers.get("x-user")?.to_str().ok()?;
            Some(ClientKey::id(user.parse().ok()?))
        })
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let client = client();
    let limited = StatusCode::TOO_MANY_REQUESTS;
    assert_eq!(
        status(&client, addr, "/items", &[("x-user", "1")]).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&client, addr, "/items", &[("x-user", "1")]).await,
        limited
    );
    assert_eq!(
        status(&client, addr, "/items", &[("x-user", "2")]).await,
        StatusCode::OK
    );
    // Not a number: the peer address.
    assert_eq!(
        status(&client, addr, "/items", &[("x-user", "x")]).await,
        StatusCode::OK
    );
    assert_eq!(status(&client, addr, "/items", &[]).await, limited);
}

#[tokio::test(start_paused = true)]
async fn rejected_marker_and_metrics() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let counts = metrics::with_local_recorder(&recorder, || {
        let layer = RateLimitLayer::builder(Quota::per_hour(1))
            .bypass_with(|req| req.uri.path() == "/health")
            .build()
            .unwrap();
        let app = app(layer);
        let peer: SocketAddr = "192.0.2.1:1234".parse().unwrap();
        let request = |path: &str| {
            let mut req = http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        };
        let mut statuses = Vec::new();
        for path in ["/items", "/items", "/health"] {
            let res = futures_util::FutureExt::now_or_never(app.clone().oneshot(request(path)))
                .expect("ready at once")
                .unwrap();
            let rejected = res.extensions().get::<Rejected>().map(|r| r.by());
            statuses.push((res.status().as_u16(), rejected));
        }
        statuses
    });
    assert_eq!(
        counts,
        [(200, None), (429, Some("rate_limit")), (200, None)]
    );
    let mut decisions: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "tower_perf_rate_limit_decisions_total")
        .map(|(k, _, _, v)| {
            let label = k.key().labels().next().unwrap();
            assert_eq!(label.key(), "decision");
            let n = match v {
                metrics_util::debugging::DebugValue::Counter(n) => n,
                other => panic!("not a counter: {other:?}"),
            };
            (label.value().to_owned(), n)
        })
        .collect();
    decisions.sort();
    assert_eq!(
        decisions,
        [
            ("allowed".to_owned(), 1),
            ("bypassed".to_owned(), 1),
            ("limited".to_owned(), 1)
        ]
    );
}

/// The decision for a known client by peer address allocates nothing: no key string, no
/// boxed future. With the headers on, the only allocation is the response's header map
/// making room (the `RateLimit` value is a cached clone).
#[test]
fn the_hot_path_does_not_allocate() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use tower::{service_fn, Layer, Service};

    fn count<S>(svc: &mut S) -> (u64, StatusCode)
    where
        S: Service<
            http::Request<()>,
            Response = http::Response<tower_perf::rate_limit::RateLimitBody<String>>,
        >,
        S::Error: std::fmt::Debug,
    {
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [192, 0, 2, 1],
                9,
            ))));
        let before = allocations();
        let mut fut = pin!(svc.call(req));
        let Poll::Ready(res) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("not ready");
        };
        let status = res.unwrap().status();
        (allocations() - before, status)
    }

    let inner = || {
        service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        })
    };
    let quota = Quota::per_second(1_000_000).burst(200);
    let mut quiet = RateLimitLayer::builder(quota)
        .headers_on_allowed(false)
        .build()
        .unwrap()
        .layer(inner());
    let mut loud = RateLimitLayer::new(quota).unwrap().layer(inner());
    // The first request of a client makes its bucket, and fills the header cache.
    count(&mut quiet);
    count(&mut loud);
    for _ in 0..10 {
        assert_eq!(count(&mut quiet), (0, StatusCode::OK));
        let (n, status) = count(&mut loud);
        assert_eq!(status, StatusCode::OK);
        let (policy, limit) = (
            http::HeaderName::from_static("ratelimit-policy"),
            http::HeaderName::from_static("ratelimit"),
        );
        let mut map = http::HeaderMap::new();
        let before = allocations();
        map.append(policy, http::HeaderValue::from_static("a"));
        map.append(limit, http::HeaderValue::from_static("b"));
        assert_eq!(n, allocations() - before, "beyond the header map's own");
    }
}

#[test]
fn bad_configuration_names_the_field() {
    let field = |b: tower_perf::rate_limit::RateLimitBuilder| b.build().unwrap_err();
    let base = || RateLimitLayer::builder(Quota::per_second(10));

    let e = RateLimitLayer::new(Quota::per_second(0)).unwrap_err();
    assert_eq!(e.field(), "quota");
    assert!(e.reason().contains("rate"), "{e}");
    let e = RateLimitLayer::new(Quota::per_second(10).burst(0)).unwrap_err();
    assert_eq!(e.field(), "quota");
    assert!(e.reason().contains("burst"), "{e}");
    let e = RateLimitLayer::new(Quota::new(1, Duration::ZERO)).unwrap_err();
    assert!(e.reason().contains("period"), "{e}");
    let e = RateLimitLayer::new(Quota::per_second(1).named("two words")).unwrap_err();
    assert_eq!(e.field(), "quota");

    let e = field(base().route_quota("/x", Quota::per_second(0)));
    assert_eq!(e.field(), "route_quota");
    assert!(e.reason().contains("/x"), "{e}");
    for bad in ["10.0.0.0/33", "not-an-ip", "::/129", "10.0.0.0/"] {
        let e = field(base().trusted_proxies(["127.0.0.1", bad]));
        assert_eq!(e.field(), "trusted_proxies");
        assert!(e.reason().contains(bad), "{e}");
    }
    assert_eq!(field(base().max_keys(0)).field(), "max_keys");
    assert_eq!(field(base().ipv6_prefix(0)).field(), "ipv6_prefix");
    assert_eq!(field(base().ipv6_prefix(129)).field(), "ipv6_prefix");
    assert!(base()
        .trusted_proxies(["10.0.0.0/8", "::1", "fd00::/8"])
        .build()
        .is_ok());
}
