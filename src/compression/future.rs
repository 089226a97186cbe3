use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::adapt::{Decision, Rung};
use super::body::CompressionBody;
use super::codec::Codec;
use super::policy::{is_event_stream, EventStreams};
use super::state::Shared;
use super::Algorithm;
use crate::timings::Timings;
use crate::util::accept_encoding::Encoding;
use crate::util::header::{contains, list_has_token};

pin_project! {
    /// Response future of [`AdaptiveCompression`](super::AdaptiveCompression): the inner
    /// response, with its body wrapped when it is compressed.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        info: RequestInfo,
    }
}

/// What the response side needs to know about the request.
#[derive(Clone)]
pub(crate) struct RequestInfo {
    pub(crate) head: bool,
    /// The negotiated coding; `None` when nothing is acceptable.
    pub(crate) accept: Option<Encoding>,
    /// The request's `If-None-Match` held a validator this layer had suffixed for `accept`.
    pub(crate) revalidating: bool,
    /// Keeps compression when saturated.
    pub(crate) essential: bool,
    /// The request is of the lowest class: its response steps down first.
    pub(crate) low: bool,
    /// The request's phase record, if an outer layer made one: compression time goes there.
    pub(crate) timings: Option<Timings>,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, shared: Arc<Shared>, info: RequestInfo) -> Self {
        Self {
            inner,
            shared,
            info,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Error: Into<crate::BoxError>,
{
    type Output = Result<Response<CompressionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        let info = this.info;
        let revalidating = info.revalidating;
        let accept = info.accept;
        let mut res = respond(this.shared, info, res);
        if revalidating && res.status() == StatusCode::NOT_MODIFIED {
            // The service matched the validator of the coded representation: the `304` speaks
            // for that representation, so it carries its validator and `Vary`.
            let h = res.headers_mut();
            suffix_etag(h, accept.unwrap_or(Encoding::Identity));
            add_vary(h);
        }
        Poll::Ready(Ok(res))
    }
}

static ACCEPT_ENCODING_VALUE: HeaderValue = HeaderValue::from_static("accept-encoding");

/// What to do with one response: the coding sent, why, and the encoder when compressed.
struct Plan {
    encoding: Encoding,
    decision: Decision,
    codec: Option<(Codec, Rung)>,
}

/// Applies the rules to one response.
fn respond<B: Body>(
    shared: &Arc<Shared>,
    info: &mut RequestInfo,
    res: Response<B>,
) -> Response<CompressionBody<B>> {
    let (mut parts, body) = res.into_parts();
    let size = body
        .size_hint()
        .exact()
        .or_else(|| content_length(&parts.headers));
    let sse = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_event_stream(v.as_bytes()));
    let algorithm = info.accept.and_then(Algorithm::from_encoding);
    let plan = match (skip_reason(shared, info, &parts, size, sse), algorithm) {
        (None, Some(algorithm)) => {
            let cost_size = if sse { None } else { size };
            plan(shared, algorithm, cost_size, size, info)
        }
        (skip, _) => Plan {
            encoding: Encoding::Identity,
            decision: skip.unwrap_or(Decision::Identity),
            codec: None,
        },
    };
    shared.count(plan.encoding, plan.decision);
    if plan.decision == Decision::NotAcceptable {
        return not_acceptable();
    }
    if plan.decision.varies() {
        add_vary(&mut parts.headers);
    }
    let Some((codec, rung)) = plan.codec else {
        return Response::from_parts(parts, CompressionBody::identity(body));
    };
    mark_encoded(&mut parts.headers, plan.encoding);
    let algorithm = codec.algorithm();
    let body = CompressionBody::compressed(
        body,
        codec,
        shared.clone(),
        (algorithm, rung),
        sse,
        size,
        info.timings.take(),
    );
    Response::from_parts(parts, body)
}

/// Why a response goes out as it is, whatever the load: `None` when it is to be compressed
/// with the negotiated coding.
#[inline]
fn skip_reason(
    shared: &Shared,
    info: &RequestInfo,
    parts: &http::response::Parts,
    size: Option<u64>,
    sse: bool,
) -> Option<Decision> {
    let h = &parts.headers;
    let status = parts.status;
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Some(Decision::Status)
    } else if !sse && size.is_some_and(|n| n < shared.min_size) {
        // First of the header checks: the cheapest, and the reason for most small API answers.
        Some(Decision::TooSmall)
    } else if status == StatusCode::PARTIAL_CONTENT || contains(h, &CONTENT_RANGE) {
        Some(Decision::Partial)
    } else if contains(h, &CONTENT_ENCODING)
        && h.get_all(CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        Some(Decision::AlreadyEncoded)
    } else if list_has_token(h, CACHE_CONTROL, b"no-transform") {
        Some(Decision::NoTransform)
    } else if !shared.predicate.should_compress(parts) {
        Some(Decision::ContentType)
    } else if sse && shared.event_streams == EventStreams::Exclude {
        Some(Decision::EventStream)
    } else if info.head {
        Some(Decision::Head)
    } else {
        match info.accept {
            None => Some(Decision::NotAcceptable),
            Some(Encoding::Identity) => Some(Decision::Identity),
            Some(_) => None,
        }
    }
}

/// The level for a compressible response (from the load and `cost_size`, the body length
/// that counts for its cost: unknown for event streams), and its encoder.
fn plan(
    shared: &Shared,
    algorithm: Algorithm,
    cost_size: Option<u64>,
    size: Option<u64>,
    info: &RequestInfo,
) -> Plan {
    let (rung, decision) = shared.choose(algorithm, cost_size, info.essential, info.low);
    let identity = Plan {
        encoding: Encoding::Identity,
        decision,
        codec: None,
    };
    let Some(rung) = rung else {
        return identity;
    };
    let level = shared.ladders[algorithm.index()].level(rung);
    shared.chose(algorithm, level);
    match Codec::get(algorithm, level, size, shared.reuse) {
        Ok(codec) => Plan {
            encoding: algorithm.encoding(),
            decision,
            codec: Some((codec, rung)),
        },
        Err(e) => {
            tracing::warn!(error = %e, "compression: encoder setup failed, sending identity");
            identity
        }
    }
}

/// `406 Not Acceptable`, empty.
fn not_acceptable<B>() -> Response<CompressionBody<B>> {
    let mut res = Response::new(CompressionBody::empty());
    *res.status_mut() = StatusCode::NOT_ACCEPTABLE;
    res.headers_mut()
        .insert(VARY, ACCEPT_ENCODING_VALUE.clone());
    res.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

/// Adds `Vary: Accept-Encoding` unless `Vary` already says so (or `*`).
#[inline]
fn add_vary(h: &mut HeaderMap) {
    if !list_has_token(h, VARY, b"*") && !list_has_token(h, VARY, b"accept-encoding") {
        h.append(VARY, ACCEPT_ENCODING_VALUE.clone());
    }
}

/// The headers of a response compressed with `encoding`: its `Content-Encoding`, no length
/// or ranges, and a strong `ETag` suffixed with the coding.
fn mark_encoded(h: &mut HeaderMap, encoding: Encoding) {
    h.remove(CONTENT_LENGTH);
    h.remove(ACCEPT_RANGES);
    h.remove(CONTENT_ENCODING);
    h.insert(
        CONTENT_ENCODING,
        HeaderValue::from_static(encoding.as_str()),
    );
    suffix_etag(h, encoding);
}

/// Replaces a strong `ETag` by its suffixed form (see [`suffixed_etag`]).
fn suffix_etag(h: &mut HeaderMap, encoding: Encoding) {
    if let Some(tag) = h
        .get(ETAG)
        .and_then(|t| suffixed_etag(t.as_bytes(), encoding))
    {
        h.insert(ETAG, tag);
    }
}

/// A strong entity tag with the coding appended inside the quotes (`"abc"` -> `"abc-zstd"`), so
/// validators of different codings never match; `None` for weak or malformed tags, kept as they
/// are (a weak tag already allows different encodings).
pub(crate) fn suffixed_etag(tag: &[u8], encoding: Encoding) -> Option<HeaderValue> {
    if tag.len() < 2 || tag[0] != b'"' || tag[tag.len() - 1] != b'"' {
        return None;
    }
    let inner = &tag[1..tag.len() - 1];
    if inner.contains(&b'"') {
        return None;
    }
    let name = encoding.as_str().as_bytes();
    let mut v = Vec::with_capacity(tag.len() + 1 + name.len());
    v.push(b'"');
    v.extend_from_slice(inner);
    v.push(b'-');
    v.extend_from_slice(name);
    v.push(b'"');
    HeaderValue::from_bytes(&v).ok()
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    let v = headers.get(CONTENT_LENGTH)?.to_str().ok()?;
    v.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_suffix() {
        let t = |s: &str| {
            suffixed_etag(s.as_bytes(), Encoding::Gzip).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(t("\"abc\"").as_deref(), Some("\"abc-gzip\""));
        assert_eq!(t("\"\"").as_deref(), Some("\"-gzip\""));
        assert_eq!(t("W/\"abc\""), None);
        assert_eq!(t("abc"), None);
        assert_eq!(t("\""), None);
        assert_eq!(t("\"a\"b\""), None);
    }
}
