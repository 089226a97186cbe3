//! Middleware that admits requests by priority under overload: bounded per-class queues in
//! front of a fixed or adaptive concurrency limit, the least important shed first, `503` with
//! `Retry-After`.
//!
//! # How it works
//!
//! - **Class.** Each request gets a [`Priority`]: one already in its extensions (set by a layer
//!   outside), else the `x-priority` header when
//!   [trusted](PriorityQueueBuilder::trust_priority_header), else the classifier: the route map
//!   ([`route`](PriorityQueueBuilder::route)) or a closure
//!   ([`classify_with`](PriorityQueueBuilder::classify_with)). A malformed header counts as
//!   absent. The class goes into the request extensions for the layers inside.
//! - **Limit.** At most [`limit`](PriorityQueueBuilder::limit) requests run at once, or an
//!   [adaptive](AdaptiveLimit) number found from latency. A request holds its permit from
//!   admission to the end of its response body, and the adaptive limit learns from that whole
//!   span.
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
//! use tower_perf::Priority;
//!
//! // Defaults: fixed limit, 1024 waiting, 1 s max wait, every request `normal`.
//! let queue = PriorityQueueLayer::new(64).unwrap();
//!
//! // Or configured: classes by route, a trusted header, an adaptive limit, CoDel.
//! let queue = PriorityQueueLayer::builder()
//!     .route("/payments", Priority::Critical)
//!     .route("/reports", Priority::Low)
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
//! See the crate README and `examples/queue_experiment.rs` for the overload experiment.

mod body;
mod future;
mod layer;
mod limit;
mod priority;
mod service;
mod snapshot;
mod state;

pub use body::QueueBody;
pub use future::ResponseFuture;
pub use layer::{PriorityQueueBuilder, PriorityQueueHandle, PriorityQueueLayer};
pub use limit::AdaptiveLimit;
pub use priority::{Classify, DefaultClassifier, ParsePriorityError, Priority, X_PRIORITY};
pub use service::PriorityQueue;
pub use snapshot::{ClassSnapshot, Snapshot};
