//! Wire formats: pure parse and emit over byte slices, no I/O.
//!
//! Every message follows one pattern, after smoltcp's `wire` module:
//! - `wanted_len(prefix)` says how many bytes the whole message needs, judging from the
//!   bytes read so far, so a reader can fetch exactly those and nothing the client sent
//!   after them;
//! - `parse(bytes)` turns a whole message into a small typed value or a typed [`Error`];
//! - `emit(&self, buf)` writes the value back and returns how many bytes it wrote.
//!
//! Parsing untrusted bytes never panics: lengths are checked before any index.

pub mod addr;
pub mod base64;
pub mod http;
pub mod printable;
pub mod proxy_header;
pub mod socks4;
pub mod socks5;
pub mod udp;
pub mod userpass;

use std::fmt;

/// Why a sequence of bytes is not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the message's own length fields call for.
    Truncated,
    /// More bytes than the message's length fields call for.
    TrailingBytes,
    /// The version byte is not the one this message carries.
    BadVersion(u8),
    /// A reserved byte that must be zero is not.
    BadReserved(u8),
    /// A command code this protocol does not define.
    UnknownCommand(u8),
    /// An address type (ATYP) this protocol does not define.
    UnknownAddressType(u8),
    /// A domain name of length zero.
    BadDomain,
    /// A domain name that is not a host name: a byte other than an ASCII letter, digit,
    /// `-`, `_` or `.` (a resolver may decode `\DDD` escapes or worse), an empty label, or
    /// a label over 63 bytes. Never resolved, since rules could not judge what a resolver
    /// would make of it.
    NotAHostName,
    /// A variable-length field longer than its bound (SOCKS4 USERID or host name, an
    /// HTTP head, a PROXY v1 line).
    FieldTooLong,
    /// Text that is not valid base64.
    BadEncoding,
    /// An HTTP head or chunked body that breaks RFC 9112; says which rule.
    BadHttp(&'static str),
    /// The bytes begin neither PROXY header's signature.
    NotProxyHeader,
    /// A PROXY v1 line that is not `PROXY TCP4|TCP6 SRC DST SPORT DPORT` or `PROXY UNKNOWN`
    /// ending in CRLF.
    BadProxyLine,
    /// A PROXY v2 TLV that runs past the end of its header.
    BadTlv,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "message truncated"),
            Error::TrailingBytes => write!(f, "unexpected bytes after message"),
            Error::BadVersion(v) => write!(f, "bad version byte {v:#04x}"),
            Error::BadReserved(v) => write!(f, "reserved byte is {v:#04x}, not zero"),
            Error::UnknownCommand(c) => write!(f, "unknown command {c:#04x}"),
            Error::UnknownAddressType(a) => write!(f, "unknown address type {a:#04x}"),
            Error::BadDomain => write!(f, "domain name empty"),
            Error::NotAHostName => write!(f, "domain name is not a host name"),
            Error::FieldTooLong => write!(f, "field longer than allowed"),
            Error::BadEncoding => write!(f, "bad base64"),
            Error::BadHttp(why) => write!(f, "bad HTTP: {why}"),
            Error::NotProxyHeader => write!(f, "no PROXY protocol header"),
            Error::BadProxyLine => write!(f, "malformed PROXY v1 line"),
            Error::BadTlv => write!(f, "PROXY v2 TLV runs past the header"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Checks that `buf` is exactly `len` bytes long.
fn expect_len(buf: &[u8], len: usize) -> Result<()> {
    match buf.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(Error::Truncated),
        std::cmp::Ordering::Greater => Err(Error::TrailingBytes),
        std::cmp::Ordering::Equal => Ok(()),
    }
}
