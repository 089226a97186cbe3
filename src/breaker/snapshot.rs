//! What a [`CircuitBreakerHandle`](super::CircuitBreakerHandle) reports (serde): the state of
//! a breaker and its window figures.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls go through; their outcomes fill the window.
    Closed,
    /// Calls are answered at once without reaching the service, until the open wait is over.
    Open,
    /// A few probe calls go through to test whether the service recovered.
    HalfOpen,
}

impl State {
    /// The label of the state in metrics and snapshots: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state and window figures of every breaker of a layer, read through
/// [`CircuitBreakerHandle::snapshot`](super::CircuitBreakerHandle::snapshot).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CircuitBreakerSnapshot {
    /// One entry per tracked breaker, sorted by key.
    pub breakers: Vec<BreakerSnapshot>,
}

/// The state and window figures of one breaker.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The breaker's key: a route template, or what the key function returned.
    pub key: String,
    /// The current state.
    pub state: State,
    /// Calls inside the window (in the closed state; the window restarts empty on every state
    /// change).
    pub calls: u32,
    /// Failed calls inside the window.
    pub failures: u32,
    /// Slow calls inside the window (a call can be both failed and slow).
    pub slow_calls: u32,
    /// `failures / calls`, 0 without calls.
    pub failure_rate: f64,
    /// `slow_calls / calls`, 0 without calls.
    pub slow_call_rate: f64,
    /// Trips since the breaker last recovered; the open wait grows with them.
    pub consecutive_trips: u32,
    /// Open by a manual [`force_open`](super::CircuitBreakerHandle::force_open).
    pub forced_open: bool,
    /// Open: seconds (rounded up) until the breaker lets probes through.
    pub retry_after_secs: Option<u64>,
    /// Half-open: probe calls still running.
    pub probes_in_flight: u32,
    /// Time since the latest call; serialized as `idle_ms`, milliseconds like every duration in
    /// the crate's snapshots.
    #[serde(
        rename = "idle_ms",
        serialize_with = "crate::util::time::serialize_millis"
    )]
    pub idle: Duration,
}
