//! Configuration of the cache and its validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::request::Parts;

use super::flight::Flights;
use super::key::{KeyFn, KeyParts, Keyer};
use super::layer::ResponseCacheLayer;
use super::policy::StorePolicy;
use super::purge::Purges;
use super::state::{Counters, Shared, SizeReport, TtlFn};
use super::store::MemoryStore;
use super::tiers::Tiers;
use crate::error::ConfigError;
use crate::metrics::names;
use crate::route::{Route, RouteTable};

/// The default seed of the Redis tier's key hashes (any fixed value works; every instance must
/// use the same one).
#[cfg(feature = "redis")]
const REDIS_KEY_SEED: u64 = 0x7467_7065_7266_0001;

impl ResponseCacheLayer {
    /// A cache with the default configuration (64 MiB, entries up to 1 MiB, freshness from the
    /// response headers only).
    pub fn new() -> Self {
        ResponseCacheBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder to configure the cache.
    pub fn builder() -> ResponseCacheBuilder {
        ResponseCacheBuilder::default()
    }
}

impl Default for ResponseCacheLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// Configures a [`ResponseCacheLayer`]. Made by [`ResponseCacheLayer::builder`].
#[must_use]
pub struct ResponseCacheBuilder {
    max_bytes: u64,
    max_entry_bytes: usize,
    large_bodies_in_pages: bool,
    default_ttl: Option<Duration>,
    route_ttls: RouteTable<Duration>,
    ttl_fn: Option<Arc<TtlFn>>,
    max_ttl: Duration,
    cap_explicit_ttl: bool,
    targeted: Vec<String>,
    require_accepted_coding: bool,
    grace: Duration,
    cache_set_cookie: bool,
    heuristic_fraction: f64,
    heuristic_max: Duration,
    tag_header: HeaderName,
    name: String,
    coalesce: bool,
    coalesce_timeout: Duration,
    sort_query: bool,
    ignore_host: bool,
    key_fn: Option<Arc<KeyFn>>,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::RedisLink>,
    #[cfg(feature = "redis")]
    redis_seed: Option<u64>,
    #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
    recompress_hot: Option<u32>,
    outcome_extension: bool,
}

impl Default for ResponseCacheBuilder {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            large_bodies_in_pages: true,
            default_ttl: None,
            route_ttls: RouteTable::default(),
            ttl_fn: None,
            max_ttl: Duration::from_secs(24 * 3600),
            cap_explicit_ttl: false,
            targeted: vec!["cdn-cache-control".to_owned()],
            require_accepted_coding: false,
            grace: Duration::ZERO,
            cache_set_cookie: false,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(24 * 3600),
            tag_header: HeaderName::from_static("cache-tag"),
            name: "tower-perf".to_owned(),
            coalesce: true,
            coalesce_timeout: Duration::from_secs(5),
            sort_query: false,
            ignore_host: false,
            key_fn: None,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_seed: None,
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompress_hot: None,
            outcome_extension: false,
        }
    }
}

impl ResponseCacheBuilder {
    /// Byte budget of the memory tier: bodies, headers and bookkeeping. Default: 64 MiB.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Largest response body that is stored; larger (or longer, when the length is unknown)
    /// bodies stream through to the client untouched and are not stored. Default: 1 MiB.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Whether stored bodies of 16 KiB and more live in pages of their own (an anonymous
    /// memory mapping each) instead of the allocator's heap. Default: on.
    ///
    /// With it, an evicted body's memory goes back to the operating system as soon as the
    /// last response reading it is done, so the process's RSS follows [`max_bytes`](Self::max_bytes)
    /// under churn whatever global allocator the application runs; on the heap, freed bodies
    /// leave holes the allocator keeps, and RSS grew to 1.2-1.5x a 16 MiB budget in
    /// `examples/cache_memory.rs`. The cost is a system call to map and one to unmap each large
    /// body (when it is stored and when it is evicted, never on a hit) and up to 4 KiB of the
    /// last page; the store counts a large body by whole pages either way. At most 32768
    /// bodies live in pages at once in the process (the kernel bounds mappings), the rest
    /// go to the heap. Mapping and unmapping take the kernel's lock on the process's memory
    /// map, which page faults take too: measured on 2 cores only (where a churn that stores on
    /// every request ran as fast as with the heap); on many cores with tens of thousands of
    /// stores per second, check a profile for `mmap` / `munmap` and turn this off if they show.
    pub fn large_bodies_in_pages(mut self, yes: bool) -> Self {
        self.large_bodies_in_pages = yes;
        self
    }

    /// Freshness for responses that carry none (no `max-age`, `s-maxage`, `Expires`). Response
    /// headers win where they are stricter (`no-cache`, `max-age=0`, `no-store`, `private`).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Like [`default_ttl`](Self::default_ttl), for one route or a prefix of routes
    /// ([`Route`](crate::Route): a string is an exact route, [`Route::prefix`](crate::Route::prefix)
    /// every route under it). The route of a request is axum's `MatchedPath` when the layer runs
    /// inside the router (`Router::layer`), else its path (see [`crate::route`]).
    pub fn route_ttl(mut self, route: impl Into<Route>, ttl: Duration) -> Self {
        self.route_ttls.insert(route.into(), ttl);
        self
    }

    /// Like [`default_ttl`](Self::default_ttl), decided per request by a function; `None` falls
    /// back to the route TTL, then the default.
    pub fn ttl_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> Option<Duration> + Send + Sync + 'static,
    {
        self.ttl_fn = Some(Arc::new(f));
        self
    }

    /// Upper bound on the lifetimes the cache gives itself: heuristic freshness, the default
    /// and route TTLs. Explicit freshness from the origin (`s-maxage`, `max-age`, `Expires`) is
    /// honoured as sent unless [`cap_explicit_ttl`](Self::cap_explicit_ttl) is on; such an entry
    /// is still kept in memory at most `max_ttl` plus twice the larger of `grace` and one hour
    /// (how long purges are remembered), then fetched again. Default: 1 day.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Cap explicit freshness (`s-maxage`, `max-age`, `Expires`) at [`max_ttl`](Self::max_ttl)
    /// too, and say so in `Cache-Status` (`ttl`). Off by default: the origin's lifetime is used
    /// as it gave it.
    pub fn cap_explicit_ttl(mut self, on: bool) -> Self {
        self.cap_explicit_ttl = on;
        self
    }

    /// The targeted cache-control fields (RFC 9213) this cache obeys ahead of `Cache-Control`,
    /// most specific first. The first one present in a response, and a valid Structured Field
    /// dictionary, replaces `Cache-Control` whole for this cache: its `max-age` (longer or
    /// shorter), `s-maxage`, `no-store`, `no-cache`, `private`..., so an origin can cache a
    /// response here that browsers must not (`Cache-Control: no-store` with
    /// `CDN-Cache-Control: max-age=600`), or the other way round. The fields are forwarded to
    /// the client as they came. An invalid field is ignored (the next one, then
    /// `Cache-Control`, applies).
    ///
    /// Default: `["cdn-cache-control"]`, as a gateway cache in front of its application; an
    /// empty list obeys `Cache-Control` only. A field of this cache alone comes first:
    ///
    /// ```
    /// use tower_perf::cache::ResponseCacheLayer;
    ///
    /// let cache = ResponseCacheLayer::builder()
    ///     .targeted_cache_control(["towerperf-cache-control", "cdn-cache-control"])
    ///     .build()
    ///     .expect("valid field names");
    /// # let _ = cache;
    /// ```
    pub fn targeted_cache_control<I>(mut self, fields: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.targeted = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        self
    }

    /// Serve a stored `Content-Encoding` only to requests whose `Accept-Encoding` accepts it,
    /// also when the response does not vary on `Accept-Encoding`. Off by default: RFC 9111
    /// reuses such a response as stored; a response that varies on `Accept-Encoding` (the
    /// compression layer's always do) is checked either way.
    pub fn require_accepted_coding(mut self, on: bool) -> Self {
        self.require_accepted_coding = on;
        self
    }

    /// How long a stale entry may still be served, while it is refreshed in the background
    /// (stale-while-revalidate) or when the origin fails (stale-if-error), for responses that do
    /// not set those windows themselves. Never applies to responses with `must-revalidate`,
    /// `proxy-revalidate` or `no-cache`. Default: zero.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Store responses that carry `Set-Cookie`. Off by default: a shared cache would hand one
    /// client's cookie to the others.
    pub fn cache_set_cookie(mut self, on: bool) -> Self {
        self.cache_set_cookie = on;
        self
    }

    /// Heuristic freshness (RFC 9111 4.2.2) for responses without explicit freshness but with
    /// `Last-Modified`: `fraction` of the time since the last modification, at most `max`.
    /// Default: 10%, at most 1 day.
    pub fn heuristic(mut self, fraction: f64, max: Duration) -> Self {
        self.heuristic_fraction = fraction;
        self.heuristic_max = max;
        self
    }

    /// The response header that assigns tags (comma or space separated). Removed before the
    /// client sees the response. Default: `cache-tag`.
    pub fn tag_header(mut self, header: HeaderName) -> Self {
        self.tag_header = header;
        self
    }

    /// The cache's name in `Cache-Status`. Default: `tower-perf`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Put the [`CacheOutcome`](super::CacheOutcome) of every response in its extensions, for
    /// layers outside the cache (and handlers' tests) to read. Off by default: the outcome is
    /// already in the `Cache-Status` header, and a response extension costs every request an
    /// extension map (three allocations on a response that had none).
    pub fn outcome_extension(mut self, on: bool) -> Self {
        self.outcome_extension = on;
        self
    }

    /// Coalesce concurrent misses on one key into one origin request (on by default); the
    /// others wait at most `timeout` for it, then go to the origin themselves.
    pub fn coalesce(mut self, on: bool, timeout: Duration) -> Self {
        self.coalesce = on;
        self.coalesce_timeout = timeout;
        self
    }

    /// Sort query parameters in the key, so `?a=1&b=2` and `?b=2&a=1` share an entry. Off by
    /// default (some applications give parameter order a meaning).
    pub fn sort_query(mut self, on: bool) -> Self {
        self.sort_query = on;
        self
    }

    /// Leave the scheme and authority (`Host`) out of the key, for an application with a single
    /// origin reached under several names (`localhost`, an IP, a domain). Off by default: an
    /// application that serves several hosts (tenants, virtual hosts) must keep them apart.
    pub fn ignore_host(mut self, on: bool) -> Self {
        self.ignore_host = on;
        self
    }

    /// Adds request-specific parts to the key, for example a tenant header:
    ///
    /// ```
    /// use tower_perf::cache::ResponseCacheLayer;
    ///
    /// let layer = ResponseCacheLayer::builder()
    ///     .key_with(|req, key| {
    ///         if let Some(tenant) = req.headers.get("x-tenant") {
    ///             key.add(tenant.as_bytes());
    ///         }
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn key_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts, &mut KeyParts<'_>) + Send + Sync + 'static,
    {
        self.key_fn = Some(Arc::new(f));
        self
    }

    /// Adds the Redis tier under the memory tier, shared by every instance of the application
    /// that uses the same Redis, key prefix and cache [`name`](Self::name): lookups read
    /// memory, then Redis, then the origin; stores write both; purges reach Redis and every
    /// instance's memory tier; a cold key is fetched from the origin by one instance of the
    /// fleet while the others wait for it (at most the [`coalesce`](Self::coalesce) timeout).
    /// When Redis is slow or down, requests go on with memory and the origin. See
    /// [`crate::redis`].
    #[cfg(feature = "redis")]
    pub fn redis(mut self, link: crate::redis::RedisLink) -> Self {
        self.redis = Some(link);
        self
    }

    /// A secret seed for the hashes of the Redis tier's keys, so that clients cannot predict
    /// where a URL lands. Every instance that shares entries needs the same seed. Default: a
    /// fixed seed. Needs [`redis`](Self::redis).
    #[cfg(feature = "redis")]
    pub fn redis_seed(mut self, seed: u64) -> Self {
        self.redis_seed = Some(seed);
        self
    }

    /// Recompresses hot entries in the background: a stored `br` or `zstd` response (from the
    /// [compression layer](crate::compression) inside the cache, at a level chosen for speed)
    /// that has served `after_hits` fresh hits is decoded and encoded again at the highest level
    /// (Brotli 11, zstd 19) on the blocking pool, at most two at a time, and replaces the
    /// stored copy when smaller. Later hits send fewer bytes at no request-time cost. A strong
    /// `ETag` becomes weak on the new copy (other bytes, same content). Off by default.
    ///
    /// ```
    /// use tower_perf::cache::ResponseCacheLayer;
    ///
    /// let cache = ResponseCacheLayer::builder()
    ///     .recompress_hot(100)
    ///     .build()
    ///     .unwrap();
    /// # let _ = cache;
    /// ```
    #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
    pub fn recompress_hot(mut self, after_hits: u32) -> Self {
        self.recompress_hot = Some(after_hits);
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(mut self) -> Result<ResponseCacheLayer, ConfigError> {
        self.validate()?;
        let targeted = self.targeted_fields()?;
        describe_metrics();
        let name = std::mem::take(&mut self.name);
        let record_ttl = self.max_ttl + self.grace.max(Duration::from_secs(3600)) * 2;
        let tiers = self.tiers(&name, record_ttl);
        let shared = Shared {
            store: MemoryStore::new(self.max_bytes, record_ttl),
            purges: Purges::new(record_ttl, 100_000),
            flights: Flights::new(),
            refreshes: Flights::new(),
            keyer: Keyer::new(self.sort_query).ignoring_host(self.ignore_host),
            key_fn: self.key_fn,
            policy: StorePolicy {
                cache_set_cookie: self.cache_set_cookie,
                default_ttl: self.default_ttl,
                heuristic_fraction: self.heuristic_fraction,
                heuristic_max: self.heuristic_max,
                max_ttl: self.max_ttl,
                cap_explicit: self.cap_explicit_ttl,
                targeted,
                require_accepted_coding: self.require_accepted_coding,
            },
            route_ttls: self.route_ttls,
            ttl_fn: self.ttl_fn,
            grace: self.grace,
            max_entry_bytes: self.max_entry_bytes,
            pages: self.large_bodies_in_pages.then(Arc::default),
            tag_header: self.tag_header,
            name: name.clone().into_boxed_str(),
            statuses: super::status::StatusValues::new(),
            coalesce: self.coalesce,
            outcome_extension: self.outcome_extension,
            coalesce_timeout: self.coalesce_timeout,
            counters: Counters::default(),
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompress: self.recompress_hot.map(super::recompress::Recompress::new),
            tiers,
            size: SizeReport::new(),
        };
        Ok(ResponseCacheLayer::from_shared(Arc::new(shared)))
    }
}

impl ResponseCacheBuilder {
    /// Checks every setting; the error names the first wrong one.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes < 1024 {
            return Err(ConfigError::new("max_bytes", "must be at least 1024 bytes"));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes as u64 > self.max_bytes / 2 {
            return Err(ConfigError::new(
                "max_entry_bytes",
                format!(
                    "must be between 1 and half of max_bytes ({}), got {}",
                    self.max_bytes / 2,
                    self.max_entry_bytes
                ),
            ));
        }
        self.validate_freshness()?;
        if self.name.is_empty() || !crate::timings::is_token(&self.name) {
            return Err(ConfigError::new(
                "name",
                format!(
                    "must be an HTTP token (letters, digits, -._~...), got {:?}",
                    self.name
                ),
            ));
        }
        if self.coalesce_timeout.is_zero() {
            return Err(ConfigError::new(
                "coalesce",
                "timeout must be greater than zero",
            ));
        }
        #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
        if self.recompress_hot == Some(0) {
            return Err(ConfigError::new(
                "recompress_hot",
                "the number of hits must be at least 1",
            ));
        }
        Ok(())
    }

    /// The targeted fields as header names; the error names the first invalid one.
    fn targeted_fields(&self) -> Result<Arc<[HeaderName]>, ConfigError> {
        self.targeted
            .iter()
            .map(|f| {
                HeaderName::from_bytes(f.as_bytes()).map_err(|_| {
                    ConfigError::new(
                        "targeted_cache_control",
                        format!("{f:?} is not a header field name"),
                    )
                })
            })
            .collect()
    }

    /// Checks the freshness settings: TTLs, grace, heuristic.
    fn validate_freshness(&self) -> Result<(), ConfigError> {
        if self.max_ttl.is_zero() {
            return Err(ConfigError::new("max_ttl", "must be greater than zero"));
        }
        let too_long = |d: Duration| d > self.max_ttl;
        if self.default_ttl.is_some_and(|t| t.is_zero() || too_long(t)) {
            return Err(ConfigError::new(
                "default_ttl",
                "must be greater than zero and at most max_ttl",
            ));
        }
        if let Some((route, _)) = self
            .route_ttls
            .iter()
            .find(|(_, t)| t.is_zero() || too_long(**t))
        {
            return Err(ConfigError::new(
                "route_ttl",
                format!("the TTL of route {route} must be greater than zero and at most max_ttl"),
            ));
        }
        #[cfg(feature = "redis")]
        if self.redis.is_none() && self.redis_seed.is_some() {
            return Err(ConfigError::new(
                "redis_seed",
                "only the Redis tier (`redis`) uses a seed",
            ));
        }
        if self.grace > Duration::from_secs(7 * 24 * 3600) {
            return Err(ConfigError::new("grace", "must be at most 7 days"));
        }
        if !(0.0..=1.0).contains(&self.heuristic_fraction) {
            return Err(ConfigError::new(
                "heuristic",
                format!(
                    "fraction must be between 0 and 1, got {}",
                    self.heuristic_fraction
                ),
            ));
        }
        Ok(())
    }

    /// The tiers under memory.
    #[cfg(feature = "redis")]
    fn tiers(&mut self, name: &str, record_ttl: Duration) -> Tiers {
        let Some(link) = self.redis.take() else {
            return Tiers::Memory;
        };
        let seed = self.redis_seed.unwrap_or(REDIS_KEY_SEED);
        Tiers::MemoryAndRedis(Arc::new(super::redis_tier::RedisTier::new(
            super::redis_tier::TierConfig {
                link,
                name: name.to_owned(),
                seed,
                lease_ttl: self.coalesce_timeout,
                lease_wait: self.coalesce_timeout,
                record_ttl,
            },
        )))
    }

    /// The tiers under memory: none without the feature `redis`.
    #[cfg(not(feature = "redis"))]
    fn tiers(&mut self, _name: &str, _record_ttl: Duration) -> Tiers {
        Tiers::Memory
    }
}

impl fmt::Debug for ResponseCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheBuilder")
            .field("max_bytes", &self.max_bytes)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("large_bodies_in_pages", &self.large_bodies_in_pages)
            .field("default_ttl", &self.default_ttl)
            .field("route_ttls", &self.route_ttls)
            .field("max_ttl", &self.max_ttl)
            .field("cap_explicit_ttl", &self.cap_explicit_ttl)
            .field("targeted_cache_control", &self.targeted)
            .field("require_accepted_coding", &self.require_accepted_coding)
            .field("grace", &self.grace)
            .field("cache_set_cookie", &self.cache_set_cookie)
            .field("tag_header", &self.tag_header)
            .field("name", &self.name)
            .field("coalesce", &self.coalesce)
            .field("coalesce_timeout", &self.coalesce_timeout)
            .field("sort_query", &self.sort_query)
            .finish_non_exhaustive()
    }
}

fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        names::CACHE_REQUESTS_TOTAL,
        Unit::Count,
        "Requests the response cache handled, by tier and result."
    );
    describe_gauge!(
        names::CACHE_SIZE_BYTES,
        Unit::Bytes,
        "Bytes held by a response-cache tier."
    );
    describe_gauge!(
        names::CACHE_ENTRIES,
        Unit::Count,
        "Entries held by a response-cache tier."
    );
    describe_counter!(
        names::CACHE_PURGES_TOTAL,
        Unit::Count,
        "Purges asked of the response cache, by target."
    );
    describe_counter!(
        names::CACHE_EVICTIONS_TOTAL,
        Unit::Count,
        "Entries removed from the response cache's memory tier, by cause."
    );
}
