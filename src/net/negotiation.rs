//! Reads one whole protocol message from a client within the handshake deadline, taking
//! exactly the message's bytes off the socket so data behind it stays for the relay.

use super::admission::{Waiting, sole};
use super::is_timeout;
use crate::wire;
use crate::wire::proxy_header::{Header, V1_MAX_LEN};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a handshake could not go on.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The peer closed the connection part-way through a message.
    Closed,
    /// The whole negotiation took longer than the handshake timeout.
    TimedOut,
    /// The bytes are not a valid message.
    Malformed(wire::Error),
    /// A socket error while reading or writing.
    Io(io::Error),
    /// We shut the client down to make room for a newer one (see `net::admission`).
    Reclaimed,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Closed => write!(f, "peer closed during handshake"),
            HandshakeError::TimedOut => write!(f, "handshake timed out"),
            HandshakeError::Malformed(e) => write!(f, "malformed message: {e}"),
            HandshakeError::Io(e) => write!(f, "handshake i/o error: {e}"),
            HandshakeError::Reclaimed => {
                write!(f, "closed to make room for a newer client: the handshake was still unfinished")
            }
        }
    }
}

impl From<wire::Error> for HandshakeError {
    fn from(e: wire::Error) -> Self {
        HandshakeError::Malformed(e)
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        if is_timeout(&e) { HandshakeError::TimedOut } else { HandshakeError::Io(e) }
    }
}

/// Reads and writes one side of a negotiation under a single deadline.
///
/// The socket's read timeout is set once to the whole budget and only lowered again when
/// the time left has fallen well below it, so a quick client costs one setsockopt, while a
/// client dribbling bytes still cannot stretch the negotiation past the deadline by more
/// than `REARM_SLACK`.
pub(crate) struct Negotiation {
    /// Shared only with the admission books, which hold it weakly to cut off a client that
    /// may still be reclaimed (see `admission::sole`).
    stream: Arc<TcpStream>,
    deadline: Instant,
    armed: Duration,
    /// A client's place among those that may be reclaimed, until its request is in.
    waiting: Option<Waiting>,
    /// What [`Negotiation::peek_first_byte`] saw waiting in the socket: the start of the
    /// first message, which its read then takes without peeking again.
    seen: Seen,
}

const REARM_SLACK: Duration = Duration::from_millis(250);

/// Bytes of the first message kept from the first peek: a SOCKS5 greeting is 3 or 4.
const SEEN_MAX: usize = 16;

/// The bytes the last peek saw at the socket's head, still unread.
#[derive(Default)]
struct Seen {
    bytes: [u8; SEEN_MAX],
    len: usize,
}

impl Negotiation {
    pub(crate) fn new(stream: TcpStream, budget: Duration) -> io::Result<Self> {
        Negotiation::start(Arc::new(stream), budget, None)
    }

    /// A client's negotiation, reclaimable while `waiting` is held: a read that fails
    /// because the client was reclaimed reports [`HandshakeError::Reclaimed`]. `armed` is
    /// the read timeout the socket is known to carry already (its listener's, see
    /// `sockopt::listen`): when it is given, no call sets one unless the budget is shorter.
    pub(crate) fn for_client(
        stream: Arc<TcpStream>,
        budget: Duration,
        armed: Option<Duration>,
        waiting: Option<Waiting>,
    ) -> io::Result<Self> {
        Ok(Negotiation { waiting, ..Negotiation::start(stream, budget, armed)? })
    }

    fn start(stream: Arc<TcpStream>, budget: Duration, armed: Option<Duration>) -> io::Result<Self> {
        let armed = match armed {
            Some(armed) => armed,
            None => {
                stream.set_read_timeout(Some(budget))?;
                budget
            }
        };
        Ok(Negotiation { stream, deadline: Instant::now() + budget, armed, waiting: None, seen: Seen::default() })
    }

    /// The client's request is complete: what it waits for now is our work (a connect,
    /// a BIND), so it may no longer be reclaimed. Fails if it was reclaimed already.
    pub(crate) fn heard_request(&mut self) -> Result<(), HandshakeError> {
        match self.waiting.take().map(Waiting::stop) {
            Some(true) => Err(HandshakeError::Reclaimed),
            _ => Ok(()),
        }
    }

    /// A failure as the log line should tell it: a reclaimed client's failing read is
    /// our doing, not the client's.
    fn blame(&self, e: HandshakeError) -> HandshakeError {
        match &self.waiting {
            Some(waiting) if waiting.was_reclaimed() => HandshakeError::Reclaimed,
            _ => e,
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Ends the negotiation and hands the socket on, to the relay or to be closed. Called
    /// once the client's request is heard, when the books may no longer cut it.
    pub(crate) fn into_stream(self) -> TcpStream {
        let Negotiation { stream, waiting, .. } = self;
        drop(waiting);
        sole(stream)
    }

    /// Ends an upstream negotiation whose socket the relay reads as a target: without
    /// the read timeout set here, as the relay expects a target to come (it then sets
    /// one only where it wants one).
    pub(crate) fn into_target_stream(self) -> io::Result<TcpStream> {
        self.stream.set_read_timeout(None)?;
        Ok(self.into_stream())
    }

    /// Ends this phase of a client's negotiation: its socket, its place among those that
    /// may be reclaimed, and the time left of the handshake budget, for the next phase.
    pub(crate) fn into_parts(self) -> (Arc<TcpStream>, Option<Waiting>, Duration) {
        let left = self.deadline.saturating_duration_since(Instant::now());
        (self.stream, self.waiting, left)
    }

    /// Reads a PROXY protocol header, v1 or v2 (`--proxy-protocol`), taking exactly its
    /// bytes: a v1 line, bounded by its 107 bytes, goes into a buffer that size, as do a
    /// v2 header's first bytes; the rest of a longer v2 header (TLVs), bounded by its
    /// declared length, into one allocated to that length once it is known.
    pub(crate) fn read_proxy_header(&mut self) -> Result<Header, HandshakeError> {
        self.read_proxy_header_inner().map_err(|e| self.blame(e))
    }

    fn read_proxy_header_inner(&mut self) -> Result<Header, HandshakeError> {
        let mut first = [0u8; V1_MAX_LEN];
        let head =
            self.read_message(&mut first, |prefix: &[u8]| Header::wanted_len(prefix).map(|len| len.min(V1_MAX_LEN)))?;
        let total = Header::wanted_len(head)?;
        if total == head.len() {
            return Ok(Header::parse(head)?);
        }
        let mut whole = Vec::with_capacity(total);
        whole.extend_from_slice(head);
        whole.resize(total, 0);
        self.read_exact(&mut whole[V1_MAX_LEN..])?;
        Ok(Header::parse(&whole)?)
    }

    /// Fills `buf`, within the deadline however the bytes trickle in.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), HandshakeError> {
        let mut have = 0;
        while have < buf.len() {
            self.rearm()?;
            match (&*self.stream).read(&mut buf[have..]) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(n) => have += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The first byte the client sent, left in the socket: it tells SOCKS4 from SOCKS5.
    pub(crate) fn peek_first_byte(&mut self) -> Result<u8, HandshakeError> {
        self.peek_first_byte_inner().map_err(|e| self.blame(e))
    }

    fn peek_first_byte_inner(&mut self) -> Result<u8, HandshakeError> {
        loop {
            self.rearm()?;
            match self.stream.peek(&mut self.seen.bytes) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(n) => {
                    self.seen.len = n;
                    return Ok(self.seen.bytes[0]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn rearm(&mut self) -> Result<(), HandshakeError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::TimedOut);
        }
        if left + REARM_SLACK < self.armed {
            self.stream.set_read_timeout(Some(left))?;
            self.armed = left;
        }
        Ok(())
    }

    /// Reads one message into `buf` and returns it. `wanted_len` says how long the message
    /// is from the bytes so far. The reader peeks at what has arrived, then reads exactly the
    /// part that belongs to the message, so a pipelined request or early payload is left in
    /// the socket; a message split over many segments costs one peek and read per segment.
    pub(crate) fn read_message<'b>(
        &mut self,
        buf: &'b mut [u8],
        wanted_len: fn(&[u8]) -> wire::Result<usize>,
    ) -> Result<&'b [u8], HandshakeError> {
        match self.read_message_inner(buf, wanted_len) {
            Ok(len) => Ok(&buf[..len]),
            Err(e) => Err(self.blame(e)),
        }
    }

    fn read_message_inner(
        &mut self,
        buf: &mut [u8],
        wanted_len: fn(&[u8]) -> wire::Result<usize>,
    ) -> Result<usize, HandshakeError> {
        let mut have = 0;
        loop {
            let want = wanted_len(&buf[..have])?;
            if want <= have {
                return Ok(want);
            }
            if want > buf.len() {
                return Err(HandshakeError::Malformed(wire::Error::FieldTooLong));
            }
            self.rearm()?;
            let seen = std::mem::take(&mut self.seen.len).min(buf.len() - have);
            let peeked = if seen > 0 {
                // The first peek's bytes: what a second peek would see again, or less.
                buf[have..have + seen].copy_from_slice(&self.seen.bytes[..seen]);
                seen
            } else {
                match self.stream.peek(&mut buf[have..]) {
                    Ok(0) => return Err(HandshakeError::Closed),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            // Of the peeked bytes, take those the message covers: all of them while it
            // is still incomplete, else up to its end.
            let complete = wanted_len(&buf[..have + peeked])?;
            let take_to = complete.min(have + peeked);
            (&*self.stream).read_exact(&mut buf[have..take_to])?;
            have = take_to;
        }
    }

    /// Writes a reply in one call where the socket allows.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), HandshakeError> {
        (&*self.stream).write_all(bytes).map_err(|e| self.blame(e.into()))
    }
}

/// How long a failure reply's connection lingers, reading, before it is closed. The
/// whole linger is bounded, not each read: a client dribbling a byte at a time must not
/// hold a worker past the 10 seconds RFC 1928 allows after a failure reply.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Closes a connection after a failure reply without destroying the reply: sends FIN,
/// then reads and discards what the client still sends for a moment, because closing
/// with unread data makes the kernel send a reset that can overtake the reply.
pub(crate) fn close_after_reply(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + CLOSE_LINGER;
    let mut sink = [0u8; 512];
    let mut budget: usize = 64 * 1024;
    while budget > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::socks5::{Greeting, Request};
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn takes_exactly_the_message_and_leaves_the_rest() {
        let (mut client, server) = pair();
        client.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80, b'G', b'E', b'T']).unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_secs(5)).unwrap();
        let mut buf = [0u8; Request::MAX_LEN];
        let msg = negotiation.read_message(&mut buf, Request::wanted_len).unwrap();
        assert_eq!(msg.len(), 10);
        let mut rest = [0u8; 3];
        negotiation.stream().read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"GET");
    }

    #[test]
    fn the_first_peek_serves_the_first_message_and_leaves_the_rest() {
        let (mut client, server) = pair();
        // Greeting, request and early payload in one segment; then a greeting longer than
        // what the first peek keeps.
        client.write_all(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80, b'G', b'E', b'T']).unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_secs(5)).unwrap();
        assert_eq!(negotiation.peek_first_byte().unwrap(), 5);
        let mut buf = [0u8; Request::MAX_LEN];
        assert_eq!(negotiation.read_message(&mut buf, Greeting::wanted_len).unwrap(), [5, 1, 0]);
        let request = negotiation.read_message(&mut buf, Request::wanted_len).unwrap();
        assert_eq!(request, [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        let mut rest = [0u8; 3];
        negotiation.stream().read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"GET");

        let (mut client, server) = pair();
        let long: Vec<u8> = [5, 40].into_iter().chain(1..=40).collect();
        client.write_all(&long).unwrap();
        client.write_all(b"rest").unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_secs(5)).unwrap();
        assert_eq!(negotiation.peek_first_byte().unwrap(), 5);
        assert_eq!(negotiation.read_message(&mut buf, Greeting::wanted_len).unwrap(), long);
        let mut rest = [0u8; 4];
        negotiation.stream().read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest");
    }

    #[test]
    fn a_silent_client_times_out() {
        let (_client, server) = pair();
        // Started before the deadline is set, so the lower bound holds however slow the
        // machine; the upper one only tells a cut from a read that waited for something else.
        let started = Instant::now();
        let mut negotiation = Negotiation::new(server, Duration::from_millis(200)).unwrap();
        let mut buf = [0u8; Request::MAX_LEN];
        let err = negotiation.read_message(&mut buf, Request::wanted_len).unwrap_err();
        assert!(matches!(err, HandshakeError::TimedOut), "{err}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(10), "{waited:?}");
    }

    #[test]
    fn a_proxy_header_is_taken_whole_tlvs_and_all_and_nothing_behind_it() {
        use crate::wire::proxy_header::{Addresses, V2_SIGNATURE};
        // v2 over IPv4 with a 200-byte TLV: longer than the first buffer.
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([0x21, 0x11, 0, 12 + 3 + 200]);
        header.extend([192, 0, 2, 7, 127, 0, 0, 1, 0x13, 0x88, 0x04, 0x38, 0xe0, 0, 200]);
        header.extend([0x5a; 200]);
        let (mut client, server) = pair();
        client.write_all(&[&header[..], &[5, 1, 0]].concat()).unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_secs(5)).unwrap();
        let carried = negotiation.read_proxy_header().unwrap();
        let source = "192.0.2.7:5000".parse().unwrap();
        assert!(matches!(carried, Header::Proxied { addresses: Addresses::V4 { source: s, .. }, .. } if s == source));
        assert_eq!(negotiation.peek_first_byte().unwrap(), 5, "the SOCKS greeting is left for the next phase");

        let (mut client, server) = pair();
        client.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 1080\r\n\x05").unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_secs(5)).unwrap();
        assert_eq!(negotiation.read_proxy_header().unwrap().source(), Some(source.into()));
        assert_eq!(negotiation.peek_first_byte().unwrap(), 5);
    }

    #[test]
    fn a_missing_or_endless_proxy_header_is_refused_at_its_bound() {
        let (mut client, server) = pair();
        client.write_all(&[5, 1, 0]).unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_secs(5)).unwrap();
        let err = negotiation.read_proxy_header().unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed(wire::Error::NotProxyHeader)), "{err}");

        let (mut client, server) = pair();
        client.write_all(&[b"PROXY ".as_slice(), &[b'x'; 200]].concat()).unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_secs(5)).unwrap();
        let err = negotiation.read_proxy_header().unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed(wire::Error::FieldTooLong)), "{err}");

        // A v2 header that declares more than it sends times out within the budget.
        let (mut client, server) = pair();
        let mut header = wire::proxy_header::V2_SIGNATURE.to_vec();
        header.extend([0x21, 0x11, 0x01, 0x00]);
        header.extend([0u8; 200]);
        client.write_all(&header).unwrap();
        let mut negotiation = Negotiation::new(server, Duration::from_millis(300)).unwrap();
        let err = negotiation.read_proxy_header().unwrap_err();
        assert!(matches!(err, HandshakeError::TimedOut), "{err}");
    }
}
