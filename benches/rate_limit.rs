//! Per-request cost of `RateLimitLayer`, against the bare service and against `tower_governor`
//! (governor's keyed GCRA, by peer IP) with the same quota, in one run.
//!
//! Every request comes from one client, whose peer address is in axum's `ConnectInfo`, as
//! `into_make_service_with_connect_info` puts it. The inner service answers at once, so what is
//! measured is the layer: key extraction, the GCRA decision, the headers, the response future
//! and the body read to its end. Run with `cargo bench --bench rate_limit`; `layer - bare` is
//! the cost the layer adds per request.
//!
//! - `allowed`: a quota no request exceeds (10^9 per second, bursts of 200): every request
//!   goes through. Our layer adds `RateLimit-Policy` and `RateLimit` to every response by
//!   default; `tower_governor` adds nothing unless `use_headers()` is set (then
//!   `x-ratelimit-limit` and `x-ratelimit-remaining`), so both are measured both ways.
//! - `limited`: a burst of 1 and one request per hour: every request but the first is
//!   answered `429` (our answer carries a JSON body and four headers; tower_governor's a text
//!   body and two or four headers).
//!
//! Two groups: without a metrics recorder, and with the Prometheus recorder installed.
//!
//! With the `redis` feature (`cargo bench --bench rate_limit --features redis`), a third group,
//! `rate_limit_shared`, starts a `redis-server` on a free loopback port (skipped, with a
//! message, when none is installed) and measures the shared mode on a tokio runtime: one
//! request at a time (the latency of a decision, one Redis round trip) and 64 requests in
//! flight (throughput), each against the in-process layer on the same runtime.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Empty;
use tower::{service_fn, Layer, Service};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::GovernorLayer;
use tower_perf::rate_limit::{Quota, RateLimitLayer};

/// Polls a future that is ready at once (everything here is), without a runtime.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready"),
    }
}

const PEER: ConnectInfo<SocketAddr> = ConnectInfo(SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)),
    50_000,
));

/// One request from the client through `svc`, its body read to the end; the status.
fn one<S, B>(svc: &mut S) -> StatusCode
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
{
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = http::Uri::from_static("/api/v1/properties/7");
    req.extensions_mut().insert(PEER);
    let res = now(svc.call(req)).unwrap_or_else(|e| match e {});
    let status = res.status();
    let mut body = pin!(res.into_body());
    while let Poll::Ready(Some(_)) = body
        .as_mut()
        .poll_frame(&mut Context::from_waker(Waker::noop()))
    {}
    status
}

/// Like an axum JSON handler: a small body with its content type. The body type is axum's,
/// which tower_governor needs for its `429`.
fn app(
) -> impl Service<Request<Empty<Bytes>>, Response = Response<AxumBody>, Error = Infallible> + Clone
{
    service_fn(|_req: Request<Empty<Bytes>>| async {
        let mut res = Response::new(AxumBody::from(Bytes::from_static(
            b"{\"id\":7,\"name\":\"Harbour View\"}",
        )));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok::<_, Infallible>(res)
    })
}

/// The two quotas, as our layer and as governor write them.
struct Case {
    name: &'static str,
    quota: Quota,
    period: Duration,
    burst: u32,
    expect: StatusCode,
}

const CASES: [Case; 2] = [
    Case {
        name: "allowed",
        quota: Quota::per_second(1_000_000_000).burst(200),
        period: Duration::from_nanos(1),
        burst: 200,
        expect: StatusCode::OK,
    },
    Case {
        name: "limited",
        quota: Quota::per_hour(1).burst(1),
        period: Duration::from_secs(3600),
        burst: 1,
        expect: StatusCode::TOO_MANY_REQUESTS,
    },
];

fn group(c: &mut Criterion, name: &str) {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut bare = app();
    g.bench_function(BenchmarkId::new("per_request", "bare"), |b| {
        b.iter(|| one(&mut bare))
    });

    for case in &CASES {
        let check = |status: StatusCode| {
            assert_eq!(status, case.expect, "{}: wrong answer", case.name);
        };

        let mut ours = RateLimitLayer::new(case.quota).unwrap().layer(app());
        one(&mut ours);
        check(one(&mut ours));
        g.bench_function(BenchmarkId::new(case.name, "RateLimitLayer"), |b| {
            b.iter(|| one(&mut ours))
        });

        let mut ours_quiet = RateLimitLayer::builder(case.quota)
            .headers_on_allowed(false)
            .build()
            .unwrap()
            .layer(app());
        one(&mut ours_quiet);
        check(one(&mut ours_quiet));
        g.bench_function(
            BenchmarkId::new(case.name, "RateLimitLayer_no_headers_on_allowed"),
            |b| b.iter(|| one(&mut ours_quiet)),
        );

        let config = GovernorConfigBuilder::default()
            .period(case.period)
            .burst_size(case.burst)
            .finish()
            .unwrap();
        let mut governor = GovernorLayer::new(config).layer(app());
        one(&mut governor);
        check(one(&mut governor));
        g.bench_function(BenchmarkId::new(case.name, "tower_governor"), |b| {
            b.iter(|| one(&mut governor))
        });

        let config = GovernorConfigBuilder::default()
            .period(case.period)
            .burst_size(case.burst)
            .use_headers()
            .finish()
            .unwrap();
        let mut governor_headers = GovernorLayer::new(config).layer(app());
        one(&mut governor_headers);
        check(one(&mut governor_headers));
        g.bench_function(
            BenchmarkId::new(case.name, "tower_governor_use_headers"),
            |b| b.iter(|| one(&mut governor_headers)),
        );
    }
    g.finish();
}

/// The test harness's `redis-server` runner.
#[cfg(feature = "redis")]
#[allow(dead_code)]
#[path = "../tests/common/redis.rs"]
mod redis_server;

/// One request through `svc` on a runtime, its body read to the end; the status.
#[cfg(feature = "redis")]
async fn one_async<S, B>(svc: S) -> StatusCode
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = http::Uri::from_static("/api/v1/properties/7");
    req.extensions_mut().insert(PEER);
    let res = svc.oneshot(req).await.unwrap_or_else(|e| match e {});
    let status = res.status();
    res.into_body().collect().await.expect("body");
    status
}

/// The shared mode against a real Redis on loopback, and the in-process mode on the same
/// runtime.
#[cfg(feature = "redis")]
fn shared_mode(c: &mut Criterion) {
    use criterion::Throughput;
    use futures_util::future::join_all;
    use tower_perf::redis::RedisLink;

    let Some(server) = redis_server::RedisServer::try_start() else {
        eprintln!("rate_limit_shared: skipped, redis-server is not installed");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A deadline far above a loopback round trip, so that every decision is Redis's (checked
    // below): the figure is the round trip, not the fallback.
    let link = rt.block_on(async {
        let link = RedisLink::builder()
            .url(server.url())
            .deadline(Duration::from_millis(250))
            .build()
            .unwrap();
        assert!(link.connect(Duration::from_secs(5)).await, "connected");
        link
    });
    // Never limited: what is measured is the decision, not the 429.
    let quota = Quota::per_second(1_000_000).burst(1_000_000);
    let layer = RateLimitLayer::builder(quota).redis(link).build().unwrap();
    let handle = layer.handle();
    let redis = layer.layer(app());
    let local = RateLimitLayer::new(quota).unwrap().layer(app());
    assert_eq!(rt.block_on(one_async(redis.clone())), StatusCode::OK);
    assert_eq!(handle.snapshot().redis_decisions, 1, "decided by Redis");

    let mut g = c.benchmark_group("rate_limit_shared");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    for (name, svc) in [("redis", redis.clone()), ("in_process", local.clone())] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("sequential", name), |b| {
            b.to_async(&rt).iter(|| one_async(svc.clone()))
        });
        g.throughput(Throughput::Elements(64));
        g.bench_function(BenchmarkId::new("concurrent_64", name), |b| {
            b.to_async(&rt)
                .iter(|| join_all((0..64).map(|_| one_async(svc.clone()))))
        });
    }
    g.finish();
    let stats = handle.snapshot();
    eprintln!(
        "rate_limit_shared: {} decisions by Redis, {} by the fallback, {} Redis errors",
        stats.redis_decisions, stats.fallback_decisions, stats.redis_errors
    );
    drop(server);
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "redis")]
    shared_mode(c);
    group(c, "rate_limit_no_recorder");
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("install recorder");
    group(c, "rate_limit_prometheus");
}

criterion_group!(rate_limit, benches);
criterion_main!(rate_limit);
