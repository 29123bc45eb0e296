//! The SOCKS5 address encoding shared by requests, replies and UDP headers:
//! `ATYP | ADDR | PORT(2)`, with ATYP 1 (IPv4, 4 bytes), 3 (length byte then a domain
//! name) or 4 (IPv6, 16 bytes).

use super::printable::Printable;
use super::{Error, Result};
use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const ATYP_IPV4: u8 = 1;
pub const ATYP_DOMAIN: u8 = 3;
pub const ATYP_IPV6: u8 = 4;

/// The longest encoding: ATYP, length byte, 255-byte name, port.
pub const MAX_LEN: usize = 1 + 1 + 255 + 2;

/// An address as parsed from the wire, borrowing a domain name from the input buffer so
/// parsing never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr<'a> {
    Ip(SocketAddr),
    Domain(&'a str, u16),
}

/// An owned address: a socket address, or a domain name that the proxy resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl Addr<'_> {
    pub fn to_owned(&self) -> TargetAddr {
        match *self {
            Addr::Ip(sa) => TargetAddr::Ip(sa),
            Addr::Domain(name, port) => TargetAddr::Domain(name.to_owned(), port),
        }
    }

    pub fn port(&self) -> u16 {
        match *self {
            Addr::Ip(sa) => sa.port(),
            Addr::Domain(_, port) => port,
        }
    }

    /// Bytes that `emit` writes for this address.
    pub fn encoded_len(&self) -> usize {
        match self {
            Addr::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            Addr::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            Addr::Domain(name, _) => 1 + 1 + name.len() + 2,
        }
    }

    /// Writes the address at the start of `buf` and returns its length.
    ///
    /// Panics if `buf` is shorter than [`Addr::encoded_len`] or a domain name is longer
    /// than 255 bytes: both are the caller's bug, never the peer's.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.encoded_len();
        let buf = &mut buf[..len];
        match self {
            Addr::Ip(SocketAddr::V4(sa)) => {
                buf[0] = ATYP_IPV4;
                buf[1..5].copy_from_slice(&sa.ip().octets());
            }
            Addr::Ip(SocketAddr::V6(sa)) => {
                buf[0] = ATYP_IPV6;
                buf[1..17].copy_from_slice(&sa.ip().octets());
            }
            Addr::Domain(name, _) => {
                buf[0] = ATYP_DOMAIN;
                buf[1] = u8::try_from(name.len()).expect("domain name longer than 255 bytes");
                buf[2..2 + name.len()].copy_from_slice(name.as_bytes());
            }
        }
        buf[len - 2..].copy_from_slice(&self.port().to_be_bytes());
        len
    }
}

impl TargetAddr {
    pub fn as_addr(&self) -> Addr<'_> {
        match self {
            TargetAddr::Ip(sa) => Addr::Ip(*sa),
            TargetAddr::Domain(name, port) => Addr::Domain(name, *port),
        }
    }

    pub fn port(&self) -> u16 {
        self.as_addr().port()
    }
}

impl From<SocketAddr> for TargetAddr {
    fn from(sa: SocketAddr) -> Self {
        TargetAddr::Ip(sa)
    }
}

impl fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(sa) => write!(f, "{sa}"),
            // A client's name: anything but a plain one is shown quoted and escaped.
            Addr::Domain(name, port) => write!(f, "{}:{port}", Printable(name)),
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_addr().fmt(f)
    }
}

/// The whole encoded length of the address starting at `buf[0]` (its ATYP), as far as the
/// bytes present tell: for a domain, the length byte must be present to know the total,
/// so with only the ATYP this answers 2 and the caller reads on.
pub fn wanted_len(buf: &[u8]) -> Result<usize> {
    let Some(&atyp) = buf.first() else {
        return Ok(1);
    };
    match atyp {
        ATYP_IPV4 => Ok(1 + 4 + 2),
        ATYP_IPV6 => Ok(1 + 16 + 2),
        ATYP_DOMAIN => match buf.get(1) {
            None => Ok(2),
            Some(0) => Err(Error::BadDomain),
            Some(&n) => Ok(1 + 1 + n as usize + 2),
        },
        other => Err(Error::UnknownAddressType(other)),
    }
}

/// A domain name as a client sent it: a host name ([`host_name`]). Anything else is
/// refused before it reaches a rule or a resolver: a resolver may read `\098` as `b`, so a
/// rule would judge one name and the resolver look up another, and a newline in a name
/// would let a client write lines of its own into the log.
pub(super) fn domain_name(bytes: &[u8]) -> Result<&str> {
    if bytes.is_empty() {
        return Err(Error::BadDomain);
    }
    host_name(std::str::from_utf8(bytes).map_err(|_| Error::NotAHostName)?)
}

/// The longest host name, with its trailing dot: what a SOCKS5 length byte can say.
pub const MAX_HOST_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;

/// Checks that `name` is a host name: labels of ASCII letters, digits, `-` and `_`, each
/// 1 to 63 bytes, joined by dots, with at most one trailing dot (a fully qualified name).
pub fn host_name(name: &str) -> Result<&str> {
    let labels = name.strip_suffix('.').unwrap_or(name);
    let is_label = |label: &str| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > MAX_HOST_NAME_LEN || !labels.split('.').all(is_label) {
        return Err(Error::NotAHostName);
    }
    Ok(name)
}

/// A host name in the one form names are compared in: ASCII lower case, without the
/// trailing dot of a fully qualified name. `Blocked.Example.` and `blocked.example` are
/// one name to the rules, as they are to a resolver.
pub fn canonical_host(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Parses the address at the start of `buf`; returns it and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<(Addr<'_>, usize)> {
    let len = wanted_len(buf)?;
    if buf.len() < len || len < 2 {
        return Err(Error::Truncated);
    }
    let port = u16::from_be_bytes([buf[len - 2], buf[len - 1]]);
    let addr = match buf[0] {
        ATYP_IPV4 => {
            let octets: [u8; 4] = buf[1..5].try_into().expect("length checked");
            Addr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        ATYP_IPV6 => {
            let octets: [u8; 16] = buf[1..17].try_into().expect("length checked");
            Addr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => Addr::Domain(domain_name(&buf[2..len - 2])?, port),
    };
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: [u8; 7] = [1, 127, 0, 0, 1, 0x1f, 0x90];
    const DOMAIN: [u8; 13] = [3, 8, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', 0, 80, 0];

    #[test]
    fn parses_ipv4() {
        let (addr, used) = parse(&V4).unwrap();
        assert_eq!(used, 7);
        assert_eq!(addr, Addr::Ip("127.0.0.1:8080".parse().unwrap()));
    }

    #[test]
    fn parses_ipv6_and_emits_it_back() {
        let addr = Addr::Ip("[2001:db8::1]:443".parse().unwrap());
        let mut buf = [0xa5; 32];
        let len = addr.emit(&mut buf);
        assert_eq!(len, 19);
        assert_eq!(buf[0], ATYP_IPV6);
        assert_eq!(&buf[17..19], &[1, 0xbb]);
        assert_eq!(buf[19], 0xa5, "emit wrote past its length");
        assert_eq!(parse(&buf[..len]).unwrap(), (addr, 19));
    }

    #[test]
    fn domain_takes_its_length_byte() {
        // the fixture's name is 8 bytes "example." then port 0x5000; the last 0 is extra
        let (addr, used) = parse(&DOMAIN).unwrap();
        assert_eq!(used, 12);
        assert_eq!(addr, Addr::Domain("example.", 0x0050));
    }

    #[test]
    fn malformed_addresses() {
        assert_eq!(parse(&[]), Err(Error::Truncated));
        assert_eq!(parse(&[1, 127, 0]), Err(Error::Truncated));
        assert_eq!(parse(&[3]), Err(Error::Truncated));
        assert_eq!(parse(&[3, 0, 0, 80]), Err(Error::BadDomain));
        assert_eq!(parse(&[3, 2, 0xff, 0xfe, 0, 80]), Err(Error::NotAHostName));
        for control in [b'\n', b'\r', 0, 0x1b, 0x7f] {
            assert_eq!(parse(&[3, 3, b'a', control, b'b', 0, 80]), Err(Error::NotAHostName), "{control:#x}");
        }
        assert_eq!(parse(&[2, 1, 2, 3, 4, 0, 80]), Err(Error::UnknownAddressType(2)));
    }

    #[test]
    fn only_host_names_pass() {
        let label63 = "a".repeat(63);
        let long = [label63.as_str(); 4].join(".");
        for name in ["localhost", "localhost.", "Blocked.Example.", "_sip._tcp.example", "xn--d1acufc.xn--p1ai", &long]
        {
            assert_eq!(host_name(name), Ok(name), "{name}");
        }
        let label64 = "a".repeat(64);
        let too_long = format!("{long}.a");
        for name in [
            "\\098locked.example",
            "a b",
            "josé.example",
            "a/b",
            "a%2fb",
            "",
            ".",
            ".example",
            "a..b",
            "example..",
            &label64,
            &too_long,
        ] {
            assert_eq!(host_name(name), Err(Error::NotAHostName), "{name:?}");
        }
        let mut wire = vec![3, 18];
        wire.extend_from_slice(b"\\098locked.example");
        wire.extend_from_slice(&[0, 80]);
        assert_eq!(parse(&wire), Err(Error::NotAHostName), "an escape on the wire never reaches a resolver");
    }

    #[test]
    fn names_compare_in_one_canonical_form() {
        for (name, canonical) in
            [("blocked.example.", "blocked.example"), ("LocalHost.", "localhost"), ("a.b", "a.b"), ("A.B", "a.b")]
        {
            assert_eq!(canonical_host(name), canonical, "{name}");
        }
        assert!(matches!(canonical_host("already.canonical"), Cow::Borrowed(_)), "the common case costs nothing");
    }
}
