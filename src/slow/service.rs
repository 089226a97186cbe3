use std::fmt::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::header::HeaderName;
use http::{HeaderValue, Method, Request, Response, Uri};
use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Shared;
use super::snapshot::SlowRequestEntry;
use super::stats::{Outcome, RouteStats, CLIENT_CLOSED_STATUS, SERVICE_ERROR_STATUS};
use crate::timings::{is_token, Timings};
use crate::util::method::method_index;
use crate::util::request::{matched_path, request_id};

static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

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

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
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
            None => match &shared.route_fn {
                Some(f) => {
                    let (parts, body) = req.into_parts();
                    let route = shared.registry.get(f(&parts));
                    req = Request::from_parts(parts, body);
                    route
                }
                None => shared.registry.get(None),
            },
        };
        let timings = match Timings::from_request(&req) {
            Some(t) => t.clone(),
            None => {
                let t = Timings::new();
                req.extensions_mut().insert(t.clone());
                t
            }
        };
        let method = method_index(req.method());
        shared.active(method).increment(1.0);
        let tracked = Tracked {
            request_id: request_id(req.extensions(), req.headers(), &shared.request_id_header),
            shared: self.shared.clone(),
            route,
            start,
            method,
            method_name: req.method().clone(),
            uri: req.uri().clone(),
            timings,
            head: None,
            status: None,
            done: false,
        };
        ResponseFuture::new(self.inner.call(req), tracked)
    }
}

/// What the layer remembers about one request until its response ends.
///
/// Dropping it before [`finish`](Tracked::finish) means the client went away: the request is
/// recorded as canceled, so no request is ever lost from the figures.
pub(crate) struct Tracked {
    shared: Arc<Shared>,
    route: Arc<RouteStats>,
    start: Instant,
    method: usize,
    // Kept for the slow log only; cloning a standard method and a URI parsed by hyper does not
    // allocate.
    method_name: Method,
    uri: Uri,
    request_id: Option<HeaderValue>,
    timings: Timings,
    head: Option<Duration>,
    status: Option<u16>,
    done: bool,
}

impl Tracked {
    /// Notes the response head: its time, status and (if the request had none) request id, and
    /// adds `Server-Timing`.
    pub(crate) fn on_head<B>(&mut self, res: &mut Response<B>) {
        let head = self.start.elapsed();
        self.head = Some(head);
        self.status = Some(res.status().as_u16());
        if self.request_id.is_none() {
            self.request_id = request_id(
                res.extensions(),
                res.headers(),
                &self.shared.request_id_header,
            );
        }
        if self.shared.server_timing {
            if let Some(value) = server_timing(&self.timings, head) {
                res.headers_mut().append(SERVER_TIMING.clone(), value);
            }
        }
    }

    /// Records the end of the request.
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = Instant::now();
        let total = now.saturating_duration_since(self.start);
        let outcome = match (outcome, self.status) {
            (Outcome::Completed, Some(s)) if s >= 500 => Outcome::Error,
            (o, _) => o,
        };
        let shared = &*self.shared;
        shared.active(self.method).decrement(1.0);
        self.route
            .record(&shared.registry.layout, now, total, outcome);
        let status = match (self.status, outcome) {
            (Some(s), _) => s,
            (None, Outcome::Canceled) => CLIENT_CLOSED_STATUS,
            (None, _) => SERVICE_ERROR_STATUS,
        };
        self.route
            .duration_histogram(self.method, status)
            .record(total.as_secs_f64());
        if total >= self.route.threshold {
            self.route.slow_counter(self.method).increment(1);
            self.log_slow(total, outcome, now);
        }
    }

    #[cold]
    fn log_slow(&self, duration: Duration, outcome: Outcome, now: Instant) {
        let shared = &*self.shared;
        let path = match (shared.log_query, self.uri.path_and_query()) {
            (true, Some(pq)) => pq.as_str().to_owned(),
            _ => self.uri.path().to_owned(),
        };
        let entry = SlowRequestEntry {
            at: SystemTime::now(),
            method: self.method_name.as_str().to_owned(),
            route: self.route.name.to_string(),
            path,
            status: self.status,
            outcome,
            duration,
            head: self.head,
            request_id: self
                .request_id
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            phases: self.timings.phases(),
        };
        if let Some(suppressed) = shared.events.allow(now) {
            tracing::warn!(
                target: "tower_perf::slow",
                method = %entry.method,
                route = %entry.route,
                path = %entry.path,
                status = entry.status,
                outcome = ?entry.outcome,
                duration_ms = duration.as_secs_f64() * 1e3,
                threshold_ms = self.route.threshold.as_secs_f64() * 1e3,
                request_id = entry.request_id.as_deref(),
                phases = ?entry.phases,
                suppressed,
                "slow request"
            );
        }
        shared.log.push(entry);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.finish(Outcome::Canceled);
    }
}

/// `Server-Timing: <phase>;dur=<ms>, ..., total;dur=<ms>` (RFC-less but W3C-specified syntax).
fn server_timing(timings: &Timings, total: Duration) -> Option<HeaderValue> {
    let mut value = String::with_capacity(64);
    timings.for_each(|p| {
        if is_token(p.name()) {
            let _ = write!(
                value,
                "{};dur={:.3}, ",
                p.name(),
                p.duration().as_secs_f64() * 1e3
            );
        }
    });
    let _ = write!(value, "total;dur={:.3}", total.as_secs_f64() * 1e3);
    HeaderValue::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_format() {
        let t = Timings::new();
        t.record("cache", Duration::from_micros(250));
        t.record("not a token", Duration::from_millis(1));
        t.record("app", Duration::from_millis(12));
        let v = server_timing(&t, Duration::from_micros(12_500)).unwrap();
        assert_eq!(v, "cache;dur=0.250, app;dur=12.000, total;dur=12.500");
        let empty = server_timing(&Timings::new(), Duration::ZERO).unwrap();
        assert_eq!(empty, "total;dur=0.000");
    }
}
