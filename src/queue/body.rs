use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use super::state::Permit;

/// How many times a paced body yields before one chunk, at most.
///
/// Without a yield, one poll of a connection task writes as many chunks as its write buffer
/// takes, each generated and compressed on the spot; a CPU-bound stream then holds its worker
/// for many chunks per scheduler tick. One yield per chunk (always, for a paced class) makes
/// a tick one chunk at most. Under pressure one yield alone does not make room: tokio polls
/// its I/O driver and wakes the tasks that yielded (`yield_now`) or wait on a socket once
/// every 61 scheduler ticks (its `event_interval`), so behind bodies that yield once per
/// chunk a new request is still seen only every thirty chunks or so. A yield is one tick that costs about a microsecond; 32 of
/// them make each chunk cost half an interval, so the runtime looks at new work about every
/// two chunks, and the chunk's own CPU (generating and compressing tens of KB) stays the bulk
/// of the cost. Bounded, so that a higher class waiting on something slow (a provider, a
/// database) does not stop the body: it slows down, it never spins alone.
pub(crate) const PACE_YIELDS: u8 = 32;

pin_project! {
    /// Response body of [`PriorityQueue`](super::PriorityQueue): the inner body, unchanged,
    /// holding the request's concurrency permit until the body ends (last frame or error), or
    /// is dropped.
    ///
    /// With [`pacing`](super::PriorityQueueBuilder::pacing), a body of a class below `critical`
    /// yields to the runtime once before each chunk, and up to [`PACE_YIELDS`] times while a
    /// more important class waits or has not answered, or while the runtime is saturated: the
    /// task goes to the back of the run queue each time, and the requests queued behind it run
    /// first.
    pub struct QueueBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        // Times this chunk already yielded.
        yields: u8,
    }
}

impl<B> QueueBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        Self {
            inner,
            permit,
            yields: 0,
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
        if this
            .permit
            .as_ref()
            .is_some_and(|p| *this.yields < p.pace())
        {
            // Wake at once: the runtime puts a task that woke itself at the back of its queue.
            *this.yields += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        *this.yields = 0;
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
