//! Purges as generation records checked on read, so a purge costs one record whatever the number
//! of entries it covers, and there is no tag index to keep consistent with evictions.
//!
//! Every purge takes the next generation number. An entry remembers the generation current when
//! its origin request *started*, so a response the origin computed before a purge can never
//! survive it, even when it is stored just after. On a hit, an entry newer than the latest purge
//! skips every check (the common case: one atomic load).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::store::Entry;

/// Whether a stored entry survived the purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    Valid,
    /// Soft-purged: serve only as stale (revalidate, or stale-while-revalidate).
    Stale,
    /// Hard-purged: never serve.
    Gone,
}

/// Latest soft and hard purge generations of one tag, URI or prefix.
#[derive(Debug, Clone, Copy, Default)]
struct Record {
    soft: u64,
    hard: u64,
}

impl Record {
    /// A purge that took generation `g` covers every entry stamped with `g` or earlier: the
    /// counter still read `g` when they were stamped, so their origin request began before it.
    fn validity(self, generation: u64) -> Validity {
        if self.hard >= generation {
            Validity::Gone
        } else if self.soft >= generation {
            Validity::Stale
        } else {
            Validity::Valid
        }
    }

    /// Records a purge; purges may arrive out of order (from other instances), so a record
    /// only ever moves forward.
    fn with(mut self, generation: u64, hard: bool) -> Self {
        if hard {
            self.hard = self.hard.max(generation);
        } else {
            self.soft = self.soft.max(generation);
        }
        self
    }
}

const MAX_PREFIXES: usize = 1024;

/// When a record is dropped to keep the set bounded, entries it could have covered are treated
/// as purged (soft) from then on: the floor rises to the record's generation.
fn floor_listener<K>(
    floor: Arc<AtomicU64>,
) -> impl Fn(Arc<K>, Record, moka::notification::RemovalCause) + Send + Sync + 'static
where
    K: ?Sized + 'static,
{
    move |_k, r, cause| {
        if cause == moka::notification::RemovalCause::Size {
            floor.fetch_max(r.soft.max(r.hard), Ordering::AcqRel);
        }
    }
}

/// What a purge covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Tag(&'a str),
    /// Path and query.
    Uri(&'a str),
    /// Path prefix.
    Prefix(&'a str),
    All,
}

pub(crate) struct Purges {
    generation: AtomicU64,
    /// Generation of the most recent purge (0: none yet; generations start at 1).
    latest: AtomicU64,
    /// Entries older than this are treated as soft-purged: records that could have applied to
    /// them were dropped to keep the record sets bounded.
    floor: Arc<AtomicU64>,
    /// Entries this old or older are gone (a hard purge of everything).
    hard_floor: AtomicU64,
    tags: moka::sync::Cache<Arc<str>, Record>,
    uris: moka::sync::Cache<Box<str>, Record>,
    prefixes: RwLock<VecDeque<(Box<str>, Record, tokio::time::Instant)>>,
    record_ttl: Duration,
}

impl Purges {
    /// `record_ttl`: the longest an entry can live; a record older than that covers nothing.
    pub(crate) fn new(record_ttl: Duration, max_records: u64) -> Self {
        let floor = Arc::new(AtomicU64::new(0));
        let tag_floor = floor_listener::<Arc<str>>(floor.clone());
        let uri_floor = floor_listener::<Box<str>>(floor.clone());
        Self {
            generation: AtomicU64::new(1),
            latest: AtomicU64::new(0),
            tags: moka::sync::Cache::builder()
                .max_capacity(max_records)
                .time_to_live(record_ttl)
                .eviction_listener(tag_floor)
                .build(),
            uris: moka::sync::Cache::builder()
                .max_capacity(max_records)
                .time_to_live(record_ttl)
                .eviction_listener(uri_floor)
                .build(),
            floor,
            hard_floor: AtomicU64::new(0),
            prefixes: RwLock::new(VecDeque::new()),
            record_ttl,
        }
    }

    /// The generation to stamp on an entry whose origin request starts now.
    pub(crate) fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn next(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel)
    }

    /// Records a purge of `target` under the next generation, and returns that generation.
    pub(crate) fn purge(&self, target: Target<'_>, hard: bool) -> u64 {
        let g = self.next();
        self.apply(target, g, hard);
        g
    }

    /// Records a purge of `target` that took generation `g`: it covers every entry stamped
    /// with `g` or earlier. The local purges take their generations from [`purge`](Self::purge);
    /// the mirror of the fleet's purges takes them from Redis.
    pub(crate) fn apply(&self, target: Target<'_>, g: u64, hard: bool) {
        match target {
            Target::Tag(tag) => {
                let key: Arc<str> = tag.into();
                let rec = self.tags.get(&key).unwrap_or_default().with(g, hard);
                self.tags.insert(key, rec);
            }
            Target::Uri(pq) => {
                let rec = self.uris.get(pq).unwrap_or_default().with(g, hard);
                self.uris.insert(pq.into(), rec);
            }
            Target::Prefix(prefix) => self.apply_prefix(prefix, g, hard),
            Target::All => {
                let floor = if hard { &self.hard_floor } else { &*self.floor };
                floor.fetch_max(g, Ordering::AcqRel);
            }
        }
        self.latest.fetch_max(g, Ordering::AcqRel);
    }

    fn apply_prefix(&self, prefix: &str, g: u64, hard: bool) {
        let now = tokio::time::Instant::now();
        let mut prefixes = self.prefixes.write().unwrap_or_else(|e| e.into_inner());
        prefixes.retain(|(_, _, at)| now.saturating_duration_since(*at) < self.record_ttl);
        if let Some((_, rec, at)) = prefixes.iter_mut().find(|(p, _, _)| &**p == prefix) {
            *rec = rec.with(g, hard);
            *at = now;
        } else {
            if prefixes.len() >= MAX_PREFIXES {
                if let Some((_, old, _)) = prefixes.pop_front() {
                    self.floor
                        .fetch_max(old.soft.max(old.hard), Ordering::AcqRel);
                }
            }
            prefixes.push_back((prefix.into(), Record::default().with(g, hard), now));
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Raises the floors: entries stamped `soft` or earlier are stale, `hard` or earlier gone.
    pub(crate) fn raise_floors(&self, soft: u64, hard: u64) {
        self.floor.fetch_max(soft, Ordering::AcqRel);
        self.hard_floor.fetch_max(hard, Ordering::AcqRel);
        self.latest.fetch_max(soft.max(hard), Ordering::AcqRel);
    }

    pub(crate) fn check(&self, entry: &Entry) -> Validity {
        self.check_stamp(entry, entry.generation)
    }

    /// [`check`](Self::check) for an entry stamped `generation` in this record set's numbering.
    pub(crate) fn check_stamp(&self, entry: &Entry, generation: u64) -> Validity {
        if generation > self.latest.load(Ordering::Acquire) {
            return Validity::Valid;
        }
        if generation <= self.hard_floor.load(Ordering::Acquire) {
            return Validity::Gone;
        }
        let mut worst = if generation <= self.floor.load(Ordering::Acquire) {
            Validity::Stale
        } else {
            Validity::Valid
        };
        let mut see = |v: Validity| {
            if v == Validity::Gone || (v == Validity::Stale && worst == Validity::Valid) {
                worst = v;
            }
        };
        for tag in entry.tags.iter() {
            if let Some(r) = self.tags.get(tag) {
                see(r.validity(generation));
            }
        }
        if let Some(pq) = entry.uri.path_and_query() {
            if let Some(r) = self.uris.get(pq.as_str()) {
                see(r.validity(generation));
            }
        }
        let path = entry.uri.path();
        let prefixes = self.prefixes.read().unwrap_or_else(|e| e.into_inner());
        for (prefix, r, _) in prefixes.iter() {
            if path.starts_with(&**prefix) {
                see(r.validity(generation));
            }
        }
        worst
    }
}
