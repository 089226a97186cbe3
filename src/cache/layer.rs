use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::HeaderName;
use http::request::Parts;
use tower_layer::Layer;

use super::flight::Flights;
use super::key::{KeyFn, KeyParts, Keyer};
use super::policy::StorePolicy;
use super::purge::{Purges, Target, Validity};
use super::service::ResponseCache;
use super::store::MemoryStore;
use crate::error::ConfigError;
use crate::metrics::{labels, names};

/// A function that gives the default TTL of a request's responses.
pub(crate) type TtlFn = dyn Fn(&Parts) -> Option<Duration> + Send + Sync;

/// What the cache did with a request; also a response extension, so outer layers (and tests)
/// can see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the cache, fresh (or after revalidating with a `304`).
    Hit,
    /// Served from the cache while stale (stale-while-revalidate, stale-if-error, max-stale).
    Stale,
    /// Went to the origin.
    Miss,
    /// The cache did not handle it (method, `no-store` request, ...).
    Bypass,
}

/// Cache counters, read through [`CacheHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CacheStats {
    /// Requests served fresh from the cache.
    pub hits: u64,
    /// Requests that went to the origin.
    pub misses: u64,
    /// Requests served stale.
    pub stale: u64,
    /// Requests the cache did not handle.
    pub bypass: u64,
    /// Responses served after waiting for another request's origin response (coalescing).
    pub collapsed: u64,
    /// Entries in the memory tier.
    pub entries: u64,
    /// Bytes held by the memory tier.
    pub bytes: u64,
    /// The memory tier's byte budget.
    pub max_bytes: u64,
    /// `(hits + stale) / (hits + stale + misses)`, 0 when there was no request.
    pub hit_ratio: f64,
    /// Entries evicted because they expired.
    pub evicted_expired: u64,
    /// Entries evicted to stay within the byte budget.
    pub evicted_size: u64,
    /// Entries removed by purges and invalidations.
    pub evicted_explicit: u64,
    /// Entries replaced by a newer response for the same URL and variant.
    pub evicted_replaced: u64,
    /// Hot entries recompressed at the highest level ([`ResponseCacheBuilder::recompress_hot`]
    /// with a compression feature).
    pub recompressed: u64,
    /// Bytes the recompressions saved per hit, summed over the recompressed entries.
    pub recompress_saved_bytes: u64,
    /// The Redis tier's counters, when there is one.
    #[cfg(feature = "redis")]
    pub redis: Option<RedisTierStats>,
}

/// Counters of the Redis tier, in [`CacheStats::redis`].
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RedisTierStats {
    /// Requests served from Redis (the memory tier missed), fresh.
    pub hits: u64,
    /// Requests served from Redis while stale.
    pub stale: u64,
    /// Lookups that found nothing usable in Redis.
    pub misses: u64,
    /// Lookups that got no answer (timeout, error, link open): the request went on without Redis.
    pub errors: u64,
    /// Entries written to Redis.
    pub stores: u64,
    /// Values that did not decode (deleted, treated as misses).
    pub corrupt: u64,
    /// Purges this instance recorded in Redis.
    pub purges_sent: u64,
    /// Purges received from the fleet's channel (this instance's own included).
    pub purges_received: u64,
    /// Times the fleet's purge records were loaded (after connecting, reconnecting, or missed
    /// messages).
    pub resyncs: u64,
    /// Cold keys for which this instance waited on another instance's lease.
    pub lease_waits: u64,
    /// Whether this instance listens to the fleet's purges (subscribed, records loaded).
    pub listening: bool,
    /// The Redis link: calls, timeouts, errors, breaker.
    pub link: crate::redis::RedisLinkSnapshot,
}

/// What [`CacheHandle::warm`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WarmReport {
    /// Requests sent.
    pub requested: u64,
    /// Responses stored by this warm-up.
    pub stored: u64,
    /// Responses that were already in the cache.
    pub already_cached: u64,
    /// Responses the cache did not store (not cacheable, too large, errors from the origin).
    pub not_stored: u64,
    /// Requests that failed (the service returned an error, or the body did).
    pub failed: u64,
}

enum Warmed {
    Stored,
    Hit,
    NotStored,
    Failed,
}

/// Reads this cache's member of `Cache-Status` to tell what happened to a warm-up request.
fn warmed(name: &str, headers: &http::HeaderMap) -> Warmed {
    for value in headers.get_all(super::status::CACHE_STATUS.clone()) {
        let Ok(value) = value.to_str() else { continue };
        // Ours is the last member naming this cache.
        if let Some(member) = value
            .split(',')
            .map(str::trim)
            .rfind(|m| m.split(';').next().map(str::trim) == Some(name))
        {
            let params: Vec<&str> = member.split(';').map(str::trim).collect();
            return if params.contains(&"stored") {
                Warmed::Stored
            } else if params.contains(&"hit") {
                Warmed::Hit
            } else {
                Warmed::NotStored
            };
        }
    }
    Warmed::NotStored
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) bypass: AtomicU64,
    pub(crate) collapsed: AtomicU64,
    // Metric handles per result, made on first use.
    metrics: [OnceLock<::metrics::Counter>; 5],
}

impl Counters {
    pub(crate) fn count(&self, outcome: CacheOutcome) {
        let (counter, idx, label) = match outcome {
            CacheOutcome::Hit => (&self.hits, 0, "hit"),
            CacheOutcome::Miss => (&self.misses, 1, "miss"),
            CacheOutcome::Stale => (&self.stale, 2, "stale"),
            CacheOutcome::Bypass => (&self.bypass, 3, "bypass"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.metric(idx, label).increment(1);
    }

    fn metric(&self, idx: usize, label: &'static str) -> &::metrics::Counter {
        self.metrics[idx].get_or_init(|| {
            ::metrics::counter!(names::CACHE_REQUESTS_TOTAL,
                labels::CACHE_TIER => "memory", labels::CACHE_RESULT => label)
        })
    }
}

/// The purge generations current when an origin request starts, stamped on what it stores:
/// purges recorded later cover it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    /// This instance's generation (memory tier).
    pub(crate) local: u64,
    /// The fleet's generation as this instance knows it (Redis tier); 0 without one.
    pub(crate) fleet: u64,
}

/// The default seed of the Redis tier's key hashes (any fixed value works; every instance must
/// use the same one).
#[cfg(feature = "redis")]
const REDIS_KEY_SEED: u64 = 0x7467_7065_7266_0001;

/// State shared by every clone of the layer and its services.
pub(crate) struct Shared {
    pub(crate) store: MemoryStore,
    pub(crate) purges: Purges,
    pub(crate) flights: Arc<Flights>,
    pub(crate) refreshes: Arc<Flights>,
    pub(crate) keyer: Keyer,
    pub(crate) key_fn: Option<Arc<KeyFn>>,
    pub(crate) policy: StorePolicy,
    pub(crate) route_ttls: HashMap<String, Duration>,
    pub(crate) ttl_fn: Option<Arc<TtlFn>>,
    pub(crate) grace: Duration,
    pub(crate) max_entry_bytes: usize,
    pub(crate) tag_header: HeaderName,
    pub(crate) name: Box<str>,
    pub(crate) coalesce: bool,
    pub(crate) coalesce_timeout: Duration,
    pub(crate) counters: Counters,
    /// Recompression of hot entries, when configured.
    #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
    pub(crate) recompress: Option<super::recompress::Recompress>,
    /// The shared tier, when configured.
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<Arc<super::redis_tier::RedisTier>>,
    size_gauge: OnceLock<::metrics::Gauge>,
    entries_gauge: OnceLock<::metrics::Gauge>,
    /// When the size gauges were last published after a store: ms since `created`, plus 1
    /// (0: never).
    size_reported: AtomicU64,
    created: std::time::Instant,
}

/// Stores publish the size gauges at most this often: counting entries walks the whole store.
const SIZE_REPORT_EVERY_MS: u64 = 1000;

impl Shared {
    /// The default TTL for a request's responses without explicit freshness.
    pub(crate) fn default_ttl(&self, parts: &Parts) -> Option<Duration> {
        if let Some(f) = &self.ttl_fn {
            if let Some(ttl) = f(parts) {
                return Some(ttl);
            }
        }
        if !self.route_ttls.is_empty() {
            if let Some(route) = crate::util::request::matched_path(&parts.extensions) {
                if let Some(ttl) = self.route_ttls.get(route) {
                    return Some(*ttl);
                }
            }
        }
        self.policy.default_ttl
    }

    /// The generations to stamp on a response whose origin request starts now.
    pub(crate) fn stamp(&self) -> Stamp {
        Stamp {
            local: self.purges.current(),
            #[cfg(feature = "redis")]
            fleet: self.redis.as_ref().map_or(0, |r| r.fleet_generation()),
            #[cfg(not(feature = "redis"))]
            fleet: 0,
        }
    }

    /// Purges `target` here and, with a Redis tier, in Redis and on every other instance.
    pub(crate) fn purge(&self, target: Target<'_>, hard: bool) {
        let _generation = self.purge_memory(target, hard);
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            redis.publish_purge(target, hard, _generation);
        }
    }

    /// Purges `target` from the memory tier only: records the purge (checked on read) and,
    /// when hard, drops the entries now.
    pub(crate) fn purge_memory(&self, target: Target<'_>, hard: bool) -> u64 {
        let generation = self.purges.purge(target, hard);
        if hard {
            self.drop_matching(target);
        }
        generation
    }

    /// Drops the memory tier's entries that `target` covers (lazily, through moka).
    pub(crate) fn drop_matching(&self, target: Target<'_>) {
        match target {
            Target::Tag(tag) => {
                let tag: Arc<str> = tag.into();
                self.store.remove_if(move |e| e.tags.contains(&tag));
            }
            Target::Uri(pq) => {
                let target: Box<str> = pq.into();
                self.store.remove_if(move |e| {
                    e.uri
                        .path_and_query()
                        .is_some_and(|p| p.as_str() == &*target)
                });
            }
            Target::Prefix(prefix) => {
                let prefix: Box<str> = prefix.into();
                self.store
                    .remove_if(move |e| e.uri.path().starts_with(&*prefix));
            }
            Target::All => self.store.clear(),
        }
    }

    /// Whether a stored entry survived the purges, this instance's and the fleet's.
    pub(crate) fn validity(&self, entry: &super::store::Entry) -> Validity {
        let local = self.purges.check(entry);
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return match (local, redis.check(entry)) {
                (Validity::Gone, _) | (_, Validity::Gone) => Validity::Gone,
                (Validity::Stale, _) | (_, Validity::Stale) => Validity::Stale,
                _ => Validity::Valid,
            };
        }
        local
    }

    /// Publishes the size gauges after a store, at most once a second.
    pub(crate) fn report_size_soon(&self) {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.size_reported.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < SIZE_REPORT_EVERY_MS {
            return;
        }
        if self
            .size_reported
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.report_size();
        }
    }

    /// Publishes the memory tier's size gauges.
    pub(crate) fn report_size(&self) {
        self.size_gauge
            .get_or_init(
                || ::metrics::gauge!(names::CACHE_SIZE_BYTES, labels::CACHE_TIER => "memory"),
            )
            .set(self.store.weighted_size() as f64);
        self.entries_gauge
            .get_or_init(|| ::metrics::gauge!(names::CACHE_ENTRIES, labels::CACHE_TIER => "memory"))
            .set(self.store.entry_count() as f64);
    }
}

/// Configures a [`ResponseCacheLayer`]. Made by [`ResponseCacheLayer::builder`].
#[must_use]
pub struct ResponseCacheBuilder {
    max_bytes: u64,
    max_entry_bytes: usize,
    default_ttl: Option<Duration>,
    route_ttls: HashMap<String, Duration>,
    ttl_fn: Option<Arc<TtlFn>>,
    max_ttl: Duration,
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
    redis: Option<(crate::redis::RedisLink, u64)>,
    #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
    recompress_hot: Option<u32>,
}

impl Default for ResponseCacheBuilder {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            default_ttl: None,
            route_ttls: HashMap::new(),
            ttl_fn: None,
            max_ttl: Duration::from_secs(24 * 3600),
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
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompress_hot: None,
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

    /// Freshness for responses that carry none (no `max-age`, `s-maxage`, `Expires`). Response
    /// headers win where they are stricter (`no-cache`, `max-age=0`, `no-store`, `private`).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Like [`default_ttl`](Self::default_ttl), for one route (axum's `MatchedPath`; the layer
    /// must then run inside the router, `Router::layer`).
    pub fn route_ttl(mut self, route: impl Into<String>, ttl: Duration) -> Self {
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

    /// Upper bound on any freshness lifetime. Default: 1 day.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
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
        self.redis = Some((link, REDIS_KEY_SEED));
        self
    }

    /// Like [`redis`](Self::redis), with a secret seed for the keys' hashes, so that clients
    /// cannot predict where a URL lands. Every instance that shares entries needs the same seed.
    #[cfg(feature = "redis")]
    pub fn redis_with_seed(mut self, link: crate::redis::RedisLink, seed: u64) -> Self {
        self.redis = Some((link, seed));
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
    pub fn build(self) -> Result<ResponseCacheLayer, ConfigError> {
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
                format!("the TTL of route {route:?} must be greater than zero and at most max_ttl"),
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
        describe_metrics();
        let name = self.name;
        let record_ttl = self.max_ttl + self.grace.max(Duration::from_secs(3600)) * 2;
        let shared = Shared {
            store: MemoryStore::new(self.max_bytes),
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
            },
            route_ttls: self.route_ttls,
            ttl_fn: self.ttl_fn,
            grace: self.grace,
            max_entry_bytes: self.max_entry_bytes,
            tag_header: self.tag_header,
            name: name.clone().into_boxed_str(),
            coalesce: self.coalesce,
            coalesce_timeout: self.coalesce_timeout,
            counters: Counters::default(),
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompress: self.recompress_hot.map(super::recompress::Recompress::new),
            #[cfg(feature = "redis")]
            redis: self.redis.map(|(link, seed)| {
                Arc::new(super::redis_tier::RedisTier::new(
                    super::redis_tier::TierConfig {
                        link,
                        name: name.clone(),
                        seed,
                        lease_ttl: self.coalesce_timeout,
                        lease_wait: self.coalesce_timeout,
                        record_ttl,
                    },
                ))
            }),
            size_gauge: OnceLock::new(),
            entries_gauge: OnceLock::new(),
            size_reported: AtomicU64::new(0),
            created: std::time::Instant::now(),
        };
        Ok(ResponseCacheLayer {
            shared: Arc::new(shared),
        })
    }
}

impl fmt::Debug for ResponseCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheBuilder")
            .field("max_bytes", &self.max_bytes)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("default_ttl", &self.default_ttl)
            .field("route_ttls", &self.route_ttls)
            .field("max_ttl", &self.max_ttl)
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
        names::CACHE_EVICTIONS_TOTAL,
        Unit::Count,
        "Entries removed from the response cache's memory tier, by cause."
    );
}

/// An HTTP response cache with RFC 9111 semantics. See the [module docs](super).
///
/// Clones share one cache.
#[derive(Clone)]
pub struct ResponseCacheLayer {
    shared: Arc<Shared>,
}

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

    /// A handle to purge entries and read statistics.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Default for ResponseCacheLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache::new(inner, self.shared.clone())
    }
}

/// Purges entries and reads statistics of a [`ResponseCacheLayer`]. Cheap to clone.
///
/// A *soft* purge marks entries stale: they are revalidated before being served, and
/// stale-while-revalidate may still serve them meanwhile. A *hard* purge removes them.
#[derive(Clone)]
pub struct CacheHandle {
    shared: Arc<Shared>,
}

impl CacheHandle {
    /// Starts the Redis tier's background tasks, so a purge sent before any request still
    /// reaches the fleet (needs a tokio runtime; otherwise the first request starts them).
    fn start_redis(&self) {
        #[cfg(feature = "redis")]
        if let Some(tier) = &self.shared.redis {
            tier.ensure_started(&self.shared);
        }
    }

    /// Purges every entry carrying one of `tags`, every variant included. With a Redis tier,
    /// the purge also reaches Redis and every other instance's memory tier.
    pub fn purge_tags<I, T>(&self, tags: I, hard: bool)
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.start_redis();
        for tag in tags {
            self.shared.purge(Target::Tag(tag.as_ref()), hard);
        }
    }

    /// Purges every variant of one URI (path and query, for example `/items?page=2`).
    pub fn purge_uri(&self, path_and_query: &str, hard: bool) {
        self.start_redis();
        self.shared.purge(Target::Uri(path_and_query), hard);
    }

    /// Purges every entry whose path starts with `prefix`.
    pub fn purge_prefix(&self, prefix: &str, hard: bool) {
        self.start_redis();
        self.shared.purge(Target::Prefix(prefix), hard);
    }

    /// Purges everything.
    pub fn purge_all(&self, hard: bool) {
        self.start_redis();
        self.shared.purge(Target::All, hard);
    }

    /// Fills the cache by sending `requests` through `service` (usually the whole application,
    /// this cache included, so that responses are stored the normal way), at most `concurrency`
    /// at a time, and reading every body to its end. Needs a tokio runtime.
    ///
    /// The cache key includes the authority (unless
    /// [`ignore_host`](ResponseCacheBuilder::ignore_host)), so give each request the `Host`
    /// header your clients send (for example `api.example.com`), or the warmed entries will not
    /// be theirs.
    ///
    /// ```
    /// # async fn warm_up(app: axum::Router, cache: tower_perf::cache::CacheHandle) {
    /// let pages = (1..=5).map(|p| {
    ///     http::Request::get(format!("/api/items?page={p}"))
    ///         .header("host", "api.example.com")
    ///         .body(axum::body::Body::empty())
    ///         .unwrap()
    /// });
    /// let report = cache.warm(app, pages, 4).await;
    /// println!("warmed {} of {}", report.stored + report.already_cached, report.requested);
    /// # }
    /// ```
    pub async fn warm<S, I, ReqBody, ResBody>(
        &self,
        service: S,
        requests: I,
        concurrency: usize,
    ) -> WarmReport
    where
        S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        I: IntoIterator<Item = http::Request<ReqBody>>,
        ReqBody: Send + 'static,
        ResBody: http_body::Body + Send + 'static,
        ResBody::Data: Send,
    {
        let concurrency = concurrency.max(1);
        let name = self.shared.name.clone();
        let mut report = WarmReport::default();
        let mut tasks = tokio::task::JoinSet::new();
        let tally =
            |report: &mut WarmReport, done: Result<Warmed, tokio::task::JoinError>| match done {
                Ok(Warmed::Stored) => report.stored += 1,
                Ok(Warmed::Hit) => report.already_cached += 1,
                Ok(Warmed::NotStored) => report.not_stored += 1,
                Ok(Warmed::Failed) | Err(_) => report.failed += 1,
            };
        for req in requests {
            report.requested += 1;
            while tasks.len() >= concurrency {
                if let Some(done) = tasks.join_next().await {
                    tally(&mut report, done);
                }
            }
            let mut svc = service.clone();
            let name = name.clone();
            tasks.spawn(async move {
                let Ok(res) = super::service::call_ready(&mut svc, req).await else {
                    return Warmed::Failed;
                };
                let outcome = warmed(&name, res.headers());
                let mut body = std::pin::pin!(res.into_body());
                while let Some(frame) =
                    std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                {
                    if frame.is_err() {
                        return Warmed::Failed;
                    }
                }
                outcome
            });
        }
        while let Some(done) = tasks.join_next().await {
            tally(&mut report, done);
        }
        report
    }

    /// Counters and sizes.
    pub fn stats(&self) -> CacheStats {
        let s = &self.shared;
        s.store.sync();
        s.report_size();
        let c = &s.counters;
        let hits = c.hits.load(Ordering::Relaxed);
        let misses = c.misses.load(Ordering::Relaxed);
        let stale = c.stale.load(Ordering::Relaxed);
        let served = hits + stale;
        let ev = &s.store.evictions;
        CacheStats {
            hits,
            misses,
            stale,
            bypass: c.bypass.load(Ordering::Relaxed),
            collapsed: c.collapsed.load(Ordering::Relaxed),
            entries: s.store.entry_count(),
            bytes: s.store.weighted_size(),
            max_bytes: s.store.max_bytes(),
            hit_ratio: if served + misses == 0 {
                0.0
            } else {
                served as f64 / (served + misses) as f64
            },
            evicted_expired: ev.expired.load(Ordering::Relaxed),
            evicted_size: ev.size.load(Ordering::Relaxed),
            evicted_explicit: ev.explicit.load(Ordering::Relaxed),
            evicted_replaced: ev.replaced.load(Ordering::Relaxed),
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompressed: s
                .recompress
                .as_ref()
                .map_or(0, |r| r.done.load(Ordering::Relaxed)),
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompress_saved_bytes: s
                .recompress
                .as_ref()
                .map_or(0, |r| r.saved_bytes.load(Ordering::Relaxed)),
            #[cfg(not(any(feature = "compression-br", feature = "compression-zstd")))]
            recompressed: 0,
            #[cfg(not(any(feature = "compression-br", feature = "compression-zstd")))]
            recompress_saved_bytes: 0,
            #[cfg(feature = "redis")]
            redis: s.redis.as_ref().map(|t| t.stats()),
        }
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle").finish_non_exhaustive()
    }
}
