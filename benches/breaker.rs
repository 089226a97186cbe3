//! Per-request cost of `CircuitBreakerLayer` in the closed state, against the bare service and
//! against tower-resilience's circuit breaker with the same settings, and the cost of a rejection
//! while open, in one run.
//!
//! The inner service answers at once, so what is measured is the layer itself: `poll_ready`,
//! `call`, and the response future polled to its end (the breaker records the outcome when the
//! future completes). Run with `cargo bench --bench breaker`; `layer - bare` is the cost the
//! layer adds per call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use tower::{Layer, Service};
use tower_perf::breaker::{CircuitBreakerLayer, DEFAULT_KEY};

/// Polls a future that is ready at once (everything here is), without a runtime.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future was not ready"),
    }
}

/// One call through `svc`; the status, or 0 when the service refused with an error.
fn one<S, E>(svc: &mut S, uri: &Uri) -> u16
where
    S: Service<Request<()>, Response = Response<Full<Bytes>>, Error = E>,
{
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).ok();
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    match now(svc.call(req)) {
        Ok(res) => res.status().as_u16(),
        Err(_) => 0,
    }
}

/// The bare service: answers at once with a small JSON body (a named type, so its future is
/// known to be `Send`, which tower-resilience requires).
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

fn app() -> App {
    App
}

// The same settings for both breakers: last 100 calls, at least 20, open at 50% failures,
// slow at 1 s with a 100% slow-call rate, 5 half-open calls, 30 s open wait.
fn ours() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .count_window(100)
        .minimum_calls(20)
        .failure_rate(0.5)
        .slow_calls(Duration::from_secs(1), 1.0)
        .half_open_calls(5)
        .open_wait(Duration::from_secs(30), Duration::from_secs(30))
        .build()
        .expect("valid configuration")
}

/// tower-resilience's breaker with the settings of [`ours`] (a macro: its classifier closure
/// makes the layer's type unnameable).
macro_rules! resilience {
    () => {
        tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .sliding_window_size(100)
            .minimum_number_of_calls(20)
            .failure_rate_threshold(0.5)
            .slow_call_duration_threshold(Duration::from_secs(1))
            .slow_call_rate_threshold(1.0)
            .permitted_calls_in_half_open(5)
            .wait_duration_in_open(Duration::from_secs(30))
            // Same classification as ours: 5xx and errors are failures.
            .classify_response(|res: &Response<Full<Bytes>>| {
                res.status() >= StatusCode::INTERNAL_SERVER_ERROR
            })
            .build()
            .expect("valid configuration")
            .layer(app())
    };
}

fn benches(c: &mut Criterion) {
    let uri: Uri = "/payments/7/status".parse().unwrap();
    let mut g = c.benchmark_group("breaker");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut bare = app();
    g.bench_function(BenchmarkId::new("closed", "bare"), |b| {
        b.iter(|| one(&mut bare, &uri))
    });

    let mut cb = ours().layer(app());
    g.bench_function(BenchmarkId::new("closed", "CircuitBreakerLayer"), |b| {
        b.iter(|| one(&mut cb, &uri))
    });

    // Without slow calls (the default): one clock read per call instead of two.
    let mut plain = CircuitBreakerLayer::builder()
        .count_window(100)
        .minimum_calls(20)
        .build()
        .unwrap()
        .layer(app());
    g.bench_function(
        BenchmarkId::new("closed", "CircuitBreakerLayer_no_slow_calls"),
        |b| b.iter(|| one(&mut plain, &uri)),
    );

    let mut keyed = CircuitBreakerLayer::builder()
        .count_window(100)
        .minimum_calls(20)
        .slow_calls(Duration::from_secs(1), 1.0)
        .key_with(|req| {
            req.uri
                .path()
                .starts_with("/payments/")
                .then_some("/payments/{id}/status")
        })
        .build()
        .unwrap()
        .layer(app());
    g.bench_function(
        BenchmarkId::new("closed", "CircuitBreakerLayer_key_fn"),
        |b| b.iter(|| one(&mut keyed, &uri)),
    );

    let mut peer = resilience!();
    g.bench_function(BenchmarkId::new("closed", "tower_resilience"), |b| {
        b.iter(|| one(&mut peer, &uri))
    });

    let layer = ours();
    layer.handle().force_open(DEFAULT_KEY);
    let mut open = layer.layer(app());
    assert_eq!(one(&mut open, &uri), 503);
    g.bench_function(
        BenchmarkId::new("open_rejection", "CircuitBreakerLayer"),
        |b| b.iter(|| one(&mut open, &uri)),
    );

    let mut peer_open = resilience!();
    now(peer_open.force_open());
    assert_eq!(one(&mut peer_open, &uri), 0);
    g.bench_function(
        BenchmarkId::new("open_rejection", "tower_resilience"),
        |b| b.iter(|| one(&mut peer_open, &uri)),
    );
    g.finish();
}

criterion_group!(breaker, benches);
criterion_main!(breaker);
