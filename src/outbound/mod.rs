//! Reaching a target: directly (name resolution, then each address in turn), or through
//! the upstream proxies of `-F`, from the source the session's [`Egress`] says. Both fail
//! with one error type, [`ConnectError`].

mod direct;
pub(crate) mod egress;
pub(crate) mod upstream;

use crate::config::SocketOptions;
use crate::config::rules::Allowed;
use crate::net::negotiation::HandshakeError;
use crate::wire::printable::Printable;
use crate::wire::{self, addr::TargetAddr, socks5::ReplyCode};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

pub(crate) use direct::resolve;
pub(crate) use egress::Egress;

/// Why an outbound connection was not made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The name did not resolve, or resolved to no address.
    Resolve { name: String, error: io::Error },
    /// Every address was tried; this is the last one's error.
    Connect { addr: SocketAddr, error: io::Error },
    /// A hop of the upstream chain failed (boxed: it is rare and large).
    Upstream(Box<UpstreamFailure>),
    /// The access rules refuse the target (or an address it resolved to); the text names
    /// the rule.
    Denied(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve { name, error } => write!(f, "cannot resolve {}: {error}", Printable(name)),
            ConnectError::Connect { addr, error } => write!(f, "connect to {addr}: {error}"),
            ConnectError::Upstream(failure) => failure.fmt(f),
            ConnectError::Denied(why) => f.write_str(why),
        }
    }
}

/// Connects to one of `addrs`, each allowed by the access rules, leaving as `egress` says,
/// as [`direct::connect_any`] does.
pub(crate) fn connect_any(
    addrs: &Allowed<Vec<SocketAddr>>,
    timeout: Duration,
    opts: &SocketOptions,
    egress: &Egress,
) -> Result<Connected, ConnectError> {
    direct::connect_any(addrs.get(), timeout, opts, egress)
}

/// A connection to a target, with the addresses the session log reports.
pub(crate) struct Connected {
    pub stream: TcpStream,
    /// The address actually reached.
    pub peer: SocketAddr,
    /// The outbound socket's own address, as `ss -tn` shows it.
    pub local: SocketAddr,
    /// Where the target sees the connection come from, for the CONNECT reply: `local`, or
    /// through a chain the address the last hop reported for its own outbound socket.
    pub source: TargetAddr,
}

/// Which hop of the chain failed, at what, and why.
#[derive(Debug)]
pub(crate) struct UpstreamFailure {
    /// Counts from 1, in `-F` order.
    pub hop: usize,
    pub proxy: TargetAddr,
    /// What we asked the hop to reach: the next hop, or the target.
    pub asked: TargetAddr,
    /// Whether `asked` was the final target, so the hop's reply is about the target.
    pub for_target: bool,
    pub error: UpstreamError,
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream hop {} ({}) asked for {}: {}", self.hop, self.proxy, self.asked, self.error)
    }
}

/// Why an upstream proxy did not do what it was asked.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// The first hop could not be reached at all.
    Unreachable(Box<ConnectError>),
    /// It chose an authentication method we cannot use (a login we have no credentials
    /// for, or "none acceptable").
    NoAcceptableMethod(u8),
    /// It rejected our username and password (an HTTP hop: 407).
    LoginRejected,
    /// An HTTP hop answered our CONNECT with this status.
    HttpStatus(u16),
    /// It is an HTTP proxy, asked to carry BIND or UDP.
    TcpOnly,
    /// It answered our request with this failure code.
    Replied(ReplyCode),
    /// Its UDP relay address is one we cannot send to.
    BadRelayAddress(TargetAddr),
    /// Its UDP relay is on its loopback, and the hop before it (or we) reached it from
    /// another host, at `from`.
    UnreachableRelay { relay: TargetAddr, from: IpAddr },
    /// The conversation broke off: closed, timed out, malformed, or a socket error.
    Handshake(HandshakeError),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Unreachable(e) => write!(f, "cannot reach it: {e}"),
            UpstreamError::NoAcceptableMethod(m) => write!(f, "it chose auth method {m:#04x}, which we cannot use"),
            UpstreamError::LoginRejected => write!(f, "it rejected our username/password"),
            UpstreamError::HttpStatus(status) => write!(f, "it answered HTTP {status}"),
            UpstreamError::TcpOnly => write!(f, "it is an HTTP proxy, which carries TCP only (no BIND, no UDP)"),
            UpstreamError::Replied(code) => write!(f, "it replied {code}"),
            UpstreamError::BadRelayAddress(addr) => write!(f, "it named UDP relay {addr}, which we cannot use"),
            UpstreamError::UnreachableRelay { relay, from } => {
                write!(f, "its UDP relay {relay} is on its loopback, out of reach from {from}")
            }
            UpstreamError::Handshake(e) => e.fmt(f),
        }
    }
}

impl From<HandshakeError> for UpstreamError {
    fn from(e: HandshakeError) -> Self {
        UpstreamError::Handshake(e)
    }
}

impl From<wire::Error> for UpstreamError {
    fn from(e: wire::Error) -> Self {
        UpstreamError::Handshake(HandshakeError::Malformed(e))
    }
}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        UpstreamError::Handshake(e.into())
    }
}
