//! What the cache reports: the outcome of a request, counters and sizes, a warm-up's report.

/// What the cache did with a request; also a response extension when the cache is built with
/// [`outcome_extension(true)`](super::ResponseCacheBuilder::outcome_extension), so outer layers
/// (and tests) can see it.
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

/// Cache counters and sizes, read through [`CacheHandle::snapshot`](super::CacheHandle::snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct CacheSnapshot {
    /// Requests served fresh from the cache.
    pub hits: u64,
    /// Requests that went to the origin for a response that may be stored (a cache candidate
    /// not found, or not fresh and not servable stale).
    pub misses: u64,
    /// Requests served stale.
    pub stale: u64,
    /// Requests the cache did not handle (method, `no-store` request, ...).
    pub bypass: u64,
    /// Requests that went to the origin for a response that may not be stored (`no-store`,
    /// `private`, an unknown length past the entry limit, a status never stored, ...): not cache
    /// candidates, so neither misses nor part of [`hit_ratio`](Self::hit_ratio).
    pub uncacheable: u64,
    /// Purges asked of this instance (by tag, URI, prefix or all) and invalidations by an
    /// unsafe method's response (RFC 9111 4.4), whether or not they removed anything; purges
    /// received from other instances through Redis are not counted.
    pub purges: u64,
    /// Responses served after waiting for another request's origin response (coalescing).
    pub collapsed: u64,
    /// Entries in the memory tier.
    pub entries: u64,
    /// Bytes held by the memory tier.
    pub bytes: u64,
    /// The memory tier's byte budget.
    pub max_bytes: u64,
    /// Of [`bytes`](Self::bytes), the large bodies kept in pages of their own, outside the
    /// allocator's heap ([`ResponseCacheBuilder::large_bodies_in_pages`](super::ResponseCacheBuilder::large_bodies_in_pages)).
    pub bytes_in_pages: u64,
    /// `(hits + stale) / (hits + stale + misses)`: the share of cacheable requests served from
    /// the cache, bypassed and uncacheable requests left out; 0 when there was none.
    pub hit_ratio: f64,
    /// Entries evicted because they expired.
    pub evicted_expired: u64,
    /// Entries evicted to stay within the byte budget.
    pub evicted_size: u64,
    /// Entries removed by purges and invalidations.
    pub evicted_explicit: u64,
    /// Entries replaced by a newer response for the same URL and variant.
    pub evicted_replaced: u64,
    /// Hot entries recompressed at the highest level ([`ResponseCacheBuilder::recompress_hot`](super::ResponseCacheBuilder::recompress_hot)
    /// with a compression feature).
    pub recompressed: u64,
    /// Bytes the recompressions saved per hit, summed over the recompressed entries.
    pub recompress_saved_bytes: u64,
    /// The Redis tier's counters, when there is one.
    #[cfg(feature = "redis")]
    pub redis: Option<RedisTierSnapshot>,
}

/// Counters of the Redis tier, in [`CacheSnapshot::redis`].
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RedisTierSnapshot {
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

/// What [`CacheHandle::warm`](super::CacheHandle::warm) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
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
