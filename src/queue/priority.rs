//! Priority classes and the classifiers that choose them.

use std::fmt;

use http::header::HeaderName;
use http::{HeaderMap, Request};

use crate::route::{route_of, Route, RouteTable};
use crate::util::header::trim_ows;

/// Number of priority classes.
pub(crate) const CLASSES: usize = 4;

/// The header a client may name its priority in, when the layer is told to trust it
/// ([`trust_priority_header`](super::PriorityQueueBuilder::trust_priority_header)).
pub static X_PRIORITY: HeaderName = HeaderName::from_static("x-priority");

/// The priority class of a request, from most to least important.
///
/// [`PriorityQueueLayer`](super::PriorityQueueLayer) inserts the class it chose into the request
/// extensions, so the layers and handlers inside can read it; it also honours a `Priority` that a
/// layer outside already put there. Ordered so that `Critical > High > Normal > Low`.
///
/// ```
/// use tower_perf::Priority;
///
/// assert!(Priority::Critical > Priority::Low);
/// assert_eq!("high".parse::<Priority>(), Ok(Priority::High));
/// assert_eq!(Priority::Normal.as_str(), "normal");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Shed last: only when even the lowest classes are gone.
    Low,
    /// The default class.
    #[default]
    Normal,
    /// Served before `normal` and `low`.
    High,
    /// Served first (payments, health of the business).
    Critical,
}

impl Priority {
    /// Every class, most important first (the order of [`Priority::index`]).
    pub const ALL: [Priority; CLASSES] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The lower-case name: `critical`, `high`, `normal`, `low` (also the metric label value).
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// 0 for `Critical` to 3 for `Low`: the position in [`Priority::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }

    /// Reads a class name, ignoring ASCII case and surrounding whitespace; `None` for anything
    /// else. Never allocates.
    pub fn from_bytes(bytes: &[u8]) -> Option<Priority> {
        let name = trim_ows(bytes);
        Priority::ALL
            .into_iter()
            .find(|p| name.eq_ignore_ascii_case(p.as_str().as_bytes()))
    }

    /// The class named by the `x-priority` header; `None` when it is absent, repeated with
    /// different values, or malformed (bad input counts as absent).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Priority> {
        if !crate::util::header::contains(headers, &X_PRIORITY) {
            return None;
        }
        let mut values = headers.get_all(&X_PRIORITY).iter();
        let first = Priority::from_bytes(values.next()?.as_bytes())?;
        values
            .all(|v| Priority::from_bytes(v.as_bytes()) == Some(first))
            .then_some(first)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Priority`] from a string that names no class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsePriorityError;

impl fmt::Display for ParsePriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected one of critical, high, normal, low")
    }
}

impl std::error::Error for ParsePriorityError {}

impl std::str::FromStr for Priority {
    type Err = ParsePriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::from_bytes(s.as_bytes()).ok_or(ParsePriorityError)
    }
}

/// Chooses the [`Priority`] of a request.
///
/// Implemented for every `Fn(&Request<B>) -> Priority + Send + Sync + 'static`, so a closure is
/// a classifier; [`DefaultClassifier`] classifies by route. Called once per request, on the
/// request's task: keep it cheap (no allocation, no I/O).
pub trait Classify<B>: Send + Sync + 'static {
    /// The class of `req`.
    fn classify(&self, req: &Request<B>) -> Priority;
}

impl<B, F> Classify<B> for F
where
    F: Fn(&Request<B>) -> Priority + Send + Sync + 'static,
{
    fn classify(&self, req: &Request<B>) -> Priority {
        self(req)
    }
}

/// Classifies by route (axum's `MatchedPath`, else the request path), as configured with
/// [`route_priority`](super::PriorityQueueBuilder::route_priority): an exact route first,
/// else the longest matching [prefix](crate::Route::prefix); requests that match none get the
/// default class (`normal` unless
/// [`default_priority`](super::PriorityQueueBuilder::default_priority) says otherwise). With no
/// routes configured, every request gets the default.
#[derive(Debug, Clone, Default)]
pub struct DefaultClassifier {
    routes: RouteTable<Priority>,
    default: Priority,
}

impl DefaultClassifier {
    pub(crate) fn add_route(&mut self, route: Route, priority: Priority) {
        self.routes.insert(route, priority);
    }

    pub(crate) fn set_default(&mut self, priority: Priority) {
        self.default = priority;
    }

    /// The class for a route template or path.
    pub fn classify_path(&self, path: &str) -> Priority {
        self.routes.get(path).copied().unwrap_or(self.default)
    }
}

impl<B> Classify<B> for DefaultClassifier {
    fn classify(&self, req: &Request<B>) -> Priority {
        if self.routes.is_empty() {
            return self.default;
        }
        self.classify_path(route_of(req.extensions(), req.uri()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip_and_order() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
            assert_eq!(Priority::ALL[p.index()], p);
        }
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert_eq!(
            Priority::from_bytes(b" \tCRITICAL "),
            Some(Priority::Critical)
        );
        assert_eq!(Priority::from_bytes(b"urgent"), None);
        assert_eq!(Priority::from_bytes(b""), None);
        assert_eq!(Priority::from_bytes(b"low,high"), None);
    }

    #[test]
    fn header_is_absent_when_malformed_or_conflicting() {
        let mut h = HeaderMap::new();
        assert_eq!(Priority::from_headers(&h), None);
        h.insert(&X_PRIORITY, "High".parse().unwrap());
        assert_eq!(Priority::from_headers(&h), Some(Priority::High));
        h.append(&X_PRIORITY, "high".parse().unwrap());
        assert_eq!(Priority::from_headers(&h), Some(Priority::High));
        h.append(&X_PRIORITY, "low".parse().unwrap());
        assert_eq!(Priority::from_headers(&h), None);
        h.insert(
            &X_PRIORITY,
            http::HeaderValue::from_bytes(b"\xffcritical").unwrap(),
        );
        assert_eq!(Priority::from_headers(&h), None);
    }

    #[test]
    fn exact_route_then_longest_prefix_wins() {
        let mut c = DefaultClassifier::default();
        c.add_route(Route::prefix("/api"), Priority::High);
        c.add_route(Route::prefix("/api/v1/payments"), Priority::Critical);
        c.add_route(Route::prefix("/api/v1/reports"), Priority::Low);
        c.add_route("/api/v1/payments/{id}/receipt".into(), Priority::Low);
        assert_eq!(
            c.classify_path("/api/v1/payments/{id}/receipt"),
            Priority::Low
        );
        c.add_route("/health/deep".into(), Priority::Critical);
        assert_eq!(c.classify_path("/health/deep/x"), Priority::Normal);
        assert_eq!(
            c.classify_path("/api/v1/payments/{id}/status"),
            Priority::Critical
        );
        assert_eq!(c.classify_path("/api/v1/reports/export"), Priority::Low);
        assert_eq!(c.classify_path("/api/v1/properties"), Priority::High);
        assert_eq!(c.classify_path("/health"), Priority::Normal);
        c.set_default(Priority::Low);
        assert_eq!(c.classify_path("/health"), Priority::Low);
        let req = Request::get("/api/v1/payments/7/status").body(()).unwrap();
        assert_eq!(c.classify(&req), Priority::Critical);
    }

    proptest! {
        /// Any bytes in the header: a class or nothing, never a panic.
        #[test]
        fn any_header_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(&X_PRIORITY, v);
                let got = Priority::from_headers(&h);
                let expected = Priority::ALL.into_iter().find(|p| {
                    trim_ows(&bytes).eq_ignore_ascii_case(p.as_str().as_bytes())
                });
                prop_assert_eq!(got, expected);
            }
        }
    }
}
