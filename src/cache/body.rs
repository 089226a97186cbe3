use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::store_job::StoreJob;
use crate::error::BoxError;

pin_project! {
    /// Response body of [`ResponseCache`](super::ResponseCache): a stored body, or the origin's
    /// body passed through (and, when the response is being stored, copied up to the entry size
    /// limit as it streams).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // Served from the cache: the body until it is sent.
        Cached { data: Option<Bytes> },
        // From the origin, with the entry being stored while within the size limit.
        Origin {
            #[pin]
            inner: B,
            job: Option<Box<StoreJob>>,
        },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn cached(data: Option<Bytes>) -> Self {
        Self {
            kind: Kind::Cached {
                data: data.filter(|d| !d.is_empty()),
            },
        }
    }

    pub(crate) fn passthrough(inner: B) -> Self {
        Self {
            kind: Kind::Origin { inner, job: None },
        }
    }

    /// The origin's body, copied into `job` as it streams. A body already at its end (an empty
    /// one) is stored now: hyper and axum never poll such a body, so its end would never be
    /// seen.
    pub(crate) fn storing(inner: B, job: StoreJob) -> Self
    where
        B: Body,
    {
        if inner.is_end_stream() {
            Box::new(job).finish();
            return Self::passthrough(inner);
        }
        Self {
            kind: Kind::Origin {
                inner,
                job: Some(Box::new(job)),
            },
        }
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Cached { .. } => "cached",
            Kind::Origin { .. } => "origin",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Cached { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Origin { mut inner, job } => {
                let frame = ready!(inner.as_mut().poll_frame(cx));
                let frame = match frame {
                    None => {
                        if let Some(j) = job.take() {
                            j.finish();
                        }
                        return Poll::Ready(None);
                    }
                    Some(Err(e)) => {
                        // Not stored: the flight lands `NotStored` when the job drops.
                        *job = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Some(Ok(frame)) => frame.map_data(|mut d| d.copy_to_bytes(d.remaining())),
                };
                if let Some(j) = job.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        if !j.push(data) {
                            *job = None;
                        }
                    }
                    if inner.is_end_stream() {
                        if let Some(j) = job.take() {
                            j.finish();
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Cached { data } => data.is_none(),
            Kind::Origin { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Cached { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Origin { inner, .. } => inner.size_hint(),
        }
    }
}
