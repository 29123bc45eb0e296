//! HTTP/1.x message heads (RFC 9112) as a proxy sees them: the request a client sends a
//! proxy, the response an origin or an upstream proxy sends back, and where a message's
//! body ends (§6). Pure parse and emit; nothing here reads a socket.
//!
//! Strict where looseness lets two parties disagree on where a message ends: a line ends
//! with CRLF or a bare LF, never a bare CR; no whitespace before a header's colon; no
//! folded header lines; a request with both Content-Length and Transfer-Encoding, or with
//! Content-Length values that differ, is refused.

use super::addr::{Addr, domain_name};
use super::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest request head a client may send (a 431 past it).
pub const MAX_HEAD_LEN: usize = 16 * 1024;
/// The longest response head taken from an origin or an upstream proxy.
pub const MAX_RESPONSE_HEAD_LEN: usize = 64 * 1024;
/// Header lines in one head.
pub const MAX_HEADERS: usize = 128;
/// A chunk-size line with its extensions.
const MAX_CHUNK_LINE_LEN: usize = 4096;
/// The trailer section after the last chunk.
const MAX_TRAILER_LEN: usize = MAX_HEAD_LEN;

/// How long the head at the start of `buf` is, up to and with the empty line that ends it;
/// while it has not ended, one byte more than `buf` holds. Bytes that cannot begin a
/// request or status line (a SOCKS greeting, a TLS ClientHello) fail at once, rather than
/// wait for an end that will not come.
pub fn head_len(buf: &[u8]) -> Result<usize> {
    let first_word = buf.split(|&b| b == b' ').next().unwrap_or_default();
    if !first_word.iter().all(|&b| is_tchar(b) || b == b'/') {
        return Err(Error::BadHttp("not an HTTP request or status line"));
    }
    let mut from = 0;
    while let Some(at) = buf[from..].iter().position(|&b| b == b'\n') {
        let newline = from + at;
        match &buf[newline + 1..] {
            [b'\n', ..] => return Ok(newline + 2),
            [b'\r', b'\n', ..] => return Ok(newline + 3),
            _ => from = newline + 1,
        }
    }
    Ok(buf.len() + 1)
}

/// One header field, its value without the whitespace around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

/// A request head: `METHOD SP TARGET SP HTTP/1.x`, then header lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// The x of `HTTP/1.x`: 0 or 1.
    pub minor_version: u8,
    pub headers: Vec<Header<'a>>,
}

/// A response head: `HTTP/1.x SP STATUS SP REASON`, then header lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    pub minor_version: u8,
    pub status: u16,
    pub reason: &'a str,
    pub headers: Vec<Header<'a>>,
}

/// Where a message's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Fixed(u64),
    /// Chunked: it ends with the last chunk and the trailer section.
    Chunked,
    /// A response that ends when the origin closes the connection.
    UntilClose,
}

/// The lines of a head (its final empty line taken off), each without its line end.
fn lines(bytes: &[u8]) -> Result<impl Iterator<Item = &[u8]> + Clone> {
    let len = head_len(bytes)?;
    if len != bytes.len() {
        return Err(if len > bytes.len() { Error::Truncated } else { Error::TrailingBytes });
    }
    let body = bytes.strip_suffix(b"\r\n").or_else(|| bytes.strip_suffix(b"\n")).expect("a head ends in a line end");
    let body = body.strip_suffix(b"\n").expect("the line before the empty one ends");
    let lines = body.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    if lines.clone().any(|line| line.contains(&b'\r')) {
        return Err(Error::BadHttp("bare CR in the head"));
    }
    Ok(lines)
}

/// A token (RFC 9110 §5.6.2): method and header names.
fn is_token(text: &[u8]) -> bool {
    !text.is_empty() && text.iter().all(|&b| is_tchar(b))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_version(text: &[u8]) -> Result<u8> {
    match text {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        [b'H', b'T', b'T', b'P', b'/', ..] => Err(Error::BadHttp("not HTTP/1.0 or HTTP/1.1")),
        _ => Err(Error::BadHttp("no HTTP version")),
    }
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Header<'a>>> {
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(Error::BadHttp("too many header lines"));
        }
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(Error::BadHttp("folded header line"));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(Error::BadHttp("header line without a colon"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_token(name) {
            return Err(Error::BadHttp("bad header name"));
        }
        if value.iter().any(|&b| b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Error::BadHttp("control character in a header value"));
        }
        let value = value.trim_ascii();
        let name = std::str::from_utf8(name).expect("a token is ASCII");
        headers.push(Header { name, value });
    }
    Ok(headers)
}

impl<'a> RequestHead<'a> {
    /// Parses a whole request head, as [`head_len`] framed it.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut lines = lines(bytes)?;
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::BadHttp("request line is not METHOD TARGET VERSION"));
        };
        if !is_token(method) {
            return Err(Error::BadHttp("bad method"));
        }
        if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
            return Err(Error::BadHttp("bad request target"));
        }
        let minor_version = parse_version(version)?;
        let headers = parse_headers(lines)?;
        Ok(RequestHead {
            method: std::str::from_utf8(method).expect("a token is ASCII"),
            target: std::str::from_utf8(target).expect("checked ASCII"),
            minor_version,
            headers,
        })
    }

    /// Writes the head, with CRLF line ends, to the end of `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(if self.minor_version == 0 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
        emit_headers(&self.headers, out);
    }

    /// Where the request's body ends. A request says so itself or has none; one that
    /// leaves it in doubt is refused, never guessed at.
    pub fn body_length(&self) -> Result<BodyLength> {
        match (transfer_coding(&self.headers)?, content_length(&self.headers)?) {
            (Some(_), Some(_)) => Err(Error::BadHttp("both Content-Length and Transfer-Encoding")),
            (Some(true), None) => Ok(BodyLength::Chunked),
            (Some(false), None) => Err(Error::BadHttp("a transfer coding other than chunked last")),
            (None, Some(0)) | (None, None) => Ok(BodyLength::Empty),
            (None, Some(len)) => Ok(BodyLength::Fixed(len)),
        }
    }
}

impl<'a> ResponseHead<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut lines = lines(bytes)?;
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, |&b| b == b' ');
        let (Some(version), Some(status)) = (parts.next(), parts.next()) else {
            return Err(Error::BadHttp("status line is not VERSION STATUS REASON"));
        };
        let minor_version = parse_version(version)?;
        let status = match status {
            [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(Error::BadHttp("status is not three digits")),
        };
        if status < 100 {
            return Err(Error::BadHttp("status below 100"));
        }
        let reason = parts.next().unwrap_or_default();
        if reason.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
            return Err(Error::BadHttp("control character in the reason"));
        }
        let headers = parse_headers(lines)?;
        Ok(ResponseHead {
            minor_version,
            status,
            reason: std::str::from_utf8(reason).map_err(|_| Error::BadHttp("reason is not UTF-8"))?,
            headers,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.minor_version == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(format!("{:03} ", self.status).as_bytes());
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        emit_headers(&self.headers, out);
    }

    /// Where the body of this response to a `method` request ends (RFC 9112 §6.3).
    pub fn body_length(&self, method: &str) -> Result<BodyLength> {
        if method == "HEAD" || self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(BodyLength::Empty);
        }
        match transfer_coding(&self.headers)? {
            Some(true) => Ok(BodyLength::Chunked),
            Some(false) => Ok(BodyLength::UntilClose),
            None => match content_length(&self.headers)? {
                Some(0) => Ok(BodyLength::Empty),
                Some(len) => Ok(BodyLength::Fixed(len)),
                None => Ok(BodyLength::UntilClose),
            },
        }
    }
}

fn emit_headers(headers: &[Header<'_>], out: &mut Vec<u8>) {
    for header in headers {
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The values of every `name` header, in order, case-insensitively.
pub fn values<'h, 'a>(headers: &'h [Header<'a>], name: &'h str) -> impl Iterator<Item = &'a [u8]> + 'h {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// The comma-separated elements of every `name` header, trimmed, empty ones skipped.
pub fn list<'h, 'a>(headers: &'h [Header<'a>], name: &'h str) -> impl Iterator<Item = &'a [u8]> + 'h {
    values(headers, name)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// Transfer-Encoding: `None` without one; else whether chunked is the last coding.
fn transfer_coding(headers: &[Header<'_>]) -> Result<Option<bool>> {
    let mut last = None;
    for coding in list(headers, "transfer-encoding") {
        last = Some(coding.eq_ignore_ascii_case(b"chunked"));
    }
    match (last, values(headers, "transfer-encoding").next()) {
        (None, Some(_)) => Err(Error::BadHttp("empty Transfer-Encoding")),
        _ => Ok(last),
    }
}

/// Content-Length: all its values must be the same number.
fn content_length(headers: &[Header<'_>]) -> Result<Option<u64>> {
    let mut found = None;
    for value in list(headers, "content-length") {
        let len = parse_decimal(value).ok_or(Error::BadHttp("bad Content-Length"))?;
        if found.is_some_and(|earlier| earlier != len) {
            return Err(Error::BadHttp("Content-Length values differ"));
        }
        found = Some(len);
    }
    Ok(found)
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// `HOST:PORT`, `[IPV6]:PORT`, or the same without `:PORT` when `default_port` is given.
pub fn parse_authority(text: &str, default_port: Option<u16>) -> Result<Addr<'_>> {
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or(Error::BadHttp("no ']' after an IPv6 address"))?;
            let ip = host.parse::<Ipv6Addr>().map_err(|_| Error::BadHttp("bad IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(Error::BadHttp("bad port"))?),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (Host::Name(host), Some(port)),
            None => (Host::Name(text), None),
        },
    };
    let port = match port {
        Some(port) => match parse_decimal(port.as_bytes()) {
            Some(port @ 1..=65535) => port as u16,
            _ => return Err(Error::BadHttp("bad port")),
        },
        None => default_port.ok_or(Error::BadHttp("no port"))?,
    };
    match host {
        Host::Ip(ip) => Ok(Addr::Ip(SocketAddr::new(ip, port))),
        Host::Name(name) => match name.parse::<Ipv4Addr>() {
            Ok(ip) => Ok(Addr::Ip(SocketAddr::new(IpAddr::V4(ip), port))),
            Err(_) if name.contains([':', '@', '/', '[', ']']) => Err(Error::BadHttp("bad host")),
            Err(_) => Ok(Addr::Domain(domain_name(name.as_bytes())?, port)),
        },
    }
}

enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// An absolute-form target, `http://AUTHORITY[/PATH][?QUERY]`, split into where to
/// connect and the origin-form target (`/PATH?QUERY`, at least `/`) to send there.
pub fn parse_absolute(target: &str) -> Result<(Addr<'_>, &str, &str)> {
    let scheme_end = target.find("://").ok_or(Error::BadHttp("not an absolute URL"))?;
    if !target[..scheme_end].eq_ignore_ascii_case("http") {
        return Err(Error::BadHttp("only http:// URLs are forwarded (https goes through CONNECT)"));
    }
    let rest = &target[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(Error::BadHttp("user info in the URL"));
    }
    let path = path.split_once('#').map_or(path, |(path, _)| path);
    Ok((parse_authority(authority, Some(80))?, authority, path))
}

/// Where a chunked body ends, found by reading it as it passes: [`ChunkedBody::advance`]
/// takes the bytes that belong to the body and stops at its last byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedBody {
    state: Chunk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digits, whether past them, the line's length.
    Size {
        size: u64,
        digits: u8,
        extension: bool,
        len: usize,
    },
    /// `left` bytes of chunk data to go.
    Data {
        left: u64,
    },
    /// The line end after chunk data; `cr` once its CR is in.
    DataEnd {
        cr: bool,
    },
    /// In the trailer section: the current line's length and the section's.
    Trailer {
        line: usize,
        total: usize,
    },
    Done,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        ChunkedBody { state: Chunk::Size { size: 0, digits: 0, extension: false, len: 0 } }
    }
}

impl ChunkedBody {
    /// Takes from `bytes` those that belong to the body, stopping after its last byte;
    /// returns how many it took.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize> {
        let mut at = 0;
        while at < bytes.len() && !self.is_done() {
            if let Chunk::Data { left } = self.state {
                let take = left.min((bytes.len() - at) as u64) as usize;
                at += take;
                self.state = match left - take as u64 {
                    0 => Chunk::DataEnd { cr: false },
                    left => Chunk::Data { left },
                };
                continue;
            }
            self.state = self.step(bytes[at])?;
            at += 1;
        }
        Ok(at)
    }

    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    fn step(&self, byte: u8) -> Result<Chunk> {
        let bad = |why| Err(Error::BadHttp(why));
        match self.state {
            Chunk::Size { size, digits, extension, len } => {
                if len >= MAX_CHUNK_LINE_LEN {
                    return bad("chunk-size line too long");
                }
                let len = len + 1;
                match byte {
                    b'\n' if digits == 0 => bad("chunk without a size"),
                    b'\n' if size == 0 => Ok(Chunk::Trailer { line: 0, total: 0 }),
                    b'\n' => Ok(Chunk::Data { left: size }),
                    _ if extension => match byte {
                        b'\r' | b'\t' | 0x20..=0x7e => Ok(Chunk::Size { size, digits, extension, len }),
                        _ => bad("bad chunk extension"),
                    },
                    b';' | b' ' | b'\t' | b'\r' if digits > 0 => Ok(Chunk::Size { size, digits, extension: true, len }),
                    _ => match (byte as char).to_digit(16) {
                        Some(_) if digits == 16 => bad("chunk size too large"),
                        Some(d) => {
                            Ok(Chunk::Size { size: size << 4 | u64::from(d), digits: digits + 1, extension, len })
                        }
                        None => bad("bad chunk size"),
                    },
                }
            }
            Chunk::DataEnd { cr } => match byte {
                b'\r' if !cr => Ok(Chunk::DataEnd { cr: true }),
                b'\n' => Ok(Chunk::Size { size: 0, digits: 0, extension: false, len: 0 }),
                _ => bad("chunk data longer than its size"),
            },
            Chunk::Trailer { line, total } => {
                if total >= MAX_TRAILER_LEN {
                    return bad("trailer section too long");
                }
                match byte {
                    b'\n' if line == 0 => Ok(Chunk::Done),
                    b'\n' => Ok(Chunk::Trailer { line: 0, total: total + 1 }),
                    b'\r' => Ok(Chunk::Trailer { line, total: total + 1 }),
                    _ => Ok(Chunk::Trailer { line: line + 1, total: total + 1 }),
                }
            }
            Chunk::Data { .. } | Chunk::Done => unreachable!("advance handles data and stops when done"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT: &[u8] = b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\
        Proxy-Authorization: Basic dTpw\r\n\r\n";
    const GET: &[u8] = b"GET http://[::1]:8080/a?b=c HTTP/1.0\nHost:  x \nConnection: keep-alive, TE\n\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 Connection established\r\nVia: 1.1 up\r\n\r\n";

    #[test]
    fn a_head_ends_at_its_empty_line() {
        assert_eq!(head_len(CONNECT), Ok(CONNECT.len()));
        assert_eq!(head_len(GET), Ok(GET.len()));
        let mut pipelined = CONNECT.to_vec();
        pipelined.extend_from_slice(&[0x16, 3, 1, 0, 5]);
        assert_eq!(head_len(&pipelined), Ok(CONNECT.len()), "bytes behind the head are not the head's");
        for cut in 0..CONNECT.len() {
            assert_eq!(head_len(&CONNECT[..cut]), Ok(cut + 1), "cut at {cut}");
        }
        let not_http = Err(Error::BadHttp("not an HTTP request or status line"));
        for other in [&[5u8, 1, 0][..], &[4, 1, 0, 80], &[0x16, 3, 1], b"GET\r\n", b"\r\n\r\n"] {
            assert_eq!(head_len(other), not_http, "{other:?}");
        }
    }

    #[test]
    fn parses_a_connect_and_an_absolute_get() {
        let head = RequestHead::parse(CONNECT).unwrap();
        assert_eq!((head.method, head.target, head.minor_version), ("CONNECT", "example.org:443", 1));
        assert_eq!(values(&head.headers, "proxy-authorization").collect::<Vec<_>>(), [&b"Basic dTpw"[..]]);
        assert_eq!(parse_authority(head.target, None), Ok(Addr::Domain("example.org", 443)));

        let head = RequestHead::parse(GET).unwrap();
        assert_eq!(head.minor_version, 0);
        assert_eq!(head.headers[0], Header { name: "Host", value: b"x" });
        assert_eq!(list(&head.headers, "CONNECTION").collect::<Vec<_>>(), [&b"keep-alive"[..], b"TE"]);
        let (addr, authority, path) = parse_absolute(head.target).unwrap();
        assert_eq!((addr, authority, path), (Addr::Ip("[::1]:8080".parse().unwrap()), "[::1]:8080", "/a?b=c"));
    }

    #[test]
    fn emit_round_trips_with_crlf() {
        for fixture in [CONNECT, GET] {
            let head = RequestHead::parse(fixture).unwrap();
            let mut out = vec![0xa5; 3];
            head.emit(&mut out);
            assert_eq!(&out[..3], [0xa5; 3], "emit appends");
            assert_eq!(RequestHead::parse(&out[3..]), Ok(head));
        }
        let mut out = Vec::new();
        RequestHead::parse(CONNECT).unwrap().emit(&mut out);
        assert_eq!(out, CONNECT);
        let response = ResponseHead::parse(RESPONSE).unwrap();
        assert_eq!((response.status, response.reason), (200, "Connection established"));
        let mut out = Vec::new();
        response.emit(&mut out);
        assert_eq!(out, RESPONSE);
    }

    #[test]
    fn authorities_and_absolute_urls() {
        let ok = [
            ("example.org:80", Addr::Domain("example.org", 80)),
            ("127.0.0.1:8080", Addr::Ip("127.0.0.1:8080".parse().unwrap())),
            ("[2001:db8::1]:443", Addr::Ip("[2001:db8::1]:443".parse().unwrap())),
        ];
        for (text, addr) in ok {
            assert_eq!(parse_authority(text, None), Ok(addr), "{text}");
        }
        assert_eq!(parse_authority("example.org", Some(80)), Ok(Addr::Domain("example.org", 80)));
        assert_eq!(parse_authority("[::1]", Some(80)), Ok(Addr::Ip("[::1]:80".parse().unwrap())));
        for bad in ["example.org", "example.org:0", "example.org:65536", "x:-1", "[::1", "[nope]:80", "::1:80", ":80"] {
            assert!(parse_authority(bad, None).is_err(), "{bad}");
        }
        assert_eq!(parse_absolute("HTTP://a.example").unwrap(), (Addr::Domain("a.example", 80), "a.example", ""));
        assert_eq!(parse_absolute("http://a.example?q#f").unwrap().2, "?q");
        for bad in ["/index.html", "https://a.example/", "http://u:p@a.example/", "http:///x"] {
            assert!(parse_absolute(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_lengths_are_never_guessed() {
        let request = |headers: &str| format!("POST http://a/ HTTP/1.1\r\n{headers}\r\n");
        let cases: [(&str, Result<BodyLength>); 9] = [
            ("", Ok(BodyLength::Empty)),
            ("Content-Length: 0\r\n", Ok(BodyLength::Empty)),
            ("Content-Length: 12\r\n", Ok(BodyLength::Fixed(12))),
            ("Content-Length: 12\r\nContent-Length: 12\r\n", Ok(BodyLength::Fixed(12))),
            ("Transfer-Encoding: gzip, Chunked\r\n", Ok(BodyLength::Chunked)),
            ("Content-Length: 12, 13\r\n", Err(Error::BadHttp("Content-Length values differ"))),
            ("Content-Length: +12\r\n", Err(Error::BadHttp("bad Content-Length"))),
            ("Transfer-Encoding: chunked, gzip\r\n", Err(Error::BadHttp("a transfer coding other than chunked last"))),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                Err(Error::BadHttp("both Content-Length and Transfer-Encoding")),
            ),
        ];
        for (headers, length) in cases {
            let text = request(headers);
            assert_eq!(RequestHead::parse(text.as_bytes()).unwrap().body_length(), length, "{headers}");
        }
        let response = |text: &str, method| ResponseHead::parse(text.as_bytes()).unwrap().body_length(method).unwrap();
        assert_eq!(response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET"), BodyLength::Fixed(5));
        assert_eq!(response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD"), BodyLength::Empty);
        assert_eq!(response("HTTP/1.1 304 Not Modified\r\n\r\n", "GET"), BodyLength::Empty);
        assert_eq!(response("HTTP/1.1 200 OK\r\n\r\n", "GET"), BodyLength::UntilClose);
        let both = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(response(both, "GET"), BodyLength::Chunked, "chunked wins in a response");
    }

    #[test]
    fn malformed_heads() {
        let cases: [(&[u8], Error); 13] = [
            (b"GET / HTTP/1.1\r\n", Error::Truncated),
            (b"GET / HTTP/1.1\r\n\r\nX", Error::TrailingBytes),
            (b"GET /  HTTP/1.1\r\n\r\n", Error::BadHttp("request line is not METHOD TARGET VERSION")),
            (b"GET / HTTP/2.0\r\n\r\n", Error::BadHttp("not HTTP/1.0 or HTTP/1.1")),
            (b"\x05\x01\x00 / HTTP/1.1\r\n\r\n", Error::BadHttp("not an HTTP request or status line")),
            (b"G/T / HTTP/1.1\r\n\r\n", Error::BadHttp("bad method")),
            (b"GET /\x7f HTTP/1.1\r\n\r\n", Error::BadHttp("bad request target")),
            (b"GET / HTTP/1.1\rX: y\r\n\r\n", Error::BadHttp("bare CR in the head")),
            (b"GET / HTTP/1.1\r\nX : y\r\n\r\n", Error::BadHttp("bad header name")),
            (b"GET / HTTP/1.1\r\nX: y\r\n z\r\n\r\n", Error::BadHttp("folded header line")),
            (b"GET / HTTP/1.1\r\nX y\r\n\r\n", Error::BadHttp("header line without a colon")),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", Error::BadHttp("control character in a header value")),
            (b"\r\n\r\n", Error::BadHttp("not an HTTP request or status line")),
        ];
        for (bytes, error) in cases {
            assert_eq!(RequestHead::parse(bytes), Err(error), "{}", String::from_utf8_lossy(bytes));
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(RequestHead::parse(many.as_bytes()), Err(Error::BadHttp("too many header lines")));
        for bad in [&b"HTTP/1.1 20 OK\r\n\r\n"[..], b"HTTP/1.1 099 X\r\n\r\n", b"SSH-2.0\r\n\r\n", b"HTTP/1.1\r\n\r\n"]
        {
            assert!(ResponseHead::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Feeds `body` to a chunked reader in pieces of `step` bytes; returns where it ended.
    fn chunked_end(body: &[u8], step: usize) -> Result<Option<usize>> {
        let mut reader = ChunkedBody::default();
        let mut at = 0;
        while at < body.len() && !reader.is_done() {
            let end = (at + step).min(body.len());
            at += reader.advance(&body[at..end])?;
        }
        Ok(reader.is_done().then_some(at))
    }

    #[test]
    fn a_chunked_body_ends_after_its_trailers_in_any_split() {
        let body = b"5;name=val\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nExpires: never\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(chunked_end(body, step), Ok(Some(end)), "step {step}");
        }
        assert_eq!(chunked_end(b"0\n\nX", 1), Ok(Some(3)), "bare LF line ends");
        assert_eq!(chunked_end(b"3\r\nabc\r\n", 2), Ok(None), "not ended yet");
    }

    #[test]
    fn malformed_chunked_bodies() {
        let cases: [(&[u8], &str); 6] = [
            (b"\n", "chunk without a size"),
            (b"x\r\n", "bad chunk size"),
            (b"3\r\nabcd\r\n", "chunk data longer than its size"),
            (b"11111111111111111\r\n", "chunk size too large"),
            (b"3;\x01\r\n", "bad chunk extension"),
            (b";3\r\n", "bad chunk size"),
        ];
        for (body, why) in cases {
            assert_eq!(chunked_end(body, 1), Err(Error::BadHttp(why)), "{}", String::from_utf8_lossy(body));
        }
        let long_line = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE_LEN));
        assert_eq!(chunked_end(long_line.as_bytes(), 4096), Err(Error::BadHttp("chunk-size line too long")));
        let long_trailer = format!("0\r\n{}", "x".repeat(MAX_TRAILER_LEN + 1));
        assert_eq!(chunked_end(long_trailer.as_bytes(), 999), Err(Error::BadHttp("trailer section too long")));
    }
}
