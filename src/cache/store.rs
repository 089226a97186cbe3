//! What a stored response holds, and the memory tier that keeps entries within a byte budget.
//!
//! The tier is the seam for the Redis tier to come: it stores `Arc<Entry>` under an
//! [`EntryKey`], and the service only calls `get`, `insert`, `remove` and the vary-spec pair.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode, Uri};
use moka::notification::RemovalCause;
use tokio::time::Instant;

use super::directives::CacheControl;
use super::key::Primary;
use crate::metrics::{labels, names};

/// Where an entry lives: its URL's primary key and the variant its `Vary` headers select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EntryKey {
    pub(crate) primary: Primary,
    pub(crate) variant: u64,
}

/// A stored response.
pub(crate) struct Entry {
    /// The URI it was stored for; a hit compares it with the request's, so a key collision can
    /// never serve another URL's response. Also what purges by URI and prefix match.
    pub(crate) uri: Uri,
    pub(crate) status: StatusCode,
    /// Response headers as the client receives them, without hop-by-hop fields and without the
    /// tag header.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The response's `Vary` names and the request values they selected.
    pub(crate) vary: Arc<[HeaderName]>,
    pub(crate) vary_values: Box<[Option<Box<[u8]>>]>,
    pub(crate) cc: CacheControl,
    /// Age when stored (RFC 9111 4.2.3 `corrected_initial_age`).
    pub(crate) initial_age: Duration,
    /// When it was stored, on tokio's clock (so tests can pause time).
    pub(crate) stored_at: Instant,
    /// Freshness lifetime.
    pub(crate) lifetime: Duration,
    /// How long after going stale it may still be served while refreshing in the background.
    pub(crate) stale_while_revalidate: Duration,
    /// How long after going stale it may still be served when the origin fails.
    pub(crate) stale_if_error: Duration,
    pub(crate) tags: Box<[Arc<str>]>,
    /// The purge generation current when it was stored: purges after it may apply to it.
    pub(crate) generation: u64,
}

impl Entry {
    /// Current age (RFC 9111 4.2.3).
    pub(crate) fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    /// How long it may stay in memory: until no stale window can use it any more.
    pub(crate) fn time_to_live(&self) -> Duration {
        self.lifetime
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
            .saturating_sub(self.initial_age)
            .max(Duration::from_secs(1))
    }

    /// Bytes it costs: body, headers and a fixed overhead for the structures around them.
    pub(crate) fn weight(&self) -> u32 {
        const OVERHEAD: usize = 256;
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 16).sum();
        let uri = self.uri.path_and_query().map_or(0, |p| p.as_str().len());
        let total = self.body.len() + headers + tags + uri + OVERHEAD;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// Counts of what the memory tier evicted, by cause.
#[derive(Default)]
pub(crate) struct Evictions {
    pub(crate) expired: AtomicU64,
    pub(crate) size: AtomicU64,
    pub(crate) explicit: AtomicU64,
    pub(crate) replaced: AtomicU64,
}

/// The in-process tier: entries in moka, bounded by bytes.
pub(crate) struct MemoryStore {
    entries: moka::sync::Cache<EntryKey, Arc<Entry>, foldhash::fast::RandomState>,
    /// The `Vary` names last seen for each URL: which request headers select its variant.
    vary: moka::sync::Cache<Primary, Arc<[HeaderName]>, foldhash::fast::RandomState>,
    pub(crate) evictions: Arc<Evictions>,
    max_bytes: u64,
}

struct EntryExpiry;

impl moka::Expiry<EntryKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &EntryKey,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.time_to_live())
    }

    fn expire_after_update(
        &self,
        _key: &EntryKey,
        value: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.time_to_live())
    }
}

impl MemoryStore {
    pub(crate) fn new(max_bytes: u64, max_urls: u64) -> Self {
        let evictions = Arc::new(Evictions::default());
        let counts = evictions.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &EntryKey, v: &Arc<Entry>| v.weight())
            .expire_after(EntryExpiry)
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                let (counter, label) = match cause {
                    RemovalCause::Expired => (&counts.expired, "expired"),
                    RemovalCause::Size => (&counts.size, "size"),
                    RemovalCause::Explicit => (&counts.explicit, "explicit"),
                    RemovalCause::Replaced => (&counts.replaced, "replaced"),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(names::CACHE_EVICTIONS_TOTAL, labels::CAUSE => label)
                    .increment(1);
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        let vary = moka::sync::Cache::builder()
            .max_capacity(max_urls)
            .time_to_idle(Duration::from_secs(24 * 3600))
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            entries,
            vary,
            evictions,
            max_bytes,
        }
    }

    pub(crate) fn vary_of(&self, primary: Primary) -> Option<Arc<[HeaderName]>> {
        self.vary.get(&primary)
    }

    pub(crate) fn get(&self, key: &EntryKey) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    pub(crate) fn insert(&self, key: EntryKey, entry: Arc<Entry>) {
        match self.vary.get(&key.primary) {
            Some(v) if *v == *entry.vary => {}
            _ => self.vary.insert(key.primary, entry.vary.clone()),
        }
        self.entries.insert(key, entry);
    }

    pub(crate) fn remove(&self, key: &EntryKey) {
        self.entries.invalidate(key);
    }

    /// Removes every entry whose URI satisfies `pred` (applied lazily by moka: such entries are
    /// never returned again, and their memory is reclaimed in the background).
    pub(crate) fn remove_if(&self, pred: impl Fn(&Entry) -> bool + Send + Sync + 'static) {
        // Only fails when invalidation closures are not enabled, which `new` does.
        let _ = self
            .entries
            .invalidate_entries_if(move |_k, v: &Arc<Entry>| pred(v));
    }

    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
        self.vary.invalidate_all();
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Runs moka's pending maintenance (evictions, expirations, invalidations) now.
    pub(crate) fn sync(&self) {
        self.entries.run_pending_tasks();
        self.vary.run_pending_tasks();
    }
}
