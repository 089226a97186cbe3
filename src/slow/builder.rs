use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::request::Parts;
use tokio::time::Instant;

use super::layer::SlowRequestLayer;
use super::log::SlowLog;
use super::state::{describe_metrics, RouteFnDyn, Shared};
use super::stats::{Layout, Registry};
use crate::error::ConfigError;
use crate::route::{Route, RouteTable};
use crate::util::event_limiter::EventLimiter;
use crate::util::request::X_REQUEST_ID;

impl SlowRequestLayer {
    /// A layer with the default configuration (1 s threshold, 60 s window, `Server-Timing` on).
    pub fn new() -> Self {
        SlowRequestBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder to configure the layer.
    pub fn builder() -> SlowRequestBuilder {
        SlowRequestBuilder::default()
    }
}

impl Default for SlowRequestLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// Configures a [`SlowRequestLayer`]. Made by [`SlowRequestLayer::builder`].
///
/// Every method takes `self` and returns it; [`build`](Self::build) checks the whole
/// configuration and fails with a [`ConfigError`] naming the first bad field.
#[must_use]
pub struct SlowRequestBuilder {
    threshold: Duration,
    thresholds: RouteTable<Duration>,
    window: Duration,
    slices: usize,
    precision: u8,
    max_routes: usize,
    slow_log_capacity: usize,
    log_query: bool,
    server_timing: bool,
    warn_per_second: u32,
    request_id_header: HeaderName,
    route_with: Option<Arc<RouteFnDyn>>,
}

impl Default for SlowRequestBuilder {
    fn default() -> Self {
        Self {
            threshold: Duration::from_secs(1),
            thresholds: RouteTable::default(),
            window: Duration::from_secs(60),
            slices: 6,
            precision: 2,
            max_routes: 256,
            slow_log_capacity: 100,
            log_query: false,
            server_timing: true,
            warn_per_second: 5,
            request_id_header: X_REQUEST_ID.clone(),
            route_with: None,
        }
    }
}

impl SlowRequestBuilder {
    /// Requests at or above this duration are slow, unless their route has its own threshold.
    /// Default: 1 s.
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }

    /// A slow threshold for a route (a route template, as in `MatchedPath`, or `unmatched`), or
    /// with [`Route::prefix`] for every route under a prefix; an exact route wins over prefixes,
    /// the longest prefix over shorter ones. Long streams, such as exports or server-sent
    /// events, usually want a larger one.
    pub fn route_threshold(mut self, route: impl Into<Route>, threshold: Duration) -> Self {
        self.thresholds.insert(route.into(), threshold);
        self
    }

    /// The sliding window of the recent figures: `window` long, kept as `slices` rotating
    /// histograms, so it covers between `window - window / slices` and `window` of history.
    /// Default: 60 s in 6 slices.
    pub fn window(mut self, window: Duration, slices: usize) -> Self {
        self.window = window;
        self.slices = slices;
        self
    }

    /// Significant decimal digits the histograms keep, 1 to 5. Default: 2 (values within 1%).
    ///
    /// Each extra digit multiplies the histograms' memory by about ten: at 2 digits a route uses
    /// about 13 KiB per histogram once it has seen one-second requests, and `slices + 1`
    /// histograms.
    pub fn precision(mut self, digits: u8) -> Self {
        self.precision = digits;
        self
    }

    /// At most this many distinct routes are tracked; further routes share the `overflow`
    /// bucket. Default: 256.
    pub fn max_routes(mut self, max: usize) -> Self {
        self.max_routes = max;
        self
    }

    /// How many recent slow requests the log keeps (0 keeps none). Default: 100.
    pub fn slow_log_capacity(mut self, capacity: usize) -> Self {
        self.slow_log_capacity = capacity;
        self
    }

    /// Keep the query string in the slow log's `path`. Off by default: queries often carry
    /// tokens or personal data.
    pub fn log_query(mut self, on: bool) -> Self {
        self.log_query = on;
        self
    }

    /// Add a `Server-Timing` header built from the request's [`Timings`](crate::Timings) plus a
    /// `total` entry. On by default.
    ///
    /// The header goes out with the response head, so it holds the phases finished by then, and
    /// `total` is the time to the head: for a streamed response (an export, server-sent events)
    /// it does not include the time spent streaming the body. The slow log and the metrics do.
    pub fn server_timing(mut self, on: bool) -> Self {
        self.server_timing = on;
        self
    }

    /// At most this many `tracing` WARN events per second for slow requests; the others are
    /// counted and reported in the next event's `suppressed` field. 0 turns the events off.
    /// Default: 5.
    pub fn warn_per_second(mut self, events: u32) -> Self {
        self.warn_per_second = events;
        self
    }

    /// The request or response header that carries the request id when tower-http's `RequestId`
    /// extension is absent. Default: `x-request-id`.
    pub fn request_id_header(mut self, header: HeaderName) -> Self {
        self.request_id_header = header;
        self
    }

    /// Names the route of requests that carry no axum `MatchedPath` (a plain hyper server, or
    /// the layer placed outside the router). Return a route *template*, never the raw path: the
    /// number of routes is bounded, and raw paths would fill the bound with one-off entries.
    /// `None` puts the request in the `unmatched` bucket.
    ///
    /// The returned `&str` may borrow from the request or be `'static`; a closure infers the
    /// right signature, and a named function works when written with elided lifetimes,
    /// `fn route(parts: &Parts) -> Option<&str>`.
    ///
    /// ```
    /// use tower_perf::slow::SlowRequestLayer;
    ///
    /// let layer = SlowRequestLayer::builder()
    ///     .route_with(|req| match req.uri.path() {
    ///         "/" => Some("/"),
    ///         p if p.starts_with("/users/") => Some("/users/{id}"),
    ///         _ => None,
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn route_with<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync + 'static,
    {
        self.route_with = Some(Arc::new(f));
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<SlowRequestLayer, ConfigError> {
        if self.threshold.is_zero() {
            return Err(ConfigError::new("threshold", "must be greater than zero"));
        }
        if let Some((route, _)) = self.thresholds.iter().find(|(_, t)| t.is_zero()) {
            return Err(ConfigError::new(
                "route_threshold",
                format!(
                    "the threshold of route {:?} must be greater than zero",
                    route.to_string()
                ),
            ));
        }
        if !(1..=120).contains(&self.slices) {
            return Err(ConfigError::new(
                "window",
                format!("slices must be between 1 and 120, got {}", self.slices),
            ));
        }
        let slice = self.window / self.slices as u32;
        if slice < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "window",
                "each slice (window / slices) must be at least 1 ms",
            ));
        }
        if !(1..=5).contains(&self.precision) {
            return Err(ConfigError::new(
                "precision",
                format!("must be between 1 and 5 digits, got {}", self.precision),
            ));
        }
        if !(1..=100_000).contains(&self.max_routes) {
            return Err(ConfigError::new(
                "max_routes",
                format!("must be between 1 and 100000, got {}", self.max_routes),
            ));
        }
        if self.slow_log_capacity > 100_000 {
            return Err(ConfigError::new(
                "slow_log_capacity",
                format!("must be at most 100000, got {}", self.slow_log_capacity),
            ));
        }
        describe_metrics();
        let start = Instant::now();
        let layout = Layout {
            start,
            slice_nanos: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            slices: self.slices,
            precision: self.precision,
        };
        let shared = Shared {
            registry: Registry::new(layout, self.max_routes, self.threshold, self.thresholds),
            log: SlowLog::new(self.slow_log_capacity),
            events: EventLimiter::new(
                start,
                Duration::from_secs(1),
                u64::from(self.warn_per_second),
            ),
            route_with: self.route_with,
            server_timing: self.server_timing,
            log_query: self.log_query,
            request_id_header: self.request_id_header,
            active_gauges: Default::default(),
        };
        Ok(SlowRequestLayer::from_shared(Arc::new(shared)))
    }
}

impl fmt::Debug for SlowRequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowRequestBuilder")
            .field("threshold", &self.threshold)
            .field("thresholds", &self.thresholds)
            .field("window", &self.window)
            .field("slices", &self.slices)
            .field("precision", &self.precision)
            .field("max_routes", &self.max_routes)
            .field("slow_log_capacity", &self.slow_log_capacity)
            .field("log_query", &self.log_query)
            .field("server_timing", &self.server_timing)
            .field("warn_per_second", &self.warn_per_second)
            .field("request_id_header", &self.request_id_header)
            .field("route_with", &self.route_with.is_some())
            .finish()
    }
}
