use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::body::QueueBody;
use super::future::ResponseFuture;
use super::priority::{Classify, Priority};
use super::state::{Admit, Shared};

/// Admission control in front of `S`. Made by [`PriorityQueueLayer`](super::PriorityQueueLayer).
///
/// Clones share the permits and queues of the layer they came from. Always ready when `S` is:
/// admission happens in the response future, so a full queue never stalls a connection's
/// `poll_ready`, and axum needs no `HandleErrorLayer`.
pub struct PriorityQueue<S, C> {
    inner: S,
    shared: Arc<Shared>,
    classifier: Arc<C>,
}

impl<S, C> PriorityQueue<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: Arc<C>) -> Self {
        Self {
            inner,
            shared,
            classifier,
        }
    }

    crate::util::macros::define_inner_service_accessors!();
}

impl<S: Clone, C> Clone for PriorityQueue<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for PriorityQueue<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: Classify<ReqBody>,
    ResBody: Body + From<Bytes>,
{
    type Response = Response<QueueBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Never our own backpressure: a request that cannot run yet waits in its future.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        let priority = match req.extensions().get::<Priority>() {
            // A layer outside (authentication, say) already decided.
            Some(p) => *p,
            None => {
                let header = self
                    .shared
                    .settings
                    .trust_header
                    .then(|| Priority::from_headers(req.headers()))
                    .flatten();
                let p = header.unwrap_or_else(|| self.classifier.classify(&req));
                req.extensions_mut().insert(p);
                p
            }
        };
        match self.shared.admit(priority, now) {
            Admit::Now(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Admit::Queued(ticket) => {
                // The ready service goes with the request; a fresh clone takes its place here
                // (and is made ready by the next `poll_ready`).
                let clone = self.inner.clone();
                let svc = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::queued(svc, req, ticket)
            }
            Admit::Rejected(reason, retry_after) => ResponseFuture::rejected(reason, retry_after),
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for PriorityQueue<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityQueue")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
