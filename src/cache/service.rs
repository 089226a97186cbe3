use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::body::{CacheBody, StoreJob};
use super::directives::CacheControl;
use super::flight::{self, Landing, Role};
use super::key::{is_cacheable_method, parse_vary, Primary};
use super::policy::{self, Serve, StorePolicy};
use super::purge::{Target, Validity};
use super::snapshot::CacheOutcome;
use super::state::{Shared, Stamp};
use super::status::{CacheStatus, Fwd};
use super::store::{Entry, EntryKey};
use crate::error::BoxError;
use crate::reject::Rejected;
use crate::timings::Timings;

/// An HTTP response cache in front of the inner service. Made by
/// [`ResponseCacheLayer`](super::ResponseCacheLayer).
#[derive(Clone)]
pub struct ResponseCache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ResponseCache<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    crate::util::macros::define_inner_service_accessors!();
}

impl<S: std::fmt::Debug> std::fmt::Debug for ResponseCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`ResponseCache`]: ready at once for a response served from the
    /// cache, the origin's round trip otherwise.
    pub struct ResponseFuture<B, E> {
        #[pin]
        kind: FutureKind<B, E>,
    }
}

type BoxFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

pin_project_lite::pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<B, E> {
        Ready { res: Option<Response<CacheBody<B>>> },
        Origin { #[pin] fut: BoxFuture<B, E> },
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => panic!("ResponseFuture polled after completion"),
            },
            FutureKindProj::Origin { fut } => fut.poll(cx),
        }
    }
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseCache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Buf + Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // Hits are answered here, synchronously: no origin, no boxed future.
        if let Some(res) = try_serve(&self.shared, &self.inner, &req) {
            return ResponseFuture {
                kind: FutureKind::Ready { res: Some(res) },
            };
        }
        // The clone takes the place of the service that was polled ready, which goes with the
        // request (tower's usual dance).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            kind: FutureKind::Origin {
                fut: Box::pin(handle(self.shared.clone(), inner, req)),
            },
        }
    }
}

/// Serves `req` from the cache when a stored response may be used without asking the origin:
/// fresh, acceptable to the request's `max-stale`, or within stale-while-revalidate (which also
/// starts the background refresh). `None`: the request needs the origin.
fn try_serve<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    svc: &S,
    req: &Request<ReqBody>,
) -> Option<Response<CacheBody<ResBody>>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Buf + Send,
    ResBody::Error: Into<BoxError>,
{
    if !is_cacheable_method(req.method()) {
        return None;
    }
    let req_cc = CacheControl::parse_request(req.headers());
    if req_cc.no_store {
        return None;
    }
    let start = Instant::now();
    let primary = shared.keyer.primary_of(req, shared.key_fn.as_deref());
    let Found::Entry(entry, validity) = lookup_head(shared, primary, req.uri(), req.headers())
    else {
        return None;
    };
    let served = decide_without_origin(&entry, validity, &req_cc, start)?;
    if let Some(t) = Timings::from_request(req) {
        t.record("cache", start.elapsed());
    }
    if served.refresh {
        let (parts, _) = clone_request_head(req).into_parts();
        refresh_in_background(shared, svc, entry.clone(), primary, &parts);
    }
    #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
    if served.outcome == CacheOutcome::Hit {
        super::recompress::on_hit(shared, primary, &entry, req.headers());
    }
    let head_only = req.method() == Method::HEAD;
    Some(serve(
        shared,
        &entry,
        req.headers(),
        head_only,
        start,
        served,
    ))
}

/// Whether a stored entry may be served without the origin, and how.
fn decide_without_origin(
    entry: &Entry,
    validity: Validity,
    req_cc: &CacheControl,
    now: Instant,
) -> Option<Served> {
    let age = entry.age(now);
    let lifetime = match validity {
        Validity::Stale => Duration::ZERO,
        _ => entry.lifetime,
    };
    match policy::serve_decision(age, lifetime, req_cc, &entry.cc) {
        Serve::Fresh => Some(Served::hit()),
        Serve::StaleAllowed => Some(Served::stale("max-stale")),
        Serve::Revalidate => {
            // A soft-purged entry went stale at the purge, not at the end of its lifetime.
            let stale_for = match validity {
                Validity::Stale => Duration::ZERO,
                _ => age.saturating_sub(lifetime),
            };
            let really_stale = validity == Validity::Stale || age >= entry.lifetime;
            let client_wants_origin =
                req_cc.no_cache || req_cc.max_age.is_some() || req_cc.min_fresh.is_some();
            (really_stale
                && !client_wants_origin
                && within(stale_for, entry.stale_while_revalidate))
            .then(Served::stale_while_revalidate)
        }
    }
}

fn clone_request_head<B>(req: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    *head.extensions_mut() = req.extensions().clone();
    head
}

/// The request headers a client uses to ask for a conditional response.
const CONDITIONALS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

static AGE: HeaderName = header::AGE;

async fn handle<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut svc: S,
    req: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Buf + Send,
    ResBody::Error: Into<BoxError>,
{
    let start = Instant::now();
    #[cfg(feature = "redis")]
    if let Some(tier) = &shared.redis {
        tier.ensure_started(&shared);
    }
    let timings = Timings::from_request(&req).cloned();
    let phase = |t: &Option<Timings>| {
        if let Some(t) = t {
            t.record("cache", start.elapsed());
        }
    };

    if !is_cacheable_method(req.method()) {
        let unsafe_method = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        let target = unsafe_method.then(|| (req.uri().clone(), host(req.headers())));
        let mut res = svc.call(req).await?;
        if let Some((uri, host)) = target {
            let s = res.status();
            if s.is_success() || s.is_redirection() {
                invalidate_after_unsafe(&shared, &uri, host.as_ref(), res.headers());
            }
        }
        strip_tags(&shared, res.headers_mut());
        return Ok(bypass(&shared, res, "method"));
    }

    let req_cc = CacheControl::parse_request(req.headers());
    if req_cc.no_store {
        let mut res = svc.call(req).await?;
        strip_tags(&shared, res.headers_mut());
        return Ok(bypass(&shared, res, "request-no-store"));
    }

    let (parts, body) = req.into_parts();
    let primary = shared.keyer.primary(&parts, shared.key_fn.as_deref());
    let head_only = parts.method == Method::HEAD;
    let mut lookup = lookup(&shared, primary, &parts);
    phase(&timings);

    // A fresh (or acceptable) stored response: normally answered by `try_serve` already, but
    // the cache may have changed since.
    if let Found::Entry(entry, validity) = &lookup {
        let now = Instant::now();
        if let Some(served) = decide_without_origin(entry, *validity, &req_cc, now) {
            if served.refresh {
                refresh_in_background(&shared, &svc, entry.clone(), primary, &parts);
            }
            return Ok(serve(
                &shared,
                entry,
                &parts.headers,
                head_only,
                now,
                served,
            ));
        }
    }

    // Past this point the origin is asked; first, one request per key at a time.
    // RFC 9111 5.2.1.7: whatever is not servable from the cache by now is a 504; the origin
    // is never contacted.
    if req_cc.only_if_cached {
        return Ok(gateway_timeout(&shared));
    }
    let mut guard = None;
    let mut collapsed = false;
    if shared.coalesce && coalescible(&parts) && !matches!(lookup, Found::Entry(..)) {
        for _ in 0..3 {
            let flight_key = match &lookup {
                Found::VaryMiss(vary) => {
                    primary ^ shared.keyer.variant(vary, &parts.headers).rotate_left(17)
                }
                _ => primary,
            };
            match shared.flights.join(flight_key) {
                Role::Leader(g) => {
                    guard = Some(g);
                    break;
                }
                Role::Follower(rx) => {
                    let waited = Instant::now();
                    let landed = tokio::time::timeout(shared.coalesce_timeout, flight::wait(rx))
                        .await
                        .unwrap_or(Landing::NotStored);
                    if let Some(t) = &timings {
                        t.record("coalesce", waited.elapsed());
                    }
                    if landed != Landing::Stored {
                        break;
                    }
                    lookup = self::lookup(&shared, primary, &parts);
                    if let Found::Entry(entry, Validity::Valid) = &lookup {
                        let now = Instant::now();
                        if let Serve::Fresh = policy::serve_decision(
                            entry.age(now),
                            entry.lifetime,
                            &req_cc,
                            &entry.cc,
                        ) {
                            shared.counters.collapsed.fetch_add(1, Ordering::Relaxed);
                            let mut served = Served::hit();
                            served.collapsed = true;
                            return Ok(serve(
                                &shared,
                                entry,
                                &parts.headers,
                                head_only,
                                now,
                                served,
                            ));
                        }
                    }
                    collapsed = true;
                    // Another variant, or already stale: try to lead (or follow) again.
                }
            }
        }
    }

    let mut waiters = Waiters {
        flight: guard,
        ..Waiters::default()
    };
    #[cfg(feature = "redis")]
    if let Some(tier) = shared.redis.clone() {
        if let Some((res, refresh)) = redis_tier_lookup(
            &shared,
            &tier,
            &parts,
            primary,
            &req_cc,
            &mut lookup,
            &mut waiters,
            &timings,
        )
        .await
        {
            if let Some(entry) = refresh {
                refresh_in_background(&shared, &svc, entry, primary, &parts);
            }
            return Ok(res);
        }
    }

    // Revalidate a stored response, or fetch a new one.
    let fwd = match &lookup {
        // Fresh, but the request's own directives (no-cache, max-age, min-fresh) sent it on.
        Found::Entry(e, Validity::Valid) if e.age(Instant::now()) < e.lifetime => Fwd::Request,
        Found::Entry(..) => Fwd::Stale,
        Found::VaryMiss(_) => Fwd::VaryMiss,
        Found::UriMiss => Fwd::UriMiss,
    };
    let stale = match lookup {
        Found::Entry(entry, _) => Some(entry),
        _ => None,
    };
    let mut origin_parts = clone_parts(&parts);
    if let Some(entry) = &stale {
        policy::add_validators(&entry.headers, &mut origin_parts.headers);
    }
    let stamp = shared.stamp();
    let request_time = SystemTime::now();
    let origin_req = Request::from_parts(origin_parts, body);
    let result = svc.call(origin_req).await;
    let mut response_time = SystemTime::now();

    let mut res = match result {
        Ok(res) => res,
        Err(err) => {
            if let Some(entry) = stale_if_error(&stale) {
                return Ok(serve(
                    &shared,
                    &entry,
                    &parts.headers,
                    head_only,
                    Instant::now(),
                    Served::stale("stale-if-error"),
                ));
            }
            return Err(err);
        }
    };

    let status = res.status();
    if let Some(entry) = &stale {
        let failed = status.is_server_error() || res.extensions().get::<Rejected>().is_some();
        if failed {
            if let Some(entry) = stale_if_error(&stale) {
                let mut served = Served::stale("stale-if-error");
                served.fwd = Some(fwd);
                served.fwd_status = Some(status.as_u16());
                return Ok(serve(
                    &shared,
                    &entry,
                    &parts.headers,
                    head_only,
                    Instant::now(),
                    served,
                ));
            }
        }
        if status == StatusCode::NOT_MODIFIED {
            let (res_parts, _) = res.into_parts();
            if let Some((updated, storable)) = refreshed_entry(
                &shared,
                entry,
                &res_parts.headers,
                &parts,
                request_time,
                response_time,
                stamp,
            ) {
                let key = EntryKey {
                    primary,
                    variant: shared.keyer.variant(&updated.vary, &parts.headers),
                };
                let updated = Arc::new(updated);
                let mut served = Served::hit();
                served.fwd = Some(fwd);
                served.fwd_status = Some(304);
                if storable {
                    shared.store.insert(key, updated.clone());
                    waiters.for_vary(&shared, &updated.vary, &parts);
                    waiters.stored(&shared, &updated);
                    served.stored = true;
                } else {
                    shared.store.remove(&key);
                    served.detail = Some("uncacheable");
                }
                let mut res = serve(
                    &shared,
                    &updated,
                    &parts.headers,
                    head_only,
                    Instant::now(),
                    served,
                );
                // Never stored, but this client's: cookies the 304 sets reach it.
                for cookie in res_parts.headers.get_all(header::SET_COOKIE) {
                    res.headers_mut().append(header::SET_COOKIE, cookie.clone());
                }
                return Ok(res);
            }
            // The 304 does not match what is stored: fetch it whole. The request body is gone,
            // but only GET and HEAD get here, whose bodies carry nothing.
            shared.store.remove(&EntryKey {
                primary,
                variant: shared.keyer.variant(&entry.vary, &parts.headers),
            });
            let mut again = svc.clone();
            res = call_ready(
                &mut again,
                Request::from_parts(clone_parts(&parts), ReqBody::default()),
            )
            .await?;
            response_time = SystemTime::now();
        }
    }
    Ok(store_or_pass(
        &shared,
        res,
        parts,
        primary,
        waiters,
        fwd,
        collapsed,
        stamp,
        request_time,
        response_time,
    )
    .0)
}

/// The Redis tier's part of a request the memory tier could not answer: a Redis hit is served
/// (and fills the memory tier); a stale one becomes the entry to revalidate; on a cold key
/// the fleet-wide lease decides who asks the origin. `Some`: the response to send, and the
/// entry to refresh in the background (stale-while-revalidate).
#[cfg(feature = "redis")]
#[allow(clippy::too_many_arguments)]
async fn redis_tier_lookup<ResBody>(
    shared: &Arc<Shared>,
    tier: &Arc<super::redis_tier::RedisTier>,
    parts: &Parts,
    primary: Primary,
    req_cc: &CacheControl,
    lookup: &mut Found,
    waiters: &mut Waiters,
    timings: &Option<Timings>,
) -> Option<(Response<CacheBody<ResBody>>, Option<Arc<Entry>>)> {
    use super::redis_tier::{Lease, RedisFound};

    tier.ensure_started(shared);
    let started = Instant::now();
    let key = tier.key(shared, parts);
    let hint = match &*lookup {
        Found::VaryMiss(v) => Some(v.clone()),
        Found::Entry(e, _) => Some(e.vary.clone()),
        Found::UriMiss => None,
    };
    let found = tier.lookup(shared, &key, parts, hint).await;
    let mut collapsed = false;
    let mut from_redis = None;
    match found {
        RedisFound::Entry(entry, validity) => from_redis = Some((entry, validity)),
        RedisFound::Miss => {
            let cold = waiters.flight.is_some() && !matches!(lookup, Found::Entry(..));
            if cold {
                match tier.lease(shared, &key, parts).await {
                    Lease::Leader(l) => waiters.lease = Some(l),
                    Lease::Found(entry) => {
                        collapsed = true;
                        from_redis = Some((entry, Validity::Valid));
                    }
                    Lease::Origin => {}
                }
            }
            if from_redis.is_none() {
                tier.count_miss();
            }
        }
        RedisFound::Error(e) => {
            tier.count_error();
            waiters.detail = Some(e.as_str());
        }
    }
    if let Some(t) = timings {
        t.record("redis", started.elapsed());
    }
    waiters.redis = Some((key, 0));
    let (entry, validity) = from_redis?;
    let now = Instant::now();
    if validity == Validity::Valid {
        let mem = EntryKey {
            primary,
            variant: shared.keyer.variant(&entry.vary, &parts.headers),
        };
        shared.store.insert(mem, entry.clone());
        shared.report_size_soon();
    }
    match decide_without_origin(&entry, validity, req_cc, now) {
        Some(mut served) => {
            tier.count_hit(served.outcome == CacheOutcome::Stale);
            let refresh = served.refresh.then(|| entry.clone());
            served.detail = served.detail.or(Some("redis"));
            served.collapsed = collapsed;
            if let Some(g) = waiters.flight.take() {
                g.land(Landing::Stored);
            }
            let head_only = parts.method == Method::HEAD;
            Some((
                serve(shared, &entry, &parts.headers, head_only, now, served),
                refresh,
            ))
        }
        None => {
            tier.count_miss();
            if !matches!(lookup, Found::Entry(..)) {
                *lookup = Found::Entry(entry, validity);
            }
            None
        }
    }
}

/// What a store owes to others when it completes: the local flight's followers and, with a
/// Redis tier, the fleet (where the entry goes in Redis, and the lease other instances wait on).
#[derive(Default)]
pub(crate) struct Waiters {
    pub(crate) flight: Option<flight::FlightGuard>,
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<(super::redis_tier::RedisKey, u64)>,
    #[cfg(feature = "redis")]
    pub(crate) lease: Option<super::redis_tier::LeaseGuard>,
    /// `Cache-Status` `detail` when nothing else is said (a Redis failure).
    pub(crate) detail: Option<&'static str>,
}

impl Waiters {
    /// Sets where the entry goes in Redis, now that its `Vary` is known.
    pub(crate) fn for_vary(&mut self, _shared: &Shared, _vary: &[HeaderName], _parts: &Parts) {
        #[cfg(feature = "redis")]
        if let Some(tier) = &_shared.redis {
            let key = match self.redis.take() {
                Some((k, _)) => k,
                None => tier.key(_shared, _parts),
            };
            self.redis = Some((key, tier.variant(_shared, _vary, _parts)));
        }
    }

    /// The entry is stored in memory: copy it to Redis, wake the followers.
    pub(crate) fn stored(self, _shared: &Shared, _entry: &Arc<Entry>) {
        #[cfg(feature = "redis")]
        if let (Some(tier), Some((key, variant))) = (&_shared.redis, self.redis) {
            tier.store(key, variant, _entry.clone(), self.lease);
        }
        if let Some(g) = self.flight {
            g.land(Landing::Stored);
        }
    }
}

/// What the lookup found.
enum Found {
    Entry(Arc<Entry>, Validity),
    /// No response for this URL.
    UriMiss,
    /// The URL has responses, but not for this request's variant.
    VaryMiss(Arc<[HeaderName]>),
}

fn lookup(shared: &Shared, primary: Primary, parts: &Parts) -> Found {
    lookup_head(shared, primary, &parts.uri, &parts.headers)
}

fn lookup_head(shared: &Shared, primary: Primary, uri: &http::Uri, headers: &HeaderMap) -> Found {
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

/// Requests that may wait for another client's origin response: no credentials of their own.
fn coalescible(parts: &Parts) -> bool {
    !parts.headers.contains_key(header::AUTHORIZATION)
        && !parts.headers.contains_key(header::COOKIE)
}

fn host(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned()
}

fn clone_parts(parts: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req.into_parts().0
}

fn stale_if_error(stale: &Option<Arc<Entry>>) -> Option<Arc<Entry>> {
    let entry = stale.as_ref()?;
    let stale_for = entry.age(Instant::now()).saturating_sub(entry.lifetime);
    within(stale_for, entry.stale_if_error).then(|| entry.clone())
}

/// Whether an entry stale for `stale_for` is inside a stale window; an empty window allows
/// nothing.
fn within(stale_for: Duration, window: Duration) -> bool {
    !window.is_zero() && stale_for <= window
}

pub(crate) async fn call_ready<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

/// How a response is served from the cache.
struct Served {
    outcome: CacheOutcome,
    fwd: Option<Fwd>,
    fwd_status: Option<u16>,
    stored: bool,
    collapsed: bool,
    detail: Option<&'static str>,
    /// Served within stale-while-revalidate: the caller starts the background refresh.
    refresh: bool,
}

impl Served {
    fn hit() -> Self {
        Self {
            outcome: CacheOutcome::Hit,
            fwd: None,
            fwd_status: None,
            stored: false,
            collapsed: false,
            detail: None,
            refresh: false,
        }
    }

    fn stale_while_revalidate() -> Self {
        Self {
            refresh: true,
            ..Self::stale("stale-while-revalidate")
        }
    }

    fn stale(detail: &'static str) -> Self {
        Self {
            outcome: CacheOutcome::Stale,
            detail: Some(detail),
            ..Self::hit()
        }
    }
}

/// A response from a stored entry: `304` when the client's conditional matches, the stored
/// headers plus `Age` and `Cache-Status`, and the body unless it is a HEAD request.
fn serve<B>(
    shared: &Shared,
    entry: &Entry,
    req_headers: &HeaderMap,
    head_only: bool,
    now: Instant,
    served: Served,
) -> Response<CacheBody<B>> {
    shared.counters.count(served.outcome);
    let age = entry.age(now);
    // Conditionals apply only where the response would be 2xx (RFC 9110 section 13.2.1).
    let not_modified =
        entry.status.is_success() && policy::not_modified(req_headers, &entry.headers);
    let (status, mut headers, body) = if not_modified {
        (
            StatusCode::NOT_MODIFIED,
            policy::headers_for_304(&entry.headers),
            None,
        )
    } else {
        (
            entry.status,
            entry.headers.clone(),
            (!head_only).then(|| entry.body.clone()),
        )
    };
    headers.insert(AGE.clone(), HeaderValue::from(age.as_secs()));
    let mut ttl = entry.lifetime.as_secs() as i64 - age.as_secs() as i64;
    if served.outcome == CacheOutcome::Stale && ttl > 0 {
        // Served stale before its lifetime ended: soft-purged, so its freshness ended then.
        ttl = -(age.as_secs() as i64);
    }
    CacheStatus {
        name: &shared.name,
        hit: served.fwd.is_none() || served.fwd_status == Some(304),
        fwd: served.fwd,
        fwd_status: served.fwd_status,
        stored: served.stored,
        collapsed: served.collapsed,
        ttl: Some(ttl),
        detail: served.detail,
    }
    .append_to(&mut headers);
    let mut res = Response::new(CacheBody::cached(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res.extensions_mut().insert(served.outcome);
    res
}

fn bypass<B>(shared: &Shared, res: Response<B>, detail: &'static str) -> Response<CacheBody<B>> {
    shared.counters.count(CacheOutcome::Bypass);
    let mut res = res.map(CacheBody::passthrough);
    CacheStatus {
        name: &shared.name,
        hit: false,
        fwd: Some(Fwd::Bypass),
        fwd_status: None,
        stored: false,
        collapsed: false,
        ttl: None,
        detail: Some(detail),
    }
    .append_to(res.headers_mut());
    res.extensions_mut().insert(CacheOutcome::Bypass);
    res
}

fn gateway_timeout<B>(shared: &Shared) -> Response<CacheBody<B>> {
    shared.counters.count(CacheOutcome::Miss);
    let mut res = Response::new(CacheBody::cached(None));
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    CacheStatus {
        name: &shared.name,
        hit: false,
        fwd: Some(Fwd::Miss),
        fwd_status: None,
        stored: false,
        collapsed: false,
        ttl: None,
        detail: Some("only-if-cached"),
    }
    .append_to(res.headers_mut());
    res.extensions_mut().insert(CacheOutcome::Miss);
    res
}

/// Removes the tag header, which is for the cache only.
fn strip_tags(shared: &Shared, headers: &mut HeaderMap) {
    headers.remove(&shared.tag_header);
}

fn parse_tags(shared: &Shared, headers: &HeaderMap) -> Box<[Arc<str>]> {
    let mut tags: Vec<Arc<str>> = Vec::new();
    for value in headers.get_all(&shared.tag_header) {
        let Ok(value) = value.to_str() else { continue };
        for tag in value
            .split([',', ' '])
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if tags.len() < 64 && !tags.iter().any(|t| &**t == tag) {
                tags.push(tag.into());
            }
        }
    }
    tags.into_boxed_slice()
}

/// Hop-by-hop fields (RFC 9110 7.6.1) are never stored.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// The stale windows of a response: its own `stale-while-revalidate` / `stale-if-error`, else
/// the configured grace; none when the response forbids serving it stale.
fn stale_windows(shared: &Shared, cc: &CacheControl) -> (Duration, Duration) {
    // `s-maxage` implies `proxy-revalidate` for a shared cache (RFC 9111 section 5.2.2.10).
    if cc.must_revalidate || cc.proxy_revalidate || cc.no_cache || cc.s_maxage.is_some() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let secs = |v: Option<u32>| v.map_or(shared.grace, |s| Duration::from_secs(u64::from(s)));
    (secs(cc.stale_while_revalidate), secs(cc.stale_if_error))
}

#[allow(clippy::too_many_arguments)]
fn store_or_pass<B>(
    shared: &Arc<Shared>,
    mut res: Response<B>,
    parts: Parts,
    primary: Primary,
    mut waiters: Waiters,
    fwd: Fwd,
    collapsed: bool,
    stamp: Stamp,
    request_time: SystemTime,
    response_time: SystemTime,
) -> (Response<CacheBody<B>>, bool)
where
    B: Body,
{
    shared.counters.count(CacheOutcome::Miss);
    let status = res.status();
    let res_cc = CacheControl::parse(res.headers());
    let req_cc = CacheControl::parse_request(&parts.headers);
    let policy = StorePolicy {
        default_ttl: shared.default_ttl(&parts),
        ..shared.policy.clone()
    };
    let tags = parse_tags(shared, res.headers());
    strip_tags(shared, res.headers_mut());
    let mut verdict = policy::storable(
        &parts.method,
        &parts.headers,
        &req_cc,
        status,
        res.headers(),
        &res_cc,
        &policy,
    );
    let vary = parse_vary(res.headers());
    let too_large = res
        .body()
        .size_hint()
        .exact()
        .or_else(|| res.body().size_hint().upper())
        .is_some_and(|n| n > shared.max_entry_bytes as u64)
        || res.body().size_hint().lower() > shared.max_entry_bytes as u64;
    if verdict.is_ok() && too_large {
        verdict = Err(policy::Uncacheable::TooLarge);
    }
    if verdict.is_ok() && parts.method == Method::HEAD {
        verdict = Err(policy::Uncacheable::Method);
    }
    if res.extensions().get::<Rejected>().is_some() {
        verdict = Err(policy::Uncacheable::Status);
    }
    let lifetime =
        policy::freshness_lifetime(status, res.headers(), &res_cc, response_time, &policy);
    let mut cs = CacheStatus {
        name: &shared.name,
        hit: false,
        fwd: Some(fwd),
        fwd_status: Some(status.as_u16()),
        stored: false,
        collapsed,
        ttl: None,
        detail: waiters.detail,
    };
    let (Ok(()), Some(vary)) = (verdict, vary) else {
        cs.detail = Some(match verdict {
            Err(reason) => reason.as_str(),
            Ok(()) => "vary-star",
        });
        cs.append_to(res.headers_mut());
        drop(waiters);
        res.extensions_mut().insert(CacheOutcome::Miss);
        return (res.map(CacheBody::passthrough), false);
    };
    cs.stored = true;
    cs.ttl = Some(lifetime.as_secs() as i64);
    // The stored copy gets the client-visible headers, before Cache-Status is added.
    let mut stored_headers = res.headers().clone();
    strip_hop_by_hop(&mut stored_headers);
    stored_headers.remove(&AGE);
    cs.append_to(res.headers_mut());
    res.extensions_mut().insert(CacheOutcome::Miss);
    let (swr, sie) = stale_windows(shared, &res_cc);
    let vary: Arc<[HeaderName]> = vary.into();
    let key = EntryKey {
        primary,
        variant: shared.keyer.variant(&vary, &parts.headers),
    };
    let vary_values = super::key::vary_values(&vary, &parts.headers);
    waiters.for_vary(shared, &vary, &parts);
    let entry = Entry {
        uri: parts.uri,
        status,
        headers: stored_headers,
        body: Bytes::new(),
        vary,
        vary_values,
        cc: res_cc,
        initial_age: policy::initial_age(res.headers(), request_time, response_time),
        stored_at: Instant::now(),
        lifetime,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        tags,
        generation: stamp.local,
        fleet_generation: stamp.fleet,
        hits: Default::default(),
    };
    let job = StoreJob::new(shared.clone(), key, entry, waiters, shared.max_entry_bytes);
    (res.map(|b| CacheBody::storing(b, job)), true)
}

/// The stored entry refreshed by the origin's `304` (RFC 9111 4.3.4), and whether it may still
/// be stored (a 304 can make it `private` or `no-store`: then it is for this client only);
/// `None` when the `304` does not match it.
fn refreshed_entry(
    shared: &Shared,
    entry: &Entry,
    not_modified: &HeaderMap,
    parts: &Parts,
    request_time: SystemTime,
    response_time: SystemTime,
    stamp: Stamp,
) -> Option<(Entry, bool)> {
    let mut headers = entry.headers.clone();
    if !policy::update_from_304(&mut headers, not_modified) {
        return None;
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(&AGE);
    headers.remove(&shared.tag_header);
    // Without a `Date` of its own, the 304 would leave the original one, and an `Expires`-based
    // lifetime would be counted from the first response instead of this one.
    if !not_modified.contains_key(header::DATE) {
        if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time)) {
            headers.insert(header::DATE, date);
        }
    }
    let cc = CacheControl::parse(&headers);
    let policy = StorePolicy {
        default_ttl: shared.default_ttl(parts),
        ..shared.policy.clone()
    };
    let lifetime = policy::freshness_lifetime(entry.status, &headers, &cc, response_time, &policy);
    let storable = policy::storable(
        &Method::GET,
        &parts.headers,
        &CacheControl::parse_request(&parts.headers),
        entry.status,
        &headers,
        &cc,
        &policy,
    )
    .is_ok();
    let (swr, sie) = stale_windows(shared, &cc);
    let refreshed = Entry {
        uri: entry.uri.clone(),
        status: entry.status,
        headers,
        body: entry.body.clone(),
        vary: entry.vary.clone(),
        vary_values: entry.vary_values.clone(),
        cc,
        initial_age: policy::initial_age(not_modified, request_time, response_time),
        stored_at: Instant::now(),
        lifetime,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        tags: entry.tags.clone(),
        generation: stamp.local,
        fleet_generation: stamp.fleet,
        hits: Default::default(),
    };
    Some((refreshed, storable))
}

/// Refreshes `entry` from the origin in the background, once per key at a time.
fn refresh_in_background<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    svc: &S,
    entry: Arc<Entry>,
    primary: Primary,
    parts: &Parts,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Buf + Send,
    ResBody::Error: Into<BoxError>,
{
    let variant = shared.keyer.variant(&entry.vary, &parts.headers);
    let Some(guard) = shared.refreshes.try_lead(primary ^ variant.rotate_left(17)) else {
        return;
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let shared = shared.clone();
    let mut svc = svc.clone();
    let mut parts = clone_parts(parts);
    parts.method = Method::GET;
    for name in &CONDITIONALS {
        parts.headers.remove(name);
    }
    policy::add_validators(&entry.headers, &mut parts.headers);
    handle.spawn(async move {
        let _guard = guard;
        let stamp = shared.stamp();
        let request_time = SystemTime::now();
        let req = Request::from_parts(clone_parts(&parts), ReqBody::default());
        let Ok(res) = call_ready(&mut svc, req).await else {
            return;
        };
        let response_time = SystemTime::now();
        if res.status() == StatusCode::NOT_MODIFIED {
            match refreshed_entry(
                &shared,
                &entry,
                res.headers(),
                &parts,
                request_time,
                response_time,
                stamp,
            ) {
                Some((updated, true)) => {
                    let updated = Arc::new(updated);
                    shared
                        .store
                        .insert(EntryKey { primary, variant }, updated.clone());
                    let mut waiters = Waiters::default();
                    waiters.for_vary(&shared, &updated.vary, &parts);
                    waiters.stored(&shared, &updated);
                }
                // No longer storable (`private`, `no-store`): the shared copy goes.
                Some((_, false)) => shared.store.remove(&EntryKey { primary, variant }),
                None => {}
            }
            return;
        }
        if res.status().is_server_error() || res.extensions().get::<Rejected>().is_some() {
            return;
        }
        // A new full response: store it the usual way, reading the body here.
        let (res, stored) = store_or_pass(
            &shared,
            res,
            parts,
            primary,
            Waiters::default(),
            Fwd::Stale,
            false,
            stamp,
            request_time,
            response_time,
        );
        if !stored {
            // The origin no longer lets this be cached (private, no-store, Set-Cookie...): stop
            // serving the old copy.
            shared.store.remove(&EntryKey { primary, variant });
        }
        let mut body = std::pin::pin!(res.into_body());
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            if frame.is_err() {
                break;
            }
        }
    });
}

/// RFC 9111 4.4: a non-error response to an unsafe request invalidates the target URI and the
/// same-origin `Location` and `Content-Location`.
fn invalidate_after_unsafe(
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
