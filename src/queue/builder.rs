use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::layer::PriorityQueueLayer;
use super::limit::{AdaptiveLimit, Limiter};
use super::priority::{DefaultClassifier, Priority, CLASSES};
use super::saturation::SaturationSignal;
use super::state::{describe_metrics, Metrics, Settings, Shared};
use crate::error::ConfigError;
use crate::route::Route;

impl PriorityQueueLayer<DefaultClassifier> {
    /// A layer with a fixed limit of `limit` requests at once and the defaults otherwise:
    /// 1024 waiting, 1 s maximum wait, 5% minimum share, every request `normal` (the
    /// `x-priority` header is not trusted). Fails when `limit` is 0.
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        PriorityQueueBuilder::default().limit(limit).build()
    }

    /// A builder to configure the layer.
    pub fn builder() -> PriorityQueueBuilder<DefaultClassifier> {
        PriorityQueueBuilder::default()
    }
}

/// Configures a [`PriorityQueueLayer`]. Made by [`PriorityQueueLayer::builder`].
///
/// Every method takes `self` and returns it; [`build`](Self::build) checks the whole
/// configuration and fails with a [`ConfigError`] naming the first bad field.
#[must_use]
pub struct PriorityQueueBuilder<C = DefaultClassifier> {
    limit: usize,
    adaptive: Option<AdaptiveLimit>,
    capacity: usize,
    class_capacity: [Option<usize>; CLASSES],
    max_wait: [Duration; CLASSES],
    codel: Option<(Duration, Duration)>,
    min_share: f64,
    trust_header: bool,
    wait_window: Duration,
    class_share: [f64; CLASSES],
    pacing: bool,
    saturation: Option<SaturationSignal>,
    classifier: C,
}

impl Default for PriorityQueueBuilder<DefaultClassifier> {
    fn default() -> Self {
        Self {
            limit: 64,
            adaptive: None,
            capacity: 1024,
            class_capacity: [None; CLASSES],
            max_wait: [Duration::from_secs(1); CLASSES],
            codel: None,
            min_share: 0.05,
            trust_header: false,
            wait_window: Duration::from_secs(60),
            class_share: [1.0; CLASSES],
            pacing: false,
            saturation: None,
            classifier: DefaultClassifier::default(),
        }
    }
}

impl PriorityQueueBuilder<DefaultClassifier> {
    /// Requests of `route` get `priority`: a string is one route template (or path), exactly;
    /// [`Route::prefix`] covers every route that starts with it. An exact route wins over
    /// prefixes, the longest prefix over shorter ones. Ignored once
    /// [`classify_with`](Self::classify_with) replaces the route classifier.
    ///
    /// ```
    /// use tower_perf::queue::PriorityQueueLayer;
    /// use tower_perf::{Priority, Route};
    ///
    /// let layer = PriorityQueueLayer::builder()
    ///     .route_priority(Route::prefix("/api/v1/payments"), Priority::Critical)
    ///     .route_priority("/api/v1/reports/export", Priority::Low)
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn route_priority(mut self, route: impl Into<Route>, priority: Priority) -> Self {
        self.classifier.add_route(route.into(), priority);
        self
    }

    /// The class of requests that match no route (and carry no trusted header). Default:
    /// [`Priority::Normal`].
    pub fn default_priority(mut self, priority: Priority) -> Self {
        self.classifier.set_default(priority);
        self
    }
}

impl<C> PriorityQueueBuilder<C> {
    /// A fixed concurrency limit: at most `limit` requests run at once (from admission to the
    /// end of their response body). Default: 64. Replaces an adaptive limit.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self.adaptive = None;
        self
    }

    /// An adaptive concurrency limit that finds the service's capacity from the latency it
    /// observes. Replaces the fixed limit.
    pub fn adaptive_limit(mut self, adaptive: AdaptiveLimit) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// At most this many requests wait, all classes together. When full, a request displaces
    /// the newest waiter of the lowest class below its own (answered 503); with none, the
    /// newcomer is answered 503. Default: 1024.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// At most `max` requests of class `priority` wait; beyond, newcomers of that class are
    /// answered 503. Default: the whole [`queue_capacity`](Self::queue_capacity).
    pub fn max_queued(mut self, priority: Priority, max: usize) -> Self {
        self.class_capacity[priority.index()] = Some(max);
        self
    }

    /// Requests of class `priority` wait at most `wait`, then are answered 503. Default: 1 s
    /// for every class.
    pub fn max_wait(mut self, priority: Priority, wait: Duration) -> Self {
        self.max_wait[priority.index()] = wait;
        self
    }

    /// CoDel-style control: once the oldest waiter has stayed above `target` for a whole
    /// `interval`, the queue is overloaded: it serves the newest waiters first (they still have
    /// a client waiting) and answers 503 to those that waited `interval` or more. It recovers
    /// as soon as the oldest waiter is below `target`. Off by default; `5 ms`/`100 ms` are the
    /// usual values for fast handlers.
    pub fn codel(mut self, target: Duration, interval: Duration) -> Self {
        self.codel = Some((target, interval));
        self
    }

    /// Starvation guard: a class with waiters is served at least once every `1 / share`
    /// dispatches, whatever waits above it. `0` turns it off (strict priority). Between 0 and
    /// 0.25; default 0.05 (one in twenty).
    pub fn min_share(mut self, share: f64) -> Self {
        self.min_share = share;
        self
    }

    /// Requests of class `priority` hold at most `share` of the limit's permits (rounded down,
    /// at least one, so the class always makes progress), in (0, 1]; the rest stays for the
    /// other classes even when this one has plenty of work. Default: 1 (no cap). With an
    /// adaptive limit the cap follows the limit.
    ///
    /// ```
    /// use tower_perf::queue::PriorityQueueLayer;
    /// use tower_perf::Priority;
    ///
    /// // 64 permits, of which low-priority requests (the exports) take 16 at most.
    /// let layer = PriorityQueueLayer::builder()
    ///     .limit(64)
    ///     .class_share(Priority::Low, 0.25)
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn class_share(mut self, priority: Priority, share: f64) -> Self {
        self.class_share[priority.index()] = share;
        self
    }

    /// Pacing of admitted response bodies: a body of any class but `critical` yields to the
    /// runtime once before each chunk, so one poll produces one chunk at most and a long
    /// CPU-bound stream cannot hold a worker for many chunks in a row; and it yields up to 32
    /// times before each chunk while a more important class waits for a permit or for its
    /// response head, or while the runtime is saturated ([`saturation`](Self::saturation)).
    /// Default: off.
    pub fn pacing(mut self, pacing: bool) -> Self {
        self.pacing = pacing;
        self
    }

    /// A saturation signal (the runtime lag, see [`SaturationSignal`]): while it says the
    /// runtime is saturated, the adaptive limit does not grow and is cut, once per drain, and
    /// paced bodies yield. Needs a Tokio runtime (the tick task starts with the first request).
    /// Default: none.
    pub fn saturation(mut self, signal: SaturationSignal) -> Self {
        self.saturation = Some(signal);
        self
    }

    /// Take the class from the request's `x-priority` header (`critical`, `high`, `normal`,
    /// `low`) when present and well-formed, before the classifier. Off by default: clients
    /// can lie; turn it on behind a gateway that sets or strips the header.
    pub fn trust_priority_header(mut self, trust: bool) -> Self {
        self.trust_header = trust;
        self
    }

    /// The handle's wait percentiles cover between half of `window` and `window`. Default:
    /// 60 s.
    pub fn wait_window(mut self, window: Duration) -> Self {
        self.wait_window = window;
        self
    }

    /// Classify requests with `f` (a closure `Fn(&Request<B>) -> Priority`, or any
    /// [`Classify`](super::Classify)) instead of the route map. A trusted `x-priority` header
    /// and a `Priority` already in the request extensions still come first.
    ///
    /// ```
    /// use tower_perf::queue::PriorityQueueLayer;
    /// use tower_perf::Priority;
    ///
    /// let layer = PriorityQueueLayer::builder()
    ///     .classify_with(|req: &http::Request<axum::body::Body>| {
    ///         if req.headers().contains_key("authorization") {
    ///             Priority::High
    ///         } else {
    ///             Priority::Low
    ///         }
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn classify_with<F>(self, f: F) -> PriorityQueueBuilder<F> {
        PriorityQueueBuilder {
            limit: self.limit,
            adaptive: self.adaptive,
            capacity: self.capacity,
            class_capacity: self.class_capacity,
            max_wait: self.max_wait,
            codel: self.codel,
            min_share: self.min_share,
            trust_header: self.trust_header,
            wait_window: self.wait_window,
            class_share: self.class_share,
            pacing: self.pacing,
            saturation: self.saturation,
            classifier: f,
        }
    }

    /// Checks the configuration and builds the layer.
    pub fn build(mut self) -> Result<PriorityQueueLayer<C>, ConfigError> {
        let adaptive = self.adaptive.is_some();
        let limiter = self.limiter()?;
        let class_capacity = self.class_capacities()?;
        self.check_timing()?;
        describe_metrics();
        let share_every = if self.min_share == 0.0 {
            0
        } else {
            (1.0 / self.min_share).round() as u32
        };
        let settings = Settings {
            capacity: self.capacity,
            class_capacity,
            max_wait: self.max_wait,
            codel: self.codel,
            share_every,
            trust_header: self.trust_header,
            wait_window: self.wait_window,
            adaptive,
            class_share: self.class_share,
            pacing: self.pacing,
            saturation: self.saturation,
        };
        Ok(PriorityQueueLayer::from_parts(
            Arc::new(Shared::new(settings, limiter, Metrics::new())),
            Arc::new(self.classifier),
        ))
    }

    /// The fixed or adaptive limiter, checked.
    fn limiter(&mut self) -> Result<Limiter, ConfigError> {
        if let Some(a) = self.adaptive.take() {
            a.validate()?;
            return Ok(Limiter::adaptive(a));
        }
        if !(1..=1_000_000).contains(&self.limit) {
            return Err(ConfigError::new(
                "limit",
                format!("must be between 1 and 1000000, got {}", self.limit),
            ));
        }
        Ok(Limiter::fixed(self.limit))
    }

    /// The capacity of each class's queue (the total unless `max_queued` says less), checked.
    fn class_capacities(&self) -> Result<[usize; CLASSES], ConfigError> {
        if !(1..=1_000_000).contains(&self.capacity) {
            return Err(ConfigError::new(
                "queue_capacity",
                format!("must be between 1 and 1000000, got {}", self.capacity),
            ));
        }
        let mut class_capacity = [self.capacity; CLASSES];
        for (c, max) in self.class_capacity.iter().enumerate() {
            if let Some(max) = *max {
                if max > self.capacity {
                    return Err(ConfigError::new(
                        "max_queued",
                        format!(
                            "{}: must be at most the queue capacity ({}), got {max}",
                            Priority::ALL[c],
                            self.capacity
                        ),
                    ));
                }
                class_capacity[c] = max;
            }
        }
        Ok(class_capacity)
    }

    /// Checks the waits, CoDel, the minimum share and the wait window.
    fn check_timing(&self) -> Result<(), ConfigError> {
        let hour = Duration::from_secs(3600);
        if self.max_wait.iter().any(|w| w.is_zero() || *w > hour) {
            return Err(ConfigError::new(
                "max_wait",
                "must be greater than zero and at most one hour",
            ));
        }
        if let Some((target, interval)) = self.codel {
            if target.is_zero() || interval < target || interval > hour {
                return Err(ConfigError::new(
                    "codel",
                    "target must be greater than zero, interval at least target and at most one hour",
                ));
            }
        }
        if !(0.0..=0.25).contains(&self.min_share) {
            return Err(ConfigError::new(
                "min_share",
                format!("must be between 0 and 0.25, got {}", self.min_share),
            ));
        }
        if self.class_share.iter().any(|s| !(*s > 0.0 && *s <= 1.0)) {
            return Err(ConfigError::new("class_share", "must be in (0, 1]"));
        }
        if let Some(s) = &self.saturation {
            s.validate()?;
        }
        if self.wait_window < Duration::from_secs(2)
            || self.wait_window > Duration::from_secs(86_400)
        {
            return Err(ConfigError::new(
                "wait_window",
                "must be between 2 seconds and one day",
            ));
        }
        Ok(())
    }
}

impl<C> fmt::Debug for PriorityQueueBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityQueueBuilder")
            .field("limit", &self.limit)
            .field("adaptive", &self.adaptive)
            .field("capacity", &self.capacity)
            .field("class_capacity", &self.class_capacity)
            .field("max_wait", &self.max_wait)
            .field("codel", &self.codel)
            .field("min_share", &self.min_share)
            .field("trust_header", &self.trust_header)
            .field("wait_window", &self.wait_window)
            .field("class_share", &self.class_share)
            .field("pacing", &self.pacing)
            .field("saturation", &self.saturation)
            .finish_non_exhaustive()
    }
}
