//! The store seam: the tiers under the request path. The memory tier ([`Shared::store`]) is
//! always there; with the feature `redis` and [`redis`](super::ResponseCacheBuilder::redis),
//! the Redis tier shared by the fleet sits under it. Every `#[cfg(feature = "redis")]` of the
//! request path lives in this file: the request path asks [`Tiers`] and [`FleetStore`], and
//! without the feature they are a one-variant enum and an empty struct the compiler sees
//! through (no boxing, no dynamic dispatch on the hot path).

#[cfg(feature = "redis")]
use std::sync::Arc;

use http::header::HeaderName;
use http::request::Parts;

use super::key::Primary;
use super::purge::{Target, Validity};
#[cfg(feature = "redis")]
use super::redis_tier::{LeaseGuard, RedisKey, RedisTier};
use super::snapshot::CacheSnapshot;
use super::state::Shared;
use super::store::Entry;
use crate::timings::Timings;

/// The tiers of one cache, memory first.
pub(crate) enum Tiers {
    /// The memory tier alone.
    Memory,
    /// The memory tier over the Redis tier every instance of the application shares.
    #[cfg(feature = "redis")]
    MemoryAndRedis(Arc<RedisTier>),
}

/// What a lower tier found for a request the memory tier could not answer.
pub(crate) struct TierHit {
    pub(crate) entry: std::sync::Arc<Entry>,
    pub(crate) validity: Validity,
    /// Another instance's origin request gave it (the fleet-wide lease).
    pub(crate) collapsed: bool,
}

/// A lookup in the lower tiers.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct TierQuery<'a> {
    /// The memory tier's key of the URL.
    pub(crate) primary: Primary,
    /// The `Vary` names the memory tier knows for the URL.
    pub(crate) hint: Option<std::sync::Arc<[HeaderName]>>,
    /// This instance leads the key's flight and has nothing stored: the fleet-wide lease
    /// decides who asks the origin.
    pub(crate) cold: bool,
    pub(crate) timings: Option<&'a Timings>,
}

/// What the lower tiers found, and what a store will owe them.
#[derive(Default)]
pub(crate) struct TierLookup {
    pub(crate) hit: Option<TierHit>,
    /// `Cache-Status` `detail` when a tier failed (`redis-timeout`, ...).
    pub(crate) detail: Option<&'static str>,
}

impl Tiers {
    /// Starts the lower tiers' background tasks (purge channel, outbox) on first use.
    pub(crate) fn start(&self, _shared: &std::sync::Arc<Shared>) {
        match self {
            Tiers::Memory => {}
            #[cfg(feature = "redis")]
            Tiers::MemoryAndRedis(tier) => tier.ensure_started(_shared),
        }
    }

    /// The fleet generation to stamp on what an origin request starting now stores (0 without
    /// a fleet).
    pub(crate) fn fleet_generation(&self) -> u64 {
        match self {
            Tiers::Memory => 0,
            #[cfg(feature = "redis")]
            Tiers::MemoryAndRedis(tier) => tier.fleet_generation(),
        }
    }

    /// Records a purge in the lower tiers before returning, for a caller that stores a
    /// response right after it which the purge must not cover; `false` when a tier did not
    /// take it (within the Redis link's deadline).
    pub(crate) async fn purge_now(&self, _target: Target<'_>, _hard: bool) -> bool {
        match self {
            Tiers::Memory => true,
            #[cfg(feature = "redis")]
            Tiers::MemoryAndRedis(tier) => tier.purge_now(_target, _hard).await,
        }
    }

    /// Sends a purge, recorded locally under `_generation`, to the lower tiers and the fleet.
    pub(crate) fn publish_purge(&self, _target: Target<'_>, _hard: bool, _generation: u64) {
        match self {
            Tiers::Memory => {}
            #[cfg(feature = "redis")]
            Tiers::MemoryAndRedis(tier) => tier.publish_purge(_target, _hard, _generation),
        }
    }

    /// An entry's validity: `local` (this instance's purges) combined with the fleet's.
    pub(crate) fn check(&self, local: Validity, _entry: &Entry) -> Validity {
        match self {
            Tiers::Memory => local,
            #[cfg(feature = "redis")]
            Tiers::MemoryAndRedis(tier) => match (local, tier.check(_entry)) {
                (Validity::Gone, _) | (_, Validity::Gone) => Validity::Gone,
                (Validity::Stale, _) | (_, Validity::Stale) => Validity::Stale,
                _ => Validity::Valid,
            },
        }
    }

    /// Adds the lower tiers' counters to a snapshot.
    pub(crate) fn report(&self, _snapshot: &mut CacheSnapshot) {
        #[cfg(feature = "redis")]
        if let Tiers::MemoryAndRedis(tier) = self {
            _snapshot.redis = Some(tier.snapshot());
        }
    }

    /// Whether a lower tier may answer what memory could not.
    pub(crate) fn has_lower(&self) -> bool {
        !matches!(self, Tiers::Memory)
    }

    /// Looks a request the memory tier could not answer up in the lower tiers. A valid entry
    /// found fills the memory tier; `fleet` learns where a store goes.
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_async))]
    pub(crate) async fn lookup(
        &self,
        _shared: &std::sync::Arc<Shared>,
        _parts: &Parts,
        _query: TierQuery<'_>,
        _fleet: &mut FleetStore,
    ) -> TierLookup {
        match self {
            Tiers::Memory => TierLookup::default(),
            #[cfg(feature = "redis")]
            Tiers::MemoryAndRedis(tier) => {
                redis_lookup(tier, _shared, _parts, _query, _fleet).await
            }
        }
    }

    /// Counts what became of a lower tier's entry: served (fresh or stale), or not usable.
    pub(crate) fn count(&self, _served: Option<bool>) {
        #[cfg(feature = "redis")]
        if let Tiers::MemoryAndRedis(tier) = self {
            match _served {
                Some(stale) => tier.count_hit(stale),
                None => tier.count_miss(),
            }
        }
    }
}

/// The Redis tier's lookup: one round trip for the URL's `Vary` names and the guessed variant,
/// then on a cold key the fleet-wide lease.
#[cfg(feature = "redis")]
async fn redis_lookup(
    tier: &Arc<RedisTier>,
    shared: &Arc<Shared>,
    parts: &Parts,
    query: TierQuery<'_>,
    fleet: &mut FleetStore,
) -> TierLookup {
    use super::redis_tier::{Lease, RedisFound};

    let started = tokio::time::Instant::now();
    let key = tier.key(shared, parts);
    let mut out = TierLookup::default();
    match tier.lookup(shared, &key, parts, query.hint).await {
        RedisFound::Entry(entry, validity) => out.hit = Some(TierHit::new(entry, validity)),
        RedisFound::Miss => {
            if query.cold {
                match tier.lease(shared, &key, parts).await {
                    Lease::Leader(l) => fleet.lease = Some(l),
                    Lease::Found(entry) => {
                        let mut hit = TierHit::new(entry, Validity::Valid);
                        hit.collapsed = true;
                        out.hit = Some(hit);
                    }
                    Lease::Origin => {}
                }
            }
            if out.hit.is_none() {
                tier.count_miss();
            }
        }
        RedisFound::Error(e) => {
            tier.count_error();
            out.detail = Some(e.as_str());
        }
    }
    if let Some(t) = query.timings {
        t.record("redis", started.elapsed());
    }
    fleet.key = Some((key, 0));
    if let Some(hit) = out.hit.as_ref().filter(|h| h.validity == Validity::Valid) {
        let mem = super::store::EntryKey {
            primary: query.primary,
            variant: shared.keyer.entry_variant(&hit.entry),
        };
        shared.store.insert(mem, hit.entry.clone());
        shared.report_size_soon();
    }
    out
}

#[cfg(feature = "redis")]
impl TierHit {
    fn new(entry: Arc<Entry>, validity: Validity) -> Self {
        Self {
            entry,
            validity,
            collapsed: false,
        }
    }
}

/// What a store owes the lower tiers: with a Redis tier, where the entry goes in Redis and the
/// fleet-wide lease other instances wait on.
#[derive(Default)]
pub(crate) struct FleetStore {
    #[cfg(feature = "redis")]
    key: Option<(RedisKey, u64)>,
    #[cfg(feature = "redis")]
    lease: Option<LeaseGuard>,
}

impl FleetStore {
    /// Sets where the entry goes, now that its `Vary` is known.
    pub(crate) fn for_vary(&mut self, _shared: &Shared, _vary: &[HeaderName], _parts: &Parts) {
        #[cfg(feature = "redis")]
        if let Tiers::MemoryAndRedis(tier) = &_shared.tiers {
            let key = match self.key.take() {
                Some((k, _)) => k,
                None => tier.key(_shared, _parts),
            };
            self.key = Some((key, tier.variant(_shared, _vary, _parts)));
        }
    }

    /// The entry is stored in memory: copy it to the lower tiers (releasing the lease).
    pub(crate) fn stored(self, _shared: &Shared, _entry: &std::sync::Arc<Entry>) {
        #[cfg(feature = "redis")]
        if let (Tiers::MemoryAndRedis(tier), Some((key, variant))) = (&_shared.tiers, self.key) {
            let language = tier.language_variant(_shared, _entry);
            tier.store(key, variant, language, _entry.clone(), self.lease);
        }
    }
}
