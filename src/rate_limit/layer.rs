use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::identity::ClientKey;
use super::service::RateLimit;
use super::snapshot::RateLimitSnapshot;
use super::state::Shared;

/// Limits the request rate of each client. See the [module docs](super).
///
/// Clones share one state: one budget per client across all of them, which is what axum needs
/// (it clones the service for every connection).
#[derive(Clone)]
pub struct RateLimitLayer {
    pub(super) shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// A handle to read the counts and manage the tracked clients while the layer serves.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("quota", &self.shared.default.quota)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}

/// Reads the counts of a [`RateLimitLayer`] and manages its tracked clients. Cheap to clone,
/// `Send + Sync`.
#[derive(Clone)]
pub struct RateLimitHandle {
    shared: Arc<Shared>,
}

impl RateLimitHandle {
    /// The counts so far.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        self.shared.snapshot()
    }

    /// Client buckets held now.
    pub fn tracked_keys(&self) -> usize {
        self.shared.backend.local().len()
    }

    /// Forgets a client under every quota, giving it a full budget again; whether it was
    /// tracked. The key must be made as the layer makes it: `ClientKey::ip` for clients known
    /// by address, `ClientKey::bytes` with the header value for [`key_header`](
    /// super::RateLimitBuilder::key_header). In the shared mode this forgets the client's local
    /// fallback buckets only; its buckets in Redis expire by themselves when full.
    pub fn reset(&self, key: ClientKey<'_>) -> bool {
        self.shared.forget(key)
    }

    /// Forgets every client.
    pub fn clear(&self) {
        self.shared.backend.local().clear();
    }

    /// Drops the buckets of idle clients (full buckets, which carry no information); returns
    /// how many. Not needed for correctness or to bound memory (a full table drops them
    /// itself), but keeps [`tracked_keys`](Self::tracked_keys) close to the active clients if
    /// called now and then.
    pub fn sweep(&self) -> usize {
        self.shared.backend.local().sweep(self.shared.now())
    }
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle").finish_non_exhaustive()
    }
}
