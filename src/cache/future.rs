//! The response future of [`ResponseCache`](super::ResponseCache).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use super::body::CacheBody;

pin_project_lite::pin_project! {
    /// Response future of [`ResponseCache`]: ready at once for a response served from the
    /// cache, the origin's round trip otherwise.
    pub struct ResponseFuture<B, E> {
        #[pin]
        kind: FutureKind<B, E>,
    }
}

pub(crate) type BoxFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

pin_project_lite::pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<B, E> {
        Ready { res: Option<Response<CacheBody<B>>> },
        Origin { #[pin] fut: BoxFuture<B, E> },
    }
}

impl<B, E> ResponseFuture<B, E> {
    /// A response served from the cache: ready at once.
    pub(crate) fn ready(res: Response<CacheBody<B>>) -> Self {
        Self {
            kind: FutureKind::Ready { res: Some(res) },
        }
    }

    /// The request's way through the origin.
    pub(crate) fn origin(fut: BoxFuture<B, E>) -> Self {
        Self {
            kind: FutureKind::Origin { fut },
        }
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
            FutureKindProj::Origin { fut } => fut.poll(cx),
        }
    }
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
