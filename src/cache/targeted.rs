//! Targeted cache control (RFC 9213): `CDN-Cache-Control` and other fields that carry cache
//! directives for one class of caches, parsed as Structured Field dictionaries (RFC 8941).
//!
//! A targeted field that is present and valid replaces `Cache-Control` whole for this cache; a
//! field that is not a valid dictionary is ignored, as if absent. Inside a valid field, a
//! directive whose value has the wrong type (`max-age="60"`, `max-age=-1`, `max-age=1.5`) is
//! ignored, and `name=?0` turns a flag off. Like the `Cache-Control` parser, this one never
//! allocates.

use http::{HeaderMap, HeaderName};

use super::directives::{Arg, CacheControl, Directive};

/// The directives of the targeted field `name`, when it is present and every field line is a
/// valid dictionary.
pub(crate) fn parse(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut cc = CacheControl::default();
    for line in lines {
        let mut p = Parser {
            b: line.as_bytes(),
            pos: 0,
        };
        p.dictionary(&mut cc)?;
    }
    Some(cc)
}

/// A member's value, as far as cache directives care.
enum Value<'a> {
    /// A non-negative integer: its digits.
    Count(&'a [u8]),
    /// `?1`, or a bare key.
    True,
    /// `?0`.
    False,
    /// Any other valid item (a string, a token, a decimal, bytes, a negative integer).
    Other,
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip(&mut self, set: &[u8]) {
        while self.peek().is_some_and(|c| set.contains(&c)) {
            self.pos += 1;
        }
    }

    /// RFC 8941 4.2.2, applying each member to `cc`; `None` when the line is not a dictionary.
    fn dictionary(&mut self, cc: &mut CacheControl) -> Option<()> {
        self.skip(b" ");
        if self.peek().is_none() {
            return Some(());
        }
        loop {
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.item()?
            } else {
                self.parameters()?;
                Value::True
            };
            apply(cc, key, value);
            self.skip(b" \t");
            match self.peek() {
                None => return Some(()),
                Some(b',') => self.pos += 1,
                Some(_) => return None,
            }
            self.skip(b" \t");
            self.peek()?;
        }
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
    fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        if !self
            .peek()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'*')
        {
            return None;
        }
        self.pos += 1;
        while self.peek().is_some_and(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.' | b'*')
        }) {
            self.pos += 1;
        }
        Some(&self.b[start..self.pos])
    }

    /// A bare item and its parameters.
    fn item(&mut self) -> Option<Value<'a>> {
        let value = self.bare_item()?;
        self.parameters()?;
        Some(value)
    }

    fn parameters(&mut self) -> Option<()> {
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip(b" ");
            self.key()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b'?' => {
                let v = match self.b.get(self.pos + 1)? {
                    b'1' => Value::True,
                    b'0' => Value::False,
                    _ => return None,
                };
                self.pos += 2;
                Some(v)
            }
            b':' => {
                self.pos += 1;
                self.skip(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=");
                if self.peek() != Some(b':') {
                    return None;
                }
                self.pos += 1;
                Some(Value::Other)
            }
            c if c.is_ascii_alphabetic() || c == b'*' => {
                self.pos += 1;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c))
                {
                    self.pos += 1;
                }
                Some(Value::Other)
            }
            _ => None,
        }
    }

    /// An integer (at most 15 digits) or a decimal (at most 12 + 3 digits).
    fn number(&mut self) -> Option<Value<'a>> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        self.skip(b"0123456789");
        let digits = &self.b[start..self.pos];
        if digits.is_empty() {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let frac = self.pos;
            self.skip(b"0123456789");
            let frac_len = self.pos - frac;
            return (digits.len() <= 12 && (1..=3).contains(&frac_len)).then_some(Value::Other);
        }
        if digits.len() > 15 {
            return None;
        }
        Some(if negative {
            Value::Other
        } else {
            Value::Count(digits)
        })
    }

    fn string(&mut self) -> Option<Value<'a>> {
        self.pos += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(Value::Other);
                }
                b'\\' => {
                    let next = self.b.get(self.pos + 1)?;
                    if !matches!(next, b'"' | b'\\') {
                        return None;
                    }
                    self.pos += 2;
                }
                0x20..=0x7e => self.pos += 1,
                _ => return None,
            }
        }
    }
}

/// Applies one member, through the `Cache-Control` rules: a count is the directive's
/// delta-seconds; a flag is set by a bare key or `?1`; any other value leaves valued
/// directives unset (their argument is not a count) and sets flags.
fn apply(cc: &mut CacheControl, name: &[u8], value: Value<'_>) {
    let arg = match value {
        Value::False => return,
        Value::True => None,
        Value::Count(digits) => Some(Arg::Token(digits)),
        Value::Other => Some(Arg::Token(b"")),
    };
    cc.apply(Directive { name, arg });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn targeted(lines: &[&str]) -> Option<CacheControl> {
        let name = HeaderName::from_static("cdn-cache-control");
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(&name, HeaderValue::from_str(line).unwrap());
        }
        parse(&headers, &name)
    }

    #[test]
    fn valid_dictionaries() {
        let cc = targeted(&["max-age=60, no-store"]).unwrap();
        assert_eq!(cc.max_age, Some(60));
        assert!(cc.no_store);
        let cc = targeted(&["max-age=99999999999"]).unwrap();
        assert_eq!(cc.max_age, Some(1 << 31));
        let cc = targeted(&["foobar, max-age=3600;x=1, private=?0"]).unwrap();
        assert_eq!(cc.max_age, Some(3600));
        assert!(!cc.private);
        let cc = targeted(&["no-cache", "s-maxage=5"]).unwrap();
        assert!(cc.no_cache);
        assert_eq!(cc.s_maxage, Some(5));
        // Wrong types: the directive is ignored, the field stays valid.
        for wrong in ["max-age=\"60\"", "max-age=-1", "max-age=1.5", "max-age=abc"] {
            assert_eq!(targeted(&[wrong]).unwrap().max_age, None, "{wrong}");
        }
        assert_eq!(targeted(&[""]), Some(CacheControl::default()));
    }

    #[test]
    fn invalid_fields_are_ignored() {
        assert_eq!(targeted(&[]), None);
        for bad in [
            "max-age =100",
            "max-age= 100",
            "MaX-aGe=3600",
            "max-age=10000, &&&&&",
            "max-age=1,",
            "max-age=1234567890123456",
            "a=\"unterminated",
            "a=?2",
        ] {
            assert_eq!(targeted(&[bad]), None, "{bad}");
        }
        assert_eq!(targeted(&["max-age=5", "&"]), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(0x20u8..0x7f, 0..64)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let name = HeaderName::from_static("cdn-cache-control");
                let mut headers = HeaderMap::new();
                headers.insert(&name, value);
                let _ = parse(&headers, &name);
            }
        }
    }
}
