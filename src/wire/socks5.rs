//! SOCKS5 (RFC 1928): method negotiation, request and reply.

use super::addr::{self, Addr};
use super::{Error, Result, expect_len};
use std::fmt;

pub const VERSION: u8 = 5;

/// Authentication method codes.
pub mod method {
    pub const NO_AUTH: u8 = 0x00;
    pub const USER_PASS: u8 = 0x02;
    pub const NONE_ACCEPTABLE: u8 = 0xff;
}

/// Client greeting: `VER | NMETHODS | METHODS[NMETHODS]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    pub methods: &'a [u8],
}

impl<'a> Greeting<'a> {
    pub const MAX_LEN: usize = 2 + 255;

    pub fn wanted_len(buf: &[u8]) -> Result<usize> {
        match buf {
            [] | [_] => Ok(2),
            [VERSION, n, ..] => Ok(2 + *n as usize),
            [v, ..] => Err(Error::BadVersion(*v)),
        }
    }

    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        expect_len(buf, Self::wanted_len(buf)?)?;
        Ok(Greeting { methods: &buf[2..] })
    }

    pub fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }

    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let n = self.methods.len();
        buf[0] = VERSION;
        buf[1] = u8::try_from(n).expect("at most 255 methods");
        buf[2..2 + n].copy_from_slice(self.methods);
        2 + n
    }
}

/// Server's method choice: `VER | METHOD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodChoice {
    pub method: u8,
}

impl MethodChoice {
    pub const LEN: usize = 2;

    pub fn parse(buf: &[u8]) -> Result<Self> {
        expect_len(buf, Self::LEN)?;
        match buf[0] {
            VERSION => Ok(MethodChoice { method: buf[1] }),
            v => Err(Error::BadVersion(v)),
        }
    }

    pub fn emit(&self) -> [u8; Self::LEN] {
        [VERSION, self.method]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect = 1,
    Bind = 2,
    UdpAssociate = 3,
}

impl Command {
    fn from_byte(b: u8) -> Result<Self> {
        match b {
            1 => Ok(Command::Connect),
            2 => Ok(Command::Bind),
            3 => Ok(Command::UdpAssociate),
            other => Err(Error::UnknownCommand(other)),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Connect => "CONNECT",
            Command::Bind => "BIND",
            Command::UdpAssociate => "UDP-ASSOCIATE",
        })
    }
}

/// Byte offsets of the fixed part of a request and a reply.
mod field {
    pub(super) const VER: usize = 0;
    pub(super) const CMD_OR_REP: usize = 1;
    pub(super) const RSV: usize = 2;
    pub(super) const ADDR: usize = 3;
}

/// Request: `VER | CMD | RSV | ATYP | DST.ADDR | DST.PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub command: Command,
    pub addr: Addr<'a>,
}

/// Checks the fixed header shared by requests and replies and returns the total length.
fn header_wanted_len(buf: &[u8]) -> Result<usize> {
    if let Some(&v) = buf.get(field::VER)
        && v != VERSION
    {
        return Err(Error::BadVersion(v));
    }
    if buf.len() <= field::ADDR {
        return Ok(field::ADDR + 2);
    }
    Ok(field::ADDR + addr::wanted_len(&buf[field::ADDR..])?)
}

/// Parses the layout requests and replies share: returns the CMD or REP byte and the
/// address. The reserved byte is checked before the address, since a non-zero one means
/// the framing itself is off.
fn parse_header(buf: &[u8]) -> Result<(u8, Addr<'_>)> {
    expect_len(buf, header_wanted_len(buf)?)?;
    if buf[field::RSV] != 0 {
        return Err(Error::BadReserved(buf[field::RSV]));
    }
    let (addr, _) = addr::parse(&buf[field::ADDR..])?;
    Ok((buf[field::CMD_OR_REP], addr))
}

/// Writes the shared layout; returns its length.
fn emit_header(buf: &mut [u8], cmd_or_rep: u8, addr: &Addr<'_>) -> usize {
    buf[field::VER] = VERSION;
    buf[field::CMD_OR_REP] = cmd_or_rep;
    buf[field::RSV] = 0;
    field::ADDR + addr.emit(&mut buf[field::ADDR..])
}

impl<'a> Request<'a> {
    pub const MAX_LEN: usize = field::ADDR + addr::MAX_LEN;

    pub fn wanted_len(buf: &[u8]) -> Result<usize> {
        header_wanted_len(buf)
    }

    /// Parses a whole request. The command is checked after the address so that an
    /// unknown command still has a well-formed request around it.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let (command, addr) = parse_header(buf)?;
        Ok(Request { command: Command::from_byte(command)?, addr })
    }

    pub fn emit(&self, buf: &mut [u8]) -> usize {
        emit_header(buf, self.command as u8, &self.addr)
    }
}

/// A SOCKS5 reply code (REP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCode(pub u8);

impl ReplyCode {
    pub const SUCCEEDED: Self = Self(0);
    pub const GENERAL_FAILURE: Self = Self(1);
    pub const NOT_ALLOWED: Self = Self(2);
    pub const NETWORK_UNREACHABLE: Self = Self(3);
    pub const HOST_UNREACHABLE: Self = Self(4);
    pub const CONNECTION_REFUSED: Self = Self(5);
    pub const TTL_EXPIRED: Self = Self(6);
    pub const COMMAND_NOT_SUPPORTED: Self = Self(7);
    pub const ADDRESS_TYPE_NOT_SUPPORTED: Self = Self(8);
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "succeeded",
            1 => "general failure",
            2 => "not allowed by ruleset",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            7 => "command not supported",
            8 => "address type not supported",
            _ => "unassigned",
        };
        write!(f, "{} ({name})", self.0)
    }
}

/// Reply: `VER | REP | RSV | ATYP | BND.ADDR | BND.PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    pub code: ReplyCode,
    pub addr: Addr<'a>,
}

impl<'a> Reply<'a> {
    pub const MAX_LEN: usize = field::ADDR + addr::MAX_LEN;

    /// A failure reply carries 0.0.0.0:0, which RFC 1928 leaves the server free to send.
    pub fn failure(code: ReplyCode) -> Reply<'static> {
        Reply { code, addr: Addr::Ip(([0, 0, 0, 0], 0).into()) }
    }

    pub fn wanted_len(buf: &[u8]) -> Result<usize> {
        header_wanted_len(buf)
    }

    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let (code, addr) = parse_header(buf)?;
        Ok(Reply { code: ReplyCode(code), addr })
    }

    pub fn emit(&self, buf: &mut [u8]) -> usize {
        emit_header(buf, self.code.0, &self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREETING: [u8; 4] = [5, 2, 0, 2];
    const CONNECT_V4: [u8; 10] = [5, 1, 0, 1, 10, 0, 0, 1, 0x01, 0xbb];
    const CONNECT_V6: [u8; 22] = [5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80];
    const CONNECT_DOMAIN: [u8; 18] =
        [5, 1, 0, 3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o', b'r', b'g', 0, 80];
    const UDP_ANY: [u8; 10] = [5, 3, 0, 1, 0, 0, 0, 0, 0, 0];
    const REPLY_OK: [u8; 10] = [5, 0, 0, 1, 127, 0, 0, 1, 0xc3, 0x50];

    #[test]
    fn greeting_lists_methods() {
        assert_eq!(Greeting::wanted_len(&GREETING[..1]), Ok(2));
        assert_eq!(Greeting::wanted_len(&GREETING[..2]), Ok(4));
        let g = Greeting::parse(&GREETING).unwrap();
        assert!(g.offers(method::NO_AUTH) && g.offers(method::USER_PASS));
        assert!(!g.offers(method::NONE_ACCEPTABLE));
        let mut buf = [0xa5; 8];
        assert_eq!(g.emit(&mut buf), 4);
        assert_eq!(&buf[..5], &[5, 2, 0, 2, 0xa5]);
    }

    #[test]
    fn greeting_with_no_methods_is_legal() {
        let g = Greeting::parse(&[5, 0]).unwrap();
        assert!(g.methods.is_empty());
    }

    #[test]
    fn method_choice_round_trip() {
        let bytes = MethodChoice { method: method::USER_PASS }.emit();
        assert_eq!(bytes, [5, 2]);
        assert_eq!(MethodChoice::parse(&bytes).unwrap().method, method::USER_PASS);
        assert_eq!(MethodChoice::parse(&[4, 0]), Err(Error::BadVersion(4)));
    }

    #[test]
    fn requests_of_every_address_type() {
        let cases: [(&[u8], Request); 4] = [
            (&CONNECT_V4, Request { command: Command::Connect, addr: Addr::Ip("10.0.0.1:443".parse().unwrap()) }),
            (&CONNECT_V6, Request { command: Command::Connect, addr: Addr::Ip("[::1]:80".parse().unwrap()) }),
            (&CONNECT_DOMAIN, Request { command: Command::Connect, addr: Addr::Domain("example.org", 80) }),
            (&UDP_ANY, Request { command: Command::UdpAssociate, addr: Addr::Ip("0.0.0.0:0".parse().unwrap()) }),
        ];
        for (bytes, want) in cases {
            assert_eq!(Request::wanted_len(&bytes[..5]), Ok(bytes.len()));
            assert_eq!(Request::parse(bytes), Ok(want));
            let mut buf = [0xa5; Request::MAX_LEN + 1];
            let len = want.emit(&mut buf);
            assert_eq!(&buf[..len], bytes, "emit of {want:?}");
            assert_eq!(buf[len], 0xa5);
        }
    }

    #[test]
    fn request_length_is_known_after_five_bytes() {
        assert_eq!(Request::wanted_len(&[]), Ok(5));
        assert_eq!(Request::wanted_len(&[5, 1, 0]), Ok(5));
        assert_eq!(Request::wanted_len(&[5, 1, 0, 3]), Ok(5));
        assert_eq!(Request::wanted_len(&[5, 1, 0, 3, 11]), Ok(18));
    }

    #[test]
    fn every_truncation_of_a_request_is_rejected() {
        for bytes in [&CONNECT_V4[..], &CONNECT_V6, &CONNECT_DOMAIN] {
            for cut in 0..bytes.len() {
                assert_eq!(Request::parse(&bytes[..cut]), Err(Error::Truncated), "cut at {cut}");
            }
        }
        for cut in 0..GREETING.len() {
            assert_eq!(Greeting::parse(&GREETING[..cut]), Err(Error::Truncated), "cut at {cut}");
        }
        for cut in 0..REPLY_OK.len() {
            assert_eq!(Reply::parse(&REPLY_OK[..cut]), Err(Error::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_requests() {
        let table: &[(&[u8], Error)] = &[
            (&[4, 1, 0, 1, 1, 2, 3, 4, 0, 80], Error::BadVersion(4)),
            (&[5, 1, 1, 1, 1, 2, 3, 4, 0, 80], Error::BadReserved(1)),
            (&[5, 9, 0, 1, 1, 2, 3, 4, 0, 80], Error::UnknownCommand(9)),
            (&[5, 1, 0, 5, 1, 2, 3, 4, 0, 80], Error::UnknownAddressType(5)),
            (&[5, 1, 0, 3, 0, 0, 80], Error::BadDomain),
            (&[5, 1, 0, 1, 1, 2, 3, 4, 0, 80, 0], Error::TrailingBytes),
            (&[0x47, 0x45, 0x54, 0x20], Error::BadVersion(0x47)),
        ];
        for (bytes, want) in table {
            assert_eq!(Request::parse(bytes), Err(*want), "{bytes:?}");
        }
        assert_eq!(Greeting::parse(&[4, 1, 0]), Err(Error::BadVersion(4)));
    }

    #[test]
    fn reply_round_trip_and_failure_form() {
        let reply = Reply::parse(&REPLY_OK).unwrap();
        assert_eq!(reply.code, ReplyCode::SUCCEEDED);
        assert_eq!(reply.addr, Addr::Ip("127.0.0.1:50000".parse().unwrap()));
        let mut buf = [0xa5; Reply::MAX_LEN];
        let len = reply.emit(&mut buf);
        assert_eq!(&buf[..len], &REPLY_OK);

        let len = Reply::failure(ReplyCode::CONNECTION_REFUSED).emit(&mut buf);
        assert_eq!(&buf[..len], &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // a cheap deterministic sweep standing in for a fuzzer
        let mut state = 0x2545_f491_u32;
        let mut buf = [0u8; 40];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = state as u8;
            }
            buf[0] = 5;
            buf[3] = (state % 6) as u8;
            for len in 0..buf.len() {
                let _ = Request::parse(&buf[..len]);
                let _ = Reply::parse(&buf[..len]);
                let _ = Greeting::parse(&buf[..len]);
                let _ = Request::wanted_len(&buf[..len]);
            }
        }
    }
}
