//! The Redis tier's binary format of an entry: compact, versioned, and decoded defensively (a
//! value that does not decode is a miss, never a panic).
//!
//! Layout, integers little-endian:
//!
//! ```text
//! u8   format version (1)
//! u16  status
//! u64  stored at, milliseconds since the Unix epoch (wall clock: instances share it)
//! u64  initial age, ms          u64  lifetime, ms
//! u64  stale-while-revalidate, ms   u64  stale-if-error, ms
//! u64  fleet purge generation when the origin request started
//! str  URI (path and query, or absolute)
//! u16  Vary names   then each: str
//! u16  Vary values  then each: u8 present (0/1), bytes if present
//! u16  tags         then each: str
//! u16  headers      then each: str name, bytes value
//! u32  body length, body
//! ```
//! `str` and `bytes` are a `u32` length and the bytes. The value must end exactly after the
//! body. `Cache-Control` is not stored: it is parsed again from the headers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Uri};

use super::directives::CacheControl;
use super::store::Entry;

/// The first byte of every value; a reader meeting another version treats the value as a miss.
pub(crate) const VERSION: u8 = 1;

/// What an entry looks like in Redis, with its wall-clock store time.
pub(crate) struct Decoded {
    pub(crate) entry: Entry,
    /// When the entry was stored, on the wall clock.
    pub(crate) stored_at: SystemTime,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32_le(u32::try_from(b.len()).unwrap_or(u32::MAX));
    buf.put_slice(b);
}

/// Encodes `entry`, stored at `stored_at` on the wall clock.
pub(crate) fn encode(entry: &Entry, stored_at: SystemTime) -> Bytes {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 8)
        .sum();
    let mut buf = BytesMut::with_capacity(128 + headers + entry.body.len());
    buf.put_u8(VERSION);
    buf.put_u16_le(entry.status.as_u16());
    buf.put_u64_le(ms(stored_at.duration_since(UNIX_EPOCH).unwrap_or_default()));
    buf.put_u64_le(ms(entry.initial_age));
    buf.put_u64_le(ms(entry.lifetime));
    buf.put_u64_le(ms(entry.stale_while_revalidate));
    buf.put_u64_le(ms(entry.stale_if_error));
    buf.put_u64_le(entry.fleet_generation);
    put_bytes(&mut buf, entry.uri.to_string().as_bytes());
    buf.put_u16_le(entry.vary.len() as u16);
    for name in entry.vary.iter() {
        put_bytes(&mut buf, name.as_str().as_bytes());
    }
    buf.put_u16_le(entry.vary_values.len() as u16);
    for value in entry.vary_values.iter() {
        match value {
            Some(v) => {
                buf.put_u8(1);
                put_bytes(&mut buf, v);
            }
            None => buf.put_u8(0),
        }
    }
    buf.put_u16_le(entry.tags.len() as u16);
    for tag in entry.tags.iter() {
        put_bytes(&mut buf, tag.as_bytes());
    }
    buf.put_u16_le(u16::try_from(entry.headers.len()).unwrap_or(u16::MAX));
    for (name, value) in entry.headers.iter().take(usize::from(u16::MAX)) {
        put_bytes(&mut buf, name.as_str().as_bytes());
        put_bytes(&mut buf, value.as_bytes());
    }
    put_bytes(&mut buf, &entry.body);
    buf.freeze()
}

/// A bounds-checked reader: every read is `None` past the end.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Like [`bytes`](Self::bytes), sharing the buffer instead of copying (the body).
    fn shared_bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        let start = self.pos;
        self.take(n)?;
        Some(self.buf.slice(start..start + n))
    }

    fn str(&mut self) -> Option<&str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

/// Decodes a value; `None` when it is not a well-formed value of this format version.
/// `generation` is the local purge generation to stamp on the entry.
pub(crate) fn decode(value: Bytes, generation: u64, targeted: &[HeaderName]) -> Option<Decoded> {
    let mut r = Reader { buf: value, pos: 0 };
    if r.u8()? != VERSION {
        return None;
    }
    let status = StatusCode::from_u16(r.u16()?).ok()?;
    let stored_at = UNIX_EPOCH.checked_add(Duration::from_millis(r.u64()?))?;
    let initial_age = Duration::from_millis(r.u64()?);
    let lifetime = Duration::from_millis(r.u64()?);
    let stale_while_revalidate = Duration::from_millis(r.u64()?);
    let stale_if_error = Duration::from_millis(r.u64()?);
    let fleet_generation = r.u64()?;
    let uri: Uri = r.str()?.parse().ok()?;
    let n = r.u16()?;
    let mut vary = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        vary.push(HeaderName::from_bytes(r.bytes()?).ok()?);
    }
    let n = r.u16()?;
    let mut vary_values = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        vary_values.push(match r.u8()? {
            0 => None,
            1 => Some(Box::<[u8]>::from(r.bytes()?)),
            _ => return None,
        });
    }
    if vary_values.len() != vary.len() {
        return None;
    }
    let n = r.u16()?;
    let mut tags: Vec<Arc<str>> = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        tags.push(r.str()?.into());
    }
    let n = r.u16()?;
    let mut headers = HeaderMap::with_capacity(usize::from(n).min(128));
    for _ in 0..n {
        let name = HeaderName::from_bytes(r.bytes()?).ok()?;
        let value = HeaderValue::from_bytes(r.bytes()?).ok()?;
        headers.append(name, value);
    }
    let body = r.shared_bytes()?;
    if r.pos != r.buf.len() {
        return None;
    }
    let cc = CacheControl::parse_response(&headers, targeted);
    Some(Decoded {
        entry: Entry {
            uri,
            status,
            headers: super::store::stored_headers(&headers),
            body,
            vary: vary.into(),
            vary_values: vary_values.into_boxed_slice(),
            cc,
            initial_age,
            stored_at: tokio::time::Instant::now(),
            lifetime,
            stale_while_revalidate,
            stale_if_error,
            tags: tags.into_boxed_slice(),
            generation,
            fleet_generation,
            hits: Default::default(),
        },
        stored_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-many", HeaderValue::from_static("a"));
        headers.append("x-many", HeaderValue::from_static("b"));
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        Entry {
            uri: "/items?page=2".parse().unwrap(),
            status: StatusCode::OK,
            cc: CacheControl::parse(&headers),
            headers,
            body: Bytes::from_static(b"{\"items\":[]}"),
            vary: vec![HeaderName::from_static("accept-encoding")].into(),
            vary_values: vec![Some(Box::<[u8]>::from(&b"br"[..]))].into_boxed_slice(),
            initial_age: Duration::from_secs(3),
            stored_at: tokio::time::Instant::now(),
            lifetime: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
            tags: vec![Arc::from("items"), Arc::from("page-2")].into_boxed_slice(),
            generation: 0,
            fleet_generation: 42,
            hits: Default::default(),
        }
    }

    #[test]
    fn round_trip() {
        let e = entry();
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let d = decode(encode(&e, at), 7, &[]).expect("decodes");
        assert_eq!(d.stored_at, at);
        let g = d.entry;
        assert_eq!(g.uri, e.uri);
        assert_eq!(g.status, e.status);
        assert_eq!(g.headers, e.headers);
        assert_eq!(g.body, e.body);
        assert_eq!(g.vary, e.vary);
        assert_eq!(g.vary_values, e.vary_values);
        assert_eq!(g.tags, e.tags);
        assert_eq!(g.initial_age, e.initial_age);
        assert_eq!(g.lifetime, e.lifetime);
        assert_eq!(g.stale_while_revalidate, e.stale_while_revalidate);
        assert_eq!(g.stale_if_error, e.stale_if_error);
        assert_eq!(g.fleet_generation, 42);
        assert_eq!(g.generation, 7);
        assert_eq!(g.cc.max_age, Some(60));
    }

    #[test]
    fn other_versions_truncations_and_trailing_bytes_are_refused() {
        let good = encode(&entry(), SystemTime::now());
        let mut other = good.to_vec();
        other[0] = 2;
        assert!(decode(Bytes::from(other), 0, &[]).is_none());
        for cut in 0..good.len() {
            assert!(decode(good.slice(..cut), 0, &[]).is_none(), "cut at {cut}");
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(decode(Bytes::from(longer), 0, &[]).is_none());
        assert!(decode(Bytes::from_static(b"not an entry"), 0, &[]).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(Bytes::from(bytes), 0, &[]);
        }

        #[test]
        fn corrupted_values_never_panic(at in 0usize..200, byte in any::<u8>()) {
            let mut v = encode(&entry(), SystemTime::now()).to_vec();
            let i = at % v.len();
            v[i] = byte;
            let _ = decode(Bytes::from(v), 0, &[]);
        }
    }
}
