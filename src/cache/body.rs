use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::service::Waiters;
use super::state::Shared;
use super::store::{Entry, EntryKey};
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

    pub(crate) fn storing(inner: B, job: StoreJob) -> Self {
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

/// A response on its way into the cache: the entry waits for its body.
pub(crate) struct StoreJob {
    shared: Arc<Shared>,
    key: EntryKey,
    entry: Entry,
    // The leader's flight (landed `Stored` when the entry is in, `NotStored` if dropped first)
    // and the Redis copy.
    waiters: Waiters,
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
}

impl StoreJob {
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: EntryKey,
        entry: Entry,
        waiters: Waiters,
        max: usize,
    ) -> Self {
        Self {
            shared,
            key,
            entry,
            waiters,
            chunks: Vec::new(),
            len: 0,
            max,
        }
    }

    /// Copies a chunk; `false` when the body grew past the limit (the job is then abandoned).
    fn push(&mut self, chunk: &Bytes) -> bool {
        self.len += chunk.len();
        if self.len > self.max {
            return false;
        }
        if !chunk.is_empty() {
            // A clone of `Bytes` shares the buffer: nothing is copied until `finish`.
            self.chunks.push(chunk.clone());
        }
        true
    }

    fn finish(mut self: Box<Self>) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.len);
                for c in &self.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        };
        let StoreJob {
            shared,
            key,
            mut entry,
            waiters,
            ..
        } = *self;
        // The length is known now; a HEAD answered from this entry must announce it (axum
        // and hyper add `Content-Length` outside this layer, from the body they see).
        if !entry.headers.contains_key(http::header::CONTENT_LENGTH) {
            entry.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
        }
        entry.body = body;
        let entry = Arc::new(entry);
        shared.store.insert(key, entry.clone());
        shared.report_size_soon();
        waiters.stored(&shared, &entry);
    }
}

impl std::fmt::Debug for StoreJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreJob")
            .field("len", &self.len)
            .field("max", &self.max)
            .finish_non_exhaustive()
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
