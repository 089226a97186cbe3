//! Middleware that tracks the latency of every request: per-route percentiles over a sliding
//! window and since start, a bounded log of recent slow requests, a `Server-Timing` header and
//! metrics.
//!
//! # What it measures
//!
//! For each request the layer measures two times from the moment it receives the request:
//!
//! - **head**: until the inner service returns the response head. It goes into the `total` entry
//!   of `Server-Timing` (the header is written at that moment) and into the slow log's `head_ms`.
//! - **duration**: until the end of the response body, that is, until the last byte was handed
//!   to the server. This is what the percentiles, the slow threshold and the
//!   `http_server_request_duration_seconds` metric use, because a response is not served until
//!   its body is; a handler that returns its head fast and then streams slowly is slow.
//!
//! A client that goes away before the end (the response future or body is dropped) is counted as
//! **canceled**: in the `canceled` figure and, with status `499` if no head was sent yet, in the
//! duration metric. Canceled requests stay out of the latency percentiles.
//!
//! # Routes
//!
//! Figures are kept per route *template*: axum's `MatchedPath` when the layer runs inside the
//! router (`Router::layer`), else what [`route_with`](SlowRequestBuilder::route_with) returns, else
//! the `unmatched` bucket. The raw path is never a key, and the number of routes is bounded
//! ([`max_routes`](SlowRequestBuilder::max_routes)); routes beyond the bound share `overflow`.
//! A route's own slow threshold ([`route_threshold`](SlowRequestBuilder::route_threshold))
//! is set for one route, or for every route under a [`Route::prefix`](crate::Route::prefix).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_perf::slow::SlowRequestLayer;
//!
//! // Defaults: 1 s threshold, 60 s window, `Server-Timing` on.
//! let tracker = SlowRequestLayer::new();
//!
//! // Or configured: a tighter threshold, and a looser one for a streaming route.
//! let tracker = SlowRequestLayer::builder()
//!     .threshold(Duration::from_millis(250))
//!     .route_threshold("/export", Duration::from_secs(30))
//!     .slow_log_capacity(500)
//!     .build()
//!     .expect("valid configuration");
//! let stats = tracker.handle();
//!
//! // `Router::layer` runs the layer after routing, so it sees `MatchedPath`.
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "hello" }))
//!     .layer(tracker);
//!
//! # async {
//! // Later, for example in an admin endpoint:
//! let snapshot = stats.snapshot();
//! let json = serde_json::to_string(&snapshot).unwrap();
//! let recent_slow = stats.slow_requests();
//! # };
//! ```
//!
//! Outside axum, stack it with `ServiceBuilder` and name routes with a function:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_perf::slow::SlowRequestLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tracker = SlowRequestLayer::builder()
//!     .route_with(|req| req.uri.path().starts_with("/items/").then_some("/items/{id}"))
//!     .build()
//!     .unwrap();
//! let stats = tracker.handle();
//! let svc = ServiceBuilder::new().layer(tracker).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"item"))))
//! }));
//!
//! let res = svc.oneshot(Request::get("/items/7").body(()).unwrap()).await.unwrap();
//! assert!(res.headers().contains_key("server-timing"));
//! // The request ends when its body has been read.
//! http_body_util::BodyExt::collect(res.into_body()).await.unwrap();
//! assert_eq!(stats.route("/items/{id}").unwrap().total.count, 1);
//! # }
//! ```

mod body;
mod builder;
mod future;
mod layer;
mod log;
mod server_timing;
mod service;
mod snapshot;
mod state;
mod stats;
mod tracked;

pub use body::SlowBody;
pub use builder::SlowRequestBuilder;
pub use future::ResponseFuture;
pub use layer::{SlowRequestHandle, SlowRequestLayer};
pub use service::SlowRequest;
pub use snapshot::{LatencySummary, Outcome, RouteSnapshot, SlowRequestEntry, SlowRequestSnapshot};
pub use stats::{OVERFLOW_ROUTE, UNMATCHED_ROUTE};
