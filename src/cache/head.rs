//! One pass over a response head: which of the fields the cache's store decision reads it
//! holds, so that the absent ones (most of them, on most responses) cost no lookup.
//!
//! A lookup in a `HeaderMap` hashes the name and probes, whether or not the field is there; the
//! store decision asks for a dozen fields (`Cache-Control` and the targeted fields, `Expires`,
//! `Date`, `Last-Modified`, `ETag`, `Set-Cookie`, `Vary`, the tag header...), and a typical
//! response holds three or four fields in all. Comparing each of its names against the set
//! costs less than the lookups it saves.

use http::header::{
    HeaderName, CACHE_CONTROL, DATE, ETAG, EXPIRES, LAST_MODIFIED, SET_COOKIE, VARY,
};
use http::HeaderMap;

/// The fields a response head may hold, as far as the cache's decisions go. A clear bit means
/// the field is certainly absent; a set bit, that it may be present (look it up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields(u16);

/// `Cache-Control`, or one of the targeted fields (RFC 9213).
pub(crate) const CONTROL: u16 = 1;
/// `Expires`.
pub(crate) const EXPIRES_FIELD: u16 = 1 << 1;
/// `Date`.
pub(crate) const DATE_FIELD: u16 = 1 << 2;
/// `Last-Modified`.
pub(crate) const LAST_MODIFIED_FIELD: u16 = 1 << 3;
/// `ETag`.
pub(crate) const ETAG_FIELD: u16 = 1 << 4;
/// `Set-Cookie`.
pub(crate) const SET_COOKIE_FIELD: u16 = 1 << 5;
/// `Vary`.
pub(crate) const VARY_FIELD: u16 = 1 << 6;
/// The cache's tag header (`Cache-Tag` by default).
pub(crate) const TAGS: u16 = 1 << 7;

/// The standard fields the store decision reads, and their bits.
static STANDARD: [(HeaderName, u16); 7] = [
    (CACHE_CONTROL, CONTROL),
    (EXPIRES, EXPIRES_FIELD),
    (DATE, DATE_FIELD),
    (LAST_MODIFIED, LAST_MODIFIED_FIELD),
    (ETAG, ETAG_FIELD),
    (SET_COOKIE, SET_COOKIE_FIELD),
    (VARY, VARY_FIELD),
];

/// Past this many fields the scan could cost more than the lookups it saves: every field is
/// then taken as possibly present.
const MAX_SCANNED: usize = 16;

impl Fields {
    /// Nothing known: every field may be present, every lookup is made.
    pub(crate) const UNKNOWN: Fields = Fields(u16::MAX);

    /// The fields of `headers`, with `targeted` the targeted cache-control fields and `tags`
    /// the tag header.
    pub(crate) fn scan(headers: &HeaderMap, targeted: &[HeaderName], tags: &HeaderName) -> Self {
        if headers.keys_len() > MAX_SCANNED {
            return Self::UNKNOWN;
        }
        let mut bits = 0;
        for name in headers.keys() {
            // The configured names are checked apart: one may be spelled like a standard one.
            if targeted.contains(name) {
                bits |= CONTROL;
            }
            if name == tags {
                bits |= TAGS;
            }
            if let Some((_, bit)) = STANDARD.iter().find(|(n, _)| n == name) {
                bits |= bit;
            }
        }
        Fields(bits)
    }

    /// Whether the field (one of this module's constants) may be present.
    #[inline]
    pub(crate) fn may_have(self, field: u16) -> bool {
        self.0 & field != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_scan_finds_each_field_and_only_those_present() {
        let tags = HeaderName::from_static("cache-tag");
        let targeted = [HeaderName::from_static("cdn-cache-control")];
        let all = [
            ("cache-control", CONTROL),
            ("cdn-cache-control", CONTROL),
            ("expires", EXPIRES_FIELD),
            ("date", DATE_FIELD),
            ("last-modified", LAST_MODIFIED_FIELD),
            ("etag", ETAG_FIELD),
            ("set-cookie", SET_COOKIE_FIELD),
            ("vary", VARY_FIELD),
            ("cache-tag", TAGS),
        ];
        for (name, bit) in all {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("text/plain"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            let f = Fields::scan(&h, &targeted, &tags);
            assert!(f.may_have(bit), "{name}");
            for (other, other_bit) in all {
                if other_bit != bit {
                    assert!(!f.may_have(other_bit), "{name} is not {other}");
                }
            }
        }
        let mut many = HeaderMap::new();
        for i in 0..=MAX_SCANNED {
            many.insert(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        assert_eq!(Fields::scan(&many, &targeted, &tags), Fields::UNKNOWN);
    }
}
