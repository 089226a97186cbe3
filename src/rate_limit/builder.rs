use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use http::request::Parts;

use super::identity::{Cidr, ClientKey, ForwardedHeader, Identity, Source};
use super::layer::RateLimitLayer;
use super::quota::{Policy, Quota, Scope, MAX_POLICIES};
use super::state::{BypassFn, Hooks, RoutePolicies, Shared, TierFn};
use super::store::{Backend, LocalStore};
use crate::error::ConfigError;
use crate::metrics::names;
use crate::route::{Route, RouteTable};

/// Configures a [`RateLimitLayer`]. Made by [`RateLimitLayer::builder`].
///
/// Every method takes `self` and returns it; [`build`](Self::build) checks the whole
/// configuration and fails with a [`ConfigError`] naming the first bad field.
#[must_use]
pub struct RateLimitBuilder {
    quota: Quota,
    routes: Vec<(Route, Quota)>,
    tier: Option<Arc<TierFn>>,
    bypass: Option<Arc<BypassFn>>,
    source: Source,
    trusted_proxies: Vec<String>,
    forwarded: ForwardedHeader,
    ipv6_prefix: u8,
    max_keys: usize,
    headers_on_allowed: bool,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::RedisLink>,
    #[cfg(feature = "redis")]
    redis_fallback: super::shared::RedisFallback,
    #[cfg(feature = "redis")]
    redis_seed: Option<u64>,
}

/// The largest [`max_keys`](RateLimitBuilder::max_keys).
const MAX_KEYS_LIMIT: usize = 1 << 28;

impl RateLimitBuilder {
    fn new(quota: Quota) -> Self {
        Self {
            quota,
            routes: Vec::new(),
            tier: None,
            bypass: None,
            source: Source::Peer,
            trusted_proxies: Vec::new(),
            forwarded: ForwardedHeader::default(),
            ipv6_prefix: 64,
            max_keys: 100_000,
            headers_on_allowed: true,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_fallback: super::shared::RedisFallback::Local,
            #[cfg(feature = "redis")]
            redis_seed: None,
        }
    }

    /// The default quota, for requests that no route or tier quota covers.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// A quota for a [`Route`]: a string is one route (the route template, as in axum's
    /// `MatchedPath`, when the layer runs inside the router, `Router::layer` or
    /// `route_layer`; else the path), [`Route::prefix`] every route under a prefix. An exact
    /// route wins over prefixes, the longest prefix over shorter ones (see
    /// [`crate::route`]). Each route quota is a budget of its own, apart from the default
    /// one; the routes under one prefix share its budget.
    pub fn route_quota(mut self, route: impl Into<Route>, quota: Quota) -> Self {
        self.routes.push((route.into(), quota));
        self
    }

    /// Picks the quota of a request by a function, for example from the client's plan. A
    /// returned quota wins over the route and default quotas (read `MatchedPath` from
    /// `parts.extensions` to keep route limits); `None` keeps them. Each distinct quota is a
    /// budget of its own; up to 256 distinct quotas are kept, further ones are ignored with a
    /// warning.
    ///
    /// ```
    /// use tower_perf::rate_limit::{Quota, RateLimitLayer};
    ///
    /// const PRO: Quota = Quota::per_second(1000).burst(2000).named("pro");
    /// let layer = RateLimitLayer::builder(Quota::per_second(10))
    ///     .tier_with(|req| (req.headers.get("x-plan")? == "pro").then_some(PRO))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn tier_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> Option<Quota> + Send + Sync + 'static,
    {
        self.tier = Some(Arc::new(f));
        self
    }

    /// Exempts requests for which `f` returns `true` (health checks, metrics, admin): they are
    /// neither limited nor counted against any quota, and get no rate-limit headers.
    pub fn bypass_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.bypass = Some(Arc::new(f));
        self
    }

    /// Identifies clients by the value of a request header (an API key, a user id set by an
    /// authenticating proxy); a missing or empty header falls back to the peer address. Only
    /// a hash of the value is kept.
    ///
    /// A client can send any value it likes: use this for headers that something in front of
    /// the layer has authenticated, or every new value is a fresh budget.
    pub fn key_header(mut self, header: HeaderName) -> Self {
        self.source = Source::Header(header);
        self
    }

    /// Identifies clients by a function; `None` falls back to the peer address.
    ///
    /// ```
    /// use tower_perf::rate_limit::{ClientKey, Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::builder(Quota::per_second(10))
    ///     // The tenant, from a header an authenticating proxy sets.
    ///     .identify_with(|req| req.headers.get("x-tenant").map(|v| ClientKey::bytes(v.as_bytes())))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn identify_with<F>(mut self, f: F) -> Self
    where
        F: for<'a> Fn(&'a Parts) -> Option<ClientKey<'a>> + Send + Sync + 'static,
    {
        self.source = Source::Fn(Arc::new(f));
        self
    }

    /// The reverse proxies whose forwarding header is believed: IP addresses or CIDR networks
    /// (`10.0.0.0/8`, `127.0.0.1`, `fd00::/8`). Only when the peer address is one of them is
    /// the client taken from the header (see [`forwarded_header`](Self::forwarded_header)):
    /// the right-most address that is not a trusted proxy, since each proxy appends the
    /// address it received from and everything left of the last trusted proxy was written by
    /// the client. Default: none, so forwarding headers are ignored.
    pub fn trusted_proxies<I, T>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.trusted_proxies = proxies.into_iter().map(|p| p.as_ref().to_owned()).collect();
        self
    }

    /// The header the trusted proxies maintain. Default: `X-Forwarded-For`.
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.forwarded = header;
        self
    }

    /// IPv6 clients are keyed by their first `bits` bits: a single host usually holds a whole
    /// `/64`, and would otherwise get a fresh budget per address. 1 to 128. Default: 64.
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits;
        self
    }

    /// At most this many client buckets are kept; idle ones are dropped first, then those
    /// closest to idle (see the [module docs](super#bounded-memory)). Default: 100 000.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// Send `RateLimit-Policy` and `RateLimit` on allowed responses too, not only on `429`s.
    /// On by default.
    pub fn headers_on_allowed(mut self, on: bool) -> Self {
        self.headers_on_allowed = on;
        self
    }

    /// Shares the quotas of every instance through Redis: each decision is one round trip on
    /// `link` (a Lua script on the Redis server's clock), so all the instances that use the
    /// same Redis, key prefix and configuration enforce one budget per client. When Redis does
    /// not answer within the link's deadline, or the link's breaker is open, the
    /// [`redis_fallback`](Self::redis_fallback) decides. See the
    /// [module docs](super#shared-across-instances-redis).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, link: crate::redis::RedisLink) -> Self {
        self.redis = Some(link);
        self
    }

    /// What happens to a request that Redis cannot decide (slow, down, breaker open): decide
    /// in process (the default), let it through, or answer `503`. See [`RedisFallback`](
    /// super::RedisFallback).
    #[cfg(feature = "redis")]
    pub fn redis_fallback(mut self, fallback: super::shared::RedisFallback) -> Self {
        self.redis_fallback = fallback;
        self
    }

    /// The seed of the client keys in Redis. Every instance must use the same one (they then
    /// compute the same key for the same client); keeping it secret keeps clients from
    /// crafting identities (API keys) whose key collides with another client's. Default: a
    /// hash of the link's key prefix. Needs [`redis`](Self::redis).
    #[cfg(feature = "redis")]
    pub fn redis_seed(mut self, seed: u64) -> Self {
        self.redis_seed = Some(seed);
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(mut self) -> Result<RateLimitLayer, ConfigError> {
        let (policies, routes) = compile_policies(self.quota, std::mem::take(&mut self.routes))?;
        let trusted = self.check_identity()?;
        describe_metrics();
        let backend = self.backend()?;
        let hooks = Hooks {
            tier: self.tier,
            bypass: self.bypass,
        };
        let identity = Identity::new(self.source, trusted, self.forwarded, self.ipv6_prefix);
        let shared = Shared::new(
            identity,
            backend,
            policies,
            routes,
            hooks,
            self.headers_on_allowed,
        );
        Ok(RateLimitLayer {
            shared: Arc::new(shared),
        })
    }

    /// Checks how clients are identified and how many are tracked; the trusted proxies,
    /// parsed.
    fn check_identity(&self) -> Result<Vec<Cidr>, ConfigError> {
        let mut trusted = Vec::with_capacity(self.trusted_proxies.len());
        for proxy in &self.trusted_proxies {
            trusted.push(Cidr::parse(proxy).map_err(|r| ConfigError::new("trusted_proxies", r))?);
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(ConfigError::new(
                "ipv6_prefix",
                format!("must be between 1 and 128, got {}", self.ipv6_prefix),
            ));
        }
        if !(1..=MAX_KEYS_LIMIT).contains(&self.max_keys) {
            return Err(ConfigError::new(
                "max_keys",
                format!(
                    "must be between 1 and {MAX_KEYS_LIMIT}, got {}",
                    self.max_keys
                ),
            ));
        }
        Ok(trusted)
    }

    /// Where the buckets live: in process, or in Redis (the shared mode).
    fn backend(&mut self) -> Result<Backend, ConfigError> {
        #[cfg(feature = "redis")]
        match self.redis.take() {
            Some(link) => {
                ::metrics::describe_counter!(
                    names::RATE_LIMIT_SHARED_DECISIONS_TOTAL,
                    ::metrics::Unit::Count,
                    "Decisions of the rate limiter's shared mode, by who made them."
                );
                return Ok(Backend::Redis(super::shared::RedisStore::new(
                    link,
                    self.redis_seed,
                    self.redis_fallback,
                    self.max_keys,
                )));
            }
            None if self.redis_seed.is_some() => {
                return Err(ConfigError::new(
                    "redis_seed",
                    "only the shared mode (`redis`) uses a seed",
                ))
            }
            None => {}
        }
        Ok(Backend::Local(LocalStore::new(self.max_keys)))
    }
}

/// The policies of the default quota (first) and of the route quotas, and the route quotas by
/// route.
fn compile_policies(
    quota: Quota,
    routes: Vec<(Route, Quota)>,
) -> Result<(Vec<Arc<Policy>>, RoutePolicies), ConfigError> {
    let default = Policy::new(0, quota).map_err(|r| ConfigError::new("quota", r))?;
    let mut all = vec![Arc::new(default)];
    let mut table = RouteTable::default();
    for (route, quota) in routes {
        let index = u16::try_from(all.len()).unwrap_or(u16::MAX);
        if all.len() >= MAX_POLICIES {
            return Err(ConfigError::new(
                "route_quota",
                format!("at most {} route quotas", MAX_POLICIES - 1),
            ));
        }
        let policy = Policy::scoped(index, quota, Scope::Route(&route))
            .map_err(|r| ConfigError::new("route_quota", format!("route {route}: {r}")))?;
        let policy = Arc::new(policy);
        all.push(policy.clone());
        table.insert(route, policy);
    }
    Ok((all, table))
}

impl fmt::Debug for RateLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("quota", &self.quota)
            .field("routes", &self.routes)
            .field("tier", &self.tier.is_some())
            .field("bypass", &self.bypass.is_some())
            .field("source", &self.source)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forwarded", &self.forwarded)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("max_keys", &self.max_keys)
            .field("headers_on_allowed", &self.headers_on_allowed)
            .finish_non_exhaustive()
    }
}

fn describe_metrics() {
    use ::metrics::{describe_counter, Unit};
    describe_counter!(
        names::RATE_LIMIT_DECISIONS_TOTAL,
        Unit::Count,
        "Requests the rate limiter decided on, by decision."
    );
}

impl RateLimitLayer {
    /// A limiter with `quota` per client and the default configuration: clients identified by
    /// their peer address, forwarding headers ignored, at most 100 000 clients tracked,
    /// `RateLimit` headers on every response. Fails when the quota is invalid (a zero rate,
    /// period or burst, a policy name that is not a token).
    pub fn new(quota: Quota) -> Result<Self, ConfigError> {
        RateLimitBuilder::new(quota).build()
    }

    /// A builder, with `quota` as the default quota.
    pub fn builder(quota: Quota) -> RateLimitBuilder {
        RateLimitBuilder::new(quota)
    }
}
