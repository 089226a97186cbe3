//! Request coalescing: concurrent misses on one key make one origin request.
//!
//! The first miss becomes the leader and registers a flight; later misses on the same key wait
//! for the flight to land and then look the cache up again, so they are only ever served a
//! stored response that matches their own request (its variant, its purges). A leader that is
//! canceled or whose response turns out not storable releases the key at once (its guard's
//! `Drop`), and the waiters go to the origin themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

type Shard = Mutex<HashMap<u64, watch::Receiver<Landing>, foldhash::fast::RandomState>>;

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

    fn shard(&self, key: u64) -> &Shard {
        &self.shards[(key as usize) % SHARDS]
    }

    pub(crate) fn join(self: &Arc<Self>, key: u64) -> Role {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = shard.get(&key) {
            if *rx.borrow() == Landing::InFlight {
                return Role::Follower(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(Landing::InFlight);
        shard.insert(key, rx);
        Role::Leader(FlightGuard {
            flights: self.clone(),
            key,
            tx: Some(tx),
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
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// Held by the leader; lands the flight when done, or as `NotStored` when dropped first.
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: u64,
    tx: Option<watch::Sender<Landing>>,
}

impl FlightGuard {
    pub(crate) fn land(mut self, landing: Landing) {
        self.finish(landing);
    }

    fn finish(&mut self, landing: Landing) {
        if let Some(tx) = self.tx.take() {
            {
                let mut shard = self
                    .flights
                    .shard(self.key)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                // Only remove our own flight (a later one may have replaced it).
                if shard
                    .get(&self.key)
                    .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
                {
                    shard.remove(&self.key);
                }
            }
            let _ = tx.send(landing);
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
