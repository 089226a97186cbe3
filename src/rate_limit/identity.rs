//! Who is the client: the peer address, the forwarding headers of trusted proxies, a header, or
//! a function; and the hashed key that names the client's bucket.
//!
//! Nothing here allocates on the way of a request: addresses are parsed from the header bytes
//! in place, and keys are 64-bit hashes with a per-layer random seed.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use foldhash::fast::RandomState;
use http::header::{HeaderName, FORWARDED};
use http::request::Parts;
use http::{Extensions, HeaderMap};

use crate::util::header::{trim_ows, Cursor};
use crate::util::request::peer_addr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Identifies the client of a request, from a function given to
/// [`RateLimitBuilder::identify_with`](super::RateLimitBuilder::identify_with) (or to
/// [`RateLimitHandle::reset`](super::RateLimitHandle::reset)).
///
/// Borrowing from the request is free; an owned value (for example a user id decoded from a
/// token) is hashed just the same. Two keys made the same way from equal values name the same
/// client; an IP address and bytes never do.
///
/// ```
/// use tower_perf::rate_limit::ClientKey;
///
/// let by_ip = ClientKey::ip("192.0.2.7".parse().unwrap());
/// let by_header = ClientKey::bytes(&b"api-key-123"[..]);
/// let by_user = ClientKey::id(42);
/// # let _ = (by_ip, by_header, by_user);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey<'a>(Client<'a>);

impl<'a> ClientKey<'a> {
    /// A client known by its IP address. IPv4-mapped IPv6 addresses count as IPv4, and IPv6
    /// addresses are reduced to the configured prefix
    /// ([`ipv6_prefix`](super::RateLimitBuilder::ipv6_prefix)).
    pub fn ip(ip: IpAddr) -> Self {
        Self(Client::Ip(ip))
    }

    /// A client known by bytes: an API key, a user name, a tenant. Only a hash is kept.
    pub fn bytes(bytes: impl Into<Cow<'a, [u8]>>) -> Self {
        Self(Client::Bytes(bytes.into()))
    }

    /// A client known by a number, such as a user id.
    pub fn id(id: u64) -> Self {
        Self(Client::Id(id))
    }
}

impl fmt::Debug for ClientKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bytes may be a secret (an API key): never printed.
        match &self.0 {
            Client::Ip(ip) => f.debug_tuple("ClientKey::ip").field(ip).finish(),
            Client::Bytes(b) => write!(f, "ClientKey::bytes(<{} bytes>)", b.len()),
            Client::Id(id) => f.debug_tuple("ClientKey::id").field(id).finish(),
            Client::Unknown => f.write_str("ClientKey::unknown"),
        }
    }
}

/// The identity of a request's client, before hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Client<'a> {
    Ip(IpAddr),
    Bytes(Cow<'a, [u8]>),
    Id(u64),
    /// No peer address and nothing else: all such requests share one bucket.
    Unknown,
}

/// A function that identifies the client of a request; `None` falls back to the peer address.
pub(crate) type IdentifyFn = dyn for<'a> Fn(&'a Parts) -> Option<ClientKey<'a>> + Send + Sync;

/// Which header the trusted proxies write the client address into.
///
/// Set it to the one your proxy maintains: a proxy that appends to `X-Forwarded-For` usually
/// passes a `Forwarded` header from the client through untouched, and reading that one would
/// let any client choose its own address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, Envoy, AWS ALB, most CDNs).
    /// The default.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239), including quoted IPv6 with a port
    /// (`for="[2001:db8::1]:4711"`).
    Forwarded,
}

/// Where the client identity comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// The peer address (or, behind trusted proxies, the forwarded client address).
    Peer,
    /// A request header; missing or empty falls back to the peer address.
    Header(HeaderName),
    /// A function; `None` falls back to the peer address.
    Fn(Arc<IdentifyFn>),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Peer => f.write_str("Peer"),
            Source::Header(h) => f.debug_tuple("Header").field(h).finish(),
            Source::Fn(_) => f.write_str("Fn"),
        }
    }
}

/// How to find and hash the client of a request.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) source: Source,
    trusted: Vec<Cidr>,
    forwarded: ForwardedHeader,
    // IPv6 addresses are keyed by this many leading bits (a host usually holds a whole /64).
    ipv6_mask: u128,
    // Random per layer, so a client cannot aim collisions at another client's key.
    hasher: RandomState,
}

impl Identity {
    pub(crate) fn new(
        source: Source,
        trusted: Vec<Cidr>,
        forwarded: ForwardedHeader,
        ipv6_prefix: u8,
    ) -> Self {
        Self {
            source,
            trusted,
            forwarded,
            ipv6_mask: prefix_mask_v6(ipv6_prefix),
            hasher: RandomState::default(),
        }
    }

    /// The client of a request, from its headers and extensions (the `Fn` source is handled by
    /// the caller, which has the `Parts`).
    pub(crate) fn client<'a>(&self, headers: &'a HeaderMap, ext: &Extensions) -> Client<'a> {
        if let Source::Header(name) = &self.source {
            if let Some(value) = headers.get(name) {
                let bytes = trim_ows(value.as_bytes());
                if !bytes.is_empty() {
                    return Client::Bytes(Cow::Borrowed(bytes));
                }
            }
        }
        self.client_ip(headers, ext)
            .map_or(Client::Unknown, Client::Ip)
    }

    /// The client's IP address: the peer, or behind a trusted proxy the right-most forwarded
    /// address that is not a trusted proxy. `None` without a peer address.
    pub(crate) fn client_ip(&self, headers: &HeaderMap, ext: &Extensions) -> Option<IpAddr> {
        let peer = canonical(peer_addr(ext)?);
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        let forwarded = match self.forwarded {
            ForwardedHeader::XForwardedFor => {
                let hops = headers
                    .get_all(&X_FORWARDED_FOR)
                    .iter()
                    .flat_map(|line| line.as_bytes().split(|&b| b == b','))
                    .map(trim_ows)
                    .filter(|hop| !hop.is_empty())
                    .map(parse_node);
                self.rightmost_untrusted(hops)
            }
            ForwardedHeader::Forwarded => {
                let hops = headers
                    .get_all(FORWARDED)
                    .iter()
                    .flat_map(|line| ForwardedFor::new(line.as_bytes()));
                self.rightmost_untrusted(hops)
            }
        };
        Some(forwarded.unwrap_or(peer))
    }

    /// From the hops in order (client first), the right-most one that is not a trusted proxy;
    /// the left-most when all are trusted. `None` (use the peer) when there is no hop, or when
    /// the hop that would be chosen is malformed, `unknown` or obfuscated.
    ///
    /// One forward pass, no buffer: the last hop that is not a trusted address is the answer.
    fn rightmost_untrusted(&self, hops: impl Iterator<Item = Option<IpAddr>>) -> Option<IpAddr> {
        let mut first = None;
        let mut candidate: Option<Option<IpAddr>> = None;
        for hop in hops {
            let hop = hop.map(canonical);
            if first.is_none() {
                first = Some(hop);
            }
            match hop {
                Some(ip) if self.is_trusted(ip) => {}
                other => candidate = Some(other),
            }
        }
        match candidate {
            Some(hop) => hop,
            None => first.flatten(),
        }
    }

    /// The mask applied to IPv6 client addresses.
    #[cfg(feature = "redis")]
    pub(crate) fn ipv6_mask(&self) -> u128 {
        self.ipv6_mask
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The bucket key of `client` under the policy numbered `policy`.
    pub(crate) fn key(&self, policy: u16, client: &Client<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u16(policy);
        match client {
            Client::Ip(ip) => match canonical(*ip) {
                IpAddr::V4(v4) => {
                    h.write_u8(1);
                    h.write_u32(v4.to_bits());
                }
                IpAddr::V6(v6) => {
                    h.write_u8(2);
                    h.write_u128(v6.to_bits() & self.ipv6_mask);
                }
            },
            Client::Bytes(b) => {
                h.write_u8(3);
                h.write_usize(b.len());
                h.write(b);
            }
            Client::Id(id) => {
                h.write_u8(4);
                h.write_u64(*id);
            }
            Client::Unknown => h.write_u8(0),
        }
        h.finish()
    }
}

/// The bucket key of `client` under the policy `policy_id` ([`Policy::shared_id`](
/// super::quota::Policy)) in the shared (Redis) mode: xxh3 with a seed from the configuration,
/// so every instance computes the same key for the same client, unlike [`Identity::key`]
/// whose seed is random per layer. No allocation: the fixed-size parts go through a stack
/// buffer, and bytes of any length are hashed first.
#[cfg(feature = "redis")]
pub(crate) fn shared_key(seed: u64, ipv6_mask: u128, policy_id: u64, client: &Client<'_>) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    let mut buf = [0u8; 25];
    buf[..8].copy_from_slice(&policy_id.to_le_bytes());
    let len = match client {
        Client::Ip(ip) => match canonical(*ip) {
            IpAddr::V4(v4) => {
                buf[8] = 1;
                buf[9..13].copy_from_slice(&v4.octets());
                13
            }
            IpAddr::V6(v6) => {
                buf[8] = 2;
                buf[9..25].copy_from_slice(&(v6.to_bits() & ipv6_mask).to_le_bytes());
                25
            }
        },
        Client::Bytes(b) => {
            buf[8] = 3;
            buf[9..17].copy_from_slice(&xxh3_64_with_seed(b, seed).to_le_bytes());
            17
        }
        Client::Id(id) => {
            buf[8] = 4;
            buf[9..17].copy_from_slice(&id.to_le_bytes());
            17
        }
        Client::Unknown => 9,
    };
    xxh3_64_with_seed(&buf[..len], seed)
}

impl<'a> From<ClientKey<'a>> for Client<'a> {
    fn from(key: ClientKey<'a>) -> Self {
        key.0
    }
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports for IPv4 peers) as
/// IPv4, so one client has one key and one trust decision.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn prefix_mask_v6(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

fn prefix_mask_v4(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// A network: an address and a prefix length. Host bits are cleared when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    /// Parses `192.0.2.0/24`, `2001:db8::/32`, or a single address (`10.0.0.1`, `::1`). An
    /// IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes its IPv4 network.
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("{s:?}: the prefix length must be a number"));
                }
                let p: u8 = p
                    .parse()
                    .map_err(|_| format!("{s:?}: the prefix length must be a number"))?;
                if p > max {
                    return Err(format!("{s:?}: the prefix length must be at most {max}"));
                }
                p
            }
        };
        Ok(match ip {
            IpAddr::V4(v4) => Cidr::v4(v4, prefix),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Cidr::v4(v4, prefix - 96),
                _ => {
                    let mask = prefix_mask_v6(prefix);
                    Cidr::V6 {
                        net: v6.to_bits() & mask,
                        mask,
                    }
                }
            },
        })
    }

    fn v4(ip: Ipv4Addr, prefix: u8) -> Cidr {
        let mask = prefix_mask_v4(prefix);
        Cidr::V4 {
            net: ip.to_bits() & mask,
            mask,
        }
    }

    /// Whether `ip` (in canonical form) is inside the network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Cidr::V4 { net, mask }, IpAddr::V4(ip)) => ip.to_bits() & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(ip)) => ip.to_bits() & mask == *net,
            _ => false,
        }
    }
}

/// Parses one hop: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, with an RFC 7239 obfuscated port (`:_a1`) accepted. `None` for anything
/// else (`unknown`, obfuscated identifiers, garbage).
pub(crate) fn parse_node(node: &[u8]) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix(b"[") {
        let end = rest.iter().position(|&b| b == b']')?;
        let ip: Ipv6Addr = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        return match &rest[end + 1..] {
            [] => Some(IpAddr::V6(ip)),
            [b':', port @ ..] if is_port(port) => Some(IpAddr::V6(ip)),
            _ => None,
        };
    }
    let text = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    // IPv4 with a port: exactly one colon.
    let (addr, port) = text.split_once(':')?;
    if !is_port(port.as_bytes()) {
        return None;
    }
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port: 1 to 5 digits, or an RFC 7239 obfuscated port (`_` then letters, digits, `.`, `_`,
/// `-`).
fn is_port(port: &[u8]) -> bool {
    match port {
        [b'_', rest @ ..] => {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        digits => (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit),
    }
}

/// Iterates over the elements of one `Forwarded` field line (RFC 7239 section 4), yielding each
/// element's `for` node: `Some(ip)`, or `None` when the element is malformed or its node is not
/// an address.
struct ForwardedFor<'a> {
    c: Cursor<'a>,
}

impl<'a> ForwardedFor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            c: Cursor::new(bytes),
        }
    }

    /// A quoted string's content, without the quotes; `None` when it is not closed. Escapes are
    /// kept as they are (an address never needs one, so an escaped node fails to parse).
    fn quoted(&mut self) -> Option<&'a [u8]> {
        self.c.pos += 1;
        let start = self.c.pos;
        loop {
            match self.c.peek()? {
                b'"' => break,
                b'\\' => self.c.pos += 2,
                _ => self.c.pos += 1,
            }
        }
        let end = self.c.pos.min(self.c.bytes.len());
        self.c.pos += 1;
        Some(&self.c.bytes[start..end])
    }

    /// Skips to the end of the element (the next comma outside a quoted string).
    fn skip_element(&mut self) {
        let mut quoted = false;
        while let Some(b) = self.c.peek() {
            match b {
                b',' if !quoted => return,
                b'"' => quoted = !quoted,
                b'\\' if quoted => self.c.pos += 1,
                _ => {}
            }
            self.c.pos += 1;
        }
    }

    /// Parses one element's pairs; the `for` node's address, `None` if malformed or absent.
    fn element(&mut self) -> Option<IpAddr> {
        let mut node = None;
        loop {
            self.c.skip_ows();
            let name = self.c.token();
            if name.is_empty() || self.c.peek() != Some(b'=') {
                return None;
            }
            self.c.pos += 1;
            let value = if self.c.peek() == Some(b'"') {
                self.quoted()?
            } else {
                self.c.token()
            };
            if name.eq_ignore_ascii_case(b"for") {
                if node.is_some() {
                    // Two `for` in one element: ambiguous.
                    return None;
                }
                node = Some(parse_node(value));
            }
            self.c.skip_ows();
            match self.c.peek() {
                None | Some(b',') => return node.flatten(),
                Some(b';') => self.c.pos += 1,
                Some(_) => return None,
            }
        }
    }
}

impl Iterator for ForwardedFor<'_> {
    type Item = Option<IpAddr>;

    fn next(&mut self) -> Option<Self::Item> {
        while matches!(self.c.peek(), Some(b' ' | b'\t' | b',')) {
            self.c.pos += 1;
        }
        self.c.peek()?;
        let start = self.c.pos;
        let hop = self.element();
        if hop.is_none() {
            // Malformed: skip to the next element. The byte at `start` is not a comma, so this
            // always moves on.
            self.c.pos = start;
            self.skip_element();
        }
        Some(hop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Shared keys must be the same on every instance and every version that may run side by
    /// side (a rolling deployment): they are pinned here.
    #[cfg(feature = "redis")]
    #[test]
    fn shared_keys_are_stable_and_distinct() {
        let mask = prefix_mask_v6(64);
        let key = |client: &Client<'_>| shared_key(7, mask, 42, client);
        let v4 = key(&Client::Ip(ip("192.0.2.7")));
        assert_eq!(v4, PINNED_V4_KEY);
        // IPv4-mapped IPv6 is the IPv4 client; one /64 is one client.
        assert_eq!(key(&Client::Ip(ip("::ffff:192.0.2.7"))), v4);
        assert_eq!(
            key(&Client::Ip(ip("2001:db8::1"))),
            key(&Client::Ip(ip("2001:db8::ffff:1")))
        );
        let all = [
            v4,
            key(&Client::Ip(ip("192.0.2.8"))),
            key(&Client::Ip(ip("2001:db8::1"))),
            key(&Client::Ip(ip("2001:db8:0:1::1"))),
            key(&Client::Bytes(Cow::Borrowed(b"api-key"))),
            key(&Client::Bytes(Cow::Borrowed(b"api-kez"))),
            key(&Client::Id(7)),
            key(&Client::Unknown),
            shared_key(8, mask, 42, &Client::Ip(ip("192.0.2.7"))),
            shared_key(7, mask, 43, &Client::Ip(ip("192.0.2.7"))),
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "{i} and {j}");
            }
        }
    }

    #[cfg(feature = "redis")]
    const PINNED_V4_KEY: u64 = 4_489_243_268_355_170_118;

    fn identity(trusted: &[&str], forwarded: ForwardedHeader) -> Identity {
        Identity::new(
            Source::Peer,
            trusted.iter().map(|s| Cidr::parse(s).unwrap()).collect(),
            forwarded,
            64,
        )
    }

    fn request(peer: &str, name: &str, lines: &[&str]) -> (HeaderMap, Extensions) {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(line).unwrap(),
            );
        }
        let mut ext = Extensions::new();
        ext.insert(SocketAddr::new(ip(peer), 40000));
        (headers, ext)
    }

    fn xff(id: &Identity, peer: &str, lines: &[&str]) -> IpAddr {
        let (h, e) = request(peer, "x-forwarded-for", lines);
        id.client_ip(&h, &e).unwrap()
    }

    fn fwd(id: &Identity, peer: &str, lines: &[&str]) -> IpAddr {
        let (h, e) = request(peer, "forwarded", lines);
        id.client_ip(&h, &e).unwrap()
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            Cidr::parse("10.1.2.3/8").unwrap(),
            Cidr::V4 {
                net: 0x0a00_0000,
                mask: 0xff00_0000
            }
        );
        assert!(Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains(ip("10.255.0.1")));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse(" 127.0.0.1 ")
            .unwrap()
            .contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::5")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("fe80::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert_eq!(
            Cidr::parse("::ffff:10.0.0.0/104").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap()
        );
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/8/8",
            "/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "localhost",
            "fe80::1%eth0",
            "10.0.0.0 /8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nodes() {
        assert_eq!(parse_node(b"192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node(b"192.0.2.1:8080"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node(b"192.0.2.1:_abc"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node(b"[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node(b"[::1]:4711"), Some(ip("::1")));
        for bad in [
            &b"unknown"[..],
            b"_hidden",
            b"",
            b"[::1",
            b"[::1]x",
            b"[::1]:",
            b"[::1]:123456",
            b"[1.2.3.4]",
            b"1.2.3.4:",
            b"1.2.3.4:80:80",
            b"1.2.3.4:_",
            b"1.2.3",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_node(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_headers() {
        let id = identity(&[], ForwardedHeader::XForwardedFor);
        assert_eq!(xff(&id, "203.0.113.9", &["1.1.1.1"]), ip("203.0.113.9"));
        let id = identity(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        assert_eq!(xff(&id, "203.0.113.9", &["1.1.1.1"]), ip("203.0.113.9"));
    }

    #[test]
    fn x_forwarded_for_rightmost_untrusted() {
        let id = identity(&["10.0.0.0/8", "127.0.0.1"], ForwardedHeader::XForwardedFor);
        // The client's own claims (left) are ignored: the right-most untrusted hop wins.
        assert_eq!(
            xff(&id, "127.0.0.1", &["6.6.6.6, 198.51.100.7, 10.0.0.2"]),
            ip("198.51.100.7")
        );
        // Several lines form one list, in order.
        assert_eq!(
            xff(&id, "127.0.0.1", &["6.6.6.6", "198.51.100.7", "10.1.1.1"]),
            ip("198.51.100.7")
        );
        // Ports, brackets, spaces, empty members.
        assert_eq!(
            xff(&id, "127.0.0.1", &[" , 198.51.100.7:5555 ,,"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            xff(&id, "127.0.0.1", &["[2001:db8::9]:443"]),
            ip("2001:db8::9")
        );
        // All trusted: the left-most.
        assert_eq!(
            xff(&id, "127.0.0.1", &["10.0.0.5, 10.0.0.6"]),
            ip("10.0.0.5")
        );
        // Missing, empty or malformed at the chosen hop: the peer.
        assert_eq!(xff(&id, "127.0.0.1", &[]), ip("127.0.0.1"));
        assert_eq!(xff(&id, "127.0.0.1", &[""]), ip("127.0.0.1"));
        assert_eq!(xff(&id, "127.0.0.1", &["not-an-ip"]), ip("127.0.0.1"));
        assert_eq!(
            xff(&id, "127.0.0.1", &["198.51.100.7, garbage, 10.0.0.1"]),
            ip("127.0.0.1")
        );
        // Malformed left of the chosen hop does not matter.
        assert_eq!(
            xff(&id, "127.0.0.1", &["garbage, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // IPv4-mapped peers and hops count as IPv4.
        assert_eq!(
            xff(&id, "::ffff:127.0.0.1", &["::ffff:198.51.100.7"]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_rightmost_untrusted() {
        let id = identity(&["127.0.0.1", "10.0.0.0/8"], ForwardedHeader::Forwarded);
        assert_eq!(
            fwd(
                &id,
                "127.0.0.1",
                &["for=192.0.2.60;proto=http;by=203.0.113.43"]
            ),
            ip("192.0.2.60")
        );
        assert_eq!(fwd(&id, "127.0.0.1", &["for=\"[::1]:4711\""]), ip("::1"));
        assert_eq!(
            fwd(
                &id,
                "127.0.0.1",
                &["For=\"[2001:db8:cafe::17]:4711\", for=10.0.0.3;proto=https"]
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            fwd(
                &id,
                "127.0.0.1",
                &["for=6.6.6.6", "for=\"192.0.2.43:47011\""]
            ),
            ip("192.0.2.43")
        );
        // The X-Forwarded-For header is not read in this mode.
        let (h, e) = request("127.0.0.1", "x-forwarded-for", &["192.0.2.1"]);
        assert_eq!(id.client_ip(&h, &e), Some(ip("127.0.0.1")));
        // unknown, obfuscated, missing `for`, broken syntax: the peer.
        for bad in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"[::1]:4711",
            "for==1.2.3.4",
            "for=1.2.3.4 x",
            "for=1.2.3.4;for=5.6.7.8",
            "for=\"1.2.3.4\\\"\"",
            ";;;",
        ] {
            assert_eq!(fwd(&id, "127.0.0.1", &[bad]), ip("127.0.0.1"), "{bad}");
        }
        // A quoted comma does not split elements.
        assert_eq!(
            fwd(&id, "127.0.0.1", &["for=192.0.2.9;ext=\"a,b\""]),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn keys() {
        let id = identity(&[], ForwardedHeader::XForwardedFor);
        let k = |c: Client<'_>| id.key(0, &c);
        // IPv6 by /64, IPv4-mapped as IPv4.
        assert_eq!(
            k(Client::Ip(ip("2001:db8::1"))),
            k(Client::Ip(ip("2001:db8::ffff")))
        );
        assert_ne!(
            k(Client::Ip(ip("2001:db8::1"))),
            k(Client::Ip(ip("2001:db8:0:1::1")))
        );
        assert_eq!(
            k(Client::Ip(ip("::ffff:1.2.3.4"))),
            k(Client::Ip(ip("1.2.3.4")))
        );
        assert_ne!(k(Client::Ip(ip("1.2.3.4"))), k(Client::Ip(ip("1.2.3.5"))));
        // Kinds and policies never mix.
        assert_ne!(k(Client::Id(1)), k(Client::Bytes(Cow::Borrowed(&[1]))));
        assert_ne!(id.key(0, &Client::Id(1)), id.key(1, &Client::Id(1)));
        assert_eq!(
            k(Client::Bytes(Cow::Owned(b"abc".to_vec()))),
            k(Client::Bytes(Cow::Borrowed(b"abc")))
        );
    }

    #[test]
    fn header_source_falls_back_to_peer() {
        let id = Identity::new(
            Source::Header(HeaderName::from_static("x-api-key")),
            vec![],
            ForwardedHeader::XForwardedFor,
            64,
        );
        let (h, e) = request("192.0.2.1", "x-api-key", &[" key-1 "]);
        assert_eq!(id.client(&h, &e), Client::Bytes(Cow::Borrowed(b"key-1")));
        let (h, e) = request("192.0.2.1", "x-api-key", &[" "]);
        assert_eq!(id.client(&h, &e), Client::Ip(ip("192.0.2.1")));
        let (h, _) = request("192.0.2.1", "x-other", &["v"]);
        assert_eq!(id.client(&h, &Extensions::new()), Client::Unknown);
    }

    proptest! {
        #[test]
        fn cidr_parsing_never_panics(s in "\\PC{0,40}") {
            let _ = Cidr::parse(&s);
        }

        #[test]
        fn cidr_structured_never_panics_and_contains_itself(
            a in any::<[u8; 4]>(),
            b in any::<u128>(),
            p in 0u16..200,
        ) {
            let v4 = Ipv4Addr::from(a);
            match Cidr::parse(&format!("{v4}/{p}")) {
                Ok(c) => prop_assert!(p <= 32 && c.contains(IpAddr::V4(v4))),
                Err(_) => prop_assert!(p > 32),
            }
            let v6 = Ipv6Addr::from(b);
            match Cidr::parse(&format!("{v6}/{p}")) {
                Ok(c) => prop_assert!(
                    p <= 128
                        && (c.contains(IpAddr::V6(v6)) || c.contains(canonical(IpAddr::V6(v6))))
                ),
                Err(_) => prop_assert!(p > 128),
            }
        }

        #[test]
        fn forwarding_headers_never_panic(
            lines in prop::collection::vec("[ -~]{0,60}", 0..3),
            bytes in prop::collection::vec(any::<u8>(), 0..60),
        ) {
            let trusted = ["127.0.0.1"];
            for mode in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
                let id = identity(&trusted, mode);
                for name in ["x-forwarded-for", "forwarded"] {
                    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
                    let (mut h, e) = request("127.0.0.1", name, &refs);
                    if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                        h.append(HeaderName::from_static("forwarded"), v.clone());
                        h.append(HeaderName::from_static("x-forwarded-for"), v);
                    }
                    prop_assert!(id.client_ip(&h, &e).is_some());
                }
            }
            let _ = parse_node(&bytes);
        }

        #[test]
        fn forwarded_structured_never_panics(
            s in "((for|by|proto|For)=(\"?\\[?[0-9a-f:.]{0,12}\\]?(:[0-9_a]{0,6})?\"?|unknown|_x)[ ;,]{0,3}){0,5}",
        ) {
            let id = identity(&["127.0.0.1"], ForwardedHeader::Forwarded);
            let (h, e) = request("127.0.0.1", "forwarded", &[&s]);
            prop_assert!(id.client_ip(&h, &e).is_some());
        }
    }
}
