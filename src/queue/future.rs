use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::body::QueueBody;
use super::state::{Permit, Reason, Ticket, Verdict};
use crate::timings::Timings;

pin_project! {
    /// Response future of [`PriorityQueue`](super::PriorityQueue): waits for a permit when
    /// the request was queued, then drives the inner service; or answers `503` itself.
    ///
    /// Dropping it while queued takes the request out of the queue; dropping it after a permit
    /// was granted gives the permit back.
    pub struct ResponseFuture<S, ReqBody, F> {
        #[pin]
        kind: Kind<S, ReqBody, F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, F> {
        Called {
            #[pin]
            fut: F,
            permit: Option<Permit>,
        },
        Queued {
            // The service that was ready when the request arrived (the caller keeps a clone).
            svc: S,
            req: Option<Request<ReqBody>>,
            ticket: Ticket,
            // The class's maximum wait. Boxed: only queued requests pay for it.
            sleep: Pin<Box<Sleep>>,
            permit: Option<Permit>,
        },
        Rejected {
            reason: Reason,
            retry_after: u64,
        },
        Done,
    }
}

impl<S, ReqBody, F> ResponseFuture<S, ReqBody, F> {
    pub(crate) fn called(fut: F, permit: Permit) -> Self {
        Self {
            kind: Kind::Called {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn queued(svc: S, req: Request<ReqBody>, ticket: Ticket) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(ticket.deadline()));
        Self {
            kind: Kind::Queued {
                svc,
                req: Some(req),
                ticket,
                sleep,
                permit: None,
            },
        }
    }

    pub(crate) fn rejected(reason: Reason, retry_after: u64) -> Self {
        Self {
            kind: Kind::Rejected {
                reason,
                retry_after,
            },
        }
    }
}

impl<S, ReqBody, F, ResBody, E> Future for ResponseFuture<S, ReqBody, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = E, Future = F>,
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body + From<Bytes>,
{
    type Output = Result<Response<QueueBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.kind.as_mut().project() {
                KindProj::Called { fut, permit } => {
                    let result = ready!(fut.poll(cx));
                    // The head (or the error) is here: the adaptive limit learns from it.
                    let mut permit = permit.take();
                    if let Some(p) = permit.as_mut() {
                        p.head();
                    }
                    return Poll::Ready(result.map(|res| with_permit(res, permit)));
                }
                KindProj::Queued {
                    svc,
                    req,
                    ticket,
                    sleep,
                    permit,
                } => {
                    if permit.is_none() {
                        match ready!(await_turn(ticket, sleep.as_mut(), req.as_ref(), cx)) {
                            Ok(p) => *permit = Some(p),
                            Err((reason, retry_after)) => {
                                this.kind.set(Kind::Rejected {
                                    reason,
                                    retry_after,
                                });
                                continue;
                            }
                        }
                    }
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        this.kind.set(Kind::Done);
                        return Poll::Ready(Err(e));
                    }
                    let req = req.take().expect("request present until called");
                    let fut = svc.call(req);
                    let permit = permit.take();
                    this.kind.set(Kind::Called { fut, permit });
                }
                KindProj::Rejected {
                    reason,
                    retry_after,
                } => {
                    let res = crate::reject::rejection(
                        StatusCode::SERVICE_UNAVAILABLE,
                        *retry_after,
                        reason.message(),
                        "queue",
                    );
                    this.kind.set(Kind::Done);
                    return Poll::Ready(Ok(res));
                }
                KindProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// The response with its permit, which goes with the body; or is given back now for an empty
/// body: it may never be polled, so its request ends with the head.
fn with_permit<B: Body>(res: Response<B>, permit: Option<Permit>) -> Response<QueueBody<B>> {
    let (parts, body) = res.into_parts();
    let permit = match permit {
        Some(p) if body.is_end_stream() => {
            p.finish();
            None
        }
        p => p,
    };
    Response::from_parts(parts, QueueBody::new(body, permit))
}

/// Waits for the queue's verdict on a queued request, or its deadline: its permit (the wait
/// recorded as the `queue` phase of its timings), or why it was turned away.
fn await_turn<B>(
    ticket: &mut Ticket,
    sleep: Pin<&mut Sleep>,
    req: Option<&Request<B>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Permit, (Reason, u64)>> {
    let verdict = match ticket.poll_verdict(cx) {
        Poll::Ready(v) => v,
        Poll::Pending => {
            ready!(sleep.poll(cx));
            ticket.time_out()
        }
    };
    Poll::Ready(match verdict {
        Verdict::Admitted(at) => {
            if let Some(t) = req.and_then(Timings::from_request) {
                t.record("queue", at.saturating_duration_since(ticket.enqueued()));
            }
            Ok(ticket.permit(at))
        }
        Verdict::Rejected(reason, retry_after) => Err((reason, retry_after)),
    })
}

impl<S, ReqBody, F> std::fmt::Debug for ResponseFuture<S, ReqBody, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
