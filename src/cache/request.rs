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
    pub(crate) fn lookup<B>(&mut self) -> Option<Response<CacheBody<B>>> {
        self.found = lookup_parts(&self.shared, self.primary, &self.parts);
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
            Found::VaryMiss(vary) => {
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
            Found::VaryMiss(v) => Some(v.clone()),
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
            Found::UriMiss => Fwd::UriMiss,
        };
        let stale = match std::mem::replace(&mut self.found, Found::UriMiss) {
            Found::Entry(entry, _) => Some(entry),
            _ => None,
        };
        let mut origin_parts = clone_parts(&self.parts);
        if let Some(entry) = &stale {
            policy::add_validators(&entry.headers, &mut origin_parts.headers);
        }
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
            Some(entry) => self.revalidated(svc, res, entry, ex).await,
            None => Forwarded::Origin(res, ex),
        }
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
        let variant = self.shared.keyer.variant(&entry.vary, &self.parts.headers);
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
            variant: self
                .shared
                .keyer
                .variant(&updated.vary, &self.parts.headers),
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
        // Never stored, but this client's: cookies the 304 sets reach it.
        for cookie in not_modified.get_all(header::SET_COOKIE) {
            res.headers_mut().append(header::SET_COOKIE, cookie.clone());
        }
        Some(res)
    }

    /// Phase 5, store: the origin's response is stored as its body streams to the client, when
    /// RFC 9111 and the configuration allow; else passed through. Either way it gets this
    /// cache's `Cache-Status` member. The verdict is typed state, never read back from headers.
    pub(crate) fn store_or_pass<B: Body>(
        self,
        mut res: Response<B>,
        ex: Exchange,
    ) -> (Response<CacheBody<B>>, StoreVerdict) {
        let shared = &*self.shared;
        shared.counters.count(CacheOutcome::Miss);
        let status = res.status();
        let res_cc = CacheControl::parse(res.headers());
        let policy = StorePolicy {
            default_ttl: shared.default_ttl(&self.parts),
            ..shared.policy.clone()
        };
        let tags = parse_tags(shared, res.headers());
        strip_tags(shared, res.headers_mut());
        let verdict = self.verdict(&res, &res_cc, &policy);
        let vary = parse_vary(res.headers());
        let lifetime =
            policy::freshness_lifetime(status, res.headers(), &res_cc, ex.response_time, &policy);
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
        res.extensions_mut().insert(CacheOutcome::Miss);
        let (Ok(()), Some(vary)) = (verdict, vary) else {
            cs.detail = Some(match verdict {
                Err(reason) => reason.as_str(),
                Ok(()) => "vary-star",
            });
            cs.append_to(res.headers_mut());
            return (res.map(CacheBody::passthrough), StoreVerdict::Passed);
        };
        cs.stored = true;
        cs.ttl = Some(lifetime.as_secs() as i64);
        // The stored copy gets the client-visible headers, before Cache-Status is added.
        let mut headers = res.headers().clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(&AGE);
        cs.append_to(res.headers_mut());
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

    /// Whether RFC 9111 and the configuration let the response be stored.
    fn verdict<B: Body>(
        &self,
        res: &Response<B>,
        res_cc: &CacheControl,
        policy: &StorePolicy,
    ) -> Result<(), Uncacheable> {
        let parts = &self.parts;
        let mut verdict = policy::storable(
            &parts.method,
            &parts.headers,
            &self.req_cc,
            res.status(),
            res.headers(),
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
    match url.variant(variant) {
        Some(entry)
            if shared.keyer.same_target(&entry.uri, uri)
                && super::key::vary_matches(&entry.vary, &entry.vary_values, headers)
                && super::key::coding_acceptable(&entry.headers, headers) =>
        {
            match shared.validity(entry) {
                Validity::Gone => {
                    shared.store.remove(&EntryKey { primary, variant });
                    Found::UriMiss
                }
                v => Found::Entry(entry.clone(), v),
            }
        }
        _ => Found::VaryMiss(url.vary.clone()),
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
    !parts.headers.contains_key(header::AUTHORIZATION)
        && !parts.headers.contains_key(header::COOKIE)
}

pub(crate) fn clone_parts(parts: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req.into_parts().0
}

pub(crate) async fn call_ready<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

/// RFC 9111 4.4: a non-error response to an unsafe request invalidates the target URI and the
/// same-origin `Location` and `Content-Location`.
pub(crate) fn invalidate_after_unsafe(
    shared: &Shared,
    uri: &http::Uri,
    host: Option<&HeaderValue>,
    res_headers: &HeaderMap,
) {
    let purge = |pq: &str| shared.purge(Target::Uri(pq), true);
    if let Some(pq) = uri.path_and_query() {
        purge(pq.as_str());
    }
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = res_headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(target) = value.parse::<http::Uri>() else {
            continue;
        };
        // Relative references are same-origin; absolute ones only with the request's authority.
        let same_origin = match target.authority() {
            None => true,
            Some(a) => {
                uri.authority()
                    .map(|u| u.as_str().eq_ignore_ascii_case(a.as_str()))
                    .unwrap_or(false)
                    || host
                        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()))
            }
        };
        if same_origin {
            if let Some(pq) = target.path_and_query() {
                if pq.as_str().starts_with('/') {
                    purge(pq.as_str());
                }
            }
        }
    }
}

pub(crate) fn host(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned()
}
