//! Cache keys: the primary key of a URL and the secondary key of a `Vary` variant.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::{FoldHasher, RandomState};
use http::header::{HeaderName, ACCEPT_ENCODING, CONTENT_ENCODING, HOST};
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
}

fn hash_variant<H: Hasher>(h: &mut H, vary: &[HeaderName], headers: &HeaderMap) {
    for name in vary {
        write_part(h, name.as_str().as_bytes());
        match normalized(name, headers) {
            Normalized::Absent => h.write_u8(0),
            Normalized::Encoding(e) => write_part(h, e.as_str().as_bytes()),
            Normalized::Values(values) => {
                h.write_u8(1);
                for v in values {
                    write_trimmed(h, v.as_bytes());
                }
            }
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

enum Normalized<'a> {
    Absent,
    Encoding(Encoding),
    Values(http::header::GetAll<'a, HeaderValue>),
}

fn normalized<'a>(name: &HeaderName, headers: &'a HeaderMap) -> Normalized<'a> {
    if name == ACCEPT_ENCODING {
        return match negotiate(headers, &SERVER_ENCODINGS) {
            Some(e) => Normalized::Encoding(e),
            None => Normalized::Absent,
        };
    }
    let values = headers.get_all(name);
    if values.iter().next().is_none() {
        Normalized::Absent
    } else {
        Normalized::Values(values)
    }
}

/// The request's values for the `Vary` header names, as stored with an entry and compared on a
/// hit (the 64-bit variant hash alone could collide).
pub(crate) fn vary_values(vary: &[HeaderName], headers: &HeaderMap) -> Box<[Option<Box<[u8]>>]> {
    vary.iter()
        .map(|name| match normalized(name, headers) {
            Normalized::Absent => None,
            Normalized::Encoding(e) => Some(e.as_str().as_bytes().into()),
            Normalized::Values(values) => {
                let mut out = Vec::new();
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(trim_ows(v.as_bytes()));
                }
                Some(out.into_boxed_slice())
            }
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

/// Whether this request selects the variant stored with `values`.
pub(crate) fn vary_matches(
    vary: &[HeaderName],
    values: &[Option<Box<[u8]>>],
    headers: &HeaderMap,
) -> bool {
    vary.len() == values.len()
        && vary
            .iter()
            .zip(values)
            .all(|(name, stored)| match (normalized(name, headers), stored) {
                (Normalized::Absent, None) => true,
                (Normalized::Encoding(e), Some(s)) => e.as_str().as_bytes() == &**s,
                (Normalized::Values(values), Some(s)) => {
                    let mut rest: &[u8] = s;
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            match rest.strip_prefix(b", ") {
                                Some(r) => rest = r,
                                None => return false,
                            }
                        }
                        let v = trim_ows(v.as_bytes());
                        match rest.strip_prefix(v) {
                            Some(r) => rest = r,
                            None => return false,
                        }
                    }
                    rest.is_empty()
                }
                _ => false,
            })
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

fn write_trimmed<H: Hasher>(h: &mut H, part: &[u8]) {
    write_part(h, trim_ows(part));
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
}
