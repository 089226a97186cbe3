//! `Cache-Control` (RFC 9111 section 5.2) and `Pragma` (section 5.4) parsing.
//!
//! The parser reads the field values as bytes, straight out of the [`HeaderMap`], and never
//! allocates: it runs on every request and every response that passes through the cache.
//! Malformed input counts as absent, directive by directive: one bad member does not hide the
//! ones that follow it.

use crate::util::header::{contains, Cursor};
use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName};

/// RFC 9111 section 1.2.2: a delta-seconds value larger than 2^31 is treated as 2^31.
pub(crate) const DELTA_SECONDS_MAX: u32 = 1 << 31;

/// Parsed `Cache-Control` directives of a request or a response.
///
/// Directives that only make sense on one side are parsed on both: a request carrying `public`
/// sets [`public`](Self::public), and the caller only looks at the fields that apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    /// `max-age=N`. On a response, the freshness lifetime; on a request, the largest age the
    /// client accepts. Two different values make it `0` (RFC 9111 4.2.1: the response may be
    /// considered stale), so a confused origin gets revalidation rather than long caching.
    pub(crate) max_age: Option<u32>,
    /// `s-maxage=N`: the freshness lifetime for shared caches such as this one; it wins over
    /// `max-age` and implies `proxy-revalidate`. Conflicting values make it `0`, like `max-age`.
    pub(crate) s_maxage: Option<u32>,
    /// `no-store`: the message must not be stored at all.
    pub(crate) no_store: bool,
    /// `no-cache`, with or without field names: on a response, it may be stored but never reused
    /// without revalidation (the qualified form is treated as the unqualified one, which is
    /// stricter); on a request, the client wants the origin to confirm.
    pub(crate) no_cache: bool,
    /// `private`, with or without field names: a shared cache must not store the response.
    pub(crate) private: bool,
    /// `public`: the response may be stored even where it normally would not be (a request with
    /// `Authorization`, a status without heuristic freshness).
    pub(crate) public: bool,
    /// `must-revalidate`: once stale, the response must not be served without revalidation,
    /// whatever the request's `max-stale` says.
    pub(crate) must_revalidate: bool,
    /// `must-understand` (RFC 9111 5.2.2.3): store the response only if the cache understands
    /// the caching rules of its status, and then ignore `no-store`.
    pub(crate) must_understand: bool,
    /// `proxy-revalidate`: `must-revalidate` for shared caches only.
    pub(crate) proxy_revalidate: bool,
    /// `no-transform`: intermediaries must not change the content (for example re-encode it).
    pub(crate) no_transform: bool,
    /// `immutable` (RFC 8246): the content will not change while fresh.
    pub(crate) immutable: bool,
    /// `stale-while-revalidate=N` (RFC 5861): seconds after expiry during which the stale
    /// response may be served while it is revalidated in the background.
    pub(crate) stale_while_revalidate: Option<u32>,
    /// `stale-if-error=N` (RFC 5861): seconds after expiry during which the stale response may be
    /// served when revalidation fails.
    pub(crate) stale_if_error: Option<u32>,
    /// `max-stale[=N]` (request): how stale a response the client accepts. Without a value, any
    /// staleness is accepted: `u32::MAX`, which no parsed value reaches (they stop at
    /// [`DELTA_SECONDS_MAX`]).
    pub(crate) max_stale: Option<u32>,
    /// `min-fresh=N` (request): the client wants a response that stays fresh this much longer.
    pub(crate) min_fresh: Option<u32>,
    /// `only-if-cached` (request): answer from the cache or with `504`, never go to the origin.
    pub(crate) only_if_cached: bool,
}

impl CacheControl {
    /// Parses all the `Cache-Control` field lines of `headers`, combined as one list.
    ///
    /// - Directive names are case-insensitive; unknown directives are ignored.
    /// - Arguments may be tokens or quoted strings (`max-age="60"`: RFC 9111 5.2 asks recipients
    ///   to accept the quoted form). Whitespace around `=` is tolerated.
    /// - A directive with a malformed argument (`max-age=abc`, `max-age=-1`, `max-age=`, a bare
    ///   `max-age`) is ignored. Values beyond 2^31 saturate to [`DELTA_SECONDS_MAX`].
    /// - A repeated `max-age` / `s-maxage` with a different value becomes `0`; for the other
    ///   argument-bearing directives the first valid occurrence wins.
    /// - Directives defined without an argument (`no-store`, `public`...) are honoured even when
    ///   one is given; `no-cache="..."` and `private="..."` count as their unqualified forms.
    /// - Empty list members and surrounding whitespace are skipped; commas inside quoted strings
    ///   do not split members; a member with trailing junk (`max-age=5 x`) is skipped whole.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        Self::parse_lines(headers).0
    }

    /// [`parse`](Self::parse), and whether there was any `Cache-Control` field line.
    fn parse_lines(headers: &HeaderMap) -> (Self, bool) {
        let mut cc = CacheControl::default();
        let mut any = false;
        for value in headers.get_all(CACHE_CONTROL) {
            any = true;
            for directive in Directives::new(value.as_bytes()) {
                cc.apply(directive);
            }
        }
        (cc, any)
    }

    /// The directives of a response for this cache: those of the first targeted field
    /// (RFC 9213) in `targeted` that is present and a valid Structured Field dictionary, which
    /// then replaces `Cache-Control` whole; else `Cache-Control`.
    pub(crate) fn parse_response(headers: &HeaderMap, targeted: &[HeaderName]) -> Self {
        targeted
            .iter()
            .find_map(|name| super::targeted::parse(headers, name))
            .unwrap_or_else(|| Self::parse(headers))
    }

    /// [`parse`](Self::parse) for a request, which also honours `Pragma: no-cache` when the
    /// request has no `Cache-Control` field at all (RFC 9111 5.4).
    pub(crate) fn parse_request(headers: &HeaderMap) -> Self {
        // Most requests carry neither field.
        if !contains(headers, &CACHE_CONTROL) && !contains(headers, &PRAGMA) {
            return Self::default();
        }
        let (mut cc, any) = Self::parse_lines(headers);
        if !any && pragma_no_cache(headers) {
            cc.no_cache = true;
        }
        cc
    }

    pub(crate) fn apply(&mut self, directive: Directive<'_>) {
        // Longest known name: "stale-while-revalidate" (22 bytes). Longer names are unknown.
        let mut lower = [0u8; 24];
        let name = directive.name;
        if name.len() > lower.len() {
            return;
        }
        for (dst, src) in lower.iter_mut().zip(name) {
            *dst = src.to_ascii_lowercase();
        }
        let arg = directive.arg;
        let seconds = arg.and_then(Arg::delta_seconds);
        match &lower[..name.len()] {
            b"max-age" => self.max_age = freshness(self.max_age, seconds),
            b"s-maxage" => self.s_maxage = freshness(self.s_maxage, seconds),
            b"no-store" => self.no_store = true,
            b"no-cache" => self.no_cache = true,
            b"private" => self.private = true,
            b"public" => self.public = true,
            b"must-revalidate" => self.must_revalidate = true,
            b"must-understand" => self.must_understand = true,
            b"proxy-revalidate" => self.proxy_revalidate = true,
            b"no-transform" => self.no_transform = true,
            b"immutable" => self.immutable = true,
            b"only-if-cached" => self.only_if_cached = true,
            b"stale-while-revalidate" => {
                self.stale_while_revalidate = first(self.stale_while_revalidate, seconds)
            }
            b"stale-if-error" => self.stale_if_error = first(self.stale_if_error, seconds),
            b"min-fresh" => self.min_fresh = first(self.min_fresh, seconds),
            b"max-stale" => {
                let value = if arg.is_none() {
                    Some(u32::MAX)
                } else {
                    seconds
                };
                self.max_stale = first(self.max_stale, value);
            }
            _ => {}
        }
    }
}

/// Merges a repeated `max-age` / `s-maxage`: different values mean "stale" (`0`).
fn freshness(old: Option<u32>, new: Option<u32>) -> Option<u32> {
    match (old, new) {
        (Some(old), Some(new)) if old != new => Some(0),
        (Some(old), _) => Some(old),
        (None, new) => new,
    }
}

/// Merges a repeated directive whose first valid occurrence wins.
fn first(old: Option<u32>, new: Option<u32>) -> Option<u32> {
    old.or(new)
}

/// Whether a `Pragma` field carries `no-cache` (with or without an argument).
fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers.get_all(PRAGMA).iter().any(|value| {
        Directives::new(value.as_bytes()).any(|d| d.name.eq_ignore_ascii_case(b"no-cache"))
    })
}

/// One `name[=argument]` member of a directive list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Directive<'a> {
    /// The name, as received (compare it case-insensitively).
    pub(crate) name: &'a [u8],
    /// The argument after `=`, if any.
    pub(crate) arg: Option<Arg<'a>>,
}

/// The argument of a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg<'a> {
    /// A token (possibly empty, for `name=`).
    Token(&'a [u8]),
    /// The raw content between the quotes of a quoted string, escapes left in place.
    Quoted(&'a [u8]),
}

impl Arg<'_> {
    /// The argument as delta-seconds (digits only, in either form), saturating at
    /// [`DELTA_SECONDS_MAX`]; `None` when it is not one.
    pub(crate) fn delta_seconds(self) -> Option<u32> {
        let (Arg::Token(digits) | Arg::Quoted(digits)) = self;
        delta_seconds(digits)
    }
}

/// Parses `1*DIGIT` as delta-seconds, saturating at [`DELTA_SECONDS_MAX`].
pub(crate) fn delta_seconds(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        // Clamping at every step keeps the accumulator far from overflow.
        value = (value * 10 + u64::from(b - b'0')).min(u64::from(DELTA_SECONDS_MAX));
    }
    Some(value as u32)
}

/// Iterates over the well-formed `token [ "=" ( token / quoted-string ) ]` members of one field
/// value (the grammar of `Cache-Control` and `Pragma`), skipping malformed ones.
#[derive(Debug, Clone)]
pub(crate) struct Directives<'a> {
    c: Cursor<'a>,
}

impl<'a> Directives<'a> {
    /// Starts at the beginning of `bytes`, one field line.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            c: Cursor::new(bytes),
        }
    }

    /// After the opening quote: the content up to the closing quote, which is consumed. `None`
    /// (with the rest of the line consumed) when the string is not terminated.
    fn quoted(&mut self) -> Option<&'a [u8]> {
        let start = self.c.pos;
        while let Some(b) = self.c.peek() {
            match b {
                b'"' => {
                    let content = &self.c.bytes[start..self.c.pos];
                    self.c.pos += 1;
                    return Some(content);
                }
                b'\\' => self.c.pos += 2,
                _ => self.c.pos += 1,
            }
        }
        self.c.pos = self.c.bytes.len();
        None
    }

    /// Skips the rest of a malformed member, up to the next comma outside a quoted string.
    fn skip_member(&mut self) {
        self.c.skip_member();
    }
}

impl<'a> Iterator for Directives<'a> {
    type Item = Directive<'a>;

    fn next(&mut self) -> Option<Directive<'a>> {
        loop {
            while matches!(self.c.peek(), Some(b' ' | b'\t' | b',')) {
                self.c.pos += 1;
            }
            self.c.peek()?;
            let name = self.c.token();
            if name.is_empty() {
                self.skip_member();
                continue;
            }
            self.c.skip_ows();
            let mut arg = None;
            if self.c.peek() == Some(b'=') {
                self.c.pos += 1;
                self.c.skip_ows();
                if self.c.peek() == Some(b'"') {
                    self.c.pos += 1;
                    match self.quoted() {
                        Some(content) => arg = Some(Arg::Quoted(content)),
                        None => continue,
                    }
                } else {
                    arg = Some(Arg::Token(self.c.token()));
                }
                self.c.skip_ows();
            }
            match self.c.peek() {
                None | Some(b',') => return Some(Directive { name, arg }),
                Some(_) => self.skip_member(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(CACHE_CONTROL, HeaderValue::from_str(line).unwrap());
        }
        map
    }

    fn cc(lines: &[&str]) -> CacheControl {
        CacheControl::parse(&headers(lines))
    }

    #[test]
    fn absent_is_default() {
        assert_eq!(
            CacheControl::parse(&HeaderMap::new()),
            CacheControl::default()
        );
        assert_eq!(cc(&[""]), CacheControl::default());
        assert_eq!(cc(&[" , ,, "]), CacheControl::default());
    }

    #[test]
    fn response_directives() {
        let parsed = cc(&["public, max-age=60, s-maxage=120, must-revalidate, proxy-revalidate"]);
        assert_eq!(
            parsed,
            CacheControl {
                public: true,
                max_age: Some(60),
                s_maxage: Some(120),
                must_revalidate: true,
                proxy_revalidate: true,
                ..Default::default()
            }
        );
        let parsed = cc(&["no-store, no-cache, private, no-transform, immutable"]);
        assert!(parsed.no_store && parsed.no_cache && parsed.private);
        assert!(parsed.no_transform && parsed.immutable);
        let parsed = cc(&["stale-while-revalidate=30, stale-if-error=600"]);
        assert_eq!(parsed.stale_while_revalidate, Some(30));
        assert_eq!(parsed.stale_if_error, Some(600));
    }

    #[test]
    fn request_directives() {
        let parsed = cc(&["max-stale, min-fresh=5, only-if-cached, max-age=0"]);
        assert_eq!(parsed.max_stale, Some(u32::MAX));
        assert_eq!(parsed.min_fresh, Some(5));
        assert!(parsed.only_if_cached);
        assert_eq!(parsed.max_age, Some(0));
        assert_eq!(cc(&["max-stale=10"]).max_stale, Some(10));
        // A malformed value is not the bare form.
        assert_eq!(cc(&["max-stale=x"]).max_stale, None);
        assert_eq!(cc(&["max-stale="]).max_stale, None);
    }

    #[test]
    fn case_insensitive_names() {
        let parsed = cc(&["Max-Age=5, NO-CACHE, S-MaxAge=7"]);
        assert_eq!(parsed.max_age, Some(5));
        assert_eq!(parsed.s_maxage, Some(7));
        assert!(parsed.no_cache);
    }

    #[test]
    fn quoted_values() {
        assert_eq!(cc(&["max-age=\"60\""]).max_age, Some(60));
        assert_eq!(cc(&["max-age=\"6 0\""]).max_age, None);
        assert_eq!(cc(&["max-age=\"\""]).max_age, None);
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "max-age=abc",
            "max-age=-1",
            "max-age=",
            "max-age",
            "max-age=1.5",
        ] {
            assert_eq!(cc(&[bad]).max_age, None, "{bad}");
        }
        assert_eq!(cc(&["max-age=abc, max-age=5"]).max_age, Some(5));
        assert_eq!(
            cc(&["max-age=5 junk, no-store"]),
            CacheControl {
                no_store: true,
                ..Default::default()
            }
        );
        // An unterminated quoted string swallows the rest of its line, not the next line.
        let parsed = cc(&["private=\"a, max-age=5", "no-store"]);
        assert_eq!(
            parsed,
            CacheControl {
                no_store: true,
                ..Default::default()
            }
        );
        // A member that does not start with a token.
        assert_eq!(cc(&["=5, @x, max-age=3"]).max_age, Some(3));
    }

    #[test]
    fn whitespace_and_empty_members() {
        assert_eq!(cc(&[", ,max-age=5 ,"]).max_age, Some(5));
        assert_eq!(cc(&["\tmax-age = 5\t"]).max_age, Some(5));
        assert!(cc(&["max-age=5,,,no-store"]).no_store);
    }

    #[test]
    fn saturates_at_2_pow_31() {
        assert_eq!(cc(&["max-age=2147483648"]).max_age, Some(DELTA_SECONDS_MAX));
        assert_eq!(
            cc(&["max-age=99999999999999999999999"]).max_age,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(cc(&["max-age=2147483647"]).max_age, Some(2_147_483_647));
        assert_eq!(
            cc(&["max-stale=99999999999"]).max_stale,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn duplicates() {
        assert_eq!(cc(&["max-age=60, max-age=60"]).max_age, Some(60));
        assert_eq!(cc(&["max-age=60, max-age=30"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=60", "max-age=30"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=60, max-age=30, max-age=60"]).max_age, Some(0));
        assert_eq!(cc(&["s-maxage=1, s-maxage=2"]).s_maxage, Some(0));
        assert_eq!(cc(&["min-fresh=1, min-fresh=2"]).min_fresh, Some(1));
        assert_eq!(
            cc(&["stale-if-error=1, stale-if-error=2"]).stale_if_error,
            Some(1)
        );
        assert_eq!(cc(&["max-stale, max-stale=2"]).max_stale, Some(u32::MAX));
    }

    #[test]
    fn multiple_lines_combine() {
        let parsed = cc(&["public", "max-age=10"]);
        assert!(parsed.public);
        assert_eq!(parsed.max_age, Some(10));
    }

    #[test]
    fn quoted_field_names_keep_commas() {
        let parsed = cc(&["no-cache=\"Set-Cookie, Foo\", max-age=5, private=\"X-A,X-B\", public"]);
        assert!(parsed.no_cache && parsed.private && parsed.public);
        assert_eq!(parsed.max_age, Some(5));
        let parsed = cc(&["ext=\"a \\\" , max-age=1\", max-age=2"]);
        assert_eq!(parsed.max_age, Some(2));
    }

    #[test]
    fn unknown_directives_ignored() {
        let parsed = cc(&["foo, bar=baz, community=\"UCI\", max-age=9"]);
        assert_eq!(
            parsed,
            CacheControl {
                max_age: Some(9),
                ..Default::default()
            }
        );
        // A name longer than any known one.
        assert_eq!(
            cc(&["stale-while-revalidate-extended=5"]),
            CacheControl::default()
        );
    }

    #[test]
    fn pragma() {
        let mut map = HeaderMap::new();
        map.insert(PRAGMA, HeaderValue::from_static("No-Cache"));
        assert!(CacheControl::parse_request(&map).no_cache);
        assert!(!CacheControl::parse(&map).no_cache);
        map.insert(PRAGMA, HeaderValue::from_static("foo=\"a,b\", no-cache"));
        assert!(CacheControl::parse_request(&map).no_cache);
        map.insert(PRAGMA, HeaderValue::from_static("no-cacheable"));
        assert!(!CacheControl::parse_request(&map).no_cache);
        // Cache-Control wins over Pragma when present, even with no directive understood.
        map.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        map.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        let parsed = CacheControl::parse_request(&map);
        assert!(!parsed.no_cache);
        assert_eq!(parsed.max_age, Some(5));
    }

    #[test]
    fn directives_iterator() {
        let members: Vec<_> = Directives::new(b"a, b=1, c=\"x,y\", d=").collect();
        assert_eq!(
            members,
            [
                Directive {
                    name: b"a",
                    arg: None
                },
                Directive {
                    name: b"b",
                    arg: Some(Arg::Token(b"1"))
                },
                Directive {
                    name: b"c",
                    arg: Some(Arg::Quoted(b"x,y"))
                },
                Directive {
                    name: b"d",
                    arg: Some(Arg::Token(b""))
                },
            ]
        );
    }

    /// One rendered directive, given the freedom a sender has: quoting, case, whitespace.
    fn render(name: &str, value: Option<u32>, quoted: bool, case_mask: u32) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if case_mask & (1 << (i % 32)) != 0 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        if let Some(v) = value {
            if quoted {
                out.push_str(&format!("=\"{v}\""));
            } else {
                out.push_str(&format!("={v}"));
            }
        }
        out
    }

    fn seconds() -> impl Strategy<Value = Option<u32>> {
        prop_oneof![
            Just(None),
            (0u32..1000).prop_map(Some),
            any::<u32>().prop_map(Some),
        ]
    }

    prop_compose! {
        fn arb_cache_control()(
            max_age in seconds(),
            s_maxage in seconds(),
            stale_while_revalidate in seconds(),
            stale_if_error in seconds(),
            max_stale in prop_oneof![seconds(), Just(Some(u32::MAX))],
            min_fresh in seconds(),
            flags in any::<[bool; 10]>(),
        ) -> CacheControl {
            CacheControl {
                max_age,
                s_maxage,
                no_store: flags[0],
                no_cache: flags[1],
                private: flags[2],
                public: flags[3],
                must_revalidate: flags[4],
                proxy_revalidate: flags[5],
                no_transform: flags[6],
                immutable: flags[7],
                stale_while_revalidate,
                stale_if_error,
                max_stale,
                min_fresh,
                only_if_cached: flags[8],
                must_understand: false,
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4)) {
            let mut map = HeaderMap::new();
            for line in &lines {
                if let Ok(value) = HeaderValue::from_bytes(line) {
                    map.append(CACHE_CONTROL, value.clone());
                    map.append(PRAGMA, value);
                }
            }
            let _ = CacheControl::parse(&map);
            let _ = CacheControl::parse_request(&map);
        }

        #[test]
        fn arbitrary_ascii_never_panics(s in "[ -~\t]{0,80}") {
            let mut map = HeaderMap::new();
            map.insert(CACHE_CONTROL, HeaderValue::from_str(&s).unwrap());
            let _ = CacheControl::parse(&map);
        }

        #[test]
        fn well_formed_round_trips(
            expected in arb_cache_control(),
            quoted in any::<[bool; 8]>(),
            field_names in any::<[bool; 2]>(),
            case_masks in any::<[u32; 16]>(),
            order in any::<[u16; 16]>(),
            separators in prop::collection::vec(prop_oneof![
                Just(", "), Just(","), Just(" ,\t"), Just(", ,"), Just(" , , ")
            ], 20),
            line_breaks in any::<[bool; 20]>(),
            unknown in any::<bool>(),
        ) {
            let mut members: Vec<(u16, String)> = Vec::new();
            let mut add = |i: usize, s: String| members.push((order[i], s));
            if let Some(v) = expected.max_age { add(0, render("max-age", Some(v), quoted[0], case_masks[0])); }
            if let Some(v) = expected.s_maxage { add(1, render("s-maxage", Some(v), quoted[1], case_masks[1])); }
            if let Some(v) = expected.stale_while_revalidate { add(2, render("stale-while-revalidate", Some(v), quoted[2], case_masks[2])); }
            if let Some(v) = expected.stale_if_error { add(3, render("stale-if-error", Some(v), quoted[3], case_masks[3])); }
            if let Some(v) = expected.max_stale {
                let v = if v == u32::MAX { None } else { Some(v) };
                add(4, render("max-stale", v, quoted[4], case_masks[4]));
            }
            if let Some(v) = expected.min_fresh { add(5, render("min-fresh", Some(v), quoted[5], case_masks[5])); }
            if expected.no_store { add(6, render("no-store", None, false, case_masks[6])); }
            if expected.no_cache {
                let mut s = render("no-cache", None, false, case_masks[7]);
                if field_names[0] { s.push_str("=\"Set-Cookie, X-Foo\""); }
                add(7, s);
            }
            if expected.private {
                let mut s = render("private", None, false, case_masks[8]);
                if field_names[1] { s.push_str("=\"Authorization,max-age=1\""); }
                add(8, s);
            }
            if expected.public { add(9, render("public", None, false, case_masks[9])); }
            if expected.must_revalidate { add(10, render("must-revalidate", None, false, case_masks[10])); }
            if expected.proxy_revalidate { add(11, render("proxy-revalidate", None, false, case_masks[11])); }
            if expected.no_transform { add(12, render("no-transform", None, false, case_masks[12])); }
            if expected.immutable { add(13, render("immutable", None, false, case_masks[13])); }
            if expected.only_if_cached { add(14, render("only-if-cached", None, false, case_masks[14])); }
            if unknown { add(15, "x-ext=\"a, max-age=1, \\\"no-store\"".to_owned()); }
            members.sort_by_key(|(k, _)| *k);

            let mut map = HeaderMap::new();
            let mut line = String::new();
            for (i, (_, member)) in members.iter().enumerate() {
                line.push_str(member);
                if line_breaks[i] {
                    map.append(CACHE_CONTROL, HeaderValue::from_str(&line).unwrap());
                    line.clear();
                } else {
                    line.push_str(separators[i]);
                }
            }
            map.append(CACHE_CONTROL, HeaderValue::from_str(line.trim()).unwrap());

            let saturate = |v: Option<u32>| v.map(|v| v.min(DELTA_SECONDS_MAX));
            let want = CacheControl {
                max_age: saturate(expected.max_age),
                s_maxage: saturate(expected.s_maxage),
                stale_while_revalidate: saturate(expected.stale_while_revalidate),
                stale_if_error: saturate(expected.stale_if_error),
                max_stale: expected.max_stale.map(|v| if v == u32::MAX { v } else { v.min(DELTA_SECONDS_MAX) }),
                min_fresh: saturate(expected.min_fresh),
                ..expected
            };
            prop_assert_eq!(CacheControl::parse(&map), want);
        }
    }
}
