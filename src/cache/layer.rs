//! The layer and its handle.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::purge::Target;
use super::service::ResponseCache;
use super::snapshot::{CacheSnapshot, WarmReport};
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
    shared: Arc<Shared>,
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

    /// Fills the cache by sending `requests` through `service` (usually the whole application,
    /// this cache included, so that responses are stored the normal way), at most `concurrency`
    /// at a time, and reading every body to its end. Needs a tokio runtime.
    ///
    /// The cache key includes the authority (unless
    /// [`ignore_host`](super::ResponseCacheBuilder::ignore_host)), so give each request the `Host`
    /// header your clients send (for example `api.example.com`), or the warmed entries will not
    /// be theirs.
    ///
    /// ```
    /// # async fn warm_up(app: axum::Router, cache: tower_perf::cache::CacheHandle) {
    /// let pages = (1..=5).map(|p| {
    ///     http::Request::get(format!("/api/items?page={p}"))
    ///         .header("host", "api.example.com")
    ///         .body(axum::body::Body::empty())
    ///         .unwrap()
    /// });
    /// let report = cache.warm(app, pages, 4).await;
    /// println!("warmed {} of {}", report.stored + report.already_cached, report.requested);
    /// # }
    /// ```
    pub async fn warm<S, I, ReqBody, ResBody>(
        &self,
        service: S,
        requests: I,
        concurrency: usize,
    ) -> WarmReport
    where
        S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        I: IntoIterator<Item = http::Request<ReqBody>>,
        ReqBody: Send + 'static,
        ResBody: http_body::Body + Send + 'static,
        ResBody::Data: Send,
    {
        super::warm::warm(&self.shared, service, requests, concurrency).await
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
