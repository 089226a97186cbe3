use bytes::Bytes;
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

crate::util::macros::inner_or_bytes_body!(RateLimitBody);
