//! The work after a store: the entry waits for its body ([`StoreJob`]), then goes into memory
//! and the lower tiers and wakes whoever waits for it ([`Waiters`]).

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderName;
use http::request::Parts;

use super::flight::{FlightGuard, Landing};
use super::state::Shared;
use super::store::{Entry, EntryKey};
use super::tiers::FleetStore;

/// What a store owes to others when it completes: the local flight's followers and the lower
/// tiers (with a Redis tier: where the entry goes in Redis, and the lease other instances wait
/// on). Dropped without a store, the flight lands `NotStored` and the lease is released.
#[derive(Default)]
pub(crate) struct Waiters {
    pub(crate) flight: Option<FlightGuard>,
    pub(crate) fleet: FleetStore,
}

impl Waiters {
    /// Sets where the entry goes in the lower tiers, now that its `Vary` is known.
    pub(crate) fn for_vary(&mut self, shared: &Shared, vary: &[HeaderName], parts: &Parts) {
        self.fleet.for_vary(shared, vary, parts);
    }

    /// The entry is stored in memory: copy it to the lower tiers, wake the followers.
    pub(crate) fn stored(self, shared: &Shared, entry: &Arc<Entry>) {
        self.fleet.stored(shared, entry);
        if let Some(g) = self.flight {
            g.land(Landing::Stored);
        }
    }
}

/// A response on its way into the cache: the entry waits for its body.
pub(crate) struct StoreJob {
    shared: Arc<Shared>,
    key: EntryKey,
    entry: Entry,
    // The leader's flight (landed `Stored` when the entry is in, `NotStored` if dropped first)
    // and the Redis copy.
    waiters: Waiters,
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
}

impl StoreJob {
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: EntryKey,
        entry: Entry,
        waiters: Waiters,
        max: usize,
    ) -> Self {
        Self {
            shared,
            key,
            entry,
            waiters,
            chunks: Vec::new(),
            len: 0,
            max,
        }
    }

    /// Copies a chunk; `false` when the body grew past the limit (the job is then abandoned).
    pub(crate) fn push(&mut self, chunk: &Bytes) -> bool {
        self.len += chunk.len();
        if self.len > self.max {
            return false;
        }
        if !chunk.is_empty() {
            // A clone of `Bytes` shares the buffer: nothing is copied until `finish`.
            self.chunks.push(chunk.clone());
        }
        true
    }

    pub(crate) fn finish(self: Box<Self>) {
        let body = super::pages::body(&self.chunks, self.len, self.shared.pages.as_ref());
        let StoreJob {
            shared,
            key,
            mut entry,
            waiters,
            ..
        } = *self;
        // The length is known now; a HEAD answered from this entry must announce it (axum
        // and hyper add `Content-Length` outside this layer, from the body they see).
        if !entry.headers.contains_key(http::header::CONTENT_LENGTH) {
            entry.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
        }
        entry.headers = super::store::stored_headers(&entry.headers);
        entry.body = body;
        let entry = Arc::new(entry);
        shared.store.insert(key, entry.clone());
        shared.report_size_soon();
        waiters.stored(&shared, &entry);
    }
}

impl std::fmt::Debug for StoreJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreJob")
            .field("len", &self.len)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// Stores an entry refreshed by a `304` in memory, then in the lower tiers, and wakes whoever
/// waits for it.
pub(crate) fn store_refreshed(
    shared: &Shared,
    key: EntryKey,
    entry: &Arc<Entry>,
    parts: &Parts,
    mut waiters: Waiters,
) {
    shared.store.insert(key, entry.clone());
    waiters.for_vary(shared, &entry.vary, parts);
    waiters.stored(shared, entry);
}
