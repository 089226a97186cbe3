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
    ///
    /// With [`pacing`](super::PriorityQueueBuilder::pacing), a body of a lower class yields to
    /// the runtime once before each chunk while a more important class waits or has not
    /// answered, or while the runtime is saturated: the task goes to the back of the run queue
    /// and the requests queued behind it run first.
    pub struct QueueBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        // This chunk already yielded once: the next poll produces it.
        yielded: bool,
    }
}

impl<B> QueueBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        Self {
            inner,
            permit,
            yielded: false,
        }
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
        if !*this.yielded && this.permit.as_ref().is_some_and(Permit::should_pace) {
            // Wake at once: the runtime puts a task that woke itself at the back of its queue.
            *this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        *this.yielded = false;
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
