//! Middleware that lets only administrators through to the admin routes, and marks their
//! requests so that inner layers (the rate limiter's bypass) can tell.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, FORWARDED, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use subtle::ConstantTimeEq as _;
use tower_layer::Layer;
use tower_service::Service;

use crate::util::body::InnerOrBytes;
use crate::util::request::peer_addr;

/// Longest token accepted (bytes); longer configured tokens are refused at build time and
/// longer presented ones are rejected without being compared.
const MAX_TOKEN_LEN: usize = 512;

/// The challenge of a `401`: a bearer token, or the same token as the password of HTTP Basic
/// (any user name), which is what lets a browser open the console: it asks once and then sends
/// the credentials with every request of the page, the event stream included.
const CHALLENGE: &str =
    r#"Bearer realm="tower-perf admin", Basic realm="tower-perf admin", charset="UTF-8""#;

/// The request extension [`AdminAuthLayer`] inserts on requests it authenticated as an
/// administrator's. Only a server-side layer can insert it: clients set headers, never
/// extensions. Read it with [`is_admin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admin {
    /// How the request was let in.
    pub by: AdminBy,
}

/// How a request was authenticated as an administrator's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminBy {
    /// It carried the configured token (as a bearer token, or the password of HTTP Basic).
    Token,
    /// No token is configured, and it came from a loopback address without proxy headers.
    Loopback,
}

/// Whether the request was authenticated by an [`AdminAuthLayer`] outside: the predicate for
/// [`RateLimitBuilder::bypass_with`](crate::rate_limit::RateLimitBuilder::bypass_with) that
/// exempts administrators from the rate limit, keyed on the authenticated request rather than
/// on anything a client can send.
///
/// ```
/// use tower_perf::console::is_admin;
/// use tower_perf::rate_limit::{Quota, RateLimitLayer};
///
/// let limit = RateLimitLayer::builder(Quota::per_second(100))
///     .bypass_with(is_admin)
///     .build()
///     .unwrap();
/// # let _ = limit;
/// ```
pub fn is_admin(parts: &Parts) -> bool {
    parts.extensions.get::<Admin>().is_some()
}

/// Requires administrators on the admin routes (bearer token, or loopback clients only when no
/// token is configured) and marks their requests with the [`Admin`] extension. See the
/// [module docs](super).
///
/// Requests under the protected prefix (default `/admin/`) without valid credentials are
/// answered `401 Unauthorized` with `WWW-Authenticate` when they carry no credentials, `403
/// Forbidden` when they carry wrong ones (or come from another host in loopback mode). Other
/// requests pass unchanged, and get the [`Admin`] mark when they carry the right token, so an
/// administrator's API calls can bypass the rate limit too.
#[derive(Clone)]
pub struct AdminAuthLayer {
    config: Arc<Config>,
}

struct Config {
    /// `None`: loopback clients only.
    token: Option<Box<[u8]>>,
    /// Paths starting with this need an administrator.
    prefix: Box<str>,
}

impl AdminAuthLayer {
    /// Administrators are those who present `token`.
    ///
    /// # Errors
    ///
    /// A token that is empty, longer than 512 bytes, or holds anything but visible ASCII
    /// (which a header value could not carry exactly) is refused, naming `admin_token`.
    pub fn token(token: impl Into<String>) -> Result<Self, crate::ConfigError> {
        let token = token.into();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(crate::ConfigError::new(
                "admin_token",
                "must be 1 to 512 bytes long",
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(crate::ConfigError::new(
                "admin_token",
                "must be visible ASCII (no spaces or control characters)",
            ));
        }
        Ok(Self::with(Some(token.into_bytes().into_boxed_slice())))
    }

    /// No token: administrators are clients connected from a loopback address (`127.0.0.0/8`,
    /// `::1`) whose requests carry no `Forwarded` / `X-Forwarded-For` header (a proxy on the
    /// same host would otherwise make every client look local). The peer address comes from
    /// axum's `ConnectInfo<SocketAddr>` or a `SocketAddr` extension; without one, no request
    /// is an administrator's.
    pub fn loopback_only() -> Self {
        Self::with(None)
    }

    /// [`token`](Self::token) when `token` is `Some` and not empty, else
    /// [`loopback_only`](Self::loopback_only): what an `ADMIN_TOKEN` variable configures.
    ///
    /// # Errors
    ///
    /// As [`token`](Self::token).
    pub fn from_option(token: Option<String>) -> Result<Self, crate::ConfigError> {
        match token {
            Some(t) if !t.is_empty() => Self::token(t),
            _ => Ok(Self::loopback_only()),
        }
    }

    /// Protects paths starting with `prefix` instead of `/admin/`.
    pub fn protect(mut self, prefix: &str) -> Self {
        let token = self.config.token.clone();
        self.config = Arc::new(Config {
            token,
            prefix: prefix.into(),
        });
        self
    }

    /// Whether a token is configured (else loopback clients only).
    pub fn has_token(&self) -> bool {
        self.config.token.is_some()
    }

    fn with(token: Option<Box<[u8]>>) -> Self {
        Self {
            config: Arc::new(Config {
                token,
                prefix: "/admin/".into(),
            }),
        }
    }
}

impl fmt::Debug for AdminAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("AdminAuthLayer")
            .field("has_token", &self.has_token())
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdminAuth {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`AdminAuthLayer`].
#[derive(Clone)]
pub struct AdminAuth<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> AdminAuth<S> {
    crate::util::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for AdminAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminAuth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What the credentials of a request say.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Admin(AdminBy),
    /// No credentials at all: `401`.
    Missing,
    /// Wrong credentials, or not a loopback client: `403`.
    Refused,
}

impl Config {
    fn verdict<B>(&self, req: &Request<B>) -> Verdict {
        let Some(token) = &self.token else {
            return loopback_verdict(req);
        };
        match presented(req.headers()) {
            None => Verdict::Missing,
            Some(given) if given.len() <= MAX_TOKEN_LEN && bool::from(given.ct_eq(token)) => {
                Verdict::Admin(AdminBy::Token)
            }
            Some(_) => Verdict::Refused,
        }
    }
}

fn loopback_verdict<B>(req: &Request<B>) -> Verdict {
    let proxied =
        req.headers().contains_key(FORWARDED) || req.headers().contains_key("x-forwarded-for");
    match peer_addr(req.extensions()) {
        Some(ip) if ip.to_canonical().is_loopback() && !proxied => {
            Verdict::Admin(AdminBy::Loopback)
        }
        _ => Verdict::Refused,
    }
}

/// The credentials of `Authorization`: a bearer token, or the password of Basic. `None` when
/// the header is absent; an unreadable header yields empty credentials (refused, not missing).
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(rest.to_vec());
    }
    if scheme.eq_ignore_ascii_case(b"basic") && rest.len() <= 4 * MAX_TOKEN_LEN {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .unwrap_or_default();
        // `user:password`; the user name is not checked.
        let password = match decoded.iter().position(|&b| b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => Vec::new(),
        };
        return Some(password);
    }
    Some(Vec::new())
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AdminAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
    ResBody::Data: From<Bytes>,
{
    type Response = Response<AdminAuthBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let protected = req.uri().path().starts_with(&*self.config.prefix);
        // Unprotected requests without credentials (the common case) cost one header lookup.
        if !protected && !req.headers().contains_key(AUTHORIZATION) {
            return ResponseFuture::inner(self.inner.call(req));
        }
        match (protected, self.config.verdict(&req)) {
            // In loopback mode only the admin routes get the mark: local load generators
            // calling the API stay rate-limited.
            (_, Verdict::Admin(by)) if protected || by == AdminBy::Token => {
                req.extensions_mut().insert(Admin { by });
                ResponseFuture::inner(self.inner.call(req))
            }
            (false, _) => ResponseFuture::inner(self.inner.call(req)),
            (true, Verdict::Missing) => ResponseFuture::answered(refusal(StatusCode::UNAUTHORIZED)),
            (true, _) => ResponseFuture::answered(refusal(StatusCode::FORBIDDEN)),
        }
    }
}

/// A `401` (with the challenge) or `403`, with a JSON body.
fn refusal(status: StatusCode) -> Response<Bytes> {
    let body: &'static [u8] = if status == StatusCode::UNAUTHORIZED {
        br#"{"error":"admin credentials required (Authorization: Bearer <ADMIN_TOKEN>)"}"#
    } else {
        br#"{"error":"not an administrator"}"#
    };
    let mut response = Response::new(Bytes::from_static(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    }
    response
}

pin_project! {
    /// Response future of [`AdminAuth`]: the inner service's, or the refusal, ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        refusal: Option<Response<Bytes>>,
    }
}

impl<F> ResponseFuture<F> {
    fn inner(future: F) -> Self {
        Self {
            inner: Some(future),
            refusal: None,
        }
    }

    fn answered(response: Response<Bytes>) -> Self {
        Self {
            inner: None,
            refusal: Some(response),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("refused", &self.refusal.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AdminAuthBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(future) = this.inner.as_pin_mut() {
            return future.poll(cx).map_ok(|response| {
                response.map(|body| AdminAuthBody {
                    inner: InnerOrBytes::inner(body),
                })
            });
        }
        let response = this.refusal.take().unwrap_or_else(|| {
            // Polled again after it was ready: a bug in the caller; answer something valid.
            refusal(StatusCode::FORBIDDEN)
        });
        Poll::Ready(Ok(response.map(|data| AdminAuthBody {
            inner: InnerOrBytes::bytes(data),
        })))
    }
}

pin_project! {
    /// Response body of [`AdminAuth`]: the inner service's body, untouched, or the small JSON
    /// body of a `401` / `403`.
    pub struct AdminAuthBody<B> {
        #[pin]
        inner: InnerOrBytes<B>,
    }
}

crate::util::macros::inner_or_bytes_body!(AdminAuthBody);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut b = Request::get("/admin/stats");
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    fn verdict(layer: &AdminAuthLayer, auth: Option<&str>) -> Verdict {
        layer.config.verdict(&request(auth))
    }

    #[test]
    fn bearer_and_basic_tokens() {
        let layer = AdminAuthLayer::token("s3cret").unwrap();
        assert_eq!(verdict(&layer, None), Verdict::Missing);
        assert_eq!(
            verdict(&layer, Some("Bearer s3cret")),
            Verdict::Admin(AdminBy::Token)
        );
        assert_eq!(
            verdict(&layer, Some("bearer  s3cret ")),
            Verdict::Admin(AdminBy::Token)
        );
        assert_eq!(verdict(&layer, Some("Bearer s3cre")), Verdict::Refused);
        assert_eq!(verdict(&layer, Some("Bearer s3cret2")), Verdict::Refused);
        assert_eq!(verdict(&layer, Some("Bearer")), Verdict::Refused);
        assert_eq!(verdict(&layer, Some("s3cret")), Verdict::Refused);
        // "admin:s3cret", "x:wrong", and not base64 at all.
        assert_eq!(
            verdict(&layer, Some("Basic YWRtaW46czNjcmV0")),
            Verdict::Admin(AdminBy::Token)
        );
        assert_eq!(
            verdict(&layer, Some("Basic eDp3cm9uZw==")),
            Verdict::Refused
        );
        assert_eq!(verdict(&layer, Some("Basic %%%")), Verdict::Refused);
    }

    #[test]
    fn bad_tokens_fail_at_build_time() {
        for bad in ["", "two words", "tab\there", "é"] {
            let err = AdminAuthLayer::token(bad).unwrap_err();
            assert!(err.to_string().contains("admin_token"), "{err}");
        }
        assert!(AdminAuthLayer::token("x".repeat(513)).is_err());
        assert!(!AdminAuthLayer::from_option(Some(String::new()))
            .unwrap()
            .has_token());
        assert!(format!("{:?}", AdminAuthLayer::token("s3cret").unwrap()).contains("has_token"));
        assert!(!format!("{:?}", AdminAuthLayer::token("s3cret").unwrap()).contains("s3cret"));
    }

    #[test]
    fn loopback_mode_reads_the_peer_and_refuses_proxied_requests() {
        let layer = AdminAuthLayer::loopback_only();
        let with_peer = |peer: &str, forwarded: bool| {
            let mut req = request(None);
            req.extensions_mut()
                .insert(peer.parse::<std::net::SocketAddr>().unwrap());
            if forwarded {
                req.headers_mut()
                    .insert("x-forwarded-for", HeaderValue::from_static("192.0.2.9"));
            }
            layer.config.verdict(&req)
        };
        assert_eq!(
            with_peer("127.0.0.1:5000", false),
            Verdict::Admin(AdminBy::Loopback)
        );
        assert_eq!(
            with_peer("[::1]:5000", false),
            Verdict::Admin(AdminBy::Loopback)
        );
        assert_eq!(
            with_peer("[::ffff:127.0.0.1]:5000", false),
            Verdict::Admin(AdminBy::Loopback)
        );
        assert_eq!(with_peer("192.0.2.1:5000", false), Verdict::Refused);
        assert_eq!(with_peer("127.0.0.1:5000", true), Verdict::Refused);
        // No peer address known: refused.
        assert_eq!(verdict(&layer, None), Verdict::Refused);
    }
}
