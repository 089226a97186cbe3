//! The body shape three layers share: the inner service's body passed through untouched, or a
//! small body of their own (a rejection, a cached entry).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Either the inner body, polled as it is, or `Bytes` sent as one data frame.
    #[project = InnerOrBytesProj]
    pub(crate) enum InnerOrBytes<B> {
        Inner {
            #[pin]
            body: B,
        },
        Bytes {
            // `None` once sent (or when empty from the start: no empty data frame is sent).
            data: Option<Bytes>,
        },
    }
}

impl<B> InnerOrBytes<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self::Inner { body }
    }

    pub(crate) fn bytes(data: Bytes) -> Self {
        Self::Bytes {
            data: Some(data).filter(|d| !d.is_empty()),
        }
    }

    /// "inner" or "bytes", for `Debug` output.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Inner { .. } => "inner",
            Self::Bytes { .. } => "bytes",
        }
    }
}

impl<B> Body for InnerOrBytes<B>
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
        match self.project() {
            InnerOrBytesProj::Inner { body } => body.poll_frame(cx),
            InnerOrBytesProj::Bytes { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(B::Data::from(d)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Bytes { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Bytes { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};

    #[tokio::test]
    async fn bytes_are_one_frame_and_empty_is_no_frame() {
        let body = InnerOrBytes::<Empty<Bytes>>::bytes(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");

        let empty = InnerOrBytes::<Empty<Bytes>>::bytes(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn inner_passes_through() {
        let body = InnerOrBytes::inner(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(body.kind(), "inner");
        assert_eq!(body.size_hint().exact(), Some(3));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"abc");
    }
}
