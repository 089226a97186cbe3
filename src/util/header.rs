//! Byte-level pieces of HTTP field syntax (RFC 9110 section 5.6), shared by every parser of the
//! crate so that none of them carries its own copy; and [`contains`], the presence check of a
//! field that is usually absent.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// Names a header map may hold for [`contains`] and [`first_value`] to compare them rather
/// than look one up.
const SCANNED: usize = 12;

/// Whether `headers` holds a field named `name`. A lookup hashes the name and probes (about
/// 100 instructions, more for a custom name), present or not; comparing `name` with the names
/// of a short map costs a few instructions each (standard names are told apart by their tag),
/// so the checks for fields most requests lack (`Range`, the conditionals, `Pragma`,
/// `Authorization`...) scan short maps and look longer ones up.
#[inline]
pub(crate) fn contains(headers: &HeaderMap, name: &HeaderName) -> bool {
    if headers.keys_len() <= SCANNED {
        headers.keys().any(|n| n == name)
    } else {
        headers.contains_key(name)
    }
}

/// The first value of `name` in `headers`, found as [`contains`] finds a name (a custom name's
/// lookup hashes it byte by byte: about 140 instructions for `x-request-id`).
pub(crate) fn first_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Option<&'a HeaderValue> {
    if headers.keys_len() <= SCANNED {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    } else {
        headers.get(name)
    }
}

/// `tchar` (RFC 9110 5.6.2): a byte that may appear in a token.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] by byte value: one load instead of a scan of the punctuation list.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether `s` is a token: one or more `tchar`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// `bytes` without leading optional whitespace (spaces and tabs).
pub(crate) fn trim_start_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t');
    start.map_or(&[][..], |start| &bytes[start..])
}

/// `bytes` without leading and trailing optional whitespace (spaces and tabs).
pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let bytes = trim_start_ows(bytes);
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t');
    end.map_or(&[][..], |end| &bytes[..=end])
}

/// A position in one field line, for hand-written list parsers.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(crate) fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Skips the rest of a list member, up to the next comma outside a quoted string (or the
    /// end), so that one malformed member never hides the ones after it.
    pub(crate) fn skip_member(&mut self) {
        let mut in_quotes = false;
        while let Some(b) = self.peek() {
            match b {
                b',' if !in_quotes => return,
                b'"' => in_quotes = !in_quotes,
                b'\\' if in_quotes => self.pos += 1,
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// The token at the position (possibly empty), consumed.
    pub(crate) fn token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }
}

/// Whether any line of the comma-separated list field `name` has a member whose leading token
/// is `token` (ASCII case-insensitive): `no-transform` in `Cache-Control`, `accept-encoding` or
/// `*` in `Vary`. Parameters and quoted strings after the token are skipped; malformed members
/// never match and never hide the members after them.
#[cfg_attr(
    not(any(
        feature = "compression-zstd",
        feature = "compression-br",
        feature = "compression-gzip",
        feature = "compression-deflate"
    )),
    allow(dead_code)
)]
pub(crate) fn list_has_token(
    headers: &http::HeaderMap,
    name: http::HeaderName,
    token: &[u8],
) -> bool {
    headers.get_all(name).iter().any(|line| {
        let mut c = Cursor::new(line.as_bytes());
        loop {
            while matches!(c.peek(), Some(b' ' | b'\t' | b',')) {
                c.pos += 1;
            }
            if c.peek().is_none() {
                return false;
            }
            let start = c.pos;
            let t = if c.peek() == Some(b'*') {
                c.pos += 1;
                &c.bytes[start..c.pos]
            } else {
                c.token()
            };
            c.skip_ows();
            let ends = matches!(c.peek(), None | Some(b',' | b'=' | b';'));
            if ends && t.eq_ignore_ascii_case(token) {
                return true;
            }
            c.skip_member();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_whitespace() {
        assert!(is_token("max-age"));
        assert!(is_token("db-1.read_x"));
        assert!(!is_token(""));
        assert!(!is_token("has space"));
        assert!(!is_token("semi;colon"));
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_start_ows(b"  x "), b"x ");
        let mut c = Cursor::new(b"  gzip;q=1");
        c.skip_ows();
        assert_eq!(c.token(), b"gzip");
        assert_eq!(c.peek(), Some(b';'));
        let mut c = Cursor::new(br#"x="a,\"b", y"#);
        c.skip_member();
        assert_eq!(&c.bytes[c.pos..], b", y");
    }

    #[test]
    fn list_tokens() {
        use http::header::{CACHE_CONTROL, VARY};
        let mut h = http::HeaderMap::new();
        assert!(!list_has_token(&h, VARY, b"accept-encoding"));
        h.append(VARY, "Origin,  Accept-Encoding ".parse().unwrap());
        assert!(list_has_token(&h, VARY, b"accept-encoding"));
        assert!(!list_has_token(&h, VARY, b"*"));
        h.append(VARY, "*".parse().unwrap());
        assert!(list_has_token(&h, VARY, b"*"));
        h.insert(
            CACHE_CONTROL,
            r#"private="no-transform, x", max-age=3"#.parse().unwrap(),
        );
        assert!(!list_has_token(&h, CACHE_CONTROL, b"no-transform"));
        h.append(CACHE_CONTROL, "max-age=3 ,No-Transform".parse().unwrap());
        assert!(list_has_token(&h, CACHE_CONTROL, b"no-transform"));
        h.insert(
            CACHE_CONTROL,
            "no-transformx, @@no-transform, no-transform junk"
                .parse()
                .unwrap(),
        );
        assert!(!list_has_token(&h, CACHE_CONTROL, b"no-transform"));
    }
}

#[cfg(test)]
mod contains_tests {
    use http::header::{ACCEPT, HOST, RANGE};

    use super::*;

    #[test]
    fn contains_answers_like_a_lookup_in_short_and_long_maps() {
        let custom = HeaderName::from_static("x-custom");
        for extra in [0, 5, 30] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_static("a"));
            for i in 0..extra {
                let name = HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
                headers.append(name, HeaderValue::from_static("v"));
            }
            for name in [&RANGE, &ACCEPT, &custom] {
                assert!(!contains(&headers, name), "{name} absent, {extra}");
                headers.append(name, HeaderValue::from_static("v"));
                assert!(contains(&headers, name), "{name} present, {extra}");
            }
            assert!(contains(&headers, &HOST));
        }
    }
}
