//! Opening outbound TCP connections: name resolution, then the resolved addresses raced
//! the way RFC 8305 (Happy Eyeballs) races them, all within one connect timeout.
//!
//! Resolution and connecting are two steps, so a check on the resolved addresses can sit
//! between them.

use super::{ConnectError, Connected, Egress};
use crate::config::SocketOptions;
use crate::net::readiness::{self, Connect};
use crate::net::sockopt;
use crate::wire::addr::TargetAddr;
use socket2::Socket;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long an attempt runs alone before the next address is tried beside it: RFC 8305's
/// recommended Connection Attempt Delay.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Resolves a target to its addresses; a literal address resolves to itself.
pub(crate) fn resolve(target: &TargetAddr) -> Result<Vec<SocketAddr>, ConnectError> {
    match target {
        TargetAddr::Ip(sa) => Ok(vec![*sa]),
        TargetAddr::Domain(name, port) => {
            let resolve_error = |error| ConnectError::Resolve { name: name.clone(), error };
            let addrs: Vec<SocketAddr> = match special_use_name(name, *port) {
                Some(answer) => answer.map_err(resolve_error)?,
                None => (name.as_str(), *port).to_socket_addrs().map_err(resolve_error)?.collect(),
            };
            if addrs.is_empty() {
                return Err(resolve_error(io::Error::new(io::ErrorKind::NotFound, "no addresses")));
            }
            Ok(addrs)
        }
    }
}

/// The answer for a special-use name (RFC 6761) without asking a resolver: `.invalid`
/// names never resolve, and `localhost` names are the loopback addresses. A static (musl)
/// build would send both to the nameserver, and where none answers wait out its whole
/// timeout (5 s) before failing.
fn special_use_name(name: &str, port: u16) -> Option<io::Result<Vec<SocketAddr>>> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let is_under = |domain: &str| name == domain || name.ends_with(&format!(".{domain}"));
    if is_under("invalid") {
        Some(Err(io::Error::new(io::ErrorKind::NotFound, "an .invalid name never resolves (RFC 6761)")))
    } else if is_under("localhost") {
        Some(Ok(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port)), SocketAddr::from((Ipv6Addr::LOCALHOST, port))]))
    } else {
        None
    }
}

/// Connects directly to the target: resolves it, keeps the addresses `egress` may reach,
/// then [`connect_any`].
pub(crate) fn connect_direct(
    target: &TargetAddr,
    timeout: Duration,
    opts: &SocketOptions,
    egress: &Egress,
) -> Result<Connected, ConnectError> {
    connect_any(&egress.reachable(resolve(target)?)?, timeout, opts, egress)
}

/// Connects to one of `addrs` (at least one, in the resolver's order of preference)
/// within `timeout` for the whole attempt, as RFC 8305 races them: in the resolver's order
/// with the families alternating, each started [`ATTEMPT_DELAY`] after the one before
/// unless that one has failed already; the first to connect wins and the others are closed
/// at once. If none connects, the error is the last one seen, or a timeout for an attempt
/// still under way.
///
/// Every attempt is a non-blocking connect, and this thread waits on all of them at once
/// (`readiness::wait_connects`): no thread per attempt. A single address takes the same
/// path, at a blocking connect's cost. Every socket leaves as `egress` says.
pub(crate) fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
    opts: &SocketOptions,
    egress: &Egress,
) -> Result<Connected, ConnectError> {
    match addrs {
        [] => Err(ConnectError::Resolve {
            name: String::new(),
            error: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        }),
        &[addr] => race(&[addr], timeout, opts, egress),
        _ => race(&interleave_families(addrs), timeout, opts, egress),
    }
}

fn connected(socket: Socket, addr: SocketAddr) -> Result<Connected, ConnectError> {
    let failed = |error| ConnectError::Connect { addr, error };
    let stream = sockopt::connected(socket).map_err(failed)?;
    let local = stream.local_addr().map_err(failed)?;
    Ok(Connected { stream, peer: addr, local, source: local.into() })
}

/// RFC 8305 §4: the resolver's first address, then one of the other family, and so on,
/// each family in the resolver's order.
fn interleave_families(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_family = addrs[0].is_ipv6();
    let (mut preferred, mut other): (Vec<&SocketAddr>, Vec<&SocketAddr>) =
        addrs.iter().partition(|addr| addr.is_ipv6() == first_family);
    preferred.reverse();
    other.reverse();
    let mut order = Vec::with_capacity(addrs.len());
    while let Some(addr) = preferred.pop() {
        order.push(*addr);
        order.extend(other.pop());
    }
    order.extend(other.into_iter().rev());
    order
}

/// An attempt under way: its connect started, not yet ended.
struct Attempt {
    addr: SocketAddr,
    socket: Socket,
}

fn race(
    order: &[SocketAddr],
    timeout: Duration,
    opts: &SocketOptions,
    egress: &Egress,
) -> Result<Connected, ConnectError> {
    let deadline = Instant::now() + timeout;
    let mut waiting = order.iter().copied();
    let mut running: Vec<Attempt> = Vec::new();
    let mut last_error = None;
    let mut next_start = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if (now >= next_start || running.is_empty())
            && let Some(addr) = waiting.next()
        {
            match sockopt::start_connect(addr, opts, |socket| egress.prepare(socket, addr.is_ipv6())) {
                Ok((socket, true)) => return connected(socket, addr),
                Ok((socket, false)) => {
                    running.push(Attempt { addr, socket });
                    next_start = now + ATTEMPT_DELAY;
                }
                // A failed attempt is no reason to wait: the next one starts now.
                Err(error) => {
                    last_error = Some(ConnectError::Connect { addr, error });
                    next_start = now;
                }
            }
            continue;
        }
        if running.is_empty() {
            break;
        }
        let wake = if waiting.len() > 0 { next_start.min(deadline) } else { deadline };
        match readiness::wait_connects(&running, |attempt| &attempt.socket, wake - now) {
            // A winner closes every other attempt.
            Ok(Some((won, Connect::Connected))) => {
                let Attempt { addr, socket } = running.swap_remove(won);
                return connected(socket, addr);
            }
            Ok(Some((failed, Connect::Failed))) => {
                let Attempt { addr, socket } = running.remove(failed);
                last_error = Some(ConnectError::Connect { addr, error: sockopt::connect_error(&socket) });
                next_start = Instant::now();
            }
            Ok(None) => {}
            Err(error) => return Err(ConnectError::Connect { addr: running[0].addr, error }),
        }
    }
    match running.first() {
        Some(attempt) => Err(ConnectError::Connect { addr: attempt.addr, error: io::ErrorKind::TimedOut.into() }),
        None => {
            Err(last_error.unwrap_or(ConnectError::Connect { addr: order[0], error: io::ErrorKind::TimedOut.into() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use socket2::{Domain, Type};
    use std::net::{TcpListener, TcpStream};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A loopback port that drops every SYN: a listener whose accept queue is full. Keep
    /// what it returns alive while it is used.
    fn black_hole() -> (SocketAddr, Socket, Vec<TcpStream>) {
        let full = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        full.bind(&addr("127.0.0.1:0").into()).unwrap();
        full.listen(0).unwrap();
        let hole = full.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        while let Ok(stream) = TcpStream::connect_timeout(&hole, Duration::from_millis(200)) {
            queued.push(stream);
            assert!(queued.len() < 16, "the accept queue never filled");
        }
        (hole, full, queued)
    }

    #[test]
    fn families_alternate_from_the_resolvers_first() {
        let (a6, b6, c6) = (addr("[::1]:1"), addr("[::1]:2"), addr("[::1]:3"));
        let (a4, b4) = (addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        assert_eq!(interleave_families(&[a6, b6, c6, a4, b4]), [a6, a4, b6, b4, c6]);
        assert_eq!(interleave_families(&[a4, b4, a6]), [a4, a6, b4]);
        assert_eq!(interleave_families(&[a4, a6, b6, c6]), [a4, a6, b6, c6]);
    }

    #[test]
    fn a_black_holed_first_address_costs_one_attempt_delay_not_a_timeout() {
        let (hole, _full, _queued) = black_hole();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        let started = Instant::now();
        let connected =
            connect_any(&[hole, good], Duration::from_secs(10), &Config::default().socket, &Egress::default()).unwrap();
        let took = started.elapsed();
        println!("the second address connected after {took:?}");
        assert_eq!(connected.peer, good);
        assert!(took >= ATTEMPT_DELAY && took < ATTEMPT_DELAY * 2, "{took:?}");
    }

    #[test]
    fn a_refused_address_starts_the_next_at_once() {
        let refused = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        let started = Instant::now();
        let connected =
            connect_any(&[refused, good], Duration::from_secs(10), &Config::default().socket, &Egress::default())
                .unwrap();
        assert_eq!(connected.peer, good);
        assert!(started.elapsed() < ATTEMPT_DELAY, "{:?}", started.elapsed());
    }

    #[test]
    fn every_address_shares_one_timeout() {
        let (hole, _full, _queued) = black_hole();
        let timeout = Duration::from_millis(600);
        let started = Instant::now();
        let err = connect_any(&[hole; 5], timeout, &Config::default().socket, &Egress::default())
            .err()
            .expect("nothing answers");
        let took = started.elapsed();
        assert!(
            matches!(&err, ConnectError::Connect { error, .. } if error.kind() == io::ErrorKind::TimedOut),
            "{err}"
        );
        assert!(took >= timeout && took < timeout * 2, "five black holes took {took:?}, not one timeout");
    }

    fn domain(name: &str) -> TargetAddr {
        TargetAddr::Domain(name.into(), 8080)
    }

    #[test]
    fn invalid_names_fail_without_a_lookup() {
        for name in ["invalid", "nonexistent.invalid", "A.B.INVALID.", "x.invalid."] {
            let started = Instant::now();
            match resolve(&domain(name)) {
                Err(ConnectError::Resolve { error, .. }) => assert_eq!(error.kind(), io::ErrorKind::NotFound, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_millis(100), "{name} took {:?}", started.elapsed());
        }
    }

    #[test]
    fn localhost_names_are_loopback_without_a_nameserver() {
        let loopback = vec!["127.0.0.1:8080".parse().unwrap(), "[::1]:8080".parse().unwrap()];
        for name in ["localhost", "LocalHost.", "app.localhost", "a.b.localhost."] {
            assert_eq!(resolve(&domain(name)).unwrap(), loopback, "{name}");
        }
    }

    #[test]
    fn names_that_only_look_special_go_to_the_resolver() {
        for name in ["invalid.example", "notinvalid", "localhost.example", "mylocalhost"] {
            assert!(special_use_name(name, 80).is_none(), "{name}");
        }
    }
}
