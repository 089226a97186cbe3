//! Middleware that caches HTTP responses with the semantics of a shared cache (RFC 9111), in
//! process, in front of the application.
//!
//! Repeated reads cost a hash lookup instead of the handler's work. What the cache does:
//!
//! - **Stores** what RFC 9111 lets a shared cache store: not `no-store` (unless
//!   `must-understand` with a status the cache knows), not `private`, not responses to requests
//!   with `Authorization` unless the response is `public`, `s-maxage` or `must-revalidate`, not
//!   responses with `Set-Cookie` (unless configured), not `Vary: *`. Any status with explicit
//!   freshness is stored, server errors included; without it, the heuristically cacheable
//!   statuses of RFC 9110 15.1 (a `5xx` only when also `public`). Empty bodies are stored too,
//!   and so are parts: a `206` with one `Content-Range` to a request for one range (RFC 9111
//!   3.3). A `200` to a `POST` with explicit freshness and a `Content-Location` equal to the
//!   target URI is stored for later `GET`s of that URI (RFC 9110 9.3.3), after the
//!   invalidation the `POST` causes has been recorded everywhere (in Redis too), so that it
//!   does not cover the new copy.
//!   Freshness comes from `s-maxage`, `max-age`, `Expires` (any of the three date formats),
//!   then the TTL the application configured per route, then the RFC's heuristic; `max_ttl`
//!   caps the last two, and explicit freshness only when asked
//!   ([`cap_explicit_ttl`](ResponseCacheBuilder::cap_explicit_ttl)). An `Age` that is not a
//!   number makes a response stale; of a list, the first member counts.
//! - **Targets** (RFC 9213): `CDN-Cache-Control`, or a field of this cache's own
//!   ([`targeted_cache_control`](ResponseCacheBuilder::targeted_cache_control)), replaces
//!   `Cache-Control` for this cache when present and valid, so an origin can cache here what
//!   browsers must not, and the other way round.
//! - **Keys** by method class (HEAD is answered from GET entries), scheme, authority, path and
//!   query, plus the request headers named by the response's `Vary`, normalised so that equal
//!   meanings share a variant: `Accept-Encoding` reduced to the encoding the server would
//!   pick; `Accept-Language` compared without regard to case, order and whitespace
//!   (`en, de` = `De,EN`); any other field with its lines combined and the whitespace around
//!   list members removed (`1,2` = ` 1, 2 `). A response in one `Content-Language` also
//!   serves a request that prefers that language over every other by its weights
//!   (`fr;q=0.5, de` gets the stored `de`), in memory and in Redis (where such a response is
//!   also written under a key of its language).
//! - **Serves** fresh entries with `Age`, as stored (a stored `Content-Encoding` is checked
//!   against `Accept-Encoding` only when the response varies on it, or with
//!   [`require_accepted_coding`](ResponseCacheBuilder::require_accepted_coding)); answers
//!   `If-None-Match` / `If-Modified-Since` with `304`; answers `Range` (one range: `206`, or
//!   `416`; `If-Range` honoured) from a stored complete response, or from a stored part when
//!   the range lies inside it, without copying the body;
//!   honours request `no-cache`, `max-age`, `max-stale`, `min-fresh`, `only-if-cached` (`504`
//!   on a miss) and `no-store` (bypass).
//! - **Revalidates** stale entries with the origin using their validators, and refreshes them
//!   from a `304` instead of storing a new body; serves stale while revalidating in the
//!   background (`stale-while-revalidate`) and when the origin fails or a layer inside rejects
//!   (`stale-if-error`, see [`Rejected`](crate::Rejected)). A `304`, a `200` to a `HEAD` and a
//!   `206` of the same representation update the stored response's fields (RFC 9111 3.2,
//!   4.3.4, 4.3.5): each field they carry replaces the stored one.
//! - **Coalesces** concurrent misses on one key into one origin request.
//! - **Purges** by tag (the `Cache-Tag` response header), URI or prefix, soft or hard, through
//!   [`CacheHandle`]; unsafe requests (POST, PUT, PATCH, DELETE, and methods the cache does
//!   not know) invalidate their URI and same-origin `Location` / `Content-Location`.
//! - **Reports** what it did in `Cache-Status` (RFC 9211) on every response, in [`CacheSnapshot`]
//!   (from [`CacheHandle::snapshot`]) and in metrics; and in [`CacheOutcome`], a response
//!   extension, when built with
//!   [`outcome_extension(true)`](ResponseCacheBuilder::outcome_extension).
//!
//! Out of reach: interim `1xx` responses (`100 Continue`, `103 Early Hints`) never pass through
//! a tower service, which returns one `http::Response`; the cache neither stores nor forwards
//! them.
//!
//! Memory is bounded by bytes (`max_bytes`, body and headers weighed); bodies larger than
//! `max_entry_bytes` stream through without being stored. Bodies of 16 KiB and more are kept
//! in pages of their own, outside the allocator's heap
//! ([`large_bodies_in_pages`](ResponseCacheBuilder::large_bodies_in_pages)), so the process's
//! memory follows `max_bytes` under churn instead of growing by the holes evicted bodies leave
//! in the heap.
//!
//! # The Redis tier (feature `redis`)
//!
//! With [`ResponseCacheBuilder::redis`], every instance of the application shares one tier in
//! Redis under its own memory tier:
//!
//! - **Reads** go to memory, then Redis, then the origin. A Redis hit fills the memory tier for
//!   the entry's remaining lifetime (`Cache-Status: ...; hit; detail=redis`). Usually one round
//!   trip: the URL's `Vary` names and the guessed variant are read together.
//! - **Stores** write both tiers; the Redis copy is a compact versioned binary value with a TTL
//!   (freshness plus stale windows, capped). A value that does not decode is a miss and is
//!   deleted.
//! - **Purges** (tag, URI, prefix, everything; and the invalidation after unsafe methods)
//!   reach the fleet: recorded in Redis as version counters checked on read (no keyspace scan)
//!   and published on a channel, so every instance's memory tier stops serving what was purged
//!   as soon as the message arrives. An instance that missed messages (a reconnect) notices
//!   within a second and loads the records again.
//! - **Cold keys** are fetched from the origin by one instance of the fleet: the first takes a
//!   short lease (`SET NX PX`), the others wait for its response to appear in Redis, and go to
//!   the origin themselves if the holder releases the lease without storing, or is slow.
//! - **Redis slow or down never fails a request**: every call has a deadline (20 ms by
//!   default) and the link has a breaker; the request goes on with memory and the origin,
//!   `Cache-Status` says why in `detail` (`redis-timeout`, `redis-error`, `redis-skipped`), and
//!   `tower_perf_cache_requests_total{cache_tier="redis", cache_result="error"}` counts it.
//!
//! Keys are cluster safe: the keys of one URL share a hash tag, so do the purge keys.
//! Give every instance the same secret [`redis_seed`](ResponseCacheBuilder::redis_seed), so
//! clients cannot predict which key a URL hashes to.
//!
//! ```no_run
//! # #[cfg(feature = "redis")] {
//! use tower_perf::cache::ResponseCacheLayer;
//! use tower_perf::redis::RedisLink;
//!
//! let link = RedisLink::builder()
//!     .url("redis://127.0.0.1:6379")
//!     .build()
//!     .expect("valid Redis configuration");
//! let cache = ResponseCacheLayer::builder()
//!     .redis(link)
//!     .build()
//!     .expect("valid cache configuration");
//! # let _ = cache; }
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_perf::cache::ResponseCacheLayer;
//!
//! // Defaults: 64 MiB, entries up to 1 MiB, freshness from the response headers.
//! let cache = ResponseCacheLayer::new();
//!
//! // Or configured: a TTL for responses that carry none, a grace for stale serving.
//! let cache = ResponseCacheLayer::builder()
//!     .max_bytes(256 * 1024 * 1024)
//!     .route_ttl("/api/items", Duration::from_secs(60))
//!     .grace(Duration::from_secs(30))
//!     .build()
//!     .expect("valid configuration");
//! let purge = cache.handle();
//!
//! let app: Router = Router::new()
//!     .route("/api/items", get(|| async {
//!         ([("cache-control", "public, max-age=60"), ("cache-tag", "items")], "[]")
//!     }))
//!     .layer(cache);
//!
//! // After a write:
//! purge.purge_tags(["items"], false);
//! ```

mod body;
mod builder;
#[cfg(feature = "redis")]
mod codec;
mod directives;
mod entry;
mod flight;
mod future;
mod head;
mod key;
mod layer;
mod pages;
mod policy;
mod purge;
mod range;
#[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
mod recompress;
#[cfg(feature = "redis")]
mod redis_tier;
mod refresh;
mod request;
mod respond;
mod service;
mod snapshot;
mod state;
mod status;
mod store;
mod store_job;
mod targeted;
mod tiers;
mod warm;

pub use body::CacheBody;
pub use builder::ResponseCacheBuilder;
pub use future::ResponseFuture;
pub use key::KeyParts;
pub use layer::{CacheHandle, ResponseCacheLayer};
pub use service::ResponseCache;
#[cfg(feature = "redis")]
pub use snapshot::RedisTierSnapshot;
pub use snapshot::{CacheOutcome, CacheSnapshot, WarmReport};
