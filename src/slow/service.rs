use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::header::HeaderName;
use http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Shared;
use super::snapshot::SlowRequestEntry;
use super::stats::{Outcome, RouteStats, CLIENT_CLOSED_STATUS, SERVICE_ERROR_STATUS};
use crate::timings::{is_token, RequestInfo, Timings};
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
        let tracked = Tracked {
            shared: self.shared.clone(),
            route,
            start,
            timings,
            info,
            response_request_id: None,
            head: None,
            status: 0,
            method: method as u8,
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
    // Also holds the method, URI and request id for the slow log (see `RequestInfo`): this
    // struct is moved with every move of the response, so it stays small.
    timings: Timings,
    // The request, when `timings` came from an outer layer and cannot hold it.
    info: Option<Box<RequestInfo>>,
    // The request id found on the response, when the request had none.
    response_request_id: Option<Box<HeaderValue>>,
    head: Option<Duration>,
    // 0 until the response head.
    status: u16,
    method: u8,
    done: bool,
}

/// Longest path (with its query, when logged) kept in a slow-log entry and its event: the
/// client chooses it (up to hyper's URI limit of 64 KiB), and a client that reads slowly can
/// make its own request slow, so the log's memory is bounded by entry size too.
const MAX_LOGGED_PATH: usize = 1024;
/// Longest request id kept: ids come from the client's header, normally 36-byte UUIDs.
const MAX_LOGGED_REQUEST_ID: usize = 128;

/// `bytes` as text (invalid UTF-8 replaced), cut to at most `max` bytes on a character
/// boundary, with `…` when cut.
fn clipped(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max + 4)]);
    if bytes.len() <= max {
        return text.into_owned();
    }
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text[..end].to_owned();
    out.push('…');
    out
}

impl Tracked {
    /// Notes the response head: its time, status and (if the request had none) request id, and
    /// adds `Server-Timing`.
    pub(crate) fn on_head<B>(&mut self, res: &mut Response<B>) {
        let head = self.start.elapsed();
        self.head = Some(head);
        self.status = res.status().as_u16();
        if self.request().request_id.is_none() {
            self.response_request_id = request_id(
                res.extensions(),
                res.headers(),
                &self.shared.request_id_header,
            )
            .map(Box::new);
        }
        if self.shared.server_timing {
            if let Some(value) = server_timing(&self.timings, head) {
                res.headers_mut().append(SERVER_TIMING.clone(), value);
            }
        }
    }

    /// The response ends with its head: a `HEAD` request (the server sends no body, and axum
    /// and hyper drop it unread) or a status without content (`1xx`, `204`, `304`).
    pub(crate) fn ends_with_head(&self) -> bool {
        self.method == method_index(&http::Method::HEAD) as u8
            || matches!(self.status, 100..=199 | 204 | 304)
    }

    fn request(&self) -> &RequestInfo {
        match (&self.info, self.timings.request()) {
            (Some(info), _) => info,
            (None, Some(info)) => info,
            (None, None) => unreachable!("the tracker made the record, with the request"),
        }
    }

    /// Records the end of the request.
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = Instant::now();
        let total = now.saturating_duration_since(self.start);
        let outcome = match outcome {
            Outcome::Completed if self.status >= 500 => Outcome::Error,
            o => o,
        };
        let shared = &*self.shared;
        let method = usize::from(self.method);
        shared.active(method).decrement(1.0);
        self.route
            .record(&shared.registry.layout, now, total, outcome);
        let status = match (self.status, outcome) {
            (0, Outcome::Canceled) => CLIENT_CLOSED_STATUS,
            (0, _) => SERVICE_ERROR_STATUS,
            (s, _) => s,
        };
        self.route
            .record_duration(method, status, total.as_secs_f64());
        if total >= self.route.threshold {
            self.route.slow_counter(method).increment(1);
            self.log_slow(total, outcome, now);
        }
    }

    #[cold]
    fn log_slow(&self, duration: Duration, outcome: Outcome, now: Instant) {
        let shared = &*self.shared;
        let request = self.request();
        let path = match (shared.log_query, request.uri.path_and_query()) {
            (true, Some(pq)) => pq.as_str(),
            _ => request.uri.path(),
        };
        let request_id = request
            .request_id
            .as_ref()
            .or(self.response_request_id.as_deref());
        let entry = SlowRequestEntry {
            at: SystemTime::now(),
            method: request.method.as_str().to_owned(),
            route: self.route.name.to_string(),
            path: clipped(path.as_bytes(), MAX_LOGGED_PATH),
            status: (self.status != 0).then_some(self.status),
            outcome,
            duration,
            head: self.head,
            request_id: request_id.map(|v| clipped(v.as_bytes(), MAX_LOGGED_REQUEST_ID)),
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
                duration_ms = duration.as_micros() as f64 / 1e3,
                threshold_ms = self.route.threshold.as_micros() as f64 / 1e3,
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

/// `Server-Timing: <phase>;dur=<ms>, ..., total;dur=<ms>` (W3C Server Timing syntax), with
/// durations in milliseconds to the microsecond.
fn server_timing(timings: &Timings, total: Duration) -> Option<HeaderValue> {
    // Built on the stack, then copied once into the header value: one exact-size allocation.
    // (A `Vec` with spare capacity would cost a second one when turned into `Bytes`.)
    let mut value = Buf::new();
    timings.for_each(|p| {
        // `total` is the tracker's own entry: a phase of that name would make two.
        if is_token(p.name()) && !p.name().eq_ignore_ascii_case("total") {
            value.push(p.name().as_bytes());
            value.push(b";dur=");
            push_millis(&mut value, p.duration());
            value.push(b", ");
        }
    });
    value.push(b"total;dur=");
    push_millis(&mut value, total);
    HeaderValue::from_bytes(value.as_bytes()).ok()
}

/// A byte buffer that lives on the stack up to 256 bytes and spills to the heap past that.
struct Buf {
    stack: [u8; 256],
    len: usize,
    heap: Vec<u8>,
}

impl Buf {
    fn new() -> Self {
        Self {
            stack: [0; 256],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() && self.len + bytes.len() <= self.stack.len() {
            self.stack[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(bytes);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Appends `d` as milliseconds with three decimals (`12.345`), with integer arithmetic: float
/// formatting was the largest single cost of the header.
fn push_millis(out: &mut Buf, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    let frac = micros % 1000;
    out.push(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn push_u64(out: &mut Buf, n: u64) {
    out.push(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod clip_tests {
    use super::clipped;

    #[test]
    fn clips_on_a_character_boundary() {
        assert_eq!(clipped(b"/short", 1024), "/short");
        assert_eq!(clipped(b"abcdef", 4), "abcd\u{2026}");
        // A 2-byte character across the cut is left out whole.
        assert_eq!(clipped("abc\u{e9}f".as_bytes(), 4), "abc\u{2026}");
        assert_eq!(clipped(&[b'a', 0xff, b'b'], 8), "a\u{fffd}b");
        assert!(clipped(&vec![b'x'; 70_000], 1024).len() <= 1024 + 3);
    }
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
        t.record("Total", Duration::from_millis(3));
        let v = server_timing(&t, Duration::from_micros(12_500)).unwrap();
        assert_eq!(v, "cache;dur=0.250, app;dur=12.000, total;dur=12.500");
        let empty = server_timing(&Timings::new(), Duration::ZERO).unwrap();
        assert_eq!(empty, "total;dur=0.000");
        let long = server_timing(&Timings::new(), Duration::from_secs(86_400)).unwrap();
        assert_eq!(long, "total;dur=86400000.000");
        let mut v = Buf::new();
        push_millis(&mut v, Duration::from_nanos(1_234_567_891));
        assert_eq!(v.as_bytes(), b"1234.567");
        // Past the stack buffer, the header spills to the heap intact.
        let many = Timings::new();
        for i in 0..16 {
            many.record(format!("phase-number-{i}"), Duration::from_millis(i));
        }
        let v = server_timing(&many, Duration::from_secs(1)).unwrap();
        assert!(v.len() > 256);
        assert!(v
            .to_str()
            .unwrap()
            .starts_with("phase-number-0;dur=0.000, phase-number-1;dur=1.000"));
        assert!(v
            .to_str()
            .unwrap()
            .ends_with("phase-number-15;dur=15.000, total;dur=1000.000"));
    }
}
