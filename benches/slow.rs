//! Per-request cost of `SlowRequestLayer`, against the bare service and against tower-http's
//! `TraceLayer` on the same work, in one run.
//!
//! The inner service answers at once with a small body, so what is measured is the layer itself:
//! one request through `call`, the response future, and the body read to its end (the tracker
//! records at the end of the body). Run with `cargo bench --bench slow`; compare the medians:
//! `layer - bare` is the cost the layer adds per request.
//!
//! Two groups: without a metrics recorder (the facade's calls are no-ops), and with the
//! Prometheus recorder installed (every request updates a histogram and a gauge), which is how
//! the layer runs in production.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::{Empty, Full};
use tower::{service_fn, Layer, Service};
use tower_http::trace::TraceLayer;
use tower_perf::slow::SlowRequestLayer;

/// Polls a future that is ready at once (everything here is), without a runtime.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready"),
    }
}

/// One request through `svc`, its body read to the end.
fn one<S, B>(svc: &mut S, uri: &Uri) -> usize
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
{
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = uri.clone();
    let res = now(svc.call(req)).unwrap_or_else(|e| match e {});
    let mut body = pin!(res.into_body());
    let mut n = 0;
    while let Poll::Ready(Some(frame)) = body
        .as_mut()
        .poll_frame(&mut Context::from_waker(Waker::noop()))
    {
        if let Ok(data) = frame.map(|f| f.into_data()) {
            n += data.map(|d| d.len()).unwrap_or(0);
        }
    }
    n
}

fn app(
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone
{
    // Like an axum JSON handler: a small body with its content type.
    service_fn(|_req: Request<Empty<Bytes>>| async {
        let mut res = Response::new(Full::new(Bytes::from_static(
            b"{\"id\":7,\"name\":\"Harbour View\"}",
        )));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok::<_, Infallible>(res)
    })
}

fn tracker() -> SlowRequestLayer {
    SlowRequestLayer::builder()
        .route_with(|req| {
            req.uri
                .path()
                .starts_with("/items/")
                .then_some("/items/{id}")
        })
        .build()
        .expect("valid configuration")
}

fn group(c: &mut Criterion, name: &str) {
    let uri: Uri = "/items/7".parse().unwrap();
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut bare = app();
    g.bench_function(BenchmarkId::new("per_request", "bare"), |b| {
        b.iter(|| one(&mut bare, &uri))
    });

    let mut slow = tracker().layer(app());
    g.bench_function(BenchmarkId::new("per_request", "SlowRequestLayer"), |b| {
        b.iter(|| one(&mut slow, &uri))
    });

    let mut no_header = SlowRequestLayer::builder()
        .server_timing(false)
        .route_with(|req| {
            req.uri
                .path()
                .starts_with("/items/")
                .then_some("/items/{id}")
        })
        .build()
        .unwrap()
        .layer(app());
    g.bench_function(
        BenchmarkId::new("per_request", "SlowRequestLayer_no_server_timing"),
        |b| b.iter(|| one(&mut no_header, &uri)),
    );

    let mut trace = TraceLayer::new_for_http().layer(app());
    g.bench_function(
        BenchmarkId::new("per_request", "tower_http_TraceLayer"),
        |b| b.iter(|| one(&mut trace, &uri)),
    );
    g.finish();
}

/// The same, inside an axum `Router`: the layer added with `Router::layer` as users do, so it
/// reads the route from `MatchedPath` and the request already carries extensions.
fn axum_group(c: &mut Criterion, name: &str) {
    use axum::routing::get;
    use axum::Router;

    async fn item() -> ([(http::HeaderName, &'static str); 1], &'static str) {
        (
            [(http::header::CONTENT_TYPE, "application/json")],
            "{\"id\":7,\"name\":\"Harbour View\"}",
        )
    }
    let router = || Router::new().route("/items/{id}", get(item));
    // `with_state(())` as `axum::serve` does (`into_make_service`): the routes become services
    // once, not per request.
    let uri: Uri = "/items/7".parse().unwrap();
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut bare = router().with_state(());
    g.bench_function(BenchmarkId::new("axum_request", "bare"), |b| {
        b.iter(|| one(&mut bare, &uri))
    });
    let mut slow = router().layer(SlowRequestLayer::new()).with_state(());
    g.bench_function(BenchmarkId::new("axum_request", "SlowRequestLayer"), |b| {
        b.iter(|| one(&mut slow, &uri))
    });
    let mut trace = router().layer(TraceLayer::new_for_http()).with_state(());
    g.bench_function(
        BenchmarkId::new("axum_request", "tower_http_TraceLayer"),
        |b| b.iter(|| one(&mut trace, &uri)),
    );
    g.finish();
}

fn benches(c: &mut Criterion) {
    group(c, "slow_no_recorder");
    axum_group(c, "slow_axum_no_recorder");
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("install recorder");
    group(c, "slow_prometheus");
    axum_group(c, "slow_axum_prometheus");
}

criterion_group!(slow, benches);
criterion_main!(slow);
