//! Content-coding negotiation from `Accept-Encoding` (RFC 9110 section 12.5.3).
//!
//! Shared by the cache, which normalises the header into the coding it would serve (so
//! `gzip, deflate, br` and `br;q=1, gzip;q=0.9` share one variant), and the compression layer,
//! which applies that coding. Both must agree, hence one implementation. It reads the field
//! values as bytes and never allocates.

use super::header::{is_tchar, trim_ows, Cursor};
use http::header::ACCEPT_ENCODING;
use http::HeaderMap;

/// A content coding the crate can produce, or none (`identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Encoding {
    /// `zstd` (RFC 8878).
    Zstd,
    /// `br`, Brotli (RFC 7932).
    Br,
    /// `gzip` (RFC 1952); `x-gzip` is accepted as an alias.
    Gzip,
    /// `deflate`, zlib format (RFC 1950).
    Deflate,
    /// `identity`: no content coding.
    Identity,
}

impl Encoding {
    /// Every encoding, in the order of [`Encoding::index`].
    const ALL: [Encoding; 5] = [
        Encoding::Zstd,
        Encoding::Br,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Identity,
    ];

    /// The content-coding name, as written in `Content-Encoding` (`identity` is never written
    /// there: it means "no header").
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Identity => "identity",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The encoding a coding name stands for, ignoring case; `None` for codings the crate does not
    /// produce (and for `*`).
    fn from_name(name: &[u8]) -> Option<Encoding> {
        if name.eq_ignore_ascii_case(b"x-gzip") {
            return Some(Encoding::Gzip);
        }
        Encoding::ALL
            .into_iter()
            .find(|e| name.eq_ignore_ascii_case(e.as_str().as_bytes()))
    }
}

/// A quality value in thousandths: `0..=1000`.
type Quality = u16;

/// The client's weights, as read from all the `Accept-Encoding` field lines.
#[derive(Debug, Default)]
struct Preferences {
    /// Explicit weight per [`Encoding::index`]; the first valid entry for a coding wins.
    explicit: [Option<Quality>; 5],
    /// The weight of `*`, the codings not listed.
    star: Option<Quality>,
}

/// Chooses the content coding for a response to a request with these `headers`.
///
/// - `supported` lists the codings the server can produce, in its order of preference.
///   `identity` is always available, whether listed or not; when listed, its place in the list
///   is its rank, else it ranks after everything listed.
/// - A coding's weight is its own entry's `q` (default 1), else that of `*`; `identity` is also
///   acceptable, with the lowest possible weight, when neither names it, so any listed coding
///   the client accepts beats an implicit `identity`.
/// - The coding with the highest weight above 0 wins; ties go to the earlier in `supported`.
/// - `q` follows RFC 9110 12.4.2 (`0`, `0.5`, `1`, `1.000`, at most three decimals, at most 1);
///   an entry with a malformed `q` or malformed syntax is ignored; other parameters are ignored.
///   Names are case-insensitive, `x-gzip` means `gzip`, several field lines combine, and the
///   first valid entry for a coding wins over later ones.
/// - No `Accept-Encoding` field, or an empty one, gives [`Encoding::Identity`].
///
/// Returns `None` only when nothing is acceptable, not even `identity` (`identity;q=0`, or
/// `*;q=0` without an `identity` entry, and no supported coding with a weight): the caller may
/// answer `406 Not Acceptable` or ignore the header and send `identity`.
/// Whether the request's `Accept-Encoding` accepts the content coding `coding` (RFC 9110
/// section 12.5.3): named with a weight above 0, or covered by `*` and not named. Without the
/// field every coding is acceptable; an empty field accepts none. `x-gzip` and `gzip` are one.
pub(crate) fn accepts(headers: &HeaderMap, coding: &[u8]) -> bool {
    let mut lines = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    if lines.peek().is_none() {
        return true;
    }
    let is_gzip = |n: &[u8]| n.eq_ignore_ascii_case(b"gzip") || n.eq_ignore_ascii_case(b"x-gzip");
    let gzip = is_gzip(coding);
    let (mut named, mut star) = (None, None);
    for line in lines {
        for (name, q) in Entries::new(line.as_bytes()) {
            if name.eq_ignore_ascii_case(coding) || (gzip && is_gzip(name)) {
                named = named.or(Some(q));
            } else if name == b"*" {
                star = star.or(Some(q));
            }
        }
    }
    named.or(star).is_some_and(|q| q > 0)
}

pub(crate) fn negotiate(headers: &HeaderMap, supported: &[Encoding]) -> Option<Encoding> {
    let mut lines = headers.get_all(ACCEPT_ENCODING).iter();
    let Some(first) = lines.next() else {
        return Some(Encoding::Identity);
    };
    if lines.next().is_none() {
        if let Some(chosen) = negotiate_plain(first.as_bytes(), supported) {
            return chosen;
        }
    }
    negotiate_weighted(headers, supported)
}

/// [`negotiate`] for the field browsers and tools send: one line of bare coding names
/// (`gzip, deflate, br, zstd`), every one weighing 1, so the first of `supported` named wins,
/// else `identity`. A tenth of the general parse; `None` when the line has anything more
/// (parameters, `*`, a malformed member), which the general parse handles.
fn negotiate_plain(line: &[u8], supported: &[Encoding]) -> Option<Option<Encoding>> {
    let named = match known_field(line) {
        Some(named) => named,
        None => named_codings(line)?,
    };
    // An unnamed `identity` is still acceptable, below every named coding.
    let chosen = supported
        .iter()
        .copied()
        .chain(std::iter::once(Encoding::Identity))
        .find(|e| named[e.index()])
        .unwrap_or(Encoding::Identity);
    Some(Some(chosen))
}

/// The codings named by a field that browsers and common tools send, found by comparing the
/// whole line: most requests carry one of these, and a comparison costs a tenth of the parse.
/// Indexed like [`Encoding::index`]: zstd, br, gzip, deflate, identity.
fn known_field(line: &[u8]) -> Option<[bool; 5]> {
    const KNOWN: [(&[u8], [bool; 5]); 5] = [
        // Chrome, Edge, Firefox.
        (b"gzip, deflate, br, zstd", [true, true, true, true, false]),
        // Safari, older browsers.
        (b"gzip, deflate, br", [false, true, true, true, false]),
        // curl --compressed.
        (b"deflate, gzip, br, zstd", [true, true, true, true, false]),
        // Python's requests, Go's and Java's HTTP clients.
        (b"gzip, deflate", [false, false, true, true, false]),
        (b"gzip", [false, false, true, false, false]),
    ];
    KNOWN
        .iter()
        .find(|(field, _)| *field == line)
        .map(|&(_, named)| named)
}

/// The codings named by a line of bare names; `None` when the line has anything more.
fn named_codings(line: &[u8]) -> Option<[bool; 5]> {
    let mut named = [false; 5];
    for member in line.split(|&b| b == b',') {
        let name = trim_ows(member);
        if name.is_empty() {
            continue;
        }
        if name == b"*" || !name.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        if let Some(e) = Encoding::from_name(name) {
            named[e.index()] = true;
        }
    }
    Some(named)
}

/// [`negotiate`] in general: weights, `*`, several lines.
fn negotiate_weighted(headers: &HeaderMap, supported: &[Encoding]) -> Option<Encoding> {
    let lines = headers.get_all(ACCEPT_ENCODING).iter();
    let mut prefs = Preferences::default();
    let mut any_entry = false;
    for line in lines {
        for (name, q) in Entries::new(line.as_bytes()) {
            any_entry = true;
            if name == b"*" {
                prefs.star = prefs.star.or(Some(q));
            } else if let Some(encoding) = Encoding::from_name(name) {
                let slot = &mut prefs.explicit[encoding.index()];
                *slot = slot.or(Some(q));
            }
        }
    }
    if !any_entry {
        // Empty (or entirely malformed): the client wants no content coding.
        return Some(Encoding::Identity);
    }

    // Weights on a doubled scale, so that an implicitly acceptable `identity` (1) ranks below
    // any weight the client wrote (at least 0.001, that is 2) yet above "not acceptable" (0).
    let weight = |encoding: Encoding| -> u32 {
        match prefs.explicit[encoding.index()].or(prefs.star) {
            Some(q) => u32::from(q) * 2,
            None if encoding == Encoding::Identity => 1,
            None => 0,
        }
    };
    let identity_last = (!supported.contains(&Encoding::Identity)).then_some(Encoding::Identity);
    let mut best: Option<(Encoding, u32)> = None;
    for encoding in supported.iter().copied().chain(identity_last) {
        let w = weight(encoding);
        if w > 0 && best.is_none_or(|(_, best_w)| w > best_w) {
            best = Some((encoding, w));
        }
    }
    best.map(|(encoding, _)| encoding)
}

/// The well-formed `token *( OWS ";" OWS param )` members of one line of a weighted list field
/// (`Accept-Encoding`, `Accept-Language`), as `(token, weight in thousandths)`; malformed
/// members are skipped. Never allocates.
pub(crate) fn weighted_members(line: &[u8]) -> impl Iterator<Item = (&[u8], Quality)> {
    Entries::new(line)
}

/// Iterates over the well-formed `coding *( OWS ";" OWS param )` members of one field line as
/// `(name, quality)`, skipping malformed members.
struct Entries<'a> {
    c: Cursor<'a>,
}

impl<'a> Entries<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            c: Cursor::new(bytes),
        }
    }

    /// Skips to the next comma (outside quoted strings, which a parameter may carry).
    fn skip_member(&mut self) {
        self.c.skip_member();
    }

    /// Parses one member after its name; `None` when it is malformed.
    fn params(&mut self) -> Option<Quality> {
        let mut quality = 1000;
        let mut seen_q = false;
        loop {
            self.c.skip_ows();
            match self.c.peek() {
                None | Some(b',') => return Some(quality),
                Some(b';') => self.c.pos += 1,
                Some(_) => return None,
            }
            self.c.skip_ows();
            let name = self.c.token();
            self.c.skip_ows();
            if name.is_empty() || self.c.peek() != Some(b'=') {
                return None;
            }
            self.c.pos += 1;
            self.c.skip_ows();
            if self.c.peek() == Some(b'"') {
                // A quoted parameter value: only extension parameters use them.
                self.c.pos += 1;
                loop {
                    match self.c.peek()? {
                        b'"' => break,
                        b'\\' => self.c.pos += 2,
                        _ => self.c.pos += 1,
                    }
                }
                self.c.pos += 1;
                if name.eq_ignore_ascii_case(b"q") {
                    return None;
                }
                continue;
            }
            let value = self.c.token();
            if name.eq_ignore_ascii_case(b"q") {
                if seen_q {
                    return None;
                }
                seen_q = true;
                quality = parse_qvalue(value)?;
            } else if value.is_empty() {
                return None;
            }
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a [u8], Quality);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while matches!(self.c.peek(), Some(b' ' | b'\t' | b',')) {
                self.c.pos += 1;
            }
            self.c.peek()?;
            let name = self.c.token();
            let entry = if name.is_empty() { None } else { self.params() };
            match entry {
                Some(q) => return Some((name, q)),
                None => self.skip_member(),
            }
        }
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(value: &[u8]) -> Option<Quality> {
    let (&int, rest) = value.split_first()?;
    let decimals = match rest {
        [] => &[][..],
        [b'.', decimals @ ..] if decimals.len() <= 3 => decimals,
        _ => return None,
    };
    let mut fraction: Quality = 0;
    let mut scale = 100;
    for &d in decimals {
        if !d.is_ascii_digit() {
            return None;
        }
        fraction += Quality::from(d - b'0') * scale;
        scale /= 10;
    }
    match int {
        b'0' => Some(fraction),
        b'1' if fraction == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_fields_name_what_the_parse_finds() {
        for field in [
            "gzip, deflate, br, zstd",
            "gzip, deflate, br",
            "deflate, gzip, br, zstd",
            "gzip, deflate",
            "gzip",
        ] {
            let known = known_field(field.as_bytes()).expect("in the table");
            assert_eq!(Some(known), named_codings(field.as_bytes()), "{field}");
        }
        assert_eq!(known_field(b"gzip, deflate, br, zstd "), None);
        assert_eq!(known_field(b"GZIP"), None);
    }

    #[test]
    fn accepts_follows_names_weights_and_star() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(ACCEPT_ENCODING, v.parse().unwrap());
            m
        };
        assert!(accepts(&HeaderMap::new(), b"gzip"));
        assert!(accepts(&h("gzip, br"), b"gzip"));
        assert!(accepts(&h("GZIP;q=0.5"), b"gzip"));
        assert!(accepts(&h("x-gzip"), b"gzip"));
        assert!(!accepts(&h("br"), b"gzip"));
        assert!(!accepts(&h("gzip;q=0, br"), b"gzip"));
        assert!(accepts(&h("*"), b"zstd"));
        assert!(!accepts(&h("*, zstd;q=0"), b"zstd"));
        assert!(!accepts(&h("*;q=0"), b"br"));
        assert!(!accepts(&h(""), b"gzip"));
        assert!(!accepts(&h(";;,=q"), b"gzip"));
    }
    use http::HeaderValue;
    use proptest::prelude::*;
    use Encoding::*;

    const ALL: &[Encoding] = &[Zstd, Br, Gzip, Deflate];

    fn neg(lines: &[&str], supported: &[Encoding]) -> Option<Encoding> {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(ACCEPT_ENCODING, HeaderValue::from_str(line).unwrap());
        }
        negotiate(&map, supported)
    }

    #[test]
    fn names() {
        assert_eq!(Zstd.as_str(), "zstd");
        assert_eq!(Br.as_str(), "br");
        assert_eq!(Gzip.as_str(), "gzip");
        assert_eq!(Deflate.as_str(), "deflate");
        assert_eq!(Identity.as_str(), "identity");
        for e in Encoding::ALL {
            assert_eq!(Encoding::ALL[e.index()], e);
        }
    }

    #[test]
    fn absent_or_empty_is_identity() {
        assert_eq!(neg(&[], ALL), Some(Identity));
        assert_eq!(neg(&[""], ALL), Some(Identity));
        assert_eq!(neg(&[" , "], ALL), Some(Identity));
    }

    #[test]
    fn browsers_and_tools() {
        // Chrome: server order decides among equals.
        assert_eq!(neg(&["gzip, deflate, br, zstd"], ALL), Some(Zstd));
        assert_eq!(neg(&["gzip, deflate, br, zstd"], &[Br, Gzip]), Some(Br));
        // Firefox.
        assert_eq!(neg(&["gzip, deflate, br"], ALL), Some(Br));
        // curl --compressed.
        assert_eq!(
            neg(&["deflate, gzip, br, zstd"], &[Gzip, Deflate]),
            Some(Gzip)
        );
        // A server supporting nothing the client lists.
        assert_eq!(neg(&["br"], &[Gzip]), Some(Identity));
        assert_eq!(neg(&["gzip"], &[]), Some(Identity));
    }

    #[test]
    fn star() {
        assert_eq!(neg(&["*"], ALL), Some(Zstd));
        assert_eq!(neg(&["*"], &[Identity, Gzip]), Some(Identity));
        assert_eq!(neg(&["gzip;q=0, *"], &[Gzip, Br]), Some(Br));
        assert_eq!(neg(&["gzip;q=0, *"], &[Gzip]), Some(Identity));
        assert_eq!(neg(&["*;q=0.5, gzip"], &[Br, Gzip]), Some(Gzip));
        assert_eq!(neg(&["*;q=0"], &[Gzip]), None);
        assert_eq!(neg(&["*;q=0, identity"], &[Gzip]), Some(Identity));
        assert_eq!(neg(&["*;q=0, gzip;q=0.1"], &[Br, Gzip]), Some(Gzip));
    }

    #[test]
    fn identity_exclusion() {
        assert_eq!(neg(&["identity;q=0"], &[Gzip]), None);
        assert_eq!(neg(&["identity;q=0, gzip"], &[Gzip]), Some(Gzip));
        assert_eq!(neg(&["identity;q=0, gzip;q=0"], ALL), None);
        assert_eq!(neg(&["identity"], ALL), Some(Identity));
        // Explicit identity competes on weight like any coding.
        assert_eq!(neg(&["identity, gzip;q=0.5"], ALL), Some(Identity));
        assert_eq!(neg(&["identity;q=0.5, gzip"], ALL), Some(Gzip));
    }

    #[test]
    fn weights() {
        assert_eq!(neg(&["br;q=0.5, gzip;q=0.8"], ALL), Some(Gzip));
        assert_eq!(neg(&["br;q=0.8, gzip;q=0.8"], &[Gzip, Br]), Some(Gzip));
        assert_eq!(neg(&["br;q=1.000, gzip;q=0.999"], ALL), Some(Br));
        assert_eq!(neg(&["br;q=0.001"], ALL), Some(Br));
        assert_eq!(neg(&["br;q=0"], ALL), Some(Identity));
        assert_eq!(neg(&["br;q=0."], ALL), Some(Identity));
        assert_eq!(neg(&["gzip;Q=0.5, br;q=0.4"], ALL), Some(Gzip));
    }

    #[test]
    fn malformed_entries_are_ignored() {
        assert_eq!(neg(&["gzip;q=abc, br"], ALL), Some(Br));
        for bad in [
            "1.5", "2", "0.5000", ".5", "-1", "", "1.001", "0.5x", "\"0.5\"",
        ] {
            let line = format!("gzip;q={bad}");
            assert_eq!(neg(&[&line], ALL), Some(Identity), "{line}");
        }
        assert_eq!(neg(&["gzip;q=0.5;q=1"], ALL), Some(Identity));
        assert_eq!(neg(&["gzip q=1, br"], ALL), Some(Br));
        assert_eq!(neg(&["@@, gzip"], ALL), Some(Gzip));
        assert_eq!(
            neg(&["gzip;level=\"a,b\";q=0.2, br;q=0.1"], ALL),
            Some(Gzip)
        );
        assert_eq!(neg(&["gzip;;q=1"], ALL), Some(Identity));
        // A malformed identity;q=0 is not an exclusion.
        assert_eq!(neg(&["identity;q=zero"], &[]), Some(Identity));
    }

    #[test]
    fn case_whitespace_alias_and_lines() {
        assert_eq!(neg(&["GZIP"], ALL), Some(Gzip));
        assert_eq!(neg(&["  Br ; Q = 1"], ALL), Some(Br));
        assert_eq!(neg(&["\tbr ;\tq=0.5 , gzip ; q=0.6\t"], ALL), Some(Gzip));
        assert_eq!(neg(&["x-gzip"], ALL), Some(Gzip));
        assert_eq!(neg(&["X-Gzip;q=0.3, deflate;q=0.2"], ALL), Some(Gzip));
        assert_eq!(neg(&["deflate;q=0.5", "zstd;q=0.9"], ALL), Some(Zstd));
        // First entry for a coding wins.
        assert_eq!(neg(&["gzip;q=0", "gzip"], &[Gzip]), Some(Identity));
        // Unknown codings are skipped.
        assert_eq!(neg(&["compress, exi, gzip;q=0.1"], ALL), Some(Gzip));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(
            lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..3),
            supported in prop::collection::vec(prop::sample::select(&Encoding::ALL[..]), 0..6),
        ) {
            let mut map = HeaderMap::new();
            for line in &lines {
                if let Ok(value) = HeaderValue::from_bytes(line) {
                    map.append(ACCEPT_ENCODING, value);
                }
            }
            if let Some(chosen) = negotiate(&map, &supported) {
                prop_assert!(chosen == Identity || supported.contains(&chosen));
            }
        }

        #[test]
        fn the_plain_path_agrees_with_the_general_one(
            s in "([a-zA-Z*-]{0,8}( ?; ?[qQa-z]{0,2}=[0-9.\"]{0,6})?[ ,\t]{0,3}){0,6}",
            supported in prop::collection::vec(prop::sample::select(&Encoding::ALL[..]), 0..6),
        ) {
            let mut map = HeaderMap::new();
            map.insert(ACCEPT_ENCODING, HeaderValue::from_str(&s).unwrap());
            if let Some(plain) = negotiate_plain(s.as_bytes(), &supported) {
                prop_assert_eq!(plain, negotiate_weighted(&map, &supported));
            }
        }

        #[test]
        fn structured_input_never_panics(
            s in "([a-zA-Z*-]{0,8}( ?; ?[qQa-z]{0,2}=[0-9.\"]{0,6})?[ ,]{0,3}){0,6}",
            supported in prop::collection::vec(prop::sample::select(&Encoding::ALL[..]), 0..6),
        ) {
            let mut map = HeaderMap::new();
            map.insert(ACCEPT_ENCODING, HeaderValue::from_str(&s).unwrap());
            if let Some(chosen) = negotiate(&map, &supported) {
                prop_assert!(chosen == Identity || supported.contains(&chosen));
            }
        }
    }
}
