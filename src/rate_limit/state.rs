//! The state every clone of the layer shares, and the rate-limit decision made on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderValue, Uri};
use tokio::time::Instant;

use super::gcra::{ceil_secs, Decision};
use super::identity::{Client, ClientKey, Identity, Source};
use super::quota::{Policies, Policy, Quota};
use super::snapshot::RateLimitSnapshot;
use super::store::Backend;
use crate::metrics::{labels, names};
use crate::route::{route_of, RouteTable};

/// A function that picks the quota of a request (a plan, a role); `None` keeps the route or
/// default quota.
pub(crate) type TierFn = dyn Fn(&Parts) -> Option<Quota> + Send + Sync;
/// A function that exempts a request from the limit.
pub(crate) type BypassFn = dyn Fn(&Parts) -> bool + Send + Sync;

/// What the limiter decided, as counted in [`RateLimitSnapshot`] and the
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

/// The route quotas, by route.
pub(crate) type RoutePolicies = RouteTable<Arc<Policy>>;

/// The user functions of a limiter: a quota per request, and exemptions.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) tier: Option<Arc<TierFn>>,
    pub(crate) bypass: Option<Arc<BypassFn>>,
}

/// State shared by every clone of the layer and its services.
pub(crate) struct Shared {
    identity: Identity,
    pub(crate) backend: Backend,
    // The default quota: index 0.
    pub(crate) default: Arc<Policy>,
    // Per-route quotas, by the route of a request (`crate::route::route_of`).
    routes: RoutePolicies,
    // Every policy, including the tier quotas met at run time (for their state indices).
    policies: Policies,
    hooks: Hooks,
    // Whether the request must be split into `Parts` for a user function.
    pub(crate) needs_parts: bool,
    headers_on_allowed: bool,
    // Time zero of the TATs.
    start: Instant,
    counters: Counters,
    // Warnings given once: no peer address found; a tier quota refused.
    warned_no_peer: AtomicBool,
    warned_tier: AtomicBool,
}

impl Shared {
    /// The state of a new limiter. `policies` starts with the default quota's, then the
    /// route quotas' (each also in `routes`).
    pub(crate) fn new(
        identity: Identity,
        backend: Backend,
        policies: Vec<Arc<Policy>>,
        routes: RoutePolicies,
        hooks: Hooks,
        headers_on_allowed: bool,
    ) -> Self {
        let needs_parts = hooks.tier.is_some()
            || hooks.bypass.is_some()
            || matches!(identity.source, Source::Fn(_));
        Self {
            identity,
            backend,
            default: policies[0].clone(),
            routes,
            policies: Policies::new(policies),
            hooks,
            needs_parts,
            headers_on_allowed,
            start: Instant::now(),
            counters: Counters::default(),
            warned_no_peer: AtomicBool::new(false),
            warned_tier: AtomicBool::new(false),
        }
    }

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
    fn route_policy(&self, ext: &Extensions, uri: &Uri) -> &Arc<Policy> {
        if !self.routes.is_empty() {
            if let Some(p) = self.routes.get(route_of(ext, uri)) {
                return p;
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
    /// it (then `headers`, `ext` and `uri` are its fields). In process the outcome is final;
    /// in the shared mode it is [`Outcome::Pending`], a future of the final one.
    pub(crate) fn decide(
        self: &Arc<Self>,
        headers: &HeaderMap,
        ext: &Extensions,
        uri: &Uri,
        parts: Option<&Parts>,
    ) -> Outcome {
        if let (Some(bypass), Some(parts)) = (&self.hooks.bypass, parts) {
            if bypass(parts) {
                self.count(Verdict::Bypassed);
                return Outcome::Bypassed;
            }
        }
        // Held here so that a tier policy outlives the borrow below.
        let tier = match (&self.hooks.tier, parts) {
            (Some(f), Some(parts)) => f(parts).and_then(|q| self.tier_policy(&q)),
            _ => None,
        };
        let policy = match &tier {
            Some(p) => p,
            None => self.route_policy(ext, uri),
        };
        let client = self.client(headers, ext, parts);
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

    /// Who sent the request: the identify function's key, else the identity of the
    /// configuration (a header, the forwarded or peer address).
    #[inline]
    fn client<'a>(
        &self,
        headers: &'a HeaderMap,
        ext: &Extensions,
        parts: Option<&'a Parts>,
    ) -> Client<'a> {
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
        client
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

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> RateLimitSnapshot {
        let c = &self.counters;
        let store = self.backend.local();
        #[cfg(feature = "redis")]
        let (redis_decisions, fallback_decisions, redis_errors) = match &self.backend {
            Backend::Redis(store) => store.counts(),
            Backend::Local(_) => (0, 0, 0),
        };
        #[cfg(not(feature = "redis"))]
        let (redis_decisions, fallback_decisions, redis_errors) = (0, 0, 0);
        RateLimitSnapshot {
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

    /// Forgets a client under every quota (its local buckets); whether it was tracked.
    pub(crate) fn forget(&self, key: ClientKey<'_>) -> bool {
        let client = Client::from(key);
        let store = self.backend.local();
        let mut found = false;
        for policy in self.policies.all().iter() {
            let key = match &self.backend {
                Backend::Local(_) => self.identity.key(policy.index, &client),
                #[cfg(feature = "redis")]
                Backend::Redis(redis) => self.shared_key(redis, policy, &client),
            };
            found |= store.remove(key);
        }
        found
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
