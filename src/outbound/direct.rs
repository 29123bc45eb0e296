//! Opening outbound TCP connections: name resolution, then every resolved address in
//! turn, each within the connect timeout, reporting the last error.

use super::{ConnectError, Connected};
use crate::config::SocketOptions;
use crate::net::sockopt;
use crate::wire::addr::TargetAddr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

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

/// Connects directly to the target, trying each resolved address in turn.
pub(crate) fn connect_direct(
    target: &TargetAddr,
    timeout: Duration,
    opts: &SocketOptions,
) -> Result<Connected, ConnectError> {
    let mut last = None;
    for addr in resolve(target)? {
        match sockopt::connect(addr, timeout, opts) {
            Ok(stream) => {
                let local = stream.local_addr().map_err(|error| ConnectError::Connect { addr, error })?;
                return Ok(Connected { stream, peer: addr, local });
            }
            Err(error) => last = Some(ConnectError::Connect { addr, error }),
        }
    }
    Err(last.expect("resolve returns at least one address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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
