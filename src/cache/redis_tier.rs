//! The Redis tier: entries shared by every instance of the application, purges that reach the
//! whole fleet, and one origin request per cold key across the fleet.
//!
//! # Keys (all under `{prefix}:cache:{name}`, written `N` here)
//!
//! | key | what |
//! |---|---|
//! | `N:e:{U}:v` | the `Vary` names of URL `U` (a 128-bit XXH3 of the key material, stable across instances) |
//! | `N:e:{U}:<variant>` | one stored response ([`codec`](super::codec) format); a response in one `Content-Language` also under its language key |
//! | `N:e:{U}:<variant>:lease` | the fleet-wide coalescing lease of a cold key (`SET NX PX`) |
//! | `{N}:gen`, `{N}:purges`, `{N}:idx` | the fleet's purge counter, records and their ages |
//! | channel `N:purge` | purges, published to every instance |
//!
//! The `{...}` parts are Redis Cluster hash tags: the keys of one URL share a slot, and so do
//! the purge keys, so every multi-key command and script stays in one slot.
//!
//! # Purges: version counters checked on read
//!
//! A purge never scans the keyspace. It takes the next number of the fleet's counter and
//! records it for its tag, URI or prefix (one script: `INCR`, `HSET`, `PUBLISH`). Every entry
//! carries the fleet generation its origin request started under; an entry is purged when a
//! record that matches it is at least that generation. Each instance keeps a mirror of the
//! records (loaded with `HGETALL`, then kept current by the channel) and checks memory and
//! Redis entries against it, so a purge on one instance reaches every memory tier as soon as
//! the message arrives. The counter is polled every second: when it moved without a message
//! (pub/sub is at most once; a reconnect loses what was sent meanwhile), the mirror is loaded
//! again. Records older than any entry can live, and the oldest beyond a bound, are dropped by
//! the purge script, raising a floor that treats older entries as stale.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface,
};
use fred::types::scripts::Script;
use fred::types::{Expiration, SetOptions};
use http::header::HeaderName;
use http::request::Parts;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::codec;
use super::purge::{Purges, Target, Validity};
use super::state::Shared;
use super::store::Entry;
use crate::metrics::{labels, names};
use crate::redis::{LinkError, RedisLink};

/// Stores an entry and its URL's `Vary` names, and releases the lease: one script, one slot.
const STORE: &str = r"
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local ttl = tonumber(ARGV[3])
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
elseif redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
redis.call('DEL', KEYS[3])
return 1
";

/// Records a purge under the next generation, prunes old records, publishes it.
/// KEYS: gen, purges, idx. ARGV: field, hard (0/1), record ttl ms, max records, channel,
/// instance id.
///
/// Generations are at least the Redis server's time in milliseconds, so the counter keeps
/// moving forward even when its key expired (every key here has a TTL) or was lost.
const PURGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = math.max((tonumber(redis.call('GET', KEYS[1]) or '0') or 0) + 1, now)
local ttl = tonumber(ARGV[3]) * 2
redis.call('SET', KEYS[1], string.format('%d', n), 'PX', ttl)
local field = ARGV[1]
local soft, hard = 0, 0
local rec = redis.call('HGET', KEYS[2], field)
if rec then
  local s, h = string.match(rec, '^(%d+) (%d+)$')
  if s then soft = tonumber(s); hard = tonumber(h) end
end
if ARGV[2] == '1' then hard = n else soft = n end
redis.call('HSET', KEYS[2], field, string.format('%d %d', soft, hard))
if field ~= '!all' then
  redis.call('ZADD', KEYS[3], now, field)
end
local floor = tonumber(redis.call('HGET', KEYS[2], '!floor') or '0') or 0
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, 100)
for _, f in ipairs(old) do
  redis.call('HDEL', KEYS[2], f)
  redis.call('ZREM', KEYS[3], f)
end
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
if over > 0 then
  for _, f in ipairs(redis.call('ZRANGE', KEYS[3], 0, over - 1)) do
    local r = redis.call('HGET', KEYS[2], f)
    if r then
      local s, h = string.match(r, '^(%d+) (%d+)$')
      if s then floor = math.max(floor, tonumber(s), tonumber(h)) end
    end
    redis.call('HDEL', KEYS[2], f)
    redis.call('ZREM', KEYS[3], f)
  end
  redis.call('HSET', KEYS[2], '!floor', string.format('%d', floor))
end
redis.call('PEXPIRE', KEYS[2], ttl)
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ttl) end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' ' .. string.format('%d', n) .. ' ' .. ARGV[2] .. ' ' .. field)
return n
";

/// Purges waiting to reach Redis; beyond, the oldest give way to one purge of everything.
const OUTBOX: usize = 1024;
/// URLs whose `Vary` names are remembered, so most Redis lookups take one round trip.
const VARY_HINTS: u64 = 65_536;

/// Where one response lives in Redis.
#[derive(Clone)]
pub(crate) struct RedisKey {
    /// `N:e:{U}:`; the `Vary`, variant and lease keys follow it.
    base: String,
    url: u128,
}

impl RedisKey {
    /// `N:e:{U}:v`: the URL's `Vary` names.
    fn vary(&self) -> String {
        format!("{}v", self.base)
    }

    fn entry(&self, variant: u64) -> String {
        format!("{}{variant:016x}", self.base)
    }

    /// One lease per URL: before the response is in, its `Vary` is unknown.
    fn lease(&self) -> String {
        format!("{}lease", self.base)
    }
}

/// What the Redis tier found.
pub(crate) enum RedisFound {
    Entry(Arc<Entry>, Validity),
    Miss,
    Error(LinkError),
}

/// What a leader does about the fleet-wide lease of a cold key.
pub(crate) enum Lease {
    /// This instance asks the origin; the guard releases the lease if nothing is stored.
    Leader(LeaseGuard),
    /// Another instance stored it while this one waited.
    Found(Arc<Entry>),
    /// Go to the origin without a lease (the holder is slow or gone, or Redis failed).
    Origin,
}

/// Releases a lease that was not consumed by a store (the origin failed, the response was not
/// storable), so other instances stop waiting at once instead of at the lease's expiry.
pub(crate) struct LeaseGuard {
    tier: Arc<RedisTier>,
    key: Option<String>,
    /// When the lease was asked for: it expires by itself `lease_ttl` later.
    taken: Instant,
}

impl LeaseGuard {
    fn disarm(&mut self) {
        self.key = None;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let link = self.tier.link.clone();
        rt.spawn(release(link, key, self.taken + self.tier.lease_ttl));
    }
}

/// Deletes a lease, retrying while Redis is away (the link's breaker open, a failover) until
/// the lease would expire anyway: a lease left behind makes the other instances wait for its
/// expiry (seen: up to seconds of latency after a cluster failover, `examples/fleet_experiment.rs`).
async fn release(link: RedisLink, key: String, expires: Instant) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let k = key.clone();
        let deleted = link
            .call("lease-release", |c| async move { c.del::<i64, _>(k).await })
            .await;
        if deleted.is_ok() || Instant::now() + backoff >= expires {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

#[derive(Default)]
pub(crate) struct TierCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) purges_sent: AtomicU64,
    pub(crate) purges_received: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) lease_waits: AtomicU64,
    metrics: [OnceLock<::metrics::Counter>; 4],
}

/// The Redis tier of one cache layer.
pub(crate) struct RedisTier {
    pub(crate) link: RedisLink,
    /// Seed of the stable key hashes: instances that share entries share it.
    seed: u64,
    ns: Box<str>,
    gen_key: String,
    records_key: String,
    idx_key: String,
    channel: String,
    /// Tells this instance's own messages from the others'.
    instance: String,
    /// The fleet's purge records, as loaded and kept current by the channel. Loads merge into
    /// it and never remove a record: a Redis that restarted empty must not bring purged
    /// entries back.
    fleet: Purges,
    /// The highest fleet generation seen: entries are stamped with the next one.
    known: AtomicU64,
    /// Local generations of purges in the outbox, not yet recorded in Redis (oldest first):
    /// entries read from Redis meanwhile are stamped no newer than the oldest, so the local
    /// record covers them. Changed only when a purge is sent or confirmed.
    pending: Mutex<VecDeque<u64>>,
    /// The oldest of `pending` and of the purges that overflowed the outbox (`u64::MAX`: none),
    /// read on every Redis lookup without the lock.
    oldest_pending: AtomicU64,
    /// The oldest local generation of purges that did not fit in the outbox; cleared when the
    /// purge of everything that replaces them is recorded.
    overflowed: AtomicU64,
    vary_hints: moka::sync::Cache<u128, Arc<[HeaderName]>>,
    outbox: mpsc::Sender<(String, bool, u64)>,
    outbox_rx: Mutex<Option<mpsc::Receiver<(String, bool, u64)>>>,
    /// Set when a purge did not fit in the outbox: a purge of everything follows.
    overflow: AtomicBool,
    started: AtomicBool,
    /// Subscribed to the purge channel (and records loaded once).
    listening: AtomicBool,
    pub(crate) lease_ttl: Duration,
    pub(crate) lease_wait: Duration,
    lease_poll: Duration,
    record_ttl: Duration,
    max_records: u64,
    /// Longest TTL of an entry in Redis.
    max_entry_ttl: Duration,
    store_script: Script,
    purge_script: Script,
    pub(crate) counters: TierCounters,
}

/// Settings of the Redis tier, from the cache builder.
pub(crate) struct TierConfig {
    pub(crate) link: RedisLink,
    pub(crate) name: String,
    pub(crate) seed: u64,
    pub(crate) lease_ttl: Duration,
    pub(crate) lease_wait: Duration,
    pub(crate) record_ttl: Duration,
}

fn field_of(target: Target<'_>) -> String {
    match target {
        Target::Tag(t) => format!("t:{t}"),
        Target::Uri(u) => format!("u:{u}"),
        Target::Prefix(p) => format!("p:{p}"),
        Target::All => "!all".to_owned(),
    }
}

fn target_of(field: &str) -> Option<Target<'_>> {
    if field == "!all" {
        return Some(Target::All);
    }
    let (kind, rest) = field.split_at_checked(2)?;
    match kind {
        "t:" => Some(Target::Tag(rest)),
        "u:" => Some(Target::Uri(rest)),
        "p:" => Some(Target::Prefix(rest)),
        _ => None,
    }
}

fn parse_record(value: &str) -> Option<(u64, u64)> {
    let (s, h) = value.split_once(' ')?;
    Some((s.parse().ok()?, h.parse().ok()?))
}

impl RedisTier {
    pub(crate) fn new(cfg: TierConfig) -> Self {
        let ns: Box<str> = format!("{}:cache:{}", cfg.link.key_prefix(), cfg.name).into();
        let (tx, rx) = mpsc::channel(OUTBOX);
        let instance = format!(
            "{:016x}",
            foldhash::fast::RandomState::default()
                .hash_one((std::process::id(), SystemTime::now()))
        );
        Self {
            link: cfg.link,
            seed: cfg.seed,
            gen_key: format!("{{{ns}}}:gen"),
            records_key: format!("{{{ns}}}:purges"),
            idx_key: format!("{{{ns}}}:idx"),
            channel: format!("{ns}:purge"),
            ns,
            instance,
            fleet: Purges::new(cfg.record_ttl, 100_000),
            known: AtomicU64::new(0),
            pending: Mutex::new(VecDeque::new()),
            oldest_pending: AtomicU64::new(u64::MAX),
            overflowed: AtomicU64::new(u64::MAX),
            vary_hints: moka::sync::Cache::builder()
                .max_capacity(VARY_HINTS)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            outbox: tx,
            outbox_rx: Mutex::new(Some(rx)),
            overflow: AtomicBool::new(false),
            started: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            lease_ttl: cfg.lease_ttl,
            lease_wait: cfg.lease_wait,
            lease_poll: Duration::from_millis(10),
            record_ttl: cfg.record_ttl,
            max_records: 10_000,
            max_entry_ttl: cfg.record_ttl,
            store_script: Script::from_lua(STORE),
            purge_script: Script::from_lua(PURGE),
            counters: TierCounters::default(),
        }
    }

    pub(crate) fn snapshot(&self) -> super::snapshot::RedisTierSnapshot {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        super::snapshot::RedisTierSnapshot {
            hits: n(&c.hits),
            stale: n(&c.stale),
            misses: n(&c.misses),
            errors: n(&c.errors),
            stores: n(&c.stores),
            corrupt: n(&c.corrupt),
            purges_sent: n(&c.purges_sent),
            purges_received: n(&c.purges_received),
            resyncs: n(&c.resyncs),
            lease_waits: n(&c.lease_waits),
            listening: self.listening.load(Ordering::Acquire),
            link: self.link.snapshot(),
        }
    }

    /// The fleet generation to stamp on what an origin request starting now stores.
    pub(crate) fn fleet_generation(&self) -> u64 {
        self.known.load(Ordering::Acquire) + 1
    }

    /// The local generation to stamp on an entry read from Redis now: no newer than the oldest
    /// purge still on its way to Redis.
    fn local_stamp(&self, shared: &Shared) -> u64 {
        shared
            .purges
            .current()
            .min(self.oldest_pending.load(Ordering::Acquire))
    }

    /// Publishes the oldest unrecorded purge for [`local_stamp`](Self::local_stamp).
    fn update_oldest(&self, pending: &VecDeque<u64>) {
        let queued = pending.front().copied().unwrap_or(u64::MAX);
        let oldest = queued.min(self.overflowed.load(Ordering::Acquire));
        self.oldest_pending.store(oldest, Ordering::Release);
    }

    /// Checks an entry (memory or Redis) against the fleet's purges.
    pub(crate) fn check(&self, entry: &Entry) -> Validity {
        self.fleet.check_stamp(entry, entry.fleet_generation)
    }

    pub(crate) fn key(&self, shared: &Shared, parts: &Parts) -> RedisKey {
        let url = shared
            .keyer
            .shared_primary(parts, shared.key_fn.as_deref(), self.seed);
        RedisKey {
            base: format!("{}:e:{{{url:032x}}}:", self.ns),
            url,
        }
    }

    pub(crate) fn variant(&self, shared: &Shared, vary: &[HeaderName], parts: &Parts) -> u64 {
        shared.keyer.shared_variant(vary, &parts.headers, self.seed)
    }

    fn count(&self, idx: usize, label: &'static str) {
        let c = &self.counters;
        let counter = match idx {
            0 => &c.hits,
            1 => &c.misses,
            2 => &c.stale,
            _ => &c.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        c.metrics[idx]
            .get_or_init(|| {
                ::metrics::counter!(names::CACHE_REQUESTS_TOTAL,
                    labels::CACHE_TIER => "redis", labels::CACHE_RESULT => label)
            })
            .increment(1);
    }

    pub(crate) fn count_hit(&self, stale: bool) {
        if stale {
            self.count(2, "stale");
        } else {
            self.count(0, "hit");
        }
    }

    pub(crate) fn count_miss(&self) {
        self.count(1, "miss");
    }

    pub(crate) fn count_error(&self) {
        self.count(3, "error");
    }

    /// Starts the background tasks (purge channel, outbox, counter poll) on first use.
    pub(crate) fn ensure_started(self: &Arc<Self>, shared: &Arc<Shared>) {
        if self.started.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.started.store(false, Ordering::Release);
            return;
        };
        let rx = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            rt.spawn(outbox_task(Arc::downgrade(self), rx));
        }
        rt.spawn(channel_task(Arc::downgrade(self), Arc::downgrade(shared)));
    }

    /// Looks `parts` up in Redis. `hint`: the `Vary` names the memory tier knows for the URL.
    pub(crate) async fn lookup(
        &self,
        shared: &Shared,
        key: &RedisKey,
        parts: &Parts,
        hint: Option<Arc<[HeaderName]>>,
    ) -> RedisFound {
        let stamp = self.local_stamp(shared);
        let guess = hint
            .or_else(|| self.vary_hints.get(&key.url))
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let guess_variant = self.variant(shared, &guess, parts);
        let keys = vec![key.vary(), key.entry(guess_variant)];
        let got = self
            .link
            .call("cache-get", |c| async move {
                c.mget::<Vec<Option<Bytes>>, _>(keys).await
            })
            .await;
        let (vary, value) = match got {
            Ok(mut v) if v.len() == 2 => {
                let value = v.pop().flatten();
                (v.pop().flatten(), value)
            }
            Ok(_) => return RedisFound::Error(LinkError::Failed),
            Err(e) => return RedisFound::Error(e),
        };
        let Some(vary) = vary else {
            return RedisFound::Miss;
        };
        let Some(names) = parse_vary_names(&vary) else {
            self.delete(key.vary());
            return RedisFound::Miss;
        };
        let (variant, value) = if *names == *guess {
            (guess_variant, value)
        } else {
            // The URL varies on other headers than guessed: remember them, ask again.
            self.vary_hints.insert(key.url, names.clone());
            let variant = self.variant(shared, &names, parts);
            match self.get(key.entry(variant)).await {
                Ok(v) => (variant, v),
                Err(e) => return RedisFound::Error(e),
            }
        };
        let found = match value {
            Some(value) => self.accept(shared, value, stamp, parts, false),
            None => Ok(RedisFound::Miss),
        };
        match found {
            Ok(RedisFound::Miss) => {
                self.lookup_language(shared, key, parts, &names, stamp)
                    .await
            }
            Ok(found) => found,
            Err(()) => {
                self.delete(key.entry(variant));
                RedisFound::Miss
            }
        }
    }

    /// One stored value.
    async fn get(&self, entry_key: String) -> Result<Option<Bytes>, LinkError> {
        self.link
            .call("cache-get", |c| async move {
                c.get::<Option<Bytes>, _>(entry_key).await
            })
            .await
    }

    /// After a miss of the request's own variant: the response in the language the request
    /// prefers, under its language key ([`Keyer::shared_language_variant`]), when the URL
    /// varies on `Accept-Language`. One more round trip, on such misses only.
    ///
    /// [`Keyer::shared_language_variant`]: super::key::Keyer::shared_language_variant
    async fn lookup_language(
        &self,
        shared: &Shared,
        key: &RedisKey,
        parts: &Parts,
        names: &[HeaderName],
        stamp: u64,
    ) -> RedisFound {
        let Some(language) = super::key::preferred_language(&parts.headers) else {
            return RedisFound::Miss;
        };
        if !names.contains(&http::header::ACCEPT_LANGUAGE) {
            return RedisFound::Miss;
        }
        let fields = super::key::Selecting::Request(&parts.headers);
        let variant = shared
            .keyer
            .shared_language_variant(names, fields, language, self.seed);
        match self.get(key.entry(variant)).await {
            Ok(Some(value)) => match self.accept(shared, value, stamp, parts, true) {
                Ok(found) => found,
                Err(()) => {
                    self.delete(key.entry(variant));
                    RedisFound::Miss
                }
            },
            Ok(None) => RedisFound::Miss,
            Err(e) => RedisFound::Error(e),
        }
    }

    /// Decodes a value and checks it is this request's response and not purged. `Err`: the
    /// value is corrupt or purged for good, and is deleted.
    fn accept(
        &self,
        shared: &Shared,
        value: Bytes,
        stamp: u64,
        parts: &Parts,
        by_language: bool,
    ) -> Result<RedisFound, ()> {
        let Some(decoded) = codec::decode(value, stamp, &shared.policy.targeted) else {
            self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
            return Err(());
        };
        let mut entry = decoded.entry;
        if !shared.keyer.same_target(&entry.uri, &parts.uri)
            || !(if by_language {
                super::key::selects_by_language(&entry, &parts.headers)
            } else {
                super::key::vary_matches(&entry.vary, &entry.vary_values, &parts.headers)
            })
            || !super::key::coding_usable(
                &entry,
                &parts.headers,
                shared.policy.require_accepted_coding,
            )
            || !super::range::usable(&entry, &parts.headers)
        {
            // A hash collision or another variant (or a stored part that does not hold the
            // requested range): not this request's, but not corrupt.
            return Ok(RedisFound::Miss);
        }
        let validity = self.check(&entry);
        if validity == Validity::Gone {
            return Err(());
        }
        // Rebase: its age now becomes its initial age, so the memory tier keeps it for the
        // remaining lifetime only.
        let elapsed = SystemTime::now()
            .duration_since(decoded.stored_at)
            .unwrap_or_default();
        entry.initial_age = entry.initial_age.saturating_add(elapsed);
        entry.stored_at = Instant::now();
        // Out of the reply's buffer (which holds the head too), at its exact size and in
        // pages when large, as every body the memory tier keeps.
        entry.body = super::pages::body(&[&entry.body], entry.body.len(), shared.pages.as_ref());
        Ok(RedisFound::Entry(Arc::new(entry), validity))
    }

    fn delete(&self, key: String) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let link = self.link.clone();
        rt.spawn(async move {
            let _ = link
                .call("cache-del", |c| async move { c.del::<i64, _>(key).await })
                .await;
        });
    }

    /// The language key a stored response is also written under, when it has one
    /// ([`Keyer::shared_language_variant`](super::key::Keyer::shared_language_variant)).
    pub(crate) fn language_variant(&self, shared: &Shared, entry: &Entry) -> Option<u64> {
        let language = super::key::stored_language(entry)?;
        let fields = super::key::Selecting::Stored(&entry.vary_values);
        Some(
            shared
                .keyer
                .shared_language_variant(&entry.vary, fields, language, self.seed),
        )
    }

    /// Writes the copy of a stored response under its language key (best effort: a failure
    /// costs a later miss).
    async fn set_language_copy(&self, key: String, value: Bytes, ttl: Duration) {
        let px = ttl.as_millis().max(1) as i64;
        let _ = self
            .link
            .call("cache-store", |c| async move {
                c.set::<(), _, _>(key, value, Some(Expiration::PX(px)), None, false)
                    .await
            })
            .await;
    }

    /// Stores `entry` in Redis in the background (also under its `language` key); consumes
    /// the lease (the script releases it).
    pub(crate) fn store(
        self: &Arc<Self>,
        key: RedisKey,
        variant: u64,
        language: Option<u64>,
        entry: Arc<Entry>,
        lease: Option<LeaseGuard>,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tier = self.clone();
        rt.spawn(async move {
            let mut lease = lease;
            let ttl = entry.time_to_live().min(tier.max_entry_ttl);
            // Its store time on the wall clock, which every instance shares.
            let elapsed = Instant::now().saturating_duration_since(entry.stored_at);
            let stored_at = SystemTime::now()
                .checked_sub(elapsed)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let value = codec::encode(&entry, stored_at);
            let language_key = language.map(|variant| key.entry(variant));
            let copy = language_key.as_ref().map(|_| value.clone());
            let vary = join_vary_names(&entry.vary);
            let keys: Vec<fred::types::Key> = vec![
                key.vary().into(),
                key.entry(variant).into(),
                key.lease().into(),
            ];
            let args: Vec<fred::types::Value> = vec![
                vary.into(),
                value.into(),
                (ttl.as_millis().max(1) as i64).into(),
            ];
            if tier
                .link
                .script::<i64>("cache-store", &tier.store_script, keys, args)
                .await
                .is_ok()
            {
                if let Some(l) = lease.as_mut() {
                    l.disarm();
                }
                if let (Some(k), Some(v)) = (language_key, copy) {
                    tier.set_language_copy(k, v, ttl).await;
                }
                tier.counters.stores.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Takes the fleet-wide lease of a cold key, or waits for the instance that holds it.
    pub(crate) async fn lease(
        self: &Arc<Self>,
        shared: &Shared,
        key: &RedisKey,
        parts: &Parts,
    ) -> Lease {
        let lease_key = key.lease();
        let taken = Instant::now();
        let ttl = self.lease_ttl.as_millis() as i64;
        let instance = self.instance.clone();
        let k = lease_key.clone();
        let got = self
            .link
            .call("cache-lease", |c| async move {
                c.set::<Option<String>, _, _>(
                    k,
                    instance,
                    Some(Expiration::PX(ttl)),
                    Some(SetOptions::NX),
                    false,
                )
                .await
            })
            .await;
        match got {
            Ok(Some(_)) => {
                return Lease::Leader(LeaseGuard {
                    tier: self.clone(),
                    key: Some(lease_key),
                    taken,
                })
            }
            Ok(None) => {}
            Err(_) => return Lease::Origin,
        }
        self.counters.lease_waits.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + self.lease_wait;
        while Instant::now() < until {
            tokio::time::sleep(self.lease_poll).await;
            // The lease first, then the entry: the store script writes the entry and releases
            // the lease at once, so a lease seen gone here means the entry, if stored, is
            // visible to the lookup below.
            let k = lease_key.clone();
            let held = self
                .link
                .call("cache-lease-poll", |c| async move {
                    c.exists::<i64, _>(k).await
                })
                .await;
            match self.lookup(shared, key, parts, None).await {
                RedisFound::Entry(e, Validity::Valid) => return Lease::Found(e),
                RedisFound::Entry(..) | RedisFound::Error(_) => return Lease::Origin,
                RedisFound::Miss => {}
            }
            if !matches!(held, Ok(1)) {
                // Released without a store (not cacheable, or the origin failed), or Redis
                // failed: ask the origin.
                return Lease::Origin;
            }
        }
        Lease::Origin
    }

    /// Sends a purge to Redis and the fleet, in the background and in order; retried while
    /// Redis is away.
    pub(crate) fn publish_purge(&self, target: Target<'_>, hard: bool, shared_generation: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .outbox
            .try_send((field_of(target), hard, shared_generation))
            .is_ok()
        {
            pending.push_back(shared_generation);
        } else {
            // Covered by the purge of everything the outbox sends next.
            self.overflowed
                .fetch_min(shared_generation, Ordering::AcqRel);
            self.overflow.store(true, Ordering::Release);
        }
        self.update_oldest(&pending);
    }

    fn confirm(&self, generation: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pending.iter().position(|&g| g == generation) {
            pending.remove(i);
        }
        self.update_oldest(&pending);
    }

    /// The purge of everything that replaces the overflowed purges is recorded in Redis. A
    /// purge that overflowed since sets the flag again, and keeps its generation for the next.
    fn confirm_overflow(&self) {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !self.overflow.load(Ordering::Acquire) {
            self.overflowed.store(u64::MAX, Ordering::Release);
        }
        self.update_oldest(&pending);
    }

    /// The `ARGV` of the [`PURGE`] script.
    fn purge_args(&self, field: &str, hard: bool) -> Vec<fred::types::Value> {
        vec![
            field.into(),
            if hard { "1" } else { "0" }.into(),
            (self.record_ttl.as_millis() as i64).into(),
            (self.max_records as i64).into(),
            self.channel.clone().into(),
            self.instance.clone().into(),
        ]
    }

    /// Records a purge in Redis now, not through the outbox (see
    /// [`Tiers::purge_now`](super::tiers::Tiers::purge_now)): the fleet's generation it took
    /// is known when this returns, so what is stamped after it is newer.
    pub(crate) async fn purge_now(&self, target: Target<'_>, hard: bool) -> bool {
        self.send_purge(&field_of(target), hard).await.is_ok()
    }

    async fn send_purge(&self, field: &str, hard: bool) -> Result<u64, LinkError> {
        let keys: Vec<fred::types::Key> = vec![
            self.gen_key.clone().into(),
            self.records_key.clone().into(),
            self.idx_key.clone().into(),
        ];
        let args = self.purge_args(field, hard);
        let n: i64 = self
            .link
            .script("cache-purge", &self.purge_script, keys, args)
            .await?;
        let n = n.max(0) as u64;
        // Recorded in the mirror now, without waiting for the message.
        if let Some(target) = target_of(field) {
            self.fleet.apply(target, n, hard);
        }
        self.known.fetch_max(n, Ordering::AcqRel);
        self.counters.purges_sent.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }

    /// Applies a purge message from the channel; a hard purge from another instance also
    /// drops the matching entries from this memory tier now (the check on read already keeps
    /// them from being served; this gives their memory back).
    fn receive(&self, payload: &str, shared: Option<&Shared>) {
        let mut parts = payload.splitn(4, ' ');
        let (Some(instance), Some(n), Some(hard), Some(field)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let (Ok(n), Some(target)) = (n.parse::<u64>(), target_of(field)) else {
            return;
        };
        self.fleet.apply(target, n, hard == "1");
        if hard == "1" && instance != self.instance {
            if let Some(shared) = shared {
                shared.drop_matching(target);
            }
        }
        self.known.fetch_max(n, Ordering::AcqRel);
        self.counters
            .purges_received
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Loads the fleet's purge records again (after a reconnect, or when messages were missed).
    async fn resync(&self) -> Result<(), LinkError> {
        let records_key = self.records_key.clone();
        let records: HashMap<String, String> = self
            .link
            .call(
                "cache-resync",
                |c| async move { c.hgetall(records_key).await },
            )
            .await?;
        let gen_key = self.gen_key.clone();
        let n: Option<u64> = self
            .link
            .call("cache-resync", |c| async move { c.get(gen_key).await })
            .await?;
        let mirror = &self.fleet;
        for (field, value) in &records {
            if field == "!floor" {
                if let Ok(floor) = value.parse::<u64>() {
                    mirror.raise_floors(floor, 0);
                }
                continue;
            }
            let (Some(target), Some((soft, hard))) = (target_of(field), parse_record(value)) else {
                continue;
            };
            if soft > 0 {
                mirror.apply(target, soft, false);
            }
            if hard > 0 {
                mirror.apply(target, hard, true);
            }
        }
        self.known.fetch_max(n.unwrap_or(0), Ordering::AcqRel);
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The channel task's poll: loads the records when the last load failed, or when the fleet
    /// counter stays ahead of what this instance knows for a whole poll (a message was
    /// missed). `ahead`: a counter value ahead seen at the previous poll. Whether the records
    /// are in sync after it.
    async fn poll_counter(&self, synced: bool, ahead: &mut Option<u64>) -> bool {
        if !synced {
            return self.resync().await.is_ok();
        }
        match self.fleet_counter().await {
            Ok(n) if n > self.known.load(Ordering::Acquire) => {
                if ahead.is_some_and(|a| a <= n) {
                    // Still behind a poll later: a message was missed.
                    *ahead = None;
                    return self.resync().await.is_ok();
                }
                *ahead = Some(n);
            }
            Ok(_) => *ahead = None,
            Err(_) => {}
        }
        true
    }

    async fn fleet_counter(&self) -> Result<u64, LinkError> {
        let gen_key = self.gen_key.clone();
        let n: Option<u64> = self
            .link
            .call("cache-generation", |c| async move { c.get(gen_key).await })
            .await?;
        Ok(n.unwrap_or(0))
    }
}

fn join_vary_names(vary: &[HeaderName]) -> String {
    let mut out = String::new();
    for (i, n) in vary.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n.as_str());
    }
    out
}

fn parse_vary_names(value: &[u8]) -> Option<Arc<[HeaderName]>> {
    if value.is_empty() {
        return Some(Arc::from(Vec::new()));
    }
    let names: Option<Vec<HeaderName>> = value
        .split(|&b| b == b',')
        .map(|n| HeaderName::from_bytes(n).ok())
        .collect();
    names.map(Arc::from)
}

/// Sends the purges of the outbox, in order, retrying while Redis is away.
async fn outbox_task(tier: Weak<RedisTier>, mut rx: mpsc::Receiver<(String, bool, u64)>) {
    while let Some((field, hard, generation)) = rx.recv().await {
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(t) = tier.upgrade() else { return };
            if t.overflow.swap(false, Ordering::AcqRel) {
                // Purges were lost: everything is stale instead.
                match t.send_purge("!all", false).await {
                    Ok(_) => t.confirm_overflow(),
                    Err(_) => t.overflow.store(true, Ordering::Release),
                }
            }
            match t.send_purge(&field, hard).await {
                Ok(_) => {
                    t.confirm(generation);
                    break;
                }
                Err(_) => {
                    drop(t);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Subscribes to the purge channel, retrying while Redis is away; `false` when the tier is gone.
async fn subscribe(
    sub: &fred::clients::SubscriberClient,
    channel: String,
    tier: &Weak<RedisTier>,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        if sub.wait_for_connect().await.is_ok() && sub.subscribe(channel.clone()).await.is_ok() {
            return true;
        }
        if tier.strong_count() == 0 {
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Listens to the purge channel, loads the records after each (re)connection, and polls the
/// fleet counter to notice missed messages.
async fn channel_task(tier: Weak<RedisTier>, shared: Weak<Shared>) {
    let Some(sub) = tier.upgrade().and_then(|t| t.link.subscriber()) else {
        return;
    };
    let channel = match tier.upgrade() {
        Some(t) => t.channel.clone(),
        None => return,
    };
    let mut messages = sub.message_rx();
    let _connection = sub.connect();
    // Subscribe first, then load the records: nothing published in between is missed.
    if !subscribe(&sub, channel, &tier).await {
        return;
    }
    // Later connections resubscribe by themselves, and each one loads the records again.
    let _resubscriber = sub.manage_subscriptions();
    let mut reconnects = sub.reconnect_rx();
    let mut synced = match tier.upgrade() {
        Some(t) => {
            let ok = t.resync().await.is_ok();
            t.listening.store(true, Ordering::Release);
            ok
        }
        None => return,
    };
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A counter value ahead of what this instance knows, seen at the previous poll.
    let mut ahead: Option<u64> = None;
    loop {
        tokio::select! {
            msg = messages.recv() => {
                let Some(t) = tier.upgrade() else { break };
                match msg {
                    Ok(msg) => {
                        if let Some(payload) = msg.value.as_str() {
                            t.receive(&payload, shared.upgrade().as_deref());
                        }
                    }
                    // Messages were dropped (the receiver lagged): load the records again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        synced = t.resync().await.is_ok();
                    }
                    Err(_) => break,
                }
            }
            r = reconnects.recv() => {
                let Some(t) = tier.upgrade() else { break };
                if r.is_err() && !matches!(r, Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) {
                    break;
                }
                synced = t.resync().await.is_ok();
            }
            _ = poll.tick() => {
                let Some(t) = tier.upgrade() else { break };
                if shared.strong_count() == 0 {
                    break;
                }
                synced = t.poll_counter(synced, &mut ahead).await;
            }
        }
    }
    let _ = sub.quit().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier() -> RedisTier {
        let link = RedisLink::builder()
            .url("redis://127.0.0.1:1")
            .build()
            .expect("link");
        RedisTier::new(TierConfig {
            link,
            name: "test".into(),
            seed: 1,
            lease_ttl: Duration::from_secs(1),
            lease_wait: Duration::from_secs(1),
            record_ttl: Duration::from_secs(60),
        })
    }

    /// Every argument sent to the purge script is one the script reads.
    #[test]
    fn the_purge_script_reads_every_argument_it_is_sent() {
        let args = tier().purge_args("t:a", true);
        for i in 1..=args.len() {
            assert!(
                PURGE.contains(&format!("ARGV[{i}]")),
                "ARGV[{i}] is sent but never read"
            );
        }
    }

    fn oldest(t: &RedisTier) -> u64 {
        t.oldest_pending.load(Ordering::Acquire)
    }

    #[test]
    fn entries_from_redis_are_stamped_no_newer_than_the_oldest_unsent_purge() {
        let t = tier();
        assert_eq!(oldest(&t), u64::MAX, "nothing pending");
        t.publish_purge(Target::Tag("a"), false, 10);
        t.publish_purge(Target::Tag("b"), false, 11);
        assert_eq!(oldest(&t), 10);
        t.confirm(10);
        assert_eq!(oldest(&t), 11);
        // The outbox holds OUTBOX purges (no task drains it here): the rest overflow.
        for g in 12..(10 + OUTBOX as u64) {
            t.publish_purge(Target::Tag("c"), false, g);
        }
        assert!(!t.overflow.load(Ordering::Acquire));
        t.publish_purge(Target::Tag("d"), true, 5_000);
        t.publish_purge(Target::Tag("e"), true, 5_001);
        assert!(t.overflow.load(Ordering::Acquire));
        for g in 11..(10 + OUTBOX as u64) {
            t.confirm(g);
        }
        assert_eq!(oldest(&t), 5_000, "the overflowed purges still count");
        // The outbox task sends the purge of everything (taking the flag), then confirms it.
        t.overflow.store(false, Ordering::Release);
        t.confirm_overflow();
        assert_eq!(oldest(&t), u64::MAX);
    }
}
