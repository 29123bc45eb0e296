//! Opening outbound TCP connections: name resolution, then every resolved address in
//! turn, each within the connect timeout, reporting the last error.

use crate::chain::UpstreamFailure;
use crate::config::SocketOptions;
use crate::sockopt;
use crate::wire::addr::TargetAddr;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why an outbound connection was not made.
#[derive(Debug)]
pub enum ConnectError {
    /// The name did not resolve, or resolved to no address.
    Resolve { name: String, error: io::Error },
    /// Every address was tried; this is the last one's error.
    Connect { addr: SocketAddr, error: io::Error },
    /// A hop of the upstream chain failed (boxed: it is rare and large).
    Upstream(Box<UpstreamFailure>),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve { name, error } => write!(f, "cannot resolve {name}: {error}"),
            ConnectError::Connect { addr, error } => write!(f, "connect to {addr}: {error}"),
            ConnectError::Upstream(failure) => failure.fmt(f),
        }
    }
}

/// A connection to a target, with the addresses the session log reports.
pub struct Connected {
    pub stream: TcpStream,
    /// The address actually reached.
    pub peer: SocketAddr,
    /// The outbound socket's own address, as `ss -tn` shows it.
    pub local: SocketAddr,
}

/// Resolves a target to its addresses; a literal address resolves to itself.
pub fn resolve(target: &TargetAddr) -> Result<Vec<SocketAddr>, ConnectError> {
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
pub fn connect_direct(target: &TargetAddr, timeout: Duration, opts: &SocketOptions) -> Result<Connected, ConnectError> {
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
