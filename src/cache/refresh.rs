//! The background refresh of an entry served within stale-while-revalidate.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderName};
use http::request::Parts;
use http::{Method, Request, StatusCode};
use http_body::Body;
use tokio::time::Instant;

use super::directives::CacheControl;
use super::entry::refreshed_entry;
use super::flight::FlightGuard;
use super::key::Primary;
use super::policy;
use super::request::{call_ready, clone_parts, Origin, OriginBody, RequestCtx, StoreVerdict};
use super::state::{Exchange, Shared};
use super::status::Fwd;
use super::store::{Entry, EntryKey};
use super::store_job::{store_refreshed, Waiters};
use crate::reject::Rejected;

/// The request headers a client uses to ask for a conditional response.
const CONDITIONALS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Refreshes `entry` from the origin in the background, once per key at a time.
pub(crate) fn refresh_in_background<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    svc: &S,
    entry: Arc<Entry>,
    primary: Primary,
    parts: &Parts,
) where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: OriginBody,
{
    let variant = shared.keyer.entry_variant(&entry);
    let Some(guard) = shared.refreshes.try_lead(primary ^ variant.rotate_left(17)) else {
        return;
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut parts = clone_parts(parts);
    parts.method = Method::GET;
    for name in &CONDITIONALS {
        parts.headers.remove(name);
    }
    policy::add_validators(&entry.headers, &mut parts.headers);
    let job = Refresh {
        shared: shared.clone(),
        entry,
        key: EntryKey { primary, variant },
        parts,
        _guard: guard,
    };
    handle.spawn(job.run(svc.clone()));
}

/// One background refresh.
struct Refresh {
    shared: Arc<Shared>,
    /// The entry being refreshed, and where it is stored.
    entry: Arc<Entry>,
    key: EntryKey,
    /// The request to send: `GET`, with the entry's validators.
    parts: Parts,
    /// One refresh per key at a time: released when this one ends.
    _guard: FlightGuard,
}

impl Refresh {
    async fn run<S, ReqBody, ResBody>(self, mut svc: S)
    where
        S: Origin<ReqBody, ResBody>,
        ReqBody: Default + Send + 'static,
        ResBody: OriginBody,
    {
        let shared = &self.shared;
        let mut ex = Exchange::start(shared, Fwd::Stale);
        let req = Request::from_parts(clone_parts(&self.parts), ReqBody::default());
        let Ok(res) = call_ready(&mut svc, req).await else {
            return;
        };
        ex.response_time = SystemTime::now();
        if res.status() == StatusCode::NOT_MODIFIED {
            match refreshed_entry(shared, &self.entry, res.headers(), &self.parts, ex) {
                Some((updated, true)) => {
                    let updated = Arc::new(updated);
                    store_refreshed(shared, self.key, &updated, &self.parts, Waiters::default());
                }
                // No longer storable (`private`, `no-store`): the shared copy goes.
                Some((_, false)) => shared.store.remove(&self.key),
                None => {}
            }
            return;
        }
        if res.status().is_server_error() || res.extensions().get::<Rejected>().is_some() {
            return;
        }
        // A new full response: store it the usual way, reading the body here.
        let req_cc = CacheControl::parse_request(&self.parts.headers);
        let primary = self.key.primary;
        let ctx = RequestCtx::new(
            shared.clone(),
            self.parts,
            primary,
            req_cc,
            None,
            Instant::now(),
        );
        let (res, verdict) = ctx.store_or_pass(res, ex);
        if verdict == StoreVerdict::Passed {
            // The origin no longer lets this be cached (private, no-store, Set-Cookie...): stop
            // serving the old copy.
            shared.store.remove(&self.key);
        }
        let mut body = std::pin::pin!(res.into_body());
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            if frame.is_err() {
                break;
            }
        }
    }
}
