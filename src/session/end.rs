//! What a session ended with: one value, set where the session ends. Its log line's wording
//! ([`fmt::Display`]) and its `/metrics` label ([`End::outcome`]) are both derived from it,
//! so rewording a message never moves a count.

use super::stats::Outcome;
use crate::net::is_timeout;
use crate::net::negotiation::HandshakeError;
use crate::net::relay::RelayEnd;
use crate::outbound::{ConnectError, UpstreamError};
use std::fmt;
use std::io;
use std::time::Duration;

/// How one session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The relay ran and ended (both FINs, a limit, an error).
    Relay(RelayEnd),
    /// The handshake broke off before a reply could say why (closed, timed out, malformed,
    /// reclaimed).
    Handshake(HandshakeError),
    /// A SOCKS failure reply was sent (or tried).
    Replied(FailureReply),
    /// The client's username and password were refused; `user` is shown as it is, so
    /// whoever fills it in escapes what the client chose.
    LoginFailed { user: String },
    /// The SOCKS5 greeting offered no method this service takes.
    NoAcceptableMethod(Vec<u8>),
    /// The first byte named neither SOCKS4 nor SOCKS5.
    NotSocks(u8),
    /// A SOCKS4 client on a service with `--no-socks4`.
    Socks4Off,
    /// A socket option on the accepted client could not be set.
    SocketSetup { what: &'static str, error: io::Error },
    /// The client closed (`None`) or broke its connection while its BIND waited for the peer.
    BindClientGone(Option<io::Error>),
    /// A `tcp://` forward could not connect its target (it has no reply to send).
    ForwardUnreachable(ConnectError),
    /// A UDP association ended.
    Udp(UdpEnd),
    /// A `udp://` forward's session ended, with the datagrams it moved and dropped.
    UdpForward { up: u64, down: u64, dropped: u64, end: UdpEnd },
    /// A bug in burrowd, never the peer's doing: what went wrong.
    Bug(&'static str),
}

/// A failure reply as the log shows it: the code in the protocol's own words, and why.
#[derive(Debug)]
pub(crate) struct FailureReply {
    /// `1 (general failure)` for SOCKS5, `91` for SOCKS4.
    pub code: String,
    pub why: String,
    /// Why the reply could not be sent, if it could not.
    pub unsent: Option<HandshakeError>,
}

/// How a UDP association or a `udp://` session ended.
#[derive(Debug)]
pub(crate) enum UdpEnd {
    /// The client closed its control connection.
    ControlClosed,
    /// The control connection failed (a reset, most often).
    ControlFailed(io::Error),
    /// No datagram either way for this long (`--udp-idle-timeout`, or a forward's ttl).
    IdleTimeout(Duration),
    /// The server is shutting down.
    Shutdown,
    /// The upstream hop ended the UDP association we hold with it.
    UpstreamEnded,
    /// The relay socket (the one the client sends to) failed.
    RelayFailed(io::Error),
    /// The socket toward the target failed.
    OutboundFailed(io::Error),
    /// The path to the target could not be opened (a name that does not resolve, no socket).
    Unopened(String),
}

impl End {
    /// The kind of end `/metrics` counts it as.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            End::Relay(RelayEnd::Closed) => Outcome::Closed,
            End::Relay(RelayEnd::IdleTimeout(_) | RelayEnd::HalfCloseTimeout { .. }) => Outcome::TimedOut,
            End::Relay(RelayEnd::Failed(..) | RelayEnd::NoThread) => Outcome::Error,
            End::Handshake(HandshakeError::TimedOut) => Outcome::TimedOut,
            End::Handshake(HandshakeError::Reclaimed) => Outcome::Reclaimed,
            End::Handshake(HandshakeError::Closed | HandshakeError::Malformed(_) | HandshakeError::Io(_)) => {
                Outcome::Error
            }
            End::Replied(_) => Outcome::Replied,
            End::LoginFailed { .. } => Outcome::LoginFailed,
            End::ForwardUnreachable(e) if timed_out(e) => Outcome::TimedOut,
            End::Udp(end) | End::UdpForward { end, .. } => end.outcome(),
            End::NoAcceptableMethod(_)
            | End::NotSocks(_)
            | End::Socks4Off
            | End::SocketSetup { .. }
            | End::BindClientGone(_)
            | End::ForwardUnreachable(_)
            | End::Bug(_) => Outcome::Error,
        }
    }
}

impl UdpEnd {
    fn outcome(&self) -> Outcome {
        match self {
            // The other side (the client, or the hop it is relayed through) closed in order,
            // or we did.
            UdpEnd::ControlClosed | UdpEnd::Shutdown | UdpEnd::UpstreamEnded => Outcome::Closed,
            UdpEnd::IdleTimeout(_) => Outcome::TimedOut,
            UdpEnd::ControlFailed(_) | UdpEnd::RelayFailed(_) | UdpEnd::OutboundFailed(_) | UdpEnd::Unopened(_) => {
                Outcome::Error
            }
        }
    }
}

/// Whether a connect failed only because the target (or the hop on the way) did not answer
/// in time.
fn timed_out(e: &ConnectError) -> bool {
    match e {
        ConnectError::Connect { error, .. } => is_timeout(error),
        ConnectError::Upstream(failure) => match &failure.error {
            UpstreamError::Unreachable(e) => timed_out(e),
            UpstreamError::Handshake(e) => matches!(e, HandshakeError::TimedOut),
            _ => false,
        },
        ConnectError::Resolve { .. } | ConnectError::Denied { .. } => false,
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Relay(end) => end.fmt(f),
            End::Handshake(e) => e.fmt(f),
            End::Replied(FailureReply { code, why, unsent }) => {
                write!(f, "reply {code}: {why}")?;
                match unsent {
                    Some(e) => write!(f, " (reply not sent: {e})"),
                    None => Ok(()),
                }
            }
            End::LoginFailed { user } => write!(f, "authentication failed for user {user}"),
            End::NoAcceptableMethod(offered) => write!(f, "no acceptable auth method in {offered:?}"),
            End::NotSocks(byte) => write!(f, "not SOCKS: first byte {byte:#04x}, closed"),
            End::Socks4Off => write!(f, "SOCKS4 is turned off (--no-socks4), closed"),
            End::SocketSetup { what, error } => write!(f, "cannot set {what}: {error}"),
            End::BindClientGone(None) => write!(f, "client closed while waiting for the BIND peer"),
            End::BindClientGone(Some(e)) => write!(f, "client error while waiting for the BIND peer: {e}"),
            End::ForwardUnreachable(e) => e.fmt(f),
            End::Udp(end) => end.fmt(f),
            End::UdpForward { up, down, dropped, end } => {
                write!(f, "{up} datagram(s) up, {down} down, {dropped} dropped; {end}")
            }
            End::Bug(what) => write!(f, "internal error: {what} (a bug in burrowd)"),
        }
    }
}

impl fmt::Display for UdpEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpEnd::ControlClosed => write!(f, "control connection closed"),
            UdpEnd::ControlFailed(e) => write!(f, "control connection failed: {e}"),
            UdpEnd::IdleTimeout(limit) => write!(f, "udp idle timeout: no datagram either way for {limit:?}"),
            UdpEnd::Shutdown => write!(f, "server shutdown"),
            UdpEnd::UpstreamEnded => write!(f, "upstream hop ended its UDP association"),
            UdpEnd::RelayFailed(e) => write!(f, "relay socket error: {e}"),
            UdpEnd::OutboundFailed(e) => write!(f, "outbound socket error: {e}"),
            UdpEnd::Unopened(why) => why.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::relay::{Side, Stall};
    use crate::outbound::UpstreamFailure;
    use crate::wire::{self, addr::TargetAddr};

    /// Each kind of end, down to the inner variants the label depends on, has a number here;
    /// the match has no catch-all, so a new variant does not compile until it is numbered,
    /// and the test below fails until the table has a case for it.
    fn kind(end: &End) -> usize {
        let udp = |end: &UdpEnd| match end {
            UdpEnd::ControlClosed => 0,
            UdpEnd::ControlFailed(_) => 1,
            UdpEnd::IdleTimeout(_) => 2,
            UdpEnd::Shutdown => 3,
            UdpEnd::UpstreamEnded => 4,
            UdpEnd::RelayFailed(_) => 5,
            UdpEnd::OutboundFailed(_) => 6,
            UdpEnd::Unopened(_) => 7,
        };
        match end {
            End::Relay(RelayEnd::Closed) => 10,
            End::Relay(RelayEnd::IdleTimeout(_)) => 11,
            End::Relay(RelayEnd::HalfCloseTimeout { .. }) => 12,
            End::Relay(RelayEnd::Failed(..)) => 13,
            End::Relay(RelayEnd::NoThread) => 14,
            End::Handshake(HandshakeError::Closed) => 20,
            End::Handshake(HandshakeError::TimedOut) => 21,
            End::Handshake(HandshakeError::Malformed(_)) => 22,
            End::Handshake(HandshakeError::Io(_)) => 23,
            End::Handshake(HandshakeError::Reclaimed) => 24,
            End::Replied(_) => 30,
            End::LoginFailed { .. } => 31,
            End::NoAcceptableMethod(_) => 32,
            End::NotSocks(_) => 33,
            End::Socks4Off => 34,
            End::SocketSetup { .. } => 35,
            End::BindClientGone(None) => 36,
            End::BindClientGone(Some(_)) => 37,
            End::ForwardUnreachable(e) if timed_out(e) => 38,
            End::ForwardUnreachable(_) => 39,
            End::Udp(end) => 40 + udp(end),
            End::UdpForward { end, .. } => 50 + udp(end),
            End::Bug(_) => 60,
        }
    }

    fn reset() -> io::Error {
        io::ErrorKind::ConnectionReset.into()
    }

    fn connect_error(kind: io::ErrorKind) -> ConnectError {
        ConnectError::Connect { addr: "127.0.0.1:9".parse().unwrap(), error: kind.into() }
    }

    fn through_hop(error: UpstreamError) -> ConnectError {
        let proxy = TargetAddr::Ip("127.0.0.1:1080".parse().unwrap());
        let asked = TargetAddr::Domain("example.org".into(), 80);
        ConnectError::Upstream(Box::new(UpstreamFailure { hop: 1, proxy, asked, for_target: true, error }))
    }

    #[test]
    fn every_end_has_one_wording_and_one_label() {
        use Outcome::*;
        let minute = Duration::from_secs(60);
        let udp_ends = || {
            [
                (UdpEnd::ControlClosed, "control connection closed", Closed),
                (UdpEnd::ControlFailed(reset()), "control connection failed: connection reset", Error),
                (UdpEnd::IdleTimeout(minute), "udp idle timeout: no datagram either way for 60s", TimedOut),
                (UdpEnd::Shutdown, "server shutdown", Closed),
                (UdpEnd::UpstreamEnded, "upstream hop ended its UDP association", Closed),
                (UdpEnd::RelayFailed(reset()), "relay socket error: connection reset", Error),
                (UdpEnd::OutboundFailed(reset()), "outbound socket error: connection reset", Error),
                (UdpEnd::Unopened("cannot resolve x.invalid".into()), "cannot resolve x.invalid", Error),
            ]
        };
        let mut table = vec![
            (End::Relay(RelayEnd::Closed), "closed".to_owned(), Closed),
            (End::Relay(RelayEnd::IdleTimeout(minute)), "idle timeout: no byte either way for 60s".into(), TimedOut),
            (
                End::Relay(RelayEnd::HalfCloseTimeout { closed: Side::Client, stall: Stall::Silent, limit: minute }),
                "half-close timeout: the target sent nothing for 60s after the client's FIN".into(),
                TimedOut,
            ),
            (End::Relay(RelayEnd::Failed(Side::Client, reset())), "client error: connection reset".into(), Error),
            (End::Relay(RelayEnd::NoThread), "refused: no relay thread free".into(), Error),
            (End::Handshake(HandshakeError::Closed), "peer closed during handshake".into(), Error),
            (End::Handshake(HandshakeError::TimedOut), "handshake timed out".into(), TimedOut),
            (
                End::Handshake(HandshakeError::Malformed(wire::Error::Truncated)),
                "malformed message: message truncated".into(),
                Error,
            ),
            (End::Handshake(HandshakeError::Io(reset())), "handshake i/o error: connection reset".into(), Error),
            (
                End::Handshake(HandshakeError::Reclaimed),
                "closed to make room for a newer client: the handshake was still unfinished".into(),
                Reclaimed,
            ),
            (
                End::Replied(FailureReply {
                    code: "5 (connection refused)".into(),
                    why: "connect to 127.0.0.1:1: refused".into(),
                    unsent: Some(HandshakeError::Io(reset())),
                }),
                "reply 5 (connection refused): connect to 127.0.0.1:1: refused \
                 (reply not sent: handshake i/o error: connection reset)"
                    .into(),
                Replied,
            ),
            (End::LoginFailed { user: "\"eve\"".into() }, "authentication failed for user \"eve\"".into(), LoginFailed),
            (End::NoAcceptableMethod(vec![0]), "no acceptable auth method in [0]".into(), Error),
            (End::NotSocks(0x47), "not SOCKS: first byte 0x47, closed".into(), Error),
            (End::Socks4Off, "SOCKS4 is turned off (--no-socks4), closed".into(), Error),
            (
                End::SocketSetup { what: "socket options", error: reset() },
                "cannot set socket options: connection reset".into(),
                Error,
            ),
            (End::BindClientGone(None), "client closed while waiting for the BIND peer".into(), Error),
            (
                End::BindClientGone(Some(reset())),
                "client error while waiting for the BIND peer: connection reset".into(),
                Error,
            ),
            (
                End::ForwardUnreachable(connect_error(io::ErrorKind::TimedOut)),
                "connect to 127.0.0.1:9: timed out".into(),
                TimedOut,
            ),
            (
                End::ForwardUnreachable(connect_error(io::ErrorKind::ConnectionRefused)),
                "connect to 127.0.0.1:9: connection refused".into(),
                Error,
            ),
            (End::Bug("the session panicked"), "internal error: the session panicked (a bug in burrowd)".into(), Error),
        ];
        for (end, wording, label) in udp_ends() {
            table.push((End::Udp(end), wording.into(), label));
        }
        for (end, wording, label) in udp_ends() {
            let wording = format!("3 datagram(s) up, 2 down, 1 dropped; {wording}");
            table.push((End::UdpForward { up: 3, down: 2, dropped: 1, end }, wording, label));
        }
        // A timeout on the way through a chain is a timeout too.
        let hop_timed_out = through_hop(UpstreamError::Handshake(HandshakeError::TimedOut));
        assert_eq!(End::ForwardUnreachable(hop_timed_out).outcome(), TimedOut);
        let hop_unreachable = through_hop(UpstreamError::Unreachable(Box::new(connect_error(io::ErrorKind::TimedOut))));
        assert_eq!(End::ForwardUnreachable(hop_unreachable).outcome(), TimedOut);
        assert_eq!(End::ForwardUnreachable(through_hop(UpstreamError::LoginRejected)).outcome(), Error);

        let mut kinds: Vec<usize> = table.iter().map(|(end, ..)| kind(end)).collect();
        kinds.sort_unstable();
        let every: Vec<usize> =
            (10..=14).chain(20..=24).chain(30..=39).chain(40..=47).chain(50..=57).chain([60]).collect();
        assert_eq!(kinds, every, "one case per kind of end");
        for (end, wording, label) in &table {
            assert_eq!(end.to_string(), *wording);
            assert_eq!(end.outcome(), *label, "{wording}");
        }
        // Every label is reachable.
        for outcome in Outcome::ALL {
            assert!(table.iter().any(|(end, ..)| end.outcome() == outcome), "{}", outcome.label());
        }
    }
}
