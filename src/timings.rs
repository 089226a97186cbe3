//! A per-request record of phase durations that any layer (or handler) can append to.
//!
//! The outermost layer that cares (usually [`SlowRequestLayer`](crate::slow::SlowRequestLayer))
//! inserts a [`Timings`] into the request extensions; every layer inside it, and the handler,
//! appends the phases it measured (`queue`, `cache`, `app`, `db`, ...). The outer layer keeps its
//! own clone, so after the response it can read what the inner ones recorded: into a
//! `Server-Timing` header and into the slow-request log.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::Request;
//! use tower_perf::Timings;
//!
//! let mut req = Request::new(());
//! let timings = Timings::new();
//! req.extensions_mut().insert(timings.clone());
//!
//! // Somewhere inside the stack:
//! if let Some(t) = Timings::from_request(&req) {
//!     t.record("db", Duration::from_millis(12));
//!     let _guard = t.start("render"); // recorded when dropped
//! }
//!
//! let phases = timings.phases();
//! assert_eq!(phases[0].name(), "db");
//! assert_eq!(phases.len(), 2);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// How many phases one request can hold; later ones are dropped (and counted), so a handler that
/// records in a loop cannot grow a request's memory without bound.
pub const MAX_PHASES: usize = 16;

/// One named phase of a request and how long it took.
#[derive(Clone, PartialEq, Eq)]
pub struct Phase {
    name: Cow<'static, str>,
    duration: Duration,
}

impl Phase {
    /// The phase name, for example `queue` or `cache`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long the phase took.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl fmt::Debug for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.name, self.duration)
    }
}

/// The phases recorded so far for one request. Cheap to clone: clones share one record.
///
/// Phase names should be HTTP tokens (letters, digits and `!#$%&'*+-.^_|~`), because they are
/// written into the `Server-Timing` header; a phase whose name is not a token is kept for the
/// slow-request log but left out of the header.
#[derive(Clone, Default)]
pub struct Timings {
    // An `Arc` because the layer that created the record and the layers inside it must all see
    // the same phases.
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    // A `Mutex` because phases are appended from different tasks, rarely at the same time, so
    // the lock is uncontended and costs one atomic pair.
    phases: Mutex<Inner>,
    // What the slow-request tracker needs to describe the request if it turns out slow. Kept in
    // this allocation, which exists anyway, rather than in the tracker's per-request state,
    // which every response move would copy.
    request: Option<RequestInfo>,
}

/// How many phases live in the record's own allocation; the rest go to a `Vec`. The stack
/// records up to three per request (`cache`, `queue`, `compress`), so a request through it
/// allocates nothing for its phases.
const INLINE_PHASES: usize = 4;

#[derive(Default)]
struct Inner {
    // The first phases, filled in order: a `None` has only `None`s after it.
    inline: [Option<Phase>; INLINE_PHASES],
    // The phases after the inline ones, up to `MAX_PHASES` in all.
    more: Vec<Phase>,
    dropped: u32,
}

impl Inner {
    fn iter(&self) -> impl Iterator<Item = &Phase> {
        self.inline
            .iter()
            .map_while(Option::as_ref)
            .chain(&self.more)
    }

    fn push(&mut self, phase: Phase) {
        if let Some(slot) = self.inline.iter_mut().find(|p| p.is_none()) {
            *slot = Some(phase);
        } else if INLINE_PHASES + self.more.len() >= MAX_PHASES {
            self.dropped = self.dropped.saturating_add(1);
        } else {
            if self.more.capacity() == 0 {
                self.more.reserve_exact(4);
            }
            self.more.push(phase);
        }
    }
}

/// The request a [`Timings`] record belongs to, as the slow-request log shows it.
pub(crate) struct RequestInfo {
    pub(crate) method: http::Method,
    pub(crate) uri: http::Uri,
    pub(crate) request_id: Option<http::HeaderValue>,
}

impl Timings {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// A record that also describes its request.
    pub(crate) fn with_request(request: RequestInfo) -> Self {
        Self {
            inner: Arc::new(Shared {
                phases: Mutex::default(),
                request: Some(request),
            }),
        }
    }

    /// The request, when this record was made by [`Timings::with_request`].
    pub(crate) fn request(&self) -> Option<&RequestInfo> {
        self.inner.request.as_ref()
    }

    /// The record in the request's extensions, if an outer layer put one there.
    pub fn from_request<B>(req: &http::Request<B>) -> Option<&Timings> {
        req.extensions().get::<Timings>()
    }

    /// Appends a phase. A name recorded twice appears twice.
    pub fn record(&self, name: impl Into<Cow<'static, str>>, duration: Duration) {
        self.lock().push(Phase {
            name: name.into(),
            duration,
        });
    }

    /// Starts timing a phase; it is recorded when the returned guard is dropped (or
    /// [`PhaseGuard::finish`]ed).
    pub fn start(&self, name: impl Into<Cow<'static, str>>) -> PhaseGuard {
        PhaseGuard {
            timings: self.clone(),
            name: Some(name.into()),
            start: Instant::now(),
        }
    }

    /// A copy of the phases recorded so far, in the order they were recorded.
    pub fn phases(&self) -> Vec<Phase> {
        self.lock().iter().cloned().collect()
    }

    /// How many phases were dropped because the record already held [`MAX_PHASES`].
    pub fn dropped(&self) -> u32 {
        self.lock().dropped
    }

    /// Calls `f` with each phase, without copying them.
    pub fn for_each(&self, mut f: impl FnMut(&Phase)) {
        for p in self.lock().iter() {
            f(p);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the Vec in a broken state.
        self.inner.phases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.lock().iter()).finish()
    }
}

/// Records a phase of a [`Timings`] when dropped. Returned by [`Timings::start`].
#[must_use = "the phase is recorded when the guard is dropped; dropping it at once records ~0"]
pub struct PhaseGuard {
    timings: Timings,
    name: Option<Cow<'static, str>>,
    start: Instant,
}

impl PhaseGuard {
    /// Records the phase now and returns its duration.
    pub fn finish(mut self) -> Duration {
        self.record()
    }

    /// Drops the guard without recording anything.
    pub fn cancel(mut self) {
        self.name = None;
    }

    fn record(&mut self) -> Duration {
        let elapsed = self.start.elapsed();
        if let Some(name) = self.name.take() {
            self.timings.record(name, elapsed);
        }
        elapsed
    }
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        self.record();
    }
}

impl fmt::Debug for PhaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhaseGuard")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// In axum handlers, `Timings` is an extractor: the record of the layer outside, or a detached
/// empty one when no layer put one in the request (so the handler works either way, and what it
/// records then goes nowhere). `Option<Timings>` tells the two cases apart.
///
/// ```
/// use std::time::Duration;
/// use tower_perf::Timings;
///
/// async fn dashboard(timings: Timings) -> &'static str {
///     let _db = timings.start("db"); // recorded when dropped
///     "ok"
/// }
/// let app: axum::Router = axum::Router::new().route("/", axum::routing::get(dashboard));
/// ```
#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Timings {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Timings>()
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Timings {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Timings>().cloned())
    }
}

pub(crate) use crate::util::header::is_token;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_order_and_is_bounded() {
        let t = Timings::new();
        for i in 0..(MAX_PHASES + 3) {
            t.record(format!("p{i}"), Duration::from_micros(i as u64));
        }
        let phases = t.phases();
        assert_eq!(phases.len(), MAX_PHASES);
        assert_eq!(phases[0].name(), "p0");
        assert_eq!(
            phases[MAX_PHASES - 1].name(),
            format!("p{}", MAX_PHASES - 1)
        );
        assert_eq!(t.dropped(), 3);
    }

    #[test]
    fn clones_share_one_record() {
        let a = Timings::new();
        let b = a.clone();
        b.record("cache", Duration::from_millis(1));
        assert_eq!(a.phases().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn guard_records_elapsed_time() {
        let t = Timings::new();
        let g = t.start("db");
        tokio::time::sleep(Duration::from_millis(7)).await;
        assert_eq!(g.finish(), Duration::from_millis(7));
        let g = t.start("skipped");
        g.cancel();
        assert_eq!(
            t.phases(),
            vec![Phase {
                name: "db".into(),
                duration: Duration::from_millis(7)
            }]
        );
    }
}
