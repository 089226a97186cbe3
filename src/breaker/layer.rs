use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use tokio::time::Instant;
use tower_layer::Layer;

use super::service::CircuitBreaker;
use super::snapshot::{BreakerSnapshot, Snapshot};
use super::state::{Breaker, Classifier, OnStateChange, Settings, State, WindowKind};
use crate::error::ConfigError;
use crate::metrics::names;

/// A function that names the breaker of a request.
pub(crate) type KeyFnDyn = dyn for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync;
/// A function that answers for an open breaker.
pub(crate) type FallbackDyn = dyn Fn(&Open) -> Response<Bytes> + Send + Sync;

/// Why a breaker answered a request itself; passed to the
/// [`fallback`](CircuitBreakerBuilder::fallback).
#[derive(Debug, Clone)]
pub struct Open {
    pub(crate) key: Arc<str>,
    pub(crate) retry_after: Duration,
}

impl Open {
    /// The key of the breaker that is open.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long until the breaker lets a probe through (1 s when it is half-open with every
    /// probe slot taken).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// Breakers by key. foldhash: keys come from the application's routes or its key function.
type BreakerMap = HashMap<Arc<str>, Arc<Breaker>, foldhash::fast::RandomState>;

/// The bounded set of breakers: lock-free reads, copy-on-write when a key is added.
pub(crate) struct Registry {
    map: ArcSwap<BreakerMap>,
    // Serialises writers (new keys, evictions); readers never take it.
    write: Mutex<()>,
    max: usize,
    idle_timeout: Duration,
    // Seeds the jitter of each new breaker.
    seeds: AtomicU64,
}

impl Registry {
    fn get_or_insert(&self, key: &str, settings: &Arc<Settings>) -> Arc<Breaker> {
        if let Some(b) = self.map.load().get(key) {
            return b.clone();
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        if let Some(b) = cur.get(key) {
            return b.clone();
        }
        let mut map: BreakerMap = (*cur).clone();
        let now = settings.nanos(Instant::now());
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let idle = nanos(self.idle_timeout);
        // An open or half-open breaker idle for longer than the longest open wait has nothing
        // left to protect: its next call would find the wait over. So it goes once idle for
        // both the idle timeout and that wait.
        let idle_open = idle.max(nanos(settings.max_open_wait));
        // Idle breakers go first; then, if still full, the closed breaker idle the longest; an
        // open one only when every breaker is open.
        map.retain(|_, b| {
            let keep = match b.state() {
                State::Closed => now.saturating_sub(b.last_call()) < idle,
                _ => now.saturating_sub(b.last_call()) < idle_open || b.forced_open(),
            };
            if !keep {
                b.retire();
            }
            keep
        });
        while map.len() >= self.max {
            let victim = map
                .iter()
                .min_by_key(|(_, b)| (b.state() != State::Closed, b.last_call()))
                .map(|(k, _)| k.clone());
            match victim.and_then(|k| map.remove(&k)) {
                Some(b) => b.retire(),
                None => break,
            }
        }
        let seed = self
            .seeds
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let b = Arc::new(Breaker::new(Arc::from(key), settings.clone(), seed));
        map.insert(b.key.clone(), b.clone());
        self.map.store(Arc::new(map));
        b
    }
}

/// State shared by every clone of the layer, its services and handles.
pub(crate) struct Shared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) registry: Registry,
    pub(crate) key_fn: Option<Arc<KeyFnDyn>>,
    pub(crate) fallback: Option<Arc<FallbackDyn>>,
}

impl Shared {
    /// The breaker for `key`, made on first use.
    pub(crate) fn breaker(&self, key: &str) -> Arc<Breaker> {
        self.registry.get_or_insert(key, &self.settings)
    }
}

/// The key of requests that have no route (no `MatchedPath`) or for which the key function
/// returned `None`.
pub const DEFAULT_KEY: &str = "default";

/// Configures a [`CircuitBreakerLayer`]. Made by [`CircuitBreakerLayer::builder`].
///
/// Every method takes `self` and returns it; [`build`](Self::build) checks the whole
/// configuration and fails with a [`ConfigError`] naming the first bad field.
#[must_use]
pub struct CircuitBreakerBuilder {
    window: WindowKind,
    min_calls: u32,
    failure_rate: f64,
    slow_call: Option<(Duration, f64)>,
    half_open_calls: u32,
    open_wait: Duration,
    max_open_wait: Duration,
    jitter: f64,
    call_timeout: Option<Duration>,
    max_breakers: usize,
    idle_timeout: Duration,
    classifier: Option<Arc<Classifier>>,
    on_state_change: Option<Arc<OnStateChange>>,
    key_fn: Option<Arc<KeyFnDyn>>,
    fallback: Option<Arc<FallbackDyn>>,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self {
            window: WindowKind::Count(100),
            min_calls: 20,
            failure_rate: 0.5,
            slow_call: None,
            half_open_calls: 5,
            open_wait: Duration::from_secs(5),
            max_open_wait: Duration::from_secs(300),
            jitter: 0.1,
            call_timeout: None,
            max_breakers: 1024,
            idle_timeout: Duration::from_secs(600),
            classifier: None,
            on_state_change: None,
            key_fn: None,
            fallback: None,
        }
    }
}

impl CircuitBreakerBuilder {
    /// Judge each breaker over its last `calls` calls. Default: 100 calls.
    pub fn count_window(mut self, calls: usize) -> Self {
        self.window = WindowKind::Count(calls);
        self
    }

    /// Judge each breaker over the calls that ended in the last `seconds` seconds (kept in one
    /// bucket per second, so the window covers between `seconds - 1` and `seconds` seconds).
    pub fn time_window(mut self, seconds: usize) -> Self {
        self.window = WindowKind::Time(seconds);
        self
    }

    /// No verdict before the window holds this many calls. Default: 20.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.min_calls = calls;
        self
    }

    /// Open when at least this share of the calls in the window failed, 0 < rate <= 1.
    /// Default: 0.5.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// Calls that take `duration` or more are slow; open when at least `rate` of the calls in
    /// the window were slow. Off by default.
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.slow_call = Some((duration, rate));
        self
    }

    /// Half-open: at most this many probe calls go through, however many requests arrive; once
    /// they have all ended, the breaker closes if they meet the thresholds and opens again
    /// otherwise. A probe whose future is dropped gives its slot back. Default: 5.
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.half_open_calls = calls;
        self
    }

    /// The open wait: `base` after the first trip, doubling with each trip that follows without
    /// a recovery, capped at `max`. Default: 5 s, capped at 5 min.
    pub fn open_wait(mut self, base: Duration, max: Duration) -> Self {
        self.open_wait = base;
        self.max_open_wait = max;
        self
    }

    /// Shorten each open wait by a random share of up to `fraction` (0 to 1), so that breakers
    /// that tripped together do not probe together. Default: 0.1.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// A call still running after `timeout` is abandoned (its future dropped), counts as a
    /// failure, and is answered `504 Gateway Timeout` with the [`Rejected`](crate::Rejected)
    /// marker. Off by default.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// At most this many breakers (keys) are tracked. Making room evicts idle closed breakers
    /// first, then the closed one idle the longest. Default: 1024.
    pub fn max_breakers(mut self, max: usize) -> Self {
        self.max_breakers = max;
        self
    }

    /// A closed breaker without a call for this long is dropped when a new key comes.
    /// Default: 10 min.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Decides which responses are failures (`true`). Inner errors and timed-out calls always
    /// are. Default: every `5xx`.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_perf::breaker::CircuitBreakerLayer;
    ///
    /// // Count 429 from the dependency, but not its 503 (it is shedding load on purpose).
    /// let layer = CircuitBreakerLayer::builder()
    ///     .classify(|status| {
    ///         status == StatusCode::TOO_MANY_REQUESTS
    ///             || (status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE)
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn classify<F>(mut self, f: F) -> Self
    where
        F: Fn(StatusCode) -> bool + Send + Sync + 'static,
    {
        self.classifier = Some(Arc::new(f));
        self
    }

    /// Called on every state change with the breaker's key, the old and the new state. Runs
    /// on the request's task: keep it short.
    pub fn on_state_change<F>(mut self, f: F) -> Self
    where
        F: Fn(&str, State, State) + Send + Sync + 'static,
    {
        self.on_state_change = Some(Arc::new(f));
        self
    }

    /// Names the breaker of a request, for example by upstream host, instead of the matched
    /// route. `None` uses the [`DEFAULT_KEY`] breaker. Return a bounded set of names: the
    /// number of breakers is bounded, and one-off keys would evict useful ones.
    ///
    /// ```
    /// use tower_perf::breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::builder()
    ///     .key_fn(|req| req.uri.host())
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn key_fn<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync + 'static,
    {
        self.key_fn = Some(Arc::new(f));
        self
    }

    /// Answer with this response instead of the default `503` while a breaker is open. The
    /// [`Rejected`](crate::Rejected) marker is added to it unless it carries one.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_perf::breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::builder()
    ///     .fallback(|open| {
    ///         http::Response::new(Bytes::from(format!("{} is resting", open.key())))
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn fallback<F>(mut self, f: F) -> Self
    where
        F: Fn(&Open) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.fallback = Some(Arc::new(f));
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        match self.window {
            WindowKind::Count(n) if !(1..=100_000).contains(&n) => {
                return Err(ConfigError::new(
                    "count_window",
                    format!("must be between 1 and 100000 calls, got {n}"),
                ))
            }
            WindowKind::Time(n) if !(1..=3600).contains(&n) => {
                return Err(ConfigError::new(
                    "time_window",
                    format!("must be between 1 and 3600 seconds, got {n}"),
                ))
            }
            _ => {}
        }
        if self.min_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        if let WindowKind::Count(n) = self.window {
            if self.min_calls as usize > n {
                return Err(ConfigError::new(
                    "minimum_calls",
                    format!(
                        "must be at most the count window ({n}), got {}",
                        self.min_calls
                    ),
                ));
            }
        }
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if !rate_ok(self.failure_rate) {
            return Err(ConfigError::new(
                "failure_rate",
                format!("must be in (0, 1], got {}", self.failure_rate),
            ));
        }
        if let Some((d, r)) = self.slow_call {
            if d.is_zero() || !rate_ok(r) {
                return Err(ConfigError::new(
                    "slow_calls",
                    "the duration must be greater than zero and the rate in (0, 1]",
                ));
            }
        }
        if !(1..=10_000).contains(&self.half_open_calls) {
            return Err(ConfigError::new(
                "half_open_calls",
                format!("must be between 1 and 10000, got {}", self.half_open_calls),
            ));
        }
        let day = Duration::from_secs(86_400);
        if self.open_wait.is_zero()
            || self.max_open_wait < self.open_wait
            || self.max_open_wait > day
        {
            return Err(ConfigError::new(
                "open_wait",
                "base must be greater than zero, max at least base and at most one day",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                "jitter",
                format!("must be between 0 and 1, got {}", self.jitter),
            ));
        }
        if self.call_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "call_timeout",
                "must be greater than zero",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_breakers) {
            return Err(ConfigError::new(
                "max_breakers",
                format!("must be between 1 and 1000000, got {}", self.max_breakers),
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "idle_timeout",
                "must be greater than zero",
            ));
        }
        describe_metrics();
        let settings = Settings {
            window: self.window,
            min_calls: self.min_calls,
            failure_rate: self.failure_rate,
            slow_duration: self.slow_call.map(|(d, _)| d),
            slow_rate: self.slow_call.map_or(1.0, |(_, r)| r),
            half_open_calls: self.half_open_calls,
            open_wait: self.open_wait,
            max_open_wait: self.max_open_wait,
            jitter: self.jitter,
            call_timeout: self.call_timeout,
            classifier: self.classifier,
            on_state_change: self.on_state_change,
            clock_at_end: self.slow_call.is_some() || matches!(self.window, WindowKind::Time(_)),
            start: Instant::now(),
        };
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        let shared = Shared {
            settings: Arc::new(settings),
            registry: Registry {
                map: ArcSwap::from_pointee(BreakerMap::default()),
                write: Mutex::new(()),
                max: self.max_breakers,
                idle_timeout: self.idle_timeout,
                seeds: AtomicU64::new(h.finish()),
            },
            key_fn: self.key_fn,
            fallback: self.fallback,
        };
        Ok(CircuitBreakerLayer {
            shared: Arc::new(shared),
        })
    }
}

impl fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("window", &self.window)
            .field("min_calls", &self.min_calls)
            .field("failure_rate", &self.failure_rate)
            .field("slow_call", &self.slow_call)
            .field("half_open_calls", &self.half_open_calls)
            .field("open_wait", &self.open_wait)
            .field("max_open_wait", &self.max_open_wait)
            .field("jitter", &self.jitter)
            .field("call_timeout", &self.call_timeout)
            .field("max_breakers", &self.max_breakers)
            .field("idle_timeout", &self.idle_timeout)
            .field("classifier", &self.classifier.is_some())
            .field("on_state_change", &self.on_state_change.is_some())
            .field("key_fn", &self.key_fn.is_some())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        names::CIRCUIT_BREAKER_STATE,
        Unit::Count,
        "1 for the state a circuit breaker is in, 0 for the others."
    );
    describe_counter!(
        names::CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
        Unit::Count,
        "State changes of a circuit breaker, by the state entered."
    );
    describe_counter!(
        names::CIRCUIT_BREAKER_CALLS_TOTAL,
        Unit::Count,
        "Calls seen by a circuit breaker, by result."
    );
}

/// Keyed circuit breakers in front of a service. See the [module docs](super) for an example.
///
/// Clones share one state: build the layer once and clone it (axum clones it per route and per
/// connection).
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A layer with the default configuration: last 100 calls, at least 20, opens at 50%
    /// failures, 5 s open wait doubling up to 5 min, 5 half-open probes.
    pub fn new() -> Self {
        CircuitBreakerBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder to configure the layer.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    /// A handle to read the breakers and drive them by hand while the layer serves requests.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.shared.clone())
    }
}

/// Reads and drives the breakers of a [`CircuitBreakerLayer`]. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    shared: Arc<Shared>,
}

impl CircuitBreakerHandle {
    /// State and window figures of every tracked breaker, sorted by key.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let mut breakers: Vec<BreakerSnapshot> = self
            .shared
            .registry
            .map
            .load()
            .values()
            .map(|b| b.snapshot(now))
            .collect();
        breakers.sort_by(|a, b| a.key.cmp(&b.key));
        Snapshot { breakers }
    }

    /// State and window figures of one breaker, if it is tracked.
    pub fn breaker(&self, key: &str) -> Option<BreakerSnapshot> {
        let map = self.shared.registry.map.load();
        map.get(key).map(|b| b.snapshot(Instant::now()))
    }

    /// The state of one breaker; `None` when it is not tracked (a new breaker starts closed).
    pub fn state(&self, key: &str) -> Option<State> {
        self.shared.registry.map.load().get(key).map(|b| b.state())
    }

    /// Number of tracked breakers.
    pub fn len(&self) -> usize {
        self.shared.registry.map.load().len()
    }

    /// No breaker is tracked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens the breaker of `key` (making it if needed) until [`force_close`](Self::force_close)
    /// or [`reset`](Self::reset): no probe goes through meanwhile.
    pub fn force_open(&self, key: &str) {
        self.shared.breaker(key).force_open();
    }

    /// Closes the breaker of `key` with an empty window. It trips again as usual, and its next
    /// open wait keeps the growth of earlier trips. Returns `false` if the key is not tracked.
    pub fn force_close(&self, key: &str) -> bool {
        let b = self.shared.registry.map.load().get(key).cloned();
        b.map(|b| b.force_close()).is_some()
    }

    /// Closes the breaker of `key` and forgets its history (window and trip count). Returns
    /// `false` if the key is not tracked.
    pub fn reset(&self, key: &str) -> bool {
        let b = self.shared.registry.map.load().get(key).cloned();
        b.map(|b| b.reset()).is_some()
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("breakers", &self.len())
            .finish()
    }
}
