//! Quotas as users write them, and policies as the limiter runs them.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;

use super::gcra::{ceil_secs, Decision, Gcra};
use crate::route::Route;
use crate::util::header::is_token;

/// A rate limit: `count` requests per `period`, with bursts of up to `burst` requests.
///
/// The limiter is a GCRA (a leaky bucket without a timer): a client at rest may send `burst`
/// requests at once; after that, one request every `period / count`. Over any window of length
/// `w` a client gets at most `burst + w × count / period` requests.
///
/// ```
/// use std::time::Duration;
/// use tower_perf::rate_limit::Quota;
///
/// // 100 requests per second, bursts of 200, advertised as the "api" policy.
/// let api = Quota::per_second(100).burst(200).named("api");
/// assert_eq!(api.count(), 100);
/// assert_eq!(api.period(), Duration::from_secs(1));
/// assert_eq!(api.burst_size(), 200);
///
/// // 10 exports per minute, one at a time.
/// let exports = Quota::per_minute(10).burst(1);
/// ```
///
/// A quota is checked when the layer is built: a zero count, period or burst is a
/// [`ConfigError`](crate::ConfigError).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period: Duration,
    // `None`: same as `count`, so that `per_second(n)` alone gives a burst of n.
    burst: Option<u32>,
    name: &'static str,
}

impl Quota {
    /// `count` requests per `period`; the burst is `count` unless set with
    /// [`burst`](Self::burst).
    pub const fn new(count: u32, period: Duration) -> Self {
        Self {
            count,
            period,
            burst: None,
            name: "default",
        }
    }

    /// `count` requests per second.
    pub const fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    pub const fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// The largest number of requests a client at rest may send at once. Default: `count`.
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The policy name sent in the `RateLimit-Policy` and `RateLimit` headers. An HTTP token
    /// (letters, digits, `-`, `_`, `.`, ...) of at most 64 characters. Default: `default`.
    pub const fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Requests per [`period`](Self::period).
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period of [`count`](Self::count).
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst: requests a client at rest may send at once.
    pub const fn burst_size(&self) -> u32 {
        match self.burst {
            Some(b) => b,
            None => self.count,
        }
    }

    /// The policy name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Checks the quota; the reason when it is unusable.
    pub(crate) fn validate(&self) -> Result<Gcra, String> {
        if self.count == 0 {
            return Err("the rate must be at least 1 request per period".into());
        }
        if self.period.is_zero() {
            return Err("the period must be greater than zero".into());
        }
        if self.burst_size() == 0 {
            return Err("the burst must be at least 1".into());
        }
        if !is_token(self.name) || self.name.len() > MAX_NAME_LEN {
            return Err(format!(
                "the policy name must be an HTTP token (letters, digits, -._~...) of at most \
                 {MAX_NAME_LEN} characters, got {:?}",
                self.name
            ));
        }
        Gcra::new(self.count, self.period, self.burst_size()).ok_or_else(|| {
            "the burst times period / rate must be under 100 years, and the period must fit \
             in u64 nanoseconds"
                .into()
        })
    }
}

/// The longest policy name: with two 20-digit numbers, a header value fits [`Buf`].
const MAX_NAME_LEN: usize = 64;

/// A compiled quota: its GCRA parameters, its state index and its header value.
#[derive(Debug)]
pub(crate) struct Policy {
    /// Distinguishes this policy's buckets from those of the others in the key store, so one
    /// client has one bucket per policy.
    pub(crate) index: u16,
    /// Names this policy's buckets in a shared store (Redis): made from the configuration
    /// only (the kind of quota, the route, the quota's values), so every instance with the same
    /// configuration computes the same id, whatever order it met tier quotas in.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) shared_id: u64,
    /// A quota the tier function returned: its budget is its own, even when a route or the
    /// default has the same values (as in the shared mode, whose ids differ by scope).
    tier: bool,
    pub(crate) quota: Quota,
    pub(crate) gcra: Gcra,
    /// `"name";q=<count>;w=<seconds>`, made once.
    pub(crate) policy_header: HeaderValue,
    /// `RateLimit` values with `t=1`, by `r`, made on first use. When a request costs at most
    /// one second (`period / count <= 1 s`), `t` is always 1 (see [`Decision::wait`]), so the
    /// header of nearly every response is a clone from here instead of a formatted
    /// allocation. Empty for slower quotas.
    limit_values: Box<[OnceLock<HeaderValue>]>,
}

/// The most `RateLimit` values cached per policy (for `r` up to 255).
const CACHED_LIMIT_VALUES: u32 = 256;

/// What a policy applies to, for its [`Policy::shared_id`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// The default quota.
    Default,
    /// The quota of one route, or of the routes under a prefix.
    Route(&'a Route),
    /// A quota the tier function returned.
    Tier,
}

impl Scope<'_> {
    /// A stable 64-bit id of this scope and `quota`: FNV-1a over their bytes, the same on
    /// every platform and run (made at build time, never per request).
    fn id(&self, quota: &Quota) -> u64 {
        let mut h = Fnv::new();
        match self {
            Scope::Default => h.write(&[0]),
            Scope::Route(route) => {
                // An exact route keeps the id it had before prefixes existed (the shared
                // budgets of a rolling deployment stay one); a prefix has its own tag.
                h.write(&[if route.is_prefix() { 3 } else { 1 }]);
                let route = route.as_str();
                h.write(&(route.len() as u64).to_le_bytes());
                h.write(route.as_bytes());
            }
            Scope::Tier => h.write(&[2]),
        }
        h.write(&quota.count.to_le_bytes());
        h.write(&quota.period.as_secs().to_le_bytes());
        h.write(&quota.period.subsec_nanos().to_le_bytes());
        h.write(&quota.burst_size().to_le_bytes());
        h.write(&(quota.name.len() as u64).to_le_bytes());
        h.write(quota.name.as_bytes());
        h.0
    }
}

/// FNV-1a, 64 bits: small and stable, for configuration-time ids.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl Policy {
    /// The default quota's policy, or one for tests.
    pub(crate) fn new(index: u16, quota: Quota) -> Result<Self, String> {
        Self::scoped(index, quota, Scope::Default)
    }

    pub(crate) fn scoped(index: u16, quota: Quota, scope: Scope<'_>) -> Result<Self, String> {
        let gcra = quota.validate()?;
        let cached = if gcra.interval() <= 1_000_000_000 {
            quota.burst_size().min(CACHED_LIMIT_VALUES)
        } else {
            0
        };
        Ok(Self {
            index,
            shared_id: scope.id(&quota),
            tier: matches!(scope, Scope::Tier),
            quota,
            gcra,
            policy_header: policy_header(&quota),
            limit_values: (0..cached).map(|_| OnceLock::new()).collect(),
        })
    }

    /// `RateLimit: "name";r=<remaining>;t=<seconds>` for a decision.
    pub(crate) fn rate_limit_header(&self, decision: &Decision) -> HeaderValue {
        let t = ceil_secs(decision.wait);
        if t == 1 {
            if let Some(slot) = usize::try_from(decision.remaining)
                .ok()
                .and_then(|r| self.limit_values.get(r))
            {
                return slot
                    .get_or_init(|| self.format_limit(decision.remaining, 1))
                    .clone();
            }
        }
        self.format_limit(decision.remaining, t)
    }

    fn format_limit(&self, remaining: u64, t: u64) -> HeaderValue {
        let mut buf = Buf::new();
        buf.push(b"\"");
        buf.push(self.quota.name.as_bytes());
        buf.push(b"\";r=");
        buf.push_u64(remaining);
        buf.push(b";t=");
        buf.push_u64(t);
        HeaderValue::from_bytes(buf.as_bytes()).expect("a token and digits make a header value")
    }
}

/// `RateLimit-Policy: "name";q=<quota>;w=<window>`: the quota over its period, with the window
/// in whole seconds as the draft requires. A period that is not a whole number of seconds is
/// rounded up and the quota scaled down to match (`10` per `500ms` is `q=20;w=1`), so the
/// advertised rate is never above the enforced one.
fn policy_header(quota: &Quota) -> HeaderValue {
    let period = quota.period.as_nanos().max(1);
    let window = period.div_ceil(1_000_000_000).max(1);
    let q = u128::from(quota.count) * window * 1_000_000_000 / period;
    let mut buf = Buf::new();
    buf.push(b"\"");
    buf.push(quota.name.as_bytes());
    buf.push(b"\";q=");
    buf.push_u64(u64::try_from(q).unwrap_or(u64::MAX));
    buf.push(b";w=");
    buf.push_u64(u64::try_from(window).unwrap_or(u64::MAX));
    HeaderValue::from_bytes(buf.as_bytes()).expect("a token and digits make a header value")
}

/// The most policies one layer holds: the default, the per-route ones, and those that the tier
/// function returned. Past this, a new tier quota falls back to the route or default quota.
pub(crate) const MAX_POLICIES: usize = 256;

/// Every policy of a layer, with room for the tier quotas found at run time.
#[derive(Debug)]
pub(crate) struct Policies {
    /// Lock-free reads; written (copy on write) only when a tier function returns a quota not
    /// seen before, which is rare and bounded by [`MAX_POLICIES`].
    all: ArcSwap<Vec<Arc<Policy>>>,
    // Serialises the writers, so two new quotas never race into one index.
    grow: Mutex<()>,
}

impl Policies {
    pub(crate) fn new(initial: Vec<Arc<Policy>>) -> Self {
        Self {
            all: ArcSwap::from_pointee(initial),
            grow: Mutex::new(()),
        }
    }

    /// Every policy now, in index order.
    pub(crate) fn all(&self) -> Arc<Vec<Arc<Policy>>> {
        self.all.load_full()
    }

    /// How many policies exist (the indices in use are `0..len`).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.all.load().len()
    }

    /// The policy for a tier quota: found by value among the tier quotas, or added. `Err` when
    /// the quota is invalid or the table is full.
    pub(crate) fn tier(&self, quota: &Quota) -> Result<Arc<Policy>, String> {
        let same = |p: &&Arc<Policy>| p.tier && p.quota == *quota;
        if let Some(p) = self.all.load().iter().find(same) {
            return Ok(p.clone());
        }
        let _guard = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.all.load_full();
        if let Some(p) = current.iter().find(same) {
            return Ok(p.clone());
        }
        if current.len() >= MAX_POLICIES {
            return Err(format!(
                "more than {MAX_POLICIES} distinct quotas; the tier quota {quota:?} is ignored"
            ));
        }
        let policy = Arc::new(Policy::scoped(current.len() as u16, *quota, Scope::Tier)?);
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(policy.clone());
        self.all.store(Arc::new(next));
        Ok(policy)
    }
}

/// A small stack buffer for header values: one allocation, the header value's own.
pub(crate) struct Buf {
    bytes: [u8; 128],
    len: usize,
}

impl Buf {
    pub(crate) fn new() -> Self {
        Self {
            bytes: [0; 128],
            len: 0,
        }
    }

    /// Appends `b`, truncating past the buffer (never reached: names are at most
    /// [`MAX_NAME_LEN`] bytes, numbers at most 20 digits; see the tests).
    pub(crate) fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    pub(crate) fn push_u64(&mut self, n: u64) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_DEFAULT_ID: u64 = 4_363_357_367_295_549_472;

    #[test]
    fn defaults_and_accessors() {
        let q = Quota::per_second(100);
        assert_eq!(q.burst_size(), 100);
        assert_eq!(q.name(), "default");
        assert_eq!(q.burst(200).burst_size(), 200);
        assert_eq!(q.burst(0).burst_size(), 0);
        assert_eq!(Quota::per_minute(5).period(), Duration::from_secs(60));
        assert_eq!(Quota::per_hour(5).period(), Duration::from_secs(3600));
    }

    #[test]
    fn validation() {
        assert!(Quota::per_second(1).validate().is_ok());
        assert!(Quota::per_second(0)
            .validate()
            .unwrap_err()
            .contains("rate"));
        assert!(Quota::per_second(1)
            .burst(0)
            .validate()
            .unwrap_err()
            .contains("burst"));
        assert!(Quota::new(1, Duration::ZERO)
            .validate()
            .unwrap_err()
            .contains("period"));
        assert!(Quota::per_second(1)
            .named("bad name")
            .validate()
            .unwrap_err()
            .contains("token"));
        assert!(Quota::per_second(1).named("").validate().is_err());
        let too_long = "a".repeat(MAX_NAME_LEN + 1).leak();
        assert!(Quota::per_second(1).named(too_long).validate().is_err());
        assert!(Quota::per_hour(1).burst(1_000_000).validate().is_err());
    }

    #[test]
    fn header_values() {
        let p = Policy::new(0, Quota::per_second(100).burst(200)).unwrap();
        assert_eq!(p.policy_header, "\"default\";q=100;w=1");
        let d = Decision {
            allowed: true,
            remaining: 42,
            wait: 10_000_000,
        };
        assert_eq!(p.rate_limit_header(&d), "\"default\";r=42;t=1");
        // Cached: the same value again, and distinct per `r`.
        assert_eq!(p.limit_values.len(), 200);
        assert_eq!(p.rate_limit_header(&d), "\"default\";r=42;t=1");
        let d2 = Decision { remaining: 43, ..d };
        assert_eq!(p.rate_limit_header(&d2), "\"default\";r=43;t=1");
        let d3 = Decision {
            wait: 1_500_000_000,
            ..d
        };
        assert_eq!(p.rate_limit_header(&d3), "\"default\";r=42;t=2");
        let p = Policy::new(1, Quota::per_minute(10).named("exports")).unwrap();
        assert_eq!(p.policy_header, "\"exports\";q=10;w=60");
        assert!(p.limit_values.is_empty());
        let p = Policy::new(2, Quota::new(10, Duration::from_millis(500))).unwrap();
        assert_eq!(p.policy_header, "\"default\";q=20;w=1");
        let p = Policy::new(3, Quota::new(1, Duration::from_millis(1500))).unwrap();
        assert_eq!(p.policy_header, "\"default\";q=1;w=2");
        // The longest value fits the buffer.
        let long = "a".repeat(MAX_NAME_LEN).leak();
        let p = Policy::new(4, Quota::new(u32::MAX, Duration::from_secs(1)).named(long)).unwrap();
        let d = Decision {
            allowed: false,
            remaining: u64::MAX,
            wait: u64::MAX,
        };
        let v = p.rate_limit_header(&d);
        assert!(v.to_str().unwrap().ends_with(";t=18446744074"), "{v:?}");
        let d = Decision {
            allowed: false,
            remaining: u64::MAX,
            wait: u64::MAX,
        };
        let v = p.rate_limit_header(&d);
        assert!(
            v.to_str().unwrap().contains(";r=18446744073709551615;"),
            "{v:?}"
        );
        assert!(p.policy_header.to_str().unwrap().ends_with(";w=1"));
    }

    #[test]
    fn shared_ids_depend_on_the_configuration_only() {
        let q = Quota::per_second(10).burst(20);
        let id = |scope| Policy::scoped(7, q, scope).unwrap().shared_id;
        // Not on the index (which depends on the order tier quotas were met in).
        assert_eq!(
            id(Scope::Tier),
            Policy::scoped(9, q, Scope::Tier).unwrap().shared_id
        );
        let (a, b, a_prefix) = (Route::exact("/a"), Route::exact("/b"), Route::prefix("/a"));
        let all = [
            id(Scope::Default),
            id(Scope::Tier),
            id(Scope::Route(&a)),
            id(Scope::Route(&b)),
            id(Scope::Route(&a_prefix)),
            Policy::new(0, q.burst(21)).unwrap().shared_id,
            Policy::new(0, q.named("other")).unwrap().shared_id,
            Policy::new(0, Quota::new(10, Duration::from_millis(1001)).burst(20))
                .unwrap()
                .shared_id,
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "{i} and {j}");
            }
        }
        // Pinned: a change here would split the shared budgets of a rolling deployment.
        assert_eq!(id(Scope::Default), Policy::new(0, q).unwrap().shared_id);
        assert_eq!(Policy::new(0, q).unwrap().shared_id, PINNED_DEFAULT_ID);
    }

    #[test]
    fn tiers_are_found_by_value_and_bounded() {
        let policies = Policies::new(vec![Arc::new(
            Policy::new(0, Quota::per_second(1)).unwrap(),
        )]);
        // The default's values, but a tier quota: a budget of its own.
        let a = policies.tier(&Quota::per_second(1)).unwrap();
        assert_eq!(a.index, 1);
        assert_eq!(policies.tier(&Quota::per_second(1)).unwrap().index, 1);
        let b = policies.tier(&Quota::per_second(5)).unwrap();
        assert_eq!(b.index, 2);
        assert_eq!(policies.tier(&Quota::per_second(5)).unwrap().index, 2);
        assert!(policies.tier(&Quota::per_second(0)).is_err());
        for i in 3..MAX_POLICIES {
            assert_eq!(
                policies
                    .tier(&Quota::per_second(i as u32 + 10))
                    .unwrap()
                    .index,
                i as u16
            );
        }
        assert!(policies.tier(&Quota::per_second(100_000)).is_err());
        assert_eq!(policies.len(), MAX_POLICIES);
    }
}
