use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::header::HeaderName;
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderValue};
use tokio::time::Instant;
use tower_layer::Layer;

use super::gcra::{ceil_secs, Decision};
use super::identity::{Cidr, Client, ClientKey, ForwardedHeader, Identity, Source};
use super::quota::{Policies, Policy, Quota, Scope};
use super::service::RateLimit;
use super::store::{Backend, LocalStore};
use crate::error::ConfigError;
use crate::metrics::{labels, names};

/// A function that picks the quota of a request (a plan, a role); `None` keeps the route or
/// default quota.
pub(crate) type TierFn = dyn Fn(&Parts) -> Option<Quota> + Send + Sync;
/// A function that exempts a request from the limit.
pub(crate) type BypassFn = dyn Fn(&Parts) -> bool + Send + Sync;

/// What the limiter decided, as counted in [`RateLimitStats`] and the
/// `tower_perf_rate_limit_decisions_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    Limited,
    Bypassed,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Limited => "limited",
            Verdict::Bypassed => "bypassed",
        }
    }
}

#[derive(Default)]
struct Counters {
    // One per verdict, in the order of `Verdict`.
    counts: [AtomicU64; 3],
    // Metric handles per verdict, made on first use so that a recorder installed after the
    // layer was built is still the one they report to.
    metrics: [OnceLock<::metrics::Counter>; 3],
}

impl Counters {
    fn count(&self, verdict: Verdict) {
        let i = verdict as usize;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.metrics[i]
            .get_or_init(|| {
                ::metrics::counter!(names::RATE_LIMIT_DECISIONS_TOTAL,
                    labels::DECISION => verdict.label())
            })
            .increment(1);
    }

    fn get(&self, verdict: Verdict) -> u64 {
        self.counts[verdict as usize].load(Ordering::Relaxed)
    }
}

/// State shared by every clone of the layer and its services.
pub(crate) struct Shared {
    pub(crate) identity: Identity,
    pub(crate) backend: Backend,
    // The default quota: index 0.
    pub(crate) default: Arc<Policy>,
    // Per-route quotas by route template (axum's `MatchedPath`).
    pub(crate) routes: HashMap<Box<str>, Arc<Policy>, foldhash::fast::RandomState>,
    // Every policy, including the tier quotas met at run time (for their state indices).
    pub(crate) policies: Policies,
    pub(crate) tier: Option<Arc<TierFn>>,
    pub(crate) bypass: Option<Arc<BypassFn>>,
    // Whether the request must be split into `Parts` for a user function.
    pub(crate) needs_parts: bool,
    pub(crate) headers_on_allowed: bool,
    // Time zero of the TATs.
    start: Instant,
    counters: Counters,
    // Warnings given once: no peer address found; a tier quota refused.
    warned_no_peer: AtomicBool,
    warned_tier: AtomicBool,
}

impl Shared {
    /// Nanoseconds since the layer was built, on tokio's clock (so a paused test clock drives
    /// the limiter).
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.start)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    pub(crate) fn count(&self, verdict: Verdict) {
        self.counters.count(verdict);
    }

    /// The route quota of a request, else the default one.
    fn route_policy(&self, ext: &Extensions) -> &Arc<Policy> {
        if !self.routes.is_empty() {
            if let Some(route) = crate::util::request::matched_path(ext) {
                if let Some(p) = self.routes.get(route) {
                    return p;
                }
            }
        }
        &self.default
    }

    /// A tier quota, compiled; `None` (with a warning, once) when it cannot be used.
    fn tier_policy(&self, quota: &Quota) -> Option<Arc<Policy>> {
        match self.policies.tier(quota) {
            Ok(p) => Some(p),
            Err(reason) => {
                if !self.warned_tier.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "tower_perf::rate_limit",
                        reason = %reason,
                        "tier quota refused; the route or default quota applies"
                    );
                }
                None
            }
        }
    }

    /// Decides a request, from its head. `parts` is the whole head when a user function needs
    /// it (then `headers` and `ext` are its fields). In process the outcome is final; in the
    /// shared mode it is [`Outcome::Pending`], a future of the final one.
    pub(crate) fn decide(
        self: &Arc<Self>,
        headers: &HeaderMap,
        ext: &Extensions,
        parts: Option<&Parts>,
    ) -> Outcome {
        if let (Some(bypass), Some(parts)) = (&self.bypass, parts) {
            if bypass(parts) {
                self.count(Verdict::Bypassed);
                return Outcome::Bypassed;
            }
        }
        // Held here so that a tier policy outlives the borrow below.
        let tier = match (&self.tier, parts) {
            (Some(f), Some(parts)) => f(parts).and_then(|q| self.tier_policy(&q)),
            _ => None,
        };
        let policy = match &tier {
            Some(p) => p,
            None => self.route_policy(ext),
        };
        let client = match (&self.identity.source, parts) {
            (Source::Fn(f), Some(parts)) => match f(parts) {
                Some(key) => Client::from(key),
                None => self.identity.client(headers, ext),
            },
            _ => self.identity.client(headers, ext),
        };
        if matches!(client, Client::Unknown) && !self.warned_no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "tower_perf::rate_limit",
                "no client identity and no peer address: such requests share one quota. \
                 Serve with `into_make_service_with_connect_info::<SocketAddr>()`, or insert \
                 the peer `SocketAddr` as a request extension"
            );
        }
        match &self.backend {
            Backend::Local(store) => {
                let key = self.identity.key(policy.index, &client);
                let decision = store.check(key, &policy.gcra, self.now());
                self.conclude(policy, &decision)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(store) => self.pending(store, policy, &client),
        }
    }

    /// The shared mode's [`Outcome::Pending`]: out of line, so that the in-process path of
    /// [`decide`](Self::decide) stays as small as it was.
    #[cfg(feature = "redis")]
    #[inline(never)]
    fn pending(
        self: &Arc<Self>,
        store: &super::shared::RedisStore,
        policy: &Arc<Policy>,
        client: &Client<'_>,
    ) -> Outcome {
        let key = self.shared_key(store, policy, client);
        let shared = self.clone();
        let policy = policy.clone();
        Outcome::Pending(Box::pin(
            async move { shared.decide_shared(key, &policy).await },
        ))
    }

    /// The outcome of a decision, counted. Always inlined: out of line, the outcome is built
    /// and then copied, which cost the in-process path about 30 instructions per request.
    #[inline(always)]
    fn conclude(&self, policy: &Policy, decision: &Decision) -> Outcome {
        if decision.allowed {
            self.count(Verdict::Allowed);
            Outcome::Allowed(
                self.headers_on_allowed
                    .then(|| Headers::new(policy, decision)),
            )
        } else {
            self.count(Verdict::Limited);
            tracing::debug!(
                target: "tower_perf::rate_limit",
                policy = policy.quota.name(),
                retry_after_secs = ceil_secs(decision.wait),
                "rate limited"
            );
            Outcome::Limited(Headers::new(policy, decision), ceil_secs(decision.wait))
        }
    }

    /// The bucket key of `client` under `policy` in the shared mode (and its local fallback).
    #[cfg(feature = "redis")]
    fn shared_key(
        &self,
        store: &super::shared::RedisStore,
        policy: &Policy,
        client: &Client<'_>,
    ) -> u64 {
        super::identity::shared_key(
            store.seed(),
            self.identity.ipv6_mask(),
            policy.shared_id,
            client,
        )
    }

    /// The shared mode's decision: Redis, or the fallback when Redis gives none.
    #[cfg(feature = "redis")]
    async fn decide_shared(&self, key: u64, policy: &Policy) -> Outcome {
        use super::shared::RedisFallback;
        let store = match &self.backend {
            Backend::Redis(store) => store,
            Backend::Local(store) => {
                let decision = store.check(key, &policy.gcra, self.now());
                return self.conclude(policy, &decision);
            }
        };
        if let Some(decision) = store.check(key, &policy.gcra).await {
            return self.conclude(policy, &decision);
        }
        store.count_fallback();
        match store.fallback {
            RedisFallback::Local => {
                let decision = store.local.check(key, &policy.gcra, self.now());
                self.conclude(policy, &decision)
            }
            RedisFallback::FailOpen => {
                self.count(Verdict::Allowed);
                Outcome::Allowed(None)
            }
            RedisFallback::FailClosed => {
                self.count(Verdict::Limited);
                Outcome::Unavailable
            }
        }
    }
}

/// What [`Shared::decide`] concluded.
pub(crate) enum Outcome {
    /// Exempt: straight to the inner service, no headers.
    Bypassed,
    /// To the inner service, with the headers to add to its response (if configured).
    Allowed(Option<Headers>),
    /// Answered `429`, with the headers and the seconds to wait.
    Limited(Headers, u64),
    /// Answered `503`: Redis could not decide and the fallback is to fail closed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Unavailable,
    /// Decided by Redis: the outcome comes later (never `Pending` again).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Pending(PendingOutcome),
}

/// The future of a shared-mode decision.
pub(crate) type PendingOutcome =
    std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'static>>;

/// The `RateLimit-Policy` and `RateLimit` values of one response.
#[derive(Debug)]
pub(crate) struct Headers {
    pub(crate) policy: HeaderValue,
    pub(crate) limit: HeaderValue,
}

impl Headers {
    fn new(policy: &Policy, decision: &Decision) -> Self {
        Self {
            policy: policy.policy_header.clone(),
            limit: policy.rate_limit_header(decision),
        }
    }
}

/// Configures a [`RateLimitLayer`]. Made by [`RateLimitLayer::builder`].
///
/// Every method takes `self` and returns it; [`build`](Self::build) checks the whole
/// configuration and fails with a [`ConfigError`] naming the first bad field.
#[must_use]
pub struct RateLimitBuilder {
    quota: Quota,
    routes: Vec<(String, Quota)>,
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

    /// A quota for one route (the route template, as in axum's `MatchedPath`; the layer must
    /// then run inside the router, `Router::layer` or `route_layer`). Each route quota is a
    /// budget of its own, apart from the default one.
    pub fn route_quota(mut self, route: impl Into<String>, quota: Quota) -> Self {
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
    ///     .tier(|req| (req.headers.get("x-plan")? == "pro").then_some(PRO))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn tier<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> Option<Quota> + Send + Sync + 'static,
    {
        self.tier = Some(Arc::new(f));
        self
    }

    /// Exempts requests for which `f` returns `true` (health checks, metrics, admin): they are
    /// neither limited nor counted against any quota, and get no rate-limit headers.
    pub fn bypass<F>(mut self, f: F) -> Self
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
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        let default = Policy::new(0, self.quota).map_err(|r| ConfigError::new("quota", r))?;
        let mut all = vec![Arc::new(default)];
        let mut routes = HashMap::with_hasher(foldhash::fast::RandomState::default());
        for (route, quota) in self.routes {
            let index = u16::try_from(all.len()).unwrap_or(u16::MAX);
            if all.len() >= super::quota::MAX_POLICIES {
                return Err(ConfigError::new(
                    "route_quota",
                    format!("at most {} route quotas", super::quota::MAX_POLICIES - 1),
                ));
            }
            let policy = Policy::scoped(index, quota, Scope::Route(&route))
                .map_err(|r| ConfigError::new("route_quota", format!("route {route:?}: {r}")))?;
            let policy = Arc::new(policy);
            all.push(policy.clone());
            routes.insert(route.into_boxed_str(), policy);
        }
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
        describe_metrics();
        let default = all[0].clone();
        #[cfg(feature = "redis")]
        let backend = match self.redis {
            Some(link) => Backend::Redis({
                ::metrics::describe_counter!(
                    names::RATE_LIMIT_SHARED_DECISIONS_TOTAL,
                    ::metrics::Unit::Count,
                    "Decisions of the rate limiter's shared mode, by who made them."
                );
                super::shared::RedisStore::new(
                    link,
                    self.redis_seed,
                    self.redis_fallback,
                    self.max_keys,
                )
            }),
            None if self.redis_seed.is_some() => {
                return Err(ConfigError::new(
                    "redis_seed",
                    "only the shared mode (`redis`) uses a seed",
                ))
            }
            None => Backend::Local(LocalStore::new(self.max_keys)),
        };
        #[cfg(not(feature = "redis"))]
        let backend = Backend::Local(LocalStore::new(self.max_keys));
        let needs_parts =
            self.tier.is_some() || self.bypass.is_some() || matches!(self.source, Source::Fn(_));
        let shared = Shared {
            identity: Identity::new(self.source, trusted, self.forwarded, self.ipv6_prefix),
            backend,
            default,
            routes,
            policies: Policies::new(all),
            tier: self.tier,
            bypass: self.bypass,
            needs_parts,
            headers_on_allowed: self.headers_on_allowed,
            start: Instant::now(),
            counters: Counters::default(),
            warned_no_peer: AtomicBool::new(false),
            warned_tier: AtomicBool::new(false),
        };
        Ok(RateLimitLayer {
            shared: Arc::new(shared),
        })
    }
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

/// Limits the request rate of each client. See the [module docs](super).
///
/// Clones share one state: one budget per client across all of them, which is what axum needs
/// (it clones the service for every connection).
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
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

    /// A handle to read the counts and manage the tracked clients while the layer serves.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("quota", &self.shared.default.quota)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}

/// Counts of a [`RateLimitLayer`], read through [`RateLimitHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateLimitStats {
    /// Requests let through.
    pub allowed: u64,
    /// Requests answered `429 Too Many Requests`.
    pub limited: u64,
    /// Requests the bypass function exempted.
    pub bypassed: u64,
    /// Client buckets held now (idle ones included until they are swept or evicted).
    pub tracked_keys: u64,
    /// The bound on `tracked_keys`.
    pub max_keys: u64,
    /// Buckets still in use that were evicted to make room for new clients; if this grows,
    /// `max_keys` is too small for the number of active clients.
    pub evicted: u64,
    /// Shared mode: decisions Redis made. Always 0 in process.
    pub redis_decisions: u64,
    /// Shared mode: decisions made without Redis, by the builder's `redis_fallback` (Redis
    /// slow, down, its link's breaker open, or a reply that was not a decision). Always 0 in
    /// process.
    pub fallback_decisions: u64,
    /// Shared mode: Redis calls that failed, timed out or returned something that is not a
    /// decision (calls skipped while the link's breaker is open are not counted here; the
    /// link's own `RedisLink::stats` has them). Always 0 in process.
    pub redis_errors: u64,
}

/// Reads the counts of a [`RateLimitLayer`] and manages its tracked clients. Cheap to clone,
/// `Send + Sync`.
#[derive(Clone)]
pub struct RateLimitHandle {
    shared: Arc<Shared>,
}

impl RateLimitHandle {
    /// The counts so far.
    pub fn stats(&self) -> RateLimitStats {
        let c = &self.shared.counters;
        let store = self.shared.backend.local();
        #[cfg(feature = "redis")]
        let (redis_decisions, fallback_decisions, redis_errors) = match &self.shared.backend {
            Backend::Redis(store) => store.counts(),
            Backend::Local(_) => (0, 0, 0),
        };
        #[cfg(not(feature = "redis"))]
        let (redis_decisions, fallback_decisions, redis_errors) = (0, 0, 0);
        RateLimitStats {
            allowed: c.get(Verdict::Allowed),
            limited: c.get(Verdict::Limited),
            bypassed: c.get(Verdict::Bypassed),
            tracked_keys: store.len() as u64,
            max_keys: store.capacity() as u64,
            evicted: store.evicted(),
            redis_decisions,
            fallback_decisions,
            redis_errors,
        }
    }

    /// Client buckets held now.
    pub fn tracked_keys(&self) -> usize {
        self.shared.backend.local().len()
    }

    /// Forgets a client under every quota, giving it a full budget again; whether it was
    /// tracked. The key must be made as the layer makes it: `ClientKey::ip` for clients known
    /// by address, `ClientKey::bytes` with the header value for [`key_header`](
    /// RateLimitBuilder::key_header). In the shared mode this forgets the client's local
    /// fallback buckets only; its buckets in Redis expire by themselves when full.
    pub fn reset(&self, key: ClientKey<'_>) -> bool {
        let client = Client::from(key);
        let shared = &*self.shared;
        let store = shared.backend.local();
        let mut found = false;
        for policy in shared.policies.all().iter() {
            let key = match &shared.backend {
                Backend::Local(_) => shared.identity.key(policy.index, &client),
                #[cfg(feature = "redis")]
                Backend::Redis(redis) => shared.shared_key(redis, policy, &client),
            };
            found |= store.remove(key);
        }
        found
    }

    /// Forgets every client.
    pub fn clear(&self) {
        self.shared.backend.local().clear();
    }

    /// Drops the buckets of idle clients (full buckets, which carry no information); returns
    /// how many. Not needed for correctness or to bound memory (a full table drops them
    /// itself), but keeps [`tracked_keys`](Self::tracked_keys) close to the active clients if
    /// called now and then.
    pub fn sweep(&self) -> usize {
        self.shared.backend.local().sweep(self.shared.now())
    }
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle").finish_non_exhaustive()
    }
}
