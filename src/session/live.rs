//! The sessions open right now, for the status page and SIGUSR1: every TCP leg as `ss -tn`
//! shows it (local and peer address), with who, what and how much.
//!
//! A session is listed from accept (or from its first datagram, for `udp://`) until its
//! log line is written. The list is split into shards by session id, so that sessions
//! starting and ending on many workers rarely wait for each other.

use crate::config::units::tenths_of_seconds;
use crate::net::relay::{Meter, Side};
use crate::wire::printable::Printable;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

const SHARDS: usize = 16;

/// Every session open now.
pub(crate) struct LiveSessions {
    shards: Vec<Mutex<HashMap<u64, Arc<Live>>>>,
}

/// One open session.
pub(crate) struct Live {
    pub id: u64,
    pub client: SocketAddr,
    /// The accepted socket's own address (the listener's, or the address a wildcard
    /// listener was reached on); `None` for a `udp://` session, whose client leg is UDP.
    pub local: Option<SocketAddr>,
    /// The listening address of the service, for the metrics' `service` label.
    pub service: SocketAddr,
    started: Instant,
    pub meter: Arc<Meter>,
    details: Mutex<Details>,
}

/// What a session has told about itself so far.
#[derive(Clone, Default)]
pub(crate) struct Details {
    pub state: State,
    pub user: Option<String>,
    pub command: Option<String>,
    pub target: Option<String>,
    /// The outbound TCP leg: its local address and its peer (the target, a BIND's peer,
    /// the first upstream hop, or a UDP association's control connection to a hop).
    pub outbound: Option<(SocketAddr, SocketAddr)>,
    /// The client a load balancer's PROXY header named (`--proxy-protocol`); the `client`
    /// leg is then the balancer's.
    pub carried: Option<SocketAddr>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum State {
    /// Queued for a worker, or negotiating.
    #[default]
    Handshake,
    Relay,
    /// A BIND's first reply is sent; its peer has not come yet.
    BindWaiting,
    /// A UDP association, or a `udp://` session.
    Udp,
}

/// A session's place in the list; leaves it when dropped.
pub(crate) struct Listed {
    sessions: Arc<LiveSessions>,
    pub live: Arc<Live>,
    /// The client the session serves: the accepted socket's peer, or the client a load
    /// balancer's PROXY header named.
    pub client: SocketAddr,
}

impl LiveSessions {
    pub(crate) fn new() -> Self {
        LiveSessions { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<Live>>> {
        self.shards[id as usize % SHARDS].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lists a session that starts now, whose traffic `meter` shows.
    pub(crate) fn list(
        self: &Arc<Self>,
        id: u64,
        client: SocketAddr,
        local: Option<SocketAddr>,
        service: SocketAddr,
        meter: Arc<Meter>,
    ) -> Listed {
        let live =
            Arc::new(Live { id, client, local, service, started: Instant::now(), meter, details: Mutex::default() });
        self.shard(id).insert(id, Arc::clone(&live));
        Listed { sessions: Arc::clone(self), live, client }
    }

    /// Every session open now, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<_> = self.shards.iter().flat_map(|shard| self.values(shard)).collect();
        all.sort_by_key(|live| live.id);
        all
    }

    fn values(&self, shard: &Mutex<HashMap<u64, Arc<Live>>>) -> Vec<Arc<Live>> {
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }

    /// The table `/sessions` serves and SIGUSR1 logs: a header, then one line per session.
    pub(crate) fn table(&self) -> String {
        let mut text = String::from(TABLE_HEADER);
        text.push('\n');
        for live in self.snapshot() {
            let _ = writeln!(text, "{live}");
        }
        text
    }
}

/// The columns of [`LiveSessions::table`].
/// `client` and `local` are the accepted socket's legs as `ss` shows them; behind a load
/// balancer, `carried_client` is the client its PROXY header named (`-` otherwise).
pub(crate) const TABLE_HEADER: &str =
    "id state client local user command target out_local out_peer up_bytes down_bytes age_s idle_s carried_client";

impl Listed {
    /// The session serves `client`, whom a load balancer's PROXY header named: the rules,
    /// the log line and the UDP lock take it for the client, and `/sessions` shows it.
    pub(crate) fn carried(&mut self, client: SocketAddr) {
        self.client = client;
        self.live.update(|details| details.carried = Some(client));
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.sessions.shard(self.live.id).remove(&self.live.id);
    }
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, Details> {
        self.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn details(&self) -> Details {
        self.lock().clone()
    }

    /// Shows what the session has learnt, as of now.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Details)) {
        change(&mut self.lock());
    }

    /// The state shown: a relay that one side has half-closed says so.
    fn state_name(&self, state: State) -> &'static str {
        match (state, self.meter.half_closed_by()) {
            (State::Handshake, _) => "handshake",
            (State::Relay, None) => "relay",
            (State::Relay, Some(Side::Client)) => "half-closed(client)",
            (State::Relay, Some(Side::Target)) => "half-closed(target)",
            (State::BindWaiting, _) => "bind-waiting",
            (State::Udp, _) => "udp",
        }
    }
}

impl fmt::Display for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let details = self.details();
        let (up, down) = self.meter.bytes();
        let (out_local, out_peer) = match details.outbound {
            Some((local, peer)) => (local.to_string(), peer.to_string()),
            None => ("-".into(), "-".into()),
        };
        write!(
            f,
            "{} {} {} {} {} {} {} {out_local} {out_peer} {up} {down} {} {} {}",
            self.id,
            self.state_name(details.state),
            self.client,
            self.local.map_or("-".into(), |local| local.to_string()),
            field(details.user.as_deref()),
            field(details.command.as_deref()),
            field(details.target.as_deref()),
            tenths_of_seconds(self.started.elapsed()),
            tenths_of_seconds(self.meter.idle_for()),
            details.carried.map_or("-".into(), |carried| carried.to_string()),
        )
    }
}

/// A column value: `-` when unknown; otherwise shown as log lines show peer text
/// ([`Printable`]), with spaces escaped too, so that a client-chosen name cannot break the
/// table into more columns or lines, nor turn the rest of its line around.
fn field(value: Option<&str>) -> String {
    match value {
        None | Some("") => "-".into(),
        Some(value) => Printable(value).to_string().replace(' ', "\\u{20}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_listed_until_its_place_is_dropped_and_fields_cannot_split_a_line() {
        let sessions = Arc::new(LiveSessions::new());
        let client = "127.0.0.1:5000".parse().unwrap();
        let listed = sessions.list(7, client, Some("127.0.0.1:1080".parse().unwrap()), client, Arc::default());
        listed.live.update(|details| {
            details.state = State::Relay;
            details.command = Some("CONNECT".into());
            details.target = Some("evil name\n\u{202e}.example:80".into());
            details.outbound = Some(("127.0.0.1:40000".parse().unwrap(), "127.0.0.1:80".parse().unwrap()));
        });
        let table = sessions.table();
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        let columns: Vec<_> = lines[1].split(' ').collect();
        assert_eq!(columns.len(), TABLE_HEADER.split(' ').count(), "{table}");
        assert_eq!(
            &columns[..9],
            [
                "7",
                "relay",
                "127.0.0.1:5000",
                "127.0.0.1:1080",
                "-",
                "CONNECT",
                "\"evil\\u{20}name\\n\\u{202e}.example:80\"",
                "127.0.0.1:40000",
                "127.0.0.1:80"
            ]
        );
        assert_eq!(columns.last(), Some(&"-"), "no PROXY header, no carried client");
        let mut listed = listed;
        listed.carried("192.0.2.7:5000".parse().unwrap());
        let table = sessions.table();
        let columns: Vec<_> = table.lines().nth(1).unwrap().split(' ').collect();
        assert_eq!((columns[2], columns[13]), ("127.0.0.1:5000", "192.0.2.7:5000"), "{table}");
        assert_eq!(listed.client, "192.0.2.7:5000".parse().unwrap());
        drop(listed);
        assert_eq!(sessions.table().lines().count(), 1);
    }
}
