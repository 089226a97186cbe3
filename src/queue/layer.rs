use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::priority::DefaultClassifier;
use super::service::PriorityQueue;
use super::snapshot::PriorityQueueSnapshot;
use super::state::Shared;

/// Admission control in front of a service. See the [module docs](super) for an example.
///
/// Clones share one state (permits, queues, limiter): build the layer once and clone it (axum
/// clones it per route and per connection).
pub struct PriorityQueueLayer<C = DefaultClassifier> {
    shared: Arc<Shared>,
    classifier: Arc<C>,
}

impl<C> PriorityQueueLayer<C> {
    pub(crate) fn from_parts(shared: Arc<Shared>, classifier: Arc<C>) -> Self {
        Self { shared, classifier }
    }

    /// A handle to read the queue while the layer serves requests.
    pub fn handle(&self) -> PriorityQueueHandle {
        PriorityQueueHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<C> Clone for PriorityQueueLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for PriorityQueueLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityQueueLayer")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for PriorityQueueLayer<C> {
    type Service = PriorityQueue<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityQueue::new(inner, self.shared.clone(), self.classifier.clone())
    }
}

/// Reads a [`PriorityQueueLayer`] while it serves requests. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct PriorityQueueHandle {
    shared: Arc<Shared>,
}

impl PriorityQueueHandle {
    /// Limit, in flight, queue lengths, counts and wait percentiles per class.
    pub fn snapshot(&self) -> PriorityQueueSnapshot {
        self.shared.snapshot()
    }
}

impl fmt::Debug for PriorityQueueHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityQueueHandle")
            .finish_non_exhaustive()
    }
}
