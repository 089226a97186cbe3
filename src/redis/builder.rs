//! The configuration of a [`RedisLink`], checked into a fred pool.

use std::time::Duration;

use fred::clients::Pool;
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::Builder;

use super::breaker::LinkBreaker;
use super::link::RedisLink;
use crate::error::ConfigError;

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
    /// Where Redis is, as fred parses it:
    /// - one server: `redis://[user:password@]host[:port][/db]`;
    /// - Redis Cluster: `redis-cluster://[user:password@]host:port[?node=host:port&node=...]`
    ///   (any reachable node is enough: the others are discovered);
    /// - Sentinel: `redis-sentinel://[user:password@]sentinel:port[/db]?sentinelServiceName=name
    ///   [&node=sentinel2:port...]` (the hosts are the sentinels, which name the master);
    /// - `rediss://`, `rediss-cluster://`, `rediss-sentinel://`: the same over TLS (with the
    ///   `redis-rustls` feature); `redis+unix:///path`: a Unix socket.
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
        let config = self.fred_config()?;
        self.check()?;
        let (pool, builder) = self.fred_pool(config)?;
        let breaker = LinkBreaker::new(self.failure_threshold, self.cool_down, self.max_cool_down);
        Ok(RedisLink::new(
            pool,
            builder,
            self.deadline,
            breaker,
            self.key_prefix,
        ))
    }

    /// The fred configuration: the one given, or the URL's.
    fn fred_config(&self) -> Result<Config, ConfigError> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let Some(url) = &self.url else {
            return Err(ConfigError::new(
                "url",
                "set a Redis URL (or a fred config with `config`)",
            ));
        };
        const SCHEMES: [&str; 7] = [
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
            "redis-sentinel://",
            "rediss-sentinel://",
            "redis+unix://",
        ];
        if !SCHEMES.iter().any(|s| url.starts_with(s)) {
            return Err(ConfigError::new(
                "url",
                "must start with redis://, rediss://, redis-cluster://, rediss-cluster://, \
                 redis-sentinel://, rediss-sentinel:// or redis+unix://",
            ));
        }
        if url.starts_with("rediss") && cfg!(not(feature = "redis-rustls")) {
            return Err(ConfigError::new(
                "url",
                "rediss:// (TLS) needs the `redis-rustls` feature of tower-perf",
            ));
        }
        Config::from_url(url)
            .map_err(|e| ConfigError::new("url", format!("not a Redis URL fred accepts: {e}")))
    }

    /// Checks the pool, the deadline, the breaker and the key prefix.
    fn check(&self) -> Result<(), ConfigError> {
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
        let prefix = &self.key_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            return Err(ConfigError::new(
                "key_prefix",
                "must be 1 to 64 visible ASCII characters, without `{` or `}` (Redis Cluster hash tags)",
            ));
        }
        Ok(())
    }

    /// The fred pool (not connected yet) and the fred builder its subscribers are made with:
    /// one attempt per command within the deadline, a bounded command buffer, reconnecting
    /// for ever.
    fn fred_pool(&self, mut config: Config) -> Result<(Pool, Builder), ConfigError> {
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
        Ok((pool, builder))
    }
}

impl RedisLink {
    /// A builder with the defaults: a pool of 4, a 20 ms deadline, the breaker opening after 5
    /// consecutive failures for 500 ms (doubling to 10 s).
    pub fn builder() -> RedisLinkBuilder {
        RedisLinkBuilder::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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

    #[test]
    fn cluster_and_sentinel_urls_are_accepted() {
        for url in [
            "redis-cluster://127.0.0.1:7000",
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002",
            "redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster",
            "redis-sentinel://127.0.0.1:26379/1?sentinelServiceName=mymaster&node=127.0.0.1:26380",
        ] {
            assert!(RedisLink::builder().url(url).build().is_ok(), "{url}");
        }
        // The service name is required.
        let err = RedisLink::builder()
            .url("redis-sentinel://127.0.0.1:26379")
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "url");
        if cfg!(not(feature = "redis-rustls")) {
            let err = RedisLink::builder()
                .url("rediss-cluster://127.0.0.1:7000")
                .build()
                .unwrap_err();
            assert_eq!(err.field(), "url");
        }
    }
}
