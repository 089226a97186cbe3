use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use super::body::RateLimitBody;
use super::layer::Headers;
use super::service::add_headers;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit): the inner service's response with
    /// the rate-limit headers added, or the `429` answer, ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
            // Added to the response head when it comes.
            headers: Option<Headers>,
        },
        Limited {
            // Taken when polled.
            response: Option<Response<Bytes>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F, headers: Option<Headers>) -> Self {
        Self {
            kind: Kind::Inner { future, headers },
        }
    }

    pub(crate) fn limited(response: Response<Bytes>) -> Self {
        Self {
            kind: Kind::Limited {
                response: Some(response),
            },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Limited { .. } => "limited",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RateLimitBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(h) = headers.take() {
                    add_headers(res.headers_mut(), h);
                }
                Poll::Ready(Ok(res.map(RateLimitBody::inner)))
            }
            KindProj::Limited { response } => {
                let res = response
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(res.map(RateLimitBody::limited)))
            }
        }
    }
}
