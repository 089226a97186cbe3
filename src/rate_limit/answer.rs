//! The limiter's own answers (`429`, `503`) and its response headers.

use bytes::Bytes;
use http::header::HeaderName;
use http::{Response, StatusCode};

use super::state::Headers;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub(crate) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Adds the rate-limit headers to a response. Appended, not inserted: a layer inside may have
/// its own policy, and the draft lets one response carry several.
pub(crate) fn add_headers(headers: &mut http::HeaderMap, h: Headers) {
    headers.append(RATELIMIT_POLICY.clone(), h.policy);
    headers.append(RATELIMIT.clone(), h.limit);
}

/// The `429` answer: `Retry-After`, the rate-limit headers, a small JSON body, and the
/// [`Rejected`] marker.
pub(crate) fn too_many_requests(headers: Headers, retry_after: u64) -> Response<Bytes> {
    let mut res = crate::reject::rejection(
        StatusCode::TOO_MANY_REQUESTS,
        retry_after,
        "rate limited",
        "rate_limit",
    );
    add_headers(res.headers_mut(), headers);
    res
}

/// The `503` of the shared mode when Redis cannot decide and the fallback is to fail closed.
pub(crate) fn unavailable() -> Response<Bytes> {
    crate::reject::rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        1,
        "rate limiter unavailable",
        "rate_limit",
    )
}
