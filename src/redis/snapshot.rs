//! What a [`RedisLink`](super::RedisLink) reports (serde).

/// Counters of a [`RedisLink`](super::RedisLink), read through
/// [`RedisLink::snapshot`](super::RedisLink::snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RedisLinkSnapshot {
    /// Calls that Redis answered in time.
    pub ok: u64,
    /// Calls that hit the deadline.
    pub timeouts: u64,
    /// Calls that failed (error reply, connection down).
    pub errors: u64,
    /// Calls not made because the link's breaker was open.
    pub skipped: u64,
    /// Times the breaker opened.
    pub opened: u64,
    /// Whether the breaker is open now (Redis is being skipped).
    pub open: bool,
}
