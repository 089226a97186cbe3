//! What a stored response holds, and the memory tier that keeps entries within a byte budget.
//!
//! The tier is the seam for the Redis tier to come: it stores `Arc<Entry>` under an
//! [`EntryKey`] (URL and variant), and the service only calls `url`, `insert`, `remove` and the
//! purge helpers.

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
    /// The fleet's purge generation (Redis tier) known when its origin request started; 0
    /// without a Redis tier.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fleet_generation: u64,
    /// Fresh hits served from it, counted only when hot entries are recompressed.
    #[cfg_attr(
        not(any(feature = "compression-br", feature = "compression-zstd")),
        allow(dead_code)
    )]
    pub(crate) hits: std::sync::atomic::AtomicU32,
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
            // A floor: freshness is judged on tokio's clock, not by moka; an entry kept a little
            // longer only costs memory, which the byte budget bounds anyway.
            .max(Duration::from_secs(10))
    }

    /// Bytes it holds on the heap, as the allocator sees them, so that the byte budget bounds
    /// what the process really keeps: the body (stored at its exact size), the entry itself,
    /// the header map's slots (by capacity) and values, the URI, the `Vary` values and the
    /// tags, each allocation with the allocator's own header. The URL's record and moka's
    /// per-entry structures are counted by [`Url`].
    pub(crate) fn weight(&self) -> u32 {
        let h = &self.headers;
        let headers = h.keys_len() * HEADER_ENTRY
            + h.capacity() * INDEX_SLOT
            + (h.len() - h.keys_len()) * EXTRA_VALUE
            + 3 * ALLOCATION
            + self
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 2 * ALLOCATION)
                .sum::<usize>();
        let vary_values = self.vary_values.len() * 24
            + self
                .vary_values
                .iter()
                .flatten()
                .map(|v| v.len() + ALLOCATION)
                .sum::<usize>();
        let tags = self.tags.len() * 16
            + self
                .tags
                .iter()
                .map(|t| t.len() + 16 + ALLOCATION)
                .sum::<usize>();
        let uri = self.uri.path_and_query().map_or(0, |p| p.as_str().len()) + ALLOCATION;
        let total = std::mem::size_of::<Entry>()
            + 16
            + ALLOCATION
            // The body (in whole pages when large: `pages`), and the shared header a first
            // hit gives it.
            + super::pages::weight(self.body.len())
            + ALLOCATION
            + 32
            + ALLOCATION
            + headers
            + vary_values
            + tags
            + uri;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// What the allocator adds to each allocation (glibc: an 8-byte size field, sizes rounded up
/// to 16), on average.
const ALLOCATION: usize = 16;
/// One name of a `HeaderMap`: its entry (hash, name, value, links: 104 bytes with `http` 1.x).
/// A stored map's entries are exactly as many as its names ([`stored_headers`]).
const HEADER_ENTRY: usize = 104;
/// What a `HeaderMap`'s index costs per unit of its capacity (4-byte slots, 4/3 of the
/// capacity, rounded up to a power of two).
const INDEX_SLOT: usize = 6;
/// A second value of a name (`extra_values`: the value and its links).
const EXTRA_VALUE: usize = 48;

/// Names a stored header map has room for beyond its own: the fields the layers add to a hit
/// (`Age`, `Cache-Status`, `Server-Timing`, a rate limit's).
const HIT_ROOM: usize = 6;

/// `headers` as an entry keeps them: the values in a list of their exact length, the index
/// sized for [`HIT_ROOM`] more names. A hit clones the map, and a clone keeps the index's size
/// (not the list's spare room), so the fields the layers add to the hit do not rebuild the
/// index, and the stored list holds no spare room.
pub(crate) fn stored_headers(headers: &HeaderMap) -> HeaderMap {
    let mut roomy = HeaderMap::with_capacity(headers.keys_len() + HIT_ROOM);
    // `iter` yields every value of a name; `append` keeps them all.
    for (name, value) in headers {
        roomy.append(name.clone(), value.clone());
    }
    roomy.clone()
}
/// What moka keeps per entry besides the value: its `ValueEntry` and `EntryInfo` (timestamps,
/// weight, flags), the key's `Arc`, the nodes of the access, write and timer deques, the
/// concurrent hash table's bucket, the read and write buffers' share. Measured with
/// `examples/cache_memory.rs` (live heap per entry less what the entries hold).
const MOKA_ENTRY: u32 = 384;

/// Counts of what the memory tier evicted, by cause.
#[derive(Default)]
pub(crate) struct Evictions {
    pub(crate) expired: AtomicU64,
    pub(crate) size: AtomicU64,
    pub(crate) explicit: AtomicU64,
    pub(crate) replaced: AtomicU64,
}

/// The responses stored for one URL: its `Vary` names and one entry per variant.
pub(crate) struct Url {
    pub(crate) vary: Arc<[HeaderName]>,
    variants: Box<[(u64, Arc<Entry>)]>,
    weight: u32,
    ttl: Duration,
}

/// More variants than this per URL (a `Vary` on a header with many values) push the oldest out.
const MAX_VARIANTS: usize = 32;

impl Url {
    fn new(vary: Arc<[HeaderName]>, variants: Vec<(u64, Arc<Entry>)>) -> Self {
        // The `Url` in its `Arc`, its variants' slice, and moka's own structures.
        let fixed = std::mem::size_of::<Url>()
            + 16
            + variants.len() * std::mem::size_of::<(u64, Arc<Entry>)>()
            + 2 * ALLOCATION;
        let weight = variants
            .iter()
            .fold((fixed as u32).saturating_add(MOKA_ENTRY), |w, (_, e)| {
                w.saturating_add(e.weight())
            });
        let ttl = variants
            .iter()
            .map(|(_, e)| e.time_to_live())
            .max()
            .unwrap_or(Duration::ZERO);
        Self {
            vary,
            variants: variants.into_boxed_slice(),
            weight,
            ttl,
        }
    }

    /// Every stored variant with its key.
    pub(crate) fn variants(&self) -> impl Iterator<Item = (u64, &Arc<Entry>)> {
        self.variants.iter().map(|(v, e)| (*v, e))
    }

    pub(crate) fn variant(&self, variant: u64) -> Option<&Arc<Entry>> {
        self.variants
            .iter()
            .find(|(v, _)| *v == variant)
            .map(|(_, e)| e)
    }
}

/// The in-process tier: one moka entry per URL holding its variants, bounded by bytes, so a hit
/// is a single lookup.
pub(crate) struct MemoryStore {
    urls: moka::sync::Cache<Primary, Arc<Url>, foldhash::fast::RandomState>,
    pub(crate) evictions: Arc<Evictions>,
    max_bytes: u64,
    // Bytes inserted since moka last applied its pending writes (and evictions): when they
    // pass `max_bytes / SYNC_EVERY`, the insert applies them, so the cache never holds much
    // more than its budget while its write log waits (64 writes of 23 KB are 1.5 MiB, a tenth
    // of a 16 MiB budget).
    unsynced: AtomicU64,
}

/// Each URL lives as long as its longest-lived variant, but never longer than `max`: the purge
/// records last that long, and an entry must not outlive a purge that covered it.
struct UrlExpiry {
    max: Duration,
}

/// The share of the budget that may wait in moka's write log: 1/64.
const SYNC_EVERY: u64 = 64;

impl moka::Expiry<Primary, Arc<Url>> for UrlExpiry {
    fn expire_after_create(
        &self,
        _key: &Primary,
        value: &Arc<Url>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl.min(self.max))
    }

    fn expire_after_update(
        &self,
        _key: &Primary,
        value: &Arc<Url>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl.min(self.max))
    }
}

impl MemoryStore {
    /// A tier of `max_bytes` whose entries are dropped after `max_ttl` at the latest.
    pub(crate) fn new(max_bytes: u64, max_ttl: Duration) -> Self {
        let evictions = Arc::new(Evictions::default());
        let counts = evictions.clone();
        let urls = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &Primary, v: &Arc<Url>| v.weight)
            .expire_after(UrlExpiry { max: max_ttl })
            .support_invalidation_closures()
            .eviction_listener(move |_k, v: Arc<Url>, cause| {
                let (counter, label) = match cause {
                    RemovalCause::Expired => (&counts.expired, "expired"),
                    RemovalCause::Size => (&counts.size, "size"),
                    RemovalCause::Explicit => (&counts.explicit, "explicit"),
                    RemovalCause::Replaced => (&counts.replaced, "replaced"),
                };
                let n = v.variants.len() as u64;
                counter.fetch_add(n, Ordering::Relaxed);
                ::metrics::counter!(names::CACHE_EVICTIONS_TOTAL, labels::CAUSE => label)
                    .increment(n);
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            urls,
            evictions,
            max_bytes,
            unsynced: AtomicU64::new(0),
        }
    }

    /// The responses stored for a URL.
    pub(crate) fn url(&self, primary: Primary) -> Option<Arc<Url>> {
        self.urls.get(&primary)
    }

    /// Stores `entry` as the variant `key.variant` of its URL. A different `Vary` than the
    /// stored variants' replaces them (the origin changed what it varies on).
    pub(crate) fn insert(&self, key: EntryKey, entry: Arc<Entry>) {
        // Read, merge, write: two concurrent stores of different variants may lose one, which
        // costs a later miss, never a wrong answer.
        let mut variants = Vec::with_capacity(2);
        if let Some(url) = self.urls.get(&key.primary) {
            if *url.vary == *entry.vary {
                variants.extend(
                    url.variants
                        .iter()
                        .filter(|(v, _)| *v != key.variant)
                        .cloned(),
                );
            }
        }
        if variants.len() >= MAX_VARIANTS {
            variants.remove(0);
        }
        let vary = entry.vary.clone();
        variants.push((key.variant, entry));
        let url = Url::new(vary, variants);
        let weight = u64::from(url.weight);
        self.urls.insert(key.primary, Arc::new(url));
        let unsynced = self.unsynced.fetch_add(weight, Ordering::Relaxed) + weight;
        if unsynced >= self.max_bytes / SYNC_EVERY
            && self.unsynced.swap(0, Ordering::Relaxed) >= self.max_bytes / SYNC_EVERY
        {
            self.urls.run_pending_tasks();
        }
    }

    /// Removes one variant.
    pub(crate) fn remove(&self, key: &EntryKey) {
        let Some(url) = self.urls.get(&key.primary) else {
            return;
        };
        let rest: Vec<_> = url
            .variants
            .iter()
            .filter(|(v, _)| *v != key.variant)
            .cloned()
            .collect();
        if rest.is_empty() {
            self.urls.invalidate(&key.primary);
        } else if rest.len() < url.variants.len() {
            self.urls
                .insert(key.primary, Arc::new(Url::new(url.vary.clone(), rest)));
        }
    }

    /// Removes every URL one of whose entries satisfies `pred` (applied lazily by moka: such
    /// entries are never returned again, and their memory is reclaimed in the background).
    pub(crate) fn remove_if(&self, pred: impl Fn(&Entry) -> bool + Send + Sync + 'static) {
        // Only fails when invalidation closures are not enabled, which `new` does.
        let _ = self.urls.invalidate_entries_if(move |_k, url: &Arc<Url>| {
            url.variants.iter().any(|(_, e)| pred(e))
        });
    }

    pub(crate) fn clear(&self) {
        self.urls.invalidate_all();
    }

    /// Stored responses, every variant counted.
    pub(crate) fn entry_count(&self) -> u64 {
        let mut n = 0;
        for (_, url) in self.urls.iter() {
            n += url.variants.len() as u64;
        }
        n
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.urls.weighted_size()
    }

    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Runs moka's pending maintenance (evictions, expirations, invalidations) now.
    pub(crate) fn sync(&self) {
        self.urls.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use http::header;
    use http::HeaderValue;

    use super::*;

    #[test]
    fn stored_headers_keep_every_value_and_a_clone_keeps_the_room() {
        let mut origin = HeaderMap::new();
        origin.append(header::VARY, HeaderValue::from_static("a"));
        origin.append(header::VARY, HeaderValue::from_static("b"));
        origin.insert(header::ETAG, HeaderValue::from_static("\"x\""));
        let stored = stored_headers(&origin);
        assert_eq!(stored, origin);
        let hit = stored.clone();
        assert_eq!(hit, origin);
        assert!(hit.capacity() >= origin.keys_len() + HIT_ROOM);
    }
}
