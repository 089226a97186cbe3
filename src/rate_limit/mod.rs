//! Middleware that limits the request rate of each client, with the generic cell rate
//! algorithm (GCRA), and answers `429 Too Many Requests` with `Retry-After` and the IETF
//! `RateLimit-Policy` / `RateLimit` headers.
//!
//! One noisy client should not take a service down for the others. Unlike tower's `RateLimit`,
//! this layer keeps one budget **per client**, **shared by every clone** of the layer (axum
//! clones the service for each connection), and **rejects** instead of making requests wait.
//!
//! # The algorithm
//!
//! A [`Quota`] is `count` requests per `period` with a `burst`. A client at rest may send
//! `burst` requests at once, then one every `period / count`; over any window of length `w` it
//! gets at most `burst + w × count / period` requests. Each client's state is one timestamp
//! (its *theoretical arrival time*) in an atomic, updated with a compare-and-swap: no lock is
//! held while deciding, and requests of one client never wait for each other.
//!
//! # Who is the client
//!
//! By default, the **peer address** of the connection, from axum's `ConnectInfo<SocketAddr>`
//! (serve with `into_make_service_with_connect_info::<SocketAddr>()`) or a `SocketAddr` request
//! extension (a hyper server inserts it itself). IPv4-mapped IPv6 counts as IPv4; IPv6 clients
//! are keyed by their `/64` ([`ipv6_prefix`](RateLimitBuilder::ipv6_prefix)), since one host
//! holds a whole `/64`. Without any peer address, requests share one `unknown` budget (and a
//! warning is logged once).
//!
//! Behind reverse proxies, list them with
//! [`trusted_proxies`](RateLimitBuilder::trusted_proxies) (addresses or CIDR networks). Only
//! when the peer is one of them is the forwarding header read (`X-Forwarded-For` by default,
//! or RFC 7239 `Forwarded`, see [`ForwardedHeader`]), and then the client is the **right-most
//! address that is not a trusted proxy**: everything to its left was written by the client
//! itself and proves nothing. A missing or malformed header, or an `unknown` or obfuscated
//! hop, falls back to the peer address. Without trusted proxies, forwarding headers are
//! ignored: a client cannot escape its budget by sending `X-Forwarded-For`.
//!
//! Or identify clients by a header ([`key_header`](RateLimitBuilder::key_header), for an API
//! key or a user id that something in front has authenticated) or a function
//! ([`identify_with`](RateLimitBuilder::identify_with)); a missing identity falls back to the
//! peer address. Client keys are seeded 64-bit hashes: the default identity allocates nothing
//! per request.
//!
//! # Quotas
//!
//! One default quota; per-route quotas ([`route_quota`](RateLimitBuilder::route_quota), for
//! one route or, with [`Route::prefix`](crate::Route::prefix), the routes under a prefix; the
//! route is axum's `MatchedPath` when the layer runs inside the router, `Router::layer`, else
//! the path), each a budget of its own; a quota per request from a function
//! ([`tier_with`](RateLimitBuilder::tier_with), for plans or roles), which wins over both; and
//! a [`bypass_with`](RateLimitBuilder::bypass_with) function for requests that are never
//! limited (health checks, metrics).
//!
//! # Answers
//!
//! A limited request never reaches the inner service. It gets `429 Too Many Requests` with:
//!
//! - `Retry-After`: seconds until one more request is allowed, rounded up;
//! - `RateLimit-Policy: "default";q=100;w=1` and `RateLimit: "default";r=0;t=1`, in the
//!   structured-field syntax of [draft-ietf-httpapi-ratelimit-headers-11] (May 2026; the
//!   same syntax since draft 08). The policy item names the quota ([`Quota::named`]) with
//!   `q` requests per `w` seconds (its count and period; the burst is not advertised). `r` is
//!   the number of requests the client could send right now, and `t` the seconds (rounded up)
//!   until `r` grows by one, the time within which the client can use no more than `r`. On a
//!   `429`, `t` equals `Retry-After`, as the draft asks (a `Retry-After` never earlier than the
//!   end of the effective window);
//! - a JSON body: `{"error":"rate limited","retry_after_secs":1}`;
//! - the [`Rejected`](crate::Rejected) response extension, by `"rate_limit"`.
//!
//! Allowed responses carry `RateLimit-Policy` and `RateLimit` too, unless
//! [`headers_on_allowed`](RateLimitBuilder::headers_on_allowed) is off. Bypassed ones carry
//! none. The service keeps `type Error = S::Error`: no `HandleErrorLayer` needed in axum.
//!
//! # Bounded memory
//!
//! At most [`max_keys`](RateLimitBuilder::max_keys) client buckets are kept (default 100 000),
//! spread over up to 64 shards. A client whose bucket is full again (idle) carries no
//! information and is dropped first when room is needed; when no client is idle, the buckets
//! closest to idle go (they hold the most unused quota, so forgetting them gives away the
//! least) while the heaviest clients keep their state. [`RateLimitSnapshot::evicted`] counts
//! those; if it grows, raise `max_keys`.
//!
//! # Shared across instances (Redis)
//!
//! With the `redis` feature, `RateLimitBuilder::redis` shares every budget through Redis, on
//! the crate's `tower_perf::redis::RedisLink` (one link can serve the response cache's Redis
//! tier too): all instances that use the same Redis, key prefix and configuration enforce
//! **one** quota per client. (The items named here exist only with that feature.)
//!
//! - **One round trip per decision**: a Lua script, sent once and then called by its SHA, reads
//!   and updates the client's bucket atomically, on one key (Redis Cluster safe). It takes the
//!   time from the **Redis server's clock** (`TIME`), so instances whose clocks disagree still
//!   agree; it works in microseconds (the quota's `T` is rounded up to a whole microsecond),
//!   which changes nothing for quotas under a million requests per second per client.
//! - **Same answers**: the script returns the decision, the remaining requests, the wait and
//!   the reset, so `RateLimit`, `RateLimit-Policy`, `Retry-After` and the `429` body carry
//!   the values of the in-process mode.
//! - **Keys** are `<link prefix>:rl:<16 hex digits>`, a seeded xxh3 of the policy (made from the
//!   configuration: default, route or tier, and the quota's values) and the client. The seed
//!   comes from the configuration (`redis_seed`, by default the link's key prefix), never
//!   from a random source, so every instance computes the same key; set a secret seed to keep
//!   clients from crafting identities that collide with another's. Each key expires when its bucket is full again: nothing lives forever.
//! - **When Redis is slow or down** (the link's deadline passes, the connection is gone, the
//!   link's breaker is open, or the reply is not a decision), the `redis_fallback` decides:
//!   in process with the same quota (`RedisFallback::Local`, the default; each instance then
//!   enforces the quota on its own), let the request through (`RedisFallback::FailOpen`), or
//!   answer `503` (`RedisFallback::FailClosed`). The link's breaker makes an outage cost one deadline per
//!   cool-down, not one per request. A malformed value at a key is treated as a full bucket
//!   and replaced, never an error.
//!
//! Only the shared mode waits: in process the decision is made in `call` and the inner
//! service is called at once; in the shared mode the response future waits for Redis, then
//! calls the inner service (so the inner service must be `Clone`, see [`RateLimit`]).
//! [`RateLimitSnapshot`] counts the decisions made by Redis and by the fallback, and Redis
//! errors; the handle's [`reset`](RateLimitHandle::reset), [`clear`](RateLimitHandle::clear)
//! and [`sweep`](RateLimitHandle::sweep) act on the local (fallback) buckets.
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_perf::rate_limit::{Quota, RateLimitLayer, RedisFallback};
//! use tower_perf::redis::RedisLink;
//!
//! let link = RedisLink::builder()
//!     .url("redis://127.0.0.1:6379")
//!     .deadline(Duration::from_millis(20)) // the longest a decision waits for Redis
//!     .key_prefix("shop")
//!     .build()?;
//! let limiter = RateLimitLayer::builder(Quota::per_second(100).burst(200))
//!     .redis(link)
//!     .redis_fallback(RedisFallback::Local) // the default
//!     .redis_seed(0x5eed_cafe)              // the same (secret) seed on every instance
//!     .build()?;
//! let stats = limiter.handle();
//! // ... serve; later: stats.snapshot().redis_decisions, .fallback_decisions, .redis_errors
//! # let _ = stats;
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! `tower_perf_rate_limit_decisions_total{decision="allowed"|"limited"|"bypassed"}`, and
//! the same counts (plus tracked keys and evictions) from [`RateLimitHandle::snapshot`]. In the
//! shared mode, also `tower_perf_rate_limit_shared_decisions_total{decided_by="redis"|"fallback"}`.
//!
//! # Example
//!
//! With axum, 100 requests per second per client with bursts of 200, except health checks:
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use tower_perf::rate_limit::{Quota, RateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Defaults: clients by peer address, forwarding headers ignored, 100 000 clients tracked.
//! let limiter = RateLimitLayer::new(Quota::per_second(100).burst(200)).unwrap();
//!
//! // Or configured: behind a proxy on 10.0.0.0/8, a tighter quota for exports.
//! let limiter = RateLimitLayer::builder(Quota::per_second(100).burst(200))
//!     .trusted_proxies(["10.0.0.0/8"])
//!     .route_quota("/api/export", Quota::per_minute(10).burst(2).named("export"))
//!     .bypass_with(|req| req.uri.path() == "/health")
//!     .build()
//!     .expect("valid configuration");
//! let stats = limiter.handle();
//!
//! let app = Router::new()
//!     .route("/api/items", get(|| async { "[]" }))
//!     .route("/api/export", get(|| async { "csv" }))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(limiter);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # let addr = listener.local_addr().unwrap();
//! // The peer address comes from `ConnectInfo`.
//! let make = app.into_make_service_with_connect_info::<SocketAddr>();
//! tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
//! # let res = reqwest::get(format!("http://{addr}/api/items")).await.unwrap();
//! # assert_eq!(res.headers()["ratelimit"], "\"default\";r=199;t=1");
//! # assert_eq!(stats.snapshot().allowed, 1);
//! # }
//! ```
//!
//! With `ServiceBuilder`, on any tower service; here the peer address is a `SocketAddr`
//! extension, as a hyper server would insert it:
//!
//! ```
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_perf::rate_limit::{Quota, RateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limiter = RateLimitLayer::new(Quota::per_minute(60).burst(2)).unwrap();
//! let svc = ServiceBuilder::new().layer(limiter).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
//! }));
//!
//! let peer: SocketAddr = "192.0.2.7:50000".parse().unwrap();
//! let request = || {
//!     let mut req = Request::get("/").body(()).unwrap();
//!     req.extensions_mut().insert(peer);
//!     req
//! };
//! for _ in 0..2 {
//!     let res = svc.clone().oneshot(request()).await.unwrap();
//!     assert_eq!(res.status(), StatusCode::OK);
//! }
//! let res = svc.clone().oneshot(request()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()["retry-after"], "1");
//! assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=60;w=60");
//! assert_eq!(res.headers()["ratelimit"], "\"default\";r=0;t=1");
//! # }
//! ```
//!
//! [draft-ietf-httpapi-ratelimit-headers-11]: https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/

mod answer;
mod body;
mod builder;
mod future;
mod gcra;
mod identity;
mod layer;
mod quota;
mod service;
#[cfg(feature = "redis")]
mod shared;
mod snapshot;
mod state;
mod store;

pub use body::RateLimitBody;
pub use builder::RateLimitBuilder;
pub use future::ResponseFuture;
pub use identity::{ClientKey, ForwardedHeader};
pub use layer::{RateLimitHandle, RateLimitLayer};
pub use quota::Quota;
pub use service::RateLimit;
#[cfg(feature = "redis")]
pub use shared::RedisFallback;
pub use snapshot::RateLimitSnapshot;
