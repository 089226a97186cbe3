//! The Redis link: a fred connection pool behind a deadline per call and a breaker on the link.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, Pool, SubscriberClient, WithOptions};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::Builder;
use tokio::time::Instant;

use super::breaker::LinkBreaker;
use super::snapshot::RedisLinkSnapshot;
use crate::metrics::{labels, names};
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
    metrics: LinkMetrics,
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

/// Metric handles, made once when the link is built.
struct LinkMetrics {
    /// By result: `ok`, `timeout`, `error`, `skipped`.
    calls: [::metrics::Counter; 4],
    open: ::metrics::Gauge,
}

impl LinkMetrics {
    fn new() -> Self {
        use ::metrics::{describe_counter, describe_gauge, Unit};
        describe_counter!(
            names::REDIS_CALLS_TOTAL,
            Unit::Count,
            "Calls of a Redis link, by result."
        );
        describe_gauge!(
            names::REDIS_LINK_OPEN,
            "1 while a Redis link's breaker is open (Redis skipped), else 0."
        );
        let open = ::metrics::gauge!(names::REDIS_LINK_OPEN);
        open.set(0.0);
        Self {
            calls: ["ok", "timeout", "error", "skipped"]
                .map(|r| ::metrics::counter!(names::REDIS_CALLS_TOTAL, labels::RESULT => r)),
            open,
        }
    }
}

impl RedisLink {
    /// A link on a fred pool (not connected yet), with the fred builder of its subscribers,
    /// the deadline of each call, and its breaker.
    pub(super) fn new(
        pool: Pool,
        builder: Builder,
        deadline: Duration,
        breaker: LinkBreaker,
        key_prefix: String,
    ) -> Self {
        let options = Options {
            timeout: Some(deadline),
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        Self {
            inner: Arc::new(LinkInner {
                pool,
                builder,
                options,
                deadline,
                started: AtomicBool::new(false),
                connected_once: AtomicBool::new(false),
                breaker,
                counts: Counts::default(),
                metrics: LinkMetrics::new(),
                log: EventLimiter::new(Instant::now(), Duration::from_secs(10), 3),
                key_prefix: key_prefix.into(),
            }),
        }
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
    pub fn snapshot(&self) -> RedisLinkSnapshot {
        let c = &self.inner.counts;
        RedisLinkSnapshot {
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
            inner.metrics.calls[3].increment(1);
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
                inner.metrics.calls[0].increment(1);
                if inner.breaker.is_open() {
                    inner.metrics.open.set(0.0);
                }
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
            LinkError::Timeout => {
                inner.counts.timeouts.fetch_add(1, Ordering::Relaxed);
                inner.metrics.calls[1].increment(1);
            }
            _ => {
                inner.counts.errors.fetch_add(1, Ordering::Relaxed);
                inner.metrics.calls[2].increment(1);
            }
        };
        if inner.breaker.failure() {
            inner.counts.opened.fetch_add(1, Ordering::Relaxed);
            inner.metrics.open.set(1.0);
            tracing::warn!(
                cool_down_ms = inner.breaker.cool_down_ms(),
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
            .field("snapshot", &self.snapshot())
            .finish()
    }
}
