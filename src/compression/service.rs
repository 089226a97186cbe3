use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::IF_NONE_MATCH;
use http::{HeaderValue, Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::{RequestInfo, ResponseFuture};
use super::state::Shared;
use crate::util::accept_encoding::{negotiate, Encoding};
use crate::BoxError;

/// Compresses the responses of `S`. Made by
/// [`AdaptiveCompressionLayer`](super::AdaptiveCompressionLayer).
///
/// Clones share the layer's state.
#[derive(Clone)]
pub struct AdaptiveCompression<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> AdaptiveCompression<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    crate::util::macros::define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AdaptiveCompression<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<super::CompressionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Everything the response side needs from the request, read before it moves on.
        let head = req.method() == Method::HEAD;
        let accept = negotiate(req.headers(), &self.shared.prefer);
        // A validator this layer suffixed for the coding negotiated now goes back to the
        // service as the service made it, so it can answer `304`.
        let revalidating = match accept {
            Some(e) if e != Encoding::Identity => strip_etag_suffix(req.headers_mut(), e),
            _ => false,
        };
        let timings = crate::Timings::from_request(&req).cloned();
        let low = req.extensions().get::<crate::Priority>() == Some(&crate::Priority::Low);
        let essential = match &self.shared.essential {
            Some(f) => {
                let (parts, body) = req.into_parts();
                let essential = f(&parts);
                req = Request::from_parts(parts, body);
                essential
            }
            None => false,
        };
        ResponseFuture::new(
            self.inner.call(req),
            self.shared.clone(),
            RequestInfo {
                head,
                accept,
                revalidating,
                essential,
                low,
                timings,
            },
        )
    }
}

/// Removes the `-{coding}` suffix from the entity tags of `If-None-Match` (`"v1-gzip"` becomes
/// `"v1"` for a gzip request). A suffix sits right before a tag's closing quote, and quotes
/// cannot occur inside a tag, so replacing `-gzip"` by `"` touches nothing else. Returns whether
/// a tag was changed; allocates only then.
pub(crate) fn strip_etag_suffix(headers: &mut http::HeaderMap, encoding: Encoding) -> bool {
    let name = encoding.as_str().as_bytes();
    let is_suffix = |w: &[u8]| w[0] == b'-' && w[w.len() - 1] == b'"' && &w[1..w.len() - 1] == name;
    if !crate::util::header::contains(headers, &IF_NONE_MATCH) {
        return false;
    }
    let found = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| v.as_bytes().windows(name.len() + 2).any(is_suffix));
    if !found {
        return false;
    }
    let values: Vec<HeaderValue> = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| {
            let b = v.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                if i + name.len() + 2 <= b.len() && is_suffix(&b[i..i + name.len() + 2]) {
                    out.push(b'"');
                    i += name.len() + 2;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            HeaderValue::from_bytes(&out).ok()
        })
        .collect();
    headers.remove(IF_NONE_MATCH);
    for v in values {
        headers.append(IF_NONE_MATCH, v);
    }
    true
}

impl<S: std::fmt::Debug> std::fmt::Debug for AdaptiveCompression<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveCompression")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strip(values: &[&str], e: Encoding) -> (bool, Vec<String>) {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(IF_NONE_MATCH, v.parse().unwrap());
        }
        let changed = strip_etag_suffix(&mut h, e);
        let out = h
            .get_all(IF_NONE_MATCH)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        (changed, out)
    }

    #[test]
    fn etag_suffixes_are_stripped_for_the_negotiated_coding_only() {
        assert_eq!(
            strip(&["\"v1-gzip\""], Encoding::Gzip),
            (true, vec!["\"v1\"".into()])
        );
        assert_eq!(
            strip(
                &["\"a-br\", W/\"b-gzip\" , \"c-gzip\"", "\"d\""],
                Encoding::Gzip
            ),
            (
                true,
                vec!["\"a-br\", W/\"b\" , \"c\"".into(), "\"d\"".into()]
            )
        );
        assert_eq!(
            strip(&["\"v1-gzip\""], Encoding::Br),
            (false, vec!["\"v1-gzip\"".into()])
        );
        assert!(!strip(&["\"v1-gzipx\"", "*"], Encoding::Gzip).0);
        assert_eq!(strip(&[], Encoding::Zstd), (false, vec![]));
    }

    proptest! {
        #[test]
        fn any_if_none_match_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut h = http::HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                h.append(IF_NONE_MATCH, v);
            }
            for e in [Encoding::Zstd, Encoding::Br, Encoding::Gzip, Encoding::Deflate] {
                let _ = strip_etag_suffix(&mut h, e);
            }
        }
    }
}
