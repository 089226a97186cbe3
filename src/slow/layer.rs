use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tower_layer::Layer;

use super::service::SlowRequest;
use super::snapshot::{RouteSnapshot, SlowRequestEntry, SlowRequestSnapshot};
use super::state::Shared;

/// Tracks the latency of every request: per-route percentiles, a log of slow requests,
/// `Server-Timing` and metrics. See the [module docs](super) for an example.
///
/// Clones share one state: build the layer once and clone it (axum clones it per route and per
/// connection).
#[derive(Clone)]
pub struct SlowRequestLayer {
    shared: Arc<Shared>,
}

impl SlowRequestLayer {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A handle to read the tracker's figures and slow log while the layer serves requests.
    pub fn handle(&self) -> SlowRequestHandle {
        SlowRequestHandle {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for SlowRequestLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowRequestLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SlowRequestLayer {
    type Service = SlowRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SlowRequest::new(inner, self.shared.clone())
    }
}

/// Reads the figures of a [`SlowRequestLayer`]. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct SlowRequestHandle {
    shared: Arc<Shared>,
}

impl SlowRequestHandle {
    /// Latency figures of every route seen so far.
    pub fn snapshot(&self) -> SlowRequestSnapshot {
        let reg = &self.shared.registry;
        let now = Instant::now();
        let routes = reg
            .all()
            .iter()
            .map(|r| r.snapshot(&reg.layout, now))
            .filter(|r| {
                r.total.count > 0
                    || (r.route != super::UNMATCHED_ROUTE && r.route != super::OVERFLOW_ROUTE)
            })
            .collect();
        SlowRequestSnapshot {
            uptime: now.saturating_duration_since(reg.layout.start),
            window: reg.layout.window(),
            routes,
        }
    }

    /// Latency figures of one route, if it has been seen.
    pub fn route(&self, route: &str) -> Option<RouteSnapshot> {
        let reg = &self.shared.registry;
        reg.route(route)
            .map(|r| r.snapshot(&reg.layout, Instant::now()))
    }

    /// The most recent slow requests, newest first.
    pub fn slow_requests(&self) -> Vec<SlowRequestEntry> {
        self.shared.log.recent()
    }

    /// Forgets every figure and the slow log (routes stay known).
    pub fn reset(&self) {
        for r in self.shared.registry.all() {
            r.reset();
        }
        self.shared.log.clear();
    }
}

impl fmt::Debug for SlowRequestHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowRequestHandle").finish_non_exhaustive()
    }
}
