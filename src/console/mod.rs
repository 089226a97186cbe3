//! The live performance console, and middleware that keeps admin routes to administrators.
//!
//! [`Console`] serves one self-contained page (HTML, CSS and JavaScript compiled into the
//! crate: no CDN, no build step, works offline) and a Server-Sent Events stream of
//! [`ConsoleSnapshot`]s of a [`PerfStack`](crate::stack::PerfStack)'s handles. The page shows,
//! live: request rate, errors and p50 / p95 / p99 per route (a chart over the last five minutes
//! and a table), the slow-request log with phases and request ids, the cache's hit ratio by tier
//! with bytes and evictions, the compression tier and levels, the queue's limit, in-flight and
//! waiting requests per class, each breaker's state and failure rate, and the rate limiter's
//! decisions. Its controls (purge by tag or prefix, force a breaker open or closed, reset a
//! client's quota) answer only requests an [`AdminAuthLayer`] marked as an administrator's.
//!
//! Its own cost: one task computes a snapshot per interval (one second by default) while at
//! least one page is open, serializes it once, and every viewer is sent the same bytes; each
//! viewer holds only the latest frame, so a page left open does not grow the server's memory.
//!
//! [`AdminAuthLayer`] requires `Authorization: Bearer <token>` on the admin routes (`/admin/`
//! by default), compared in constant time: `401` with `WWW-Authenticate` without credentials,
//! `403` with wrong ones. Browsers can send the token as the password of HTTP Basic (any user
//! name), which they ask for once. With no token, only loopback clients are let in. Requests it
//! authenticates carry the [`Admin`] extension, which [`is_admin`] reads: give it to the rate
//! limiter's [`bypass_with`](crate::rate_limit::RateLimitBuilder::bypass_with) to exempt
//! administrators, keyed on the authenticated request rather than on a header any client can
//! set. Put the layer outside the stack, so the mark is there when the rate limiter looks.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_perf::console::{is_admin, AdminAuthLayer, Console};
//! use tower_perf::rate_limit::{Quota, RateLimitLayer};
//! use tower_perf::stack::PerfStack;
//!
//! let stack = PerfStack::builder()
//!     // Administrators are not rate-limited.
//!     .rate_limit(
//!         RateLimitLayer::builder(Quota::per_second(100))
//!             .bypass_with(is_admin)
//!             .build()
//!             .unwrap(),
//!     )
//!     .build()
//!     .unwrap();
//! let console = Console::new(stack.handles());
//!
//! // `ADMIN_TOKEN`, else loopback clients only.
//! let auth = AdminAuthLayer::from_option(std::env::var("ADMIN_TOKEN").ok()).unwrap();
//!
//! let app: Router = Router::new()
//!     .route("/api/hello", get(|| async { "hello" }))
//!     .layer(stack)
//!     // Outside the stack: the event stream is not an API request (it would hold a queue
//!     // permit for as long as the page is open).
//!     .nest("/admin/console", console.router())
//!     // Outermost: every route, so that `/admin/*` is protected and administrators are marked
//!     // before the rate limiter looks.
//!     .layer(auth);
//! # let _ = app;
//! ```
//!
//! Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the loopback mode and
//! the rate limiter read the peer address from there.

mod auth;
mod feed;
mod routes;
mod snapshot;

pub use auth::{
    is_admin, Admin, AdminAuth, AdminAuthBody, AdminAuthLayer, AdminBy, ResponseFuture,
};
pub use feed::Console;
pub use routes::router;
pub use snapshot::ConsoleSnapshot;
