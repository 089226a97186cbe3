//! Entries made from origin responses: the headers a stored copy keeps, its tags and stale
//! windows, and the refresh of a stored entry by a `304`.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method};
use tokio::time::Instant;

use super::directives::CacheControl;
use super::head::Fields;
use super::policy::{self, StorePolicy};
use super::respond::AGE;
use super::state::{Exchange, Shared};
use super::store::Entry;

/// Removes the tag header, which is for the cache only.
pub(crate) fn strip_tags(shared: &Shared, headers: &mut HeaderMap) {
    headers.remove(&shared.tag_header);
}

pub(crate) fn parse_tags(shared: &Shared, headers: &HeaderMap) -> Box<[Arc<str>]> {
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
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
pub(crate) fn stale_windows(shared: &Shared, cc: &CacheControl) -> (Duration, Duration) {
    // `s-maxage` implies `proxy-revalidate` for a shared cache (RFC 9111 section 5.2.2.10).
    if cc.must_revalidate || cc.proxy_revalidate || cc.no_cache || cc.s_maxage.is_some() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let secs = |v: Option<u32>| v.map_or(shared.grace, |s| Duration::from_secs(u64::from(s)));
    (secs(cc.stale_while_revalidate), secs(cc.stale_if_error))
}

/// The stored entry refreshed by the origin's `304` (RFC 9111 4.3.4), and whether it may still
/// be stored (a 304 can make it `private` or `no-store`: then it is for this client only);
/// `None` when the `304` does not match it.
pub(crate) fn refreshed_entry(
    shared: &Shared,
    entry: &Entry,
    not_modified: &HeaderMap,
    parts: &Parts,
    ex: Exchange,
) -> Option<(Entry, bool)> {
    let mut headers = entry.headers.clone();
    if !policy::update_from_304(&mut headers, not_modified, shared.policy.cache_set_cookie) {
        return None;
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(&AGE);
    headers.remove(&shared.tag_header);
    // Without a `Date` of its own, the 304 would leave the original one, and an `Expires`-based
    // lifetime would be counted from the first response instead of this one.
    if !not_modified.contains_key(header::DATE) {
        if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(ex.response_time)) {
            headers.insert(header::DATE, date);
        }
    }
    let cc = CacheControl::parse_response(&headers, &shared.policy.targeted);
    let policy = StorePolicy {
        default_ttl: shared.default_ttl(parts),
        ..shared.policy.clone()
    };
    let lifetime = policy::freshness_lifetime(
        entry.status,
        (&headers, Fields::UNKNOWN),
        &cc,
        ex.response_time,
        &policy,
    );
    let storable = policy::storable(
        &Method::GET,
        &parts.headers,
        &CacheControl::parse_request(&parts.headers),
        entry.status,
        (&headers, Fields::UNKNOWN),
        &cc,
        &policy,
    )
    .is_ok();
    let (swr, sie) = stale_windows(shared, &cc);
    let refreshed = Entry {
        uri: entry.uri.clone(),
        status: entry.status,
        headers: super::store::stored_headers(&headers),
        body: entry.body.clone(),
        vary: entry.vary.clone(),
        vary_values: entry.vary_values.clone(),
        cc,
        initial_age: policy::initial_age(not_modified, ex.request_time, ex.response_time),
        stored_at: Instant::now(),
        lifetime,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        tags: entry.tags.clone(),
        generation: ex.stamp.local,
        fleet_generation: ex.stamp.fleet,
        hits: Default::default(),
    };
    Some((refreshed, storable))
}
