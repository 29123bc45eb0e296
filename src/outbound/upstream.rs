//! Outbound traffic through upstream SOCKS5 proxies (`-F`): a SOCKS5 client built on
//! [`crate::wire`], run hop by hop over one TCP connection.
//!
//! For TCP, burrowd connects to the first hop and asks it to CONNECT to the second hop,
//! asks that one for the third, and so on; the last hop is asked for the target. Names
//! are sent unresolved, so each hop resolves what it is asked for. For UDP, the first
//! hop's UDP ASSOCIATE carries the datagrams.

use super::{ConnectError, Connected, UpstreamError, UpstreamFailure, direct};
use crate::config::{Credentials, Hop, SocketOptions, UdpOptions};
use crate::net::negotiation::Negotiation;
use crate::net::sockopt;
use crate::wire::addr::TargetAddr;
use crate::wire::socks5::{Command, Greeting, MethodChoice, Reply, ReplyCode, Request, method};
use crate::wire::userpass;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// Connects to `target` through every hop of `chain` (which must not be empty). Each hop
/// reaches the next within its own connect timeout, so the whole negotiation may take
/// `timeout` once per hop.
pub(crate) fn connect(
    chain: &[Hop],
    target: &TargetAddr,
    timeout: Duration,
    opts: &SocketOptions,
) -> Result<Connected, ConnectError> {
    let (mut negotiation, first) = reach_first_hop(chain, timeout, timeout * chain.len() as u32, opts)?;
    for (index, hop) in chain.iter().enumerate() {
        let next = chain.get(index + 1).map_or(target, |next_hop| &next_hop.addr);
        request(&mut negotiation, hop.credentials.as_ref(), Command::Connect, next)
            .map_err(|error| hop_error(chain, index, next, index + 1 == chain.len(), error))?;
    }
    Ok(Connected { stream: negotiation.into_stream(), peer: first.peer, local: first.local })
}

/// A UDP association with the first hop: datagrams sent on `socket` (connected to the
/// hop's relay) carry a UDP ASSOCIATE header naming their target, and replies come back
/// the same way. The association lasts while `control` stays open.
pub(crate) struct UpstreamUdp {
    pub control: TcpStream,
    pub socket: Arc<UdpSocket>,
    pub relay: SocketAddr,
}

/// Asks the first hop of `chain` for a UDP association. Its reply code is about this very
/// request, so an error passes it on as the verdict for our client.
pub(crate) fn udp_associate(
    chain: &[Hop],
    timeout: Duration,
    opts: &SocketOptions,
    udp_opts: &UdpOptions,
) -> Result<UpstreamUdp, ConnectError> {
    let (mut negotiation, first) = reach_first_hop(chain, timeout, timeout, opts)?;
    // Our UDP socket is bound before asking, so the request can name the exact address
    // the hop should accept datagrams from.
    let local_error = |e: std::io::Error| hop_error(chain, 0, &chain[0].addr, false, e.into());
    let socket = sockopt::udp_bind(SocketAddr::new(first.local.ip(), 0), udp_opts).map_err(local_error)?;
    let from = socket.local_addr().map_err(local_error)?;
    let asked = TargetAddr::Ip(from);
    let hop_failed = |error| hop_error(chain, 0, &asked, true, error);
    let bound =
        request(&mut negotiation, chain[0].credentials.as_ref(), Command::UdpAssociate, &asked).map_err(hop_failed)?;
    let relay = match bound {
        // An unspecified address means "where you reached me" (RFC 1928 leaves it open).
        TargetAddr::Ip(relay) if relay.ip().is_unspecified() => SocketAddr::new(first.peer.ip(), relay.port()),
        TargetAddr::Ip(relay) if relay.port() != 0 && same_family(relay.ip(), from.ip()) => relay,
        other => return Err(hop_failed(UpstreamError::BadRelayAddress(other))),
    };
    socket.connect(relay).map_err(|e| hop_failed(e.into()))?;
    Ok(UpstreamUdp { control: negotiation.into_stream(), socket: Arc::new(socket), relay })
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

/// Opens the TCP connection to the first hop within `timeout`, ready for a negotiation
/// within `budget`.
fn reach_first_hop(
    chain: &[Hop],
    timeout: Duration,
    budget: Duration,
    opts: &SocketOptions,
) -> Result<(Negotiation, FirstHop), ConnectError> {
    let first = &chain.first().expect("a chain has at least one hop").addr;
    let unreachable = |e| hop_error(chain, 0, first, false, UpstreamError::Unreachable(Box::new(e)));
    let Connected { stream, peer, local } = direct::connect_direct(first, timeout, opts).map_err(unreachable)?;
    let negotiation = Negotiation::new(stream, budget).map_err(|e| hop_error(chain, 0, first, false, e.into()))?;
    Ok((negotiation, FirstHop { peer, local }))
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

/// One SOCKS5 exchange with a proxy: greeting, login when it asks for one, the request.
/// Returns the address in its success reply.
fn request(
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
    let reply = Reply::parse(negotiation.read_message(&mut buf, Reply::wanted_len)?)?;
    if reply.code != ReplyCode::SUCCEEDED {
        return Err(UpstreamError::Replied(reply.code));
    }
    Ok(reply.addr.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::net::negotiation::HandshakeError;
    use std::net::TcpListener;

    fn hop(addr: SocketAddr) -> Hop {
        Hop { addr: TargetAddr::Ip(addr), credentials: None }
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
        let err = connect(&[hop(down)], &target, Duration::from_secs(5), &opts).err().expect("hop is down");
        let ConnectError::Upstream(failure) = &err else { panic!("{err}") };
        assert_eq!((failure.hop, failure.for_target), (1, false));
        let message = err.to_string();
        assert!(message.starts_with(&format!("upstream hop 1 ({down})")), "{message}");
        assert!(!message.contains('\n'));
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
        let err = connect(&[hop(addr)], &target, Duration::from_secs(5), &Config::default().socket).err().unwrap();
        let ConnectError::Upstream(failure) = &err else { panic!("{err}") };
        assert!(matches!(failure.error, UpstreamError::Handshake(HandshakeError::Malformed(_))), "{err}");
        assert!(failure.for_target, "the one hop was asked for the target");
    }
}
