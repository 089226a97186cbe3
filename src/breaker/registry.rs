//! The breakers of a layer by key, bounded, and the state every clone of the layer shares.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::request::Parts;
use tokio::time::Instant;

use super::open::FallbackDyn;
use super::snapshot::{BreakerSnapshot, CircuitBreakerSnapshot, State};
use super::state::{Breaker, Settings};

/// A function that names the breaker of a request.
pub(crate) type KeyFnDyn = dyn for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync;

/// The key of requests that have no route (no `MatchedPath`) or for which the key function
/// returned `None`.
pub const DEFAULT_KEY: &str = "default";

/// State shared by every clone of the layer, its services and handles.
pub(crate) struct Shared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) registry: Registry,
    pub(crate) key_with: Option<Arc<KeyFnDyn>>,
    pub(crate) fallback_with: Option<Arc<FallbackDyn>>,
}

impl Shared {
    /// The breaker for `key`, made on first use.
    pub(crate) fn breaker(&self, key: &str) -> Arc<Breaker> {
        self.registry.get_or_insert(key, &self.settings)
    }
}

/// Breakers by key. foldhash: keys come from the application's routes or its key function.
type BreakerMap = HashMap<Arc<str>, Arc<Breaker>, foldhash::fast::RandomState>;

/// The bounded set of breakers: lock-free reads, copy-on-write when a key is added.
pub(crate) struct Registry {
    map: ArcSwap<BreakerMap>,
    // Serialises writers (new keys, evictions); readers never take it.
    write: Mutex<()>,
    max: usize,
    idle_timeout: Duration,
    // Seeds the jitter of each new breaker.
    seeds: AtomicU64,
}

impl Registry {
    /// An empty registry of at most `max` breakers; closed ones idle for `idle_timeout` go
    /// first when a new key needs room.
    pub(crate) fn new(max: usize, idle_timeout: Duration) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Self {
            map: ArcSwap::from_pointee(BreakerMap::default()),
            write: Mutex::new(()),
            max,
            idle_timeout,
            seeds: AtomicU64::new(h.finish()),
        }
    }

    /// The breaker of `key`, if it is tracked.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Breaker>> {
        self.map.load().get(key).cloned()
    }

    /// Number of tracked breakers.
    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }

    /// Every tracked breaker, sorted by key.
    pub(crate) fn snapshot(&self) -> CircuitBreakerSnapshot {
        let now = Instant::now();
        let mut breakers: Vec<BreakerSnapshot> =
            self.map.load().values().map(|b| b.snapshot(now)).collect();
        breakers.sort_by(|a, b| a.key.cmp(&b.key));
        CircuitBreakerSnapshot { breakers }
    }

    fn get_or_insert(&self, key: &str, settings: &Arc<Settings>) -> Arc<Breaker> {
        if let Some(b) = self.map.load().get(key) {
            return b.clone();
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        if let Some(b) = cur.get(key) {
            return b.clone();
        }
        let mut map: BreakerMap = (*cur).clone();
        self.make_room(&mut map, settings);
        let seed = self
            .seeds
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let b = Arc::new(Breaker::new(Arc::from(key), settings.clone(), seed));
        map.insert(b.key.clone(), b.clone());
        self.map.store(Arc::new(map));
        b
    }

    /// Evicts the breakers idle past their time, then, while the map is full, the closed
    /// breaker idle the longest (an open one only when every breaker is open).
    fn make_room(&self, map: &mut BreakerMap, settings: &Settings) {
        let now = settings.nanos(Instant::now());
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let idle = nanos(self.idle_timeout);
        // An open or half-open breaker idle for longer than the longest open wait has nothing
        // left to protect: its next call would find the wait over. So it goes once idle for
        // both the idle timeout and that wait.
        let idle_open = idle.max(nanos(settings.max_open_wait));
        map.retain(|_, b| {
            let keep = match b.state() {
                State::Closed => now.saturating_sub(b.last_call()) < idle,
                _ => now.saturating_sub(b.last_call()) < idle_open || b.forced_open(),
            };
            if !keep {
                b.retire();
            }
            keep
        });
        while map.len() >= self.max {
            let victim = map
                .iter()
                .min_by_key(|(_, b)| (b.state() != State::Closed, b.last_call()))
                .map(|(k, _)| k.clone());
            match victim.and_then(|k| map.remove(&k)) {
                Some(b) => b.retire(),
                None => break,
            }
        }
    }
}
