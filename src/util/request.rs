//! Reading what the layers need from a request: its route, its id and its peer address.

use http::header::HeaderName;
use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap, HeaderValue};

/// The header tower-http's request-id middleware uses by default.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route template axum matched for this request, if the request went through an axum router
/// before reaching the layer (the layer was added with `Router::layer` / `route_layer`).
pub(crate) fn matched_path(ext: &Extensions) -> Option<&str> {
    #[cfg(feature = "axum")]
    {
        ext.get::<axum::extract::MatchedPath>().map(|m| m.as_str())
    }
    #[cfg(not(feature = "axum"))]
    {
        let _ = ext;
        None
    }
}

/// The request id: tower-http's `RequestId` extension when present, else the `header` value.
/// Cloning a `HeaderValue` is a reference-count increment, not a copy.
pub(crate) fn request_id(
    ext: &Extensions,
    headers: &HeaderMap,
    header: &HeaderName,
) -> Option<HeaderValue> {
    #[cfg(feature = "tower-http")]
    if let Some(id) = ext.get::<tower_http::request_id::RequestId>() {
        return Some(id.header_value().clone());
    }
    #[cfg(not(feature = "tower-http"))]
    let _ = ext;
    crate::util::header::first_value(headers, header).cloned()
}

/// The peer address of the connection: axum's `ConnectInfo<SocketAddr>` (serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`), else a `SocketAddr` extension (what a
/// hyper server inserts itself).
pub(crate) fn peer_addr(ext: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    ext.get::<SocketAddr>().map(SocketAddr::ip)
}

#[cfg(test)]
mod tests {
    use http::header::{ACCEPT, HOST};

    use super::*;
    use crate::util::header::first_value;

    #[test]
    fn the_first_value_is_found_in_short_and_long_maps() {
        for extra in [0, 4, 20] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_static("example.com"));
            for i in 0..extra {
                let name = HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
                headers.insert(name, HeaderValue::from_static("v"));
            }
            assert_eq!(first_value(&headers, &X_REQUEST_ID), None, "{extra}");
            headers.append(&X_REQUEST_ID, HeaderValue::from_static("first"));
            headers.append(&X_REQUEST_ID, HeaderValue::from_static("second"));
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            assert_eq!(
                first_value(&headers, &X_REQUEST_ID).unwrap(),
                "first",
                "{extra}"
            );
            assert_eq!(first_value(&headers, &HOST).unwrap(), "example.com");
        }
    }
}
