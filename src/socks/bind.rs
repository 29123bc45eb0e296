//! BIND, for SOCKS5 and SOCKS4 alike: listen on a new socket, tell the client where, wait
//! for one connection from the peer the client named, tell the client who came, relay.
//! Through an upstream chain the last hop does the listening: its two replies are passed
//! on, and the relay runs through the chain.
//!
//! The protocol modules only word the replies (see [`SocksReplies`]); the socket and the wait
//! live here.

use super::connect::SocksReplies;
use super::failure::Failure;
use crate::config::rules::{Allowed, Cmd};
use crate::config::{Config, SocketOptions};
use crate::net::negotiation::Negotiation;
use crate::net::readiness::{self, Watched};
use crate::net::sockopt;
use crate::outbound::{self, ConnectError, Egress, upstream};
use crate::session::access::{Access, Heard};
use crate::session::{Context, End, Established, SessionLog, State};
use crate::wire::addr::{Addr, TargetAddr};
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While the client has sent data ahead of the peer, its socket stays readable, so the wait
/// blocks on what it waits for alone, for this long at most between looks at the client.
const SENT_AHEAD_LOOK: Duration = Duration::from_millis(20);

/// Serves a BIND request whose DST names `named`, the peer expected to connect, up to the
/// relay between the client and that peer; [`Access::hear`] has asked about it.
#[allow(clippy::too_many_arguments)] // the request, its proofs, its rules and its egress, each apart
pub(super) fn serve(
    ctx: &Arc<Context>,
    mut negotiation: Negotiation,
    named: &TargetAddr,
    heard: Heard,
    access: &Access,
    egress: &Egress,
    log: &mut SessionLog,
    replies: &impl SocksReplies,
) -> Option<Established> {
    if !ctx.config.chain.is_empty() {
        return serve_through_chain(ctx, negotiation, named, access, egress, log, replies);
    }
    let bound = match Awaited::permit(named, heard, access)
        .and_then(|awaited| Bound::open(negotiation.stream(), awaited, egress, &ctx.config))
    {
        Ok(bound) => bound,
        Err(failure) => {
            replies.fail(negotiation, failure, log);
            return None;
        }
    };
    log.outbound_local = Some(bound.addr);
    // Listed as waiting before the client hears where to send its peer.
    log.publish(State::BindWaiting);
    if let Err(e) = replies.granted(&mut negotiation, Addr::Ip(bound.addr), log) {
        log.end = Some(End::Handshake(e));
        return None;
    }
    let peer = match bound.wait(negotiation.stream(), ctx.config.bind_timeout, &ctx.config.socket, &|peer| {
        access.permit_address(Cmd::Bind, named.as_addr(), peer).map_err(Failure::from)
    }) {
        Ok(peer) => peer,
        Err(WaitEnd::Failed(failure)) => {
            replies.fail(negotiation, failure, log);
            return None;
        }
        Err(WaitEnd::ClientGone(error)) => {
            log.end = Some(End::BindClientGone(error));
            return None;
        }
    };
    log.reached = Some(*peer.addr.get());
    if let Err(e) = replies.granted(&mut negotiation, Addr::Ip(*peer.addr.get()), log) {
        log.end = Some(End::Handshake(e));
        return None;
    }
    Some(Established::new(negotiation, peer.stream))
}

/// BIND at the last hop of the chain: its first reply (where it listens) and its second
/// (who came) go to the client as they are; nothing is resolved or listened on here.
fn serve_through_chain(
    ctx: &Arc<Context>,
    mut negotiation: Negotiation,
    named: &TargetAddr,
    access: &Access,
    egress: &Egress,
    log: &mut SessionLog,
    replies: &impl SocksReplies,
) -> Option<Established> {
    let config = &ctx.config;
    // Sent as it is: a name is resolved upstream, so it must be decided without its address.
    let named = match access.permit_upstream(Cmd::Bind, named.as_addr()) {
        Ok(named) => named,
        Err(denied) => {
            replies.fail(negotiation, denied.into(), log);
            return None;
        }
    };
    let bound = match upstream::bind(&config.chain, &named, config.connect_timeout, &config.socket, egress) {
        Ok(bound) => bound,
        Err(e) => {
            replies.fail(negotiation, e.into(), log);
            return None;
        }
    };
    log.outbound_local = ip_of(&bound.listening);
    log.publish(State::BindWaiting);
    if let Err(e) = replies.granted(&mut negotiation, bound.listening.as_addr(), log) {
        log.end = Some(End::Handshake(e));
        return None;
    }
    let local = |e| WaitEnd::Failed(Failure::Local(e));
    let waited = bound.stream().set_nonblocking(true).map_err(local).and_then(|()| {
        let mut probe = [0u8; 1];
        // Bytes (or the hop closing) mean its second reply has come; the reply is read next.
        let arrived = || match bound.stream().peek(&mut probe) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
            _ => Ok(Some(())),
        };
        wait_for(negotiation.stream(), config.bind_timeout, Watched::Stream(bound.stream()), arrived)
    });
    let waited = waited.and_then(|()| bound.stream().set_nonblocking(false).map_err(local));
    match waited {
        Ok(()) => {}
        Err(WaitEnd::Failed(failure)) => {
            replies.fail(negotiation, failure, log);
            return None;
        }
        Err(WaitEnd::ClientGone(error)) => {
            log.end = Some(End::BindClientGone(error));
            return None;
        }
    }
    let (stream, peer) = match bound.peer(config.connect_timeout) {
        Ok(peer) => peer,
        Err(e) => {
            replies.fail(negotiation, e.into(), log);
            return None;
        }
    };
    log.reached = ip_of(&peer);
    // The hop names the peer that came; it is judged like one that came here, and one it
    // names by a name cannot be.
    let came = match access.permit_reported(Cmd::Bind, *named.get(), &peer) {
        Ok(came) => came,
        Err(denied) => {
            replies.fail(negotiation, denied.into(), log);
            return None;
        }
    };
    if let Err(e) = replies.granted(&mut negotiation, Addr::Ip(*came.get()), log) {
        log.end = Some(End::Handshake(e));
        return None;
    }
    Some(Established::new(negotiation, stream))
}

fn ip_of(addr: &TargetAddr) -> Option<SocketAddr> {
    match addr {
        TargetAddr::Ip(addr) => Some(*addr),
        TargetAddr::Domain(..) => None,
    }
}

/// Waits up to `timeout` for `arrived` to give something, giving up early if the client
/// hangs up; `arrived` must not block. Whatever the client sends meanwhile stays in its
/// socket for the relay. The control connection is non-blocking only during the wait.
fn wait_for<T>(
    control: &TcpStream,
    timeout: Duration,
    watched: Watched<'_>,
    mut arrived: impl FnMut() -> Result<Option<T>, WaitEnd>,
) -> Result<T, WaitEnd> {
    control.set_nonblocking(true).map_err(|e| WaitEnd::Failed(Failure::Local(e)))?;
    let waited = poll(control, timeout, watched, &mut arrived);
    // The control connection goes on to a reply and maybe the relay, which block.
    control.set_nonblocking(false).map_err(|e| WaitEnd::Failed(Failure::Local(e)))?;
    waited
}

/// Looks at `arrived` and the client, then blocks until `watched` or the client has
/// something (poll, not sleeps, so the wakeup is not the timer tick's).
fn poll<T>(
    control: &TcpStream,
    timeout: Duration,
    watched: Watched<'_>,
    arrived: &mut impl FnMut() -> Result<Option<T>, WaitEnd>,
) -> Result<T, WaitEnd> {
    let deadline = Instant::now() + timeout;
    let mut probe = [0u8; 1];
    loop {
        if let Some(done) = arrived()? {
            return Ok(done);
        }
        let sent_ahead = match control.peek(&mut probe) {
            Ok(0) => return Err(WaitEnd::ClientGone(None)),
            // Data the client sent ahead of the peer stays in the socket for the relay.
            Ok(_) => true,
            // Nothing from the client.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => false,
            Err(e) => return Err(WaitEnd::ClientGone(Some(e))),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WaitEnd::Failed(Failure::BindTimedOut(timeout)));
        }
        let (client, wait) = if sent_ahead { (None, left.min(SENT_AHEAD_LOOK)) } else { (Some(control), left) };
        readiness::wait_readable(watched, client, wait).map_err(|e| WaitEnd::Failed(Failure::Local(e)))?;
    }
}

/// Whom a BIND listens for, as the rules let it: opening the listener takes one, so a
/// path that forgets to ask does not compile.
enum Awaited {
    /// Anyone (the client named all zeros): the command alone was asked about when the
    /// request was heard, and each peer that comes is judged in [`Bound::wait`].
    Anyone(Heard),
    /// The named peer's addresses (one, or each of a name's), every one allowed.
    Named(Allowed<Vec<SocketAddr>>),
}

impl Awaited {
    /// The final answer for a BIND that names `named`: the rules judge each address of a
    /// named peer before anything listens for it.
    fn permit(named: &TargetAddr, heard: Heard, access: &Access) -> Result<Awaited, Failure> {
        let expected = expected_peers(named)?;
        if expected.is_empty() {
            return Ok(Awaited::Anyone(heard));
        }
        let allowed = expected
            .into_iter()
            .map(|peer| access.permit_address(Cmd::Bind, named.as_addr(), SocketAddr::new(peer, named.port())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Awaited::Named(Allowed::all(allowed)))
    }

    /// The addresses a peer may come from; empty accepts any.
    fn addresses(&self) -> Vec<IpAddr> {
        match self {
            Awaited::Anyone(_) => Vec::new(),
            Awaited::Named(peers) => peers.get().iter().map(SocketAddr::ip).collect(),
        }
    }
}

/// A listening socket waiting for the one connection a BIND is for.
struct Bound {
    listener: TcpListener,
    /// Where the peer must connect; the first reply carries it.
    addr: SocketAddr,
    /// Addresses the peer may come from; empty accepts any.
    expected: Vec<IpAddr>,
}

/// The connection a BIND waited for, from a peer the rules allow.
struct Peer {
    stream: TcpStream,
    addr: Allowed<SocketAddr>,
}

/// What the access rules say of the peer that reached the listening socket.
type Permitted<'a> = dyn Fn(SocketAddr) -> Result<Allowed<SocketAddr>, Failure> + 'a;

/// Why a wait ended with no peer to relay to.
enum WaitEnd {
    /// The client closed (`None`) or broke its control connection, so there is no one to
    /// reply to.
    ClientGone(Option<io::Error>),
    /// The client gets a failure reply.
    Failed(Failure),
}

impl Bound {
    /// Listens on the address the client reached us on, any free port; or, when the
    /// client named a peer only of the other address family, on this host's address
    /// toward that peer.
    ///
    /// The peer must connect to where burrowd's outbound traffic comes from. burrowd
    /// connects out directly from this host, so any of the host's addresses is right in
    /// principle; the one the client reached us on is an address the host certainly
    /// answers on, of the client's address family, and on one host or one network the one
    /// the peer can reach too. (0.0.0.0 would listen everywhere but cannot go in a reply.)
    /// A peer of the other family could never connect to it, though. The rules have judged
    /// each address of a named peer ([`Awaited::permit`]), and judge the peer that comes in
    /// [`Bound::wait`].
    ///
    /// With `--bind-out`, outbound traffic leaves from the address it gives, and so the
    /// listener is there too, in a family it allows; a peer named only in a family it does
    /// not is refused (network unreachable, reply 3). With `--interface`, the listener is
    /// bound to the interface, at this host's address toward a named peer through it.
    fn open(control: &TcpStream, awaited: Awaited, egress: &Egress, config: &Config) -> Result<Bound, Failure> {
        let expected = awaited.addresses();
        // The whole socket address, not just its IP: a link-local IPv6 address binds only
        // with the scope (interface) it came with.
        let mut local = control.local_addr().map_err(Failure::Local)?;
        local.set_ip(local.ip().to_canonical());
        let in_family = |ipv6: bool| expected.is_empty() || expected.iter().any(|ip| ip.is_ipv6() == ipv6);
        let mut ipv6 = if in_family(local.is_ipv6()) { local.is_ipv6() } else { !local.is_ipv6() };
        if egress.source(ipv6).is_err() && in_family(!ipv6) {
            ipv6 = !ipv6;
        }
        let peer = expected.iter().copied().find(|ip| ip.is_ipv6() == ipv6);
        let mut at = match egress.source(ipv6) {
            Ok(Some(source)) => source,
            Ok(None) => match peer {
                Some(peer) if ipv6 != local.is_ipv6() || egress.has_interface() => {
                    SocketAddr::new(local_ip_toward(peer, egress, config).map_err(Failure::Local)?, 0)
                }
                _ => local,
            },
            Err(error) => {
                let addr = SocketAddr::new(expected.first().copied().unwrap_or(local.ip()), 0);
                return Err(Failure::Connect(ConnectError::Connect { addr, error }));
            }
        };
        at.set_port(0);
        let listener = sockopt::listen_prepared(at, &config.socket, |socket| egress.bind_interface(socket, ipv6))
            .map_err(|e| Failure::Local(io::Error::new(e.kind(), format!("cannot listen on {}: {e}", at.ip()))))?;
        let addr = listener.local_addr().map_err(Failure::Local)?;
        Ok(Bound { listener, addr, expected })
    }

    /// Waits up to `timeout` for one connection, giving up early if the client hangs up.
    fn wait(
        self,
        control: &TcpStream,
        timeout: Duration,
        opts: &SocketOptions,
        permitted: &Permitted,
    ) -> Result<Peer, WaitEnd> {
        self.listener.set_nonblocking(true).map_err(|e| WaitEnd::Failed(Failure::Local(e)))?;
        wait_for(control, timeout, Watched::Listener(&self.listener), || match self.listener.accept() {
            Ok((stream, addr)) => self.admit(stream, addr, opts, permitted).map(Some),
            // Nobody yet, or a peer that gave up before we took it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || is_transient(&e) => Ok(None),
            Err(e) => Err(WaitEnd::Failed(Failure::Local(e))),
        })
    }

    /// Takes the peer if it comes from an expected address; otherwise closes it.
    fn admit(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        opts: &SocketOptions,
        permitted: &Permitted,
    ) -> Result<Peer, WaitEnd> {
        if !is_expected(&self.expected, addr.ip()) {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(WaitEnd::Failed(Failure::UnexpectedPeer(addr)));
        }
        let addr = match permitted(addr) {
            Ok(addr) => addr,
            Err(failure) => {
                let _ = stream.shutdown(Shutdown::Both);
                return Err(WaitEnd::Failed(failure));
            }
        };
        let setup = stream.set_nonblocking(false).and_then(|()| sockopt::tune_accepted(&stream, opts));
        setup.map_err(|e| WaitEnd::Failed(Failure::Local(e)))?;
        Ok(Peer { stream, addr })
    }
}

/// The addresses a peer may come from, as the client named them: all zeros means
/// anyone, a name means any of its addresses. Only the IP counts: the port a client
/// names is usually the peer's listening port (FTP's data port), not the one it
/// connects from.
fn expected_peers(named: &TargetAddr) -> Result<Vec<IpAddr>, Failure> {
    match named {
        TargetAddr::Ip(sa) if sa.ip().is_unspecified() => Ok(Vec::new()),
        TargetAddr::Ip(sa) => Ok(vec![sa.ip().to_canonical()]),
        TargetAddr::Domain(..) => Ok(outbound::resolve(named)?.iter().map(|sa| sa.ip().to_canonical()).collect()),
    }
}

/// The address this host sends from toward `peer`, through the interface `egress` names if
/// any: a UDP socket's connect asks the routing table and sends nothing.
fn local_ip_toward(peer: IpAddr, egress: &Egress, config: &Config) -> io::Result<IpAddr> {
    let socket = egress.udp_socket(peer.is_ipv6(), &config.udp)?;
    socket.connect(SocketAddr::new(peer, 9))?;
    Ok(socket.local_addr()?.ip())
}

fn is_expected(expected: &[IpAddr], peer: IpAddr) -> bool {
    expected.is_empty() || expected.contains(&peer.to_canonical())
}

/// Accept errors that concern only the one connection being accepted.
fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn all_zeros_accepts_anyone() {
        for zeros in ["0.0.0.0:0", "0.0.0.0:21", "[::]:0"] {
            let expected = expected_peers(&TargetAddr::Ip(zeros.parse().unwrap())).unwrap();
            assert!(is_expected(&expected, ip("192.0.2.7")), "{zeros}");
            assert!(is_expected(&expected, ip("::1")), "{zeros}");
        }
    }

    #[test]
    fn a_named_address_accepts_only_its_ip_whatever_the_port() {
        let expected = expected_peers(&TargetAddr::Ip("127.0.0.2:20".parse().unwrap())).unwrap();
        assert!(is_expected(&expected, ip("127.0.0.2")));
        assert!(is_expected(&expected, ip("::ffff:127.0.0.2")), "an IPv4-mapped form is the same peer");
        assert!(!is_expected(&expected, ip("127.0.0.1")));
        assert!(!is_expected(&expected, ip("::1")));
    }

    #[test]
    fn a_named_host_accepts_its_resolved_addresses() {
        let expected = expected_peers(&TargetAddr::Domain("localhost".into(), 0)).unwrap();
        assert!(is_expected(&expected, ip("127.0.0.1")), "{expected:?}");
        assert!(!is_expected(&expected, ip("127.0.0.2")), "{expected:?}");
    }
}
