//! Cache keys: the primary key of a URL and the secondary key of a `Vary` variant.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::{FoldHasher, RandomState};
use http::header::{
    HeaderName, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CONTENT_ENCODING, CONTENT_LANGUAGE, HOST,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method};

use crate::util::accept_encoding::{self, negotiate, Encoding};
use crate::util::header::trim_ows;

/// The primary key of a stored response: a randomly seeded 64-bit hash of method class, scheme,
/// authority, path, query and the user's extra key parts. A hit also compares the stored URI
/// and `Vary` values, so a hash collision can never serve one URL's response for another: at
/// worst two URLs take turns in one slot. That is why a fast hash is enough here.
pub(crate) type Primary = u64;

/// Adds request-specific parts to the cache key (a tenant, an API version header). Given to the
/// closure of [`ResponseCacheBuilder::key_with`](super::ResponseCacheBuilder::key_with).
pub struct KeyParts<'a> {
    hasher: &'a mut dyn Hasher,
}

impl KeyParts<'_> {
    /// Adds `part` to the key. Parts are length-prefixed, so `("ab", "c")` and `("a", "bc")`
    /// make different keys.
    pub fn add(&mut self, part: impl AsRef<[u8]>) {
        let part = part.as_ref();
        self.hasher.write_usize(part.len());
        self.hasher.write(part);
    }
}

impl std::fmt::Debug for KeyParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyParts").finish_non_exhaustive()
    }
}

/// The user's key hook.
pub(crate) type KeyFn = dyn Fn(&Parts, &mut KeyParts<'_>) + Send + Sync;

/// Hashes keys with a per-layer random seed, so clients cannot aim collisions at a known key.
#[derive(Clone)]
pub(crate) struct Keyer {
    state: RandomState,
    sort_query: bool,
    ignore_host: bool,
}

impl Keyer {
    pub(crate) fn new(sort_query: bool) -> Self {
        Self {
            state: RandomState::default(),
            sort_query,
            ignore_host: false,
        }
    }

    /// Leaves scheme and authority out of the key (an application with one origin, reached
    /// under several names).
    pub(crate) fn ignoring_host(mut self, on: bool) -> Self {
        self.ignore_host = on;
        self
    }

    fn hasher(&self) -> FoldHasher<'static> {
        self.state.build_hasher()
    }

    /// The primary key of a GET or HEAD request (both map to the GET entry).
    pub(crate) fn primary(&self, parts: &Parts, extra: Option<&KeyFn>) -> Primary {
        self.primary_with(&parts.uri, &parts.headers, extra.map(|f| (f, parts)))
    }

    /// [`primary`](Self::primary) from a whole request. The key hook needs the request head as
    /// `Parts`, which is only rebuilt (a copy of the head) when there is a hook.
    pub(crate) fn primary_of<B>(&self, req: &http::Request<B>, extra: Option<&KeyFn>) -> Primary {
        match extra {
            None => self.primary_with(req.uri(), req.headers(), None),
            Some(f) => {
                let mut head = http::Request::new(());
                *head.method_mut() = req.method().clone();
                *head.uri_mut() = req.uri().clone();
                *head.headers_mut() = req.headers().clone();
                *head.extensions_mut() = req.extensions().clone();
                let (parts, ()) = head.into_parts();
                self.primary(&parts, Some(f))
            }
        }
    }

    fn primary_with(
        &self,
        uri: &http::Uri,
        headers: &HeaderMap,
        extra: Option<(&KeyFn, &Parts)>,
    ) -> Primary {
        let mut h = self.hasher();
        self.hash_primary(&mut h, uri, headers, extra);
        h.finish()
    }

    /// Feeds the primary key's material to `h`: the seeded hasher of the memory tier, or the
    /// stable 128-bit one of the Redis tier.
    fn hash_primary<H: Hasher>(
        &self,
        h: &mut H,
        uri: &http::Uri,
        headers: &HeaderMap,
        extra: Option<(&KeyFn, &Parts)>,
    ) {
        h.write(b"GET");
        if !self.ignore_host {
            write_part(h, uri.scheme_str().unwrap_or("").as_bytes());
            let authority = match uri.authority() {
                Some(a) => a.as_str().as_bytes(),
                None => headers.get(HOST).map(|h| h.as_bytes()).unwrap_or(b""),
            };
            write_lowercase_part(h, authority);
        }
        write_part(h, uri.path().as_bytes());
        match uri.query() {
            Some(q) if self.sort_query && q.contains('&') => {
                let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
                params.sort_unstable();
                h.write_usize(params.len());
                for p in params {
                    write_part(h, p.as_bytes());
                }
            }
            Some(q) => write_part(h, q.as_bytes()),
            None => h.write_u8(0xff),
        }
        if let Some((f, parts)) = extra {
            f(parts, &mut KeyParts { hasher: h });
        }
    }

    /// Whether a stored response's URI is the request's target, as the primary key sees it:
    /// the same path and query, the query's parameters in any order with
    /// [`sort_query`](super::ResponseCacheBuilder::sort_query). (The key is a hash: this rules
    /// out collisions.)
    pub(crate) fn same_target(&self, stored: &http::Uri, request: &http::Uri) -> bool {
        if stored.path_and_query() == request.path_and_query() {
            return true;
        }
        if !self.sort_query || stored.path() != request.path() {
            return false;
        }
        match (stored.query(), request.query()) {
            (Some(a), Some(b)) if a.len() == b.len() => {
                fn sorted(q: &str) -> Vec<&str> {
                    let mut v: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
                    v.sort_unstable();
                    v
                }
                sorted(a) == sorted(b)
            }
            _ => false,
        }
    }

    /// The Redis tier's key of a URL: a 128-bit XXH3 of the same material as the primary key,
    /// stable across processes and machines (seeded from configuration, not at random), so
    /// every instance of the application finds the same entries.
    #[cfg(feature = "redis")]
    pub(crate) fn shared_primary(&self, parts: &Parts, extra: Option<&KeyFn>, seed: u64) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
        self.hash_primary(
            &mut h,
            &parts.uri,
            &parts.headers,
            extra.map(|f| (f, parts)),
        );
        h.digest128()
    }

    /// The Redis tier's key of a variant: like [`variant`](Self::variant), stable across
    /// processes.
    #[cfg(feature = "redis")]
    pub(crate) fn shared_variant(
        &self,
        vary: &[HeaderName],
        headers: &HeaderMap,
        seed: u64,
    ) -> u64 {
        if vary.is_empty() {
            return 0;
        }
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
        hash_variant(&mut h, vary, headers);
        h.digest()
    }

    /// The secondary key of the variant of a response with `vary` that this request selects.
    pub(crate) fn variant(&self, vary: &[HeaderName], headers: &HeaderMap) -> u64 {
        if vary.is_empty() {
            return 0;
        }
        let mut h = self.hasher();
        hash_variant(&mut h, vary, headers);
        h.finish()
    }

    /// The secondary key a stored entry lives under: the [`variant`](Self::variant) of the
    /// requests whose selecting fields it was stored with (also when a request selected it by
    /// language, [`selects_by_language`], under another key).
    pub(crate) fn entry_variant(&self, entry: &super::store::Entry) -> u64 {
        self.stored_variant(&entry.vary, &entry.vary_values)
    }

    /// The variant of stored `values` (as [`vary_values`] made them) of a response with `vary`.
    fn stored_variant(&self, vary: &[HeaderName], values: &[Option<Box<[u8]>>]) -> u64 {
        if vary.is_empty() {
            return 0;
        }
        let mut h = self.hasher();
        hash_stored_variant(&mut h, vary, values);
        h.finish()
    }
}

fn hash_variant<H: Hasher>(h: &mut H, vary: &[HeaderName], headers: &HeaderMap) {
    for name in vary {
        write_part(h, name.as_str().as_bytes());
        let mut sink = HashSink::new(h);
        if canonical(name, headers, &mut sink) {
            sink.finish();
            h.write_u8(1);
        } else {
            h.write_u8(0);
        }
    }
}

/// The variant hash of stored `values` (the canonical forms [`vary_values`] made): equal to
/// the hash of every request that selects them, because both hash the same byte stream.
fn hash_stored_variant<H: Hasher>(h: &mut H, vary: &[HeaderName], values: &[Option<Box<[u8]>>]) {
    for (name, value) in vary.iter().zip(values) {
        write_part(h, name.as_str().as_bytes());
        match value {
            Some(bytes) => {
                let mut sink = HashSink::new(h);
                sink.put(bytes);
                sink.finish();
                h.write_u8(1);
            }
            None => h.write_u8(0),
        }
    }
}

/// The encodings the cache assumes the server (or the compression layer inside it) offers, in
/// its order of preference: `Accept-Encoding` is reduced to the one it selects, so browsers'
/// different header strings share one variant.
pub(crate) const SERVER_ENCODINGS: [Encoding; 4] = [
    Encoding::Zstd,
    Encoding::Br,
    Encoding::Gzip,
    Encoding::Deflate,
];

/// Where the canonical form of a selecting header goes: a hasher, a stored copy, or a
/// comparison with a stored copy. None of them allocates but the stored copy.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// Feeds a hasher in fixed 32-byte chunks, so the hash depends on the byte stream only, not on
/// how it was cut into `put` calls (a request's pieces and a stored copy hash alike).
struct HashSink<'h, H: Hasher> {
    h: &'h mut H,
    buf: [u8; 32],
    len: usize,
    total: usize,
}

impl<'h, H: Hasher> HashSink<'h, H> {
    fn new(h: &'h mut H) -> Self {
        Self {
            h,
            buf: [0; 32],
            len: 0,
            total: 0,
        }
    }

    fn finish(self) {
        self.h.write(&self.buf[..self.len]);
        self.h.write_usize(self.total);
    }
}

impl<H: Hasher> Sink for HashSink<'_, H> {
    fn put(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len();
        while !bytes.is_empty() {
            let n = (self.buf.len() - self.len).min(bytes.len());
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
            if self.len == self.buf.len() {
                self.h.write(&self.buf);
                self.len = 0;
            }
        }
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Compares the canonical form, as it is produced, with a stored one.
struct Compare<'a> {
    rest: &'a [u8],
    equal: bool,
}

impl Sink for Compare<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self.rest.strip_prefix(bytes) {
            Some(rest) if self.equal => self.rest = rest,
            _ => self.equal = false,
        }
    }
}

/// Writes the canonical form of the request's `name` field to `sink`, and says whether the
/// request has one (nothing is written when it has not):
///
/// - `Accept-Encoding`: the coding the server would pick ([`SERVER_ENCODINGS`]);
/// - `Accept-Language`: its language ranges lowercased and sorted, each with its weight unless
///   it is 1 (`en, de` = `De,EN` = `de;q=1.0, en`), when every member is well formed; else as
///   any other field;
/// - any other field: its lines joined, each list member without the whitespace around it
///   (`1,2` = ` 1, 2 ` = the two lines `1` and `2`); whitespace inside a member or a quoted
///   string is kept.
fn canonical(name: &HeaderName, headers: &HeaderMap, sink: &mut impl Sink) -> bool {
    if name == ACCEPT_ENCODING {
        return match negotiate(headers, &SERVER_ENCODINGS) {
            Some(e) => {
                sink.put(e.as_str().as_bytes());
                true
            }
            None => false,
        };
    }
    let values = headers.get_all(name);
    if values.iter().next().is_none() {
        return false;
    }
    if name == ACCEPT_LANGUAGE {
        if let Some(languages) = Languages::parse(headers.get_all(name)) {
            languages.write(sink);
            return true;
        }
    }
    let mut first = true;
    for line in values {
        for_each_member(line.as_bytes(), |member| {
            if !first {
                sink.put(b",");
            }
            first = false;
            sink.put(member);
        });
    }
    true
}

/// Calls `f` with each member of a comma-separated line (commas inside quoted strings do not
/// separate), without the whitespace around it.
fn for_each_member(line: &[u8], mut f: impl FnMut(&[u8])) {
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in line.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                f(trim_ows(&line[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    f(trim_ows(&line[start..]));
}

/// More language ranges than this are compared as written (still without whitespace).
const MAX_LANGUAGES: usize = 16;

/// A request's `Accept-Language`, parsed on the stack: `(range, weight in thousandths)`,
/// sorted by range (ignoring case), then weight.
struct Languages<'a> {
    ranges: [(&'a [u8], u16); MAX_LANGUAGES],
    len: usize,
}

impl<'a> Languages<'a> {
    /// `None` when a member is malformed or there are too many: the field is then compared as
    /// any other.
    fn parse(values: http::header::GetAll<'a, HeaderValue>) -> Option<Self> {
        let mut out = Languages {
            ranges: [(&[][..], 0); MAX_LANGUAGES],
            len: 0,
        };
        for line in values {
            let line = line.as_bytes();
            let mut members = 0;
            for_each_member(line, |m| members += usize::from(!m.is_empty()));
            let mut parsed = 0;
            for (range, q) in accept_encoding::weighted_members(line) {
                *out.ranges.get_mut(out.len)? = (range, q);
                out.len += 1;
                parsed += 1;
            }
            if parsed != members {
                return None;
            }
        }
        out.ranges[..out.len]
            .sort_unstable_by(|a, b| cmp_ignore_case(a.0, b.0).then(a.1.cmp(&b.1)));
        Some(out)
    }

    fn write(&self, sink: &mut impl Sink) {
        for (i, &(range, q)) in self.ranges[..self.len].iter().enumerate() {
            if i > 0 {
                sink.put(b",");
            }
            Self::write_lowercase(range, sink);
            if q != 1000 {
                let digits = [
                    b'0' + (q / 100) as u8,
                    b'0' + (q / 10 % 10) as u8,
                    b'0' + (q % 10) as u8,
                ];
                sink.put(b";q=0.");
                sink.put(&digits);
            }
        }
    }

    fn write_lowercase(range: &[u8], sink: &mut impl Sink) {
        for chunk in range.chunks(32) {
            let mut lower = [0u8; 32];
            for (l, b) in lower.iter_mut().zip(chunk) {
                *l = b.to_ascii_lowercase();
            }
            sink.put(&lower[..chunk.len()]);
        }
    }

    /// The one range the request prefers over every other (the highest weight, above zero,
    /// not `*`); `None` on a tie.
    fn top(&self) -> Option<&'a [u8]> {
        let ranges = &self.ranges[..self.len];
        let best = ranges.iter().map(|r| r.1).max().filter(|&q| q > 0)?;
        let mut at_best = ranges.iter().filter(|r| r.1 == best);
        match (at_best.next(), at_best.next()) {
            (Some(&(range, _)), None) if range != b"*" => Some(range),
            _ => None,
        }
    }
}

fn cmp_ignore_case(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

/// The request's values for the `Vary` header names in canonical form ([`canonical`]), as
/// stored with an entry and compared on a hit (the 64-bit variant hash alone could collide).
pub(crate) fn vary_values(vary: &[HeaderName], headers: &HeaderMap) -> Box<[Option<Box<[u8]>>]> {
    vary.iter()
        .map(|name| {
            let mut out = Vec::new();
            canonical(name, headers, &mut out).then(|| out.into_boxed_slice())
        })
        .collect()
}

/// Whether the request accepts the content coding of a stored response (`true` for one
/// without `Content-Encoding`). The variant key assumes the coding this crate's compression
/// layer would pick; an origin that picks another way (only gzip, another preference order)
/// could otherwise have a response served to a client that cannot decode it.
pub(crate) fn coding_acceptable(stored: &HeaderMap, request: &HeaderMap) -> bool {
    stored.get_all(CONTENT_ENCODING).iter().all(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(trim_ows)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
            .all(|c| accept_encoding::accepts(request, c))
    })
}

/// Whether a stored response's coding may be sent to this request. RFC 9111 reuses a response
/// as stored: only a response that varies on `Accept-Encoding` (as the compression layer's
/// always do), or a cache configured with `strict`, checks that the request accepts it.
pub(crate) fn coding_usable(
    entry: &super::store::Entry,
    request: &HeaderMap,
    strict: bool,
) -> bool {
    let checked = strict || entry.vary.contains(&ACCEPT_ENCODING);
    !checked || coding_acceptable(&entry.headers, request)
}

/// Whether this request selects the variant stored with `values`.
pub(crate) fn vary_matches(
    vary: &[HeaderName],
    values: &[Option<Box<[u8]>>],
    headers: &HeaderMap,
) -> bool {
    vary_matches_but(vary, values, headers, None)
}

/// [`vary_matches`], leaving the field `skip` out of the comparison.
fn vary_matches_but(
    vary: &[HeaderName],
    values: &[Option<Box<[u8]>>],
    headers: &HeaderMap,
    skip: Option<&HeaderName>,
) -> bool {
    vary.len() == values.len()
        && vary.iter().zip(values).all(|(name, stored)| {
            if skip == Some(name) {
                return true;
            }
            let mut cmp = Compare {
                rest: stored.as_deref().unwrap_or_default(),
                equal: true,
            };
            let present = canonical(name, headers, &mut cmp);
            present == stored.is_some() && cmp.equal && cmp.rest.is_empty()
        })
}

/// RFC 9110 12.5.4: whether a stored response in one language may serve this request by the
/// weights of its `Accept-Language`. It may when the response varies on `Accept-Language`,
/// says one `Content-Language`, the request prefers exactly that language over every other
/// (the highest weight, no tie), and the request selects it on every other `Vary` field: an
/// origin that has the language and honours weights would answer with it. (`en, de` stored
/// as `de` serves `fr;q=0.5, de`.)
pub(crate) fn selects_by_language(entry: &super::store::Entry, headers: &HeaderMap) -> bool {
    let (Some(language), Some(top)) = (stored_language(entry), preferred_language(headers)) else {
        return false;
    };
    top.eq_ignore_ascii_case(language)
        && vary_matches_but(
            &entry.vary,
            &entry.vary_values,
            headers,
            Some(&ACCEPT_LANGUAGE),
        )
}

/// The one `Content-Language` of a stored response that varies on `Accept-Language`.
pub(crate) fn stored_language(entry: &super::store::Entry) -> Option<&[u8]> {
    if !entry.vary.contains(&ACCEPT_LANGUAGE) {
        return None;
    }
    let mut lines = entry.headers.get_all(CONTENT_LANGUAGE).iter();
    let (Some(language), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let language = trim_ows(language.as_bytes());
    language
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        .then_some(language)
}

/// The language the request prefers over every other by its `Accept-Language` weights.
pub(crate) fn preferred_language(headers: &HeaderMap) -> Option<&[u8]> {
    Languages::parse(headers.get_all(ACCEPT_LANGUAGE)).and_then(|l| l.top())
}

/// The selecting values a language key is made of: a request's fields, or a stored entry's.
#[cfg(feature = "redis")]
pub(crate) enum Selecting<'a> {
    Request(&'a HeaderMap),
    Stored(&'a [Option<Box<[u8]>>]),
}

#[cfg(feature = "redis")]
impl Keyer {
    /// The Redis tier's second key of a response in one language (RFC 9110 12.5.4): its
    /// `Accept-Language` value replaced by the language, the other selecting fields as they
    /// are. A stored response is also written under it, and a request that prefers that
    /// language reads it after missing its own variant, so selection by weight works across
    /// the fleet as it does in memory.
    pub(crate) fn shared_language_variant(
        &self,
        vary: &[HeaderName],
        fields: Selecting<'_>,
        language: &[u8],
        seed: u64,
    ) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
        h.write_u8(b'L');
        for (i, name) in vary.iter().enumerate() {
            write_part(&mut h, name.as_str().as_bytes());
            let mut sink = HashSink::new(&mut h);
            let present = if *name == ACCEPT_LANGUAGE {
                sink.put(b"lang:");
                Languages::write_lowercase(language, &mut sink);
                true
            } else {
                match &fields {
                    Selecting::Request(headers) => canonical(name, headers, &mut sink),
                    Selecting::Stored(values) => match values.get(i) {
                        Some(Some(bytes)) => {
                            sink.put(bytes);
                            true
                        }
                        _ => false,
                    },
                }
            };
            if present {
                sink.finish();
            }
            h.write_u8(u8::from(present));
        }
        h.digest()
    }
}

/// The header names of a response's `Vary`, lowercased and deduplicated; `None` for `Vary: *`.
pub(crate) fn parse_vary(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(http::header::VARY) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = trim_ows(item);
            if item.is_empty() {
                continue;
            }
            if item == b"*" {
                return None;
            }
            // Malformed names are ignored: they cannot name a request header anyway.
            if let Ok(name) = HeaderName::from_bytes(item) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    Some(names)
}

/// Whether `method` is answered from the cache (HEAD from the GET entry).
pub(crate) fn is_cacheable_method(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

fn write_part<H: Hasher>(h: &mut H, part: &[u8]) {
    h.write_usize(part.len());
    h.write(part);
}

/// Like [`write_part`], lowercased, a chunk at a time (a byte at a time cost ten times more);
/// a stream hasher (the Redis tier's XXH3) sees the same bytes either way.
fn write_lowercase_part<H: Hasher>(h: &mut H, part: &[u8]) {
    h.write_usize(part.len());
    let mut buf = [0u8; 64];
    for chunk in part.chunks(buf.len()) {
        let lower = &mut buf[..chunk.len()];
        lower.copy_from_slice(chunk);
        lower.make_ascii_lowercase();
        h.write(lower);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn primary_keys() {
        let k = Keyer::new(false);
        let a = k.primary(&parts("/a?x=1&y=2", &[("host", "Example.com")]), None);
        assert_eq!(
            a,
            k.primary(&parts("/a?x=1&y=2", &[("host", "example.com")]), None)
        );
        assert_ne!(
            a,
            k.primary(&parts("/a?y=2&x=1", &[("host", "example.com")]), None)
        );
        assert_ne!(
            a,
            k.primary(&parts("/a?x=1&y=2", &[("host", "other.com")]), None)
        );
        assert_ne!(
            k.primary(&parts("/a", &[]), None),
            k.primary(&parts("/a?", &[]), None)
        );
        let sorted = Keyer::new(true);
        assert_eq!(
            sorted.primary(&parts("/a?x=1&y=2", &[]), None),
            sorted.primary(&parts("/a?y=2&x=1", &[]), None)
        );
        // The hook adds to the key.
        let tenant: &KeyFn = &|p: &Parts, key: &mut KeyParts<'_>| {
            key.add(
                p.headers
                    .get("x-tenant")
                    .map(|v| v.as_bytes())
                    .unwrap_or(b""),
            );
        };
        assert_ne!(
            k.primary(&parts("/a", &[("x-tenant", "1")]), Some(tenant)),
            k.primary(&parts("/a", &[("x-tenant", "2")]), Some(tenant))
        );
        let one_origin = Keyer::new(false).ignoring_host(true);
        assert_eq!(
            one_origin.primary(&parts("/a", &[("host", "localhost:3000")]), None),
            one_origin.primary(&parts("/a", &[("host", "127.0.0.1:3000")]), None)
        );
        // Different layers, different hash keys.
        assert_ne!(
            a,
            Keyer::new(false).primary(&parts("/a?x=1&y=2", &[("host", "example.com")]), None)
        );
    }

    #[test]
    fn variants_and_accept_encoding_normalisation() {
        let k = Keyer::new(false);
        let vary = parse_vary(
            &parts(
                "/",
                &[("vary", "Accept-Encoding, accept-language, ACCEPT-ENCODING")],
            )
            .headers,
        )
        .unwrap();
        assert_eq!(vary.len(), 2);
        let chrome = parts(
            "/",
            &[
                ("accept-encoding", "gzip, deflate, br, zstd"),
                ("accept-language", "en"),
            ],
        );
        let firefox = parts(
            "/",
            &[
                ("accept-encoding", "gzip, deflate, br, zstd "),
                ("accept-language", " en "),
            ],
        );
        let curl = parts("/", &[("accept-language", "en")]);
        assert_eq!(
            k.variant(&vary, &chrome.headers),
            k.variant(&vary, &firefox.headers)
        );
        assert_ne!(
            k.variant(&vary, &chrome.headers),
            k.variant(&vary, &curl.headers)
        );
        let stored = vary_values(&vary, &chrome.headers);
        assert!(vary_matches(&vary, &stored, &firefox.headers));
        assert!(!vary_matches(&vary, &stored, &curl.headers));
        assert_eq!(k.variant(&[], &chrome.headers), 0);
        assert!(parse_vary(&parts("/", &[("vary", "accept, *")]).headers).is_none());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        parts("/", pairs).headers
    }

    #[test]
    fn canonical_forms() {
        let canon = |name: &str, pairs: &[(&str, &str)]| {
            let mut out = Vec::new();
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            canonical(&name, &headers(pairs), &mut out).then(|| String::from_utf8(out).unwrap())
        };
        let lang = |v: &str| canon("accept-language", &[("accept-language", v)]);
        assert_eq!(lang("en, de").as_deref(), Some("de,en"));
        assert_eq!(
            lang(" EN-us ,de;q=0.50").as_deref(),
            Some("de;q=0.500,en-us")
        );
        assert_eq!(lang("de;q=1.0, *;q=0").as_deref(), Some("*;q=0.000,de"));
        // A malformed member: compared as any other field, without whitespace only.
        assert_eq!(lang("en, d e").as_deref(), Some("en,d e"));
        assert_eq!(lang("en;q=2, de").as_deref(), Some("en;q=2,de"));
        let foo = |pairs: &[(&str, &str)]| canon("foo", pairs);
        assert_eq!(foo(&[("foo", " 1 ,\t2 ")]).as_deref(), Some("1,2"));
        assert_eq!(foo(&[("foo", "1"), ("foo", "2")]).as_deref(), Some("1,2"));
        assert_eq!(
            foo(&[("foo", "\"a , b\" , c")]).as_deref(),
            Some("\"a , b\",c")
        );
        assert_eq!(foo(&[("foo", "")]).as_deref(), Some(""));
        assert_eq!(foo(&[]), None);
    }

    #[test]
    fn preferred_languages() {
        let top = |v: &str| {
            let h = headers(&[("accept-language", v)]);
            preferred_language(&h).map(|l| String::from_utf8(l.to_vec()).unwrap())
        };
        assert_eq!(top("fr;q=0.5, de;q=1.0").as_deref(), Some("de"));
        assert_eq!(top("de-AT").as_deref(), Some("de-AT"));
        assert_eq!(top("fr, de"), None);
        assert_eq!(top("*"), None);
        assert_eq!(top("de;q=0"), None);
        assert_eq!(top("en;q=0.9, *"), None);
    }

    proptest::proptest! {
        /// The variant key of a request equals the key computed from the values stored for it,
        /// whatever the fields hold, and a request always selects its own stored values.
        #[test]
        fn a_request_and_its_stored_values_key_alike(
            lang in "[ a-zA-Z,;=.0-9*-]{0,40}",
            foo in proptest::collection::vec("[ a-z,\"\\\\]{0,12}", 0..3),
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&lang) {
                h.append(http::header::ACCEPT_LANGUAGE, v);
            }
            for f in &foo {
                if let Ok(v) = HeaderValue::from_str(f) {
                    h.append("foo", v);
                }
            }
            let vary = [http::header::ACCEPT_LANGUAGE, HeaderName::from_static("foo")];
            let k = Keyer::new(false);
            let values = vary_values(&vary, &h);
            proptest::prop_assert_eq!(k.variant(&vary, &h), k.stored_variant(&vary, &values));
            proptest::prop_assert!(vary_matches(&vary, &values, &h));
        }
    }
}
