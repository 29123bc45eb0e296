//! SOCKS4 and its 4a extension: `VN=4 | CD | DSTPORT(2) | DSTIP(4) | USERID | NUL`,
//! followed in 4a by `HOSTNAME | NUL` when DSTIP is 0.0.0.x with x != 0.

use super::addr::{self, Addr};
use super::{Error, Result, expect_len};
use std::net::{Ipv4Addr, SocketAddr};

pub const VERSION: u8 = 4;
/// The version byte of a reply, which is 0 and not 4.
pub const REPLY_VERSION: u8 = 0;
/// Longest USERID or 4a host name we read before giving up on finding its NUL.
pub const MAX_FIELD_LEN: usize = 255;

mod field {
    use std::ops::Range;
    pub(super) const VN: usize = 0;
    pub(super) const CD: usize = 1;
    pub(super) const PORT: Range<usize> = 2..4;
    pub(super) const IP: Range<usize> = 4..8;
    pub(super) const USERID: usize = 8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect = 1,
    Bind = 2,
}

/// A SOCKS4 or 4a request; `addr` is a domain for 4a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub command: Command,
    pub addr: Addr<'a>,
    pub user_id: &'a [u8],
}

/// Whether DSTIP is the 4a marker 0.0.0.x, x != 0.
fn is_4a_marker(ip: [u8; 4]) -> bool {
    ip[..3] == [0, 0, 0] && ip[3] != 0
}

/// Index just past the NUL that ends the field starting at `start`, if present. A field
/// longer than [`MAX_FIELD_LEN`] is refused whether or not its NUL has arrived, so the
/// verdict never depends on how the bytes were split into reads.
fn field_end(buf: &[u8], start: usize) -> Result<Option<usize>> {
    let rest = buf.get(start..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == 0) {
        Some(len) if len > MAX_FIELD_LEN => Err(Error::FieldTooLong),
        Some(len) => Ok(Some(start + len + 1)),
        None if rest.len() > MAX_FIELD_LEN => Err(Error::FieldTooLong),
        None => Ok(None),
    }
}

impl<'a> Request<'a> {
    /// The request's length as far as `buf` tells. Its fields end in NUL bytes rather
    /// than carrying lengths, so while the NUL is missing this asks for one byte more
    /// than `buf` has; a reader that peeks can take several at once.
    pub fn wanted_len(buf: &[u8]) -> Result<usize> {
        if let Some(&v) = buf.first()
            && v != VERSION
        {
            return Err(Error::BadVersion(v));
        }
        if buf.len() < field::USERID {
            return Ok(field::USERID + 1);
        }
        let Some(user_end) = field_end(buf, field::USERID)? else {
            return Ok(buf.len() + 1);
        };
        let ip: [u8; 4] = buf[field::IP].try_into().expect("length checked");
        if !is_4a_marker(ip) {
            return Ok(user_end);
        }
        match field_end(buf, user_end)? {
            Some(end) => Ok(end),
            None => Ok(buf.len().max(user_end) + 1),
        }
    }

    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        expect_len(buf, Self::wanted_len(buf)?)?;
        let command = match buf[field::CD] {
            1 => Command::Connect,
            2 => Command::Bind,
            other => return Err(Error::UnknownCommand(other)),
        };
        let port = u16::from_be_bytes(buf[field::PORT].try_into().expect("length checked"));
        let ip: [u8; 4] = buf[field::IP].try_into().expect("length checked");
        let user_end = field_end(buf, field::USERID)?.ok_or(Error::Truncated)?;
        let user_id = &buf[field::USERID..user_end - 1];
        let addr = if is_4a_marker(ip) {
            let host = &buf[user_end..buf.len() - 1];
            Addr::Domain(addr::domain_name(host)?, port)
        } else {
            Addr::Ip(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
        };
        Ok(Request { command, addr, user_id })
    }

    /// Writes the request; a domain address makes it a 4a request.
    ///
    /// Panics for an address SOCKS4 cannot carry, the caller's bug: an IPv6 address, or
    /// 0.0.0.x with x != 0, which on the wire is the 4a marker and would announce a host
    /// name that is not there.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let ip = match self.addr {
            Addr::Ip(SocketAddr::V4(sa)) if is_4a_marker(sa.ip().octets()) => {
                panic!("{} would read as a SOCKS4a marker", sa.ip())
            }
            Addr::Ip(SocketAddr::V4(sa)) => sa.ip().octets(),
            Addr::Ip(SocketAddr::V6(_)) => panic!("SOCKS4 has no IPv6"),
            Addr::Domain(..) => [0, 0, 0, 1],
        };
        buf[field::VN] = VERSION;
        buf[field::CD] = self.command as u8;
        buf[field::PORT].copy_from_slice(&self.addr.port().to_be_bytes());
        buf[field::IP].copy_from_slice(&ip);
        let mut at = field::USERID;
        buf[at..at + self.user_id.len()].copy_from_slice(self.user_id);
        at += self.user_id.len();
        buf[at] = 0;
        at += 1;
        if let Addr::Domain(name, _) = self.addr {
            buf[at..at + name.len()].copy_from_slice(name.as_bytes());
            at += name.len();
            buf[at] = 0;
            at += 1;
        }
        at
    }
}

/// Reply codes (CD of a reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    Granted = 90,
    Rejected = 91,
}

/// Reply: `VN=0 | CD | DSTPORT(2) | DSTIP(4)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub addr: std::net::SocketAddrV4,
}

impl Reply {
    pub const LEN: usize = 8;

    pub fn rejected() -> Self {
        Reply { code: ReplyCode::Rejected, addr: std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0) }
    }

    pub fn parse(buf: &[u8]) -> Result<Self> {
        expect_len(buf, Self::LEN)?;
        if buf[field::VN] != REPLY_VERSION {
            return Err(Error::BadVersion(buf[field::VN]));
        }
        let code = match buf[field::CD] {
            90 => ReplyCode::Granted,
            _ => ReplyCode::Rejected,
        };
        let port = u16::from_be_bytes(buf[field::PORT].try_into().expect("length checked"));
        let ip: [u8; 4] = buf[field::IP].try_into().expect("length checked");
        Ok(Reply { code, addr: std::net::SocketAddrV4::new(ip.into(), port) })
    }

    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut buf = [0; Self::LEN];
        buf[field::VN] = REPLY_VERSION;
        buf[field::CD] = self.code as u8;
        buf[field::PORT].copy_from_slice(&self.addr.port().to_be_bytes());
        buf[field::IP].copy_from_slice(&self.addr.ip().octets());
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT: [u8; 13] = [4, 1, 0, 80, 127, 0, 0, 1, b'b', b'o', b'b', 0, 0xee];
    const CONNECT_4A: [u8; 20] =
        [4, 1, 1, 187, 0, 0, 0, 9, 0, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o', b'r', 0];

    #[test]
    fn parses_socks4_connect() {
        let bytes = &CONNECT[..12];
        assert_eq!(Request::wanted_len(&CONNECT), Ok(12), "stops at the NUL, not at the data behind it");
        let req = Request::parse(bytes).unwrap();
        assert_eq!(req.command, Command::Connect);
        assert_eq!(req.addr, Addr::Ip("127.0.0.1:80".parse().unwrap()));
        assert_eq!(req.user_id, b"bob");
        let mut buf = [0xa5; 32];
        let len = req.emit(&mut buf);
        assert_eq!(&buf[..len], bytes);
    }

    #[test]
    fn parses_socks4a_domain() {
        assert_eq!(Request::wanted_len(&CONNECT_4A[..9]), Ok(10));
        assert_eq!(Request::wanted_len(&CONNECT_4A), Ok(20));
        let req = Request::parse(&CONNECT_4A).unwrap();
        assert_eq!(req.addr, Addr::Domain("example.or", 443));
        assert!(req.user_id.is_empty());
        let mut buf = [0xa5; 32];
        let len = req.emit(&mut buf);
        // emit writes the canonical marker 0.0.0.1
        assert_eq!(&buf[..len], &[&CONNECT_4A[..7], &[1], &CONNECT_4A[8..]].concat()[..]);
    }

    #[test]
    fn malformed_requests() {
        for cut in 0..12 {
            assert_eq!(Request::parse(&CONNECT[..cut]), Err(Error::Truncated), "cut at {cut}");
        }
        assert_eq!(Request::parse(&[5, 1, 0, 80, 1, 2, 3, 4, 0]), Err(Error::BadVersion(5)));
        assert_eq!(Request::parse(&[4, 3, 0, 80, 1, 2, 3, 4, 0]), Err(Error::UnknownCommand(3)));
        assert_eq!(Request::parse(&[4, 1, 0, 80, 0, 0, 0, 1, 0, 0]), Err(Error::BadDomain));
        assert_eq!(Request::parse(&[4, 1, 0, 80, 0, 0, 0, 1, 0, b'a', b'\n', b'b', 0]), Err(Error::NotAHostName));
        let long = [&[4, 1, 0, 80, 1, 2, 3, 4][..], &[b'x'; 300]].concat();
        assert_eq!(Request::wanted_len(&long), Err(Error::FieldTooLong));
    }

    #[test]
    fn a_field_past_255_bytes_is_refused_even_with_its_nul_in_the_same_read() {
        let header = [4, 1, 0, 80, 1, 2, 3, 4];
        let with_nul = |len: usize| [&header[..], &vec![b'x'; len], &[0]].concat();
        assert_eq!(Request::parse(&with_nul(255)).unwrap().user_id.len(), 255, "255 is the limit");
        assert_eq!(Request::wanted_len(&with_nul(256)), Err(Error::FieldTooLong));
        assert_eq!(Request::parse(&with_nul(300)), Err(Error::FieldTooLong));
        // "h.h.h...": a host name of `len` bytes, with labels short enough to be one.
        let name = |len: usize| (0..len).map(|i| if i % 2 == 0 { b'h' } else { b'.' }).collect::<Vec<u8>>();
        let host = |len: usize| [&[4, 1, 0, 80, 0, 0, 0, 1, 0][..], &name(len), &[0]].concat();
        assert!(Request::parse(&host(255)).is_ok());
        assert_eq!(Request::parse(&host(256)), Err(Error::FieldTooLong));
    }

    #[test]
    #[should_panic(expected = "would read as a SOCKS4a marker")]
    fn an_address_that_reads_as_the_4a_marker_is_never_emitted() {
        let request =
            Request { command: Command::Connect, addr: Addr::Ip("0.0.0.7:80".parse().unwrap()), user_id: b"" };
        request.emit(&mut [0; 32]);
    }

    #[test]
    fn reply_round_trip() {
        let reply = Reply { code: ReplyCode::Granted, addr: "10.1.2.3:8080".parse().unwrap() };
        let bytes = reply.emit();
        assert_eq!(bytes, [0, 90, 0x1f, 0x90, 10, 1, 2, 3]);
        assert_eq!(Reply::parse(&bytes), Ok(reply));
        assert_eq!(Reply::rejected().emit(), [0, 91, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Reply::parse(&bytes[..7]), Err(Error::Truncated));
    }
}
