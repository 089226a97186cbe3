//! The response-extension marker by which a layer says it answered a request itself.

/// Response extension: a layer inside the cache (queue, circuit breaker, rate limiter) answered
/// this request itself instead of the service, usually with a `503` or `429`.
///
/// [`ResponseCacheLayer`](crate::cache::ResponseCacheLayer) treats such a response like an
/// origin failure: it serves a stale entry instead when `stale-if-error` allows.
///
/// ```
/// use tower_perf::Rejected;
///
/// let mut res = http::Response::new(());
/// *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
/// res.extensions_mut().insert(Rejected::new("queue"));
/// assert_eq!(res.extensions().get::<Rejected>().unwrap().by(), "queue");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    by: &'static str,
}

impl Rejected {
    /// A marker naming the layer that rejected the request (`queue`, `breaker`, ...).
    pub const fn new(by: &'static str) -> Self {
        Self { by }
    }

    /// The layer that rejected the request.
    pub fn by(&self) -> &'static str {
        self.by
    }
}
