//! Middleware that admits requests by priority under overload: bounded per-class queues in
//! front of a fixed or adaptive concurrency limit, the least important shed first, `503` with
//! `Retry-After`.
//!
//! # How it works
//!
//! - **Class.** Each request gets a [`Priority`]: one already in its extensions (set by a layer
//!   outside), else the `x-priority` header when
//!   [trusted](PriorityQueueBuilder::trust_priority_header), else the classifier: the route map
//!   ([`route_priority`](PriorityQueueBuilder::route_priority)) or a closure
//!   ([`classify_with`](PriorityQueueBuilder::classify_with)). A malformed header counts as
//!   absent. The class goes into the request extensions for the layers inside.
//! - **Limit.** At most [`limit`](PriorityQueueBuilder::limit) requests run at once, or an
//!   [adaptive](AdaptiveLimit) number found from latency. A request holds its permit from
//!   admission to the end of its response body; the adaptive limit learns from the time to the
//!   response head (the body's transfer is paced by the client too: a slow reader must not
//!   look like a slow service).
//! - **Queues.** A request that finds no free permit waits in its class's queue (bounded in
//!   total by [`queue_capacity`](PriorityQueueBuilder::queue_capacity) and per class by
//!   [`max_queued`](PriorityQueueBuilder::max_queued)). A freed permit goes to the most
//!   important class with waiters, except that every class with waiters is served at least
//!   once every `1 / min_share` dispatches ([`min_share`](PriorityQueueBuilder::min_share)),
//!   so low classes are never starved outright. When the queue is full, a newcomer displaces
//!   the newest waiter of the lowest class below its own; with none, it is turned away itself.
//! - **Deadlines.** A waiter is answered `503` after its class's
//!   [`max_wait`](PriorityQueueBuilder::max_wait). With [`codel`](PriorityQueueBuilder::codel),
//!   once the oldest waiter has stayed above the target delay for an interval, the queue
//!   serves newest first and drops those that waited an interval. A request whose client goes
//!   away while it waits leaves the queue, and never takes a permit.
//! - **Answers.** Turned-away requests get `503 Service Unavailable`, a `Retry-After` estimated
//!   from the recent drain rate (the time to serve what waits, 1 to 60 s), a small JSON body
//!   and the [`Rejected`](crate::Rejected) marker, so a response cache outside serves a stale
//!   copy when it has one.
//!
//! Admission happens in the response future: the service is ready whenever the inner service
//! is, `type Error = S::Error`, so axum takes it without `HandleErrorLayer`. All clones share
//! one state: the per-connection copies axum makes share the same permits and queues.
//!
//! # Cost
//!
//! An admission without waiting takes one short lock (a comparison and a counter), its release
//! another; the lock also guards the queues, which keeps "who goes next" exact. Waiting costs
//! one small allocation (a oneshot channel) and a timer.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_perf::queue::{AdaptiveLimit, PriorityQueueLayer};
//! use tower_perf::{Priority, Route};
//!
//! // Defaults: fixed limit, 1024 waiting, 1 s max wait, every request `normal`.
//! let queue = PriorityQueueLayer::new(64).unwrap();
//!
//! // Or configured: classes by route, a trusted header, an adaptive limit, CoDel.
//! let queue = PriorityQueueLayer::builder()
//!     .route_priority(Route::prefix("/payments/"), Priority::Critical)
//!     .route_priority("/reports/export", Priority::Low)
//!     .trust_priority_header(true)
//!     .adaptive_limit(AdaptiveLimit::gradient().min(4).max(512))
//!     .queue_capacity(2000)
//!     .max_wait(Priority::Low, Duration::from_millis(500))
//!     .codel(Duration::from_millis(5), Duration::from_millis(100))
//!     .build()
//!     .expect("valid configuration");
//! let stats = queue.handle();
//!
//! let app: Router = Router::new()
//!     .route("/payments/{id}", get(|| async { "paid" }))
//!     .route("/reports/export", get(|| async { "a,b,c" }))
//!     .layer(queue);
//!
//! // Later, for example in an admin endpoint:
//! let json = serde_json::to_string(&stats.snapshot()).unwrap();
//! # let _ = (app, json);
//! ```
//!
//! Outside axum, with `ServiceBuilder`:
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_perf::queue::PriorityQueueLayer;
//! use tower_perf::Priority;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = PriorityQueueLayer::builder().limit(2).build().unwrap();
//! let stats = layer.handle();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: Request<()>| async move {
//!     let p = req.extensions().get::<Priority>().copied().unwrap();
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(p.as_str()))))
//! }));
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(stats.snapshot().class(Priority::Normal).admitted, 1);
//! # }
//! ```
//!
//! # Measured
//!
//! `examples/queue_experiment.rs`: a handler holding one of 4 simulated database connections
//! for 5 ms (measured capacity 642 requests/s), driven open-loop at 1x, 2x and 4x with 10%
//! critical, 30% high and 60% low requests, client timeout 1 s, on a shared 2-core VM
//! (2026-11-23, 5 s per step; unloaded critical p99 10.7 ms). This layer: fixed limit 4 or the
//! gradient limit, queue 256, max wait 500/200/100 ms for critical/high/low, CoDel 5/100 ms.
//!
//! | setup | load | goodput/s (of capacity) | critical ok | critical p99 | high ok | high p99 | low ok | low p99 | RSS MiB, step start → end |
//! |---|---|---|---|---|---|---|---|---|---|
//! | PriorityQueueLayer, fixed limit | 1x | 642 (100%) | 100.0% | 11.4 ms | 100.0% | 11.6 ms | 100.0% | 12.6 ms | 5.5 → 6.4 |
//! | PriorityQueueLayer, fixed limit | 2x | 662 (103%) | 100.0% | 14.1 ms | 100.0% | 14.0 ms | 19.3% | 86.5 ms | 6.4 → 10.7 |
//! | PriorityQueueLayer, fixed limit | 4x | 665 (104%) | 100.0% | 15.6 ms | 48.1% | 59.0 ms | 2.5% | 100.6 ms | 10.5 → 21.0 |
//! | PriorityQueueLayer, gradient limit | 1x | 642 (100%) | 100.0% | 9.0 ms | 100.0% | 9.1 ms | 100.0% | 9.4 ms | 20.1 → 20.3 |
//! | PriorityQueueLayer, gradient limit | 2x | 658 (102%) | 100.0% | 24.4 ms | 100.0% | 27.2 ms | 18.7% | 94.7 ms | 20.3 → 21.6 |
//! | PriorityQueueLayer, gradient limit | 4x | 673 (105%) | 100.0% | 20.3 ms | 48.8% | 58.9 ms | 2.6% | 107.1 ms | 21.6 → 27.2 |
//! | tower ConcurrencyLimit + LoadShed | 1x | 494 (77%) | 73.2% | 8.7 ms | 75.7% | 8.8 ms | 78.2% | 8.8 ms | 26.2 → 26.3 |
//! | tower ConcurrencyLimit + LoadShed | 2x | 515 (80%) | 39.4% | 9.1 ms | 40.3% | 9.2 ms | 40.2% | 9.2 ms | 26.3 → 26.4 |
//! | tower ConcurrencyLimit + LoadShed | 4x | 597 (93%) | 24.5% | 8.3 ms | 22.9% | 8.4 ms | 23.2% | 8.4 ms | 26.4 → 26.4 |
//! | no limit | 1x | 642 (100%) | 100.0% | 9.2 ms | 100.0% | 9.4 ms | 100.0% | 9.2 ms | 26.5 → 26.7 |
//! | no limit | 2x | 263 (41%) | 20.4% | 986.1 ms | 20.5% | 995.8 ms | 20.5% | 992.8 ms | 26.7 → 82.1 |
//! | no limit | 4x | 173 (27%) | 6.8% | 997.9 ms | 6.7% | 996.9 ms | 6.7% | 996.4 ms | 82.1 → 154.2 |
//!
//! At 4x, critical requests keep 100% success at 1.5x their unloaded p99 and goodput stays at
//! the capacity; `ConcurrencyLimit` + `LoadShed` sheds every class alike; no limit collapses.
//! On a busy machine the latency tail follows the CPU, not the queue: BENCHMARKS.md has the
//! conditions and the runs that missed the goals.

mod body;
mod builder;
mod future;
mod layer;
mod limit;
mod priority;
mod service;
mod snapshot;
mod state;

pub use body::QueueBody;
pub use builder::PriorityQueueBuilder;
pub use future::ResponseFuture;
pub use layer::{PriorityQueueHandle, PriorityQueueLayer};
pub use limit::AdaptiveLimit;
pub use priority::{Classify, DefaultClassifier, ParsePriorityError, Priority, X_PRIORITY};
pub use service::PriorityQueue;
pub use snapshot::{ClassSnapshot, PriorityQueueSnapshot};
