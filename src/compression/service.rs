use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Shared;
use crate::util::accept_encoding::negotiate;
use crate::BoxError;

/// Compresses the responses of `S`. Made by
/// [`AdaptiveCompressionLayer`](super::AdaptiveCompressionLayer).
///
/// Clones share the layer's state.
#[derive(Clone)]
pub struct AdaptiveCompression<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> AdaptiveCompression<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the layer's service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AdaptiveCompression<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<super::CompressionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // Everything the response side needs from the request, read before it moves on.
        let head = req.method() == Method::HEAD;
        let accept = negotiate(req.headers(), &self.shared.prefer);
        ResponseFuture::new(self.inner.call(req), self.shared.clone(), head, accept)
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for AdaptiveCompression<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveCompression")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
