use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use super::state::Permit;

pin_project! {
    /// Response body of [`PriorityQueue`](super::PriorityQueue): the inner body, unchanged,
    /// holding the request's concurrency permit until the body ends (last frame or error), or
    /// is dropped.
    pub struct QueueBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> QueueBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        Self { inner, permit }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Consumes `self`, returning the inner body; the permit is given back now.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for QueueBody<B>
where
    B: Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let ended = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => this.inner.is_end_stream(),
        };
        if ended {
            if let Some(permit) = this.permit.take() {
                permit.finish();
            }
        }
        Poll::Ready(frame)
    }

    crate::util::macros::forward_body_hints!(inner);
}

impl<B: Default> Default for QueueBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B: From<Bytes>> From<Bytes> for QueueBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::new(B::from(bytes), None)
    }
}

impl<B> std::fmt::Debug for QueueBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBody")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
