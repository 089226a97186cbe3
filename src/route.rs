//! Which requests a per-route setting applies to: one notion of route for every layer.
//!
//! The *route* of a request is its route template, axum's `MatchedPath` (`/users/{id}`), when
//! the layer runs inside a router (`Router::layer` / `route_layer`), else its path. Per-route
//! settings ([`route_ttl`](crate::cache::ResponseCacheBuilder::route_ttl),
//! [`route_quota`](crate::rate_limit::RateLimitBuilder::route_quota),
//! [`route_threshold`](crate::slow::SlowRequestBuilder::route_threshold),
//! [`route_priority`](crate::queue::PriorityQueueBuilder::route_priority)) take a [`Route`]:
//! a string is an exact route; [`Route::prefix`] matches every route that starts with it. An
//! exact route wins over prefixes, and the longest prefix over shorter ones. Circuit breakers
//! are keyed by the same route (their key function aside).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_perf::cache::ResponseCacheLayer;
//! use tower_perf::Route;
//!
//! let cache = ResponseCacheLayer::builder()
//!     // Exact: only this route template.
//!     .route_ttl("/api/v1/dashboard", Duration::from_secs(5))
//!     // Prefix: every route under it.
//!     .route_ttl(Route::prefix("/api/v1/properties"), Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//! # let _ = cache;
//! ```

use std::collections::HashMap;
use std::fmt;

use http::{Extensions, Uri};

/// A route, or a prefix of routes, that a per-route setting applies to. See the [module
/// docs](self) for what the route of a request is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pattern: Box<str>,
    prefix: bool,
}

impl Route {
    /// Exactly this route (a route template such as `/users/{id}`, or a path).
    pub fn exact(route: impl Into<String>) -> Self {
        Self {
            pattern: route.into().into_boxed_str(),
            prefix: false,
        }
    }

    /// Every route that starts with `prefix` (plain string prefix: `/api` also matches
    /// `/apiary`; end it with `/` to match whole segments only).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            pattern: prefix.into().into_boxed_str(),
            prefix: true,
        }
    }

    /// The route or prefix, as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether this is a prefix of routes rather than one route.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// Whether `route` is this route, or starts with this prefix.
    pub fn matches(&self, route: &str) -> bool {
        if self.prefix {
            route.starts_with(&*self.pattern)
        } else {
            route == &*self.pattern
        }
    }
}

impl From<&str> for Route {
    fn from(route: &str) -> Self {
        Self::exact(route)
    }
}

impl From<String> for Route {
    fn from(route: String) -> Self {
        Self::exact(route)
    }
}

impl From<&String> for Route {
    fn from(route: &String) -> Self {
        Self::exact(route.as_str())
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix {
            write!(f, "{}*", self.pattern)
        } else {
            f.write_str(&self.pattern)
        }
    }
}

/// The route of a request: its route template (axum's `MatchedPath`) when it went through a
/// router, else its path.
pub(crate) fn route_of<'a>(ext: &'a Extensions, uri: &'a Uri) -> &'a str {
    crate::util::request::matched_path(ext).unwrap_or_else(|| uri.path())
}

/// Settings by [`Route`]: exact routes in a map, prefixes longest first. A lookup costs one
/// hash and, when no exact route matches, one `starts_with` per prefix.
#[derive(Clone)]
pub(crate) struct RouteTable<T> {
    exact: HashMap<Box<str>, T, foldhash::fast::RandomState>,
    // Longest first, so the first match is the best one.
    prefixes: Vec<(Box<str>, T)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            prefixes: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// Sets the value of `route`, replacing an earlier one for the same route.
    pub(crate) fn insert(&mut self, route: Route, value: T) {
        if route.prefix {
            self.prefixes.retain(|(p, _)| *p != route.pattern);
            self.prefixes.push((route.pattern, value));
            self.prefixes
                .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        } else {
            self.exact.insert(route.pattern, value);
        }
    }

    /// The value for `route`: its exact entry, else its longest matching prefix.
    pub(crate) fn get(&self, route: &str) -> Option<&T> {
        if !self.exact.is_empty() {
            if let Some(v) = self.exact.get(route) {
                return Some(v);
            }
        }
        self.prefixes
            .iter()
            .find(|(p, _)| route.starts_with(&**p))
            .map(|(_, v)| v)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Every entry with its route: exact ones first, then prefixes longest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Route, &T)> {
        let exact = self.exact.iter().map(|(p, v)| (Route::exact(&**p), v));
        let prefixes = self.prefixes.iter().map(|(p, v)| (Route::prefix(&**p), v));
        exact.chain(prefixes)
    }
}

impl<T: fmt::Debug> fmt::Debug for RouteTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(r, v)| (r.to_string(), v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_wins_then_longest_prefix() {
        let mut t = RouteTable::default();
        t.insert(Route::prefix("/api"), 1);
        t.insert(Route::prefix("/api/v1/payments"), 2);
        t.insert(Route::exact("/api/v1/payments/{id}/status"), 3);
        assert_eq!(t.get("/api/v1/payments/{id}/status"), Some(&3));
        assert_eq!(t.get("/api/v1/payments/{id}"), Some(&2));
        assert_eq!(t.get("/api/v1/properties"), Some(&1));
        assert_eq!(t.get("/health"), None);
        t.insert(Route::prefix("/api"), 4);
        assert_eq!(t.get("/api/x"), Some(&4));
        assert_eq!(t.iter().count(), 3);
    }

    #[test]
    fn strings_are_exact_routes() {
        let r: Route = "/users/{id}".into();
        assert!(!r.is_prefix());
        assert!(r.matches("/users/{id}"));
        assert!(!r.matches("/users/{id}/x"));
        assert!(Route::prefix("/users/").matches("/users/{id}/x"));
        assert_eq!(Route::prefix("/a").to_string(), "/a*");
    }
}
