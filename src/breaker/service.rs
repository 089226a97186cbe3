use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::future::{Call, ResponseFuture};
use super::open::{rejection, Open};
use super::registry::{Shared, DEFAULT_KEY};
use super::state::{Admission, Breaker};
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
        let breaker = match &shared.key_with {
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
                let open = Open::new(breaker.key.clone(), retry_after);
                ResponseFuture::ready(rejection(self.shared.fallback_with.as_deref(), &open))
            }
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
