use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::SlowBody;
use super::snapshot::Outcome;
use super::tracked::Tracked;

pin_project! {
    /// Response future of [`SlowRequest`](super::SlowRequest).
    ///
    /// Dropping it before it completes (the client went away while the handler ran) records
    /// the request as canceled.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        tracked: Option<Tracked>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, tracked: Tracked) -> Self {
        Self {
            inner,
            tracked: Some(tracked),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<SlowBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut tracked) = this.tracked.take() else {
            // Polled again after completion: pass through whatever the inner future says,
            // without recording anything twice.
            return Poll::Ready(result.map(|res| res.map(|b| SlowBody::new(b, None))));
        };
        Poll::Ready(match result {
            Ok(mut res) => {
                tracked.on_head(&mut res);
                if tracked.ends_with_head() || res.body().is_end_stream() {
                    // hyper will not poll an empty body, nor the body of a `HEAD` request:
                    // the response ends with its head.
                    tracked.finish(Outcome::Completed);
                    Ok(res.map(|b| SlowBody::new(b, None)))
                } else {
                    // hyper stops polling once it has sent a known length: the body ends
                    // there, whether or not it says so.
                    let length = res.body().size_hint().exact().or_else(|| {
                        res.headers()
                            .get(http::header::CONTENT_LENGTH)?
                            .to_str()
                            .ok()?
                            .parse()
                            .ok()
                    });
                    Ok(res.map(|b| SlowBody::new(b, Some(tracked)).with_length(length)))
                }
            }
            Err(err) => {
                tracked.finish(Outcome::Error);
                Err(err)
            }
        })
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
