//! The layer and its handle.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::purge::Target;
use super::service::ResponseCache;
use super::snapshot::CacheSnapshot;
use super::state::Shared;

/// An HTTP response cache with RFC 9111 semantics. See the [module docs](super).
///
/// Clones share one cache.
#[derive(Clone)]
pub struct ResponseCacheLayer {
    shared: Arc<Shared>,
}

impl ResponseCacheLayer {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A handle to purge entries and read statistics.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache::new(inner, self.shared.clone())
    }
}

/// Purges entries and reads statistics of a [`ResponseCacheLayer`]. Cheap to clone.
///
/// A *soft* purge marks entries stale: they are revalidated before being served, and
/// stale-while-revalidate may still serve them meanwhile. A *hard* purge removes them.
#[derive(Clone)]
pub struct CacheHandle {
    pub(super) shared: Arc<Shared>,
}

impl CacheHandle {
    /// Starts the Redis tier's background tasks, so a purge sent before any request still
    /// reaches the fleet (needs a tokio runtime; otherwise the first request starts them).
    fn start_redis(&self) {
        self.shared.tiers.start(&self.shared);
    }

    /// Purges every entry carrying one of `tags`, every variant included. With a Redis tier,
    /// the purge also reaches Redis and every other instance's memory tier.
    pub fn purge_tags<I, T>(&self, tags: I, hard: bool)
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.start_redis();
        for tag in tags {
            self.shared.purge(Target::Tag(tag.as_ref()), hard);
        }
    }

    /// Purges every variant of one URI (path and query, for example `/items?page=2`).
    pub fn purge_uri(&self, path_and_query: &str, hard: bool) {
        self.start_redis();
        self.shared.purge(Target::Uri(path_and_query), hard);
    }

    /// Purges every entry whose path starts with `prefix`.
    pub fn purge_prefix(&self, prefix: &str, hard: bool) {
        self.start_redis();
        self.shared.purge(Target::Prefix(prefix), hard);
    }

    /// Purges everything.
    pub fn purge_all(&self, hard: bool) {
        self.start_redis();
        self.shared.purge(Target::All, hard);
    }

    /// Counters and sizes, now.
    pub fn snapshot(&self) -> CacheSnapshot {
        self.shared.snapshot()
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle").finish_non_exhaustive()
    }
}
