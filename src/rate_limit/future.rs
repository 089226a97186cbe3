use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::answer::{add_headers, too_many_requests, unavailable};
use super::body::RateLimitBody;
use super::state::{Headers, Outcome, PendingOutcome};

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit): the inner service's response with
    /// the rate-limit headers added, or the limiter's own answer (`429`, ready at once). In
    /// the shared mode it first waits for Redis's decision, then calls the inner service.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Inner {
            #[pin]
            future: S::Future,
            // Added to the response head when it comes.
            headers: Option<Headers>,
        },
        Answered {
            // Taken when polled.
            response: Option<Response<Bytes>>,
        },
        Deciding {
            // Taken when the decision comes; boxed so that the in-process future stays small.
            pending: Option<Box<Pending<S, ReqBody>>>,
        },
    }
}

/// A request waiting for the shared mode's decision, with the service readied for it.
struct Pending<S, ReqBody> {
    decision: PendingOutcome,
    service: S,
    request: Request<ReqBody>,
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn inner(future: S::Future, headers: Option<Headers>) -> Self {
        Self {
            kind: Kind::Inner { future, headers },
        }
    }

    pub(crate) fn answered(response: Response<Bytes>) -> Self {
        Self {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }

    pub(crate) fn pending(decision: PendingOutcome, service: S, request: Request<ReqBody>) -> Self {
        Self {
            kind: Kind::Deciding {
                pending: Some(Box::new(Pending {
                    decision,
                    service,
                    request,
                })),
            },
        }
    }
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Answered { .. } => "answered",
            Kind::Deciding { .. } => "deciding",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<S, ReqBody, B> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    type Output = Result<Response<RateLimitBody<B>>, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Inner { future, headers } => {
                    let mut res = ready!(future.poll(cx))?;
                    if let Some(h) = headers.take() {
                        add_headers(res.headers_mut(), h);
                    }
                    return Poll::Ready(Ok(res.map(RateLimitBody::inner)));
                }
                KindProj::Answered { response } => {
                    let res = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(res.map(RateLimitBody::limited)));
                }
                KindProj::Deciding { pending } => {
                    let next = ready!(decided(pending, cx));
                    kind.set(next);
                }
            }
        }
    }
}

/// Polls the shared mode's decision; once it has come, the next state: the inner service
/// called, or the limiter's answer. Out of line, so that the in-process `poll` stays small.
#[inline(never)]
fn decided<S, ReqBody>(
    pending: &mut Option<Box<Pending<S, ReqBody>>>,
    cx: &mut Context<'_>,
) -> Poll<Kind<S, ReqBody>>
where
    S: Service<Request<ReqBody>>,
{
    let waiting = pending
        .as_mut()
        .expect("ResponseFuture polled after completion");
    let outcome = ready!(waiting.decision.as_mut().poll(cx));
    let Some(Pending {
        mut service,
        request,
        ..
    }) = pending.take().map(|p| *p)
    else {
        unreachable!("checked above");
    };
    Poll::Ready(match outcome {
        Outcome::Bypassed => Kind::Inner {
            future: service.call(request),
            headers: None,
        },
        Outcome::Allowed(headers) => Kind::Inner {
            future: service.call(request),
            headers,
        },
        Outcome::Limited(headers, retry_after) => Kind::Answered {
            response: Some(too_many_requests(headers, retry_after)),
        },
        Outcome::Unavailable => Kind::Answered {
            response: Some(unavailable()),
        },
        Outcome::Pending(decision) => Kind::Deciding {
            pending: Some(Box::new(Pending {
                decision,
                service,
                request,
            })),
        },
    })
}
