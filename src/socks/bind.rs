//! BIND, for SOCKS5 and SOCKS4 alike: listen on a new socket, tell the client where, wait
//! for one connection from the peer the client named, tell the client who came, relay.
//!
//! The protocol modules only word the replies (see [`SocksReplies`]); the socket and the wait
//! live here.

use super::connect::SocksReplies;
use super::failure::Failure;
use crate::config::SocketOptions;
use crate::net::negotiation::Negotiation;
use crate::net::readiness;
use crate::net::sockopt;
use crate::outbound;
use crate::session::{Context, Established, SessionLog};
use crate::wire::addr::TargetAddr;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While the client has sent data ahead of the peer, its socket stays readable, so the wait
/// blocks on the listener alone, for this long at most between looks at the client.
const SENT_AHEAD_LOOK: Duration = Duration::from_millis(20);

/// Serves a BIND request whose DST names `named`, the peer expected to connect, up to the
/// relay between the client and that peer.
pub(super) fn serve(
    ctx: &Arc<Context>,
    mut negotiation: Negotiation,
    named: &TargetAddr,
    log: &mut SessionLog,
    replies: &impl SocksReplies,
) -> Option<Established> {
    let bound = match Bound::open(negotiation.stream(), named, &ctx.config.socket) {
        Ok(bound) => bound,
        Err(failure) => {
            replies.fail(negotiation, failure, log);
            return None;
        }
    };
    log.outbound_local = Some(bound.addr);
    if let Err(e) = replies.granted(&mut negotiation, bound.addr) {
        log.outcome = e.to_string();
        return None;
    }
    let peer = match bound.wait(negotiation.stream(), ctx.config.bind_timeout, &ctx.config.socket) {
        Ok(peer) => peer,
        Err(WaitEnd::Failed(failure)) => {
            replies.fail(negotiation, failure, log);
            return None;
        }
        Err(WaitEnd::ClientGone(why)) => {
            log.outcome = why;
            return None;
        }
    };
    log.reached = Some(peer.addr);
    if let Err(e) = replies.granted(&mut negotiation, peer.addr) {
        log.outcome = e.to_string();
        return None;
    }
    Some(Established::new(negotiation, peer.stream))
}

/// A listening socket waiting for the one connection a BIND is for.
struct Bound {
    listener: TcpListener,
    /// Where the peer must connect; the first reply carries it.
    addr: SocketAddr,
    /// Addresses the peer may come from; empty accepts any.
    expected: Vec<IpAddr>,
}

/// The connection a BIND waited for.
struct Peer {
    stream: TcpStream,
    addr: SocketAddr,
}

/// Why a wait ended with no peer to relay to.
enum WaitEnd {
    /// The client closed or broke its control connection, so there is no one to reply to.
    ClientGone(String),
    /// The client gets a failure reply.
    Failed(Failure),
}

impl Bound {
    /// Listens on the address the client reached us on, any free port.
    ///
    /// The peer must connect to where burrowd's outbound traffic comes from. burrowd
    /// connects out directly from this host, so any of the host's addresses is right in
    /// principle; the one the client reached us on is an address the host certainly
    /// answers on, of the client's address family, and on one host or one network the one
    /// the peer can reach too. (0.0.0.0 would listen everywhere but cannot go in a reply.)
    fn open(control: &TcpStream, named: &TargetAddr, opts: &SocketOptions) -> Result<Bound, Failure> {
        let expected = expected_peers(named)?;
        // The whole socket address, not just its IP: a link-local IPv6 address binds only
        // with the scope (interface) it came with.
        let mut local = control.local_addr().map_err(Failure::Local)?;
        local.set_ip(local.ip().to_canonical());
        local.set_port(0);
        let listener = sockopt::listen(local, opts).map_err(Failure::Local)?;
        let addr = listener.local_addr().map_err(Failure::Local)?;
        Ok(Bound { listener, addr, expected })
    }

    /// Waits up to `timeout` for one connection, giving up early if the client hangs up.
    fn wait(self, control: &TcpStream, timeout: Duration, opts: &SocketOptions) -> Result<Peer, WaitEnd> {
        let local = |e| WaitEnd::Failed(Failure::Local(e));
        self.listener.set_nonblocking(true).map_err(local)?;
        control.set_nonblocking(true).map_err(local)?;
        let waited = self.poll(control, timeout, opts);
        // The control connection goes on to a reply and maybe the relay, which block.
        control.set_nonblocking(false).map_err(local)?;
        waited
    }

    fn poll(&self, control: &TcpStream, timeout: Duration, opts: &SocketOptions) -> Result<Peer, WaitEnd> {
        let deadline = Instant::now() + timeout;
        let mut probe = [0u8; 1];
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => return self.admit(stream, addr, opts),
                // Nobody yet, or a peer that gave up before we took it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || is_transient(&e) => {}
                Err(e) => return Err(WaitEnd::Failed(Failure::Local(e))),
            }
            let sent_ahead = match control.peek(&mut probe) {
                Ok(0) => return Err(WaitEnd::ClientGone("client closed while waiting for the BIND peer".into())),
                // Data the client sent ahead of the peer stays in the socket for the relay.
                Ok(_) => true,
                // Nothing from the client.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => false,
                Err(e) => {
                    return Err(WaitEnd::ClientGone(format!("client error while waiting for the BIND peer: {e}")));
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitEnd::Failed(Failure::BindTimedOut(timeout)));
            }
            let (watched, wait) = if sent_ahead { (None, left.min(SENT_AHEAD_LOOK)) } else { (Some(control), left) };
            readiness::wait_readable(&self.listener, watched, wait).map_err(|e| WaitEnd::Failed(Failure::Local(e)))?;
        }
    }

    /// Takes the peer if it comes from an expected address; otherwise closes it.
    fn admit(&self, stream: TcpStream, addr: SocketAddr, opts: &SocketOptions) -> Result<Peer, WaitEnd> {
        if !is_expected(&self.expected, addr.ip()) {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(WaitEnd::Failed(Failure::UnexpectedPeer(addr)));
        }
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
