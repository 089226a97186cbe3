use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Buf;
use http::header::HOST;
use http::{Method, Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::body::CacheBody;
use super::directives::CacheControl;
use super::entry::strip_tags;
use super::future::ResponseFuture;
use super::head::Fields;
use super::key::{is_cacheable_method, Primary};
use super::policy;
use super::purge::Target;
use super::refresh::refresh_in_background;
use super::request::{
    clone_parts, host, invalidate_after_unsafe, lookup_head, same_origin_target, Forwarded, Found,
    Origin, OriginBody, RequestCtx,
};
use super::respond::{bypass, decide_without_origin, gateway_timeout, serve};
#[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
use super::snapshot::CacheOutcome;
use super::state::{Exchange, Shared};
use super::status::Fwd;
use crate::error::BoxError;
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
        // One clock read for the cache's phase, whichever way the request goes.
        let start = Instant::now();
        let miss = match try_serve(&self.shared, &self.inner, &req, start) {
            Ok(res) => return ResponseFuture::ready(res),
            Err(miss) => miss,
        };
        // The clone takes the place of the service that was polled ready, which goes with the
        // request (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        // Each way to the origin is its own boxed future, made only when taken: one future for
        // all of them would be as large as the largest (several KB, moved into its box on
        // every miss), and the plain miss's fits the allocator's small sizes.
        match prepare(shared, &inner, req, miss, start) {
            Prepared::Answered(res) => ResponseFuture::ready(res),
            Prepared::Origin(ctx, body) => {
                ResponseFuture::origin(Box::pin(origin(ctx, inner, body)))
            }
            Prepared::Uncacheable(shared, req) => ResponseFuture::origin(Box::pin(async move {
                forward_uncacheable(&shared, &mut inner, req).await
            })),
            Prepared::NoStore(shared, req) => ResponseFuture::origin(Box::pin(async move {
                let mut res = inner.call(req).await?;
                strip_tags(&shared, res.headers_mut());
                Ok(bypass(&shared, res, "request-no-store"))
            })),
        }
    }
}

/// Serves `req` from the cache when a stored response may be used without asking the origin:
/// fresh, acceptable to the request's `max-stale`, or within stale-while-revalidate (which also
/// starts the background refresh). `Err`: the request needs the origin; with what was worked
/// out on the way, so that the origin path does not hash the URL or parse the request's
/// `Cache-Control` again.
fn try_serve<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    svc: &S,
    req: &Request<ReqBody>,
    start: Instant,
) -> Result<Response<CacheBody<ResBody>>, Miss>
where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: OriginBody,
{
    if !is_cacheable_method(req.method()) {
        return Err(Miss::default());
    }
    let req_cc = CacheControl::parse_request(req.headers());
    if req_cc.no_store {
        return Err(Miss {
            req_cc: Some(req_cc),
            ..Miss::default()
        });
    }
    let primary = shared.keyer.primary_of(req, shared.key_fn.as_deref());
    let found = lookup_head(shared, primary, req.uri(), req.headers());
    let served = match &found {
        Found::Entry(entry, validity) => decide_without_origin(entry, *validity, &req_cc, start),
        _ => None,
    };
    let (Some(served), Found::Entry(entry, _)) = (served, &found) else {
        return Err(Miss {
            primary: Some(primary),
            req_cc: Some(req_cc),
            found: Some(found),
        });
    };
    if let Some(t) = Timings::from_request(req) {
        t.record("cache", start.elapsed());
    }
    if served.refresh {
        let (parts, _) = clone_request_head(req).into_parts();
        refresh_in_background(shared, svc, entry.clone(), primary, &parts);
    }
    #[cfg(any(feature = "compression-br", feature = "compression-zstd"))]
    if served.outcome == CacheOutcome::Hit {
        super::recompress::on_hit(shared, primary, entry);
    }
    let head_only = req.method() == Method::HEAD;
    Ok(serve(
        shared,
        entry,
        req.headers(),
        head_only,
        start,
        served,
    ))
}

/// What [`try_serve`] worked out before it found the request needs the origin.
#[derive(Default)]
struct Miss {
    /// The primary key, when computed.
    primary: Option<Primary>,
    /// The request's `Cache-Control`, when parsed.
    req_cc: Option<CacheControl>,
    /// What the memory tier held for the request, when looked up: the origin path's first
    /// phase does not look it up again.
    found: Option<Found>,
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

/// What the cache makes of a request [`try_serve`] could not answer, before any wait.
// Returned once and taken apart at once: boxing the large variant would cost an allocation
// per miss to save a move.
#[allow(clippy::large_enum_variant)]
enum Prepared<ReqBody, ResBody> {
    /// Answered from the memory tier after all (a stale entry the request accepts, a `304`),
    /// or the `504` of `only-if-cached`.
    Answered(Response<CacheBody<ResBody>>),
    /// The origin path's phases: coalesce, the lower tiers, the origin.
    Origin(RequestCtx, ReqBody),
    /// A method the cache does not serve.
    Uncacheable(Arc<Shared>, Request<ReqBody>),
    /// `Cache-Control: no-store` on the request: passed through.
    NoStore(Arc<Shared>, Request<ReqBody>),
}

/// The origin path's first phase, which never waits: the request's context and the memory
/// tier's answer (with what `try_serve` already worked out).
fn prepare<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    svc: &S,
    req: Request<ReqBody>,
    miss: Miss,
    start: Instant,
) -> Prepared<ReqBody, ResBody>
where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: OriginBody,
{
    shared.tiers.start(&shared);
    if !is_cacheable_method(req.method()) {
        return Prepared::Uncacheable(shared, req);
    }
    let req_cc = miss
        .req_cc
        .unwrap_or_else(|| CacheControl::parse_request(req.headers()));
    if req_cc.no_store {
        return Prepared::NoStore(shared, req);
    }
    let timings = Timings::from_request(&req).cloned();
    let (parts, body) = req.into_parts();
    let primary = miss
        .primary
        .unwrap_or_else(|| shared.keyer.primary(&parts, shared.key_fn.as_deref()));
    let mut ctx = RequestCtx::new(shared, parts, primary, req_cc, timings, start);
    let answered = match ctx.lookup(miss.found) {
        Some(res) => res,
        // RFC 9111 5.2.1.7: whatever is not servable from the cache by now is a 504; the
        // origin is never contacted.
        None if ctx.req_cc.only_if_cached => gateway_timeout(&ctx.shared),
        None => return Prepared::Origin(ctx, body),
    };
    if let Some(entry) = ctx.refresh.take() {
        refresh_in_background(&ctx.shared, svc, entry, ctx.primary, &ctx.parts);
    }
    Prepared::Answered(answered)
}

/// The origin path's phases that may wait: coalesce, the lower tiers, the origin (forward or
/// revalidate), then the store decision.
async fn origin<S, ReqBody, ResBody>(
    mut ctx: RequestCtx,
    mut svc: S,
    body: ReqBody,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Origin<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: OriginBody,
{
    let res = if let Some(res) = ctx.coalesce().await {
        res
    } else if let Some(res) = match ctx.shared.tiers.has_lower() {
        // Boxed: the Redis lookup's future is large, and only a Redis tier waits for it.
        true => Box::pin(ctx.tier_lookup()).await,
        false => None,
    } {
        res
    } else {
        match ctx.forward(&mut svc, body).await {
            Forwarded::Served(res) => res,
            Forwarded::Origin(res, ex) => return Ok(ctx.store_or_pass(res, ex).0),
            Forwarded::Failed(err) => return Err(err),
        }
    };
    if let Some(entry) = ctx.refresh.take() {
        refresh_in_background(&ctx.shared, &svc, entry, ctx.primary, &ctx.parts);
    }
    Ok(res)
}

/// A method the cache does not serve: forwarded; a successful unsafe one (POST, PUT, PATCH,
/// DELETE, and any method unknown to the cache, such as `M-SEARCH`) invalidates its URI and
/// same-origin `Location` / `Content-Location`.
async fn forward_uncacheable<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    svc: &mut S,
    req: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    if req.method() == Method::POST {
        return forward_post(shared, svc, req).await;
    }
    // RFC 9111 4.4: any method that is not safe, unknown ones included (RFC 9110 9.2.1).
    let unsafe_method = !req.method().is_safe();
    let target = unsafe_method.then(|| (req.uri().clone(), host(req.headers())));
    let mut res = svc.call(req).await?;
    if let Some((uri, host)) = target {
        invalidate_after_unsafe(shared, &uri, host.as_ref(), &res, false);
    }
    strip_tags(shared, res.headers_mut());
    Ok(bypass(shared, res, "method"))
}

/// A `POST`: forwarded and, when successful, invalidating like any unsafe method; then its
/// response is stored for later `GET`s of the target URI when the origin says it is that
/// URI's representation (RFC 9110 9.3.3, RFC 9111 4): a `200` with explicit freshness and a
/// `Content-Location` equal to the target URI. The target's invalidation is recorded
/// everywhere (in Redis too) before the copy is stamped, so it does not cover the copy; when
/// Redis does not take it in time, nothing is stored.
async fn forward_post<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    svc: &mut S,
    req: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    let request_time = SystemTime::now();
    let (parts, body) = req.into_parts();
    let head = clone_parts(&parts);
    let mut res = svc.call(Request::from_parts(parts, body)).await?;
    let reusable = reusable_for_get(shared, &head, &res);
    invalidate_after_unsafe(shared, &head.uri, head.headers.get(HOST), &res, reusable);
    let target = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if !(reusable && shared.purge_before_store(Target::Uri(target), true).await) {
        strip_tags(shared, res.headers_mut());
        return Ok(bypass(shared, res, "method"));
    }
    let mut get = head;
    get.method = Method::GET;
    let primary = shared.keyer.primary(&get, shared.key_fn.as_deref());
    let req_cc = CacheControl::parse_request(&get.headers);
    let ex = Exchange {
        fwd: Fwd::Method,
        stamp: shared.stamp(),
        request_time,
        response_time: SystemTime::now(),
    };
    let ctx = RequestCtx::new(shared.clone(), get, primary, req_cc, None, Instant::now());
    Ok(ctx.store_or_pass(res, ex).0)
}

/// Whether a `POST`'s response may serve later `GET`s: a `200` with explicit freshness and a
/// same-origin `Content-Location` equal to the request's target.
fn reusable_for_get<B>(shared: &Shared, head: &http::request::Parts, res: &Response<B>) -> bool {
    let cc = CacheControl::parse_response(res.headers(), &shared.policy.targeted);
    let host = head.headers.get(HOST);
    let target = res
        .headers()
        .get(http::header::CONTENT_LOCATION)
        .and_then(|v| same_origin_target(&head.uri, host, v));
    res.status() == http::StatusCode::OK
        && policy::explicit_freshness((res.headers(), Fields::UNKNOWN), &cc)
        && target.is_some_and(|t| t.path_and_query() == head.uri.path_and_query())
}
