//! The cost of a cache hit, against the bare service returning the same `Bytes` and against a
//! peer crate's hit path (axum-response-cache) on the same body, in one run.
//!
//! The body is 20 KB of JSON, like one page of the demo's property list. Every variant returns
//! the same `Bytes` (no copy), so the figures compare the layers, not the handler. Run with
//! `cargo bench --bench cache`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use tower::{service_fn, Layer, Service};
use tower_perf::cache::ResponseCacheLayer;

fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready"),
    }
}

/// One GET through `svc`, the body read to its end; returns the body length.
fn one<S, B, Q>(svc: &mut S, uri: &Uri) -> usize
where
    S: Service<Request<Q>, Response = Response<B>, Error = Infallible>,
    B: Body,
    Q: Default,
{
    let mut req = Request::new(Q::default());
    *req.uri_mut() = uri.clone();
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("bench.local"));
    let res = now(svc.call(req)).unwrap_or_else(|e| match e {});
    let mut body = pin!(res.into_body());
    let mut n = 0;
    while let Poll::Ready(Some(frame)) = body
        .as_mut()
        .poll_frame(&mut Context::from_waker(Waker::noop()))
    {
        if let Ok(frame) = frame {
            if let Some(d) = frame.data_ref() {
                n += bytes::Buf::remaining(d);
            }
        }
    }
    n
}

fn json_body() -> Bytes {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < 20_000 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"Harbour View {i}\",\"city\":\"Lisbon\",\"status\":\"available\",\"monthly_rent\":{}}}",
            1000 + i * 7
        ));
        i += 1;
    }
    s.push(']');
    Bytes::from(s)
}

fn plain(c: &mut Criterion) {
    let body = json_body();
    let uri: Uri = "/api/v1/properties?page=2".parse().unwrap();
    let app = {
        let body = body.clone();
        service_fn(move |_req: Request<()>| {
            let body = body.clone();
            async move {
                let mut res = Response::new(Full::new(body));
                let h = res.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                );
                Ok::<_, Infallible>(res)
            }
        })
    };
    let mut g = c.benchmark_group("cache_plain");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut bare = app.clone();
    g.bench_function(BenchmarkId::new("request", "bare"), |b| {
        b.iter(|| one(&mut bare, &uri))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _rt = rt.enter();
    let mut cached = ResponseCacheLayer::new().layer(app.clone());
    assert_eq!(one(&mut cached, &uri), body.len(), "warm the entry");
    g.bench_function(BenchmarkId::new("request", "ResponseCacheLayer_hit"), |b| {
        b.iter(|| one(&mut cached, &uri))
    });
    g.finish();
}

fn axum_router(c: &mut Criterion) {
    use axum::routing::get;
    use axum::Router;

    let body = json_body();
    let uri: Uri = "/api/v1/properties?page=2".parse().unwrap();
    let router = || {
        let body = body.clone();
        Router::new().route(
            "/api/v1/properties",
            get(move || {
                let body = body.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "public, max-age=3600"),
                        ],
                        body,
                    )
                }
            }),
        )
    };
    let mut g = c.benchmark_group("cache_axum");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _rt = rt.enter();

    let mut bare = router();
    g.bench_function(BenchmarkId::new("request", "bare"), |b| {
        b.iter(|| one::<_, _, axum::body::Body>(&mut bare, &uri))
    });

    let mut ours = router().layer(ResponseCacheLayer::new());
    assert_eq!(one::<_, _, axum::body::Body>(&mut ours, &uri), body.len());
    g.bench_function(BenchmarkId::new("request", "ResponseCacheLayer_hit"), |b| {
        b.iter(|| one::<_, _, axum::body::Body>(&mut ours, &uri))
    });

    let mut peer = router().layer(axum_response_cache::CacheLayer::with_lifespan(
        Duration::from_secs(3600),
    ));
    assert_eq!(one::<_, _, axum::body::Body>(&mut peer, &uri), body.len());
    g.bench_function(
        BenchmarkId::new("request", "axum_response_cache_hit"),
        |b| b.iter(|| one::<_, _, axum::body::Body>(&mut peer, &uri)),
    );
    g.finish();
}

criterion_group!(cache, plain, axum_router);
criterion_main!(cache);
