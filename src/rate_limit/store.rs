//! Where the buckets live: the backend seam, and the in-process store.
//!
//! # The backend seam
//!
//! [`Backend`] is where the service asks for a decision. [`Backend::Local`] holds a
//! [`LocalStore`], which answers synchronously from `call`: the in-process path has no future
//! of its own. With the `redis` feature, [`Backend::Redis`] holds a
//! [`RedisStore`](super::shared::RedisStore): the decision is one asynchronous Redis round
//! trip, which the service's response future waits for before calling the inner service, with
//! a local store for the fallback when Redis is slow or down. The GCRA arithmetic is the same
//! ([`Gcra::step`]; a Lua script runs it on the Redis side); only the keys differ: seeded at
//! random per layer in process, from the configuration in the shared mode so that every
//! instance computes the same key.
//!
//! # The local store
//!
//! Keys are spread over a power-of-two number of shards, each a `RwLock<HashMap<key, TAT>>`.
//! A request for a known key takes its shard's read lock and updates the TAT with a CAS, so
//! requests never wait for each other, even on one key; only a new key takes the write lock.
//!
//! The number of keys is bounded: each shard holds at most `max_keys / shards`. When a shard is
//! full, a new key first drops the shard's idle keys (TAT in the past: a full bucket, no
//! information lost); if that does not free an eighth of the shard, it evicts the keys closest
//! to idle (smallest TAT), which hold the most unused quota, so forgetting them gives away the
//! least. Freeing an eighth at a time keeps the cost of a full shard at O(1) per new key,
//! amortised.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::gcra::{Decision, Gcra};

/// Where decisions are made. See the [module docs](self).
#[derive(Debug)]
pub(crate) enum Backend {
    /// In process: one state per layer, shared by its clones.
    Local(LocalStore),
    /// Shared through Redis, with a local store for the fallback.
    #[cfg(feature = "redis")]
    Redis(super::shared::RedisStore),
}

impl Backend {
    /// The in-process store: the only one, or the fallback of the shared mode.
    pub(crate) fn local(&self) -> &LocalStore {
        match self {
            Backend::Local(store) => store,
            #[cfg(feature = "redis")]
            Backend::Redis(store) => &store.local,
        }
    }
}

/// The most shards: beyond, more shards stop reducing contention on a real machine.
const MAX_SHARDS: usize = 64;
/// The fewest keys a shard should hold, so that the per-shard bound stays meaningful.
const MIN_KEYS_PER_SHARD: usize = 16;

/// Keys are already seeded 64-bit hashes: the map uses them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, AtomicU64, BuildHasherDefault<KeyHasher>>;

/// One shard, on its own cache lines so that two shards' locks never share one.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard {
    map: RwLock<Map>,
}

/// The in-process bucket store: sharded, bounded, with idle eviction.
#[derive(Debug)]
pub(crate) struct LocalStore {
    shards: Box<[Shard]>,
    // `shards.len() - 1`: the shard of a key is `(key >> 40) & mask`, bits that neither the
    // map's bucket index (low bits) nor its tag (top 7 bits) use.
    mask: usize,
    per_shard: usize,
    // Keys that were still active when evicted to make room: a sign `max_keys` is too small.
    evicted: AtomicU64,
}

impl LocalStore {
    /// A store of at most `max_keys` keys (at least 1).
    pub(crate) fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let by_size = (max_keys / MIN_KEYS_PER_SHARD).max(1);
        let shards = MAX_SHARDS.min(1 << (usize::BITS - 1 - by_size.leading_zeros()));
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            mask: shards - 1,
            per_shard: max_keys / shards,
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: u64) -> &Shard {
        &self.shards[(key >> 40) as usize & self.mask]
    }

    /// The decision for one request of `key` at `now`, creating the key if needed.
    pub(crate) fn check(&self, key: u64, gcra: &Gcra, now: u64) -> Decision {
        let shard = self.shard(key);
        {
            let map = read(shard);
            if let Some(tat) = map.get(&key) {
                return gcra.check(tat, now);
            }
        }
        let mut map = write(shard);
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            self.make_room(&mut map, now);
        }
        let tat = map.entry(key).or_insert_with(|| AtomicU64::new(0));
        gcra.check(tat, now)
    }

    /// Frees at least an eighth of a full shard: idle keys first, then those closest to idle.
    #[cold]
    fn make_room(&self, map: &mut Map, now: u64) {
        map.retain(|_, tat| *tat.get_mut() > now);
        let target = self.per_shard - (self.per_shard / 8).max(1);
        if map.len() <= target {
            return;
        }
        let excess = map.len() - target;
        let mut tats: Vec<u64> = map.values_mut().map(|t| *t.get_mut()).collect();
        let (_, cutoff, _) = tats.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let mut left = excess;
        map.retain(|_, tat| {
            if left > 0 && *tat.get_mut() <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
        self.evicted
            .fetch_add((excess - left) as u64, Ordering::Relaxed);
    }

    /// Keys held now (idle ones included until they are swept or evicted).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// The bound on [`len`](Self::len).
    pub(crate) fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Active keys evicted to make room so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Drops the keys that are idle at `now`; returns how many.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut map = write(s);
                let before = map.len();
                map.retain(|_, tat| *tat.get_mut() > now);
                before - map.len()
            })
            .sum()
    }

    /// Forgets `key`; whether it was there.
    pub(crate) fn remove(&self, key: u64) -> bool {
        write(self.shard(key)).remove(&key).is_some()
    }

    /// Forgets every key.
    pub(crate) fn clear(&self) {
        for s in self.shards.iter() {
            write(s).clear();
        }
    }
}

// A panic while a lock is held cannot leave a map half-updated in a way that matters here (an
// entry is inserted whole, a TAT is one atomic), so a poisoned lock is used as it is.
fn read(shard: &Shard) -> RwLockReadGuard<'_, Map> {
    shard.map.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, Map> {
    shard.map.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn sizing() {
        let s = LocalStore::new(100);
        assert_eq!(s.shards.len(), 4);
        assert_eq!(s.capacity(), 100);
        let s = LocalStore::new(100_000);
        assert_eq!(s.shards.len(), 64);
        assert!(s.capacity() <= 100_000 && s.capacity() > 99_000);
        let s = LocalStore::new(1);
        assert_eq!((s.shards.len(), s.capacity()), (1, 1));
        let s = LocalStore::new(0);
        assert_eq!(s.capacity(), 1);
    }

    #[test]
    fn bounded_idle_first() {
        let g = Gcra::new(1, Duration::from_secs(10), 2).unwrap();
        let s = LocalStore::new(16);
        // 16 keys, made idle by time.
        for k in 0..16u64 {
            s.check(k << 40, &g, 0);
        }
        assert_eq!(s.len(), 16);
        // Much later, a new key: the idle ones go, nothing active is evicted.
        s.check(99, &g, 100 * SEC);
        assert_eq!(s.len(), 1);
        assert_eq!(s.evicted(), 0);
    }

    #[test]
    fn bounded_under_active_keys() {
        let g = Gcra::new(1, Duration::from_secs(3600), 5).unwrap();
        let s = LocalStore::new(100);
        for k in 0..10_000u64 {
            let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert!(s.check(key, &g, k).allowed);
            assert!(s.len() <= 100);
        }
        assert!(s.evicted() > 9_000);
        // A heavy key survives a flood of light ones: it is the farthest from idle.
        let s = LocalStore::new(16);
        let heavy = 7u64;
        for _ in 0..5 {
            s.check(heavy, &g, 0);
        }
        assert!(!s.check(heavy, &g, 0).allowed);
        for k in 1..1000u64 {
            s.check(k << 20, &g, 0);
        }
        assert!(!s.check(heavy, &g, 0).allowed, "the heavy key was evicted");
    }

    #[test]
    fn sweep_remove_clear() {
        let g = Gcra::new(1, Duration::from_secs(1), 1).unwrap();
        let s = LocalStore::new(1000);
        for k in 0..10u64 {
            s.check(k << 40 | k, &g, 0);
        }
        assert_eq!(s.sweep(0), 0);
        assert!(s.remove(3 << 40 | 3));
        assert!(!s.remove(3 << 40 | 3));
        assert_eq!(s.len(), 9);
        assert_eq!(s.sweep(SEC), 9);
        s.check(1, &g, SEC);
        s.clear();
        assert_eq!(s.len(), 0);
    }
}
