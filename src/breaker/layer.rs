use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tower_layer::Layer;

use super::registry::Shared;
use super::service::CircuitBreaker;
use super::snapshot::{BreakerSnapshot, CircuitBreakerSnapshot, State};

/// Keyed circuit breakers in front of a service. See the [module docs](super) for an example.
///
/// Clones share one state: build the layer once and clone it (axum clones it per route and per
/// connection).
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    pub(super) shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A handle to read the breakers and drive them by hand while the layer serves requests.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.shared.clone())
    }
}

/// Reads and drives the breakers of a [`CircuitBreakerLayer`]. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    shared: Arc<Shared>,
}

impl CircuitBreakerHandle {
    /// State and window figures of every tracked breaker, sorted by key.
    pub fn snapshot(&self) -> CircuitBreakerSnapshot {
        self.shared.registry.snapshot()
    }

    /// State and window figures of one breaker, if it is tracked.
    pub fn breaker(&self, key: &str) -> Option<BreakerSnapshot> {
        let b = self.shared.registry.get(key)?;
        Some(b.snapshot(Instant::now()))
    }

    /// The state of one breaker; `None` when it is not tracked (a new breaker starts closed).
    pub fn state(&self, key: &str) -> Option<State> {
        self.shared.registry.get(key).map(|b| b.state())
    }

    /// Number of tracked breakers.
    pub fn len(&self) -> usize {
        self.shared.registry.len()
    }

    /// No breaker is tracked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens the breaker of `key` (making it if needed) until [`force_close`](Self::force_close)
    /// or [`reset`](Self::reset): no probe goes through meanwhile.
    pub fn force_open(&self, key: &str) {
        self.shared.breaker(key).force_open();
    }

    /// Closes the breaker of `key` with an empty window. It trips again as usual, and its next
    /// open wait keeps the growth of earlier trips. Returns `false` if the key is not tracked.
    pub fn force_close(&self, key: &str) -> bool {
        let b = self.shared.registry.get(key);
        b.map(|b| b.force_close()).is_some()
    }

    /// Closes the breaker of `key` and forgets its history (window and trip count). Returns
    /// `false` if the key is not tracked.
    pub fn reset(&self, key: &str) -> bool {
        let b = self.shared.registry.get(key);
        b.map(|b| b.reset()).is_some()
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("breakers", &self.len())
            .finish()
    }
}
