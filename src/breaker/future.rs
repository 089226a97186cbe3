use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::state::Breaker;
use crate::reject::Rejected;

/// A call admitted by a breaker, until its outcome is recorded. Dropped without an outcome (the
/// response future was dropped: the client went away), a probe gives its half-open slot back.
pub(crate) struct Call {
    breaker: Arc<Breaker>,
    gen: u64,
    probe: bool,
    start: Instant,
    done: bool,
}

impl Call {
    pub(crate) fn new(breaker: Arc<Breaker>, gen: u64, probe: bool, start: Instant) -> Self {
        Self {
            breaker,
            gen,
            probe,
            start,
            done: false,
        }
    }

    fn finish(&mut self, failed: bool) {
        self.done = true;
        let settings = self.breaker.settings();
        // The end of the call matters only to slow calls and time windows: skip the clock
        // read otherwise.
        let now = if settings.clock_at_end {
            Instant::now()
        } else {
            self.start
        };
        let slow = settings.is_slow(now - self.start);
        self.breaker.record(self.gen, self.probe, failed, slow, now);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.release(self.gen);
        }
    }
}

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker): the inner call, or the
    /// breaker's own answer when it is open.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Called {
            #[pin]
            fut: F,
            // Boxed: a `Sleep` is large, and most layers set no call timeout.
            timeout: Option<Pin<Box<Sleep>>>,
            call: Call,
        },
        Ready {
            // Boxed: rejections are the rare path; the common one stays small to move.
            res: Option<Box<Response<B>>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn called(fut: F, deadline: Option<Instant>, call: Call) -> Self {
        Self {
            kind: Kind::Called {
                fut,
                timeout: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                call,
            },
        }
    }

    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            kind: Kind::Ready {
                res: Some(Box::new(res)),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<Bytes>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut, timeout, call } => {
                if let Poll::Ready(result) = fut.poll(cx) {
                    if !call.done {
                        let failed = match &result {
                            Ok(res) => call.breaker.settings().is_failure(res.status()),
                            Err(_) => true,
                        };
                        call.finish(failed);
                    }
                    return Poll::Ready(result);
                }
                if let Some(sleep) = timeout {
                    ready!(sleep.as_mut().poll(cx));
                    if !call.done {
                        call.finish(true);
                    }
                    return Poll::Ready(Ok(timed_out()));
                }
                Poll::Pending
            }
            KindProj::Ready { res } => Poll::Ready(Ok(*res
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

/// The answer to a call abandoned at the call timeout.
fn timed_out<B: From<Bytes>>() -> Response<B> {
    let mut res = Response::new(B::from(Bytes::from_static(
        b"{\"error\":\"upstream call timed out\"}",
    )));
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res.extensions_mut().insert(Rejected::new("breaker"));
    res
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
