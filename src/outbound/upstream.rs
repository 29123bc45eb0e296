//! Outbound traffic through upstream proxies (`-F`): a SOCKS5 client, and an HTTP
//! CONNECT client for HTTP proxy hops, built on [`crate::wire`], run hop by hop over one
//! TCP connection. An HTTP hop carries TCP only: BIND and UDP through a chain that has one
//! fail before any hop is asked.
//!
//! Every command goes through the whole chain. burrowd connects to the first hop and asks
//! it to CONNECT to the second hop, asks that one for the third, and so on; the last hop
//! is asked for the command itself: CONNECT to the target, or BIND (whose two replies come
//! back the same way). Names are sent unresolved, so each hop resolves what it is asked for.
//!
//! UDP takes one association per hop, each on a TCP path of its own through the hops
//! before it. A datagram is sent to the first hop's relay wrapped once per hop: the first
//! hop's header names the second hop's relay, the second's the third's, and the last hop's
//! header, the one our client wrote, names the target. Each hop takes its header off and
//! sends the rest on; replies come back with one header per hop, the outer ones taken off
//! here.

use super::{ConnectError, Connected, Egress, UpstreamError, UpstreamFailure, direct};
use crate::config::rules::Allowed;
use crate::config::{Credentials, Hop, HopKind, SocketOptions, UdpOptions};
use crate::net::negotiation::Negotiation;
use crate::wire::addr::{Addr, TargetAddr};
use crate::wire::base64;
use crate::wire::http::{self, MAX_RESPONSE_HEAD_LEN, ResponseHead};
use crate::wire::socks5::{Command, Greeting, MethodChoice, Reply, ReplyCode, Request, method};
use crate::wire::udp::{Header, MAX_HEADER_LEN};
use crate::wire::userpass;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// Connects to `target` through every hop of `chain` (which must not be empty). Each hop
/// reaches the next within its own connect timeout, so the whole negotiation may take
/// `timeout` once per hop.
pub(crate) fn connect(
    chain: &[Hop],
    target: &Allowed<Addr<'_>>,
    timeout: Duration,
    opts: &SocketOptions,
    egress: &Egress,
) -> Result<Connected, ConnectError> {
    let target = &target.get().to_owned();
    let last = chain.len() - 1;
    let (mut negotiation, first, _) = path_to(chain, last, timeout, opts, egress)?;
    let source = request(&mut negotiation, &chain[last], Command::Connect, target)
        .map_err(|error| hop_error(chain, last, target, true, error))?;
    let stream = negotiation.into_target_stream().map_err(|e| hop_error(chain, last, target, true, e.into()))?;
    Ok(Connected { stream, peer: first.peer, local: first.local, source })
}

/// A BIND the last hop of the chain serves: it listens, and its second reply is to come.
pub(crate) struct UpstreamBind {
    stream: TcpStream,
    /// Where the last hop listens for the peer, from its first reply.
    pub listening: TargetAddr,
    /// The last hop (counting from 1) and the peer the client named, for a failure.
    hop: usize,
    proxy: TargetAddr,
    named: TargetAddr,
}

/// Asks the last hop of `chain`, through the others, to BIND for the peer `named` (sent
/// as it is, a name unresolved); returns once its first reply is in.
pub(crate) fn bind(
    chain: &[Hop],
    named: &Allowed<Addr<'_>>,
    timeout: Duration,
    opts: &SocketOptions,
    egress: &Egress,
) -> Result<UpstreamBind, ConnectError> {
    let named = &named.get().to_owned();
    let last = chain.len() - 1;
    tcp_only_check(chain, named)?;
    let (mut negotiation, _, _) = path_to(chain, last, timeout, opts, egress)?;
    let listening = request(&mut negotiation, &chain[last], Command::Bind, named)
        .map_err(|error| hop_error(chain, last, named, true, error))?;
    Ok(UpstreamBind {
        stream: negotiation.into_stream(),
        listening,
        hop: chain.len(),
        proxy: chain[last].addr.clone(),
        named: named.clone(),
    })
}

impl UpstreamBind {
    /// The connection to the last hop, where its second reply will arrive.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads the second reply, which the hop sends once the peer has connected (or it has
    /// given up), within `timeout`. Returns the connection, which now leads to the peer,
    /// and the peer's address.
    pub(crate) fn peer(self, timeout: Duration) -> Result<(TcpStream, TargetAddr), ConnectError> {
        let (hop, proxy, named) = (self.hop, self.proxy, self.named);
        let fail = |error| {
            ConnectError::Upstream(Box::new(UpstreamFailure { hop, proxy, asked: named, for_target: true, error }))
        };
        let mut negotiation = match Negotiation::new(self.stream, timeout) {
            Ok(negotiation) => negotiation,
            Err(e) => return Err(fail(e.into())),
        };
        match read_reply(&mut negotiation) {
            Ok(peer) => Ok((negotiation.into_target_stream().map_err(|e| fail(e.into()))?, peer)),
            Err(error) => Err(fail(error)),
        }
    }
}

/// A UDP association through the chain: datagrams sent on `socket` (connected to the
/// first hop's relay) carry [`UpstreamUdp::wrap`]'s headers, then a UDP ASSOCIATE header
/// naming their target; replies come back the same way. The association lasts while every
/// one of `controls` stays open.
pub(crate) struct UpstreamUdp {
    /// The TCP connections the hops' associations live on, the first hop's first.
    pub controls: Vec<TcpStream>,
    pub socket: Arc<UdpSocket>,
    /// The first hop's relay, where every datagram goes.
    pub relay: SocketAddr,
    /// The headers that carry a datagram from the first hop's relay to the last hop's,
    /// outermost first: one per hop but the last, so none with one hop.
    wrapping: Vec<u8>,
}

impl UpstreamUdp {
    /// The TCP connection to the first hop that the associations live on: its local
    /// address and the hop's.
    pub(crate) fn control_leg(&self) -> Option<(SocketAddr, SocketAddr)> {
        let first = self.controls.first()?;
        Some((first.local_addr().ok()?, first.peer_addr().ok()?))
    }

    /// The room [`UpstreamUdp::wrap`] needs in front of a datagram through a chain of `hops`.
    pub(crate) fn max_wrapping_len(hops: usize) -> usize {
        hops.saturating_sub(1) * MAX_HEADER_LEN
    }

    /// The bytes [`UpstreamUdp::wrap`] writes.
    pub(crate) fn wrapping_len(&self) -> usize {
        self.wrapping.len()
    }

    /// How many headers of the hops in between a reply carries in front of the last hop's.
    pub(crate) fn outer_headers(&self) -> usize {
        self.controls.len() - 1
    }

    /// Writes the headers for the hops in between just in front of `at` in `buf`, where a
    /// datagram for the last hop starts; returns where the whole datagram now starts.
    pub(crate) fn wrap(&self, buf: &mut [u8], at: usize) -> usize {
        let start = at - self.wrapping.len();
        buf[start..at].copy_from_slice(&self.wrapping);
        start
    }
}

/// Where the last hop's header starts in a reply from the first hop's relay, and where its
/// payload starts, once the `outer` headers of the hops in between are passed; `None` for a
/// datagram to drop (a header that does not parse, or a fragment).
pub(crate) fn last_hop_header(datagram: &[u8], outer: usize) -> Option<(usize, usize)> {
    let mut at = 0;
    for _ in 0..outer {
        let (header, len) = Header::parse(&datagram[at..]).ok()?;
        if header.frag != 0 {
            return None;
        }
        at += len;
    }
    match Header::parse(&datagram[at..]) {
        Ok((header, len)) if header.frag == 0 => Some((at, at + len)),
        _ => None,
    }
}

/// Asks every hop of `chain` for a UDP association, each through the hops before it. A
/// hop's reply code is about this very request, so an error passes it on as the verdict
/// for our client.
pub(crate) fn udp_associate(
    chain: &[Hop],
    timeout: Duration,
    opts: &SocketOptions,
    udp_opts: &UdpOptions,
    egress: &Egress,
) -> Result<UpstreamUdp, ConnectError> {
    tcp_only_check(chain, &chain[chain.len() - 1].addr)?;
    let (mut negotiation, first, _) = path_to(chain, 0, timeout, opts, egress)?;
    // Our UDP socket is bound before asking, so the request can name the exact address
    // the hop should accept datagrams from: our end of the TCP connection's.
    let local_error = |e: std::io::Error| hop_error(chain, 0, &chain[0].addr, false, e.into());
    let socket = egress.udp_bind(SocketAddr::new(first.local.ip(), 0), udp_opts).map_err(local_error)?;
    let from = socket.local_addr().map_err(local_error)?;
    let asked = TargetAddr::Ip(from);
    let hop_failed = |error| hop_error(chain, 0, &asked, true, error);
    let reported = request(&mut negotiation, &chain[0], Command::UdpAssociate, &asked).map_err(hop_failed)?;
    let relay = match relay_address(reported, &TargetAddr::Ip(first.peer), Some(from.ip())) {
        Ok(TargetAddr::Ip(relay)) if same_family(relay.ip(), from.ip()) => relay,
        Ok(other) => return Err(hop_failed(UpstreamError::BadRelayAddress(other))),
        Err(error) => return Err(hop_failed(error)),
    };
    socket.connect(relay).map_err(|e| hop_failed(e.into()))?;
    let mut controls = vec![negotiation.into_stream()];
    let mut wrapping = Vec::new();
    for index in 1..chain.len() {
        let (mut negotiation, _, seen_as) = path_to(chain, index, timeout, opts, egress)?;
        // Datagrams reach this hop from the previous hop's relay, whose port we cannot
        // know, so none is named (all zeros, as RFC 1928 allows).
        let asked = TargetAddr::Ip(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let hop_failed = |error| hop_error(chain, index, &asked, true, error);
        let reported = request(&mut negotiation, &chain[index], Command::UdpAssociate, &asked).map_err(hop_failed)?;
        let previous_hop_ip = match seen_as {
            TargetAddr::Ip(seen_as) if !seen_as.ip().is_unspecified() => Some(seen_as.ip()),
            _ => None,
        };
        let relay = relay_address(reported, &chain[index].addr, previous_hop_ip).map_err(hop_failed)?;
        let header = Header { frag: 0, addr: relay.as_addr() };
        let at = wrapping.len();
        wrapping.resize(at + header.encoded_len(), 0);
        header.emit(&mut wrapping[at..]);
        controls.push(negotiation.into_stream());
    }
    Ok(UpstreamUdp { controls, socket: Arc::new(socket), relay, wrapping })
}

/// Where a hop's UDP relay is, for the one before it (or us) to send to: `reported` is what
/// the hop replied, `hop` the address it was reached at, and `from` the address the one
/// before reached it from, where known.
fn relay_address(reported: TargetAddr, hop: &TargetAddr, from: Option<IpAddr>) -> Result<TargetAddr, UpstreamError> {
    match reported {
        TargetAddr::Ip(relay) if relay.port() == 0 => Err(UpstreamError::BadRelayAddress(reported)),
        // An unspecified address means "where you reached me" (RFC 1928 leaves it open).
        TargetAddr::Ip(relay) if relay.ip().is_unspecified() => Ok(match hop {
            TargetAddr::Ip(hop) => TargetAddr::Ip(SocketAddr::new(hop.ip(), relay.port())),
            TargetAddr::Domain(name, _) => TargetAddr::Domain(name.clone(), relay.port()),
        }),
        // A relay on the hop's loopback is out of reach from another host.
        TargetAddr::Ip(relay)
            if relay.ip().to_canonical().is_loopback()
                && from.is_some_and(|from| !from.to_canonical().is_loopback()) =>
        {
            Err(UpstreamError::UnreachableRelay { relay: reported, from: from.expect("checked") })
        }
        TargetAddr::Domain(_, 0) => Err(UpstreamError::BadRelayAddress(reported)),
        reported => Ok(reported),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The addresses of our connection to the first hop, once its stream has moved into a
/// negotiation.
struct FirstHop {
    peer: SocketAddr,
    local: SocketAddr,
}

/// A TCP path to hop `to` of the chain: connected to the first hop, then by CONNECT
/// through each hop before `to`, with `timeout` for each step and for one request at hop
/// `to`. Returns the negotiation, now talking to hop `to`, and the address hop `to` sees
/// the path come from (our own for the first hop; else what the hop before replied).
fn path_to(
    chain: &[Hop],
    to: usize,
    timeout: Duration,
    opts: &SocketOptions,
    egress: &Egress,
) -> Result<(Negotiation, FirstHop, TargetAddr), ConnectError> {
    let first = &chain.first().expect("a chain has at least one hop").addr;
    let unreachable = |e| hop_error(chain, 0, first, false, UpstreamError::Unreachable(Box::new(e)));
    let Connected { stream, peer, local, .. } =
        direct::connect_direct(first, timeout, opts, egress).map_err(unreachable)?;
    let budget = timeout * (to as u32 + 1);
    let mut negotiation = Negotiation::new(stream, budget).map_err(|e| hop_error(chain, 0, first, false, e.into()))?;
    let mut seen_as = TargetAddr::Ip(local);
    for index in 0..to {
        let next = &chain[index + 1].addr;
        seen_as = request(&mut negotiation, &chain[index], Command::Connect, next)
            .map_err(|error| hop_error(chain, index, next, false, error))?;
    }
    Ok((negotiation, FirstHop { peer, local }, seen_as))
}

/// Refuses BIND and UDP through a chain with an HTTP hop, which can carry neither.
fn tcp_only_check(chain: &[Hop], asked: &TargetAddr) -> Result<(), ConnectError> {
    match chain.iter().position(|hop| hop.kind == HopKind::Http) {
        Some(index) => Err(hop_error(chain, index, asked, false, UpstreamError::TcpOnly)),
        None => Ok(()),
    }
}

fn hop_error(chain: &[Hop], index: usize, asked: &TargetAddr, for_target: bool, error: UpstreamError) -> ConnectError {
    ConnectError::Upstream(Box::new(UpstreamFailure {
        hop: index + 1,
        proxy: chain[index].addr.clone(),
        asked: asked.clone(),
        for_target,
        error,
    }))
}

/// One request to `hop`, in the protocol it speaks. Returns the address in its success
/// reply (an HTTP proxy names none: all zeros).
fn request(
    negotiation: &mut Negotiation,
    hop: &Hop,
    command: Command,
    addr: &TargetAddr,
) -> Result<TargetAddr, UpstreamError> {
    match (hop.kind, command) {
        (HopKind::Socks5, _) => socks5_request(negotiation, hop.credentials.as_ref(), command, addr),
        (HopKind::Http, Command::Connect) => http_connect(negotiation, hop.credentials.as_ref(), addr),
        (HopKind::Http, Command::Bind | Command::UdpAssociate) => Err(UpstreamError::TcpOnly),
    }
}

/// `CONNECT host:port` to an HTTP proxy, with a Basic login when we have one; any 2xx
/// opens the tunnel, whose first byte follows the response head.
fn http_connect(
    negotiation: &mut Negotiation,
    credentials: Option<&Credentials>,
    addr: &TargetAddr,
) -> Result<TargetAddr, UpstreamError> {
    let authority = match addr {
        TargetAddr::Ip(addr) => addr.to_string(),
        // A name the request line cannot carry as it is never reaches the hop.
        TargetAddr::Domain(name, port) if name.bytes().all(|b| b.is_ascii_graphic() && b != b'/') => {
            format!("{name}:{port}")
        }
        TargetAddr::Domain(..) => return Err(crate::wire::Error::BadDomain.into()),
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = credentials {
        let login = [&credentials.user[..], b":", &credentials.password[..]].concat();
        head.push_str(&format!("Proxy-Authorization: Basic {}\r\n", base64::encode(&login)));
    }
    head.push_str("\r\n");
    negotiation.write(head.as_bytes())?;
    let mut buf = vec![0u8; MAX_RESPONSE_HEAD_LEN];
    let response = ResponseHead::parse(negotiation.read_message(&mut buf, http::head_len)?)?;
    match response.status {
        200..=299 => Ok(TargetAddr::Ip(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0))),
        407 => Err(UpstreamError::LoginRejected),
        status => Err(UpstreamError::HttpStatus(status)),
    }
}

/// One SOCKS5 exchange with a proxy: greeting, login when it asks for one, the request.
/// Returns the address in its success reply.
fn socks5_request(
    negotiation: &mut Negotiation,
    credentials: Option<&Credentials>,
    command: Command,
    addr: &TargetAddr,
) -> Result<TargetAddr, UpstreamError> {
    let mut buf = [0u8; userpass::Request::MAX_LEN];
    let methods: &[u8] = match credentials {
        Some(_) => &[method::NO_AUTH, method::USER_PASS],
        None => &[method::NO_AUTH],
    };
    let len = Greeting { methods }.emit(&mut buf);
    negotiation.write(&buf[..len])?;
    let choice = MethodChoice::parse(negotiation.read_message(&mut buf, |_| Ok(MethodChoice::LEN))?)?;
    match (choice.method, credentials) {
        (method::NO_AUTH, _) => {}
        (method::USER_PASS, Some(credentials)) => {
            let login = userpass::Request { user: &credentials.user, password: &credentials.password };
            let len = login.emit(&mut buf);
            negotiation.write(&buf[..len])?;
            let status = userpass::Status::parse(negotiation.read_message(&mut buf, |_| Ok(userpass::Status::LEN))?)?;
            if status.status != userpass::STATUS_SUCCESS {
                return Err(UpstreamError::LoginRejected);
            }
        }
        (other, _) => return Err(UpstreamError::NoAcceptableMethod(other)),
    }
    let len = Request { command, addr: addr.as_addr() }.emit(&mut buf);
    negotiation.write(&buf[..len])?;
    read_reply(negotiation)
}

/// Reads one reply; returns its address if it is a success.
fn read_reply(negotiation: &mut Negotiation) -> Result<TargetAddr, UpstreamError> {
    let mut buf = [0u8; Reply::MAX_LEN];
    let reply = Reply::parse(negotiation.read_message(&mut buf, Reply::wanted_len)?)?;
    if reply.code != ReplyCode::SUCCEEDED {
        return Err(UpstreamError::Replied(reply.code));
    }
    Ok(reply.addr.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::{Request, RuleTable};
    use crate::config::{Config, HopKind};
    use crate::net::negotiation::HandshakeError;
    use std::net::TcpListener;

    fn hop(addr: SocketAddr) -> Hop {
        Hop { kind: HopKind::Socks5, addr: TargetAddr::Ip(addr), credentials: None }
    }

    /// `target`, as the rules allow it to a client on this host when there are none.
    fn allowed(target: &TargetAddr) -> Allowed<Addr<'_>> {
        let local = Request { client: Some(Ipv4Addr::LOCALHOST.into()), ..Request::default() };
        RuleTable::default().permit(&local, target.as_addr()).expect("no rules allow a local client")
    }

    /// A port with nothing listening.
    fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[test]
    fn a_failure_names_the_hop_and_what_it_was_asked() {
        let down = closed_port();
        let target = TargetAddr::Domain("example.org".into(), 443);
        let opts = Config::default().socket;
        let err = connect(&[hop(down)], &allowed(&target), Duration::from_secs(5), &opts, &Egress::default())
            .err()
            .expect("hop is down");
        let ConnectError::Upstream(failure) = &err else { panic!("{err}") };
        assert_eq!((failure.hop, failure.for_target), (1, false));
        let message = err.to_string();
        assert!(message.starts_with(&format!("upstream hop 1 ({down})")), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn a_relay_on_a_hops_loopback_is_out_of_reach_from_another_host() {
        let ip = |text: &str| -> IpAddr { text.parse().unwrap() };
        let relay = |text: &str| TargetAddr::Ip(text.parse().unwrap());
        let hop = TargetAddr::Domain("hop2.example".into(), 1080);
        let err = relay_address(relay("127.0.0.1:5000"), &hop, Some(ip("192.0.2.1"))).unwrap_err();
        assert_eq!(err.to_string(), "its UDP relay 127.0.0.1:5000 is on its loopback, out of reach from 192.0.2.1");
        // From the same host, or where the hop before is not known, it is taken as it is.
        assert_eq!(
            relay_address(relay("127.0.0.1:5000"), &hop, Some(ip("127.0.0.1"))).unwrap(),
            relay("127.0.0.1:5000")
        );
        assert_eq!(relay_address(relay("[::1]:5000"), &hop, None).unwrap(), relay("[::1]:5000"));
        // All zeros means the address the hop was reached at.
        let reached = relay_address(relay("0.0.0.0:5000"), &hop, Some(ip("192.0.2.1"))).unwrap();
        assert_eq!(reached, TargetAddr::Domain("hop2.example".into(), 5000));
        assert!(matches!(relay_address(relay("192.0.2.9:0"), &hop, None), Err(UpstreamError::BadRelayAddress(_))));
    }

    #[test]
    fn a_reply_loses_the_headers_of_the_hops_in_between() {
        let mut datagram = Vec::new();
        for addr in ["127.0.0.1:2000", "127.0.0.1:3000", "127.0.0.1:53"] {
            let header = Header { frag: 0, addr: crate::wire::addr::Addr::Ip(addr.parse().unwrap()) };
            let at = datagram.len();
            datagram.resize(at + header.encoded_len(), 0);
            header.emit(&mut datagram[at..]);
        }
        datagram.extend_from_slice(b"answer");
        let (start, payload) = last_hop_header(&datagram, 2).unwrap();
        assert_eq!((start, &datagram[payload..]), (20, &b"answer"[..]));
        assert_eq!(last_hop_header(&datagram, 0), Some((0, 10)));
        datagram[12] = 1; // the second header's FRAG
        assert_eq!(last_hop_header(&datagram, 2), None, "a fragment anywhere is dropped");
        assert_eq!(last_hop_header(&datagram[..15], 2), None);
    }

    #[test]
    fn a_hop_that_is_not_socks5_is_a_handshake_error() {
        // An HTTP-ish server answering the greeting with junk.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let target = TargetAddr::Ip("127.0.0.1:9".parse().unwrap());
        let err = connect(
            &[hop(addr)],
            &allowed(&target),
            Duration::from_secs(5),
            &Config::default().socket,
            &Egress::default(),
        )
        .err()
        .unwrap();
        let ConnectError::Upstream(failure) = &err else { panic!("{err}") };
        assert!(matches!(failure.error, UpstreamError::Handshake(HandshakeError::Malformed(_))), "{err}");
        assert!(failure.for_target, "the one hop was asked for the target");
    }
}
