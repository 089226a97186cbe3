use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use crate::util::body::InnerOrBytes;

pin_project! {
    /// Response body of [`RateLimit`](super::RateLimit): the inner service's body, untouched,
    /// or the small JSON body of a `429`.
    pub struct RateLimitBody<B> {
        #[pin]
        inner: InnerOrBytes<B>,
    }
}

impl<B> RateLimitBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            inner: InnerOrBytes::inner(body),
        }
    }

    pub(crate) fn limited(data: Bytes) -> Self {
        Self {
            inner: InnerOrBytes::bytes(data),
        }
    }
}

impl<B> std::fmt::Debug for RateLimitBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitBody")
            .field("kind", &self.inner.kind())
            .finish()
    }
}

impl<B> Body for RateLimitBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    crate::util::macros::forward_body_hints!(inner);
}
