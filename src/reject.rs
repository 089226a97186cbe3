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

/// The answer of a layer that turns a request away itself: `status`, `Retry-After` in whole
/// seconds, a small JSON body `{"error": ..., "retry_after_secs": ...}` and the [`Rejected`]
/// marker naming the layer. Only built when rejecting, never on the way through.
pub(crate) fn rejection<B: From<bytes::Bytes>>(
    status: http::StatusCode,
    retry_after_secs: u64,
    error: &'static str,
    by: &'static str,
) -> http::Response<B> {
    let body = format!("{{\"error\":\"{error}\",\"retry_after_secs\":{retry_after_secs}}}");
    let mut res = http::Response::new(B::from(bytes::Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_after_secs),
    );
    res.extensions_mut().insert(Rejected::new(by));
    res
}
