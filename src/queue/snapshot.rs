//! What [`PriorityQueueHandle::snapshot`](super::PriorityQueueHandle::snapshot) returns.

use std::time::Duration;

use serde::Serialize;

use super::priority::Priority;
use crate::util::time::serialize_millis;

/// The state of a [`PriorityQueueLayer`](super::PriorityQueueLayer) at one instant.
/// Serializes to JSON with durations in milliseconds.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PriorityQueueSnapshot {
    /// The concurrency limit in force (fixed, or where the adaptive limit stands).
    pub limit: usize,
    /// Requests holding a permit: admitted, response body not yet ended.
    pub in_flight: usize,
    /// Requests waiting in the queues, all classes.
    pub queued: usize,
    /// Whether CoDel control is in its overloaded mode (newest first, long waiters dropped).
    pub overloaded: bool,
    /// Completed requests per second, smoothed: what `Retry-After` is estimated from.
    pub drain_rate: f64,
    /// Whether the saturation signal says the runtime is saturated (false without a signal).
    pub saturated: bool,
    /// The saturation signal's smoothed runtime lag (zero without a signal).
    #[serde(serialize_with = "serialize_millis")]
    pub runtime_lag: Duration,
    /// One entry per class, most important first.
    pub classes: Vec<ClassSnapshot>,
}

impl PriorityQueueSnapshot {
    /// The entry of one class.
    pub fn class(&self, p: Priority) -> &ClassSnapshot {
        &self.classes[p.index()]
    }
}

/// The figures of one priority class. Counts are since the layer was built; wait percentiles
/// cover admitted requests of the recent wait window (queued or not: an immediate admission
/// waited zero).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ClassSnapshot {
    /// The class.
    pub priority: Priority,
    /// Requests of this class waiting now.
    pub queued: usize,
    /// Requests of this class holding a permit now.
    pub in_flight: usize,
    /// The permits this class may hold at most under the current limit (its share).
    pub max_in_flight: usize,
    /// Requests admitted (at once or after waiting).
    pub admitted: u64,
    /// Requests answered 503 because the queue was full or a higher class displaced them.
    pub rejected: u64,
    /// Requests answered 503 after waiting too long (their class's maximum wait, or CoDel).
    pub timed_out: u64,
    /// Requests whose client went away while they waited.
    pub canceled: u64,
    /// Admitted requests the wait percentiles are computed from.
    pub wait_samples: u64,
    /// Median queue wait.
    #[serde(serialize_with = "serialize_millis")]
    pub wait_p50: Duration,
    /// 90th percentile queue wait.
    #[serde(serialize_with = "serialize_millis")]
    pub wait_p90: Duration,
    /// 99th percentile queue wait.
    #[serde(serialize_with = "serialize_millis")]
    pub wait_p99: Duration,
    /// Longest queue wait.
    #[serde(serialize_with = "serialize_millis")]
    pub wait_max: Duration,
}
