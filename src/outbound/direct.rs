//! Opening outbound TCP connections: name resolution, then every resolved address in
//! turn, each within the connect timeout, reporting the last error.

use super::{ConnectError, Connected};
use crate::config::SocketOptions;
use crate::net::sockopt;
use crate::wire::addr::TargetAddr;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Resolves a target to its addresses; a literal address resolves to itself.
pub(crate) fn resolve(target: &TargetAddr) -> Result<Vec<SocketAddr>, ConnectError> {
    match target {
        TargetAddr::Ip(sa) => Ok(vec![*sa]),
        TargetAddr::Domain(name, port) => {
            let resolve_error = |error| ConnectError::Resolve { name: name.clone(), error };
            let addrs: Vec<SocketAddr> = (name.as_str(), *port).to_socket_addrs().map_err(resolve_error)?.collect();
            if addrs.is_empty() {
                return Err(resolve_error(io::Error::new(io::ErrorKind::NotFound, "no addresses")));
            }
            Ok(addrs)
        }
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
                return Ok(Connected { stream, peer: addr, local, source: local.into() });
            }
            Err(error) => last = Some(ConnectError::Connect { addr, error }),
        }
    }
    Err(last.expect("resolve returns at least one address"))
}
