//! Byte ranges (RFC 9110 14) served from a stored response: one range (`bytes=a-b`,
//! `bytes=a-`, `bytes=-n`) becomes a `206` with its slice of the stored body (no copy), an
//! unsatisfiable one a `416`, and `If-Range` that does not match the stored validator gives
//! the whole response. Several ranges, other units and malformed fields are ignored (the
//! whole `200`), as RFC 9110 allows.
//!
//! A stored response is complete (a `200`), or a part of one (a `206` with one
//! `Content-Range: bytes first-last/length`, RFC 9111 3.3): a part answers the ranges that lie
//! inside it, and only those ([`usable`]); any other request goes to the origin.

use bytes::Bytes;
use http::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::store::Entry;
use crate::util::header::trim_ows;

/// What a `GET` with `Range` gets from a stored body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// `206`: the part and its `Content-Range`.
    Partial(Bytes, HeaderValue),
    /// `416`: the `Content-Range` naming the complete length.
    Unsatisfiable(HeaderValue),
}

/// Where a stored body lies in the complete representation: its first byte and the complete
/// length (for a complete response, `0` and the body's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) offset: u64,
    pub(crate) complete: u64,
}

/// The answer to the request's `Range` from a stored response with `stored` fields and `body`,
/// which holds the bytes of `span`; `None` when the stored body cannot answer it (no usable
/// `Range`, `If-Range` does not match, or the range is not all inside a stored part).
pub(crate) fn select(
    req: &HeaderMap,
    stored: &HeaderMap,
    body: &Bytes,
    span: Span,
) -> Option<Ranged> {
    let complete = span.complete;
    match locate(req, stored, body.len() as u64, span)? {
        Some((first, last)) => {
            let range = format!("bytes {first}-{last}/{complete}");
            let start = (first - span.offset) as usize;
            let part = body.slice(start..=start + (last - first) as usize);
            Some(Ranged::Partial(part, HeaderValue::try_from(range).ok()?))
        }
        None => Some(Ranged::Unsatisfiable(
            HeaderValue::try_from(format!("bytes */{complete}")).ok()?,
        )),
    }
}

/// [`select`] in numbers, without building anything: `Some(None)` when unsatisfiable, else
/// the first and last byte of the range.
fn locate(
    req: &HeaderMap,
    stored: &HeaderMap,
    body_len: u64,
    span: Span,
) -> Option<Option<(u64, u64)>> {
    let mut lines = req.get_all(RANGE).iter();
    let (value, None) = (lines.next()?, lines.next()) else {
        return None;
    };
    if !if_range_matches(req, stored) {
        return None;
    }
    match parse(value.as_bytes(), span.complete)? {
        Some((first, last)) if first < span.offset || last >= span.offset + body_len => None,
        found => Some(found),
    }
}

/// The span of a stored entry's body: all of a `200`, the `Content-Range` of a `206` whose
/// body has exactly that length; `None` for anything else.
pub(crate) fn span(entry: &Entry) -> Option<Span> {
    let len = entry.body.len() as u64;
    match entry.status {
        StatusCode::OK => Some(Span {
            offset: 0,
            complete: len,
        }),
        StatusCode::PARTIAL_CONTENT => {
            let (first, last, complete) = content_range(&entry.headers)?;
            (last - first + 1 == len).then_some(Span {
                offset: first,
                complete,
            })
        }
        _ => None,
    }
}

/// Whether a stored entry may answer this request: any but a part, which answers only the
/// ranges inside it. One status comparison for a complete response.
pub(crate) fn usable(entry: &Entry, req: &HeaderMap) -> bool {
    if entry.status != StatusCode::PARTIAL_CONTENT {
        return true;
    }
    span(entry)
        .is_some_and(|span| locate(req, &entry.headers, entry.body.len() as u64, span).is_some())
}

/// Whether a `206` to this request may be stored (RFC 9111 3.3): the request asked for one
/// range, and the response holds one part (`Content-Range: bytes first-last/length`, a
/// `Content-Length` that agrees when there is one, not `multipart/byteranges`).
pub(crate) fn storable_part(req: &HeaderMap, res: &HeaderMap) -> bool {
    let mut lines = req.get_all(RANGE).iter();
    let one_range = matches!((lines.next(), lines.next()), (Some(v), None) if parse(v.as_bytes(), u64::MAX).is_some());
    let Some((first, last, _)) = content_range(res) else {
        return false;
    };
    let length_agrees = res.get(CONTENT_LENGTH).is_none_or(|v| {
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            == Some(last - first + 1)
    });
    let multipart = res
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"multipart/byteranges"));
    one_range && length_agrees && !multipart
}

/// `Content-Range: bytes first-last/complete` with `first <= last < complete`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let mut lines = headers.get_all(CONTENT_RANGE).iter();
    let (value, None) = (lines.next()?, lines.next()) else {
        return None;
    };
    let value = trim_ows(value.as_bytes());
    let (unit, rest) = value.split_at_checked(6)?;
    if !unit.eq_ignore_ascii_case(b"bytes ") {
        return None;
    }
    let slash = rest.iter().position(|&b| b == b'/')?;
    let dash = rest[..slash].iter().position(|&b| b == b'-')?;
    let first = number(&rest[..dash])?;
    let last = number(&rest[dash + 1..slash])?;
    let complete = number(&rest[slash + 1..])?;
    (first <= last && last < complete).then_some((first, last, complete))
}

/// Parses a single byte range against a body of `len` bytes: `None` when the field is not one
/// usable range; `Some(None)` when unsatisfiable; else the first and last byte, inclusive.
fn parse(value: &[u8], len: u64) -> Option<Option<(u64, u64)>> {
    let value = trim_ows(value);
    let (unit, set) = value.split_at_checked(6)?;
    if !unit.eq_ignore_ascii_case(b"bytes=") {
        return None;
    }
    let mut members = set
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|m| !m.is_empty());
    let (Some(spec), None) = (members.next(), members.next()) else {
        return None;
    };
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        let suffix = number(last)?;
        return Some((suffix > 0 && len > 0).then(|| (len.saturating_sub(suffix), len - 1)));
    }
    let first = number(first)?;
    let last = if last.is_empty() {
        u64::MAX
    } else {
        number(last)?
    };
    if last < first {
        return None;
    }
    Some((first < len).then(|| (first, last.min(len - 1))))
}

/// `1*DIGIT`, saturating.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// RFC 9110 13.1.5: `If-Range` matches a strong `ETag` equal to the stored one, or a date
/// equal to the stored `Last-Modified`; absent, it lets the range through.
fn if_range_matches(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = req.get(IF_RANGE) else {
        return true;
    };
    let condition = trim_ows(condition.as_bytes());
    if condition.starts_with(b"\"") {
        return stored
            .get(ETAG)
            .is_some_and(|etag| trim_ows(etag.as_bytes()) == condition);
    }
    if condition.starts_with(b"W/") {
        return false;
    }
    let date = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
    };
    match (date(condition), stored.get(LAST_MODIFIED)) {
        (Some(since), Some(lm)) => date(trim_ows(lm.as_bytes())) == Some(since),
        _ => false,
    }
}

/// The status of a ranged answer.
pub(crate) fn status(ranged: &Ranged) -> StatusCode {
    match ranged {
        Ranged::Partial(..) => StatusCode::PARTIAL_CONTENT,
        Ranged::Unsatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(body: &Bytes) -> Span {
        Span {
            offset: 0,
            complete: body.len() as u64,
        }
    }

    fn ask(range: &str, body: &'static [u8]) -> Option<Ranged> {
        let mut req = HeaderMap::new();
        req.insert(RANGE, HeaderValue::from_str(range).unwrap());
        let body = Bytes::from_static(body);
        select(&req, &HeaderMap::new(), &body, whole(&body))
    }

    fn part(body: &'static [u8], range: &str) -> Ranged {
        Ranged::Partial(
            Bytes::from_static(body),
            HeaderValue::from_str(range).unwrap(),
        )
    }

    #[test]
    fn single_ranges() {
        let body = b"0123456789";
        assert_eq!(ask("bytes=0-1", body), Some(part(b"01", "bytes 0-1/10")));
        assert_eq!(
            ask("bytes=1-", body),
            Some(part(b"123456789", "bytes 1-9/10"))
        );
        assert_eq!(ask("bytes=-1", body), Some(part(b"9", "bytes 9-9/10")));
        assert_eq!(ask("bytes=-100", body), Some(part(body, "bytes 0-9/10")));
        assert_eq!(
            ask("BYTES=5-99999999999999999999999", body),
            Some(part(b"56789", "bytes 5-9/10"))
        );
        let unsatisfiable = Some(Ranged::Unsatisfiable(HeaderValue::from_static(
            "bytes */10",
        )));
        assert_eq!(ask("bytes=10-", body), unsatisfiable);
        assert_eq!(ask("bytes=-0", body), unsatisfiable);
        for ignored in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=2-1",
            "bytes=a-b",
            "bytes=",
            "bytes=1",
        ] {
            assert_eq!(ask(ignored, body), None, "{ignored}");
        }
    }

    #[test]
    fn if_range() {
        let mut stored = HeaderMap::new();
        stored.insert(ETAG, HeaderValue::from_static("\"v1\""));
        let lm = "Sat, 05 Dec 2026 08:00:00 GMT";
        stored.insert(LAST_MODIFIED, HeaderValue::from_static(lm));
        let body = Bytes::from_static(b"0123456789");
        for (condition, ranged) in [
            ("\"v1\"", true),
            ("\"v2\"", false),
            ("W/\"v1\"", false),
            (lm, true),
            ("Sat, 05 Dec 2026 08:00:01 GMT", false),
            ("junk", false),
        ] {
            let mut req = HeaderMap::new();
            req.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
            req.insert(IF_RANGE, HeaderValue::from_str(condition).unwrap());
            assert_eq!(
                select(&req, &stored, &body, whole(&body)).is_some(),
                ranged,
                "{condition}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_range_is_the_slice_with_its_exact_content_range(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            a in 0u64..250,
            b in 0u64..250,
            form in 0u8..3,
        ) {
            let len = body.len() as u64;
            let spec = match form {
                0 => format!("bytes={}-{}", a.min(b), a.max(b)),
                1 => format!("bytes={a}-"),
                _ => format!("bytes=-{a}"),
            };
            let (first, last) = match form {
                0 => (a.min(b), a.max(b).min(len.saturating_sub(1))),
                1 => (a, len.saturating_sub(1)),
                _ => (len.saturating_sub(a), len.saturating_sub(1)),
            };
            let satisfiable = len > 0 && match form {
                0 => a.min(b) < len,
                1 => a < len,
                _ => a > 0,
            };
            let mut req = HeaderMap::new();
            req.insert(RANGE, HeaderValue::from_str(&spec).unwrap());
            let stored = Bytes::from(body.clone());
            let got = select(&req, &HeaderMap::new(), &stored, whole(&stored));
            if satisfiable {
                let want = Ranged::Partial(
                    Bytes::copy_from_slice(&body[first as usize..=last as usize]),
                    HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")).unwrap(),
                );
                prop_assert_eq!(got, Some(want));
            } else {
                prop_assert_eq!(got, Some(Ranged::Unsatisfiable(HeaderValue::from_str(&format!("bytes */{len}")).unwrap())));
            }
        }
    }

    proptest! {
        #[test]
        fn any_range_inside_a_stored_part_is_its_slice_and_no_other_is_answered(
            part in proptest::collection::vec(any::<u8>(), 1..100),
            offset in 0u64..100,
            after in 0u64..100,
            a in 0u64..300,
            b in 0u64..300,
        ) {
            let complete = offset + part.len() as u64 + after;
            let (first, last) = (a.min(b), a.max(b));
            let mut req = HeaderMap::new();
            req.insert(RANGE, HeaderValue::from_str(&format!("bytes={first}-{last}")).unwrap());
            let stored = Bytes::from(part.clone());
            let got = select(&req, &HeaderMap::new(), &stored, Span { offset, complete });
            let end = offset + part.len() as u64;
            if first >= complete {
                prop_assert_eq!(got, Some(Ranged::Unsatisfiable(
                    HeaderValue::from_str(&format!("bytes */{complete}")).unwrap())));
            } else if first >= offset && last.min(complete - 1) < end {
                let last = last.min(complete - 1);
                let slice = &part[(first - offset) as usize..=(last - offset) as usize];
                prop_assert_eq!(got, Some(Ranged::Partial(
                    Bytes::copy_from_slice(slice),
                    HeaderValue::from_str(&format!("bytes {first}-{last}/{complete}")).unwrap(),
                )));
            } else {
                prop_assert_eq!(got, None);
            }
        }
    }

    #[test]
    fn content_ranges() {
        let cr = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_RANGE, HeaderValue::from_str(v).unwrap());
            content_range(&h)
        };
        assert_eq!(cr("bytes 2-7/10"), Some((2, 7, 10)));
        assert_eq!(cr("BYTES 0-0/1"), Some((0, 0, 1)));
        for bad in [
            "bytes 7-2/10",
            "bytes 2-10/10",
            "bytes 2-7/*",
            "bytes */10",
            "items 0-1/2",
        ] {
            assert_eq!(cr(bad), None, "{bad}");
        }
    }
}
