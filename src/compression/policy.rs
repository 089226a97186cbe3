//! What may be compressed: the predicate on response heads, and the default allow list.

use http::header::CONTENT_TYPE;
use http::response::Parts;

use crate::util::header::trim_ows;

/// What happens to server-sent events (`text/event-stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventStreams {
    /// Compress, and flush the encoder after each frame the service sends (one event), so the
    /// client decodes every event as it arrives. The default.
    #[default]
    FlushEachEvent,
    /// Send them uncompressed.
    Exclude,
}

/// Decides, from the response head, whether a response may be compressed.
///
/// The layer's fixed rules (already encoded, `206` / `Content-Range`, `no-transform`, `HEAD`,
/// `204`, `304`, `1xx`, minimum size) apply whatever the predicate says; the predicate only
/// narrows or widens the set of compressible *types*. The default is [`DefaultPredicate`], a
/// content-type allow list. Closures `Fn(&Parts) -> bool` are predicates, and predicates compose
/// with [`and`](Predicate::and), [`or`](Predicate::or) and [`not`](Predicate::not).
///
/// ```
/// use tower_perf::compression::{DefaultPredicate, Predicate};
///
/// // The default list, but never for responses that carry `x-no-compress`.
/// let p = DefaultPredicate::new().and(|res: &http::response::Parts| {
///     !res.headers.contains_key("x-no-compress")
/// });
/// # let _ = p;
/// ```
pub trait Predicate: Send + Sync + 'static {
    /// Whether a response with this head may be compressed.
    fn should_compress(&self, response: &Parts) -> bool;

    /// Both predicates must agree.
    fn and<P: Predicate>(self, other: P) -> And<Self, P>
    where
        Self: Sized,
    {
        And(self, other)
    }

    /// Either predicate suffices.
    fn or<P: Predicate>(self, other: P) -> Or<Self, P>
    where
        Self: Sized,
    {
        Or(self, other)
    }

    /// The opposite of this predicate.
    fn not(self) -> Not<Self>
    where
        Self: Sized,
    {
        Not(self)
    }
}

impl<F> Predicate for F
where
    F: Fn(&Parts) -> bool + Send + Sync + 'static,
{
    fn should_compress(&self, response: &Parts) -> bool {
        self(response)
    }
}

/// Both predicates agree. Made by [`Predicate::and`].
#[derive(Debug, Clone, Copy)]
pub struct And<A, B>(A, B);

impl<A: Predicate, B: Predicate> Predicate for And<A, B> {
    fn should_compress(&self, response: &Parts) -> bool {
        self.0.should_compress(response) && self.1.should_compress(response)
    }
}

/// Either predicate. Made by [`Predicate::or`].
#[derive(Debug, Clone, Copy)]
pub struct Or<A, B>(A, B);

impl<A: Predicate, B: Predicate> Predicate for Or<A, B> {
    fn should_compress(&self, response: &Parts) -> bool {
        self.0.should_compress(response) || self.1.should_compress(response)
    }
}

/// The opposite. Made by [`Predicate::not`].
#[derive(Debug, Clone, Copy)]
pub struct Not<A>(A);

impl<A: Predicate> Predicate for Not<A> {
    fn should_compress(&self, response: &Parts) -> bool {
        !self.0.should_compress(response)
    }
}

/// The default predicate: the `Content-Type` is on a list of types that compress well.
///
/// Compressed: `text/*` (including `text/event-stream`, flushed per event), JSON and XML and
/// their `+json` / `+xml` suffixes (so SVG, RSS, Atom, problem details, JSON-LD), JavaScript and
/// ECMAScript, `application/wasm`, NDJSON, YAML, TOML, CSV, GraphQL, source maps, and the
/// uncompressed font formats (`font/ttf`, `font/otf`, `application/vnd.ms-fontobject`).
///
/// Left alone: responses without a `Content-Type`, images other than SVG, audio, video,
/// archives, PDFs, `font/woff` and `font/woff2`, `application/octet-stream` and anything else
/// not listed, since they are already compressed or of unknown shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPredicate {
    _priv: (),
}

impl DefaultPredicate {
    /// The default allow list.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Predicate for DefaultPredicate {
    fn should_compress(&self, response: &Parts) -> bool {
        response
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| is_compressible(v.as_bytes()))
    }
}

/// Whether the media type of this `Content-Type` value is on the default allow list.
pub(crate) fn is_compressible(content_type: &[u8]) -> bool {
    let essence = media_type(content_type);
    let Some(slash) = essence.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (top, sub) = (&essence[..slash], &essence[slash + 1..]);
    if sub.is_empty() {
        return false;
    }
    let eq = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    let ends = |a: &[u8], suffix: &str| {
        a.len() > suffix.len()
            && a[a.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    if eq(top, "text") {
        return true;
    }
    if eq(top, "image") {
        return eq(sub, "svg+xml")
            || eq(sub, "x-icon")
            || eq(sub, "vnd.microsoft.icon")
            || eq(sub, "bmp");
    }
    if eq(top, "font") {
        return eq(sub, "ttf") || eq(sub, "otf") || eq(sub, "sfnt") || eq(sub, "collection");
    }
    if !eq(top, "application") {
        return false;
    }
    if ends(sub, "+json") || ends(sub, "+xml") || ends(sub, "+yaml") {
        return true;
    }
    const APPLICATION: &[&str] = &[
        "json",
        "xml",
        "javascript",
        "ecmascript",
        "x-javascript",
        "wasm",
        "x-ndjson",
        "ndjson",
        "jsonl",
        "json-seq",
        "yaml",
        "x-yaml",
        "toml",
        "csv",
        "graphql",
        "x-www-form-urlencoded",
        "vnd.ms-fontobject",
        "x-font-ttf",
        "x-font-otf",
        "x-sh",
        "sql",
        "rtf",
        "xhtml+xml",
    ];
    APPLICATION.iter().any(|t| eq(sub, t))
}

/// The `type/subtype` of a `Content-Type` value, without parameters or whitespace.
pub(crate) fn media_type(content_type: &[u8]) -> &[u8] {
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    trim_ows(&content_type[..end])
}

/// Whether this `Content-Type` is server-sent events.
pub(crate) fn is_event_stream(content_type: &[u8]) -> bool {
    media_type(content_type).eq_ignore_ascii_case(b"text/event-stream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allow_list() {
        for yes in [
            "text/html; charset=utf-8",
            "TEXT/CSV",
            " text/plain ",
            "text/event-stream",
            "application/json",
            "application/problem+json",
            "application/ld+json;profile=x",
            "application/javascript",
            "application/xml",
            "application/rss+xml",
            "image/svg+xml",
            "application/wasm",
            "application/x-ndjson",
            "font/ttf",
            "application/vnd.api+json",
        ] {
            assert!(is_compressible(yes.as_bytes()), "{yes}");
        }
        for no in [
            "",
            "image/png",
            "image/jpeg",
            "image/webp",
            "video/mp4",
            "audio/ogg",
            "application/zip",
            "application/gzip",
            "application/pdf",
            "font/woff2",
            "font/woff",
            "application/octet-stream",
            "application/+json",
            "text",
            "text/",
            "json",
            ";text/html",
        ] {
            assert!(!is_compressible(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn event_stream() {
        assert!(is_event_stream(b"text/event-stream"));
        assert!(is_event_stream(b"Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream(b"text/event-streams"));
    }

    #[test]
    fn predicates_compose() {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts
            .headers
            .insert(CONTENT_TYPE, "text/html".parse().unwrap());
        let d = DefaultPredicate::new();
        assert!(d.should_compress(&parts));
        assert!(!d.not().should_compress(&parts));
        let tagged = |p: &Parts| p.headers.contains_key("x-tag");
        assert!(!d.and(tagged).should_compress(&parts));
        assert!(d.or(tagged).should_compress(&parts));
        parts
            .headers
            .insert(CONTENT_TYPE, "image/png".parse().unwrap());
        parts.headers.insert("x-tag", "1".parse().unwrap());
        assert!(d.or(tagged).should_compress(&parts));
        assert!(!d.and(tagged).should_compress(&parts));
    }

    proptest! {
        #[test]
        fn any_content_type_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = is_compressible(&bytes);
            let _ = is_event_stream(&bytes);
        }
    }
}
