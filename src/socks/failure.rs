//! The one place that decides which SOCKS reply code a failure earns.

use crate::outbound::{ConnectError, UpstreamError, UpstreamFailure};
use crate::session::access::Denied;
use crate::wire::{self, socks4, socks5::ReplyCode};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a SOCKS request was not served. Each ends in a reply to the client.
#[derive(Debug)]
pub(super) enum Failure {
    /// The request itself was malformed (unknown address type, bad name, ...).
    Malformed(wire::Error),
    /// A well-formed request for a command this protocol does not define.
    UnsupportedCommand(u8),
    /// Our rules refuse the request.
    NotAllowed(&'static str),
    /// The access rules refuse it (`--allow`, `--deny`, `--rules`).
    Denied(Denied),
    /// The outbound connection could not be made.
    Connect(ConnectError),
    /// A local socket operation failed (binding a relay socket, ...).
    Local(io::Error),
    /// No connection reached a BIND's listening socket within the bind timeout.
    BindTimedOut(Duration),
    /// A BIND's listening socket was reached from an address other than the one the
    /// client named.
    UnexpectedPeer(SocketAddr),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Malformed(wire::Error::NotAHostName) => {
                write!(f, "refused: the name asked for is not a host name, so it is not looked up")
            }
            Failure::Malformed(e) => write!(f, "malformed request: {e}"),
            Failure::UnsupportedCommand(command) => write!(f, "unsupported command {command:#04x}"),
            Failure::NotAllowed(why) => write!(f, "not allowed: {why}"),
            Failure::Denied(denied) => denied.fmt(f),
            Failure::Connect(e) => e.fmt(f),
            Failure::Local(e) => write!(f, "local error: {e}"),
            Failure::BindTimedOut(limit) => write!(f, "no connection to the bound port within {limit:?}"),
            Failure::UnexpectedPeer(peer) => write!(f, "bound port reached by {peer}, not the named peer"),
        }
    }
}

impl From<wire::Error> for Failure {
    fn from(e: wire::Error) -> Self {
        match e {
            wire::Error::UnknownCommand(command) => Failure::UnsupportedCommand(command),
            e => Failure::Malformed(e),
        }
    }
}

impl From<Denied> for Failure {
    fn from(denied: Denied) -> Self {
        Failure::Denied(denied)
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        Failure::Connect(e)
    }
}

/// The SOCKS5 reply code for a failure.
pub(super) fn socks5_code(failure: &Failure) -> ReplyCode {
    match failure {
        Failure::UnsupportedCommand(_) => ReplyCode::COMMAND_NOT_SUPPORTED,
        Failure::Malformed(wire::Error::UnknownAddressType(_)) => ReplyCode::ADDRESS_TYPE_NOT_SUPPORTED,
        // Like a name that does not resolve, which it would be anywhere that checks.
        Failure::Malformed(wire::Error::NotAHostName) => ReplyCode::HOST_UNREACHABLE,
        Failure::Malformed(_) | Failure::Local(_) => ReplyCode::GENERAL_FAILURE,
        Failure::NotAllowed(_) | Failure::Denied(_) | Failure::UnexpectedPeer(_) => ReplyCode::NOT_ALLOWED,
        Failure::Connect(ConnectError::Denied { .. }) => ReplyCode::NOT_ALLOWED,
        // Like a connect that timed out: the other side never showed up.
        Failure::BindTimedOut(_) => ReplyCode::HOST_UNREACHABLE,
        Failure::Connect(ConnectError::Resolve { .. }) => ReplyCode::HOST_UNREACHABLE,
        Failure::Connect(ConnectError::Connect { error, .. }) => io_error_code(error),
        Failure::Connect(ConnectError::Upstream(failure)) => upstream_code(failure),
    }
}

/// The last hop's verdict on the target (refused, unreachable, not allowed, ...) is what
/// our client would have heard connecting itself, so it passes through. Anything else is
/// the chain itself failing (a hop down, our login to it rejected, a hop refusing to reach
/// the next hop): that is a failure of this server, not of the target, so code 1.
fn upstream_code(failure: &UpstreamFailure) -> ReplyCode {
    match failure.error {
        UpstreamError::Replied(code) if failure.for_target && (2..=8).contains(&code.0) => code,
        UpstreamError::TcpOnly => ReplyCode::COMMAND_NOT_SUPPORTED,
        _ => ReplyCode::GENERAL_FAILURE,
    }
}

/// The SOCKS4 reply code for a failure: SOCKS4 has one (91), since 92 and 93 are about
/// identd, which burrowd does not consult.
pub(super) fn socks4_code(_failure: &Failure) -> socks4::ReplyCode {
    socks4::ReplyCode::Rejected
}

fn io_error_code(error: &io::Error) -> ReplyCode {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => ReplyCode::CONNECTION_REFUSED,
        HostUnreachable | TimedOut | WouldBlock => ReplyCode::HOST_UNREACHABLE,
        NetworkUnreachable | NetworkDown => ReplyCode::NETWORK_UNREACHABLE,
        PermissionDenied => ReplyCode::NOT_ALLOWED,
        _ => ReplyCode::GENERAL_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::addr::TargetAddr;

    fn connect_failure(kind: io::ErrorKind) -> Failure {
        Failure::Connect(ConnectError::Connect { addr: "127.0.0.1:1".parse().unwrap(), error: kind.into() })
    }

    fn upstream_failure(for_target: bool, error: UpstreamError) -> Failure {
        let proxy = TargetAddr::Ip("127.0.0.1:1080".parse().unwrap());
        let asked = TargetAddr::Domain("example.org".into(), 80);
        Failure::Connect(ConnectError::Upstream(Box::new(UpstreamFailure { hop: 1, proxy, asked, for_target, error })))
    }

    #[test]
    fn maps_failures_to_protocol_md_table() {
        use io::ErrorKind::*;
        let table = [
            (connect_failure(ConnectionRefused), 5),
            (connect_failure(HostUnreachable), 4),
            (connect_failure(NetworkUnreachable), 3),
            (connect_failure(TimedOut), 4),
            (connect_failure(PermissionDenied), 2),
            (connect_failure(AddrInUse), 1),
            (Failure::Connect(ConnectError::Resolve { name: "x.invalid".into(), error: NotFound.into() }), 4),
            (Failure::NotAllowed("rule"), 2),
            (Failure::UnexpectedPeer("127.0.0.2:4000".parse().unwrap()), 2),
            (Failure::BindTimedOut(std::time::Duration::from_secs(60)), 4),
            (wire::Error::UnknownCommand(9).into(), 7),
            (Failure::Malformed(wire::Error::UnknownAddressType(9)), 8),
            (Failure::Malformed(wire::Error::BadDomain), 1),
            (Failure::Malformed(wire::Error::NotAHostName), 4),
            (upstream_failure(true, UpstreamError::Replied(ReplyCode::CONNECTION_REFUSED)), 5),
            (upstream_failure(true, UpstreamError::Replied(ReplyCode::NOT_ALLOWED)), 2),
            (upstream_failure(true, UpstreamError::Replied(ReplyCode::HOST_UNREACHABLE)), 4),
            (upstream_failure(true, UpstreamError::Replied(ReplyCode(0x42))), 1),
            (upstream_failure(false, UpstreamError::Replied(ReplyCode::CONNECTION_REFUSED)), 1),
            (upstream_failure(true, UpstreamError::LoginRejected), 1),
            (upstream_failure(true, UpstreamError::NoAcceptableMethod(0xff)), 1),
            (upstream_failure(false, UpstreamError::TcpOnly), 7),
            (upstream_failure(true, UpstreamError::HttpStatus(403)), 1),
        ];
        for (failure, code) in table {
            assert_eq!(socks5_code(&failure), ReplyCode(code), "{failure}");
            assert_eq!(socks4_code(&failure), socks4::ReplyCode::Rejected, "{failure}");
        }
    }
}
