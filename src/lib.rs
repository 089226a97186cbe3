//! Composable [tower] layers that make an HTTP service fast and keep it standing under load.
//!
//! Any tower-based server stacks them: axum, hyper (through `hyper-util`), tonic. Each layer works
//! alone, in any order; [the recommended order](#stack-order) gives good defaults.
//!
//! # Layers
//!
//! | module | layer | what it is for |
//! |---|---|---|
//! | [`slow`] | [`SlowRequestLayer`](slow::SlowRequestLayer) | per-route latency percentiles, a log of slow requests with their phase breakdown, `Server-Timing`, metrics |
//! | [`cache`] | [`ResponseCacheLayer`](cache::ResponseCacheLayer) | HTTP response cache with RFC 9111 semantics: in memory, and a Redis tier shared by every instance (feature `redis`); hot entries recompressed at the best level |
//! | [`compression`] | [`AdaptiveCompressionLayer`](compression::AdaptiveCompressionLayer) | zstd / br / gzip / deflate, with the level chosen per response from its size and the load; streaming, SSE flushed per event, encoders reused |
//! | [`queue`] | [`PriorityQueueLayer`](queue::PriorityQueueLayer) | admission control: priority classes, bounded queues, fixed or adaptive concurrency, lowest priority shed first, `503` + `Retry-After` |
//! | [`breaker`] | [`CircuitBreakerLayer`](breaker::CircuitBreakerLayer) | keyed circuit breakers with failure-rate and slow-call thresholds, half-open probes, `503` + `Retry-After` |
//! | [`rate_limit`] | [`RateLimitLayer`](rate_limit::RateLimitLayer) | per-client GCRA in process or shared through Redis (feature `redis`), `429` + `Retry-After` + `RateLimit-*` |
//! | [`stack`] | [`PerfStack`](stack::PerfStack) | all of the above in the order below, from one builder or one serde configuration |
//!
//! Shared by all of them: [`Timings`], a per-request record that every layer and the handler
//! append phase durations to (queue wait, cache lookup, handler...); the [`metrics`] names and
//! bucket boundaries; and [`ConfigError`], returned when a layer is built with a bad value.
//!
//! # Stack order
//!
//! Outermost first:
//!
//! 1. `SlowRequestLayer`: sees the whole life of a request, queue wait included.
//! 2. [`RateLimitLayer`](rate_limit::RateLimitLayer): the cheapest rejection comes first.
//! 3. `ResponseCacheLayer`: a hit skips the queue, compression and the handler.
//! 4. [`PriorityQueueLayer`](queue::PriorityQueueLayer): admission control over the work that costs something.
//! 5. `AdaptiveCompressionLayer`: CPU work, so inside admission; inside the cache, so the cache
//!    stores encoded variants and a hit costs no compression.
//! 6. [`CircuitBreakerLayer`](breaker::CircuitBreakerLayer): guards the handler or upstream; an open breaker answers `503`, which
//!    the cache outside turns into a stale hit when it has one.
//! 7. the application.
//!
//! # Errors
//!
//! Every layer keeps `type Error = S::Error` and answers rejections with HTTP responses, so an
//! axum stack needs no `HandleErrorLayer`. Bad input (malformed headers) counts as absent; bad
//! configuration fails when the layer is built.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_perf::cache::ResponseCacheLayer;
//! use tower_perf::slow::SlowRequestLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tracker = SlowRequestLayer::new();
//! let stats = tracker.handle();
//! let cache = ResponseCacheLayer::new();
//! // `Router::layer` wraps what is already there: the last layer added is the outermost, so
//! // this reads inside-out: cache inside the tracker, as in the stack order above.
//! let app: Router = Router::new()
//!     .route("/", get(|| async { ([("cache-control", "public, max-age=60")], "hello") }))
//!     .layer(cache)
//!     .layer(tracker);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! # let addr = listener.local_addr().unwrap();
//! tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
//! # let res = reqwest::get(format!("http://{addr}/")).await.unwrap();
//! # assert!(res.headers().contains_key("server-timing"));
//! # assert!(res.headers().contains_key("cache-status"));
//! # res.text().await.unwrap();
//! # let _ = stats.snapshot();
//! # }
//! ```
//!
//! # Features
//!
//! - `axum` (default): read the route from axum's `MatchedPath`.
//! - `tower-http` (default): read tower-http's `RequestId` extension.
//! - `compression-zstd`, `compression-br`, `compression-gzip`, `compression-deflate` (all
//!   default): the content codings of [`compression`]; the module exists when any is on.
//! - `compression-native` (default): Google's C brotli for `br` and libdeflate for whole
//!   `gzip` / `deflate` bodies up to 256 KiB (needs a C compiler, as zstd does); off, every
//!   codec but zstd is pure Rust.
//! - `redis`: the Redis tier of the response cache and the rate limiter's shared mode
//!   (`redis::RedisLink`, through fred); `redis-rustls`: `rediss://` through rustls.
//! - `full`: everything.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.89 (set by dependencies: `hdrhistogram` needs 1.88, `uuid` through tower-http 1.89).
//!
//! [tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unreachable_pub, rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod breaker;
pub mod cache;
#[cfg(any(
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
))]
pub mod compression;
#[cfg(feature = "console")]
pub mod console;
mod error;
pub mod metrics;
pub mod queue;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
mod reject;
pub mod route;
pub mod slow;
pub mod stack;
mod timings;
mod util;

pub use error::{BoxError, ConfigError};
pub use queue::Priority;
pub use reject::Rejected;
pub use route::Route;
pub use timings::{Phase, PhaseGuard, Timings, MAX_PHASES};

/// The code blocks of `README.md`, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
