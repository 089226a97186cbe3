//! The answer of an open breaker: why it answered ([`Open`]), and what.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use crate::reject::Rejected;
use crate::util::time::ceil_secs;

/// A function that answers for an open breaker.
pub(crate) type FallbackDyn = dyn Fn(&Open) -> Response<Bytes> + Send + Sync;

/// Why a breaker answered a request itself; passed to the
/// [`fallback_with`](super::CircuitBreakerBuilder::fallback_with) function.
#[derive(Debug, Clone)]
pub struct Open {
    key: Arc<str>,
    retry_after: Duration,
}

impl Open {
    pub(crate) fn new(key: Arc<str>, retry_after: Duration) -> Self {
        Self { key, retry_after }
    }

    /// The key of the breaker that is open.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long until the breaker lets a probe through (1 s when it is half-open with every
    /// probe slot taken).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// The answer of an open breaker: the fallback's, or `503` with `Retry-After` and a small JSON
/// body; with the [`Rejected`] marker either way.
pub(crate) fn rejection<B: From<Bytes>>(
    fallback: Option<&FallbackDyn>,
    open: &Open,
) -> Response<B> {
    let mut res = match fallback {
        Some(f) => f(open).map(B::from),
        None => crate::reject::rejection(
            http::StatusCode::SERVICE_UNAVAILABLE,
            ceil_secs(open.retry_after),
            "circuit breaker open",
            "breaker",
        ),
    };
    if res.extensions().get::<Rejected>().is_none() {
        res.extensions_mut().insert(Rejected::new("breaker"));
    }
    res
}
