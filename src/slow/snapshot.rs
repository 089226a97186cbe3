//! What the tracker reports: serializable snapshots of per-route latencies and slow requests.

use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::timings::Phase;
use crate::util::time::{serialize_millis, serialize_opt_millis, to_millis};

/// A point-in-time view of every route the tracker has seen.
///
/// Durations serialize as fractional milliseconds (`"p99_ms": 12.5`).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SlowRequestSnapshot {
    /// Time since the layer was built.
    #[serde(rename = "uptime_ms", serialize_with = "serialize_millis")]
    pub uptime: Duration,
    /// Length of the sliding window the `window` figures cover.
    #[serde(rename = "window_ms", serialize_with = "serialize_millis")]
    pub window: Duration,
    /// One entry per route, sorted by route; the `unmatched` and `overflow` buckets come last and
    /// are left out while they are empty.
    pub routes: Vec<RouteSnapshot>,
}

impl SlowRequestSnapshot {
    /// The entry for `route`, if the tracker has seen it.
    pub fn route(&self, route: &str) -> Option<&RouteSnapshot> {
        self.routes.iter().find(|r| r.route == route)
    }
}

/// Latency figures of one route.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RouteSnapshot {
    /// The route template (`/api/v1/properties/{id}`), `unmatched` or `overflow`.
    pub route: String,
    /// Requests at or above this duration count as slow.
    #[serde(rename = "slow_threshold_ms", serialize_with = "serialize_millis")]
    pub slow_threshold: Duration,
    /// Over the recent sliding window.
    pub window: LatencySummary,
    /// Since the layer was built (or last reset).
    pub total: LatencySummary,
}

/// Counts and latency percentiles over one period.
///
/// Latency is the time from receiving the request to the end of the response body. Percentiles,
/// mean and max cover requests that finished (completed or error); canceled requests are counted
/// but not part of the latency figures, since their duration says when the client left, not how
/// fast the server was. Percentiles carry the histogram's precision (1% by default; see
/// [`SlowRequestBuilder::precision`](super::SlowRequestBuilder::precision)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Requests that ended in the period: completed, errors and canceled.
    pub count: u64,
    /// Requests that ended with a 5xx status, an inner service error or a body error.
    pub errors: u64,
    /// Requests whose client went away before the end of the response.
    pub canceled: u64,
    /// Requests at or above the route's slow threshold.
    pub slow: u64,
    /// Mean latency.
    #[serde(rename = "mean_ms", serialize_with = "serialize_millis")]
    pub mean: Duration,
    /// Median latency.
    #[serde(rename = "p50_ms", serialize_with = "serialize_millis")]
    pub p50: Duration,
    /// 90th percentile.
    #[serde(rename = "p90_ms", serialize_with = "serialize_millis")]
    pub p90: Duration,
    /// 95th percentile.
    #[serde(rename = "p95_ms", serialize_with = "serialize_millis")]
    pub p95: Duration,
    /// 99th percentile.
    #[serde(rename = "p99_ms", serialize_with = "serialize_millis")]
    pub p99: Duration,
    /// 99.9th percentile.
    #[serde(rename = "p999_ms", serialize_with = "serialize_millis")]
    pub p999: Duration,
    /// Largest latency.
    #[serde(rename = "max_ms", serialize_with = "serialize_millis")]
    pub max: Duration,
}

/// One request that took at least its route's slow threshold.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SlowRequestEntry {
    /// Wall-clock time the request ended.
    #[serde(rename = "unix_ms", serialize_with = "unix_millis")]
    pub at: SystemTime,
    /// Request method.
    pub method: String,
    /// Route template, `unmatched` or `overflow`.
    pub route: String,
    /// Request path; the query string is dropped unless
    /// [`log_query`](super::SlowRequestBuilder::log_query) is on.
    pub path: String,
    /// Response status; `None` when the request failed or was canceled before a response head.
    pub status: Option<u16>,
    /// How the request ended.
    pub outcome: Outcome,
    /// Time from receiving the request to the end of the response (or to the cancel).
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    /// Time from receiving the request to the response head, when there was one.
    #[serde(rename = "head_ms", serialize_with = "serialize_opt_millis")]
    pub head: Option<Duration>,
    /// The request id (tower-http's `RequestId`, or the request-id header of the request or the
    /// response), when there was one.
    pub request_id: Option<String>,
    /// The phases the layers and the handler recorded in [`Timings`](crate::Timings).
    #[serde(serialize_with = "phases")]
    pub phases: Vec<Phase>,
}

fn unix_millis<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    s.serialize_u64(ms)
}

fn phases<S: Serializer>(p: &[Phase], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeSeq, SerializeStruct};
    struct One<'a>(&'a Phase);
    impl Serialize for One<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("Phase", 2)?;
            st.serialize_field("name", self.0.name())?;
            st.serialize_field("ms", &to_millis(self.0.duration()))?;
            st.end()
        }
    }
    let mut seq = s.serialize_seq(Some(p.len()))?;
    for phase in p {
        seq.serialize_element(&One(phase))?;
    }
    seq.end()
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The response body was sent to its end.
    Completed,
    /// The inner service failed, or the response body ended with an error.
    Error,
    /// The client went away (the response future or body was dropped) before the end.
    Canceled,
}
