use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use super::snapshot::Outcome;
use super::tracked::Tracked;

pin_project! {
    /// Response body of [`SlowRequest`](super::SlowRequest): the inner body, unchanged, plus the
    /// bookkeeping that records the request when the body ends.
    ///
    /// The request ends when the last frame has been produced (or the body reports its end, or
    /// the bytes of a known length, `Content-Length` or an exact size hint, have passed); a
    /// body error ends it as an error; dropping the body before its end (the client went away)
    /// records it as canceled.
    pub struct SlowBody<B> {
        #[pin]
        inner: B,
        tracked: Option<Tracked>,
        // Data bytes still to come when the length is known: the body ends when it reaches 0.
        remaining: Option<u64>,
    }
}

impl<B> SlowBody<B> {
    pub(crate) fn new(inner: B, tracked: Option<Tracked>) -> Self {
        Self {
            inner,
            tracked,
            remaining: None,
        }
    }

    pub(crate) fn with_length(mut self, length: Option<u64>) -> Self {
        self.remaining = length;
        self
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Consumes `self`, returning the inner body. The request is then recorded as canceled
    /// unless it had already ended.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for SlowBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(tracked) = this.tracked.as_mut() {
            if let (Some(Ok(f)), Some(left)) = (&frame, this.remaining.as_mut()) {
                if let Some(data) = f.data_ref() {
                    *left = left.saturating_sub(data.remaining() as u64);
                }
            }
            match &frame {
                None => tracked.finish(Outcome::Completed),
                Some(Err(_)) => tracked.finish(Outcome::Error),
                Some(Ok(_)) if this.inner.is_end_stream() || *this.remaining == Some(0) => {
                    tracked.finish(Outcome::Completed)
                }
                Some(Ok(_)) => return Poll::Ready(frame),
            }
            *this.tracked = None;
        }
        Poll::Ready(frame)
    }

    crate::util::macros::forward_body_hints!(inner);
}

impl<B: Default> Default for SlowBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B> std::fmt::Debug for SlowBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowBody").finish_non_exhaustive()
    }
}
