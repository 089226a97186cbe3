//! The state every clone of the layer and its services share, and the decisions on it: the TTL
//! of a request, the purge stamps, the application of purges to the memory tier, the validity
//! of an entry against this instance's and the fleet's purges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::header::HeaderName;
use http::request::Parts;

use super::flight::Flights;
use super::key::{KeyFn, Keyer};
use super::policy::StorePolicy;
use super::purge::{Purges, Target, Validity};
use super::snapshot::{CacheOutcome, CacheSnapshot};
use super::status::Fwd;
use super::store::MemoryStore;
use super::tiers::Tiers;
use crate::metrics::{labels, names};
use crate::route::{route_of, RouteTable};

/// A function that gives the default TTL of a request's responses.
pub(crate) type TtlFn = dyn Fn(&Parts) -> Option<Duration> + Send + Sync;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) bypass: AtomicU64,
    pub(crate) uncacheable: AtomicU64,
    pub(crate) collapsed: AtomicU64,
    pub(crate) purges: AtomicU64,
    // Metric handles per result, made on first use.
    metrics: [OnceLock<::metrics::Counter>; 5],
    // Metric handles per purge target, made on first use.
    purge_metrics: [OnceLock<::metrics::Counter>; 4],
}

impl Counters {
    pub(crate) fn count(&self, outcome: CacheOutcome) {
        let (counter, idx, label) = match outcome {
            CacheOutcome::Hit => (&self.hits, 0, "hit"),
            CacheOutcome::Miss => (&self.misses, 1, "miss"),
            CacheOutcome::Stale => (&self.stale, 2, "stale"),
            CacheOutcome::Bypass => (&self.bypass, 3, "bypass"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.metric(idx, label).increment(1);
    }

    /// Counts a request that went to the origin: a miss when its response may be stored, else
    /// `uncacheable` (never a cache candidate, so out of the hit ratio).
    pub(crate) fn count_origin(&self, storable: bool) {
        if storable {
            self.count(CacheOutcome::Miss);
        } else {
            self.uncacheable.fetch_add(1, Ordering::Relaxed);
            self.metric(4, "uncacheable").increment(1);
        }
    }

    /// Counts a purge asked of this instance (or an invalidation).
    pub(crate) fn count_purge(&self, target: Target<'_>) {
        let (idx, label) = match target {
            Target::Tag(_) => (0, "tag"),
            Target::Uri(_) => (1, "uri"),
            Target::Prefix(_) => (2, "prefix"),
            Target::All => (3, "all"),
        };
        self.purges.fetch_add(1, Ordering::Relaxed);
        self.purge_metrics[idx]
            .get_or_init(
                || ::metrics::counter!(names::CACHE_PURGES_TOTAL, labels::PURGE_TARGET => label),
            )
            .increment(1);
    }

    fn metric(&self, idx: usize, label: &'static str) -> &::metrics::Counter {
        self.metrics[idx].get_or_init(|| {
            ::metrics::counter!(names::CACHE_REQUESTS_TOTAL,
                labels::CACHE_TIER => "memory", labels::CACHE_RESULT => label)
        })
    }
}

/// The purge generations current when an origin request starts, stamped on what it stores:
/// purges recorded later cover it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    /// This instance's generation (memory tier).
    pub(crate) local: u64,
    /// The fleet's generation as this instance knows it (Redis tier); 0 without one.
    pub(crate) fleet: u64,
}

/// An origin exchange: why the request went forward, the purge generations current when it
/// started, and when it was sent and answered (for the entry's age, RFC 9111 4.2.3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) fwd: Fwd,
    pub(crate) stamp: Stamp,
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
}

impl Exchange {
    /// An exchange starting now; `response_time` is set when the response arrives.
    pub(crate) fn start(shared: &Shared, fwd: Fwd) -> Self {
        let now = SystemTime::now();
        Self {
            fwd,
            stamp: shared.stamp(),
            request_time: now,
            response_time: now,
        }
    }
}

/// The default seed of the Redis tier's key hashes (any fixed value works; every instance must
/// use the same one).
/// State shared by every clone of the layer and its services.
pub(crate) struct Shared {
    pub(crate) store: MemoryStore,
    pub(crate) purges: Purges,
    pub(crate) flights: Arc<Flights>,
    pub(crate) refreshes: Arc<Flights>,
    pub(crate) keyer: Keyer,
    pub(crate) key_fn: Option<Arc<KeyFn>>,
    pub(crate) policy: StorePolicy,
    pub(crate) route_ttls: RouteTable<Duration>,
    pub(crate) ttl_fn: Option<Arc<TtlFn>>,
    pub(crate) grace: Duration,
    pub(crate) max_entry_bytes: usize,
    /// Bytes of large bodies in pages of their own (`pages`), when they are kept so.
    pub(crate) pages: Option<Arc<super::pages::PageBytes>>,
    pub(crate) tag_header: HeaderName,
    pub(crate) name: Box<str>,
    // The `Cache-Status` values, rendered once and reused.
    pub(crate) statuses: super::status::StatusValues,
    pub(crate) coalesce: bool,
    // Whether responses carry their `CacheOutcome` as an extension.
    pub(crate) outcome_extension: bool,
    pub(crate) coalesce_timeout: Duration,
    pub(crate) counters: Counters,
    /// Recompression of hot entries, when configured.
    #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
    pub(crate) recompress: Option<super::recompress::Recompress>,
    /// The tiers under the memory tier (`store`), when configured.
    pub(crate) tiers: Tiers,
    /// The memory tier's size gauges.
    pub(crate) size: SizeReport,
}

/// The memory tier's size gauges, and when they were last published.
pub(crate) struct SizeReport {
    size_gauge: OnceLock<::metrics::Gauge>,
    entries_gauge: OnceLock<::metrics::Gauge>,
    /// When the size gauges were last published after a store: ms since `created`, plus 1
    /// (0: never).
    reported: AtomicU64,
    created: std::time::Instant,
}

impl SizeReport {
    pub(crate) fn new() -> Self {
        Self {
            size_gauge: OnceLock::new(),
            entries_gauge: OnceLock::new(),
            reported: AtomicU64::new(0),
            created: std::time::Instant::now(),
        }
    }
}

/// Stores publish the size gauges at most this often: counting entries walks the whole store.
const SIZE_REPORT_EVERY_MS: u64 = 1000;

impl Shared {
    /// Puts `outcome` in the response's extensions, when the cache was built with
    /// [`outcome_extension`](super::ResponseCacheBuilder::outcome_extension).
    pub(crate) fn mark<B>(&self, res: &mut http::Response<B>, outcome: CacheOutcome) {
        if self.outcome_extension {
            res.extensions_mut().insert(outcome);
        }
    }

    /// The default TTL for a request's responses without explicit freshness.
    pub(crate) fn default_ttl(&self, parts: &Parts) -> Option<Duration> {
        if let Some(f) = &self.ttl_fn {
            if let Some(ttl) = f(parts) {
                return Some(ttl);
            }
        }
        if !self.route_ttls.is_empty() {
            if let Some(ttl) = self.route_ttls.get(route_of(&parts.extensions, &parts.uri)) {
                return Some(*ttl);
            }
        }
        self.policy.default_ttl
    }

    /// The generations to stamp on a response whose origin request starts now.
    pub(crate) fn stamp(&self) -> Stamp {
        Stamp {
            local: self.purges.current(),
            fleet: self.tiers.fleet_generation(),
        }
    }

    /// Purges `target` here and, with a Redis tier, in Redis and on every other instance.
    pub(crate) fn purge(&self, target: Target<'_>, hard: bool) {
        self.counters.count_purge(target);
        let generation = self.purge_memory(target, hard);
        self.tiers.publish_purge(target, hard, generation);
    }

    /// Purges `target` everywhere before a response for it is stored (a `POST`'s, RFC 9110
    /// 9.3.3), so that the purge does not cover it: in memory, and in Redis before returning
    /// rather than through the outbox. `false` when Redis did not take it in time: the purge
    /// then goes the usual way and would cover what is stored after it.
    pub(crate) async fn purge_before_store(&self, target: Target<'_>, hard: bool) -> bool {
        let generation = self.purge_memory(target, hard);
        if self.tiers.purge_now(target, hard).await {
            return true;
        }
        self.tiers.publish_purge(target, hard, generation);
        false
    }

    /// Purges `target` from the memory tier only: records the purge (checked on read) and,
    /// when hard, drops the entries now.
    pub(crate) fn purge_memory(&self, target: Target<'_>, hard: bool) -> u64 {
        let generation = self.purges.purge(target, hard);
        if hard {
            self.drop_matching(target);
        }
        generation
    }

    /// Drops the memory tier's entries that `target` covers (lazily, through moka).
    pub(crate) fn drop_matching(&self, target: Target<'_>) {
        match target {
            Target::Tag(tag) => {
                let tag: Arc<str> = tag.into();
                self.store.remove_if(move |e| e.tags.contains(&tag));
            }
            Target::Uri(pq) => {
                let target: Box<str> = pq.into();
                self.store.remove_if(move |e| {
                    e.uri
                        .path_and_query()
                        .is_some_and(|p| p.as_str() == &*target)
                });
            }
            Target::Prefix(prefix) => {
                let prefix: Box<str> = prefix.into();
                self.store
                    .remove_if(move |e| e.uri.path().starts_with(&*prefix));
            }
            Target::All => self.store.clear(),
        }
    }

    /// Whether a stored entry survived the purges, this instance's and the fleet's.
    pub(crate) fn validity(&self, entry: &super::store::Entry) -> Validity {
        self.tiers.check(self.purges.check(entry), entry)
    }

    /// Publishes the size gauges after a store, at most once a second.
    pub(crate) fn report_size_soon(&self) {
        let size = &self.size;
        let now = u64::try_from(size.created.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = size.reported.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < SIZE_REPORT_EVERY_MS {
            return;
        }
        if size
            .reported
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.report_size();
        }
    }

    /// Publishes the memory tier's size gauges.
    pub(crate) fn report_size(&self) {
        self.size
            .size_gauge
            .get_or_init(
                || ::metrics::gauge!(names::CACHE_SIZE_BYTES, labels::CACHE_TIER => "memory"),
            )
            .set(self.store.weighted_size() as f64);
        self.size
            .entries_gauge
            .get_or_init(|| ::metrics::gauge!(names::CACHE_ENTRIES, labels::CACHE_TIER => "memory"))
            .set(self.store.entry_count() as f64);
    }

    /// Counters and sizes, for [`CacheHandle::snapshot`](super::CacheHandle::snapshot).
    pub(crate) fn snapshot(&self) -> CacheSnapshot {
        let s = self;
        s.store.sync();
        s.report_size();
        let c = &s.counters;
        let hits = c.hits.load(Ordering::Relaxed);
        let misses = c.misses.load(Ordering::Relaxed);
        let stale = c.stale.load(Ordering::Relaxed);
        let served = hits + stale;
        let ev = &s.store.evictions;
        let mut snapshot = CacheSnapshot {
            hits,
            misses,
            stale,
            bypass: c.bypass.load(Ordering::Relaxed),
            uncacheable: c.uncacheable.load(Ordering::Relaxed),
            purges: c.purges.load(Ordering::Relaxed),
            collapsed: c.collapsed.load(Ordering::Relaxed),
            entries: s.store.entry_count(),
            bytes: s.store.weighted_size(),
            max_bytes: s.store.max_bytes(),
            bytes_in_pages: s.pages.as_ref().map_or(0, |p| p.get()),
            hit_ratio: if served + misses == 0 {
                0.0
            } else {
                served as f64 / (served + misses) as f64
            },
            evicted_expired: ev.expired.load(Ordering::Relaxed),
            evicted_size: ev.size.load(Ordering::Relaxed),
            evicted_explicit: ev.explicit.load(Ordering::Relaxed),
            evicted_replaced: ev.replaced.load(Ordering::Relaxed),
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompressed: s
                .recompress
                .as_ref()
                .map_or(0, |r| r.done.load(Ordering::Relaxed)),
            #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
            recompress_saved_bytes: s
                .recompress
                .as_ref()
                .map_or(0, |r| r.saved_bytes.load(Ordering::Relaxed)),
            #[cfg(not(any(feature = "compression-br", feature = "compression-zstd")))]
            recompressed: 0,
            #[cfg(not(any(feature = "compression-br", feature = "compression-zstd")))]
            recompress_saved_bytes: 0,
            ..CacheSnapshot::default()
        };
        s.tiers.report(&mut snapshot);
        snapshot
    }
}
