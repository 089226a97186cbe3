//! The `Cache-Status` response header (RFC 9211): what the cache did with a request, as one
//! member of a Structured Field list (RFC 8941).

use crate::util::buf::StackBuf;
use crate::util::header::{is_tchar, trim_ows};
use arc_swap::ArcSwapOption;
use http::header::{Entry, HeaderName};
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;

/// `Cache-Status`, not among the `http` crate's constants.
pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why the request went forward to the origin (RFC 9211 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// Nothing stored for this URI.
    UriMiss,
    /// Responses stored for this URI, but none for this request's `Vary` values.
    VaryMiss,
    /// A miss, without saying which kind.
    Miss,
    /// The request asked for it (`no-cache`, `max-age=0`...).
    Request,
    /// The stored response was stale and went to be revalidated.
    Stale,
    /// The cache was configured, or decided, not to handle this request.
    Bypass,
    /// A stored part did not hold the requested range.
    Partial,
    /// The request method's semantics require the request to go forward (a `POST`, whose
    /// response may still be stored for later `GET`s).
    Method,
}

impl Fwd {
    /// The token RFC 9211 defines.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
            Fwd::Bypass => "bypass",
            Fwd::Partial => "partial",
            Fwd::Method => "method",
        }
    }
}

/// What the cache did with one request, for the `Cache-Status` header and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheStatus<'a> {
    /// The cache's name, e.g. `tower-perf`. Written as a token when it is one, else as a string.
    pub(crate) name: &'a str,
    /// Served from the cache without going to the origin.
    pub(crate) hit: bool,
    /// Why it went to the origin.
    pub(crate) fwd: Option<Fwd>,
    /// The status the origin answered with.
    pub(crate) fwd_status: Option<u16>,
    /// The response was stored.
    pub(crate) stored: bool,
    /// The request waited for another request's response (request collapsing).
    pub(crate) collapsed: bool,
    /// Remaining freshness in seconds; negative when stale.
    pub(crate) ttl: Option<i64>,
    /// More detail, e.g. `stale-while-revalidate` or `set-cookie`.
    pub(crate) detail: Option<&'a str>,
}

/// The largest magnitude of a Structured Field integer (RFC 8941 3.3.1): 15 digits.
const SF_INTEGER_MAX: i64 = 999_999_999_999_999;

impl CacheStatus<'_> {
    /// The member, as in `tower-perf; hit; ttl=42`, `tower-perf; fwd=uri-miss; fwd-status=200;
    /// stored; ttl=60` or `tower-perf; fwd=bypass; detail=set-cookie`.
    ///
    /// Parameters come in the order `hit`, `fwd`, `fwd-status`, `ttl`, `stored`, `collapsed`,
    /// `detail`, separated by `"; "`; booleans are bare names (Structured Field `true`) and are
    /// left out when false. The name and `detail` are tokens when they are valid `sf-token`s,
    /// else `sf-string`s with `"` and `\` escaped and characters outside printable ASCII left out
    /// (a Structured Field string cannot carry them). `ttl` is clamped to the Structured Field
    /// integer range.
    pub(crate) fn to_header_value(&self) -> HeaderValue {
        let mut buf = Buf::new();
        self.write(&mut buf);
        value_from(&buf)
    }

    fn write(&self, buf: &mut Buf) {
        push_bare_item(buf, self.name);
        if self.hit {
            buf.push(b"; hit");
        }
        if let Some(fwd) = self.fwd {
            buf.push(b"; fwd=");
            buf.push(fwd.as_str().as_bytes());
        }
        if let Some(status) = self.fwd_status {
            buf.push(b"; fwd-status=");
            buf.push_int(status);
        }
        if let Some(ttl) = self.ttl {
            buf.push(b"; ttl=");
            buf.push_int(ttl.clamp(-SF_INTEGER_MAX, SF_INTEGER_MAX));
        }
        if self.stored {
            buf.push(b"; stored");
        }
        if self.collapsed {
            buf.push(b"; collapsed");
        }
        if let Some(detail) = self.detail {
            buf.push(b"; detail=");
            push_bare_item(buf, detail);
        }
    }

    /// Adds this member to the response's `Cache-Status`, after the members of caches closer to
    /// the origin (RFC 9211 2: the member of the cache closest to the user comes last). Existing
    /// field lines are joined with ours into one line, `existing, ours`; empty ones are dropped.
    /// A member alone is taken from `values`, this cache's table (so every member in it
    /// carries `self.name`), when it was rendered there before.
    pub(crate) fn append_to(&self, headers: &mut HeaderMap, values: &StatusValues) {
        match headers.entry(&CACHE_STATUS) {
            Entry::Vacant(slot) => {
                slot.insert(values.value(self));
            }
            Entry::Occupied(mut slot) => {
                let mut buf = Buf::new();
                for value in slot.iter() {
                    let bytes = trim_ows(value.as_bytes());
                    if !bytes.is_empty() {
                        buf.push(bytes);
                        buf.push(b", ");
                    }
                }
                self.write(&mut buf);
                // Joining valid field values with ", " gives a valid field value; if an
                // existing value were somehow not one, ours alone still is.
                let value = buf
                    .to_header_value()
                    .unwrap_or_else(|| self.to_header_value());
                slot.insert(value);
            }
        }
    }

    /// The slot of this member in a [`StatusValues`] table: a plain hit's is its `ttl`'s, so
    /// the hits of one second never share one; anything more moves it by a mix of the rest.
    fn slot(&self) -> usize {
        let salt = self.fwd.map_or(0, |f| f as i64 + 1) * 37
            + i64::from(self.fwd_status.unwrap_or(0)) * 7
            + i64::from(self.stored) * 3
            + i64::from(self.collapsed) * 5
            + self.detail.map_or(0, |d| d.len() as i64 + 1) * 11;
        let ttl = self.ttl.map_or(-1, |t| t % (STATUS_SLOTS as i64 * 1024));
        (ttl + salt).rem_euclid(STATUS_SLOTS as i64) as usize
    }
}

/// How many rendered members a [`StatusValues`] table keeps.
const STATUS_SLOTS: usize = 256;

/// A member rendered before: what it says, and its value.
struct Rendered {
    hit: bool,
    fwd: Option<Fwd>,
    fwd_status: Option<u16>,
    ttl: Option<i64>,
    stored: bool,
    collapsed: bool,
    detail: Option<Box<str>>,
    value: HeaderValue,
}

impl Rendered {
    fn says(&self, s: &CacheStatus<'_>) -> bool {
        self.ttl == s.ttl
            && self.hit == s.hit
            && self.fwd == s.fwd
            && self.fwd_status == s.fwd_status
            && self.stored == s.stored
            && self.collapsed == s.collapsed
            && self.detail.as_deref() == s.detail
    }
}

/// The `Cache-Status` values of one cache, rendered once and reused: most responses say one of
/// a few things (`hit; ttl=<n>` with the seconds left, a miss with its status and reason), and
/// a clone of a value is a reference-count increment where rendering it is a copy and an
/// allocation. Direct-mapped (a slot holds the last member rendered there), bounded.
pub(crate) struct StatusValues {
    slots: Box<[ArcSwapOption<Rendered>]>,
}

impl StatusValues {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..STATUS_SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// The value of `status` alone, from the table when rendered before.
    fn value(&self, status: &CacheStatus<'_>) -> HeaderValue {
        let slot = &self.slots[status.slot()];
        if let Some(rendered) = &*slot.load() {
            if rendered.says(status) {
                return rendered.value.clone();
            }
        }
        let value = status.to_header_value();
        slot.store(Some(Arc::new(Rendered {
            hit: status.hit,
            fwd: status.fwd,
            fwd_status: status.fwd_status,
            ttl: status.ttl,
            stored: status.stored,
            collapsed: status.collapsed,
            detail: status.detail.map(Box::from),
            value: value.clone(),
        })));
        value
    }
}

/// Room for our member and a few from caches closer to the origin, on the stack.
type Buf = StackBuf<192>;

/// Builds the header value; what `write` produces is always valid, and a broken value would only
/// cost the header its content, never a panic.
fn value_from(buf: &Buf) -> HeaderValue {
    buf.to_header_value()
        .unwrap_or_else(|| HeaderValue::from_static(""))
}

/// Writes `s` as an `sf-token` when it is one, else as an `sf-string`.
fn push_bare_item(buf: &mut Buf, s: &str) {
    if is_sf_token(s.as_bytes()) {
        buf.push(s.as_bytes());
        return;
    }
    buf.push_byte(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' | b'\\' => buf.push(&[b'\\', b]),
            0x20..=0x7e => buf.push_byte(b),
            _ => {}
        }
    }
    buf.push_byte(b'"');
}

/// `sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" )` (RFC 8941 3.3.4).
fn is_sf_token(s: &[u8]) -> bool {
    let Some((&first, rest)) = s.split_first() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'*')
        && rest.iter().all(|&b| is_tchar(b) || b == b':' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> CacheStatus<'static> {
        CacheStatus {
            name: "tower-perf",
            hit: false,
            fwd: None,
            fwd_status: None,
            stored: false,
            collapsed: false,
            ttl: None,
            detail: None,
        }
    }

    #[test]
    fn values_from_the_table_are_the_rendered_ones() {
        let table = StatusValues::new();
        let mut all = Vec::new();
        for hit in [false, true] {
            for fwd in [
                None,
                Some(Fwd::UriMiss),
                Some(Fwd::Bypass),
                Some(Fwd::Stale),
            ] {
                for fwd_status in [None, Some(200), Some(304)] {
                    for ttl in [
                        None,
                        Some(-4),
                        Some(0),
                        Some(60),
                        Some(60 + 256),
                        Some(1 << 40),
                    ] {
                        for (stored, collapsed) in [(false, false), (true, false), (false, true)] {
                            for detail in
                                [None, Some("set-cookie"), Some("no-freshness"), Some("a b")]
                            {
                                all.push(CacheStatus {
                                    hit,
                                    fwd,
                                    fwd_status,
                                    ttl,
                                    stored,
                                    collapsed,
                                    detail,
                                    ..status()
                                });
                            }
                        }
                    }
                }
            }
        }
        // Twice over (rendered, then from the table unless another member took the slot),
        // the second time in reverse.
        for s in all.iter().chain(all.iter().rev()) {
            let mut headers = HeaderMap::new();
            s.append_to(&mut headers, &table);
            assert_eq!(headers[&CACHE_STATUS], render(s.clone()), "{s:?}");
            let mut again = HeaderMap::new();
            s.append_to(&mut again, &table);
            assert_eq!(again[&CACHE_STATUS], render(s.clone()), "{s:?}");
        }
        // Another cache's member in the response is kept before ours.
        let mut headers = HeaderMap::new();
        headers.insert(&CACHE_STATUS, HeaderValue::from_static("origin-cache; hit"));
        all[0].append_to(&mut headers, &table);
        assert_eq!(
            headers[&CACHE_STATUS],
            format!("origin-cache; hit, {}", render(all[0].clone()))
        );
    }

    fn render(s: CacheStatus<'_>) -> String {
        s.to_header_value().to_str().unwrap().to_owned()
    }

    #[test]
    fn hit() {
        let s = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..status()
        };
        assert_eq!(render(s), "tower-perf; hit; ttl=42");
    }

    #[test]
    fn miss_stored() {
        let s = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(200),
            stored: true,
            ttl: Some(60),
            ..status()
        };
        assert_eq!(
            render(s),
            "tower-perf; fwd=uri-miss; fwd-status=200; ttl=60; stored"
        );
    }

    #[test]
    fn bypass_with_detail() {
        let s = CacheStatus {
            fwd: Some(Fwd::Bypass),
            detail: Some("set-cookie"),
            ..status()
        };
        assert_eq!(render(s), "tower-perf; fwd=bypass; detail=set-cookie");
    }

    #[test]
    fn everything_in_order() {
        let s = CacheStatus {
            hit: true,
            fwd: Some(Fwd::Stale),
            fwd_status: Some(304),
            stored: true,
            collapsed: true,
            ttl: Some(-5),
            detail: Some("stale-while-revalidate"),
            ..status()
        };
        assert_eq!(
            render(s),
            "tower-perf; hit; fwd=stale; fwd-status=304; ttl=-5; stored; collapsed; detail=stale-while-revalidate"
        );
        assert_eq!(render(status()), "tower-perf");
    }

    #[test]
    fn fwd_tokens() {
        let all = [
            (Fwd::UriMiss, "uri-miss"),
            (Fwd::VaryMiss, "vary-miss"),
            (Fwd::Miss, "miss"),
            (Fwd::Request, "request"),
            (Fwd::Stale, "stale"),
            (Fwd::Bypass, "bypass"),
        ];
        for (fwd, want) in all {
            assert_eq!(fwd.as_str(), want);
        }
    }

    #[test]
    fn integers() {
        for (ttl, want) in [
            (0, "ttl=0"),
            (-1, "ttl=-1"),
            (1_234_567, "ttl=1234567"),
            (i64::MAX, "ttl=999999999999999"),
            (i64::MIN, "ttl=-999999999999999"),
        ] {
            let s = CacheStatus {
                ttl: Some(ttl),
                ..status()
            };
            assert_eq!(render(s), format!("tower-perf; {want}"));
        }
        let s = CacheStatus {
            fwd_status: Some(u16::MAX),
            ..status()
        };
        assert_eq!(render(s), "tower-perf; fwd-status=65535");
    }

    #[test]
    fn strings_when_not_tokens() {
        let s = CacheStatus {
            detail: Some("2 \"quoted\" \\ é\u{7f}x"),
            ..status()
        };
        assert_eq!(render(s), r#"tower-perf; detail="2 \"quoted\" \\ x""#);
        let s = CacheStatus {
            name: "My Cache",
            detail: Some(""),
            ..status()
        };
        assert_eq!(render(s), r#""My Cache"; detail="""#);
        let s = CacheStatus {
            name: "*cdn:edge/1",
            detail: Some("a\r\nb"),
            ..status()
        };
        assert_eq!(render(s), r#"*cdn:edge/1; detail="ab""#);
    }

    #[test]
    fn append_after_existing() {
        let ours = CacheStatus {
            hit: true,
            ttl: Some(10),
            ..status()
        };
        let mut headers = HeaderMap::new();
        ours.append_to(&mut headers, &StatusValues::new());
        assert_eq!(
            headers.get(&CACHE_STATUS).unwrap(),
            "tower-perf; hit; ttl=10"
        );

        let mut headers = HeaderMap::new();
        headers.append(
            &CACHE_STATUS,
            HeaderValue::from_static("OriginCache; hit; ttl=1100"),
        );
        headers.append(&CACHE_STATUS, HeaderValue::from_static(" "));
        headers.append(
            &CACHE_STATUS,
            HeaderValue::from_static("\"CDN Company\"; fwd=uri-miss"),
        );
        ours.append_to(&mut headers, &StatusValues::new());
        let lines: Vec<_> = headers.get_all(&CACHE_STATUS).iter().collect();
        assert_eq!(
            lines,
            ["OriginCache; hit; ttl=1100, \"CDN Company\"; fwd=uri-miss, tower-perf; hit; ttl=10"]
        );
    }
}
