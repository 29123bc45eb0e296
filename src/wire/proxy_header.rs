//! The PROXY protocol header (HAProxy's specification, versions 1 and 2): what a load
//! balancer sends ahead of its client's bytes to say where that client connected from.
//!
//! Version 1 is one text line, `PROXY TCP4 SRC DST SPORT DPORT\r\n`, at most 107 bytes;
//! version 2 is binary: a 16-byte fixed part (signature, version and command, family,
//! length) and as many bytes as that length says (the addresses, then TLVs, which are
//! walked to check their framing and otherwise skipped). The two are told apart by their
//! first bytes.

use super::{Error, Result, expect_len};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A version 1 line is at most this long, its CRLF included.
pub const V1_MAX_LEN: usize = 107;
/// What every version 1 line starts with.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// What every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a version 2 header, before its declared length.
pub const V2_FIXED_LEN: usize = 16;
/// A version 2 header is at most this long: the fixed part and a 16-bit length.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

/// Byte offsets of version 2's fixed part.
mod field {
    use std::ops::Range;
    pub(super) const SIGNATURE: Range<usize> = 0..12;
    /// High nibble the version (2), low nibble the command.
    pub(super) const VER_CMD: usize = 12;
    /// High nibble the address family, low nibble the transport.
    pub(super) const FAMILY: usize = 13;
    pub(super) const LEN: Range<usize> = 14..16;
}

const V2_VERSION: u8 = 0x20;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;

/// Version 2's family and transport bytes this parser knows.
mod family {
    pub(super) const UNSPEC: u8 = 0x00;
    pub(super) const TCP4: u8 = 0x11;
    pub(super) const TCP6: u8 = 0x21;
    pub(super) const UNIX_STREAM: u8 = 0x31;
    pub(super) const UNIX_DGRAM: u8 = 0x32;
}

/// Bytes of version 2's address block, by family.
const TCP4_ADDRESSES: usize = 4 + 4 + 2 + 2;
const TCP6_ADDRESSES: usize = 16 + 16 + 2 + 2;
const UNIX_ADDRESSES: usize = 108 + 108;
/// A TLV's type and 16-bit length.
const TLV_HEAD: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The two ends of a proxied TCP connection, of one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    V4 { source: SocketAddrV4, destination: SocketAddrV4 },
    V6 { source: SocketAddrV6, destination: SocketAddrV6 },
}

impl Addresses {
    /// Where the client connected from.
    pub fn source(&self) -> SocketAddr {
        match *self {
            Addresses::V4 { source, .. } => source.into(),
            Addresses::V6 { source, .. } => source.into(),
        }
    }

    /// The address the client connected to (the balancer's).
    pub fn destination(&self) -> SocketAddr {
        match *self {
            Addresses::V4 { destination, .. } => destination.into(),
            Addresses::V6 { destination, .. } => destination.into(),
        }
    }
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A client's TCP connection, relayed: `PROXY TCP4|TCP6` (v1), or v2's PROXY command
    /// over TCP and IPv4 or IPv6.
    Proxied { version: Version, addresses: Addresses },
    /// A relayed connection whose addresses the balancer does not give in IP terms:
    /// `PROXY UNKNOWN` (v1), or v2's PROXY command with an unspecified or UNIX family.
    /// The specification says to use the connection's own addresses then.
    Unknown { version: Version },
    /// Version 2's LOCAL command: the balancer speaks for itself (its health checks);
    /// the connection's own addresses are the true ones.
    Local,
}

impl Header {
    /// The bytes the whole header takes, judging from `buf` so far: a v1 line up to its
    /// CRLF (one more byte while none has come), a v2 header its fixed part and declared
    /// length. Fails as soon as the bytes cannot begin a header, or a v1 line runs past
    /// [`V1_MAX_LEN`] without its CRLF.
    pub fn wanted_len(buf: &[u8]) -> Result<usize> {
        if is_prefix_of(buf, V1_PREFIX) {
            return Ok(V1_PREFIX.len());
        }
        if is_prefix_of(buf, &V2_SIGNATURE) {
            return Ok(V2_FIXED_LEN);
        }
        if buf.starts_with(V1_PREFIX) {
            return v1_wanted_len(buf);
        }
        if buf.starts_with(&V2_SIGNATURE) {
            return match buf.get(field::LEN) {
                Some(len) => Ok(V2_FIXED_LEN + usize::from(u16::from_be_bytes([len[0], len[1]]))),
                None => Ok(V2_FIXED_LEN),
            };
        }
        Err(Error::NotProxyHeader)
    }

    /// Parses one whole header, exactly [`Header::wanted_len`] bytes.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        expect_len(buf, Self::wanted_len(buf)?)?;
        if buf.starts_with(V1_PREFIX) { parse_v1(&buf[V1_PREFIX.len()..buf.len() - 2]) } else { parse_v2(buf) }
    }

    /// The client's address, when the header carries one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Header::Proxied { addresses, .. } => Some(addresses.source()),
            Header::Unknown { .. } | Header::Local => None,
        }
    }

    /// Writes the header (with no TLVs) and returns its length; `buf` must hold
    /// [`V1_MAX_LEN`] bytes for v1, 52 for v2.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        match *self {
            Header::Proxied { version: Version::V1, addresses } => {
                let proto = match addresses {
                    Addresses::V4 { .. } => "TCP4",
                    Addresses::V6 { .. } => "TCP6",
                };
                let (source, destination) = (addresses.source(), addresses.destination());
                // IPv6 in its compressed form and unbracketed, as the specification writes it.
                let (from, to) = (source.ip(), destination.ip());
                emit_v1(buf, format_args!("{proto} {from} {to} {} {}", source.port(), destination.port()))
            }
            Header::Unknown { version: Version::V1 } => emit_v1(buf, format_args!("UNKNOWN")),
            Header::Proxied { version: Version::V2, addresses } => {
                let (family, block) = match addresses {
                    Addresses::V4 { .. } => (family::TCP4, TCP4_ADDRESSES),
                    Addresses::V6 { .. } => (family::TCP6, TCP6_ADDRESSES),
                };
                let at = emit_v2_fixed(buf, CMD_PROXY, family, block);
                let (ips, ports) = buf[at..at + block].split_at_mut(block - 4);
                let half = ips.len() / 2;
                match addresses {
                    Addresses::V4 { source, destination } => {
                        ips[..half].copy_from_slice(&source.ip().octets());
                        ips[half..].copy_from_slice(&destination.ip().octets());
                    }
                    Addresses::V6 { source, destination } => {
                        ips[..half].copy_from_slice(&source.ip().octets());
                        ips[half..].copy_from_slice(&destination.ip().octets());
                    }
                }
                ports[..2].copy_from_slice(&addresses.source().port().to_be_bytes());
                ports[2..].copy_from_slice(&addresses.destination().port().to_be_bytes());
                at + block
            }
            Header::Unknown { version: Version::V2 } => emit_v2_fixed(buf, CMD_PROXY, family::UNSPEC, 0),
            Header::Local => emit_v2_fixed(buf, CMD_LOCAL, family::UNSPEC, 0),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Whether `buf` is a proper beginning of `whole`: too short yet to tell more.
fn is_prefix_of(buf: &[u8], whole: &[u8]) -> bool {
    buf.len() < whole.len() && whole.starts_with(buf)
}

/// A v1 line ends at its first LF, which must follow a CR, within [`V1_MAX_LEN`].
fn v1_wanted_len(buf: &[u8]) -> Result<usize> {
    let within = &buf[..buf.len().min(V1_MAX_LEN)];
    match within.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && within[lf - 1] == b'\r' => Ok(lf + 1),
        Some(_) => Err(Error::BadProxyLine),
        None if within.len() == V1_MAX_LEN => Err(Error::FieldTooLong),
        None => Ok(within.len() + 1),
    }
}

/// `TCP4 SRC DST SPORT DPORT`, `TCP6 ...`, or `UNKNOWN` followed by anything: the line
/// between `PROXY ` and its CRLF. One space between fields, as the specification has it.
fn parse_v1(line: &[u8]) -> Result<Header> {
    let line = std::str::from_utf8(line).map_err(|_| Error::BadProxyLine)?;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Header::Unknown { version: Version::V1 });
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [proto, source, destination, source_port, destination_port] = fields[..] else {
        return Err(Error::BadProxyLine);
    };
    let (source_port, destination_port) = (v1_port(source_port)?, v1_port(destination_port)?);
    let addresses = match proto {
        "TCP4" => Addresses::V4 {
            source: SocketAddrV4::new(source.parse().map_err(|_| Error::BadProxyLine)?, source_port),
            destination: SocketAddrV4::new(destination.parse().map_err(|_| Error::BadProxyLine)?, destination_port),
        },
        "TCP6" => Addresses::V6 {
            source: SocketAddrV6::new(source.parse().map_err(|_| Error::BadProxyLine)?, source_port, 0, 0),
            destination: SocketAddrV6::new(
                destination.parse().map_err(|_| Error::BadProxyLine)?,
                destination_port,
                0,
                0,
            ),
        },
        _ => return Err(Error::BadProxyLine),
    };
    Ok(Header::Proxied { version: Version::V1, addresses })
}

/// A port in decimal, as the specification writes it: digits only, no leading zero.
fn v1_port(text: &str) -> Result<u16> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    match canonical {
        true => text.parse().map_err(|_| Error::BadProxyLine),
        false => Err(Error::BadProxyLine),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Header> {
    let ver_cmd = buf[field::VER_CMD];
    if ver_cmd & 0xf0 != V2_VERSION {
        return Err(Error::BadVersion(ver_cmd));
    }
    let body = &buf[V2_FIXED_LEN..];
    match ver_cmd & 0x0f {
        // The specification has receivers ignore a LOCAL header's family and block.
        CMD_LOCAL => return Ok(Header::Local),
        CMD_PROXY => {}
        _ => return Err(Error::UnknownCommand(ver_cmd)),
    }
    let block = match buf[field::FAMILY] {
        // Addresses not given: everything that follows is skipped.
        family::UNSPEC => return Ok(Header::Unknown { version: Version::V2 }),
        family::TCP4 => TCP4_ADDRESSES,
        family::TCP6 => TCP6_ADDRESSES,
        family::UNIX_STREAM | family::UNIX_DGRAM => UNIX_ADDRESSES,
        // UDP over IPv4 or IPv6 said of a TCP connection, or no family at all.
        other => return Err(Error::UnknownAddressType(other)),
    };
    let addresses = body.get(..block).ok_or(Error::Truncated)?;
    check_tlvs(&body[block..])?;
    let (a, ports) = addresses.split_at(block - 4);
    let source_port = u16::from_be_bytes([ports[0], ports[1]]);
    let destination_port = u16::from_be_bytes([ports[2], ports[3]]);
    let addresses = match buf[field::FAMILY] {
        family::TCP4 => Addresses::V4 {
            source: SocketAddrV4::new(Ipv4Addr::from(octets::<4>(&a[..4])), source_port),
            destination: SocketAddrV4::new(Ipv4Addr::from(octets::<4>(&a[4..])), destination_port),
        },
        family::TCP6 => Addresses::V6 {
            source: SocketAddrV6::new(Ipv6Addr::from(octets::<16>(&a[..16])), source_port, 0, 0),
            destination: SocketAddrV6::new(Ipv6Addr::from(octets::<16>(&a[16..])), destination_port, 0, 0),
        },
        _ => return Ok(Header::Unknown { version: Version::V2 }),
    };
    Ok(Header::Proxied { version: Version::V2, addresses })
}

/// Walks the TLVs after the addresses: each must fit in what is left. Their contents are
/// not ours to act on, so they are skipped.
fn check_tlvs(mut tlvs: &[u8]) -> Result<()> {
    while !tlvs.is_empty() {
        let head = tlvs.get(..TLV_HEAD).ok_or(Error::BadTlv)?;
        let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        tlvs = tlvs.get(TLV_HEAD + len..).ok_or(Error::BadTlv)?;
    }
    Ok(())
}

/// `N` bytes from a slice known to hold them.
fn octets<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn emit_v1(buf: &mut [u8], rest: fmt::Arguments<'_>) -> usize {
    use std::io::Write;
    let total = buf.len();
    let mut out = &mut buf[..];
    write!(out, "PROXY {rest}\r\n").expect("a v1 line fits in V1_MAX_LEN bytes");
    total - out.len()
}

/// Writes the fixed part for `command` and `family` with a block of `len` bytes; returns
/// where the block starts.
fn emit_v2_fixed(buf: &mut [u8], command: u8, family: u8, len: usize) -> usize {
    buf[field::SIGNATURE].copy_from_slice(&V2_SIGNATURE);
    buf[field::VER_CMD] = V2_VERSION | command;
    buf[field::FAMILY] = family;
    buf[field::LEN].copy_from_slice(&u16::try_from(len).expect("an address block fits in 16 bits").to_be_bytes());
    V2_FIXED_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own examples (section 2.1), and a v1 line with data behind it.
    const V1_TCP4: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 ::1 56324 443\r\n";
    const V1_UNKNOWN_LONGEST: &[u8] =
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

    /// v2 PROXY over TCP/IPv4: 192.0.2.7:5000 -> 198.51.100.1:1080, then one TLV
    /// (PP2_TYPE_AUTHORITY "ex") and a NOOP TLV of length zero.
    const V2_TCP4_TLVS: [u8; 16 + 12 + 5 + 3] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
        0x21, 0x11, 0x00, 20, // v2 PROXY, TCP over IPv4, 20 bytes follow
        192, 0, 2, 7, 198, 51, 100, 1, 0x13, 0x88, 0x04, 0x38, // addresses, ports 5000 and 1080
        0x02, 0x00, 0x02, b'e', b'x', // PP2_TYPE_AUTHORITY
        0x04, 0x00, 0x00, // PP2_TYPE_NOOP
    ];

    /// v2 LOCAL, as HAProxy's health checks send it.
    const V2_LOCAL: [u8; 16] =
        [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00];

    fn v4(source: &str, destination: &str) -> Addresses {
        Addresses::V4 { source: source.parse().unwrap(), destination: destination.parse().unwrap() }
    }

    fn v2(family: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend([0x21, family]);
        bytes.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        bytes.extend(body);
        bytes
    }

    #[test]
    fn parses_the_specifications_v1_lines_and_leaves_what_follows() {
        let with_data = [V1_TCP4, &[5, 1, 0]].concat();
        assert_eq!(Header::wanted_len(&with_data), Ok(V1_TCP4.len()), "stops at the CRLF, not at the data behind it");
        let header = Header::parse(V1_TCP4).unwrap();
        assert_eq!(
            header,
            Header::Proxied { version: Version::V1, addresses: v4("192.168.0.1:56324", "192.168.0.11:443") }
        );
        assert_eq!(header.source(), Some("192.168.0.1:56324".parse().unwrap()));
        let mut buf = [0xa5; V1_MAX_LEN + 1];
        let len = header.emit(&mut buf);
        assert_eq!((&buf[..len], buf[len]), (V1_TCP4, 0xa5));

        let header = Header::parse(V1_TCP6).unwrap();
        assert_eq!(header.source(), Some("[2001:db8::1]:56324".parse().unwrap()));
        let len = header.emit(&mut buf);
        assert_eq!(&buf[..len], V1_TCP6);

        assert_eq!(V1_UNKNOWN_LONGEST.len(), V1_MAX_LEN, "the specification's worst case");
        assert_eq!(Header::parse(V1_UNKNOWN_LONGEST), Ok(Header::Unknown { version: Version::V1 }));
        let len = Header::Unknown { version: Version::V1 }.emit(&mut buf);
        assert_eq!(&buf[..len], b"PROXY UNKNOWN\r\n");
        assert_eq!(Header::parse(b"PROXY UNKNOWN\r\n").unwrap().source(), None);
    }

    #[test]
    fn v1_is_read_to_its_crlf_a_byte_at_a_time_if_need_be() {
        assert_eq!(Header::wanted_len(b""), Ok(6));
        assert_eq!(Header::wanted_len(b"PRO"), Ok(6));
        assert_eq!(Header::wanted_len(b"PROXY "), Ok(7));
        assert_eq!(Header::wanted_len(b"PROXY TCP4 1"), Ok(13));
        assert_eq!(Header::wanted_len(&V1_TCP4[..V1_TCP4.len() - 1]), Ok(V1_TCP4.len()));
    }

    #[test]
    fn parses_v2_skipping_tlvs_and_emits_without_them() {
        let mut with_data = V2_TCP4_TLVS.to_vec();
        with_data.extend([5, 1, 0]);
        assert_eq!(Header::wanted_len(&with_data[..15]), Ok(16));
        assert_eq!(Header::wanted_len(&with_data), Ok(V2_TCP4_TLVS.len()));
        let header = Header::parse(&V2_TCP4_TLVS).unwrap();
        assert_eq!(
            header,
            Header::Proxied { version: Version::V2, addresses: v4("192.0.2.7:5000", "198.51.100.1:1080") }
        );
        let mut buf = [0xa5; 64];
        let len = header.emit(&mut buf);
        let mut without_tlvs = V2_TCP4_TLVS[..28].to_vec();
        without_tlvs[15] = 12;
        assert_eq!((&buf[..len], buf[len]), (&without_tlvs[..], 0xa5));

        let addresses = Addresses::V6 {
            source: "[2001:db8::7]:40000".parse().unwrap(),
            destination: "[2001:db8::1]:1080".parse().unwrap(),
        };
        let header = Header::Proxied { version: Version::V2, addresses };
        let len = header.emit(&mut buf);
        assert_eq!((len, buf[len]), (16 + 36, 0xa5));
        assert_eq!(Header::parse(&buf[..len]), Ok(header));
        assert_eq!(addresses.destination(), "[2001:db8::1]:1080".parse().unwrap());
    }

    #[test]
    fn v2_local_unspec_and_unix_carry_no_client_address() {
        assert_eq!(Header::parse(&V2_LOCAL), Ok(Header::Local));
        let mut buf = [0xa5; 17];
        assert_eq!(Header::Local.emit(&mut buf), 16);
        assert_eq!((&buf[..16], buf[16]), (&V2_LOCAL[..], 0xa5));
        // LOCAL's block is ignored, whatever its family says.
        let mut local_with_block = v2(family::TCP4, &[0; 12]);
        local_with_block[field::VER_CMD] = 0x20;
        assert_eq!(Header::parse(&local_with_block), Ok(Header::Local));
        assert_eq!(Header::parse(&v2(family::UNSPEC, b"anything")), Ok(Header::Unknown { version: Version::V2 }));
        let unix = v2(family::UNIX_STREAM, &[b'/'; UNIX_ADDRESSES]);
        assert_eq!(Header::parse(&unix), Ok(Header::Unknown { version: Version::V2 }));
        let len = Header::Unknown { version: Version::V2 }.emit(&mut buf);
        assert_eq!(Header::parse(&buf[..len]), Ok(Header::Unknown { version: Version::V2 }));
    }

    #[test]
    fn malformed_headers() {
        for cut in 0..V1_TCP4.len() {
            assert_eq!(Header::parse(&V1_TCP4[..cut]), Err(Error::Truncated), "v1 cut at {cut}");
        }
        for cut in 0..V2_TCP4_TLVS.len() {
            assert_eq!(Header::parse(&V2_TCP4_TLVS[..cut]), Err(Error::Truncated), "v2 cut at {cut}");
        }
        let tcp4 = [192, 0, 2, 7, 198, 51, 100, 1, 0x13, 0x88, 0x04, 0x38];
        let long_line = [&b"PROXY TCP4 "[..], &[b'1'; 100], b"\r\n"].concat();
        let mut v2_version_1 = v2(family::TCP4, &tcp4);
        v2_version_1[field::VER_CMD] = 0x11;
        let mut v2_command_2 = v2(family::TCP4, &tcp4);
        v2_command_2[field::VER_CMD] = 0x22;
        let table: [(&[u8], Error); 22] = [
            // neither signature: a SOCKS5 greeting, an HTTP request, a near miss
            (&[5, 1, 0], Error::NotProxyHeader),
            (b"GET / HTTP/1.1\r\n\r\n", Error::NotProxyHeader),
            (b"PROXY\r\n", Error::NotProxyHeader),
            (b"\r\n\r\n\0\r\nQUIX\n", Error::NotProxyHeader),
            // v1
            (&long_line, Error::FieldTooLong),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", Error::BadProxyLine),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", Error::BadProxyLine),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Error::BadProxyLine),
            (b"PROXY TCP4 1.2.3.4 5.6.7.\xff 1 2\r\n", Error::BadProxyLine),
            // v2
            (&v2_version_1, Error::BadVersion(0x11)),
            (&v2_command_2, Error::UnknownCommand(0x22)),
            (&v2(0x12, &tcp4), Error::UnknownAddressType(0x12)),
            (&v2(family::TCP6, &tcp4), Error::Truncated),
            (&v2(family::TCP4, &[&tcp4[..], &[0x02, 0x00, 0x05, b'e']].concat()), Error::BadTlv),
        ];
        for (bytes, error) in table {
            assert_eq!(Header::parse(bytes), Err(error), "{:?}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(Header::parse(&v2(family::TCP4, &[&tcp4[..], &[0x04, 0x00]].concat())), Err(Error::BadTlv));
        assert_eq!(Header::parse(&[V1_TCP4, b"x"].concat()), Err(Error::TrailingBytes));
    }
}
