//! Per-request cost of `PriorityQueueLayer` when it does not have to queue, against the bare
//! service and against tower's `ConcurrencyLimit` (alone, and with `LoadShed` as one would use
//! it for shedding), in one run.
//!
//! The inner service answers at once and each response body is read to its end (the queue
//! releases its permit there), so what is measured is the layer itself: `poll_ready`, `call`,
//! admission, the response future and the release. Run with `cargo bench --bench queue`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{Layer, Service};
use tower_perf::queue::PriorityQueueLayer;
use tower_perf::{Priority, Route};

/// Polls a future that is ready at once (everything here is), without a runtime.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready"),
    }
}

/// One call through `svc`, body read to its end; the number of body bytes.
fn one<S, B>(svc: &mut S) -> usize
where
    S: Service<Request<()>, Response = Response<B>>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).ok();
    let res = now(svc.call(Request::new(()))).ok().expect("response");
    now(res.into_body().collect()).unwrap().to_bytes().len()
}

#[derive(Clone, Copy)]
struct App;

impl Service<Request<()>> for App {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(
            b"{\"id\":7,\"status\":\"paid\"}",
        )))))
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut bare = App;
    g.bench_function(BenchmarkId::new("admit", "bare"), |b| {
        b.iter(|| one(&mut bare))
    });

    let mut limit = ConcurrencyLimitLayer::new(64).layer(App);
    g.bench_function(BenchmarkId::new("admit", "tower ConcurrencyLimit"), |b| {
        b.iter(|| one(&mut limit))
    });

    let mut shed = LoadShedLayer::new().layer(ConcurrencyLimitLayer::new(64).layer(App));
    g.bench_function(
        BenchmarkId::new("admit", "tower LoadShed+ConcurrencyLimit"),
        |b| b.iter(|| one(&mut shed)),
    );

    let mut queue = PriorityQueueLayer::new(64).unwrap().layer(App);
    g.bench_function(BenchmarkId::new("admit", "PriorityQueueLayer"), |b| {
        b.iter(|| one(&mut queue))
    });

    let mut routed = PriorityQueueLayer::builder()
        .limit(64)
        .trust_priority_header(true)
        .route_priority(Route::prefix("/payments"), Priority::Critical)
        .route_priority(Route::prefix("/reports"), Priority::Low)
        .build()
        .unwrap()
        .layer(App);
    g.bench_function(
        BenchmarkId::new("admit", "PriorityQueueLayer, routes + header"),
        |b| b.iter(|| one(&mut routed)),
    );
    g.finish();
}

criterion_group!(queue, benches);
criterion_main!(queue);
