//! What the console shows: one serializable snapshot of every layer's handle.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::breaker::CircuitBreakerSnapshot;
use crate::cache::CacheSnapshot;
use crate::queue::PriorityQueueSnapshot;
use crate::rate_limit::RateLimitSnapshot;
use crate::slow::{SlowRequestEntry, SlowRequestSnapshot};
use crate::stack::PerfHandles;

/// Slow-log entries a snapshot carries at most (the newest).
pub(super) const SLOW_LOG_ENTRIES: usize = 50;

/// Every layer of a [`PerfStack`](crate::stack::PerfStack) at one moment, as the console's
/// event stream sends it (JSON, durations in milliseconds).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ConsoleSnapshot {
    /// Which computation of the feed this is (1 for the first); `0` for a snapshot taken
    /// outside the feed ([`Console::snapshot`](super::Console::snapshot)).
    pub seq: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The feed's interval, in milliseconds.
    pub interval_ms: u64,
    /// Per-route counts and latency percentiles.
    pub latency: SlowRequestSnapshot,
    /// The newest slow requests (at most 50), newest first, with phases and request ids.
    pub slow_requests: Vec<SlowRequestEntry>,
    /// Hits, misses, bytes and evictions of the memory tier, and of the Redis tier if any.
    pub cache: CacheSnapshot,
    /// Load tier and level per coding (absent without a compression feature).
    #[cfg(any(
        feature = "compression-zstd",
        feature = "compression-br",
        feature = "compression-gzip",
        feature = "compression-deflate"
    ))]
    pub compression: crate::compression::CompressionSnapshot,
    /// Limit, in flight and waiting per priority class.
    pub queue: PriorityQueueSnapshot,
    /// Every circuit breaker.
    pub breakers: CircuitBreakerSnapshot,
    /// Rate-limit decisions.
    pub rate_limit: RateLimitSnapshot,
}

impl ConsoleSnapshot {
    pub(super) fn take(handles: &PerfHandles, seq: u64, interval_ms: u64) -> Self {
        let mut slow_requests = handles.slow.slow_requests();
        slow_requests.truncate(SLOW_LOG_ENTRIES);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            seq,
            unix_ms,
            interval_ms,
            latency: handles.slow.snapshot(),
            slow_requests,
            cache: handles.cache.snapshot(),
            #[cfg(any(
                feature = "compression-zstd",
                feature = "compression-br",
                feature = "compression-gzip",
                feature = "compression-deflate"
            ))]
            compression: handles.compression.snapshot(),
            queue: handles.queue.snapshot(),
            breakers: handles.breaker.snapshot(),
            rate_limit: handles.rate_limit.snapshot(),
        }
    }
}
