//! What burrowd writes to its log: one line per finished session, and warnings folded
//! so that a flood of one kind costs one line a second.

use super::end::End;
use super::live::{Live, State};
use crate::config::units::{human_bytes, tenths_of_seconds};
use crate::wire::addr::TargetAddr;
use crate::wire::printable::Printable;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Repeated warnings of one kind are folded into one line per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// What the finished-session log line reports; filled in as the session goes.
pub(crate) struct SessionLog {
    pub id: u64,
    /// The client: the socket's peer, or the client a load balancer's PROXY header named.
    pub client: SocketAddr,
    /// The load balancer's end of the socket, when a PROXY header named the client.
    pub via: Option<SocketAddr>,
    started: Instant,
    pub user: Option<Login>,
    pub command: Option<String>,
    /// The target as the client asked for it (a name stays a name).
    pub target: Option<TargetAddr>,
    /// The address actually connected to.
    pub reached: Option<SocketAddr>,
    /// The outbound socket's local address, matching `ss -tn`.
    pub outbound_local: Option<SocketAddr>,
    pub up: u64,
    pub down: u64,
    /// A UDP association's datagram counts, reported instead of `up` and `down`.
    pub udp: Option<UdpCounts>,
    /// How it ended, set where it ends.
    pub end: Option<End>,
    /// The session's entry in the live list, which [`SessionLog::publish`] keeps current.
    pub live: Option<Arc<Live>>,
    /// The SOCKS replies sent, as (protocol version, code), for the metrics.
    pub replies: Vec<(u8, u8)>,
    /// The status burrowd itself answered an HTTP proxy request with, for the metrics.
    pub http_status: Option<u16>,
}

impl SessionLog {
    pub(crate) fn new(id: u64, client: SocketAddr) -> Self {
        SessionLog {
            id,
            client,
            via: None,
            started: Instant::now(),
            user: None,
            command: None,
            target: None,
            reached: None,
            outbound_local: None,
            up: 0,
            down: 0,
            udp: None,
            end: None,
            live: None,
            replies: Vec::new(),
            http_status: None,
        }
    }

    /// Records a SOCKS reply sent: `version` 5 with its REP, or 4 with its CD.
    pub(crate) fn replied(&mut self, version: u8, code: u8) {
        self.replies.push((version, code));
    }

    /// Records the status of an HTTP reply burrowd sent (not one an origin sent).
    pub(crate) fn replied_http(&mut self, status: u16) {
        self.http_status = Some(status);
    }

    /// Shows on the live list what the session has learnt so far, as it enters `state`:
    /// login, command, target, and the outbound leg once it is connected.
    pub(crate) fn publish(&self, state: State) {
        let Some(live) = &self.live else { return };
        live.update(|details| {
            details.state = state;
            details.user = self.user.as_ref().map(Login::text);
            details.command.clone_from(&self.command);
            details.target = self.target.as_ref().map(ToString::to_string);
            details.outbound = self.outbound_local.zip(self.reached);
        });
    }
}

/// Who a client said it is, kept as the bytes it sent; escaped only where it is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Login {
    /// A SOCKS5 login the users table accepted.
    Verified(Vec<u8>),
    /// A SOCKS4 USERID: whatever the client claims.
    Claimed(Vec<u8>),
}

impl Login {
    /// The text to show, not yet escaped (the live list escapes it its own way).
    fn text(&self) -> String {
        match self {
            Login::Verified(name) => String::from_utf8_lossy(name).into_owned(),
            Login::Claimed(id) => format!("{:?} (unverified SOCKS4 USERID)", String::from_utf8_lossy(id)),
        }
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Verified(name) => write!(f, "{}", Printable(&String::from_utf8_lossy(name))),
            Login::Claimed(_) => f.write_str(&self.text()),
        }
    }
}

impl fmt::Display for SessionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {} {}", self.id, self.client)?;
        if let Some(balancer) = self.via {
            write!(f, " via {balancer}")?;
        }
        if let Some(user) = &self.user {
            write!(f, " user {user}")?;
        }
        if let Some(command) = &self.command {
            write!(f, " {command}")?;
        }
        if let Some(target) = &self.target {
            write!(f, " {target}")?;
        }
        if let Some(reached) = self.reached {
            write!(f, " ({reached})")?;
        }
        if let Some(local) = self.outbound_local {
            write!(f, " from {local}")?;
        }
        match &self.udp {
            Some(udp) => write!(f, " {udp}")?,
            None => write!(f, " up {} down {}", human_bytes(self.up), human_bytes(self.down))?,
        }
        write!(f, " {}s", tenths_of_seconds(self.started.elapsed()))?;
        match &self.end {
            Some(end) => write!(f, ": {end}"),
            None => Ok(()),
        }
    }
}

/// Datagrams and payload bytes moved one way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub datagrams: u64,
    pub bytes: u64,
}

/// Datagrams dropped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Sent to the relay socket from an address other than the client's.
    pub foreign: u64,
    /// FRAG was not 0; burrowd does not reassemble fragments.
    pub fragmented: u64,
    /// The header did not parse.
    pub malformed: u64,
    /// The target name did not resolve, or a send failed (either way).
    pub unsendable: u64,
    /// The access rules refuse the target.
    pub denied: u64,
}

/// What the association's log line reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpCounts {
    pub relay: SocketAddr,
    /// The client's datagram address, once known.
    pub client: Option<SocketAddr>,
    /// Client → targets.
    pub up: Traffic,
    /// Targets → client.
    pub down: Traffic,
    pub dropped: Dropped,
}

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} datagrams {}", self.datagrams, human_bytes(self.bytes))
    }
}

impl fmt::Display for UdpCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "relay {}", self.relay)?;
        if let Some(client) = self.client {
            write!(f, " client {client}")?;
        }
        let d = self.dropped;
        write!(
            f,
            " up {} down {} dropped foreign {} fragmented {} malformed {} unsendable {} denied {}",
            self.up, self.down, d.foreign, d.fragmented, d.malformed, d.unsendable, d.denied
        )
    }
}

/// A warning printed at most once per interval, with how often it happened meanwhile.
#[derive(Default)]
pub(crate) struct FoldedWarning {
    last: Option<Instant>,
    count: u64,
}

impl FoldedWarning {
    pub(crate) fn warn(&mut self, message: impl FnOnce(u64) -> String) {
        self.count += 1;
        if self.last.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
            log::warn!("{}", message(self.count));
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::relay::RelayEnd;

    #[test]
    fn a_clients_name_cannot_forge_fields_or_lines_of_its_own() {
        let mut log = SessionLog::new(7, "127.0.0.1:5000".parse().unwrap());
        let forged = "x.org (10.0.0.1:80) up 0 B down 0 B 0.0s: closed\nsession 8 \u{2028}\u{202e}";
        log.target = Some(TargetAddr::Domain(forged.into(), 80));
        log.end = Some(End::Relay(RelayEnd::Closed));
        let line = log.to_string();
        assert!(
            line.contains(r#" "x.org (10.0.0.1:80) up 0 B down 0 B 0.0s: closed\nsession 8 \u{2028}\u{202e}":80 "#),
            "{line}"
        );
        assert!(!line.contains(['\n', '\u{2028}', '\u{202e}']), "{line}");
    }

    #[test]
    fn the_log_line_names_every_count() {
        let counts = UdpCounts {
            relay: "127.0.0.1:40000".parse().unwrap(),
            client: Some("127.0.0.1:5353".parse().unwrap()),
            up: Traffic { datagrams: 3, bytes: 1536 },
            down: Traffic { datagrams: 2, bytes: 100 },
            dropped: Dropped { foreign: 1, fragmented: 2, malformed: 3, unsendable: 4, denied: 5 },
        };
        assert_eq!(
            counts.to_string(),
            "relay 127.0.0.1:40000 client 127.0.0.1:5353 up 3 datagrams 1.5 KiB down 2 datagrams 100 B \
             dropped foreign 1 fragmented 2 malformed 3 unsendable 4 denied 5"
        );
    }
}
