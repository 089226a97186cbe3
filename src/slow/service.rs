use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::state::Shared;
use super::tracked::Tracked;
use crate::timings::{RequestInfo, Timings};
use crate::util::method::method_index;
use crate::util::request::{matched_path, request_id};

/// Tracks the latency of every request to the inner service. Made by
/// [`SlowRequestLayer`](super::SlowRequestLayer).
#[derive(Clone)]
pub struct SlowRequest<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SlowRequest<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    crate::util::macros::define_inner_service_accessors!();
}

impl<S: std::fmt::Debug> std::fmt::Debug for SlowRequest<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowRequest")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SlowRequest<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<super::SlowBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let shared = &self.shared;
        let route = match matched_path(req.extensions()) {
            Some(path) => shared.registry.get(Some(path)),
            None => match &shared.route_with {
                Some(f) => {
                    let (parts, body) = req.into_parts();
                    let route = shared.registry.get(f(&parts));
                    req = Request::from_parts(parts, body);
                    route
                }
                None => shared.registry.get(None),
            },
        };
        let method = method_index(req.method());
        let request_id = request_id(req.extensions(), req.headers(), &shared.request_id_header);
        let info = RequestInfo {
            method: req.method().clone(),
            uri: req.uri().clone(),
            request_id,
        };
        let (timings, info) = match Timings::from_request(&req) {
            // An outer layer made the record: append to it, and keep the request apart.
            Some(t) => (t.clone(), Some(Box::new(info))),
            None => {
                let t = Timings::with_request(info);
                req.extensions_mut().insert(t.clone());
                (t, None)
            }
        };
        shared.active(method).increment(1.0);
        let tracked = Tracked::new(self.shared.clone(), route, start, (timings, info), method);
        ResponseFuture::new(self.inner.call(req), tracked)
    }
}
