//! Request coalescing: concurrent misses on one key make one origin request.
//!
//! The first miss becomes the leader and registers a flight; later misses on the same key wait
//! for the flight to land and then look the cache up again, so they are only ever served a
//! stored response that matches their own request (its variant, its purges). A leader that is
//! canceled or whose response turns out not storable releases the key at once (its guard's
//! `Drop`), and the waiters go to the origin themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// How a flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    InFlight,
    /// The response was stored: look the cache up again.
    Stored,
    /// Not stored (not storable, too large, error, leader canceled): go to the origin.
    NotStored,
}

const SHARDS: usize = 64;

/// A flight in progress. Its channel is made by the first follower: a miss that nobody waits
/// for (most of them) costs a map entry, not a channel.
struct Flight {
    id: u64,
    tx: Option<watch::Sender<Landing>>,
}

#[derive(Default)]
struct ShardState {
    flights: HashMap<u64, Flight, foldhash::fast::RandomState>,
    // Ids of this shard's flights, so a leader only ever removes its own.
    next_id: u64,
}

type Shard = Mutex<ShardState>;

/// The flights in progress, sharded so that unrelated keys never contend on one lock.
pub(crate) struct Flights {
    shards: Box<[Shard]>,
}

/// Either lead a flight, or follow one.
pub(crate) enum Role {
    Leader(FlightGuard),
    Follower(watch::Receiver<Landing>),
}

impl Flights {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn lock(&self, key: u64) -> MutexGuard<'_, ShardState> {
        self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn join(self: &Arc<Self>, key: u64) -> Role {
        let mut shard = self.lock(key);
        if let Some(flight) = shard.flights.get_mut(&key) {
            let tx = flight
                .tx
                .get_or_insert_with(|| watch::Sender::new(Landing::InFlight));
            return Role::Follower(tx.subscribe());
        }
        let id = shard.next_id;
        shard.next_id = id.wrapping_add(1);
        shard.flights.insert(key, Flight { id, tx: None });
        Role::Leader(FlightGuard {
            flights: self.clone(),
            key,
            id,
            done: false,
        })
    }

    /// Whether a flight on `key` is in progress (used to run one background refresh per key).
    pub(crate) fn try_lead(self: &Arc<Self>, key: u64) -> Option<FlightGuard> {
        match self.join(key) {
            Role::Leader(g) => Some(g),
            Role::Follower(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().flights.len())
            .sum()
    }
}

/// Held by the leader; lands the flight when done, or as `NotStored` when dropped first.
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: u64,
    id: u64,
    done: bool,
}

impl FlightGuard {
    pub(crate) fn land(mut self, landing: Landing) {
        self.finish(landing);
    }

    fn finish(&mut self, landing: Landing) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let tx = {
            let mut shard = self.flights.lock(self.key);
            match shard.flights.get(&self.key) {
                // Only our own flight: ours may have been replaced by a later one.
                Some(flight) if flight.id == self.id => {
                    shard.flights.remove(&self.key).and_then(|f| f.tx)
                }
                _ => None,
            }
        };
        if let Some(tx) = tx {
            // Followers hold receivers; the value stays readable after the sender is gone.
            tx.send_replace(landing);
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.finish(Landing::NotStored);
    }
}

/// Waits for a flight to land.
pub(crate) async fn wait(mut rx: watch::Receiver<Landing>) -> Landing {
    match rx.wait_for(|l| *l != Landing::InFlight).await {
        Ok(l) => *l,
        // The leader's guard is gone without landing (cannot happen: `Drop` lands it).
        Err(_) => Landing::NotStored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_followers_and_release_on_drop() {
        let f = Flights::new();
        let Role::Leader(leader) = f.join(7) else {
            panic!("first is leader")
        };
        let Role::Follower(a) = f.join(7) else {
            panic!("second follows")
        };
        let Role::Follower(b) = f.join(7) else {
            panic!("third follows")
        };
        assert!(matches!(f.join(8), Role::Leader(_)));
        leader.land(Landing::Stored);
        assert_eq!(wait(a).await, Landing::Stored);
        assert_eq!(wait(b).await, Landing::Stored);
        assert_eq!(f.len(), 0);

        // A canceled leader never leaves the key locked.
        let Role::Leader(leader) = f.join(7) else {
            panic!()
        };
        let Role::Follower(c) = f.join(7) else {
            panic!()
        };
        drop(leader);
        assert_eq!(wait(c).await, Landing::NotStored);
        assert!(matches!(f.join(7), Role::Leader(_)));
        assert_eq!(f.len(), 0);
    }
}
