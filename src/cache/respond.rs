//! Responses the cache makes itself: from a stored entry, a bypass, the `504` of
//! `only-if-cached`; each with its `Cache-Status` member and [`CacheOutcome`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::time::Instant;

use super::body::CacheBody;
use super::directives::CacheControl;
use super::policy::{self, Serve};
use super::purge::Validity;
use super::range::{self, Ranged};
use super::snapshot::CacheOutcome;
use super::state::Shared;
use super::status::{CacheStatus, Fwd};
use super::store::Entry;
use crate::util::header::contains;

pub(crate) static AGE: HeaderName = header::AGE;

/// How a response is served from the cache.
pub(crate) struct Served {
    pub(crate) outcome: CacheOutcome,
    pub(crate) fwd: Option<Fwd>,
    pub(crate) fwd_status: Option<u16>,
    pub(crate) stored: bool,
    pub(crate) collapsed: bool,
    pub(crate) detail: Option<&'static str>,
    /// Served within stale-while-revalidate: the caller starts the background refresh.
    pub(crate) refresh: bool,
}

impl Served {
    pub(crate) fn hit() -> Self {
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

    pub(crate) fn stale_while_revalidate() -> Self {
        Self {
            refresh: true,
            ..Self::stale("stale-while-revalidate")
        }
    }

    pub(crate) fn stale(detail: &'static str) -> Self {
        Self {
            outcome: CacheOutcome::Stale,
            detail: Some(detail),
            ..Self::hit()
        }
    }
}

/// A response from a stored entry: `304` when the client's conditional matches, the stored
/// headers plus `Age` and `Cache-Status`, and the body unless it is a HEAD request.
pub(crate) fn serve<B>(
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
    } else if let Some(ranged) = ranged(entry, req_headers, head_only) {
        partial(entry, ranged)
    } else {
        (
            entry.status,
            // Room for the fields the layers add: `store::stored_headers`.
            entry.headers.clone(),
            (!head_only).then(|| entry.body.clone()),
        )
    };
    headers.insert(AGE.clone(), age_value(age.as_secs()));
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
    .append_to(&mut headers, &shared.statuses);
    let mut res = Response::new(CacheBody::cached(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    shared.mark(&mut res, served.outcome);
    res
}

/// The answer to a `GET` with `Range` from a stored `200`, or from a stored `206` that holds
/// the range, if it asks for one part.
fn ranged(entry: &Entry, req_headers: &HeaderMap, head_only: bool) -> Option<Ranged> {
    if head_only || !contains(req_headers, &header::RANGE) {
        return None;
    }
    let span = range::span(entry)?;
    range::select(req_headers, &entry.headers, &entry.body, span)
}

/// A `206` or `416` from the stored entry: its fields, with the part's length and range.
fn partial(entry: &Entry, ranged: Ranged) -> (StatusCode, HeaderMap, Option<Bytes>) {
    let status = range::status(&ranged);
    let mut headers = entry.headers.clone();
    let (body, content_range) = match ranged {
        Ranged::Partial(part, content_range) => (part, content_range),
        Ranged::Unsatisfiable(content_range) => (Bytes::new(), content_range),
    };
    headers.insert(header::CONTENT_RANGE, content_range);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    (status, headers, Some(body))
}

/// The digits of 0 to 999 one after the other (`0123...9101112...999`): `Age` values below
/// 1000 are slices of it, no allocation.
static AGE_DIGITS: [u8; 2890] = age_digits();

const fn age_digits() -> [u8; 2890] {
    let mut out = [0u8; 2890];
    let (mut n, mut pos) = (0usize, 0usize);
    while n < 1000 {
        let width = if n < 10 {
            1
        } else if n < 100 {
            2
        } else {
            3
        };
        let (mut i, mut m) = (width, n);
        while i > 0 {
            out[pos + i - 1] = b'0' + (m % 10) as u8;
            m /= 10;
            i -= 1;
        }
        pos += width;
        n += 1;
    }
    out
}

/// The `Age` value of `secs`: a static slice below 1000, else formatted.
fn age_value(secs: u64) -> HeaderValue {
    let (start, width) = match secs {
        0..=9 => (secs as usize, 1),
        10..=99 => (10 + (secs as usize - 10) * 2, 2),
        100..=999 => (190 + (secs as usize - 100) * 3, 3),
        _ => return HeaderValue::from(secs),
    };
    let digits = &AGE_DIGITS[start..start + width];
    HeaderValue::from_maybe_shared(bytes::Bytes::from_static(digits))
        .unwrap_or_else(|_| HeaderValue::from(secs))
}

pub(crate) fn bypass<B>(
    shared: &Shared,
    res: Response<B>,
    detail: &'static str,
) -> Response<CacheBody<B>> {
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
    .append_to(res.headers_mut(), &shared.statuses);
    shared.mark(&mut res, CacheOutcome::Bypass);
    res
}

pub(crate) fn gateway_timeout<B>(shared: &Shared) -> Response<CacheBody<B>> {
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
    .append_to(res.headers_mut(), &shared.statuses);
    shared.mark(&mut res, CacheOutcome::Miss);
    res
}

/// Whether a stored entry may be served without the origin, and how.
pub(crate) fn decide_without_origin(
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

/// The stale entry to serve when the origin failed: within its stale-if-error window.
pub(crate) fn stale_if_error(entry: &Arc<Entry>) -> Option<Arc<Entry>> {
    let stale_for = entry.age(Instant::now()).saturating_sub(entry.lifetime);
    within(stale_for, entry.stale_if_error).then(|| entry.clone())
}

/// Whether an entry stale for `stale_for` is inside a stale window; an empty window allows
/// nothing.
pub(crate) fn within(stale_for: Duration, window: Duration) -> bool {
    !window.is_zero() && stale_for <= window
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_values_are_the_decimal_seconds() {
        for secs in (0..1100).chain([9_999, 86_400, u64::MAX]) {
            assert_eq!(age_value(secs), secs.to_string().as_str(), "{secs}");
        }
    }
}
