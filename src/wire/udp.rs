//! The header on every UDP ASSOCIATE datagram, both ways (RFC 1928 §7):
//! `RSV(2)=0 | FRAG | ATYP | DST.ADDR | DST.PORT | DATA`.

use super::addr::{self, Addr};
use super::{Error, Result};

mod field {
    use std::ops::Range;
    pub(super) const RSV: Range<usize> = 0..2;
    pub(super) const FRAG: usize = 2;
    pub(super) const ADDR: usize = 3;
}

/// The longest header: a 255-byte domain name.
pub const MAX_HEADER_LEN: usize = field::ADDR + addr::MAX_LEN;
/// The longest header that carries an IP address (IPv6), as on every datagram a relay
/// sends back: room reserved in front of a reply's payload so the header goes in place.
pub const MAX_IP_HEADER_LEN: usize = field::ADDR + 1 + 16 + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Fragment number; 0 for a whole datagram, which is all burrowd relays.
    pub frag: u8,
    pub addr: Addr<'a>,
}

impl<'a> Header<'a> {
    /// Parses the header at the start of a datagram; returns it and the offset of the
    /// payload.
    pub fn parse(datagram: &'a [u8]) -> Result<(Self, usize)> {
        if datagram.len() <= field::ADDR {
            return Err(Error::Truncated);
        }
        let rsv = &datagram[field::RSV];
        if rsv != [0, 0] {
            return Err(Error::BadReserved(rsv[0] | rsv[1]));
        }
        let (addr, len) = addr::parse(&datagram[field::ADDR..])?;
        Ok((Header { frag: datagram[field::FRAG], addr }, field::ADDR + len))
    }

    pub fn encoded_len(&self) -> usize {
        field::ADDR + self.addr.encoded_len()
    }

    /// Writes the header at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        buf[field::RSV].fill(0);
        buf[field::FRAG] = self.frag;
        field::ADDR + self.addr.emit(&mut buf[field::ADDR..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO_V4: [u8; 13] = [0, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'a', b'b', b'c'];
    const TO_DOMAIN: [u8; 16] = [0, 0, 0, 3, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', 0, 53];

    #[test]
    fn parses_header_and_finds_payload() {
        let (header, at) = Header::parse(&TO_V4).unwrap();
        assert_eq!(header, Header { frag: 0, addr: Addr::Ip("127.0.0.1:53".parse().unwrap()) });
        assert_eq!(&TO_V4[at..], b"abc");
        let (header, at) = Header::parse(&TO_DOMAIN).unwrap();
        assert_eq!(header.addr, Addr::Domain("localhost", 53));
        assert_eq!(at, TO_DOMAIN.len(), "an empty payload is legal");
    }

    #[test]
    fn emit_round_trip_over_junk() {
        let header = Header { frag: 0, addr: Addr::Ip("[::1]:5353".parse().unwrap()) };
        let mut buf = [0xa5; MAX_HEADER_LEN];
        let len = header.emit(&mut buf);
        assert_eq!(len, header.encoded_len());
        assert_eq!(Header::parse(&buf[..len]), Ok((header, len)));
        assert_eq!(buf[len], 0xa5);
    }

    #[test]
    fn ip_headers_fit_the_reserved_room() {
        for ip in ["127.0.0.1:53", "[::1]:53"] {
            let header = Header { frag: 0, addr: Addr::Ip(ip.parse().unwrap()) };
            assert!(header.encoded_len() <= MAX_IP_HEADER_LEN);
        }
        let v6 = Header { frag: 0, addr: Addr::Ip("[2001:db8::1]:53".parse().unwrap()) };
        assert_eq!(v6.encoded_len(), MAX_IP_HEADER_LEN);
    }

    #[test]
    fn malformed_headers() {
        for cut in 0..10 {
            assert_eq!(Header::parse(&TO_V4[..cut]), Err(Error::Truncated), "cut at {cut}");
        }
        assert_eq!(Header::parse(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 53]), Err(Error::BadReserved(1)));
        assert_eq!(Header::parse(&[0, 0, 0, 7, 1, 2, 3, 4, 0, 53]), Err(Error::UnknownAddressType(7)));
        // a non-zero FRAG parses; dropping it is the relay's decision
        assert_eq!(Header::parse(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 53]).unwrap().0.frag, 1);
    }
}
