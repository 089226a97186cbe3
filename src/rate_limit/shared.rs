//! The shared mode: GCRA in one Redis round trip, so every instance enforces one quota.
//!
//! # The round trip
//!
//! One Lua script ([`SCRIPT`]) per request, sent once and then called by its SHA
//! ([`RedisLink::script`]), on one key (so it is Redis Cluster safe). It reads the bucket's
//! TAT, takes the time from the **Redis server's clock** (`TIME`), so instances whose clocks
//! disagree still agree on every decision, runs the same step as [`Gcra::step`], writes the
//! new TAT with a TTL that ends when the bucket is full again (the key carries no information
//! after that), and returns the decision with the figures of the headers.
//!
//! Lua numbers are doubles, exact up to 2^53: times in the script are **microseconds** since
//! the Unix epoch (1.8 × 10^15 today, exact until the year 2255), and the quota's `T` is rounded
//! up to a whole microsecond. For any quota slower than a million requests per second per
//! client the figures are the in-process ones.
//!
//! # The keys
//!
//! `<link prefix>:rl:<16 hex digits>`: a seeded xxh3 of the policy's
//! [`shared_id`](super::quota::Policy::shared_id) (made from the configuration) and the client
//! identity ([`shared_key`](super::identity::shared_key)). The seed comes from the
//! configuration (the link's key prefix, or [`redis_seed`](super::RateLimitBuilder::redis_seed)),
//! never from a random source, so that every instance computes the same key.
//!
//! # When Redis does not answer
//!
//! The link's deadline bounds every call, and its breaker skips Redis for a cool-down after
//! repeated failures, so an outage costs one deadline per cool-down instead of one per request.
//! A call that fails, times out, is skipped, or returns something that is not a decision
//! (a script error, a malformed reply) leaves the decision to the [`RedisFallback`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use fred::types::scripts::Script;
use fred::types::{Key, Value};

use super::gcra::{Decision, Gcra};
use super::store::LocalStore;
use crate::metrics::{labels, names};
use crate::redis::{LinkError, RedisLink};

/// What the limiter does with a request when Redis cannot decide it (slow, down, the link's
/// breaker open, or a reply that is not a decision). Set with
/// [`RateLimitBuilder::redis_fallback`](super::RateLimitBuilder::redis_fallback).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisFallback {
    /// Decide in process, with the same quota, as if this instance were alone (the default).
    /// While Redis is away each instance enforces the quota on its own, so a client spread
    /// over `n` instances gets up to `n` times its quota; a client still cannot flood one
    /// instance. The responses carry the usual headers, from the local bucket.
    #[default]
    Local,
    /// Let the request through, without `RateLimit` headers (there is no budget to report).
    /// Counted as allowed.
    FailOpen,
    /// Turn the request away with `503 Service Unavailable`, `Retry-After: 1` and a JSON body
    /// (`{"error":"rate limiter unavailable","retry_after_secs":1}`), marked
    /// [`Rejected`](crate::Rejected) by `"rate_limit"`. Not a `429`: the client did not
    /// exceed its quota. Counted as limited.
    FailClosed,
}

/// The GCRA script. `KEYS[1]`: the bucket. `ARGV[1]`: `T`, the cost of one request, and
/// `ARGV[2]`: `τ = burst × T`, both in microseconds. Returns `{allowed (1 or 0), remaining,
/// wait, reset}`: requests the client could send now, microseconds until one more fits (the
/// `Retry-After` of a limited request), and microseconds until the bucket is full again.
///
/// A stored value that is not an integer in `[0, now + τ]` (planted, truncated, of another
/// type) is treated as absent, a full bucket, and overwritten by the next allowed request:
/// never an error, never a bucket blocked for good.
pub(crate) const SCRIPT: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = now
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and string.len(raw) <= 17 and string.find(raw, '^%d+$') then
  local stored = tonumber(raw)
  if stored <= now + tolerance and stored > now then tat = stored end
end
local deficit = tat - now
local allowed = 0
if deficit + interval <= tolerance then
  allowed = 1
  deficit = deficit + interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat + interval),
    'PX', string.format('%.0f', math.ceil(deficit / 1000)))
end
local spare = tolerance - deficit
if spare < 0 then spare = 0 end
local remaining = math.floor(spare / interval)
if remaining * interval > spare then remaining = remaining - 1 end
if (remaining + 1) * interval <= spare then remaining = remaining + 1 end
local wait = deficit + (remaining + 1) * interval - tolerance
if wait < 0 then wait = 0 end
return {allowed, remaining, wait, deficit}
"#;

/// The shared backend: the link, the script, the key space, and the local store that the
/// [`RedisFallback::Local`] policy decides with.
pub(crate) struct RedisStore {
    link: RedisLink,
    script: Script,
    // `<link prefix>:rl:`, made once.
    prefix: Box<[u8]>,
    seed: u64,
    pub(crate) fallback: RedisFallback,
    pub(crate) local: LocalStore,
    // Decisions Redis made.
    redis: AtomicU64,
    // Decisions made without Redis (by the fallback policy).
    fallback_count: AtomicU64,
    // Calls that failed, timed out or returned something that is not a decision (skips while
    // the link's breaker is open are not errors: they are counted by the link).
    errors: AtomicU64,
    // `tower_perf_rate_limit_shared_decisions_total` by `redis` and `fallback`, made on first
    // use (so that a recorder installed after the layer was built is the one they report to).
    metrics: [OnceLock<::metrics::Counter>; 2],
    warned_reply: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("link", &self.link)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    pub(crate) fn new(
        link: RedisLink,
        seed: Option<u64>,
        fallback: RedisFallback,
        max_keys: usize,
    ) -> Self {
        let prefix = format!("{}:rl:", link.key_prefix()).into_bytes();
        let seed = seed.unwrap_or_else(|| {
            xxhash_rust::xxh3::xxh3_64_with_seed(link.key_prefix().as_bytes(), DEFAULT_SEED)
        });
        Self {
            link,
            script: Script::from_lua(SCRIPT),
            prefix: prefix.into_boxed_slice(),
            seed,
            fallback,
            local: LocalStore::new(max_keys),
            redis: AtomicU64::new(0),
            fallback_count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            metrics: Default::default(),
            warned_reply: AtomicBool::new(false),
        }
    }

    fn metric(&self, decided_by: usize) {
        self.metrics[decided_by]
            .get_or_init(|| {
                ::metrics::counter!(names::RATE_LIMIT_SHARED_DECISIONS_TOTAL,
                    labels::DECIDED_BY => ["redis", "fallback"][decided_by])
            })
            .increment(1);
    }

    /// The seed of the shared keys.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// The Redis key of a bucket: the prefix and 16 lowercase hex digits.
    pub(crate) fn redis_key(&self, key: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.prefix.len() + 16);
        buf.put_slice(&self.prefix);
        for shift in (0..16).rev() {
            buf.put_u8(b"0123456789abcdef"[(key >> (shift * 4)) as usize & 0xf]);
        }
        buf.freeze()
    }

    /// The decision of Redis for one request of bucket `key`; `None` when Redis gave none
    /// (then the caller applies the fallback, and [`count_fallback`](Self::count_fallback)).
    pub(crate) async fn check(&self, key: u64, gcra: &Gcra) -> Option<Decision> {
        let (interval, tolerance) = micros(gcra);
        let reply = self
            .link
            .script::<Value>(
                "rate_limit",
                &self.script,
                vec![Key::from(self.redis_key(key))],
                vec![
                    Value::Integer(interval as i64),
                    Value::Integer(tolerance as i64),
                ],
            )
            .await;
        match reply {
            Ok(value) => match parse_reply(value, interval, tolerance) {
                Some(decision) => {
                    self.redis.fetch_add(1, Ordering::Relaxed);
                    self.metric(0);
                    return Some(decision);
                }
                None => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    if !self.warned_reply.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            target: "tower_perf::rate_limit",
                            "the rate-limit script returned something that is not a decision; \
                             deciding without Redis"
                        );
                    }
                }
            },
            Err(LinkError::Open) => {}
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        None
    }

    pub(crate) fn count_fallback(&self) {
        self.fallback_count.fetch_add(1, Ordering::Relaxed);
        self.metric(1);
    }

    /// `(decided by Redis, decided by the fallback, Redis errors)`.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.redis.load(Ordering::Relaxed),
            self.fallback_count.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// The seed of the default shared-key seed (hashed with the link's key prefix).
const DEFAULT_SEED: u64 = 0x7261_7465_6c69_6d74; // "ratelimt"

/// `T` and `τ` in whole microseconds: `T` rounded up (at least 1), `τ = burst × T`.
pub(crate) fn micros(gcra: &Gcra) -> (u64, u64) {
    let burst = gcra.tolerance() / gcra.interval();
    let interval = gcra.interval().div_ceil(1_000).max(1);
    (interval, interval * burst)
}

/// Reads the script's reply; `None` unless it is a decision the script could have made:
/// four integers, `allowed` 0 or 1, `remaining` at most the burst, `wait` in `(0, T]`, the
/// reset within `τ`. The wait comes back in nanoseconds.
fn parse_reply(value: Value, interval: u64, tolerance: u64) -> Option<Decision> {
    let Value::Array(items) = value else {
        return None;
    };
    let [allowed, remaining, wait, reset] = items.as_slice() else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    let (allowed, remaining, wait, reset) =
        (int(allowed)?, int(remaining)?, int(wait)?, int(reset)?);
    let burst = tolerance / interval;
    let valid =
        allowed <= 1 && remaining <= burst && wait > 0 && wait <= interval && reset <= tolerance;
    valid.then_some(Decision {
        allowed: allowed == 1,
        remaining,
        wait: wait * 1_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn microsecond_parameters() {
        let g = Gcra::new(100, Duration::from_secs(1), 200).unwrap();
        assert_eq!(micros(&g), (10_000, 2_000_000));
        let g = Gcra::new(3, Duration::from_secs(1), 2).unwrap();
        assert_eq!(micros(&g), (333_334, 666_668));
        let g = Gcra::new(1_000_000_000, Duration::from_secs(1), 5).unwrap();
        assert_eq!(micros(&g), (1, 5));
        // The longest tolerance stays exact in a double, with the clock added.
        let g = Gcra::new(1, Duration::from_secs(100 * 365 * 24 * 3600), 1).unwrap();
        assert!(micros(&g).1 + 2_000_000_000_000_000 < 1 << 53);
    }

    #[test]
    fn replies_that_are_not_decisions_are_refused() {
        let arr = |v: &[i64]| Value::Array(v.iter().map(|&i| Value::Integer(i)).collect());
        let d = parse_reply(arr(&[1, 4, 10_000, 10_000]), 10_000, 50_000).unwrap();
        assert_eq!((d.allowed, d.remaining, d.wait), (true, 4, 10_000_000));
        let d = parse_reply(arr(&[0, 0, 3, 50_000]), 10_000, 50_000).unwrap();
        assert_eq!((d.allowed, d.remaining, d.wait), (false, 0, 3_000));
        for bad in [
            arr(&[2, 0, 1, 0]),
            arr(&[1, 6, 1, 0]),
            arr(&[1, 0, 0, 0]),
            arr(&[1, 0, 10_001, 0]),
            arr(&[1, 0, 1, 50_001]),
            arr(&[-1, 0, 1, 0]),
            arr(&[1, 0, 1]),
            arr(&[1, 0, 1, 0, 0]),
            Value::Null,
            Value::Integer(1),
            Value::String("1".into()),
            Value::Array(vec![
                Value::String("1".into()),
                Value::Integer(0),
                Value::Integer(1),
                Value::Integer(0),
            ]),
        ] {
            assert!(
                parse_reply(bad.clone(), 10_000, 50_000).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_carry_the_prefix_and_hex() {
        let link = RedisLink::builder()
            .url("redis://127.0.0.1:1")
            .key_prefix("app1")
            .build()
            .unwrap();
        let store = RedisStore::new(link, Some(7), RedisFallback::Local, 16);
        assert_eq!(
            &store.redis_key(0x0123_4567_89ab_cdef)[..],
            b"app1:rl:0123456789abcdef"
        );
        assert_eq!(&store.redis_key(1)[..], b"app1:rl:0000000000000001");
        assert_eq!(store.seed(), 7);
    }
}
