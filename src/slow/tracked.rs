//! One request from its arrival to the end of its response: what the tracker records then.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Response};
use tokio::time::Instant;

use super::server_timing::{server_timing, SERVER_TIMING};
use super::snapshot::Outcome;
use super::snapshot::SlowRequestEntry;
use super::state::Shared;
use super::stats::{RouteStats, CLIENT_CLOSED_STATUS, SERVICE_ERROR_STATUS};
use crate::timings::{RequestInfo, Timings};
use crate::util::method::method_index;
use crate::util::request::request_id;

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
    /// Starts tracking a request received at `start`. `info` is the request, when `timings`
    /// came from an outer layer and does not hold it.
    #[inline]
    pub(crate) fn new(
        shared: Arc<Shared>,
        route: Arc<RouteStats>,
        start: Instant,
        (timings, info): (Timings, Option<Box<RequestInfo>>),
        method: usize,
    ) -> Self {
        Self {
            shared,
            route,
            start,
            timings,
            info,
            response_request_id: None,
            head: None,
            status: 0,
            method: method as u8,
            done: false,
        }
    }

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
