//! The connection to Redis that the Redis-backed parts of the crate share: the response
//! cache's shared tier ([`ResponseCacheBuilder::redis`](crate::cache::ResponseCacheBuilder::redis))
//! and the rate limiter's shared mode ([`RateLimitBuilder::redis`](crate::rate_limit::RateLimitBuilder::redis)).
//! One link (cloned) can serve both.
//!
//! A [`RedisLink`] is a fred connection pool with the rules a cache tier needs: every call has
//! a deadline (20 ms by default), commands fail fast instead of queueing while Redis is away,
//! and a breaker on the link skips Redis after repeated failures for a cool-down, then probes
//! it with one call. The link reconnects by itself. Layers that use it never fail a request
//! because Redis is slow or down: they go on with memory and the origin.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_perf::cache::ResponseCacheLayer;
//! use tower_perf::redis::RedisLink;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let link = RedisLink::builder()
//!     .url("redis://127.0.0.1:6379")
//!     .build()
//!     .expect("valid Redis configuration");
//! let cache = ResponseCacheLayer::builder()
//!     .default_ttl(Duration::from_secs(60))
//!     .redis(link)
//!     .build()
//!     .expect("valid cache configuration");
//! let svc = ServiceBuilder::new()
//!     .layer(cache)
//!     .service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//!     });
//! # let _ = svc;
//! # }
//! ```

mod breaker;
mod builder;
mod link;
mod snapshot;

pub use builder::RedisLinkBuilder;
pub use link::{LinkError, RedisLink};
pub use snapshot::RedisLinkSnapshot;
