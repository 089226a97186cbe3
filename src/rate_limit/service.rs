use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::answer::{too_many_requests, unavailable};
use super::future::ResponseFuture;
use super::state::{Outcome, PendingOutcome, Shared};

/// Limits the request rate of each client of the inner service. Made by
/// [`RateLimitLayer`](super::RateLimitLayer).
///
/// A limited request never reaches the inner service: it is answered `429 Too Many Requests`
/// at once. Like every rate limiter that answers instead of waiting, it does so after
/// `poll_ready` reserved the inner service; that is harmless for services that are always
/// ready (axum's routers and handlers), and the reason to put the limiter outside of layers
/// that hold capacity per `poll_ready` (a concurrency limit, a buffer).
///
/// The inner service must be `Clone`. In process it is never cloned: the decision is made in
/// `call`. In the shared mode the decision is a Redis round trip, so `call` hands the service
/// that `poll_ready` readied to the response future, which calls it once Redis has answered,
/// and keeps a clone for the next request (the pattern of tower's `AsyncFilter`).
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    crate::util::macros::define_inner_service_accessors!();
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<super::RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let (req, outcome) = if shared.needs_parts {
            // The user's functions see the request head as `Parts`: moved out and back, not
            // copied.
            let (parts, body) = req.into_parts();
            let outcome =
                shared.decide(&parts.headers, &parts.extensions, &parts.uri, Some(&parts));
            (Request::from_parts(parts, body), outcome)
        } else {
            let outcome = shared.decide(req.headers(), req.extensions(), req.uri(), None);
            (req, outcome)
        };
        match outcome {
            Outcome::Bypassed => ResponseFuture::inner(self.inner.call(req), None),
            Outcome::Allowed(headers) => ResponseFuture::inner(self.inner.call(req), headers),
            Outcome::Limited(headers, retry_after) => {
                ResponseFuture::answered(too_many_requests(headers, retry_after))
            }
            Outcome::Unavailable => ResponseFuture::answered(unavailable()),
            Outcome::Pending(decision) => self.pending(decision, req),
        }
    }
}

impl<S> RateLimit<S> {
    /// The shared mode: the readied service goes with the request to the response future,
    /// which calls it once Redis has decided; a clone serves the next request. Out of line,
    /// so that the in-process `call` stays small.
    #[inline(never)]
    fn pending<ReqBody>(
        &mut self,
        decision: PendingOutcome,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::pending(decision, service, req)
    }
}
