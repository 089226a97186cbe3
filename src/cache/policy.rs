//! The caching rules of RFC 9111 for a shared cache: what may be stored, for how long it is
//! fresh, how old it is, when it may be served, and how it is revalidated; plus the evaluation
//! of a client's own conditional request against a stored response (RFC 9110 section 13).
//!
//! Everything here is a pure function of headers, directives and times, so the rules are tested
//! without a service. Malformed header values count as absent (or, where absence would make the
//! cache more permissive than the origin meant, as the stricter reading, which is said below).

use crate::util::header::{contains, trim_ows, trim_start_ows};
use std::time::{Duration, SystemTime};

use http::header::{
    HeaderName, AGE, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::directives::{delta_seconds, CacheControl, DELTA_SECONDS_MAX};
use super::head::{self, Fields};

/// Why a response (or request) is not served from, or stored in, the cache. Also the `detail`
/// of the `Cache-Status` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uncacheable {
    /// The request method is not `GET`.
    Method,
    /// The request says `Cache-Control: no-store`.
    RequestNoStore,
    /// The response says `Cache-Control: no-store`.
    ResponseNoStore,
    /// The response says `Cache-Control: private`.
    Private,
    /// The request carries `Authorization` and the response does not allow sharing it.
    Authorization,
    /// The response sets a cookie.
    SetCookie,
    /// The status code is not one the cache stores.
    Status,
    /// The response varies on `*`: no later request can be known to match.
    VaryStar,
    /// The response would be stale at once and has no validator to revalidate it with.
    NoFreshness,
    /// The response is larger than the cache accepts.
    TooLarge,
    /// A `206 Partial Content` response that is not one part asked for by one range.
    PartialContent,
}

impl Uncacheable {
    /// The kebab-case name, a valid Structured Field token.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Uncacheable::Method => "method",
            Uncacheable::RequestNoStore => "request-no-store",
            Uncacheable::ResponseNoStore => "response-no-store",
            Uncacheable::Private => "private",
            Uncacheable::Authorization => "authorization",
            Uncacheable::SetCookie => "set-cookie",
            Uncacheable::Status => "status",
            Uncacheable::VaryStar => "vary-star",
            Uncacheable::NoFreshness => "no-freshness",
            Uncacheable::TooLarge => "too-large",
            Uncacheable::PartialContent => "partial-content",
        }
    }
}

/// What the layer's user decides: the layer sits in front of its own origin, so it may be more
/// generous than a third-party cache would be (a default lifetime), and stricter (cookies).
#[derive(Debug, Clone)]
pub(crate) struct StorePolicy {
    /// Store responses that carry `Set-Cookie`. Off by default: a shared cache would hand one
    /// client's cookie to every other client.
    pub(crate) cache_set_cookie: bool,
    /// The freshness lifetime of responses that give none themselves (no `s-maxage`, `max-age`
    /// or `Expires`), set by the route's configuration. `None`: heuristics only.
    pub(crate) default_ttl: Option<Duration>,
    /// The fraction of the time since `Last-Modified` taken as a heuristic lifetime
    /// (RFC 9111 4.2.2 suggests 10%).
    pub(crate) heuristic_fraction: f64,
    /// The cap on a heuristic lifetime.
    pub(crate) heuristic_max: Duration,
    /// The cap on heuristic and default lifetimes; on explicit ones too with `cap_explicit`.
    pub(crate) max_ttl: Duration,
    /// Cap explicit lifetimes (`s-maxage`, `max-age`, `Expires`) at `max_ttl` as well. Off by
    /// default: the origin's explicit freshness is what it meant.
    pub(crate) cap_explicit: bool,
    /// The targeted cache-control fields (RFC 9213) this cache obeys, first match wins, ahead
    /// of `Cache-Control`. Default: `CDN-Cache-Control`.
    pub(crate) targeted: std::sync::Arc<[HeaderName]>,
    /// Serve a stored `Content-Encoding` only to requests that accept it, even when the
    /// response does not vary on `Accept-Encoding`. Off by default (RFC 9111 reuses the
    /// response as stored).
    pub(crate) require_accepted_coding: bool,
}

impl Default for StorePolicy {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        Self {
            cache_set_cookie: false,
            default_ttl: None,
            heuristic_fraction: 0.1,
            heuristic_max: DAY,
            max_ttl: DAY,
            cap_explicit: false,
            targeted: [HeaderName::from_static("cdn-cache-control")].into(),
            require_accepted_coding: false,
        }
    }
}

/// RFC 9111 section 3: may a shared cache store this response to this request?
///
/// Checked in this order, the first failure being the answer:
///
/// 1. the request method is `GET` (a `HEAD` may be answered from a stored `GET`, but responses
///    to `HEAD` are not stored), else [`Method`](Uncacheable::Method);
/// 2. no `no-store` on the request, then on the response; no `private` (qualified or not);
/// 3. a request with `Authorization` needs `public`, `s-maxage` or `must-revalidate` on the
///    response (3.5);
/// 4. no `Set-Cookie` unless the policy allows it, `public` or not;
/// 5. no `*` member in `Vary` (any field line, any case of whitespace);
/// 6. the status: a `206` that is not one part for one requested range
///    ([`range::storable_part`](super::range::storable_part)) is
///    [`PartialContent`](Uncacheable::PartialContent); `1xx` and `304`
///    (which only updates a stored response) are [`Status`](Uncacheable::Status); any other
///    status is stored with explicit freshness (`s-maxage`, `max-age` or an `Expires` field,
///    even an invalid one), with `public`, or when it is heuristically cacheable (200, 203, 204, 206,
///    300, 301, 308, 404, 405, 410, 414, 501); a `5xx` without explicit freshness needs both
///    `public` and a heuristically cacheable status (so `501` only), so that an outage is not
///    served for the lifetime of a success;
/// 7. the response has a freshness lifetime above zero or a validator (a well-formed `ETag`, or
///    a valid `Last-Modified` date), else [`NoFreshness`](Uncacheable::NoFreshness). When the
///    response has `Expires` but no `Date`, the lifetime is measured from the current time,
///    which is the time of receipt when the caller checks as it receives the response.
pub(crate) fn storable(
    req_method: &Method,
    req_headers: &HeaderMap,
    req_cc: &CacheControl,
    status: StatusCode,
    (res_headers, fields): (&HeaderMap, Fields),
    res_cc: &CacheControl,
    policy: &StorePolicy,
) -> Result<(), Uncacheable> {
    if req_method != Method::GET {
        return Err(Uncacheable::Method);
    }
    if req_cc.no_store {
        return Err(Uncacheable::RequestNoStore);
    }
    // RFC 9111 5.2.2.3: `must-understand` overrides `no-store` for a status whose caching
    // rules this cache knows, and keeps any other status out.
    if res_cc.must_understand && !understood(status) {
        return Err(Uncacheable::Status);
    }
    if res_cc.no_store && !res_cc.must_understand {
        return Err(Uncacheable::ResponseNoStore);
    }
    if res_cc.private {
        return Err(Uncacheable::Private);
    }
    if contains(req_headers, &AUTHORIZATION)
        && !(res_cc.public || res_cc.s_maxage.is_some() || res_cc.must_revalidate)
    {
        return Err(Uncacheable::Authorization);
    }
    if !policy.cache_set_cookie
        && fields.may_have(head::SET_COOKIE_FIELD)
        && res_headers.contains_key(SET_COOKIE)
    {
        return Err(Uncacheable::SetCookie);
    }
    if fields.may_have(head::VARY_FIELD) && vary_star(res_headers) {
        return Err(Uncacheable::VaryStar);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && !super::range::storable_part(req_headers, res_headers)
    {
        return Err(Uncacheable::PartialContent);
    }
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err(Uncacheable::Status);
    }
    if !(explicit_freshness((res_headers, fields), res_cc) || heuristic_allowed(status, res_cc)) {
        return Err(Uncacheable::Status);
    }
    let lifetime = freshness_lifetime(
        status,
        (res_headers, fields),
        res_cc,
        SystemTime::now(),
        policy,
    );
    if lifetime.is_zero() && !has_validator(res_headers, fields) {
        return Err(Uncacheable::NoFreshness);
    }
    Ok(())
}

/// The status codes "defined as heuristically cacheable" (RFC 9110 15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The final statuses whose caching rules this cache implements (RFC 9110 15), for
/// `must-understand`.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=204 | 206 | 300..=305 | 307 | 308 | 400..=417 | 421..=429 | 431 | 500..=505
    )
}

/// Whether the origin gave the response a lifetime: `s-maxage`, `max-age` or an `Expires`
/// field (even an invalid one, which means already expired).
pub(crate) fn explicit_freshness(
    (res_headers, fields): (&HeaderMap, Fields),
    res_cc: &CacheControl,
) -> bool {
    res_cc.s_maxage.is_some()
        || res_cc.max_age.is_some()
        || (fields.may_have(head::EXPIRES_FIELD) && res_headers.contains_key(EXPIRES))
}

/// Whether a response without explicit freshness may get a heuristic (or configured default)
/// lifetime: a heuristically cacheable status, or `public` (RFC 9111 4.2.2). A server error
/// needs both, so an outage is never cached for the lifetime a success would get.
fn heuristic_allowed(status: StatusCode, res_cc: &CacheControl) -> bool {
    if status.is_server_error() {
        res_cc.public && heuristically_cacheable(status)
    } else {
        res_cc.public || heuristically_cacheable(status)
    }
}

/// Whether any `Vary` field line has a `*` member.
fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(VARY)
        .iter()
        .any(|value| list_members(value.as_bytes()).any(|member| member == b"*"))
}

/// Whether the response has something a conditional request can be made with.
fn has_validator(headers: &HeaderMap, fields: Fields) -> bool {
    (fields.may_have(head::ETAG_FIELD) && stored_etag(headers).is_some())
        || (fields.may_have(head::LAST_MODIFIED_FIELD)
            && http_date(headers, &LAST_MODIFIED).is_some())
}

/// RFC 9111 4.2.1: the freshness lifetime of a response, for a shared cache.
///
/// - `no-cache` on the response: zero (it is stored, but every reuse needs revalidation).
/// - `s-maxage`, else `max-age`, else `Expires` minus `Date` (a missing or invalid `Date`, or more
///   than one, means `response_time`; an invalid `Expires` such as `0`, or more than one, means
///   already expired; an `Expires` before the date gives zero).
/// - With none of those, and a status that is heuristically cacheable or a `public` response:
///   `policy.default_ttl` when set, else the heuristic of 4.2.2,
///   `heuristic_fraction × (Date − Last-Modified)` capped at `heuristic_max` (zero without a
///   valid `Last-Modified`, or with one after the date). Explicit freshness, `max-age=0`
///   included, always wins over the default.
/// - Otherwise zero.
///
/// Heuristic and default lifetimes are capped at `policy.max_ttl`; explicit ones only with
/// `policy.cap_explicit`.
pub(crate) fn freshness_lifetime(
    status: StatusCode,
    (res_headers, fields): (&HeaderMap, Fields),
    res_cc: &CacheControl,
    response_time: SystemTime,
    policy: &StorePolicy,
) -> Duration {
    if res_cc.no_cache {
        return Duration::ZERO;
    }
    let lifetime = if let Some(seconds) = res_cc.s_maxage.or(res_cc.max_age) {
        Duration::from_secs(seconds.into())
    } else if fields.may_have(head::EXPIRES_FIELD) && res_headers.contains_key(EXPIRES) {
        match http_date(res_headers, &EXPIRES) {
            Some(expires) => {
                let date = date_or(res_headers, fields, response_time);
                expires.duration_since(date).unwrap_or(Duration::ZERO)
            }
            None => Duration::ZERO,
        }
    } else if heuristic_allowed(status, res_cc) {
        let implicit = match policy.default_ttl {
            Some(ttl) => ttl,
            None if !fields.may_have(head::LAST_MODIFIED_FIELD) => Duration::ZERO,
            None => heuristic(res_headers, fields, response_time, policy),
        };
        return implicit.min(policy.max_ttl);
    } else {
        Duration::ZERO
    };
    // A far `Expires` is held to the largest delta-seconds, like `max-age` (RFC 9111 1.2.2).
    let lifetime = lifetime.min(Duration::from_secs(DELTA_SECONDS_MAX.into()));
    if policy.cap_explicit {
        lifetime.min(policy.max_ttl)
    } else {
        lifetime
    }
}

/// The response's `Date`, else `response_time` (RFC 9111 4.2.1: a missing or invalid `Date`).
fn date_or(res_headers: &HeaderMap, fields: Fields, response_time: SystemTime) -> SystemTime {
    fields
        .may_have(head::DATE_FIELD)
        .then(|| http_date(res_headers, &DATE))
        .flatten()
        .unwrap_or(response_time)
}

/// RFC 9111 4.2.2: a fraction of the time since the last modification.
fn heuristic(
    res_headers: &HeaderMap,
    fields: Fields,
    response_time: SystemTime,
    policy: &StorePolicy,
) -> Duration {
    let Some(last_modified) = http_date(res_headers, &LAST_MODIFIED) else {
        return Duration::ZERO;
    };
    let date = date_or(res_headers, fields, response_time);
    let since = date.duration_since(last_modified).unwrap_or(Duration::ZERO);
    let fraction = policy.heuristic_fraction;
    // A product too large for a Duration (or infinite) is over the cap.
    if fraction.is_nan() || fraction <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(since.as_secs_f64() * fraction)
        .unwrap_or(policy.heuristic_max)
        .min(policy.heuristic_max)
}

/// RFC 9111 4.2.3: the age of the response when it was received (`corrected_initial_age`).
///
/// `max(apparent_age, age_value + response_delay)`, where `apparent_age` is the time from `Date`
/// to `response_time` (zero without a valid `Date`, or with one in the future: clock skew),
/// `response_delay` is `response_time − request_time` (zero if negative), and `age_value` is the
/// first member of the `Age` field as delta-seconds (RFC 9111 5.1: later members and lines are
/// discarded; zero when absent; at most 2^31). An `Age` that is not a non-negative integer
/// (`abc`, `-1`, `1.5`) makes the response stale (5.1): the age is then 2^31 seconds, older than
/// any lifetime.
pub(crate) fn initial_age(
    res_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = match res_headers.get(AGE) {
        None => 0,
        Some(value) => {
            let first = value.as_bytes().split(|&b| b == b',').next().unwrap_or(&[]);
            let first = trim_ows(first);
            // A blank field says nothing; anything else must be delta-seconds.
            if first.is_empty() {
                0
            } else {
                delta_seconds(first).unwrap_or(DELTA_SECONDS_MAX)
            }
        }
    };
    let age_value = Duration::from_secs(age_value.into());
    let apparent_age = http_date(res_headers, &DATE)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent_age.max(age_value.saturating_add(response_delay))
}

/// Whether a stored response may be sent without going to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serve {
    /// Fresh, and within the request's own limits.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it and the response does not forbid it.
    StaleAllowed,
    /// Must be revalidated with the origin first.
    Revalidate,
}

/// RFC 9111 4.2 and 5.2.1: may a stored response of `age` and freshness `lifetime` be sent to a
/// request with these directives without revalidation?
///
/// - `no-cache` on the request or on the response: [`Revalidate`](Serve::Revalidate).
/// - The request's `max-age=N`: an age above `N` seconds is [`Revalidate`](Serve::Revalidate),
///   even with `max-stale` (that one allows staleness, not age). `max-age=0` therefore always
///   revalidates, unless the age is exactly zero.
/// - Fresh means `lifetime > age` (4.2). A fresh response is [`Fresh`](Serve::Fresh) if it also
///   stays fresh for the request's `min-fresh` (`lifetime − age ≥ min-fresh`), else
///   [`Revalidate`](Serve::Revalidate).
/// - A stale response is [`StaleAllowed`](Serve::StaleAllowed) only when the request has
///   `max-stale` (bare: any staleness; `N`: `age − lifetime ≤ N` seconds), no `min-fresh`
///   (which asks for the opposite), and the response has none of `must-revalidate`,
///   `proxy-revalidate`, `s-maxage` (4.2.4, 5.2.2.2, 5.2.2.8, 5.2.2.10).
///
/// `stale-while-revalidate` and `stale-if-error` are the caller's business: they apply to the
/// [`Revalidate`](Serve::Revalidate) outcome.
pub(crate) fn serve_decision(
    age: Duration,
    lifetime: Duration,
    req_cc: &CacheControl,
    res_cc: &CacheControl,
) -> Serve {
    if req_cc.no_cache || res_cc.no_cache {
        return Serve::Revalidate;
    }
    if let Some(max_age) = req_cc.max_age {
        if age > Duration::from_secs(max_age.into()) {
            return Serve::Revalidate;
        }
    }
    if lifetime > age {
        let min_fresh = Duration::from_secs(req_cc.min_fresh.unwrap_or(0).into());
        return if lifetime - age >= min_fresh {
            Serve::Fresh
        } else {
            Serve::Revalidate
        };
    }
    if res_cc.must_revalidate
        || res_cc.proxy_revalidate
        || res_cc.s_maxage.is_some()
        || req_cc.min_fresh.is_some()
    {
        return Serve::Revalidate;
    }
    let staleness = age - lifetime;
    match req_cc.max_stale {
        Some(u32::MAX) => Serve::StaleAllowed,
        Some(max_stale) if staleness <= Duration::from_secs(max_stale.into()) => {
            Serve::StaleAllowed
        }
        _ => Serve::Revalidate,
    }
}

/// The conditional request fields a client may send, removed before the cache adds its own.
const CONDITIONALS: [HeaderName; 5] = [
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
];

/// RFC 9111 4.3.1: turns the request `headers` into a revalidation of the `stored` response.
///
/// Removes the client's own conditionals (`If-None-Match`, `If-Modified-Since`, `If-Match`,
/// `If-Unmodified-Since`, `If-Range`), then sets `If-None-Match` to the stored `ETag` (if
/// well-formed) and `If-Modified-Since` to the stored `Last-Modified` (if a valid date). Both are
/// sent when both exist, as 4.3.1 asks (the entity tag MUST be sent, the date SHOULD); an origin
/// evaluates `If-None-Match` first and ignores the date (RFC 9110 13.2.2).
pub(crate) fn add_validators(stored: &HeaderMap, headers: &mut HeaderMap) {
    for name in &CONDITIONALS {
        headers.remove(name);
    }
    if let Some((value, _)) = stored_etag(stored) {
        headers.insert(IF_NONE_MATCH, value.clone());
    }
    if let Some(value) = stored.get(LAST_MODIFIED) {
        if http_date(stored, &LAST_MODIFIED).is_some() {
            headers.insert(IF_MODIFIED_SINCE, value.clone());
        }
    }
}

/// RFC 9110 13.1.2, 13.1.3 and 13.2.2: does the client's conditional `GET` / `HEAD` make the
/// `stored` response a `304 Not Modified`?
///
/// - `If-None-Match`, when present and well-formed (`*`, or a list of entity-tags over any
///   number of field lines), decides alone: `*` matches (the stored response exists), a list
///   matches when one of its tags equals the stored `ETag` by weak comparison (`W/"a"` matches
///   `"a"`). No stored `ETag`: no match. A malformed field (a bad tag anywhere, `*` mixed with
///   tags, no member at all) counts as absent.
/// - Otherwise `If-Modified-Since` (one valid HTTP-date, else absent): not modified when the
///   stored `Last-Modified`, or else its `Date`, is at or before that date; neither: modified.
///
/// The caller checks the method (`GET`, `HEAD`) and the preconditions that come first
/// (`If-Match`, `If-Unmodified-Since`).
pub(crate) fn not_modified(req_headers: &HeaderMap, stored: &HeaderMap) -> bool {
    // The stored validator is looked up only for a request that has something to compare.
    if contains(req_headers, &IF_NONE_MATCH) {
        let etag = stored_etag(stored).map(|(_, tag)| tag);
        if let Some(matched) = if_none_match(req_headers, etag) {
            return matched;
        }
    }
    if !contains(req_headers, &IF_MODIFIED_SINCE) {
        return false;
    }
    let Some(since) = http_date(req_headers, &IF_MODIFIED_SINCE) else {
        return false;
    };
    http_date(stored, &LAST_MODIFIED)
        .or_else(|| http_date(stored, &DATE))
        .is_some_and(|modified| modified <= since)
}

/// `Some(matched)` for a well-formed `If-None-Match`, `None` when absent or malformed.
fn if_none_match(req_headers: &HeaderMap, stored: Option<EntityTag<'_>>) -> Option<bool> {
    let mut members = 0usize;
    let mut star = false;
    let mut matched = false;
    for value in req_headers.get_all(IF_NONE_MATCH) {
        let bytes = value.as_bytes();
        if trim_ows(bytes) == b"*" {
            star = true;
            members += 1;
            continue;
        }
        let mut rest = bytes;
        loop {
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            let (tag, after) = EntityTag::parse(rest)?;
            members += 1;
            matched |= stored.is_some_and(|stored| stored.weak_eq(tag));
            rest = trim_start_ows(after);
            if !rest.is_empty() && rest[0] != b',' {
                return None;
            }
        }
    }
    match (members, star) {
        (0, _) => None,
        (1, true) => Some(true),
        (_, true) => None,
        (_, false) => Some(matched),
    }
}

/// Fields never copied from a `304` into the stored response: hop-by-hop fields (RFC 9111 3.1),
/// `Content-Length` and the `Content-Encoding` the stored body depends on (3.2), and, unless
/// the cache stores cookies (`keep_cookies`), `Set-Cookie`, which belongs to the client that
/// triggered the revalidation and must not be stored for everyone (the caller still forwards
/// it to that client).
fn excluded_from_update(name: &HeaderName, not_modified: &HeaderMap, keep_cookies: bool) -> bool {
    const PROXY_CONNECTION: &str = "proxy-connection";
    const KEEP_ALIVE: &str = "keep-alive";
    const PROXY_AUTHENTICATION_INFO: &str = "proxy-authentication-info";
    let fixed = [
        &CONTENT_LENGTH,
        &CONTENT_ENCODING,
        &TRANSFER_ENCODING,
        &CONNECTION,
        &TE,
        &TRAILER,
        &UPGRADE,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
    ];
    fixed.contains(&name)
        || (!keep_cookies && name == SET_COOKIE)
        || matches!(
            name.as_str(),
            PROXY_CONNECTION | KEEP_ALIVE | PROXY_AUTHENTICATION_INFO
        )
        || not_modified.get_all(CONNECTION).iter().any(|value| {
            list_members(value.as_bytes()).any(|member| member.eq_ignore_ascii_case(name.as_ref()))
        })
}

/// RFC 9111 4.3.4: freshens the `stored` response headers with a `304 Not Modified` response.
///
/// First, does the `304` select the stored response?
/// - it has a well-formed `ETag`: a strong one must equal the stored `ETag` by strong
///   comparison, a weak one by weak comparison;
/// - else it has a valid `Last-Modified`: it must equal the stored one;
/// - else (no validator at all): it matches, since the cache sent the conditional request from
///   this stored response's own validators.
///
/// If not, returns `false` and leaves `stored` untouched (the caller re-fetches unconditionally).
/// If so, every field the `304` carries replaces all the stored lines of that name
/// (`Content-Range` and, with `keep_cookies`, `Set-Cookie` included), except `Content-Length`,
/// `Content-Encoding`, `Transfer-Encoding`, hop-by-hop fields (`Connection` and the fields it
/// names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `Proxy-Authenticate`,
/// `Proxy-Authorization`, `Proxy-Authentication-Info`) and, without `keep_cookies`,
/// `Set-Cookie` (see [`excluded_from_update`]); and a stored `Age` is dropped when the `304` has none,
/// because `Age` describes the message it came with: the caller computes the new
/// [`initial_age`] from the `304` and the times of the revalidation. Returns `true`.
pub(crate) fn update_from_304(
    stored: &mut HeaderMap,
    not_modified: &HeaderMap,
    keep_cookies: bool,
) -> bool {
    let new_etag = stored_etag(not_modified).map(|(_, tag)| tag);
    let selected = if let Some(new) = new_etag {
        let old = stored_etag(stored).map(|(_, tag)| tag);
        old.is_some_and(|old| {
            if new.weak {
                old.weak_eq(new)
            } else {
                old.strong_eq(new)
            }
        })
    } else if let Some(new) = http_date(not_modified, &LAST_MODIFIED) {
        http_date(stored, &LAST_MODIFIED) == Some(new)
    } else {
        true
    };
    if !selected {
        return false;
    }
    if !not_modified.contains_key(AGE) {
        stored.remove(AGE);
    }
    for name in not_modified.keys() {
        if excluded_from_update(name, not_modified, keep_cookies) {
            continue;
        }
        stored.remove(name);
        for value in not_modified.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
    true
}

/// RFC 9110 15.4.5: the fields of a `304 Not Modified` sent from the `stored` response:
/// `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires`, `Vary`, and `Last-Modified`
/// (allowed, and useful to a client that validates by date), every line of each. The caller adds
/// `Age` and `Cache-Status`.
pub(crate) fn headers_for_304(stored: &HeaderMap) -> HeaderMap {
    const FIELDS: [HeaderName; 7] = [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ];
    let mut headers = HeaderMap::with_capacity(FIELDS.len());
    for name in FIELDS {
        for value in stored.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// An `entity-tag` (RFC 9110 8.8.3), borrowed from a field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    /// `W/` prefix.
    weak: bool,
    /// The `opaque-tag` without its quotes.
    opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Parses one entity-tag at the start of `bytes`; returns it and the rest.
    fn parse(bytes: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let (weak, rest) = match bytes.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, bytes),
        };
        let rest = rest.strip_prefix(b"\"")?;
        let end = rest.iter().position(|&b| b == b'"')?;
        let opaque = &rest[..end];
        // etagc = %x21 / %x23-7E / obs-text: no whitespace, no control, no quote.
        if !opaque
            .iter()
            .all(|&b| b == 0x21 || (b >= 0x23 && b != 0x7f))
        {
            return None;
        }
        Some((Self { weak, opaque }, &rest[end + 1..]))
    }

    /// Weak comparison (RFC 9110 8.8.3.2): the opaque tags are equal.
    fn weak_eq(self, other: Self) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong, and the opaque tags are equal.
    fn strong_eq(self, other: Self) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// Whether both field sections carry the same strong entity-tag (RFC 9111 3.4: only then are
/// two responses parts of one representation).
pub(crate) fn same_strong_etag(a: &HeaderMap, b: &HeaderMap) -> bool {
    match (stored_etag(a), stored_etag(b)) {
        (Some((_, a)), Some((_, b))) => a.strong_eq(b),
        _ => false,
    }
}

/// The first `ETag` field line of `headers`, when it is exactly one well-formed entity-tag.
fn stored_etag(headers: &HeaderMap) -> Option<(&HeaderValue, EntityTag<'_>)> {
    let value = headers.get(ETAG)?;
    let (tag, rest) = EntityTag::parse(trim_ows(value.as_bytes()))?;
    rest.is_empty().then_some((value, tag))
}

/// The date in `name`, when there is exactly one field line and it is a valid HTTP-date.
fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut lines = headers.get_all(name).iter();
    let value = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    parse_date(trim_ows(value.as_bytes()))
}

/// An HTTP-date in any of the three formats of RFC 9110 5.6.7 (IMF-fixdate, and the obsolete
/// RFC 850 and asctime ones), also with the names of days, months and zone in the wrong case.
pub(crate) fn parse_date(bytes: &[u8]) -> Option<SystemTime> {
    if let Some(date) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| httpdate::parse_http_date(text).ok())
    {
        return Some(date);
    }
    // Recase on the stack: `Thu`, `Jan`, `GMT`. The longest valid date has 33 bytes.
    let mut buf = [0u8; 40];
    let out = buf.get_mut(..bytes.len())?;
    let mut word_start = true;
    for (dst, &src) in out.iter_mut().zip(bytes) {
        *dst = if word_start {
            src.to_ascii_uppercase()
        } else {
            src.to_ascii_lowercase()
        };
        word_start = !src.is_ascii_alphabetic();
    }
    if let Some(zone) = out.len().checked_sub(3).map(|at| &mut out[at..]) {
        if zone.eq_ignore_ascii_case(b"gmt") {
            zone.copy_from_slice(b"GMT");
        }
    }
    httpdate::parse_http_date(std::str::from_utf8(out).ok()?).ok()
}

/// The members of a comma-separated list, trimmed, empty ones skipped.
fn list_members(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|member| !member.is_empty())
}

fn skip_separators(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b','));
    start.map_or(&[][..], |start| &bytes[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// A fixed "now" for dates: 2023-11-14T22:13:20Z.
    const T0: u64 = 1_700_000_000;
    const DAY: u64 = 86_400;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    /// Header fields as `(name, value)` pairs.
    type Fields<'a> = &'a [(&'a str, &'a str)];

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    // ---- storable ----

    fn check_with(
        method: Method,
        req: &[(&str, &str)],
        status: u16,
        res: &[(&str, &str)],
        policy: &StorePolicy,
    ) -> Result<(), Uncacheable> {
        let req = map(req);
        let res = map(res);
        storable(
            &method,
            &req,
            &CacheControl::parse_request(&req),
            StatusCode::from_u16(status).unwrap(),
            // The fields as the store path finds them: every check also covers the scan.
            (
                &res,
                head::Fields::scan(&res, &[], &HeaderName::from_static("cache-tag")),
            ),
            &CacheControl::parse(&res),
            policy,
        )
    }

    fn check(req: &[(&str, &str)], status: u16, res: &[(&str, &str)]) -> Result<(), Uncacheable> {
        check_with(Method::GET, req, status, res, &StorePolicy::default())
    }

    const FRESH: (&str, &str) = ("cache-control", "max-age=60");

    #[test]
    fn reason_names_are_tokens() {
        use Uncacheable::*;
        let all = [
            Method,
            RequestNoStore,
            ResponseNoStore,
            Private,
            Authorization,
            SetCookie,
            Status,
            VaryStar,
            NoFreshness,
            TooLarge,
            PartialContent,
        ];
        let names: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "method",
                "request-no-store",
                "response-no-store",
                "private",
                "authorization",
                "set-cookie",
                "status",
                "vary-star",
                "no-freshness",
                "too-large",
                "partial-content"
            ]
        );
        for name in names {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        }
    }

    #[test]
    fn only_get_is_stored() {
        assert_eq!(check(&[], 200, &[FRESH]), Ok(()));
        let policy = StorePolicy::default();
        for method in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
            assert_eq!(
                check_with(method, &[], 200, &[FRESH], &policy),
                Err(Uncacheable::Method)
            );
        }
    }

    #[test]
    fn no_store_and_private() {
        let req_no_store = [("cache-control", "no-store")];
        assert_eq!(
            check(&req_no_store, 200, &[FRESH]),
            Err(Uncacheable::RequestNoStore)
        );
        let res = [("cache-control", "max-age=60, no-store")];
        assert_eq!(check(&[], 200, &res), Err(Uncacheable::ResponseNoStore));
        let res = [("cache-control", "max-age=60, private")];
        assert_eq!(check(&[], 200, &res), Err(Uncacheable::Private));
        let res = [("cache-control", "private=\"Set-Cookie\", max-age=60")];
        assert_eq!(check(&[], 200, &res), Err(Uncacheable::Private));
        // Pragma on a request is no-cache, not no-store.
        assert_eq!(check(&[("pragma", "no-cache")], 200, &[FRESH]), Ok(()));
    }

    #[test]
    fn authorization_needs_explicit_sharing() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(check(&auth, 200, &[FRESH]), Err(Uncacheable::Authorization));
        assert_eq!(check(&auth, 200, &[]), Err(Uncacheable::Authorization));
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert_eq!(check(&auth, 200, &[("cache-control", cc)]), Ok(()), "{cc}");
        }
        // proxy-revalidate is not in the list of 3.5.
        let res = [("cache-control", "max-age=60, proxy-revalidate")];
        assert_eq!(check(&auth, 200, &res), Err(Uncacheable::Authorization));
    }

    #[test]
    fn set_cookie() {
        let res = [FRESH, ("set-cookie", "a=b")];
        assert_eq!(check(&[], 200, &res), Err(Uncacheable::SetCookie));
        let res = [
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "a=b"),
        ];
        assert_eq!(check(&[], 200, &res), Err(Uncacheable::SetCookie));
        let policy = StorePolicy {
            cache_set_cookie: true,
            ..StorePolicy::default()
        };
        assert_eq!(check_with(Method::GET, &[], 200, &res, &policy), Ok(()));
    }

    #[test]
    fn vary_star_in_any_form() {
        for vary in [
            &["*"][..],
            &["Accept, *"],
            &[" * "],
            &["accept,*,x"],
            &["Accept", "*"],
            &["\t*\t,"],
        ] {
            let mut res = vec![FRESH];
            res.extend(vary.iter().map(|v| ("vary", *v)));
            assert_eq!(
                check(&[], 200, &res),
                Err(Uncacheable::VaryStar),
                "{vary:?}"
            );
        }
        for vary in ["Accept-Encoding", "accept, cookie", "*x", "x*"] {
            assert_eq!(check(&[], 200, &[FRESH, ("vary", vary)]), Ok(()), "{vary}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(check(&[], 206, &[FRESH]), Err(Uncacheable::PartialContent));
        for status in [100, 103, 304] {
            assert_eq!(
                check(&[], status, &[FRESH]),
                Err(Uncacheable::Status),
                "{status}"
            );
        }
        // Server errors: with explicit freshness only, or `public` and heuristically cacheable.
        let etag = ("etag", "\"v1\"");
        let public = ("cache-control", "public");
        for status in [500, 501, 502, 503, 504, 599] {
            assert_eq!(check(&[], status, &[FRESH]), Ok(()), "{status}");
            assert_eq!(
                check(&[], status, &[etag]),
                Err(Uncacheable::Status),
                "{status}"
            );
            let want = if status == 501 {
                Ok(())
            } else {
                Err(Uncacheable::Status)
            };
            assert_eq!(check(&[], status, &[public, etag]), want, "{status}");
        }
        // Without explicit freshness, only heuristically cacheable statuses (or `public`).
        let etag = ("etag", "\"v1\"");
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414] {
            assert_eq!(check(&[], status, &[etag]), Ok(()), "{status}");
        }
        for status in [201, 202, 302, 303, 307, 400, 401, 403, 409, 429] {
            assert_eq!(
                check(&[], status, &[etag]),
                Err(Uncacheable::Status),
                "{status}"
            );
            assert_eq!(check(&[], status, &[FRESH]), Ok(()), "{status}");
            let public = ("cache-control", "public");
            assert_eq!(check(&[], status, &[public, etag]), Ok(()), "{status}");
            let expires = ("expires", date(T0 + DAY * 365 * 100));
            assert_eq!(
                check(&[], status, &[(expires.0, &expires.1)]),
                Ok(()),
                "{status}"
            );
        }
    }

    #[test]
    fn no_freshness_without_validators() {
        assert_eq!(check(&[], 200, &[]), Err(Uncacheable::NoFreshness));
        assert_eq!(check(&[], 404, &[]), Err(Uncacheable::NoFreshness));
        let zero = ("cache-control", "max-age=0");
        assert_eq!(check(&[], 200, &[zero]), Err(Uncacheable::NoFreshness));
        assert_eq!(check(&[], 200, &[zero, ("etag", "W/\"1\"")]), Ok(()));
        let no_cache = ("cache-control", "no-cache, max-age=600");
        assert_eq!(check(&[], 200, &[no_cache]), Err(Uncacheable::NoFreshness));
        let lm = date(T0);
        assert_eq!(check(&[], 200, &[no_cache, ("last-modified", &lm)]), Ok(()));
        // Malformed validators are not validators.
        assert_eq!(
            check(&[], 200, &[zero, ("etag", "v1")]),
            Err(Uncacheable::NoFreshness)
        );
        assert_eq!(
            check(&[], 200, &[zero, ("last-modified", "yesterday")]),
            Err(Uncacheable::NoFreshness)
        );
        // Invalid or past Expires: stale at once.
        assert_eq!(
            check(&[], 200, &[("expires", "0")]),
            Err(Uncacheable::NoFreshness)
        );
        assert_eq!(
            check(&[], 200, &[("expires", "0"), ("etag", "\"a\"")]),
            Ok(())
        );
        // Heuristic freshness from an old Last-Modified.
        let old = date(T0 - 30 * DAY);
        assert_eq!(check(&[], 200, &[("last-modified", &old)]), Ok(()));
        // A default lifetime makes it storable.
        let policy = StorePolicy {
            default_ttl: Some(secs(30)),
            ..StorePolicy::default()
        };
        assert_eq!(check_with(Method::GET, &[], 200, &[], &policy), Ok(()));
        assert_eq!(check_with(Method::GET, &[], 404, &[], &policy), Ok(()));
        // ... but not over a stricter header.
        assert_eq!(
            check_with(Method::GET, &[], 200, &[zero], &policy),
            Err(Uncacheable::NoFreshness)
        );
        // A zero cap, applied to explicit lifetimes too, leaves only validators.
        let policy = StorePolicy {
            max_ttl: Duration::ZERO,
            cap_explicit: true,
            ..StorePolicy::default()
        };
        assert_eq!(
            check_with(Method::GET, &[], 200, &[FRESH], &policy),
            Err(Uncacheable::NoFreshness)
        );
    }

    // ---- freshness_lifetime ----

    fn lifetime_with(status: u16, res: &[(&str, &str)], policy: &StorePolicy) -> Duration {
        let res = map(res);
        freshness_lifetime(
            StatusCode::from_u16(status).unwrap(),
            (&res, head::Fields::UNKNOWN),
            &CacheControl::parse(&res),
            at(T0),
            policy,
        )
    }

    fn lifetime(res: &[(&str, &str)]) -> Duration {
        lifetime_with(200, res, &StorePolicy::default())
    }

    #[test]
    fn explicit_lifetimes() {
        assert_eq!(
            lifetime(&[("cache-control", "max-age=60, s-maxage=30")]),
            secs(30)
        );
        assert_eq!(lifetime(&[("cache-control", "max-age=60")]), secs(60));
        let expires = date(T0 + 600);
        let earlier = date(T0 - 100);
        assert_eq!(
            lifetime(&[("cache-control", "max-age=5"), ("expires", &expires)]),
            secs(5)
        );
        // Expires - Date.
        assert_eq!(
            lifetime(&[("expires", &expires), ("date", &earlier)]),
            secs(700)
        );
        // Date missing or invalid: the response time.
        assert_eq!(lifetime(&[("expires", &expires)]), secs(600));
        assert_eq!(
            lifetime(&[("expires", &expires), ("date", "garbage")]),
            secs(600)
        );
        // Expires in the past, invalid, or repeated: expired.
        assert_eq!(lifetime(&[("expires", &earlier)]), Duration::ZERO);
        assert_eq!(lifetime(&[("expires", "0")]), Duration::ZERO);
        assert_eq!(lifetime(&[("expires", "-1")]), Duration::ZERO);
        assert_eq!(
            lifetime(&[("expires", &expires), ("expires", &expires)]),
            Duration::ZERO
        );
        // Other date formats of RFC 9110 5.6.7.
        let past_850 = "Sunday, 06-Nov-94 08:49:37 GMT";
        assert_eq!(lifetime(&[("expires", past_850)]), Duration::ZERO);
        assert_eq!(
            lifetime(&[
                ("expires", "Sun Nov  6 08:49:37 2095"),
                ("date", "Sun Nov  6 08:49:27 2095")
            ]),
            secs(10)
        );
    }

    #[test]
    fn no_cache_is_zero() {
        assert_eq!(
            lifetime(&[("cache-control", "no-cache, max-age=60")]),
            Duration::ZERO
        );
        assert_eq!(
            lifetime(&[("cache-control", "no-cache=\"set-cookie\", max-age=60")]),
            Duration::ZERO
        );
    }

    #[test]
    fn default_ttl_below_explicit() {
        let policy = StorePolicy {
            default_ttl: Some(secs(300)),
            ..StorePolicy::default()
        };
        assert_eq!(lifetime_with(200, &[], &policy), secs(300));
        assert_eq!(lifetime_with(404, &[], &policy), secs(300));
        let old = date(T0 - 100 * DAY);
        // It replaces the heuristic.
        assert_eq!(
            lifetime_with(200, &[("last-modified", &old)], &policy),
            secs(300)
        );
        // Explicit values win, shorter or longer.
        assert_eq!(
            lifetime_with(200, &[("cache-control", "max-age=0")], &policy),
            Duration::ZERO
        );
        assert_eq!(
            lifetime_with(200, &[("cache-control", "max-age=900")], &policy),
            secs(900)
        );
        assert_eq!(
            lifetime_with(200, &[("cache-control", "no-cache")], &policy),
            Duration::ZERO
        );
        assert_eq!(
            lifetime_with(200, &[("expires", "0")], &policy),
            Duration::ZERO
        );
        // Not for statuses without heuristic freshness, unless public.
        assert_eq!(lifetime_with(302, &[], &policy), Duration::ZERO);
        assert_eq!(
            lifetime_with(302, &[("cache-control", "public")], &policy),
            secs(300)
        );
        // Capped like everything else.
        let capped = StorePolicy {
            default_ttl: Some(secs(300)),
            max_ttl: secs(100),
            ..StorePolicy::default()
        };
        assert_eq!(lifetime_with(200, &[], &capped), secs(100));
    }

    #[test]
    fn heuristic_freshness() {
        let hour_ago = date(T0 - 3600);
        assert_eq!(lifetime(&[("last-modified", &hour_ago)]), secs(360));
        // Measured from Date when present.
        let date_hdr = date(T0 - 1000);
        let lm = date(T0 - 2000);
        assert_eq!(
            lifetime(&[("last-modified", &lm), ("date", &date_hdr)]),
            secs(100)
        );
        // Capped at heuristic_max.
        let long_ago = date(T0 - 100 * DAY);
        assert_eq!(lifetime(&[("last-modified", &long_ago)]), secs(DAY));
        // No (valid) Last-Modified, or one after the date: nothing.
        assert_eq!(lifetime(&[]), Duration::ZERO);
        assert_eq!(lifetime(&[("last-modified", "yesterday")]), Duration::ZERO);
        let future = date(T0 + 3600);
        assert_eq!(lifetime(&[("last-modified", &future)]), Duration::ZERO);
        // Only for heuristically cacheable statuses or public responses.
        let policy = StorePolicy::default();
        assert_eq!(
            lifetime_with(302, &[("last-modified", &hour_ago)], &policy),
            Duration::ZERO
        );
        let public = [("last-modified", &*hour_ago), ("cache-control", "public")];
        assert_eq!(lifetime_with(302, &public, &policy), secs(360));
        // Odd fractions do not panic.
        for (fraction, want) in [
            (f64::NAN, 0),
            (-1.0, 0),
            (0.0, 0),
            (f64::INFINITY, DAY),
            (1e300, DAY),
            (0.5, 1800),
        ] {
            let policy = StorePolicy {
                heuristic_fraction: fraction,
                ..StorePolicy::default()
            };
            assert_eq!(
                lifetime_with(200, &[("last-modified", &hour_ago)], &policy),
                secs(want),
                "{fraction}"
            );
        }
    }

    #[test]
    fn max_ttl_caps_explicit_lifetimes_only_when_asked() {
        let far = date(T0 + 1000 * DAY);
        let capped = StorePolicy {
            cap_explicit: true,
            ..StorePolicy::default()
        };
        for (fields, uncapped) in [
            (&[("cache-control", "max-age=1000000")][..], secs(1_000_000)),
            (&[("cache-control", "s-maxage=99999999999")], secs(1 << 31)),
            (&[("expires", &*far)], secs(1000 * DAY)),
            (
                &[("expires", "Fri, 31 Dec 9999 23:59:59 GMT")],
                secs(1 << 31),
            ),
        ] {
            assert_eq!(lifetime(fields), uncapped, "{fields:?}");
            assert_eq!(lifetime_with(200, fields, &capped), secs(DAY), "{fields:?}");
        }
    }

    // ---- initial_age ----

    fn age(res: &[(&str, &str)], request: u64, response: u64) -> Duration {
        initial_age(&map(res), at(request), at(response))
    }

    #[test]
    fn initial_ages() {
        assert_eq!(age(&[], T0, T0), Duration::ZERO);
        // Response delay alone.
        assert_eq!(age(&[], T0, T0 + 2), secs(2));
        // Age plus delay.
        assert_eq!(age(&[("age", "100")], T0, T0 + 2), secs(102));
        // Apparent age wins when larger.
        let d = date(T0 - 30);
        assert_eq!(age(&[("age", "10"), ("date", &d)], T0 - 2, T0), secs(30));
        assert_eq!(age(&[("age", "100"), ("date", &d)], T0 - 2, T0), secs(102));
        // Clock skew: a Date in the future gives apparent age 0.
        let future = date(T0 + 3600);
        assert_eq!(age(&[("age", "5"), ("date", &future)], T0 - 1, T0), secs(6));
        assert_eq!(age(&[("date", &future)], T0, T0), Duration::ZERO);
        // Malformed Age: stale (the largest age).
        for bad in ["abc", "-5", "1.5", "0x10", "old, 0"] {
            assert_eq!(age(&[("age", bad)], T0, T0), secs(1 << 31), "{bad:?}");
        }
        // A list: its first member; a blank field: absent.
        assert_eq!(age(&[("age", "5, 6")], T0, T0), secs(5));
        assert_eq!(age(&[("age", "7200,0")], T0, T0), secs(7200));
        assert_eq!(age(&[("age", "")], T0, T0), Duration::ZERO);
        assert_eq!(age(&[("age", " 7 ")], T0, T0), secs(7));
        // Saturation.
        assert_eq!(
            age(&[("age", "99999999999999999999")], T0, T0),
            secs(1 << 31)
        );
        // A response "before" its request: no negative delay.
        assert_eq!(age(&[("age", "3")], T0 + 10, T0), secs(3));
        // Invalid Date: no apparent age.
        assert_eq!(age(&[("date", "now")], T0, T0), Duration::ZERO);
    }

    // ---- serve_decision ----

    #[test]
    fn serve_matrix() {
        use Serve::*;
        let cc = |s: &str| CacheControl::parse(&map(&[("cache-control", s)]));
        // (age, lifetime, request, response, expected)
        let cases: &[(u64, u64, &str, &str, Serve)] = &[
            (0, 60, "", "", Fresh),
            (59, 60, "", "", Fresh),
            (60, 60, "", "", Revalidate),
            (61, 60, "", "", Revalidate),
            (0, 0, "", "", Revalidate),
            // Request no-cache, response no-cache.
            (0, 60, "no-cache", "", Revalidate),
            (0, 60, "", "no-cache", Revalidate),
            (0, 60, "max-stale", "no-cache", Revalidate),
            // Request max-age.
            (10, 60, "max-age=10", "", Fresh),
            (11, 60, "max-age=10", "", Revalidate),
            (1, 60, "max-age=0", "", Revalidate),
            (0, 60, "max-age=0", "", Fresh),
            (100, 60, "max-age=50, max-stale", "", Revalidate),
            // min-fresh.
            (30, 60, "min-fresh=30", "", Fresh),
            (31, 60, "min-fresh=30", "", Revalidate),
            (70, 60, "min-fresh=0, max-stale", "", Revalidate),
            // max-stale.
            (70, 60, "max-stale", "", StaleAllowed),
            (1_000_000, 60, "max-stale", "", StaleAllowed),
            (70, 60, "max-stale=10", "", StaleAllowed),
            (71, 60, "max-stale=10", "", Revalidate),
            (70, 60, "max-stale=10, max-age=100", "", StaleAllowed),
            (5, 0, "max-stale=10", "max-age=0", StaleAllowed),
            // What the response forbids.
            (70, 60, "max-stale", "must-revalidate", Revalidate),
            (70, 60, "max-stale", "proxy-revalidate", Revalidate),
            (70, 60, "max-stale", "s-maxage=60", Revalidate),
            (10, 60, "max-stale", "must-revalidate", Fresh),
            (10, 60, "", "s-maxage=60", Fresh),
        ];
        for &(age, lifetime, req, res, want) in cases {
            let got = serve_decision(secs(age), secs(lifetime), &cc(req), &cc(res));
            assert_eq!(
                got, want,
                "age {age}, lifetime {lifetime}, request {req:?}, response {res:?}"
            );
        }
        // Sub-second ages.
        let half = Duration::from_millis(500);
        assert_eq!(serve_decision(half, secs(1), &cc(""), &cc("")), Fresh);
        assert_eq!(
            serve_decision(half, secs(1), &cc("max-age=0"), &cc("")),
            Revalidate
        );
        assert_eq!(
            serve_decision(half, secs(1), &cc("min-fresh=1"), &cc("")),
            Revalidate
        );
    }

    // ---- add_validators ----

    #[test]
    fn validators_for_revalidation() {
        let lm = date(T0);
        let stored = map(&[("etag", "\"v1\""), ("last-modified", &lm)]);
        let mut headers = map(&[
            ("if-none-match", "\"client\""),
            ("if-modified-since", &date(T0 - 5)),
            ("if-match", "*"),
            ("if-unmodified-since", &date(T0 - 5)),
            ("if-range", "\"x\""),
            ("accept", "text/html"),
        ]);
        add_validators(&stored, &mut headers);
        assert_eq!(
            headers.get_all(IF_NONE_MATCH).iter().collect::<Vec<_>>(),
            ["\"v1\""]
        );
        assert_eq!(headers.get(IF_MODIFIED_SINCE).unwrap(), lm.as_str());
        assert!(!headers.contains_key(IF_MATCH));
        assert!(!headers.contains_key(IF_UNMODIFIED_SINCE));
        assert!(!headers.contains_key(IF_RANGE));
        assert_eq!(headers.get("accept").unwrap(), "text/html");

        let mut headers = map(&[("if-none-match", "\"client\"")]);
        add_validators(&map(&[("last-modified", &lm)]), &mut headers);
        assert!(!headers.contains_key(IF_NONE_MATCH));
        assert_eq!(headers.get(IF_MODIFIED_SINCE).unwrap(), lm.as_str());

        let mut headers = HeaderMap::new();
        add_validators(&map(&[("etag", "W/\"w\"")]), &mut headers);
        assert_eq!(headers.get(IF_NONE_MATCH).unwrap(), "W/\"w\"");
        assert!(!headers.contains_key(IF_MODIFIED_SINCE));

        // Malformed validators are not sent.
        let mut headers = map(&[("if-modified-since", &lm)]);
        add_validators(
            &map(&[("etag", "v1"), ("last-modified", "recently")]),
            &mut headers,
        );
        assert!(headers.is_empty());
    }

    // ---- not_modified ----

    fn nm(req: &[(&str, &str)], stored: &[(&str, &str)]) -> bool {
        not_modified(&map(req), &map(stored))
    }

    #[test]
    fn if_none_match_comparison() {
        let strong = [("etag", "\"a\"")];
        let weak = [("etag", "W/\"a\"")];
        assert!(nm(&[("if-none-match", "\"a\"")], &strong));
        assert!(nm(&[("if-none-match", "W/\"a\"")], &strong));
        assert!(nm(&[("if-none-match", "\"a\"")], &weak));
        assert!(nm(&[("if-none-match", "W/\"a\"")], &weak));
        assert!(!nm(&[("if-none-match", "\"b\"")], &strong));
        assert!(!nm(&[("if-none-match", "\"A\"")], &strong));
        // Lists, over one or several lines.
        assert!(nm(&[("if-none-match", "\"x\", W/\"y\",\"a\"")], &strong));
        assert!(nm(
            &[("if-none-match", "\"x\""), ("if-none-match", "\"a\"")],
            &strong
        ));
        assert!(nm(&[("if-none-match", " , \"x\" ,, \"a\" ,")], &strong));
        assert!(!nm(&[("if-none-match", "\"x\", \"y\"")], &strong));
        // Commas inside a tag are part of it.
        assert!(nm(&[("if-none-match", "\"a,b\"")], &[("etag", "\"a,b\"")]));
        // `*` matches any stored response, with or without an ETag.
        assert!(nm(&[("if-none-match", "*")], &strong));
        assert!(nm(&[("if-none-match", " * ")], &[]));
        // No stored ETag: a list cannot match.
        assert!(!nm(&[("if-none-match", "\"a\"")], &[]));
        // A malformed stored ETag is no ETag.
        assert!(!nm(&[("if-none-match", "\"a\"")], &[("etag", "a")]));
    }

    #[test]
    fn if_none_match_takes_precedence() {
        let lm = date(T0);
        let stored = [("etag", "\"a\""), ("last-modified", &*lm)];
        let later = date(T0 + 10);
        // A non-matching If-None-Match wins over a matching If-Modified-Since.
        assert!(!nm(
            &[("if-none-match", "\"b\""), ("if-modified-since", &later)],
            &stored
        ));
        // A matching one wins over a failing date.
        let earlier = date(T0 - 10);
        assert!(nm(
            &[("if-none-match", "\"a\""), ("if-modified-since", &earlier)],
            &stored
        ));
        // Malformed If-None-Match counts as absent: the date decides.
        for bad in [
            "a",
            "\"a",
            "*, \"a\"",
            "W/ \"a\"",
            "w/\"a\"",
            "\"a b\"",
            "\"a\" \"b\"",
            "",
            " , ",
        ] {
            assert!(
                nm(
                    &[("if-none-match", bad), ("if-modified-since", &later)],
                    &stored
                ),
                "{bad:?}"
            );
            assert!(!nm(&[("if-none-match", bad)], &stored), "{bad:?}");
        }
        assert!(nm(
            &[
                ("if-none-match", "*"),
                ("if-none-match", "*"),
                ("if-modified-since", &later)
            ],
            &stored
        ));
    }

    #[test]
    fn if_modified_since() {
        let lm = date(T0);
        let stored = [("last-modified", &*lm)];
        assert!(nm(&[("if-modified-since", &lm)], &stored));
        assert!(nm(&[("if-modified-since", &date(T0 + 1))], &stored));
        assert!(!nm(&[("if-modified-since", &date(T0 - 1))], &stored));
        // Invalid, or more than one: absent.
        assert!(!nm(&[("if-modified-since", "yesterday")], &stored));
        assert!(!nm(
            &[("if-modified-since", &lm), ("if-modified-since", &lm)],
            &stored
        ));
        // Falls back to Date, else modified.
        let d = date(T0 - 100);
        assert!(nm(&[("if-modified-since", &lm)], &[("date", &d)]));
        assert!(!nm(&[("if-modified-since", &lm)], &[]));
        // An invalid Last-Modified falls back to Date.
        assert!(nm(
            &[("if-modified-since", &lm)],
            &[("last-modified", "x"), ("date", &d)]
        ));
        // No conditional at all.
        assert!(!nm(&[], &stored));
    }

    // ---- update_from_304 ----

    fn stored_response() -> HeaderMap {
        map(&[
            ("content-type", "text/html"),
            ("content-length", "1234"),
            ("content-encoding", "gzip"),
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("date", &date(T0 - 100)),
            ("age", "40"),
            ("x-old", "1"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ])
    }

    #[test]
    fn update_replaces_fields_but_not_content_metadata() {
        let mut stored = stored_response();
        let fresh_date = date(T0);
        let not_modified = map(&[
            ("cache-control", "max-age=120"),
            ("etag", "\"v1\""),
            ("date", &fresh_date),
            ("content-length", "0"),
            ("content-encoding", "br"),
            ("transfer-encoding", "chunked"),
            ("content-range", "bytes 0-0/1"),
            ("connection", "x-hop, close"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("set-cookie", "session=secret"),
            ("x-new", "1"),
            ("x-multi", "c"),
            ("expires", "0"),
        ]);
        let mut with_cookies = stored.clone();
        assert!(update_from_304(&mut stored, &not_modified, false));
        assert_eq!(stored.get("cache-control").unwrap(), "max-age=120");
        assert_eq!(stored.get("content-range").unwrap(), "bytes 0-0/1");
        assert_eq!(stored.get("date").unwrap(), fresh_date.as_str());
        assert_eq!(stored.get("expires").unwrap(), "0");
        assert_eq!(stored.get("content-length").unwrap(), "1234");
        assert_eq!(stored.get("content-encoding").unwrap(), "gzip");
        assert_eq!(stored.get("content-type").unwrap(), "text/html");
        assert_eq!(stored.get("x-old").unwrap(), "1");
        assert_eq!(stored.get("x-new").unwrap(), "1");
        assert_eq!(stored.get_all("x-multi").iter().collect::<Vec<_>>(), ["c"]);
        for gone in [
            "transfer-encoding",
            "connection",
            "x-hop",
            "keep-alive",
            "set-cookie",
            "age",
        ] {
            assert!(!stored.contains_key(gone), "{gone}");
        }
        // A cache that stores cookies replaces the stored ones.
        with_cookies.append("set-cookie", HeaderValue::from_static("session=old"));
        assert!(update_from_304(&mut with_cookies, &not_modified, true));
        let cookies: Vec<_> = with_cookies.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["session=secret"]);
    }

    #[test]
    fn update_takes_the_new_age() {
        let mut stored = stored_response();
        assert!(update_from_304(
            &mut stored,
            &map(&[("etag", "\"v1\""), ("age", "3")]),
            false
        ));
        assert_eq!(stored.get("age").unwrap(), "3");
    }

    #[test]
    fn update_selection() {
        let lm = date(T0 - 1000);
        let other = date(T0 - 999);
        let cases: &[(Fields<'_>, Fields<'_>, bool)] = &[
            // Strong ETag in the 304: strong comparison.
            (&[("etag", "\"v1\"")], &[("etag", "\"v1\"")], true),
            (&[("etag", "\"v1\"")], &[("etag", "\"v2\"")], false),
            (&[("etag", "W/\"v1\"")], &[("etag", "\"v1\"")], false),
            (&[], &[("etag", "\"v1\"")], false),
            // Weak ETag in the 304: weak comparison.
            (&[("etag", "\"v1\"")], &[("etag", "W/\"v1\"")], true),
            (&[("etag", "W/\"v1\"")], &[("etag", "W/\"v1\"")], true),
            (&[("etag", "W/\"v1\"")], &[("etag", "W/\"v2\"")], false),
            // ETag decides over Last-Modified.
            (
                &[("etag", "\"v1\""), ("last-modified", &lm)],
                &[("etag", "\"v1\""), ("last-modified", &other)],
                true,
            ),
            // Last-Modified when the 304 has no ETag.
            (&[("last-modified", &lm)], &[("last-modified", &lm)], true),
            (
                &[("etag", "\"v1\""), ("last-modified", &lm)],
                &[("last-modified", &lm)],
                true,
            ),
            (
                &[("last-modified", &lm)],
                &[("last-modified", &other)],
                false,
            ),
            (&[], &[("last-modified", &lm)], false),
            // No validator in the 304: it answers our own conditional request.
            (
                &[("etag", "\"v1\"")],
                &[("cache-control", "max-age=5")],
                true,
            ),
            (&[], &[], true),
            // Malformed validators in the 304 count as absent.
            (&[("etag", "\"v1\"")], &[("etag", "v2")], true),
        ];
        for (i, &(stored, not_modified, want)) in cases.iter().enumerate() {
            let mut stored = map(stored);
            let before = stored.clone();
            let got = update_from_304(&mut stored, &map(not_modified), false);
            assert_eq!(got, want, "case {i}");
            if !got {
                assert_eq!(stored, before, "case {i}: untouched");
            }
        }
    }

    #[test]
    fn obsolete_and_miscased_dates() {
        let want = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").ok();
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUNDAY, 06-NOV-94 08:49:37 GMT",
        ] {
            assert_eq!(parse_date(text.as_bytes()), want, "{text}");
        }
        for bad in [
            "",
            "0",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 GMT and a long tail",
        ] {
            assert_eq!(parse_date(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn must_understand_overrides_no_store_for_known_statuses_only() {
        let mu = ("cache-control", "no-store, must-understand, max-age=60");
        assert_eq!(check(&[], 200, &[mu]), Ok(()));
        assert_eq!(check(&[], 404, &[mu]), Ok(()));
        assert_eq!(check(&[], 299, &[mu]), Err(Uncacheable::Status));
        let plain = ("cache-control", "no-store, max-age=60");
        assert_eq!(check(&[], 200, &[plain]), Err(Uncacheable::ResponseNoStore));
    }

    // ---- headers_for_304 ----

    #[test]
    fn not_modified_headers() {
        let lm = date(T0 - 1000);
        let d = date(T0);
        let stored = map(&[
            ("cache-control", "max-age=60"),
            ("content-location", "/a"),
            ("date", &d),
            ("etag", "\"v1\""),
            ("expires", &d),
            ("vary", "accept"),
            ("vary", "accept-encoding"),
            ("last-modified", &lm),
            ("content-type", "text/html"),
            ("content-length", "1234"),
            ("set-cookie", "a=b"),
            ("x-custom", "1"),
        ]);
        let headers = headers_for_304(&stored);
        assert_eq!(headers.len(), 8);
        for name in [
            "cache-control",
            "content-location",
            "date",
            "etag",
            "expires",
            "last-modified",
        ] {
            assert_eq!(headers.get(name), stored.get(name), "{name}");
        }
        assert_eq!(
            headers.get_all("vary").iter().collect::<Vec<_>>(),
            ["accept", "accept-encoding"]
        );
        assert!(headers_for_304(&HeaderMap::new()).is_empty());
    }

    const FUZZ_NAMES: [HeaderName; 13] = [
        ETAG,
        LAST_MODIFIED,
        DATE,
        EXPIRES,
        AGE,
        VARY,
        CACHE_CONTROL,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        SET_COOKIE,
        AUTHORIZATION,
        CONNECTION,
        CONTENT_LENGTH,
    ];

    fn fuzz_value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            "[ -~]{0,30}".prop_map(String::into_bytes),
            "(W/)?\"[a-c,]{0,3}\"( ?, ?(W/)?\"[a-c]{0,2}\"){0,2}".prop_map(String::into_bytes),
            (0u64..4_000_000_000).prop_map(|t| date(t).into_bytes()),
            "(max-age|s-maxage|no-cache|public|must-revalidate)(=[0-9]{1,3})?"
                .prop_map(String::into_bytes),
        ]
    }

    fn fuzz_map(fields: &[(usize, Vec<u8>)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(FUZZ_NAMES[name % FUZZ_NAMES.len()].clone(), value);
            }
        }
        headers
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_headers_never_panic(
            req in proptest::collection::vec((0usize..13, fuzz_value()), 0..8),
            res in proptest::collection::vec((0usize..13, fuzz_value()), 0..8),
            status in 100u16..1000,
            times in proptest::array::uniform3(0u64..u64::from(u32::MAX)),
        ) {
            let req = fuzz_map(&req);
            let res = fuzz_map(&res);
            let req_cc = CacheControl::parse_request(&req);
            let res_cc = CacheControl::parse(&res);
            let status = StatusCode::from_u16(status).unwrap();
            let policy = StorePolicy::default();
            let _ = storable(
                &Method::GET,
                &req,
                &req_cc,
                status,
                (&res, head::Fields::UNKNOWN),
                &res_cc,
                &policy,
            );
            let lifetime = freshness_lifetime(
                status,
                (&res, head::Fields::UNKNOWN),
                &res_cc,
                at(times[0]),
                &policy,
            );
            proptest::prop_assert!(lifetime <= Duration::from_secs(1 << 31).max(policy.max_ttl));
            let age = initial_age(&res, at(times[1]), at(times[2]));
            let _ = serve_decision(age, lifetime, &req_cc, &res_cc);
            let mut conditional = req.clone();
            add_validators(&res, &mut conditional);
            let _ = not_modified(&req, &res);
            let _ = headers_for_304(&res);
            let mut stored = res.clone();
            let _ = update_from_304(&mut stored, &req, false);
        }
    }

    #[test]
    fn entity_tag_parsing() {
        assert_eq!(
            EntityTag::parse(b"W/\"a\" rest"),
            Some((
                EntityTag {
                    weak: true,
                    opaque: b"a"
                },
                &b" rest"[..]
            ))
        );
        assert_eq!(
            EntityTag::parse(b"\"\""),
            Some((
                EntityTag {
                    weak: false,
                    opaque: b""
                },
                &b""[..]
            ))
        );
        assert_eq!(
            EntityTag::parse(b"\"\xff!#\""),
            Some((
                EntityTag {
                    weak: false,
                    opaque: b"\xff!#"
                },
                &b""[..]
            ))
        );
        for bad in [&b"a"[..], b"\"a", b"W\"a\"", b"\"a b\"", b"\"a\tb\"", b""] {
            assert_eq!(EntityTag::parse(bad), None, "{bad:?}");
        }
    }
}
