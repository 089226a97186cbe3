use std::sync::atomic::Ordering;
use std::sync::Arc;

use tower_layer::Layer;

use super::adapt::{Decision, Tier};
use super::service::AdaptiveCompression;
use super::snapshot::CompressionSnapshot;
use super::state::{Shared, ENCODING_NAMES};

/// Compresses response bodies, choosing the coding from `Accept-Encoding` and the level from
/// the body size and the load. See the [module docs](super).
///
/// Clones share one state (load measurement, encoder costs, stats).
#[derive(Clone)]
pub struct AdaptiveCompressionLayer {
    shared: Arc<Shared>,
}

impl AdaptiveCompressionLayer {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A handle to read the layer's stats at run time.
    pub fn handle(&self) -> CompressionHandle {
        CompressionHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for AdaptiveCompressionLayer {
    type Service = AdaptiveCompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveCompression::new(inner, self.shared.clone())
    }
}

impl std::fmt::Debug for AdaptiveCompressionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveCompressionLayer")
            .finish_non_exhaustive()
    }
}

/// Reads the stats of an [`AdaptiveCompressionLayer`]. Cheap to clone.
#[derive(Clone)]
pub struct CompressionHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CompressionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionHandle").finish_non_exhaustive()
    }
}

impl CompressionHandle {
    /// The current load tier.
    pub fn tier(&self) -> Tier {
        self.shared.load.current_tier()
    }

    /// Responses counted with this encoding and decision.
    pub fn responses(&self, encoding: &str, decision: Decision) -> u64 {
        match ENCODING_NAMES.iter().position(|n| *n == encoding) {
            Some(i) => self.shared.counters[i].decisions[decision.index()].load(Ordering::Relaxed),
            None => 0,
        }
    }

    /// Everything the layer counts, for an admin endpoint (serde).
    pub fn snapshot(&self) -> CompressionSnapshot {
        CompressionSnapshot::of(&self.shared)
    }
}
