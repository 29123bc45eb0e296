//! Username/password sub-negotiation (RFC 1929).

use super::{Error, Result, expect_len};

pub const VERSION: u8 = 1;
pub const STATUS_SUCCESS: u8 = 0;
pub const STATUS_FAILURE: u8 = 1;

/// Client request: `VER | ULEN | UNAME | PLEN | PASSWD`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub user: &'a [u8],
    pub password: &'a [u8],
}

// Written by hand so a password never reaches a log line through `{:?}`.
impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("user", &String::from_utf8_lossy(self.user))
            .field("password", &"<hidden>")
            .finish()
    }
}

impl<'a> Request<'a> {
    pub const MAX_LEN: usize = 3 + 255 + 255;

    pub fn wanted_len(buf: &[u8]) -> Result<usize> {
        match buf {
            [] | [_] => Ok(3),
            [VERSION, ulen, rest @ ..] => {
                let plen_at = 2 + *ulen as usize;
                match rest.get(*ulen as usize) {
                    None => Ok(plen_at + 1),
                    Some(&plen) => Ok(plen_at + 1 + plen as usize),
                }
            }
            [v, ..] => Err(Error::BadVersion(*v)),
        }
    }

    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        expect_len(buf, Self::wanted_len(buf)?)?;
        let ulen = buf[1] as usize;
        Ok(Request { user: &buf[2..2 + ulen], password: &buf[3 + ulen..] })
    }

    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let (ulen, plen) = (self.user.len(), self.password.len());
        buf[0] = VERSION;
        buf[1] = u8::try_from(ulen).expect("user name longer than 255 bytes");
        buf[2..2 + ulen].copy_from_slice(self.user);
        buf[2 + ulen] = u8::try_from(plen).expect("password longer than 255 bytes");
        buf[3 + ulen..3 + ulen + plen].copy_from_slice(self.password);
        3 + ulen + plen
    }
}

/// Server status: `VER | STATUS`, 0 meaning success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub status: u8,
}

impl Status {
    pub const LEN: usize = 2;

    pub fn parse(buf: &[u8]) -> Result<Self> {
        expect_len(buf, Self::LEN)?;
        match buf[0] {
            VERSION => Ok(Status { status: buf[1] }),
            v => Err(Error::BadVersion(v)),
        }
    }

    pub fn emit(&self) -> [u8; Self::LEN] {
        [VERSION, self.status]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: [u8; 12] = [1, 5, b'a', b'l', b'i', b'c', b'e', 3, b'p', b'w', b'd', 0];

    #[test]
    fn parses_and_emits_credentials() {
        let bytes = &ALICE[..11];
        assert_eq!(Request::wanted_len(&bytes[..2]), Ok(8));
        assert_eq!(Request::wanted_len(&bytes[..8]), Ok(11));
        let req = Request::parse(bytes).unwrap();
        assert_eq!((req.user, req.password), (&b"alice"[..], &b"pwd"[..]));
        let mut buf = [0xa5; 16];
        assert_eq!(req.emit(&mut buf), 11);
        assert_eq!(&buf[..12], &[bytes, &[0xa5]].concat()[..]);
    }

    #[test]
    fn debug_hides_the_password() {
        let req = Request::parse(&ALICE[..11]).unwrap();
        let shown = format!("{req:?}");
        assert!(shown.contains("alice") && !shown.contains("pwd"), "{shown}");
    }

    #[test]
    fn malformed_credentials() {
        for cut in 0..11 {
            assert_eq!(Request::parse(&ALICE[..cut]), Err(Error::Truncated), "cut at {cut}");
        }
        assert_eq!(Request::parse(&ALICE), Err(Error::TrailingBytes));
        assert_eq!(Request::parse(&[5, 1, b'a', 1, b'b']), Err(Error::BadVersion(5)));
    }

    #[test]
    fn status_round_trip() {
        assert_eq!(Status { status: STATUS_FAILURE }.emit(), [1, 1]);
        assert_eq!(Status::parse(&[1, 0]), Ok(Status { status: STATUS_SUCCESS }));
        assert_eq!(Status::parse(&[1]), Err(Error::Truncated));
        assert_eq!(Status::parse(&[2, 0]), Err(Error::BadVersion(2)));
    }
}
