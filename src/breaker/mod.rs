//! Middleware that fails fast when a dependency fails: keyed circuit breakers with failure-rate
//! and slow-call-rate thresholds, a growing open wait and bounded half-open probes.
//!
//! # How a breaker works
//!
//! Each breaker has a key: the route template (axum's `MatchedPath`) by default, or what
//! [`key_with`](CircuitBreakerBuilder::key_with) returns (for example the upstream host); requests
//! with neither share the [`DEFAULT_KEY`] breaker.
//!
//! - **Closed**: calls go through; each outcome goes into a window, the last N calls
//!   ([`count_window`](CircuitBreakerBuilder::count_window)) or the last N seconds in one-second
//!   buckets ([`time_window`](CircuitBreakerBuilder::time_window)). Once the window holds
//!   [`minimum_calls`](CircuitBreakerBuilder::minimum_calls), the breaker opens when the share
//!   of failed calls reaches [`failure_rate`](CircuitBreakerBuilder::failure_rate), or the share
//!   of slow calls reaches the rate of [`slow_calls`](CircuitBreakerBuilder::slow_calls).
//! - **Open**: calls are answered at once, without reaching the service: `503 Service
//!   Unavailable` with `Retry-After` (the time left, in seconds rounded up) and a small JSON
//!   body, or the [`fallback_with`](CircuitBreakerBuilder::fallback_with)'s response. Either carries the
//!   [`Rejected`](crate::Rejected) marker, so a response cache outside can serve a stale entry
//!   instead. The open wait doubles with each trip that follows without a recovery, up to a cap,
//!   minus a random [`jitter`](CircuitBreakerBuilder::jitter).
//! - **Half-open**: after the wait, at most
//!   [`half_open_calls`](CircuitBreakerBuilder::half_open_calls) probes go through, however many
//!   requests arrive at once (the others get the `503`). When they have all ended, the breaker
//!   closes if they meet the thresholds and opens again otherwise. A probe whose future is
//!   dropped (the client went away) gives its slot back.
//!
//! A call ends when the service returns the response head. It **fails** when the service
//! returns an error, a response the [classifier](CircuitBreakerBuilder::classify_with) calls a
//! failure (by default any `5xx`), or when it runs past the
//! [`call_timeout`](CircuitBreakerBuilder::call_timeout): such a call is dropped and answered
//! `504 Gateway Timeout` (with the `Rejected` marker).
//!
//! Responses the breaker makes itself use the service's body type, built `From<Bytes>` (axum's
//! `Body`, `Full<Bytes>`, ...).
//!
//! # Cost
//!
//! A closed breaker takes no lock to admit a call: one lookup in a copy-on-write map of
//! breakers, one atomic load. Recording the outcome takes the breaker's own small mutex (never a
//! lock shared by all breakers).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_perf::breaker::CircuitBreakerLayer;
//!
//! // Defaults: last 100 calls, at least 20, open at 50% failures, 5 s open wait.
//! let breaker = CircuitBreakerLayer::new();
//!
//! // Or configured: a time window, slow calls, and a callback.
//! let breaker = CircuitBreakerLayer::builder()
//!     .time_window(30)
//!     .minimum_calls(10)
//!     .failure_rate(0.5)
//!     .slow_calls(Duration::from_secs(2), 0.8)
//!     .open_wait(Duration::from_secs(5), Duration::from_secs(120))
//!     .half_open_calls(3)
//!     .on_state_change(|key, from, to| println!("{key}: {from} -> {to}"))
//!     .build()
//!     .expect("valid configuration");
//! let breakers = breaker.handle();
//!
//! // `Router::layer` runs after routing: one breaker per route template.
//! let app: Router = Router::new()
//!     .route("/payments/{id}", get(|| async { "paid" }))
//!     .layer(breaker);
//!
//! // Later, for example in an admin endpoint:
//! let json = serde_json::to_string(&breakers.snapshot()).unwrap();
//! breakers.force_open("/payments/{id}");
//! # let _ = (app, json);
//! ```
//!
//! Outside axum, with `ServiceBuilder` and a key per upstream host:
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_perf::breaker::{CircuitBreakerLayer, State};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .count_window(10)
//!     .minimum_calls(5)
//!     .key_with(|req| req.uri.host())
//!     .build()
//!     .unwrap();
//! let breakers = layer.handle();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<()>| async {
//!     let mut res = Response::new(Full::new(Bytes::from_static(b"down")));
//!     *res.status_mut() = StatusCode::BAD_GATEWAY;
//!     Ok::<_, Infallible>(res)
//! }));
//!
//! for _ in 0..5 {
//!     let req = Request::get("http://flaky.example/").body(()).unwrap();
//!     assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 502);
//! }
//! assert_eq!(breakers.state("flaky.example"), Some(State::Open));
//! let req = Request::get("http://flaky.example/").body(()).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 503);
//! assert!(res.headers().contains_key("retry-after"));
//! # }
//! ```

mod builder;
mod future;
mod layer;
mod open;
mod registry;
mod service;
mod snapshot;
mod state;
mod window;

pub use builder::CircuitBreakerBuilder;
pub use future::ResponseFuture;
pub use layer::{CircuitBreakerHandle, CircuitBreakerLayer};
pub use open::Open;
pub use registry::DEFAULT_KEY;
pub use service::CircuitBreaker;
pub use snapshot::{BreakerSnapshot, CircuitBreakerSnapshot, State};
