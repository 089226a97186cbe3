//! What a [`RateLimitHandle`](super::RateLimitHandle) reports (serde).

/// Counts of a [`RateLimitLayer`](super::RateLimitLayer), read through
/// [`RateLimitHandle::snapshot`](super::RateLimitHandle::snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RateLimitSnapshot {
    /// Requests let through.
    pub allowed: u64,
    /// Requests answered `429 Too Many Requests`.
    pub limited: u64,
    /// Requests the bypass function exempted.
    pub bypassed: u64,
    /// Client buckets held now (idle ones included until they are swept or evicted).
    pub tracked_keys: u64,
    /// The bound on `tracked_keys`.
    pub max_keys: u64,
    /// Buckets still in use that were evicted to make room for new clients; if this grows,
    /// `max_keys` is too small for the number of active clients.
    pub evicted: u64,
    /// Shared mode: decisions Redis made. Always 0 in process.
    pub redis_decisions: u64,
    /// Shared mode: decisions made without Redis, by the builder's `redis_fallback` (Redis
    /// slow, down, its link's breaker open, or a reply that was not a decision). Always 0 in
    /// process.
    pub fallback_decisions: u64,
    /// Shared mode: Redis calls that failed, timed out or returned something that is not a
    /// decision (calls skipped while the link's breaker is open are not counted here; the
    /// link's own `RedisLink::snapshot` has them). Always 0 in process.
    pub redis_errors: u64,
}
