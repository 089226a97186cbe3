//! The Redis link: a fred connection pool behind a deadline per call and a breaker on the link.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, Pool, SubscriberClient, WithOptions};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::{Config, Options, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::Builder;
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::util::event_limiter::EventLimiter;

/// Why a Redis call gave no answer. The callers (cache tier, rate limiter) fall back to memory
/// or the origin; nothing reaches the client as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The link's breaker is open after repeated failures: Redis was not asked.
    Open,
    /// The call did not finish within the deadline.
    Timeout,
    /// Redis answered with an error, or the connection failed.
    Failed,
}

impl LinkError {
    /// The word used in `Cache-Status` `detail` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkError::Open => "redis-skipped",
            LinkError::Timeout => "redis-timeout",
            LinkError::Failed => "redis-error",
        }
    }
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for LinkError {}

/// Counters of a [`RedisLink`], read through [`RedisLink::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Calls that Redis answered in time.
    pub ok: u64,
    /// Calls that hit the deadline.
    pub timeouts: u64,
    /// Calls that failed (error reply, connection down).
    pub errors: u64,
    /// Calls not made because the link's breaker was open.
    pub skipped: u64,
    /// Times the breaker opened.
    pub opened: u64,
    /// Whether the breaker is open now (Redis is being skipped).
    pub open: bool,
}

/// Configures a [`RedisLink`]. Made by [`RedisLink::builder`].
#[must_use]
pub struct RedisLinkBuilder {
    url: Option<String>,
    config: Option<Config>,
    pool_size: usize,
    deadline: Duration,
    failure_threshold: u32,
    cool_down: Duration,
    max_cool_down: Duration,
    connect_timeout: Duration,
    key_prefix: String,
}

impl Default for RedisLinkBuilder {
    fn default() -> Self {
        Self {
            url: None,
            config: None,
            pool_size: 4,
            deadline: Duration::from_millis(20),
            failure_threshold: 5,
            cool_down: Duration::from_millis(500),
            max_cool_down: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            key_prefix: "tower-perf".to_owned(),
        }
    }
}

impl std::fmt::Debug for RedisLinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLinkBuilder")
            .field("pool_size", &self.pool_size)
            .field("deadline", &self.deadline)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLinkBuilder {
    /// Where Redis is: `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS, with
    /// the `redis-rustls` feature), `redis-cluster://host:port?node=host:port...` or
    /// `redis-sentinel://host:port?sentinelServiceName=name...`, as fred parses them.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// A complete fred configuration instead of a URL (Cluster and Sentinel set-ups, TLS
    /// options, credentials from elsewhere). Its `fail_fast` is turned off: the link keeps
    /// reconnecting by itself.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Connections in the pool; calls are spread over them round-robin. Default: 4.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Longest time any one Redis call may take before the caller gives up and goes on without
    /// Redis. Default: 20 ms.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Consecutive failed or timed-out calls that open the link's breaker. Default: 5.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// How long an open breaker skips Redis before one call probes it; doubled on each failed
    /// probe up to `max`. Default: 500 ms, at most 10 s.
    pub fn cool_down(mut self, first: Duration, max: Duration) -> Self {
        self.cool_down = first;
        self.max_cool_down = max;
        self
    }

    /// Timeout of one connection attempt (TCP and TLS handshake). Default: 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Prefix of every key and channel this crate uses, so several applications can share one
    /// Redis. Default: `tower-perf`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Checks the configuration and makes the link. No connection is opened yet: the link
    /// connects in the background on first use (or [`RedisLink::connect`]) and reconnects by
    /// itself; until then calls fail fast and callers go on without Redis.
    pub fn build(self) -> Result<RedisLink, ConfigError> {
        let mut config = match (self.config, &self.url) {
            (Some(c), _) => c,
            (None, Some(url)) => {
                const SCHEMES: [&str; 5] = [
                    "redis://",
                    "rediss://",
                    "redis-cluster://",
                    "redis-sentinel://",
                    "redis+unix://",
                ];
                if !SCHEMES.iter().any(|s| url.starts_with(s)) {
                    return Err(ConfigError::new(
                        "url",
                        "must start with redis://, rediss://, redis-cluster://, redis-sentinel:// or redis+unix://",
                    ));
                }
                if url.starts_with("rediss://") && cfg!(not(feature = "redis-rustls")) {
                    return Err(ConfigError::new(
                        "url",
                        "rediss:// (TLS) needs the `redis-rustls` feature of tower-perf",
                    ));
                }
                Config::from_url(url).map_err(|e| {
                    ConfigError::new("url", format!("not a Redis URL fred accepts: {e}"))
                })?
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "url",
                    "set a Redis URL (or a fred config with `config`)",
                ))
            }
        };
        if self.pool_size == 0 || self.pool_size > 256 {
            return Err(ConfigError::new(
                "pool_size",
                format!("must be between 1 and 256, got {}", self.pool_size),
            ));
        }
        if self.deadline.is_zero() || self.deadline > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "deadline",
                "must be greater than zero and at most 60 s",
            ));
        }
        if self.failure_threshold == 0 {
            return Err(ConfigError::new("failure_threshold", "must be at least 1"));
        }
        if self.cool_down.is_zero() || self.max_cool_down < self.cool_down {
            return Err(ConfigError::new(
                "cool_down",
                "the first cool-down must be greater than zero and at most the maximum",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            return Err(ConfigError::new(
                "key_prefix",
                "must be 1 to 64 visible ASCII characters, without `{` or `}` (Redis Cluster hash tags)",
            ));
        }
        config.fail_fast = false;
        let connect_timeout = self.connect_timeout;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                c.max_command_attempts = 1;
                // Commands are never queued without bound while Redis is away.
                c.max_command_buffer_len = 10_000;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = self.deadline;
            })
            // Reconnect forever, quickly at first: 50 ms, doubling to 2 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let pool = builder
            .build_pool(self.pool_size)
            .map_err(|e| ConfigError::new("url", format!("fred refused the configuration: {e}")))?;
        let options = Options {
            timeout: Some(self.deadline),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        let now = Instant::now();
        Ok(RedisLink {
            inner: Arc::new(LinkInner {
                pool,
                builder,
                options,
                deadline: self.deadline,
                started: AtomicBool::new(false),
                connected_once: AtomicBool::new(false),
                breaker: LinkBreaker {
                    epoch: now,
                    failures: AtomicU32::new(0),
                    state: AtomicU8::new(CLOSED),
                    open_until_ms: AtomicU64::new(0),
                    cool_down_ms: AtomicU64::new(self.cool_down.as_millis() as u64),
                    first_cool_down_ms: self.cool_down.as_millis() as u64,
                    max_cool_down_ms: self.max_cool_down.as_millis() as u64,
                    threshold: self.failure_threshold,
                },
                counts: Counts::default(),
                log: EventLimiter::new(now, Duration::from_secs(10), 3),
                key_prefix: self.key_prefix.into(),
            }),
        })
    }
}

/// A connection to Redis (single server, Cluster or Sentinel), shared by the layers that use
/// Redis: a fred pool, a deadline on every call, and a breaker on the link so an outage costs
/// one timeout per cool-down instead of one per request. Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_perf::redis::RedisLink;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let link = RedisLink::builder()
///     .url("redis://127.0.0.1:6379")
///     .deadline(Duration::from_millis(20))
///     .build()
///     .expect("valid Redis configuration");
/// // Optional: wait for the first connection at start-up (the link works without it).
/// link.connect(Duration::from_secs(1)).await;
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    pool: Pool,
    /// Kept to make subscriber clients with the same configuration.
    builder: Builder,
    /// Per-call options: the deadline, and fail fast while disconnected instead of queueing.
    options: Options,
    deadline: Duration,
    started: AtomicBool,
    /// Whether the pool was ever connected: until then, calls wait for it.
    connected_once: AtomicBool,
    breaker: LinkBreaker,
    counts: Counts,
    /// Rate limit on the WARN events of failures.
    log: EventLimiter,
    key_prefix: Box<str>,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    opened: AtomicU64,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
/// Open, and one caller is probing.
const PROBING: u8 = 2;

/// Consecutive failures open the link; after the cool-down one call probes it.
struct LinkBreaker {
    epoch: Instant,
    failures: AtomicU32,
    state: AtomicU8,
    open_until_ms: AtomicU64,
    cool_down_ms: AtomicU64,
    first_cool_down_ms: u64,
    max_cool_down_ms: u64,
    threshold: u32,
}

impl LinkBreaker {
    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// Whether a call may go to Redis now.
    fn admit(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => {
                self.now_ms() >= self.open_until_ms.load(Ordering::Acquire)
                    && self
                        .state
                        .compare_exchange(OPEN, PROBING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            }
            _ => false,
        }
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.state.store(CLOSED, Ordering::Release);
            self.cool_down_ms
                .store(self.first_cool_down_ms, Ordering::Relaxed);
        }
    }

    /// `true` when this failure opened the link.
    fn failure(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            PROBING => {
                let next =
                    (self.cool_down_ms.load(Ordering::Relaxed) * 2).min(self.max_cool_down_ms);
                self.cool_down_ms.store(next, Ordering::Relaxed);
                self.open_until_ms
                    .store(self.now_ms() + next, Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
                false
            }
            CLOSED => {
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= self.threshold
                    && self
                        .state
                        .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    let cool = self.cool_down_ms.load(Ordering::Relaxed);
                    self.open_until_ms
                        .store(self.now_ms() + cool, Ordering::Release);
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }
}

impl RedisLink {
    /// A builder with the defaults: a pool of 4, a 20 ms deadline, the breaker opening after 5
    /// consecutive failures for 500 ms (doubling to 10 s).
    pub fn builder() -> RedisLinkBuilder {
        RedisLinkBuilder::default()
    }

    /// Starts connecting (if not started) and waits up to `timeout` for the pool to be
    /// connected. `true` when it is. The link works without this: it connects on first use.
    pub async fn connect(&self, timeout: Duration) -> bool {
        self.start();
        tokio::time::timeout(timeout, self.inner.pool.wait_for_connect())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether every connection of the pool is up.
    pub fn is_connected(&self) -> bool {
        self.inner.pool.is_connected()
    }

    /// Counts of calls and of the breaker.
    pub fn stats(&self) -> LinkStats {
        let c = &self.inner.counts;
        LinkStats {
            ok: c.ok.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            opened: c.opened.load(Ordering::Relaxed),
            open: self.inner.breaker.is_open(),
        }
    }

    /// The prefix of every key and channel.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// The deadline of one call.
    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    fn start(&self) {
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            // The tasks live as long as the pool; their handles are not needed.
            drop(self.inner.pool.connect());
        }
    }

    /// Runs one Redis call with the deadline, through the breaker. `op` names the call in logs.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, LinkError>
    where
        F: FnOnce(WithOptions<Client>) -> Fut,
        Fut: Future<Output = Result<T, fred::error::Error>>,
    {
        let inner = &*self.inner;
        if !inner.started.load(Ordering::Acquire) {
            self.start();
        }
        if !inner.breaker.admit() {
            inner.counts.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(LinkError::Open);
        }
        if !inner.connected_once.load(Ordering::Acquire) {
            // The first calls wait (within the deadline) for the first connection, instead of
            // failing fast while it is being made.
            if self.inner.pool.is_connected()
                || tokio::time::timeout(inner.deadline, inner.pool.wait_for_connect())
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                inner.connected_once.store(true, Ordering::Release);
            }
        }
        let client = inner.pool.next().with_options(&inner.options);
        // fred applies the same deadline; this one also bounds what fred does not time
        // (waiting for a connection slot).
        let result = tokio::time::timeout(inner.deadline, f(client)).await;
        let err = match result {
            Ok(Ok(v)) => {
                inner.counts.ok.fetch_add(1, Ordering::Relaxed);
                inner.breaker.success();
                return Ok(v);
            }
            Ok(Err(e)) if e.kind() == &fred::error::ErrorKind::Timeout => {
                self.log_failure(op, &e as &dyn std::fmt::Display);
                LinkError::Timeout
            }
            Ok(Err(e)) => {
                self.log_failure(op, &e as &dyn std::fmt::Display);
                LinkError::Failed
            }
            Err(_) => {
                self.log_failure(op, &"deadline passed" as &dyn std::fmt::Display);
                LinkError::Timeout
            }
        };
        match err {
            LinkError::Timeout => inner.counts.timeouts.fetch_add(1, Ordering::Relaxed),
            _ => inner.counts.errors.fetch_add(1, Ordering::Relaxed),
        };
        if inner.breaker.failure() {
            inner.counts.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                cool_down_ms = inner.breaker.cool_down_ms.load(Ordering::Relaxed),
                "tower-perf: Redis link failing, skipping Redis for a while"
            );
        }
        Err(err)
    }

    fn log_failure(&self, op: &'static str, err: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.inner.log.allow(Instant::now()) {
            tracing::warn!(op, error = %err, suppressed, "tower-perf: Redis call failed");
        }
    }

    /// Runs a Lua script by its SHA (`EVALSHA`), sending its source once (`EVAL`) when this
    /// Redis does not know it yet (`NOSCRIPT`: first use, restart, failover). Keys must share
    /// one hash slot under Redis Cluster.
    pub(crate) async fn script<R>(
        &self,
        op: &'static str,
        script: &Script,
        keys: Vec<fred::types::Key>,
        args: Vec<fred::types::Value>,
    ) -> Result<R, LinkError>
    where
        R: fred::types::FromValue,
    {
        self.call(op, |c| async move {
            match c
                .evalsha::<R, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())
                .await
            {
                Err(e) if e.details().starts_with("NOSCRIPT") => match script.lua() {
                    Some(lua) => c.eval(lua.clone(), keys, args).await,
                    None => Err(e),
                },
                other => other,
            }
        })
        .await
    }

    /// A new subscriber client on the same configuration (one connection, resubscribed after
    /// each reconnect).
    pub(crate) fn subscriber(&self) -> Option<SubscriberClient> {
        match self.inner.builder.build_subscriber_client() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "tower-perf: cannot make a Redis subscriber");
                None
            }
        }
    }
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("deadline", &self.inner.deadline)
            .field("key_prefix", &self.inner.key_prefix)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> LinkBreaker {
        LinkBreaker {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            state: AtomicU8::new(CLOSED),
            open_until_ms: AtomicU64::new(0),
            cool_down_ms: AtomicU64::new(100),
            first_cool_down_ms: 100,
            max_cool_down_ms: 400,
            threshold,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_probes_after_the_cool_down() {
        let b = breaker(3);
        assert!(b.admit());
        assert!(!b.failure());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "third consecutive failure opens");
        assert!(!b.admit());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.admit(), "one probe after the cool-down");
        assert!(!b.admit(), "only one probe at a time");
        b.failure();
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(!b.admit(), "the cool-down doubled to 200 ms");
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(b.admit());
        b.success();
        assert!(b.admit() && b.admit(), "closed again");
        assert_eq!(b.cool_down_ms.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let url = "redis://127.0.0.1:6379";
        let field = |b: RedisLinkBuilder| b.build().unwrap_err().field();
        assert_eq!(field(RedisLink::builder()), "url");
        assert_eq!(field(RedisLink::builder().url("http://x")), "url");
        assert_eq!(
            field(RedisLink::builder().url(url).pool_size(0)),
            "pool_size"
        );
        assert_eq!(
            field(RedisLink::builder().url(url).deadline(Duration::ZERO)),
            "deadline"
        );
        assert_eq!(
            field(RedisLink::builder().url(url).failure_threshold(0)),
            "failure_threshold"
        );
        assert_eq!(
            field(
                RedisLink::builder()
                    .url(url)
                    .cool_down(Duration::from_secs(2), Duration::from_secs(1))
            ),
            "cool_down"
        );
        assert_eq!(
            field(RedisLink::builder().url(url).key_prefix("a{b}")),
            "key_prefix"
        );
        assert!(RedisLink::builder().url(url).build().is_ok());
    }
}
