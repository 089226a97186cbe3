//! One request's way through the cache, as named phases over one per-request context,
//! [`RequestCtx`]:
//!
//! 1. [`lookup`](RequestCtx::lookup): the memory tier; a usable entry is served.
//! 2. [`coalesce`](RequestCtx::coalesce): one origin request per key at a time; followers wait
//!    for the leader's response and are served from it.
//! 3. [`tier_lookup`](RequestCtx::tier_lookup): the lower tiers ([`Tiers`](super::tiers::Tiers)),
//!    and on a cold key the fleet-wide lease.
//! 4. [`forward`](RequestCtx::forward): the origin, with the stored entry's validators when
//!    there is one (revalidation: a `304` refreshes it, a failure serves it stale-if-error).
//! 5. [`store_or_pass`](RequestCtx::store_or_pass): the origin's response is stored as its body
//!    streams to the client ([`StoreJob`]), or passed through.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::body::CacheBody;
use super::directives::CacheControl;
use super::entry::{parse_tags, refreshed_entry, stale_windows, strip_hop_by_hop, strip_tags};
use super::flight::{self, Landing, Role};
use super::head::{self, Fields};
use super::key::{parse_vary, Primary};
use super::policy::{self, Serve, StorePolicy, Uncacheable};
use super::purge::{Target, Validity};
use super::respond::{decide_without_origin, serve, stale_if_error, Served, AGE};
use super::snapshot::CacheOutcome;
use super::state::{Exchange, Shared, Stamp};
use super::status::{CacheStatus, Fwd};
use super::store::{Entry, EntryKey};
use super::store_job::{store_refreshed, StoreJob, Waiters};
use super::tiers::TierQuery;
use crate::reject::Rejected;
use crate::timings::Timings;
use crate::util::header::contains;

/// The inner service as the request path needs it: cloned for background refreshes, its
/// futures and errors sent across tasks. Implemented for every such service.
pub(crate) trait Origin<ReqBody, ResBody>:
    Service<
        Request<ReqBody>,
        Response = Response<ResBody>,
        Future: Send + 'static,
        Error: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<T, ReqBody, ResBody> Origin<ReqBody, ResBody> for T
where
    T: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    T::Future: Send + 'static,
    T::Error: Send + 'static,
{
}

/// The origin's response body as the cache needs it: read into entries, sent across tasks.
pub(crate) trait OriginBody:
    Body<Data: bytes::Buf + Send, Error: Into<crate::error::BoxError>> + Send + 'static
{
}

impl<B> OriginBody for B
where
    B: Body + Send + 'static,
    B::Data: bytes::Buf + Send,
    B::Error: Into<crate::error::BoxError>,
{
}

/// One request's way through the cache, from the lookup to the store.
pub(crate) struct RequestCtx {
    pub(crate) shared: Arc<Shared>,
    /// The request head; the body goes to the origin.
    pub(crate) parts: Parts,
    /// The memory tier's key of the URL.
    pub(crate) primary: Primary,
    /// The request's `Cache-Control`.
    pub(crate) req_cc: CacheControl,
    /// What the lookups found so far.
    found: Found,
    /// The request waited for another request's origin response (`Cache-Status: collapsed`).
    collapsed: bool,
    /// What a store owes to others: the flight's followers, the lower tiers.
    waiters: Waiters,
    /// `Cache-Status` `detail` when nothing else is said (a lower tier failed).
    detail: Option<&'static str>,
    /// An entry served within stale-while-revalidate: the caller refreshes it in the background.
    pub(crate) refresh: Option<Arc<Entry>>,
    timings: Option<Timings>,
    /// When the cache started on this request.
    start: Instant,
}

/// What forwarding a request to the origin came to.
pub(crate) enum Forwarded<B, E> {
    /// Served from the cache after all: stale-if-error, or a `304` that refreshed the entry.
    Served(Response<CacheBody<B>>),
    /// The origin's response, to store or pass on.
    Origin(Response<B>, Exchange),
    /// The origin failed and nothing stored may stand in.
    Failed(E),
}

/// Whether [`RequestCtx::store_or_pass`] stores the response (as its body streams) or passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreVerdict {
    Storing,
    Passed,
}

/// A storable response's head, on its way into an entry.
struct Fresh {
    status: StatusCode,
    headers: HeaderMap,
    cc: CacheControl,
    lifetime: std::time::Duration,
    initial_age: std::time::Duration,
    tags: Box<[Arc<str>]>,
}

impl RequestCtx {
    pub(crate) fn new(
        shared: Arc<Shared>,
        parts: Parts,
        primary: Primary,
        req_cc: CacheControl,
        timings: Option<Timings>,
        start: Instant,
    ) -> Self {
        Self {
            shared,
            parts,
            primary,
            req_cc,
            found: Found::UriMiss,
            collapsed: false,
            waiters: Waiters::default(),
            detail: None,
            refresh: None,
            timings,
            start,
        }
    }

    fn serve<B>(&self, entry: &Entry, now: Instant, served: Served) -> Response<CacheBody<B>> {
        let head_only = self.parts.method == Method::HEAD;
        serve(
            &self.shared,
            entry,
            &self.parts.headers,
            head_only,
            now,
            served,
        )
    }

    /// Phase 1, lookup: the memory tier. A fresh (or acceptable) stored response is served:
    /// normally `try_serve` answered it already, but the cache may have changed since.
    /// `found`: what the memory tier held when the request was looked up just before, with
    /// the same key and headers (the hit check's lookup); decided on instead of looking up
    /// again.
    pub(crate) fn lookup<B>(&mut self, found: Option<Found>) -> Option<Response<CacheBody<B>>> {
        self.found = found.unwrap_or_else(|| lookup_parts(&self.shared, self.primary, &self.parts));
        if let Some(t) = &self.timings {
            t.record("cache", self.start.elapsed());
        }
        let Found::Entry(entry, validity) = &self.found else {
            return None;
        };
        let now = Instant::now();
        let served = decide_without_origin(entry, *validity, &self.req_cc, now)?;
        if served.refresh {
            self.refresh = Some(entry.clone());
        }
        Some(self.serve(entry, now, served))
    }

    /// Phase 2, coalesce: past this point the origin is asked, one request per key at a time.
    /// The leader goes on (its flight in the waiters); a follower waits for the leader's
    /// response and is served from it when it is stored and fresh.
    pub(crate) async fn coalesce<B>(&mut self) -> Option<Response<CacheBody<B>>> {
        let stored = matches!(self.found, Found::Entry(..));
        if !self.shared.coalesce || !coalescible(&self.parts) || stored {
            return None;
        }
        for _ in 0..3 {
            let rx = match self.shared.flights.join(self.flight_key()) {
                Role::Leader(g) => {
                    self.waiters.flight = Some(g);
                    return None;
                }
                Role::Follower(rx) => rx,
            };
            let waited = Instant::now();
            let landed = tokio::time::timeout(self.shared.coalesce_timeout, flight::wait(rx))
                .await
                .unwrap_or(Landing::NotStored);
            if let Some(t) = &self.timings {
                t.record("coalesce", waited.elapsed());
            }
            if landed != Landing::Stored {
                return None;
            }
            self.found = lookup_parts(&self.shared, self.primary, &self.parts);
            if let Some(res) = self.serve_collapsed() {
                return Some(res);
            }
            // Another variant, or already stale: try to lead (or follow) again.
            self.collapsed = true;
        }
        None
    }

    /// The key of the request's flight: the URL, or its variant once the URL's `Vary` is known.
    fn flight_key(&self) -> u64 {
        match &self.found {
            Found::VaryMiss(vary) | Found::PartMiss(vary) => {
                let variant = self.shared.keyer.variant(vary, &self.parts.headers);
                self.primary ^ variant.rotate_left(17)
            }
            _ => self.primary,
        }
    }

    /// The leader's response, fresh, for a follower.
    fn serve_collapsed<B>(&self) -> Option<Response<CacheBody<B>>> {
        let Found::Entry(entry, Validity::Valid) = &self.found else {
            return None;
        };
        let now = Instant::now();
        let decision =
            policy::serve_decision(entry.age(now), entry.lifetime, &self.req_cc, &entry.cc);
        if !matches!(decision, Serve::Fresh) {
            return None;
        }
        self.shared
            .counters
            .collapsed
            .fetch_add(1, Ordering::Relaxed);
        let mut served = Served::hit();
        served.collapsed = true;
        Some(self.serve(entry, now, served))
    }

    /// Phase 3, tier lookup: the tiers under memory. A usable entry is served; a stale one
    /// becomes the entry to revalidate.
    pub(crate) async fn tier_lookup<B>(&mut self) -> Option<Response<CacheBody<B>>> {
        let tiers = &self.shared.tiers;
        if !tiers.has_lower() {
            return None;
        }
        let hint = match &self.found {
            Found::VaryMiss(v) | Found::PartMiss(v) => Some(v.clone()),
            Found::Entry(e, _) => Some(e.vary.clone()),
            Found::UriMiss => None,
        };
        let query = TierQuery {
            primary: self.primary,
            hint,
            cold: self.waiters.flight.is_some() && !matches!(self.found, Found::Entry(..)),
            timings: self.timings.as_ref(),
        };
        let found = tiers
            .lookup(&self.shared, &self.parts, query, &mut self.waiters.fleet)
            .await;
        self.detail = found.detail;
        let hit = found.hit?;
        let now = Instant::now();
        let Some(mut served) = decide_without_origin(&hit.entry, hit.validity, &self.req_cc, now)
        else {
            tiers.count(None);
            if !matches!(self.found, Found::Entry(..)) {
                self.found = Found::Entry(hit.entry, hit.validity);
            }
            return None;
        };
        tiers.count(Some(served.outcome == CacheOutcome::Stale));
        if served.refresh {
            self.refresh = Some(hit.entry.clone());
        }
        served.detail = served.detail.or(Some("redis"));
        served.collapsed = hit.collapsed;
        if let Some(g) = self.waiters.flight.take() {
            g.land(Landing::Stored);
        }
        Some(self.serve(&hit.entry, now, served))
    }

    /// Phase 4, forward or revalidate: asks the origin, with the stored entry's validators
    /// when there is one.
    pub(crate) async fn forward<S, ReqBody, ResBody>(
        &mut self,
        svc: &mut S,
        body: ReqBody,
    ) -> Forwarded<ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        ReqBody: Default,
    {
        let fwd = match &self.found {
            // Fresh, but the request's own directives (no-cache, max-age, min-fresh) sent it on.
            Found::Entry(e, Validity::Valid) if e.age(Instant::now()) < e.lifetime => Fwd::Request,
            Found::Entry(..) => Fwd::Stale,
            Found::VaryMiss(_) => Fwd::VaryMiss,
            Found::PartMiss(_) => Fwd::Partial,
            Found::UriMiss => Fwd::UriMiss,
        };
        let stale = match std::mem::replace(&mut self.found, Found::UriMiss) {
            Found::Entry(entry, _) => Some(entry),
            _ => None,
        };
        let origin_parts = match &stale {
            Some(entry) => {
                let mut parts = clone_parts(&self.parts);
                policy::add_validators(&entry.headers, &mut parts.headers);
                parts
            }
            None => self.origin_head(),
        };
        let mut ex = Exchange::start(&self.shared, fwd);
        let result = svc.call(Request::from_parts(origin_parts, body)).await;
        ex.response_time = std::time::SystemTime::now();
        let res = match result {
            Ok(res) => res,
            Err(err) => {
                return match stale.as_ref().and_then(stale_if_error) {
                    Some(entry) => {
                        let served = Served::stale("stale-if-error");
                        Forwarded::Served(self.serve(&entry, Instant::now(), served))
                    }
                    None => Forwarded::Failed(err),
                }
            }
        };
        match stale {
            // Boxed: a revalidation's future holds a second origin call, and a plain miss
            // (most of them) would carry its room.
            Some(entry) => Box::pin(self.revalidated(svc, res, entry, ex)).await,
            None => Forwarded::Origin(res, ex),
        }
    }

    /// The head of the origin request on a miss with nothing stored to revalidate. The
    /// extensions go with it instead of being copied when nothing after the forward reads them
    /// (only the key and TTL hooks and route TTLs do; a revalidation's re-fetch does too, but
    /// there is none without a stored entry).
    fn origin_head(&mut self) -> Parts {
        let shared = &self.shared;
        if shared.key_fn.is_some() || shared.ttl_fn.is_some() || !shared.route_ttls.is_empty() {
            return clone_parts(&self.parts);
        }
        let extensions = std::mem::take(&mut self.parts.extensions);
        head_of(&self.parts, extensions)
    }

    /// Phase 4, the origin's answer to a revalidation: a failure serves the entry
    /// stale-if-error, a matching `304` refreshes it, a `304` that does not match fetches the
    /// response whole.
    async fn revalidated<S, ReqBody, ResBody>(
        &mut self,
        svc: &mut S,
        res: Response<ResBody>,
        entry: Arc<Entry>,
        mut ex: Exchange,
    ) -> Forwarded<ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        ReqBody: Default,
    {
        let status = res.status();
        if status.is_server_error() || res.extensions().get::<Rejected>().is_some() {
            if let Some(entry) = stale_if_error(&entry) {
                let mut served = Served::stale("stale-if-error");
                served.fwd = Some(ex.fwd);
                served.fwd_status = Some(status.as_u16());
                return Forwarded::Served(self.serve(&entry, Instant::now(), served));
            }
        }
        if status != StatusCode::NOT_MODIFIED {
            return Forwarded::Origin(res, ex);
        }
        let (res_parts, _) = res.into_parts();
        if let Some(res) = self.refresh_from_304(&entry, &res_parts.headers, ex) {
            return Forwarded::Served(res);
        }
        // The 304 does not match what is stored: fetch it whole. The request body is gone,
        // but only GET and HEAD get here, whose bodies carry nothing.
        let variant = self.shared.keyer.entry_variant(&entry);
        self.shared.store.remove(&EntryKey {
            primary: self.primary,
            variant,
        });
        let mut again = svc.clone();
        let req = Request::from_parts(clone_parts(&self.parts), ReqBody::default());
        match call_ready(&mut again, req).await {
            Ok(res) => {
                ex.response_time = std::time::SystemTime::now();
                Forwarded::Origin(res, ex)
            }
            Err(err) => Forwarded::Failed(err),
        }
    }

    /// A `304` that matches the stored entry refreshes it (stored again unless the `304` made
    /// it `private` or `no-store`) and serves it; `None` when it does not match.
    fn refresh_from_304<B>(
        &mut self,
        entry: &Entry,
        not_modified: &HeaderMap,
        ex: Exchange,
    ) -> Option<Response<CacheBody<B>>> {
        let (updated, storable) =
            refreshed_entry(&self.shared, entry, not_modified, &self.parts, ex)?;
        let key = EntryKey {
            primary: self.primary,
            variant: self.shared.keyer.entry_variant(&updated),
        };
        let updated = Arc::new(updated);
        let mut served = Served::hit();
        served.fwd = Some(ex.fwd);
        served.fwd_status = Some(304);
        if storable {
            let waiters = std::mem::take(&mut self.waiters);
            store_refreshed(&self.shared, key, &updated, &self.parts, waiters);
            served.stored = true;
        } else {
            self.shared.store.remove(&key);
            served.detail = Some("uncacheable");
        }
        let mut res = self.serve(&updated, Instant::now(), served);
        // This client's (and stored only when the cache stores cookies): the cookies the 304
        // sets replace the stored ones (RFC 9111 3.2), never add to them.
        if not_modified.contains_key(header::SET_COOKIE) {
            let headers = res.headers_mut();
            headers.remove(header::SET_COOKIE);
            for cookie in not_modified.get_all(header::SET_COOKIE) {
                headers.append(header::SET_COOKIE, cookie.clone());
            }
        }
        Some(res)
    }

    /// Phase 5, store: the origin's response is stored as its body streams to the client, when
    /// RFC 9111 and the configuration allow; else passed through. Either way it gets this
    /// cache's `Cache-Status` member. The verdict is typed state, never read back from headers.
    pub(crate) fn store_or_pass<B: Body>(
        mut self,
        mut res: Response<B>,
        ex: Exchange,
    ) -> (Response<CacheBody<B>>, StoreVerdict) {
        let updated_complete = self.update_from(res.status(), res.headers(), ex);
        let shared = &*self.shared;
        let status = res.status();
        let fields = Fields::scan(res.headers(), &shared.policy.targeted, &shared.tag_header);
        let res_cc = if fields.may_have(head::CONTROL) {
            CacheControl::parse_response(res.headers(), &shared.policy.targeted)
        } else {
            CacheControl::default()
        };
        let policy = StorePolicy {
            default_ttl: shared.default_ttl(&self.parts),
            ..shared.policy.clone()
        };
        let tags = if fields.may_have(head::TAGS) {
            let tags = parse_tags(shared, res.headers());
            strip_tags(shared, res.headers_mut());
            tags
        } else {
            Box::default()
        };
        let mut verdict = self.verdict(&res, fields, &res_cc, &policy);
        if updated_complete {
            // The stored complete response stays; a part of it is not stored over it.
            verdict = verdict.and(Err(Uncacheable::PartialContent));
        }
        let vary = if fields.may_have(head::VARY_FIELD) {
            parse_vary(res.headers())
        } else {
            Some(Vec::new())
        };
        shared
            .counters
            .count_origin(verdict.is_ok() && vary.is_some());
        let lifetime = policy::freshness_lifetime(
            status,
            (res.headers(), fields),
            &res_cc,
            ex.response_time,
            &policy,
        );
        let mut cs = CacheStatus {
            name: &shared.name,
            hit: false,
            fwd: Some(ex.fwd),
            fwd_status: Some(status.as_u16()),
            stored: false,
            collapsed: self.collapsed,
            ttl: None,
            detail: self.detail,
        };
        shared.mark(&mut res, CacheOutcome::Miss);
        let (Ok(()), Some(vary)) = (verdict, vary) else {
            cs.detail = Some(match verdict {
                Err(reason) => reason.as_str(),
                Ok(()) => "vary-star",
            });
            cs.append_to(res.headers_mut(), &shared.statuses);
            return (res.map(CacheBody::passthrough), StoreVerdict::Passed);
        };
        // Said only when it cannot fail for its size: a body of unknown length may still grow
        // past the entry limit (then it is not stored, and the header is already sent).
        cs.stored = res.body().size_hint().upper().is_some();
        cs.ttl = Some(lifetime.as_secs() as i64);
        // The stored copy gets the client-visible headers, before Cache-Status is added.
        let mut headers = res.headers().clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(&AGE);
        // RFC 9110 6.6.1: a cache adds the `Date` a response lacks (hyper adds its own outside
        // this layer); conditionals by date are then answered from it.
        if !headers.contains_key(header::DATE) {
            if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(ex.response_time)) {
                headers.insert(header::DATE, date);
            }
        }
        cs.append_to(res.headers_mut(), &shared.statuses);
        let fresh = Fresh {
            status,
            headers,
            cc: res_cc,
            lifetime,
            initial_age: policy::initial_age(res.headers(), ex.request_time, ex.response_time),
            tags,
        };
        let job = self.store_job(vary.into(), fresh, ex.stamp);
        (
            res.map(|b| CacheBody::storing(b, job)),
            StoreVerdict::Storing,
        )
    }

    /// The stored response updated by a `200` to a `HEAD` or a `206` of it; `true` when a
    /// stored complete response was updated by a part (which is then not stored over it).
    fn update_from(&mut self, status: StatusCode, headers: &HeaderMap, ex: Exchange) -> bool {
        match status {
            StatusCode::OK if self.parts.method == Method::HEAD => {
                self.update_from_head(headers, ex);
                false
            }
            StatusCode::PARTIAL_CONTENT => self.update_from_partial(headers, ex),
            _ => false,
        }
    }

    /// RFC 9111 4.3.5: a `200` to a `HEAD` the cache forwarded updates the stored `GET`
    /// response it selects (the same validators and length), like a `304` would; a stored
    /// response it does not select is invalidated.
    fn update_from_head(&mut self, head: &HeaderMap, ex: Exchange) {
        let Some((entry, key)) = self.stored() else {
            return;
        };
        let validated =
            |h: &HeaderMap| h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED);
        let length = |h: &HeaderMap| h.get(header::CONTENT_LENGTH).cloned();
        let same_length = match (length(head), length(&entry.headers)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if !(same_length && (validated(head) || !validated(&entry.headers)))
            || !self.update_stored(&entry, key, head, ex)
        {
            self.shared.store.remove(&key);
        }
    }

    /// RFC 9111 3.4 and 4.3.4: a `206` of the stored complete response (the same strong
    /// `ETag`) updates its header fields, but not those that describe the part
    /// (`Content-Range`, `Content-Length`, a multipart `Content-Type`). `true` when the
    /// complete response was updated (and stays).
    fn update_from_partial(&mut self, partial: &HeaderMap, ex: Exchange) -> bool {
        let Some((entry, key)) = self.stored() else {
            return false;
        };
        if entry.status != StatusCode::OK || !policy::same_strong_etag(&entry.headers, partial) {
            return false;
        }
        let mut fields = partial.clone();
        fields.remove(header::CONTENT_RANGE);
        let multipart = fields
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"multipart/byteranges"));
        if multipart {
            fields.remove(header::CONTENT_TYPE);
        }
        let updated = self.update_stored(&entry, key, &fields, ex);
        if !updated {
            self.shared.store.remove(&key);
        }
        updated
    }

    /// The stored response this request selects, and where it lives.
    fn stored(&self) -> Option<(Arc<Entry>, EntryKey)> {
        let Found::Entry(entry, _) = lookup_parts(&self.shared, self.primary, &self.parts) else {
            return None;
        };
        let variant = self.shared.keyer.entry_variant(&entry);
        let key = EntryKey {
            primary: self.primary,
            variant,
        };
        Some((entry, key))
    }

    /// Stores `entry` updated with `fields` (as from a `304`); `false` when the fields do not
    /// select it or make it unstorable.
    fn update_stored(
        &mut self,
        entry: &Entry,
        key: EntryKey,
        fields: &HeaderMap,
        ex: Exchange,
    ) -> bool {
        match refreshed_entry(&self.shared, entry, fields, &self.parts, ex) {
            Some((updated, true)) => {
                let waiters = std::mem::take(&mut self.waiters);
                store_refreshed(&self.shared, key, &Arc::new(updated), &self.parts, waiters);
                true
            }
            _ => false,
        }
    }

    /// Whether RFC 9111 and the configuration let the response be stored.
    fn verdict<B: Body>(
        &self,
        res: &Response<B>,
        fields: Fields,
        res_cc: &CacheControl,
        policy: &StorePolicy,
    ) -> Result<(), Uncacheable> {
        let parts = &self.parts;
        let mut verdict = policy::storable(
            &parts.method,
            &parts.headers,
            &self.req_cc,
            res.status(),
            (res.headers(), fields),
            res_cc,
            policy,
        );
        let hint = res.body().size_hint();
        let max = self.shared.max_entry_bytes as u64;
        let too_large = hint
            .exact()
            .or_else(|| hint.upper())
            .is_some_and(|n| n > max)
            || hint.lower() > max;
        if verdict.is_ok() && too_large {
            verdict = Err(Uncacheable::TooLarge);
        }
        if verdict.is_ok() && parts.method == Method::HEAD {
            verdict = Err(Uncacheable::Method);
        }
        if res.extensions().get::<Rejected>().is_some() {
            verdict = Err(Uncacheable::Status);
        }
        verdict
    }

    /// The entry of a storable response, waiting for its body.
    fn store_job(self, vary: Arc<[HeaderName]>, fresh: Fresh, stamp: Stamp) -> StoreJob {
        let RequestCtx {
            shared,
            parts,
            primary,
            mut waiters,
            ..
        } = self;
        let (swr, sie) = stale_windows(&shared, &fresh.cc);
        let key = EntryKey {
            primary,
            variant: shared.keyer.variant(&vary, &parts.headers),
        };
        let vary_values = super::key::vary_values(&vary, &parts.headers);
        waiters.for_vary(&shared, &vary, &parts);
        let entry = Entry {
            uri: detached(parts.uri),
            status: fresh.status,
            headers: fresh.headers,
            body: Bytes::new(),
            vary,
            vary_values,
            cc: fresh.cc,
            initial_age: fresh.initial_age,
            stored_at: Instant::now(),
            lifetime: fresh.lifetime,
            stale_while_revalidate: swr,
            stale_if_error: sie,
            tags: fresh.tags,
            generation: stamp.local,
            fleet_generation: stamp.fleet,
            hits: Default::default(),
        };
        let max = shared.max_entry_bytes;
        StoreJob::new(shared, key, entry, waiters, max)
    }
}

/// What the lookup found.
pub(crate) enum Found {
    Entry(Arc<Entry>, Validity),
    /// No response for this URL.
    UriMiss,
    /// The URL has responses, but not for this request's variant.
    VaryMiss(Arc<[HeaderName]>),
    /// The variant is a stored part that does not hold the requested range.
    PartMiss(Arc<[HeaderName]>),
}

pub(crate) fn lookup_parts(shared: &Shared, primary: Primary, parts: &Parts) -> Found {
    lookup_head(shared, primary, &parts.uri, &parts.headers)
}

pub(crate) fn lookup_head(
    shared: &Shared,
    primary: Primary,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Found {
    let Some(url) = shared.store.url(primary) else {
        return Found::UriMiss;
    };
    let variant = shared.keyer.variant(&url.vary, headers);
    let usable = |entry: &Entry| {
        shared.keyer.same_target(&entry.uri, uri)
            && super::key::coding_usable(entry, headers, shared.policy.require_accepted_coding)
            && super::range::usable(entry, headers)
    };
    let found = match url.variant(variant) {
        Some(entry)
            if super::key::vary_matches(&entry.vary, &entry.vary_values, headers)
                && usable(entry) =>
        {
            Some((variant, entry))
        }
        // Not stored for these exact values: a variant in the language the request prefers
        // may still do (`Vary: Accept-Language`).
        _ => url
            .variants()
            .find(|(_, e)| super::key::selects_by_language(e, headers) && usable(e)),
    };
    let Some((variant, entry)) = found else {
        // A stored part of this variant that does not hold the range: `fwd=partial`.
        let part = url
            .variant(variant)
            .is_some_and(|e| e.status == StatusCode::PARTIAL_CONTENT);
        return match part {
            true => Found::PartMiss(url.vary.clone()),
            false => Found::VaryMiss(url.vary.clone()),
        };
    };
    match shared.validity(entry) {
        Validity::Gone => {
            shared.store.remove(&EntryKey { primary, variant });
            Found::UriMiss
        }
        v => Found::Entry(entry.clone(), v),
    }
}

/// `uri` in an allocation of its own. A server's request URI shares the buffer its request
/// head was read into (hyper: 8 KiB or more): stored as is, it would keep that buffer for as
/// long as the entry lives, a third more than a 23 KB entry holds.
fn detached(uri: http::Uri) -> http::Uri {
    let copy = bytes::Bytes::copy_from_slice(uri.to_string().as_bytes());
    http::Uri::from_maybe_shared(copy).unwrap_or(uri)
}

/// Requests that may wait for another client's origin response: no credentials of their own.
pub(crate) fn coalescible(parts: &Parts) -> bool {
    !contains(&parts.headers, &header::AUTHORIZATION) && !contains(&parts.headers, &header::COOKIE)
}

pub(crate) fn clone_parts(parts: &Parts) -> Parts {
    head_of(parts, parts.extensions.clone())
}

/// A copy of `parts`' method, URI, version and headers, with `extensions` (`Parts` has no
/// public constructor).
pub(crate) fn head_of(parts: &Parts, extensions: http::Extensions) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = extensions;
    req.into_parts().0
}

pub(crate) async fn call_ready<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

/// RFC 9111 4.4: a non-error response (`2xx`, `3xx`) to an unsafe request invalidates the
/// target URI and the same-origin `Location` and `Content-Location`; all but the target with
/// `except_target` (whose caller purges it itself, [`Shared::purge_before_store`]).
pub(crate) fn invalidate_after_unsafe<B>(
    shared: &Shared,
    uri: &http::Uri,
    host: Option<&HeaderValue>,
    res: &Response<B>,
    except_target: bool,
) {
    if !(res.status().is_success() || res.status().is_redirection()) {
        return;
    }
    let res_headers = res.headers();
    let target = uri.path_and_query().map(|pq| pq.as_str());
    let purge = |pq: &str| {
        if !(except_target && Some(pq) == target) {
            shared.purge(Target::Uri(pq), true);
        }
    };
    if let Some(pq) = target {
        purge(pq);
    }
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let target = res_headers
            .get(&name)
            .and_then(|v| same_origin_target(uri, host, v));
        if let Some(pq) = target.as_ref().and_then(|t| t.path_and_query()) {
            purge(pq.as_str());
        }
    }
}

/// The URI a `Location` or `Content-Location` value names, when it has the request's origin:
/// relative references always, absolute ones with the request's authority.
pub(crate) fn same_origin_target(
    uri: &http::Uri,
    host: Option<&HeaderValue>,
    value: &HeaderValue,
) -> Option<http::Uri> {
    let target = value.to_str().ok()?.parse::<http::Uri>().ok()?;
    let same_origin = match target.authority() {
        None => true,
        Some(a) => {
            uri.authority()
                .is_some_and(|u| u.as_str().eq_ignore_ascii_case(a.as_str()))
                || host.is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()))
        }
    };
    let rooted = target
        .path_and_query()
        .is_some_and(|pq| pq.as_str().starts_with('/'));
    (same_origin && rooted).then_some(target)
}

pub(crate) fn host(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned()
}
