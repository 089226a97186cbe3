//! The state shared by the layer, its services and the requests it tracks.

use std::sync::{Arc, OnceLock};

use http::header::HeaderName;
use http::request::Parts;

use super::log::SlowLog;
use super::stats::Registry;
use crate::metrics::names;
use crate::util::event_limiter::EventLimiter;
use crate::util::method::{method_label, METHOD_CLASSES};

/// A function that names the route of a request that did not come through an axum router.
pub(crate) type RouteFnDyn = dyn for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync;

/// State shared by every clone of the layer and its services.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) log: SlowLog,
    // Rate limit on the WARN event emitted per slow request.
    pub(crate) events: EventLimiter,
    pub(crate) route_with: Option<Arc<RouteFnDyn>>,
    pub(crate) server_timing: bool,
    pub(crate) log_query: bool,
    pub(crate) request_id_header: HeaderName,
    // Gauge handles per method class, made on first use so that a recorder installed after the
    // layer was built is still the one they report to.
    pub(crate) active_gauges: [OnceLock<::metrics::Gauge>; METHOD_CLASSES],
}

impl Shared {
    /// The gauge of requests in flight with this method class.
    pub(crate) fn active(&self, method: usize) -> &::metrics::Gauge {
        self.active_gauges[method].get_or_init(|| {
            ::metrics::gauge!(names::HTTP_SERVER_ACTIVE_REQUESTS,
                crate::metrics::labels::HTTP_REQUEST_METHOD => method_label(method))
        })
    }
}

pub(crate) fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        names::HTTP_SERVER_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of HTTP server requests, from receiving the request to the end of the response body."
    );
    describe_gauge!(
        names::HTTP_SERVER_ACTIVE_REQUESTS,
        Unit::Count,
        "Number of HTTP server requests whose response has not ended yet."
    );
    describe_counter!(
        names::SLOW_REQUESTS_TOTAL,
        Unit::Count,
        "Requests that took at least their route's slow threshold."
    );
}
