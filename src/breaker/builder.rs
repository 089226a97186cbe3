use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use tokio::time::Instant;

use super::layer::CircuitBreakerLayer;
use super::open::{FallbackDyn, Open};
use super::registry::{KeyFnDyn, Registry, Shared};
use super::snapshot::State;
use super::state::{Classifier, OnStateChange, Settings, WindowKind};
use crate::error::ConfigError;
use crate::metrics::names;

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
    key_with: Option<Arc<KeyFnDyn>>,
    fallback_with: Option<Arc<FallbackDyn>>,
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
            key_with: None,
            fallback_with: None,
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
    ///     .classify_with(|status| {
    ///         status == StatusCode::TOO_MANY_REQUESTS
    ///             || (status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE)
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn classify_with<F>(mut self, f: F) -> Self
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
    /// route. `None` uses the [`DEFAULT_KEY`](super::DEFAULT_KEY) breaker. Return a bounded set of names: the
    /// number of breakers is bounded, and one-off keys would evict useful ones.
    ///
    /// ```
    /// use tower_perf::breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::builder()
    ///     .key_with(|req| req.uri.host())
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn key_with<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync + 'static,
    {
        self.key_with = Some(Arc::new(f));
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
    ///     .fallback_with(|open| {
    ///         http::Response::new(Bytes::from(format!("{} is resting", open.key())))
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn fallback_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Open) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.fallback_with = Some(Arc::new(f));
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        self.check_window()?;
        self.check_thresholds()?;
        self.check_timing()?;
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
        let shared = Shared {
            settings: Arc::new(settings),
            registry: Registry::new(self.max_breakers, self.idle_timeout),
            key_with: self.key_with,
            fallback_with: self.fallback_with,
        };
        Ok(CircuitBreakerLayer {
            shared: Arc::new(shared),
        })
    }

    /// Checks the window and the calls it needs before a verdict.
    fn check_window(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Checks the rates that open a breaker and the half-open probes.
    fn check_thresholds(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Checks the open wait, its jitter, the call timeout and the bounds of the registry.
    fn check_timing(&self) -> Result<(), ConfigError> {
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
        Ok(())
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
            .field("key_with", &self.key_with.is_some())
            .field("fallback_with", &self.fallback_with.is_some())
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
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}
