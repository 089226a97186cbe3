//! Byte ranges (RFC 9110 14) served from a stored complete response: one range (`bytes=a-b`,
//! `bytes=a-`, `bytes=-n`) becomes a `206` with its slice of the stored body (no copy), an
//! unsatisfiable one a `416`, and `If-Range` that does not match the stored validator gives
//! the whole response. Several ranges, other units and malformed fields are ignored (the
//! whole `200`), as RFC 9110 allows.

use bytes::Bytes;
use http::header::{ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::util::header::trim_ows;

/// What a `GET` with `Range` gets from a stored complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// `206`: the part and its `Content-Range`.
    Partial(Bytes, HeaderValue),
    /// `416`: the `Content-Range` naming the complete length.
    Unsatisfiable(HeaderValue),
}

/// The answer to the request's `Range` from a stored `200` with `stored` fields and `body`;
/// `None` when the whole response is sent (no usable `Range`, or `If-Range` does not match).
pub(crate) fn select(req: &HeaderMap, stored: &HeaderMap, body: &Bytes) -> Option<Ranged> {
    let mut lines = req.get_all(RANGE).iter();
    let (value, None) = (lines.next()?, lines.next()) else {
        return None;
    };
    if !if_range_matches(req, stored) {
        return None;
    }
    let len = body.len() as u64;
    match parse(value.as_bytes(), len)? {
        Some((first, last)) => {
            let range = format!("bytes {first}-{last}/{len}");
            let part = body.slice(first as usize..=last as usize);
            Some(Ranged::Partial(part, HeaderValue::try_from(range).ok()?))
        }
        None => Some(Ranged::Unsatisfiable(
            HeaderValue::try_from(format!("bytes */{len}")).ok()?,
        )),
    }
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

    fn ask(range: &str, body: &'static [u8]) -> Option<Ranged> {
        let mut req = HeaderMap::new();
        req.insert(RANGE, HeaderValue::from_str(range).unwrap());
        select(&req, &HeaderMap::new(), &Bytes::from_static(body))
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
                select(&req, &stored, &body).is_some(),
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
            let got = select(&req, &HeaderMap::new(), &Bytes::from(body.clone()));
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
}
