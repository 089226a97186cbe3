use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::future::{Call, ResponseFuture};
use super::layer::{Open, Shared, DEFAULT_KEY};
use super::state::{ceil_secs, Admission, Breaker};
use crate::reject::Rejected;
use crate::util::request::matched_path;

/// Keyed circuit breakers in front of `S`. Made by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// Clones share the breakers of the layer they came from.
#[derive(Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
    // The breaker of the previous call: most services see one key (`Router::route_layer`) or
    // a few, and reusing it skips the registry lookup.
    last: Option<Arc<Breaker>>,
}

impl<S> CircuitBreaker<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            last: None,
        }
    }

    crate::util::macros::define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        let shared = &self.shared;
        let last = &mut self.last;
        let mut find = |key: Option<&str>| {
            let key = key.unwrap_or(DEFAULT_KEY);
            match last {
                Some(b) if *b.key == *key && !b.is_retired() => b.clone(),
                _ => {
                    let b = shared.breaker(key);
                    *last = Some(b.clone());
                    b
                }
            }
        };
        let breaker = match &shared.key_fn {
            None => find(matched_path(req.extensions())),
            Some(f) => {
                let (parts, body) = req.into_parts();
                let b = find(f(&parts));
                req = Request::from_parts(parts, body);
                b
            }
        };
        match breaker.admit(now) {
            Admission::Pass { gen, probe } => {
                let timeout = breaker.settings().call_timeout;
                let call = Call::new(breaker, gen, probe, now);
                // A timeout too large for the clock (`Duration::MAX`) is no deadline.
                let deadline = timeout.and_then(|t| now.checked_add(t));
                ResponseFuture::called(self.inner.call(req), deadline, call)
            }
            Admission::Reject { retry_after } => {
                let open = Open {
                    key: breaker.key.clone(),
                    retry_after,
                };
                ResponseFuture::ready(rejection(&self.shared, &open))
            }
        }
    }
}

/// The answer of an open breaker: the fallback's, or `503` with `Retry-After` and a small JSON
/// body; with the [`Rejected`] marker either way.
fn rejection<B: From<Bytes>>(shared: &Shared, open: &Open) -> Response<B> {
    let mut res = match &shared.fallback {
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

impl<S: std::fmt::Debug> std::fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
