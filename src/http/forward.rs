//! An absolute-form request forwarded to its origin: one request per client connection.
//!
//! The request goes on in origin-form with its hop-by-hop headers removed and
//! `Connection: close`; its body passes through as it came, exactly as long as its own
//! framing says. The response comes back the same way, also with `Connection: close`, and
//! both connections end after it. Nothing is ever sent on to the origin that the
//! request's framing does not cover, so bytes a client pipelines behind it cannot reach
//! the origin unseen.

use super::reply::Refusal;
use crate::net::is_timeout;
use crate::net::relay::{Meter, RelayEnd, Side};
use crate::session::Context;
use crate::wire::http::{self, BodyLength, ChunkedBody, Header, MAX_RESPONSE_HEAD_LEN, RequestHead, ResponseHead};
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Bytes moved per read while a body passes through.
const BODY_BUF: usize = 64 * 1024;

/// Headers that belong to one connection, never passed on (RFC 9110 §7.6.1), besides
/// those a `Connection` header names. `Host` is set anew from the URL. `Expect` is
/// answered here, since the body is read before the origin's response.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

/// The origin as the request names it: the connection to it, the `Host` to send, and
/// the origin-form target.
pub(super) struct Origin<'a> {
    pub stream: TcpStream,
    pub authority: &'a str,
    pub path: &'a str,
}

/// How an exchange went once the response head was passed on.
pub(super) struct Exchanged {
    pub up: u64,
    pub down: u64,
    /// How it ended, worded as a relay's end is: closed, a limit, an error on one side.
    pub end: RelayEnd,
}

/// Forwards `head` (and its body, from `client`) to the origin and its response back.
/// Fails with the reply to send while the client has heard nothing yet.
pub(super) fn exchange(
    ctx: &Context,
    client: &TcpStream,
    origin: Origin<'_>,
    head: &RequestHead<'_>,
    meter: &Meter,
) -> Result<Exchanged, Refusal> {
    let body = head.body_length().map_err(Refusal::Malformed)?;
    let idle = ctx.config.idle_timeout;
    for stream in [client, &origin.stream] {
        // Both waits end: at the idle timeout, or where there is none, when keepalive
        // finds the peer gone (as a relay's do).
        let set = stream.set_read_timeout(idle).and_then(|()| stream.set_write_timeout(idle));
        set.map_err(|e| Refusal::BadResponse(format!("cannot set timeouts: {e}")))?;
    }
    let expects_continue = http::list(&head.headers, "expect").any(|e| e.eq_ignore_ascii_case(b"100-continue"));
    let mut up = 0;
    let mut down = 0;
    let mut out = Vec::new();
    forwarded_request(head, &origin, &mut out);
    (&origin.stream).write_all(&out).map_err(|e| Refusal::BadResponse(format!("sending the request: {e}")))?;
    up += out.len() as u64;
    if expects_continue && body != BodyLength::Empty {
        (&*client).write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|e| client_gone(&e))?;
    }
    // An origin may answer before it has taken the whole body (a 413, say) and close: its
    // answer is still what the client should hear.
    let mut unsent_body = None;
    match pass_body(client, &origin.stream, body, Vec::new()) {
        Ok(moved) => up += moved,
        Err(Broken::From(e)) => return Err(client_gone(&e)),
        Err(Broken::Framing(e)) => return Err(Refusal::Malformed(e)),
        Err(Broken::To(e)) => unsent_body = Some(e),
    }
    meter.count_moved(up, 0);

    let mut buf = vec![0u8; MAX_RESPONSE_HEAD_LEN];
    let mut have = 0;
    loop {
        let head_len = read_head(&origin.stream, &mut buf, &mut have).map_err(|refusal| match &unsent_body {
            Some(e) => Refusal::BadResponse(format!("sending the request body: {e}")),
            None => refusal,
        })?;
        let response = ResponseHead::parse(&buf[..head_len]).map_err(|e| Refusal::BadResponse(e.to_string()))?;
        if response.status == 101 {
            return Err(Refusal::BadResponse("101 Switching Protocols, which was not asked for".into()));
        }
        let length = response.body_length(head.method).map_err(|e| Refusal::BadResponse(e.to_string()))?;
        out.clear();
        forwarded_response(&response, &mut out);
        let interim = response.status < 200;
        let sent = (&*client).write_all(&out);
        down += out.len() as u64;
        meter.count_moved(0, out.len() as u64);
        if let Err(e) = sent {
            return Ok(Exchanged { up, down, end: RelayEnd::Failed(Side::Client, e) });
        }
        if interim {
            // A 1xx is passed on and the final response follows; bytes read past it
            // belong to that one.
            buf.copy_within(head_len..have, 0);
            have -= head_len;
            continue;
        }
        let early = buf[head_len..have].to_vec();
        let end = match pass_body(&origin.stream, client, length, early) {
            Ok(moved) => {
                down += moved;
                meter.count_moved(0, moved);
                RelayEnd::Closed
            }
            Err(Broken::From(e)) => match idle {
                Some(limit) if is_timeout(&e) => RelayEnd::IdleTimeout(limit),
                _ => RelayEnd::Failed(Side::Target, e),
            },
            Err(Broken::To(e)) => RelayEnd::Failed(Side::Client, e),
            Err(Broken::Framing(e)) => RelayEnd::Failed(Side::Target, io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        return Ok(Exchanged { up, down, end });
    }
}

fn client_gone(e: &io::Error) -> Refusal {
    Refusal::Malformed(crate::wire::Error::BadHttp(if is_timeout(e) {
        "the request body stalled"
    } else {
        "the request body broke off"
    }))
}

fn response_error(e: io::Error) -> Refusal {
    if is_timeout(&e) { Refusal::ResponseTimedOut } else { Refusal::BadResponse(e.to_string()) }
}

/// Reads until the first `have` bytes of `buf` hold a whole response head; returns its length.
fn read_head(origin: &TcpStream, buf: &mut [u8], have: &mut usize) -> Result<usize, Refusal> {
    loop {
        match http::head_len(&buf[..*have]) {
            Ok(len) if len <= *have => return Ok(len),
            _ if *have == buf.len() => return Err(Refusal::BadResponse("response head too long".into())),
            _ => {}
        }
        match read_some(origin, &mut buf[*have..]).map_err(response_error)? {
            0 => return Err(Refusal::BadResponse("closed before a response head".into())),
            n => *have += n,
        }
    }
}

fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match (&*stream).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Whether `name` is hop-by-hop here or named by a `Connection` header of `headers`.
fn is_hop_by_hop(name: &str, headers: &[Header<'_>]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
        || http::list(headers, "connection").any(|listed| listed.eq_ignore_ascii_case(name.as_bytes()))
}

fn forwarded_request(head: &RequestHead<'_>, origin: &Origin<'_>, out: &mut Vec<u8>) {
    let mut headers = vec![Header { name: "Host", value: origin.authority.as_bytes() }];
    headers.extend(head.headers.iter().copied().filter(|h| {
        !is_hop_by_hop(h.name, &head.headers)
            && !h.name.eq_ignore_ascii_case("host")
            && !h.name.eq_ignore_ascii_case("expect")
    }));
    headers.push(Header { name: "Connection", value: b"close" });
    let path = if origin.path.is_empty() { "/" } else { origin.path };
    // In the client's own version: an HTTP/1.0 client cannot read the chunked
    // response a 1.1 request may get.
    RequestHead { method: head.method, target: path, minor_version: head.minor_version, headers }.emit(out);
}

fn forwarded_response(response: &ResponseHead<'_>, out: &mut Vec<u8>) {
    // A message with a transfer coding must not carry a Content-Length too (RFC 9112 §6.2).
    let coded = http::values(&response.headers, "transfer-encoding").next().is_some();
    let passed_on = |h: &Header<'_>| {
        !(is_hop_by_hop(h.name, &response.headers) || coded && h.name.eq_ignore_ascii_case("content-length"))
    };
    let mut headers: Vec<_> = response.headers.iter().copied().filter(passed_on).collect();
    if response.status >= 200 {
        headers.push(Header { name: "Connection", value: b"close" });
    }
    ResponseHead { minor_version: 1, headers, ..response.clone() }.emit(out);
}

/// Why a body stopped passing through.
enum Broken {
    /// Reading from the side it comes from failed, or it closed early.
    From(io::Error),
    /// Writing to the other side failed.
    To(io::Error),
    /// Its chunked framing is malformed.
    Framing(crate::wire::Error),
}

/// Passes a body of `length` from `from` to `to`, starting with `early`, its first bytes
/// if they were read with the head; returns the bytes moved.
fn pass_body(from: &TcpStream, to: &TcpStream, length: BodyLength, early: Vec<u8>) -> Result<u64, Broken> {
    let mut chunked = ChunkedBody::default();
    let mut left = match length {
        BodyLength::Empty => return Ok(0),
        BodyLength::Fixed(len) => len,
        BodyLength::Chunked | BodyLength::UntilClose => u64::MAX,
    };
    let mut moved = 0;
    let mut buf = early;
    let mut filled = buf.len();
    if buf.len() < BODY_BUF {
        buf.resize(BODY_BUF, 0);
    }
    loop {
        if filled == 0 {
            filled = read_some(from, &mut buf).map_err(Broken::From)?;
            if filled == 0 {
                return match length {
                    BodyLength::UntilClose => Ok(moved),
                    _ => {
                        Err(Broken::From(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the body's end")))
                    }
                };
            }
        }
        let take = match length {
            BodyLength::Chunked => chunked.advance(&buf[..filled]).map_err(Broken::Framing)?,
            _ => (filled as u64).min(left) as usize,
        };
        (&*to).write_all(&buf[..take]).map_err(Broken::To)?;
        moved += take as u64;
        left -= take as u64;
        // What lies past the body's end is not this message's: never passed on.
        if left == 0 || chunked.is_done() {
            return Ok(moved);
        }
        filled = 0;
    }
}
